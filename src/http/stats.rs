//! Counters of the Finaz-facing API: requests by endpoint and outcome, and click2call latency.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::histogram::Histogram;

use super::Endpoint;
use crate::metrics;

#[derive(Debug)]
pub struct HttpStats {
    /// (endpoint, outcome code) -> count; a few dozen keys at most.
    requests: Mutex<BTreeMap<(Endpoint, &'static str), u64>>,
    /// Time to answer a click2call that reached FreeSWITCH (success or its refusal).
    pub click2call_latency: Histogram,
}

impl Default for HttpStats {
    fn default() -> Self {
        HttpStats {
            requests: Mutex::default(),
            click2call_latency: metrics::latency_histogram(),
        }
    }
}

impl HttpStats {
    pub fn count(&self, endpoint: Endpoint, outcome: &'static str) {
        *self
            .requests
            .lock()
            .expect("lock")
            .entry((endpoint, outcome))
            .or_default() += 1;
    }

    /// Click2call requests so far: answered with a call id (new or joined), and refused or
    /// failed.
    pub fn click2call_totals(&self) -> (u64, u64) {
        let mut placed = 0;
        let mut other = 0;
        for ((endpoint, outcome), n) in self.requests.lock().expect("lock").iter() {
            if *endpoint != Endpoint::Click2Call {
                continue;
            }
            if matches!(*outcome, "ok" | "duplicate") {
                placed += n;
            } else {
                other += n;
            }
        }
        (placed, other)
    }

    pub fn observe_click2call(&self, d: Duration) {
        metrics::observe(&self.click2call_latency, d);
    }
}

impl Collector for HttpStats {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let mut family = enc.encode_descriptor(
            "finaz_http_requests",
            "Requests from Finaz by endpoint and outcome (ok, duplicate or the error code).",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for ((endpoint, outcome), n) in self.requests.lock().expect("lock").iter() {
            let labels = [("endpoint", endpoint.as_str()), ("outcome", *outcome)];
            ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
        }
        let h = &self.click2call_latency;
        h.encode(enc.encode_descriptor(
            "finaz_click2call_latency_seconds",
            "Time from a click2call request to its answer, for requests that reached FreeSWITCH.",
            None,
            h.metric_type(),
        )?)
    }
}
