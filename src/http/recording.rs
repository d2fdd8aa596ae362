//! `GET {recording_path}?callid=&telefone=&chave=`: the call's WAV, streamed from disk in
//! constant memory, with ranges, validators and a download name.

use std::io::SeekFrom;

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;
use warp::Reply;
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use warp::reply::Response;

use super::range::{self, Wanted};
use super::reply::ApiError;
use super::{Ctx, Endpoint};
use crate::domain::values::{CallId, InvalidField, Telefone};
use crate::recordings::{RecordingError, RecordingFile};

/// Read size when streaming a file.
const CHUNK: usize = 64 * 1024;

/// A callid or telefone that cannot name a call: the same 404 as an unknown call (the
/// contract's answer), with the reason in the message.
fn no_such_call(e: InvalidField) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "call_not_found",
        format!("unknown call ({e})"),
    )
}

fn error_for(e: &RecordingError) -> ApiError {
    let msg = e.to_string();
    match e {
        RecordingError::UnknownCall => ApiError::new(StatusCode::NOT_FOUND, "call_not_found", msg),
        RecordingError::NoRecording => {
            ApiError::new(StatusCode::NOT_FOUND, "recording_not_found", msg)
        }
        RecordingError::Discarded(cause) => {
            let e = ApiError::new(StatusCode::NOT_FOUND, "recording_discarded", msg);
            if cause.is_empty() {
                e
            } else {
                e.cause(cause.clone())
            }
        }
        RecordingError::InProgress => {
            ApiError::new(StatusCode::CONFLICT, "recording_in_progress", msg).retry_after(10)
        }
        RecordingError::OutsideDir(_) => ApiError::new(
            StatusCode::NOT_FOUND,
            "recording_unavailable",
            "the recording cannot be served (see the adapter's log)",
        ),
        RecordingError::NotWav(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "recording_invalid", msg)
        }
        RecordingError::Io(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "recording_unreadable",
            msg,
        ),
        RecordingError::Storage(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", msg)
                .retry_after(5)
        }
    }
}

/// Handles a download whose source address already passed the allow-list.
pub async fn handle(ctx: &Ctx, method: &Method, headers: &HeaderMap, query: &str) -> Response {
    let format = super::reply::answer_format(headers, false);
    let refuse = |e: ApiError| ctx.refuse(Endpoint::Recording, &e.allow("GET, HEAD"), format);
    if method != Method::GET && method != Method::HEAD {
        return refuse(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed here; use GET"),
        ));
    }
    let pairs: Vec<(String, String)> = match serde_urlencoded::from_str(query) {
        Ok(p) => p,
        Err(_) => {
            return refuse(ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_query",
                "the query string is not URL-encoded",
            ));
        }
    };
    let field = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if let Err(r) = ctx.edge.check_chave(field("chave")) {
        return refuse(super::refusal(r));
    }
    let Some(raw_id) = field("callid") else {
        return refuse(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_query",
            "callid is required",
        ));
    };
    let call = match CallId::parse(raw_id) {
        Ok(c) => c,
        Err(e) => return refuse(no_such_call(e)),
    };
    let telefone = match field("telefone").filter(|t| !t.trim().is_empty()) {
        None => None,
        Some(t) => match Telefone::parse(t) {
            Ok(t) => Some(t),
            Err(e) => return refuse(no_such_call(e)),
        },
    };
    let found = match ctx.recordings.find(&call, telefone.as_ref()).await {
        Ok(f) => f,
        Err(e) => {
            if matches!(
                e,
                RecordingError::NotWav(_) | RecordingError::Io(_) | RecordingError::OutsideDir(_)
            ) {
                tracing::error!(call_id = %call.as_str(), error = %e, "recording cannot be served");
            }
            return refuse(error_for(&e));
        }
    };
    match respond(method, headers, &call, found).await {
        Ok((outcome, response)) => {
            ctx.stats.count(Endpoint::Recording, outcome);
            response
        }
        Err(e) => refuse(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "recording_unreadable",
            format!("reading the recording: {e}"),
        )),
    }
}

/// Serves the recording of `call` to the operator console, which knows the call id only
/// (the admin listener checked who asks): same search, same checks, same ranges.
pub async fn serve_found(
    recordings: &crate::recordings::Recordings,
    method: &Method,
    headers: &HeaderMap,
    call: &CallId,
) -> Response {
    let refuse = |e: ApiError| super::reply::error(&e, super::reply::Format::Json);
    match recordings.find(call, None).await {
        Ok(found) => match respond(method, headers, call, found).await {
            Ok((_, response)) => response,
            Err(e) => refuse(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "recording_unreadable",
                format!("reading the recording: {e}"),
            )),
        },
        Err(e) => refuse(error_for(&e)),
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Builds the 200 / 206 / 304 / 416 for `f`; the label is the metric's outcome.
async fn respond(
    method: &Method,
    headers: &HeaderMap,
    call: &CallId,
    mut f: RecordingFile,
) -> std::io::Result<(&'static str, Response)> {
    let (len, nanos, inode) = f.version;
    let etag = format!("\"{len:x}-{nanos:x}-{inode:x}\"");
    let last_modified = range::last_modified(f.modified);
    let mut common = HeaderMap::new();
    let mut set = |name: header::HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            common.insert(name, v);
        }
    };
    set(header::ETAG, &etag);
    set(header::LAST_MODIFIED, &last_modified);
    set(header::ACCEPT_RANGES, "bytes");
    set(header::CACHE_CONTROL, "private, no-cache");
    set(
        header::CONTENT_DISPOSITION,
        &format!("attachment; filename=\"{}.wav\"", call.as_str()),
    );
    let finish = |status: StatusCode, mut r: Response| {
        *r.status_mut() = status;
        r.headers_mut().extend(common.clone());
        r
    };
    if range::not_modified(headers, &etag, f.modified) {
        return Ok((
            "not_modified",
            finish(StatusCode::NOT_MODIFIED, Response::new(Default::default())),
        ));
    }
    let wanted = if range::if_range_allows(header_str(headers, header::IF_RANGE), &etag, f.modified)
    {
        range::parse_range(header_str(headers, header::RANGE), f.len)
    } else {
        Wanted::All
    };
    let (status, start, end, outcome) = match wanted {
        Wanted::All => (StatusCode::OK, 0, f.len.saturating_sub(1), "ok"),
        Wanted::Part { start, end } => (StatusCode::PARTIAL_CONTENT, start, end, "partial"),
        Wanted::Unsatisfiable => {
            let mut r = finish(
                StatusCode::RANGE_NOT_SATISFIABLE,
                Response::new(Default::default()),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{}", f.len)) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(("range_not_satisfiable", r));
        }
    };
    let count = if f.len == 0 { 0 } else { end - start + 1 };
    let body = if method == Method::HEAD || count == 0 {
        Response::new(Default::default())
    } else {
        // The corrected header (if the file's is stale) covers [0, data_offset).
        let prefix = f
            .layout
            .patched_header
            .as_ref()
            .filter(|_| start < f.layout.data_offset)
            .map(|h| {
                let stop = (end + 1).min(f.layout.data_offset) as usize;
                Bytes::copy_from_slice(&h[start as usize..stop])
            });
        let from = start + prefix.as_ref().map_or(0, |p| p.len() as u64);
        let left = end + 1 - from;
        f.file.seek(SeekFrom::Start(from)).await?;
        let file = ReaderStream::with_capacity(f.file.take(left), CHUNK);
        let head = stream::iter(prefix.map(Ok::<_, std::io::Error>));
        warp::reply::stream(head.chain(file)).into_response()
    };
    let mut r = finish(status, body);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{}", f.len))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok((outcome, r))
}
