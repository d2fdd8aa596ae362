//! Test doubles and helpers shared by the integration tests.

// Each test uses part of the kit; what one file leaves unused another uses.
#![allow(dead_code)]

// Only the test binary knows where the built binary is.
#[cfg(test)]
pub mod binary;
#[cfg(test)]
pub mod browser;
pub mod captures;
pub mod finaz;
pub mod fs_rules;
pub mod harness;
pub mod outbound_driver;
pub mod postgres;
pub mod standin;

/// An HTTP client for tests (the process's TLS provider installed first, as the service does).
pub fn http() -> reqwest::Client {
    finaz_freeswitch::app::install_tls_provider();
    reqwest::Client::new()
}

/// `GET url` with [`http`].
pub async fn get(url: impl reqwest::IntoUrl) -> reqwest::Result<reqwest::Response> {
    http().get(url).send().await
}

/// Resident memory of this process in KiB (Linux), for the benchmarks' memory columns.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// For benchmarks: logs formatted at `info` as in production, then written nowhere.
pub fn quiet_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(std::io::sink)
        .try_init();
}
