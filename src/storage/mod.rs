//! Durable state: calls and their legs, and the webhook outbox, behind one `Storage` handle.
//!
//! Writes on the call path (new calls, legs, state changes) go through one writer task that
//! commits whatever is queued in a single transaction (group commit): each caller still waits
//! for its own write to be durable, but a burst of calls costs one commit, not one each.
//!
//! SQLite (embedded, WAL) is the default. Callers only see typed methods, never SQL or the
//! pool, so a PostgreSQL backend can be added here without touching them; the SQL is kept to
//! the portable subset (numbered parameters, BIGINT millisecond timestamps).

use crate::domain::values::MaskedPhone;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

mod outbox;
mod recordings;
pub mod retention;
mod writer;

pub use outbox::{DialerReport, OutboxEntry, OutboxState, Reported, RetryTarget};
pub use recordings::{RecordingEvent, RecordingRow, RecordingState};

/// Embedded migrations, applied in order at startup; never edit one that has shipped: each
/// is recorded with a checksum of its text, and a database whose applied migration no longer
/// matches refuses to open (see [`migrate`]).
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_init.sql")),
    (2, include_str!("migrations/0002_outbox_give_up.sql")),
    (3, include_str!("migrations/0003_recordings.sql")),
    (4, include_str!("migrations/0004_outbox_lease.sql")),
    (5, include_str!("migrations/0005_health.sql")),
    (6, include_str!("migrations/0006_call_legs_linked_at.sql")),
    (7, include_str!("migrations/0007_open_rows.sql")),
];

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

/// What kind of call a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Click2Call,
    Dialer,
}

impl CallKind {
    fn as_str(self) -> &'static str {
        match self {
            CallKind::Click2Call => "click2call",
            CallKind::Dialer => "dialer",
        }
    }
    fn parse(s: &str) -> Self {
        if s == "dialer" {
            CallKind::Dialer
        } else {
            CallKind::Click2Call
        }
    }
}

/// Where a call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// Asked of FreeSWITCH, nothing heard yet.
    Originating,
    /// The operator's phone rings.
    Ringing,
    Answered,
    /// Hung up after it was up.
    Ended,
    /// Never came up (busy, not registered, no answer...); the outcome says why.
    Failed,
}

impl CallState {
    fn as_str(self) -> &'static str {
        match self {
            CallState::Originating => "originating",
            CallState::Ringing => "ringing",
            CallState::Answered => "answered",
            CallState::Ended => "ended",
            CallState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "ringing" => CallState::Ringing,
            "answered" => CallState::Answered,
            "ended" => CallState::Ended,
            "failed" => CallState::Failed,
            _ => CallState::Originating,
        }
    }
}

/// A call to record: named fields, so a ramal can never be stored as a telefone.
#[derive(Clone, Copy)]
pub struct NewCall<'a> {
    pub id: &'a str,
    pub kind: CallKind,
    pub ramal: Option<&'a str>,
    pub telefone: Option<&'a str>,
    pub crm_id: Option<&'a str>,
    pub state: CallState,
    /// Where FreeSWITCH was told to record the call, when we chose the path.
    pub recording_path: Option<&'a str>,
}

/// A call as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub id: String,
    pub kind: CallKind,
    pub ramal: Option<String>,
    pub telefone: Option<String>,
    pub crm_id: Option<String>,
    pub state: CallState,
    pub outcome: Option<String>,
    pub recording_path: Option<String>,
    pub recording_state: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    pub answered_at: Option<i64>,
    pub ended_at: Option<i64>,
}

impl std::fmt::Debug for NewCall<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewCall")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("ramal", &self.ramal)
            .field("telefone", &MaskedPhone(self.telefone))
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for CallRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallRecord")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("ramal", &self.ramal)
            .field("telefone", &MaskedPhone(self.telefone.as_deref()))
            .field("crm_id", &self.crm_id)
            .field("state", &self.state)
            .field("outcome", &self.outcome)
            .field("created_at", &self.created_at)
            .field("answered_at", &self.answered_at)
            .field("ended_at", &self.ended_at)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub struct Storage {
    pool: SqlitePool,
    writer: writer::Handle,
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
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Err(StorageError::Unsupported(
                "postgres:// is not available in this build yet; use sqlite://".into(),
            ));
        }
        if !url.starts_with("sqlite:") {
            return Err(StorageError::Unsupported(
                url.split(':').next().unwrap_or("").into(),
            ));
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        migrate(&pool).await?;
        let writer = writer::spawn(pool.clone());
        Ok(Storage { pool, writer })
    }
}

/// The checksum recorded with a migration: FNV-1a (64 bit) of its text with line endings
/// normalised, so a checkout with CRLF endings is the same migration.
fn checksum(sql: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sql.replace("\r\n", "\n").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Applies what is missing, in order, each in its own transaction with its checksum; refuses
/// a database whose applied migrations were edited since, or that a newer build migrated.
async fn migrate(pool: &SqlitePool) -> Result<(), StorageError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .execute(pool)
    .await?;
    let has_checksum: bool = sqlx::query_scalar(
        "SELECT COUNT(*) > 0 FROM pragma_table_info('schema_migrations') WHERE name = 'checksum'",
    )
    .fetch_one(pool)
    .await?;
    if !has_checksum {
        sqlx::query("ALTER TABLE schema_migrations ADD COLUMN checksum TEXT")
            .execute(pool)
            .await?;
    }
    let newest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    let unknown: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations WHERE version > $1")
            .bind(newest)
            .fetch_one(pool)
            .await?;
    if let Some(v) = unknown {
        return Err(StorageError::Migrations(format!(
            "the database has migration {v}, which this build does not know (newest: {newest}): it was written by a newer finaz-freeswitch; run that version, or restore a backup"
        )));
    }
    for (version, sql) in MIGRATIONS {
        let sum = checksum(sql);
        let mut tx = pool.begin().await?;
        let applied: Option<Option<String>> =
            sqlx::query_scalar("SELECT checksum FROM schema_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
        match applied {
            Some(Some(recorded)) if recorded == sum => continue,
            Some(Some(recorded)) => {
                return Err(StorageError::Migrations(format!(
                    "migration {version} differs from the one applied to this database (checksum {sum}, recorded {recorded}): a shipped migration was edited; add a new migration instead"
                )));
            }
            // Applied by a build from before checksums: recorded now.
            Some(None) => {
                sqlx::query("UPDATE schema_migrations SET checksum = $2 WHERE version = $1")
                    .bind(version)
                    .bind(&sum)
                    .execute(&mut *tx)
                    .await?;
            }
            None => {
                sqlx::raw_sql(*sql).execute(&mut *tx).await?;
                sqlx::query(
                    "INSERT INTO schema_migrations (version, applied_at, checksum) VALUES ($1, $2, $3)",
                )
                .bind(version)
                .bind(now_ms())
                .bind(&sum)
                .execute(&mut *tx)
                .await?;
                tracing::info!(version, "storage migration applied");
            }
        }
        tx.commit().await?;
    }
    Ok(())
}

impl Storage {
    /// Deletes up to `limit` finished rows per table older than `cutoff` (unix ms), in one
    /// short transaction; how many rows went. Call it until it returns 0.
    pub async fn prune_batch(&self, cutoff: i64, limit: i64) -> Result<u64, StorageError> {
        match self
            .writer
            .apply(writer::Write::Prune { cutoff, limit })
            .await?
        {
            writer::Applied::Pruned(n) => Ok(n),
            other => Err(StorageError::Write(format!("prune answered {other:?}"))),
        }
    }

    /// Proves the database takes writes: one row rewritten through the writer, in the same
    /// kind of transaction as every call and webhook. Fails when the file or its directory is
    /// read-only, the disk is full, or another process holds the lock too long.
    pub async fn check_writable(&self) -> Result<(), StorageError> {
        self.writer
            .write(writer::Write::Probe { at: now_ms() })
            .await
    }

    /// Records a new call; returns once it is committed. The call id is its first leg's
    /// uuid, so only other legs need [`Storage::link_leg`].
    pub async fn insert_call(&self, call: NewCall<'_>) -> Result<(), StorageError> {
        self.writer
            .write(writer::Write::InsertCall {
                id: call.id.to_string(),
                kind: call.kind.as_str(),
                ramal: call.ramal.map(str::to_string),
                telefone: call.telefone.map(str::to_string),
                crm_id: call.crm_id.map(str::to_string),
                state: call.state.as_str(),
                recording_path: call.recording_path.map(str::to_string),
                at: now_ms(),
            })
            .await
    }

    /// Ties another channel uuid (e.g. the other leg of a bridge) to a call.
    pub async fn link_leg(&self, leg_id: &str, call_id: &str) -> Result<(), StorageError> {
        self.writer
            .write(writer::Write::LinkLeg {
                leg_id: leg_id.to_string(),
                call_id: call_id.to_string(),
            })
            .await
    }

    /// Updates a call's state and, when given, its outcome; stamps the first answer and the
    /// end.
    pub async fn set_call_state(
        &self,
        id: &str,
        state: CallState,
        outcome: Option<&str>,
    ) -> Result<(), StorageError> {
        let now = now_ms();
        self.writer
            .write(writer::Write::SetState {
                id: id.to_string(),
                state: state.as_str(),
                outcome: outcome.map(str::to_string),
                answered_at: (state == CallState::Answered).then_some(now),
                ended_at: matches!(state, CallState::Ended | CallState::Failed).then_some(now),
            })
            .await
    }

    /// The call that `id` (the call id or any of its legs) belongs to.
    pub async fn find_call(&self, id: &str) -> Result<Option<CallRecord>, StorageError> {
        let row = sqlx::query(
            "SELECT c.id, c.kind, c.ramal, c.telefone, c.crm_id, c.state, c.outcome, c.recording_path, c.recording_state, c.created_at, c.answered_at, c.ended_at
             FROM calls c
             WHERE c.id = $1 OR c.id = (SELECT call_id FROM call_legs WHERE leg_id = $1)
             LIMIT 1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| CallRecord {
            id: r.get(0),
            kind: CallKind::parse(r.get::<&str, _>(1)),
            ramal: r.get(2),
            telefone: r.get(3),
            crm_id: r.get(4),
            state: CallState::parse(r.get::<&str, _>(5)),
            outcome: r.get(6),
            recording_path: r.get(7),
            recording_state: r.get(8),
            created_at: r.get(9),
            answered_at: r.get(10),
            ended_at: r.get(11),
        }))
    }

    /// Finishes queued writes, then closes the pool, flushing the WAL.
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn temp() -> (tempfile::TempDir, Storage, String) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let s = Storage::open(&url).await.unwrap();
        (dir, s, url)
    }

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
    async fn concurrent_writes_are_grouped_and_a_bad_one_fails_alone() {
        let (_d, s, url) = temp().await;
        let ids: Vec<String> = (0..300).map(|i| format!("call-{i}")).collect();
        let mut tasks = Vec::new();
        for id in ids.clone() {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.insert_call(NewCall {
                    id: &id,
                    kind: CallKind::Click2Call,
                    ramal: Some("1001"),
                    telefone: Some("41988445566"),
                    crm_id: None,
                    state: CallState::Originating,
                    recording_path: None,
                })
                .await
            }));
        }
        // The same id again, racing with the others: only it fails.
        let dup = s
            .insert_call(NewCall {
                id: "call-0",
                kind: CallKind::Click2Call,
                ramal: None,
                telefone: None,
                crm_id: None,
                state: CallState::Originating,
                recording_path: None,
            })
            .await;
        let mut ok = 0;
        for t in tasks {
            if t.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        assert!(ok >= 299, "{ok}");
        assert_eq!(
            ok + usize::from(dup.is_ok()),
            300,
            "exactly one of the two call-0 failed"
        );
        // Committed before each caller returned, so durable across a reopen.
        s.close().await;
        let s = Storage::open(&url).await.unwrap();
        for id in &ids {
            assert!(s.find_call(id).await.unwrap().is_some(), "{id}");
        }
        assert!(matches!(
            s.set_call_state("call-1", CallState::Answered, None).await,
            Ok(())
        ));
        s.close().await;
        assert!(
            s.set_call_state("call-1", CallState::Ended, None)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn any_leg_finds_its_call() {
        let (_d, s, _) = temp().await;
        s.insert_call(NewCall {
            id: "a",
            kind: CallKind::Dialer,
            ramal: Some("1001"),
            telefone: Some("4199"),
            crm_id: Some("CRM-1"),
            state: CallState::Answered,
            recording_path: None,
        })
        .await
        .unwrap();
        s.link_leg("b", "a").await.unwrap();
        let c = s.find_call("b").await.unwrap().unwrap();
        assert_eq!(c.id, "a");
        assert_eq!(c.kind, CallKind::Dialer);
        assert_eq!(c.crm_id.as_deref(), Some("CRM-1"));
        assert_eq!(c.state, CallState::Answered);
        assert!(s.find_call("zzz").await.unwrap().is_none());
        s.set_call_state("a", CallState::Ended, Some("NORMAL_CLEARING"))
            .await
            .unwrap();
        assert_eq!(
            s.find_call("a").await.unwrap().unwrap().outcome.as_deref(),
            Some("NORMAL_CLEARING")
        );
        let c = s.find_call("a").await.unwrap().unwrap();
        assert!(c.ended_at.is_some_and(|t| t >= c.created_at));
        assert_eq!(c.answered_at, None, "inserted as answered, never set");
    }

    #[tokio::test]
    async fn postgres_urls_are_refused_clearly_for_now() {
        let e = Storage::open("postgres://u:p@localhost/db")
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("postgres"));
    }

    /// Retention deletes what is finished and old, and nothing that is still going on:
    /// an ended call with no webhook left, a delivered or dead webhook, a closed recording.
    #[tokio::test]
    async fn retention_prunes_only_finished_rows() {
        let (_d, s, _) = temp().await;
        let call = |id: &'static str| NewCall {
            id,
            kind: CallKind::Click2Call,
            ramal: Some("1001"),
            telefone: Some("41988445566"),
            crm_id: None,
            state: CallState::Ringing,
            recording_path: None,
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
            url: Box::new(|cid| format!("http://finaz/x?cid={cid}")),
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
        assert_eq!(
            retention::pass(&s, now_ms() - 3_600_000, &stop)
                .await
                .unwrap(),
            0
        );
        let gone = retention::pass(&s, later, &stop).await.unwrap();
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

    #[test]
    fn debug_output_never_shows_a_phone_number() {
        let new = NewCall {
            id: "c1",
            kind: CallKind::Click2Call,
            ramal: Some("1001"),
            telefone: Some("41988445566"),
            crm_id: None,
            state: CallState::Ringing,
            recording_path: None,
        };
        let shown = format!("{new:?}");
        assert!(
            !shown.contains("41988445566") && shown.contains("4198****566"),
            "{shown}"
        );
        let write = writer::Write::InsertCall {
            id: "c1".into(),
            kind: "click2call",
            ramal: Some("1001".into()),
            telefone: Some("41988445566".into()),
            crm_id: None,
            state: "ringing",
            recording_path: None,
            at: 0,
        };
        assert!(!format!("{write:?}").contains("41988445566"));
    }

    /// A shipped migration edited afterwards, or a database from a newer build, is refused
    /// with a message that says so; a database from before checksums gets them recorded.
    #[tokio::test]
    async fn edited_or_unknown_migrations_refuse_to_open() {
        let (_d, s, url) = temp().await;
        s.close().await;
        let pool = SqlitePoolOptions::new().connect(&url).await.unwrap();
        sqlx::query("UPDATE schema_migrations SET checksum = NULL")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        Storage::open(&url).await.unwrap().close().await;
        let pool = SqlitePoolOptions::new().connect(&url).await.unwrap();
        let missing: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations WHERE checksum IS NULL")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(missing, 0, "checksums recorded for old rows");
        sqlx::query("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 3")
            .execute(&pool)
            .await
            .unwrap();
        let err = Storage::open(&url)
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("migration 3") && err.contains("edited"),
            "{err}"
        );
        sqlx::query("UPDATE schema_migrations SET checksum = $1 WHERE version = 3")
            .bind(checksum(MIGRATIONS[2].1))
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)")
            .execute(&pool)
            .await
            .unwrap();
        let err = Storage::open(&url)
            .await
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("newer finaz-freeswitch"), "{err}");
        assert_eq!(checksum("a\r\nb"), checksum("a\nb"));
    }
}
