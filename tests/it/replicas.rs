//! Two adapter processes (the real binary) on one PostgreSQL, in front of two FreeSWITCH
//! stand-ins: any replica takes any request. Click2calls through either replica reach the
//! right node, a double click sent to both rings once, recordings download from either, and
//! 1,000 dialer hand-offs (each also seen by both replicas as a CHANNEL_BRIDGE) give exactly
//! 1,000 webhooks, none twice, with one replica SIGKILLed halfway.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::binary::{Running, free_port};
use crate::support::captures::plain_event_body;
use crate::support::finaz::{FakeFinaz, param};
use crate::support::outbound_driver::{connect_reply_with, drive};
use crate::support::postgres;
use crate::support::standin::StandIn;

/// The tagged legs of capture 07, replaced per call.
const CUSTOMER_LEG: &str = "d1a1e700-0000-4000-8000-000000000007";
const OPERATOR_LEG: &str = "2c101f0f-ac8b-47fe-b5cb-01ff5c577bfb";

struct Replica {
    process: Running,
    http: u16,
    admin: u16,
    dialer: u16,
}

impl Replica {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }
}

/// Starts replica `n` of the pair on `database`, with nodes `a` and `b`.
async fn replica(
    n: usize,
    dir: &Path,
    database: &str,
    finaz: &FakeFinaz,
    a: &StandIn,
    b: &StandIn,
) -> Replica {
    let (http, admin, dialer) = (free_port(), free_port(), free_port());
    let config = dir.join(format!("replica{n}.toml"));
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\nrate_limit_per_minute = 0\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [freeswitch]\nreconnect_max_backoff = \"200ms\"\n\
             [[freeswitch.nodes]]\nname = \"a\"\naddress = \"{}\"\npassword = \"ClueCon\"\n\
             [[freeswitch.nodes]]\nname = \"b\"\naddress = \"{}\"\npassword = \"ClueCon\"\n\
             [recordings]\ndir = \"{}\"\n\
             [dialer]\nlisten = \"127.0.0.1:{dialer}\"\n\
             [finaz]\nanswered_url = \"{}\"\ndelivery_timeout = \"1s\"\nmax_concurrent_deliveries = 16\n\
             [storage]\nurl = \"{database}\"\n\
             [log]\nlevel = \"warn\"\n",
            a.addr(),
            b.addr(),
            dir.join("rec").display(),
            finaz.template(),
        ),
    )
    .unwrap();
    let mut process = Running::spawn(&[], &config, &[]);
    process.wait_ready(admin).await;
    Replica {
        process,
        http,
        admin,
        dialer,
    }
}

async fn click(
    http: &reqwest::Client,
    r: &Replica,
    ramal: &str,
    telefone: &str,
    key: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req = http
        .post(r.url("/click2call"))
        .json(&serde_json::json!({"ramal": ramal, "telefone": telefone}));
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// `finaz_webhook_delivered_total` of replica `r`.
async fn delivered_by(r: &Replica) -> u64 {
    let metrics = crate::support::get(format!("http://127.0.0.1:{}/metrics", r.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("finaz_webhook_delivered_total "))
        .unwrap_or_else(|| panic!("{metrics}"))
        .parse()
        .unwrap()
}

fn originates_for(fs: &StandIn, telefone: &str) -> usize {
    fs.received_lines("bgapi originate")
        .iter()
        .filter(|l| l.contains(telefone))
        .count()
}

#[tokio::test]
async fn any_replica_takes_any_click2call_and_serves_any_recording() {
    let Some(db) = postgres::database("replicas (click2call)").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let finaz = FakeFinaz::start().await;
    let (a, b) = (StandIn::start().await, StandIn::start().await);
    a.set_registered(&["1001"]);
    b.set_registered(&["2001"]);
    let r1 = replica(1, dir.path(), &db.url, &finaz, &a, &b).await;
    let r2 = replica(2, dir.path(), &db.url, &finaz, &a, &b).await;
    let http = crate::support::http();

    // Spread over both replicas, each call reaches its extension's node.
    let mut calls = Vec::new();
    for (i, (ramal, fs)) in [("1001", &a), ("2001", &b), ("2001", &b), ("1001", &a)]
        .into_iter()
        .enumerate()
    {
        let via = if i % 2 == 0 { &r1 } else { &r2 };
        let telefone = format!("4198844{:04}", 5000 + i);
        let (status, body) = click(&http, via, ramal, &telefone, None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            originates_for(fs, &telefone),
            1,
            "{ramal} via replica {}",
            i % 2 + 1
        );
        let other = if std::ptr::eq(fs, &a) { &b } else { &a };
        assert_eq!(originates_for(other, &telefone), 0);
        calls.push((body["callid"].as_str().unwrap().to_string(), fs));
    }

    // A double click landing on both replicas at once rings once; both get the same call.
    let (one, two) = tokio::join!(
        click(&http, &r1, "2001", "41999990001", None),
        click(&http, &r2, "2001", "41999990001", None)
    );
    assert_eq!((one.0, two.0), (200, 200), "{one:?} {two:?}");
    assert_eq!(one.1["callid"], two.1["callid"]);
    assert_eq!(originates_for(&b, "41999990001"), 1, "rang once");
    // An Idempotency-Key retried on the other replica, with another number format.
    let first = click(&http, &r1, "1001", "41999990002", Some("finaz-req-77")).await;
    let again = click(&http, &r2, "1001", "(41) 99999-0002", Some("finaz-req-77")).await;
    assert_eq!(first.0, 200);
    assert_eq!(again.1["callid"], first.1["callid"], "{again:?}");
    assert_eq!(originates_for(&a, "41999990002"), 1);
    // The same key for another number on the other replica is refused.
    let reused = click(&http, &r2, "1001", "41999990003", Some("finaz-req-77")).await;
    assert_eq!(reused.0, 422, "{reused:?}");
    assert_eq!(reused.1["error"], "idempotency_key_reused");

    // Each recording downloads from either replica.
    for (call, fs) in &calls {
        assert!(fs.stop_recording(call, false).is_some());
        assert!(fs.hangup(call, "NORMAL_CLEARING"));
    }
    for (call, _) in &calls {
        for r in [&r1, &r2] {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let resp = http
                    .get(r.url(&format!("/gravacao?callid={call}")))
                    .send()
                    .await
                    .unwrap();
                if resp.status() == 200 {
                    assert_eq!(&resp.bytes().await.unwrap()[..4], b"RIFF");
                    break;
                }
                assert!(Instant::now() < deadline, "{call}: {}", resp.status());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let _ = (r1.admin, r2.dialer);
}

#[tokio::test]
async fn a_thousand_hand_offs_over_two_replicas_give_a_thousand_webhooks_despite_a_sigkill() {
    let Some(db) = postgres::database("replicas (dialer, SIGKILL)").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let finaz = FakeFinaz::start().await;
    // First both replicas deliver at once (a webhook leased twice would show here).
    finaz.set_delay(Duration::from_millis(20));
    let (a, b) = (StandIn::start().await, StandIn::start().await);
    let mut r1 = replica(1, dir.path(), &db.url, &finaz, &a, &b).await;
    let r2 = replica(2, dir.path(), &db.url, &finaz, &a, &b).await;

    let hand_off = |i: usize, to: u16| {
        let customer = format!("d1a1e700-0000-4000-8000-{i:012}");
        let operator = format!("0be7a70e-0000-4000-8000-{i:012}");
        let crm = format!("CRM-{i}");
        // Both replicas are subscribed to the node: both see the bridge.
        let node = if i.is_multiple_of(3) { &b } else { &a };
        let bridge = plain_event_body("07_dialer_bridge_to_sip_operator.rx.raw", "CHANNEL_BRIDGE")
            .replace(CUSTOMER_LEG, &customer)
            .replace(OPERATOR_LEG, &operator)
            .replace("CRM-7001", &crm);
        node.emit(&bridge);
        let reply = connect_reply_with(
            &operator,
            &[
                ("finaz_crm_id", crm.as_str()),
                ("finaz_telefone", "41988445566"),
            ],
            &[("Other-Leg-Unique-ID", customer.as_str())],
        );
        let addr = format!("127.0.0.1:{to}").parse().unwrap();
        tokio::spawn(drive(addr, reply, Duration::from_secs(10)))
    };
    // 500 answered calls a second: a busy dialer, without starving the tests running beside.
    let mut pace = tokio::time::interval(Duration::from_millis(2));
    let mut sessions = Vec::new();
    for i in 0..300 {
        pace.tick().await;
        let to = if i % 2 == 0 { r1.dialer } else { r2.dialer };
        sessions.push(hand_off(i, to));
    }
    for s in sessions.drain(..) {
        s.await.unwrap();
    }
    finaz
        .wait_for(Duration::from_secs(20), |hits| hits.len() >= 300)
        .await;
    // Both replicas delivered in this phase (a webhook leased twice would show as a duplicate).
    for r in [&r1, &r2] {
        let delivered = delivered_by(r).await;
        assert!(
            delivered > 0 && delivered < 300,
            "replica delivered {delivered} of 300"
        );
    }
    // Then Finaz is slow and refusing: the replica about to die holds leased entries in
    // flight, none of which Finaz took.
    finaz.set_default(503);
    finaz.set_delay(Duration::from_millis(300));
    let before = finaz.hits().len();
    for i in 300..500 {
        pace.tick().await;
        let to = if i % 2 == 0 { r1.dialer } else { r2.dialer };
        sessions.push(hand_off(i, to));
    }
    for s in sessions.drain(..) {
        s.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while finaz.hits().len() < before + 20 {
        if Instant::now() > deadline {
            r1.process.signal("-KILL").await;
            panic!(
                "no delivery attempt before the kill: {}",
                r1.process.logs().await
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    r1.process.signal("-KILL").await;
    for i in 500..1000 {
        pace.tick().await;
        sessions.push(hand_off(i, r2.dialer));
    }
    for s in sessions.drain(..) {
        s.await.unwrap();
    }
    finaz.set_delay(Duration::ZERO);
    finaz.set_default(200);
    finaz
        .wait_for(Duration::from_secs(60), |hits| {
            hits.iter().filter(|h| h.status == 200).count() >= 1000
        })
        .await;
    // Anything sent twice would come now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut delivered: HashMap<String, usize> = HashMap::new();
    for h in finaz.accepted() {
        let cid = param(&h, "cid").unwrap().to_string();
        let i: usize = cid[24..].parse().unwrap();
        assert_eq!(param(&h, "pid"), Some(format!("CRM-{i}").as_str()));
        *delivered.entry(cid).or_default() += 1;
    }
    assert_eq!(delivered.len(), 1000, "every call got its webhook");
    let twice: Vec<_> = delivered.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let refused = finaz.hits().len() - 1000;
    assert!(
        refused >= 20,
        "the kill came while attempts were made ({refused})"
    );

    let _ = r2.admin;
}
