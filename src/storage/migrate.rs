//! Embedded migrations, applied in order at startup, each recorded with a checksum of its
//! text: a shipped migration edited afterwards, or a database a newer build migrated, is
//! refused with a message that says which.

use sqlx::SqlitePool;

use super::{StorageError, now_ms};

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
];

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
pub(super) async fn migrate(pool: &SqlitePool) -> Result<(), StorageError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Storage, test_storage as temp};
    use sqlx::sqlite::SqlitePoolOptions;

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
