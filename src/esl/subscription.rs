//! Which events a connection asks FreeSWITCH for, rendered the way mod_event_socket reads it.
//!
//! mod_event_socket reads `event <format> <words...>` left to right and, once it has seen
//! `CUSTOM`, takes **every later word as a CUSTOM subclass name** (capture 08): a
//! `BACKGROUND_JOB` written after `CUSTOM callcenter::info` is never subscribed, and no job
//! result ever arrives. So event names and subclasses are kept apart here and the rendering
//! always puts `CUSTOM <subclass>...` last. Nobody writes `CUSTOM` by hand.

use super::error::CommandError;

/// The event every connection that sends `bgapi` needs: jobs report their result with it.
pub const BACKGROUND_JOB: &str = "BACKGROUND_JOB";

/// A set of event names plus CUSTOM subclasses, in the order they were added, without repeats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    events: Vec<String>,
    custom: Vec<String>,
}

impl Subscription {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an event type such as `CHANNEL_ANSWER` (or `ALL`). `CUSTOM` is refused: a CUSTOM
    /// event is asked for by its subclass, with [`Subscription::custom`].
    pub fn event(mut self, name: &str) -> Result<Self, CommandError> {
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !valid || name == "CUSTOM" {
            return Err(CommandError::NotAToken {
                field: "event name",
                value: name.to_owned(),
            });
        }
        if !self.events.iter().any(|e| e == name) {
            self.events.push(name.to_owned());
        }
        Ok(self)
    }

    /// Adds several event types.
    pub fn events<S: AsRef<str>>(self, names: &[S]) -> Result<Self, CommandError> {
        names.iter().try_fold(self, |s, n| s.event(n.as_ref()))
    }

    /// Adds a CUSTOM subclass such as `callcenter::info` or `sofia::register`.
    pub fn custom(mut self, subclass: &str) -> Result<Self, CommandError> {
        let valid = !subclass.is_empty()
            && subclass
                .chars()
                .all(|c| !c.is_whitespace() && !c.is_control());
        if !valid {
            return Err(CommandError::NotAToken {
                field: "custom subclass",
                value: subclass.to_owned(),
            });
        }
        if !self.custom.iter().any(|e| e == subclass) {
            self.custom.push(subclass.to_owned());
        }
        Ok(self)
    }

    /// The same set with `BACKGROUND_JOB` in it (nothing to add under `ALL`).
    pub fn with_background_job(self) -> Self {
        if self.covers(BACKGROUND_JOB) {
            return self;
        }
        self.event(BACKGROUND_JOB).expect("a valid event name")
    }

    /// Whether events of type `name` are delivered under this subscription.
    pub fn covers(&self, name: &str) -> bool {
        self.events.iter().any(|e| e == name || e == "ALL")
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.custom.is_empty()
    }

    /// How many names and subclasses it holds.
    pub fn len(&self) -> usize {
        self.events.len() + self.custom.len()
    }

    /// The words after the format: event names first, then `CUSTOM` and its subclasses.
    pub fn words(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self.events.iter().map(String::as_str).collect();
        if !self.custom.is_empty() && !self.covers("ALL") {
            out.push("CUSTOM");
            out.extend(self.custom.iter().map(String::as_str));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_subclasses_always_come_last() {
        let s = Subscription::new()
            .custom("callcenter::info")
            .unwrap()
            .events(&["CHANNEL_CREATE", "CHANNEL_HANGUP_COMPLETE"])
            .unwrap()
            .with_background_job();
        assert_eq!(
            s.words().join(" "),
            // capture 08: this order delivers the job result, the other one does not.
            "CHANNEL_CREATE CHANNEL_HANGUP_COMPLETE BACKGROUND_JOB CUSTOM callcenter::info"
        );
    }

    #[test]
    fn custom_is_not_an_event_name_and_names_are_one_word() {
        for bad in [
            "CUSTOM",
            "",
            "A B",
            "CHANNEL_ANSWER\nexit",
            "channel_answer",
        ] {
            assert!(Subscription::new().event(bad).is_err(), "{bad:?}");
        }
        for bad in ["", "a b", "x\ny"] {
            assert!(Subscription::new().custom(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn background_job_is_added_once_and_not_under_all() {
        let s = Subscription::new()
            .event("BACKGROUND_JOB")
            .unwrap()
            .with_background_job();
        assert_eq!(s.words(), ["BACKGROUND_JOB"]);
        let all = Subscription::new()
            .event("ALL")
            .unwrap()
            .with_background_job();
        assert_eq!(all.words(), ["ALL"]);
        assert!(all.covers("BACKGROUND_JOB"));
    }

    #[test]
    fn all_already_carries_every_custom_subclass() {
        let s = Subscription::new()
            .event("ALL")
            .unwrap()
            .custom("sofia::register")
            .unwrap();
        assert_eq!(s.words(), ["ALL"]);
    }
}
