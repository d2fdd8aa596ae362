//! A fresh PostgreSQL database per test on the server `TEST_POSTGRES_URL` names (`.ci/run`
//! starts a throwaway one), dropped afterwards.
//!
//! Without that variable a PostgreSQL test says it was skipped, loudly, and passes nothing
//! else; with `REQUIRE_POSTGRES_TEST=1` (CI) it fails instead.

use sqlx::{Connection, Executor};

/// Drops the database when the test ends.
pub struct Database {
    admin: String,
    name: String,
    pub url: String,
}

impl Drop for Database {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut c) = sqlx::AnyConnection::connect(&admin).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = c.execute(sqlx::AssertSqlSafe(sql)).await;
                }
            });
        })
        .join();
    }
}

/// A new empty database, or `None` (with a SKIPPED line naming `test`) when no server was
/// given.
pub async fn database(test: &str) -> Option<Database> {
    let admin = match std::env::var("TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            assert!(
                std::env::var("REQUIRE_POSTGRES_TEST").as_deref() != Ok("1"),
                "REQUIRE_POSTGRES_TEST=1 but TEST_POSTGRES_URL is not set"
            );
            // Past the test harness's capture (a passing test's eprintln! is never shown).
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED {test}: TEST_POSTGRES_URL is not set (no PostgreSQL to run it on); \
                 `.ci/postgres cargo test` starts one ***\n"
            );
            return None;
        }
    };
    sqlx::any::install_default_drivers();
    let name = format!("finaz_it_{:016x}", fastrand::u64(..));
    let mut c = sqlx::AnyConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("TEST_POSTGRES_URL {admin}: {e}"));
    c.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap();
    let base = admin.split('?').next().unwrap();
    let server = base.rsplit_once('/').map_or(base, |(s, _)| s);
    Some(Database {
        url: format!("{server}/{name}"),
        admin,
        name,
    })
}
