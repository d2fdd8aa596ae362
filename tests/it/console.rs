//! The operator console on the admin listener, over real HTTP: what a supervisor sees of a
//! call and its recording, a dead webhook retried from the page, and who may use it.

use std::time::{Duration, Instant};

use finaz_freeswitch::storage::OutboxState;

use crate::support::finaz::FakeFinaz;
use crate::support::harness::{Extra, Harness};

async fn page(h: &Harness, path: &str) -> (u16, String) {
    let r = h
        .http
        .get(format!("{}{path}", h.admin))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Waits until `path` of the console shows `needle`.
async fn until_shown(h: &Harness, path: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = page(h, path).await;
        if status == 200 && body.contains(needle) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never showed {needle:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_click2call_shows_masked_with_its_state_and_its_recording_plays_with_ranges() {
    let h = Harness::start(Extra::default()).await;
    let (status, empty) = page(&h, "/").await;
    assert_eq!(status, 200);
    assert!(empty.contains("No calls match."), "{empty}");
    assert!(empty.contains("connected"), "the socket's state is shown");
    // Refreshing (every second, per open page) does not write to the database each time:
    // the storage check behind "takes writes" is reused for a few seconds.
    let checked_at = || async {
        use sqlx::Connection;
        let mut db =
            sqlx::SqliteConnection::connect(&format!("sqlite://{}", h.db_path().display()))
                .await
                .unwrap();
        sqlx::query_scalar::<_, i64>("SELECT checked_at FROM health WHERE id = 1")
            .fetch_one(&mut db)
            .await
            .unwrap()
    };
    let first = checked_at().await;
    for _ in 0..5 {
        assert_eq!(page(&h, "/console/sections").await.0, 200);
    }
    assert_eq!(checked_at().await, first, "no write per refresh");
    assert!(
        page(&h, "/console/sections")
            .await
            .1
            .contains("takes writes")
    );

    let id = h.click2call("1001", "41988445566").await;
    let row = format!("data-id=\"{id}\"");
    // The live sections the page's script fetches show it at its next refresh.
    let shown = until_shown(&h, "/console/sections", &row).await;
    assert!(shown.contains("4198****566"), "{shown}");
    assert!(
        !shown.contains("41988445566"),
        "numbers are masked by default"
    );
    assert!(shown.contains(">1001<"), "the ramal");
    // The recording becomes playable once FreeSWITCH closed it.
    assert!(h.fs.hangup(&id, "NORMAL_CLEARING"));
    let src = format!("/console/recording?callid={id}");
    let done = until_shown(&h, "/console/sections", &src).await;
    assert!(done.contains("NORMAL_CLEARING"), "the outcome");
    let r = h
        .http
        .get(format!("{}{src}", h.admin))
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    let bytes = r.bytes().await.unwrap();
    assert_eq!(bytes.len(), 100);
    assert_eq!(&bytes[..4], b"RIFF");
    // Filters: a dialer-only list does not have it, a number search does.
    let (_, dialer) = page(&h, "/console/sections?kind=dialer").await;
    assert!(!dialer.contains(&row));
    let (_, by_number) = page(&h, "/console/sections?number=8844").await;
    assert!(by_number.contains(&row));
    // The full page carries its own script and style, nothing from elsewhere.
    let r = h.http.get(format!("{}/", h.admin)).send().await.unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let body = r.text().await.unwrap();
    assert!(
        !body.contains("http://") && !body.contains("https://"),
        "no CDN"
    );
    assert!(body.contains("setInterval(refresh, 1000)"));
    h.stop().await;
}

#[tokio::test]
async fn a_dead_webhook_is_retried_from_the_console_and_shows_delivered() {
    let finaz = FakeFinaz::start().await;
    finaz.set_default(500);
    let h = Harness::start(Extra {
        finaz: format!("answered_url = \"{}\"", finaz.template()),
        ..Extra::default()
    })
    .await;
    let storage = &h.service().storage;
    let call = "d1a1e700-0000-4000-8000-0000000000c1";
    let url = finaz
        .template()
        .replace("{pid}", "CRM-1")
        .replace("{cid}", call)
        .replace(['{', '}'], "");
    let id = h.dead_webhook(call, url).await;
    let body = until_shown(&h, "/", "Retry all dead").await;
    assert!(body.contains("HTTP 500"), "the last error: {body}");
    assert!(body.contains(&format!("name=\"id\" value=\"{id}\"")));

    // Another site's page cannot press the button.
    let retry = |origin: &str| {
        h.http
            .post(format!("{}/console/retry", h.admin))
            .header("origin", origin)
            .header("accept", "application/json")
            .form(&[("id", id.to_string())])
    };
    let r = retry("https://evil.example").send().await.unwrap();
    assert_eq!(r.status(), 403);
    let code: serde_json::Value = r.json().await.unwrap();
    assert_eq!(code["error"], "cross_site_request");
    assert_eq!(
        storage.outbox_for_call(call).await.unwrap().unwrap().state,
        OutboxState::Dead
    );

    finaz.set_default(200);
    let own = h.admin.clone();
    let r = retry(&own).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["retried"], 1);
    finaz
        .wait_for(Duration::from_secs(5), |hits| {
            hits.iter().any(|h| h.status == 200)
        })
        .await;
    let delivered = until_shown(&h, "/", "Delivered in the last hour (1)").await;
    assert!(delivered.contains("Dead (0)"), "{delivered}");
    // Retrying what is not dead says so.
    let r = retry(&own).send().await.unwrap();
    assert_eq!(r.status(), 404);
    h.stop().await;
}

#[tokio::test]
async fn with_a_token_only_the_probes_are_open_and_the_browser_signs_in() {
    let token = "console-token-0123456789";
    let h = Harness::start(Extra {
        admin: format!("token = \"{token}\""),
        ..Extra::default()
    })
    .await;
    let get = |path: &str| h.http.get(format!("{}{path}", h.admin));
    assert_eq!(get("/healthz").send().await.unwrap().status(), 200);
    assert_eq!(get("/readyz").send().await.unwrap().status(), 200);
    let r = get("/metrics").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let code: serde_json::Value = r.json().await.unwrap();
    assert_eq!(code["error"], "admin_token_required");
    let r = get("/metrics").bearer_auth(token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = get("/metrics")
        .bearer_auth("console-token-012345678X")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A browser is sent to the sign-in page, signs in, and gets the console.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = browser
        .get(format!("{}/", h.admin))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login");
    let sign_in = |t: &str| {
        browser
            .post(format!("{}/login", h.admin))
            .header("origin", h.admin.clone())
            .form(&[("token", t.to_string())])
    };
    assert_eq!(sign_in("wrong").send().await.unwrap().status(), 401);
    let r = sign_in(token).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let r = browser
        .get(format!("{}/", h.admin))
        .header("cookie", pair)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Calls, last 24 h"));
    h.stop().await;
}

/// FreeSWITCH dies: the status says not ready and why, and keeps the connection's last
/// error; it comes back: connected again, one reconnect counted. A webhook Finaz refuses
/// waits under Pending with its attempts and Finaz's answer.
#[tokio::test]
async fn the_status_follows_freeswitch_and_pending_webhooks_show_why() {
    let finaz = FakeFinaz::start().await;
    finaz.set_default(503);
    let mut h = Harness::start(Extra {
        finaz: format!("answered_url = \"{}\"", finaz.template()),
        ..Extra::default()
    })
    .await;
    let (_, up) = page(&h, "/console/sections").await;
    assert!(up.contains("Last connection error</dt><dd>none"), "{up}");
    h.fs.stop().await;
    let down = until_shown(
        &h,
        "/console/sections",
        "not ready: event socket not connected",
    )
    .await;
    assert!(down.contains("not connected"), "{down}");
    h.fs.restart().await;
    let back = until_shown(&h, "/console/sections", "<dt>Reconnects</dt><dd>1</dd>").await;
    assert!(back.contains(">ready<"), "{back}");
    assert!(
        !back.contains("Last connection error</dt><dd>none"),
        "the error that was is kept: {back}"
    );

    let call = "d1a1e700-0000-4000-8000-0000000000c3";
    let url = finaz
        .template()
        .replace("{pid}", "CRM-3")
        .replace("{cid}", call)
        .replace(['{', '}'], "");
    h.service()
        .storage
        .report_dialer_call(finaz_freeswitch::storage::DialerReport {
            call_id: call.into(),
            customer_leg: call.into(),
            crm_id: "CRM-3".into(),
            telefone: None,
            ramal: None,
            legs: vec![call.into()],
            give_up_at: finaz_freeswitch::storage::now_ms() + 3_600_000,
            url,
            node: None,
        })
        .await
        .unwrap();
    h.service().outbox.wake.notify_one();
    let pending = until_shown(&h, "/console/sections", "HTTP 503").await;
    assert!(pending.contains("Pending (1)"), "{pending}");
    assert!(pending.contains(call));
    h.stop().await;
}
