//! Records answered calls with their webhook (retrying while the database refuses them) and
//! wakes the outbox.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Notify;

use super::{Answered, DialerStats, NotReported, Source};
use crate::domain::answered_url::AnsweredUrl;
use crate::domain::values::mask_phone;
use crate::storage::{DialerReport, Reported, Storage, StorageError, now_ms};

/// Answered calls held in memory while the database refuses them; beyond this the newest is
/// given up on (logged), so a long outage cannot exhaust memory.
const MAX_WAITING: usize = 10_000;

/// Records answered calls with their webhook and wakes the outbox.
#[derive(Clone)]
pub struct Reporter {
    /// Places for reports waiting to be retried.
    waiting: Arc<tokio::sync::Semaphore>,
    storage: Storage,
    url: Arc<AnsweredUrl>,
    empresa_id: String,
    max_retry_age: Duration,
    wake: Arc<Notify>,
    pub stats: Arc<DialerStats>,
    mask_phone_numbers: bool,
}

impl Reporter {
    pub fn new(
        storage: Storage,
        url: AnsweredUrl,
        empresa_id: Option<String>,
        max_retry_age: Duration,
        wake: Arc<Notify>,
        mask_phone_numbers: bool,
    ) -> Self {
        Reporter {
            waiting: Arc::new(tokio::sync::Semaphore::new(MAX_WAITING)),
            storage,
            url: Arc::new(url),
            empresa_id: empresa_id.unwrap_or_default(),
            max_retry_age,
            wake,
            stats: Arc::new(DialerStats::default()),
            mask_phone_numbers,
        }
    }

    /// Counts and logs a hand-off that is not reported.
    pub fn not_reported(&self, source: Source, why: &NotReported, call_id: Option<&str>) {
        match why {
            NotReported::NoCrmId(_) => DialerStats::inc(&self.stats.without_crm_id),
            _ => DialerStats::inc(&self.stats.refused),
        }
        tracing::warn!(source = source.as_str(), call_id, reason = %why, "answered dialer call not sent to Finaz");
    }

    /// Stores the call and its webhook in a task of its own, retrying with backoff (0.2 s
    /// doubling to 30 s) for as long as the database refuses it (full disk, a lock held too
    /// long), so a failing write never drops a screen pop. The receiver says when it is
    /// durable; whoever waits on it may give up without cancelling the report.
    pub fn report_until_stored(&self, a: Answered) -> tokio::sync::oneshot::Receiver<Reported> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let me = self.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            let mut place = None;
            loop {
                match me.report(a.clone()).await {
                    Ok(r) => {
                        if place.take().is_some() {
                            me.stats.reports_waiting.fetch_sub(1, Ordering::Relaxed);
                            tracing::info!(call_id = %a.call_id, "answered dialer call stored after a retry");
                        }
                        let _ = tx.send(r);
                        return;
                    }
                    Err(_) if place.is_none() => match me.waiting.clone().try_acquire_owned() {
                        Ok(p) => {
                            place = Some(p);
                            me.stats.reports_waiting.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            tracing::error!(call_id = %a.call_id, waiting = MAX_WAITING, "too many answered calls waiting for the database: this one is given up on");
                            return;
                        }
                    },
                    Err(_) => {}
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        });
        rx
    }

    /// Stores the call and its webhook once (durable when this returns `Ok`), then wakes
    /// the outbox to send it. [`Reporter::report_until_stored`] retries it.
    pub async fn report(&self, a: Answered) -> Result<Reported, StorageError> {
        let url = self.url.render(
            &a.crm_id,
            a.telefone.as_deref().unwrap_or_default(),
            &a.call_id,
            a.ramal.as_deref().unwrap_or_default(),
            &self.empresa_id,
        );
        let report = DialerReport {
            call_id: a.call_id.clone(),
            customer_leg: a.customer_leg.clone(),
            crm_id: a.crm_id.clone(),
            telefone: a.telefone.clone(),
            ramal: a.ramal.clone(),
            legs: a.legs.clone(),
            give_up_at: now_ms() + self.max_retry_age.as_millis() as i64,
            url,
            node: a.node.as_deref().map(str::to_string),
        };
        let result = self.storage.report_dialer_call(report).await;
        let telefone = a
            .telefone
            .as_deref()
            .map(|t| mask_phone(t, self.mask_phone_numbers))
            .unwrap_or_default();
        match &result {
            Ok(Reported::Enqueued { call_id, outbox_id }) => {
                DialerStats::inc(&self.stats.answered[a.source as usize]);
                self.wake.notify_one();
                tracing::info!(
                    call_id = %call_id,
                    source = a.source.as_str(),
                    ramal = a.ramal.as_deref().unwrap_or(""),
                    telefone = %telefone,
                    outbox_id,
                    "dialer call answered; webhook queued"
                );
            }
            Ok(Reported::Duplicate { call_id }) => {
                DialerStats::inc(&self.stats.duplicates);
                tracing::debug!(call_id = %call_id, source = a.source.as_str(), "dialer call already reported");
            }
            Err(e) => {
                DialerStats::inc(&self.stats.store_failures);
                tracing::error!(call_id = %a.call_id, source = a.source.as_str(), error = %e, "answered dialer call could not be stored");
            }
        }
        result
    }
}
