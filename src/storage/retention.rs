//! `storage.retention` (LGPD): calls, legs, recording rows and finished webhooks older than
//! the retention are deleted in small batches, every 10 minutes, each batch one short
//! transaction on the writer, so pruning a long history never holds up a call.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Storage, now_ms};

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
