//! The checks of the configuration as written into typed settings: every value parsed, every
//! problem collected, each named by its key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::raw::RawConfig;
use super::*;
use crate::domain::answered_url::AnsweredUrl;
use crate::domain::layout::RecordingLayout;
use crate::domain::originate::OriginatePlan;

impl RawConfig {
    /// Checks every value, returning typed settings or every problem found.
    pub fn validate(&self) -> Result<Config, ConfigErrors> {
        let mut errs: Vec<String> = Vec::new();
        let mut addr = |key: &str, v: &str| -> SocketAddr {
            v.parse().unwrap_or_else(|_| {
                errs.push(format!(
                    "{key} = {v:?} is not an address like 127.0.0.1:8080"
                ));
                SocketAddr::from(([0, 0, 0, 0], 0))
            })
        };
        let http_listen = addr("http.listen", &self.http.listen);
        let admin_listen = addr("admin.listen", &self.admin.listen);
        let dialer_listen = addr("dialer.listen", &self.dialer.listen);
        let mut dur = |key: &str, v: &str| {
            parse_duration(v).unwrap_or_else(|e| {
                errs.push(format!("{key}: {e}"));
                Duration::ZERO
            })
        };
        let double_click_window = dur("http.double_click_window", &self.http.double_click_window);
        let idempotency_window = dur("http.idempotency_window", &self.http.idempotency_window);
        let http_request_timeout = dur("http.request_timeout", &self.http.request_timeout);
        let fs = &self.freeswitch;
        let originate_timeout = dur("freeswitch.originate_timeout", &fs.originate_timeout);
        let originate_response_timeout = dur(
            "freeswitch.originate_response_timeout",
            &fs.originate_response_timeout,
        );
        let connect_timeout = dur("freeswitch.connect_timeout", &fs.connect_timeout);
        let request_timeout = dur("freeswitch.request_timeout", &fs.request_timeout);
        let liveness_timeout = dur("freeswitch.liveness_timeout", &fs.liveness_timeout);
        let retention = match self.storage.retention.trim() {
            "forever" => None,
            other => Some(dur("storage.retention", other)),
        };
        let reconnect_max_backoff = dur(
            "freeswitch.reconnect_max_backoff",
            &fs.reconnect_max_backoff,
        );
        let session_timeout = dur("dialer.session_timeout", &self.dialer.session_timeout);
        let max_retry_age = dur("finaz.max_retry_age", &self.finaz.max_retry_age);
        let delivery_timeout = dur("finaz.delivery_timeout", &self.finaz.delivery_timeout);

        let mut nets = |key: &str, list: &[String]| -> Vec<IpNet> {
            list.iter()
                .filter_map(|s| {
                    parse_ip_or_cidr(s)
                        .map_err(|e| errs.push(format!("{key}: {e}")))
                        .ok()
                })
                .collect()
        };
        let allowed_ips = nets("http.allowed_ips", &self.http.allowed_ips);
        let trusted_proxies = nets("http.trusted_proxies", &self.http.trusted_proxies);
        let dialer_peers = nets("dialer.allowed_peers", &self.dialer.allowed_peers);
        if retention.is_some_and(|r| r < Duration::from_secs(3600)) {
            errs.push(format!(
                "storage.retention = {:?} must be \"forever\" or at least 1h",
                self.storage.retention
            ));
        }
        if liveness_timeout < Duration::from_secs(1) {
            errs.push(format!(
                "freeswitch.liveness_timeout = {:?} must be at least 1s",
                fs.liveness_timeout
            ));
        }
        for (key, n) in [
            ("http.max_connections", self.http.max_connections),
            (
                "http.max_connections_per_ip",
                self.http.max_connections_per_ip,
            ),
            ("admin.max_connections", self.admin.max_connections),
        ] {
            if n == 0 {
                errs.push(format!("{key} must be at least 1"));
            }
        }

        for (key, path) in [
            ("http.click2call_path", &self.http.click2call_path),
            ("http.recording_path", &self.http.recording_path),
        ] {
            if !path.starts_with('/') || path.len() < 2 || path.contains(['?', '#', ' ']) {
                errs.push(format!("{key} = {path:?} must be a path like /click2call"));
            }
        }
        if self.http.click2call_path == self.http.recording_path {
            errs.push("http.click2call_path and http.recording_path must differ".into());
        }
        match self.admin.token.as_deref() {
            Some(t) if t.len() < 16 || t.trim() != t || t.chars().any(char::is_control) => {
                errs.push(
                    "admin.token must be at least 16 characters, without spaces at its ends or control characters"
                        .into(),
                );
            }
            None if self
                .admin
                .listen
                .parse::<SocketAddr>()
                .is_ok_and(|a| !a.ip().is_loopback()) =>
            {
                errs.push(format!(
                    "admin.listen = {:?} is not a loopback address: set admin.token, or listen on 127.0.0.1",
                    self.admin.listen
                ))
            }
            _ => {}
        }
        if self.http.chave.as_deref().is_some_and(|c| c.len() < 8) {
            errs.push("http.chave is set but shorter than 8 characters".into());
        }
        if self.http.tls_cert.is_some() != self.http.tls_key.is_some() {
            errs.push("http.tls_cert and http.tls_key go together: set both or neither".into());
        }
        if !(1024..=1024 * 1024).contains(&self.http.max_body_bytes) {
            errs.push("http.max_body_bytes must be between 1024 and 1048576".into());
        }
        if fs.password.is_empty() || fs.password.contains(['\n', '\r']) {
            errs.push("freeswitch.password must be one non-empty line".into());
        }
        let nodes = self.nodes(&mut errs);
        let trigger = match self.dialer.trigger.as_str() {
            "socket" => DialerTrigger::Socket,
            "events" => DialerTrigger::Events,
            "both" => DialerTrigger::Both,
            other => {
                errs.push(format!(
                    "dialer.trigger = {other:?} must be \"socket\", \"events\" or \"both\""
                ));
                DialerTrigger::Both
            }
        };
        let d = &self.dialer;
        for (key, v) in [
            ("dialer.crm_id_variable", &d.crm_id_variable),
            ("dialer.telefone_variable", &d.telefone_variable),
            ("dialer.ramal_variable", &d.ramal_variable),
            ("dialer.callid_variable", &d.callid_variable),
        ] {
            if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                errs.push(format!(
                    "{key} = {v:?} must be a channel variable name (letters, digits, _)"
                ));
            }
        }
        let answered_url = AnsweredUrl::parse(&self.finaz.answered_url)
            .map_err(|e| errs.push(e))
            .ok();
        if self.finaz.max_concurrent_deliveries == 0 {
            errs.push("finaz.max_concurrent_deliveries must be at least 1".into());
        }
        let storage = &self.storage.url;
        if !(storage.starts_with("sqlite:")
            || storage.starts_with("postgres://")
            || storage.starts_with("postgresql://"))
        {
            errs.push(format!(
                "storage.url must start with sqlite: or postgres:// (got {:?})",
                storage.split("://").next().unwrap_or("")
            ));
        }
        let format = match self.log.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                errs.push(format!(
                    "log.format = {other:?} must be \"text\" or \"json\""
                ));
                LogFormat::Text
            }
        };
        let freeswitch = FreeswitchConfig {
            address: fs.address.clone(),
            password: Secret(fs.password.clone()),
            operator_endpoint: fs.operator_endpoint.clone(),
            customer_destination: fs.customer_destination.clone(),
            caller_id_name: fs.caller_id_name.clone(),
            caller_id_number: fs.caller_id_number.clone(),
            originate_timeout,
            originate_response_timeout,
            connect_timeout,
            request_timeout,
            reconnect_max_backoff,
            liveness_timeout,
        };
        let layout = RecordingLayout::parse(&self.recordings.dir, &self.recordings.path_template)
            .map_err(|e| errs.push(e))
            .ok();
        let recordings = layout.map(|layout| RecordingsConfig {
            record_click2call: self.recordings.record_click2call,
            stereo: self.recordings.stereo,
            layout,
        });
        // Originate templates and the recording path end up on a command line: checked by
        // the code that builds it.
        let plan = recordings.as_ref().and_then(|recordings| {
            OriginatePlan::new(&super::plan_settings(&freeswitch, recordings))
                .map_err(|plan_errs| errs.extend(plan_errs))
                .ok()
        });
        let (Some(answered_url), Some(recordings), Some(plan)) = (answered_url, recordings, plan)
        else {
            return Err(ConfigErrors(errs));
        };
        if !errs.is_empty() {
            return Err(ConfigErrors(errs));
        }
        Ok(Config {
            http: HttpConfig {
                listen: http_listen,
                click2call_path: self.http.click2call_path.clone(),
                recording_path: self.http.recording_path.clone(),
                chave: self.http.chave.clone().map(Secret),
                allowed_ips,
                trusted_proxies,
                max_body_bytes: self.http.max_body_bytes,
                double_click_window,
                idempotency_window,
                tls_cert: self.http.tls_cert.as_ref().map(PathBuf::from),
                tls_key: self.http.tls_key.as_ref().map(PathBuf::from),
                rate_limit_per_minute: self.http.rate_limit_per_minute,
                rate_limit_burst: self.http.rate_limit_burst,
                request_timeout: http_request_timeout,
                max_connections: self.http.max_connections as usize,
                max_connections_per_ip: self.http.max_connections_per_ip as usize,
            },
            admin_max_connections: self.admin.max_connections as usize,
            admin_token: self.admin.token.clone().map(Secret),
            admin_show_numbers: self.admin.show_numbers,
            admin_listen,
            freeswitch,
            nodes,
            recordings,
            plan,
            dialer: DialerConfig {
                listen: dialer_listen,
                trigger,
                crm_id_variable: d.crm_id_variable.clone(),
                telefone_variable: d.telefone_variable.clone(),
                ramal_variable: d.ramal_variable.clone(),
                callid_variable: d.callid_variable.clone(),
                session_timeout,
                allowed_peers: dialer_peers,
            },
            finaz: FinazConfig {
                answered_url,
                empresa_id: self.finaz.empresa_id.clone(),
                max_retry_age,
                delivery_timeout,
                max_concurrent_deliveries: self.finaz.max_concurrent_deliveries as usize,
            },
            storage_url: storage.clone(),
            storage_retention: retention,
            log: LogConfig {
                format,
                level: self.log.level.clone(),
                mask_phone_numbers: self.log.mask_phone_numbers,
            },
        })
    }
}

impl RawConfig {
    /// `[[freeswitch.nodes]]` checked, or the single `[freeswitch]` section as node
    /// [`DEFAULT_NODE`].
    fn nodes(&self, errs: &mut Vec<String>) -> Vec<NodeConfig> {
        let fs = &self.freeswitch;
        let rec_dir = PathBuf::from(&self.recordings.dir);
        if fs.nodes.is_empty() {
            return vec![NodeConfig {
                name: DEFAULT_NODE.into(),
                address: fs.address.clone(),
                password: Secret(fs.password.clone()),
                recordings_dir: rec_dir,
            }];
        }
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for (i, n) in fs.nodes.iter().enumerate() {
            let at = format!("freeswitch.nodes[{i}]");
            let name_ok = (1..=32).contains(&n.name.len())
                && n.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !name_ok {
                errs.push(format!(
                    "{at}.name = {:?} must be 1 to 32 of a-z, 0-9, '-', '_' (it labels metrics)",
                    n.name
                ));
            } else if !seen.insert(n.name.clone()) {
                errs.push(format!("{at}.name = {:?} is used by another node", n.name));
            }
            if n.address.trim().is_empty() || n.address.contains(char::is_whitespace) {
                errs.push(format!("{at}.address must be host:port"));
            }
            if n.password.is_empty() || n.password.contains(['\n', '\r']) {
                errs.push(format!("{at}.password must be one non-empty line"));
            }
            let recordings_dir = match &n.recordings_dir {
                Some(d) if !Path::new(d).is_absolute() => {
                    errs.push(format!(
                        "{at}.recordings_dir = {d:?} must be an absolute path"
                    ));
                    rec_dir.clone()
                }
                Some(d) => PathBuf::from(d),
                None => rec_dir.clone(),
            };
            out.push(NodeConfig {
                name: n.name.clone(),
                address: n.address.clone(),
                password: Secret(n.password.clone()),
                recordings_dir,
            });
        }
        out
    }
}
