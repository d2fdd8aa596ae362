//! The "dialer answered" webhook URL: `finaz.answered_url` with each placeholder replaced by
//! its value, percent-encoded (RFC 3986: only `A-Z a-z 0-9 - . _ ~` stay as they are).

/// A placeholder of the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Pid,
    Num,
    Cid,
    Ramal,
    EmpresaId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(Field),
}

/// The parsed template.
#[derive(Debug, Clone)]
pub struct AnsweredUrl(Vec<Piece>);

impl AnsweredUrl {
    /// Parses the template (its placeholders were checked with the configuration).
    pub fn parse(template: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in {template:?}"))?;
            let field = match &after[..close] {
                "pid" => Field::Pid,
                "num" => Field::Num,
                "cid" => Field::Cid,
                "ramal" => Field::Ramal,
                "empresa_id" => Field::EmpresaId,
                other => return Err(format!("unknown placeholder {{{other}}}")),
            };
            pieces.push(Piece::Field(field));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        let url = AnsweredUrl(pieces);
        // A template that does not make a URL fails now, not at the first answered call.
        let sample = url.render("1", "41988445566", "x", "1001", "1");
        reqwest::Url::parse(&sample).map_err(|e| format!("{template:?} is not a URL: {e}"))?;
        Ok(url)
    }

    pub fn render(&self, pid: &str, num: &str, cid: &str, ramal: &str, empresa_id: &str) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(f) => encode_into(
                    &mut out,
                    match f {
                        Field::Pid => pid,
                        Field::Num => num,
                        Field::Cid => cid,
                        Field::Ramal => ramal,
                        Field::EmpresaId => empresa_id,
                    },
                ),
            }
        }
        out
    }
}

/// RFC 3986 unreserved characters stay as they are; every other byte is `%XX`.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn encode_into(out: &mut String, value: &str) {
    out.extend(percent_encoding::utf8_percent_encode(value, UNRESERVED));
}

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
        assert!(AnsweredUrl::parse("not a url {pid}").is_err());
        assert!(AnsweredUrl::parse("http://x/{pid}{nope}").is_err());
    }
}
