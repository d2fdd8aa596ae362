//! One session of FreeSWITCH's outbound mode: we send `connect` first and read the channel.
//!
//! FreeSWITCH connects to us from the dialplan `socket` app and says nothing until we send
//! `connect`. The reply is one header block with no `Content-Length`: the channel's data as a
//! serialized `CHANNEL_DATA` event (values percent-encoded), with `Content-Type`,
//! `Reply-Text: %2BOK%0A`, `Socket-Mode` and `Control` at the *end*.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Framed;

use super::codec::EslCodec;
use super::command::Command;
use super::error::CodecError;
use super::frame::{ContentType, Frame};
use super::headers::Headers;

/// Why an outbound session could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The socket or the framing failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// FreeSWITCH closed before answering `connect`.
    #[error("closed before the connect reply")]
    ClosedEarly,
    /// Nothing arrived within the session timeout.
    #[error("no connect reply within {0:?}")]
    Timeout(Duration),
    /// The first frame was not the channel data.
    #[error("unexpected first frame: {0:?}")]
    Unexpected(ContentType),
}

/// The channel a dialplan `socket` app handed us.
#[derive(Debug, Clone)]
pub struct ChannelData {
    headers: Headers,
}

impl ChannelData {
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// `Unique-ID` of the controlled channel.
    pub fn unique_id(&self) -> Option<String> {
        self.headers.get("Unique-ID").map(|v| v.into_owned())
    }

    /// A channel variable (`variable_<name>`).
    pub fn variable(&self, name: &str) -> Option<String> {
        self.headers
            .get(&format!("variable_{name}"))
            .map(|v| v.into_owned())
    }

    /// Any header, decoded.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.into_owned())
    }

    /// `Control: full` allows `api`, `event`, `linger`...; otherwise only session commands.
    pub fn is_full(&self) -> bool {
        self.headers
            .get("Control")
            .is_some_and(|v| v.eq_ignore_ascii_case("full"))
    }
}

/// An accepted outbound connection, before and after `connect`.
pub struct OutboundSession<S> {
    framed: Framed<S, EslCodec>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> OutboundSession<S> {
    pub fn new(stream: S) -> Self {
        OutboundSession {
            framed: Framed::new(stream, EslCodec::default()),
        }
    }

    /// Sends `connect` and reads the channel data, all within `timeout`.
    pub async fn connect(&mut self, timeout: Duration) -> Result<ChannelData, OutboundError> {
        let exchange = async {
            self.framed.send(Command::connect()).await?;
            match self.framed.next().await {
                Some(Ok(Frame {
                    content_type: ContentType::CommandReply,
                    headers,
                    ..
                })) => Ok(ChannelData { headers }),
                Some(Ok(f)) => Err(OutboundError::Unexpected(f.content_type)),
                Some(Err(e)) => Err(e.into()),
                None => Err(OutboundError::ClosedEarly),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| OutboundError::Timeout(timeout))?
    }

    /// Gives the underlying stream back (to close it, or keep talking).
    pub fn into_inner(self) -> S {
        self.framed.into_inner()
    }
}
