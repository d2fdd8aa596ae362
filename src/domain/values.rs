//! Values that come from Finaz, validated to a strict shape before anything else sees them.

use std::fmt;

/// Why a field from Finaz was refused; `field` names it for the 422 answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    pub field: &'static str,
    pub reason: &'static str,
}

/// An operator extension: letters, digits, `_`, `-`, `.`; 1 to 32 of them.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Ramal(String);

impl Ramal {
    pub fn parse(raw: &str) -> Result<Self, InvalidField> {
        let v = raw.trim();
        let err = |reason| InvalidField {
            field: "ramal",
            reason,
        };
        if v.is_empty() {
            return Err(err("is empty"));
        }
        if v.len() > 32 {
            return Err(err("is longer than 32 characters"));
        }
        if !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err(err("may only hold letters, digits, '_', '-' and '.'"));
        }
        Ok(Ramal(v.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A customer number: spaces, `-`, `(`, `)`, `.` and one leading `+` removed, then 8 to 15
/// digits (DDD + number, e.g. `41988445566`).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Telefone(String);

impl Telefone {
    pub fn parse(raw: &str) -> Result<Self, InvalidField> {
        let err = |reason| InvalidField {
            field: "telefone",
            reason,
        };
        let trimmed = raw.trim();
        let unsigned = trimmed.strip_prefix('+').unwrap_or(trimmed);
        let digits: String = unsigned
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
            .collect();
        if !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(err(
                "must be digits (spaces, '-', '(', ')', '.' and a leading '+' are ignored)",
            ));
        }
        if !(8..=15).contains(&digits.len()) {
            return Err(err("must have 8 to 15 digits"));
        }
        Ok(Telefone(digits))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An `Idempotency-Key` header value: 1 to 128 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Option<Self> {
        let v = raw.trim();
        (!v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
            .then(|| IdempotencyKey(v.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A call id we hand out: a lowercase hyphenated UUID, nothing else.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct CallId(String);

impl CallId {
    pub fn new() -> Self {
        CallId(uuid::Uuid::new_v4().to_string())
    }

    pub fn parse(raw: &str) -> Result<Self, InvalidField> {
        let v = raw.trim();
        match uuid::Uuid::try_parse(v) {
            Ok(u) if v.len() == 36 => Ok(CallId(u.to_string())),
            _ => Err(InvalidField {
                field: "callid",
                reason: "is not a call id",
            }),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for CallId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Ramal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ramal({})", self.0)
    }
}

impl fmt::Debug for Telefone {
    /// Masked: phone numbers stay out of logs by default (LGPD).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Telefone({})", mask_phone(&self.0, true))
    }
}

/// An optional phone number for `Debug`: masked, whatever the struct holding it.
pub struct MaskedPhone<'a>(pub Option<&'a str>);

impl fmt::Debug for MaskedPhone<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => write!(f, "Some({:?})", mask_phone(n, true)),
            None => f.write_str("None"),
        }
    }
}

/// A phone number (or any value that may be one) as logs show it: the first 4 and last 3
/// characters, stars between; all stars below 8 characters. Counts characters, not bytes,
/// so any text is safe: `+55\u{a0}41988445566` or `419–88445566` mask like digits do.
pub fn mask_phone(number: &str, enabled: bool) -> String {
    if !enabled {
        return number.to_string();
    }
    let chars: Vec<char> = number.chars().collect();
    if chars.len() < 8 {
        return "*".repeat(chars.len());
    }
    let (head, tail) = (4, 3);
    let mut out: String = chars[..head].iter().collect();
    out.push_str(&"*".repeat(chars.len() - head - tail));
    out.extend(&chars[chars.len() - tail..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_counts_characters_so_no_text_can_panic() {
        assert_eq!(mask_phone("41988445566", true), "4198****566");
        assert_eq!(mask_phone("41988445566", false), "41988445566");
        assert_eq!(mask_phone("123", true), "***");
        assert_eq!(
            mask_phone("+55\u{a0}41988445566", true),
            "+55\u{a0}********566"
        );
        assert_eq!(mask_phone("419–88445566", true), "419–*****566");
        assert_eq!(mask_phone("ção😀çã", true), "******");
        assert_eq!(mask_phone("ção😀ção😀", true), "ção😀*ão😀");
        assert_eq!(mask_phone("ção😀ção😀ção", true), "ção😀****ção");
    }

    #[test]
    fn telefone_accepts_common_writings_and_normalises_them() {
        for raw in [
            "41988445566",
            "(41) 98844-5566",
            "+55 41 98844.5566",
            " 4198844 5566 ",
        ] {
            let t = Telefone::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert!(t.as_str().chars().all(|c| c.is_ascii_digit()), "{raw}");
        }
        assert_eq!(
            Telefone::parse("+55 (41) 98844-5566").unwrap().as_str(),
            "5541988445566"
        );
    }

    #[test]
    fn telefone_refuses_short_long_and_foreign_characters() {
        for raw in [
            "1234567",
            "1234567890123456",
            "",
            "++5541988445566",
            "4198844556a",
            "4198844\n5566",
            "4198844&5566",
            "41988445566,user/1",
            "{x}41988445566",
            "41'988445566",
            "4198^8445566",
            "4198|8445566",
        ] {
            let e = Telefone::parse(raw).unwrap_err();
            assert_eq!(e.field, "telefone", "{raw:?}");
        }
    }

    #[test]
    fn ramal_refuses_anything_outside_its_alphabet() {
        assert_eq!(Ramal::parse("1001").unwrap().as_str(), "1001");
        assert!(Ramal::parse("agent_7.sp-2").is_ok());
        for raw in [
            "",
            "10 01",
            "1001\nexit",
            "1001&park",
            "1001,1002",
            "{a=b}1001",
            "1001'",
            "1^1",
            "1|2",
            "user/1001",
            "1001@dom",
            &"1".repeat(33),
        ] {
            assert_eq!(Ramal::parse(raw).unwrap_err().field, "ramal", "{raw:?}");
        }
    }

    #[test]
    fn call_ids_are_uuids_only() {
        let id = CallId::new();
        assert_eq!(CallId::parse(id.as_str()).unwrap(), id);
        for raw in [
            "",
            "../../etc/passwd",
            "33c74a7d-a7d7-4947-94d0-d95bac1b228a.wav",
            "33c74a7da7d7494794d0d95bac1b228a",
        ] {
            assert!(CallId::parse(raw).is_err(), "{raw:?}");
        }
    }
}
