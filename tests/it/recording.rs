//! Recording download through real HTTP: the stand-in records click2calls as FreeSWITCH does
//! (RECORD_START at answer with the file being written, RECORD_STOP at hangup).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::support::captures::plain_event_body;
use crate::support::harness::{Extra, Harness};
use crate::support::standin::fs_encode;

struct Got {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    fn code(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn download(h: &Harness, query: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = h.http.get(h.url(&format!("/gravacao?{query}")));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    Got {
        status: r.status(),
        headers: r.headers().clone(),
        body: r.bytes().await.unwrap().to_vec(),
    }
}

/// A click2call that the stand-in answers (and starts recording); returns its call id.
async fn answered_call(h: &Harness, telefone: &str) -> String {
    let r = h
        .http
        .post(h.url("/click2call"))
        .json(&json!({"ramal": "1001", "telefone": telefone}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.json::<serde_json::Value>().await.unwrap()["callid"]
        .as_str()
        .unwrap()
        .to_string();
    // Wait until the adapter has seen RECORD_START (the download then says 409).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let rows = h.service().storage.recordings_for_call(&id).await.unwrap();
        if !rows.is_empty() {
            return id;
        }
        assert!(Instant::now() < deadline, "RECORD_START never stored");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn until_status(h: &Harness, query: &str, status: u16) -> Got {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let g = download(h, query, &[]).await;
        if g.status.as_u16() == status {
            return g;
        }
        assert!(
            Instant::now() < deadline,
            "never {status}: {} {}",
            g.status,
            g.code()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn recording_path(h: &Harness, id: &str) -> PathBuf {
    let rows = h.service().storage.recordings_for_call(id).await.unwrap();
    PathBuf::from(&rows[0].path)
}

#[tokio::test]
async fn a_recording_is_409_while_written_then_downloads_exactly_with_its_headers() {
    let h = Harness::start(Extra::default()).await;
    let id = answered_call(&h, "41988445566").await;
    let busy = download(&h, &format!("callid={id}"), &[]).await;
    assert_eq!(busy.status, 409);
    assert_eq!(busy.code(), "recording_in_progress");
    assert_eq!(busy.header("retry-after"), "10");

    assert!(h.fs.hangup(&id, "NORMAL_CLEARING"));
    let got = until_status(&h, &format!("callid={id}&telefone=41988445566"), 200).await;
    let path = recording_path(&h, &id).await;
    let rows = h.service().storage.recordings_for_call(&id).await;
    let on_disk =
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}: {rows:?}", path.display()));
    assert_eq!(got.body, on_disk, "the download is the file");
    assert_eq!(&got.body[..4], b"RIFF");
    assert_eq!(got.header("content-type"), "audio/wav");
    assert_eq!(got.header("content-length"), on_disk.len().to_string());
    assert_eq!(got.header("accept-ranges"), "bytes");
    assert_eq!(
        got.header("content-disposition"),
        format!("attachment; filename=\"{id}.wav\"")
    );
    assert!(got.header("etag").starts_with('"'));
    assert!(got.header("last-modified").ends_with("GMT"));
    // Recorded where click2call said, under recordings.dir.
    assert!(path.starts_with(h.recordings()), "{}", path.display());
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("finaz_http_requests_total{endpoint=\"recording\",outcome=\"ok\"} 1\n"),
        "{metrics}"
    );
    h.stop().await;
}

#[tokio::test]
async fn ranges_validators_and_if_range() {
    let h = Harness::start(Extra::default()).await;
    let id = answered_call(&h, "41988445566").await;
    h.fs.hangup(&id, "NORMAL_CLEARING");
    let q = format!("callid={id}");
    let full = until_status(&h, &q, 200).await;
    let len = full.body.len();
    let etag = full.header("etag").to_string();
    let modified = full.header("last-modified").to_string();
    for (range, start, end) in [
        ("bytes=0-99", 0, 99),
        ("bytes=1000-1999", 1000, 1999),
        ("bytes=-500", len - 500, len - 1),
        (&format!("bytes={}-", len - 10) as &str, len - 10, len - 1),
        (&format!("bytes=100-{}", len * 2) as &str, 100, len - 1),
    ] {
        let part = download(&h, &q, &[("range", range)]).await;
        assert_eq!(part.status, 206, "{range}");
        assert_eq!(part.body, full.body[start..=end], "{range}");
        assert_eq!(
            part.header("content-range"),
            format!("bytes {start}-{end}/{len}"),
            "{range}"
        );
        assert_eq!(part.header("content-length"), (end - start + 1).to_string());
    }
    let past = download(&h, &q, &[("range", &format!("bytes={len}-"))]).await;
    assert_eq!(past.status, 416);
    assert_eq!(past.header("content-range"), format!("bytes */{len}"));
    // Several ranges at once: the whole file.
    let multi = download(&h, &q, &[("range", "bytes=0-1,5-6")]).await;
    assert_eq!((multi.status.as_u16(), multi.body.len()), (200, len));

    let cached = download(&h, &q, &[("if-none-match", &etag)]).await;
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());
    assert_eq!(cached.header("etag"), etag);
    let since = download(&h, &q, &[("if-modified-since", &modified)]).await;
    assert_eq!(since.status, 304);
    let changed = download(&h, &q, &[("if-none-match", "\"something-else\"")]).await;
    assert_eq!(changed.status, 200);

    let same = download(&h, &q, &[("range", "bytes=0-9"), ("if-range", &etag)]).await;
    assert_eq!((same.status.as_u16(), same.body.len()), (206, 10));
    let stale = download(&h, &q, &[("range", "bytes=0-9"), ("if-range", "\"old\"")]).await;
    assert_eq!((stale.status.as_u16(), stale.body.len()), (200, len));
    let by_date = download(&h, &q, &[("range", "bytes=0-9"), ("if-range", &modified)]).await;
    assert_eq!(by_date.status, 206);
    h.stop().await;
}

#[tokio::test]
async fn unknown_calls_wrong_numbers_and_traversal_attempts_get_nothing() {
    let h = Harness::start(Extra::default()).await;
    let id = answered_call(&h, "41988445566").await;
    h.fs.hangup(&id, "NORMAL_CLEARING");
    until_status(&h, &format!("callid={id}"), 200).await;
    let cases: &[(&str, u16, &str)] = &[
        (
            &format!("callid={id}&telefone=41900000000"),
            404,
            "call_not_found",
        ),
        (
            "callid=d1a1e700-0000-4000-8000-0000000000ff",
            404,
            "call_not_found",
        ),
        // Anything that is not a call id names no call: refused before any lookup.
        ("callid=..%2F..%2Fetc%2Fpasswd", 404, "call_not_found"),
        (
            "callid=%2e%2e%2f%2e%2e%2fetc%2fpasswd",
            404,
            "call_not_found",
        ),
        ("callid=%2Fetc%2Fpasswd", 404, "call_not_found"),
        (&format!("callid={id}.wav"), 404, "call_not_found"),
        (&format!("callid={id}%00"), 404, "call_not_found"),
        (&format!("callid={id}&telefone=abc"), 404, "call_not_found"),
        ("telefone=41988445566", 400, "malformed_query"),
    ];
    for (q, status, code) in cases {
        let g = download(&h, q, &[]).await;
        assert_eq!(g.status.as_u16(), *status, "{q}: {}", g.code());
        assert_eq!(g.code(), *code, "{q}");
    }
    // The same number written differently, or with the country code, matches.
    for t in ["(41)%2098844-5566", "%2B55%2041%2098844-5566"] {
        let g = download(&h, &format!("callid={id}&telefone={t}"), &[]).await;
        assert_eq!(g.status, 200, "{t}");
    }
    let post = h
        .http
        .post(h.url(&format!("/gravacao?callid={id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
    let head = h
        .http
        .head(h.url(&format!("/gravacao?callid={id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert!(
        head.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 44
    );
    h.stop().await;
}

/// Emits RECORD_START / RECORD_STOP for `leg` recording `path` (no file written).
fn record_events(h: &Harness, leg: &str, path: &Path) {
    let encoded = fs_encode(&path.display().to_string());
    let captured_path = "/srv/fsdemo/recordings/sip/33c74a7d-a7d7-4947-94d0-d95bac1b228a.wav";
    let captured_leg = "33c74a7d-a7d7-4947-94d0-d95bac1b228a";
    for name in ["RECORD_START", "RECORD_STOP"] {
        let body = plain_event_body("06_sip_operator_click2call.rx.raw", name)
            .replace(captured_path, &encoded)
            .replace(captured_leg, leg);
        h.fs.emit(&body);
    }
}

#[tokio::test]
async fn files_outside_the_recordings_dir_are_refused_even_through_a_symlink() {
    let h = Harness::start(Extra::default()).await;
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.wav");
    std::fs::write(&secret, crate::support::standin::recorded_wav(1)).unwrap();

    // A recording event naming a path outside recordings.dir.
    let id = answered_call(&h, "41988445566").await;
    h.fs.crash_recording(&id);
    let id2 = answered_call(&h, "41977776666").await;
    h.fs.hangup(&id2, "NORMAL_CLEARING");
    until_status(&h, &format!("callid={id2}"), 200).await;
    record_events(&h, &id, &secret);
    // A symlink inside recordings.dir pointing outside.
    let link = h.recordings().join("link.wav");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    record_events(&h, &id2, &link);
    for call in [&id, &id2] {
        let g = until_status(&h, &format!("callid={call}"), 404).await;
        assert_eq!(g.code(), "recording_unavailable", "{call}");
        assert!(!g.body.windows(4).any(|w| w == b"RIFF"));
    }
    h.stop().await;
}

#[tokio::test]
async fn discarded_corrupt_and_crash_damaged_recordings() {
    let h = Harness::start(Extra::default()).await;
    // Too short: FreeSWITCH deletes it and says so.
    let short = answered_call(&h, "41988445566").await;
    h.fs.stop_recording(&short, true);
    let g = until_status(&h, &format!("callid={short}"), 404).await;
    assert_eq!(g.code(), "recording_discarded");

    // Not a WAV at all.
    let bad = answered_call(&h, "41977776666").await;
    let path = h.fs.stop_recording(&bad, false).unwrap();
    std::fs::write(&path, b"this is not audio").unwrap();
    let g = until_status(&h, &format!("callid={bad}"), 500).await;
    assert_eq!(g.code(), "recording_invalid");

    // FreeSWITCH died while recording: the header still says zero; served corrected.
    let crashed = answered_call(&h, "41955554444").await;
    let path = h.fs.crash_recording(&crashed).unwrap();
    let on_disk = std::fs::read(&path).unwrap();
    assert_eq!(&on_disk[40..44], &[0, 0, 0, 0]);
    let g = until_status(&h, &format!("callid={crashed}"), 200).await;
    let len = on_disk.len() as u32;
    assert_eq!(g.body.len(), on_disk.len());
    assert_eq!(g.body[4..8], (len - 8).to_le_bytes());
    assert_eq!(g.body[40..44], (len - 44).to_le_bytes());
    assert_eq!(g.body[44..], on_disk[44..], "samples untouched");
    // A range inside the corrected header is corrected too.
    let part = download(
        &h,
        &format!("callid={crashed}"),
        &[("range", "bytes=38-47")],
    )
    .await;
    assert_eq!(part.status, 206);
    assert_eq!(part.body, g.body[38..48]);
    h.stop().await;
}

#[tokio::test]
async fn either_leg_of_a_bridged_call_finds_the_recording() {
    let h = Harness::start(Extra::default()).await;
    let operator = answered_call(&h, "41988445566").await;
    let customer = "c0c0c0c0-0000-4000-8000-000000000001";
    // The dialplan bridged the operator's leg to the customer's (capture 07's CHANNEL_BRIDGE).
    let bridge = plain_event_body("07_dialer_bridge_to_sip_operator.rx.raw", "CHANNEL_BRIDGE")
        .replace("d1a1e700-0000-4000-8000-000000000007", &operator)
        .replace("2c101f0f-ac8b-47fe-b5cb-01ff5c577bfb", customer);
    h.fs.emit(&bridge);
    // The customer's leg records too (e.g. the customer's dialplan records).
    let customer_file = h.recordings().join("customer.wav");
    h.fs.start_recording(customer, &customer_file);
    h.fs.stop_recording(customer, false);
    h.fs.hangup(&operator, "NORMAL_CLEARING");
    let by_operator = until_status(&h, &format!("callid={operator}"), 200).await;
    let by_customer = until_status(&h, &format!("callid={customer}"), 200).await;
    // Both ids find the call's newest recording.
    assert_eq!(by_operator.body, by_customer.body);
    h.stop().await;
}

#[tokio::test]
async fn a_restart_forgets_nothing_and_missed_events_fall_back_to_the_known_path() {
    let mut h = Harness::start(Extra::default()).await;
    let id = answered_call(&h, "41988445566").await;
    h.fs.hangup(&id, "NORMAL_CLEARING");
    let before = until_status(&h, &format!("callid={id}"), 200).await;
    h.restart_service().await;
    let after = download(&h, &format!("callid={id}"), &[]).await;
    assert_eq!(after.status, 200);
    assert_eq!(after.body, before.body);

    // A call recorded while the adapter was down: no RECORD_* seen, the path is the one
    // click2call chose; served once FreeSWITCH says the channel is gone.
    let missed = answered_call(&h, "41977776666").await;
    h.fs.hangup(&missed, "NORMAL_CLEARING");
    until_status(&h, &format!("callid={missed}"), 200).await;
    let storage = h.service().storage.clone();
    // Forget the events (as if the adapter had been down), keep the file.
    let db = h.db_path();
    drop(storage);
    h.restart_service().await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("DELETE FROM recordings")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let g = download(&h, &format!("callid={missed}"), &[]).await;
    assert_eq!(g.status, 200, "{}", g.code());
    assert_eq!(&g.body[..4], b"RIFF");
    h.stop().await;
}

#[tokio::test]
async fn a_call_without_recording_is_409_while_up_then_a_distinct_404() {
    let h = Harness::start(Extra {
        recordings: "record_click2call = false".into(),
        ..Extra::default()
    })
    .await;
    let r = h
        .http
        .post(h.url("/click2call"))
        .json(&json!({"ramal": "1001", "telefone": "41988445566"}))
        .send()
        .await
        .unwrap();
    let id = r.json::<serde_json::Value>().await.unwrap()["callid"]
        .as_str()
        .unwrap()
        .to_string();
    let live = until_status(&h, &format!("callid={id}"), 409).await;
    assert_eq!(live.code(), "recording_in_progress");
    h.fs.hangup(&id, "NORMAL_CLEARING");
    let done = until_status(&h, &format!("callid={id}"), 404).await;
    assert_eq!(done.code(), "recording_not_found");
    h.stop().await;
}

/// The channel vanished without RECORD_STOP or hangup reaching us (events lost): a download
/// that finds the recording open asks FreeSWITCH, and serves the file instead of 409.
#[tokio::test]
async fn an_open_recording_whose_channel_is_gone_downloads() {
    let h = Harness::start(Extra::default()).await;
    let id = answered_call(&h, "41988445566").await;
    assert_eq!(download(&h, &format!("callid={id}"), &[]).await.status, 409);
    let path = recording_path(&h, &id).await;
    // FreeSWITCH finished the file and dropped the channel; we heard nothing.
    std::fs::write(&path, crate::support::standin::recorded_wav(2)).unwrap();
    h.fs.forget_channel(&id);
    let got = download(&h, &format!("callid={id}"), &[]).await;
    assert_eq!(got.status, 200, "{}", got.code());
    assert_eq!(got.body, std::fs::read(&path).unwrap());
    h.stop().await;
}

/// The adapter is SIGKILLed while a click2call is recorded; the call ends while it is away
/// (its RECORD_STOP and hangup go to nobody); after the restart the reconciliation closes
/// the recording and the download gives the exact bytes on disk within 15 s.
#[tokio::test]
async fn a_recording_that_ended_while_the_adapter_was_down_downloads_after_the_restart() {
    use crate::support::binary::{Running, free_port};
    let fs = crate::support::standin::StandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    std::fs::create_dir_all(&rec).unwrap();
    let (http, admin) = (free_port(), free_port());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [dialer]\nlisten = \"127.0.0.1:0\"\n[freeswitch]\naddress = \"{}\"\n\
             [recordings]\ndir = \"{}\"\n[storage]\nurl = \"sqlite://{}\"\n",
            fs.addr(),
            rec.display(),
            dir.path().join("s.db").display()
        ),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{http}");
    let mut first = Running::spawn(&[], &config, &[]);
    first.wait_ready(admin).await;
    let r = crate::support::http()
        .post(format!("{base}/click2call"))
        .json(&json!({"ramal": "1001", "telefone": "41988445566"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.json::<serde_json::Value>().await.unwrap()["callid"]
        .as_str()
        .unwrap()
        .to_string();
    let gravacao = format!("{base}/gravacao?callid={id}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while crate::support::get(&gravacao).await.unwrap().status() != 409 {
        assert!(Instant::now() < deadline, "the recording never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.signal("-KILL").await;
    // While the adapter is down the call ends: RECORD_STOP and the hangup reach nobody.
    assert!(fs.hangup(&id, "NORMAL_CLEARING"));
    let on_disk: Vec<u8> = {
        let found: Vec<_> = walk(&rec);
        assert_eq!(found.len(), 1, "{found:?}");
        std::fs::read(&found[0]).unwrap()
    };
    let mut second = Running::spawn(&[], &config, &[]);
    let restarted = Instant::now();
    second
        .wait_answering(&format!("http://127.0.0.1:{admin}/healthz"))
        .await;
    loop {
        let r = crate::support::get(&gravacao).await.unwrap();
        if r.status() == 200 {
            assert_eq!(r.bytes().await.unwrap().to_vec(), on_disk);
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(15),
            "still {} 15 s after the restart",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(second.signal("-TERM").await);
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// After a reconnect, recordings and calls storage still thinks are open are checked
/// against FreeSWITCH: gone channels are closed without anyone downloading.
#[tokio::test]
async fn a_reconnect_closes_what_freeswitch_no_longer_has() {
    let mut h = Harness::start(Extra::default()).await;
    let gone = answered_call(&h, "41988445566").await;
    let alive = answered_call(&h, "41988445567").await;
    h.fs.forget_channel(&gone);
    h.fs.restart().await;
    let storage = h.service().storage.clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = storage.recordings_for_call(&gone).await.unwrap();
        if rows
            .iter()
            .all(|r| r.state == finaz_freeswitch::storage::RecordingState::Done)
        {
            break;
        }
        assert!(Instant::now() < deadline, "never reconciled: {rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let still = storage.recordings_for_call(&alive).await.unwrap();
    assert!(
        still
            .iter()
            .all(|r| r.state == finaz_freeswitch::storage::RecordingState::Recording),
        "a live call's recording was closed: {still:?}"
    );
    h.stop().await;
}
