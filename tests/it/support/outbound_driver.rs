//! Plays FreeSWITCH's side of an outbound (`socket` app) session, from captures 04a, 09 and
//! 09b: connect to the adapter, answer `connect` with the captured channel data (ids and
//! variables replaced), park the channel on the next tick, answer later commands as
//! FreeSWITCH did, and say whether the call would have come back from `socket`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::captures::{plain_event_body, read_capture};
use super::fs_rules::percent_decode;
use super::standin::{disconnect_notice, event_frame, fs_encode};

/// The captured controlled channel's uuid (the b-leg of a loopback originate whose a-leg,
/// b0b0b0b0-...-00000000000a, appears as `variable_other_loopback_leg_uuid`).
const CAPTURED_UUID: &str = "eeb5469e-5fb6-4069-ba00-af82a30037ea";

/// The captured connect reply (3640 bytes, no Content-Length) with our call id, and extra or
/// replaced `variable_*` headers inserted before `Content-Type`, percent-encoded as FS does.
pub fn connect_reply(call: &str, variables: &[(&str, &str)]) -> Vec<u8> {
    connect_reply_with(call, variables, &[])
}

/// Like [`connect_reply`], also replacing or adding plain headers (`Other-Leg-Unique-ID`...).
pub fn connect_reply_with(
    call: &str,
    variables: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> Vec<u8> {
    let raw = read_capture("04a_outbound_full_session.rx.raw");
    let end = raw.windows(2).position(|w| w == b"\n\n").unwrap();
    let block = String::from_utf8(raw[..end].to_vec())
        .unwrap()
        .replace(CAPTURED_UUID, call);
    let mut extra: Vec<(String, &str)> = variables
        .iter()
        .map(|(n, v)| (format!("variable_{n}"), *v))
        .collect();
    extra.extend(headers.iter().map(|(n, v)| (n.to_string(), *v)));
    let mut out = String::new();
    for line in block.lines() {
        let name = line.split(':').next().unwrap();
        if extra.iter().any(|(n, _)| n == name) {
            continue;
        }
        if name == "Content-Type" {
            for (n, v) in &extra {
                out.push_str(&format!("{n}: {}\n", fs_encode(v)));
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out.into_bytes()
}

/// The operator leg of capture 09b, whose CHANNEL_PARK the driver replays with our id.
const CAPTURED_PARKED: &str = "d85bcf38-4425-46a9-9526-2b9fcbccc817";

/// How the dialplan's `socket` app ended, as FreeSWITCH 1.10.12 would have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    /// The app returned: the park ended (or never began without `connect`), the dialplan
    /// goes on with the bridge.
    Returned,
    /// The session ended after `connect` but before the park started (captures 09): the
    /// channel sits in `socket` until someone hangs it up.
    StuckInPark,
}

/// What the adapter did during one driven session.
#[derive(Debug)]
pub struct Session {
    /// Every command the adapter sent, first line and headers.
    pub commands: Vec<String>,
    /// Whether the adapter closed the socket (rather than us).
    pub closed_by_adapter: bool,
    /// What became of the call.
    pub handoff: Handoff,
}

/// How the driven `socket` app behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long the driver waits for the adapter to close before closing itself.
    pub hold: Duration,
    /// Time from the connect reply to the park (FreeSWITCH: the next 20 ms timer tick).
    pub park_tick: Duration,
}

impl Options {
    pub fn hold(hold: Duration) -> Self {
        Options {
            hold,
            park_tick: Duration::from_millis(20),
        }
    }
}

fn reply_frame(text: &str) -> Vec<u8> {
    format!("Content-Type: command/reply\nReply-Text: {text}\n\n").into_bytes()
}

/// The captured CHANNEL_PARK (capture 09b) of channel `call`, as a plain event frame.
pub fn park_event(call: &str) -> Vec<u8> {
    let body = plain_event_body(
        "09b_outbound_close_after_channel_park.rx.raw",
        "CHANNEL_PARK",
    )
    .replace(CAPTURED_PARKED, call);
    event_frame(&body)
}

/// The plain header `name` of a connect reply, decoded.
fn reply_header(reply: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(reply);
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(percent_decode))
}

/// Connects as FreeSWITCH's `socket` app and plays it (see [`drive_with`]), closing after
/// `hold` if the adapter has not.
pub async fn drive(adapter: SocketAddr, reply: Vec<u8>, hold: Duration) -> Session {
    drive_with(adapter, reply, Options::hold(hold)).await
}

/// Plays the `socket` app as FreeSWITCH 1.10.12 does (PROTOCOL.md a.7, captures 04a, 09, 09b):
/// - nothing is sent before the first command, and the first command gets **no reply**
///   unless it is `connect`, which answers with `reply` (the channel data);
/// - the channel parks `park_tick` after the connect reply, and its `CHANNEL_PARK` goes out
///   only if `myevents` was on by then (a later `myevents` does not see it);
/// - `myevents` twice is `-ERR aready enabled.`; without `Control: full`, `linger`, `event`,
///   `api`... are `-ERR command not found`; `exit` says `+OK bye` and a disconnect notice;
/// - the adapter ending the session after `connect` but before the park leaves the channel
///   [`Handoff::StuckInPark`]; otherwise the app returns.
pub async fn drive_with(adapter: SocketAddr, reply: Vec<u8>, opts: Options) -> Session {
    let mut s = TcpStream::connect(adapter).await.unwrap();
    let call = reply_header(&reply, "Unique-ID").unwrap_or_default();
    let full = reply_header(&reply, "Control").is_some_and(|c| c == "full");
    let is_async = reply_header(&reply, "Socket-Mode").is_none_or(|m| m == "async");
    let mut buf = Vec::new();
    let mut commands = Vec::new();
    let deadline = tokio::time::Instant::now() + opts.hold;
    let mut connected = false;
    let mut myevents = false;
    let mut parked = false;
    let mut park_at: Option<tokio::time::Instant> = None;
    let handoff = |connected: bool, parked: bool| {
        if connected && !parked {
            Handoff::StuckInPark
        } else {
            Handoff::Returned
        }
    };
    let ended = loop {
        let mut chunk = [0u8; 4096];
        let park = async {
            match park_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let n = tokio::select! {
            r = tokio::time::timeout_at(deadline, s.read(&mut chunk)) => match r {
                Ok(Ok(n)) => n,
                Ok(Err(_)) => 0,
                Err(_) => break false,
            },
            () = park => {
                park_at = None;
                parked = true;
                if myevents && s.write_all(&park_event(&call)).await.is_err() {
                    break true;
                }
                continue;
            }
        };
        if n == 0 {
            break true;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let cmd = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 2);
            let first = cmd.lines().next().unwrap_or("").trim().to_string();
            let (verb, rest) = first.split_once(' ').unwrap_or((first.as_str(), ""));
            let is_first = commands.is_empty();
            commands.push(first.clone());
            let answer = match verb {
                "connect" => {
                    assert!(!connected, "connect sent twice");
                    connected = true;
                    if is_async {
                        park_at = Some(tokio::time::Instant::now() + opts.park_tick);
                    } else {
                        parked = true;
                    }
                    Some(reply.clone())
                }
                _ if !full
                    && [
                        "linger",
                        "nolinger",
                        "event",
                        "nixevent",
                        "noevents",
                        "api",
                        "bgapi",
                        "sendevent",
                        "log",
                        "nolog",
                    ]
                    .contains(&verb) =>
                {
                    Some(reply_frame("-ERR command not found"))
                }
                "myevents" if myevents => Some(reply_frame("-ERR aready enabled.")),
                "myevents" => {
                    assert!(rest.is_empty() || rest == "plain", "driver speaks plain");
                    myevents = true;
                    Some(reply_frame("+OK Events Enabled"))
                }
                "linger" if rest.is_empty() => Some(reply_frame("+OK will linger")),
                "linger" => Some(reply_frame(&format!("+OK will linger {rest} seconds"))),
                "nolinger" => Some(reply_frame("+OK will not linger")),
                "resume" | "sendmsg" => Some(reply_frame("+OK")),
                "exit" => {
                    let mut bye = reply_frame("+OK bye");
                    bye.extend_from_slice(&disconnect_notice());
                    let _ = s.write_all(&bye).await;
                    return Session {
                        commands,
                        closed_by_adapter: true,
                        handoff: handoff(connected, parked),
                    };
                }
                _ => Some(reply_frame("-ERR command not found")),
            };
            // FreeSWITCH processes an outbound session's first command but sends no reply,
            // connect excepted (mod_event_socket.c:2700-2717).
            let answer = if is_first && verb != "connect" {
                None
            } else {
                answer
            };
            if let Some(a) = answer
                && s.write_all(&a).await.is_err()
            {
                break;
            }
        }
    };
    Session {
        commands,
        closed_by_adapter: ended,
        handoff: handoff(connected, parked),
    }
}
