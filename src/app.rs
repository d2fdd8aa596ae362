//! Wires the service together: storage, the event socket client and the listeners, with one
//! shutdown token from `main` and a child token per subsystem.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::config::{self, Config};
use crate::esl::{Client, ClientConfig};
use crate::storage::Storage;

/// Events the service needs from FreeSWITCH (BACKGROUND_JOB is added by the client).
pub const EVENTS: &[&str] = &[
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

/// How long shutdown waits for tasks to finish before giving up on them.
const DRAIN: Duration = Duration::from_secs(10);

/// A running service.
pub struct Service {
    pub admin_addr: SocketAddr,
    pub esl: Client,
    pub storage: Storage,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl Service {
    /// Opens storage, binds the listeners and starts every task. Fails only on what cannot
    /// heal by itself (a port in use, an unusable database); FreeSWITCH being down is fine.
    pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Service> {
        let storage = Storage::open(&config.storage_url).await.with_context(|| {
            format!(
                "opening storage {}",
                config::redact_url(&config.storage_url)
            )
        })?;
        let admin_listener = TcpListener::bind(config.admin_listen)
            .await
            .with_context(|| format!("binding admin.listen {}", config.admin_listen))?;
        let admin_addr = admin_listener.local_addr()?;

        let fs = &config.freeswitch;
        let mut esl_config = ClientConfig::new(fs.address.clone(), fs.password.expose());
        esl_config.events = EVENTS.iter().map(|s| s.to_string()).collect();
        esl_config.connect_timeout = fs.connect_timeout;
        esl_config.request_timeout = fs.request_timeout;
        esl_config.backoff_max = fs.reconnect_max_backoff;
        let (esl, esl_task) = Client::spawn(esl_config, shutdown.child_token());

        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let _ = esl_task.await;
        });
        let admin_stop = shutdown.child_token();
        let routes = admin::routes(AdminState {
            esl: esl.clone(),
            storage: storage.clone(),
        });
        tasks.spawn(async move {
            warp::serve(routes)
                .incoming(admin_listener)
                .graceful(async move { admin_stop.cancelled().await })
                .run()
                .await;
        });
        tracing::info!(%admin_addr, freeswitch = %fs.address, "service started");
        Ok(Service {
            admin_addr,
            esl,
            storage,
            shutdown,
            tasks,
        })
    }

    /// Stops every task (bounded by a drain timeout) and closes storage.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let drained = tokio::time::timeout(DRAIN, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("shutdown drain timed out; aborting remaining tasks");
            self.tasks.abort_all();
        }
        self.storage.close().await;
        tracing::info!("service stopped");
    }
}
