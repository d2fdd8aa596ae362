//! Reads the byte-exact FreeSWITCH captures kept in `tests/captures/`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/captures")
}

pub fn read_capture(file: &str) -> Vec<u8> {
    std::fs::read(dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Every `*.rx.raw` capture, as (name without suffix, bytes), sorted by name.
pub fn all_rx() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir())
        .expect("captures dir")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".rx.raw")?.to_owned();
            Some((stem, read_capture(&name)))
        })
        .collect();
    out.sort();
    assert!(out.len() >= 20, "captures missing");
    out
}

/// Frame sizes the capture tool recorded (`<<< t RECV frame N bytes`), if a transcript exists.
pub fn transcript_frame_sizes(name: &str) -> Option<Vec<usize>> {
    let text = std::fs::read_to_string(dir().join(format!("{name}.transcript.txt"))).ok()?;
    Some(
        text.lines()
            .filter(|l| l.starts_with("<<<"))
            .filter_map(|l| {
                let rest = l.split("RECV frame ").nth(1)?;
                rest.split_whitespace().next()?.parse().ok()
            })
            .collect(),
    )
}

/// The body of the first plain event named `event_name` in a capture (the event-plain block
/// inside the frame), for the stand-in to replay. Cached: the stand-in asks for the same few
/// events on every originate, and re-reading a 40 KB capture each time is wasted I/O.
pub fn plain_event_body(file: &str, event_name: &str) -> String {
    static CACHE: OnceLock<Mutex<HashMap<(String, String), String>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (file.to_string(), event_name.to_string());
    if let Some(body) = cache.lock().unwrap().get(&key) {
        return body.clone();
    }
    let body = find_plain_event_body(file, event_name);
    cache.lock().unwrap().insert(key, body.clone());
    body
}

fn find_plain_event_body(file: &str, event_name: &str) -> String {
    let raw = String::from_utf8(read_capture(file)).expect("plain capture is utf-8");
    let needle = format!("\n\nEvent-Name: {event_name}\n");
    let start = raw
        .find(&needle)
        .unwrap_or_else(|| panic!("{event_name} not in {file}"))
        + 2;
    // The frame header just before it says how long the body is.
    let head = &raw[..start - 2];
    let cl_line = head.rfind("Content-Length: ").expect("content-length");
    let len: usize = head[cl_line + 16..]
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    raw[start..start + len].to_owned()
}
