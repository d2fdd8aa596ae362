//! The call-path writer: one task, one transaction per batch of queued writes.
//!
//! Each write carries a oneshot that is answered after the batch holding it commits, so a
//! caller that awaits [`Handle::write`] knows its row is durable. A statement that fails (a
//! constraint, say) fails only its own write: SQLite undoes that statement and the rest of
//! the batch commits. A failed commit fails every write of the batch.

use sqlx::pool::PoolConnection;
use sqlx::{Connection, Sqlite, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::StorageError;
use super::outbox::{DialerReport, OutboxEntry, Reported, entry, entry_columns};
use super::recordings::RecordingState;

/// Most writes committed together.
const MAX_BATCH: usize = 512;

/// Writes waiting for the writer; senders wait when it is this far behind.
const QUEUE: usize = 16_384;

/// One write, owning its values.
pub(super) enum Write {
    ReportDialer(DialerReport),
    RecordingStarted {
        leg: String,
        path: String,
        at: i64,
    },
    RecordingStopped {
        leg: String,
        path: String,
        cause: Option<String>,
        state: RecordingState,
        at: i64,
    },
    LegHungUp {
        leg: String,
        path: Option<String>,
        at: i64,
    },
    LinkBridge {
        a: String,
        b: String,
        at: i64,
    },
    /// Rewrites the health row (readiness).
    Probe {
        at: i64,
    },
    /// Deletes up to `limit` finished rows of each table older than `cutoff`.
    Prune {
        cutoff: i64,
        limit: i64,
    },
    Lease {
        now: i64,
        limit: i64,
        until: i64,
    },
    Delivered {
        id: i64,
        at: i64,
    },
    Failed {
        id: i64,
        /// The lease the attempt was made under: another lease's result is not applied.
        lease: i64,
        error: String,
        next_attempt_at: i64,
        dead: bool,
    },
    InsertCall {
        id: String,
        kind: &'static str,
        ramal: Option<String>,
        telefone: Option<String>,
        crm_id: Option<String>,
        state: &'static str,
        recording_path: Option<String>,
        at: i64,
    },
    LinkLeg {
        leg_id: String,
        call_id: String,
    },
    SetState {
        id: String,
        state: &'static str,
        outcome: Option<String>,
        answered_at: Option<i64>,
        ended_at: Option<i64>,
    },
}

/// What a write produced.
#[derive(Debug)]
pub(super) enum Applied {
    Done,
    /// Rows deleted by a prune.
    Pruned(u64),
    Reported(Reported),
    Leased(Vec<OutboxEntry>),
}

type Done = oneshot::Sender<Result<Applied, StorageError>>;

enum Msg {
    Write(Write, Done),
    /// Finish what is queued before this, then stop.
    Close(oneshot::Sender<()>),
}

#[derive(Clone)]
pub(super) struct Handle {
    tx: mpsc::Sender<Msg>,
}

fn closed() -> StorageError {
    StorageError::Write("storage is closed".into())
}

impl Handle {
    /// Queues `write` and waits until it is committed.
    pub(super) async fn write(&self, write: Write) -> Result<(), StorageError> {
        self.apply(write).await.map(|_| ())
    }

    /// Queues `write` and waits until it is committed, with what it produced.
    pub(super) async fn apply(&self, write: Write) -> Result<Applied, StorageError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Msg::Write(write, done))
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// Queues `write` behind everything queued before it and returns without waiting for the
    /// commit (a failure is logged by the writer). For event streams whose order matters more
    /// than each caller knowing the outcome.
    pub(super) async fn submit(&self, write: Write) -> Result<(), StorageError> {
        let (done, _) = oneshot::channel();
        self.tx
            .send(Msg::Write(write, done))
            .await
            .map_err(|_| closed())
    }

    /// Commits everything queued so far and stops the writer.
    pub(super) async fn close(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Msg::Close(done)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

pub(super) fn spawn(pool: SqlitePool) -> Handle {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(checkpoints(pool.clone(), tx.downgrade()));
    tokio::spawn(run(pool, rx));
    Handle { tx }
}

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Checkpoints the WAL from another connection while the writer keeps committing (PASSIVE
/// never blocks it), so no commit waits for a checkpoint's fsync. Stops with the writer.
async fn checkpoints(pool: SqlitePool, writer: mpsc::WeakSender<Msg>) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if writer.upgrade().is_none_or(|w| w.is_closed()) || pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }
}

async fn run(pool: SqlitePool, mut rx: mpsc::Receiver<Msg>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // One connection kept for writing: its page cache stays warm between batches.
    let mut conn: Option<PoolConnection<Sqlite>> = None;
    while let Some(first) = rx.recv().await {
        let mut close = None;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Write(w, done) => batch.push((w, done)),
                Msg::Close(done) => {
                    close = Some(done);
                    break;
                }
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            commit(&pool, &mut conn, &mut batch).await;
        }
        if let Some(done) = close {
            drop(conn);
            let _ = done.send(());
            return;
        }
    }
}

/// Runs one batch in one transaction and answers every write.
async fn commit(
    pool: &SqlitePool,
    conn: &mut Option<PoolConnection<Sqlite>>,
    batch: &mut Vec<(Write, Done)>,
) {
    let mut results = Vec::with_capacity(batch.len());
    let outcome: Result<(), sqlx::Error> = async {
        if conn.is_none() {
            let mut c = pool.acquire().await?;
            // Checkpoints run beside the writer (see `checkpoints`), never inside a commit.
            sqlx::query("PRAGMA wal_autocheckpoint = 0")
                .execute(&mut *c)
                .await?;
            *conn = Some(c);
        }
        let c = conn.as_mut().expect("just acquired");
        // IMMEDIATE takes the write lock up front: a deferred BEGIN that upgrades later can
        // fail the whole batch with SQLITE_BUSY when `outbox retry` (another process) writes.
        let mut tx = c.begin_with("BEGIN IMMEDIATE").await?;
        for (write, _) in batch.iter() {
            results.push(apply(&mut tx, write).await);
        }
        tx.commit().await
    }
    .await;
    match outcome {
        Ok(()) => {
            for ((write, done), result) in batch.drain(..).zip(results) {
                if let Err(e) = &result
                    && done.is_closed()
                {
                    tracing::warn!(error = %e, ?write, "storage write failed");
                }
                let _ = done.send(result.map_err(StorageError::from));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, writes = batch.len(), "storage batch failed");
            // Start the next batch on a fresh connection.
            *conn = None;
            let msg = e.to_string();
            for (_, done) in batch.drain(..) {
                let _ = done.send(Err(StorageError::Write(msg.clone())));
            }
        }
    }
}

async fn apply(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    write: &Write,
) -> Result<Applied, sqlx::Error> {
    match write {
        Write::ReportDialer(report) => return report_dialer(tx, report).await,
        Write::RecordingStarted { leg, path, at } => {
            sqlx::query(
                "INSERT INTO recordings (leg_id, path, state, started_at) VALUES ($1, $2, 'recording', $3)
                 ON CONFLICT (leg_id, path) DO UPDATE SET state = 'recording', started_at = $3, stopped_at = NULL, cause = NULL",
            )
            .bind(leg)
            .bind(path)
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
        Write::RecordingStopped {
            leg,
            path,
            cause,
            state,
            at,
        } => {
            sqlx::query(
                "INSERT INTO recordings (leg_id, path, state, cause, stopped_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (leg_id, path) DO UPDATE SET state = $3, cause = $4, stopped_at = $5",
            )
            .bind(leg)
            .bind(path)
            .bind(state.as_str())
            .bind(cause)
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
        Write::LegHungUp { leg, path, at } => {
            sqlx::query(
                "UPDATE recordings SET state = 'done', cause = COALESCE(cause, 'hangup'), stopped_at = $2
                 WHERE leg_id = $1 AND state = 'recording'",
            )
            .bind(leg)
            .bind(at)
            .execute(&mut **tx)
            .await?;
            // A dialer call ends with its call leg or any leg linked to it now (click2call
            // calls follow their own task).
            sqlx::query(
                "UPDATE calls SET state = 'ended', ended_at = COALESCE(ended_at, $2)
                 WHERE kind = 'dialer' AND state = 'answered'
                   AND (id = $1 OR id = (SELECT call_id FROM call_legs WHERE leg_id = $1))",
            )
            .bind(leg)
            .bind(at)
            .execute(&mut **tx)
            .await?;
            if let Some(path) = path {
                sqlx::query(
                    "INSERT INTO recordings (leg_id, path, state, cause, stopped_at) VALUES ($1, $2, 'done', 'hangup', $3)
                     ON CONFLICT (leg_id, path) DO NOTHING",
                )
                .bind(leg)
                .bind(path)
                .bind(at)
                .execute(&mut **tx)
                .await?;
            }
        }
        Write::LinkBridge { a, b, at } => {
            // Legs join calls only while the call lives: a leg of an ended call bridged to a
            // new one (an operator taking the next customer) brings it no old call, and is
            // itself moved to the live call.
            for (known, other) in [(a, b), (b, a)] {
                sqlx::query(
                    "INSERT INTO call_legs (leg_id, call_id, linked_at)
                     SELECT $2, c.id, $3 FROM calls c
                      WHERE c.ended_at IS NULL
                        AND (c.id = $1 OR c.id = (SELECT call_id FROM call_legs WHERE leg_id = $1))
                      LIMIT 1
                     ON CONFLICT (leg_id) DO UPDATE SET call_id = excluded.call_id, linked_at = excluded.linked_at
                      WHERE call_legs.call_id <> excluded.call_id
                        AND (SELECT ended_at FROM calls WHERE id = call_legs.call_id) IS NOT NULL",
                )
                .bind(known)
                .bind(other)
                .bind(at)
                .execute(&mut **tx)
                .await?;
            }
        }
        Write::Probe { at } => {
            sqlx::query(
                "INSERT INTO health (id, checked_at) VALUES (1, $1)
                 ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
            )
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
        Write::Prune { cutoff, limit } => {
            // Finished webhooks; calls that ended and have no webhook left to send, with
            // their legs; recording rows no longer being written. Same ORDER BY and LIMIT,
            // so legs and calls go together.
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
                "DELETE FROM recordings WHERE rowid IN (SELECT rowid FROM recordings
                    WHERE started_at < $1 AND state <> 'recording'
                    ORDER BY started_at LIMIT $2)",
            ] {
                deleted += sqlx::query(sql)
                    .bind(cutoff)
                    .bind(limit)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
            }
            return Ok(Applied::Pruned(deleted));
        }
        Write::Lease { now, limit, until } => {
            let rows = sqlx::query(concat!(
                "SELECT ",
                entry_columns!(),
                " FROM outbox WHERE state = 'pending' AND next_attempt_at <= $1
                 ORDER BY next_attempt_at, id LIMIT $2"
            ))
            .bind(now)
            .bind(limit)
            .fetch_all(&mut **tx)
            .await?;
            let mut entries: Vec<OutboxEntry> = rows.iter().map(entry).collect();
            let lease = fastrand::i64(1..i64::MAX);
            for e in &mut entries {
                sqlx::query("UPDATE outbox SET next_attempt_at = $2, lease = $3 WHERE id = $1")
                    .bind(e.id)
                    .bind(until)
                    .bind(lease)
                    .execute(&mut **tx)
                    .await?;
                e.lease = Some(lease);
            }
            return Ok(Applied::Leased(entries));
        }
        Write::Delivered { id, at } => {
            sqlx::query(
                // Final, and a fact whichever lease learnt it: only a pending entry changes.
                "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, delivered_at = $2,
                    last_error = NULL WHERE id = $1 AND state = 'pending'",
            )
            .bind(id)
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
        Write::Failed {
            id,
            lease,
            error,
            next_attempt_at,
            dead,
        } => {
            sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3,
                    state = CASE WHEN $4 THEN 'dead' ELSE 'pending' END
                 WHERE id = $1 AND state = 'pending' AND lease = $5",
            )
            .bind(id)
            .bind(error)
            .bind(next_attempt_at)
            .bind(dead)
            .bind(lease)
            .execute(&mut **tx)
            .await?;
        }
        Write::InsertCall {
            id,
            kind,
            ramal,
            telefone,
            crm_id,
            state,
            recording_path,
            at,
        } => {
            sqlx::query(
                "INSERT INTO calls (id, kind, ramal, telefone, crm_id, state, recording_path, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(id)
            .bind(kind)
            .bind(ramal)
            .bind(telefone)
            .bind(crm_id)
            .bind(state)
            .bind(recording_path)
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
        Write::LinkLeg { leg_id, call_id } => {
            sqlx::query(
                "INSERT INTO call_legs (leg_id, call_id) VALUES ($1, $2) ON CONFLICT (leg_id) DO NOTHING",
            )
            .bind(leg_id)
            .bind(call_id)
            .execute(&mut **tx)
            .await?;
        }
        Write::SetState {
            id,
            state,
            outcome,
            answered_at,
            ended_at,
        } => {
            sqlx::query(
                "UPDATE calls SET state = $2, outcome = COALESCE($3, outcome),
                    answered_at = COALESCE(answered_at, $4), ended_at = COALESCE(ended_at, $5)
                 WHERE id = $1",
            )
            .bind(id)
            .bind(state)
            .bind(outcome)
            .bind(answered_at)
            .bind(ended_at)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(Applied::Done)
}

/// Records a dialer call and its webhook, unless this conversation (its call id or its
/// customer's leg) already has one. Its other legs are linked to it even when they belonged
/// to an earlier call: an operator's leg that outlives a customer serves the next one.
async fn report_dialer(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    r: &DialerReport,
) -> Result<Applied, sqlx::Error> {
    let mut legs: Vec<&str> = r.legs.iter().map(String::as_str).collect();
    for must in [r.call_id.as_str(), r.customer_leg.as_str()] {
        if !legs.contains(&must) {
            legs.push(must);
        }
    }
    let existing = sqlx::query_scalar::<_, String>(
        "SELECT id FROM calls WHERE id IN ($1, $2)
         UNION SELECT call_id FROM call_legs WHERE leg_id IN ($1, $2)
         LIMIT 1",
    )
    .bind(&r.call_id)
    .bind(&r.customer_leg)
    .fetch_optional(&mut **tx)
    .await?;
    let now = super::now_ms();
    let call_id = match existing {
        Some(id) => id,
        None => {
            sqlx::query(
                "INSERT INTO calls (id, kind, ramal, telefone, crm_id, state, created_at, answered_at)
                 VALUES ($1, 'dialer', $2, $3, $4, 'answered', $5, $5)",
            )
            .bind(&r.call_id)
            .bind(&r.ramal)
            .bind(&r.telefone)
            .bind(&r.crm_id)
            .bind(now)
            .execute(&mut **tx)
            .await?;
            r.call_id.clone()
        }
    };
    for leg in legs.iter().filter(|l| **l != call_id) {
        sqlx::query(
            "INSERT INTO call_legs (leg_id, call_id, linked_at) VALUES ($1, $2, $3)
             ON CONFLICT (leg_id) DO UPDATE SET call_id = excluded.call_id, linked_at = excluded.linked_at
             WHERE call_legs.call_id <> excluded.call_id",
        )
        .bind(*leg)
        .bind(&call_id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    let now = super::now_ms();
    let inserted = sqlx::query(
        "INSERT INTO outbox (call_id, url, state, attempts, created_at, next_attempt_at, give_up_at)
         VALUES ($1, $2, 'pending', 0, $3, $3, $4) ON CONFLICT (call_id) DO NOTHING",
    )
    .bind(&call_id)
    .bind((r.url)(&call_id))
    .bind(now)
    .bind(r.give_up_at)
    .execute(&mut **tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(Applied::Reported(Reported::Duplicate { call_id }));
    }
    let outbox_id: i64 = sqlx::query_scalar("SELECT id FROM outbox WHERE call_id = $1")
        .bind(&call_id)
        .fetch_one(&mut **tx)
        .await?;
    Ok(Applied::Reported(Reported::Enqueued { call_id, outbox_id }))
}

impl std::fmt::Debug for Write {
    /// The kind of write and what it is about; never its values (phone numbers, URLs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Write::ReportDialer(r) => write!(f, "ReportDialer({})", r.call_id),
            Write::RecordingStarted { leg, .. } => write!(f, "RecordingStarted({leg})"),
            Write::RecordingStopped { leg, .. } => write!(f, "RecordingStopped({leg})"),
            Write::LegHungUp { leg, .. } => write!(f, "LegHungUp({leg})"),
            Write::LinkBridge { a, b, .. } => write!(f, "LinkBridge({a}, {b})"),
            Write::Probe { .. } => f.write_str("Probe"),
            Write::Prune { cutoff, .. } => write!(f, "Prune(before {cutoff})"),
            Write::Lease { limit, .. } => write!(f, "Lease({limit})"),
            Write::Delivered { id, .. } => write!(f, "Delivered({id})"),
            Write::Failed { id, .. } => write!(f, "Failed({id})"),
            Write::InsertCall { id, .. } => write!(f, "InsertCall({id})"),
            Write::LinkLeg { leg_id, call_id } => write!(f, "LinkLeg({leg_id}, {call_id})"),
            Write::SetState { id, .. } => write!(f, "SetState({id})"),
        }
    }
}
