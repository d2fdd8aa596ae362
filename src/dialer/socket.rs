//! The outbound event socket server the dialplan's `socket` app connects to.
//!
//! Per connection: `myevents` and `connect`, read the channel data, record the answered call
//! with its webhook (committed before we let go) while waiting for this channel's
//! `CHANNEL_PARK`, then close. Closing without a hangup after the park lets the call go on in
//! the dialplan (captures 04b, 09b); closing before it leaves the leg parked for ever
//! (capture 09), so every session that got the channel data (first, duplicate or refused)
//! waits for the park. We never send a hangup, `resume` or any other command. Each session
//! has a deadline, so a FreeSWITCH that stalls, closes early or sends garbage costs one task
//! for at most `dialer.session_timeout`, never the call.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{Answered, DialerStats, Reporter, Source};
use crate::accept::{self, Accept};
use crate::admission::Admission;
use crate::config::DialerConfig;
use crate::esl::outbound::{Handoff, OutboundError, OutboundSession};
use crate::nodes::Nodes;

/// Sessions served at once; more wait in the listen backlog (FreeSWITCH waits with them).
const MAX_SESSIONS: usize = 4096;

/// How long a session waits for its channel's `CHANNEL_PARK` (real: about 20 ms after the
/// connect reply) before closing anyway.
const PARK_WAIT: Duration = Duration::from_secs(2);

/// Accepts sessions until `shutdown`, then lets the open ones finish.
pub async fn serve(
    listener: TcpListener,
    reporter: Reporter,
    vars: Arc<DialerConfig>,
    nodes: Nodes,
    admission: Arc<Admission>,
    shutdown: CancellationToken,
) {
    // Only FreeSWITCH may hand us calls: the admission closes anyone else at accept.
    let how = Accept {
        name: "dialer",
        admission,
        slots: Some(Arc::new(Semaphore::new(MAX_SESSIONS))),
    };
    accept::serve(listener, how, shutdown, |sock, peer, ticket| {
        let reporter = reporter.clone();
        let vars = vars.clone();
        let nodes = nodes.clone();
        async move {
            let _ticket = ticket;
            // Counted down on every way out, a panic included.
            let _active = Active::enter(reporter.stats.clone());
            tracing::trace!(%peer, "dialer session accepted");
            session(sock, &reporter, &vars, &nodes, peer.ip()).await;
            tracing::trace!(%peer, "dialer session closed");
        }
    })
    .await;
}

/// One open session in `finaz_dialer_sessions_active`, for as long as it lives.
struct Active(Arc<super::DialerStats>);

impl Active {
    fn enter(stats: Arc<super::DialerStats>) -> Self {
        stats.sessions_active.fetch_add(1, Ordering::Relaxed);
        Active(stats)
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.sessions_active.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn session(
    sock: TcpStream,
    reporter: &Reporter,
    vars: &DialerConfig,
    nodes: &Nodes,
    peer: std::net::IpAddr,
) {
    let _ = sock.set_nodelay(true);
    let deadline = tokio::time::Instant::now() + vars.session_timeout;
    let mut session = OutboundSession::new(sock);
    let data = match session.connect(vars.session_timeout).await {
        Ok(d) => d,
        Err(e @ (OutboundError::Oversized(_) | OutboundError::Malformed(_))) => {
            // Not a channel we can read, but the stream is in step: release it after the
            // park like any other, so whatever call it is goes on.
            if matches!(e, OutboundError::Oversized(_)) {
                DialerStats::inc(&reporter.stats.sessions_oversized);
            } else {
                DialerStats::inc(&reporter.stats.sessions_failed);
            }
            tracing::warn!(reason = %e, "dialer session refused: unreadable connect reply");
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if session.wait_parked(PARK_WAIT.min(left)).await == Handoff::TimedOut {
                DialerStats::inc(&reporter.stats.unparked_closes);
            }
            return;
        }
        Err(e) => {
            DialerStats::inc(&reporter.stats.sessions_failed);
            tracing::warn!(error = %e, "dialer session ended before the channel data");
            return;
        }
    };
    let report = async {
        match Answered::from_socket(&data, vars) {
            Ok(mut answered) => {
                let core = data.header("Core-UUID");
                answered.node = Some(nodes.of_handoff(core.as_deref(), peer).name.clone());
                // Keep the session (the call waits parked in `socket`) until the webhook is
                // durable, but never past the deadline: the call matters more. The report
                // goes on storing (and retrying) after the session is released.
                if tokio::time::timeout_at(deadline, reporter.report_until_stored(answered))
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        "storing the answered call took longer than dialer.session_timeout; letting the call go on, the report keeps trying"
                    );
                }
            }
            Err(why) => reporter.not_reported(Source::Socket, &why, data.unique_id().as_deref()),
        }
    };
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let ((), handoff) = tokio::join!(report, session.wait_parked(PARK_WAIT.min(left)));
    if handoff == Handoff::TimedOut {
        DialerStats::inc(&reporter.stats.unparked_closes);
        tracing::warn!(
            call_id = data.unique_id().as_deref(),
            "no CHANNEL_PARK from this channel in time; closing anyway (the leg may stay parked in socket)"
        );
    }
    // Dropping the session closes the socket: the park ends and the dialplan goes on.
}
