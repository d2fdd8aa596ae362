//! Renders the service's counters in the Prometheus text format for `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::esl::stats::{ClientStats, Histogram};

/// Appends one counter or gauge with its help line.
pub fn scalar(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// Appends a histogram in seconds.
pub fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let (buckets, count, sum) = h.snapshot();
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (bound, n) in buckets {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{le=\"+Inf\"}} {count}\n{name}_sum {sum}\n{name}_count {count}"
    );
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// The event socket client's metrics.
pub fn render_esl(out: &mut String, s: &ClientStats, connected: bool) {
    scalar(
        out,
        "finaz_esl_connected",
        "gauge",
        "1 while the inbound event socket is authenticated.",
        u8::from(connected),
    );
    scalar(
        out,
        "finaz_esl_events_received_total",
        "counter",
        "Events read from FreeSWITCH.",
        get(&s.events_received),
    );
    scalar(
        out,
        "finaz_esl_events_dropped_total",
        "counter",
        "Events a slow internal subscriber could not take.",
        get(&s.events_dropped),
    );
    scalar(
        out,
        "finaz_esl_events_malformed_total",
        "counter",
        "Event frames that could not be parsed.",
        get(&s.events_malformed),
    );
    scalar(
        out,
        "finaz_esl_reconnects_total",
        "counter",
        "Successful reconnections after the first connection.",
        get(&s.reconnects),
    );
    scalar(
        out,
        "finaz_esl_connect_failures_total",
        "counter",
        "Failed connection attempts.",
        get(&s.connect_failures),
    );
    scalar(
        out,
        "finaz_esl_liveness_failures_total",
        "counter",
        "Connections dropped because FreeSWITCH sent nothing within freeswitch.liveness_timeout (hung switch, vanished host).",
        get(&s.liveness_failures),
    );
    scalar(
        out,
        "finaz_esl_commands_sent_total",
        "counter",
        "Commands written to FreeSWITCH.",
        get(&s.commands_sent),
    );
    scalar(
        out,
        "finaz_esl_command_timeouts_total",
        "counter",
        "Commands without a reply in time.",
        get(&s.command_timeouts),
    );
    histogram(
        out,
        "finaz_esl_command_latency_seconds",
        "Time from writing a command to reading its reply.",
        &s.command_latency,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let s = ClientStats::default();
        s.commands_sent.fetch_add(3, Ordering::Relaxed);
        s.command_latency
            .observe(std::time::Duration::from_millis(2));
        let mut out = String::new();
        render_esl(&mut out, &s, true);
        assert!(out.contains(
            "# TYPE finaz_esl_commands_sent_total counter\nfinaz_esl_commands_sent_total 3\n"
        ));
        assert!(out.contains("finaz_esl_connected 1\n"));
        assert!(out.contains("finaz_esl_command_latency_seconds_bucket{le=\"0.0025\"} 1\n"));
        assert!(out.contains("finaz_esl_command_latency_seconds_bucket{le=\"0.001\"} 0\n"));
        assert!(out.contains("finaz_esl_command_latency_seconds_count 1\n"));
    }
}
