//! PostgreSQL's executor lanes: each operation in its own short transaction, so replicas
//! writing the same rows (both see every FreeSWITCH event) wait for each other row by row
//! instead of deadlocking on whole batches.
//!
//! A batch of SQLite's kind holds the locks of all its operations until its one commit; two
//! replicas' batches touching the same calls in different orders deadlock, and PostgreSQL
//! aborts one batch after `deadlock_timeout` (seen in the replica test: 1 s stalls, every
//! report retried). Here operations whose callers wait run on [`WORKERS`] connections at
//! once, and PostgreSQL's own group commit shares the fsyncs of commits that arrive
//! together (measured during the 16-client click2call benchmark: 32,632 commits in 10,679
//! WAL syncs, 3.1 a sync, from `pg_stat_database` and `pg_stat_wal`). Submitted operations (event streams whose order
//! matters) run one at a time, in order, on a connection of their own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Connection};
use tokio::sync::{Mutex, mpsc};

use super::executor::{Job, Msg};

/// Connections running waited-for operations at once.
pub(super) const WORKERS: usize = 12;

/// Bumped when an operation finds its connection gone; every lane then takes a fresh one
/// before its next operation. Without it, after a PostgreSQL restart each of the 13 held
/// connections failed one operation of its own before it was replaced (seen by hand with
/// the sandbox on PostgreSQL: `/readyz` and click2call still 503 two seconds after the
/// server was back; with the epoch the first request after the restart succeeds).
#[derive(Clone, Default)]
pub(super) struct Epoch(Arc<AtomicU64>);

/// A lane's connection and the epoch it was taken in.
type Held = Option<(PoolConnection<Any>, u64)>;

/// Runs submitted operations in order, one transaction each, until closed.
pub(super) async fn ordered(pool: AnyPool, epoch: Epoch, mut rx: mpsc::Receiver<Msg>) {
    let mut conn = None;
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Run(job) => alone(&pool, &epoch, &mut conn, job).await,
            Msg::Close(done) => {
                let _ = done.send(());
                return;
            }
        }
    }
}

/// Starts `n` workers taking operations from `rx`; each stops at a `Close`.
pub(super) fn spawn_workers(pool: AnyPool, epoch: Epoch, rx: mpsc::Receiver<Msg>, n: usize) {
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..n {
        let (pool, rx, epoch) = (pool.clone(), rx.clone(), epoch.clone());
        tokio::spawn(async move {
            let mut conn = None;
            loop {
                let msg = rx.lock().await.recv().await;
                match msg {
                    Some(Msg::Run(job)) => alone(&pool, &epoch, &mut conn, job).await,
                    Some(Msg::Close(done)) => {
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                }
            }
        });
    }
}

/// The lane's connection, fresh if it had none or the epoch moved since it was taken.
async fn connection<'c>(
    pool: &AnyPool,
    epoch: &Epoch,
    held: &'c mut Held,
) -> Result<&'c mut PoolConnection<Any>, sqlx::Error> {
    let now = epoch.0.load(Ordering::Relaxed);
    if held.as_ref().is_some_and(|(_, at)| *at != now) {
        *held = None;
    }
    if held.is_none() {
        *held = Some((pool.acquire().await?, now));
    }
    Ok(&mut held.as_mut().expect("just taken").0)
}

/// After a failure: a broken connection is dropped, and every lane told to renew its own.
fn after_failure(epoch: &Epoch, held: &mut Held, broken: bool) {
    if broken {
        epoch.0.fetch_add(1, Ordering::Relaxed);
        *held = None;
    }
}

/// One operation in one transaction: committed when it succeeded, rolled back (and its own
/// error answered) when it failed. A failed BEGIN drops the job: its caller is told the
/// write was abandoned. An operation that needs no savepoint (one statement, or statements
/// each a fact on its own) runs without BEGIN and COMMIT: each statement commits by itself,
/// as durably, in one round trip instead of three (the database's CPU is what limits a
/// small host: measured by the click2call benchmark).
async fn alone(pool: &AnyPool, epoch: &Epoch, held: &mut Held, job: Job) {
    let c = match connection(pool, epoch, held).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "storage connection unavailable");
            return;
        }
    };
    if !job.savepoint {
        let ran = (job.run)(c).await;
        after_failure(epoch, held, ran.broken);
        return (ran.answer)(None);
    }
    let outcome = async {
        let mut tx = c.begin().await?;
        let ran = (job.run)(&mut tx).await;
        let done = if ran.ok {
            tx.commit().await
        } else {
            tx.rollback().await
        };
        Ok::<_, sqlx::Error>((ran, done))
    }
    .await;
    match outcome {
        Ok((ran, Ok(()))) => {
            after_failure(epoch, held, ran.broken);
            (ran.answer)(None)
        }
        Ok((ran, Err(e))) => {
            tracing::error!(error = %e, "storage commit failed");
            after_failure(epoch, held, true);
            (ran.answer)(Some(&e.to_string()));
        }
        Err(e) => {
            tracing::error!(error = %e, "storage transaction could not start");
            after_failure(epoch, held, true);
        }
    }
}
