//! The Finaz-facing HTTP listener: edge checks (allow-list, body limit), then the endpoint.
//!
//! warp only serves here: one catch-all filter hands method, path, peer, headers, query and
//! body to [`dispatch`], which routes by [`Endpoint`], so every answer (including 404, 405 and
//! 413) carries our error codes. The admin listener (`src/admin.rs`) has the same shape; both
//! answer refusals through [`reply`].

pub mod click2call;
pub mod edge;
pub mod limit;
pub mod range;
pub mod recording;
pub mod reply;
pub mod server;
pub mod stats;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, Method, StatusCode, header};
use warp::reply::Response;

use crate::click2call::Click2Call;
use crate::domain::values::mask_phone;
use crate::log_limit::LogLimit;
use crate::recordings::Recordings;
use edge::{Edge, Forwarding, Refusal};
use reply::{ApiError, Format};
use server::PeerAddr;
use stats::HttpStats;

/// What a request is for: the endpoint its path names (`http.click2call_path`,
/// `http.recording_path`), or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    Click2Call,
    Recording,
    Other,
}

impl Endpoint {
    /// Its name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Click2Call => "click2call",
            Endpoint::Recording => "recording",
            Endpoint::Other => "other",
        }
    }
}

/// What the handlers need, shared by every request.
pub struct Ctx {
    pub edge: Edge,
    pub click2call_path: String,
    pub recording_path: String,
    pub max_body_bytes: u64,
    pub click2call: Click2Call,
    pub recordings: Recordings,
    pub stats: Arc<HttpStats>,
    pub mask_phone_numbers: bool,
    pub rate_limit: Option<limit::RateLimit>,
    /// Time to receive a request's body.
    pub request_timeout: std::time::Duration,
    /// Sandbox mode: every answer says so.
    pub sandbox: bool,
    /// Refusals an outsider can repeat are logged once a minute per kind and message.
    refusal_log: LogLimit<(&'static str, String)>,
    /// The untrusted-proxy warning, once a minute.
    proxy_warning: LogLimit<()>,
}

impl Ctx {
    pub fn new(
        config: &crate::config::Config,
        click2call: Click2Call,
        recordings: Recordings,
        stats: Arc<HttpStats>,
        sandbox: bool,
    ) -> Self {
        let http = &config.http;
        Ctx {
            edge: Edge {
                allowed: http.allowed_ips.clone(),
                trusted_proxies: http.trusted_proxies.clone(),
                chave: http.chave.clone(),
            },
            click2call_path: http.click2call_path.clone(),
            recording_path: http.recording_path.clone(),
            max_body_bytes: http.max_body_bytes,
            click2call,
            recordings,
            stats,
            mask_phone_numbers: config.log.mask_phone_numbers,
            rate_limit: limit::RateLimit::new(http.rate_limit_per_minute, http.rate_limit_burst),
            request_timeout: http.request_timeout,
            sandbox,
            refusal_log: LogLimit::per_minute(),
            proxy_warning: LogLimit::per_minute(),
        }
    }

    /// Counts and logs a refusal, and renders it.
    fn refuse(&self, endpoint: Endpoint, e: &ApiError, format: Format) -> Response {
        self.stats.count(endpoint, e.code);
        let endpoint = endpoint.as_str();
        if e.status.is_server_error() {
            tracing::warn!(endpoint, status = e.status.as_u16(), code = e.code, message = %e.message, "request failed");
        } else {
            let message = self.mask(&e.message);
            if let Some(held_back) = self
                .refusal_log
                .check((e.code, message.clone()), std::time::Instant::now())
            {
                tracing::info!(endpoint, status = e.status.as_u16(), code = e.code, %message, refused_since_last_line = held_back, "request refused");
            }
        }
        reply::error(e, format)
    }

    /// Messages can quote a bad `telefone`; mask digit runs as logs do.
    fn mask(&self, message: &str) -> String {
        if !self.mask_phone_numbers {
            return message.to_string();
        }
        let mut out = String::new();
        let mut digits = String::new();
        for c in message.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            if digits.len() >= 8 {
                out.push_str(&mask_phone(&digits, true));
            } else {
                out.push_str(&digits);
            }
            digits.clear();
            out.push(c);
        }
        out.pop();
        out
    }
}

/// The 401/403 for an edge refusal.
pub fn refusal(r: Refusal) -> ApiError {
    match r {
        Refusal::IpNotAllowed(ip) => ApiError::new(
            StatusCode::FORBIDDEN,
            "ip_not_allowed",
            format!("{ip} is not in http.allowed_ips"),
        ),
        Refusal::ForwardedForInvalid(why) => ApiError::new(
            StatusCode::FORBIDDEN,
            "forwarded_for_invalid",
            format!("{why}: the client's address cannot be known"),
        ),
        Refusal::UntrustedProxy(ip) => ApiError::new(
            StatusCode::FORBIDDEN,
            "untrusted_proxy",
            format!(
                "{ip} forwards requests but is not in http.trusted_proxies; its forwarding headers are not believed"
            ),
        ),
        Refusal::MissingChave => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_chave",
            "this endpoint requires the chave field",
        ),
        Refusal::WrongChave => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_chave",
            "chave is not valid",
        ),
    }
}

/// Every route of the listener, as one filter (see [`server::serve`]).
pub fn routes(ctx: Arc<Ctx>) -> BoxedFilter<(Response,)> {
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    // Our server attaches the peer; under `warp::serve` (tests, tools) warp knows it.
    let peer = warp::ext::optional::<PeerAddr>()
        .and(warp::addr::remote())
        .map(|p: Option<PeerAddr>, remote: Option<std::net::SocketAddr>| p.map(|p| p.0).or(remote));
    warp::method()
        .and(warp::path::full())
        .and(peer)
        .and(warp::header::headers_cloned())
        .and(query)
        .and(warp::body::stream())
        .then(
            move |method, path: warp::path::FullPath, peer, headers, query, body| {
                let ctx = ctx.clone();
                async move {
                    let mut r =
                        dispatch(&ctx, method, path.as_str(), peer, headers, query, body).await;
                    if ctx.sandbox {
                        r.headers_mut().insert(
                            "x-finaz-sandbox",
                            warp::http::HeaderValue::from_static("true"),
                        );
                    }
                    r
                }
            },
        )
        .recover(|_| async {
            Ok::<_, Infallible>(reply::error(
                &ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "unreadable request"),
                Format::Json,
            ))
        })
        .unify()
        .boxed()
}

async fn dispatch<S, B>(
    ctx: &Ctx,
    method: Method,
    path: &str,
    peer: Option<SocketAddr>,
    headers: HeaderMap,
    query: String,
    body: S,
) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    // Before the body is read, a JSON Content-Type already asks for JSON answers.
    let json_request = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("json"));
    let format = reply::answer_format(&headers, json_request);
    let endpoint = if path == ctx.click2call_path {
        Endpoint::Click2Call
    } else if path == ctx.recording_path {
        Endpoint::Recording
    } else {
        Endpoint::Other
    };
    // The allow-list comes first: nobody else learns anything, not even which paths exist.
    let fwd = Forwarding {
        x_forwarded_for: raw_values(&headers, "x-forwarded-for"),
        forwarded: raw_values(&headers, "forwarded"),
        x_real_ip: headers.contains_key("x-real-ip"),
    };
    let Some(peer) = peer else {
        let e = ApiError::new(
            StatusCode::FORBIDDEN,
            "ip_not_allowed",
            "unknown peer address",
        );
        return ctx.refuse(endpoint, &e, format);
    };
    let client = match ctx.edge.client(peer.ip(), &fwd) {
        Ok(c) => c,
        Err(r) => {
            if let Refusal::UntrustedProxy(ip) = &r
                && let Some(held_back) = ctx.proxy_warning.check((), std::time::Instant::now())
            {
                tracing::warn!(
                    peer = %ip,
                    refused_since_last_line = held_back,
                    "a proxy on this host forwards requests but is not in http.trusted_proxies: add its address there (requests refused with 403 untrusted_proxy)"
                );
            }
            return ctx.refuse(endpoint, &refusal(r), format);
        }
    };
    if let Err(r) = ctx.edge.check_ip(client) {
        return ctx.refuse(endpoint, &refusal(r), format);
    }
    if let Some(limit) = &ctx.rate_limit
        && let Err(wait) = limit.check(client, std::time::Instant::now())
    {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u32;
        let e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests from {client}; retry in {secs} s"),
        )
        .retry_after(secs);
        return ctx.refuse(endpoint, &e, format);
    }
    match endpoint {
        Endpoint::Recording => return recording::handle(ctx, &method, &headers, &query).await,
        Endpoint::Click2Call => {}
        Endpoint::Other => {
            let e = ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no endpoint at {path}"),
            );
            return ctx.refuse(endpoint, &e, format);
        }
    }
    if method != Method::POST {
        let e = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed here; use POST"),
        );
        return ctx.refuse(endpoint, &e, format);
    }
    let body = match read_body(&headers, body, ctx.max_body_bytes, ctx.request_timeout).await {
        Ok(b) => b,
        Err(e) => return ctx.refuse(endpoint, &e, format),
    };
    click2call::handle(ctx, &headers, &query, &body).await
}

/// Every value of header `name`, as bytes (not all proxies pass text).
fn raw_values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a [u8]> {
    headers.get_all(name).iter().map(|v| v.as_bytes()).collect()
}

/// Reads the body within `within` (else 408 `request_timeout`), refusing it as soon as it
/// passes `limit` bytes, announced or streamed (413 `body_too_large`). Every listener reads
/// bodies through this.
pub(crate) async fn read_body<S, B>(
    headers: &HeaderMap,
    body: S,
    limit: u64,
    within: std::time::Duration,
) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    match tokio::time::timeout(within, read_body_unbounded(headers, body, limit)).await {
        Ok(r) => r,
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request body did not arrive in time",
        )),
    }
}

async fn read_body_unbounded<S, B>(
    headers: &HeaderMap,
    mut body: S,
    limit: u64,
) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than {limit} bytes"),
        )
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_body",
                format!("reading the body: {e}"),
            )
        })?;
        if buf.len() as u64 + chunk.remaining() as u64 > limit {
            return Err(too_large());
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            buf.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    Ok(buf.freeze())
}
