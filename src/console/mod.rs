//! The operator console on the admin listener: one server-rendered page (`GET /`) with the
//! service's status, the calls of the last 24 h (recordings playable in the page, through
//! the same safe download code as Finaz's), the webhooks (dead ones retried from the page),
//! and charts of the last hour; a little script refreshes it every second. Assets are compiled
//! in: no build step, no CDN, works offline.

pub mod access;
pub mod page;
pub mod routes;
pub mod series;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::Response;

use crate::config::{Config, redact_url};
use crate::domain::values::CallId;
use crate::esl::{Client, ConnectionState};
use crate::http::reply::ApiError;
use crate::http::stats::HttpStats;
use crate::nodes::Nodes;
use crate::outbox::Outbox;
use crate::recordings::Recordings;
use crate::storage::{
    CallFilter, CallKind, CallState, OutboxState, RetryTarget, Storage, StorageError, now_ms,
};
use page::{EslView, FilterView, View};
use series::Series;

/// Rows per table at most.
const ROWS: i64 = 200;
/// The calls window.
const DAY_MS: i64 = 86_400_000;

/// What the console is built from.
pub struct Parts {
    pub storage: Storage,
    /// Every node: its name, address and event socket client.
    pub nodes: Vec<(String, String, Client)>,
    pub outbox: Outbox,
    pub recordings: Recordings,
    pub series: Series,
    /// How long a revived dead webhook is retried (`finaz.max_retry_age`).
    pub retry_for: Duration,
    pub show_numbers: bool,
    /// The storage as the page names it (credentials redacted).
    pub storage_shown: String,
    pub sandbox: bool,
}

/// The running service's parts the console is built from ([`Console::for_service`]).
pub struct Wiring {
    pub storage: Storage,
    pub nodes: Nodes,
    pub outbox: Outbox,
    pub http: Arc<HttpStats>,
    pub sandbox: bool,
}

/// The console's state; cheap to share.
pub struct Console {
    parts: Parts,
    /// Each node's connection as last seen, in `parts.nodes` order.
    links: Vec<Arc<Mutex<EslView>>>,
    started: Instant,
}

impl Console {
    /// The console of a service running `config`, with its charts' sampler started.
    pub fn for_service(config: &Config, w: Wiring, shutdown: CancellationToken) -> Arc<Console> {
        let series = Series::start(
            series::Sources {
                esl: w.nodes.all().iter().map(|n| n.esl.clone()).collect(),
                http: w.http,
                outbox: w.outbox.stats.clone(),
            },
            shutdown.child_token(),
        );
        let parts = Parts {
            recordings: Recordings::new(w.storage.clone(), w.nodes.clone(), &config.recordings),
            nodes: w
                .nodes
                .all()
                .iter()
                .map(|n| (n.name.to_string(), n.address.clone(), n.esl.clone()))
                .collect(),
            outbox: w.outbox,
            series,
            retry_for: config.finaz.max_retry_age,
            show_numbers: config.admin_show_numbers,
            storage_shown: format!(
                "{}, {}",
                match w.storage.backend() {
                    crate::storage::Backend::Sqlite => "SQLite",
                    crate::storage::Backend::Postgres => "PostgreSQL",
                },
                redact_url(&config.storage_url)
            ),
            storage: w.storage,
            sandbox: w.sandbox,
        };
        Console::start(parts, shutdown)
    }

    /// Starts following each node's connection (since when, last error) until `shutdown`.
    pub fn start(parts: Parts, shutdown: CancellationToken) -> Arc<Console> {
        let links = parts
            .nodes
            .iter()
            .map(|(name, address, esl)| {
                let link = Arc::new(Mutex::new(EslView {
                    name: name.clone(),
                    address: address.clone(),
                    ..EslView::default()
                }));
                tokio::spawn(follow(esl.watch_state(), link.clone(), shutdown.clone()));
                link
            })
            .collect();
        Arc::new(Console {
            parts,
            links,
            started: Instant::now(),
        })
    }

    /// Everything the page shows, for `query`'s filter; `not_ready` from `/readyz`'s check.
    pub async fn view(&self, query: &str, not_ready: Option<String>) -> Result<View, StorageError> {
        let p = &self.parts;
        let now = now_ms();
        let (filter, form) = filter(query, now);
        let esl = self
            .links
            .iter()
            .zip(&p.nodes)
            .map(|(link, (_, _, client))| {
                let mut v = link.lock().expect("lock").clone();
                v.reconnects = client
                    .stats()
                    .reconnects
                    .load(std::sync::atomic::Ordering::Relaxed);
                v
            })
            .collect();
        Ok(View {
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: self.started.elapsed().as_secs(),
            esl,
            not_ready,
            storage: p.storage_shown.clone(),
            filter: form,
            calls: p.storage.recent_calls(&filter).await?,
            calls_limit: ROWS as usize,
            show_numbers: p.show_numbers,
            pending: p.storage.list_outbox(OutboxState::Pending, ROWS).await?,
            dead: p.storage.list_outbox(OutboxState::Dead, ROWS).await?,
            delivered: p.storage.delivered_since(now - 3_600_000, ROWS).await?,
            charts: p.series.charts(),
            now,
            sandbox: p.sandbox,
        })
    }

    /// `POST /console/retry` with `id=<n>` or `all=dead`: revives dead webhooks at once.
    pub async fn retry(&self, form: &[u8]) -> Result<u64, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(form).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_body",
                "send id=<webhook number> or all=dead, form-encoded",
            )
        })?;
        let field = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let target = match (field("id"), field("all")) {
            (Some(id), None) => RetryTarget::One(id.trim().parse().map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "malformed_body",
                    "id is a webhook number",
                )
            })?),
            (None, Some("dead")) => RetryTarget::AllDead,
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "malformed_body",
                    "send id=<webhook number> or all=dead",
                ));
            }
        };
        let n = self
            .parts
            .storage
            .retry_dead(target, self.parts.retry_for.as_millis() as i64)
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    e.to_string(),
                )
            })?;
        if n == 0 && matches!(target, RetryTarget::One(_)) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_dead",
                "no dead webhook has this number (delivered, pending or unknown)",
            ));
        }
        self.parts.outbox.wake.notify_one();
        tracing::info!(
            retried = n,
            ?target,
            "dead webhooks retried from the console"
        );
        Ok(n)
    }

    /// `GET /console/recording?callid=`: the call's recording, with ranges (seeking).
    pub async fn recording(&self, method: &Method, headers: &HeaderMap, query: &str) -> Response {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
        let raw = pairs
            .iter()
            .find(|(k, _)| k == "callid")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        let call = match CallId::parse(raw) {
            Ok(c) => c,
            Err(_) => {
                return crate::http::reply::error(
                    &ApiError::new(StatusCode::NOT_FOUND, "unknown_call", "no such call"),
                    crate::http::reply::Format::Json,
                );
            }
        };
        crate::http::recording::serve_found(&self.parts.recordings, method, headers, &call).await
    }
}

/// Keeps `link` up to date with one node's connection state until `shutdown`.
async fn follow(
    mut state: tokio::sync::watch::Receiver<ConnectionState>,
    link: Arc<Mutex<EslView>>,
    shutdown: CancellationToken,
) {
    loop {
        {
            let now = now_ms();
            let mut l = link.lock().expect("lock");
            match &*state.borrow_and_update() {
                ConnectionState::Connected => {
                    l.connected = true;
                    l.since = Some(now);
                }
                ConnectionState::Disconnected { reason } => {
                    // The state before the first attempt is no error.
                    let before_any =
                        !l.connected && l.last_error.is_none() && reason == "not connected yet";
                    if !before_any {
                        l.last_error = Some((now, reason.clone()));
                    }
                    l.connected = false;
                    l.since = None;
                }
                ConnectionState::Stopped => return,
            }
        }
        tokio::select! {
            changed = state.changed() => if changed.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
    }
}

/// The calls filter from the query, and the form's values.
fn filter(query: &str, now: i64) -> (CallFilter, FilterView) {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let kind = field("kind").and_then(|k| CallKind::named(&k));
    let state = field("state").and_then(|s| CallState::named(&s));
    let number = field("number")
        .map(|n| n.chars().filter(char::is_ascii_digit).collect::<String>())
        .filter(|n| !n.is_empty());
    let ramal = field("ramal").filter(|r| r.len() <= 32);
    let form = FilterView {
        kind: kind.map_or("", CallKind::as_str).into(),
        state: state.map_or("", CallState::as_str).into(),
        ramal: ramal.clone().unwrap_or_default(),
        number: number.clone().unwrap_or_default(),
    };
    (
        CallFilter {
            since: now - DAY_MS,
            kind,
            state,
            ramal,
            number,
            limit: ROWS,
        },
        form,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_keeps_only_what_it_understands() {
        let (f, form) = filter(
            "kind=dialer&state=bogus&ramal=1001&number=%2B55+41+9884",
            1_000 * DAY_MS,
        );
        assert_eq!(f.kind, Some(CallKind::Dialer));
        assert_eq!(f.state, None);
        assert_eq!(f.ramal.as_deref(), Some("1001"));
        assert_eq!(f.number.as_deref(), Some("55419884"));
        assert_eq!(f.since, 999 * DAY_MS);
        assert_eq!((form.kind.as_str(), form.state.as_str()), ("dialer", ""));
        let (f, _) = filter("", 0);
        assert_eq!(
            (f.kind, f.state, f.ramal, f.number),
            (None, None, None, None)
        );
    }
}
