//! A FreeSWITCH event: the second header block inside an event frame, and its optional body.
//!
//! Plain events carry percent-encoded `Name: value` lines and, for results such as
//! `BACKGROUND_JOB`, an inner `Content-Length` and body. JSON events are one flat object with
//! the body in `_body`; invalid UTF-8 (cJSON passes it through) is read lossily.

use std::borrow::Cow;

use bytes::Bytes;

use super::error::EventError;
use super::frame::{ContentType, Frame};
use super::headers::Headers;

#[derive(Debug, Clone)]
pub struct Event {
    headers: Headers,
    body: Option<Bytes>,
}

impl Event {
    /// Reads the event carried by an event frame.
    pub fn from_frame(frame: &Frame) -> Result<Self, EventError> {
        let body = frame.body.clone().unwrap_or_default();
        match frame.content_type {
            ContentType::EventPlain => Ok(Self::from_plain(body)),
            ContentType::EventJson => Self::from_json(&body),
            ContentType::EventXml => Err(EventError::XmlUnsupported),
            _ => Err(EventError::NotAnEvent),
        }
    }

    /// Parses a plain event body: header block, then an optional inner body.
    pub fn from_plain(mut body: Bytes) -> Self {
        let Some(end) = memchr::memmem::find(&body, b"\n\n") else {
            return Event {
                headers: Headers::parse(body),
                body: None,
            };
        };
        let block = body.split_to(end);
        let headers = Headers::parse(block);
        let inner = match headers.get_raw("Content-Length") {
            Some(raw) => {
                let n = std::str::from_utf8(raw)
                    .ok()
                    .and_then(|s| s.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                let rest = body.slice(2.min(body.len())..);
                Some(rest.slice(..n.min(rest.len())))
            }
            None => None,
        };
        Event {
            headers,
            body: inner,
        }
    }

    /// Parses a JSON event, falling back to a lossy read when it is not valid UTF-8.
    pub fn from_json(body: &[u8]) -> Result<Self, EventError> {
        let map: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(body) {
            Ok(m) => m,
            Err(_) => serde_json::from_str(&String::from_utf8_lossy(body))
                .map_err(|e| EventError::Json(e.to_string()))?,
        };
        let mut event_body = None;
        let mut pairs: Vec<(&str, Cow<'_, str>)> = Vec::with_capacity(map.len());
        for (k, v) in &map {
            if k == "_body" {
                event_body = v.as_str().map(|s| Bytes::copy_from_slice(s.as_bytes()));
                continue;
            }
            let value = match v {
                serde_json::Value::String(s) => Cow::Borrowed(s.as_str()),
                serde_json::Value::Array(items) => {
                    let parts: Vec<String> = items
                        .iter()
                        .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                        .collect();
                    Cow::Owned(format!("ARRAY::{}", parts.join("|:")))
                }
                other => Cow::Owned(other.to_string()),
            };
            pairs.push((k.as_str(), value));
        }
        Ok(Event {
            headers: Headers::from_pairs(pairs),
            body: event_body,
        })
    }

    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// A header's decoded value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.headers.get(name)
    }

    /// `Event-Name`, e.g. `CHANNEL_ANSWER`.
    pub fn name(&self) -> Option<Cow<'_, str>> {
        self.headers.get("Event-Name")
    }

    /// `Event-Subclass` of `CUSTOM` events, e.g. `callcenter::info`.
    pub fn subclass(&self) -> Option<Cow<'_, str>> {
        self.headers.get("Event-Subclass")
    }

    /// `Unique-ID`: the channel the event is about.
    pub fn unique_id(&self) -> Option<Cow<'_, str>> {
        self.headers.get("Unique-ID")
    }

    /// `Job-UUID` of a `BACKGROUND_JOB`.
    pub fn job_uuid(&self) -> Option<Cow<'_, str>> {
        self.headers.get("Job-UUID")
    }

    /// A channel variable: `variable_<name>`.
    pub fn variable(&self, name: &str) -> Option<Cow<'_, str>> {
        self.headers.get(&format!("variable_{name}"))
    }

    /// `Event-Sequence`: only increases within one FreeSWITCH process.
    pub fn sequence(&self) -> Option<u64> {
        self.headers.get("Event-Sequence")?.parse().ok()
    }

    pub fn body(&self) -> Option<&Bytes> {
        self.body.as_ref()
    }

    /// The inner body as text (a job's result), invalid UTF-8 replaced.
    pub fn body_text(&self) -> Cow<'_, str> {
        match &self.body {
            Some(b) => String::from_utf8_lossy(b),
            None => Cow::Borrowed(""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_background_job_keeps_its_inner_body() {
        let body = Bytes::from_static(
            b"Event-Name: BACKGROUND_JOB\nJob-UUID: 95b3\nJob-Command-Arg: %7Borigination_uuid%3Dx%7Duser/1001%20%26park()\nContent-Length: 7\n\n+OK ab\n",
        );
        let e = Event::from_plain(body);
        assert_eq!(e.name().unwrap(), "BACKGROUND_JOB");
        assert_eq!(e.job_uuid().unwrap(), "95b3");
        assert_eq!(
            e.header("job-command-arg").unwrap(),
            "{origination_uuid=x}user/1001 &park()"
        );
        assert_eq!(e.body_text(), "+OK ab\n");
    }

    #[test]
    fn plain_event_without_body() {
        let e = Event::from_plain(Bytes::from_static(
            b"Event-Name: CHANNEL_ANSWER\nUnique-ID: u1\nvariable_finaz_crm_id: 42\n\n",
        ));
        assert_eq!(e.unique_id().unwrap(), "u1");
        assert_eq!(e.variable("finaz_crm_id").unwrap(), "42");
        assert!(e.body().is_none());
    }

    #[test]
    fn json_event_reads_body_and_arrays_and_bad_utf8() {
        let mut raw = br#"{"Event-Name":"BACKGROUND_JOB","Job-UUID":"j1","Content-Length":"4","_body":"+OK\n","X":["a","b"],"Caller-ID-Name":""#.to_vec();
        raw.extend_from_slice(b"Jo\xe3o\"}");
        let e = Event::from_json(&raw).unwrap();
        assert_eq!(e.job_uuid().unwrap(), "j1");
        assert_eq!(e.body_text(), "+OK\n");
        assert_eq!(e.header("x").unwrap(), "ARRAY::a|:b");
        assert_eq!(e.header("Caller-ID-Name").unwrap(), "Jo\u{fffd}o");
    }

    #[test]
    fn json_values_are_not_percent_decoded() {
        let e = Event::from_json(br#"{"Event-Name":"X","V":"100%41"}"#).unwrap();
        assert_eq!(e.header("V").unwrap(), "100%41");
    }
}
