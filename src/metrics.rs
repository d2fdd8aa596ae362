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

use std::sync::Arc;

use crate::esl::Client;
use crate::esl::stats::{ClientStats, LATENCY_BUCKETS};

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

/// The event socket clients' counters, one series per node (label `node`), read from the
/// library at scrape time.
pub struct EslMetrics(pub Vec<(Arc<str>, Client)>);

impl fmt::Debug for EslMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EslMetrics")
    }
}

type Field = fn(&ClientStats) -> &std::sync::atomic::AtomicU64;

const ESL_COUNTERS: &[(&str, &str, Field)] = &[
    (
        "finaz_esl_events_received",
        "Events read from FreeSWITCH.",
        |s| &s.events_received,
    ),
    (
        "finaz_esl_events_dropped",
        "Events a slow internal subscriber could not take.",
        |s| &s.events_dropped,
    ),
    (
        "finaz_esl_events_malformed",
        "Event frames that could not be parsed.",
        |s| &s.events_malformed,
    ),
    (
        "finaz_esl_reconnects",
        "Successful reconnections after the first connection.",
        |s| &s.reconnects,
    ),
    (
        "finaz_esl_connect_failures",
        "Failed connection attempts.",
        |s| &s.connect_failures,
    ),
    (
        "finaz_esl_liveness_failures",
        "Connections dropped because FreeSWITCH sent nothing within freeswitch.liveness_timeout (hung switch, vanished host).",
        |s| &s.liveness_failures,
    ),
    (
        "finaz_esl_commands_sent",
        "Commands written to FreeSWITCH.",
        |s| &s.commands_sent,
    ),
    (
        "finaz_esl_command_timeouts",
        "Commands without a reply in time.",
        |s| &s.command_timeouts,
    ),
];

impl Collector for EslMetrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        {
            let mut family = enc.encode_descriptor(
                "finaz_esl_connected",
                "1 while the node's inbound event socket is authenticated.",
                None,
                MetricType::Gauge,
            )?;
            for (node, client) in &self.0 {
                let labels = [("node", node.as_ref())];
                ConstGauge::new(i64::from(client.is_connected()))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        for (name, help, field) in ESL_COUNTERS {
            counter_family(
                &mut enc,
                name,
                help,
                "node",
                self.0
                    .iter()
                    .map(|(n, c)| (n.as_ref(), get(field(c.stats())))),
            )?;
        }
        let mut family = enc.encode_descriptor(
            "finaz_esl_command_latency_seconds",
            "Time from writing a command to reading its reply.",
            None,
            MetricType::Histogram,
        )?;
        for (node, client) in &self.0 {
            // The library's histogram: cumulative counts per bound, handed over per bucket.
            let (cumulative, count, sum) = client.stats().command_latency.snapshot();
            let mut buckets = Vec::with_capacity(cumulative.len() + 1);
            let mut below = 0;
            for (bound, n) in cumulative {
                buckets.push((bound, n - below));
                below = n;
            }
            buckets.push((f64::MAX, count - below));
            let labels = [("node", node.as_ref())];
            family
                .encode_family(&labels)?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    sum, count, &buckets, None,
                )?;
        }
        Ok(())
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
        registry.register_collector(Box::new(EslMetrics(vec![("fs1".into(), client)])));
        let out = encode(&registry);
        stop.cancel();
        let _ = task.await;
        assert!(
            out.contains(
                "# TYPE finaz_esl_commands_sent counter\nfinaz_esl_commands_sent_total{node=\"fs1\"} 3\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("finaz_esl_connected{node=\"fs1\"} 0\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "finaz_esl_command_latency_seconds_bucket{le=\"0.0025\",node=\"fs1\"} 1\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("finaz_esl_command_latency_seconds_bucket{le=\"0.001\",node=\"fs1\"} 0\n")
        );
        assert!(
            out.contains("finaz_esl_command_latency_seconds_bucket{le=\"+Inf\",node=\"fs1\"} 1\n")
        );
        assert!(out.contains("finaz_esl_command_latency_seconds_count{node=\"fs1\"} 1\n"));
        assert!(out.ends_with("# EOF\n"));
    }
}
