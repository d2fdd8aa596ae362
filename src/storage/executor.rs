//! Group commit: one task runs queued operations on one connection, as many as are waiting in
//! one transaction, and answers each with its own typed result once that transaction commits.
//!
//! An operation is a boxed async function of the connection; it knows nothing of batches and
//! the executor knows nothing of tables. An operation of several statements runs inside its
//! own savepoint, so one that fails (a constraint, say) is undone whole and fails alone while
//! the rest of its batch commits; on SQLite an operation of one statement needs none (SQLite
//! undoes a failed statement by itself), which spares two statements on the hot path. On
//! PostgreSQL a failed statement poisons its whole transaction, so every operation gets a
//! savepoint there. A failed commit fails every operation of the batch.

use futures_util::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Connection};
use tokio::sync::{mpsc, oneshot};

use super::{Backend, StorageError};

/// Most operations committed together.
const MAX_BATCH: usize = 512;

/// Operations waiting for the executor; senders wait when it is this far behind.
const QUEUE: usize = 16_384;

/// How often the WAL is copied back into the database file.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Told after the commit (`None`) or its failure (the error): answers the caller.
type Answer = Box<dyn FnOnce(Option<&str>) + Send>;

/// What an operation left: whether it succeeded (its savepoint is kept), and its answer.
pub(super) struct Ran {
    pub(super) ok: bool,
    /// It failed because the connection is gone (the server restarted, the network broke):
    /// every connection of the same server is suspect.
    pub(super) broken: bool,
    pub(super) answer: Answer,
}

pub(super) type Run = Box<dyn for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Ran> + Send>;

pub(super) struct Job {
    pub(super) savepoint: bool,
    pub(super) run: Run,
}

/// What an operation is to the executor: its name in logs (never its values), and whether
/// it needs a savepoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Op {
    name: &'static str,
    several: bool,
}

impl Op {
    /// One statement: SQLite undoes it by itself if it fails (PostgreSQL gets a savepoint).
    pub(super) const fn one(name: &'static str) -> Op {
        Op {
            name,
            several: false,
        }
    }

    /// Several statements, each a fact on its own (closing a recording, ending a call, linking
    /// a leg): one that fails leaves the others applied, as applying the event again would;
    /// no savepoint.
    pub(super) const fn independent(name: &'static str) -> Op {
        Op {
            name,
            several: false,
        }
    }

    /// Several statements, undone together if one fails.
    pub(super) const fn several(name: &'static str) -> Op {
        Op {
            name,
            several: true,
        }
    }
}

pub(super) enum Msg {
    Run(Job),
    /// Finish what is queued before this, then stop.
    Close(oneshot::Sender<()>),
}

/// A cheap handle to the executor task.
#[derive(Clone)]
pub(super) struct Executor {
    /// Operations in the order they were queued: every one on SQLite, submitted ones (event
    /// streams) on PostgreSQL.
    tx: mpsc::Sender<Msg>,
    /// PostgreSQL: operations whose callers wait, each in its own transaction on one of
    /// several connections ([`super::concurrent`]), and how many workers take them.
    concurrent: Option<(mpsc::Sender<Msg>, usize)>,
}

fn closed() -> StorageError {
    StorageError::Write("storage is closed".into())
}

/// Whether `e` says the connection itself is unusable: I/O or protocol failures, or
/// PostgreSQL's connection-exception (08) and operator-intervention (57, e.g. "terminating
/// connection due to administrator command") classes.
pub(super) fn is_disconnect(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57")),
        _ => false,
    }
}

/// The operation was queued but never ran: storage closed, or its batch failed first.
fn abandoned() -> StorageError {
    StorageError::Write("storage write abandoned (storage closed or its batch failed)".into())
}

impl Executor {
    /// Starts the executor (and its WAL checkpoints) on `pool`.
    pub(super) fn spawn(pool: AnyPool, backend: Backend) -> Executor {
        let (tx, rx) = mpsc::channel(QUEUE);
        match backend {
            Backend::Sqlite => {
                tokio::spawn(checkpoints(pool.clone(), tx.downgrade()));
                tokio::spawn(run(pool, backend, rx));
                Executor {
                    tx,
                    concurrent: None,
                }
            }
            Backend::Postgres => {
                let workers = super::concurrent::WORKERS;
                let (ctx, crx) = mpsc::channel(QUEUE);
                let epoch = super::concurrent::Epoch::default();
                tokio::spawn(super::concurrent::ordered(pool.clone(), epoch.clone(), rx));
                super::concurrent::spawn_workers(pool, epoch, crx, workers);
                Executor {
                    tx,
                    concurrent: Some((ctx, workers)),
                }
            }
        }
    }

    /// Queues `f` and waits until the transaction that ran it commits, with its result.
    pub(super) async fn run<T, F>(&self, op: Op, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>
            + Send
            + 'static,
    {
        let (done, rx) = oneshot::channel();
        self.send(op, f, done, false).await?;
        rx.await.map_err(|_| abandoned())?
    }

    /// Queues `op` behind everything queued before it and returns without waiting for the
    /// commit (a failure is logged). For event streams whose order matters more than each
    /// caller knowing the outcome.
    pub(super) async fn submit<T, F>(&self, op: Op, f: F) -> Result<(), StorageError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>
            + Send
            + 'static,
    {
        let (done, _) = oneshot::channel();
        self.send(op, f, done, true).await
    }

    async fn send<T, F>(
        &self,
        op: Op,
        f: F,
        done: oneshot::Sender<Result<T, StorageError>>,
        ordered: bool,
    ) -> Result<(), StorageError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>
            + Send
            + 'static,
    {
        let name = op.name;
        let run: Run = Box::new(move |conn| {
            Box::pin(async move {
                let result = f(conn).await;
                let ok = result.is_ok();
                let broken = result.as_ref().err().is_some_and(is_disconnect);
                let answer: Answer = Box::new(move |commit_failed| {
                    let reply = match (commit_failed, result) {
                        (Some(e), _) => Err(StorageError::Write(e.to_string())),
                        (None, Ok(v)) => Ok(v),
                        (None, Err(e)) => {
                            if done.is_closed() {
                                tracing::warn!(error = %e, operation = name, "storage write failed");
                            }
                            Err(StorageError::from(e))
                        }
                    };
                    let _ = done.send(reply);
                });
                Ran { ok, broken, answer }
            })
        });
        let job = Job {
            savepoint: op.several,
            run,
        };
        let lane = match &self.concurrent {
            Some((concurrent, _)) if !ordered => concurrent,
            _ => &self.tx,
        };
        lane.send(Msg::Run(job)).await.map_err(|_| closed())
    }

    /// Commits everything queued so far and stops the executor (every worker).
    pub(super) async fn close(&self) {
        let mut waits = Vec::new();
        let lanes =
            std::iter::once((&self.tx, 1)).chain(self.concurrent.as_ref().map(|(c, n)| (c, *n)));
        for (lane, workers) in lanes {
            for _ in 0..workers {
                let (done, rx) = oneshot::channel();
                if lane.send(Msg::Close(done)).await.is_ok() {
                    waits.push(rx);
                }
            }
        }
        for rx in waits {
            let _ = rx.await;
        }
    }
}

/// Checkpoints the WAL from another connection while the executor keeps committing (PASSIVE
/// never blocks it), so no commit waits for a checkpoint's fsync. Stops with the executor.
async fn checkpoints(pool: AnyPool, executor: mpsc::WeakSender<Msg>) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if executor.upgrade().is_none_or(|w| w.is_closed()) || pool.is_closed() {
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

async fn run(pool: AnyPool, backend: Backend, mut rx: mpsc::Receiver<Msg>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // One connection kept for writing: its page cache stays warm between batches.
    let mut conn: Option<PoolConnection<Any>> = None;
    while let Some(first) = rx.recv().await {
        let mut close = None;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Run(job) => batch.push(job),
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
            commit(&pool, backend, &mut conn, &mut batch).await;
        }
        if let Some(done) = close {
            drop(conn);
            let _ = done.send(());
            return;
        }
    }
}

/// Runs one batch in one transaction, each job in its savepoint, and answers every job.
async fn commit(
    pool: &AnyPool,
    backend: Backend,
    conn: &mut Option<PoolConnection<Any>>,
    batch: &mut Vec<Job>,
) {
    let mut answers: Vec<Answer> = Vec::with_capacity(batch.len());
    let outcome: Result<(), sqlx::Error> = async {
        if conn.is_none() {
            let mut c = pool.acquire().await?;
            if backend == Backend::Sqlite {
                // Checkpoints run beside the executor (see `checkpoints`), never in a commit.
                sqlx::query("PRAGMA wal_autocheckpoint = 0")
                    .execute(&mut *c)
                    .await?;
            }
            *conn = Some(c);
        }
        let c = conn.as_mut().expect("just acquired");
        let mut tx = match backend {
            // IMMEDIATE takes the write lock up front: a deferred BEGIN that upgrades later
            // can fail the whole batch with SQLITE_BUSY when another process writes.
            Backend::Sqlite => c.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => c.begin().await?,
        };
        let always = backend == Backend::Postgres;
        for job in batch.drain(..) {
            let savepoint = job.savepoint || always;
            if savepoint {
                sqlx::query("SAVEPOINT op").execute(&mut *tx).await?;
            }
            let ran = (job.run)(&mut tx).await;
            if savepoint {
                if !ran.ok {
                    sqlx::query("ROLLBACK TO op").execute(&mut *tx).await?;
                }
                sqlx::query("RELEASE op").execute(&mut *tx).await?;
            }
            answers.push(ran.answer);
        }
        tx.commit().await
    }
    .await;
    match outcome {
        Ok(()) => answers.into_iter().for_each(|answer| answer(None)),
        Err(e) => {
            tracing::error!(error = %e, operations = answers.len(), "storage batch failed");
            // Start the next batch on a fresh connection.
            *conn = None;
            let msg = e.to_string();
            answers.into_iter().for_each(|answer| answer(Some(&msg)));
            // Jobs the failure came before (all of them when BEGIN failed) are dropped
            // unrun: their callers are told the write was abandoned.
            batch.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn temp() -> (tempfile::TempDir, AnyPool, Executor) {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let pool = AnyPool::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY, n BIGINT NOT NULL)")
            .execute(&pool)
            .await
            .unwrap();
        let exec = Executor::spawn(pool.clone(), Backend::Sqlite);
        (dir, pool, exec)
    }

    /// An operation of two statements whose second fails leaves nothing of its first, and
    /// the operations around it in the same batch commit with their own typed results.
    #[tokio::test]
    async fn a_failed_operation_is_undone_whole_and_fails_alone() {
        let (_d, pool, exec) = temp().await;
        let insert = |k: &'static str, n: i64| {
            let exec = exec.clone();
            async move {
                exec.run(Op::one("insert"), move |c| {
                    Box::pin(async move {
                        sqlx::query("INSERT INTO t (k, n) VALUES ($1, $2)")
                            .bind(k)
                            .bind(n)
                            .execute(&mut *c)
                            .await
                            .map(|r| r.rows_affected())
                    })
                })
                .await
            }
        };
        let half = exec.run(Op::several("half"), |c| {
            Box::pin(async move {
                sqlx::query("INSERT INTO t (k, n) VALUES ('half', 1)")
                    .execute(&mut *c)
                    .await?;
                sqlx::query("INSERT INTO t (k, n) VALUES ('a', 2)")
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        });
        let (a, half, b) = tokio::join!(insert("a", 1), half, insert("b", 1));
        assert_eq!(a.unwrap(), 1, "a row count, typed");
        assert!(half.is_err(), "its second statement broke the key");
        assert_eq!(b.unwrap(), 1);
        let keys: Vec<String> = sqlx::query_scalar("SELECT k FROM t ORDER BY k")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(keys, ["a", "b"], "nothing of the failed operation stayed");
        // Submitted operations keep their order; close waits for them.
        for n in 0..50 {
            exec.submit(Op::one("bump"), move |c| {
                Box::pin(async move {
                    sqlx::query("UPDATE t SET n = $1 WHERE k = 'a' AND n = $1 - 1")
                        .bind(n + 2)
                        .execute(&mut *c)
                        .await
                })
            })
            .await
            .unwrap();
        }
        exec.close().await;
        let n: i64 = sqlx::query_scalar("SELECT n FROM t WHERE k = 'a'")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(n, 51, "every submitted operation ran, in order");
        assert!(
            exec.run(Op::one("late"), |_| Box::pin(async { Ok(()) }))
                .await
                .is_err(),
            "a closed executor refuses work"
        );
    }
}
