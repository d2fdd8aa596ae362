//! The edge on the open internet, over real sockets: which address a request is judged by
//! (every row of the rule, IPv4 and dual-stack listeners, proxies trusted or not, spoofed
//! and unreadable headers), strangers closed at accept, connection caps, a descriptor flood
//! against the real binary, and the dialer port refusing anyone but FreeSWITCH.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::binary::{Running, free_port};
use crate::support::harness::{Extra, Harness};
use crate::support::outbound_driver::connect_reply;
use crate::support::standin::StandIn;

/// A click2call body with an extension of its own, so that no request is a double click of
/// another.
fn body() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(2000);
    let ramal = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(r#"{{"ramal":"{ramal}","telefone":"41988445566"}}"#)
}

/// Connects to `port` on `to` from the local address `from`.
async fn connect_from(from: IpAddr, to: IpAddr, port: u16) -> std::io::Result<TcpStream> {
    let socket = if from.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(SocketAddr::new(to, port)).await
}

/// What a raw request got: the status and the `error` code, or `None` when the connection
/// was closed without an answer.
type Answer = Option<(u16, String)>;

/// Request headers, values as raw bytes.
type RawHeaders<'a> = Vec<(&'a str, &'a [u8])>;

/// Sends a click2call POST with `headers` (raw bytes allowed) on `s` and reads the answer.
async fn post_on(s: &mut TcpStream, headers: &[(&str, &[u8])]) -> Answer {
    let body = body();
    let mut req = format!(
        "POST /click2call HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    for (n, v) in headers {
        req.extend_from_slice(n.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(v);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body.as_bytes());
    if s.write_all(&req).await.is_err() {
        return None;
    }
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) => 0,
            Err(_) => panic!("no answer within 5 s"),
        };
        if n == 0 {
            break;
        }
        got.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if body.len() >= len {
                break;
            }
        }
    }
    if got.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let status: u16 = text.split(' ').nth(1)?.parse().ok()?;
    let code = text
        .split("\"error\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("")
        .to_string();
    Some((status, code))
}

async fn post(from: &str, to: &str, port: u16, headers: &[(&str, &[u8])]) -> Answer {
    let mut s = connect_from(from.parse().unwrap(), to.parse().unwrap(), port)
        .await
        .unwrap();
    post_on(&mut s, headers).await
}

fn ok() -> Answer {
    Some((200, String::new()))
}

fn refused(code: &str) -> Answer {
    Some((403, code.to_string()))
}

#[tokio::test]
async fn without_trusted_proxies_the_peer_is_the_client_and_strangers_are_closed_at_accept() {
    // Defaults: Finaz's addresses and loopback allowed, no trusted proxy.
    let h = Harness::start(Extra::default()).await;
    let port = h.service().http_addr.port();
    assert_eq!(post("127.0.0.1", "127.0.0.1", port, &[]).await, ok());
    // A proxy on this host nobody listed: refused, never judged as loopback.
    for header in [
        ("X-Forwarded-For", &b"203.0.113.9"[..]),
        ("Forwarded", b"for=203.0.113.9"),
        ("X-Real-IP", b"203.0.113.9"),
    ] {
        assert_eq!(
            post("127.0.0.1", "127.0.0.1", port, &[header]).await,
            refused("untrusted_proxy"),
            "{}",
            header.0
        );
    }
    // 127.0.0.2 is not on the list: closed before a byte is read, no HTTP answer at all.
    assert_eq!(post("127.0.0.2", "127.0.0.1", port, &[]).await, None);
    assert_eq!(
        h.fs.received_lines("bgapi").len(),
        1,
        "only the first call rang"
    );
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("finaz_http_connections_refused_total{reason=\"not_allowed\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("endpoint=\"click2call\",outcome=\"untrusted_proxy\"} 3"));
    h.stop().await;
}

/// A proxy on loopback in front of a dual-stack listener: the peer is `::ffff:127.0.0.1`,
/// which must be the trusted `127.0.0.1`.
#[tokio::test]
async fn behind_a_trusted_proxy_on_a_dual_stack_listener_every_row_holds() {
    let h = Harness::start(Extra {
        http: "listen = \"[::]:0\"\nallowed_ips = [\"52.67.0.0/16\"]\ntrusted_proxies = [\"127.0.0.1\"]"
            .into(),
        ..Extra::default()
    })
    .await;
    let port = h.service().http_addr.port();
    let xff = |v: &'static [u8]| ("X-Forwarded-For", v);
    let rows: Vec<(&str, RawHeaders, Answer)> = vec![
        ("finaz through the proxy", vec![xff(b"52.67.101.27")], ok()),
        ("with a port", vec![xff(b"52.67.101.27:5512")], ok()),
        (
            "spoofed leftmost entry",
            vec![xff(b"52.67.101.27, 203.0.113.7")],
            refused("ip_not_allowed"),
        ),
        (
            "several headers, rightmost allowed",
            vec![xff(b"203.0.113.7"), xff(b"52.67.101.27")],
            ok(),
        ),
        (
            "several headers, rightmost a stranger",
            vec![xff(b"52.67.101.27"), xff(b"203.0.113.7")],
            refused("ip_not_allowed"),
        ),
        (
            "the proxy's own hop skipped",
            vec![xff(b"52.67.101.27, 127.0.0.1")],
            ok(),
        ),
        (
            "a byte >= 0x80",
            vec![xff(b"52.67.101.27\xe9")],
            refused("forwarded_for_invalid"),
        ),
        ("no header", vec![], refused("forwarded_for_invalid")),
        (
            "empty header",
            vec![xff(b"")],
            refused("forwarded_for_invalid"),
        ),
        (
            "not an address",
            vec![xff(b"finaz")],
            refused("forwarded_for_invalid"),
        ),
        (
            "RFC 7239",
            vec![("Forwarded", b"for=52.67.101.27;proto=https")],
            ok(),
        ),
        (
            "RFC 7239 IPv6 stranger",
            vec![("Forwarded", b"for=\"[2001:db8::1]:4711\"")],
            refused("ip_not_allowed"),
        ),
        (
            "RFC 7239 unknown",
            vec![("Forwarded", b"for=unknown")],
            refused("forwarded_for_invalid"),
        ),
    ];
    let mut rang = 0;
    for (what, headers, want) in rows {
        let got = post("127.0.0.1", "127.0.0.1", port, &headers).await;
        assert_eq!(got, want, "{what}");
        rang += usize::from(got == ok());
    }
    // Loopback over IPv6 is not the trusted proxy: with headers refused, without judged
    // by itself (not allowed); 127.0.0.2 is loopback too.
    assert_eq!(
        post("::1", "::1", port, &[xff(b"52.67.101.27")]).await,
        refused("untrusted_proxy")
    );
    assert_eq!(
        post("::1", "::1", port, &[]).await,
        refused("ip_not_allowed")
    );
    assert_eq!(
        post("127.0.0.2", "127.0.0.1", port, &[xff(b"52.67.101.27")]).await,
        refused("untrusted_proxy")
    );
    assert_eq!(h.fs.received_lines("bgapi").len(), rang);
    h.stop().await;
}

#[tokio::test]
async fn connection_caps_close_new_connections_and_keep_the_open_ones_working() {
    let h = Harness::start(Extra {
        http: "allowed_ips = [\"127.0.0.0/8\"]\nmax_connections = 8\nmax_connections_per_ip = 3"
            .into(),
        ..Extra::default()
    })
    .await;
    let port = h.service().http_addr.port();
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            connect_from("127.0.0.3".parse().unwrap(), lo, port)
                .await
                .unwrap(),
        );
    }
    // A fourth from the same address is closed at once.
    assert_eq!(post("127.0.0.3", "127.0.0.1", port, &[]).await, None);
    // Others are still served, and so are the held connections.
    assert_eq!(post("127.0.0.4", "127.0.0.1", port, &[]).await, ok());
    assert_eq!(post_on(&mut held[0], &[]).await, ok());
    // Fill the listener: 3 + 5 more from other addresses.
    for i in 0..5 {
        let from = format!("127.0.1.{i}").parse().unwrap();
        held.push(connect_from(from, lo, port).await.unwrap());
    }
    assert_eq!(post("127.0.0.5", "127.0.0.1", port, &[]).await, None);
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(post("127.0.0.5", "127.0.0.1", port, &[]).await, ok());
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(
            "finaz_http_connections_refused_total{reason=\"max_connections_per_ip\"} 1\n"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("finaz_http_connections_refused_total{reason=\"max_connections\"} 1\n")
    );
    h.stop().await;
}

/// The target of the edge issue: under a 1024/1024 descriptor limit, 1,100 idle connections
/// from a stranger do not stop Finaz's click2call, answered in under a second.
#[tokio::test]
async fn a_descriptor_flood_from_a_stranger_does_not_starve_finaz() {
    let fs = StandIn::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (http, admin) = (free_port(), free_port());
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\nrate_limit_per_minute = 0\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n[dialer]\nlisten = \"127.0.0.1:0\"\n\
             [freeswitch]\naddress = \"{}\"\n[recordings]\ndir = \"{}\"\n\
             [storage]\nurl = \"sqlite://{}\"\n",
            fs.addr(),
            dir.path().display(),
            dir.path().join("s.db").display()
        ),
    )
    .unwrap();
    let mut service = Running::spawn_with_nofile(1024, &[], &config, &[]);
    service.wait_ready(admin).await;
    let lo: IpAddr = "127.0.0.1".parse().unwrap();
    let mut idle = Vec::new();
    for _ in 0..1100 {
        if let Ok(s) = connect_from("127.0.0.2".parse().unwrap(), lo, http).await {
            idle.push(s);
        }
    }
    assert_eq!(idle.len(), 1100, "the kernel accepted every connection");
    let started = Instant::now();
    let answer = post("127.0.0.1", "127.0.0.1", http, &[]).await;
    let took = started.elapsed();
    assert_eq!(answer, ok());
    assert!(took < Duration::from_secs(1), "click2call took {took:?}");
    let metrics = crate::support::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let refused: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("finaz_http_connections_refused_total{reason=\"not_allowed\"} ")
        })
        .unwrap()
        .parse()
        .unwrap();
    assert!(refused >= 1000, "{refused}");
    drop(idle);
    assert!(service.signal("-TERM").await);
    let logs = service.logs().await;
    assert!(logs.contains("open file limit"), "{logs}");
    // One line for the flooding address, not 1,100.
    assert!(
        logs.matches("connection closed at accept").count() <= 2,
        "{logs}"
    );
}

/// Only FreeSWITCH may hand us calls: a forged hand-off from another address sends nothing.
#[tokio::test]
async fn a_forged_hand_off_from_a_stranger_is_closed_and_sends_no_webhook() {
    let finaz = crate::support::finaz::FakeFinaz::start().await;
    let h = Harness::start(Extra {
        finaz: format!("answered_url = \"{}\"", finaz.template()),
        ..Extra::default()
    })
    .await;
    let dialer = h.dialer();
    let mut s = connect_from("127.0.0.2".parse().unwrap(), dialer.ip(), dialer.port())
        .await
        .unwrap();
    let _ = s
        .write_all(&connect_reply(
            "d1a1e700-0000-4000-8000-000000000061",
            &[("finaz_crm_id", "FORGED")],
        ))
        .await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0, "the adapter said something to a stranger");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(finaz.hits().is_empty());
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("finaz_dialer_connections_refused_total{reason=\"not_allowed\"} 1\n"),
        "{metrics}"
    );
    h.stop().await;
}
