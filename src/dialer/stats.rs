//! The dialer flow's counters, and their Prometheus text.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Source;

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

    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP finaz_dialer_answered_total Answered dialer calls reported to Finaz, by how they were seen.\n# TYPE finaz_dialer_answered_total counter"
        );
        for s in Source::ALL {
            let _ = writeln!(
                out,
                "finaz_dialer_answered_total{{source=\"{}\"}} {}",
                s.as_str(),
                get(&self.answered[s as usize])
            );
        }
        let m = crate::metrics::scalar;
        m(
            out,
            "finaz_dialer_duplicates_total",
            "counter",
            "Answers of calls already reported (the other path, or twice).",
            get(&self.duplicates),
        );
        m(
            out,
            "finaz_dialer_without_crm_id_total",
            "counter",
            "Socket hand-offs of calls without a CRM id: logged, not sent.",
            get(&self.without_crm_id),
        );
        m(
            out,
            "finaz_dialer_refused_total",
            "counter",
            "Hand-offs with an unusable value (too long, control characters).",
            get(&self.refused),
        );
        m(
            out,
            "finaz_dialer_store_failures_total",
            "counter",
            "Failed attempts to store an answered call (each is retried; see finaz_dialer_reports_waiting).",
            get(&self.store_failures),
        );
        m(
            out,
            "finaz_dialer_sessions_failed_total",
            "counter",
            "Outbound socket sessions that ended before the channel data (timeout, garbage, early close).",
            get(&self.sessions_failed),
        );
        m(
            out,
            "finaz_dialer_reports_waiting",
            "gauge",
            "Answered calls the database refused so far, retried until they commit.",
            get(&self.reports_waiting),
        );
        m(
            out,
            "finaz_dialer_sessions_oversized_total",
            "counter",
            "Outbound sessions whose connect reply was over 64 KiB or announced a body: not read, released after the park.",
            get(&self.sessions_oversized),
        );
        m(
            out,
            "finaz_dialer_unparked_closes_total",
            "counter",
            "Outbound sessions closed without this channel's CHANNEL_PARK within the wait: on FreeSWITCH 1.10 such a leg can stay parked in `socket`.",
            get(&self.unparked_closes),
        );
        m(
            out,
            "finaz_dialer_sessions_active",
            "gauge",
            "Outbound socket sessions open now.",
            get(&self.sessions_active),
        );
    }
}
