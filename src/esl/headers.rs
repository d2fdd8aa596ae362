//! An ordered, case-insensitive multimap of ESL headers over one shared buffer, decoded lazily.
//!
//! Parsing only records where each name and value sit in the buffer: one `Vec` per block, no
//! allocation per header. A value is percent-decoded when it is read, and only if it holds a
//! `%`. Decoding is lenient like libesl's: a bad escape stays literal, `+` stays `+`.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use bytes::{Bytes, BytesMut};

#[derive(Clone, Copy)]
struct Entry {
    name: (u32, u32),
    value: (u32, u32),
    /// Values from plain frames are percent-encoded; values taken from JSON are not.
    encoded: bool,
}

impl Entry {
    fn name_range(&self) -> Range<usize> {
        self.name.0 as usize..self.name.1 as usize
    }
    fn value_range(&self) -> Range<usize> {
        self.value.0 as usize..self.value.1 as usize
    }
}

/// Headers of one ESL block (the outer frame, or an event's inner block).
#[derive(Clone, Default)]
pub struct Headers {
    buf: Bytes,
    entries: Vec<Entry>,
}

impl Headers {
    /// Indexes a block of `Name: value` lines (without the blank line that ends it).
    ///
    /// Lines without a `:` are skipped: a malformed line must not cost the rest of the block.
    pub fn parse(buf: Bytes) -> Self {
        let mut entries = Vec::with_capacity(memchr::memchr_iter(b'\n', &buf).count() + 1);
        let mut start = 0usize;
        let len = buf.len();
        while start < len {
            let end = memchr::memchr(b'\n', &buf[start..]).map_or(len, |i| start + i);
            let mut line_end = end;
            if line_end > start && buf[line_end - 1] == b'\r' {
                line_end -= 1;
            }
            if let Some(colon) = memchr::memchr(b':', &buf[start..line_end]) {
                let colon = start + colon;
                let mut value_start = colon + 1;
                while value_start < line_end && buf[value_start] == b' ' {
                    value_start += 1;
                }
                entries.push(Entry {
                    name: (start as u32, colon as u32),
                    value: (value_start as u32, line_end as u32),
                    encoded: true,
                });
            }
            start = end + 1;
        }
        Headers { buf, entries }
    }

    /// Builds headers from already-decoded pairs (JSON events), kept in order.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, Cow<'a, str>)>) -> Self {
        let mut buf = BytesMut::new();
        let mut entries = Vec::new();
        for (name, value) in pairs {
            let n0 = buf.len() as u32;
            buf.extend_from_slice(name.as_bytes());
            let n1 = buf.len() as u32;
            buf.extend_from_slice(value.as_bytes());
            let v1 = buf.len() as u32;
            entries.push(Entry {
                name: (n0, n1),
                value: (n1, v1),
                encoded: false,
            });
        }
        Headers {
            buf: buf.freeze(),
            entries,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn find(&self, name: &str) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(move |e| self.buf[e.name_range()].eq_ignore_ascii_case(name.as_bytes()))
    }

    /// The first value of `name` (case-insensitive), percent-decoded.
    pub fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        self.find(name).next().map(|e| self.decode(e))
    }

    /// The first value of `name` exactly as it was on the wire.
    pub fn get_raw(&self, name: &str) -> Option<&[u8]> {
        self.find(name).next().map(|e| &self.buf[e.value_range()])
    }

    /// Every value of `name`, in order (FreeSWITCH repeats some headers in another case).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = Cow<'a, str>> + 'a {
        self.find(name).map(|e| self.decode(e))
    }

    /// Every header in wire order, values decoded.
    pub fn iter(&self) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
        self.entries.iter().map(|e| {
            (
                String::from_utf8_lossy(&self.buf[e.name_range()]),
                self.decode(e),
            )
        })
    }

    fn decode(&self, e: &Entry) -> Cow<'_, str> {
        let raw = &self.buf[e.value_range()];
        if e.encoded {
            percent_decode(raw)
        } else {
            String::from_utf8_lossy(raw)
        }
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Lenient percent-decoding: `%XX` with two hex digits becomes that byte, anything else stays.
pub fn percent_decode(raw: &[u8]) -> Cow<'_, str> {
    if memchr::memchr(b'%', raw).is_none() {
        return String::from_utf8_lossy(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%'
            && i + 2 < raw.len()
            && let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(raw[i]);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_values_case_insensitively_and_keeps_duplicates() {
        let h = Headers::parse(Bytes::from_static(
            b"Channel-Read-Codec-Bit-Rate: 128000\nchannel-read-codec-bit-rate: 64000\nX: y",
        ));
        assert_eq!(h.len(), 3);
        assert_eq!(h.get("CHANNEL-READ-CODEC-BIT-RATE").unwrap(), "128000");
        let all: Vec<_> = h.get_all("channel-read-codec-bit-rate").collect();
        assert_eq!(all, ["128000", "64000"]);
        assert_eq!(h.get("x").unwrap(), "y");
        assert!(h.get("missing").is_none());
    }

    #[test]
    fn decodes_percent_escapes_leniently() {
        assert_eq!(percent_decode(b"%2BOK%0A"), "+OK\n");
        assert_eq!(percent_decode(b"a+b"), "a+b");
        assert_eq!(percent_decode(b"100%"), "100%");
        assert_eq!(percent_decode(b"%zz%4"), "%zz%4");
        assert_eq!(percent_decode(b"S%C3%A3o"), "São");
        assert_eq!(percent_decode(b"%ff"), "\u{fffd}");
    }

    #[test]
    fn value_keeps_colons_after_the_first() {
        let h = Headers::parse(Bytes::from_static(b"Reply-Text: +OK Job-UUID: abc\r\n"));
        assert_eq!(h.get("reply-text").unwrap(), "+OK Job-UUID: abc");
    }

    #[test]
    fn skips_lines_without_a_colon() {
        let h = Headers::parse(Bytes::from_static(b"garbage\nA: 1\n"));
        assert_eq!(h.len(), 1);
        assert_eq!(h.get("a").unwrap(), "1");
    }
}
