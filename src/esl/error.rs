//! Typed errors of the ESL library: framing, command building and the client.

use std::io;

/// Why a byte stream from FreeSWITCH could not be framed. Ends that connection only.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// A header block grew past the limit without its terminating blank line.
    #[error("header block exceeds {limit} bytes")]
    HeaderTooLarge { limit: usize },
    /// `Content-Length` announced more than the body limit; nothing was reserved.
    #[error("body of {announced} bytes exceeds the limit of {limit}")]
    BodyTooLarge { announced: u64, limit: usize },
    /// `Content-Length` was not a non-negative decimal number.
    #[error("invalid Content-Length {0:?}")]
    BadContentLength(String),
}

/// Why a command could not be built: it would not be one well-formed ESL command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// A newline would end the command early and start another: refused.
    #[error("{field} contains a line break")]
    LineBreak { field: &'static str },
    /// A value that must be one word holds whitespace or a forbidden character.
    #[error("{field} is not a single token: {value:?}")]
    NotAToken { field: &'static str, value: String },
    /// A required value was empty.
    #[error("{field} is empty")]
    Empty { field: &'static str },
}

/// Why an event could not be read from a frame.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The frame is not an event.
    #[error("frame is not an event")]
    NotAnEvent,
    /// XML events are tolerated on the wire but not parsed.
    #[error("xml events are not supported")]
    XmlUnsupported,
    /// The JSON body is not a JSON object.
    #[error("invalid json event: {0}")]
    Json(String),
}

/// What a client request can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// There is no authenticated connection right now; the client keeps reconnecting.
    #[error("not connected to freeswitch")]
    NotConnected,
    /// The connection dropped while the request was in flight; it may or may not have run.
    #[error("connection to freeswitch lost")]
    ConnectionLost,
    /// No answer within the request timeout.
    #[error("no answer from freeswitch within {0:?}")]
    Timeout(std::time::Duration),
    /// FreeSWITCH refused the command (`-ERR ...`).
    #[error("freeswitch refused the command: {0}")]
    Refused(String),
    /// The command could not be built.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The client has been shut down.
    #[error("client stopped")]
    Stopped,
}

impl ClientError {
    /// True when the request failed because there was, or is, no usable connection.
    pub fn is_disconnected(&self) -> bool {
        matches!(
            self,
            ClientError::NotConnected | ClientError::ConnectionLost | ClientError::Stopped
        )
    }
}
