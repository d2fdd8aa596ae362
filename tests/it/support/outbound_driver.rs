//! Plays FreeSWITCH's side of an outbound (`socket` app) session, from capture 04a: connect
//! to the adapter, wait for `connect`, answer with the captured channel data (ids and
//! variables replaced), then answer later commands as FreeSWITCH did.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::captures::read_capture;
use super::standin::fs_encode;

/// The captured controlled channel's uuid (the b-leg of a loopback originate whose a-leg,
/// b0b0b0b0-...-00000000000a, appears as `variable_other_loopback_leg_uuid`).
const CAPTURED_UUID: &str = "eeb5469e-5fb6-4069-ba00-af82a30037ea";

/// The captured connect reply (3640 bytes, no Content-Length) with our call id, and extra or
/// replaced `variable_*` headers inserted before `Content-Type`, percent-encoded as FS does.
pub fn connect_reply(call: &str, variables: &[(&str, &str)]) -> Vec<u8> {
    connect_reply_with(call, variables, &[])
}

/// Like [`connect_reply`], also replacing or adding plain headers (`Other-Leg-Unique-ID`...).
pub fn connect_reply_with(
    call: &str,
    variables: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> Vec<u8> {
    let raw = read_capture("04a_outbound_full_session.rx.raw");
    let end = raw.windows(2).position(|w| w == b"\n\n").unwrap();
    let block = String::from_utf8(raw[..end].to_vec())
        .unwrap()
        .replace(CAPTURED_UUID, call);
    let mut extra: Vec<(String, &str)> = variables
        .iter()
        .map(|(n, v)| (format!("variable_{n}"), *v))
        .collect();
    extra.extend(headers.iter().map(|(n, v)| (n.to_string(), *v)));
    let mut out = String::new();
    for line in block.lines() {
        let name = line.split(':').next().unwrap();
        if extra.iter().any(|(n, _)| n == name) {
            continue;
        }
        if name == "Content-Type" {
            for (n, v) in &extra {
                out.push_str(&format!("{n}: {}\n", fs_encode(v)));
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out.into_bytes()
}

/// What the adapter did during one driven session.
#[derive(Debug)]
pub struct Session {
    /// Every command the adapter sent, first line and headers.
    pub commands: Vec<String>,
    /// Whether the adapter closed the socket (rather than us).
    pub closed_by_adapter: bool,
}

/// Connects as FreeSWITCH, answers `connect` with `reply`, then `+OK` to everything until the
/// adapter closes (or `hold` expires, after which we close).
pub async fn drive(adapter: SocketAddr, reply: Vec<u8>, hold: std::time::Duration) -> Session {
    let mut s = TcpStream::connect(adapter).await.unwrap();
    let mut buf = Vec::new();
    let mut commands = Vec::new();
    let deadline = tokio::time::Instant::now() + hold;
    loop {
        let mut chunk = [0u8; 4096];
        let n = match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) => 0,
            Err(_) => {
                return Session {
                    commands,
                    closed_by_adapter: false,
                };
            }
        };
        if n == 0 {
            return Session {
                commands,
                closed_by_adapter: true,
            };
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let cmd = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 2);
            let first = cmd.lines().next().unwrap_or("").to_string();
            let answer = if commands.is_empty() {
                // FreeSWITCH answers nothing before `connect`, and only connect's reply first.
                assert_eq!(first, "connect", "first outbound command must be connect");
                reply.clone()
            } else if first == "myevents" {
                b"Content-Type: command/reply\nReply-Text: +OK Events Enabled\n\n".to_vec()
            } else {
                b"Content-Type: command/reply\nReply-Text: +OK\n\n".to_vec()
            };
            commands.push(cmd);
            if s.write_all(&answer).await.is_err() {
                return Session {
                    commands,
                    closed_by_adapter: true,
                };
            }
        }
    }
}
