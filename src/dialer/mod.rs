//! Dialer answered: recognises an operator answering a tagged dialer call, from the outbound
//! socket or from events, and records it with its webhook to Finaz, once per call.
//!
//! Who is who: `pid` is the CRM id the dialer tagged the call with (`finaz_crm_id`), `num`
//! the customer's number, `ramal` the operator's extension, `cid` the call id. Tags win;
//! without them the values come from the channel (see [`Answered`]). The call id is the
//! dialer's `finaz_callid` when it is a UUID, else the customer's leg, so that the socket and
//! the events name the same call the same way, and any leg finds it for recordings.

pub mod events;
pub mod socket;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::DialerConfig;
use crate::domain::answered_url::AnsweredUrl;
use crate::domain::values::{CallId, MaskedPhone, Telefone};
use crate::esl::Event;
use crate::esl::outbound::ChannelData;
use crate::logging::mask_phone;
use crate::storage::{DialerReport, Reported, Storage, StorageError, now_ms};

/// How the answer was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The dialplan's `socket` app connected to us.
    Socket,
    /// `CHANNEL_BRIDGE` of a tagged leg.
    Bridge,
    /// mod_callcenter's `bridge-agent-start`.
    CallCenter,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Socket => "socket",
            Source::Bridge => "bridge",
            Source::CallCenter => "callcenter",
        }
    }
    const ALL: [Source; 3] = [Source::Socket, Source::Bridge, Source::CallCenter];
}

/// An operator answered a tagged dialer call.
#[derive(Clone, PartialEq, Eq)]
pub struct Answered {
    pub call_id: String,
    /// The customer's channel: with the call id, the key of one conversation.
    pub customer_leg: String,
    pub crm_id: String,
    pub telefone: Option<String>,
    pub ramal: Option<String>,
    /// Every channel uuid seen for this call.
    pub legs: Vec<String>,
    pub source: Source,
}

impl std::fmt::Debug for Answered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answered")
            .field("call_id", &self.call_id)
            .field("customer_leg", &self.customer_leg)
            .field("crm_id", &self.crm_id)
            .field("telefone", &MaskedPhone(self.telefone.as_deref()))
            .field("ramal", &self.ramal)
            .field("legs", &self.legs)
            .field("source", &self.source)
            .finish()
    }
}

/// Why a hand-off is not reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReported {
    #[error("the channel carries no CRM id (variable {0})")]
    NoCrmId(String),
    #[error("the channel has no Unique-ID")]
    NoCallId,
    #[error("{0} is too long or holds control characters")]
    BadValue(&'static str),
}

/// Reads headers of a channel, whatever carried them.
trait Channel {
    fn get(&self, name: &str) -> Option<String>;

    fn var(&self, name: &str) -> Option<String> {
        self.get(&format!("variable_{name}"))
    }

    /// A leg's own number: an outbound leg's destination, an inbound leg's caller id.
    fn number_of(&self, prefix: &str, direction_header: &str) -> Option<String> {
        let outbound = self
            .get(direction_header)
            .is_some_and(|d| d.eq_ignore_ascii_case("outbound"));
        if outbound {
            self.get(&format!("{prefix}-Destination-Number"))
        } else {
            self.get(&format!("{prefix}-Caller-ID-Number"))
        }
    }
}

impl Channel for ChannelData {
    fn get(&self, name: &str) -> Option<String> {
        self.header(name).filter(|v| !v.is_empty())
    }
}

impl Channel for Event {
    fn get(&self, name: &str) -> Option<String> {
        self.header(name)
            .map(|v| v.into_owned())
            .filter(|v| !v.is_empty())
    }
}

/// Values longer than this, or with control characters, are refused.
const MAX_VALUE: usize = 128;

fn clean(field: &'static str, v: Option<String>) -> Result<Option<String>, NotReported> {
    match v {
        Some(v) if v.len() > MAX_VALUE || v.chars().any(char::is_control) => {
            Err(NotReported::BadValue(field))
        }
        other => Ok(other
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())),
    }
}

/// The operator's extension from an agent name such as `1001@default`.
fn agent_extension(agent: &str) -> String {
    agent.split('@').next().unwrap_or(agent).to_string()
}

impl Answered {
    /// From the channel a `socket` app handed us. The snippet we ship runs it on the
    /// operator's leg when it answers, so the customer is the other leg, if there is one.
    pub fn from_socket(ch: &ChannelData, vars: &DialerConfig) -> Result<Self, NotReported> {
        let own = ch.get("Unique-ID").ok_or(NotReported::NoCallId)?;
        let other = ch.get("Other-Leg-Unique-ID");
        let telefone = ch.var(&vars.telefone_variable).or_else(|| {
            if other.is_some() {
                ch.number_of("Other-Leg", "Other-Leg-Direction")
            } else {
                ch.number_of("Caller", "Call-Direction")
            }
        });
        let ramal = ch.var(&vars.ramal_variable).or_else(|| {
            ch.var("dialed_user").or_else(|| {
                // The controlled channel is the operator's when a customer leg bridged to it.
                other
                    .as_ref()
                    .and_then(|_| ch.number_of("Caller", "Call-Direction"))
            })
        });
        let customer = other.clone().unwrap_or_else(|| own.clone());
        let mut legs = vec![own];
        legs.extend(other);
        Self::build(ch, vars, Source::Socket, customer, legs, telefone, ramal)
    }

    /// From an inbound event: `Some` for the events that mean "an operator answered" on a
    /// tagged call (CHANNEL_BRIDGE, CUSTOM callcenter::info bridge-agent-start), `None` for
    /// every other event, and for untagged bridges (ordinary calls).
    pub fn from_event(ev: &Event, vars: &DialerConfig) -> Option<Result<Self, NotReported>> {
        let name = ev.name()?;
        let tagged = ev.var(&vars.crm_id_variable).is_some();
        match name.as_ref() {
            "CHANNEL_BRIDGE" if tagged => {
                let own = ev.get("Unique-ID")?;
                let telefone = ev
                    .var(&vars.telefone_variable)
                    .or_else(|| ev.number_of("Caller", "Call-Direction"));
                let ramal = ev.var(&vars.ramal_variable).or_else(|| {
                    ev.var("dialed_user")
                        .or_else(|| ev.number_of("Other-Leg", "Other-Leg-Direction"))
                });
                let mut legs = vec![own.clone()];
                for h in [
                    "Other-Leg-Unique-ID",
                    "Bridge-A-Unique-ID",
                    "Bridge-B-Unique-ID",
                ] {
                    legs.extend(ev.get(h));
                }
                Some(Self::build(
                    ev,
                    vars,
                    Source::Bridge,
                    own,
                    legs,
                    telefone,
                    ramal,
                ))
            }
            "CUSTOM"
                if tagged
                    && ev.subclass().as_deref() == Some("callcenter::info")
                    && ev.get("CC-Action").as_deref() == Some("bridge-agent-start") =>
            {
                // The event carries the agent's channel; the customer is the member session.
                let member = ev.get("CC-Member-Session-UUID")?;
                let telefone = ev
                    .var(&vars.telefone_variable)
                    .or_else(|| ev.get("CC-Member-CID-Number"));
                let ramal = ev.var(&vars.ramal_variable).or_else(|| {
                    ev.get("CC-Agent")
                        .map(|a| agent_extension(&a))
                        .or_else(|| ev.var("dialed_user"))
                });
                let mut legs = vec![member.clone()];
                legs.extend(ev.get("CC-Agent-UUID"));
                legs.extend(ev.get("Unique-ID"));
                Some(Self::build(
                    ev,
                    vars,
                    Source::CallCenter,
                    member,
                    legs,
                    telefone,
                    ramal,
                ))
            }
            _ => None,
        }
    }

    fn build(
        ch: &impl Channel,
        vars: &DialerConfig,
        source: Source,
        customer_leg: String,
        mut legs: Vec<String>,
        telefone: Option<String>,
        ramal: Option<String>,
    ) -> Result<Self, NotReported> {
        let crm_id = clean("pid", ch.var(&vars.crm_id_variable))?
            .ok_or_else(|| NotReported::NoCrmId(vars.crm_id_variable.clone()))?;
        // A dialer's own call id is used when it can serve recording downloads (a UUID).
        let tagged_id = ch
            .var(&vars.callid_variable)
            .and_then(|v| CallId::parse(&v).ok())
            .map(|c| c.as_str().to_string());
        let call_id = tagged_id.unwrap_or_else(|| customer_leg.clone());
        if !legs.contains(&call_id) {
            legs.push(call_id.clone());
        }
        legs.sort();
        legs.dedup();
        Ok(Answered {
            call_id: clean("cid", Some(call_id))?.ok_or(NotReported::NoCallId)?,
            customer_leg: clean("cid", Some(customer_leg))?.ok_or(NotReported::NoCallId)?,
            crm_id,
            // Written like a click2call number when it is one (`+55 41 98844-5566` is
            // `5541988445566`); anything else is passed on as it is (percent-encoded in the URL).
            telefone: clean("num", telefone)?.map(|t| match Telefone::parse(&t) {
                Ok(n) => n.as_str().to_string(),
                Err(_) => t,
            }),
            ramal: clean("ramal", ramal)?,
            legs,
            source,
        })
    }
}

/// Counters of the dialer flow.
#[derive(Debug, Default)]
pub struct DialerStats {
    answered: [AtomicU64; 3],
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
    fn inc(c: &AtomicU64) {
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

/// Answered calls held in memory while the database refuses them; beyond this the newest is
/// given up on (logged), so a long outage cannot exhaust memory.
const MAX_WAITING: usize = 10_000;

/// Records answered calls with their webhook and wakes the outbox.
#[derive(Clone)]
pub struct Reporter {
    /// Places for reports waiting to be retried.
    waiting: Arc<tokio::sync::Semaphore>,
    storage: Storage,
    url: Arc<AnsweredUrl>,
    empresa_id: String,
    max_retry_age: Duration,
    wake: Arc<Notify>,
    pub stats: Arc<DialerStats>,
    mask_phone_numbers: bool,
}

impl Reporter {
    pub fn new(
        storage: Storage,
        url: AnsweredUrl,
        empresa_id: Option<String>,
        max_retry_age: Duration,
        wake: Arc<Notify>,
        mask_phone_numbers: bool,
    ) -> Self {
        Reporter {
            waiting: Arc::new(tokio::sync::Semaphore::new(MAX_WAITING)),
            storage,
            url: Arc::new(url),
            empresa_id: empresa_id.unwrap_or_default(),
            max_retry_age,
            wake,
            stats: Arc::new(DialerStats::default()),
            mask_phone_numbers,
        }
    }

    /// Counts and logs a hand-off that is not reported.
    pub fn not_reported(&self, source: Source, why: &NotReported, call_id: Option<&str>) {
        match why {
            NotReported::NoCrmId(_) => DialerStats::inc(&self.stats.without_crm_id),
            _ => DialerStats::inc(&self.stats.refused),
        }
        tracing::warn!(source = source.as_str(), call_id, reason = %why, "answered dialer call not sent to Finaz");
    }

    /// Stores the call and its webhook in a task of its own, retrying with backoff (0.2 s
    /// doubling to 30 s) for as long as the database refuses it (full disk, a lock held too
    /// long), so a failing write never drops a screen pop. The receiver says when it is
    /// durable; whoever waits on it may give up without cancelling the report.
    pub fn report_until_stored(&self, a: Answered) -> tokio::sync::oneshot::Receiver<Reported> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let me = self.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            let mut place = None;
            loop {
                match me.report(a.clone()).await {
                    Ok(r) => {
                        if place.take().is_some() {
                            me.stats.reports_waiting.fetch_sub(1, Ordering::Relaxed);
                            tracing::info!(call_id = %a.call_id, "answered dialer call stored after a retry");
                        }
                        let _ = tx.send(r);
                        return;
                    }
                    Err(_) if place.is_none() => match me.waiting.clone().try_acquire_owned() {
                        Ok(p) => {
                            place = Some(p);
                            me.stats.reports_waiting.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            tracing::error!(call_id = %a.call_id, waiting = MAX_WAITING, "too many answered calls waiting for the database: this one is given up on");
                            return;
                        }
                    },
                    Err(_) => {}
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        });
        rx
    }

    /// Stores the call and its webhook once (durable when this returns `Ok`), then wakes
    /// the outbox to send it. [`Reporter::report_until_stored`] retries it.
    pub async fn report(&self, a: Answered) -> Result<Reported, StorageError> {
        let url = self.url.render(
            &a.crm_id,
            a.telefone.as_deref().unwrap_or_default(),
            &a.call_id,
            a.ramal.as_deref().unwrap_or_default(),
            &self.empresa_id,
        );
        let report = DialerReport {
            call_id: a.call_id.clone(),
            customer_leg: a.customer_leg.clone(),
            crm_id: a.crm_id.clone(),
            telefone: a.telefone.clone(),
            ramal: a.ramal.clone(),
            legs: a.legs.clone(),
            give_up_at: now_ms() + self.max_retry_age.as_millis() as i64,
            url,
        };
        let result = self.storage.report_dialer_call(report).await;
        let telefone = a
            .telefone
            .as_deref()
            .map(|t| mask_phone(t, self.mask_phone_numbers))
            .unwrap_or_default();
        match &result {
            Ok(Reported::Enqueued { call_id, outbox_id }) => {
                DialerStats::inc(&self.stats.answered[a.source as usize]);
                self.wake.notify_one();
                tracing::info!(
                    call_id = %call_id,
                    source = a.source.as_str(),
                    ramal = a.ramal.as_deref().unwrap_or(""),
                    telefone = %telefone,
                    outbox_id,
                    "dialer call answered; webhook queued"
                );
            }
            Ok(Reported::Duplicate { call_id }) => {
                DialerStats::inc(&self.stats.duplicates);
                tracing::debug!(call_id = %call_id, source = a.source.as_str(), "dialer call already reported");
            }
            Err(e) => {
                DialerStats::inc(&self.stats.store_failures);
                tracing::error!(call_id = %a.call_id, source = a.source.as_str(), error = %e, "answered dialer call could not be stored");
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn vars() -> DialerConfig {
        config::load(None).unwrap().1.dialer
    }

    fn event(lines: &[(&str, &str)]) -> Event {
        let mut text = String::new();
        for (k, v) in lines {
            text.push_str(&format!("{k}: {v}\n"));
        }
        text.push('\n');
        Event::from_plain(bytes::Bytes::from(text))
    }

    #[test]
    fn untagged_bridges_and_other_events_are_not_hand_offs() {
        let v = vars();
        assert_eq!(
            Answered::from_event(
                &event(&[("Event-Name", "CHANNEL_BRIDGE"), ("Unique-ID", "x")]),
                &v
            ),
            None
        );
        assert_eq!(
            Answered::from_event(
                &event(&[
                    ("Event-Name", "CHANNEL_ANSWER"),
                    ("Unique-ID", "x"),
                    ("variable_finaz_crm_id", "1")
                ]),
                &v
            ),
            None
        );
    }

    #[test]
    fn a_callcenter_bridge_names_the_member_leg_and_the_agent() {
        let ev = event(&[
            ("Event-Name", "CUSTOM"),
            ("Event-Subclass", "callcenter%3A%3Ainfo"),
            ("CC-Action", "bridge-agent-start"),
            ("Unique-ID", "agent-leg"),
            ("CC-Agent", "1001%40default"),
            ("CC-Agent-UUID", "agent-leg"),
            ("CC-Member-Session-UUID", "member-leg"),
            ("CC-Member-CID-Number", "41988445566"),
            ("variable_finaz_crm_id", "CRM%207"),
        ]);
        let a = Answered::from_event(&ev, &vars()).unwrap().unwrap();
        assert_eq!(a.call_id, "member-leg");
        assert_eq!(a.crm_id, "CRM 7");
        assert_eq!(a.ramal.as_deref(), Some("1001"));
        assert_eq!(a.telefone.as_deref(), Some("41988445566"));
        assert_eq!(a.legs, ["agent-leg", "member-leg"]);
        assert_eq!(a.source, Source::CallCenter);
    }

    #[test]
    fn a_uuid_finaz_callid_wins_and_bad_values_are_refused() {
        let id = "d1a1e700-0000-4000-8000-0000000000aa";
        let ev = event(&[
            ("Event-Name", "CHANNEL_BRIDGE"),
            ("Unique-ID", "leg-a"),
            ("Other-Leg-Unique-ID", "leg-b"),
            ("variable_finaz_crm_id", "1"),
            ("variable_finaz_callid", id),
        ]);
        let a = Answered::from_event(&ev, &vars()).unwrap().unwrap();
        assert_eq!(a.call_id, id);
        assert_eq!(a.legs, [id, "leg-a", "leg-b"]);
        let ev = event(&[
            ("Event-Name", "CHANNEL_BRIDGE"),
            ("Unique-ID", "leg-a"),
            ("variable_finaz_crm_id", "1"),
            ("variable_finaz_callid", "not-a-uuid"),
        ]);
        assert_eq!(
            Answered::from_event(&ev, &vars()).unwrap().unwrap().call_id,
            "leg-a"
        );
        let ev = event(&[
            ("Event-Name", "CHANNEL_BRIDGE"),
            ("Unique-ID", "leg-a"),
            ("variable_finaz_crm_id", "a%0Ab"),
        ]);
        assert_eq!(
            Answered::from_event(&ev, &vars()).unwrap(),
            Err(NotReported::BadValue("pid"))
        );
    }
}
