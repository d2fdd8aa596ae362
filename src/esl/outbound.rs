//! One session of FreeSWITCH's outbound mode: `myevents`, `connect`, the channel, the park.
//!
//! FreeSWITCH connects to us from the dialplan `socket` app and says nothing until we send
//! `connect`. The reply is one header block with no `Content-Length`: the channel's data as a
//! serialized `CHANNEL_DATA` event (values percent-encoded), with `Content-Type`,
//! `Reply-Text: %2BOK%0A`, `Socket-Mode` and `Control` at the *end*.
//!
//! Letting go of the call safely needs a fixed sequence (captures 09 and 09b): in async mode
//! the `socket` app parks the channel only after our `connect`, on its next 20 ms tick, and a
//! session that ends before that park starts leaves the channel parked for ever. So
//! [`OutboundSession::connect`] sends `myevents` *before* `connect` (FreeSWITCH answers no
//! outbound session's first command, so no reply is lost or mismatched) and
//! [`OutboundSession::wait_parked`] waits for this channel's `CHANNEL_PARK` before the
//! session may close.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_util::codec::{Framed, FramedParts};

use super::codec::EslCodec;
use super::command::Command;
use super::error::CodecError;
use super::event::Event;
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
    /// The connect reply was too large or announced a body: not a channel. The session is
    /// still in step and can wait for the park.
    #[error("{0}")]
    Oversized(String),
    /// The connect reply was one block but not readable as channel data (a bad
    /// `Content-Length`); the session is in step and can wait for the park.
    #[error("{0}")]
    Malformed(String),
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

/// How the `socket` app stood when [`OutboundSession::wait_parked`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    /// `CHANNEL_PARK` of our channel: closing now ends the park and the dialplan goes on.
    Parked,
    /// The call hung up first: nothing is left to release.
    HungUp,
    /// FreeSWITCH closed the session (disconnect notice or EOF).
    Closed,
    /// Sync (`static`) mode: the socket app does not park.
    NotAsync,
    /// No park within the wait: we close anyway (a leg may then stay parked).
    TimedOut,
}

/// The largest connect reply accepted: FreeSWITCH's is a few KiB (9 KiB with a SIP leg);
/// a peer sending more is not handing us a channel, and must not make us reserve memory.
pub const MAX_CONNECT_REPLY: usize = 64 * 1024;

/// An accepted outbound connection, before and after `connect`.
pub struct OutboundSession<S> {
    /// Always `Some`; taken only while the framing is rebuilt after an oversized reply.
    framed: Option<Framed<S, EslCodec>>,
    /// The controlled channel, from the connect reply.
    uuid: Option<String>,
    /// Whether the socket app parks the channel (async mode).
    parks: bool,
}

/// What to drop from the stream to find the next frame after an oversized connect reply.
enum Skip {
    /// The rest of a header block, up to its blank line.
    ToBlankLine,
    /// An announced body of this many bytes.
    Bytes(u64),
}

fn codec() -> EslCodec {
    EslCodec::new(MAX_CONNECT_REPLY, MAX_CONNECT_REPLY)
}

impl<S: AsyncRead + AsyncWrite + Unpin> OutboundSession<S> {
    pub fn new(stream: S) -> Self {
        OutboundSession {
            framed: Some(Framed::new(stream, codec())),
            uuid: None,
            parks: false,
        }
    }

    fn framed(&mut self) -> &mut Framed<S, EslCodec> {
        self.framed.as_mut().expect("framing present")
    }

    /// Sends `myevents` then `connect` in one write and reads the channel data, all within
    /// `timeout`. FreeSWITCH sends no reply to the first command of an outbound session, so
    /// the first frame is the connect reply; a `+OK Events Enabled` before it (a switch that
    /// does answer) is skipped, never taken for the channel. A reply over
    /// [`MAX_CONNECT_REPLY`] or one announcing a body is [`OutboundError::Oversized`]: it is
    /// skipped without being held in memory, so the session can still wait for the park.
    pub async fn connect(&mut self, timeout: Duration) -> Result<ChannelData, OutboundError> {
        let exchange = async {
            let myevents = Command::myevents(None, None).expect("no arguments to check");
            self.framed().feed(myevents).await?;
            self.framed().send(Command::connect()).await?;
            loop {
                match self.framed().next().await {
                    Some(Ok(Frame {
                        content_type: ContentType::CommandReply,
                        headers,
                        body,
                    })) => {
                        let data = ChannelData { headers };
                        if data.unique_id().is_none()
                            && data
                                .header("Reply-Text")
                                .is_some_and(|t| t.starts_with("+OK Events"))
                        {
                            continue;
                        }
                        // Parked or not, a release after the park is what the call needs.
                        self.parks = data
                            .header("Socket-Mode")
                            .is_none_or(|m| m.eq_ignore_ascii_case("async"));
                        self.uuid = data.unique_id();
                        if body.is_some() {
                            return Err(OutboundError::Oversized(
                                "the connect reply announced a body".into(),
                            ));
                        }
                        return Ok(data);
                    }
                    Some(Ok(f)) => return Err(OutboundError::Unexpected(f.content_type)),
                    Some(Err(CodecError::HeaderTooLarge { limit })) => {
                        self.resync(Skip::ToBlankLine).await?;
                        return Err(OutboundError::Oversized(format!(
                            "connect reply over {limit} bytes"
                        )));
                    }
                    Some(Err(CodecError::BadContentLength(v))) => {
                        // The block was read whole: the stream is in step after it.
                        self.resync(Skip::Bytes(0)).await?;
                        return Err(OutboundError::Malformed(format!(
                            "the connect reply has Content-Length {v:?}"
                        )));
                    }
                    Some(Err(CodecError::BodyTooLarge { announced, .. })) => {
                        self.resync(Skip::Bytes(announced)).await?;
                        return Err(OutboundError::Oversized(format!(
                            "the connect reply announced a body of {announced} bytes"
                        )));
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(OutboundError::ClosedEarly),
                }
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| OutboundError::Timeout(timeout))?
    }

    /// Drops what is left of an oversized reply straight from the socket (nothing is kept
    /// but the bytes after it) and starts the framing afresh. Only async sessions park.
    async fn resync(&mut self, skip: Skip) -> Result<(), OutboundError> {
        let parts = self.framed.take().expect("framing present").into_parts();
        let (mut io, mut buf) = (parts.io, parts.read_buf);
        match skip {
            Skip::ToBlankLine => loop {
                if let Some(p) = memchr::memmem::find(&buf, b"\n\n") {
                    let _ = buf.split_to(p + 2);
                    break;
                }
                // Keep the last byte: it may be the first half of the blank line.
                let keep = buf.len().min(1);
                let _ = buf.split_to(buf.len() - keep);
                if io.read_buf(&mut buf).await.map_err(CodecError::from)? == 0 {
                    return Err(OutboundError::ClosedEarly);
                }
            },
            Skip::Bytes(mut left) => loop {
                let n = (buf.len() as u64).min(left);
                let _ = buf.split_to(n as usize);
                left -= n;
                if left == 0 {
                    break;
                }
                if io.read_buf(&mut buf).await.map_err(CodecError::from)? == 0 {
                    return Err(OutboundError::ClosedEarly);
                }
            },
        }
        let mut parts = FramedParts::new::<Command>(io, codec());
        parts.read_buf = buf;
        self.framed = Some(Framed::from_parts(parts));
        self.parks = true;
        Ok(())
    }

    /// After [`connect`](Self::connect): reads this channel's events until the `socket` app has
    /// parked it (only then does closing let the call go on), the call is gone, or `timeout`.
    /// In sync (`static`) mode nothing parks and it returns at once.
    pub async fn wait_parked(&mut self, timeout: Duration) -> Handoff {
        if !self.parks {
            return Handoff::NotAsync;
        }
        let uuid = self.uuid.clone();
        let wait = async {
            loop {
                let frame = match self.framed().next().await {
                    Some(Ok(f)) => f,
                    Some(Err(_)) | None => return Handoff::Closed,
                };
                if frame.content_type == ContentType::DisconnectNotice {
                    return Handoff::Closed;
                }
                let Ok(event) = Event::from_frame(&frame) else {
                    continue;
                };
                // myevents delivers only this channel's events; an unknown id (the reply was
                // unreadable) takes the first park.
                if uuid.is_some() && event.unique_id().as_deref() != uuid.as_deref() {
                    continue;
                }
                match event.name().as_deref() {
                    Some("CHANNEL_PARK") => return Handoff::Parked,
                    Some("CHANNEL_HANGUP" | "CHANNEL_HANGUP_COMPLETE" | "CHANNEL_DESTROY") => {
                        return Handoff::HungUp;
                    }
                    _ => {}
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Handoff::TimedOut)
    }

    /// Gives the underlying stream back (to close it, or keep talking).
    pub fn into_inner(self) -> S {
        self.framed.expect("framing present").into_inner()
    }
}
