//! Dialer answered: recognises an operator answering a tagged dialer call, from the outbound
//! socket or from events, and records it with its webhook to Finaz, once per call.
//!
//! Who is who: `pid` is the CRM id the dialer tagged the call with (`finaz_crm_id`), `num`
//! the customer's number, `ramal` the operator's extension, `cid` the call id. Tags win;
//! without them the values come from the channel (see [`Answered`]). The call id is the
//! dialer's `finaz_callid` when it is a UUID, else the customer's leg, so that the socket and
//! the events name the same call the same way, and any leg finds it for recordings.

mod detect;
pub mod events;
mod report;
pub mod socket;
mod stats;

pub use detect::{Answered, NotReported, Source};
pub use report::Reporter;
pub use stats::DialerStats;
