//! The one place that turns a click2call into `originate` command text for FreeSWITCH.
//!
//! The inputs are validated types ([`Ramal`], [`Telefone`], [`CallId`]) and templates checked
//! once at startup ([`OriginatePlan::new`]); every value written into the `{...}` variable
//! block goes through [`push_var`], which refuses anything that could end the value, the
//! block or the line. So no byte from a request can add a variable, a second dial string, an
//! application or a command.

use std::fmt::Write;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::layout::RecordingLayout;
use super::template::{Rules, Template, TextRule};
use super::values::{CallId, Ramal, Telefone};

/// The values an originate template takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Ramal,
    Telefone,
}

const FIELDS: &[(&str, Field)] = &[("ramal", Field::Ramal), ("telefone", Field::Telefone)];

/// A template of validated values: nothing in a [`Ramal`] or a [`Telefone`] can escape it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Values(Template<Field>);

impl Values {
    fn parse(
        key: &str,
        raw: &str,
        known: &[(&str, Field)],
        required: &[Field],
        allowed: fn(char) -> bool,
        what: &str,
    ) -> Result<Self, String> {
        let rules = Rules {
            known,
            required,
            text: Some(TextRule { allowed, what }),
        };
        Template::parse(key, raw, &rules).map(Values)
    }

    fn empty() -> Self {
        Values(
            Template::parse(
                "",
                "",
                &Rules {
                    known: &[],
                    required: &[],
                    text: None,
                },
            )
            .expect("empty"),
        )
    }

    fn render(&self, ramal: &Ramal, telefone: &Telefone) -> String {
        self.0.render(|out, f| {
            out.push_str(match f {
                Field::Ramal => ramal.as_str(),
                Field::Telefone => telefone.as_str(),
            })
        })
    }
}

/// Characters of a dial string outside placeholders: `sofia/internal/1001@pbx.example;transport=tcp`.
fn dial_string_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-.@:/+=;".contains(c)
}

/// An extension in a dialplan: digits, letters and the usual `+*#` prefixes.
fn extension_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-.+*#".contains(c)
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-.".contains(c)
}

fn caller_id_name_char(c: char) -> bool {
    c.is_alphanumeric() || " _-.+@".contains(c)
}

fn caller_id_number_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-.+*#".contains(c)
}

fn path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "/_-.".contains(c)
}

/// Why a value could not be written into the variable block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("channel variable {name}: value holds {bad:?}, which could escape the variable block")]
pub struct UnsafeValue {
    pub name: &'static str,
    pub bad: char,
}

/// Appends `name=value` to a `{...}` block, quoting values with spaces. Refuses (whatever its
/// caller validated) any character that ends a value, a block, a quote or a line, starts a
/// delimiter change (`^^`) or a variable expansion (`$`), or joins dial strings (`|`, `&`).
pub fn push_var(out: &mut String, name: &'static str, value: &str) -> Result<(), UnsafeValue> {
    if let Some(bad) = value
        .chars()
        .find(|c| c.is_control() || ",{}[]'\"^|&$\\<>`".contains(*c))
    {
        return Err(UnsafeValue { name, bad });
    }
    if !out.ends_with('{') {
        out.push(',');
    }
    if value.contains(' ') {
        let _ = write!(out, "{name}='{value}'");
    } else {
        let _ = write!(out, "{name}={value}");
    }
    Ok(())
}

/// How click2calls are originated, checked once from the configuration.
#[derive(Debug, Clone)]
pub struct OriginatePlan {
    operator_endpoint: Values,
    extension: Values,
    dialplan: Option<String>,
    context: Option<String>,
    caller_id_name: Values,
    caller_id_number: Values,
    timeout: Duration,
    recordings: Option<RecordingLayout>,
    stereo: bool,
}

/// What an [`OriginatePlan`] is built from: the `[freeswitch]` templates and the
/// `[recordings]` settings (the configuration fills it; this module knows nothing of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanSettings {
    pub operator_endpoint: String,
    pub customer_destination: String,
    pub caller_id_name: String,
    pub caller_id_number: String,
    pub originate_timeout: Duration,
    /// Whether click2calls are recorded (`recordings.record_click2call`).
    pub record: bool,
    /// Where recordings go (`recordings.dir`, `recordings.path_template`).
    pub layout: RecordingLayout,
    pub stereo: bool,
}

/// What one originate will do: the command text and where its recording will be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Originate {
    /// `originate {...}user/1001 41988445566 XML default`, for `bgapi`.
    pub command: String,
    /// The file FreeSWITCH records the call to, when recording is on.
    pub recording_path: Option<PathBuf>,
}

impl OriginatePlan {
    /// Checks every template and path; `Err` lists each problem with its config key.
    pub fn new(fs: &PlanSettings) -> Result<Self, Vec<String>> {
        let rec = fs;
        let mut errs = Vec::new();
        fn take(errs: &mut Vec<String>, r: Result<Values, String>) -> Values {
            r.unwrap_or_else(|e| {
                errs.push(e);
                Values::empty()
            })
        }
        let operator_endpoint = take(
            &mut errs,
            Values::parse(
                "freeswitch.operator_endpoint",
                &fs.operator_endpoint,
                &FIELDS[..1],
                &[Field::Ramal],
                dial_string_char,
                "one dial string: letters, digits and _-.@:/+=;",
            ),
        );
        let mut words = fs.customer_destination.split_whitespace();
        let extension = take(
            &mut errs,
            Values::parse(
                "freeswitch.customer_destination",
                words.next().unwrap_or(""),
                FIELDS,
                &[],
                extension_char,
                "\"<extension> [dialplan] [context]\"; the extension may hold letters, digits and _-.+*#",
            ),
        );
        let dialplan = words.next().map(str::to_string);
        let context = words.next().map(str::to_string);
        if words.next().is_some() {
            errs.push(format!(
                "freeswitch.customer_destination = {:?} must be \"<extension> [dialplan] [context]\"",
                fs.customer_destination
            ));
        }
        for word in dialplan.iter().chain(context.iter()) {
            if !word.chars().all(name_char) {
                errs.push(format!(
                    "freeswitch.customer_destination: dialplan and context are names (letters, digits, _-.), not {word:?}"
                ));
            }
        }
        let caller_id_name = take(
            &mut errs,
            Values::parse(
                "freeswitch.caller_id_name",
                &fs.caller_id_name,
                FIELDS,
                &[],
                caller_id_name_char,
                "letters, digits, spaces and _-.+@",
            ),
        );
        let caller_id_number = take(
            &mut errs,
            Values::parse(
                "freeswitch.caller_id_number",
                &fs.caller_id_number,
                FIELDS,
                &[],
                caller_id_number_char,
                "letters, digits and _-.+*#",
            ),
        );
        if !extension.0.has(Field::Telefone)
            && !errs.iter().any(|e| e.contains("customer_destination"))
        {
            errs.push(format!(
                "freeswitch.customer_destination = {:?} must contain {{telefone}}",
                fs.customer_destination
            ));
        }
        if fs.originate_timeout.as_secs() == 0 {
            errs.push("freeswitch.originate_timeout must be at least 1s".into());
        }
        let recordings = if rec.record {
            match check_recordings_dir(rec.layout.dir())
                .and_then(|()| check_path_template(rec.layout.template()))
            {
                Ok(()) => Some(rec.layout.clone()),
                Err(e) => {
                    errs.push(e);
                    None
                }
            }
        } else {
            None
        };
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(OriginatePlan {
            operator_endpoint,
            extension,
            dialplan,
            context,
            caller_id_name,
            caller_id_number,
            timeout: fs.originate_timeout,
            recordings,
            stereo: rec.stereo,
        })
    }

    /// The originate for one click2call whose channel uuid (and call id) is `call`, placed
    /// at `unix_ms` (the recording's day).
    pub fn render(
        &self,
        call: &CallId,
        ramal: &Ramal,
        telefone: &Telefone,
        unix_ms: i64,
    ) -> Result<Originate, UnsafeValue> {
        let mut cmd = String::from("originate {");
        push_var(&mut cmd, "origination_uuid", call.as_str())?;
        push_var(&mut cmd, "finaz_callid", call.as_str())?;
        push_var(&mut cmd, "finaz_ramal", ramal.as_str())?;
        push_var(&mut cmd, "finaz_telefone", telefone.as_str())?;
        push_var(
            &mut cmd,
            "originate_timeout",
            &self.timeout.as_secs().to_string(),
        )?;
        let name = self.caller_id_name.render(ramal, telefone);
        if !name.is_empty() {
            push_var(&mut cmd, "origination_caller_id_name", &name)?;
        }
        let number = self.caller_id_number.render(ramal, telefone);
        if !number.is_empty() {
            push_var(&mut cmd, "origination_caller_id_number", &number)?;
        }
        let recording_path = self
            .recordings
            .as_ref()
            .map(|layout| layout.path(call.as_str(), unix_ms));
        if let Some(path) = &recording_path {
            if self.stereo {
                push_var(&mut cmd, "record_stereo", "true")?;
            }
            // A literal path: FreeSWITCH refuses ${...} in variables sent over the socket.
            let path = path.to_str().unwrap_or_default();
            push_var(
                &mut cmd,
                "execute_on_answer",
                &format!("record_session {path}"),
            )?;
        }
        cmd.push('}');
        cmd.push_str(&self.operator_endpoint.render(ramal, telefone));
        cmd.push(' ');
        cmd.push_str(&self.extension.render(ramal, telefone));
        for word in self.dialplan.iter().chain(self.context.iter()) {
            cmd.push(' ');
            cmd.push_str(word);
        }
        Ok(Originate {
            command: cmd,
            recording_path,
        })
    }
}

/// `recordings.path_template` ends up inside a command line too: plain characters.
fn check_path_template(template: &str) -> Result<(), String> {
    if template
        .chars()
        .all(|c| path_char(c) || c == '{' || c == '}')
    {
        Ok(())
    } else {
        Err(format!(
            "recordings.path_template = {template:?} must hold only letters, digits, /_-. and placeholders (FreeSWITCH gets it on a command line), or set recordings.record_click2call = false"
        ))
    }
}

/// `recordings.dir` ends up inside a command line: absolute, plain characters, no `..`.
fn check_recordings_dir(dir: &Path) -> Result<(), String> {
    let s = dir.to_str().unwrap_or("");
    let plain = !s.is_empty() && s.chars().all(path_char);
    let normal = dir.is_absolute()
        && dir
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if plain && normal {
        Ok(())
    } else {
        Err(format!(
            "recordings.dir = {:?} must be an absolute path of letters, digits and /_-. without '..' (FreeSWITCH gets it on a command line), or set recordings.record_click2call = false",
            dir.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped defaults (src/config/default.toml).
    fn defaults() -> PlanSettings {
        PlanSettings {
            operator_endpoint: "user/{ramal}".into(),
            customer_destination: "{telefone} XML default".into(),
            caller_id_name: "Finaz".into(),
            caller_id_number: String::new(),
            originate_timeout: Duration::from_secs(30),
            record: true,
            layout: RecordingLayout::parse(
                "/var/lib/freeswitch/recordings",
                "{yyyy}/{mm}/{dd}/{uuid}.wav",
            )
            .unwrap(),
            stereo: false,
        }
    }

    fn plan_with(edit: impl FnOnce(&mut PlanSettings)) -> Result<OriginatePlan, Vec<String>> {
        let mut s = defaults();
        edit(&mut s);
        OriginatePlan::new(&s)
    }

    fn call() -> CallId {
        CallId::parse("33c74a7d-a7d7-4947-94d0-d95bac1b228a").unwrap()
    }

    #[test]
    fn default_plan_renders_the_captured_shape() {
        let plan = plan_with(|_| {}).unwrap();
        let o = plan
            .render(
                &call(),
                &Ramal::parse("1001").unwrap(),
                &Telefone::parse("(41) 98844-5566").unwrap(),
                1_795_651_200_000,
            )
            .unwrap();
        assert_eq!(
            o.command,
            "originate {origination_uuid=33c74a7d-a7d7-4947-94d0-d95bac1b228a,\
             finaz_callid=33c74a7d-a7d7-4947-94d0-d95bac1b228a,finaz_ramal=1001,\
             finaz_telefone=41988445566,originate_timeout=30,origination_caller_id_name=Finaz,\
             execute_on_answer='record_session /var/lib/freeswitch/recordings/2026/11/26/\
             33c74a7d-a7d7-4947-94d0-d95bac1b228a.wav'}user/1001 41988445566 XML default"
        );
        assert_eq!(
            o.recording_path.unwrap(),
            PathBuf::from(
                "/var/lib/freeswitch/recordings/2026/11/26/33c74a7d-a7d7-4947-94d0-d95bac1b228a.wav"
            )
        );
    }

    #[test]
    fn stereo_caller_id_templates_and_no_recording() {
        let plan = plan_with(|fs| {
            fs.stereo = true;
            fs.caller_id_name = "Cliente {telefone}".into();
            fs.caller_id_number = "{telefone}".into();
            fs.operator_endpoint = "sofia/internal/{ramal}@pbx.example;transport=tcp".into();
            fs.customer_destination = "0{telefone} XML clientes".into();
        })
        .unwrap();
        let o = plan
            .render(
                &call(),
                &Ramal::parse("agent.7").unwrap(),
                &Telefone::parse("41988445566").unwrap(),
                1_767_312_000_000,
            )
            .unwrap();
        assert!(o.command.contains(",origination_caller_id_name='Cliente 41988445566',origination_caller_id_number=41988445566,record_stereo=true,execute_on_answer='record_session /var/lib/freeswitch/recordings/2026/01/02/"), "{}", o.command);
        assert!(
            o.command.ends_with(
                "}sofia/internal/agent.7@pbx.example;transport=tcp 041988445566 XML clientes"
            ),
            "{}",
            o.command
        );
        let plan = plan_with(|rec| rec.record = false).unwrap();
        let o = plan
            .render(
                &call(),
                &Ramal::parse("1001").unwrap(),
                &Telefone::parse("41988445566").unwrap(),
                1_767_312_000_000,
            )
            .unwrap();
        assert!(!o.command.contains("record_session"));
        assert_eq!(o.recording_path, None);
    }

    #[test]
    fn click2call_records_where_the_layout_says() {
        let plan = plan_with(|rec| {
            rec.layout = RecordingLayout::parse(rec.layout.dir(), "click2call/{uuid}.wav").unwrap()
        })
        .unwrap();
        let o = plan
            .render(
                &call(),
                &Ramal::parse("1001").unwrap(),
                &Telefone::parse("41988445566").unwrap(),
                1_767_312_000_000,
            )
            .unwrap();
        assert_eq!(
            o.recording_path.unwrap(),
            PathBuf::from(
                "/var/lib/freeswitch/recordings/click2call/33c74a7d-a7d7-4947-94d0-d95bac1b228a.wav"
            )
        );
        let errs = plan_with(|rec| {
            rec.layout = RecordingLayout::parse(rec.layout.dir(), "{uuid} x.wav").unwrap()
        })
        .unwrap_err();
        assert!(
            errs.iter().any(|e| e.contains("recordings.path_template")),
            "{errs:?}"
        );
    }

    #[test]
    fn unsafe_templates_are_refused_at_startup_with_their_key() {
        type Edit = Box<dyn Fn(&mut PlanSettings)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|fs| fs.operator_endpoint = "user/{ramal},user/666".into()),
                "freeswitch.operator_endpoint",
            ),
            (
                Box::new(|fs| fs.operator_endpoint = "{x}user/{ramal}".into()),
                "unknown placeholder",
            ),
            (
                Box::new(|fs| fs.operator_endpoint = "user/1001".into()),
                "must contain {ramal}",
            ),
            (
                Box::new(|fs| fs.operator_endpoint = "user/${ramal}".into()),
                "freeswitch.operator_endpoint",
            ),
            (
                Box::new(|fs| fs.customer_destination = "&park()".into()),
                "freeswitch.customer_destination",
            ),
            (
                Box::new(|fs| fs.customer_destination = "{telefone} XML default extra".into()),
                "customer_destination",
            ),
            (
                Box::new(|fs| fs.customer_destination = "{telefone} XML def'ault".into()),
                "dialplan and context",
            ),
            (
                Box::new(|fs| fs.caller_id_name = "a'b".into()),
                "freeswitch.caller_id_name",
            ),
            (
                Box::new(|fs| fs.caller_id_number = "1,2".into()),
                "freeswitch.caller_id_number",
            ),
            (
                Box::new(|rec| rec.layout = rec.layout.with_dir("relative/dir")),
                "recordings.dir",
            ),
            (
                Box::new(|rec| rec.layout = rec.layout.with_dir("/var/rec/../../etc")),
                "recordings.dir",
            ),
            (
                Box::new(|rec| rec.layout = rec.layout.with_dir("/var/my recordings")),
                "recordings.dir",
            ),
        ];
        for (edit, expect) in cases {
            let errs = plan_with(|fs| edit(fs)).unwrap_err();
            assert!(
                errs.iter().any(|e| e.contains(expect)),
                "{expect}: {errs:?}"
            );
        }
        // A bad recordings.dir is fine when the adapter does not record.
        assert!(
            plan_with(|rec| {
                rec.layout = rec.layout.with_dir("relative");
                rec.record = false;
            })
            .is_ok()
        );
    }

    #[test]
    fn push_var_refuses_every_escape_whatever_the_caller_checked() {
        for bad in [
            "a\nb", "a\rb", "a,b", "a}b", "a{b", "a'b", "a\"b", "^^:a", "a|b", "a&b", "${x}",
            "a\\b", "a\0b", "a[b", "a]b",
        ] {
            let mut out = String::from("{");
            assert!(push_var(&mut out, "v", bad).is_err(), "{bad:?}");
            assert_eq!(out, "{", "nothing written for {bad:?}");
        }
        let mut out = String::from("{");
        push_var(&mut out, "a", "1").unwrap();
        push_var(&mut out, "b", "two words").unwrap();
        assert_eq!(out, "{a=1,b='two words'");
    }
}
