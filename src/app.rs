//! Wires the service together: storage, the event socket client and the listeners, with one
//! shutdown token from `main` and a child token per subsystem.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use crate::admin::{self, AdminState};
use crate::click2call::{self, Click2Call};
use crate::config::{self, Config};
use crate::domain::originate::OriginatePlan;
use crate::esl::{Client, ClientConfig};
use crate::http::{self, Ctx, edge::Edge, stats::HttpStats};
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
    /// Where Finaz reaches us (`http.listen`, resolved).
    pub http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub click2call: Click2Call,
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
        let http_listener = TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("binding http.listen {}", config.http.listen))?;
        let http_addr = http_listener.local_addr()?;
        let plan = OriginatePlan::new(&config.freeswitch, &config.recordings)
            .map_err(|e| anyhow::anyhow!("{}", e.join("; ")))?;

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
        let (click2call, router) = Click2Call::start(
            esl.clone(),
            storage.clone(),
            click2call::Settings {
                plan,
                response_timeout: fs.originate_response_timeout,
                originate_timeout: fs.originate_timeout,
                double_click_window: config.http.double_click_window,
                idempotency_window: config.http.idempotency_window,
                mask_phone_numbers: config.log.mask_phone_numbers,
            },
            shutdown.child_token(),
        );
        tasks.spawn(async move {
            let _ = router.await;
        });
        let http_stats = Arc::new(HttpStats::default());
        let ctx = Arc::new(Ctx {
            edge: Edge {
                allowed: config.http.allowed_ips.clone(),
                trusted_proxies: config.http.trusted_proxies.clone(),
                chave: config.http.chave.clone(),
            },
            click2call_path: config.http.click2call_path.clone(),
            max_body_bytes: config.http.max_body_bytes,
            click2call: click2call.clone(),
            stats: http_stats.clone(),
            mask_phone_numbers: config.log.mask_phone_numbers,
        });
        tasks.spawn(http::serve(http_listener, ctx, shutdown.child_token()));
        let admin_stop = shutdown.child_token();
        let routes = admin::routes(AdminState {
            esl: esl.clone(),
            storage: storage.clone(),
            http: http_stats,
        });
        tasks.spawn(async move {
            warp::serve(routes)
                .incoming(admin_listener)
                .graceful(async move { admin_stop.cancelled().await })
                .run()
                .await;
        });
        tracing::info!(%http_addr, %admin_addr, freeswitch = %fs.address, "service started");
        Ok(Service {
            http_addr,
            admin_addr,
            click2call,
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
