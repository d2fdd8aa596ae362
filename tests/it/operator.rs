//! The operator's tools: sandbox, doctor, TLS, rate limit, the FreeSWITCH kit and the
//! OpenAPI description, each against the real binary or the running service.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::binary::{BIN, Running, free_port};
use crate::support::finaz::{FakeFinaz, param};
use crate::support::harness::{Extra, Harness};
use crate::support::standin::StandIn;

#[tokio::test]
async fn the_sandbox_plays_click2call_recording_and_dialer_over_real_http() {
    let finaz = FakeFinaz::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (http, admin) = (free_port(), free_port());
    let config = dir.path().join("sandbox.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [dialer]\nlisten = \"127.0.0.1:0\"\n[recordings]\ndir = \"{}\"\n\
             [finaz]\nanswered_url = \"{}\"\nempresa_id = \"42\"\n[storage]\nurl = \"sqlite://{}\"\n",
            dir.path().join("rec").display(),
            finaz.template(),
            dir.path().join("sandbox.db").display()
        ),
    )
    .unwrap();
    let mut sandbox = Running::spawn(&["sandbox"], &config, &[]);
    let base = format!("http://127.0.0.1:{http}");
    sandbox
        .wait_answering(&format!("http://127.0.0.1:{admin}/healthz"))
        .await;
    let client = crate::support::http();
    // Ready once connected to the simulated FreeSWITCH.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = client
            .get(format!("http://127.0.0.1:{admin}/readyz"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-finaz-sandbox"], "true");
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "sandbox never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 1. Click2call.
    let r = client
        .post(format!("{base}/click2call"))
        .json(&json!({"ramal": "1001", "telefone": "41988445566"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-finaz-sandbox"], "true");
    let id = r.json::<Value>().await.unwrap()["callid"]
        .as_str()
        .unwrap()
        .to_string();
    // 2. Its recording, once the short call has played out.
    let deadline = Instant::now() + Duration::from_secs(15);
    let wav = loop {
        let r = client
            .get(format!("{base}/gravacao?callid={id}&telefone=41988445566"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-finaz-sandbox"], "true");
        if r.status() == 200 {
            assert_eq!(r.headers()["content-type"], "audio/wav");
            break r.bytes().await.unwrap();
        }
        assert_eq!(r.status(), 409, "in progress until the sandbox call ends");
        assert!(Instant::now() < deadline, "sandbox recording never ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(&wav[..4], b"RIFF");
    assert_eq!(&wav[8..12], b"WAVE");
    assert!(wav.len() > 8000 * 2, "seconds of audio, not an empty file");
    // The error paths are there to try too.
    let busy = client
        .post(format!("{base}/click2call"))
        .form(&[("ramal", "busy"), ("telefone", "41988445566")])
        .send()
        .await
        .unwrap();
    assert_eq!(busy.status(), 409);
    // 3. A dialer call fires the real webhook.
    let r = client
        .post(format!("http://127.0.0.1:{admin}/sandbox/dialer"))
        .json(&json!({"crm_id": "CRM-SANDBOX-1", "ramal": "1002"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["sandbox"], true);
    let cid = body["cid"].as_str().unwrap().to_string();
    let hits = finaz
        .wait_for(Duration::from_secs(10), |h| !h.is_empty())
        .await;
    assert_eq!(param(&hits[0], "pid"), Some("CRM-SANDBOX-1"));
    assert_eq!(param(&hits[0], "cid"), Some(cid.as_str()));
    assert_eq!(param(&hits[0], "ramal"), Some("1002"));
    assert_eq!(param(&hits[0], "empresald"), Some("42"));

    assert!(sandbox.signal("-TERM").await);
    let logs = sandbox.logs().await;
    let lines: Vec<&str> = logs.lines().filter(|l| !l.is_empty()).collect();
    assert!(lines.len() > 5, "{logs}");
    for l in lines {
        assert!(l.starts_with("SANDBOX "), "a log line not marked: {l}");
    }
    // The simulated switch's `socket` app saw the adapter wait for the park, as a real
    // FreeSWITCH needs, and no job result was lost to the subscription.
    assert!(!logs.contains("before the channel parked"), "{logs}");
    assert!(!logs.contains("not released after the park"), "{logs}");
}

/// Runs `doctor` on a config; (exit code, output).
fn doctor(config: &std::path::Path, ramal: &str) -> (i32, String) {
    let out = std::process::Command::new(BIN)
        .args(["doctor", "--ramal", ramal, "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn line<'a>(out: &'a str, check: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(check))
        .unwrap_or_else(|| panic!("no {check:?} line in:\n{out}"))
}

#[tokio::test]
async fn doctor_is_green_on_a_good_setup_and_names_what_is_wrong_on_bad_ones() {
    let fs = StandIn::start().await;
    let finaz = FakeFinaz::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rec")).unwrap();
    let write = |name: &str, password: &str, rec: &str, finaz_url: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[http]\nlisten = \"127.0.0.1:{}\"\n[admin]\nlisten = \"127.0.0.1:{}\"\n\
                 [dialer]\nlisten = \"127.0.0.1:{}\"\n\
                 [freeswitch]\naddress = \"{}\"\npassword = \"{password}\"\n\
                 [recordings]\ndir = \"{}\"\n[finaz]\nanswered_url = \"{finaz_url}\"\n\
                 [storage]\nurl = \"sqlite://{}\"\n",
                free_port(),
                free_port(),
                free_port(),
                fs.addr(),
                dir.path().join(rec).display(),
                dir.path().join("d.db").display()
            ),
        )
        .unwrap();
        path
    };
    let good = write("good.toml", "ClueCon", "rec", &finaz.template());
    let (code, out) = tokio::task::spawn_blocking(move || doctor(&good, "1001"))
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}");
    for check in [
        "event socket reachable",
        "password accepted",
        "events subscribed",
        // A bgapi result reached the subscription (it did not, with BACKGROUND_JOB after
        // CUSTOM, on a real FreeSWITCH and on this stand-in).
        "job results arrive",
        "operator endpoint",
        "recordings dir readable",
        "storage writable",
        "Finaz reachable",
        "http port free",
    ] {
        assert!(line(&out, check).starts_with("ok "), "{check}:\n{out}");
    }
    assert!(
        finaz.hits().iter().all(|h| !h.target.contains("pid=")),
        "no fake webhook"
    );

    let wrong = write("wrong.toml", "not-the-password", "rec", &finaz.template());
    let (code, out) = tokio::task::spawn_blocking(move || doctor(&wrong, "1001"))
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(line(&out, "password accepted").starts_with("FAIL"), "{out}");
    assert!(out.contains("fix: set freeswitch.password"), "{out}");

    let missing = write("missing.toml", "ClueCon", "no-such-dir", &finaz.template());
    let (code, out) = tokio::task::spawn_blocking(move || doctor(&missing, "1003"))
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(
        line(&out, "recordings dir readable").starts_with("FAIL"),
        "{out}"
    );
    assert!(
        line(&out, "operator endpoint").starts_with("FAIL"),
        "1003 has no phone:\n{out}"
    );
    assert!(line(&out, "password accepted").starts_with("ok"), "{out}");

    let nowhere = format!(
        "http://127.0.0.1:{}/telephony-proxy/atendimentodiscador?pid={{pid}}",
        free_port()
    );
    let unreachable = write("unreachable.toml", "ClueCon", "rec", &nowhere);
    let (code, out) = tokio::task::spawn_blocking(move || doctor(&unreachable, "1001"))
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(line(&out, "Finaz reachable").starts_with("FAIL"), "{out}");
    assert_eq!(out.matches("FAIL").count(), 1, "only Finaz fails:\n{out}");
}

#[tokio::test]
async fn https_with_a_certificate_made_here() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let cert_file = dir.path().join("cert.pem");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&cert_file, &cert_pem).unwrap();
    std::fs::write(&key_file, &key_pem).unwrap();
    let h = Harness::start(Extra {
        http: format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"",
            cert_file.display(),
            key_file.display()
        ),
        ..Extra::default()
    })
    .await;
    let addr = h.service().http_addr;
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .resolve("localhost", addr)
        .build()
        .unwrap();
    let r = client
        .post(format!("https://localhost:{}/click2call", addr.port()))
        .json(&json!({"ramal": "1001", "telefone": "41988445566"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.unwrap()["callid"].is_string());
    // Plain HTTP on the TLS port gets nothing.
    let plain = crate::support::http()
        .post(format!("http://127.0.0.1:{}/click2call", addr.port()))
        .timeout(Duration::from_secs(3))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    h.stop().await;
}

#[tokio::test]
async fn too_many_requests_from_one_address_get_429_with_retry_after() {
    let h = Harness::start(Extra {
        http: "rate_limit_per_minute = 60\nrate_limit_burst = 3".into(),
        ..Extra::default()
    })
    .await;
    let hit = || {
        h.http
            .post(h.url("/click2call"))
            .header("accept", "application/json")
            .form(&[("ramal", "1001"), ("telefone", "1")])
            .send()
    };
    for _ in 0..3 {
        assert_eq!(hit().await.unwrap().status(), 422);
    }
    let limited = hit().await.unwrap();
    assert_eq!(limited.status(), 429);
    let wait: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    assert_eq!(
        limited.json::<Value>().await.unwrap()["error"],
        "rate_limited"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(hit().await.unwrap().status(), 422, "a token came back");
    h.stop().await;
}

#[test]
fn every_freeswitch_file_is_well_formed_xml() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("freeswitch");
    let mut stack = vec![root];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "xml") {
                let text = std::fs::read_to_string(&path).unwrap();
                let doc = roxmltree::Document::parse(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let root = doc.root_element().tag_name().name();
                assert!(
                    ["include", "configuration"].contains(&root),
                    "{}: FreeSWITCH wants <include> or <configuration>, not <{root}>",
                    path.display()
                );
                seen += 1;
            }
        }
    }
    assert!(seen >= 3, "event socket, click2call and dialer snippets");
}

/// Which extension of `context` FreeSWITCH's XML dialplan runs for a tagged call to
/// `destination`: the first whose every condition matches (fields `destination_number` and
/// `${finaz_crm_id}`, which the test call carries).
fn routed(doc: &roxmltree::Document, context: &str, destination: &str) -> Option<String> {
    let ctx = doc
        .descendants()
        .find(|n| n.has_tag_name("context") && n.attribute("name") == Some(context))?;
    ctx.children()
        .filter(|n| n.has_tag_name("extension"))
        .find(|ext| {
            ext.children()
                .filter(|n| n.has_tag_name("condition"))
                .all(|c| {
                    let value = match c.attribute("field").unwrap() {
                        "destination_number" => destination,
                        "${finaz_crm_id}" => "7001",
                        other => panic!("condition on {other}: extend the test"),
                    };
                    regex::Regex::new(c.attribute("expression").unwrap())
                        .unwrap()
                        .is_match(value)
                })
        })
        .map(|ext| ext.attribute("name").unwrap().to_string())
}

/// The real-FreeSWITCH finding: with both extensions in one context, the customer-first
/// pattern also took the customer's number and operator-first calls went to
/// `user/41988445566`. Each pattern must be reachable where the docs send it.
#[test]
fn both_dialer_hand_off_patterns_are_reachable() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("freeswitch/dialplan/finaz_dialer.xml");
    let text = std::fs::read_to_string(&path).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap();
    assert_eq!(
        routed(&doc, "finaz_dialer", "1001").as_deref(),
        Some("finaz_dialer_customer_first")
    );
    assert_eq!(
        routed(&doc, "finaz_dialer_operator_first", "41988445566").as_deref(),
        Some("finaz_dialer_operator_first")
    );
    // The originate examples in the file name the context that runs their pattern.
    assert!(text.contains("&transfer(1001 XML finaz_dialer)"));
    assert!(text.contains("41988445566 XML finaz_dialer_operator_first"));
    let ops = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/operations.md"),
    )
    .unwrap();
    assert!(
        ops.contains("finaz_dialer_operator_first"),
        "docs name the context"
    );
}

#[tokio::test]
async fn slow_clients_get_408_or_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start(Extra {
        http: "request_timeout = \"300ms\"".into(),
        ..Extra::default()
    })
    .await;
    let addr = h.service().http_addr;
    // A body announced and never sent: 408 once the timeout passes.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /click2call HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"ramal\"",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let started = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(head.contains("request_timeout"), "{head}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    // A request head that never ends: the connection is closed.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /gravacao?callid=x HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed, not left hanging")
        .unwrap_or(0);
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");
    h.stop().await;
}

#[tokio::test]
async fn json_logs_in_the_sandbox_are_json_and_say_so() {
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let config = dir.path().join("sandbox.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [dialer]\nlisten = \"127.0.0.1:0\"\n[recordings]\ndir = \"{}\"\n\
             [storage]\nurl = \"sqlite://{}\"\n[log]\nformat = \"json\"\n",
            dir.path().join("rec").display(),
            dir.path().join("s.db").display()
        ),
    )
    .unwrap();
    let mut sandbox = Running::spawn(&["sandbox"], &config, &[]);
    sandbox
        .wait_answering(&format!("http://127.0.0.1:{admin}/healthz"))
        .await;
    assert!(sandbox.signal("-TERM").await);
    let logs = sandbox.logs().await;
    let mut lines = 0;
    for line in logs.lines().filter(|l| !l.is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["sandbox"], true, "{line}");
        assert!(v["fields"]["message"].is_string(), "{line}");
        lines += 1;
    }
    assert!(lines >= 3, "{logs}");
}

/// The admin listener answers what went wrong: an unknown path is 404, a wrong method 405
/// (with `Allow`), a body that is not JSON 400, one too large 413, another media type 415;
/// each with a code.
#[tokio::test]
async fn admin_refusals_say_what_went_wrong() {
    let h = Harness::start(Extra::default()).await;
    let http = crate::support::http();
    let url = |p: &str| format!("{}{p}", h.admin);
    let code = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap();
        (status, body["error"].as_str().unwrap_or("").to_string())
    };
    let cases = [
        (http.get(url("/nothing")), 404, "not_found"),
        (http.post(url("/metrics")), 405, "method_not_allowed"),
        (http.get(url("/sandbox/dialer")), 405, "method_not_allowed"),
        (
            http.post(url("/sandbox/dialer"))
                .header("content-type", "application/json")
                .body("{not json"),
            400,
            "malformed_body",
        ),
        (
            http.post(url("/sandbox/dialer"))
                .header("content-type", "application/json")
                .body(vec![b' '; 17 * 1024]),
            413,
            "body_too_large",
        ),
        (
            http.post(url("/sandbox/dialer"))
                .header("content-type", "text/plain")
                .body("{}"),
            415,
            "unsupported_media_type",
        ),
        // Not a sandbox: the endpoint exists, the simulator does not.
        (
            http.post(url("/sandbox/dialer"))
                .header("content-type", "application/json")
                .body(r#"{"ramal":"1001","telefone":"41988445566","crm_id":"X"}"#),
            404,
            "not_sandbox",
        ),
    ];
    let allow = http.post(url("/readyz")).send().await.unwrap();
    assert_eq!(allow.headers()["allow"], "GET");
    for (req, status, want) in cases {
        assert_eq!(
            code(req.send().await.unwrap()).await,
            (status, want.to_string())
        );
    }
    assert_eq!(
        http.get(url("/healthz")).send().await.unwrap().status(),
        200
    );
    h.stop().await;
}
