//! Click2Call: asks FreeSWITCH to ring an operator and connect them to a customer, and says
//! as soon as the operator's phone rings (or why it cannot).
//!
//! Each call is one task that owns its story: it records the call, sends the `bgapi
//! originate`, then follows the call's events (routed here by channel uuid from one event
//! subscription) and the job's result until the call ends, writing each step to storage.
//! The HTTP side only waits on the call's outcome, so a client that hangs up early never
//! cancels a call half-placed. Nothing here touches wire bytes: commands are built by
//! [`OriginatePlan`] and carried by the ESL [`Client`].

pub mod dedupe;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;

use crate::domain::originate::OriginatePlan;
use crate::domain::values::{CallId, IdempotencyKey, Ramal, Telefone};
use crate::esl::{Client, ClientError, ConnectionState, Event, Job};
use crate::logging::mask_phone;
use crate::storage::{CallKind, CallState, NewCall, Storage, now_ms};
use dedupe::{Claim, Dedupe, Outcome};

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

/// What a call's events mean to its task.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Signal {
    Ringing,
    Answered,
    HungUp { cause: String },
}

impl Signal {
    fn from_event(event: &Event) -> Option<Signal> {
        match event.name()?.as_ref() {
            "CHANNEL_PROGRESS" | "CHANNEL_PROGRESS_MEDIA" => Some(Signal::Ringing),
            "CHANNEL_ANSWER" => Some(Signal::Answered),
            "CHANNEL_HANGUP_COMPLETE" => Some(Signal::HungUp {
                cause: event
                    .header("Hangup-Cause")
                    .map(|c| c.into_owned())
                    .unwrap_or_else(|| "UNKNOWN".into()),
            }),
            _ => None,
        }
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
    esl: Client,
    storage: Storage,
    settings: Settings,
    /// Live calls by channel uuid: where their events go.
    calls: Mutex<HashMap<String, mpsc::UnboundedSender<Signal>>>,
    dedupe: Mutex<Dedupe>,
    shutdown: CancellationToken,
}

impl Click2Call {
    /// Starts the event router; it runs until `shutdown`.
    pub fn start(
        esl: Client,
        storage: Storage,
        settings: Settings,
        shutdown: CancellationToken,
    ) -> (Click2Call, JoinHandle<()>) {
        let dedupe = Dedupe::new(settings.double_click_window, settings.idempotency_window);
        let inner = Arc::new(Inner {
            esl,
            storage,
            settings,
            calls: Mutex::new(HashMap::new()),
            dedupe: Mutex::new(dedupe),
            shutdown,
        });
        let events = inner.esl.subscribe(EVENT_QUEUE);
        let task = tokio::spawn(route_events(inner.clone(), events));
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
                if !self.inner.esl.is_connected() {
                    let _ = tx.send(Some(Err(Click2CallError::NotConnected)));
                } else {
                    tokio::spawn(run_call(self.inner.clone(), req, tx));
                }
                wait_outcome(rx).await.map(|placed| Answer {
                    placed,
                    duplicate: false,
                })
            }
        }
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
        let Some(signal) = Signal::from_event(&event) else {
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

/// Where one call stands, from its task's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nobody has been answered yet.
    Waiting,
    /// Finaz has the call id; the call is followed until it ends.
    Placed { answered: bool },
    /// Finaz was told it failed (timeout); if it rings after all, it is hung up.
    Abandoned,
}

struct CallTask {
    inner: Arc<Inner>,
    id: CallId,
    outcome: watch::Sender<Outcome>,
    phase: Phase,
    log_telefone: String,
    ramal: Ramal,
    started: Instant,
}

async fn run_call(inner: Arc<Inner>, req: Request, outcome: watch::Sender<Outcome>) {
    let id = CallId::new();
    let (tx, signals) = mpsc::unbounded_channel();
    inner
        .calls
        .lock()
        .expect("lock")
        .insert(id.as_str().to_string(), tx);
    let mut task = CallTask {
        log_telefone: mask_phone(req.telefone.as_str(), inner.settings.mask_phone_numbers),
        ramal: req.ramal.clone(),
        inner: inner.clone(),
        id: id.clone(),
        outcome,
        phase: Phase::Waiting,
        started: Instant::now(),
    };
    task.run(req, signals).await;
    inner.calls.lock().expect("lock").remove(id.as_str());
}

impl CallTask {
    async fn run(&mut self, req: Request, mut signals: mpsc::UnboundedReceiver<Signal>) {
        let inner = self.inner.clone();
        let settings = &inner.settings;
        let deadline = tokio::time::Instant::from_std(self.started + settings.response_timeout);
        let originate = match settings
            .plan
            .render(&self.id, &req.ramal, &req.telefone, now_ms())
        {
            Ok(o) => o,
            Err(e) => {
                return self
                    .fail(Click2CallError::Internal(e.to_string()), None)
                    .await;
            }
        };
        let recording = originate
            .recording_path
            .as_ref()
            .and_then(|p| p.to_str().map(str::to_string));
        let stored = self
            .inner
            .storage
            .insert_call(NewCall {
                id: self.id.as_str(),
                kind: CallKind::Click2Call,
                ramal: Some(req.ramal.as_str()),
                telefone: Some(req.telefone.as_str()),
                crm_id: None,
                state: CallState::Originating,
                recording_path: recording.as_deref(),
            })
            .await;
        if let Err(e) = stored {
            // Never ring a phone for a call we could not record.
            tracing::error!(call_id = %self.id.as_str(), error = %e, "click2call not placed: storage failed");
            let _ = self
                .outcome
                .send(Some(Err(Click2CallError::Storage(e.to_string()))));
            return;
        }
        let mut job = match self.inner.esl.bgapi(&originate.command).await {
            Ok(job) => Some(job),
            Err(e) => {
                let err = match e {
                    ClientError::NotConnected | ClientError::ConnectionLost => {
                        Click2CallError::NotConnected
                    }
                    ClientError::Timeout(_) => {
                        Click2CallError::Timeout(self.inner.settings.response_timeout)
                    }
                    other => Click2CallError::Internal(other.to_string()),
                };
                return self.fail(err, Some("NOT_SENT")).await;
            }
        };
        let mut state = self.inner.esl.watch_state();
        let watch_limit = settings.response_timeout + settings.originate_timeout + GRACE;
        let give_up = tokio::time::Instant::from_std(self.started + watch_limit);
        loop {
            tokio::select! {
                signal = signals.recv() => {
                    let Some(signal) = signal else { return };
                    if self.on_signal(signal).await {
                        return;
                    }
                }
                result = wait_job(&mut job), if job.is_some() => {
                    job = None;
                    // An error means the connection went: the state watch below decides.
                    if let Ok(body) = result
                        && self.on_job_result(&body).await
                    {
                        return;
                    }
                }
                _ = sleep_until(deadline), if self.phase == Phase::Waiting => {
                    self.abandon().await;
                }
                _ = sleep_until(give_up), if self.phase == Phase::Abandoned => return,
                changed = state.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // Any change means the connection dropped, even if it is already back
                    // (a quick reconnect): events and the job's result may have been lost.
                    if *state.borrow_and_update() == ConnectionState::Stopped {
                        return;
                    }
                    if self.on_connection_lost(deadline).await {
                        return;
                    }
                    // The reconnection seen while waiting is handled.
                    state.borrow_and_update();
                }
                _ = self.inner.shutdown.cancelled() => {
                    if self.phase == Phase::Waiting {
                        let _ = self.outcome.send(Some(Err(Click2CallError::NotConnected)));
                    }
                    return;
                }
            }
        }
    }

    /// Handles one channel event; true when the call is over.
    async fn on_signal(&mut self, signal: Signal) -> bool {
        match (signal, self.phase) {
            (Signal::Ringing | Signal::Answered, Phase::Abandoned) => {
                self.kill("answered late").await;
                false
            }
            (Signal::Ringing, Phase::Waiting) => {
                self.placed(false).await;
                false
            }
            (Signal::Answered, Phase::Waiting | Phase::Placed { answered: false }) => {
                self.placed(true).await;
                false
            }
            (Signal::HungUp { cause }, phase) => {
                match phase {
                    Phase::Waiting => {
                        self.fail(Click2CallError::from_cause(&cause), Some(&cause))
                            .await
                    }
                    Phase::Placed { answered: true } => {
                        self.set_state(CallState::Ended, Some(&cause)).await;
                        tracing::info!(call_id = %self.id.as_str(), cause = %cause, "click2call ended");
                    }
                    Phase::Placed { answered: false } | Phase::Abandoned => {
                        self.set_state(CallState::Failed, Some(&cause)).await;
                        tracing::info!(call_id = %self.id.as_str(), cause = %cause, "click2call not answered by the operator");
                    }
                }
                true
            }
            _ => false,
        }
    }

    /// Handles the originate's result (`+OK <uuid>` or `-ERR <CAUSE>`); true when over.
    async fn on_job_result(&mut self, body: &str) -> bool {
        let body = body.trim();
        if body.starts_with("+OK") {
            match self.phase {
                Phase::Waiting | Phase::Placed { answered: false } => self.placed(true).await,
                Phase::Abandoned => self.kill("answered after the timeout").await,
                Phase::Placed { answered: true } => {}
            }
            return false;
        }
        let cause = body
            .strip_prefix("-ERR")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .unwrap_or("UNKNOWN")
            .to_string();
        match self.phase {
            Phase::Waiting => {
                self.fail(Click2CallError::from_cause(&cause), Some(&cause))
                    .await
            }
            _ => {
                self.set_state(CallState::Failed, Some(&cause)).await;
                tracing::info!(call_id = %self.id.as_str(), cause = %cause, "click2call not answered by the operator");
            }
        }
        true
    }

    /// The event socket dropped. Waits for it to come back (until the response deadline if
    /// Finaz is still waiting), then asks FreeSWITCH whether the channel survived. True when
    /// the call is over or cannot be followed any more.
    async fn on_connection_lost(&mut self, deadline: tokio::time::Instant) -> bool {
        let wait = match self.phase {
            Phase::Waiting => deadline.saturating_duration_since(tokio::time::Instant::now()),
            _ => RECONNECT_WAIT,
        };
        let exists = if self.inner.esl.wait_connected(wait).await {
            self.inner
                .esl
                .api(&format!("uuid_exists {}", self.id.as_str()))
                .await
                .ok()
                .map(|r| r.trim() == "true")
        } else {
            None
        };
        match (self.phase, exists) {
            (Phase::Waiting, Some(true)) => {
                // Its ringing events were lost with the connection, but the channel lives.
                self.placed(false).await;
                false
            }
            (Phase::Waiting, Some(false)) => {
                self.fail(Click2CallError::ConnectionLost, Some("EVENT_SOCKET_LOST"))
                    .await;
                true
            }
            (Phase::Waiting, None) => {
                self.abandon().await;
                false
            }
            (_, Some(true)) => false,
            (Phase::Abandoned, _) => true,
            (Phase::Placed { answered }, _) => {
                let state = if answered {
                    CallState::Ended
                } else {
                    CallState::Failed
                };
                self.set_state(state, Some("EVENT_SOCKET_LOST")).await;
                true
            }
        }
    }

    async fn placed(&mut self, answered: bool) {
        let first = self.phase == Phase::Waiting;
        self.phase = Phase::Placed { answered };
        if first {
            let _ = self.outcome.send(Some(Ok(Placed {
                call_id: self.id.clone(),
                answered,
            })));
            tracing::info!(
                call_id = %self.id.as_str(),
                ramal = %self.ramal.as_str(),
                telefone = %self.log_telefone,
                answered,
                ms = self.started.elapsed().as_millis() as u64,
                "click2call ringing"
            );
        }
        let state = if answered {
            CallState::Answered
        } else {
            CallState::Ringing
        };
        self.set_state(state, None).await;
    }

    async fn fail(&mut self, err: Click2CallError, cause: Option<&str>) {
        tracing::info!(
            call_id = %self.id.as_str(),
            ramal = %self.ramal.as_str(),
            telefone = %self.log_telefone,
            error = %err,
            "click2call failed"
        );
        let _ = self.outcome.send(Some(Err(err)));
        self.set_state(CallState::Failed, cause).await;
    }

    /// Finaz gets a timeout; the call must not ring later behind its back.
    async fn abandon(&mut self) {
        self.phase = Phase::Abandoned;
        let timeout = self.inner.settings.response_timeout;
        self.fail(
            Click2CallError::Timeout(timeout),
            Some("NO_RESPONSE_FROM_FREESWITCH"),
        )
        .await;
        self.phase = Phase::Abandoned;
        self.kill("no answer from FreeSWITCH in time").await;
    }

    async fn kill(&self, why: &str) {
        tracing::warn!(call_id = %self.id.as_str(), why, "hanging up a click2call Finaz was told had failed");
        let cmd = format!("uuid_kill {} ORIGINATOR_CANCEL", self.id.as_str());
        if let Err(e) = self.inner.esl.api(&cmd).await {
            tracing::warn!(call_id = %self.id.as_str(), error = %e, "uuid_kill failed");
        }
    }

    async fn set_state(&self, state: CallState, cause: Option<&str>) {
        if let Err(e) = self
            .inner
            .storage
            .set_call_state(self.id.as_str(), state, cause)
            .await
        {
            tracing::warn!(call_id = %self.id.as_str(), error = %e, "could not store the call's state");
        }
    }
}

/// After the response deadline, how much longer than FreeSWITCH's own ring timeout an
/// abandoned call is watched for a late answer.
const GRACE: Duration = Duration::from_secs(30);

/// How long a placed call waits for the event socket to come back before it stops being
/// followed.
const RECONNECT_WAIT: Duration = Duration::from_secs(60);

async fn wait_job(job: &mut Option<Job>) -> Result<String, ClientError> {
    let job = job.as_mut().expect("guarded by is_some");
    let event = job.wait().await?;
    Ok(event.body_text().into_owned())
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
        assert_eq!(Signal::from_event(&create), None);
        let busy = Event::from_plain(bytes::Bytes::from_static(
            b"Event-Name: CHANNEL_HANGUP_COMPLETE\nUnique-ID: x\nHangup-Cause: USER_BUSY\n\n",
        ));
        assert_eq!(
            Signal::from_event(&busy),
            Some(Signal::HungUp {
                cause: "USER_BUSY".into()
            })
        );
    }
}
