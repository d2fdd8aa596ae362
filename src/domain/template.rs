//! The one placeholder syntax of the configuration: `{name}` inside literal text. A template
//! is parsed once, against the names its setting knows, into text and typed fields; whoever
//! renders it supplies each field's value (escaped as its destination needs).

/// Literal text or a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<F> {
    Text(String),
    Field(F),
}

/// A parsed template whose placeholders are the field type `F`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template<F>(Vec<Piece<F>>);

/// What a template's setting accepts.
pub struct Rules<'a, F> {
    /// Each placeholder name with the field it stands for.
    pub known: &'a [(&'a str, F)],
    /// Fields that must appear.
    pub required: &'a [F],
    /// Which characters literal text may hold, if not any.
    pub text: Option<TextRule<'a>>,
}

/// The characters literal text may hold, and how to say so.
#[derive(Clone, Copy)]
pub struct TextRule<'a> {
    pub allowed: fn(char) -> bool,
    pub what: &'a str,
}

impl<F: Copy + PartialEq> Template<F> {
    /// Parses `raw` for the setting `key`; the error names the key and the value as written,
    /// then every problem found.
    pub fn parse(key: &str, raw: &str, rules: &Rules<'_, F>) -> Result<Self, String> {
        let mut problems: Vec<String> = Vec::new();
        let mut pieces = Vec::new();
        let mut rest = raw;
        while !rest.is_empty() {
            let (text, after) = match rest.find('{') {
                Some(open) => (&rest[..open], Some(&rest[open + 1..])),
                None => (rest, None),
            };
            if text.contains('}') {
                problems.push("stray '}'".into());
            }
            if let Some(rule) = rules.text
                && let Some(bad) = text.chars().find(|c| !(rule.allowed)(*c) && *c != '}')
            {
                problems.push(format!("{bad:?} is not allowed ({})", rule.what));
            }
            if !text.is_empty() {
                pieces.push(Piece::Text(text.to_string()));
            }
            let Some(after) = after else { break };
            let Some(close) = after.find('}') else {
                // What follows is unreadable: nothing more to say about it.
                return Err(format!("{key} = {raw:?}: unclosed '{{'"));
            };
            let name = &after[..close];
            match rules.known.iter().find(|(n, _)| *n == name) {
                Some((_, field)) => pieces.push(Piece::Field(*field)),
                None => {
                    let known: Vec<String> = rules
                        .known
                        .iter()
                        .map(|(n, _)| format!("{{{n}}}"))
                        .collect();
                    problems.push(format!(
                        "unknown placeholder {{{name}}} (known: {})",
                        known.join(", ")
                    ));
                }
            }
            rest = &after[close + 1..];
        }
        let template = Template(pieces);
        for required in rules.required {
            if !template.has(*required) {
                let (name, _) = rules
                    .known
                    .iter()
                    .find(|(_, f)| f == required)
                    .expect("a required field is a known one");
                problems.push(format!("must contain {{{name}}}"));
            }
        }
        problems.dedup();
        if problems.is_empty() {
            Ok(template)
        } else {
            Err(format!("{key} = {raw:?}: {}", problems.join("; ")))
        }
    }

    /// Whether the template holds `field`.
    pub fn has(&self, field: F) -> bool {
        self.0.contains(&Piece::Field(field))
    }

    /// The text with each field written by `value`.
    pub fn render(&self, mut value: impl FnMut(&mut String, F)) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(f) => value(&mut out, *f),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum F {
        A,
        B,
    }

    fn plain(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '/'
    }

    const RULES: Rules<'static, F> = Rules {
        known: &[("a", F::A), ("b", F::B)],
        required: &[F::A],
        text: Some(TextRule {
            allowed: plain,
            what: "letters, digits and /",
        }),
    };

    #[test]
    fn parses_text_and_fields_and_renders_them() {
        let t = Template::parse("k", "x/{a}/{b}{a}", &RULES).unwrap();
        assert!(t.has(F::B));
        let s = t.render(|out, f| out.push_str(if f == F::A { "1" } else { "2" }));
        assert_eq!(s, "x/1/21");
    }

    #[test]
    fn every_problem_names_the_key_and_the_value() {
        for (raw, problem) in [
            ("x/{a", "unclosed '{'"),
            ("x}/{a}", "stray '}'"),
            ("{a}{c}", "unknown placeholder {c} (known: {a}, {b})"),
            ("{b}", "must contain {a}"),
            (
                "{b}{c}",
                "unknown placeholder {c} (known: {a}, {b}); must contain {a}",
            ),
            ("{a} x", "' ' is not allowed (letters, digits and /)"),
        ] {
            let e = Template::parse("section.key", raw, &RULES).unwrap_err();
            assert_eq!(e, format!("section.key = {raw:?}: {problem}"));
        }
    }
}
