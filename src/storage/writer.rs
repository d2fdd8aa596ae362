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

/// Most writes committed together.
const MAX_BATCH: usize = 512;

/// Writes waiting for the writer; senders wait when it is this far behind.
const QUEUE: usize = 16_384;

/// One write, owning its values.
#[derive(Debug)]
pub(super) enum Write {
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

enum Msg {
    Write(Write, oneshot::Sender<Result<(), StorageError>>),
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
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Msg::Write(write, done))
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
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
    batch: &mut Vec<(Write, oneshot::Sender<Result<(), StorageError>>)>,
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
        let mut tx = c.begin().await?;
        for (write, _) in batch.iter() {
            results.push(apply(&mut tx, write).await);
        }
        tx.commit().await
    }
    .await;
    match outcome {
        Ok(()) => {
            for ((_, done), result) in batch.drain(..).zip(results) {
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
) -> Result<(), sqlx::Error> {
    match write {
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
    Ok(())
}
