//! Durable state: calls and their legs, recordings, and the webhook outbox, behind one
//! `Storage` handle.
//!
//! Writes go through the executor (`executor.rs`), which commits whatever is queued in one
//! transaction (group commit): each caller still waits for its own write to be durable, but
//! a burst of calls costs one commit, not one each. The SQL lives in one module per table
//! (`calls`, `outbox`, `recordings`, plus `retention` and `migrate`), each a set of
//! operations handed to the executor; none of them knows the others' columns beyond the
//! calls they make, and the executor knows no table.
//!
//! SQLite (embedded, WAL) is the default, for one box; PostgreSQL (`postgres://`) lets
//! several replicas share one database. Callers only see typed methods, never SQL or the
//! pool. The SQL is the portable subset (numbered parameters, BIGINT millisecond timestamps,
//! `ON CONFLICT`, `RETURNING`) on sqlx's `Any` driver; where the dialects differ a statement
//! is chosen by [`Backend::pick`].

use std::str::FromStr;

use futures_util::FutureExt;
use sqlx::any::AnyPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{AnyPool, ConnectOptions, Connection, Executor as _};

mod browse;
mod calls;
mod claims;
mod concurrent;
mod executor;
mod migrate;
mod outbox;
mod recordings;
pub mod retention;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
pub(crate) use testing::test_backends;

pub use browse::{CallFilter, CallSummary};
pub use calls::{CallKind, CallRecord, CallState, NewCall};
pub use claims::{ClaimOutcome, ClaimRequest, Claimed};
pub use outbox::{DialerReport, OutboxEntry, OutboxState, Reported, RetryTarget};
pub use recordings::{RecordingEvent, RecordingRow, RecordingState};

use executor::Executor;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The URL names a backend this build cannot open.
    #[error("unsupported storage url: {0}")]
    Unsupported(String),
    /// The database failed or is unreachable.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A grouped write failed as a whole (its commit), or storage is closed.
    #[error("database write failed: {0}")]
    Write(String),
    /// The database's migrations do not match this build's: one was edited after it shipped,
    /// or a newer build wrote the database.
    #[error("{0}")]
    Migrations(String),
}

/// Which database engine a storage URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The engine of `url`, or why it names none this build opens.
    pub fn of(url: &str) -> Result<Backend, StorageError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else {
            Err(StorageError::Unsupported(format!(
                "{}: (use sqlite:// or postgres://)",
                url.split(':').next().unwrap_or("")
            )))
        }
    }

    /// The statement for this engine, where the dialects differ.
    pub(crate) const fn pick(self, sqlite: &'static str, postgres: &'static str) -> &'static str {
        match self {
            Backend::Sqlite => sqlite,
            Backend::Postgres => postgres,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

#[derive(Clone)]
pub struct Storage {
    pool: AnyPool,
    exec: Executor,
    backend: Backend,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Storage {
    /// Opens (creating if needed) the database and applies pending migrations.
    pub async fn open(url: &str) -> Result<Self, StorageError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of(url)?;
        let pool = match backend {
            Backend::Sqlite => {
                // Created, and switched to WAL (a property of the file), once; every pooled
                // connection then only sets what is per connection. Foreign keys are on and
                // the busy timeout is 5 s by sqlx's defaults.
                SqliteConnectOptions::from_str(url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .connect()
                    .await?
                    .close()
                    .await?;
                AnyPoolOptions::new()
                    .max_connections(4)
                    .after_connect(|c, _| {
                        Box::pin(
                            async move { c.execute("PRAGMA synchronous = NORMAL").await.map(drop) },
                        )
                    })
                    .connect(url)
                    .await?
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(std::time::Duration::from_secs(10))
                    .connect(url)
                    .await?
            }
        };
        migrate::migrate(&pool, backend).await?;
        let exec = Executor::spawn(pool.clone(), backend);
        Ok(Storage {
            pool,
            exec,
            backend,
        })
    }

    /// The engine this storage runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }
}

impl Storage {
    /// Proves the database takes writes: the health row rewritten through the executor, in
    /// the same kind of transaction as every call and webhook. Fails when the file or its
    /// directory is read-only, the disk is full, or another process holds the lock too long.
    pub async fn check_writable(&self) -> Result<(), StorageError> {
        let at = now_ms();
        self.exec
            .run(executor::Op::one("probe"), move |c| {
                async move {
                    sqlx::query(
                        "INSERT INTO health (id, checked_at) VALUES (1, $1)
                         ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
                    )
                    .bind(at)
                    .execute(c)
                    .await
                    .map(drop)
                }
                .boxed()
            })
            .await
    }

    /// Finishes queued writes, then closes the pool, flushing the WAL.
    pub async fn close(&self) {
        self.exec.close().await;
        self.pool.close().await;
    }
}

/// A storage on a fresh file in a temporary directory, and its URL.
#[cfg(test)]
pub(crate) async fn test_storage() -> (tempfile::TempDir, Storage, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let s = Storage::open(&url).await.unwrap();
    (dir, s, url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_storage as temp;

    #[tokio::test]
    async fn creates_the_file_and_migrates_once() {
        let (dir, s, url) = temp().await;
        assert!(dir.path().join("t.db").exists());
        s.check_writable().await.unwrap();
        s.close().await;
        // Reopening applies nothing twice and keeps data.
        let s = Storage::open(&url).await.unwrap();
        s.insert_call(NewCall {
            id: "c1",
            kind: CallKind::Click2Call,
            ramal: Some("1001"),
            telefone: Some("41988445566"),
            crm_id: None,
            state: CallState::Ringing,
            recording_path: Some("/rec/c1.wav"),
            node: None,
        })
        .await
        .unwrap();
        s.close().await;
        let s = Storage::open(&url).await.unwrap();
        let c = s.find_call("c1").await.unwrap().unwrap();
        assert_eq!(c.ramal.as_deref(), Some("1001"));
        assert_eq!(c.recording_path.as_deref(), Some("/rec/c1.wav"));
    }

    #[tokio::test]
    async fn other_urls_are_refused_clearly() {
        let e = Storage::open("mysql://u:p@localhost/db")
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("mysql"), "{e}");
        assert!(e.to_string().contains("postgres://"), "{e}");
    }
}
