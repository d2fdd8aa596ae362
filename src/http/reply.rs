//! Answers of the Finaz-facing API: a call id or an error with a machine-readable code, as
//! JSON or as plain text, whichever the request asked for.

use serde::Serialize;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

/// Every error the API can answer, with its status and stable code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The request field at fault (422).
    pub field: Option<&'static str>,
    /// FreeSWITCH's hangup cause, when it gave one.
    pub cause: Option<String>,
    /// Seconds, for 503 and 409.
    pub retry_after: Option<u32>,
    /// Methods the endpoint takes, for 405.
    pub allow: &'static str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            cause: None,
            retry_after: None,
            allow: "POST",
        }
    }

    pub fn allow(mut self, methods: &'static str) -> Self {
        self.allow = methods;
        self
    }

    pub fn field(mut self, field: &'static str) -> Self {
        self.field = Some(field);
        self
    }

    pub fn cause(mut self, cause: impl Into<String>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<&'a str>,
}

/// How the answer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
}

/// JSON when the body was JSON or `Accept` names JSON; else plain text.
pub fn answer_format(headers: &warp::http::HeaderMap, json_body: bool) -> Format {
    let accepts_json = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/json") || v.contains("+json"));
    if json_body || accepts_json {
        Format::Json
    } else {
        Format::Text
    }
}

fn response(status: StatusCode, format: Format, body: String) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    let ctype = match format {
        Format::Json => "application/json",
        Format::Text => "text/plain; charset=utf-8",
    };
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A JSON answer (the admin listener's and the console's).
pub fn json(status: StatusCode, body: serde_json::Value) -> Response {
    response(status, Format::Json, body.to_string())
}

/// `{"callid":"<id>"}` or the bare id.
pub fn call_id(id: &str, format: Format) -> Response {
    let body = match format {
        Format::Json => serde_json::json!({ "callid": id }).to_string(),
        Format::Text => id.to_string(),
    };
    response(StatusCode::OK, format, body)
}

/// `{"error": code, "message": ...}` or the bare code.
pub fn error(e: &ApiError, format: Format) -> Response {
    let body = match format {
        Format::Json => serde_json::to_string(&ErrorBody {
            error: e.code,
            message: &e.message,
            field: e.field,
            cause: e.cause.as_deref(),
        })
        .unwrap_or_default(),
        Format::Text => e.code.to_string(),
    };
    let mut r = response(e.status, format, body);
    if let Some(s) = e.retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    if e.status == StatusCode::METHOD_NOT_ALLOWED {
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(e.allow));
    }
    r
}
