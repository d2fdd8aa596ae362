//! ESL benchmark: event decoding rate on one core, and bgapi round trips on one connection,
//! ours side by side with `freeswitch-esl-tokio` 2.8 against the same fake FreeSWITCH.
//!
//! Run: `cargo run --release --example esl_bench` (numbers go in docs/benchmarks.md).
//! Everything runs on 127.0.0.1; the fake FreeSWITCH answers a `bgapi` the way 1.10.12 does
//! (command/reply with the Job-UUID, then a BACKGROUND_JOB event built on a captured one).

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use finaz_freeswitch::esl::{Client, ClientConfig, EslCodec, Event};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpListener;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

const CAPTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/captures");

/// Every CHANNEL_* plain event frame from the inbound captures, as one byte stream.
fn channel_event_stream() -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut n = 0;
    for entry in std::fs::read_dir(CAPTURES).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".rx.raw") || name.contains("json") || name.contains("outbound") {
            continue;
        }
        let raw = std::fs::read(&path).unwrap();
        let mut codec = EslCodec::default();
        let mut buf = BytesMut::from(&raw[..]);
        loop {
            let before = buf.len();
            let start = raw.len() - before;
            match codec.decode(&mut buf).unwrap() {
                Some(f) if f.content_type.is_event() => {
                    let e = Event::from_frame(&f).unwrap();
                    if e.name().is_some_and(|n| n.starts_with("CHANNEL_")) {
                        out.extend_from_slice(&raw[start..raw.len() - buf.len()]);
                        n += 1;
                    }
                }
                Some(_) => {}
                None => break,
            }
        }
    }
    (out, n)
}

fn bench_decode() {
    let (stream, per_pass) = channel_event_stream();
    println!(
        "decode: {per_pass} real CHANNEL_* plain events, {} bytes ({} bytes/event on average)",
        stream.len(),
        stream.len() / per_pass
    );
    let mut codec = EslCodec::default();
    let run = |codec: &mut EslCodec, seconds: f64| {
        let started = Instant::now();
        let mut events = 0usize;
        let mut touched = 0usize;
        while started.elapsed().as_secs_f64() < seconds {
            let mut buf = BytesMut::from(&stream[..]);
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                let e = Event::from_frame(&frame).unwrap();
                // What the service reads of every event: its name and channel.
                touched += e.name().map_or(0, |n| n.len()) + e.unique_id().map_or(0, |u| u.len());
                events += 1;
            }
        }
        (events as f64 / started.elapsed().as_secs_f64(), touched)
    };
    run(&mut codec, 0.5); // warm-up
    let rss_before = support::rss_kib();
    let (rate, _) = run(&mut codec, 3.0);
    let rss_mid = support::rss_kib();
    let (rate2, _) = run(&mut codec, 3.0);
    let rss_after = support::rss_kib();
    println!("decode: {rate:.0} events/s, then {rate2:.0} events/s (one core)");
    println!(
        "decode: RSS {rss_before} KiB before, {rss_mid} KiB after 3 s, {rss_after} KiB after 6 s"
    );
}

/// A fake FreeSWITCH that answers auth, event, api and bgapi, one command at a time.
async fn fake_freeswitch() -> std::net::SocketAddr {
    let template = std::fs::read_to_string(format!("{CAPTURES}/01_inbound_api.rx.raw")).unwrap();
    // The captured BACKGROUND_JOB body, up to its Job-UUID line.
    let start = template.find("Event-Name: BACKGROUND_JOB").unwrap();
    let job_line = start + template[start..].find("Job-UUID: ").unwrap();
    let head = Arc::new(template[start..job_line].to_string());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (sock, _) = listener.accept().await.unwrap();
            let _ = sock.set_nodelay(true);
            let head = head.clone();
            tokio::spawn(async move {
                let (mut r, w) = sock.into_split();
                let mut w = BufWriter::new(w);
                w.write_all(b"Content-Type: auth/request\n\n")
                    .await
                    .unwrap();
                w.flush().await.unwrap();
                let mut buf = Vec::with_capacity(65536);
                let mut chunk = vec![0u8; 65536];
                loop {
                    let n = match r.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    let mut consumed = 0;
                    while let Some(end) = memchr::memmem::find(&buf[consumed..], b"\n\n") {
                        let cmd = std::str::from_utf8(&buf[consumed..consumed + end])
                            .unwrap()
                            .to_string();
                        consumed += end + 2;
                        let first = cmd.lines().next().unwrap_or("");
                        if first.starts_with("bgapi") {
                            let job = cmd
                                .lines()
                                .find_map(|l| l.strip_prefix("Job-UUID: "))
                                .map(str::to_string)
                                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                            let reply = format!(
                                "Content-Type: command/reply\nReply-Text: +OK Job-UUID: {job}\nJob-UUID: {job}\n\n"
                            );
                            let result = "+OK\n";
                            let body = format!(
                                "{head}Job-UUID: {job}\nJob-Command: status\nContent-Length: {}\n\n{result}",
                                result.len()
                            );
                            let event = format!(
                                "Content-Length: {}\nContent-Type: text/event-plain\n\n{body}",
                                body.len()
                            );
                            w.write_all(reply.as_bytes()).await.unwrap();
                            w.write_all(event.as_bytes()).await.unwrap();
                        } else if first.starts_with("api") {
                            let body = "+OK\n";
                            w.write_all(
                                format!(
                                    "Content-Type: api/response\nContent-Length: {}\n\n{body}",
                                    body.len()
                                )
                                .as_bytes(),
                            )
                            .await
                            .unwrap();
                        } else if first.starts_with("auth") {
                            w.write_all(
                                b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n",
                            )
                            .await
                            .unwrap();
                        } else {
                            w.write_all(b"Content-Type: command/reply\nReply-Text: +OK event listener enabled plain\n\n").await.unwrap();
                        }
                    }
                    buf.drain(..consumed);
                    if w.flush().await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Runs `total` calls of `call`, shared by `concurrency` tasks, and waits for all of them.
async fn run_callers<F, Fut>(total: usize, concurrency: usize, call: F)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let left = Arc::new(AtomicUsize::new(total));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (call, left) = (call.clone(), left.clone());
        tasks.push(tokio::spawn(async move {
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                call().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

async fn bench_ours(addr: std::net::SocketAddr, total: usize, concurrency: usize) -> f64 {
    let stop = CancellationToken::new();
    let (client, _task) =
        Client::spawn(ClientConfig::new(addr.to_string(), "ClueCon"), stop.clone());
    assert!(client.wait_connected(Duration::from_secs(5)).await);
    let started = Instant::now();
    run_callers(total, concurrency, move || {
        let client = client.clone();
        async move {
            let mut job = client.bgapi("status").await.unwrap();
            let done = job.wait().await.unwrap();
            assert_eq!(done.body_text(), "+OK\n");
        }
    })
    .await;
    let rate = total as f64 / started.elapsed().as_secs_f64();
    stop.cancel();
    rate
}

async fn bench_theirs(addr: std::net::SocketAddr, total: usize, concurrency: usize) -> f64 {
    use freeswitch_esl_tokio::{EslClient, EslEventType, EventFormat, HeaderLookup};
    let (client, mut events) = EslClient::connect(&addr.ip().to_string(), addr.port(), "ClueCon")
        .await
        .unwrap();
    client
        .subscribe_events(EventFormat::Plain, [EslEventType::BackgroundJob])
        .await
        .unwrap();
    // Held until every result is in: dropping the last handle would close the event stream.
    let keep_open = client.clone();
    let started = Instant::now();
    // Their results come on the event stream; count them until every job has answered.
    let collector = tokio::spawn(async move {
        let mut seen = 0;
        while seen < total {
            match events.recv().await {
                Some(Ok(e)) if e.job_uuid().is_some() => seen += 1,
                Some(_) => {}
                None => break,
            }
        }
        seen
    });
    run_callers(total, concurrency, move || {
        let client = client.clone();
        async move {
            let reply = client.bgapi("status").await.unwrap().into_result().unwrap();
            assert!(reply.job_uuid().is_some());
        }
    })
    .await;
    assert_eq!(collector.await.unwrap(), total);
    let rate = total as f64 / started.elapsed().as_secs_f64();
    drop(keep_open);
    rate
}

#[tokio::main]
async fn main() {
    bench_decode();
    let addr = fake_freeswitch().await;
    let total: usize = std::env::var("BENCH_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    // Warm-up of both clients and of the fake server.
    bench_ours(addr, 1000, 16).await;
    bench_theirs(addr, 1000, 16).await;
    for concurrency in [1, 16, 64] {
        let ours = bench_ours(addr, total, concurrency).await;
        let theirs = bench_theirs(addr, total, concurrency).await;
        println!(
            "bgapi: {total} jobs, {concurrency} concurrent callers, one connection: ours {ours:.0}/s, freeswitch-esl-tokio {theirs:.0}/s ({:.1}x)",
            ours / theirs
        );
    }
}
