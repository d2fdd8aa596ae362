//! The service's configuration: compiled-in defaults, then the `--config` file, then `FINAZ_`
//! environment variables; every problem reported at once.
//!
//! Loading has two steps. Each section is extracted on its own from the merged sources (so a
//! typo in `[http]` does not hide one in `[finaz]`), then the raw values are checked and turned
//! into typed settings ([`Config`]), again collecting every error.

mod raw;
mod validate;

use crate::domain::answered_url::AnsweredUrl;
use crate::domain::layout::RecordingLayout;
use crate::domain::originate::{OriginatePlan, PlanSettings};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use ipnet::IpNet;

pub use raw::RawConfig;

/// The defaults, also shipped as documentation.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Every problem found in a configuration, each on its own line.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigErrors(pub Vec<String>);

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Config {
    /// Moves the recordings to `dir` (the sandbox records beside itself): the layout and the
    /// originate plan are checked and built again.
    pub fn set_recordings_dir(&mut self, dir: impl Into<PathBuf>) -> Result<(), ConfigErrors> {
        let mut recordings = self.recordings.clone();
        recordings.layout = recordings.layout.with_dir(dir);
        self.plan = OriginatePlan::new(&plan_settings(&self.freeswitch, &recordings))
            .map_err(ConfigErrors)?;
        for node in &mut self.nodes {
            if node.recordings_dir == self.recordings.dir() {
                node.recordings_dir = recordings.dir().to_path_buf();
            }
        }
        self.recordings = recordings;
        Ok(())
    }

    /// Replaces every node with one at `address` (the sandbox's simulated FreeSWITCH), with
    /// the first node's password and `recordings.dir`.
    pub fn set_single_node(&mut self, address: impl Into<String>) {
        let address = address.into();
        self.freeswitch.address = address.clone();
        self.nodes = vec![NodeConfig {
            name: DEFAULT_NODE.into(),
            address,
            password: self.nodes[0].password.clone(),
            recordings_dir: self.recordings.dir().to_path_buf(),
        }];
    }
}

/// The originate plan's inputs from the two sections.
fn plan_settings(fs: &FreeswitchConfig, rec: &RecordingsConfig) -> PlanSettings {
    PlanSettings {
        operator_endpoint: fs.operator_endpoint.clone(),
        customer_destination: fs.customer_destination.clone(),
        caller_id_name: fs.caller_id_name.clone(),
        caller_id_number: fs.caller_id_number.clone(),
        originate_timeout: fs.originate_timeout,
        record: rec.record_click2call,
        layout: rec.layout.clone(),
        stereo: rec.stereo,
    }
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub click2call_path: String,
    pub recording_path: String,
    pub chave: Option<Secret>,
    /// Empty: everyone is allowed.
    pub allowed_ips: Vec<IpNet>,
    pub trusted_proxies: Vec<IpNet>,
    pub max_body_bytes: u64,
    pub double_click_window: Duration,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_window: Duration,
    /// PEM files; both set: the listener speaks HTTPS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Requests per minute per client address (0: no limit), and the burst allowed.
    pub rate_limit_per_minute: u32,
    pub rate_limit_burst: u32,
    /// Time to receive a request's head and body.
    pub request_timeout: Duration,
    /// Open connections at most, in all and per client address.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

#[derive(Debug, Clone)]
pub struct FreeswitchConfig {
    pub address: String,
    pub password: Secret,
    pub operator_endpoint: String,
    pub customer_destination: String,
    pub caller_id_name: String,
    pub caller_id_number: String,
    pub originate_timeout: Duration,
    pub originate_response_timeout: Duration,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub reconnect_max_backoff: Duration,
    /// No frame for this long: the connection is lost.
    pub liveness_timeout: Duration,
}

/// One FreeSWITCH server: `[[freeswitch.nodes]]`, or the single `[freeswitch]` section.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Unique; names the node in logs, metrics, `/readyz` and every call row.
    pub name: String,
    pub address: String,
    pub password: Secret,
    /// Where this node's recordings are visible to us (an NFS mount, say): a path FreeSWITCH
    /// reports under `recordings.dir` is read from the same place under this directory.
    pub recordings_dir: PathBuf,
}

/// The node name given to the single `[freeswitch]` section.
pub const DEFAULT_NODE: &str = "default";

#[derive(Debug, Clone)]
pub struct RecordingsConfig {
    pub record_click2call: bool,
    pub stereo: bool,
    /// `recordings.dir`, and where under it a call's recording is looked for when FreeSWITCH
    /// never told us (`recordings.path_template`: `{uuid}` of each leg, `{yyyy}` `{mm}`
    /// `{dd}` of the call's UTC day).
    pub layout: RecordingLayout,
}

impl RecordingsConfig {
    /// `recordings.dir`.
    pub fn dir(&self) -> &Path {
        self.layout.dir()
    }
}

/// How answered dialer calls are detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialerTrigger {
    Socket,
    Events,
    Both,
}

#[derive(Debug, Clone)]
pub struct DialerConfig {
    pub listen: SocketAddr,
    pub trigger: DialerTrigger,
    pub crm_id_variable: String,
    pub telefone_variable: String,
    pub ramal_variable: String,
    pub callid_variable: String,
    pub session_timeout: Duration,
    /// Peers allowed on the outbound socket server (FreeSWITCH's addresses).
    pub allowed_peers: Vec<IpNet>,
}

#[derive(Debug, Clone)]
pub struct FinazConfig {
    pub answered_url: AnsweredUrl,
    pub empresa_id: Option<String>,
    pub max_retry_age: Duration,
    pub delivery_timeout: Duration,
    pub max_concurrent_deliveries: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
    pub mask_phone_numbers: bool,
}

/// The validated configuration the service runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub http: HttpConfig,
    pub admin_listen: SocketAddr,
    /// Open connections at most on the admin listener.
    pub admin_max_connections: usize,
    /// What the admin listener wants from everyone but probes (`admin.token`).
    pub admin_token: Option<Secret>,
    /// Whether the console shows phone numbers unmasked (`admin.show_numbers`).
    pub admin_show_numbers: bool,
    pub freeswitch: FreeswitchConfig,
    /// The FreeSWITCH servers, at least one, names unique; the first is where calls from
    /// before nodes (no node on their row) live.
    pub nodes: Vec<NodeConfig>,
    pub recordings: RecordingsConfig,
    /// How click2calls are originated: `[freeswitch]`'s templates and `[recordings]`, checked.
    pub plan: OriginatePlan,
    pub dialer: DialerConfig,
    pub finaz: FinazConfig,
    pub storage_url: String,
    /// How long finished rows are kept; `None`: for ever.
    pub storage_retention: Option<Duration>,
    pub log: LogConfig,
}

/// Merges defaults, the file (if any) and the environment.
pub fn figment(file: Option<&Path>) -> Figment {
    let mut f = Figment::from(Toml::string(DEFAULT_TOML));
    if let Some(path) = file {
        f = f.merge(Toml::file_exact(path));
    }
    f.merge(Env::prefixed("FINAZ_").split("__"))
}

/// Loads and validates; `Err` lists every problem.
pub fn load(file: Option<&Path>) -> Result<(RawConfig, Config), ConfigErrors> {
    if let Some(path) = file
        && !path.is_file()
    {
        return Err(ConfigErrors(vec![format!(
            "config file {} does not exist or is not a file",
            path.display()
        )]));
    }
    let raw = RawConfig::extract(&figment(file))?;
    let config = raw.validate()?;
    Ok((raw, config))
}

/// A URL without its credentials (`postgres://<redacted>@host/db`), for output and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if s < at => format!("{}://<redacted>{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

/// Parses a duration as `humantime` does (`500ms`, `30s`, `5m`, `1h 30m`, `7d`); a bare
/// number is seconds (environment values arrive as numbers).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(Duration::from_secs)
            .map_err(|e| format!("{s:?}: {e}"));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 500ms, 30s, 5m, 24h ({e})"))
}

/// Parses an IP (`10.0.0.1`, `::1`) or a CIDR (`10.0.0.0/8`).
pub fn parse_ip_or_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<std::net::IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{s:?} is not an IP address or CIDR"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_url_credentials() {
        assert_eq!(
            redact_url("postgres://u:p@db:5432/x"),
            "postgres://<redacted>@db:5432/x"
        );
        assert_eq!(redact_url("sqlite://finaz.db"), "sqlite://finaz.db");
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn parses_ips_and_cidrs() {
        assert!(
            parse_ip_or_cidr("10.0.0.0/8")
                .unwrap()
                .contains(&"10.1.2.3".parse::<std::net::IpAddr>().unwrap())
        );
        assert!(
            parse_ip_or_cidr("::1")
                .unwrap()
                .contains(&"::1".parse::<std::net::IpAddr>().unwrap())
        );
        assert!(parse_ip_or_cidr("10.0.0.300").is_err());
    }

    #[test]
    fn defaults_are_valid_and_follow_the_contract() {
        let (_, c) = load(None).unwrap();
        assert_eq!(c.http.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.http.click2call_path, "/click2call");
        assert_eq!(c.http.recording_path, "/gravacao");
        assert!(c.http.chave.is_none());
        assert_eq!(c.http.allowed_ips.len(), 20);
        assert_eq!(c.admin_listen.to_string(), "127.0.0.1:9090");
        assert_eq!(c.freeswitch.address, "127.0.0.1:8021");
        assert_eq!(c.freeswitch.password.expose(), "ClueCon");
        assert_eq!(c.freeswitch.operator_endpoint, "user/{ramal}");
        assert_eq!(c.freeswitch.customer_destination, "{telefone} XML default");
        assert_eq!(
            c.recordings.dir(),
            Path::new("/var/lib/freeswitch/recordings")
        );
        assert!(c.recordings.record_click2call);
        assert_eq!(c.dialer.listen.to_string(), "127.0.0.1:8084");
        assert_eq!(c.dialer.trigger, DialerTrigger::Both);
        assert!(
            c.finaz.answered_url.as_str().starts_with(
                "https://api.finaz.com.br/telephony-proxy/atendimentodiscador?pid={pid}"
            )
        );
        assert!(c.finaz.empresa_id.is_none());
        assert_eq!(c.finaz.max_retry_age, Duration::from_secs(86400));
        assert_eq!(c.storage_url, "sqlite://finaz-freeswitch.db");
        assert_eq!(c.storage_retention, None, "kept for ever unless asked");
        assert_eq!(c.freeswitch.liveness_timeout, Duration::from_secs(15));
        assert_eq!(c.http.max_connections, 4096);
        assert_eq!(c.dialer.allowed_peers.len(), 2);
    }

    /// A value of the wrong type is reported under the key the user wrote, with where it
    /// came from (the environment's variable is named in `tests/it/service.rs`).
    #[test]
    fn type_errors_name_the_key_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[freeswitch]\naddress = 12\n[http]\nlisen = 1\n").unwrap();
        let errs = load(Some(&f)).unwrap_err().0;
        assert!(
            errs.iter()
                .any(|e| e.starts_with("freeswitch.address: invalid type")
                    && e.contains(&*f.to_string_lossy())),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("http.lisen: unknown field")),
            "{errs:?}"
        );
    }

    /// The console and /metrics are not served beyond loopback without a token, and a short
    /// token is refused; check-config shows it redacted.
    #[test]
    fn a_reachable_admin_listener_needs_a_token() {
        let load = |admin: &str| {
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("c.toml");
            std::fs::write(&f, format!("[admin]\n{admin}\n")).unwrap();
            load(Some(&f))
        };
        let errs = load("listen = \"0.0.0.0:9090\"").unwrap_err().0;
        assert!(errs.iter().any(|e| e.contains("admin.token")), "{errs:?}");
        assert!(load("listen = \"0.0.0.0:9090\"\ntoken = \"short\"").is_err());
        let (raw, c) = load("listen = \"10.0.0.5:9090\"\ntoken = \"0123456789abcdef\"").unwrap();
        assert_eq!(c.admin_token.unwrap().expose(), "0123456789abcdef");
        assert!(!raw.redacted_toml().contains("0123456789abcdef"));
        assert!(
            load("listen = \"[::1]:9090\"").is_ok(),
            "loopback needs none"
        );
    }

    /// `[freeswitch]` alone is node "default"; `[[freeswitch.nodes]]` are checked (unique
    /// metric-safe names, absolute recordings dirs) and their passwords redacted.
    #[test]
    fn nodes_are_one_section_or_a_checked_list() {
        let (_, c) = load(None).unwrap();
        assert_eq!(c.nodes.len(), 1);
        assert_eq!(c.nodes[0].name, DEFAULT_NODE);
        assert_eq!(c.nodes[0].address, "127.0.0.1:8021");
        assert_eq!(c.nodes[0].recordings_dir, c.recordings.dir());
        let load = |nodes: &str| {
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("c.toml");
            std::fs::write(&f, format!("[freeswitch]\n{nodes}")).unwrap();
            load(Some(&f))
        };
        let node = |name: &str, extra: &str| {
            format!(
                "[[freeswitch.nodes]]\nname = \"{name}\"\naddress = \"10.0.0.1:8021\"\npassword = \"secret-{name}\"\n{extra}"
            )
        };
        let (raw, c) = load(&format!(
            "{}{}",
            node("fs1", ""),
            node("fs2", "recordings_dir = \"/mnt/fs2\"\n")
        ))
        .unwrap();
        let names: Vec<&str> = c.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["fs1", "fs2"]);
        assert_eq!(c.nodes[1].recordings_dir, Path::new("/mnt/fs2"));
        assert_eq!(c.nodes[0].recordings_dir, c.recordings.dir());
        let shown = raw.redacted_toml();
        assert!(!shown.contains("secret-fs"), "{shown}");
        let errs = load(&format!("{}{}", node("fs1", ""), node("fs1", "")))
            .unwrap_err()
            .0;
        assert!(
            errs.iter().any(|e| e.contains("freeswitch.nodes[1].name")),
            "{errs:?}"
        );
        let errs = load(&node("FS 1", "recordings_dir = \"mnt\"\n"))
            .unwrap_err()
            .0;
        assert!(
            errs.iter().any(|e| e.contains("freeswitch.nodes[0].name")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("freeswitch.nodes[0].recordings_dir")),
            "{errs:?}"
        );
        let errs = load("[[freeswitch.nodes]]\nname = \"x\"\n").unwrap_err().0;
        assert!(
            errs.iter().any(|e| e.contains("freeswitch.nodes")),
            "{errs:?}"
        );
        // A single-node leftover beside the nodes is refused, not ignored.
        let errs = load(&format!("address = \"10.9.9.9:8021\"\n{}", node("fs1", "")))
            .unwrap_err()
            .0;
        assert!(
            errs.iter()
                .any(|e| e.starts_with("freeswitch.address is set (in ") && e.contains("remove it")),
            "{errs:?}"
        );
        assert!(
            !errs.iter().any(|e| e.contains("freeswitch.password")),
            "{errs:?}"
        );
    }

    #[test]
    fn retention_is_forever_or_at_least_an_hour() {
        let load = |v: &str| {
            let dir = tempfile::tempdir().unwrap();
            let f = dir.path().join("c.toml");
            std::fs::write(&f, format!("[storage]\nretention = \"{v}\"\n")).unwrap();
            load(Some(&f)).map(|(_, c)| c.storage_retention)
        };
        assert_eq!(load("90d").unwrap(), Some(Duration::from_secs(90 * 86400)));
        assert_eq!(load("forever").unwrap(), None);
        assert!(load("10m").is_err());
        assert!(load("soon").is_err());
    }
}
