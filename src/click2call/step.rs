//! A click2call's decisions, without any I/O: where the call stands ([`Phase`]) and what each
//! thing that happens to it ([`Input`]) makes of it ([`step`]: the next phase and the
//! [`Effect`]s its task must carry out, in order).
//!
//! The task in `task.rs` owns the sockets, the clock and the database; it turns events,
//! the job's result, timers and connection changes into inputs, and effects into replies,
//! rows, `uuid_kill`s and log lines.

use super::Click2CallError;

/// Where one call stands, from its task's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Finaz waits: nobody has been rung yet.
    Waiting,
    /// Finaz has the call id; the call is followed until it ends.
    Placed { answered: bool },
    /// Finaz was told it failed (timeout); if it rings after all, it is hung up.
    Abandoned,
    /// Nothing more to follow: the task ends.
    Over,
}

/// What happened to the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// `CHANNEL_PROGRESS` / `CHANNEL_PROGRESS_MEDIA`: the operator's phone rings.
    Ringing,
    /// `CHANNEL_ANSWER`.
    Answered,
    /// `CHANNEL_HANGUP_COMPLETE` with its cause.
    HungUp { cause: String },
    /// The originate's `BACKGROUND_JOB` body: `+OK <uuid>` or `-ERR <CAUSE>`.
    JobResult(String),
    /// `bgapi originate` could not be sent.
    NotSent(Click2CallError),
    /// `http`'s response time is up.
    ResponseDeadline,
    /// An abandoned call has been watched long enough for a late answer.
    WatchOver,
    /// The event socket dropped (maybe already back): events and the job's result may be lost.
    ConnectionLost,
    /// After [`Effect::CheckChannel`]: whether the channel still exists (`None`: the socket
    /// did not come back in time, or FreeSWITCH did not say).
    ChannelChecked(Option<bool>),
    /// The event socket client stopped for good, or the call's event feed closed.
    Stopped,
    /// The service is shutting down.
    Shutdown,
}

/// How long [`Effect::CheckChannel`] may wait for the socket to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Within {
    /// Until Finaz's response deadline (Finaz is still waiting).
    ResponseDeadline,
    /// The reconnect wait of a call already placed.
    ReconnectWait,
}

/// What the task must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Tell Finaz: the phone rings (`answered`: the operator already picked up), or why not.
    /// Given at most once per call.
    Reply(Result<bool, Click2CallError>),
    /// Record the call's state, and its cause when known.
    Store {
        state: Stored,
        cause: Option<String>,
    },
    /// Hang the call up (`uuid_kill`): Finaz was told it failed.
    Kill { why: &'static str },
    /// Wait for the socket to come back, then ask whether the channel exists; answer with
    /// [`Input::ChannelChecked`].
    CheckChannel(Within),
    /// A line for the log: how a call Finaz already had ended.
    Ended { cause: String, answered: bool },
}

/// The states a call's row takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Ringing,
    Answered,
    Ended,
    Failed,
}

/// The cause stored when the originate was never sent.
pub const NOT_SENT: &str = "NOT_SENT";
/// The cause stored when FreeSWITCH said nothing before Finaz's deadline.
pub const NO_RESPONSE: &str = "NO_RESPONSE_FROM_FREESWITCH";
/// The cause stored when the event socket was lost and the call with it.
pub const SOCKET_LOST: &str = "EVENT_SOCKET_LOST";

/// The next phase after `input`, and what to do about it.
pub fn step(
    phase: Phase,
    input: Input,
    response_timeout: std::time::Duration,
) -> (Phase, Vec<Effect>) {
    use Phase::*;
    let mut fx = Vec::new();
    let next = match (phase, input) {
        (Over, _) => Over,

        (Abandoned, Input::Ringing | Input::Answered) => {
            fx.push(Effect::Kill {
                why: "answered late",
            });
            Abandoned
        }
        (Waiting, Input::Ringing) => placed(&mut fx, phase, false),
        (Waiting | Placed { answered: false }, Input::Answered) => placed(&mut fx, phase, true),
        (Placed { .. }, Input::Ringing) | (Placed { answered: true }, Input::Answered) => phase,

        (Waiting, Input::HungUp { cause }) => {
            fail(&mut fx, Click2CallError::from_cause(&cause), Some(cause))
        }
        (Placed { answered: true }, Input::HungUp { cause }) => ended(&mut fx, cause, true),
        (Placed { answered: false } | Abandoned, Input::HungUp { cause }) => {
            ended(&mut fx, cause, false)
        }

        (_, Input::JobResult(body)) => match job_cause(&body) {
            None => match phase {
                Waiting | Placed { answered: false } => placed(&mut fx, phase, true),
                Abandoned => {
                    fx.push(Effect::Kill {
                        why: "answered after the timeout",
                    });
                    Abandoned
                }
                other => other,
            },
            Some(cause) if phase == Waiting => {
                fail(&mut fx, Click2CallError::from_cause(&cause), Some(cause))
            }
            Some(cause) => ended(&mut fx, cause, false),
        },

        (Waiting, Input::NotSent(err)) => fail(&mut fx, err, Some(NOT_SENT.into())),
        (other, Input::NotSent(_)) => other,

        (Waiting, Input::ResponseDeadline) => abandon(&mut fx, response_timeout),
        (other, Input::ResponseDeadline) => other,
        (Abandoned, Input::WatchOver) => Over,
        (other, Input::WatchOver) => other,

        (Waiting, Input::ConnectionLost) => {
            fx.push(Effect::CheckChannel(Within::ResponseDeadline));
            Waiting
        }
        (other, Input::ConnectionLost) => {
            fx.push(Effect::CheckChannel(Within::ReconnectWait));
            other
        }
        // Its ringing events were lost with the connection, but the channel lives.
        (Waiting, Input::ChannelChecked(Some(true))) => placed(&mut fx, phase, false),
        (Waiting, Input::ChannelChecked(Some(false))) => fail(
            &mut fx,
            Click2CallError::ConnectionLost,
            Some(SOCKET_LOST.into()),
        ),
        (Waiting, Input::ChannelChecked(None)) => abandon(&mut fx, response_timeout),
        (other, Input::ChannelChecked(Some(true))) => other,
        (Abandoned, Input::ChannelChecked(_)) => Over,
        (Placed { answered }, Input::ChannelChecked(_)) => {
            fx.push(Effect::Store {
                state: if answered {
                    Stored::Ended
                } else {
                    Stored::Failed
                },
                cause: Some(SOCKET_LOST.into()),
            });
            Over
        }

        (_, Input::Stopped) => Over,
        (Waiting, Input::Shutdown) => {
            fx.push(Effect::Reply(Err(Click2CallError::NotConnected)));
            Over
        }
        (_, Input::Shutdown) => Over,
    };
    (next, fx)
}

/// `None` for `+OK ...`; the cause of `-ERR <CAUSE>` otherwise (`UNKNOWN` when it gives none).
fn job_cause(body: &str) -> Option<String> {
    let body = body.trim();
    if body.starts_with("+OK") {
        return None;
    }
    Some(
        body.strip_prefix("-ERR")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .unwrap_or("UNKNOWN")
            .to_string(),
    )
}

fn placed(fx: &mut Vec<Effect>, from: Phase, answered: bool) -> Phase {
    if from == Phase::Waiting {
        fx.push(Effect::Reply(Ok(answered)));
    }
    fx.push(Effect::Store {
        state: if answered {
            Stored::Answered
        } else {
            Stored::Ringing
        },
        cause: None,
    });
    Phase::Placed { answered }
}

fn fail(fx: &mut Vec<Effect>, err: Click2CallError, cause: Option<String>) -> Phase {
    fx.push(Effect::Reply(Err(err)));
    fx.push(Effect::Store {
        state: Stored::Failed,
        cause,
    });
    Phase::Over
}

/// A call Finaz had ends: `Ended` if the operator had answered, `Failed` otherwise.
fn ended(fx: &mut Vec<Effect>, cause: String, answered: bool) -> Phase {
    fx.push(Effect::Store {
        state: if answered {
            Stored::Ended
        } else {
            Stored::Failed
        },
        cause: Some(cause.clone()),
    });
    fx.push(Effect::Ended { cause, answered });
    Phase::Over
}

/// Finaz gets a timeout; the call must not ring later behind its back.
fn abandon(fx: &mut Vec<Effect>, response_timeout: std::time::Duration) -> Phase {
    fail(
        fx,
        Click2CallError::Timeout(response_timeout),
        Some(NO_RESPONSE.into()),
    );
    fx.push(Effect::Kill {
        why: "no answer from FreeSWITCH in time",
    });
    Phase::Abandoned
}

#[cfg(test)]
mod tests {
    use super::*;
    use Effect::*;
    use Phase::*;
    use std::time::Duration;

    const T: Duration = Duration::from_secs(10);

    fn run(inputs: Vec<Input>) -> (Phase, Vec<Effect>) {
        let mut phase = Waiting;
        let mut all = Vec::new();
        for input in inputs {
            let (next, fx) = step(phase, input, T);
            phase = next;
            all.extend(fx);
        }
        (phase, all)
    }

    fn store(state: Stored, cause: Option<&str>) -> Effect {
        Store {
            state,
            cause: cause.map(str::to_string),
        }
    }

    fn hung_up(cause: &str) -> Input {
        Input::HungUp {
            cause: cause.into(),
        }
    }

    #[test]
    fn ringing_then_answered_then_hung_up() {
        let (phase, fx) = run(vec![
            Input::Ringing,
            Input::Answered,
            hung_up("NORMAL_CLEARING"),
        ]);
        assert_eq!(phase, Over);
        assert_eq!(
            fx,
            [
                Reply(Ok(false)),
                store(Stored::Ringing, None),
                store(Stored::Answered, None),
                store(Stored::Ended, Some("NORMAL_CLEARING")),
                Ended {
                    cause: "NORMAL_CLEARING".into(),
                    answered: true
                },
            ]
        );
    }

    #[test]
    fn busy_after_create_is_answered_at_once_with_its_cause() {
        let (phase, fx) = run(vec![hung_up("USER_BUSY")]);
        assert_eq!(phase, Over);
        assert_eq!(
            fx,
            [
                Reply(Err(Click2CallError::Busy)),
                store(Stored::Failed, Some("USER_BUSY"))
            ]
        );
        // The job's -ERR says the same when the hangup event was lost.
        let (_, fx) = run(vec![Input::JobResult("-ERR USER_NOT_REGISTERED\n".into())]);
        assert_eq!(
            fx[0],
            Reply(Err(Click2CallError::NotRegistered {
                cause: "USER_NOT_REGISTERED".into()
            }))
        );
        let (_, fx) = run(vec![Input::JobResult("-ERR".into())]);
        assert_eq!(fx[1], store(Stored::Failed, Some("UNKNOWN")));
    }

    #[test]
    fn a_phone_that_answers_at_once_is_answered_once() {
        // +OK before any event, then the ANSWER event: one reply, no second row change.
        let (phase, fx) = run(vec![
            Input::JobResult("+OK 6f0c\n".into()),
            Input::Answered,
            Input::Ringing,
        ]);
        assert_eq!(phase, Placed { answered: true });
        assert_eq!(fx, [Reply(Ok(true)), store(Stored::Answered, None)]);
    }

    #[test]
    fn late_progress_after_the_504_is_hung_up() {
        let (phase, fx) = run(vec![Input::ResponseDeadline]);
        assert_eq!(phase, Abandoned);
        assert_eq!(
            fx,
            [
                Reply(Err(Click2CallError::Timeout(T))),
                store(Stored::Failed, Some(NO_RESPONSE)),
                Kill {
                    why: "no answer from FreeSWITCH in time"
                },
            ]
        );
        for late in [
            Input::Ringing,
            Input::Answered,
            Input::JobResult("+OK x".into()),
        ] {
            let (phase, fx) = step(Abandoned, late, T);
            assert_eq!(phase, Abandoned);
            assert!(matches!(fx[..], [Kill { .. }]), "{fx:?}");
        }
        // Its hangup is recorded; no second reply ever goes out.
        let (phase, fx) = step(Abandoned, hung_up("ORIGINATOR_CANCEL"), T);
        assert_eq!(phase, Over);
        assert!(!fx.iter().any(|e| matches!(e, Reply(_))), "{fx:?}");
        assert_eq!(step(Abandoned, Input::WatchOver, T).0, Over);
    }

    #[test]
    fn the_deadline_means_nothing_once_placed() {
        let placed = Placed { answered: false };
        assert_eq!(step(placed, Input::ResponseDeadline, T), (placed, vec![]));
        assert_eq!(step(placed, Input::WatchOver, T), (placed, vec![]));
    }

    #[test]
    fn reconnect_while_finaz_waits() {
        // The socket drops before any event: checked until the deadline.
        let (phase, fx) = step(Waiting, Input::ConnectionLost, T);
        assert_eq!(
            (phase, fx),
            (Waiting, vec![CheckChannel(Within::ResponseDeadline)])
        );
        // The channel survived: it rings (its events were lost).
        let (phase, fx) = step(Waiting, Input::ChannelChecked(Some(true)), T);
        assert_eq!(phase, Placed { answered: false });
        assert_eq!(fx[0], Reply(Ok(false)));
        // It did not: Finaz is told the socket was lost.
        let (phase, fx) = step(Waiting, Input::ChannelChecked(Some(false)), T);
        assert_eq!(phase, Over);
        assert_eq!(
            fx,
            [
                Reply(Err(Click2CallError::ConnectionLost)),
                store(Stored::Failed, Some(SOCKET_LOST))
            ]
        );
        // The socket never came back in time: a timeout, and the call is killed if it rings.
        let (phase, fx) = step(Waiting, Input::ChannelChecked(None), T);
        assert_eq!(phase, Abandoned);
        assert_eq!(fx[0], Reply(Err(Click2CallError::Timeout(T))));
    }

    #[test]
    fn reconnect_mid_call() {
        let up = Placed { answered: true };
        assert_eq!(
            step(up, Input::ConnectionLost, T),
            (up, vec![CheckChannel(Within::ReconnectWait)])
        );
        // Still there: followed on.
        assert_eq!(step(up, Input::ChannelChecked(Some(true)), T), (up, vec![]));
        // Gone, or unknown: it ended while we could not see it.
        for gone in [Some(false), None] {
            assert_eq!(
                step(up, Input::ChannelChecked(gone), T),
                (Over, vec![store(Stored::Ended, Some(SOCKET_LOST))])
            );
        }
        let ringing = Placed { answered: false };
        assert_eq!(
            step(ringing, Input::ChannelChecked(Some(false)), T),
            (Over, vec![store(Stored::Failed, Some(SOCKET_LOST))])
        );
        assert_eq!(
            step(Abandoned, Input::ChannelChecked(None), T),
            (Over, vec![])
        );
    }

    #[test]
    fn a_ringing_call_that_is_never_answered_failed() {
        let (phase, fx) = step(Placed { answered: false }, hung_up("NO_ANSWER"), T);
        assert_eq!(phase, Over);
        assert_eq!(fx[0], store(Stored::Failed, Some("NO_ANSWER")));
        // The job's -ERR after the phone rang says the same.
        let (phase, fx) = step(
            Placed { answered: false },
            Input::JobResult("-ERR NO_ANSWER".into()),
            T,
        );
        assert_eq!(phase, Over);
        assert!(!fx.iter().any(|e| matches!(e, Reply(_))), "{fx:?}");
    }

    #[test]
    fn not_sent_shutdown_and_stop() {
        let (phase, fx) = step(Waiting, Input::NotSent(Click2CallError::NotConnected), T);
        assert_eq!(phase, Over);
        assert_eq!(
            fx,
            [
                Reply(Err(Click2CallError::NotConnected)),
                store(Stored::Failed, Some(NOT_SENT))
            ]
        );
        assert_eq!(
            step(Waiting, Input::Shutdown, T),
            (Over, vec![Reply(Err(Click2CallError::NotConnected))])
        );
        assert_eq!(
            step(Placed { answered: true }, Input::Shutdown, T),
            (Over, vec![])
        );
        assert_eq!(
            step(Placed { answered: true }, Input::Stopped, T),
            (Over, vec![])
        );
        // Nothing moves a finished call.
        assert_eq!(step(Over, Input::Answered, T), (Over, vec![]));
    }
}
