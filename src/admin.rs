//! The operator's HTTP listener: the console (`/`, `crate::console`), `/healthz`, `/readyz`,
//! `/metrics` and the sandbox's `/sandbox/dialer`, routed by an [`Endpoint`] enum, each
//! behind `admin.token` but the probes; refusals through the API's reply code.

use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use futures_util::Stream;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use warp::reply::Response;

use prometheus_client::metrics::gauge::Gauge;

use crate::console::{self, Console, access::Access};
use crate::esl::{Client, ConnectionState};
use crate::http::reply::{self, ApiError, Format};
use crate::metrics::{self, Registry};
use crate::nodes::Nodes;
use crate::outbox::Outbox;
use crate::sandbox::{DialerCall, Simulator};
use crate::storage::Storage;

/// What the admin endpoints look at.
#[derive(Clone)]
pub struct AdminState {
    pub nodes: Nodes,
    pub storage: Storage,
    pub outbox: Outbox,
    /// Sandbox mode: the simulator and our outbound socket server it connects to.
    pub sandbox: Option<(Arc<Simulator>, std::net::SocketAddr)>,
    /// Every metric of the service ([`metrics::Registry`]), `ready` among them.
    pub registry: Arc<Registry>,
    /// `finaz_ready`, set at each scrape.
    pub ready: Gauge,
    /// The operator console (`GET /`).
    pub console: Arc<Console>,
    /// Who may use everything but the probes.
    pub access: Access,
    /// The console's last storage check, and when ([`not_ready_for_console`]).
    pub storage_verdict: Arc<std::sync::Mutex<Option<StorageVerdict>>>,
}

/// When the storage was last checked for the console, and what it said (`None`: writable).
pub type StorageVerdict = (std::time::Instant, Option<String>);

impl AdminState {
    /// Registers the gauges only a scrape can compute (readiness) beside `registry`'s.
    pub fn ready_gauge(registry: &mut Registry) -> Gauge {
        let ready = Gauge::default();
        registry.register(
            "finaz_ready",
            "1 while /readyz would answer 200 (event socket authenticated, storage takes writes)",
            ready.clone(),
        );
        ready
    }
}

/// Why the service is not ready, or `None` when it is. Asks the storage for a write each
/// time (`/readyz`, `/metrics`).
pub async fn not_ready_reason(state: &AdminState) -> Option<String> {
    if let Some(reason) = socket_not_ready(state) {
        return Some(reason);
    }
    storage_not_ready(state).await
}

/// The same verdict for the console, which asks every second per open page: the socket's
/// state is read each time, the storage's write is reused for [`STORAGE_VERDICT_FOR`].
async fn not_ready_for_console(state: &AdminState) -> Option<String> {
    if let Some(reason) = socket_not_ready(state) {
        return Some(reason);
    }
    if let Some((at, verdict)) = state.storage_verdict.lock().expect("lock").clone()
        && at.elapsed() < STORAGE_VERDICT_FOR
    {
        return verdict;
    }
    let verdict = storage_not_ready(state).await;
    *state.storage_verdict.lock().expect("lock") =
        Some((std::time::Instant::now(), verdict.clone()));
    verdict
}

/// How long the console reuses a storage check.
const STORAGE_VERDICT_FOR: Duration = Duration::from_secs(5);

/// Why the event sockets are not ready: every node down (with one node, its reason as
/// before). A node down while another is up leaves the service ready (only that node's
/// extensions are refused); `/readyz` lists each node either way.
fn socket_not_ready(state: &AdminState) -> Option<String> {
    let down: Vec<String> = state
        .nodes
        .all()
        .iter()
        .filter_map(|n| node_not_ready(&n.esl).map(|why| (n, why)))
        .map(|(n, why)| {
            if state.nodes.is_single() {
                why
            } else {
                format!("node {}: {why}", n.name)
            }
        })
        .collect();
    (down.len() == state.nodes.all().len()).then(|| down.join("; "))
}

/// Each node's connection, for `/readyz`: `{"name", "address", "connected", "reason"?}`.
fn node_states(state: &AdminState) -> Vec<serde_json::Value> {
    state
        .nodes
        .all()
        .iter()
        .map(|n| match node_not_ready(&n.esl) {
            None => {
                serde_json::json!({ "name": &*n.name, "address": n.address, "connected": true })
            }
            Some(why) => serde_json::json!({
                "name": &*n.name, "address": n.address, "connected": false, "reason": why
            }),
        })
        .collect()
}

fn node_not_ready(esl: &Client) -> Option<String> {
    match esl.state() {
        ConnectionState::Connected => None,
        ConnectionState::Disconnected { reason } => {
            Some(format!("event socket not connected: {reason}"))
        }
        ConnectionState::Stopped => Some("event socket client stopped".into()),
    }
}

async fn storage_not_ready(state: &AdminState) -> Option<String> {
    match tokio::time::timeout(Duration::from_secs(2), state.storage.check_writable()).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("storage cannot write: {e}")),
        Err(_) => Some(
            "storage did not complete a write within 2s (disk full, or a lock held too long?)"
                .into(),
        ),
    }
}

/// The admin listener's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Healthz,
    Readyz,
    Metrics,
    SandboxDialer,
    Console(console::routes::Page),
}

impl Endpoint {
    fn parse(path: &str) -> Option<Self> {
        match path {
            "/healthz" => Some(Endpoint::Healthz),
            "/readyz" => Some(Endpoint::Readyz),
            "/metrics" => Some(Endpoint::Metrics),
            "/sandbox/dialer" => Some(Endpoint::SandboxDialer),
            other => console::routes::Page::parse(other).map(Endpoint::Console),
        }
    }

    /// The methods each endpoint takes, as `Allow` says them.
    fn allow(self) -> &'static str {
        match self {
            Endpoint::SandboxDialer => "POST",
            Endpoint::Console(p) => p.allow(),
            _ => "GET",
        }
    }

    /// Probes answer everyone; the rest wants `admin.token` when one is set.
    fn open(self) -> bool {
        matches!(self, Endpoint::Healthz | Endpoint::Readyz)
            || self == Endpoint::Console(console::routes::Page::Login)
    }
}

/// Largest `/sandbox/dialer` body, and how long it may take to arrive.
const MAX_BODY: u64 = 16 * 1024;
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The admin listener as one filter, for [`crate::http::server::serve`]: warp hands every
/// request to [`dispatch`], the same shape as the Finaz-facing listener.
pub fn boxed(state: AdminState) -> BoxedFilter<(Response,)> {
    let state = Arc::new(state);
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::method()
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(
            move |method, path: warp::path::FullPath, query: String, headers, body| {
                let state = state.clone();
                async move {
                    let mut r =
                        dispatch(&state, method, path.as_str(), &query, &headers, body).await;
                    if state.sandbox.is_some() {
                        r.headers_mut()
                            .insert("x-finaz-sandbox", HeaderValue::from_static("true"));
                    }
                    r
                }
            },
        )
        .boxed()
}

async fn dispatch<S, B>(
    state: &AdminState,
    method: Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: S,
) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let Some(endpoint) = Endpoint::parse(path) else {
        return refuse(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint (GET / /healthz /readyz /metrics, POST /sandbox/dialer)",
        ));
    };
    let allow = endpoint.allow();
    if !allow.split(", ").any(|m| m == method.as_str()) {
        return refuse(
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed here; use {allow}"),
            )
            .allow(allow),
        );
    }
    if !endpoint.open()
        && let Err(e) = state.access.check(headers)
    {
        return console::routes::unauthorized(headers, e);
    }
    if method == Method::POST
        && let Err(e) = console::access::same_origin(headers)
    {
        return refuse(e);
    }
    match endpoint {
        Endpoint::Healthz => reply::json(StatusCode::OK, serde_json::json!({ "status": "alive" })),
        Endpoint::Readyz => {
            let (status, mut body) = match not_ready_reason(state).await {
                None => (StatusCode::OK, serde_json::json!({ "status": "ready" })),
                Some(reason) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({ "status": "not_ready", "reason": reason }),
                ),
            };
            // With one node the answer is what it always was.
            if !state.nodes.is_single() {
                body["nodes"] = node_states(state).into();
            }
            reply::json(status, body)
        }
        Endpoint::Metrics => {
            let ready = not_ready_reason(state).await.is_none();
            state.ready.set(i64::from(ready));
            state.outbox.refresh_gauges().await;
            let mut r = Response::new(metrics::encode(&state.registry).into());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            r
        }
        Endpoint::SandboxDialer => sandbox_dialer(state, headers, body).await,
        Endpoint::Console(page) => {
            let not_ready = match page {
                console::routes::Page::Home | console::routes::Page::Sections => {
                    not_ready_for_console(state).await
                }
                _ => None,
            };
            let request = console::routes::Request {
                method: &method,
                query,
                headers,
                not_ready,
            };
            console::routes::handle(&state.console, &state.access, page, request, body).await
        }
    }
}

/// `POST /sandbox/dialer`: plays a dialer call through the simulator.
async fn sandbox_dialer<S, B>(state: &AdminState, headers: &HeaderMap, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let not_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| !c.contains("json"));
    if not_json {
        return refuse(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send JSON (Content-Type: application/json)",
        ));
    }
    let body = match crate::http::read_body(headers, body, MAX_BODY, BODY_TIMEOUT).await {
        Ok(b) => b,
        Err(e) => return refuse(e),
    };
    let call: DialerCall = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return refuse(ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_body",
                format!("not a dialer call: {e}"),
            ));
        }
    };
    let Some((sim, dialer)) = &state.sandbox else {
        return refuse(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_sandbox",
            "only `finaz-freeswitch sandbox` plays dialer calls",
        ));
    };
    match sim.dialer_call(*dialer, call).await {
        Ok(played) => reply::json(
            StatusCode::OK,
            serde_json::json!({
                "sandbox": true,
                "cid": played.call_id,
                "message": "sandbox dialer call answered; the webhook is on its way to finaz.answered_url"
            }),
        ),
        Err(e) => reply::json(
            StatusCode::BAD_GATEWAY,
            serde_json::json!({
                "sandbox": true, "error": "dialer_failed", "message": e.to_string()
            }),
        ),
    }
}

/// Every refusal of the admin listener: its status and a code, as JSON.
fn refuse(e: ApiError) -> Response {
    reply::error(&e, Format::Json)
}
