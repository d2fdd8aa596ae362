//! The console's pages on the admin listener: the page itself (`/`), its live sections
//! (`/console/sections`), retrying dead webhooks (`POST /console/retry`), recordings
//! (`/console/recording`) and the sign-in page (`/login`). The admin listener has already
//! checked the method, the token and, for POSTs, that the request came from the console.

use std::time::Duration;

use bytes::Buf;
use futures_util::Stream;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use warp::reply::Response;

use super::Console;
use super::access::Access;
use super::page::{self, escape};
use crate::http::reply::{self, ApiError, Format};

/// Largest form body (a webhook number, a token).
const MAX_FORM: u64 = 4 * 1024;
const FORM_TIMEOUT: Duration = Duration::from_secs(10);

/// A console path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    Home,
    Sections,
    Retry,
    Recording,
    Login,
}

impl Page {
    pub fn parse(path: &str) -> Option<Page> {
        match path {
            "/" => Some(Page::Home),
            "/console/sections" => Some(Page::Sections),
            "/console/retry" => Some(Page::Retry),
            "/console/recording" => Some(Page::Recording),
            "/login" => Some(Page::Login),
            _ => None,
        }
    }

    pub fn allow(self) -> &'static str {
        match self {
            Page::Retry => "POST",
            Page::Login => "GET, POST",
            _ => "GET",
        }
    }
}

/// What a console request brings besides its body.
pub struct Request<'a> {
    pub method: &'a Method,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    /// `/readyz`'s verdict, for the pages that show it.
    pub not_ready: Option<String>,
}

pub async fn handle<S, B>(
    console: &Console,
    access: &Access,
    page: Page,
    req: Request<'_>,
    body: S,
) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    match page {
        Page::Home | Page::Sections => match console.view(req.query, req.not_ready).await {
            Ok(view) => html(
                StatusCode::OK,
                if page == Page::Home {
                    page::page(&view)
                } else {
                    page::sections(&view)
                },
            ),
            Err(e) => reply::error(
                &ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    e.to_string(),
                ),
                Format::Json,
            ),
        },
        Page::Recording => console.recording(req.method, req.headers, req.query).await,
        Page::Retry => {
            let form = match read_form(req.headers, body).await {
                Ok(f) => f,
                Err(e) => return reply::error(&e, Format::Json),
            };
            let result = console.retry(&form).await;
            if wants_json(req.headers) {
                match result {
                    Ok(n) => reply::json(StatusCode::OK, serde_json::json!({ "retried": n })),
                    Err(e) => reply::error(&e, Format::Json),
                }
            } else {
                // A form without the script: back to the page, which shows the outcome.
                see_other("/")
            }
        }
        Page::Login => login(access, req, body).await,
    }
}

/// A request without the token: browsers asking for a page go to the sign-in page, others get
/// the 401 with its code.
pub fn unauthorized(headers: &HeaderMap, e: ApiError) -> Response {
    let browser = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if browser {
        see_other("/login")
    } else {
        reply::error(&e, Format::Json)
    }
}

async fn login<S, B>(access: &Access, req: Request<'_>, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    if !access.required() {
        return see_other("/");
    }
    if req.method == Method::GET {
        return html(StatusCode::OK, login_page(None));
    }
    let form = match read_form(req.headers, body).await {
        Ok(f) => f,
        Err(e) => return reply::error(&e, Format::Json),
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&form).unwrap_or_default();
    let token = pairs
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    if !access.accepts(token) {
        tracing::warn!("console sign-in with a wrong admin.token");
        return html(
            StatusCode::UNAUTHORIZED,
            login_page(Some("That is not admin.token.")),
        );
    }
    let mut r = see_other("/");
    if let Ok(v) = HeaderValue::from_str(&access.cookie_for(token)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

fn login_page(error: Option<&str>) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign in: finaz-freeswitch</title><link rel=\"icon\" href=\"data:,\"></head>\
         <body style=\"font-family: system-ui, sans-serif; max-width: 24rem; margin: 4rem auto\">\
         <h1 style=\"font-size: 1.2rem\">finaz-freeswitch console</h1>{}\
         <form method=\"post\" action=\"/login\"><label>admin.token<br>\
         <input type=\"password\" name=\"token\" autocomplete=\"current-password\" required autofocus></label> \
         <button>Sign in</button></form></body></html>\n",
        error.map_or(String::new(), |e| format!(
            "<p style=\"color: #b42318\">{}</p>",
            escape(e)
        ))
    )
}

async fn read_form<S, B>(headers: &HeaderMap, body: S) -> Result<bytes::Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    crate::http::read_body(headers, body, MAX_FORM, FORM_TIMEOUT).await
}

fn wants_json(headers: &HeaderMap) -> bool {
    reply::answer_format(headers, false) == Format::Json
}

fn html(status: StatusCode, body: String) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Only our own inline script and style, nothing from elsewhere, never framed.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; media-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn see_other(location: &'static str) -> Response {
    let mut r = Response::new(Default::default());
    *r.status_mut() = StatusCode::SEE_OTHER;
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(location));
    r
}
