//! `POST {click2call_path}`: reads `ramal`, `telefone` and `chave` from a JSON body, a form
//! body or the query string, validates them, and turns the engine's answer into HTTP.

use std::time::Instant;

use warp::http::{HeaderMap, StatusCode, header};
use warp::reply::Response;

use super::reply::{self, ApiError, answer_format};
use super::{Ctx, Endpoint};
use crate::click2call::{Click2CallError, Request};
use crate::domain::values::IdempotencyKey;
use crate::domain::values::{InvalidField, Ramal, Telefone};

/// The fields of a request, wherever they came from, before validation.
#[derive(Default, PartialEq, Eq)]
pub struct Fields {
    pub ramal: Option<String>,
    pub telefone: Option<String>,
    pub chave: Option<String>,
    /// The body was JSON, so the answer is too.
    pub json_body: bool,
}

impl std::fmt::Debug for Fields {
    /// The number masked and the chave never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fields")
            .field("ramal", &self.ramal)
            .field(
                "telefone",
                &crate::domain::values::MaskedPhone(self.telefone.as_deref()),
            )
            .field("chave", &self.chave.as_ref().map(|_| "<redacted>"))
            .field("json_body", &self.json_body)
            .finish()
    }
}

impl Fields {
    fn set(&mut self, name: &str, value: String) -> Result<(), ApiError> {
        let slot = match name {
            "ramal" => &mut self.ramal,
            "telefone" => &mut self.telefone,
            "chave" => &mut self.chave,
            _ => return Ok(()),
        };
        match slot {
            Some(old) if *old != value => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "conflicting_field",
                format!("{name} is given twice with different values"),
            )),
            _ => {
                *slot = Some(value);
                Ok(())
            }
        }
    }
}

/// What the body is, from `Content-Type` (or, when absent, from its first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Json,
    Form,
}

fn body_kind(content_type: Option<&str>, body: &[u8]) -> Result<Option<BodyKind>, ApiError> {
    let media = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|m| !m.is_empty());
    let blank = body.iter().all(u8::is_ascii_whitespace);
    match media.as_deref() {
        Some("application/json") => Ok(Some(BodyKind::Json)),
        Some(m) if m.starts_with("application/") && m.ends_with("+json") => {
            Ok(Some(BodyKind::Json))
        }
        Some("application/x-www-form-urlencoded") => Ok(Some(BodyKind::Form)),
        _ if blank => Ok(None),
        None => {
            let first = body.iter().find(|b| !b.is_ascii_whitespace());
            Ok(Some(if first == Some(&b'{') {
                BodyKind::Json
            } else {
                BodyKind::Form
            }))
        }
        Some(other) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send application/json or application/x-www-form-urlencoded, not {other}"),
        )),
    }
}

fn malformed(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "malformed_body", message)
}

/// Merges the query string and the body; the same field twice must agree.
pub fn parse_fields(
    content_type: Option<&str>,
    body: &[u8],
    query: &str,
) -> Result<Fields, ApiError> {
    let mut fields = Fields::default();
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_query",
            "the query string is not URL-encoded",
        )
    })?;
    for (k, v) in pairs {
        fields.set(&k, v)?;
    }
    match body_kind(content_type, body)? {
        None => {}
        Some(BodyKind::Form) => {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
                .map_err(|_| malformed("the body is not form-encoded (name=value&...)"))?;
            for (k, v) in pairs {
                fields.set(&k, v)?;
            }
        }
        Some(BodyKind::Json) => {
            fields.json_body = true;
            let value: serde_json::Value = serde_json::from_slice(body)
                .map_err(|e| malformed(format!("the body is not valid JSON: {e}")))?;
            let serde_json::Value::Object(map) = value else {
                return Err(malformed("the JSON body must be an object"));
            };
            for (k, v) in map {
                let field: &'static str = match k.as_str() {
                    "ramal" => "ramal",
                    "telefone" => "telefone",
                    "chave" => "chave",
                    _ => continue,
                };
                let text = match v {
                    serde_json::Value::String(s) => s,
                    // Some CRMs send numbers as numbers; their digits are the value.
                    serde_json::Value::Number(n) if n.is_u64() => n.to_string(),
                    serde_json::Value::Null => continue,
                    _ => {
                        return Err(ApiError::new(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "invalid_field",
                            format!("{field} must be a string"),
                        )
                        .field(field));
                    }
                };
                fields.set(field, text)?;
            }
        }
    }
    Ok(fields)
}

fn invalid(e: InvalidField) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        e.to_string(),
    )
    .field(e.field)
}

fn required(field: &'static str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        format!("{field} is required"),
    )
    .field(field)
}

/// The validated request, or the first problem (chave before fields: no probing without it).
pub fn validate(ctx: &Ctx, headers: &HeaderMap, fields: &Fields) -> Result<Request, ApiError> {
    ctx.edge
        .check_chave(fields.chave.as_deref())
        .map_err(super::refusal)?;
    let ramal =
        Ramal::parse(fields.ramal.as_deref().ok_or_else(|| required("ramal"))?).map_err(invalid)?;
    let telefone = Telefone::parse(
        fields
            .telefone
            .as_deref()
            .ok_or_else(|| required("telefone"))?,
    )
    .map_err(invalid)?;
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(IdempotencyKey::parse)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_field",
                        "Idempotency-Key must be 1 to 128 visible ASCII characters",
                    )
                    .field("Idempotency-Key")
                })?,
        ),
    };
    Ok(Request {
        ramal,
        telefone,
        idempotency_key,
    })
}

/// The error Finaz sees for an engine failure.
pub fn engine_error(e: &Click2CallError) -> ApiError {
    let msg = e.to_string();
    match e {
        Click2CallError::NotRegistered { cause } => {
            ApiError::new(StatusCode::NOT_FOUND, "extension_not_registered", msg).cause(cause)
        }
        Click2CallError::Busy => ApiError::new(StatusCode::CONFLICT, "extension_busy", msg)
            .cause("USER_BUSY")
            .retry_after(5),
        Click2CallError::Failed { cause } => {
            ApiError::new(StatusCode::BAD_GATEWAY, "originate_failed", msg).cause(cause)
        }
        Click2CallError::NotConnected | Click2CallError::ConnectionLost => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "freeswitch_unavailable",
            msg,
        )
        .retry_after(5),
        Click2CallError::Timeout(_) => {
            ApiError::new(StatusCode::GATEWAY_TIMEOUT, "freeswitch_timeout", msg)
        }
        Click2CallError::KeyReused => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            msg,
        )
        .field("Idempotency-Key"),
        Click2CallError::Storage(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", msg)
                .retry_after(5)
        }
        Click2CallError::Internal(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", msg)
        }
    }
}

/// Handles a click2call whose source address already passed the allow-list.
pub async fn handle(ctx: &Ctx, headers: &HeaderMap, query: &str, body: &[u8]) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let fields = match parse_fields(content_type, body, query) {
        Ok(f) => f,
        Err(e) => {
            let json = content_type.is_some_and(|c| c.contains("json"));
            return ctx.refuse(Endpoint::Click2Call, &e, answer_format(headers, json));
        }
    };
    let format = answer_format(headers, fields.json_body);
    let request = match validate(ctx, headers, &fields) {
        Ok(r) => r,
        Err(e) => return ctx.refuse(Endpoint::Click2Call, &e, format),
    };
    let started = Instant::now();
    let result = ctx.click2call.place(request).await;
    ctx.stats.observe_click2call(started.elapsed());
    match result {
        Ok(answer) => {
            let outcome = if answer.duplicate { "duplicate" } else { "ok" };
            ctx.stats.count(Endpoint::Click2Call, outcome);
            reply::call_id(answer.placed.call_id.as_str(), format)
        }
        Err(e) => ctx.refuse(Endpoint::Click2Call, &engine_error(&e), format),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_from_json_form_and_query() {
        let f = parse_fields(
            Some("application/json; charset=utf-8"),
            br#"{"ramal":"1001","telefone":41988445566,"chave":null,"extra":[1]}"#,
            "",
        )
        .unwrap();
        assert_eq!(f.ramal.as_deref(), Some("1001"));
        assert_eq!(f.telefone.as_deref(), Some("41988445566"));
        assert_eq!(f.chave, None);
        assert!(f.json_body);
        let f = parse_fields(
            Some("application/x-www-form-urlencoded"),
            b"ramal=1001&telefone=%2B55+41+98844-5566",
            "chave=k",
        )
        .unwrap();
        assert_eq!(f.telefone.as_deref(), Some("+55 41 98844-5566"));
        assert_eq!(f.chave.as_deref(), Some("k"));
        assert!(!f.json_body);
        let f = parse_fields(None, b"", "ramal=1001&telefone=41988445566").unwrap();
        assert_eq!(f.ramal.as_deref(), Some("1001"));
        // No Content-Type: sniffed.
        assert!(
            parse_fields(None, br#" {"ramal":"1"}"#, "")
                .unwrap()
                .json_body
        );
    }

    #[test]
    fn bad_bodies_are_told_apart() {
        let code =
            |ct: Option<&str>, body: &[u8], q: &str| parse_fields(ct, body, q).unwrap_err().code;
        assert_eq!(code(Some("application/json"), b"{", ""), "malformed_body");
        assert_eq!(code(Some("application/json"), b"[1]", ""), "malformed_body");
        assert_eq!(
            code(Some("application/json"), br#"{"ramal":{"a":1}}"#, ""),
            "invalid_field"
        );
        assert_eq!(
            code(Some("application/json"), br#"{"ramal":true}"#, ""),
            "invalid_field"
        );
        assert_eq!(
            code(Some("text/xml"), b"<x/>", ""),
            "unsupported_media_type"
        );
        assert_eq!(
            code(
                Some("application/json"),
                br#"{"ramal":"1001"}"#,
                "ramal=1002"
            ),
            "conflicting_field"
        );
        // The same value twice is fine.
        assert!(
            parse_fields(
                Some("application/json"),
                br#"{"ramal":"1001"}"#,
                "ramal=1001"
            )
            .is_ok()
        );
    }
}
