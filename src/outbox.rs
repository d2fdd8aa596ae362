//! Delivers queued webhooks to Finaz: leases due entries, sends each `GET`, and records the
//! result: delivered on any 2xx, otherwise retried with exponential backoff and jitter (first
//! retry within a second, at most every five minutes, `Retry-After` honoured) until the
//! entry's give-up time, then kept as dead with its last error.
//!
//! Leases are in the database, so an entry being sent when the process dies is sent again
//! after a restart (a 2xx whose commit was lost can repeat; nothing is lost). On shutdown no
//! new sends start and the ones in flight finish.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::RETRY_AFTER;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::histogram::Histogram;

use crate::metrics;
use crate::storage::{OutboxEntry, OutboxState, Storage, now_ms};

/// First retry delay (then doubled per attempt, with up to 100 % jitter).
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Longest wait between attempts.
const MAX_RETRY: Duration = Duration::from_secs(300);
/// Longest `Retry-After` believed.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// How long the loop sleeps when nothing is due and nobody wakes it.
const IDLE_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Settings {
    pub delivery_timeout: Duration,
    pub max_concurrent: usize,
    /// Give-up age for rows that predate per-row give-up times.
    pub max_retry_age: Duration,
}

/// Counters of the outbox, for `/metrics`.
#[derive(Debug)]
pub struct OutboxStats {
    pub delivered: AtomicU64,
    /// Sum of the delivered webhooks' latencies, in ms (the console's chart).
    pub delivery_ms_total: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub dead: AtomicU64,
    /// Time from the webhook being queued to Finaz's 2xx.
    pub delivery_latency: Histogram,
    /// One GET to Finaz, whatever it answered.
    pub request_latency: Histogram,
    /// From the database at the last scrape ([`Outbox::refresh_gauges`]).
    pending_now: AtomicI64,
    dead_now: AtomicI64,
    oldest_pending_age: AtomicI64,
}

impl Default for OutboxStats {
    fn default() -> Self {
        OutboxStats {
            delivered: AtomicU64::default(),
            delivery_ms_total: AtomicU64::default(),
            failed_attempts: AtomicU64::default(),
            dead: AtomicU64::default(),
            delivery_latency: metrics::latency_histogram(),
            request_latency: metrics::latency_histogram(),
            pending_now: AtomicI64::new(UNKNOWN),
            dead_now: AtomicI64::new(UNKNOWN),
            oldest_pending_age: AtomicI64::new(UNKNOWN),
        }
    }
}

/// A handle to the running outbox.
#[derive(Clone)]
pub struct Outbox {
    pub wake: Arc<Notify>,
    pub stats: Arc<OutboxStats>,
    storage: Storage,
}

/// Why one attempt failed, and when Finaz asked us to come back.
#[derive(Debug)]
struct Failure {
    error: String,
    retry_after: Option<Duration>,
}

impl Outbox {
    /// Starts the delivery loop; it stops starting sends at `shutdown` and returns once the
    /// sends in flight are done.
    pub fn start(
        storage: Storage,
        http: reqwest::Client,
        settings: Settings,
        wake: Arc<Notify>,
        shutdown: CancellationToken,
    ) -> (Outbox, JoinHandle<()>) {
        let outbox = Outbox {
            wake,
            stats: Arc::new(OutboxStats::default()),
            storage,
        };
        let task = tokio::spawn(run(outbox.clone(), http, settings, shutdown));
        (outbox, task)
    }

    /// Reads what the outbox gauges show from the database (pending and dead are counted
    /// there: both stay small and the state index serves them). Called before a scrape; a
    /// count that fails leaves its gauge out of that scrape.
    pub async fn refresh_gauges(&self) {
        let g = &self.stats;
        for (state, gauge) in [
            (OutboxState::Pending, &g.pending_now),
            (OutboxState::Dead, &g.dead_now),
        ] {
            let n = self.storage.count_outbox(state).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "outbox count for metrics failed");
                UNKNOWN
            });
            gauge.store(n, Ordering::Relaxed);
        }
        let age = match self.storage.oldest_pending().await {
            Ok(at) => at.map_or(0, |at| (now_ms() - at).max(0) / 1000),
            Err(e) => {
                tracing::warn!(error = %e, "oldest pending webhook for metrics failed");
                UNKNOWN
            }
        };
        g.oldest_pending_age.store(age, Ordering::Relaxed);
    }
}

/// A gauge the database could not give this time.
const UNKNOWN: i64 = -1;

impl Collector for OutboxStats {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        for (name, help, gauge) in [
            (
                "finaz_outbox_pending",
                "Webhooks waiting to be delivered.",
                &self.pending_now,
            ),
            (
                "finaz_outbox_dead",
                "Webhooks given up on (see `finaz-freeswitch outbox list`).",
                &self.dead_now,
            ),
            (
                "finaz_outbox_oldest_pending_age_seconds",
                "Age of the oldest webhook still waiting to be delivered (0 when none waits).",
                &self.oldest_pending_age,
            ),
        ] {
            let v = gauge.load(Ordering::Relaxed);
            if v != UNKNOWN {
                metrics::gauge(&mut enc, name, help, v)?;
            }
        }
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, help, v) in [
            (
                "finaz_webhook_delivered",
                "Webhooks Finaz acknowledged with a 2xx.",
                &self.delivered,
            ),
            (
                "finaz_webhook_retries",
                "Failed delivery attempts that will be retried.",
                &self.failed_attempts,
            ),
            (
                "finaz_webhook_dead",
                "Webhooks given up on since start.",
                &self.dead,
            ),
        ] {
            metrics::counter(&mut enc, name, help, get(v))?;
        }
        for (name, help, h) in [
            (
                "finaz_webhook_delivery_latency_seconds",
                "From the webhook being stored to Finaz's 2xx.",
                &self.delivery_latency,
            ),
            (
                "finaz_webhook_request_seconds",
                "Duration of one GET to Finaz.",
                &self.request_latency,
            ),
        ] {
            h.encode(enc.encode_descriptor(name, help, None, h.metric_type())?)?;
        }
        Ok(())
    }
}

async fn run(
    outbox: Outbox,
    http: reqwest::Client,
    settings: Settings,
    shutdown: CancellationToken,
) {
    match outbox.storage.retry_pending_now().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            entries = n,
            "pending webhooks from before the restart are due now"
        ),
        Err(e) => tracing::warn!(error = %e, "could not reschedule pending webhooks"),
    }
    let slots = Arc::new(Semaphore::new(settings.max_concurrent));
    let lease = settings.delivery_timeout + Duration::from_secs(5);
    loop {
        // Wait for a free slot first, so leased entries are sent at once.
        let free = tokio::select! {
            p = slots.clone().acquire_many_owned(1) => { drop(p); slots.available_permits() }
            _ = shutdown.cancelled() => break,
        };
        let now = now_ms();
        let due = match outbox
            .storage
            .lease_due(now, free as i64, now + lease.as_millis() as i64)
            .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "outbox: could not read due webhooks");
                tokio::select! {
                    _ = tokio::time::sleep(IDLE_POLL) => continue,
                    _ = shutdown.cancelled() => break,
                }
            }
        };
        let full = due.len() == free;
        for entry in due {
            let permit = slots
                .clone()
                .try_acquire_owned()
                .expect("one free slot per leased entry");
            let (outbox, http, settings) = (outbox.clone(), http.clone(), settings.clone());
            tokio::spawn(async move {
                deliver(&outbox, &http, &settings, entry).await;
                drop(permit);
            });
        }
        if full {
            continue;
        }
        // Nothing more due now: sleep until the next entry is, a new one arrives, or a poll.
        let wait = match outbox.storage.next_due().await {
            Ok(Some(at)) => Duration::from_millis((at - now_ms()).max(0) as u64).min(IDLE_POLL),
            _ => IDLE_POLL,
        };
        tokio::select! {
            _ = outbox.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    // Let the sends in flight finish (each is bounded by the delivery timeout).
    let _ = slots.acquire_many(settings.max_concurrent as u32).await;
}

async fn deliver(outbox: &Outbox, http: &reqwest::Client, settings: &Settings, e: OutboxEntry) {
    let started = Instant::now();
    let result = send(http, &e.url, settings.delivery_timeout).await;
    metrics::observe(&outbox.stats.request_latency, started.elapsed());
    let now = now_ms();
    let stored = match result {
        Ok(status) => {
            outbox.stats.delivered.fetch_add(1, Ordering::Relaxed);
            let latency = (now - e.created_at).max(0) as u64;
            metrics::observe(
                &outbox.stats.delivery_latency,
                Duration::from_millis(latency),
            );
            outbox
                .stats
                .delivery_ms_total
                .fetch_add(latency, Ordering::Relaxed);
            tracing::info!(call_id = %e.call_id, outbox_id = e.id, attempts = e.attempts + 1, status, "webhook delivered to Finaz");
            outbox.storage.mark_delivered(e.id).await
        }
        Err(failure) => {
            let give_up_at = e
                .give_up_at
                .unwrap_or(e.created_at + settings.max_retry_age.as_millis() as i64);
            let delay = failure
                .retry_after
                .map(|d| d.min(MAX_RETRY_AFTER))
                .unwrap_or_else(|| backoff(e.attempts + 1));
            let next = now + delay.as_millis() as i64;
            let dead = now >= give_up_at;
            let next = next.min(give_up_at.max(now));
            if dead {
                outbox.stats.dead.fetch_add(1, Ordering::Relaxed);
                tracing::error!(call_id = %e.call_id, outbox_id = e.id, attempts = e.attempts + 1, error = %failure.error, "webhook given up on: Finaz never accepted it");
            } else {
                outbox.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(call_id = %e.call_id, outbox_id = e.id, attempts = e.attempts + 1, error = %failure.error, retry_in_ms = next - now, "webhook not accepted; will retry");
            }
            let stored = outbox
                .storage
                .mark_failed(
                    e.id,
                    e.lease.unwrap_or_default(),
                    &failure.error,
                    next,
                    dead,
                )
                .await;
            // The loop may be asleep until a later entry: let it see this retry's time.
            outbox.wake.notify_one();
            stored
        }
    };
    if let Err(err) = stored {
        // The lease makes it due again later: delivered twice at worst, never lost.
        tracing::error!(call_id = %e.call_id, outbox_id = e.id, error = %err, "could not record the webhook's result");
    }
}

/// One attempt: `Ok(status)` on any 2xx.
async fn send(http: &reqwest::Client, url: &str, timeout: Duration) -> Result<u16, Failure> {
    let response = http
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| Failure {
            error: describe(&e),
            retry_after: None,
        })?;
    let status = response.status();
    if status.is_success() {
        return Ok(status.as_u16());
    }
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    Err(Failure {
        error: format!("HTTP {}", status.as_u16()),
        retry_after,
    })
}

/// A request failure in a few words (`timeout`, `connect: Connection refused`, the root
/// cause otherwise), as stored in the outbox and shown by `doctor`.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        format!("connect: {}", root_cause(e))
    } else {
        root_cause(e)
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Delay before attempt `attempt + 1` after `attempt` failures: 0.5–1 s, 1–2 s, 2–4 s, ...,
/// at most 5 min.
pub fn backoff(attempt: i64) -> Duration {
    let exp = attempt.clamp(1, 20) as u32 - 1;
    let base = FIRST_RETRY
        .saturating_mul(1u32 << exp.min(16))
        .min(MAX_RETRY);
    let jittered = base.mul_f64(1.0 + fastrand::f64());
    jittered.min(MAX_RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_within_a_second_and_is_capped() {
        for _ in 0..100 {
            let first = backoff(1);
            assert!(
                first >= FIRST_RETRY && first < Duration::from_secs(1),
                "{first:?}"
            );
            let third = backoff(3);
            assert!(third >= Duration::from_secs(2) && third < Duration::from_secs(4));
            assert!(backoff(40) <= MAX_RETRY);
            assert!(backoff(40) >= MAX_RETRY / 2 || backoff(40) == MAX_RETRY);
        }
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        let later = SystemTime::now() + Duration::from_secs(120);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
