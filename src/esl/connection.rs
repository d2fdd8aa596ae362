//! One live inbound connection: the reader and writer halves of one socket, the FIFO of
//! reply slots that matches replies to commands, events to subscribers, bgapi results to
//! their waiters, and the liveness probe. A malformed frame ends only this connection.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use super::codec::EslCodec;
use super::command::Command;
use super::error::ClientError;
use super::event::Event;
use super::frame::{ContentType, Frame};
use super::shared::{Pending, Request, Shared};
use super::stats::ClientStats;

pub(super) type Reader = FramedRead<OwnedReadHalf, EslCodec>;
pub(super) type Writer = FramedWrite<OwnedWriteHalf, EslCodec>;

/// How a live connection ended.
pub(super) enum Ended {
    Lost(String),
    Stop,
}

pub(super) async fn next_frame(read: &mut Reader) -> Result<Frame, String> {
    match read.next().await {
        Some(Ok(f)) => Ok(f),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("closed by freeswitch".into()),
    }
}

pub(super) async fn run_connection(
    mut read: Reader,
    mut write: Writer,
    rx: &mut mpsc::Receiver<Request>,
    shared: &Shared,
    liveness: Duration,
    shutdown: &CancellationToken,
) -> Ended {
    let pending: Mutex<VecDeque<Pending>> = Mutex::new(VecDeque::new());
    // When the last frame arrived (ms since `opened`): one relaxed store per frame on the
    // reader's path; the writer probes an idle connection and the watchdog ends a silent one.
    let opened = Instant::now();
    let last_frame = AtomicU64::new(0);
    let idle = || {
        opened
            .elapsed()
            .saturating_sub(Duration::from_millis(last_frame.load(Relaxed)))
    };
    let reader = async {
        loop {
            match read.next().await {
                Some(Ok(frame)) => {
                    last_frame.store(opened.elapsed().as_millis() as u64, Relaxed);
                    if let Some(reason) = on_frame(frame, &pending, shared) {
                        return Ended::Lost(reason);
                    }
                }
                Some(Err(e)) => return Ended::Lost(format!("read: {e}")),
                None => return Ended::Lost("closed by freeswitch".into()),
            }
        }
    };
    let writer = async {
        let mut tick = tokio::time::interval(liveness / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => r,
                    None => return Ended::Stop,
                },
                _ = tick.tick() => {
                    if idle() >= liveness / 3 {
                        // An idle connection is asked something cheap; the reply (or any
                        // event) proves it alive. Nobody waits for it: a tombstone slot.
                        let (reply, _) = oneshot::channel();
                        pending.lock().expect("lock").push_back(Pending {
                            reply,
                            written_at: Instant::now(),
                        });
                        let probe = Command::api("status").expect("a valid command");
                        if let Err(e) = write.send(probe).await {
                            return Ended::Lost(format!("write: {e}"));
                        }
                    }
                    continue;
                }
            };
            let mut next = Some(first);
            while let Some(req) = next.take() {
                if let Some((uuid, waiter)) = req.job
                    && !waiter.is_closed()
                {
                    shared.jobs.lock().expect("lock").insert(uuid, waiter);
                }
                pending.lock().expect("lock").push_back(Pending {
                    reply: req.reply,
                    written_at: Instant::now(),
                });
                ClientStats::inc(&shared.stats.commands_sent);
                if let Err(e) = write.feed(req.command).await {
                    return Ended::Lost(format!("write: {e}"));
                }
                // Pipeline whatever else is already queued into the same flush.
                next = rx.try_recv().ok();
            }
            if let Err(e) = write.flush().await {
                return Ended::Lost(format!("write: {e}"));
            }
        }
    };
    // Apart from the writer, which a switch that stopped reading can block on a full socket.
    let watchdog = async {
        loop {
            tokio::time::sleep(liveness / 6).await;
            let idle = idle();
            if idle >= liveness {
                ClientStats::inc(&shared.stats.liveness_failures);
                return Ended::Lost(format!(
                    "no frame from freeswitch for {} s (freeswitch.liveness_timeout)",
                    idle.as_secs()
                ));
            }
        }
    };
    let ended = tokio::select! {
        e = reader => e,
        e = writer => e,
        e = watchdog => e,
        _ = shutdown.cancelled() => Ended::Stop,
    };
    for p in pending.lock().expect("lock").drain(..) {
        let _ = p.reply.send(Err(ClientError::ConnectionLost));
    }
    ended
}

/// Routes one frame; returns a reason when the connection must end.
fn on_frame(frame: Frame, pending: &Mutex<VecDeque<Pending>>, shared: &Shared) -> Option<String> {
    match &frame.content_type {
        ct if ct.is_reply() => {
            let slot = pending.lock().expect("lock").pop_front();
            match slot {
                Some(p) => {
                    shared.stats.command_latency.observe(p.written_at.elapsed());
                    // A dropped receiver is a tombstone: the late reply is swallowed here.
                    let _ = p.reply.send(Ok(frame));
                }
                None => {
                    tracing::warn!(content_type = ?frame.content_type, "reply with no pending command, ignored")
                }
            }
        }
        ct if ct.is_event() => {
            ClientStats::inc(&shared.stats.events_received);
            match Event::from_frame(&frame) {
                Ok(event) => dispatch(Arc::new(event), shared),
                Err(e) => {
                    ClientStats::inc(&shared.stats.events_malformed);
                    tracing::warn!(error = %e, "unreadable event skipped");
                }
            }
        }
        ContentType::DisconnectNotice => {
            tracing::info!(notice = %frame.body_text().trim(), "freeswitch sent a disconnect notice");
        }
        ContentType::RudeRejection => {
            return Some("access denied by freeswitch acl (text/rude-rejection)".into());
        }
        ContentType::LogData => tracing::trace!("log/data frame ignored"),
        other => tracing::warn!(content_type = ?other, "unexpected frame ignored"),
    }
    None
}

fn dispatch(event: Arc<Event>, shared: &Shared) {
    if event.name().as_deref() == Some("BACKGROUND_JOB")
        && let Some(job) = event.job_uuid()
    {
        // BACKGROUND_JOB is global: jobs we did not issue are simply not in the map.
        let waiter = shared.jobs.lock().expect("lock").remove(job.as_ref());
        if let Some(w) = waiter {
            let _ = w.send(Ok(event.clone()));
        }
    }
    let mut subs = shared.subscribers.lock().expect("lock");
    subs.retain(|s| match s.try_send(event.clone()) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            let n = shared
                .stats
                .events_dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n.is_power_of_two() || n == 0 {
                tracing::warn!(
                    dropped_total = n + 1,
                    "slow event subscriber: events dropped"
                );
            }
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    });
}

pub(super) fn fail_jobs(shared: &Shared) {
    for (_, w) in shared.jobs.lock().expect("lock").drain() {
        let _ = w.send(Err(ClientError::ConnectionLost));
    }
}
