//! The service's one metrics registry (prometheus-client): each part registers what it counts
//! when the service starts, and `/metrics` encodes the registry in the OpenMetrics text
//! format. Parts that keep their own lock-free counters (the event socket library, the
//! listeners' admission, the dialer) register a [`Collector`] that reads them at scrape time;
//! the others hold prometheus-client metrics directly.

use std::fmt;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;

pub use prometheus_client::registry::Registry;

use crate::esl::Client;
use crate::esl::stats::LATENCY_BUCKETS;

/// What `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The registry as OpenMetrics text.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::warn!(error = %e, "metrics could not be encoded");
    }
    out
}

/// A latency histogram in seconds, with the buckets every latency of the service uses.
pub fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Records `d` in seconds.
pub fn observe(h: &Histogram, d: Duration) {
    h.observe(d.as_secs_f64());
}

/// Writes one counter (`name` without `_total`: the encoder adds it).
pub fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

/// Writes one gauge.
pub fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

/// Writes one counter per label value (`name` without `_total`).
pub fn counter_family<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &'static str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> fmt::Result {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in values {
        let labels = [(label, value)];
        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The event socket client's counters, read from the library at scrape time.
pub struct EslMetrics(pub Client);

impl fmt::Debug for EslMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EslMetrics")
    }
}

impl Collector for EslMetrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = self.0.stats();
        let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        gauge(
            &mut enc,
            "finaz_esl_connected",
            "1 while the inbound event socket is authenticated.",
            i64::from(self.0.is_connected()),
        )?;
        for (name, help, v) in [
            (
                "finaz_esl_events_received",
                "Events read from FreeSWITCH.",
                &s.events_received,
            ),
            (
                "finaz_esl_events_dropped",
                "Events a slow internal subscriber could not take.",
                &s.events_dropped,
            ),
            (
                "finaz_esl_events_malformed",
                "Event frames that could not be parsed.",
                &s.events_malformed,
            ),
            (
                "finaz_esl_reconnects",
                "Successful reconnections after the first connection.",
                &s.reconnects,
            ),
            (
                "finaz_esl_connect_failures",
                "Failed connection attempts.",
                &s.connect_failures,
            ),
            (
                "finaz_esl_liveness_failures",
                "Connections dropped because FreeSWITCH sent nothing within freeswitch.liveness_timeout (hung switch, vanished host).",
                &s.liveness_failures,
            ),
            (
                "finaz_esl_commands_sent",
                "Commands written to FreeSWITCH.",
                &s.commands_sent,
            ),
            (
                "finaz_esl_command_timeouts",
                "Commands without a reply in time.",
                &s.command_timeouts,
            ),
        ] {
            counter(&mut enc, name, help, get(v))?;
        }
        // The library's histogram: cumulative counts per bound, handed over per bucket.
        let (cumulative, count, sum) = s.command_latency.snapshot();
        let mut buckets = Vec::with_capacity(cumulative.len() + 1);
        let mut below = 0;
        for (bound, n) in cumulative {
            buckets.push((bound, n - below));
            below = n;
        }
        buckets.push((f64::MAX, count - below));
        enc.encode_descriptor(
            "finaz_esl_command_latency_seconds",
            "Time from writing a command to reading its reply.",
            None,
            MetricType::Histogram,
        )?
        .encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esl::ClientConfig;
    use std::sync::atomic::Ordering;

    #[tokio::test]
    async fn the_event_socket_counters_are_encoded_as_openmetrics() {
        let stop = tokio_util::sync::CancellationToken::new();
        let (client, task) = Client::spawn(ClientConfig::new("127.0.0.1:1", "x"), stop.clone());
        client.stats().commands_sent.fetch_add(3, Ordering::Relaxed);
        client
            .stats()
            .command_latency
            .observe(Duration::from_millis(2));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(EslMetrics(client)));
        let out = encode(&registry);
        stop.cancel();
        let _ = task.await;
        assert!(
            out.contains(
                "# TYPE finaz_esl_commands_sent counter\nfinaz_esl_commands_sent_total 3\n"
            ),
            "{out}"
        );
        assert!(out.contains("finaz_esl_connected 0\n"), "{out}");
        assert!(out.contains("finaz_esl_command_latency_seconds_bucket{le=\"0.0025\"} 1\n"));
        assert!(out.contains("finaz_esl_command_latency_seconds_bucket{le=\"0.001\"} 0\n"));
        assert!(out.contains("finaz_esl_command_latency_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(out.contains("finaz_esl_command_latency_seconds_count 1\n"));
        assert!(out.ends_with("# EOF\n"));
    }
}
