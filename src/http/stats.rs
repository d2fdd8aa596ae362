//! Counters of the Finaz-facing API: requests by endpoint and outcome, and click2call latency.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use crate::esl::stats::Histogram;

#[derive(Debug, Default)]
pub struct HttpStats {
    /// (endpoint, outcome code) -> count; a few dozen keys at most.
    requests: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Time to answer a click2call that reached FreeSWITCH (success or its refusal).
    pub click2call_latency: Histogram,
}

impl HttpStats {
    pub fn count(&self, endpoint: &'static str, outcome: &'static str) {
        *self
            .requests
            .lock()
            .expect("lock")
            .entry((endpoint, outcome))
            .or_default() += 1;
    }

    pub fn observe_click2call(&self, d: Duration) {
        self.click2call_latency.observe(d);
    }

    /// Appends the Prometheus text.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP finaz_http_requests_total Requests from Finaz by endpoint and outcome (ok, duplicate or the error code).\n# TYPE finaz_http_requests_total counter"
        );
        for ((endpoint, outcome), n) in self.requests.lock().expect("lock").iter() {
            let _ = writeln!(
                out,
                "finaz_http_requests_total{{endpoint=\"{endpoint}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        crate::metrics::histogram(
            out,
            "finaz_click2call_latency_seconds",
            "Time from a click2call request to its answer, for requests that reached FreeSWITCH.",
            &self.click2call_latency,
        );
    }
}
