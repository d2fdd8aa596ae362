//! Click2Call: asks FreeSWITCH to ring an operator and connect them to a customer, and says
//! as soon as the operator's phone rings (or why it cannot).
//!
//! Each call is one task (`task.rs`) that owns its story: it records the call, sends the
//! `bgapi originate`, then follows the call's events (routed here by channel uuid from one
//! event subscription) and the job's result until the call ends, writing each step to
//! storage. What each of those means for the call is decided without I/O in `step.rs`.
//! A repeated click joins the first attempt: in this process through `dedupe.rs`, across
//! replicas and restarts through the database's claims (`claim.rs`).
//! The HTTP side only waits on the call's outcome, so a client that hangs up early never
//! cancels a call half-placed. Nothing here touches wire bytes: commands are built by
//! [`OriginatePlan`] and carried by the ESL [`Client`].

mod claim;
pub mod dedupe;
mod step;
mod task;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::domain::originate::OriginatePlan;
use crate::domain::values::{CallId, IdempotencyKey, Ramal, Telefone};
use crate::esl::Event;
use crate::nodes::{Nodes, RouteError};
use crate::storage::{Claimed, Storage};
use dedupe::{Claim, Dedupe, Outcome};
use step::Input;

/// A click2call asked for by Finaz, already validated.
#[derive(Debug, Clone)]
pub struct Request {
    pub ramal: Ramal,
    pub telefone: Telefone,
    pub idempotency_key: Option<IdempotencyKey>,
}

/// A call that reached the operator's phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub call_id: CallId,
    /// The operator had already picked up when we answered (phones that answer at once).
    pub answered: bool,
}

/// A placed call as the caller sees it: a repeated click gets the first call back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub placed: Placed,
    pub duplicate: bool,
}

/// Why no call id can be given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Click2CallError {
    /// `USER_NOT_REGISTERED` or `SUBSCRIBER_ABSENT`.
    #[error("extension is not registered ({cause})")]
    NotRegistered { cause: String },
    /// `USER_BUSY`.
    #[error("extension is busy")]
    Busy,
    /// Any other originate failure cause.
    #[error("FreeSWITCH could not place the call: {cause}")]
    Failed { cause: String },
    #[error("FreeSWITCH event socket is not connected")]
    NotConnected,
    #[error("the event socket was lost before FreeSWITCH answered and the call did not survive")]
    ConnectionLost,
    #[error("no answer from FreeSWITCH within {}s", .0.as_secs_f32())]
    Timeout(Duration),
    #[error("this Idempotency-Key was used for another ramal or telefone")]
    KeyReused,
    #[error("storage unavailable: {0}")]
    Storage(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Click2CallError {
    /// Maps an originate failure cause (`USER_BUSY`, ...) to the error Finaz sees.
    pub fn from_cause(cause: &str) -> Self {
        match cause {
            "USER_NOT_REGISTERED" | "SUBSCRIBER_ABSENT" => Click2CallError::NotRegistered {
                cause: cause.to_string(),
            },
            "USER_BUSY" => Click2CallError::Busy,
            _ => Click2CallError::Failed {
                cause: cause.to_string(),
            },
        }
    }
}

/// What a call's channel event means to its task, if anything.
fn signal(event: &Event) -> Option<Input> {
    match event.name()?.as_ref() {
        "CHANNEL_PROGRESS" | "CHANNEL_PROGRESS_MEDIA" => Some(Input::Ringing),
        "CHANNEL_ANSWER" => Some(Input::Answered),
        "CHANNEL_HANGUP_COMPLETE" => Some(Input::HungUp {
            cause: event
                .header("Hangup-Cause")
                .map(|c| c.into_owned())
                .unwrap_or_else(|| "UNKNOWN".into()),
        }),
        _ => None,
    }
}

/// Settings of the click2call engine.
#[derive(Debug, Clone)]
pub struct Settings {
    pub plan: OriginatePlan,
    /// How long a request waits for the phone to ring (or a failure).
    pub response_timeout: Duration,
    /// How long FreeSWITCH itself rings the operator; bounds how long an abandoned call is
    /// watched.
    pub originate_timeout: Duration,
    pub double_click_window: Duration,
    pub idempotency_window: Duration,
    pub mask_phone_numbers: bool,
}

/// The click2call engine. Clone it freely.
#[derive(Clone)]
pub struct Click2Call {
    inner: Arc<Inner>,
}

struct Inner {
    nodes: Nodes,
    storage: Storage,
    settings: Settings,
    /// Live calls by channel uuid: where their events go.
    calls: Mutex<HashMap<String, mpsc::UnboundedSender<Input>>>,
    dedupe: Mutex<Dedupe>,
    shutdown: CancellationToken,
}

impl Click2Call {
    /// Starts the event router; it runs until `shutdown`.
    pub fn start(
        nodes: Nodes,
        storage: Storage,
        settings: Settings,
        shutdown: CancellationToken,
    ) -> (Click2Call, JoinHandle<()>) {
        let dedupe = Dedupe::new(settings.double_click_window, settings.idempotency_window);
        let inner = Arc::new(Inner {
            nodes,
            storage,
            settings,
            calls: Mutex::new(HashMap::new()),
            dedupe: Mutex::new(dedupe),
            shutdown,
        });
        // One router per node, into the one map of live calls (uuids are unique).
        let routers: Vec<_> = inner
            .nodes
            .all()
            .iter()
            .map(|n| tokio::spawn(route_events(inner.clone(), n.esl.subscribe(EVENT_QUEUE))))
            .collect();
        let task = tokio::spawn(async move {
            for r in routers {
                let _ = r.await;
            }
        });
        (Click2Call { inner }, task)
    }

    /// Live calls being followed (tests, metrics).
    pub fn live_calls(&self) -> usize {
        self.inner.calls.lock().expect("lock").len()
    }

    /// Places a call, or joins the one a double click already placed. Returns once the
    /// operator's phone rings, or with the reason it cannot.
    pub async fn place(&self, req: Request) -> Result<Answer, Click2CallError> {
        let claim = self.inner.dedupe.lock().expect("lock").claim(
            Instant::now(),
            &req.ramal,
            &req.telefone,
            req.idempotency_key.as_ref(),
        );
        match claim {
            Claim::KeyReused => Err(Click2CallError::KeyReused),
            Claim::Join(rx) => wait_outcome(rx).await.map(|placed| Answer {
                placed,
                duplicate: true,
            }),
            Claim::New(tx) => {
                let rx = tx.subscribe();
                let (joined_tx, joined) = tokio::sync::oneshot::channel();
                // Spawned: a client that hangs up while the claim is written cancels nothing.
                tokio::spawn(start(self.inner.clone(), req, tx, joined_tx));
                let placed = wait_outcome(rx).await;
                let duplicate = joined.await.unwrap_or(false);
                placed.map(|placed| Answer { placed, duplicate })
            }
        }
    }
}

/// Claims a new attempt in storage, then places it, or follows the attempt of another
/// replica that holds the claim; says into `joined` which it was.
async fn start(
    inner: Arc<Inner>,
    req: Request,
    tx: watch::Sender<Outcome>,
    joined: tokio::sync::oneshot::Sender<bool>,
) {
    let s = &inner.settings;
    // Claimed in the database (several replicas, or a key to outlive a restart), or decided
    // by this process's memory alone. `joined` is told only of a join (dropped: not one).
    if claim::shared(&inner.storage, &req) {
        let request = claim::request(&req, s.double_click_window, s.idempotency_window);
        match inner.storage.claim_click2call(request).await {
            Ok(Claimed::Own { owner }) => {
                tokio::spawn(claim::settle(inner.storage.clone(), owner, tx.subscribe()));
            }
            Ok(Claimed::Join { owner }) => {
                let _ = joined.send(true);
                let patience = s.response_timeout + Duration::from_secs(1);
                let _ = tx.send(claim::follow(&inner.storage, owner, patience).await);
                return;
            }
            Ok(Claimed::KeyReused) => {
                let _ = tx.send(Some(Err(Click2CallError::KeyReused)));
                return;
            }
            Err(e) => {
                let _ = tx.send(Some(Err(Click2CallError::Storage(e.to_string()))));
                return;
            }
        }
    }
    drop(joined);
    place_on_its_node(inner, req, tx).await;
}

/// Routes the call to the node of its extension and follows it there.
async fn place_on_its_node(inner: Arc<Inner>, req: Request, tx: watch::Sender<Outcome>) {
    let node = match inner.nodes.route(&req.ramal).await {
        Ok(node) if node.esl.is_connected() => (node.name.clone(), node.esl.clone()),
        Ok(_) => {
            let _ = tx.send(Some(Err(Click2CallError::NotConnected)));
            return;
        }
        Err(RouteError::NodeDown(name)) => {
            tracing::warn!(node = %name, ramal = %req.ramal.as_str(), "click2call refused: the extension's node is down");
            let _ = tx.send(Some(Err(Click2CallError::NotConnected)));
            return;
        }
        Err(RouteError::NotRegistered) => {
            let _ = tx.send(Some(Err(Click2CallError::NotRegistered {
                cause: "USER_NOT_REGISTERED".into(),
            })));
            return;
        }
    };
    let mut outcome = tx.subscribe();
    task::run(inner.clone(), node, req.clone(), tx).await;
    // A phone that moved without telling us: ask again next time.
    if let Some(Some(Err(Click2CallError::NotRegistered { .. }))) = outcome
        .wait_for(Option::is_some)
        .await
        .ok()
        .map(|o| o.clone())
    {
        inner.nodes.forget(&req.ramal);
    }
}

/// Events waiting for the router; a burst larger than this loses events (counted).
const EVENT_QUEUE: usize = 65_536;

async fn wait_outcome(mut rx: watch::Receiver<Outcome>) -> Result<Placed, Click2CallError> {
    match rx.wait_for(Option::is_some).await {
        Ok(outcome) => outcome.clone().expect("waited for Some"),
        Err(_) => Err(Click2CallError::Internal(
            "the call's task ended without an outcome".into(),
        )),
    }
}

/// Forwards each call's channel events to its task; never waits on anything.
async fn route_events(inner: Arc<Inner>, mut events: mpsc::Receiver<Arc<Event>>) {
    loop {
        let event = tokio::select! {
            e = events.recv() => match e { Some(e) => e, None => return },
            _ = inner.shutdown.cancelled() => return,
        };
        let Some(signal) = signal(&event) else {
            continue;
        };
        let Some(uuid) = event.unique_id() else {
            continue;
        };
        let target = inner
            .calls
            .lock()
            .expect("lock")
            .get(uuid.as_ref())
            .cloned();
        if let Some(tx) = target {
            let _ = tx.send(signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_map_to_what_finaz_sees() {
        assert_eq!(
            Click2CallError::from_cause("USER_NOT_REGISTERED"),
            Click2CallError::NotRegistered {
                cause: "USER_NOT_REGISTERED".into()
            }
        );
        assert!(matches!(
            Click2CallError::from_cause("SUBSCRIBER_ABSENT"),
            Click2CallError::NotRegistered { .. }
        ));
        assert_eq!(
            Click2CallError::from_cause("USER_BUSY"),
            Click2CallError::Busy
        );
        assert_eq!(
            Click2CallError::from_cause("NO_ROUTE_DESTINATION"),
            Click2CallError::Failed {
                cause: "NO_ROUTE_DESTINATION".into()
            }
        );
    }

    #[test]
    fn channel_create_alone_is_not_a_signal() {
        let create = Event::from_plain(bytes::Bytes::from_static(
            b"Event-Name: CHANNEL_CREATE\nUnique-ID: x\n\n",
        ));
        assert_eq!(signal(&create), None);
        let busy = Event::from_plain(bytes::Bytes::from_static(
            b"Event-Name: CHANNEL_HANGUP_COMPLETE\nUnique-ID: x\nHangup-Cause: USER_BUSY\n\n",
        ));
        assert_eq!(
            signal(&busy),
            Some(Input::HungUp {
                cause: "USER_BUSY".into()
            })
        );
    }
}
