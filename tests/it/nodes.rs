//! Several FreeSWITCH nodes behind one service: click2calls reach the node where the
//! operator's phone is registered, a node down refuses only its own extensions, recordings
//! are read where each node's disk is mounted, and probes and metrics name every node.

use std::time::Duration;

use crate::support::harness::{Extra, Harness};
use crate::support::standin::StandIn;

/// Two nodes: `a` (the harness's stand-in) and `b`, whose disk the adapter sees at
/// `{dir}/fs-b` (FreeSWITCH writes under `recordings.dir`, as its events say).
fn two_nodes(a: &StandIn, b: &StandIn) -> Extra {
    Extra {
        freeswitch: format!(
            "[[freeswitch.nodes]]\nname = \"a\"\naddress = \"{}\"\npassword = \"ClueCon\"\n\
             [[freeswitch.nodes]]\nname = \"b\"\naddress = \"{}\"\npassword = \"ClueCon\"\n\
             recordings_dir = \"{{dir}}/fs-b\"\n",
            a.addr(),
            b.addr()
        ),
        ..Extra::default()
    }
}

async fn all_connected(h: &Harness) {
    for n in h.service().nodes.all() {
        assert!(
            n.esl.wait_connected(Duration::from_secs(5)).await,
            "node {} never connected",
            n.name
        );
    }
}

fn originates(fs: &StandIn) -> Vec<String> {
    fs.received_lines("bgapi originate")
}

/// Every file under `dir`, as paths.
fn files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(files(&e.path()));
        } else {
            out.push(e.path().display().to_string());
        }
    }
    out
}

async fn post(h: &Harness, ramal: &str) -> (u16, serde_json::Value) {
    post_to(h, ramal, "41988445566").await
}

async fn post_to(h: &Harness, ramal: &str, telefone: &str) -> (u16, serde_json::Value) {
    let r = h
        .http
        .post(h.url("/click2call"))
        .json(&serde_json::json!({"ramal": ramal, "telefone": telefone}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn click2calls_reach_the_node_where_the_phone_is_registered() {
    let a = StandIn::start().await;
    let mut b = StandIn::start().await;
    a.set_registered(&["1001"]);
    b.set_registered(&["2001"]);
    let extra = two_nodes(&a, &b);
    let h = Harness::start_with(a, extra).await;
    b.set_disk(&h.recordings(), &h.dir.path().join("fs-b"));
    all_connected(&h).await;

    let (status, on_a) = post(&h, "1001").await;
    assert_eq!(status, 200, "{on_a}");
    let (status, on_b) = post(&h, "2001").await;
    assert_eq!(status, 200, "{on_b}");
    let (a_lines, b_lines) = (originates(&h.fs), originates(&b));
    assert_eq!(a_lines.len(), 1, "{a_lines:?}");
    assert!(a_lines[0].contains("user/1001"), "{a_lines:?}");
    assert_eq!(b_lines.len(), 1, "{b_lines:?}");
    assert!(b_lines[0].contains("user/2001"), "{b_lines:?}");
    // Registered nowhere: 404 as with one node, and no originate anywhere.
    let (status, body) = post(&h, "3001").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "extension_not_registered", "{body}");
    assert_eq!(originates(&h.fs).len() + originates(&b).len(), 2);

    // Each call row names its node; b's recording is read from b's disk.
    let storage = &h.service().storage;
    let call_b = on_b["callid"].as_str().unwrap().to_string();
    let row = storage.find_call(&call_b).await.unwrap().unwrap();
    assert_eq!(row.node.as_deref(), Some("b"));
    let row = storage
        .find_call(on_a["callid"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.node.as_deref(), Some("a"));
    assert!(b.stop_recording(&call_b, false).is_some());
    assert!(b.hangup(&call_b, "NORMAL_CLEARING"));
    let local = h.dir.path().join("fs-b");
    assert!(
        std::fs::read_dir(&local).unwrap().next().is_some(),
        "b wrote its file on its own disk"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let wav = loop {
        let r = h
            .http
            .get(h.url(&format!("/gravacao?callid={call_b}")))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break r.bytes().await.unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "{}", r.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(&wav[..4], b"RIFF");
    assert!(files(&local).iter().any(|f| f.contains(&call_b)));
    assert!(
        !files(&h.recordings()).iter().any(|f| f.contains(&call_b)),
        "b's file is only on b's disk"
    );

    // A phone that registers on b is routed there from its event, without asking.
    let asked_before = b.received_lines("api sofia_contact").len();
    b.register("2002");
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while h.service().nodes.known_registrations() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "register event not learnt"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, _) = post(&h, "2002").await;
    assert_eq!(status, 200);
    assert!(originates(&b).last().unwrap().contains("user/2002"));
    assert_eq!(b.received_lines("api sofia_contact").len(), asked_before);

    // b goes down: only its extensions are refused; the service stays ready. (Another
    // number: the same one within the double-click window would join the first call.)
    b.stop().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while h.service().nodes.all()[1].esl.is_connected() {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = post_to(&h, "2001", "41911112222").await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = post_to(&h, "1001", "41911112222").await;
    assert_eq!(status, 200, "{body}");
    let r = h
        .http
        .get(format!("{}/readyz", h.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ready: serde_json::Value = r.json().await.unwrap();
    assert_eq!(ready["nodes"][0]["name"], "a");
    assert_eq!(ready["nodes"][0]["connected"], true);
    assert_eq!(ready["nodes"][1]["connected"], false, "{ready}");
    // The console lists each node with its own state.
    let page = h
        .http
        .get(format!("{}/console/sections", h.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (a_addr, b_addr) = (
        h.service().nodes.all()[0].address.clone(),
        h.service().nodes.all()[1].address.clone(),
    );
    assert!(
        page.contains(&format!(
            "<dt>FreeSWITCH a</dt><dd class=\"ok\">{a_addr} connected</dd>"
        )),
        "{page}"
    );
    assert!(
        page.contains(&format!(
            "<dt>FreeSWITCH b</dt><dd class=\"bad\">{b_addr} not connected</dd>"
        )),
        "{page}"
    );
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("finaz_esl_connected{node=\"a\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("finaz_esl_connected{node=\"b\"} 0\n"),
        "{metrics}"
    );
    h.stop().await;
}

/// With one `[freeswitch]` section nothing changes on the wire: no registration events are
/// subscribed to and no lookup precedes an originate.
#[tokio::test]
async fn one_node_asks_nothing_before_an_originate() {
    let h = Harness::start(Extra::default()).await;
    let (status, _) = post(&h, "1001").await;
    assert_eq!(status, 200);
    assert!(h.fs.received_lines("api sofia_contact").is_empty());
    assert!(h.fs.received_lines("api global_getvar").is_empty());
    let events = h.fs.received_lines("event plain");
    assert!(!events[0].contains("sofia::register"), "{events:?}");
    h.stop().await;
}

/// After node a reconnects, what storage thinks is open is checked against FreeSWITCH: a
/// recording still running on node b stays open (node a has no such channel, but b does),
/// and is closed once no node has its channel.
#[tokio::test]
async fn a_reconnect_closes_only_what_no_node_still_has() {
    use finaz_freeswitch::storage::RecordingState;
    let a = StandIn::start().await;
    let b = StandIn::start().await;
    a.set_registered(&["1001"]);
    b.set_registered(&["2001"]);
    let extra = two_nodes(&a, &b);
    let mut h = Harness::start_with(a, extra).await;
    b.set_disk(&h.recordings(), &h.dir.path().join("fs-b"));
    all_connected(&h).await;
    let (status, body) = post(&h, "2001").await;
    assert_eq!(status, 200, "{body}");
    let call = body["callid"].as_str().unwrap().to_string();
    let storage = h.service().storage.clone();
    let recording = || async {
        storage
            .recordings_for_call(&call)
            .await
            .unwrap()
            .first()
            .map(|r| r.state)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while recording().await != Some(RecordingState::Recording) {
        assert!(
            std::time::Instant::now() < deadline,
            "RECORD_START never stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reconnect_a = async |h: &mut Harness| {
        let before = h.service().nodes.all()[0]
            .esl
            .stats()
            .reconnects
            .load(std::sync::atomic::Ordering::Relaxed);
        h.fs.restart().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while h.service().nodes.all()[0]
            .esl
            .stats()
            .reconnects
            .load(std::sync::atomic::Ordering::Relaxed)
            == before
        {
            assert!(
                std::time::Instant::now() < deadline,
                "node a never reconnected"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The pass asks both nodes about every open leg.
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    reconnect_a(&mut h).await;
    assert_eq!(
        recording().await,
        Some(RecordingState::Recording),
        "b still records it"
    );
    // b loses the channel without a word (events missed): the next pass closes it.
    b.forget_channel(&call);
    reconnect_a(&mut h).await;
    assert_eq!(recording().await, Some(RecordingState::Done));
    h.stop().await;
}

/// A dialer hand-off names its switch with `Core-UUID`: the call is recorded on the node
/// whose events carry it, even with both nodes on one IP (ports differ), and on the node
/// whose address is the peer's IP otherwise.
#[tokio::test]
async fn a_hand_off_is_recorded_on_the_node_it_came_from() {
    use crate::support::outbound_driver::{connect_reply_with, drive};
    let a = StandIn::start().await;
    let b = StandIn::start().await;
    let extra = two_nodes(&a, &b);
    let h = Harness::start_with(a, extra).await;
    all_connected(&h).await;
    // Any event teaches the adapter b's Core-UUID (a phone registering, here).
    b.register("2001");
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while h.service().nodes.known_registrations() < 1 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (call, core, node) in [
        ("d1a1e700-0000-4000-8000-0000000000b1", b.core_uuid(), "b"),
        (
            "d1a1e700-0000-4000-8000-0000000000a1",
            h.fs.core_uuid(),
            "a",
        ),
    ] {
        let reply = connect_reply_with(call, &[("finaz_crm_id", "CRM-1")], &[("Core-UUID", core)]);
        drive(h.dialer(), reply, Duration::from_secs(5)).await;
        let row = h.service().storage.find_call(call).await.unwrap().unwrap();
        assert_eq!(row.node.as_deref(), Some(node), "{call}");
    }
    h.stop().await;
}
