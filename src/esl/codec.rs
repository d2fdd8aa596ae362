//! The `tokio_util` codec: bytes from FreeSWITCH into [`Frame`]s, [`Command`]s into bytes.
//!
//! Two states, like `length_delimited`: a header block ended by a blank line, then, when the
//! block has a `Content-Length`, exactly that many body bytes. The announced length is checked
//! against the limit before anything is reserved. `Ok(None)` only ever means "need more bytes".

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::command::Command;
use super::error::CodecError;
use super::frame::{ContentType, Frame};
use super::headers::Headers;

/// FreeSWITCH's own cap on a body (esl.h, mod_event_socket.c).
pub const DEFAULT_MAX_BODY: usize = 16 * 1024 * 1024;
/// A header block this long without its blank line is not ESL. The outbound `connect` reply,
/// the largest block FreeSWITCH sends, is a few KiB.
pub const DEFAULT_MAX_HEADER: usize = 1024 * 1024;

#[derive(Debug)]
enum State {
    /// Looking for the blank line; `scanned` bytes are known not to hold it.
    Head { scanned: usize },
    /// Waiting for `len` body bytes of a frame whose headers are parsed.
    Body {
        content_type: ContentType,
        headers: Headers,
        len: usize,
    },
}

#[derive(Debug)]
pub struct EslCodec {
    state: State,
    max_header: usize,
    max_body: usize,
}

impl Default for EslCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_HEADER, DEFAULT_MAX_BODY)
    }
}

impl EslCodec {
    pub fn new(max_header: usize, max_body: usize) -> Self {
        EslCodec {
            state: State::Head { scanned: 0 },
            max_header,
            max_body,
        }
    }
}

fn content_length(headers: &Headers) -> Result<Option<usize>, CodecError> {
    let Some(raw) = headers.get_raw("Content-Length") else {
        return Ok(None);
    };
    let text = std::str::from_utf8(raw).unwrap_or("").trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CodecError::BadContentLength(
            String::from_utf8_lossy(raw).into_owned(),
        ));
    }
    // Too many digits for u64 is as much "too large" as any other huge value.
    let n = text.parse::<u64>().unwrap_or(u64::MAX);
    Ok(Some(usize::try_from(n).unwrap_or(usize::MAX)))
}

impl Decoder for EslCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        loop {
            match &mut self.state {
                State::Head { scanned } => {
                    if *scanned == 0 {
                        // FreeSWITCH and its peers tolerate stray line breaks between frames.
                        let skip = src
                            .iter()
                            .take_while(|b| **b == b'\n' || **b == b'\r')
                            .count();
                        src.advance(skip);
                    }
                    let from = scanned.saturating_sub(1);
                    let Some(pos) = memchr::memmem::find(&src[from..], b"\n\n").map(|p| p + from)
                    else {
                        if src.len() > self.max_header {
                            return Err(CodecError::HeaderTooLarge {
                                limit: self.max_header,
                            });
                        }
                        *scanned = src.len();
                        return Ok(None);
                    };
                    if pos > self.max_header {
                        return Err(CodecError::HeaderTooLarge {
                            limit: self.max_header,
                        });
                    }
                    let block = src.split_to(pos).freeze();
                    src.advance(2);
                    let headers = Headers::parse(block);
                    let content_type = ContentType::parse(headers.get("Content-Type").as_deref());
                    match content_length(&headers)? {
                        Some(len) if len > self.max_body => {
                            return Err(CodecError::BodyTooLarge {
                                announced: len as u64,
                                limit: self.max_body,
                            });
                        }
                        Some(len) if len > 0 => {
                            self.state = State::Body {
                                content_type,
                                headers,
                                len,
                            };
                        }
                        _ => {
                            self.state = State::Head { scanned: 0 };
                            return Ok(Some(Frame {
                                content_type,
                                headers,
                                body: None,
                            }));
                        }
                    }
                }
                State::Body { len, .. } => {
                    let len = *len;
                    if src.len() < len {
                        src.reserve(len - src.len());
                        return Ok(None);
                    }
                    let body = src.split_to(len).freeze();
                    let State::Body {
                        content_type,
                        headers,
                        ..
                    } = std::mem::replace(&mut self.state, State::Head { scanned: 0 })
                    else {
                        unreachable!("state checked above")
                    };
                    return Ok(Some(Frame {
                        content_type,
                        headers,
                        body: Some(body),
                    }));
                }
            }
        }
    }
}

impl Encoder<Command> for EslCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Command, dst: &mut BytesMut) -> Result<(), CodecError> {
        item.encode(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut EslCodec, bytes: &[u8]) -> Vec<Frame> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            out.push(f);
        }
        assert!(
            buf.is_empty(),
            "left over: {:?}",
            String::from_utf8_lossy(&buf)
        );
        out
    }

    #[test]
    fn decodes_auth_request_and_api_response() {
        let mut c = EslCodec::default();
        let frames = decode_all(
            &mut c,
            b"Content-Type: auth/request\n\nContent-Type: api/response\nContent-Length: 22\n\n-ERR No such channel!\n",
        );
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].content_type, ContentType::AuthRequest);
        assert_eq!(frames[1].content_type, ContentType::ApiResponse);
        assert_eq!(frames[1].body_text(), "-ERR No such channel!\n");
    }

    #[test]
    fn need_more_bytes_is_not_an_error() {
        let mut c = EslCodec::default();
        let mut buf = BytesMut::from(&b"Content-Type: api/resp"[..]);
        assert!(c.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"onse\nContent-Length: 3\n\nab");
        assert!(c.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"c");
        assert_eq!(c.decode(&mut buf).unwrap().unwrap().body_text(), "abc");
    }

    #[test]
    fn refuses_oversized_body_before_reserving() {
        let mut c = EslCodec::new(1024, 100);
        let mut buf =
            BytesMut::from(&b"Content-Type: api/response\nContent-Length: 999999999999\n\n"[..]);
        let err = c.decode(&mut buf).unwrap_err();
        assert!(matches!(err, CodecError::BodyTooLarge { .. }), "{err}");
        assert!(buf.capacity() < 4096);
    }

    #[test]
    fn refuses_negative_and_garbage_lengths() {
        for cl in ["-1", "abc", "", "1e3", "0x10"] {
            let mut c = EslCodec::default();
            let raw = format!("Content-Type: api/response\nContent-Length: {cl}\n\nxx");
            let mut buf = BytesMut::from(raw.as_bytes());
            assert!(
                matches!(c.decode(&mut buf), Err(CodecError::BadContentLength(_))),
                "{cl}"
            );
        }
    }

    #[test]
    fn refuses_endless_header_block() {
        let mut c = EslCodec::new(64, 100);
        let mut buf = BytesMut::from(&[b'a'; 100][..]);
        assert!(matches!(
            c.decode(&mut buf),
            Err(CodecError::HeaderTooLarge { .. })
        ));
    }

    #[test]
    fn unknown_content_type_is_kept_not_fatal() {
        let mut c = EslCodec::default();
        let frames = decode_all(&mut c, b"Content-Type: text/weird\nContent-Length: 1\n\nx");
        assert_eq!(
            frames[0].content_type,
            ContentType::Other("text/weird".into())
        );
    }
}
