//! Detects answered dialer calls from inbound events, for dialers whose dialplan cannot hand
//! calls to the socket: `CHANNEL_BRIDGE` of a tagged leg, and mod_callcenter's
//! `bridge-agent-start`. Reads its own subscription, so the socket reader never waits on it;
//! each report runs in its own task and is awaited at shutdown.

use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Answered, Reporter};
use crate::config::DialerConfig;
use crate::esl::Client;

/// Events queued for this watcher before the oldest are dropped (counted by the client).
const QUEUE: usize = 65_536;

pub async fn watch(
    esl: Client,
    node: Arc<str>,
    reporter: Reporter,
    vars: Arc<DialerConfig>,
    shutdown: CancellationToken,
) {
    let mut events = esl.subscribe(QUEUE);
    let mut reports = JoinSet::new();
    loop {
        let event = tokio::select! {
            e = events.recv() => match e { Some(e) => e, None => break },
            _ = shutdown.cancelled() => break,
        };
        while reports.try_join_next().is_some() {}
        match Answered::from_event(&event, &vars) {
            None => {}
            Some(Ok(mut answered)) => {
                answered.node = Some(node.clone());
                let reporter = reporter.clone();
                reports.spawn(async move {
                    let _ = reporter.report_until_stored(answered).await;
                });
            }
            Some(Err(why)) => {
                reporter.not_reported(super::Source::Bridge, &why, event.unique_id().as_deref())
            }
        }
    }
    while reports.join_next().await.is_some() {}
}
