//! The stand-in's model of what mod_event_socket does with `event`, `nixevent`, `noevents`
//! and `filter` on one listener, and which events it then writes to that listener. Written
//! from `PROTOCOL.md` (a.3, a.4) and the captures, independently of the service's code, so a
//! subscription the real switch would not honour does not work here either.
//!
//! - `event <fmt> w...`: the first word may be the format; every later word is an event type
//!   (case-insensitive, unknown names ignored) until `CUSTOM`, after which **every word is a
//!   CUSTOM subclass** (capture 08). No known type at all: `-ERR no keywords supplied`.
//! - A CUSTOM event reaches a listener only under `ALL`, or under `CUSTOM` with its subclass.
//! - Once a filter exists, an event is written only if a positive filter matches it and no
//!   negative (`-value`) filter does; BACKGROUND_JOB is no exception.

use std::collections::HashSet;

/// mod_event_socket's event type names (switch_event.c EVENT_NAMES).
#[rustfmt::skip]
const EVENT_TYPES: &[&str] = &[
    "CUSTOM", "CLONE", "CHANNEL_CREATE", "CHANNEL_DESTROY", "CHANNEL_STATE",
    "CHANNEL_CALLSTATE", "CHANNEL_ANSWER", "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_HOLD", "CHANNEL_UNHOLD",
    "CHANNEL_BRIDGE", "CHANNEL_UNBRIDGE", "CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_OUTGOING", "CHANNEL_PARK", "CHANNEL_UNPARK", "CHANNEL_APPLICATION",
    "CHANNEL_ORIGINATE", "CHANNEL_UUID", "API", "LOG", "INBOUND_CHAN", "OUTBOUND_CHAN",
    "STARTUP", "SHUTDOWN", "PUBLISH", "UNPUBLISH", "TALK", "NOTALK", "SESSION_CRASH",
    "MODULE_LOAD", "MODULE_UNLOAD", "DTMF", "MESSAGE", "PRESENCE_IN", "NOTIFY_IN",
    "PRESENCE_OUT", "PRESENCE_PROBE", "MESSAGE_WAITING", "MESSAGE_QUERY", "ROSTER", "CODEC",
    "BACKGROUND_JOB", "DETECTED_SPEECH", "DETECTED_TONE", "PRIVATE_COMMAND", "HEARTBEAT",
    "TRAP", "ADD_SCHEDULE", "DEL_SCHEDULE", "EXE_SCHEDULE", "RE_SCHEDULE", "RELOADXML",
    "NOTIFY", "PHONE_FEATURE", "PHONE_FEATURE_SUBSCRIBE", "SEND_MESSAGE", "RECV_MESSAGE",
    "REQUEST_PARAMS", "CHANNEL_DATA", "GENERAL", "COMMAND", "SESSION_HEARTBEAT",
    "CLIENT_DISCONNECTED", "SERVER_DISCONNECTED", "SEND_INFO", "RECV_INFO",
    "RECV_RTCP_MESSAGE", "SEND_RTCP_MESSAGE", "CALL_SECURE", "NAT", "RECORD_START",
    "RECORD_STOP", "PLAYBACK_START", "PLAYBACK_STOP", "CALL_UPDATE", "FAILURE",
    "SOCKET_DATA", "MEDIA_BUG_START", "MEDIA_BUG_STOP", "CONFERENCE_DATA_QUERY",
    "CONFERENCE_DATA", "CALL_SETUP_REQ", "CALL_SETUP_RESULT", "CALL_DETAIL", "DEVICE_STATE",
    "TEXT", "SHUTDOWN_REQUESTED", "ALL",
];

/// What one listener is subscribed to and filters on.
#[derive(Debug, Default)]
pub struct Listener {
    /// Event types (upper case); `ALL` stands for every type, CUSTOM subclasses included.
    types: HashSet<String>,
    subclasses: HashSet<String>,
    format: Option<String>,
    /// `(header, value)`; a value starting with `-` is a negative filter.
    filters: Vec<(String, String)>,
}

impl Listener {
    /// Applies `event <rest>` and returns FreeSWITCH's reply text.
    pub fn event(&mut self, rest: &str) -> String {
        let mut key_count = 0;
        let mut custom = false;
        for (i, word) in rest.split(' ').filter(|w| !w.is_empty()).enumerate() {
            if i == 0 && ["plain", "json", "xml"].contains(&word.to_ascii_lowercase().as_str()) {
                self.format = Some(word.to_ascii_lowercase());
                continue;
            }
            if custom {
                self.subclasses.insert(word.to_string());
                continue;
            }
            let upper = word.to_ascii_uppercase();
            let upper = upper
                .strip_prefix("SWITCH_EVENT_")
                .unwrap_or(&upper)
                .to_string();
            if EVENT_TYPES.contains(&upper.as_str()) {
                key_count += 1;
                custom = upper == "CUSTOM";
                self.types.insert(upper);
            }
        }
        if key_count == 0 {
            return "-ERR no keywords supplied".into();
        }
        format!(
            "+OK event listener enabled {}",
            self.format.as_deref().unwrap_or("plain")
        )
    }

    /// `nixevent <names>`: removes types (and, after CUSTOM, subclasses).
    pub fn nixevent(&mut self, rest: &str) -> String {
        let mut custom = false;
        let mut key_count = 0;
        for word in rest.split(' ').filter(|w| !w.is_empty()) {
            if custom {
                self.subclasses.remove(word);
                continue;
            }
            let upper = word.to_ascii_uppercase();
            if EVENT_TYPES.contains(&upper.as_str()) {
                key_count += 1;
                custom = upper == "CUSTOM";
                if upper == "ALL" {
                    self.types.clear();
                    self.subclasses.clear();
                } else {
                    self.types.remove(&upper);
                }
            }
        }
        if key_count == 0 {
            return "-ERR no keywords supplied".into();
        }
        "+OK events nixed".into()
    }

    /// `noevents`: nothing is delivered any more.
    pub fn noevents(&mut self) -> String {
        self.types.clear();
        self.subclasses.clear();
        "+OK no longer listening for events".into()
    }

    /// `filter <header> <value>` / `filter delete <header> [value]` / `filter delete all`.
    pub fn filter(&mut self, rest: &str) -> String {
        let mut words = rest.splitn(2, ' ');
        let first = words.next().unwrap_or("");
        let tail = words.next().unwrap_or("");
        if first.eq_ignore_ascii_case("delete") {
            let (header, value) = tail.split_once(' ').unwrap_or((tail, ""));
            if header.eq_ignore_ascii_case("all") {
                self.filters.clear();
            } else {
                self.filters.retain(|(h, v)| {
                    !(h.eq_ignore_ascii_case(header) && (value.is_empty() || v == value))
                });
            }
            return format!("+OK filter deleted. [{header}]=[{value}]");
        }
        if tail.is_empty() {
            return "-ERR invalid syntax".into();
        }
        self.filters.push((first.to_string(), tail.to_string()));
        format!("+OK filter added. [{first}]=[{tail}]")
    }

    /// Whether FreeSWITCH writes the plain event `body` (its inner header block) to this
    /// listener.
    pub fn wants(&self, body: &str) -> bool {
        let name = header(body, "Event-Name").unwrap_or_default();
        let subscribed = if self.types.contains("ALL") {
            true
        } else if name == "CUSTOM" {
            self.types.contains("CUSTOM")
                && header(body, "Event-Subclass").is_some_and(|s| self.subclasses.contains(&s))
        } else {
            self.types.contains(&name)
        };
        if !subscribed {
            return false;
        }
        if self.filters.is_empty() {
            return true;
        }
        let matches =
            |h: &str, v: &str| header(body, h).is_some_and(|actual| actual.eq_ignore_ascii_case(v));
        let vetoed = self
            .filters
            .iter()
            .filter_map(|(h, v)| v.strip_prefix('-').map(|v| (h, v)))
            .any(|(h, v)| matches(h, v));
        let passed = self
            .filters
            .iter()
            .filter(|(_, v)| !v.starts_with('-'))
            .any(|(h, v)| matches(h, v));
        passed && !vetoed
    }

    /// The format asked for; the stand-in only speaks plain, and says so loudly otherwise.
    pub fn assert_plain(&self) {
        if let Some(f) = &self.format {
            assert_eq!(f, "plain", "the stand-in only sends text/event-plain");
        }
    }
}

/// The decoded value of `name` in a plain event body (before its own body, if any).
pub fn header(body: &str, name: &str) -> Option<String> {
    body.lines().take_while(|l| !l.is_empty()).find_map(|l| {
        let (n, v) = l.split_once(": ")?;
        n.eq_ignore_ascii_case(name).then(|| percent_decode(v))
    })
}

/// Lenient percent-decoding as libesl does: a bad escape stays as it is.
pub fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(name: &str) -> String {
        format!("Event-Name: {name}\nUnique-ID: x\n\n")
    }

    fn cc() -> String {
        "Event-Name: CUSTOM\nEvent-Subclass: callcenter%3A%3Ainfo\n\n".into()
    }

    #[test]
    fn words_after_custom_are_subclasses_as_in_capture_08() {
        let mut l = Listener::default();
        let r = l.event(
            "plain CHANNEL_CREATE CHANNEL_HANGUP_COMPLETE CUSTOM callcenter::info BACKGROUND_JOB",
        );
        assert_eq!(r, "+OK event listener enabled plain");
        assert!(l.wants(&ev("CHANNEL_CREATE")));
        assert!(l.wants(&cc()));
        assert!(!l.wants(&ev("BACKGROUND_JOB")));
        assert_eq!(l.noevents(), "+OK no longer listening for events");
        l.event("plain CHANNEL_CREATE BACKGROUND_JOB CUSTOM callcenter::info");
        assert!(l.wants(&ev("BACKGROUND_JOB")));
    }

    #[test]
    fn custom_events_need_their_subclass_or_all() {
        let mut l = Listener::default();
        assert_eq!(
            l.event("plain callcenter::info"),
            "-ERR no keywords supplied"
        );
        assert_eq!(l.event("plain"), "-ERR no keywords supplied");
        l.event("plain CUSTOM");
        assert!(!l.wants(&cc()));
        let mut all = Listener::default();
        all.event("plain ALL");
        assert!(all.wants(&cc()) && all.wants(&ev("BACKGROUND_JOB")));
    }

    #[test]
    fn a_filter_drops_background_job_unless_it_matches() {
        let mut l = Listener::default();
        l.event("plain ALL");
        l.filter("Unique-ID x");
        assert!(l.wants(&ev("CHANNEL_CREATE")));
        assert!(!l.wants("Event-Name: BACKGROUND_JOB\nJob-UUID: j\n\n"));
        l.filter("Unique-ID -x");
        assert!(!l.wants(&ev("CHANNEL_CREATE")));
    }
}
