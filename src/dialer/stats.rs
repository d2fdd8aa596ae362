//! The dialer flow's counters, read by the metrics registry at scrape time.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use super::Source;
use crate::metrics;

/// Counters of the dialer flow.
#[derive(Debug, Default)]
pub struct DialerStats {
    pub(super) answered: [AtomicU64; 3],
    pub duplicates: AtomicU64,
    pub without_crm_id: AtomicU64,
    pub refused: AtomicU64,
    pub store_failures: AtomicU64,
    pub sessions_failed: AtomicU64,
    pub sessions_active: AtomicU64,
    /// Sessions closed without having seen the channel's park (it may stay parked).
    pub unparked_closes: AtomicU64,
    /// Sessions whose connect reply was over the size limit or announced a body.
    pub sessions_oversized: AtomicU64,
    /// Answered calls whose first store failed, being retried until they commit.
    pub reports_waiting: AtomicU64,
}

impl DialerStats {
    pub(super) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

impl Collector for DialerStats {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        metrics::counter_family(
            &mut enc,
            "finaz_dialer_answered",
            "Answered dialer calls reported to Finaz, by how they were seen.",
            "source",
            Source::ALL.map(|s| (s.as_str(), get(&self.answered[s as usize]))),
        )?;
        metrics::counter(
            &mut enc,
            "finaz_dialer_duplicates",
            "Answers of calls already reported (the other path, or twice).",
            get(&self.duplicates),
        )?;
        metrics::counter(
            &mut enc,
            "finaz_dialer_without_crm_id",
            "Socket hand-offs of calls without a CRM id: logged, not sent.",
            get(&self.without_crm_id),
        )?;
        metrics::counter(
            &mut enc,
            "finaz_dialer_refused",
            "Hand-offs with an unusable value (too long, control characters).",
            get(&self.refused),
        )?;
        metrics::counter(
            &mut enc,
            "finaz_dialer_store_failures",
            "Failed attempts to store an answered call (each is retried; see finaz_dialer_reports_waiting).",
            get(&self.store_failures),
        )?;
        metrics::counter(
            &mut enc,
            "finaz_dialer_sessions_failed",
            "Outbound socket sessions that ended before the channel data (timeout, garbage, early close).",
            get(&self.sessions_failed),
        )?;
        metrics::gauge(
            &mut enc,
            "finaz_dialer_reports_waiting",
            "Answered calls the database refused so far, retried until they commit.",
            get(&self.reports_waiting) as i64,
        )?;
        metrics::counter(
            &mut enc,
            "finaz_dialer_sessions_oversized",
            "Outbound sessions whose connect reply was over 64 KiB or announced a body: not read, released after the park.",
            get(&self.sessions_oversized),
        )?;
        metrics::counter(
            &mut enc,
            "finaz_dialer_unparked_closes",
            "Outbound sessions closed without this channel's CHANNEL_PARK within the wait: on FreeSWITCH 1.10 such a leg can stay parked in `socket`.",
            get(&self.unparked_closes),
        )?;
        metrics::gauge(
            &mut enc,
            "finaz_dialer_sessions_active",
            "Outbound socket sessions open now.",
            get(&self.sessions_active) as i64,
        )?;
        Ok(())
    }
}
