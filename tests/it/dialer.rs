//! Dialer answered, end to end: FreeSWITCH's `socket` app (played from capture 04a) and its
//! events (capture 07) on one side, a real HTTP server playing Finaz on the other.

use std::time::{Duration, Instant};

use finaz_freeswitch::storage::{OutboxState, Storage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::binary::{Running, free_port};
use crate::support::captures::plain_event_body;
use crate::support::finaz::{FakeFinaz, param};
use crate::support::harness::{Extra, Harness};
use crate::support::outbound_driver::{
    Handoff, Options, connect_reply, connect_reply_with, drive, drive_with,
};

const HOLD: Duration = Duration::from_secs(10);

/// The customer leg and the operator leg of capture 07.
const CUSTOMER_LEG: &str = "d1a1e700-0000-4000-8000-000000000007";
const OPERATOR_LEG: &str = "2c101f0f-ac8b-47fe-b5cb-01ff5c577bfb";

async fn harness(finaz: &FakeFinaz, extra_finaz: &str, extra_dialer: &str) -> Harness {
    Harness::start(Extra {
        finaz: format!("answered_url = \"{}\"\n{extra_finaz}", finaz.template()),
        dialer: extra_dialer.into(),
        ..Extra::default()
    })
    .await
}

async fn wait_outbox(storage: &Storage, call: &str, state: OutboxState) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let e = storage.outbox_for_call(call).await.unwrap();
        if e.as_ref().is_some_and(|e| e.state == state) {
            return;
        }
        assert!(Instant::now() < deadline, "outbox never {state:?}: {e:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_socket_hand_off_sends_every_value_exactly_encoded_and_lets_the_call_go_on() {
    let finaz = FakeFinaz::start().await;
    let h = harness(&finaz, "empresa_id = \"77 A\"", "").await;
    let call = "d1a1e700-0000-4000-8000-000000000042";
    let reply = connect_reply(
        call,
        &[
            ("finaz_crm_id", "CRM 7001+ção"),
            ("finaz_telefone", "+55 41 98844-5566"),
            ("finaz_ramal", "1001"),
        ],
    );
    let session = drive(h.dialer(), reply, HOLD).await;
    // `myevents`, `connect`, then the adapter closes after the park: no hangup, and the
    // `socket` app returns so the dialplan continues.
    assert_eq!(session.commands, ["myevents", "connect"]);
    assert!(session.closed_by_adapter);
    assert_eq!(session.handoff, Handoff::Returned);
    // The webhook was durable before the session was released.
    let entry = h
        .service()
        .storage
        .outbox_for_call(call)
        .await
        .unwrap()
        .expect("stored before the socket closed");
    assert!(entry.attempts <= 1, "{entry:?}");

    let hits = finaz
        .wait_for(Duration::from_secs(5), |h| !h.is_empty())
        .await;
    assert_eq!(hits.len(), 1);
    assert_eq!(
        hits[0].target,
        format!(
            "/telephony-proxy/atendimentodiscador?pid=CRM%207001%2B%C3%A7%C3%A3o&num=5541988445566&cid={call}&ramal=1001&empresald=77%20A"
        )
    );
    wait_outbox(&h.service().storage, call, OutboxState::Delivered).await;
    // The cid finds the call for recordings.
    let c = h.service().storage.find_call(call).await.unwrap().unwrap();
    assert_eq!(c.crm_id.as_deref(), Some("CRM 7001+ção"));
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("finaz_dialer_answered_total{source=\"socket\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("finaz_webhook_delivered_total 1\n"));
    assert!(metrics.contains("finaz_outbox_pending 0\n"));
    h.stop().await;
}

#[tokio::test]
async fn without_tags_the_operator_and_customer_come_from_the_channel() {
    let finaz = FakeFinaz::start().await;
    let h = harness(&finaz, "", "").await;
    // The operator's leg, bridged from the customer's: as the shipped snippet runs it.
    let reply = connect_reply_with(
        OPERATOR_LEG,
        &[("finaz_crm_id", "CRM-9"), ("dialed_user", "1007")],
        &[
            ("Other-Leg-Unique-ID", CUSTOMER_LEG),
            ("Other-Leg-Direction", "outbound"),
            ("Other-Leg-Destination-Number", "41977776666"),
        ],
    );
    drive(h.dialer(), reply, HOLD).await;
    let hit = finaz
        .wait_for(Duration::from_secs(5), |h| !h.is_empty())
        .await
        .remove(0);
    assert_eq!(param(&hit, "pid"), Some("CRM-9"));
    assert_eq!(param(&hit, "num"), Some("41977776666"));
    assert_eq!(param(&hit, "ramal"), Some("1007"));
    assert_eq!(
        param(&hit, "cid"),
        Some(CUSTOMER_LEG),
        "the customer's leg names the call"
    );
    assert_eq!(param(&hit, "empresald"), Some(""));
    // Either leg finds it.
    let storage = &h.service().storage;
    assert_eq!(
        storage.find_call(OPERATOR_LEG).await.unwrap().unwrap().id,
        CUSTOMER_LEG
    );
    h.stop().await;
}

#[tokio::test]
async fn a_call_without_a_crm_id_is_counted_not_sent() {
    let finaz = FakeFinaz::start().await;
    let h = harness(&finaz, "", "").await;
    let call = "d1a1e700-0000-4000-8000-000000000043";
    let session = drive(
        h.dialer(),
        connect_reply(call, &[("finaz_crm_id", "")]),
        HOLD,
    )
    .await;
    assert_eq!(session.commands, ["myevents", "connect"]);
    assert!(session.closed_by_adapter);
    // Refused, and still released the way FreeSWITCH needs: the call goes on.
    assert_eq!(session.handoff, Handoff::Returned);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(finaz.hits().is_empty());
    assert!(
        h.service()
            .storage
            .outbox_for_call(call)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        h.metrics()
            .await
            .contains("finaz_dialer_without_crm_id_total 1\n")
    );
    h.stop().await;
}

#[tokio::test]
async fn finaz_failing_then_succeeding_gets_it_once_with_backoff_and_retry_after() {
    let finaz = FakeFinaz::start().await;
    finaz.script(&[(503, Some("0")), (429, Some("0")), (500, None)]);
    let h = harness(&finaz, "", "").await;
    let call = "d1a1e700-0000-4000-8000-000000000044";
    let started = Instant::now();
    drive(
        h.dialer(),
        connect_reply(call, &[("finaz_crm_id", "1")]),
        HOLD,
    )
    .await;
    let hits = finaz
        .wait_for(Duration::from_secs(10), |h| {
            h.iter().any(|x| x.status == 200)
        })
        .await;
    assert_eq!(
        hits.iter().map(|h| h.status).collect::<Vec<_>>(),
        [503, 429, 500, 200]
    );
    // Two immediate retries (Retry-After: 0), then one backoff of 0.5-1 s.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(
        hits.iter().all(|h| h.target == hits[0].target),
        "same request every time"
    );
    wait_outbox(&h.service().storage, call, OutboxState::Delivered).await;
    let e = h
        .service()
        .storage
        .outbox_for_call(call)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.attempts, 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(finaz.hits().len(), 4, "nothing after the 2xx");
    assert!(
        h.metrics()
            .await
            .contains("finaz_webhook_retries_total 3\n")
    );
    h.stop().await;
}

#[tokio::test]
async fn an_entry_past_its_age_is_dead_and_the_cli_revives_it() {
    dead_then_revived_by_the_cli(None).await;
}

/// The same on PostgreSQL: `outbox list` and `outbox retry` work against either backend.
#[tokio::test]
async fn the_cli_revives_a_dead_entry_on_postgres_too() {
    let Some(db) = crate::support::postgres::database("outbox CLI on PostgreSQL").await else {
        return;
    };
    dead_then_revived_by_the_cli(Some(db.url.clone())).await;
}

async fn dead_then_revived_by_the_cli(storage_url: Option<String>) {
    let finaz = FakeFinaz::start().await;
    finaz.set_default(500);
    let h = Harness::start(Extra {
        finaz: format!(
            "answered_url = \"{}\"\nmax_retry_age = \"1s\"",
            finaz.template()
        ),
        storage_url,
        ..Extra::default()
    })
    .await;
    let call = "d1a1e700-0000-4000-8000-000000000045";
    drive(
        h.dialer(),
        connect_reply(call, &[("finaz_crm_id", "1")]),
        HOLD,
    )
    .await;
    wait_outbox(&h.service().storage, call, OutboxState::Dead).await;
    let dead = h
        .service()
        .storage
        .outbox_for_call(call)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dead.last_error.as_deref(), Some("HTTP 500"));
    assert!(dead.attempts >= 2, "retried before giving up: {dead:?}");
    assert!(h.metrics().await.contains("finaz_outbox_dead 1\n"));

    // The operator sees it and replays it with the CLI, against the running service's database.
    let config = h.dir.path().join("config.toml");
    let bin = env!("CARGO_BIN_EXE_finaz-freeswitch");
    let list = std::process::Command::new(bin)
        .args(["outbox", "list", "--state", "dead", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(text.contains(call) && text.contains("HTTP 500"), "{text}");
    finaz.set_default(200);
    let retry = std::process::Command::new(bin)
        .args(["outbox", "retry", "--all-dead", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        retry.status.success(),
        "{}",
        String::from_utf8_lossy(&retry.stderr)
    );
    assert!(String::from_utf8_lossy(&retry.stdout).contains("1 "));
    wait_outbox(&h.service().storage, call, OutboxState::Delivered).await;
    assert_eq!(finaz.accepted().len(), 1);
    h.stop().await;
}

#[tokio::test]
async fn five_hundred_concurrent_sessions_are_each_reported() {
    let finaz = FakeFinaz::start().await;
    let h = harness(&finaz, "max_concurrent_deliveries = 32", "").await;
    let addr = h.dialer();
    let mut sessions = Vec::new();
    for i in 0..500 {
        let call = format!("d1a1e700-0000-4000-8000-{i:012}");
        let reply = connect_reply(&call, &[("finaz_crm_id", &format!("CRM-{i}"))]);
        sessions.push(tokio::spawn(drive(addr, reply, HOLD)));
    }
    for s in sessions {
        let s = s.await.unwrap();
        assert_eq!(s.commands, ["myevents", "connect"], "{s:?}");
        assert!(s.closed_by_adapter);
        assert_eq!(s.handoff, Handoff::Returned, "{s:?}");
    }
    let hits = finaz
        .wait_for(Duration::from_secs(20), |h| h.len() >= 500)
        .await;
    let mut cids: Vec<_> = hits
        .iter()
        .map(|h| param(h, "cid").unwrap().to_string())
        .collect();
    cids.sort();
    cids.dedup();
    assert_eq!(cids.len(), 500);
    for h in &hits {
        let i: u64 = param(h, "cid").unwrap()[24..].parse().unwrap();
        assert_eq!(param(h, "pid"), Some(format!("CRM-{i}").as_str()));
    }
    h.stop().await;
}

#[tokio::test]
async fn broken_and_stalled_sessions_neither_hang_the_server_nor_report() {
    let finaz = FakeFinaz::start().await;
    let h = harness(&finaz, "", "session_timeout = \"300ms\"").await;
    let addr = h.dialer();
    // Closes before anything.
    drop(TcpStream::connect(addr).await.unwrap());
    // Closes in the middle of the channel data.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while !got.ends_with(b"connect\n\n") {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"myevents\n\nconnect\n\n");
    let reply = connect_reply("d1a1e700-0000-4000-8000-000000000046", &[]);
    s.write_all(&reply[..reply.len() / 2]).await.unwrap();
    drop(s);
    // Sends garbage.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.read(&mut buf).await.unwrap();
    s.write_all(b"Content-Length: -5\nContent-Type: command/reply\n\n")
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("the adapter closes a garbage session")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // Says nothing after connect: closed at the session timeout.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let _ = stalled.read(&mut buf).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(3), stalled.read(&mut buf))
        .await
        .expect("a stalled session is closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(250));
    // And a good session still works.
    let call = "d1a1e700-0000-4000-8000-000000000047";
    let s = drive(addr, connect_reply(call, &[("finaz_crm_id", "1")]), HOLD).await;
    assert!(s.closed_by_adapter);
    let hits = finaz
        .wait_for(Duration::from_secs(5), |h| !h.is_empty())
        .await;
    assert_eq!(hits.len(), 1);
    assert_eq!(param(&hits[0], "cid"), Some(call));
    let metrics = h.metrics().await;
    let failed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("finaz_dialer_sessions_failed_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(failed >= 4, "{metrics}");
    h.stop().await;
}

#[tokio::test]
async fn the_same_call_seen_by_socket_and_events_is_sent_once() {
    let finaz = FakeFinaz::start().await;
    let h = harness(&finaz, "", "").await;
    // Events: the captured CHANNEL_BRIDGE of the tagged customer leg (capture 07).
    let bridge = plain_event_body("07_dialer_bridge_to_sip_operator.rx.raw", "CHANNEL_BRIDGE");
    // Socket: the operator's leg, with the tags exported to it, as the shipped snippet does.
    let reply = connect_reply_with(
        OPERATOR_LEG,
        &[
            ("finaz_crm_id", "CRM-7001"),
            ("finaz_telefone", "41988445566"),
        ],
        &[("Other-Leg-Unique-ID", CUSTOMER_LEG)],
    );
    let addr = h.dialer();
    let socket = tokio::spawn(drive(addr, reply, HOLD));
    h.fs.emit(&bridge);
    socket.await.unwrap();
    let hits = finaz
        .wait_for(Duration::from_secs(5), |h| !h.is_empty())
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hits_after = finaz.hits();
    assert_eq!(hits_after.len(), 1, "{hits_after:#?}");
    assert_eq!(param(&hits[0], "cid"), Some(CUSTOMER_LEG));
    assert_eq!(param(&hits[0], "pid"), Some("CRM-7001"));
    assert_eq!(param(&hits[0], "num"), Some("41988445566"));
    assert_eq!(param(&hits[0], "ramal"), Some("1001"));
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("finaz_dialer_duplicates_total 1\n"),
        "{metrics}"
    );
    h.stop().await;
}

/// The real-FreeSWITCH finding: the tagged CHANNEL_BRIDGE arrives ~200 ms before the
/// operator leg's hand-off, so that session is a duplicate. Closed at once, it ended before
/// the `socket` app's park and the operator stayed parked for ever. Every kind of session
/// (duplicate, refused, unusable) must be released only after its channel's park.
#[tokio::test]
async fn every_session_is_released_only_after_its_park_so_the_call_goes_on() {
    let finaz = FakeFinaz::start().await;
    let h = harness(&finaz, "", "").await;
    let bridge = plain_event_body("07_dialer_bridge_to_sip_operator.rx.raw", "CHANNEL_BRIDGE");
    h.fs.emit(&bridge);
    finaz
        .wait_for(Duration::from_secs(5), |h| !h.is_empty())
        .await;
    let duplicate = connect_reply_with(
        OPERATOR_LEG,
        &[("finaz_crm_id", "CRM-7001")],
        &[("Other-Leg-Unique-ID", CUSTOMER_LEG)],
    );
    let untagged = connect_reply(
        "d1a1e700-0000-4000-8000-000000000051",
        &[("finaz_crm_id", "")],
    );
    let unusable = connect_reply(
        "d1a1e700-0000-4000-8000-000000000052",
        &[("finaz_crm_id", &"9".repeat(300))],
    );
    let malformed = connect_reply_with(
        "d1a1e700-0000-4000-8000-000000000054",
        &[("finaz_crm_id", "7")],
        &[("Content-Length", "-5")],
    );
    for (what, reply) in [
        ("duplicate", duplicate),
        ("untagged", untagged),
        ("unusable", unusable),
        ("malformed", malformed),
    ] {
        let s = drive(h.dialer(), reply, HOLD).await;
        assert_eq!(s.commands, ["myevents", "connect"], "{what}");
        assert!(s.closed_by_adapter, "{what}");
        assert_eq!(s.handoff, Handoff::Returned, "{what}: leg left parked");
    }
    assert_eq!(finaz.hits().len(), 1, "{:#?}", finaz.hits());
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("finaz_dialer_duplicates_total 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("finaz_dialer_unparked_closes_total 0\n"));
    h.stop().await;
}

/// A switch whose park never shows is not waited on for ever: the session closes after the
/// park wait (2 s), counted, and the webhook is stored all the same.
#[tokio::test]
async fn a_park_that_never_comes_is_waited_for_a_bounded_time() {
    let finaz = FakeFinaz::start().await;
    let h = harness(&finaz, "", "").await;
    let call = "d1a1e700-0000-4000-8000-000000000053";
    let opts = Options {
        hold: Duration::from_secs(10),
        park_tick: Duration::from_secs(8),
    };
    let started = Instant::now();
    let s = drive_with(
        h.dialer(),
        connect_reply(call, &[("finaz_crm_id", "7")]),
        opts,
    )
    .await;
    let took = started.elapsed();
    assert!(s.closed_by_adapter);
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(
        h.service()
            .storage
            .outbox_for_call(call)
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        h.metrics()
            .await
            .contains("finaz_dialer_unparked_closes_total 1\n")
    );
    h.stop().await;
}

/// A connect reply over 64 KiB, or one announcing a body, is not a channel: it is skipped
/// without being held in memory, counted, sends nothing, and the session is still released
/// after the park so whatever call it was goes on.
#[tokio::test]
async fn an_oversized_connect_reply_is_refused_and_still_released_after_the_park() {
    let finaz = FakeFinaz::start().await;
    let h = harness(&finaz, "", "").await;
    let big = "x".repeat(100_000);
    let huge = connect_reply_with(
        "d1a1e700-0000-4000-8000-000000000071",
        &[("finaz_crm_id", "7"), ("padding", &big)],
        &[],
    );
    let mut with_body = connect_reply_with(
        "d1a1e700-0000-4000-8000-000000000072",
        &[("finaz_crm_id", "7")],
        &[("Content-Length", "200000")],
    );
    with_body.extend(std::iter::repeat_n(b'y', 200_000));
    for (what, reply) in [("100 KB of headers", huge), ("a 200 KB body", with_body)] {
        let s = drive(h.dialer(), reply, HOLD).await;
        assert!(s.closed_by_adapter, "{what}");
        assert_eq!(s.handoff, Handoff::Returned, "{what}: leg left parked");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(finaz.hits().is_empty());
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("finaz_dialer_sessions_oversized_total 2\n"),
        "{metrics}"
    );
    assert!(metrics.contains("finaz_dialer_unparked_closes_total 0\n"));
    h.stop().await;
}

#[tokio::test]
async fn events_alone_report_a_bridge_and_a_callcenter_answer() {
    let finaz = FakeFinaz::start().await;
    let h = harness(&finaz, "", "trigger = \"events\"").await;
    assert_eq!(
        h.service().dialer_addr,
        None,
        "no socket server in events mode"
    );
    let bridge = plain_event_body("07_dialer_bridge_to_sip_operator.rx.raw", "CHANNEL_BRIDGE");
    h.fs.emit(&bridge);
    // mod_callcenter's bridge-agent-start carries the agent's channel with exported tags.
    let member = "d1a1e700-0000-4000-8000-0000000000cc";
    let agent = "2c101f0f-0000-4000-8000-0000000000cc";
    let mut cc = String::new();
    for line in bridge.lines() {
        if line.is_empty() {
            break;
        }
        let name = line.split(':').next().unwrap();
        match name {
            "Event-Name" => {
                cc.push_str("Event-Name: CUSTOM\nEvent-Subclass: callcenter%3A%3Ainfo\n")
            }
            "Unique-ID" => cc.push_str(&format!("Unique-ID: {agent}\n")),
            "variable_finaz_crm_id" => cc.push_str("variable_finaz_crm_id: CRM-CC-1\n"),
            "variable_finaz_telefone" | "Content-Length" => {}
            _ if name.starts_with("Other-Leg") || name.starts_with("Bridge-") => {}
            _ => {
                cc.push_str(line);
                cc.push('\n');
            }
        }
    }
    cc.push_str(&format!(
        "CC-Queue: vendas%40default\nCC-Action: bridge-agent-start\nCC-Agent: 1002%40default\nCC-Agent-UUID: {agent}\nCC-Member-Session-UUID: {member}\nCC-Member-CID-Number: 41955554444\n\n"
    ));
    h.fs.emit(&cc);
    let hits = finaz
        .wait_for(Duration::from_secs(5), |h| h.len() >= 2)
        .await;
    let by_cid = |cid: &str| hits.iter().find(|h| param(h, "cid") == Some(cid)).unwrap();
    let b = by_cid(CUSTOMER_LEG);
    assert_eq!(param(b, "pid"), Some("CRM-7001"));
    assert_eq!(param(b, "ramal"), Some("1001"));
    let c = by_cid(member);
    assert_eq!(param(c, "pid"), Some("CRM-CC-1"));
    assert_eq!(param(c, "ramal"), Some("1002"));
    assert_eq!(param(c, "num"), Some("41955554444"));
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("finaz_dialer_answered_total{source=\"bridge\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("finaz_dialer_answered_total{source=\"callcenter\"} 1\n"));
    h.stop().await;
}

#[tokio::test]
async fn sigterm_lets_a_send_in_flight_finish() {
    let finaz = FakeFinaz::start().await;
    finaz.set_delay(Duration::from_millis(800));
    let h = harness(&finaz, "", "").await;
    let call = "d1a1e700-0000-4000-8000-000000000048";
    drive(
        h.dialer(),
        connect_reply(call, &[("finaz_crm_id", "1")]),
        HOLD,
    )
    .await;
    // Wait until the GET is on its way (leased), then stop the service.
    let storage = h.service().storage.clone();
    let deadline = Instant::now() + Duration::from_secs(5);
    while storage
        .outbox_for_call(call)
        .await
        .unwrap()
        .is_none_or(|e| e.next_attempt_at <= finaz_freeswitch::storage::now_ms())
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let db = h.db_path();
    let dir = h.dir.path().to_path_buf();
    let _keep = &dir;
    let Harness {
        service, dir: tmp, ..
    } = h;
    service.unwrap().stop().await;
    let reopened = Storage::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let e = reopened.outbox_for_call(call).await.unwrap().unwrap();
    assert_eq!(e.state, OutboxState::Delivered, "{e:?}");
    assert_eq!(finaz.accepted().len(), 1);
    drop(tmp);
}

/// The real binary on `config`, answering on its admin port.
async fn start_binary(config: &std::path::Path, admin: u16) -> Running {
    let mut service = Running::spawn(&[], config, &[]);
    service
        .wait_answering(&format!("http://127.0.0.1:{admin}/healthz"))
        .await;
    service
}

#[tokio::test]
async fn a_webhook_survives_sigkill_while_finaz_is_down_and_is_sent_exactly_once() {
    let finaz = FakeFinaz::start().await;
    finaz.set_default(503);
    let dir = tempfile::tempdir().unwrap();
    let (http, admin, dialer, nobody) = (free_port(), free_port(), free_port(), free_port());
    let db = dir.path().join("s.db");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [dialer]\nlisten = \"127.0.0.1:{dialer}\"\n\
             [freeswitch]\naddress = \"127.0.0.1:{nobody}\"\n\
             [finaz]\nanswered_url = \"{}\"\n[storage]\nurl = \"sqlite://{}\"\n",
            finaz.template(),
            db.display()
        ),
    )
    .unwrap();
    let mut first = start_binary(&config, admin).await;
    let call = "d1a1e700-0000-4000-8000-000000000049";
    let s = drive(
        format!("127.0.0.1:{dialer}").parse().unwrap(),
        connect_reply(call, &[("finaz_crm_id", "CRM-KILL")]),
        HOLD,
    )
    .await;
    assert!(s.closed_by_adapter);
    finaz
        .wait_for(Duration::from_secs(5), |h| !h.is_empty())
        .await;
    first.signal("-KILL").await;

    // Finaz comes back while the adapter is down; the restarted adapter sends it.
    finaz.set_default(200);
    let mut second = start_binary(&config, admin).await;
    let hits = finaz
        .wait_for(Duration::from_secs(10), |h| {
            h.iter().any(|x| x.status == 200)
        })
        .await;
    assert!(hits.iter().all(|h| param(h, "cid") == Some(call)));
    assert!(hits.iter().all(|h| param(h, "pid") == Some("CRM-KILL")));
    // Once acknowledged it is never sent again, not even after another SIGKILL.
    tokio::time::sleep(Duration::from_millis(300)).await;
    second.signal("-KILL").await;
    let mut third = start_binary(&config, admin).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(finaz.accepted().len(), 1, "{:#?}", finaz.hits());
    assert!(third.signal("-TERM").await);
    let storage = Storage::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let e = storage.outbox_for_call(call).await.unwrap().unwrap();
    assert_eq!(e.state, OutboxState::Delivered);
}

/// FreeSWITCH's plain-event encoding of arbitrary bytes: anything outside printable ASCII,
/// and its delimiters, as %XX.
fn fs_encode_bytes(v: &[u8]) -> String {
    v.iter()
        .map(|&b| {
            if (0x21..0x7f).contains(&b) && !b"%+:;<=>?@[\\]^`{|}\"#&".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// No byte a dialer can put in a tag panics the session: arbitrary bytes and text as
/// `finaz_telefone`, `finaz_crm_id` and `finaz_ramal` go through the real outbound session,
/// the report and the webhook URL; every session is released after the park, and the
/// sessions gauge comes back to zero.
#[test]
fn arbitrary_tag_bytes_never_panic_a_session() {
    use proptest::prelude::*;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let finaz = rt.block_on(FakeFinaz::start());
    let h = rt.block_on(harness(&finaz, "", ""));
    let value = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        any::<String>().prop_map(String::into_bytes),
        Just("+55\u{a0}41988445566".as_bytes().to_vec()),
        Just("419–88445566".as_bytes().to_vec()),
    ];
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 48,
        ..Default::default()
    });
    let n = std::sync::atomic::AtomicUsize::new(0);
    runner
        .run(
            &(value.clone(), value.clone(), value),
            |(tel, crm, ramal)| {
                let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let call = format!("d1a1e700-0000-4000-8000-{:012}", 900 + i);
                let plain = connect_reply(&call, &[]);
                let text = String::from_utf8(plain).unwrap();
                let mut reply = String::new();
                for line in text.lines() {
                    let name = line.split(':').next().unwrap();
                    if [
                        "variable_finaz_crm_id",
                        "variable_finaz_telefone",
                        "variable_finaz_ramal",
                    ]
                    .contains(&name)
                    {
                        continue;
                    }
                    if name == "Content-Type" {
                        for (n, v) in [("crm_id", &crm), ("telefone", &tel), ("ramal", &ramal)] {
                            reply
                                .push_str(&format!("variable_finaz_{n}: {}\n", fs_encode_bytes(v)));
                        }
                    }
                    reply.push_str(line);
                    reply.push('\n');
                }
                reply.push('\n');
                let s = rt.block_on(drive(h.dialer(), reply.into_bytes(), HOLD));
                prop_assert!(s.closed_by_adapter);
                prop_assert_eq!(s.handoff, Handoff::Returned);
                Ok(())
            },
        )
        .unwrap();
    let metrics = rt.block_on(h.metrics());
    assert!(
        metrics.contains("finaz_dialer_sessions_active 0\n"),
        "{metrics}"
    );
    rt.block_on(h.stop());
}

/// Reads `metric`'s value from the admin listener's /metrics.
async fn metric(admin: u16, metric: &str) -> Option<f64> {
    let text = crate::support::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{metric} ")))
        .and_then(|v| v.parse().ok())
}

/// The database refuses writes (another process holds its lock far longer than the busy
/// timeout) while an operator answers a dialer call: the call goes on, `/readyz` says
/// storage cannot write, the report waits in memory and is retried, and once writes work
/// again the webhook is delivered, once. Through the real binary.
#[tokio::test]
async fn a_report_refused_by_the_database_is_retried_until_it_lands() {
    use sqlx::Connection;
    let fs = crate::support::standin::StandIn::start().await;
    let finaz = FakeFinaz::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (http, admin, dialer) = (free_port(), free_port(), free_port());
    let db = dir.path().join("s.db");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [dialer]\nlisten = \"127.0.0.1:{dialer}\"\ntrigger = \"socket\"\nsession_timeout = \"2s\"\n\
             [freeswitch]\naddress = \"{}\"\n\
             [finaz]\nanswered_url = \"{}\"\n[storage]\nurl = \"sqlite://{}\"\n",
            fs.addr(),
            finaz.template(),
            db.display()
        ),
    )
    .unwrap();
    let mut service = start_binary(&config, admin).await;
    let readyz = format!("http://127.0.0.1:{admin}/readyz");
    let status = async || {
        crate::support::get(&readyz)
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    service.wait_ready(admin).await;
    // Another process takes the write lock and keeps it.
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let call = "d1a1e700-0000-4000-8000-000000000081";
    let s = drive(
        format!("127.0.0.1:{dialer}").parse().unwrap(),
        connect_reply(call, &[("finaz_crm_id", "CRM-DISK")]),
        HOLD,
    )
    .await;
    assert!(s.closed_by_adapter);
    assert_eq!(s.handoff, Handoff::Returned, "the call went on");
    let body = crate::support::get(&readyz)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("storage"), "{body}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(admin, "finaz_dialer_reports_waiting").await != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "the refused report is not waiting"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(finaz.hits().is_empty());
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    drop(other);
    let hits = finaz
        .wait_for(Duration::from_secs(15), |h| !h.is_empty())
        .await;
    assert_eq!(param(&hits[0], "cid"), Some(call));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(finaz.hits().len(), 1, "delivered once");
    assert_eq!(
        metric(admin, "finaz_dialer_reports_waiting").await,
        Some(0.0)
    );
    assert_eq!(status().await, 200);
    assert!(service.signal("-TERM").await);
}

/// The captured tagged CHANNEL_BRIDGE (capture 07) between `customer` and `operator`, tagged
/// with `crm`.
fn bridge_event(customer: &str, operator: &str, crm: &str) -> String {
    plain_event_body("07_dialer_bridge_to_sip_operator.rx.raw", "CHANNEL_BRIDGE")
        .replace(CUSTOMER_LEG, customer)
        .replace(OPERATOR_LEG, operator)
        .replace(
            "variable_finaz_crm_id: CRM-7001",
            &format!("variable_finaz_crm_id: {crm}"),
        )
}

/// A WAV unlike any other test's: `tone` picks the samples.
fn distinct_wav(tone: i16) -> Vec<u8> {
    let samples: Vec<i16> = (0..8000).map(|i| (i % 100) as i16 * tone).collect();
    finaz_freeswitch::recordings::wav::pcm_wav(&samples)
}

/// mod_callcenter persistent agents (`uuid-standby`): one operator leg is bridged to three
/// tagged customers in turn. Each conversation is its own call: three webhooks, and each
/// call's recording is that conversation's, never a later customer's. Through the real
/// binary.
#[tokio::test]
async fn one_operator_leg_serving_three_customers_gives_three_calls() {
    let fs = crate::support::standin::StandIn::start().await;
    let finaz = FakeFinaz::start().await;
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    std::fs::create_dir_all(&rec).unwrap();
    let (http, admin) = (free_port(), free_port());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\nrate_limit_per_minute = 0\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [dialer]\nlisten = \"127.0.0.1:0\"\ntrigger = \"events\"\n\
             [freeswitch]\naddress = \"{}\"\n[recordings]\ndir = \"{}\"\n\
             [finaz]\nanswered_url = \"{}\"\n[storage]\nurl = \"sqlite://{}\"\n",
            fs.addr(),
            rec.display(),
            finaz.template(),
            dir.path().join("s.db").display()
        ),
    )
    .unwrap();
    let mut service = start_binary(&config, admin).await;
    service.wait_ready(admin).await;
    let agent = "2c101f0f-0000-4000-8000-00000000a6e7";
    let mut expected = Vec::new();
    for i in 1..=3i16 {
        let customer = format!("d1a1e700-0000-4000-8000-00000000c0{i:02}");
        let (cust_file, op_file) = (
            rec.join(format!("cust-{i}.wav")),
            rec.join(format!("op-{i}.wav")),
        );
        fs.answer_channel(&customer);
        fs.start_recording(&customer, &cust_file);
        fs.emit(&bridge_event(&customer, agent, &format!("CRM-{i}")));
        let hits = finaz
            .wait_for(Duration::from_secs(5), |h| h.len() >= i as usize)
            .await;
        assert_eq!(param(&hits[i as usize - 1], "cid"), Some(customer.as_str()));
        fs.start_recording(agent, &op_file);
        tokio::time::sleep(Duration::from_millis(100)).await;
        fs.stop_recording(agent, false);
        assert!(fs.hangup(&customer, "NORMAL_CLEARING"));
        // Each file its own content, written as FreeSWITCH closes it.
        std::fs::write(&cust_file, distinct_wav(i)).unwrap();
        std::fs::write(&op_file, distinct_wav(10 + i)).unwrap();
        expected.push((customer, [distinct_wav(i), distinct_wav(10 + i)]));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hits = finaz.hits();
    assert_eq!(hits.len(), 3, "{hits:#?}");
    for (i, h) in hits.iter().enumerate() {
        assert_eq!(param(h, "pid"), Some(format!("CRM-{}", i + 1).as_str()));
    }
    for (customer, own) in &expected {
        let r = crate::support::get(format!(
            "http://127.0.0.1:{http}/gravacao?callid={customer}"
        ))
        .await
        .unwrap();
        assert_eq!(r.status(), 200, "{customer}");
        let body = r.bytes().await.unwrap();
        assert!(
            own.iter().any(|o| o[..] == body[..]),
            "{customer} got another conversation's recording"
        );
    }
    assert!(service.signal("-TERM").await);
}

/// Numbers pasted into a CRM with a no-break space or an en dash go through the real
/// binary: the session is released after the park, the webhook carries the number
/// percent-encoded as it was, the sessions gauge comes back to zero, nothing panics, and
/// the logs never hold the whole number.
#[tokio::test]
async fn non_ascii_numbers_through_the_binary_neither_panic_nor_leak() {
    let finaz = FakeFinaz::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (http, admin, dialer, nobody) = (free_port(), free_port(), free_port(), free_port());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [dialer]\nlisten = \"127.0.0.1:{dialer}\"\ntrigger = \"socket\"\n\
             [freeswitch]\naddress = \"127.0.0.1:{nobody}\"\n\
             [finaz]\nanswered_url = \"{}\"\n[storage]\nurl = \"sqlite://{}\"\n",
            finaz.template(),
            dir.path().join("s.db").display()
        ),
    )
    .unwrap();
    let mut service = start_binary(&config, admin).await;
    let numbers = ["+55\u{a0}41988445566", "419–88445566"];
    for (i, number) in numbers.iter().enumerate() {
        let call = format!("d1a1e700-0000-4000-8000-0000000009a{i}");
        let s = drive(
            format!("127.0.0.1:{dialer}").parse().unwrap(),
            connect_reply(
                &call,
                &[("finaz_crm_id", "CRM-NB"), ("finaz_telefone", number)],
            ),
            HOLD,
        )
        .await;
        assert!(s.closed_by_adapter);
        assert_eq!(s.handoff, Handoff::Returned, "{number:?}");
    }
    let hits = finaz
        .wait_for(Duration::from_secs(5), |h| h.len() >= 2)
        .await;
    let nums: Vec<String> = hits
        .iter()
        .map(|h| param(h, "num").unwrap().to_string())
        .collect();
    assert!(
        nums.contains(&"%2B55%C2%A041988445566".to_string()),
        "{nums:?}"
    );
    assert!(
        nums.contains(&"419%E2%80%9388445566".to_string()),
        "{nums:?}"
    );
    assert_eq!(
        metric(admin, "finaz_dialer_sessions_active").await,
        Some(0.0)
    );
    assert!(service.signal("-TERM").await);
    let logs = service.logs().await;
    assert!(!logs.contains("panicked"), "{logs}");
    for n in numbers {
        assert!(
            !logs.contains(n),
            "the whole number is in the logs:\n{logs}"
        );
    }
    assert!(!logs.contains("41988445566"), "{logs}");
}
