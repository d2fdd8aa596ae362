//! `storage.retention` (LGPD): calls, legs, recording rows and finished webhooks older than
//! the retention are deleted in small batches, every 10 minutes, each batch one short
//! operation on the executor, so pruning a long history never holds up a call.

use std::time::Duration;

use futures_util::FutureExt;
use sqlx::AnyConnection;
use tokio_util::sync::CancellationToken;

use super::executor::Op;
use super::{Storage, StorageError, now_ms};

/// Rows per table per batch.
const BATCH: i64 = 500;
/// Between passes; the first comes shortly after the start.
const EVERY: Duration = Duration::from_secs(600);
const FIRST: Duration = Duration::from_secs(30);
/// Between batches of one pass: room for the calls' own writes.
const PAUSE: Duration = Duration::from_millis(50);

/// Prunes until `shutdown`.
pub async fn run(storage: Storage, keep: Duration, shutdown: CancellationToken) {
    let mut wait = FIRST;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
        wait = EVERY;
        let cutoff = now_ms() - keep.as_millis() as i64;
        match pass(&storage, cutoff, &shutdown).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, "pruned rows older than storage.retention"),
            Err(e) => tracing::warn!(error = %e, "pruning old rows failed; trying again later"),
        }
    }
}

/// One pass: batches until nothing older than `cutoff` is left; rows deleted.
pub async fn pass(
    storage: &Storage,
    cutoff: i64,
    shutdown: &CancellationToken,
) -> Result<u64, super::StorageError> {
    let mut total = 0;
    loop {
        let n = storage.prune_batch(cutoff, BATCH).await?;
        total += n;
        if n == 0 || shutdown.is_cancelled() {
            return Ok(total);
        }
        tokio::time::sleep(PAUSE).await;
    }
}

impl Storage {
    /// Deletes up to `limit` finished rows per table older than `cutoff` (unix ms), in one
    /// short transaction; how many rows went. Call it until it returns 0.
    pub async fn prune_batch(&self, cutoff: i64, limit: i64) -> Result<u64, StorageError> {
        self.exec
            .run(Op::several("prune"), move |c| {
                prune(c, cutoff, limit).boxed()
            })
            .await
    }
}

/// Finished webhooks; calls that ended and have no webhook left to send, with their legs;
/// recording rows no longer being written. Same ORDER BY and LIMIT, so legs and calls go
/// together.
async fn prune(c: &mut AnyConnection, cutoff: i64, limit: i64) -> Result<u64, sqlx::Error> {
    let mut deleted = 0;
    for sql in [
        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox
            WHERE state IN ('delivered', 'dead') AND created_at < $1
            ORDER BY created_at, id LIMIT $2)",
        "DELETE FROM call_legs WHERE call_id IN (SELECT id FROM calls
            WHERE created_at < $1 AND ended_at IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.call_id = calls.id)
            ORDER BY created_at, id LIMIT $2)",
        "DELETE FROM calls WHERE id IN (SELECT id FROM calls
            WHERE created_at < $1 AND ended_at IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.call_id = calls.id)
            ORDER BY created_at, id LIMIT $2)",
        "DELETE FROM recordings WHERE (leg_id, path) IN (SELECT leg_id, path FROM recordings
            WHERE started_at < $1 AND state <> 'recording'
            ORDER BY started_at LIMIT $2)",
    ] {
        deleted += sqlx::query(sql)
            .bind(cutoff)
            .bind(limit)
            .execute(&mut *c)
            .await?
            .rows_affected();
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{CallKind, CallState, DialerReport, NewCall};

    /// Retention deletes what is finished and old, and nothing that is still going on:
    /// an ended call with no webhook left, a delivered or dead webhook, a closed recording.
    #[tokio::test]
    async fn retention_prunes_only_finished_rows() {
        for (_d, s, _) in crate::storage::test_backends().await {
            let call = |id: &'static str| NewCall {
                id,
                kind: CallKind::Click2Call,
                ramal: Some("1001"),
                telefone: Some("41988445566"),
                crm_id: None,
                state: CallState::Ringing,
                recording_path: None,
                node: None,
            };
            s.insert_call(call("ended")).await.unwrap();
            s.set_call_state("ended", CallState::Ended, Some("NORMAL_CLEARING"))
                .await
                .unwrap();
            s.insert_call(call("up")).await.unwrap();
            s.recording_started("ended", "/rec/ended.wav")
                .await
                .unwrap();
            s.leg_hung_up("ended", None).await.unwrap();
            s.recording_started("up", "/rec/up.wav").await.unwrap();
            // A dialer call whose webhook is still pending, and one delivered.
            let report = |id: &str| DialerReport {
                call_id: id.into(),
                customer_leg: id.into(),
                crm_id: "1".into(),
                telefone: None,
                ramal: None,
                legs: vec![id.into()],
                give_up_at: now_ms() + 60_000,
                url: format!("http://finaz/x?cid={id}"),
                node: None,
            };
            s.report_dialer_call(report("pending")).await.unwrap();
            s.report_dialer_call(report("sent")).await.unwrap();
            let leased = s.lease_due(now_ms(), 10, now_ms() + 1_000).await.unwrap();
            let sent = leased.iter().find(|e| e.call_id == "sent").unwrap();
            s.mark_delivered(sent.id).await.unwrap();
            s.leg_hung_up("sent", None).await.unwrap();
            s.leg_hung_up("pending", None).await.unwrap();

            let later = now_ms() + 3_600_000;
            let stop = tokio_util::sync::CancellationToken::new();
            // Nothing is older than a cutoff in the past.
            assert_eq!(pass(&s, now_ms() - 3_600_000, &stop).await.unwrap(), 0);
            let gone = pass(&s, later, &stop).await.unwrap();
            assert!(gone >= 4, "{gone}");
            assert!(s.find_call("ended").await.unwrap().is_none());
            assert!(s.find_call("sent").await.unwrap().is_none());
            assert!(s.outbox_for_call("sent").await.unwrap().is_none());
            assert!(
                s.find_call("up").await.unwrap().is_some(),
                "a call still up is kept"
            );
            assert!(
                s.find_call("pending").await.unwrap().is_some(),
                "its webhook is still due"
            );
            assert!(s.outbox_for_call("pending").await.unwrap().is_some());
            assert!(s.recordings_for_call("ended").await.unwrap().is_empty());
            assert_eq!(
                s.recordings_for_call("up").await.unwrap().len(),
                1,
                "still recording"
            );
        }
    }
}
