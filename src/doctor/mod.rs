//! `finaz-freeswitch doctor`: checks an installation end to end, one line per check, each
//! failure with the fix. Exit code 0 when nothing failed.

use std::net::SocketAddr;
use std::path::Path;

use crate::config::{Config, redact_url};
use crate::storage::Storage;

mod freeswitch;

use freeswitch::freeswitch_checks;

/// How one check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Ok(String),
    Fail { what: String, fix: String },
    Skipped(String),
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Check {
            name,
            status: Status::Ok(detail.into()),
        }
    }
    fn fail(name: &'static str, what: impl Into<String>, fix: impl Into<String>) -> Self {
        Check {
            name,
            status: Status::Fail {
                what: what.into(),
                fix: fix.into(),
            },
        }
    }
    fn skipped(name: &'static str, why: impl Into<String>) -> Self {
        Check {
            name,
            status: Status::Skipped(why.into()),
        }
    }

    pub fn failed(&self) -> bool {
        matches!(self.status, Status::Fail { .. })
    }

    /// `ok   name: detail` / `FAIL name: what\n     fix: ...` / `skip name: why`.
    pub fn line(&self) -> String {
        match &self.status {
            Status::Ok(d) => format!("ok    {}: {d}", self.name),
            Status::Skipped(d) => format!("skip  {}: {d}", self.name),
            Status::Fail { what, fix } => {
                format!("FAIL  {}: {what}\n      fix: {fix}", self.name)
            }
        }
    }
}

/// Runs every check. `ramal` is an extension to try the operator endpoint with.
pub async fn run(config: &Config, ramal: Option<&str>) -> Vec<Check> {
    let mut checks = Vec::new();
    // Every node in turn; each node's recordings directory too.
    for node in &config.nodes {
        checks.extend(freeswitch_checks(config, node, ramal).await);
        if node.recordings_dir != config.recordings.dir() {
            checks.push(recordings_check(&node.recordings_dir));
        }
    }
    checks.push(recordings_check(config.recordings.dir()));
    checks.push(storage_check(&config.storage_url).await);
    checks.push(finaz_check(config).await);
    for (name, key, addr) in [
        ("http port free", "http.listen", config.http.listen),
        ("admin port free", "admin.listen", config.admin_listen),
        ("dialer port free", "dialer.listen", config.dialer.listen),
    ] {
        checks.push(port_check(name, key, addr));
    }
    checks
}

fn recordings_check(dir: &Path) -> Check {
    const NAME: &str = "recordings dir readable";
    match std::fs::read_dir(dir) {
        Ok(_) => Check::ok(NAME, dir.display().to_string()),
        Err(e) => Check::fail(
            NAME,
            format!("{}: {e}", dir.display()),
            "create recordings.dir (FreeSWITCH writes it) and let the adapter's user read it (group freeswitch, mode 2750)",
        ),
    }
}

async fn storage_check(url: &str) -> Check {
    const NAME: &str = "storage writable";
    let shown = redact_url(url);
    match Storage::open(url).await {
        Ok(s) => {
            let r = s.check_writable().await;
            s.close().await;
            match r {
                Ok(()) => Check::ok(NAME, shown),
                Err(e) => Check::fail(
                    NAME,
                    format!("{shown}: {e}"),
                    "give the adapter's user write access to the database file and its directory",
                ),
            }
        }
        Err(e) => Check::fail(
            NAME,
            format!("{shown}: {e}"),
            "check storage.url: for SQLite the permissions of its directory; for PostgreSQL that the server answers and the user may connect to that database",
        ),
    }
}

/// Resolves Finaz's host and sends a HEAD to the webhook's path, without its query: it must
/// answer something (any status), and no call is reported by it.
async fn finaz_check(config: &Config) -> Check {
    const NAME: &str = "Finaz reachable";
    let url = match reqwest::Url::parse(&config.finaz.answered_url.as_str().replace(['{', '}'], ""))
    {
        Ok(mut u) => {
            u.set_query(None);
            u
        }
        Err(e) => return Check::fail(NAME, e.to_string(), "fix finaz.answered_url"),
    };
    let client = match reqwest::Client::builder()
        .timeout(config.finaz.delivery_timeout)
        .build()
    {
        Ok(c) => c,
        Err(e) => return Check::fail(NAME, e.to_string(), "check the system's TLS roots"),
    };
    match client.head(url.clone()).send().await {
        Ok(r) => Check::ok(NAME, format!("{url} answered {}", r.status().as_u16())),
        Err(e) => Check::fail(
            NAME,
            format!("{url}: {}", crate::outbox::describe(&e)),
            "check DNS and outbound HTTPS from this host to Finaz (proxy, firewall)",
        ),
    }
}

fn port_check(name: &'static str, key: &str, addr: SocketAddr) -> Check {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Check::ok(name, format!("{key} {addr}")),
        Err(e) => Check::fail(
            name,
            format!("{key} {addr}: {e}"),
            format!(
                "another process holds {addr} (the service itself, if it is running); choose another {key}"
            ),
        ),
    }
}
