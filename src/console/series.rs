//! The last hour of the service's own counters, sampled every 10 s in memory, for the
//! console's charts: click2calls per minute by outcome, webhook delivery latency, events per
//! second. Nothing is stored: a restart starts the hour again.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::esl::Client;
use crate::http::stats::HttpStats;
use crate::outbox::OutboxStats;

/// Between samples.
pub const EVERY: Duration = Duration::from_secs(10);
/// Samples kept: one hour, and the one before it (for differences).
const KEPT: usize = 361;

/// Running totals at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Seconds since the series started.
    pub at: f64,
    pub placed: u64,
    pub refused: u64,
    pub delivered: u64,
    pub delivery_ms: u64,
    pub events: u64,
}

/// One chart: a value per minute (or per sample), oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: &'static str,
    pub unit: &'static str,
    pub lines: Vec<(&'static str, Vec<f64>)>,
}

/// What the sampler reads.
#[derive(Clone)]
pub struct Sources {
    /// Every node's event socket (events per second of all of them).
    pub esl: Vec<Client>,
    pub http: Arc<HttpStats>,
    pub outbox: Arc<OutboxStats>,
}

impl Sources {
    fn read(&self, at: f64) -> Sample {
        let (placed, refused) = self.http.click2call_totals();
        Sample {
            at,
            placed,
            refused,
            delivered: self.outbox.delivered.load(Ordering::Relaxed),
            delivery_ms: self.outbox.delivery_ms_total.load(Ordering::Relaxed),
            events: self
                .esl
                .iter()
                .map(|c| c.stats().events_received.load(Ordering::Relaxed))
                .sum(),
        }
    }
}

/// The samples, shared by the sampler and the console.
#[derive(Clone, Default)]
pub struct Series(Arc<Mutex<VecDeque<Sample>>>);

impl Series {
    /// Samples `sources` every [`EVERY`] until `shutdown`.
    pub fn start(sources: Sources, shutdown: CancellationToken) -> Series {
        let series = Series::default();
        let me = series.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.cancelled() => return,
                }
                me.push(sources.read(started.elapsed().as_secs_f64()));
            }
        });
        series
    }

    pub fn push(&self, s: Sample) {
        let mut q = self.0.lock().expect("lock");
        if q.len() == KEPT {
            q.pop_front();
        }
        q.push_back(s);
    }

    /// The three charts of the console.
    pub fn charts(&self) -> Vec<Chart> {
        let q: Vec<Sample> = self.0.lock().expect("lock").iter().copied().collect();
        charts(&q)
    }
}

/// Per-minute (six samples) differences of the totals, and events per second per sample.
pub fn charts(q: &[Sample]) -> Vec<Chart> {
    let mut placed = Vec::new();
    let mut refused = Vec::new();
    let mut latency = Vec::new();
    let minutes: Vec<&Sample> = q.iter().rev().step_by(6).collect::<Vec<_>>();
    let minutes: Vec<&Sample> = minutes.into_iter().rev().collect();
    for w in minutes.windows(2) {
        let (a, b) = (w[0], w[1]);
        placed.push(b.placed.saturating_sub(a.placed) as f64);
        refused.push(b.refused.saturating_sub(a.refused) as f64);
        let n = b.delivered.saturating_sub(a.delivered);
        latency.push(if n == 0 {
            0.0
        } else {
            b.delivery_ms.saturating_sub(a.delivery_ms) as f64 / n as f64
        });
    }
    let events = q
        .windows(2)
        .map(|w| {
            let dt = (w[1].at - w[0].at).max(1e-3);
            w[1].events.saturating_sub(w[0].events) as f64 / dt
        })
        .collect();
    vec![
        Chart {
            title: "Click2calls per minute",
            unit: "/min",
            lines: vec![("placed", placed), ("refused or failed", refused)],
        },
        Chart {
            title: "Webhook delivery latency (mean per minute)",
            unit: "ms",
            lines: vec![("latency", latency)],
        },
        Chart {
            title: "FreeSWITCH events per second",
            unit: "/s",
            lines: vec![("events", events)],
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_are_differences_of_totals() {
        let q: Vec<Sample> = (0..13)
            .map(|i| Sample {
                at: i as f64 * 10.0,
                placed: i * 2,
                refused: i / 6,
                delivered: i,
                delivery_ms: i * 30,
                events: i * 100,
            })
            .collect();
        let c = charts(&q);
        assert_eq!(
            c[0].lines[0].1,
            [12.0, 12.0],
            "two whole minutes, 2 per sample"
        );
        assert_eq!(c[0].lines[1].1, [1.0, 1.0]);
        assert_eq!(c[1].lines[0].1, [30.0, 30.0], "30 ms per webhook");
        assert_eq!(c[2].lines[0].1.len(), 12);
        assert!(c[2].lines[0].1.iter().all(|v| (*v - 10.0).abs() < 1e-9));
        assert!(
            charts(&[])
                .iter()
                .all(|c| c.lines.iter().all(|l| l.1.is_empty()))
        );
    }
}
