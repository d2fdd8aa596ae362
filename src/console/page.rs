//! The console's HTML, rendered on the server from a [`View`]: every value escaped, numbers
//! masked unless `admin.show_numbers`, times as UTC (the page's script shows them in the
//! browser's zone), charts as inline SVG. The same sections serve the first load and each
//! live refresh.

use std::fmt::Write;

use super::series::Chart;
use crate::domain::layout::utc_day;
use crate::domain::values::mask_phone;
use crate::storage::{CallKind, CallState, CallSummary, OutboxEntry};

const STYLE: &str = include_str!("console.css");
const SCRIPT: &str = include_str!("console.js");

/// Where the event socket stands, for the status section.
#[derive(Debug, Clone, Default)]
pub struct EslView {
    /// The node's name (`default` for the single `[freeswitch]` section).
    pub name: String,
    pub address: String,
    pub connected: bool,
    /// Unix ms of the current connection's start.
    pub since: Option<i64>,
    pub reconnects: u64,
    /// The last disconnection's reason, and when (unix ms).
    pub last_error: Option<(i64, String)>,
}

/// The calls filter as the form holds it.
#[derive(Debug, Clone, Default)]
pub struct FilterView {
    pub kind: String,
    pub state: String,
    pub ramal: String,
    pub number: String,
}

/// Everything one rendering shows.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub version: &'static str,
    pub uptime_secs: u64,
    /// One per FreeSWITCH node, in configuration order.
    pub esl: Vec<EslView>,
    pub not_ready: Option<String>,
    pub storage: String,
    pub filter: FilterView,
    pub calls: Vec<CallSummary>,
    /// Most calls listed: at this many, the list says it is cut.
    pub calls_limit: usize,
    pub show_numbers: bool,
    pub pending: Vec<OutboxEntry>,
    pub dead: Vec<OutboxEntry>,
    pub delivered: Vec<OutboxEntry>,
    pub charts: Vec<Chart>,
    pub now: i64,
    pub sandbox: bool,
}

/// Text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `2026-12-01 10:42:07 UTC` in a `<time>` the script localises.
fn time(ms: i64) -> String {
    let (y, m, d) = utc_day(ms);
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    let (h, mi, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    format!(
        "<time datetime=\"{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z\">{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC</time>"
    )
}

fn duration(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min {:02} s", secs / 60, secs % 60),
        _ => format!("{} h {:02} min", secs / 3600, secs / 60 % 60),
    }
}

/// The whole page.
pub fn page(v: &View) -> String {
    let mut out = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>finaz-freeswitch console</title><link rel=\"icon\" href=\"data:,\"><style>",
    );
    out.push_str(STYLE);
    out.push_str("</style></head><body><header><h1>finaz-freeswitch</h1>");
    if v.sandbox {
        out.push_str("<span class=\"badge warn\">sandbox: FreeSWITCH is simulated</span>");
    }
    out.push_str("</header><main id=\"live\">");
    out.push_str(&sections(v));
    out.push_str("</main><script>");
    out.push_str(SCRIPT);
    out.push_str("</script></body></html>\n");
    out
}

/// The live sections (what a refresh replaces).
pub fn sections(v: &View) -> String {
    let mut out = String::new();
    status(&mut out, v);
    calls(&mut out, v);
    webhooks(&mut out, v);
    charts(&mut out, &v.charts);
    out
}

/// The rows of one node's connection; named when there are several.
fn node_rows(out: &mut String, e: &EslView, named: bool) {
    let label = if named {
        format!("FreeSWITCH {}", escape(&e.name))
    } else {
        "FreeSWITCH".to_string()
    };
    let _ = write!(
        out,
        "<dt>{label}</dt><dd class=\"{}\">{} {}</dd>\
         <dt>Connected since</dt><dd>{}</dd>\
         <dt>Reconnects</dt><dd>{}</dd>\
         <dt>Last connection error</dt><dd>{}</dd>",
        if e.connected { "ok" } else { "bad" },
        escape(&e.address),
        if e.connected {
            "connected"
        } else {
            "not connected"
        },
        e.since.map_or("—".into(), time),
        e.reconnects,
        e.last_error
            .as_ref()
            .map_or("none".into(), |(at, why)| format!(
                "{} {}",
                time(*at),
                escape(why)
            )),
    );
}

fn status(out: &mut String, v: &View) {
    let mut nodes = String::new();
    for e in &v.esl {
        node_rows(&mut nodes, e, v.esl.len() > 1);
    }
    let _ = write!(
        out,
        "<section id=\"status\"><h2>Status</h2><dl>\
         <dt>Ready</dt><dd class=\"{}\">{}</dd>\
         {nodes}\
         <dt>Storage</dt><dd class=\"{}\">{} ({})</dd>\
         <dt>Version</dt><dd>{}</dd><dt>Up for</dt><dd>{}</dd></dl></section>",
        if v.not_ready.is_none() { "ok" } else { "bad" },
        match &v.not_ready {
            None => "ready".to_string(),
            Some(r) => format!("not ready: {}", escape(r)),
        },
        if v.not_ready
            .as_deref()
            .is_some_and(|r| r.contains("storage"))
        {
            "bad"
        } else {
            "ok"
        },
        escape(&v.storage),
        match v.not_ready.as_deref() {
            None => "takes writes",
            Some(r) if r.contains("storage") => "cannot write",
            // Readiness stops at the event socket: storage is checked once it is back.
            Some(_) => "not checked while the event socket is down",
        },
        escape(v.version),
        duration(v.uptime_secs as i64),
    );
}

fn calls(out: &mut String, v: &View) {
    let f = &v.filter;
    let option = |value: &str, current: &str| {
        format!(
            "<option value=\"{value}\"{}>{}</option>",
            if value == current { " selected" } else { "" },
            if value.is_empty() { "any" } else { value }
        )
    };
    let _ = write!(
        out,
        "<section id=\"calls\"><h2>Calls, last 24 h</h2>\
         <form class=\"filter\" method=\"get\" action=\"/\">\
         <label>Kind <select name=\"kind\">{}{}{}</select></label>\
         <label>State <select name=\"state\">{}</select></label>\
         <label>Ramal <input name=\"ramal\" value=\"{}\" size=\"8\"></label>\
         <label>Number <input name=\"number\" value=\"{}\" size=\"14\" inputmode=\"numeric\"></label>\
         <button>Filter</button></form>",
        option("", &f.kind),
        option(CallKind::Click2Call.as_str(), &f.kind),
        option(CallKind::Dialer.as_str(), &f.kind),
        std::iter::once("")
            .chain(CallState::ALL.map(CallState::as_str))
            .map(|s| option(s, &f.state))
            .collect::<String>(),
        escape(&f.ramal),
        escape(&f.number),
    );
    if v.calls.is_empty() {
        out.push_str("<p class=\"empty\">No calls match.</p></section>");
        return;
    }
    out.push_str(
        "<table><thead><tr><th>Started</th><th>Kind</th><th>State</th><th>Outcome</th>\
         <th>Ramal</th><th>Number</th><th>Duration</th><th>Legs</th><th>Recording</th></tr></thead><tbody>",
    );
    for c in &v.calls {
        let number = c
            .telefone
            .as_deref()
            .map(|t| mask_phone(t, !v.show_numbers))
            .unwrap_or_default();
        let talked = c
            .answered_at
            .map(|a| duration((c.ended_at.unwrap_or(v.now) - a) / 1000))
            .unwrap_or_else(|| "—".into());
        let recording = if c.recordings > 0 {
            format!(
                "<audio controls preload=\"none\" src=\"/console/recording?callid={}\"></audio>",
                escape(&c.id)
            )
        } else {
            "—".into()
        };
        let _ = write!(
            out,
            "<tr data-id=\"{id}\"><td>{}</td><td>{}</td><td class=\"state {st}\">{st}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(c.created_at),
            c.kind.as_str(),
            escape(c.outcome.as_deref().unwrap_or("")),
            escape(c.ramal.as_deref().unwrap_or("")),
            escape(&number),
            talked,
            c.legs,
            recording,
            id = escape(&c.id),
            st = c.state.as_str(),
        );
    }
    out.push_str("</tbody></table>");
    if v.calls_limit > 0 && v.calls.len() >= v.calls_limit {
        let _ = write!(
            out,
            "<p class=\"empty\">Showing the newest {}: narrow the filter to see older calls.</p>",
            v.calls_limit
        );
    }
    out.push_str("</section>");
}

fn webhooks(out: &mut String, v: &View) {
    out.push_str("<section id=\"webhooks\"><h2>Webhooks</h2>");
    let table = |out: &mut String, title: &str, rows: &[OutboxEntry], dead: bool| {
        let _ = write!(out, "<h3>{title} ({})</h3>", rows.len());
        if rows.is_empty() {
            out.push_str("<p class=\"empty\">None.</p>");
            return;
        }
        out.push_str(
            "<table><thead><tr><th>#</th><th>Call</th><th>Attempts</th><th>Stored</th>\
             <th>Next try / delivered</th><th>Last error</th><th></th></tr></thead><tbody>",
        );
        for e in rows {
            let when = e.delivered_at.map(time).unwrap_or_else(|| {
                if dead {
                    "—".into()
                } else {
                    time(e.next_attempt_at)
                }
            });
            let action = if dead {
                format!(
                    "<form method=\"post\" action=\"/console/retry\"><input type=\"hidden\" name=\"id\" value=\"{}\"><button>Retry</button></form>",
                    e.id
                )
            } else {
                String::new()
            };
            let _ = write!(
                out,
                "<tr data-id=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                e.id,
                e.id,
                escape(&e.call_id),
                e.attempts,
                time(e.created_at),
                when,
                escape(e.last_error.as_deref().unwrap_or("")),
                action
            );
        }
        out.push_str("</tbody></table>");
    };
    table(out, "Pending", &v.pending, false);
    table(out, "Dead", &v.dead, true);
    if !v.dead.is_empty() {
        out.push_str(
            "<form method=\"post\" action=\"/console/retry\"><input type=\"hidden\" name=\"all\" value=\"dead\"><button>Retry all dead</button></form>",
        );
    }
    table(out, "Delivered in the last hour", &v.delivered, false);
    out.push_str("</section>");
}

fn charts(out: &mut String, charts: &[Chart]) {
    out.push_str("<section id=\"charts\"><h2>Last hour</h2><div class=\"charts\">");
    for c in charts {
        let max = c
            .lines
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .fold(0.0_f64, f64::max);
        let _ = write!(
            out,
            "<figure><figcaption>{} <small>(max {:.1} {})</small></figcaption>\
             <svg viewBox=\"0 0 300 80\" preserveAspectRatio=\"none\" role=\"img\" aria-label=\"{}\">",
            escape(c.title),
            max,
            c.unit,
            escape(c.title)
        );
        if c.lines.iter().all(|(_, v)| v.len() < 2) {
            out.push_str(
                "<text x=\"150\" y=\"44\" text-anchor=\"middle\" font-size=\"9\" fill=\"#5b6575\">collecting: a point every minute (10 s for events)</text>",
            );
        }
        for (i, (name, values)) in c.lines.iter().enumerate() {
            if values.is_empty() {
                continue;
            }
            let step = 300.0 / (values.len().max(2) - 1) as f64;
            let points: Vec<String> = values
                .iter()
                .enumerate()
                .map(|(x, y)| {
                    let y = if max > 0.0 {
                        78.0 - y / max * 76.0
                    } else {
                        78.0
                    };
                    format!("{:.1},{:.1}", x as f64 * step, y)
                })
                .collect();
            let _ = write!(
                out,
                "<polyline class=\"line{i}\" points=\"{}\"><title>{}</title></polyline>",
                points.join(" "),
                escape(name)
            );
        }
        out.push_str("</svg><p class=\"legend\">");
        for (i, (name, _)) in c.lines.iter().enumerate() {
            let _ = write!(out, "<span class=\"line{i}\">{}</span> ", escape(name));
        }
        out.push_str("</p></figure>");
    }
    out.push_str("</div></section>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_numbers_masked() {
        let call = CallSummary {
            id: "c1".into(),
            kind: CallKind::Dialer,
            state: CallState::Answered,
            outcome: Some("<script>alert(1)</script>".into()),
            ramal: Some("1001".into()),
            telefone: Some("41988445566".into()),
            crm_id: None,
            created_at: 1_795_651_200_000,
            answered_at: Some(1_795_651_200_000),
            ended_at: Some(1_795_651_265_000),
            legs: 2,
            recordings: 1,
        };
        let mut v = View {
            calls: vec![call],
            ..View::default()
        };
        let html = sections(&v);
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("4198****566") && !html.contains("41988445566"));
        assert!(html.contains("1 min 05 s"));
        assert!(html.contains("2026-11-26 00:00:00 UTC"));
        assert!(html.contains("/console/recording?callid=c1"));
        assert!(!html.contains("Showing the newest"));
        v.calls_limit = 1;
        assert!(sections(&v).contains("Showing the newest 1:"));
        v.show_numbers = true;
        assert!(sections(&v).contains("41988445566"));
        assert_eq!(escape("a\"b'c&"), "a&quot;b&#39;c&amp;");
    }
}
