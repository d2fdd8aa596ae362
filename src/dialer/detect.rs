//! Whether a hand-off or an event is an operator answering a tagged dialer call, and what
//! Finaz is told about it: pure functions of the channel data or the event, no I/O.

use crate::config::DialerConfig;
use crate::domain::values::{CallId, MaskedPhone, Telefone};
use crate::esl::Event;
use crate::esl::outbound::ChannelData;

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
    pub(super) const ALL: [Source; 3] = [Source::Socket, Source::Bridge, Source::CallCenter];
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
    /// The FreeSWITCH node it came from, when known (set by the listener that saw it).
    pub node: Option<std::sync::Arc<str>>,
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
            node: None,
            legs,
            source,
        })
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
