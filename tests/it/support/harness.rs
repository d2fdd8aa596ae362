//! The service running in-process against the stand-in, with its own database and recording
//! directory, reachable over real HTTP on 127.0.0.1.

use std::path::PathBuf;
use std::time::Duration;

use finaz_freeswitch::app::Service;
use finaz_freeswitch::config;
use tokio_util::sync::CancellationToken;

use super::standin::StandIn;

pub struct Harness {
    pub fs: StandIn,
    pub service: Option<Service>,
    pub base: String,
    pub admin: String,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

/// Extra lines for each config section; empty strings for none.
#[derive(Default, Clone)]
pub struct Extra {
    pub http: String,
    pub admin: String,
    pub freeswitch: String,
    pub recordings: String,
    pub dialer: String,
    pub finaz: String,
    pub log: String,
    /// `storage.url` instead of a SQLite file in the test's directory.
    pub storage_url: Option<String>,
}

impl Harness {
    /// A service connected to a fresh stand-in.
    pub async fn start(extra: Extra) -> Harness {
        let fs = StandIn::start().await;
        let h = Self::start_with(fs, extra).await;
        assert!(
            h.service().esl.wait_connected(Duration::from_secs(5)).await,
            "service never connected to the stand-in"
        );
        h
    }

    /// A service against `fs`, without waiting for the connection.
    pub async fn start_with(fs: StandIn, extra: Extra) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, config_text(&fs, &dir, &extra)).unwrap();
        let (_, cfg) = config::load(Some(&file)).unwrap_or_else(|e| panic!("{e}"));
        let service = Service::start(cfg, CancellationToken::new()).await.unwrap();
        Harness {
            base: format!("http://{}", service.http_addr),
            admin: format!("http://{}", service.admin_addr),
            service: Some(service),
            fs,
            dir,
            http: super::http(),
        }
    }

    pub fn service(&self) -> &Service {
        self.service.as_ref().unwrap()
    }

    /// The outbound event socket server.
    pub fn dialer(&self) -> std::net::SocketAddr {
        self.service().dialer_addr.expect("dialer socket enabled")
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("s.db")
    }

    pub fn recordings(&self) -> PathBuf {
        self.dir.path().join("rec")
    }

    /// Places a click2call through the API (it must be accepted); its call id.
    pub async fn click2call(&self, ramal: &str, telefone: &str) -> String {
        let r = self
            .http
            .post(self.url("/click2call"))
            .json(&serde_json::json!({"ramal": ramal, "telefone": telefone}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<serde_json::Value>().await.unwrap()["callid"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Stores an answered dialer call whose webhook to `url` gives up within 300 ms, and
    /// waits until the outbox has declared it dead (Finaz must be refusing); its outbox id.
    pub async fn dead_webhook(&self, call: &str, url: String) -> i64 {
        use finaz_freeswitch::storage::{DialerReport, OutboxState, now_ms};
        let storage = &self.service().storage;
        storage
            .report_dialer_call(DialerReport {
                call_id: call.into(),
                customer_leg: call.into(),
                crm_id: "CRM-1".into(),
                telefone: None,
                ramal: None,
                legs: vec![call.into()],
                give_up_at: now_ms() + 300,
                url,
                node: None,
            })
            .await
            .unwrap();
        self.service().outbox.wake.notify_one();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let e = storage.outbox_for_call(call).await.unwrap().unwrap();
            if e.state == OutboxState::Dead {
                return e.id;
            }
            assert!(std::time::Instant::now() < deadline, "never dead: {e:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn metrics(&self) -> String {
        super::get(format!("{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Stops the service and starts it again on the same configuration and database (new
    /// ports), as an operator's restart.
    pub async fn restart_service(&mut self) {
        if let Some(s) = self.service.take() {
            s.stop().await;
        }
        let file = self.dir.path().join("config.toml");
        let (_, cfg) = config::load(Some(&file)).unwrap();
        let service = Service::start(cfg, CancellationToken::new()).await.unwrap();
        self.base = format!("http://{}", service.http_addr);
        self.admin = format!("http://{}", service.admin_addr);
        self.service = Some(service);
        assert!(
            self.service()
                .esl
                .wait_connected(Duration::from_secs(5))
                .await,
            "restarted service never connected"
        );
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.service.take() {
            s.stop().await;
        }
    }
}

fn config_text(fs: &StandIn, dir: &tempfile::TempDir, extra: &Extra) -> String {
    // Tests fire hundreds of requests from 127.0.0.1 at once; only the rate limit's own test
    // turns it on.
    let http = if extra.http.contains("rate_limit") {
        extra.http.clone()
    } else {
        format!("rate_limit_per_minute = 0\n{}", extra.http)
    };
    // A test may choose the listen address itself (e.g. `[::]:0`).
    let http = if http.contains("listen =") {
        http
    } else {
        format!("listen = \"127.0.0.1:0\"\n{http}")
    };
    format!(
        "[http]\n{}\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n{}\n\
         [freeswitch]\n{}reconnect_max_backoff = \"200ms\"\n{}\n\
         [recordings]\ndir = \"{}\"\n{}\n\
         [dialer]\nlisten = \"127.0.0.1:0\"\n{}\n\
         [finaz]\n{}\n\
         [storage]\nurl = \"{}\"\n\
         [log]\n{}\n",
        http,
        extra.admin,
        // With `[[freeswitch.nodes]]` each node has its own address.
        if extra.freeswitch.contains("[[freeswitch.nodes]]") {
            String::new()
        } else {
            format!("address = \"{}\"\n", fs.addr())
        },
        extra.freeswitch,
        dir.path().join("rec").display(),
        extra.recordings,
        extra.dialer,
        extra.finaz,
        extra
            .storage_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("s.db").display())),
        extra.log,
    )
    // `{dir}` in an extra line: the test's directory (e.g. a node's recordings_dir).
    .replace("{dir}", &dir.path().display().to_string())
}
