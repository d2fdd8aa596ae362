//! What the client's handles and its connection task share: how to connect, the connection's
//! state, the bgapi waiters by Job-UUID, the event subscribers and the counters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::command::Command;
use super::error::ClientError;
use super::event::Event;
use super::frame::Frame;
use super::stats::ClientStats;
use super::subscription::Subscription;

/// How to reach and use FreeSWITCH's inbound event socket.
#[derive(Clone)]
pub struct ClientConfig {
    /// `host:port` of mod_event_socket.
    pub address: String,
    pub password: String,
    /// Events to subscribe to (`BACKGROUND_JOB` is always added: bgapi needs it).
    pub subscription: Subscription,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub max_body: usize,
    /// No frame for this long ends the connection (an idle one is probed before that).
    pub liveness_timeout: Duration,
}

impl ClientConfig {
    pub fn new(address: impl Into<String>, password: impl Into<String>) -> Self {
        ClientConfig {
            address: address.into(),
            password: password.into(),
            subscription: Subscription::new(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            max_body: super::codec::DEFAULT_MAX_BODY,
            liveness_timeout: Duration::from_secs(15),
        }
    }
}

/// Where the connection stands; observable for readiness checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Authenticated and subscribed.
    Connected,
    /// Not connected; the supervisor keeps retrying.
    Disconnected { reason: String },
    /// The client was shut down.
    Stopped,
}

pub(super) type JobWaiter = oneshot::Sender<Result<Arc<Event>, ClientError>>;

pub(super) struct Shared {
    pub(super) jobs: Mutex<HashMap<String, JobWaiter>>,
    pub(super) subscribers: Mutex<Vec<mpsc::Sender<Arc<Event>>>>,
    pub(super) stats: ClientStats,
    pub(super) state: watch::Sender<ConnectionState>,
}

pub(super) struct Request {
    pub(super) command: Command,
    pub(super) reply: oneshot::Sender<Result<Frame, ClientError>>,
    /// A bgapi's result waiter, registered by the writer just before the command is written,
    /// so it belongs to the connection that carries the command.
    pub(super) job: Option<(String, JobWaiter)>,
}

pub(super) struct Pending {
    pub(super) reply: oneshot::Sender<Result<Frame, ClientError>>,
    pub(super) written_at: Instant,
}
