//! The operator's HTTP listener: `/healthz`, `/readyz` and `/metrics`.

use std::convert::Infallible;
use std::time::Duration;

use warp::Filter;
use warp::http::StatusCode;

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;

use crate::esl::{Client, ConnectionState};
use crate::metrics::{self, Registry};
use crate::outbox::Outbox;
use crate::sandbox::{DialerCall, Simulator};
use crate::storage::Storage;

/// What the admin endpoints look at.
#[derive(Clone)]
pub struct AdminState {
    pub esl: Client,
    pub storage: Storage,
    pub outbox: Outbox,
    /// Sandbox mode: the simulator and our outbound socket server it connects to.
    pub sandbox: Option<(Arc<Simulator>, std::net::SocketAddr)>,
    /// Every metric of the service ([`metrics::Registry`]), `ready` among them.
    pub registry: Arc<Registry>,
    /// `finaz_ready`, set at each scrape.
    pub ready: Gauge,
}

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

/// Why the service is not ready, or `None` when it is.
pub async fn not_ready_reason(state: &AdminState) -> Option<String> {
    match state.esl.state() {
        ConnectionState::Connected => {}
        ConnectionState::Disconnected { reason } => {
            return Some(format!("event socket not connected: {reason}"));
        }
        ConnectionState::Stopped => return Some("event socket client stopped".into()),
    }
    match tokio::time::timeout(Duration::from_secs(2), state.storage.check_writable()).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("storage cannot write: {e}")),
        Err(_) => Some(
            "storage did not complete a write within 2s (disk full, or a lock held too long?)"
                .into(),
        ),
    }
}

/// The admin routes as one boxed filter, for [`crate::http::server::serve`].
pub fn boxed(state: AdminState) -> warp::filters::BoxedFilter<(warp::reply::Response,)> {
    routes(state).map(warp::Reply::into_response).boxed()
}

pub fn routes(
    state: AdminState,
) -> impl Filter<Extract = (impl warp::Reply,), Error = Infallible> + Clone {
    let state_sandbox = state.sandbox.clone();
    let sandboxed = state_sandbox.is_some();
    let with_state = warp::any().map(move || state.clone());
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::json(&serde_json::json!({ "status": "alive" })));
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_state.clone())
        .then(|s: AdminState| async move {
            match not_ready_reason(&s).await {
                None => warp::reply::with_status(
                    warp::reply::json(&serde_json::json!({ "status": "ready" })),
                    StatusCode::OK,
                ),
                Some(reason) => warp::reply::with_status(
                    warp::reply::json(
                        &serde_json::json!({ "status": "not_ready", "reason": reason }),
                    ),
                    StatusCode::SERVICE_UNAVAILABLE,
                ),
            }
        });
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_state)
        .then(|s: AdminState| async move {
            let ready = not_ready_reason(&s).await.is_none();
            s.ready.set(i64::from(ready));
            s.outbox.refresh_gauges().await;
            let out = metrics::encode(&s.registry);
            warp::reply::with_header(out, "content-type", metrics::CONTENT_TYPE)
        });
    let sandbox_dialer = warp::path!("sandbox" / "dialer")
        .and(warp::post())
        .and(with_state_sandbox(state_sandbox))
        .and(warp::body::content_length_limit(16 * 1024))
        .and(warp::body::json())
        .then(
            |sandbox: Option<(Arc<Simulator>, std::net::SocketAddr)>, call: DialerCall| async move {
                let Some((sim, dialer)) = sandbox else {
                    return warp::reply::with_status(
                        warp::reply::json(&serde_json::json!({
                            "error": "not_sandbox",
                            "message": "only `finaz-freeswitch sandbox` plays dialer calls"
                        })),
                        StatusCode::NOT_FOUND,
                    );
                };
                match sim.dialer_call(dialer, call).await {
                    Ok(played) => warp::reply::with_status(
                        warp::reply::json(&serde_json::json!({
                            "sandbox": true,
                            "cid": played.call_id,
                            "message": "sandbox dialer call answered; the webhook is on its way to finaz.answered_url"
                        })),
                        StatusCode::OK,
                    ),
                    Err(e) => warp::reply::with_status(
                        warp::reply::json(&serde_json::json!({
                            "sandbox": true, "error": "dialer_failed", "message": e.to_string()
                        })),
                        StatusCode::BAD_GATEWAY,
                    ),
                }
            },
        );
    healthz
        .map(warp::Reply::into_response)
        .or(readyz.map(warp::Reply::into_response))
        .unify()
        .or(metrics.map(warp::Reply::into_response))
        .unify()
        .or(sandbox_dialer.map(warp::Reply::into_response))
        .unify()
        .recover(|r: warp::Rejection| async move { Ok::<_, Infallible>(rejection(&r)) })
        .unify()
        .map(move |mut r: warp::reply::Response| {
            if sandboxed {
                r.headers_mut().insert(
                    "x-finaz-sandbox",
                    warp::http::HeaderValue::from_static("true"),
                );
            }
            r
        })
}

/// The one answer for every refusal of the admin listener: its status and a code.
fn rejection(r: &warp::Rejection) -> warp::reply::Response {
    use warp::Reply;
    let (status, code, message) = if r.is_not_found() {
        (
            StatusCode::NOT_FOUND,
            "not_found",
            "no such endpoint".to_string(),
        )
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "wrong method for this endpoint (GET /healthz /readyz /metrics, POST /sandbox/dialer)"
                .to_string(),
        )
    } else if let Some(e) = r.find::<warp::filters::body::BodyDeserializeError>() {
        (StatusCode::BAD_REQUEST, "malformed_body", e.to_string())
    } else if r.find::<warp::reject::PayloadTooLarge>().is_some() {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "the body is larger than 16 KiB".to_string(),
        )
    } else if r.find::<warp::reject::UnsupportedMediaType>().is_some() {
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send JSON (Content-Type: application/json)".to_string(),
        )
    } else {
        (StatusCode::BAD_REQUEST, "bad_request", format!("{r:?}"))
    };
    warp::reply::with_status(
        warp::reply::json(&serde_json::json!({ "error": code, "message": message })),
        status,
    )
    .into_response()
}

fn with_state_sandbox(
    s: Option<(Arc<Simulator>, std::net::SocketAddr)>,
) -> impl Filter<Extract = (Option<(Arc<Simulator>, std::net::SocketAddr)>,), Error = Infallible> + Clone
{
    warp::any().map(move || s.clone())
}
