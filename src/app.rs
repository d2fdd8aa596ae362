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
use crate::admission::{Admission, Rules};
use crate::click2call::{self, Click2Call};
use crate::config::{self, Config, DialerTrigger};
use crate::dialer::{self, Reporter};
use crate::esl::Client;
use crate::http::{self, Ctx, stats::HttpStats};
use crate::nodes::{Nodes, esl_config};
use crate::outbox::{self, Outbox};
use crate::recordings::{self, Recordings};
use crate::storage::Storage;

/// Connections the kernel queues for a listener before we accept them. The default (128)
/// overflows when a burst of answered dialer calls connects at once: the overflow waits for
/// SYN-ACK retransmissions (1 s, 3 s, ...) with the calls parked.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener with [`LISTEN_BACKLOG`] (the kernel caps it at `net.core.somaxconn`).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Makes rustls use the ring provider for every TLS connection of the process (webhooks to
/// Finaz). Idempotent; call before building any HTTP client.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The connection rules of the three listeners.
struct Admissions {
    http: Arc<Admission>,
    admin: Arc<Admission>,
    dialer: Arc<Admission>,
}

impl Admissions {
    fn new(config: &Config) -> Self {
        let http = &config.http;
        // Without a proxy in front, the peer is the client: strangers are closed at accept.
        let early = (http.trusted_proxies.is_empty() && !http.allowed_ips.is_empty())
            .then(|| http.allowed_ips.clone());
        let dialer = &config.dialer.allowed_peers;
        Admissions {
            http: Admission::new(Rules {
                name: "http",
                allowed: early,
                max_total: http.max_connections,
                max_per_ip: http.max_connections_per_ip,
                exempt: http.trusted_proxies.clone(),
                hint: "http.allowed_ips, http.max_connections, http.max_connections_per_ip",
            }),
            admin: Admission::new(Rules {
                name: "admin",
                allowed: None,
                max_total: config.admin_max_connections,
                max_per_ip: usize::MAX,
                exempt: Vec::new(),
                hint: "admin.max_connections",
            }),
            dialer: Admission::new(Rules {
                name: "dialer",
                allowed: (!dialer.is_empty()).then(|| dialer.clone()),
                max_total: usize::MAX,
                max_per_ip: usize::MAX,
                exempt: Vec::new(),
                hint: "dialer.allowed_peers must list FreeSWITCH's address",
            }),
        }
    }

    fn all(&self) -> Vec<Arc<Admission>> {
        vec![self.http.clone(), self.admin.clone(), self.dialer.clone()]
    }
}

/// How long shutdown waits for tasks to finish before giving up on them.
const DRAIN: Duration = Duration::from_secs(10);

/// How to run the service.
#[derive(Default, Clone)]
pub struct Options {
    /// Sandbox mode: FreeSWITCH is this simulator; answers and logs say so, and the admin
    /// listener can play a dialer call.
    pub sandbox: Option<Arc<crate::sandbox::Simulator>>,
}

/// A running service.
pub struct Service {
    /// Where Finaz reaches us (`http.listen`, resolved).
    pub http_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The outbound event socket server, when `dialer.trigger` uses the socket.
    pub dialer_addr: Option<SocketAddr>,
    pub click2call: Click2Call,
    pub outbox: Outbox,
    pub reporter: Reporter,
    /// The first node's event socket client.
    pub esl: Client,
    pub nodes: Nodes,
    pub storage: Storage,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl Service {
    /// Opens storage, binds the listeners and starts every task. Fails only on what cannot
    /// heal by itself (a port in use, an unusable database); FreeSWITCH being down is fine.
    pub async fn start(config: Config, shutdown: CancellationToken) -> anyhow::Result<Service> {
        Self::start_with(config, Options::default(), shutdown).await
    }

    /// [`Service::start`] with options (the sandbox).
    pub async fn start_with(
        config: Config,
        options: Options,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Service> {
        // Once, before the listener's TLS and the webhook client need it (main does it too;
        // in-process services in tests and tools start here).
        install_tls_provider();
        let storage = Storage::open(&config.storage_url).await.with_context(|| {
            format!(
                "opening storage {}",
                config::redact_url(&config.storage_url)
            )
        })?;
        let admin_listener = bind(config.admin_listen)
            .with_context(|| format!("binding admin.listen {}", config.admin_listen))?;
        let admin_addr = admin_listener.local_addr()?;
        let http_listener = bind(config.http.listen)
            .with_context(|| format!("binding http.listen {}", config.http.listen))?;
        let http_addr = http_listener.local_addr()?;
        let tls = http::server::tls_from(
            config.http.tls_cert.as_deref(),
            config.http.tls_key.as_deref(),
        )?;
        let plan = config.plan.clone();
        let answered_url = config.finaz.answered_url.clone();
        let use_socket = config.dialer.trigger != DialerTrigger::Events;
        let use_events = config.dialer.trigger != DialerTrigger::Socket;
        let dialer_listener = if use_socket {
            Some(
                bind(config.dialer.listen)
                    .with_context(|| format!("binding dialer.listen {}", config.dialer.listen))?,
            )
        } else {
            None
        };
        let dialer_addr = dialer_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?;
        let http_client = reqwest::Client::builder()
            .user_agent(concat!("finaz-freeswitch/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.finaz.delivery_timeout)
            .build()
            .context("building the HTTP client for Finaz")?;

        let fs = &config.freeswitch;
        let several = config.nodes.len() > 1;
        let (nodes, node_tasks) = Nodes::spawn(
            &config.nodes,
            config.recordings.dir(),
            |n| esl_config(fs, n, several),
            &shutdown,
        );
        let esl = nodes.first().esl.clone();

        let mut tasks = JoinSet::new();
        for t in node_tasks {
            tasks.spawn(async move {
                let _ = t.await;
            });
        }
        let (click2call, router) = Click2Call::start(
            nodes.clone(),
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
        let wake = Arc::new(tokio::sync::Notify::new());
        let (outbox, outbox_task) = Outbox::start(
            storage.clone(),
            http_client,
            outbox::Settings {
                delivery_timeout: config.finaz.delivery_timeout,
                max_concurrent: config.finaz.max_concurrent_deliveries,
                max_retry_age: config.finaz.max_retry_age,
            },
            wake.clone(),
            shutdown.child_token(),
        );
        tasks.spawn(async move {
            let _ = outbox_task.await;
        });
        let reporter = Reporter::new(
            storage.clone(),
            answered_url,
            config.finaz.empresa_id.clone(),
            config.finaz.max_retry_age,
            wake,
            config.log.mask_phone_numbers,
        );
        let vars = Arc::new(config.dialer.clone());
        let admissions = Admissions::new(&config);
        if let Some(listener) = dialer_listener {
            tasks.spawn(dialer::socket::serve(
                listener,
                reporter.clone(),
                vars.clone(),
                nodes.clone(),
                admissions.dialer.clone(),
                shutdown.child_token(),
            ));
        }
        if use_events {
            for node in nodes.all() {
                tasks.spawn(dialer::events::watch(
                    node.esl.clone(),
                    node.name.clone(),
                    reporter.clone(),
                    vars.clone(),
                    shutdown.child_token(),
                ));
            }
        }
        if let Some(keep) = config.storage_retention {
            tasks.spawn(crate::storage::retention::run(
                storage.clone(),
                keep,
                shutdown.child_token(),
            ));
        }
        let every_node: Vec<Client> = nodes.all().iter().map(|n| n.esl.clone()).collect();
        for node in nodes.all() {
            tasks.spawn(recordings::reconcile::run(
                node.esl.clone(),
                every_node.clone(),
                storage.clone(),
                crate::storage::now_ms(),
                shutdown.child_token(),
            ));
            tasks.spawn(recordings::watch(
                node.esl.clone(),
                storage.clone(),
                shutdown.child_token(),
            ));
        }
        let http_stats = Arc::new(HttpStats::default());
        let ctx = Arc::new(Ctx::new(
            &config,
            click2call.clone(),
            Recordings::new(storage.clone(), nodes.clone(), &config.recordings),
            http_stats.clone(),
            options.sandbox.is_some(),
        ));
        tasks.spawn(http::server::serve(
            http_listener,
            tls,
            http::routes(ctx),
            http::server::Limits {
                head_timeout: config.http.request_timeout,
                request_deadline: None,
                admission: admissions.http.clone(),
            },
            shutdown.child_token(),
        ));
        let mut registry = crate::metrics::Registry::default();
        let ready = AdminState::ready_gauge(&mut registry);
        registry.register_collector(Box::new(crate::metrics::EslMetrics(
            nodes
                .all()
                .iter()
                .map(|n| (n.name.clone(), n.esl.clone()))
                .collect(),
        )));
        let http_stats_for_console = http_stats.clone();
        registry.register_collector(Box::new(http_stats));
        registry.register_collector(Box::new(reporter.stats.clone()));
        for a in admissions.all() {
            registry.register_collector(Box::new(a));
        }
        registry.register_collector(Box::new(outbox.stats.clone()));
        let console = crate::console::Console::for_service(
            &config,
            crate::console::Wiring {
                storage: storage.clone(),
                nodes: nodes.clone(),
                outbox: outbox.clone(),
                http: http_stats_for_console,
                sandbox: options.sandbox.is_some(),
            },
            shutdown.child_token(),
        );
        let routes = admin::boxed(AdminState {
            nodes: nodes.clone(),
            storage: storage.clone(),
            outbox: outbox.clone(),
            sandbox: options.sandbox.clone().zip(dialer_addr),
            registry: Arc::new(registry),
            ready,
            console,
            access: crate::console::access::Access::new(config.admin_token.clone()),
            storage_verdict: Arc::default(),
        });
        tasks.spawn(http::server::serve(
            admin_listener,
            None,
            routes,
            http::server::Limits {
                head_timeout: config.http.request_timeout,
                request_deadline: Some(config.http.request_timeout),
                admission: admissions.admin.clone(),
            },
            shutdown.child_token(),
        ));
        let freeswitch: Vec<&str> = nodes.all().iter().map(|n| n.address.as_str()).collect();
        tracing::info!(%http_addr, %admin_addr, dialer = ?dialer_addr, ?freeswitch, "service started");
        Ok(Service {
            http_addr,
            admin_addr,
            dialer_addr,
            click2call,
            outbox,
            reporter,
            esl,
            nodes,
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
