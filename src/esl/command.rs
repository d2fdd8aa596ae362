//! Typed ESL commands and their wire encoding; a command that would not be one line is refused.
//!
//! An ESL command is a first line, optional `Name: value` lines and a blank line. Every
//! constructor checks its arguments, so a value holding a newline can never end the command
//! early and smuggle in another one.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use super::error::CommandError;
use super::subscription::Subscription;

/// Event serialization asked of FreeSWITCH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventFormat {
    #[default]
    Plain,
    Json,
    Xml,
}

impl EventFormat {
    fn as_str(self) -> &'static str {
        match self {
            EventFormat::Plain => "plain",
            EventFormat::Json => "json",
            EventFormat::Xml => "xml",
        }
    }
}

/// One command to FreeSWITCH. Build it with the constructors; they validate.
#[derive(Clone, PartialEq, Eq)]
pub struct Command {
    line: String,
    headers: Vec<(String, String)>,
    body: Option<Bytes>,
    /// The line holds a password: never shown by `Debug`.
    secret: bool,
}

fn no_line_break(field: &'static str, v: &str) -> Result<(), CommandError> {
    if v.contains(['\n', '\r']) {
        return Err(CommandError::LineBreak { field });
    }
    Ok(())
}

/// One word: no whitespace or control characters (`callcenter::info` is fine).
fn token(field: &'static str, v: &str) -> Result<(), CommandError> {
    if v.is_empty() {
        return Err(CommandError::Empty { field });
    }
    if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(CommandError::NotAToken {
            field,
            value: v.to_owned(),
        });
    }
    Ok(())
}

/// A header name: one word without `:`.
fn header_name(field: &'static str, v: &str) -> Result<(), CommandError> {
    token(field, v)?;
    if v.contains(':') {
        return Err(CommandError::NotAToken {
            field,
            value: v.to_owned(),
        });
    }
    Ok(())
}

/// A Job-UUID the caller chooses: hex digits and dashes, at most 64 characters.
fn job_uuid(v: &str) -> Result<(), CommandError> {
    if v.is_empty() || v.len() > 64 || !v.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(CommandError::NotAToken {
            field: "job uuid",
            value: v.to_owned(),
        });
    }
    Ok(())
}

impl Command {
    fn simple(line: String) -> Self {
        Command {
            line,
            headers: Vec::new(),
            body: None,
            secret: false,
        }
    }

    pub fn auth(password: &str) -> Result<Self, CommandError> {
        no_line_break("password", password)?;
        let mut c = Self::simple(format!("auth {password}"));
        c.secret = true;
        Ok(c)
    }

    /// `api <cmd>`: runs synchronously on FreeSWITCH's side of this connection.
    pub fn api(cmd: &str) -> Result<Self, CommandError> {
        no_line_break("api command", cmd)?;
        if cmd.trim().is_empty() {
            return Err(CommandError::Empty {
                field: "api command",
            });
        }
        Ok(Self::simple(format!("api {cmd}")))
    }

    /// `bgapi <cmd>` with a caller-chosen `Job-UUID`, so the result can be awaited before
    /// the command is even written.
    pub fn bgapi(cmd: &str, job: &str) -> Result<Self, CommandError> {
        no_line_break("bgapi command", cmd)?;
        if cmd.trim().is_empty() {
            return Err(CommandError::Empty {
                field: "bgapi command",
            });
        }
        job_uuid(job)?;
        let mut c = Self::simple(format!("bgapi {cmd}"));
        c.headers.push(("Job-UUID".into(), job.into()));
        Ok(c)
    }

    /// `event <format> <names...> [CUSTOM <subclass>...]`, built from a [`Subscription`] so
    /// that no event name can ever land after `CUSTOM` (where FreeSWITCH reads it as a
    /// subclass and never delivers it).
    pub fn event(format: EventFormat, subscription: &Subscription) -> Result<Self, CommandError> {
        if subscription.is_empty() {
            return Err(CommandError::Empty {
                field: "event names",
            });
        }
        let mut line = format!("event {}", format.as_str());
        for w in subscription.words() {
            line.push(' ');
            line.push_str(w);
        }
        Ok(Self::simple(line))
    }

    pub fn nixevent<S: AsRef<str>>(names: &[S]) -> Result<Self, CommandError> {
        let mut line = String::from("nixevent");
        for n in names {
            token("event name", n.as_ref())?;
            line.push(' ');
            line.push_str(n.as_ref());
        }
        Ok(Self::simple(line))
    }

    pub fn noevents() -> Self {
        Self::simple("noevents".into())
    }

    /// `filter <header> <value>`; the value may hold spaces (regexes) but no line break.
    pub fn filter(header: &str, value: &str) -> Result<Self, CommandError> {
        header_name("filter header", header)?;
        no_line_break("filter value", value)?;
        Ok(Self::simple(format!("filter {header} {value}")))
    }

    pub fn filter_delete(header: &str, value: Option<&str>) -> Result<Self, CommandError> {
        header_name("filter header", header)?;
        let mut line = format!("filter delete {header}");
        if let Some(v) = value {
            no_line_break("filter value", v)?;
            line.push(' ');
            line.push_str(v);
        }
        Ok(Self::simple(line))
    }

    /// `myevents [uuid] [format]`; without a uuid it is the outbound session's own call.
    pub fn myevents(uuid: Option<&str>, format: Option<EventFormat>) -> Result<Self, CommandError> {
        let mut line = String::from("myevents");
        if let Some(u) = uuid {
            token("uuid", u)?;
            line.push(' ');
            line.push_str(u);
        }
        if let Some(f) = format {
            line.push(' ');
            line.push_str(f.as_str());
        }
        Ok(Self::simple(line))
    }

    pub fn linger(seconds: Option<u32>) -> Self {
        let line = match seconds {
            Some(s) => format!("linger {s}"),
            None => "linger".into(),
        };
        Self::simple(line)
    }

    pub fn nolinger() -> Self {
        Self::simple("nolinger".into())
    }

    pub fn resume() -> Self {
        Self::simple("resume".into())
    }

    /// The first command of an outbound session; its reply is the channel data.
    pub fn connect() -> Self {
        Self::simple("connect".into())
    }

    pub fn exit() -> Self {
        Self::simple("exit".into())
    }

    /// `sendmsg [uuid]` with headers; an argument too long or multi-line for a header goes
    /// in `body` (sent with `content-type: text/plain`).
    pub fn sendmsg(
        uuid: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Result<Self, CommandError> {
        let mut line = String::from("sendmsg");
        if let Some(u) = uuid {
            token("uuid", u)?;
            line.push(' ');
            line.push_str(u);
        }
        let mut c = Self::simple(line);
        for (n, v) in headers {
            header_name("sendmsg header name", n)?;
            no_line_break("sendmsg header value", v)?;
            c.headers.push(((*n).into(), (*v).into()));
        }
        if let Some(b) = body {
            c.headers.push(("content-type".into(), "text/plain".into()));
            c.body = Some(Bytes::copy_from_slice(b.as_bytes()));
        }
        Ok(c)
    }

    /// The exact bytes this command puts on the wire.
    pub fn encode(&self, dst: &mut BytesMut) {
        let body_len = self.body.as_ref().map_or(0, |b| b.len());
        dst.reserve(self.line.len() + body_len + 64);
        dst.put_slice(self.line.as_bytes());
        dst.put_u8(b'\n');
        for (n, v) in &self.headers {
            dst.put_slice(n.as_bytes());
            dst.put_slice(b": ");
            dst.put_slice(v.as_bytes());
            dst.put_u8(b'\n');
        }
        if let Some(b) = &self.body {
            dst.put_slice(format!("content-length: {}\n\n", b.len()).as_bytes());
            dst.put_slice(b);
        } else {
            dst.put_u8(b'\n');
        }
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The password must never reach a log line.
        let line = if self.secret {
            "auth <redacted>"
        } else {
            &self.line
        };
        f.debug_struct("Command")
            .field("line", &line)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(events: &[&str], custom: &[&str]) -> Subscription {
        custom
            .iter()
            .fold(Subscription::new().events(events).unwrap(), |s, c| {
                s.custom(c).unwrap()
            })
            .with_background_job()
    }

    #[test]
    fn event_command_puts_custom_subclasses_after_every_event_name() {
        let c = Command::event(
            EventFormat::Plain,
            &subs(
                &["CHANNEL_CREATE", "CHANNEL_HANGUP_COMPLETE"],
                &["callcenter::info"],
            ),
        )
        .unwrap();
        assert_eq!(
            wire(&c),
            "event plain CHANNEL_CREATE CHANNEL_HANGUP_COMPLETE BACKGROUND_JOB CUSTOM callcenter::info\n\n"
        );
    }

    fn wire(c: &Command) -> String {
        let mut b = BytesMut::new();
        c.encode(&mut b);
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn encodes_like_the_captured_client() {
        assert_eq!(wire(&Command::auth("ClueCon").unwrap()), "auth ClueCon\n\n");
        assert_eq!(wire(&Command::api("status").unwrap()), "api status\n\n");
        assert_eq!(
            wire(&Command::bgapi("status", "0c9e6c1a-4f0e-4b59-9a3c-2f1f7c0a1b11").unwrap()),
            "bgapi status\nJob-UUID: 0c9e6c1a-4f0e-4b59-9a3c-2f1f7c0a1b11\n\n"
        );
        assert_eq!(
            wire(&Command::event(EventFormat::Plain, &subs(&["CHANNEL_ANSWER"], &[])).unwrap()),
            "event plain CHANNEL_ANSWER BACKGROUND_JOB\n\n"
        );
        assert_eq!(wire(&Command::linger(Some(2))), "linger 2\n\n");
        assert_eq!(
            wire(
                &Command::sendmsg(
                    None,
                    &[
                        ("call-command", "hangup"),
                        ("hangup-cause", "NORMAL_CLEARING")
                    ],
                    None
                )
                .unwrap()
            ),
            "sendmsg\ncall-command: hangup\nhangup-cause: NORMAL_CLEARING\n\n"
        );
    }

    #[test]
    fn sendmsg_body_carries_its_length_in_bytes() {
        let c = Command::sendmsg(Some("abc"), &[("call-command", "execute")], Some("olá")).unwrap();
        assert_eq!(
            wire(&c),
            "sendmsg abc\ncall-command: execute\ncontent-type: text/plain\ncontent-length: 4\n\nolá"
        );
    }

    #[test]
    fn refuses_every_line_break_injection() {
        for evil in ["status\nexit", "status\r\napi x", "\n", "x\r"] {
            assert!(
                matches!(Command::api(evil), Err(CommandError::LineBreak { .. })),
                "{evil:?}"
            );
            assert!(Command::bgapi(evil, "1234").is_err());
            assert!(Command::auth(evil).is_err());
            assert!(Command::filter("Unique-ID", evil).is_err());
            assert!(Command::sendmsg(None, &[("execute-app-arg", evil)], None).is_err());
        }
        assert!(Command::sendmsg(None, &[("a:b", "x")], None).is_err());
        assert!(Command::sendmsg(None, &[("a\nb", "x")], None).is_err());
        assert!(Command::bgapi("status", "not a uuid").is_err());
        assert!(Command::bgapi("status", &"a".repeat(65)).is_err());
        assert!(Command::event(EventFormat::Plain, &Subscription::new()).is_err());
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = Command::auth("s3cret").unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
