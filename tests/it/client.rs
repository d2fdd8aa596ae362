//! The inbound client against the stand-in and against hand-scripted sockets: replies in
//! order, jobs by Job-UUID, events never stalling the reader, reconnects that restore state.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use finaz_freeswitch::esl::{Client, ClientConfig, ClientError, ConnectionState, Subscription};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::standin::{Outcome, StandIn, background_job, event_frame};

const T: Duration = Duration::from_secs(5);

fn config(addr: impl ToString) -> ClientConfig {
    let mut c = ClientConfig::new(addr.to_string(), "ClueCon");
    c.subscription = Subscription::new()
        .events(&["CHANNEL_CREATE", "CHANNEL_ANSWER", "CHANNEL_PROGRESS"])
        .unwrap();
    c.backoff_initial = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c.request_timeout = Duration::from_secs(2);
    c
}

async fn connected(addr: impl ToString) -> (Client, CancellationToken) {
    let stop = CancellationToken::new();
    let (client, _task) = Client::spawn(config(addr), stop.clone());
    assert!(client.wait_connected(T).await, "client did not connect");
    (client, stop)
}

#[tokio::test]
async fn authenticates_and_subscribes_with_background_job() {
    let fs = StandIn::start().await;
    let (client, stop) = connected(fs.addr()).await;
    let lines: Vec<String> = fs.received().into_iter().map(|r| r.line).collect();
    assert_eq!(lines[0], "auth ClueCon");
    assert_eq!(
        lines[1],
        "event plain CHANNEL_CREATE CHANNEL_ANSWER CHANNEL_PROGRESS BACKGROUND_JOB"
    );
    assert_eq!(
        client.api("status").await.unwrap().lines().nth(1).unwrap(),
        "FreeSWITCH (Version 1.10.12-release  64bit) is ready"
    );
    stop.cancel();
}

#[tokio::test]
async fn concurrent_api_calls_each_get_their_own_reply() {
    let fs = StandIn::start().await;
    let (client, stop) = connected(fs.addr()).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let out = c.api(&format!("nosuch{i} arg")).await.unwrap();
            assert_eq!(out, format!("-ERR nosuch{i} Command not found!\n"));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(client.stats().commands_sent.load(Ordering::Relaxed), 200);
    stop.cancel();
}

#[tokio::test]
async fn originate_job_result_reaches_its_caller_after_the_call_events() {
    let fs = StandIn::start().await;
    fs.set_default(Outcome::Answer {
        ring: Duration::from_millis(50),
    });
    let (client, stop) = connected(fs.addr()).await;
    let mut events = client.subscribe(64);
    let call = uuid::Uuid::new_v4().to_string();
    let mut job = client
        .bgapi(&format!(
            "originate {{origination_uuid={call}}}user/1001 41988445566 XML default"
        ))
        .await
        .unwrap();
    let result = tokio::time::timeout(T, job.wait()).await.unwrap().unwrap();
    assert_eq!(result.body_text(), format!("+OK {call}\n"));
    let mut names = Vec::new();
    while let Ok(e) = events.try_recv() {
        if e.unique_id().as_deref() == Some(call.as_str()) {
            names.push(e.name().unwrap().into_owned());
        }
    }
    assert_eq!(
        names,
        ["CHANNEL_CREATE", "CHANNEL_PROGRESS", "CHANNEL_ANSWER"]
    );
    stop.cancel();
}

/// A hand-scripted FreeSWITCH: handshake, then reads `n` commands and answers with the frames
/// `answer` builds from them.
async fn scripted<F>(n: usize, answer: F) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>)
where
    F: FnOnce(Vec<String>) -> Vec<Vec<u8>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(b"Content-Type: auth/request\n\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let mut commands = Vec::new();
        while commands.len() < n + 2 {
            let mut chunk = [0u8; 4096];
            let k = s.read(&mut chunk).await.unwrap();
            assert!(k > 0, "client closed");
            buf.extend_from_slice(&chunk[..k]);
            while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                let block = String::from_utf8(buf.drain(..end + 2).collect()).unwrap();
                commands.push(block.trim_end().to_string());
                match commands.len() {
                    1 | 2 => s
                        .write_all(b"Content-Type: command/reply\nReply-Text: +OK\n\n")
                        .await
                        .unwrap(),
                    _ => {}
                }
            }
        }
        for frame in answer(commands.split_off(2)) {
            s.write_all(&frame).await.unwrap();
        }
        // Keep the socket open until the client goes away.
        let mut rest = [0u8; 64];
        while s.read(&mut rest).await.unwrap_or(0) > 0 {}
    });
    (addr, task)
}

fn api_frame(body: &str) -> Vec<u8> {
    format!(
        "Content-Type: api/response\nContent-Length: {}\n\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test]
async fn bgapi_result_before_between_or_after_other_replies_reaches_its_caller() {
    for position in 0..=3 {
        let (addr, server) = scripted(3, move |cmds| {
            // Replies in command order, the job's result event slipped in at `position`.
            let mut frames = Vec::new();
            let mut job_event = None;
            for c in &cmds {
                if let Some(rest) = c.strip_prefix("bgapi ") {
                    let job = rest.split("Job-UUID: ").nth(1).unwrap().trim().to_string();
                    frames.push(format!("Content-Type: command/reply\nReply-Text: +OK Job-UUID: {job}\nJob-UUID: {job}\n\n").into_bytes());
                    job_event = Some(event_frame(&background_job(&job, "status", "", "+OK job done\n")));
                } else {
                    frames.push(api_frame(&format!("reply to {c}\n")));
                }
            }
            frames.insert(position, job_event.unwrap());
            frames
        })
        .await;
        let (client, stop) = connected(addr).await;
        let (a, job, b) = tokio::join!(
            client.api("first"),
            client.bgapi("status"),
            client.api("second")
        );
        assert_eq!(a.unwrap(), "reply to api first\n", "position {position}");
        assert_eq!(b.unwrap(), "reply to api second\n", "position {position}");
        let mut job = job.unwrap();
        let done = tokio::time::timeout(T, job.wait()).await.unwrap().unwrap();
        assert_eq!(done.body_text(), "+OK job done\n", "position {position}");
        stop.cancel();
        server.abort();
    }
}

#[tokio::test]
async fn a_late_reply_after_a_timeout_is_not_given_to_the_next_request() {
    // The script answers only once both commands arrived: the first caller has given up by
    // then, so its slot must swallow the first reply and the second caller get the second.
    let (addr, server) = scripted(2, |_cmds| {
        vec![
            api_frame("late answer to slow\n"),
            api_frame("answer to fast\n"),
        ]
    })
    .await;
    let stop = CancellationToken::new();
    let mut cfg = config(addr);
    cfg.request_timeout = Duration::from_millis(300);
    let (client, _task) = Client::spawn(cfg, stop.clone());
    assert!(client.wait_connected(T).await);
    let slow = client.api("slow").await;
    assert_eq!(slow, Err(ClientError::Timeout(Duration::from_millis(300))));
    assert_eq!(client.api("fast").await.unwrap(), "answer to fast\n");
    assert_eq!(client.stats().command_timeouts.load(Ordering::Relaxed), 1);
    stop.cancel();
    server.abort();
}

#[tokio::test]
async fn freeswitch_killed_mid_request_fails_fast_then_reconnects_and_resubscribes() {
    let mut fs = StandIn::start().await;
    fs.set_default(Outcome::Silent);
    let (client, stop) = connected(fs.addr()).await;
    let mut events = client.subscribe(16);
    let mut job = client.bgapi("originate {origination_uuid=0b0b0b0b-0000-4000-8000-000000000001}user/1001 1 XML default").await.unwrap();
    fs.stop().await;
    let lost = tokio::time::timeout(Duration::from_secs(1), job.wait())
        .await
        .expect("fails fast");
    assert_eq!(lost.unwrap_err(), ClientError::ConnectionLost);
    // While FreeSWITCH is down, requests are refused at once, not queued.
    let mut state = client.watch_state();
    state
        .wait_for(|s| matches!(s, ConnectionState::Disconnected { .. }))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    assert!(client.api("status").await.unwrap_err().is_disconnected());
    assert!(started.elapsed() < Duration::from_millis(500));

    fs.restart().await;
    assert!(client.wait_connected(T).await, "reconnected");
    assert_eq!(
        fs.received_lines("event plain").len(),
        2,
        "subscription sent again"
    );
    assert!(client.api("status").await.unwrap().contains("is ready"));
    fs.emit(&crate::support::captures::plain_event_body(
        "06_sip_operator_click2call.rx.raw",
        "CHANNEL_ANSWER",
    ));
    let e = tokio::time::timeout(T, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.name().unwrap(), "CHANNEL_ANSWER");
    assert_eq!(client.stats().reconnects.load(Ordering::Relaxed), 1);
    stop.cancel();
}

#[tokio::test]
async fn a_slow_subscriber_loses_events_but_never_stalls_replies() {
    let fs = StandIn::start().await;
    let (client, stop) = connected(fs.addr()).await;
    let _never_read = client.subscribe(1);
    let body = crate::support::captures::plain_event_body(
        "06_sip_operator_click2call.rx.raw",
        "CHANNEL_CREATE",
    );
    for _ in 0..500 {
        fs.emit(&body);
    }
    assert!(client.api("status").await.unwrap().contains("is ready"));
    let stats = client.stats();
    tokio::time::timeout(T, async {
        while stats.events_received.load(Ordering::Relaxed) < 500 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(stats.events_dropped.load(Ordering::Relaxed), 499);
    stop.cancel();
}

#[tokio::test]
async fn malformed_or_oversized_frames_end_only_that_connection() {
    for garbage in [
        &b"Content-Type: api/response\nContent-Length: -5\n\n"[..],
        b"Content-Type: api/response\nContent-Length: 99999999999\n\n",
    ] {
        let fs = StandIn::start().await;
        let (client, stop) = connected(fs.addr()).await;
        fs.emit_raw(garbage);
        let mut state = client.watch_state();
        tokio::time::timeout(
            T,
            state.wait_for(|s| matches!(s, ConnectionState::Disconnected { .. })),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(
            client.wait_connected(T).await,
            "reconnects after a bad frame"
        );
        assert!(client.api("status").await.unwrap().contains("is ready"));
        stop.cancel();
    }
}

#[tokio::test]
async fn wrong_password_is_reported_without_the_password() {
    let fs = StandIn::start_with_password("other").await;
    let stop = CancellationToken::new();
    let (client, _task) = Client::spawn(config(fs.addr()), stop.clone());
    let mut state = client.watch_state();
    let s = tokio::time::timeout(T, state.wait_for(|s| matches!(s, ConnectionState::Disconnected { reason } if reason.contains("authentication"))))
        .await
        .unwrap()
        .unwrap()
        .clone();
    assert!(!format!("{s:?}").contains("ClueCon"));
    assert!(!client.is_connected());
    stop.cancel();
}

#[tokio::test]
async fn shutdown_fails_pending_jobs_and_stops_the_client() {
    let fs = StandIn::start().await;
    fs.set_default(Outcome::Silent);
    let stop = CancellationToken::new();
    let (client, task) = Client::spawn(config(fs.addr()), stop.clone());
    assert!(client.wait_connected(T).await);
    let mut job = client
        .bgapi("originate {origination_uuid=0b0b0b0b-0000-4000-8000-000000000002}user/1 1")
        .await
        .unwrap();
    stop.cancel();
    tokio::time::timeout(T, task).await.unwrap().unwrap();
    assert!(job.wait().await.unwrap_err().is_disconnected());
    assert_eq!(client.state(), ConnectionState::Stopped);
    assert_eq!(
        client.api("status").await.unwrap_err(),
        ClientError::NotConnected
    );
}

/// A switch that accepts every connection, lets it authenticate and subscribe (or refuses
/// the password), then closes at once; counts the connections it got.
async fn dropping_switch(accept_password: bool) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let _ = s.write_all(b"Content-Type: auth/request\n\n").await;
                let mut buf = Vec::new();
                let mut answered = 0;
                while answered < 2 {
                    let mut chunk = [0u8; 1024];
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
                        buf.drain(..end + 2);
                        answered += 1;
                        let text = if accept_password {
                            if answered == 1 {
                                "+OK accepted"
                            } else {
                                "+OK event listener enabled plain"
                            }
                        } else {
                            "-ERR invalid"
                        };
                        let _ = s
                            .write_all(
                                format!("Content-Type: command/reply\nReply-Text: {text}\n\n")
                                    .as_bytes(),
                            )
                            .await;
                        if !accept_password {
                            return;
                        }
                    }
                }
                // Authenticated and subscribed: now drop it, as a sick switch would.
            });
        }
    });
    (addr, count)
}

/// Refused ports are retried quickly, but a switch that accepts and then drops (after the
/// handshake, or at the password) is not hammered: the backoff grows across such drops.
#[tokio::test]
async fn connections_dropped_right_after_the_handshake_back_off() {
    for accept_password in [true, false] {
        let (addr, count) = dropping_switch(accept_password).await;
        let stop = CancellationToken::new();
        let mut c = config(addr);
        c.backoff_initial = Duration::from_millis(200);
        c.backoff_max = Duration::from_secs(10);
        let (_client, _task) = Client::spawn(c, stop.clone());
        tokio::time::sleep(Duration::from_secs(3)).await;
        let n = count.load(Ordering::Relaxed);
        // 200 ms doubling with ±25 % jitter: at most 5 attempts in 3 s (a reset after every
        // handshake would make ~15).
        assert!(
            (2..=5).contains(&n),
            "password ok: {accept_password}: {n} connections in 3 s"
        );
        stop.cancel();
    }
}
