//! Click2Call through real HTTP against the running service and the FreeSWITCH stand-in.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use finaz_freeswitch::storage::CallState;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::harness::{Extra, Harness};
use crate::support::standin::{Outcome, StandIn};

struct Reply {
    status: StatusCode,
    content_type: String,
    retry_after: Option<String>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// The error code, from a JSON or a text answer.
    fn error_code(&self) -> String {
        if self.content_type.starts_with("text/plain") {
            return self.body.clone();
        }
        self.json()["error"].as_str().unwrap().to_string()
    }
}

async fn send(req: reqwest::RequestBuilder) -> Reply {
    let r = req.send().await.unwrap();
    let header = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string());
    Reply {
        status: r.status(),
        content_type: header("content-type").unwrap_or_default(),
        retry_after: header("retry-after"),
        body: r.text().await.unwrap(),
    }
}

async fn post_json(h: &Harness, body: Value) -> Reply {
    send(h.http.post(h.url("/click2call")).json(&body)).await
}

/// The originate line that carried `call_id`.
fn originate_for(h: &Harness, call_id: &str) -> String {
    let lines: Vec<String> =
        h.fs.received_lines("bgapi originate")
            .into_iter()
            .filter(|l| l.contains(&format!("origination_uuid={call_id},")))
            .collect();
    assert_eq!(lines.len(), 1, "one originate for {call_id}: {lines:?}");
    lines.into_iter().next().unwrap()
}

/// Waits until the stored call reaches `state` (it is written after Finaz is answered).
async fn wait_state(
    storage: &finaz_freeswitch::storage::Storage,
    id: &str,
    state: CallState,
) -> finaz_freeswitch::storage::CallRecord {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let call = storage.find_call(id).await.unwrap().unwrap();
        if call.state == state {
            return call;
        }
        assert!(Instant::now() < deadline, "never {state:?}: {call:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn fast_timeout() -> Extra {
    Extra {
        freeswitch: "originate_response_timeout = \"500ms\"".into(),
        ..Extra::default()
    }
}

#[tokio::test]
async fn json_form_and_query_requests_each_get_their_call_id_in_kind() {
    let h = Harness::start(Extra::default()).await;

    let r = post_json(&h, json!({"ramal": "1001", "telefone": "(41) 98844-5566"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.content_type, "application/json");
    let id = r.json()["callid"].as_str().unwrap().to_string();
    let line = originate_for(&h, &id);
    assert!(line.contains(&format!("finaz_callid={id},")), "{line}");
    assert!(
        line.contains("finaz_ramal=1001,finaz_telefone=41988445566,"),
        "{line}"
    );
    assert!(
        line.ends_with("}user/1001 41988445566 XML default"),
        "{line}"
    );
    let recording = h.recordings().join(format!("{id}.wav"));
    let recording_dir = h.recordings();
    assert!(
        line.contains(&format!(
            "execute_on_answer='record_session {}/",
            recording_dir.display()
        )) && line.contains(&format!("/{id}.wav'")),
        "{line} (recording {})",
        recording.display()
    );

    let form = send(
        h.http
            .post(h.url("/click2call"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("ramal=1002&telefone=%2B55+41+98844-5566"),
    )
    .await;
    assert_eq!(form.status, 200, "{}", form.body);
    assert_eq!(form.content_type, "text/plain; charset=utf-8");
    assert!(
        originate_for(&h, &form.body).ends_with("}user/1002 5541988445566 XML default"),
        "the text body is only the id"
    );

    let query = send(
        h.http
            .post(h.url("/click2call?ramal=1003&telefone=41988445566")),
    )
    .await;
    assert_eq!(query.status, 200, "{}", query.body);
    assert!(originate_for(&h, &query.body).contains("}user/1003 "));

    let accept = send(
        h.http
            .post(h.url("/click2call"))
            .header("accept", "application/json")
            .form(&[("ramal", "1004"), ("telefone", "41988445566")]),
    )
    .await;
    assert_eq!(accept.content_type, "application/json");
    let accept_id = accept.json()["callid"].as_str().unwrap().to_string();

    // Every call is stored with what a recording lookup needs.
    let call = wait_state(&h.service().storage, &id, CallState::Answered).await;
    assert_eq!(call.ramal.as_deref(), Some("1001"));
    assert_eq!(call.telefone.as_deref(), Some("41988445566"));
    assert!(
        call.recording_path
            .as_deref()
            .is_some_and(|p| p.ends_with(&format!("{id}.wav")))
    );
    let ids: HashSet<_> = [id, form.body, query.body, accept_id].into_iter().collect();
    assert_eq!(ids.len(), 4);

    let metrics = h.metrics().await;
    assert!(
        metrics.contains("finaz_http_requests_total{endpoint=\"click2call\",outcome=\"ok\"} 4\n"),
        "{metrics}"
    );
    assert!(metrics.contains("finaz_click2call_latency_seconds_count 4\n"));
    h.stop().await;
}

#[tokio::test]
async fn answers_while_the_operator_phone_rings_and_follows_the_call_to_its_end() {
    let h = Harness::start(Extra::default()).await;
    h.fs.set_default(Outcome::Answer {
        ring: Duration::from_secs(30),
    });
    let started = Instant::now();
    let r = post_json(&h, json!({"ramal": "1001", "telefone": "41988445566"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered on CHANNEL_PROGRESS, not after the 30 s ring"
    );
    let id = r.json()["callid"].as_str().unwrap().to_string();
    let storage = &h.service().storage;
    wait_state(storage, &id, CallState::Ringing).await;
    // The operator never picks up: FreeSWITCH's own ring timeout ends it.
    assert!(h.fs.hangup(&id, "NO_ANSWER"));
    let call = wait_state(storage, &id, CallState::Failed).await;
    assert_eq!(call.outcome.as_deref(), Some("NO_ANSWER"));
    assert!(call.ended_at.is_some());
    // The call's task is gone once the call is.
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.service().click2call.live_calls() != 0 {
        assert!(
            Instant::now() < deadline,
            "the ended call is still followed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.stop().await;
}

#[tokio::test]
async fn an_answered_call_ends_with_its_hangup_cause() {
    let h = Harness::start(Extra::default()).await;
    let r = post_json(&h, json!({"ramal": "1001", "telefone": "41988445566"})).await;
    let id = r.json()["callid"].as_str().unwrap().to_string();
    let storage = &h.service().storage;
    wait_state(storage, &id, CallState::Answered).await;
    assert!(h.fs.hangup(&id, "NORMAL_CLEARING"));
    let call = wait_state(storage, &id, CallState::Ended).await;
    assert_eq!(call.outcome.as_deref(), Some("NORMAL_CLEARING"));
    assert!(call.answered_at.is_some() && call.ended_at >= call.answered_at);
    h.stop().await;
}

#[tokio::test]
async fn originate_failures_map_to_their_status_codes() {
    let h = Harness::start(fast_timeout()).await;
    h.fs.script("user/2001", Outcome::Fail("USER_NOT_REGISTERED"));
    h.fs.script("user/2002", Outcome::Fail("SUBSCRIBER_ABSENT"));
    h.fs.script("user/2003", Outcome::Busy);
    h.fs.script("user/2004", Outcome::Fail("NO_ROUTE_DESTINATION"));
    h.fs.script("user/2005", Outcome::Silent);
    let cases = [
        (
            "2001",
            404,
            "extension_not_registered",
            Some("USER_NOT_REGISTERED"),
        ),
        (
            "2002",
            404,
            "extension_not_registered",
            Some("SUBSCRIBER_ABSENT"),
        ),
        ("2003", 409, "extension_busy", Some("USER_BUSY")),
        (
            "2004",
            502,
            "originate_failed",
            Some("NO_ROUTE_DESTINATION"),
        ),
        ("2005", 504, "freeswitch_timeout", None),
    ];
    for (ramal, status, code, cause) in cases {
        let r = post_json(&h, json!({"ramal": ramal, "telefone": "41988445566"})).await;
        assert_eq!(r.status.as_u16(), status, "{ramal}: {}", r.body);
        let body = r.json();
        assert_eq!(body["error"], code, "{ramal}");
        assert_eq!(body["cause"].as_str(), cause, "{ramal}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(body.get("callid").is_none());
    }
    // Text mode: the code alone.
    let r = send(
        h.http
            .post(h.url("/click2call"))
            .form(&[("ramal", "2003"), ("telefone", "41988445566")]),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (409, "extension_busy")
    );
    assert_eq!(r.retry_after.as_deref(), Some("5"));
    // A timed-out originate is cancelled, so the operator is not rung behind Finaz's back.
    let silent = h.fs.received_lines("bgapi originate");
    let silent_id = silent
        .iter()
        .find(|l| l.contains("user/2005"))
        .and_then(|l| l.split("origination_uuid=").nth(1))
        .map(|s| s[..36].to_string())
        .unwrap();
    assert!(
        h.fs.received_lines(&format!("api uuid_kill {silent_id}"))
            .len()
            == 1
    );
    let call = wait_state(&h.service().storage, &silent_id, CallState::Failed).await;
    assert_eq!(call.outcome.as_deref(), Some("NO_RESPONSE_FROM_FREESWITCH"));
    let metrics = h.metrics().await;
    for code in [
        "extension_busy",
        "extension_not_registered",
        "originate_failed",
        "freeswitch_timeout",
    ] {
        assert!(
            metrics.contains(&format!("endpoint=\"click2call\",outcome=\"{code}\"}}")),
            "{code}: {metrics}"
        );
    }
    h.stop().await;
}

/// The real-FreeSWITCH finding: with `BACKGROUND_JOB` subscribed after `CUSTOM`, no job
/// result arrives and every failure waits the whole originate timeout for a 504. With the
/// default 10 s timeout, every job-level cause must come back at once with its own status.
#[tokio::test]
async fn every_job_level_cause_is_answered_at_once_with_its_status() {
    let h = Harness::start(Extra::default()).await;
    let cases = [
        ("USER_NOT_REGISTERED", 404, "extension_not_registered"),
        ("SUBSCRIBER_ABSENT", 404, "extension_not_registered"),
        ("USER_BUSY", 409, "extension_busy"),
        ("NO_ANSWER", 502, "originate_failed"),
        ("ORIGINATOR_CANCEL", 502, "originate_failed"),
        ("NO_ROUTE_DESTINATION", 502, "originate_failed"),
        ("CHAN_NOT_IMPLEMENTED", 502, "originate_failed"),
        ("NORMAL_TEMPORARY_FAILURE", 502, "originate_failed"),
    ];
    for (i, (cause, status, code)) in cases.iter().enumerate() {
        let ramal = format!("30{i:02}");
        h.fs.script(&format!("user/{ramal}"), Outcome::Fail(cause));
        let started = Instant::now();
        let r = post_json(&h, json!({"ramal": ramal, "telefone": "41988445566"})).await;
        let took = started.elapsed();
        assert_eq!(r.status.as_u16(), *status, "{cause}: {}", r.body);
        assert_eq!(r.json()["error"], *code, "{cause}");
        assert_eq!(r.json()["cause"], *cause, "{cause}");
        assert!(
            took < Duration::from_secs(1),
            "{cause} took {took:?}: the job result did not reach the service"
        );
    }
    h.stop().await;
}

#[tokio::test]
async fn a_phone_that_rings_after_the_timeout_is_hung_up() {
    let h = Harness::start(fast_timeout()).await;
    h.fs.set_default(Outcome::Late {
        after: Duration::from_millis(900),
    });
    let r = post_json(&h, json!({"ramal": "1001", "telefone": "41988445566"})).await;
    assert_eq!(r.status, 504, "{}", r.body);
    let line = h.fs.received_lines("bgapi originate").pop().unwrap();
    let id = &line.split("origination_uuid=").nth(1).unwrap()[..36];
    let deadline = Instant::now() + Duration::from_secs(5);
    // One kill at the timeout (no channel yet), one when it rang anyway.
    while h.fs.received_lines(&format!("api uuid_kill {id}")).len() < 2 {
        assert!(Instant::now() < deadline, "late call never killed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while !h.fs.live_channels().is_empty() {
        assert!(Instant::now() < deadline, "channel still up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.stop().await;
}

#[tokio::test]
async fn freeswitch_down_is_503_with_retry_after_and_a_restart_between_requests_heals() {
    let h = Harness::start(Extra::default()).await;
    let first = post_json(&h, json!({"ramal": "1001", "telefone": "41988445566"})).await;
    assert_eq!(first.status, 200);

    let mut h = h;
    h.fs.stop().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.service().esl.is_connected() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let down = post_json(&h, json!({"ramal": "1002", "telefone": "41988445566"})).await;
    assert_eq!(down.status, 503, "{}", down.body);
    assert_eq!(down.error_code(), "freeswitch_unavailable");
    assert_eq!(down.retry_after.as_deref(), Some("5"));

    h.fs.restart().await;
    assert!(h.service().esl.wait_connected(Duration::from_secs(5)).await);
    let second = post_json(&h, json!({"ramal": "1003", "telefone": "41988445566"})).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_ne!(first.json()["callid"], second.json()["callid"]);
    originate_for(&h, second.json()["callid"].as_str().unwrap());
    h.stop().await;
}

#[tokio::test]
async fn losing_the_socket_mid_originate_answers_from_what_freeswitch_still_has() {
    let h = Harness::start(Extra::default()).await;
    h.fs.set_default(Outcome::Silent);
    let mut h = h;
    let url = h.url("/click2call");
    let client = h.http.clone();
    let pending = tokio::spawn(async move {
        send(
            client
                .post(url)
                .json(&json!({"ramal": "1001", "telefone": "41988445566"})),
        )
        .await
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.fs.received_lines("bgapi originate").is_empty() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    h.fs.restart().await;
    let r = pending.await.unwrap();
    // The channel is gone after the restart: a clear 503 once reconnected, not a 504.
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(started.elapsed() < Duration::from_secs(8));
    let line = h.fs.received_lines("bgapi originate").pop().unwrap();
    let id = &line.split("origination_uuid=").nth(1).unwrap()[..36];
    assert_eq!(
        h.fs.received_lines(&format!("api uuid_exists {id}")).len(),
        1
    );
    h.stop().await;
}

/// An Idempotency-Key is kept in the database: Finaz retrying it after our restart gets the
/// call placed before the restart, and nothing rings again.
#[tokio::test]
async fn an_idempotency_key_outlives_a_restart() {
    let mut h = Harness::start(Extra::default()).await;
    h.fs.set_default(Outcome::Answer {
        ring: Duration::from_secs(30),
    });
    let keyed = |h: &Harness| {
        h.http
            .post(h.url("/click2call"))
            .header("idempotency-key", "finaz-req-restart")
            .json(&json!({"ramal": "1001", "telefone": "41988445566"}))
    };
    let first = send(keyed(&h)).await;
    assert_eq!(first.status, 200, "{}", first.body);
    h.restart_service().await;
    let again = send(keyed(&h)).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["callid"], first.json()["callid"]);
    assert_eq!(h.fs.received_lines("bgapi originate").len(), 1, "rang once");
    h.stop().await;
}

#[tokio::test]
async fn double_clicks_and_idempotency_keys_ring_once() {
    let h = Harness::start(Extra::default()).await;
    h.fs.set_default(Outcome::Answer {
        ring: Duration::from_secs(30),
    });
    let body = json!({"ramal": "1001", "telefone": "41988445566"});
    let (a, b) = tokio::join!(post_json(&h, body.clone()), post_json(&h, body.clone()));
    assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200));
    assert_eq!(a.json()["callid"], b.json()["callid"]);
    let c = post_json(&h, json!({"ramal": "1001", "telefone": "(41) 98844-5566"})).await;
    assert_eq!(
        c.json()["callid"],
        a.json()["callid"],
        "same number, other writing"
    );
    assert_eq!(h.fs.received_lines("bgapi originate").len(), 1);

    let keyed = |telefone: &str| {
        h.http
            .post(h.url("/click2call"))
            .header("idempotency-key", "finaz-req-42")
            .json(&json!({"ramal": "1005", "telefone": telefone}))
    };
    let k1 = send(keyed("41911112222")).await;
    let k2 = send(keyed("41911112222")).await;
    assert_eq!(k1.json()["callid"], k2.json()["callid"]);
    let reused = send(keyed("41933334444")).await;
    assert_eq!(reused.status, 422);
    assert_eq!(reused.error_code(), "idempotency_key_reused");
    assert_eq!(h.fs.received_lines("bgapi originate").len(), 2);

    // A failed click does not block the next one.
    h.fs.script("user/1009", Outcome::Busy);
    let busy = post_json(&h, json!({"ramal": "1009", "telefone": "41988445566"})).await;
    assert_eq!(busy.status, 409);
    h.fs.script(
        "user/1009",
        Outcome::Answer {
            ring: Duration::ZERO,
        },
    );
    let again = post_json(&h, json!({"ramal": "1009", "telefone": "41988445566"})).await;
    assert_eq!(again.status, 200);
    assert_eq!(h.fs.received_lines("bgapi originate").len(), 4);
    let metrics = h.metrics().await;
    assert!(metrics.contains("outcome=\"duplicate\"} 3\n"), "{metrics}");
    h.stop().await;
}

#[tokio::test]
async fn edge_refusals_carry_their_codes_and_reach_no_freeswitch() {
    let h = Harness::start(Extra {
        http: "chave = \"s3cret-chave\"".into(),
        ..Extra::default()
    })
    .await;
    let ok = json!({"ramal": "1001", "telefone": "41988445566", "chave": "s3cret-chave"});
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            h.http
                .post(h.url("/click2call"))
                .json(&json!({"ramal": "1001", "telefone": "41988445566"})),
            401,
            "missing_chave",
        ),
        (
            h.http.post(h.url("/click2call")).json(
                &json!({"ramal": "1001", "telefone": "41988445566", "chave": "s3cret-chavf"}),
            ),
            401,
            "invalid_chave",
        ),
        (
            h.http
                .post(h.url("/click2call"))
                .header("content-type", "application/json")
                .body("{\"ramal\":"),
            400,
            "malformed_body",
        ),
        (
            h.http
                .post(h.url("/click2call"))
                .header("content-type", "text/xml")
                .body("<x/>"),
            415,
            "unsupported_media_type",
        ),
        (
            h.http
                .post(h.url("/click2call"))
                .json(&json!({"ramal": "x".repeat(20_000)})),
            413,
            "body_too_large",
        ),
        (
            h.http
                .get(h.url("/click2call"))
                .header("accept", "application/json"),
            405,
            "method_not_allowed",
        ),
        (
            h.http
                .post(h.url("/elsewhere"))
                .header("accept", "application/json"),
            404,
            "not_found",
        ),
        (
            h.http
                .post(h.url("/click2call"))
                .json(&json!({"telefone": "41988445566", "chave": "s3cret-chave"})),
            422,
            "invalid_field",
        ),
        (
            h.http
                .post(h.url("/click2call"))
                .json(&json!({"ramal": "1001", "chave": "s3cret-chave"})),
            422,
            "invalid_field",
        ),
        (
            h.http
                .post(h.url("/click2call"))
                .header("idempotency-key", "has space")
                .json(&ok),
            422,
            "invalid_field",
        ),
    ];
    for (req, status, code) in cases {
        let r = send(req).await;
        assert_eq!(r.status.as_u16(), status, "{code}: {}", r.body);
        assert_eq!(r.error_code(), code);
    }
    // chave may come in the query string while the fields are in the body.
    let r = send(
        h.http
            .post(h.url("/click2call?chave=s3cret-chave"))
            .json(&json!({"ramal": "1001", "telefone": "41988445566"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(h.fs.received_lines("bgapi").len(), 1);
    h.stop().await;
}

/// Attempts to smuggle something onto the originate line, each through JSON, form and query.
const INJECTIONS: &[(&str, &str)] = &[
    ("ramal", "1001\nexit"),
    ("ramal", "1001\r\n\r\napi shutdown"),
    ("ramal", "1001 41900000000 XML default"),
    ("ramal", "1001&park()"),
    ("ramal", "1001,user/666"),
    ("ramal", "1001|user/666"),
    ("ramal", "{origination_uuid=x}1001"),
    ("ramal", "1001}"),
    ("ramal", "1001'"),
    ("ramal", "^^:1001"),
    ("ramal", "user/1001"),
    ("ramal", "sofia/gateway/x/1"),
    ("ramal", "${sleep(1000)}"),
    ("ramal", "1001%0Aexit"),
    ("ramal", "1001@evil"),
    ("ramal", "１００１"),
    ("ramal", ""),
    ("telefone", "41988445566\nexit"),
    ("telefone", "41988445566 XML public"),
    ("telefone", "41988445566&bridge(sofia/gateway/x/1)"),
    ("telefone", "41988445566,user/666"),
    ("telefone", "41988445566|user/666"),
    ("telefone", "{a=b}41988445566"),
    ("telefone", "4198844556'6"),
    ("telefone", "^^:41988445566"),
    ("telefone", "41988445566}"),
    ("telefone", "*98"),
    ("telefone", "+5541988445566+"),
    ("telefone", "4198844556６"),
    ("telefone", "1234567"),
    ("telefone", "1234567890123456"),
    ("telefone", "${x}"),
    ("telefone", ""),
];

#[tokio::test]
async fn injection_attempts_are_422_and_write_nothing_to_freeswitch() {
    let h = Harness::start(Extra::default()).await;
    for (field, value) in INJECTIONS {
        let mut fields = vec![("ramal", "1001"), ("telefone", "41988445566")];
        fields.retain(|(k, _)| k != field);
        fields.push((field, value));
        let as_json: serde_json::Map<String, Value> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let query = serde_urlencoded::to_string(&fields).unwrap();
        for req in [
            h.http.post(h.url("/click2call")).json(&as_json),
            h.http
                .post(h.url("/click2call"))
                .header("accept", "application/json")
                .form(&fields),
            h.http
                .post(h.url(&format!("/click2call?{query}")))
                .header("accept", "application/json"),
        ] {
            let r = send(req).await;
            assert_eq!(r.status, 422, "{field}={value:?}: {}", r.body);
            let body = r.json();
            assert_eq!(body["error"], "invalid_field");
            assert_eq!(body["field"], *field, "{value:?}");
        }
    }
    assert!(
        h.fs.received_lines("bgapi").is_empty(),
        "nothing reached FreeSWITCH: {:?}",
        h.fs.received_lines("bgapi")
    );
    let metrics = h.metrics().await;
    let expected = INJECTIONS.len() * 3;
    assert!(
        metrics.contains(&format!(
            "finaz_http_requests_total{{endpoint=\"click2call\",outcome=\"invalid_field\"}} {expected}\n"
        )),
        "{metrics}"
    );
    h.stop().await;
}

#[tokio::test]
async fn two_hundred_concurrent_click2calls_each_get_their_own_call() {
    let h = Harness::start(Extra::default()).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let req = h.http.post(h.url("/click2call")).json(&json!({
            "ramal": format!("op{i}"),
            "telefone": format!("4198800{i:04}"),
        }));
        tasks.push(tokio::spawn(async move { (i, send(req).await) }));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        let (i, r) = t.await.unwrap();
        assert_eq!(r.status, 200, "{i}: {}", r.body);
        let id = r.json()["callid"].as_str().unwrap().to_string();
        let line = originate_for(&h, &id);
        assert!(
            line.ends_with(&format!("}}user/op{i} 4198800{i:04} XML default")),
            "{i} got the call of another request: {line}"
        );
        ids.insert(id);
    }
    assert_eq!(ids.len(), 200);
    assert_eq!(h.fs.received_lines("bgapi originate").len(), 200);
    h.stop().await;
}

#[tokio::test]
async fn no_freeswitch_at_startup_is_503_until_it_appears() {
    let mut fs = StandIn::start().await;
    fs.stop().await;
    let mut h = Harness::start_with(fs, Extra::default()).await;
    let r = send(
        h.http
            .post(h.url("/click2call"))
            .form(&[("ramal", "1001"), ("telefone", "41988445566")]),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.body.as_str()),
        (503, "freeswitch_unavailable")
    );
    assert_eq!(r.retry_after.as_deref(), Some("5"));
    h.fs.restart().await;
    assert!(h.service().esl.wait_connected(Duration::from_secs(5)).await);
    let r = post_json(&h, json!({"ramal": "1001", "telefone": "41988445566"})).await;
    assert_eq!(r.status, 200);
    h.stop().await;
}

#[tokio::test]
async fn a_ringing_call_is_still_followed_after_the_socket_comes_back() {
    let h = Harness::start(Extra::default()).await;
    h.fs.set_default(Outcome::Answer {
        ring: Duration::from_secs(30),
    });
    let r = post_json(&h, json!({"ramal": "1001", "telefone": "41988445566"})).await;
    assert_eq!(r.status, 200);
    let id = r.json()["callid"].as_str().unwrap().to_string();
    let mut h = h;
    h.fs.restart().await;
    assert!(h.service().esl.wait_connected(Duration::from_secs(5)).await);
    // The adapter asks whether the channel survived the outage...
    let deadline = Instant::now() + Duration::from_secs(5);
    while h
        .fs
        .received_lines(&format!("api uuid_exists {id}"))
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "never asked about the call: {:?}",
            h.fs.received_lines("")
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...and, since it did, still records how it ends.
    assert!(h.fs.hangup(&id, "ORIGINATOR_CANCEL"));
    let call = wait_state(&h.service().storage, &id, CallState::Failed).await;
    assert_eq!(call.outcome.as_deref(), Some("ORIGINATOR_CANCEL"));
    h.stop().await;
}
