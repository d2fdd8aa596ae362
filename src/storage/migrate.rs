//! Embedded migrations, applied in order at startup, each recorded with a checksum of its
//! text: a shipped migration edited afterwards, or a database a newer build migrated, is
//! refused with a message that says which.
//!
//! Both engines apply the same list; a migration whose SQL differs between the dialects has
//! its PostgreSQL text in `migrations/postgres/` ([`POSTGRES_SPELLING`]). On PostgreSQL the
//! whole run holds an advisory lock, so replicas started together migrate once.

use sqlx::{AnyConnection, AnyPool};

use super::{Backend, StorageError, now_ms};

/// Never edit one that has shipped: add the next one.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_init.sql")),
    (2, include_str!("migrations/0002_outbox_give_up.sql")),
    (3, include_str!("migrations/0003_recordings.sql")),
    (4, include_str!("migrations/0004_outbox_lease.sql")),
    (5, include_str!("migrations/0005_health.sql")),
    (6, include_str!("migrations/0006_call_legs_linked_at.sql")),
    (7, include_str!("migrations/0007_open_rows.sql")),
    (8, include_str!("migrations/0008_outbox_delivered_at.sql")),
    (9, include_str!("migrations/0009_click2call_claims.sql")),
    (10, include_str!("migrations/0010_calls_node.sql")),
    (11, include_str!("migrations/0011_outbox_leased_until.sql")),
];

/// Migrations spelt differently on PostgreSQL; every other one is the same text.
const POSTGRES_SPELLING: &[(i64, &str)] = &[(1, include_str!("migrations/postgres/0001_init.sql"))];

/// Any number, the same in every replica: the advisory lock of the migration run.
const MIGRATION_LOCK: i64 = 0x6669_6e61_7a01;

fn text_for(backend: Backend, version: i64, sql: &'static str) -> &'static str {
    match backend {
        Backend::Sqlite => sql,
        Backend::Postgres => POSTGRES_SPELLING
            .iter()
            .find(|(v, _)| *v == version)
            .map_or(sql, |(_, pg)| pg),
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
pub(super) async fn migrate(pool: &AnyPool, backend: Backend) -> Result<(), StorageError> {
    let mut conn = pool.acquire().await?;
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await?;
    }
    let result = run(&mut conn, backend).await;
    if backend == Backend::Postgres {
        // Also released when the connection closes, should this fail.
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *conn)
            .await;
    }
    result
}

async fn run(conn: &mut AnyConnection, backend: Backend) -> Result<(), StorageError> {
    use sqlx::Connection;
    match backend {
        Backend::Sqlite => {
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
            )
            .execute(&mut *conn)
            .await?;
            let has_checksum: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pragma_table_info('schema_migrations') WHERE name = 'checksum'",
            )
            .fetch_one(&mut *conn)
            .await?;
            if has_checksum == 0 {
                sqlx::query("ALTER TABLE schema_migrations ADD COLUMN checksum TEXT")
                    .execute(&mut *conn)
                    .await?;
            }
        }
        // Born after checksums.
        Backend::Postgres => {
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL, checksum TEXT)",
            )
            .execute(&mut *conn)
            .await?;
        }
    }
    let newest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    let unknown: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations WHERE version > $1")
            .bind(newest)
            .fetch_one(&mut *conn)
            .await?;
    if let Some(v) = unknown {
        return Err(StorageError::Migrations(format!(
            "the database has migration {v}, which this build does not know (newest: {newest}): it was written by a newer finaz-freeswitch; run that version, or restore a backup"
        )));
    }
    for (version, sql) in MIGRATIONS {
        let sql = text_for(backend, *version, sql);
        let sum = checksum(sql);
        let mut tx = conn.begin().await?;
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
                sqlx::raw_sql(sql).execute(&mut *tx).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Storage, test_storage as temp};
    use sqlx::sqlite::SqlitePoolOptions;

    /// Replicas started together on a fresh PostgreSQL database migrate once: the advisory
    /// lock makes the others wait and find everything applied.
    #[tokio::test]
    async fn replicas_starting_together_migrate_once() {
        let Some(admin) = crate::storage::testing::postgres_admin_url() else {
            return;
        };
        let (_guard, url) = crate::storage::testing::postgres_database(&admin).await;
        let opened = futures_util::future::join_all((0..4).map(|_| Storage::open(&url))).await;
        for s in opened {
            s.expect("every replica opens").close().await;
        }
        let s = Storage::open(&url).await.unwrap();
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations")
            .fetch_one(&s.pool)
            .await
            .unwrap();
        assert_eq!(rows, MIGRATIONS.len() as i64);
        s.close().await;
    }

    #[test]
    fn postgres_spells_only_what_differs() {
        for (v, pg) in POSTGRES_SPELLING {
            let sqlite = MIGRATIONS.iter().find(|(m, _)| m == v).expect("known").1;
            assert_ne!(sqlite, *pg);
            assert_eq!(text_for(Backend::Postgres, *v, sqlite), *pg);
        }
        assert_eq!(
            text_for(Backend::Postgres, 2, MIGRATIONS[1].1),
            MIGRATIONS[1].1
        );
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
