//! What the simulated switch writes to one inbound connection: mod_event_socket's reading of
//! `event` / `nixevent` / `noevents` and its delivery rule, so a subscription a real
//! FreeSWITCH would not honour gets no events in the sandbox either.
//!
//! mod_event_socket takes the first word as the format, every later word as an event type
//! (case-insensitive; unknown names are ignored) until `CUSTOM`, and **every word after
//! `CUSTOM` as a CUSTOM subclass name**. A CUSTOM event is delivered only under `ALL` or
//! under `CUSTOM` with its subclass; `BACKGROUND_JOB` only when subscribed.

use std::collections::HashSet;

/// Event types the simulator fires or the service may ask for; other names are ignored, as
/// mod_event_socket ignores names it does not know.
const KNOWN: &[&str] = &[
    "ALL",
    "CUSTOM",
    "BACKGROUND_JOB",
    "CHANNEL_CREATE",
    "CHANNEL_UUID",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_ANSWER",
    "CHANNEL_BRIDGE",
    "CHANNEL_UNBRIDGE",
    "CHANNEL_PARK",
    "CHANNEL_UNPARK",
    "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE",
    "CHANNEL_EXECUTE",
    "CHANNEL_EXECUTE_COMPLETE",
    "CHANNEL_STATE",
    "CHANNEL_CALLSTATE",
    "CHANNEL_DESTROY",
    "RECORD_START",
    "RECORD_STOP",
    "HEARTBEAT",
    "DTMF",
    "CODEC",
];

/// One connection's subscription.
#[derive(Debug, Default)]
pub struct Listener {
    types: HashSet<String>,
    subclasses: HashSet<String>,
}

impl Listener {
    /// `event <rest>`: FreeSWITCH's reply text.
    pub fn event(&mut self, rest: &str) -> String {
        if self.apply(rest, true) == 0 {
            return "-ERR no keywords supplied".into();
        }
        "+OK event listener enabled plain".into()
    }

    /// `nixevent <rest>`: FreeSWITCH's reply text.
    pub fn nixevent(&mut self, rest: &str) -> String {
        if self.apply(rest, false) == 0 {
            return "-ERR no keywords supplied".into();
        }
        "+OK events nixed".into()
    }

    /// `noevents`: FreeSWITCH's reply text.
    pub fn noevents(&mut self) -> String {
        self.types.clear();
        self.subclasses.clear();
        "+OK no longer listening for events".into()
    }

    /// Whether an event of type `name` (and CUSTOM `subclass`) is written to this connection.
    pub fn wants(&self, name: &str, subclass: Option<&str>) -> bool {
        if self.types.contains("ALL") {
            return true;
        }
        if name == "CUSTOM" {
            return self.types.contains("CUSTOM")
                && subclass.is_some_and(|s| self.subclasses.contains(s));
        }
        self.types.contains(name)
    }

    /// Adds (or removes) the words of an `event`/`nixevent` line; the count of known types.
    fn apply(&mut self, rest: &str, add: bool) -> usize {
        let mut known = 0;
        let mut custom = false;
        for (i, word) in rest.split(' ').filter(|w| !w.is_empty()).enumerate() {
            if add && i == 0 && ["plain", "json", "xml"].contains(&word) {
                continue;
            }
            if custom {
                if add {
                    self.subclasses.insert(word.to_string());
                } else {
                    self.subclasses.remove(word);
                }
                continue;
            }
            let upper = word.to_ascii_uppercase();
            if KNOWN.contains(&upper.as_str()) {
                known += 1;
                custom = upper == "CUSTOM";
                if add {
                    self.types.insert(upper);
                } else {
                    self.types.remove(&upper);
                }
            }
        }
        known
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_job_after_custom_is_a_subclass_as_on_the_real_switch() {
        let mut l = Listener::default();
        assert_eq!(
            l.event("plain CHANNEL_CREATE CUSTOM callcenter::info BACKGROUND_JOB"),
            "+OK event listener enabled plain"
        );
        assert!(l.wants("CHANNEL_CREATE", None));
        assert!(l.wants("CUSTOM", Some("callcenter::info")));
        assert!(!l.wants("BACKGROUND_JOB", None));
        l.noevents();
        l.event("plain BACKGROUND_JOB CUSTOM callcenter::info");
        assert!(l.wants("BACKGROUND_JOB", None));
        assert!(!l.wants("CUSTOM", Some("sofia::register")));
        assert!(!l.wants("CHANNEL_CREATE", None));
    }

    #[test]
    fn no_known_name_is_refused_and_all_takes_everything() {
        let mut l = Listener::default();
        assert_eq!(l.event("plain"), "-ERR no keywords supplied");
        assert_eq!(
            l.event("plain callcenter::info"),
            "-ERR no keywords supplied"
        );
        l.event("plain ALL");
        assert!(l.wants("CUSTOM", Some("anything")) && l.wants("BACKGROUND_JOB", None));
        assert_eq!(l.nixevent("ALL"), "+OK events nixed");
    }
}
