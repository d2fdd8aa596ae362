//! Counters an ESL client keeps about itself, lock-free, for whoever exports metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// A fixed-bucket latency histogram (Prometheus shape: cumulative when rendered).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket bound, then the total count and the sum in seconds.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut acc = 0;
        let cumulative = LATENCY_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(bound, n)| {
                acc += n.load(Ordering::Relaxed);
                (*bound, acc)
            })
            .collect();
        (
            cumulative,
            self.count.load(Ordering::Relaxed),
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        )
    }
}

/// What the inbound client has seen and done since it started.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Events read off the socket.
    pub events_received: AtomicU64,
    /// Events a subscriber could not take because its queue was full.
    pub events_dropped: AtomicU64,
    /// Frames that could not be read as events (logged and skipped).
    pub events_malformed: AtomicU64,
    /// Successful authentications after the first.
    pub reconnects: AtomicU64,
    /// Connection attempts that failed.
    pub connect_failures: AtomicU64,
    /// Commands written to the socket.
    pub commands_sent: AtomicU64,
    /// Commands that got no reply in time.
    pub command_timeouts: AtomicU64,
    /// Connections dropped because nothing came from FreeSWITCH within the liveness timeout.
    pub liveness_failures: AtomicU64,
    /// Time from writing a command to reading its reply.
    pub command_latency: Histogram,
}

impl ClientStats {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
