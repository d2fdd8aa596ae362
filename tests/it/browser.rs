//! The console in a real headless Chromium against the running service, the FreeSWITCH
//! stand-in and a Finaz stand-in: it loads without a console error, a click2call placed
//! through the API appears within 2 s, its recording plays, and a webhook left
//! dead while Finaz was down is retried from the page and shows delivered.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them and sets
//! `REQUIRE_BROWSER_TEST=1`, so there a missing browser fails the test). Elsewhere a missing
//! browser is reported loudly and the test does nothing.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::browser::{self, Browser};
use crate::support::finaz::FakeFinaz;
use crate::support::harness::{Extra, Harness};

#[tokio::test]
async fn the_console_in_a_real_browser_shows_calls_plays_recordings_and_retries_webhooks() {
    if let Some(why) = browser::missing() {
        if std::env::var_os("REQUIRE_BROWSER_TEST").is_some() {
            panic!("{why}: the browser test must run here");
        }
        // Past the test harness's capture (a passing test's eprintln! is never shown).
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED the console's browser test: {why}; .ci/run installs it ***\n"
        );
        return;
    }
    let finaz = FakeFinaz::start().await;
    finaz.set_default(503);
    let h = Harness::start(Extra {
        finaz: format!("answered_url = \"{}\"", finaz.template()),
        ..Extra::default()
    })
    .await;
    let b = Browser::start().await;
    b.goto(&format!("{}/", h.admin)).await;
    b.until(
        "its status",
        Duration::from_secs(5),
        "return !!document.querySelector('#status') && document.body.innerText.includes('connected')",
        json!([]),
    )
    .await;

    // A click2call through the API shows within the page's refresh.
    let id = h.click2call("1001", "41988445566").await;
    let placed = Instant::now();
    b.until(
        "the new call",
        Duration::from_secs(2),
        "return !!document.querySelector(`#calls tr[data-id=\"${arguments[0]}\"]`)",
        json!([id]),
    )
    .await;
    assert!(placed.elapsed() < Duration::from_secs(2));

    // Its recording, once closed, plays in the page: the audio element learns a duration.
    assert!(h.fs.hangup(&id, "NORMAL_CLEARING"));
    b.until(
        "the recording's player",
        Duration::from_secs(5),
        "return !!document.querySelector(`#calls tr[data-id=\"${arguments[0]}\"] audio`)",
        json!([id]),
    )
    .await;
    let duration = b
        .run_async(
            "const done = arguments[arguments.length - 1];
             const a = document.querySelector(`#calls tr[data-id=\"${arguments[0]}\"] audio`);
             a.muted = true;
             a.loop = true;
             window.playing = a;
             a.addEventListener('error', () => done(-1));
             a.play().then(() => done(a.duration), () => done(-2));",
            json!([id]),
        )
        .await;
    assert!(
        duration.as_f64().is_some_and(|d| d > 0.5),
        "the recording did not play: {duration}"
    );
    // Two refreshes later the same player is still in the page and still playing.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        b.run(
            "return document.contains(window.playing) && !window.playing.paused",
            json!([])
        )
        .await,
        json!(true),
        "a refresh replaced the playing recording"
    );
    // Seeking asks the server for a range.
    let seeked = b
        .run_async(
            "const done = arguments[arguments.length - 1];
             const a = document.querySelector(`#calls tr[data-id=\"${arguments[0]}\"] audio`);
             a.addEventListener('seeked', () => done(a.currentTime));
             a.currentTime = a.duration / 2;",
            json!([id]),
        )
        .await;
    assert!(seeked.as_f64().is_some_and(|t| t > 0.2), "{seeked}");

    // A webhook that died while Finaz answered 503.
    let call = "d1a1e700-0000-4000-8000-0000000000b7";
    let url = finaz
        .template()
        .replace("{pid}", "CRM-7")
        .replace("{cid}", call)
        .replace(['{', '}'], "");
    h.dead_webhook(call, url).await;
    // Its row with a Retry button: a refresh from before it died shows it under Pending,
    // without one (seen when the machine was loaded).
    b.until(
        "the dead webhook's Retry",
        Duration::from_secs(5),
        "return [...document.querySelectorAll('#webhooks tr')].some(tr =>
             [...tr.querySelectorAll('td')].some(td => td.textContent === arguments[0])
             && tr.querySelector('form input[name=id]'))",
        json!([call]),
    )
    .await;
    // Finaz is back; the supervisor presses Retry.
    finaz.set_default(200);
    b.run(
        "[...document.querySelectorAll('#webhooks form')]
            .find(f => f.querySelector('input[name=id]')).querySelector('button').click();
         return true;",
        json!([]),
    )
    .await;
    b.until(
        "the webhook delivered",
        Duration::from_secs(5),
        "return document.body.innerText.includes('Delivered in the last hour (1)')
            && document.body.innerText.includes('Dead (0)')",
        json!([]),
    )
    .await;
    assert_eq!(finaz.accepted().len(), 1, "delivered once, after the retry");
    let errors = b.errors().await;
    assert!(errors.is_empty(), "the page logged errors: {errors:?}");

    // The screenshot the docs show.
    let png = b.screenshot().await;
    assert_eq!(&png[1..4], b"PNG");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(
        if std::env::var_os("WRITE_SCREENSHOTS").is_some() {
            "docs/console.png"
        } else {
            "target/console.png"
        },
    );
    std::fs::write(&out, png).unwrap();
    h.stop().await;
}
