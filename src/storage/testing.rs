//! Storages for tests on every engine: SQLite on a temporary file always, and PostgreSQL on
//! a fresh database when `TEST_POSTGRES_URL` names a server (`.ci/run` starts one).
//!
//! Without it the PostgreSQL half is skipped with a loud line on stderr, and refused
//! outright when `REQUIRE_POSTGRES_TEST=1` (CI), so it never passes by not running.

use super::Storage;

/// Keeps a test's database alive: the temporary directory, or the PostgreSQL database
/// (dropped when this is).
pub(crate) enum Guard {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin: String, name: String },
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Postgres { admin, name } = self {
            let (admin, name) = (admin.clone(), name.clone());
            // Drop may run inside a runtime: the database is dropped from a thread of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    use sqlx::{Connection, Executor};
                    if let Ok(mut c) = sqlx::AnyConnection::connect(&admin).await {
                        let _ = c
                            .execute(sqlx::AssertSqlSafe(format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            )))
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

/// The PostgreSQL server tests may create databases on, if any.
pub(crate) fn postgres_admin_url() -> Option<String> {
    match std::env::var("TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("REQUIRE_POSTGRES_TEST").as_deref() == Ok("1") {
                panic!("REQUIRE_POSTGRES_TEST=1 but TEST_POSTGRES_URL is not set");
            }
            // Once per test binary, past the test harness's capture of print macros (a
            // passing test's eprintln! is never shown).
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| {
                use std::io::Write;
                let _ = std::io::stderr().write_all(
                    b"\n*** SKIPPED the PostgreSQL half of the storage tests: TEST_POSTGRES_URL is not set; \
                      they ran on SQLite only. `.ci/postgres cargo test` runs both. ***\n\n",
                );
            });
            None
        }
    }
}

/// A new, empty PostgreSQL database on the test server: its URL and guard.
pub(crate) async fn postgres_database(admin: &str) -> (Guard, String) {
    use sqlx::{Connection, Executor};
    sqlx::any::install_default_drivers();
    let name = format!("finaz_test_{:016x}", fastrand::u64(..));
    let mut c = sqlx::AnyConnection::connect(admin)
        .await
        .unwrap_or_else(|e| panic!("TEST_POSTGRES_URL {admin}: {e}"));
    c.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap();
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin, None),
    };
    let server = base.rsplit_once('/').map_or(base, |(s, _)| s);
    let url = match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    };
    (
        Guard::Postgres {
            admin: admin.to_string(),
            name,
        },
        url,
    )
}

/// One opened storage per engine available: `(guard, storage, url)`.
pub(crate) async fn test_backends() -> Vec<(Guard, Storage, String)> {
    let (dir, s, url) = super::test_storage().await;
    let mut all = vec![(Guard::Dir(dir), s, url)];
    if let Some(admin) = postgres_admin_url() {
        let (guard, url) = postgres_database(&admin).await;
        let s = Storage::open(&url).await.expect("open PostgreSQL");
        all.push((guard, s, url));
    }
    all
}
