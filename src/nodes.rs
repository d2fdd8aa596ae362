//! The FreeSWITCH nodes: one event-socket client per node, and which node an operator's
//! extension is registered on.
//!
//! With one node every click2call goes to it, exactly as before nodes existed (no lookup on
//! the wire). With several, registrations are learnt from `sofia::register`,
//! `sofia::unregister` and `sofia::expire` events, and an extension not known yet is asked
//! of every connected node with `sofia_contact <ramal>@<domain>` (the node's `domain`
//! variable, read once per connection). The answer is cached until an event or a failed
//! originate says otherwise.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{FreeswitchConfig, NodeConfig};
use crate::domain::values::Ramal;
use crate::esl::{Client, ClientConfig, ConnectionState, Subscription};

/// Registration events, subscribed to only when there are several nodes.
pub const REGISTRATION_SUBCLASSES: &[&str] =
    &["sofia::register", "sofia::unregister", "sofia::expire"];

/// Event types the service needs from FreeSWITCH (BACKGROUND_JOB is added by the client).
const EVENTS: &[&str] = &[
    "CHANNEL_CREATE",
    "CHANNEL_UUID",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_ANSWER",
    "CHANNEL_BRIDGE",
    "CHANNEL_HANGUP_COMPLETE",
    "RECORD_START",
    "RECORD_STOP",
];

/// CUSTOM subclasses the service needs: mod_callcenter's `bridge-agent-start` for the dialer.
const CUSTOM_SUBCLASSES: &[&str] = &["callcenter::info"];

/// Everything the service's event socket connection subscribes to, `BACKGROUND_JOB` included
/// (click2call's originate results come with it). With several nodes, also the registration
/// events that say which node an extension is on.
pub fn subscription(several_nodes: bool) -> Subscription {
    let registration = if several_nodes {
        REGISTRATION_SUBCLASSES
    } else {
        &[]
    };
    CUSTOM_SUBCLASSES
        .iter()
        .chain(registration)
        .fold(
            Subscription::new()
                .events(EVENTS)
                .expect("valid event names"),
            |s, c| s.custom(c).expect("valid subclass"),
        )
        .with_background_job()
}

/// The inbound event socket client's settings for `node`.
pub fn esl_config(fs: &FreeswitchConfig, node: &NodeConfig, several_nodes: bool) -> ClientConfig {
    let mut c = ClientConfig::new(node.address.clone(), node.password.expose());
    c.subscription = subscription(several_nodes);
    c.connect_timeout = fs.connect_timeout;
    c.request_timeout = fs.request_timeout;
    c.backoff_max = fs.reconnect_max_backoff;
    c.liveness_timeout = fs.liveness_timeout;
    c
}

/// How long a lookup waits for a node's answer.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// One FreeSWITCH server.
pub struct Node {
    pub name: Arc<str>,
    pub address: String,
    pub esl: Client,
    /// Where this node's recordings are visible to us.
    pub recordings_dir: PathBuf,
    /// The node's `domain` variable, once read (cleared on reconnect).
    domain: Mutex<Option<String>>,
    /// The `Core-UUID` its events carry (learnt from them when there are several nodes):
    /// which node a dialer hand-off came from.
    core_uuid: Mutex<Option<String>>,
}

/// Why no node can take an extension's call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// Registered on no node (all of them answered).
    NotRegistered,
    /// Its node (or a node that did not answer, which may have it) is down.
    NodeDown(Arc<str>),
}

/// Every node, and where each extension was last seen registered. Clone it freely.
#[derive(Clone)]
pub struct Nodes {
    inner: Arc<Inner>,
}

struct Inner {
    list: Vec<Node>,
    /// Extension -> index in `list`.
    registered: Mutex<HashMap<String, usize>>,
    /// `recordings.dir`: where FreeSWITCH writes, as the paths in its events say.
    switch_dir: PathBuf,
}

impl Nodes {
    /// Starts one client per node; `client_config` gives each its settings. With several
    /// nodes, a task per node learns registrations from its events.
    pub fn spawn(
        configs: &[NodeConfig],
        switch_dir: &Path,
        client_config: impl Fn(&NodeConfig) -> ClientConfig,
        shutdown: &CancellationToken,
    ) -> (Nodes, Vec<JoinHandle<()>>) {
        let mut tasks = Vec::new();
        let list = configs
            .iter()
            .map(|c| {
                let (esl, task) = Client::spawn(client_config(c), shutdown.child_token());
                tasks.push(tokio::spawn(async move {
                    let _ = task.await;
                }));
                Node {
                    name: c.name.as_str().into(),
                    address: c.address.clone(),
                    esl,
                    recordings_dir: c.recordings_dir.clone(),
                    domain: Mutex::new(None),
                    core_uuid: Mutex::new(None),
                }
            })
            .collect();
        let nodes = Nodes {
            inner: Arc::new(Inner {
                list,
                registered: Mutex::new(HashMap::new()),
                switch_dir: switch_dir.to_path_buf(),
            }),
        };
        if !nodes.is_single() {
            for i in 0..nodes.all().len() {
                tasks.push(tokio::spawn(learn(
                    nodes.clone(),
                    i,
                    shutdown.child_token(),
                )));
            }
        }
        (nodes, tasks)
    }

    pub fn all(&self) -> &[Node] {
        &self.inner.list
    }

    pub fn first(&self) -> &Node {
        &self.inner.list[0]
    }

    pub fn is_single(&self) -> bool {
        self.inner.list.len() == 1
    }

    /// The node called `name`; the first for rows from before nodes (`None`) or a node no
    /// longer configured.
    pub fn named(&self, name: Option<&str>) -> &Node {
        name.and_then(|n| self.inner.list.iter().find(|node| &*node.name == n))
            .unwrap_or_else(|| self.first())
    }

    /// Which node handed a dialer call to the outbound socket: the one whose events carry
    /// the hand-off's `Core-UUID`, else the one whose address is the peer's IP, else the
    /// first.
    pub fn of_handoff(&self, core_uuid: Option<&str>, ip: std::net::IpAddr) -> &Node {
        let list = &self.inner.list;
        core_uuid
            .and_then(|c| {
                list.iter()
                    .find(|n| n.core_uuid.lock().expect("lock").as_deref() == Some(c))
            })
            .or_else(|| {
                list.iter().find(|n| {
                    n.address
                        .parse::<std::net::SocketAddr>()
                        .is_ok_and(|a| a.ip() == ip)
                })
            })
            .unwrap_or_else(|| self.first())
    }

    /// Where we read a recording FreeSWITCH reported at `path` on `node`: the same place
    /// under the node's `recordings_dir` when the path is under `recordings.dir`.
    pub fn local_path(&self, node: &Node, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.inner.switch_dir) {
            Ok(rest) => node.recordings_dir.join(rest),
            Err(_) => path.to_path_buf(),
        }
    }

    /// The node whose phone for `ramal` should ring.
    pub async fn route(&self, ramal: &Ramal) -> Result<&Node, RouteError> {
        if self.is_single() {
            return Ok(self.first());
        }
        let cached = self
            .inner
            .registered
            .lock()
            .expect("lock")
            .get(ramal.as_str())
            .copied();
        if let Some(i) = cached {
            let node = &self.inner.list[i];
            return if node.esl.is_connected() {
                Ok(node)
            } else {
                Err(RouteError::NodeDown(node.name.clone()))
            };
        }
        let asks = self
            .inner
            .list
            .iter()
            .enumerate()
            .map(|(i, node)| async move {
                if !node.esl.is_connected() {
                    return (i, None);
                }
                (
                    i,
                    tokio::time::timeout(LOOKUP_TIMEOUT, contact(node, ramal))
                        .await
                        .ok()
                        .flatten(),
                )
            });
        let answers = futures_util::future::join_all(asks).await;
        if let Some((i, _)) = answers.iter().find(|(_, a)| *a == Some(true)) {
            self.inner
                .registered
                .lock()
                .expect("lock")
                .insert(ramal.as_str().to_string(), *i);
            return Ok(&self.inner.list[*i]);
        }
        match answers.iter().find(|(_, a)| a.is_none()) {
            Some((i, _)) => Err(RouteError::NodeDown(self.inner.list[*i].name.clone())),
            None => Err(RouteError::NotRegistered),
        }
    }

    /// Forgets where `ramal` is (its node said it is not registered there after all).
    pub fn forget(&self, ramal: &Ramal) {
        self.inner
            .registered
            .lock()
            .expect("lock")
            .remove(ramal.as_str());
    }

    /// Extensions whose registration is known (for tests).
    pub fn known_registrations(&self) -> usize {
        self.inner.registered.lock().expect("lock").len()
    }
}

/// Whether `ramal` has a registered phone on `node`: `Some(bool)`, or `None` when the node
/// did not answer.
async fn contact(node: &Node, ramal: &Ramal) -> Option<bool> {
    let known = node.domain.lock().expect("lock").clone();
    let domain = match known {
        Some(d) => d,
        None => {
            let d = node
                .esl
                .api("global_getvar domain")
                .await
                .ok()?
                .trim()
                .to_string();
            if d.is_empty() || d.starts_with("-ERR") {
                return None;
            }
            *node.domain.lock().expect("lock") = Some(d.clone());
            d
        }
    };
    // `Ramal` is a narrow alphabet and the domain one line (the command builder refuses
    // anything else).
    let answer = node
        .esl
        .api(&format!("sofia_contact {}@{domain}", ramal.as_str()))
        .await
        .ok()?;
    let answer = answer.trim();
    Some(!(answer.is_empty() || answer.starts_with("error/") || answer.starts_with("-ERR")))
}

/// Follows node `i`'s registration events into the cache and learns its `Core-UUID`;
/// forgets its domain on reconnect.
async fn learn(nodes: Nodes, i: usize, shutdown: CancellationToken) {
    let node = &nodes.inner.list[i];
    let mut events = node.esl.subscribe(4096);
    let mut state = node.esl.watch_state();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = state.changed() => {
                if changed.is_err() {
                    return;
                }
                if *state.borrow() != ConnectionState::Connected {
                    *node.domain.lock().expect("lock") = None;
                }
            }
            e = events.recv() => {
                let Some(e) = e else { return };
                if let Some(core) = e.header("Core-UUID") {
                    let mut known = node.core_uuid.lock().expect("lock");
                    if known.as_deref() != Some(core.as_ref()) {
                        *known = Some(core.into_owned());
                    }
                }
                let Some(sub) = e.header("Event-Subclass") else { continue };
                let Some(user) = e.header("from-user").or_else(|| e.header("username")) else {
                    continue;
                };
                let mut map = nodes.inner.registered.lock().expect("lock");
                match sub.as_ref() {
                    "sofia::register" => {
                        map.insert(user.into_owned(), i);
                    }
                    "sofia::unregister" | "sofia::expire" if map.get(user.as_ref()) == Some(&i) => {
                        map.remove(user.as_ref());
                    }
                    _ => {}
                }
            }
        }
    }
}
