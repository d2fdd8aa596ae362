//! The simulated switch's `socket` app: hands a dialer call to the service's outbound server
//! the way FreeSWITCH 1.10.12 does (captures 04a, 09, 09b).
//!
//! It sends nothing until the first command and answers none but `connect`; it answers
//! `connect` with the channel data; the channel parks on the next 20 ms tick after that,
//! and its `CHANNEL_PARK` reaches the session only if `myevents` was on by then. A session
//! that ends after `connect` and before the park leaves the leg parked on a real switch:
//! the sandbox says so in its log instead of pretending the call went on.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The `socket` app's park tick.
const PARK_TICK: Duration = Duration::from_millis(20);
/// How long the app waits for the service's first command (FreeSWITCH: 25 s).
const FIRST_COMMAND: Duration = Duration::from_secs(25);
/// How long the sandbox waits for the service to let go of the call.
const RELEASE: Duration = Duration::from_secs(10);

/// How the hand-off ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// The park ended and `socket` returned: the call goes on.
    AfterPark,
    /// The service closed after `connect` but before the park: a real leg would stay parked.
    BeforePark,
    /// Still held when the sandbox stopped waiting.
    Held,
}

/// Connects to `dialer` as the `socket` app of channel `id`, whose channel data (a full
/// header block, `Content-Type` and friends at its end) is `data`.
pub async fn run(dialer: SocketAddr, id: &str, data: &str, park: &str) -> anyhow::Result<Released> {
    let mut s = TcpStream::connect(dialer)
        .await
        .with_context(|| format!("connecting to dialer.listen {dialer}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let mut myevents = false;
    let mut first = true;
    // Up to the connect: the first command is processed without a reply.
    loop {
        let Some(cmd) = take_command(&mut buf) else {
            let n = tokio::time::timeout(FIRST_COMMAND, s.read(&mut chunk))
                .await
                .context("the adapter did not send connect")??;
            anyhow::ensure!(n > 0, "the adapter closed before connect");
            buf.extend(chunk[..n].iter().filter(|b| **b != b'\r'));
            continue;
        };
        match cmd.as_str() {
            "connect" => break,
            "myevents" | "myevents plain" => {
                if !first {
                    s.write_all(&reply("+OK Events Enabled")).await?;
                }
                myevents = true;
            }
            other => {
                tracing::warn!(
                    command = other,
                    "sandbox: unexpected command before connect"
                );
                if !first {
                    s.write_all(&reply("-ERR command not found")).await?;
                }
            }
        }
        first = false;
    }
    s.write_all(data.as_bytes()).await?;
    let park_at = tokio::time::Instant::now() + PARK_TICK;
    let mut parked = false;
    let deadline = tokio::time::Instant::now() + RELEASE;
    loop {
        let n = tokio::select! {
            r = tokio::time::timeout_at(deadline, s.read(&mut chunk)) => match r {
                Ok(r) => r.unwrap_or(0),
                Err(_) => return Ok(Released::Held),
            },
            () = tokio::time::sleep_until(park_at), if !parked => {
                parked = true;
                if myevents {
                    s.write_all(park.as_bytes()).await?;
                }
                continue;
            }
        };
        if n == 0 {
            break;
        }
        buf.extend(chunk[..n].iter().filter(|b| **b != b'\r'));
        while let Some(cmd) = take_command(&mut buf) {
            let text = match cmd.as_str() {
                "myevents" if myevents => "-ERR aready enabled.",
                "myevents" => {
                    myevents = true;
                    "+OK Events Enabled"
                }
                _ => "-ERR command not found",
            };
            s.write_all(&reply(text)).await?;
        }
    }
    if parked {
        return Ok(Released::AfterPark);
    }
    tracing::warn!(
        call_id = id,
        "sandbox: the adapter closed the socket before the channel parked; on FreeSWITCH this leg would stay parked"
    );
    Ok(Released::BeforePark)
}

/// The first line of the next complete command in `buf` (leading blank lines skipped).
fn take_command(buf: &mut Vec<u8>) -> Option<String> {
    while buf.first().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.remove(0);
    }
    let end = buf.windows(2).position(|w| w == b"\n\n")?;
    let block = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end + 2);
    Some(block.lines().next().unwrap_or("").trim().to_string())
}

fn reply(text: &str) -> Vec<u8> {
    format!("Content-Type: command/reply\nReply-Text: {text}\n\n").into_bytes()
}
