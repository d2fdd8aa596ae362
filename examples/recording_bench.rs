//! Recording download benchmark: throughput of downloading a 10 MB WAV with 1 and 32
//! concurrent clients through the service's `/gravacao`, next to `warp::fs::file` serving
//! the same file in the same run; resident memory sampled while 32 downloads run.
//!
//! Run: `cargo run --release --example recording_bench` (numbers go in docs/benchmarks.md).

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use finaz_freeswitch::app::{self, Service};
use finaz_freeswitch::config;
use finaz_freeswitch::recordings::wav::pcm_wav;
use finaz_freeswitch::storage::{CallKind, CallState, NewCall, Storage};
use tokio_util::sync::CancellationToken;
use warp::Filter;

const RUN: Duration = Duration::from_secs(5);
const CALL: &str = "d1a1e700-0000-4000-8000-00000000beef";

/// `clients` loops downloading `url` for RUN; bytes/s, and RSS each second while it ran.
async fn load(http: &reqwest::Client, url: &str, clients: usize, size: u64) -> (f64, Vec<u64>) {
    let bytes = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + RUN;
    let running = Arc::new(AtomicBool::new(true));
    let sampler = {
        let running = running.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while running.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                samples.push(support::rss_kib());
            }
            samples
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, url, bytes) = (http.clone(), url.to_string(), bytes.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let mut r = http.get(&url).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let mut got = 0;
                while let Some(c) = r.chunk().await.unwrap() {
                    got += c.len() as u64;
                }
                assert_eq!(got, size);
                bytes.fetch_add(got, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    running.store(false, Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    (bytes.load(Ordering::Relaxed) as f64 / secs, samples)
}

#[tokio::main]
async fn main() {
    // Production logs every call at info: format them, write them nowhere.
    support::quiet_logs();
    app::install_tls_provider();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    std::fs::create_dir_all(&rec).unwrap();
    let wav = rec.join(format!("{CALL}.wav"));
    let samples: Vec<i16> = (0..5_000_000).map(|i| (i % 3000) as i16).collect();
    std::fs::write(&wav, pcm_wav(&samples)).unwrap();
    let size = std::fs::metadata(&wav).unwrap().len();
    let db = format!("sqlite://{}", dir.path().join("bench.db").display());
    let storage = Storage::open(&db).await.unwrap();
    storage
        .insert_call(NewCall {
            id: CALL,
            kind: CallKind::Click2Call,
            ramal: Some("1001"),
            telefone: Some("41988445566"),
            crm_id: None,
            state: CallState::Ended,
            recording_path: wav.to_str(),
            node: None,
        })
        .await
        .unwrap();
    storage.close().await;
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        format!(
            "[http]\nlisten = \"127.0.0.1:0\"\nrate_limit_per_minute = 0\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [dialer]\nlisten = \"127.0.0.1:0\"\n[freeswitch]\naddress = \"127.0.0.1:9\"\n\
             [recordings]\ndir = \"{}\"\n[storage]\nurl = \"{db}\"\n",
            rec.display()
        ),
    )
    .unwrap();
    let (_, cfg) = config::load(Some(&file)).unwrap();
    let service = Service::start(cfg, CancellationToken::new()).await.unwrap();
    let ours = format!(
        "http://{}/gravacao?callid={CALL}&telefone=41988445566",
        service.http_addr
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let theirs = format!("http://{}/file.wav", listener.local_addr().unwrap());
    tokio::spawn(
        warp::serve(warp::path("file.wav").and(warp::fs::file(wav.clone())))
            .incoming(listener)
            .run(),
    );
    let http = reqwest::Client::new();
    println!(
        "file: {:.1} MB; RSS before: {} KiB",
        size as f64 / 1e6,
        support::rss_kib()
    );
    println!(
        "| clients | /gravacao MB/s | warp::fs::file MB/s | ratio | RSS each second, /gravacao (MiB) | RSS each second, warp::fs::file (MiB) |"
    );
    println!("|---|---|---|---|---|---|");
    let mib = |v: &[u64]| {
        v.iter()
            .map(|k| format!("{:.0}", *k as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for clients in [1usize, 32] {
        let (a, ra) = load(&http, &ours, clients, size).await;
        let (b, rb) = load(&http, &theirs, clients, size).await;
        println!(
            "| {clients} | {:.0} | {:.0} | {:.2} | {} | {} |",
            a / 1e6,
            b / 1e6,
            a / b,
            mib(&ra),
            mib(&rb)
        );
    }
    service.stop().await;
}
