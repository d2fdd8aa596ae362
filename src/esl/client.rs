//! The inbound ESL client: one task owns the socket, cheap cloneable handles send it commands.
//!
//! Shape of mini-redis' buffered client, split in two halves so that reading never waits on
//! writing: the writer pushes a reply slot onto a FIFO and writes the command in one step
//! (only it writes, so slot order is wire order); the reader pops a slot for every
//! `command/reply` or `api/response`. A caller that gave up leaves its slot behind as a
//! tombstone that swallows the late reply, so nothing is ever matched to the wrong request.
//! `bgapi` waiters are keyed by a Job-UUID we choose and registered by the writer in the same
//! step as the write, so they belong to the connection that carries the command. Events go
//! to subscribers with `try_send`: a full subscriber loses the event (counted), FreeSWITCH is
//! never stalled. On any loss of the connection every waiter fails with
//! [`ClientError::ConnectionLost`], and a supervisor reconnects and subscribes again: every
//! ~0.5 s while the port refuses (a restarted switch is found at once), with capped, jittered
//! exponential backoff when connections are accepted and then fail or drop, reset only
//! after a connection that stayed up.
//!
//! This file holds the handles; `shared.rs` what they share with the connection task,
//! `supervisor.rs` the (re)connecting, `connection.rs` one live connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::command::Command;
use super::error::ClientError;
use super::event::Event;
use super::frame::Frame;
pub use super::shared::{ClientConfig, ConnectionState};
use super::shared::{JobWaiter, Request, Shared};
use super::stats::ClientStats;
use super::supervisor::supervise;

/// A handle to the inbound connection. Clone it freely.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::Sender<Request>,
    shared: Arc<Shared>,
    request_timeout: Duration,
}

/// A `bgapi` accepted by FreeSWITCH whose result has not necessarily arrived yet.
pub struct Job {
    uuid: String,
    rx: oneshot::Receiver<Result<Arc<Event>, ClientError>>,
    shared: Arc<Shared>,
}

impl Client {
    /// Starts the connection supervisor. It runs until `shutdown` is cancelled or every
    /// handle is dropped.
    pub fn spawn(config: ClientConfig, shutdown: CancellationToken) -> (Client, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(1024);
        let (state, _) = watch::channel(ConnectionState::Disconnected {
            reason: "not connected yet".into(),
        });
        let shared = Arc::new(Shared {
            jobs: Mutex::new(HashMap::new()),
            subscribers: Mutex::new(Vec::new()),
            stats: ClientStats::default(),
            state,
        });
        let client = Client {
            tx,
            shared: shared.clone(),
            request_timeout: config.request_timeout,
        };
        let task = tokio::spawn(supervise(config, shared, rx, shutdown));
        (client, task)
    }

    pub fn state(&self) -> ConnectionState {
        self.shared.state.borrow().clone()
    }

    pub fn is_connected(&self) -> bool {
        *self.shared.state.borrow() == ConnectionState::Connected
    }

    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.subscribe()
    }

    /// Waits until connected, at most `timeout`; true if connected.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.watch_state();
        tokio::time::timeout(timeout, rx.wait_for(|s| *s == ConnectionState::Connected))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub fn stats(&self) -> &ClientStats {
        &self.shared.stats
    }

    /// Receives every event from now on, in wire order. A full queue loses events (counted in
    /// `events_dropped`) rather than stalling the socket.
    pub fn subscribe(&self, capacity: usize) -> mpsc::Receiver<Arc<Event>> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.shared.subscribers.lock().expect("lock").push(tx);
        rx
    }

    /// Sends a command and returns its reply frame.
    pub async fn command(&self, command: Command) -> Result<Frame, ClientError> {
        self.send(command, None).await
    }

    async fn send(
        &self,
        command: Command,
        job: Option<(String, JobWaiter)>,
    ) -> Result<Frame, ClientError> {
        if !self.is_connected() {
            return Err(ClientError::NotConnected);
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                command,
                reply,
                job,
            })
            .await
            .map_err(|_| ClientError::Stopped)?;
        match tokio::time::timeout(self.request_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClientError::ConnectionLost),
            Err(_) => {
                ClientStats::inc(&self.shared.stats.command_timeouts);
                Err(ClientError::Timeout(self.request_timeout))
            }
        }
    }

    /// `api <cmd>`: the response body as text (`-ERR ...` is returned, not an error: some
    /// commands answer that way when they succeed).
    pub async fn api(&self, cmd: &str) -> Result<String, ClientError> {
        let frame = self.command(Command::api(cmd)?).await?;
        Ok(frame.body_text().into_owned())
    }

    /// `bgapi <cmd>`: returns once FreeSWITCH accepted the job; await [`Job::wait`] for its
    /// result. The writer registers the waiter in the same step as it writes the command, so
    /// no result can be missed, and a command that never reached a connection never leaves a
    /// waiter failed by another connection's loss.
    pub async fn bgapi(&self, cmd: &str) -> Result<Job, ClientError> {
        let uuid = uuid::Uuid::new_v4().to_string();
        let command = Command::bgapi(cmd, &uuid)?;
        let (tx, rx) = oneshot::channel();
        let job = Job {
            uuid: uuid.clone(),
            rx,
            shared: self.shared.clone(),
        };
        let reply = self.send(command, Some((uuid, tx))).await?;
        if !reply.is_ok() {
            let text = reply.reply_text().unwrap_or_default().into_owned();
            return Err(ClientError::Refused(text));
        }
        Ok(job)
    }
}

impl Job {
    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    /// The `BACKGROUND_JOB` event carrying this job's result (its body is the output).
    pub async fn wait(&mut self) -> Result<Arc<Event>, ClientError> {
        match (&mut self.rx).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::ConnectionLost),
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.shared.jobs.lock().expect("lock").remove(&self.uuid);
    }
}
