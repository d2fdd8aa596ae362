//! Keeps the inbound connection up: connects, authenticates and subscribes, runs the
//! connection until it ends, and paces the next attempt (`backoff.rs`); commands sent while
//! disconnected fail at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::codec::EslCodec;
use super::command::{Command, EventFormat};
use super::connection::{Ended, Reader, Writer, fail_jobs, next_frame, run_connection};
use super::error::ClientError;
use super::frame::ContentType;
use super::shared::{ClientConfig, ConnectionState, Request, Shared};
use super::stats::ClientStats;

/// Why an attempt failed, which decides how soon to try again.
struct Failed {
    reason: String,
    /// The TCP connection was accepted and then refused or dropped: back off. A port that
    /// refuses, or a switch that accepts and says nothing until the handshake times out
    /// (hung, or restarting), is tried again soon: each such attempt already waited.
    accepted: bool,
}

pub(super) async fn supervise(
    config: ClientConfig,
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Request>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    let mut connected_before = false;
    loop {
        let attempt = refuse_while(connect(&config), &mut rx, &shutdown).await;
        let (reason, delay) = match attempt {
            None => break,
            Some(Err(failed)) => {
                ClientStats::inc(&shared.stats.connect_failures);
                tracing::warn!(address = %config.address, reason = %failed.reason, "event socket connection failed");
                let delay = backoff.after_failure(failed.accepted);
                (failed.reason, delay)
            }
            Some(Ok((read, write))) => {
                if connected_before {
                    ClientStats::inc(&shared.stats.reconnects);
                }
                connected_before = true;
                tracing::info!(address = %config.address, "event socket connected");
                shared.state.send_replace(ConnectionState::Connected);
                let up_since = Instant::now();
                let ended = run_connection(
                    read,
                    write,
                    &mut rx,
                    &shared,
                    config.liveness_timeout,
                    &shutdown,
                )
                .await;
                fail_jobs(&shared);
                match ended {
                    Ended::Stop => break,
                    Ended::Lost(reason) => {
                        tracing::warn!(address = %config.address, %reason, "event socket connection lost");
                        (reason, backoff.after_connection(up_since.elapsed()))
                    }
                }
            }
        };
        shared
            .state
            .send_replace(ConnectionState::Disconnected { reason });
        if refuse_while(tokio::time::sleep(delay), &mut rx, &shutdown)
            .await
            .is_none()
        {
            break;
        }
    }
    shared.state.send_replace(ConnectionState::Stopped);
    fail_jobs(&shared);
    rx.close();
    while let Some(req) = rx.recv().await {
        let _ = req.reply.send(Err(ClientError::Stopped));
    }
}

/// Drives `fut` while answering every request with `NotConnected`; `None` on shutdown.
async fn refuse_while<F: Future>(
    fut: F,
    rx: &mut mpsc::Receiver<Request>,
    shutdown: &CancellationToken,
) -> Option<F::Output> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return Some(out),
            _ = shutdown.cancelled() => return None,
            req = rx.recv() => match req {
                Some(req) => { let _ = req.reply.send(Err(ClientError::NotConnected)); }
                None => return None,
            },
        }
    }
}

/// Connects, authenticates and subscribes.
async fn connect(config: &ClientConfig) -> Result<(Reader, Writer), Failed> {
    let refused = |reason: String| Failed {
        reason,
        accepted: false,
    };
    let stream = tokio::time::timeout(config.connect_timeout, TcpStream::connect(&config.address))
        .await
        .map_err(|_| {
            refused(format!(
                "connect: no answer within {:?}",
                config.connect_timeout
            ))
        })?
        .map_err(|e| refused(format!("connect: {e}")))?;
    let handshake = async {
        let _ = stream.set_nodelay(true);
        // The kernel notices a vanished peer too (the liveness probe is what notices a hung
        // one): first probe after 10 s idle, then every 5 s.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(10))
            .with_interval(Duration::from_secs(5));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let (r, w) = stream.into_split();
        let mut read = FramedRead::new(
            r,
            EslCodec::new(super::codec::DEFAULT_MAX_HEADER, config.max_body),
        );
        let mut write = FramedWrite::new(w, EslCodec::default());
        let first = next_frame(&mut read).await?;
        match first.content_type {
            ContentType::AuthRequest => {}
            ContentType::RudeRejection => {
                return Err("access denied by freeswitch acl (text/rude-rejection)".into());
            }
            other => return Err(format!("expected auth/request, got {other:?}")),
        }
        let auth = Command::auth(&config.password).map_err(|e| e.to_string())?;
        write.send(auth).await.map_err(|e| e.to_string())?;
        let reply = next_frame(&mut read).await?;
        if !reply.is_ok() {
            return Err("authentication failed: check freeswitch.password".into());
        }
        let subscription = config.subscription.clone().with_background_job();
        let event = Command::event(EventFormat::Plain, &subscription).map_err(|e| e.to_string())?;
        write.send(event).await.map_err(|e| e.to_string())?;
        let reply = next_frame(&mut read).await?;
        if !reply.is_ok() {
            let text = reply.reply_text().unwrap_or_default().into_owned();
            return Err(format!("event subscription refused: {text}"));
        }
        Ok((read, write))
    };
    let accepted = |reason: String| Failed {
        reason,
        accepted: true,
    };
    tokio::time::timeout(config.connect_timeout, handshake)
        .await
        .map_err(|_| refused(format!("no handshake within {:?}", config.connect_timeout)))?
        .map_err(accepted)
}
