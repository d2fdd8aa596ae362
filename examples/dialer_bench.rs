//! Dialer benchmark: time from FreeSWITCH's `connect` to the GET arriving at Finaz at 100
//! answered calls/s, and how fast the outbox drains a 10,000-entry backlog.
//!
//! Run: `cargo run --release --example dialer_bench` (numbers go in docs/benchmarks.md).
//! The real service runs in-process with its SQLite file; FreeSWITCH's side of each socket
//! session is the captured channel data of capture 04a (3.6 KB); Finaz is a local warp server
//! answering 200 (tests/it/support/finaz.rs).
//!
//! With `TEST_POSTGRES_URL` set (`.ci/postgres` starts a server), both measures run again on
//! a fresh PostgreSQL database, and the drain once more with two service replicas on it (in
//! this process, sharing its cores), counting webhooks Finaz got twice.

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use finaz_freeswitch::app::Service;
use finaz_freeswitch::config;
use finaz_freeswitch::domain::answered_url::AnsweredUrl;
use finaz_freeswitch::storage::{DialerReport, Storage, now_ms};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use support::finaz::{FakeFinaz, param};
use support::outbound_driver::{connect_reply, park_event};

const RATE: u64 = 100;
const CALLS: u64 = 2_000;
const BACKLOG: u64 = 10_000;

fn pct(v: &[Duration], p: f64) -> Duration {
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Plays FreeSWITCH's `socket` app: `myevents` (no reply), `connect` (the channel data),
/// the channel's CHANNEL_PARK one 20 ms tick later; returns when `connect` arrived.
async fn hand_off(addr: std::net::SocketAddr, call: &str, reply: Vec<u8>) -> Instant {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while !got.ends_with(b"connect\n\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before connect");
        got.extend_from_slice(&buf[..n]);
    }
    let t0 = Instant::now();
    s.write_all(&reply).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let _ = s.write_all(&park_event(call)).await;
    // The adapter closes once the webhook is stored and the channel parked.
    while s.read(&mut buf).await.unwrap_or(0) > 0 {}
    t0
}

fn config_file(dir: &std::path::Path, finaz: &FakeFinaz, storage: &str) -> std::path::PathBuf {
    let file = dir.join(format!("config-{:x}.toml", fastrand::u32(..)));
    std::fs::write(
        &file,
        format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [dialer]\nlisten = \"127.0.0.1:0\"\ntrigger = \"socket\"\n\
             [freeswitch]\naddress = \"127.0.0.1:9\"\n\
             [finaz]\nanswered_url = \"{}\"\n[storage]\nurl = \"{storage}\"\n",
            finaz.template(),
        ),
    )
    .unwrap();
    file
}

#[tokio::main]
async fn main() {
    // Production logs every call at info: format them, write them nowhere.
    support::quiet_logs();
    let sqlite =
        |dir: &tempfile::TempDir| format!("sqlite://{}", dir.path().join("bench.db").display());
    let d1 = tempfile::tempdir().unwrap();
    latency(&sqlite(&d1)).await;
    let d2 = tempfile::tempdir().unwrap();
    drain(&sqlite(&d2), 1).await;
    if std::env::var("TEST_POSTGRES_URL").is_ok() {
        for (what, replicas) in [("latency", 0), ("drain", 1), ("drain", 2)] {
            let db = support::postgres::database("dialer_bench on PostgreSQL")
                .await
                .unwrap();
            println!(
                "\nPostgreSQL, {what}{}",
                if replicas == 2 { ", two replicas" } else { "" }
            );
            if replicas == 0 {
                latency(&db.url).await;
            } else {
                drain(&db.url, replicas).await;
            }
        }
    }
}

/// 1. Latency at a steady rate.
async fn latency(storage: &str) {
    let finaz = FakeFinaz::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (_, cfg) = config::load(Some(&config_file(dir.path(), &finaz, storage))).unwrap();
    let service = Service::start(cfg, CancellationToken::new()).await.unwrap();
    let addr = service.dialer_addr.unwrap();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    let mut sessions = Vec::new();
    for i in 0..CALLS {
        tick.tick().await;
        let call = format!("d1a1e700-0000-4000-8000-{i:012}");
        let reply = connect_reply(&call, &[("finaz_crm_id", &format!("CRM-{i}"))]);
        let c = call.clone();
        sessions.push((
            call,
            tokio::spawn(async move { hand_off(addr, &c, reply).await }),
        ));
    }
    let mut starts = std::collections::HashMap::new();
    for (call, t) in sessions {
        starts.insert(call, t.await.unwrap());
    }
    let hits = finaz
        .wait_for(Duration::from_secs(30), |h| h.len() as u64 >= CALLS)
        .await;
    let mut lat: Vec<Duration> = hits
        .iter()
        .map(|h| h.at - starts[param(h, "cid").unwrap()])
        .collect();
    lat.sort();
    println!(
        "connect -> GET at Finaz, {RATE} calls/s, {CALLS} calls: p50 {} p99 {} max {}",
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.99)),
        ms(*lat.last().unwrap())
    );
    service.stop().await;
}

/// 2. Drain a backlog stored while the service was down, with `replicas` services on it.
async fn drain(url: &str, replicas: usize) {
    let finaz = FakeFinaz::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = config_file(dir.path(), &finaz, url);
    let storage = Storage::open(url).await.unwrap();
    let template =
        std::sync::Arc::new(AnsweredUrl::parse(&finaz.template()).expect("valid template"));
    let mut writes = Vec::new();
    for i in 0..BACKLOG {
        let storage = storage.clone();
        let template = template.clone();
        writes.push(tokio::spawn(async move {
            let call = format!("b0b0b0b0-0000-4000-8000-{i:012}");
            storage
                .report_dialer_call(DialerReport {
                    call_id: call.clone(),
                    customer_leg: call.clone(),
                    crm_id: format!("CRM-{i}"),
                    telefone: Some("41988445566".into()),
                    ramal: Some("1001".into()),
                    url: template.render(&format!("CRM-{i}"), "41988445566", &call, "1001", ""),
                    node: None,
                    legs: vec![call],
                    give_up_at: now_ms() + 86_400_000,
                })
                .await
                .unwrap()
        }));
    }
    for w in writes {
        w.await.unwrap();
    }
    storage.close().await;
    let started = Instant::now();
    let mut services = Vec::new();
    for _ in 0..replicas {
        let (_, cfg) = config::load(Some(&file)).unwrap();
        services.push(Service::start(cfg, CancellationToken::new()).await.unwrap());
    }
    finaz
        .wait_for(Duration::from_secs(120), |h| {
            let mut cids: Vec<&str> = h.iter().filter_map(|h| param(h, "cid")).collect();
            cids.sort_unstable();
            cids.dedup();
            cids.len() as u64 >= BACKLOG
        })
        .await;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hits = finaz.hits().len() as u64;
    let by: Vec<u64> = services
        .iter()
        .map(|s| {
            s.outbox
                .stats
                .delivered
                .load(std::sync::atomic::Ordering::Relaxed)
        })
        .collect();
    println!(
        "backlog of {BACKLOG}: drained in {:.2} s = {:.0} webhooks/s ({replicas} replica(s), 16 concurrent deliveries each, delivered by each: {by:?}); sent twice: {}",
        took.as_secs_f64(),
        BACKLOG as f64 / took.as_secs_f64(),
        hits - BACKLOG
    );
    for s in services {
        s.stop().await;
    }
}
