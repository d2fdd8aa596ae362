//! One click2call's task: records the call, sends the `bgapi originate`, then turns the
//! call's events, the job's result, its timers and the socket's state into [`Input`]s for
//! [`step`], and carries out the [`Effect`]s it returns (the reply to Finaz, the call's row,
//! `uuid_kill`, log lines) until the call is over.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::time::sleep_until;

use super::step::{Effect, Input, Phase, Stored, Within, step};
use super::{Click2CallError, Inner, Placed, Request};
use crate::domain::values::CallId;
use crate::domain::values::mask_phone;
use crate::esl::{Client, ClientError, ConnectionState, Job};
use crate::storage::{CallKind, CallState, NewCall, now_ms};

use super::dedupe::Outcome;

/// After the response deadline, how much longer than FreeSWITCH's own ring timeout an
/// abandoned call is watched for a late answer.
const GRACE: Duration = Duration::from_secs(30);

/// How long a placed call waits for the event socket to come back before it stops being
/// followed.
const RECONNECT_WAIT: Duration = Duration::from_secs(60);

struct CallTask {
    inner: Arc<Inner>,
    /// The event socket of the node the call is on.
    esl: Client,
    node: Arc<str>,
    id: CallId,
    outcome: watch::Sender<Outcome>,
    phase: Phase,
    log_telefone: String,
    ramal: String,
    started: Instant,
    deadline: tokio::time::Instant,
}

/// Places and follows one call on `node`; its id is registered for events while it runs.
pub(super) async fn run(
    inner: Arc<Inner>,
    node: (Arc<str>, Client),
    req: Request,
    outcome: watch::Sender<Outcome>,
) {
    let id = CallId::new();
    let (tx, signals) = mpsc::unbounded_channel();
    inner
        .calls
        .lock()
        .expect("lock")
        .insert(id.as_str().to_string(), tx);
    let started = Instant::now();
    let mut task = CallTask {
        log_telefone: mask_phone(req.telefone.as_str(), inner.settings.mask_phone_numbers),
        ramal: req.ramal.as_str().to_string(),
        deadline: tokio::time::Instant::from_std(started + inner.settings.response_timeout),
        inner: inner.clone(),
        node: node.0,
        esl: node.1,
        id: id.clone(),
        outcome,
        phase: Phase::Waiting,
        started,
    };
    task.run(req, signals).await;
    inner.calls.lock().expect("lock").remove(id.as_str());
}

impl CallTask {
    async fn run(&mut self, req: Request, mut signals: mpsc::UnboundedReceiver<Input>) {
        let inner = self.inner.clone();
        let settings = &inner.settings;
        let originate = match settings
            .plan
            .render(&self.id, &req.ramal, &req.telefone, now_ms())
        {
            Ok(o) => o,
            Err(e) => {
                // Nothing was stored or sent: only the reply.
                return self.reply(Err(Click2CallError::Internal(e.to_string())));
            }
        };
        let recording = originate
            .recording_path
            .as_ref()
            .and_then(|p| p.to_str().map(str::to_string));
        let stored = inner
            .storage
            .insert_call(NewCall {
                id: self.id.as_str(),
                kind: CallKind::Click2Call,
                ramal: Some(req.ramal.as_str()),
                telefone: Some(req.telefone.as_str()),
                crm_id: None,
                state: CallState::Originating,
                recording_path: recording.as_deref(),
                node: Some(&self.node),
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
        let mut job = match self.esl.bgapi(&originate.command).await {
            Ok(job) => Some(job),
            Err(e) => {
                let err = match e {
                    ClientError::NotConnected | ClientError::ConnectionLost => {
                        Click2CallError::NotConnected
                    }
                    ClientError::Timeout(_) => Click2CallError::Timeout(settings.response_timeout),
                    other => Click2CallError::Internal(other.to_string()),
                };
                return self.feed(Input::NotSent(err)).await;
            }
        };
        let mut state = self.esl.watch_state();
        let watch_limit = settings.response_timeout + settings.originate_timeout + GRACE;
        let give_up = tokio::time::Instant::from_std(self.started + watch_limit);
        while self.phase != Phase::Over {
            let input = tokio::select! {
                signal = signals.recv() => signal.unwrap_or(Input::Stopped),
                result = wait_job(&mut job), if job.is_some() => {
                    job = None;
                    match result {
                        Ok(body) => Input::JobResult(body),
                        // The connection went: the state watch below decides.
                        Err(_) => continue,
                    }
                }
                _ = sleep_until(self.deadline), if self.phase == Phase::Waiting => Input::ResponseDeadline,
                _ = sleep_until(give_up), if self.phase == Phase::Abandoned => Input::WatchOver,
                changed = state.changed() => {
                    // Any change means the connection dropped, even if it is already back
                    // (a quick reconnect): events and the job's result may have been lost.
                    let stopped = changed.is_err()
                        || *state.borrow_and_update() == ConnectionState::Stopped;
                    if stopped { Input::Stopped } else { Input::ConnectionLost }
                }
                _ = inner.shutdown.cancelled() => Input::Shutdown,
            };
            let reconnected = input == Input::ConnectionLost;
            self.feed(input).await;
            if reconnected {
                // The reconnection seen while checking is handled.
                state.borrow_and_update();
            }
        }
    }

    /// Steps the call with `input` and carries out every effect, feeding back the answer of
    /// a channel check.
    async fn feed(&mut self, input: Input) {
        let mut next = Some(input);
        while let Some(input) = next.take() {
            let (phase, effects) = step(self.phase, input, self.inner.settings.response_timeout);
            self.phase = phase;
            for effect in effects {
                match effect {
                    Effect::Reply(reply) => self.reply(reply),
                    Effect::Store { state, cause } => self.store(state, cause.as_deref()).await,
                    Effect::Kill { why } => self.kill(why).await,
                    Effect::CheckChannel(within) => {
                        next = Some(Input::ChannelChecked(self.check_channel(within).await));
                    }
                    Effect::Ended { cause, answered } => {
                        if answered {
                            tracing::info!(call_id = %self.id.as_str(), cause = %cause, "click2call ended");
                        } else {
                            tracing::info!(call_id = %self.id.as_str(), cause = %cause, "click2call not answered by the operator");
                        }
                    }
                }
            }
        }
    }

    fn reply(&self, reply: Result<bool, Click2CallError>) {
        match &reply {
            Ok(answered) => tracing::info!(
                call_id = %self.id.as_str(),
                ramal = %self.ramal,
                telefone = %self.log_telefone,
                answered,
                ms = self.started.elapsed().as_millis() as u64,
                "click2call ringing"
            ),
            Err(err) => tracing::info!(
                call_id = %self.id.as_str(),
                ramal = %self.ramal,
                telefone = %self.log_telefone,
                error = %err,
                "click2call failed"
            ),
        }
        let _ = self.outcome.send(Some(reply.map(|answered| Placed {
            call_id: self.id.clone(),
            answered,
        })));
    }

    /// Waits for the socket (until Finaz's deadline, or the reconnect wait), then asks
    /// FreeSWITCH whether the channel survived.
    async fn check_channel(&self, within: Within) -> Option<bool> {
        let wait = match within {
            Within::ResponseDeadline => self
                .deadline
                .saturating_duration_since(tokio::time::Instant::now()),
            Within::ReconnectWait => RECONNECT_WAIT,
        };
        let esl = &self.esl;
        if !esl.wait_connected(wait).await {
            return None;
        }
        esl.api(&format!("uuid_exists {}", self.id.as_str()))
            .await
            .ok()
            .map(|r| r.trim() == "true")
    }

    async fn kill(&self, why: &str) {
        tracing::warn!(call_id = %self.id.as_str(), why, "hanging up a click2call Finaz was told had failed");
        let cmd = format!("uuid_kill {} ORIGINATOR_CANCEL", self.id.as_str());
        if let Err(e) = self.esl.api(&cmd).await {
            tracing::warn!(call_id = %self.id.as_str(), error = %e, "uuid_kill failed");
        }
    }

    async fn store(&self, state: Stored, cause: Option<&str>) {
        let state = match state {
            Stored::Ringing => CallState::Ringing,
            Stored::Answered => CallState::Answered,
            Stored::Ended => CallState::Ended,
            Stored::Failed => CallState::Failed,
        };
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

async fn wait_job(job: &mut Option<Job>) -> Result<String, ClientError> {
    let job = job.as_mut().expect("guarded by is_some");
    let event = job.wait().await?;
    Ok(event.body_text().into_owned())
}
