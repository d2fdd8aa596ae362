//! After a gap in events (the start of the process, every reconnect): what storage still
//! thinks is open (recordings being written, calls not ended) is checked against FreeSWITCH
//! with `uuid_exists`, and closed when FreeSWITCH no longer has the channel, so a recording
//! that finished while we were away downloads instead of answering 409 for ever.

use tokio_util::sync::CancellationToken;

use crate::esl::{Client, ConnectionState};
use crate::storage::{CallState, Storage};

/// Open rows checked per storage query.
const PAGE: i64 = 500;

/// Reconciles each time `esl` (one node's event socket) (re)connects, until `shutdown`,
/// asking every node in `all` (a leg is on one of them). `started_at` (unix ms): click2call
/// calls created before it have no task following them.
pub async fn run(
    esl: Client,
    all: Vec<Client>,
    storage: Storage,
    started_at: i64,
    shutdown: CancellationToken,
) {
    let mut state = esl.watch_state();
    loop {
        tokio::select! {
            r = state.wait_for(|s| *s == ConnectionState::Connected) => if r.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
        match pass(&all, &storage, started_at).await {
            Ok(0) => {}
            Ok(closed) => tracing::info!(
                closed,
                "closed recordings and calls whose channels FreeSWITCH no longer has"
            ),
            // The next connection tries again.
            Err(e) => tracing::warn!(error = %e, "reconciliation with freeswitch interrupted"),
        }
        tokio::select! {
            r = state.wait_for(|s| *s != ConnectionState::Connected) => if r.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
    }
}

/// One walk over the open rows; how many legs were closed. A leg is closed only when every
/// node says it has no such channel; one that cannot be asked keeps it open.
pub async fn pass(nodes: &[Client], storage: &Storage, started_at: i64) -> Result<usize, String> {
    let mut after = String::new();
    let mut closed = 0;
    loop {
        let page = storage
            .open_legs(started_at, &after, PAGE)
            .await
            .map_err(|e| e.to_string())?;
        let Some((last, _)) = page.last() else {
            return Ok(closed);
        };
        after = last.clone();
        for (leg, is_call) in &page {
            if leg_exists_anywhere(nodes, leg).await? {
                continue;
            }
            storage
                .leg_hung_up(leg, None)
                .await
                .map_err(|e| e.to_string())?;
            if *is_call {
                storage
                    .set_call_state(leg, CallState::Ended, Some("GONE_WHILE_UNSEEN"))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            closed += 1;
        }
    }
}

/// Whether any node has channel `leg`: true when one says so, or when one could not be
/// asked (the leg may be there); an error when none could be asked.
async fn leg_exists_anywhere(nodes: &[Client], leg: &str) -> Result<bool, String> {
    let (mut answered, mut error) = (false, None);
    for esl in nodes {
        match leg_exists(esl, leg).await {
            Ok(true) => return Ok(true),
            Ok(false) => answered = true,
            Err(e) => error = Some(e),
        }
    }
    match error {
        None => Ok(false),
        Some(_) if answered => Ok(true),
        Some(e) => Err(e),
    }
}

/// FreeSWITCH's word on whether channel `leg` exists (an error when it cannot be asked).
pub async fn leg_exists(esl: &Client, leg: &str) -> Result<bool, String> {
    let answer = esl
        .api(&format!("uuid_exists {leg}"))
        .await
        .map_err(|e| e.to_string())?;
    Ok(answer.trim() != "false")
}
