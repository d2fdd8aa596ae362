//! `docs/openapi.yaml` checked against the running service: every answer a scenario gets is
//! documented for its path and method (status, media type, Retry-After, error schema), and
//! every documented error code exists in the code.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::harness::{Extra, Harness};
use crate::support::standin::Outcome;

fn spec() -> Value {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml")).unwrap();
    serde_norway::from_str(&text).unwrap()
}

/// Follows `$ref: '#/components/...'`.
fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let mut cur = spec;
            for part in r.trim_start_matches("#/").split('/') {
                cur = &cur[part];
            }
            resolve(spec, cur)
        }
        None => v,
    }
}

struct Answer {
    status: u16,
    content_type: String,
    retry_after: bool,
    body: Vec<u8>,
}

fn check(spec: &Value, path: &str, method: &str, a: &Answer, seen: &mut BTreeSet<String>) {
    let op = &spec["paths"][path][method];
    assert!(op.is_object(), "{method} {path} not in the spec");
    let doc = op["responses"]
        .get(a.status.to_string())
        .unwrap_or_else(|| {
            panic!(
                "{method} {path} answered {} which the spec does not list",
                a.status
            )
        });
    let doc = resolve(spec, doc);
    if let Some(content) = doc.get("content").and_then(Value::as_object) {
        let media = a.content_type.split(';').next().unwrap_or("").trim();
        let schema = content.get(media).unwrap_or_else(|| {
            panic!(
                "{method} {path} {}: media type {media:?} not documented",
                a.status
            )
        });
        let schema = resolve(spec, &schema["schema"]);
        if media == "text/plain" && a.status >= 400 {
            let code = String::from_utf8_lossy(&a.body).into_owned();
            let errors = &spec["components"]["schemas"]["Error"]["properties"]["error"]["enum"];
            assert!(
                errors.as_array().unwrap().iter().any(|c| *c == code),
                "text error {code:?} is not in the spec's enum"
            );
            seen.insert(code);
        }
        if media == "application/json" {
            let body: Value = serde_json::from_slice(&a.body).unwrap();
            for field in schema["required"].as_array().into_iter().flatten() {
                let f = field.as_str().unwrap();
                assert!(
                    body.get(f).is_some(),
                    "{method} {path} {}: no {f} in {body}",
                    a.status
                );
            }
            if let Some(code) = body.get("error").and_then(Value::as_str) {
                let allowed = schema["properties"]["error"]["enum"].as_array().unwrap();
                assert!(
                    allowed.iter().any(|c| c == code),
                    "error code {code} is not in the spec's enum"
                );
                seen.insert(code.to_string());
            }
        }
    }
    if a.retry_after {
        assert!(
            doc.get("headers")
                .and_then(|h| h.get("Retry-After"))
                .is_some(),
            "{method} {path} {} sends Retry-After; the spec does not say so",
            a.status
        );
    }
}

async fn answer(r: reqwest::RequestBuilder) -> Answer {
    let r = r.send().await.unwrap();
    Answer {
        status: r.status().as_u16(),
        content_type: r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default(),
        retry_after: r.headers().contains_key("retry-after"),
        body: r.bytes().await.unwrap().to_vec(),
    }
}

#[tokio::test]
async fn the_spec_describes_what_the_service_answers() {
    let spec = spec();
    let defaults = finaz_freeswitch::config::load(None).unwrap().1.http;
    assert!(spec["paths"][&defaults.click2call_path]["post"].is_object());
    assert!(spec["paths"][&defaults.recording_path]["get"].is_object());

    let h = Harness::start(Extra {
        http: "chave = \"chave-for-openapi\"".into(),
        freeswitch: "originate_response_timeout = \"300ms\"".into(),
        ..Extra::default()
    })
    .await;
    h.fs.script("user/2001", Outcome::Fail("USER_NOT_REGISTERED"));
    h.fs.script("user/2003", Outcome::Busy);
    h.fs.script("user/2004", Outcome::Fail("NO_ROUTE_DESTINATION"));
    h.fs.script("user/2005", Outcome::Silent);
    let ok = |ramal: &str| json!({"ramal": ramal, "telefone": "41988445566", "chave": "chave-for-openapi"});
    let c2c = || h.http.post(h.url("/click2call"));
    let mut seen = BTreeSet::new();
    let mut call_id = String::new();
    let scenarios: Vec<reqwest::RequestBuilder> = vec![
        c2c().json(&ok("1001")),
        c2c().form(&[
            ("ramal", "1002"),
            ("telefone", "41988445566"),
            ("chave", "chave-for-openapi"),
        ]),
        c2c().json(&json!({"ramal": "1001", "telefone": "41988445566"})),
        c2c().json(&json!({"ramal": "1001", "telefone": "41988445566", "chave": "wrong-chave"})),
        c2c().header("content-type", "application/json").body("{"),
        c2c().header("content-type", "text/xml").body("<a/>"),
        c2c().json(&json!({"ramal": "x".repeat(20_000)})),
        c2c().json(&json!({"ramal": "1001\nexit", "telefone": "1", "chave": "chave-for-openapi"})),
        c2c().json(&ok("2001")),
        c2c().json(&ok("2003")),
        c2c().json(&ok("2004")),
        c2c().json(&ok("2005")),
        c2c().header("idempotency-key", "k1").json(&ok("3001")),
        c2c().header("idempotency-key", "k1").json(&ok("3002")),
        h.http
            .get(h.url("/click2call"))
            .header("accept", "application/json"),
    ];
    // (The GET is answered 405, which the spec documents on the POST operation.)
    for (i, s) in scenarios.into_iter().enumerate() {
        let a = answer(s).await;
        check(&spec, "/click2call", "post", &a, &mut seen);
        if i == 0 {
            let v: Value = serde_json::from_slice(&a.body).unwrap();
            call_id = v["callid"].as_str().unwrap().to_string();
        }
    }
    // Downloads: in progress, then the file, a range, 304, 416, unknown, invalid.
    let dl = |q: &str| {
        h.http
            .get(h.url(&format!("/gravacao?chave=chave-for-openapi&{q}")))
    };
    let check_dl =
        |a: Answer, seen: &mut BTreeSet<String>| check(&spec, "/gravacao", "get", &a, seen);
    check_dl(answer(dl(&format!("callid={call_id}"))).await, &mut seen);
    h.fs.hangup(&call_id, "NORMAL_CLEARING");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let full = answer(dl(&format!("callid={call_id}"))).await;
    assert_eq!(full.status, 200);
    check_dl(full, &mut seen);
    check_dl(
        answer(dl(&format!("callid={call_id}")).header("range", "bytes=0-9")).await,
        &mut seen,
    );
    check_dl(
        answer(dl(&format!("callid={call_id}")).header("range", "bytes=99999999-")).await,
        &mut seen,
    );
    check_dl(
        answer(dl(&format!("callid={call_id}")).header("if-none-match", "*")).await,
        &mut seen,
    );
    check_dl(
        answer(dl("callid=d1a1e700-0000-4000-8000-0000000000ff")).await,
        &mut seen,
    );
    check_dl(answer(dl("callid=..%2F..%2Fetc%2Fpasswd")).await, &mut seen);
    check_dl(
        answer(h.http.get(h.url(&format!("/gravacao?callid={call_id}")))).await,
        &mut seen,
    );
    for code in [
        "missing_chave",
        "invalid_chave",
        "malformed_body",
        "unsupported_media_type",
        "body_too_large",
        "invalid_field",
        "extension_not_registered",
        "extension_busy",
        "originate_failed",
        "freeswitch_timeout",
        "idempotency_key_reused",
        "recording_in_progress",
        "call_not_found",
    ] {
        assert!(seen.contains(code), "scenario for {code} missing: {seen:?}");
    }
    h.stop().await;
}

#[test]
fn every_documented_error_code_exists_in_the_code() {
    let spec = spec();
    let codes = spec["components"]["schemas"]["Error"]["properties"]["error"]["enum"]
        .as_array()
        .unwrap();
    let mut source = String::new();
    for dir in ["src/http", "src/click2call", "src/recordings"] {
        let d = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "rs") {
                source.push_str(&std::fs::read_to_string(p).unwrap());
            }
        }
    }
    for c in codes {
        let c = c.as_str().unwrap();
        assert!(
            source.contains(&format!("\"{c}\"")),
            "{c} is documented but never answered"
        );
    }
}

/// The YAML slip that made standard validators reject the file: an unquoted comma in a flow
/// mapping (`{description: As GET, without the body.}`) silently makes a second key with no
/// value. No key of the description may be null. (CI also runs a standard validator.)
#[test]
fn no_key_of_the_description_is_left_without_a_value() {
    fn walk(v: &Value, at: &str, bad: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if v.is_null() {
                        bad.push(format!("{at}/{k}"));
                    }
                    walk(v, &format!("{at}/{k}"), bad);
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, &format!("{at}/{i}"), bad);
                }
            }
            _ => {}
        }
    }
    let mut bad = Vec::new();
    walk(&spec(), "", &mut bad);
    assert!(
        bad.is_empty(),
        "keys without a value (quote values holding a comma): {bad:?}"
    );
}
