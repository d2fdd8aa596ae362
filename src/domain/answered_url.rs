//! The "dialer answered" webhook URL: `finaz.answered_url` with each placeholder replaced by
//! its value, percent-encoded (RFC 3986: only `A-Z a-z 0-9 - . _ ~` stay as they are).

use super::template::{Rules, Template};

/// A placeholder of the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Pid,
    Num,
    Cid,
    Ramal,
    EmpresaId,
}

const KEY: &str = "finaz.answered_url";

const RULES: Rules<'static, Field> = Rules {
    known: &[
        ("pid", Field::Pid),
        ("num", Field::Num),
        ("cid", Field::Cid),
        ("ramal", Field::Ramal),
        ("empresa_id", Field::EmpresaId),
    ],
    required: &[Field::Pid],
    text: None,
};

/// The parsed, checked template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnsweredUrl {
    raw: String,
    template: Template<Field>,
}

impl AnsweredUrl {
    /// Parses and checks the template: an http(s) URL once filled, `{pid}` in it. The error
    /// names `finaz.answered_url`.
    pub fn parse(template: &str) -> Result<Self, String> {
        if !(template.starts_with("https://") || template.starts_with("http://")) {
            return Err(format!(
                "{KEY} = {template:?} must start with https:// or http://"
            ));
        }
        let url = AnsweredUrl {
            raw: template.to_string(),
            template: Template::parse(KEY, template, &RULES)?,
        };
        // A template that does not make a URL fails now, not at the first answered call.
        let sample = url.render("1", "41988445566", "x", "1001", "1");
        reqwest::Url::parse(&sample)
            .map_err(|e| format!("{KEY} = {template:?} is not a URL: {e}"))?;
        Ok(url)
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn render(&self, pid: &str, num: &str, cid: &str, ramal: &str, empresa_id: &str) -> String {
        self.template.render(|out, f| {
            let value = match f {
                Field::Pid => pid,
                Field::Num => num,
                Field::Cid => cid,
                Field::Ramal => ramal,
                Field::EmpresaId => empresa_id,
            };
            out.extend(percent_encoding::utf8_percent_encode(value, UNRESERVED));
        })
    }
}

/// RFC 3986 unreserved characters stay as they are; every other byte is `%XX`.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_percent_encoded_in_its_place() {
        let url = AnsweredUrl::parse(
            "https://api.finaz.com.br/telephony-proxy/atendimentodiscador?pid={pid}&num={num}&cid={cid}&ramal={ramal}&empresald={empresa_id}",
        )
        .unwrap();
        assert_eq!(
            url.render("CRM 7+1&x=ção", "+55 41 98844-5566", "d1a1", "1001", ""),
            "https://api.finaz.com.br/telephony-proxy/atendimentodiscador?pid=CRM%207%2B1%26x%3D%C3%A7%C3%A3o&num=%2B55%2041%2098844-5566&cid=d1a1&ramal=1001&empresald="
        );
        for bad in [
            "not a url {pid}",
            "http://x/{pid}{nope}",
            "http://x/?num={num}",
            "http://x/{pid",
            "ftp://x/{pid}",
        ] {
            let e = AnsweredUrl::parse(bad).unwrap_err();
            assert!(e.starts_with("finaz.answered_url = "), "{e}");
        }
    }
}
