//! PostgreSQL's executor lanes: each operation in its own short transaction, so replicas
//! writing the same rows (both see every FreeSWITCH event) wait for each other row by row
//! instead of deadlocking on whole batches.
//!
//! A batch of SQLite's kind holds the locks of all its operations until its one commit; two
//! replicas' batches touching the same calls in different orders deadlock, and PostgreSQL
//! aborts one batch after `deadlock_timeout` (seen in the replica test: 1 s stalls, every
//! report retried). Here operations whose callers wait run on [`WORKERS`] connections at
//! once, and PostgreSQL's own group commit (one WAL flush for the commits that arrive
//! together) keeps the fsyncs shared. Submitted operations (event streams whose order
//! matters) run one at a time, in order, on a connection of their own.

use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Connection};
use tokio::sync::{Mutex, mpsc};

use super::executor::{Job, Msg};

/// Connections running waited-for operations at once.
pub(super) const WORKERS: usize = 12;

/// Runs submitted operations in order, one transaction each, until closed.
pub(super) async fn ordered(pool: AnyPool, mut rx: mpsc::Receiver<Msg>) {
    let mut conn = None;
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Run(job) => alone(&pool, &mut conn, job).await,
            Msg::Close(done) => {
                let _ = done.send(());
                return;
            }
        }
    }
}

/// Starts `n` workers taking operations from `rx`; each stops at a `Close`.
pub(super) fn spawn_workers(pool: AnyPool, rx: mpsc::Receiver<Msg>, n: usize) {
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..n {
        let (pool, rx) = (pool.clone(), rx.clone());
        tokio::spawn(async move {
            let mut conn = None;
            loop {
                let msg = rx.lock().await.recv().await;
                match msg {
                    Some(Msg::Run(job)) => alone(&pool, &mut conn, job).await,
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

/// One operation in one transaction: committed when it succeeded, rolled back (and its own
/// error answered) when it failed. A failed BEGIN drops the job: its caller is told the
/// write was abandoned. An operation that needs no savepoint (one statement, or statements
/// each a fact on its own) runs without BEGIN and COMMIT: each statement commits by itself,
/// as durably, in one round trip instead of three (the database's CPU is what limits a
/// small host: measured by the click2call benchmark).
async fn alone(pool: &AnyPool, conn: &mut Option<PoolConnection<Any>>, job: Job) {
    if !job.savepoint {
        return autocommit(pool, conn, job).await;
    }
    let outcome = async {
        if conn.is_none() {
            *conn = Some(pool.acquire().await?);
        }
        let c = conn.as_mut().expect("just acquired");
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
        Ok((ran, Ok(()))) => (ran.answer)(None),
        Ok((ran, Err(e))) => {
            tracing::error!(error = %e, "storage commit failed");
            *conn = None;
            (ran.answer)(Some(&e.to_string()));
        }
        Err(e) => {
            tracing::error!(error = %e, "storage transaction could not start");
            *conn = None;
        }
    }
}

async fn autocommit(pool: &AnyPool, conn: &mut Option<PoolConnection<Any>>, job: Job) {
    if conn.is_none() {
        match pool.acquire().await {
            Ok(c) => *conn = Some(c),
            Err(e) => {
                tracing::error!(error = %e, "storage connection unavailable");
                return;
            }
        }
    }
    let c = conn.as_mut().expect("just acquired");
    let ran = (job.run)(&mut *c).await;
    if !ran.ok {
        // Maybe the connection broke: the next operation starts on a checked one.
        *conn = None;
    }
    (ran.answer)(None);
}
