//! Click2Call benchmark: requests/s and latency percentiles through real HTTP against the
//! running service and the FreeSWITCH stand-in (answering at once), next to a trivial warp
//! route served from the same process as the ceiling.
//!
//! Run: `cargo run --release --example click2call_bench` (numbers go in docs/benchmarks.md).
//! Each click2call is the full production path: allow-list, body parsing, validation,
//! dedupe, a SQLite insert, `bgapi originate` over the event socket, waiting for
//! CHANNEL_PROGRESS, two state updates in SQLite, and the info log line (formatted, then
//! discarded). Client, service and stand-in share the machine's cores.
//!
//! With `TEST_POSTGRES_URL` set (a PostgreSQL server; `.ci/postgres` starts one), the same
//! levels run a second time with the service on a fresh PostgreSQL database, in the same run.

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use finaz_freeswitch::app::Service;
use finaz_freeswitch::config;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warp::Filter;

use support::standin::StandIn;

const RUN: Duration = Duration::from_secs(5);
const WARMUP: Duration = Duration::from_secs(1);

struct Result {
    requests: u64,
    rps: f64,
    p50: Duration,
    p99: Duration,
}

/// Builds the request number `n`.
type MakeRequest = Arc<dyn Fn(&reqwest::Client, u64) -> reqwest::RequestBuilder + Send + Sync>;

/// `clients` loops, each sending one request after another for RUN; latencies after WARMUP.
async fn load(clients: usize, make: MakeRequest) -> Result {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .unwrap();
    let seq = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let measure_from = start + WARMUP;
    let end = measure_from + RUN;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let http = http.clone();
        let make = make.clone();
        let seq = seq.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < end {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                let r = make(&http, n).send().await.expect("request");
                assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
                let _ = r.bytes().await.unwrap();
                if t >= measure_from && Instant::now() <= end {
                    lat.push(t.elapsed());
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Result {
        requests: all.len() as u64,
        rps: all.len() as f64 / RUN.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() {
    // Production logs every call at info: format them, write them nowhere.
    support::quiet_logs();

    let mut backends = vec![None];
    let pg = match std::env::var("TEST_POSTGRES_URL") {
        Ok(_) => support::postgres::database("click2call_bench on PostgreSQL").await,
        Err(_) => None,
    };
    backends.extend(pg.as_ref().map(|db| Some(db.url.clone())));
    for storage in backends {
        println!(
            "\nstorage: {}",
            storage.as_deref().map_or("SQLite", |_| "PostgreSQL")
        );
        run(storage).await;
    }
}

async fn run(storage: Option<String>) {
    let fs = StandIn::start().await;
    fs.set_progress_delay(Duration::ZERO);
    // The stand-in still sends RECORD_START for every call; writing the WAV is FreeSWITCH's
    // work, not the adapter's.
    fs.set_write_recordings(false);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        format!(
            "[http]\nlisten = \"127.0.0.1:0\"\nrate_limit_per_minute = 0\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [dialer]\nlisten = \"127.0.0.1:0\"\n[freeswitch]\naddress = \"{}\"\n[recordings]\ndir = \"{}\"\n\
             [storage]\nurl = \"{}\"\n",
            fs.addr(),
            dir.path().join("rec").display(),
            storage.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()))
        ),
    )
    .unwrap();
    let (_, cfg) = config::load(Some(&file)).unwrap();
    let service = Service::start(cfg, CancellationToken::new()).await.unwrap();
    assert!(service.esl.wait_connected(Duration::from_secs(5)).await);
    let c2c_url = format!("http://{}/click2call", service.http_addr);

    let trivial = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trivial_url = format!("http://{}/trivial", trivial.local_addr().unwrap());
    tokio::spawn(
        warp::serve(warp::post().and(warp::path("trivial")).map(|| "ok"))
            .incoming(trivial)
            .run(),
    );

    println!(
        "| clients | click2call req/s | p50 | p99 | trivial route req/s | p50 | p99 | throughput ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    // BENCH_CLIENTS=16 runs one level (for profiling); BENCH_ONLY_CLICK2CALL skips the ceiling.
    let levels: Vec<usize> = std::env::var("BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(|n| vec![n])
        .unwrap_or_else(|| vec![1, 16, 128]);
    let only_click2call = std::env::var_os("BENCH_ONLY_CLICK2CALL").is_some();
    // The same requests for both: a distinct operator and number each (no double-click
    // dedupe), to `url`.
    let requests = |url: String| -> MakeRequest {
        Arc::new(move |http, n| {
            http.post(&url).json(&serde_json::json!({
                "ramal": format!("op{}", n % 100_000),
                "telefone": format!("41{:09}", n),
            }))
        })
    };
    for clients in levels {
        let c2c = load(clients, requests(c2c_url.clone())).await;
        if only_click2call {
            println!(
                "| {clients} | {:.0} | {} | {} |",
                c2c.rps,
                ms(c2c.p50),
                ms(c2c.p99)
            );
            continue;
        }
        let triv = load(clients, requests(trivial_url.clone())).await;
        println!(
            "| {clients} | {:.0} | {} | {} | {:.0} | {} | {} | {:.2} |",
            c2c.rps,
            ms(c2c.p50),
            ms(c2c.p99),
            triv.rps,
            ms(triv.p50),
            ms(triv.p99),
            c2c.rps / triv.rps
        );
        let _ = (c2c.requests, triv.requests);
    }
    println!(
        "originates seen by the stand-in: {}; live calls still followed: {}",
        fs.received_lines("bgapi originate").len(),
        service.click2call.live_calls()
    );
    service.stop().await;
}
