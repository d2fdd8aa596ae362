//! One ESL message as it crossed the socket: its header block, its kind and its body.

use std::borrow::Cow;

use bytes::Bytes;

use super::headers::Headers;

/// What a frame is, from its `Content-Type` (matched case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentType {
    AuthRequest,
    CommandReply,
    ApiResponse,
    EventPlain,
    EventJson,
    EventXml,
    DisconnectNotice,
    RudeRejection,
    LogData,
    /// A content type this library does not know: kept, never fatal.
    Other(String),
    /// No `Content-Type` header at all.
    Missing,
}

impl ContentType {
    pub fn parse(value: Option<&str>) -> Self {
        let Some(v) = value else {
            return ContentType::Missing;
        };
        match v.trim().to_ascii_lowercase().as_str() {
            "auth/request" => ContentType::AuthRequest,
            "command/reply" => ContentType::CommandReply,
            "api/response" => ContentType::ApiResponse,
            "text/event-plain" => ContentType::EventPlain,
            "text/event-json" => ContentType::EventJson,
            "text/event-xml" => ContentType::EventXml,
            "text/disconnect-notice" => ContentType::DisconnectNotice,
            "text/rude-rejection" => ContentType::RudeRejection,
            "log/data" => ContentType::LogData,
            other => ContentType::Other(other.to_owned()),
        }
    }

    /// Frames that answer a command, in the order the commands were sent.
    pub fn is_reply(&self) -> bool {
        matches!(self, ContentType::CommandReply | ContentType::ApiResponse)
    }

    pub fn is_event(&self) -> bool {
        matches!(
            self,
            ContentType::EventPlain | ContentType::EventJson | ContentType::EventXml
        )
    }
}

/// A decoded frame. Header values are decoded lazily (see [`Headers`]).
#[derive(Debug, Clone)]
pub struct Frame {
    pub content_type: ContentType,
    pub headers: Headers,
    pub body: Option<Bytes>,
}

impl Frame {
    /// `Reply-Text` (decoded: the outbound `connect` reply sends it as `%2BOK%0A`).
    pub fn reply_text(&self) -> Option<Cow<'_, str>> {
        self.headers.get("Reply-Text")
    }

    /// The body as text, invalid UTF-8 replaced.
    pub fn body_text(&self) -> Cow<'_, str> {
        match &self.body {
            Some(b) => String::from_utf8_lossy(b),
            None => Cow::Borrowed(""),
        }
    }

    /// True when a `command/reply` says `+OK`, or an `api/response` body starts with it.
    pub fn is_ok(&self) -> bool {
        match self.content_type {
            ContentType::ApiResponse => self.body_text().starts_with("+OK"),
            _ => self
                .reply_text()
                .is_some_and(|t| t.trim_start().starts_with("+OK")),
        }
    }
}
