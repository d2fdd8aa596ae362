//! The inbound ESL client: one task owns the socket, cheap cloneable handles send it commands.
//!
//! Shape of mini-redis' buffered client, split in two halves so that reading never waits on
//! writing: the writer pushes a reply slot onto a FIFO and writes the command in one step
//! (only it writes, so slot order is wire order); the reader pops a slot for every
//! `command/reply` or `api/response`. A caller that gave up leaves its slot behind as a
//! tombstone that swallows the late reply, so nothing is ever matched to the wrong request.
//! `bgapi` waiters are keyed by a Job-UUID we choose and registered by the writer in the same
//! step as the write, so they belong to the connection that carries the command. Events go to subscribers with `try_send`: a full subscriber loses the event (counted),
//! FreeSWITCH is never stalled. On any loss of the connection every waiter fails with
//! [`ClientError::ConnectionLost`], and a supervisor reconnects and subscribes again: every
//! ~0.5 s while the port refuses (a restarted switch is found at once), with capped, jittered
//! exponential backoff when connections are accepted and then fail or drop, reset only
//! after a connection that stayed up.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::codec::EslCodec;
use super::command::{Command, EventFormat};
use super::error::ClientError;
use super::event::Event;
use super::frame::{ContentType, Frame};
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

type JobWaiter = oneshot::Sender<Result<Arc<Event>, ClientError>>;

struct Shared {
    jobs: Mutex<HashMap<String, JobWaiter>>,
    subscribers: Mutex<Vec<mpsc::Sender<Arc<Event>>>>,
    stats: ClientStats,
    state: watch::Sender<ConnectionState>,
}

struct Request {
    command: Command,
    reply: oneshot::Sender<Result<Frame, ClientError>>,
    /// A bgapi's result waiter, registered by the writer just before the command is written,
    /// so it belongs to the connection that carries the command.
    job: Option<(String, JobWaiter)>,
}

struct Pending {
    reply: oneshot::Sender<Result<Frame, ClientError>>,
    written_at: Instant,
}

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

enum Ended {
    Lost(String),
    Stop,
}

/// Why an attempt failed, which decides how soon to try again.
struct Failed {
    reason: String,
    /// The TCP connection was accepted and then refused or dropped: back off. A port that
    /// refuses, or a switch that accepts and says nothing until the handshake times out
    /// (hung, or restarting), is tried again soon: each such attempt already waited.
    accepted: bool,
}

async fn supervise(
    config: ClientConfig,
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Request>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(config.backoff_initial, config.backoff_max);
    let mut connected_before = false;
    loop {
        let attempt = refuse_while(connect(&config), &mut rx, &shutdown).await;
        let (reason, delay) = match attempt {
            None => break,
            Some(Err(failed)) => {
                ClientStats::inc(&shared.stats.connect_failures);
                tracing::warn!(address = %config.address, reason = %failed.reason, "event socket connection failed");
                let delay = backoff.after_failure(failed.accepted);
                (failed.reason, delay)
            }
            Some(Ok((read, write))) => {
                if connected_before {
                    ClientStats::inc(&shared.stats.reconnects);
                }
                connected_before = true;
                tracing::info!(address = %config.address, "event socket connected");
                shared.state.send_replace(ConnectionState::Connected);
                let up_since = Instant::now();
                let ended = run_connection(
                    read,
                    write,
                    &mut rx,
                    &shared,
                    config.liveness_timeout,
                    &shutdown,
                )
                .await;
                fail_jobs(&shared);
                match ended {
                    Ended::Stop => break,
                    Ended::Lost(reason) => {
                        tracing::warn!(address = %config.address, %reason, "event socket connection lost");
                        (reason, backoff.after_connection(up_since.elapsed()))
                    }
                }
            }
        };
        shared
            .state
            .send_replace(ConnectionState::Disconnected { reason });
        if refuse_while(tokio::time::sleep(delay), &mut rx, &shutdown)
            .await
            .is_none()
        {
            break;
        }
    }
    shared.state.send_replace(ConnectionState::Stopped);
    fail_jobs(&shared);
    rx.close();
    while let Some(req) = rx.recv().await {
        let _ = req.reply.send(Err(ClientError::Stopped));
    }
}

/// Drives `fut` while answering every request with `NotConnected`; `None` on shutdown.
async fn refuse_while<F: Future>(
    fut: F,
    rx: &mut mpsc::Receiver<Request>,
    shutdown: &CancellationToken,
) -> Option<F::Output> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            out = &mut fut => return Some(out),
            _ = shutdown.cancelled() => return None,
            req = rx.recv() => match req {
                Some(req) => { let _ = req.reply.send(Err(ClientError::NotConnected)); }
                None => return None,
            },
        }
    }
}

type Reader = FramedRead<OwnedReadHalf, EslCodec>;
type Writer = FramedWrite<OwnedWriteHalf, EslCodec>;

/// Connects, authenticates and subscribes.
async fn connect(config: &ClientConfig) -> Result<(Reader, Writer), Failed> {
    let refused = |reason: String| Failed {
        reason,
        accepted: false,
    };
    let stream = tokio::time::timeout(config.connect_timeout, TcpStream::connect(&config.address))
        .await
        .map_err(|_| {
            refused(format!(
                "connect: no answer within {:?}",
                config.connect_timeout
            ))
        })?
        .map_err(|e| refused(format!("connect: {e}")))?;
    let handshake = async {
        let _ = stream.set_nodelay(true);
        // The kernel notices a vanished peer too (the liveness probe is what notices a hung
        // one): first probe after 10 s idle, then every 5 s.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(10))
            .with_interval(Duration::from_secs(5));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        let (r, w) = stream.into_split();
        let mut read = FramedRead::new(
            r,
            EslCodec::new(super::codec::DEFAULT_MAX_HEADER, config.max_body),
        );
        let mut write = FramedWrite::new(w, EslCodec::default());
        let first = next_frame(&mut read).await?;
        match first.content_type {
            ContentType::AuthRequest => {}
            ContentType::RudeRejection => {
                return Err("access denied by freeswitch acl (text/rude-rejection)".into());
            }
            other => return Err(format!("expected auth/request, got {other:?}")),
        }
        let auth = Command::auth(&config.password).map_err(|e| e.to_string())?;
        write.send(auth).await.map_err(|e| e.to_string())?;
        let reply = next_frame(&mut read).await?;
        if !reply.is_ok() {
            return Err("authentication failed: check freeswitch.password".into());
        }
        let subscription = config.subscription.clone().with_background_job();
        let event = Command::event(EventFormat::Plain, &subscription).map_err(|e| e.to_string())?;
        write.send(event).await.map_err(|e| e.to_string())?;
        let reply = next_frame(&mut read).await?;
        if !reply.is_ok() {
            let text = reply.reply_text().unwrap_or_default().into_owned();
            return Err(format!("event subscription refused: {text}"));
        }
        Ok((read, write))
    };
    let accepted = |reason: String| Failed {
        reason,
        accepted: true,
    };
    tokio::time::timeout(config.connect_timeout, handshake)
        .await
        .map_err(|_| refused(format!("no handshake within {:?}", config.connect_timeout)))?
        .map_err(accepted)
}

async fn next_frame(read: &mut Reader) -> Result<Frame, String> {
    match read.next().await {
        Some(Ok(f)) => Ok(f),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("closed by freeswitch".into()),
    }
}

async fn run_connection(
    mut read: Reader,
    mut write: Writer,
    rx: &mut mpsc::Receiver<Request>,
    shared: &Shared,
    liveness: Duration,
    shutdown: &CancellationToken,
) -> Ended {
    let pending: Mutex<VecDeque<Pending>> = Mutex::new(VecDeque::new());
    // When the last frame arrived (ms since `opened`): one relaxed store per frame on the
    // reader's path; the writer probes an idle connection and the watchdog ends a silent one.
    let opened = Instant::now();
    let last_frame = AtomicU64::new(0);
    let idle = || {
        opened
            .elapsed()
            .saturating_sub(Duration::from_millis(last_frame.load(Relaxed)))
    };
    let reader = async {
        loop {
            match read.next().await {
                Some(Ok(frame)) => {
                    last_frame.store(opened.elapsed().as_millis() as u64, Relaxed);
                    if let Some(reason) = on_frame(frame, &pending, shared) {
                        return Ended::Lost(reason);
                    }
                }
                Some(Err(e)) => return Ended::Lost(format!("read: {e}")),
                None => return Ended::Lost("closed by freeswitch".into()),
            }
        }
    };
    let writer = async {
        let mut tick = tokio::time::interval(liveness / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => r,
                    None => return Ended::Stop,
                },
                _ = tick.tick() => {
                    if idle() >= liveness / 3 {
                        // An idle connection is asked something cheap; the reply (or any
                        // event) proves it alive. Nobody waits for it: a tombstone slot.
                        let (reply, _) = oneshot::channel();
                        pending.lock().expect("lock").push_back(Pending {
                            reply,
                            written_at: Instant::now(),
                        });
                        let probe = Command::api("status").expect("a valid command");
                        if let Err(e) = write.send(probe).await {
                            return Ended::Lost(format!("write: {e}"));
                        }
                    }
                    continue;
                }
            };
            let mut next = Some(first);
            while let Some(req) = next.take() {
                if let Some((uuid, waiter)) = req.job
                    && !waiter.is_closed()
                {
                    shared.jobs.lock().expect("lock").insert(uuid, waiter);
                }
                pending.lock().expect("lock").push_back(Pending {
                    reply: req.reply,
                    written_at: Instant::now(),
                });
                ClientStats::inc(&shared.stats.commands_sent);
                if let Err(e) = write.feed(req.command).await {
                    return Ended::Lost(format!("write: {e}"));
                }
                // Pipeline whatever else is already queued into the same flush.
                next = rx.try_recv().ok();
            }
            if let Err(e) = write.flush().await {
                return Ended::Lost(format!("write: {e}"));
            }
        }
    };
    // Apart from the writer, which a switch that stopped reading can block on a full socket.
    let watchdog = async {
        loop {
            tokio::time::sleep(liveness / 6).await;
            let idle = idle();
            if idle >= liveness {
                ClientStats::inc(&shared.stats.liveness_failures);
                return Ended::Lost(format!(
                    "no frame from freeswitch for {} s (freeswitch.liveness_timeout)",
                    idle.as_secs()
                ));
            }
        }
    };
    let ended = tokio::select! {
        e = reader => e,
        e = writer => e,
        e = watchdog => e,
        _ = shutdown.cancelled() => Ended::Stop,
    };
    for p in pending.lock().expect("lock").drain(..) {
        let _ = p.reply.send(Err(ClientError::ConnectionLost));
    }
    ended
}

/// Routes one frame; returns a reason when the connection must end.
fn on_frame(frame: Frame, pending: &Mutex<VecDeque<Pending>>, shared: &Shared) -> Option<String> {
    match &frame.content_type {
        ct if ct.is_reply() => {
            let slot = pending.lock().expect("lock").pop_front();
            match slot {
                Some(p) => {
                    shared.stats.command_latency.observe(p.written_at.elapsed());
                    // A dropped receiver is a tombstone: the late reply is swallowed here.
                    let _ = p.reply.send(Ok(frame));
                }
                None => {
                    tracing::warn!(content_type = ?frame.content_type, "reply with no pending command, ignored")
                }
            }
        }
        ct if ct.is_event() => {
            ClientStats::inc(&shared.stats.events_received);
            match Event::from_frame(&frame) {
                Ok(event) => dispatch(Arc::new(event), shared),
                Err(e) => {
                    ClientStats::inc(&shared.stats.events_malformed);
                    tracing::warn!(error = %e, "unreadable event skipped");
                }
            }
        }
        ContentType::DisconnectNotice => {
            tracing::info!(notice = %frame.body_text().trim(), "freeswitch sent a disconnect notice");
        }
        ContentType::RudeRejection => {
            return Some("access denied by freeswitch acl (text/rude-rejection)".into());
        }
        ContentType::LogData => tracing::trace!("log/data frame ignored"),
        other => tracing::warn!(content_type = ?other, "unexpected frame ignored"),
    }
    None
}

fn dispatch(event: Arc<Event>, shared: &Shared) {
    if event.name().as_deref() == Some("BACKGROUND_JOB")
        && let Some(job) = event.job_uuid()
    {
        // BACKGROUND_JOB is global: jobs we did not issue are simply not in the map.
        let waiter = shared.jobs.lock().expect("lock").remove(job.as_ref());
        if let Some(w) = waiter {
            let _ = w.send(Ok(event.clone()));
        }
    }
    let mut subs = shared.subscribers.lock().expect("lock");
    subs.retain(|s| match s.try_send(event.clone()) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            let n = shared
                .stats
                .events_dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n.is_power_of_two() || n == 0 {
                tracing::warn!(
                    dropped_total = n + 1,
                    "slow event subscriber: events dropped"
                );
            }
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    });
}

fn fail_jobs(shared: &Shared) {
    for (_, w) in shared.jobs.lock().expect("lock").drain() {
        let _ = w.send(Err(ClientError::ConnectionLost));
    }
}
