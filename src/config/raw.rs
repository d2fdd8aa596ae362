//! The configuration as written (strings and numbers), and its checks into typed settings.

use figment::{Figment, Provider};
use serde::{Deserialize, Deserializer, Serialize};

use super::*;

/// Accepts a string or a number: environment values such as `FINAZ_FINAZ__EMPRESA_ID=123`
/// arrive as numbers.
fn lenient<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum S {
        Str(String),
        Int(i64),
        Float(f64),
        Bool(bool),
    }
    Ok(match S::deserialize(d)? {
        S::Str(s) => s,
        S::Int(i) => i.to_string(),
        S::Float(f) => f.to_string(),
        S::Bool(b) => b.to_string(),
    })
}

fn lenient_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    lenient(d).map(Some)
}

fn lenient_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    struct W(#[serde(deserialize_with = "lenient")] String);
    Ok(Vec::<W>::deserialize(d)?.into_iter().map(|w| w.0).collect())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub listen: String,
    pub click2call_path: String,
    pub recording_path: String,
    #[serde(
        default,
        deserialize_with = "lenient_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub chave: Option<String>,
    #[serde(deserialize_with = "lenient_list")]
    pub allowed_ips: Vec<String>,
    #[serde(deserialize_with = "lenient_list")]
    pub trusted_proxies: Vec<String>,
    pub max_body_bytes: u64,
    pub double_click_window: String,
    pub idempotency_window: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_opt"
    )]
    pub tls_cert: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_opt"
    )]
    pub tls_key: Option<String>,
    pub rate_limit_per_minute: u32,
    pub rate_limit_burst: u32,
    pub request_timeout: String,
    pub max_connections: u32,
    pub max_connections_per_ip: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: String,
    pub max_connections: u32,
    #[serde(
        default,
        deserialize_with = "lenient_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub token: Option<String>,
    pub show_numbers: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFreeswitch {
    pub address: String,
    #[serde(deserialize_with = "lenient")]
    pub password: String,
    pub operator_endpoint: String,
    pub customer_destination: String,
    #[serde(deserialize_with = "lenient")]
    pub caller_id_name: String,
    #[serde(deserialize_with = "lenient")]
    pub caller_id_number: String,
    pub originate_timeout: String,
    pub originate_response_timeout: String,
    pub connect_timeout: String,
    pub request_timeout: String,
    pub reconnect_max_backoff: String,
    pub liveness_timeout: String,
    /// `[[freeswitch.nodes]]`: several FreeSWITCH servers (empty: `address` and `password`
    /// above are the one node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<RawNode>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    #[serde(deserialize_with = "lenient")]
    pub name: String,
    pub address: String,
    #[serde(deserialize_with = "lenient")]
    pub password: String,
    /// Where this node's recordings are visible to us (default: `recordings.dir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recordings_dir: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecordings {
    pub dir: String,
    pub record_click2call: bool,
    pub stereo: bool,
    pub path_template: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDialer {
    pub listen: String,
    pub trigger: String,
    pub crm_id_variable: String,
    pub telefone_variable: String,
    pub ramal_variable: String,
    pub callid_variable: String,
    pub session_timeout: String,
    #[serde(deserialize_with = "lenient_list")]
    pub allowed_peers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFinaz {
    pub answered_url: String,
    #[serde(
        default,
        deserialize_with = "lenient_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub empresa_id: Option<String>,
    pub max_retry_age: String,
    pub delivery_timeout: String,
    pub max_concurrent_deliveries: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    pub url: String,
    pub retention: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: String,
    pub level: String,
    pub mask_phone_numbers: bool,
}

/// The merged configuration before validation; serializes back to TOML for `check-config`.
#[derive(Debug, Clone, Serialize)]
pub struct RawConfig {
    pub http: RawHttp,
    pub admin: RawAdmin,
    pub freeswitch: RawFreeswitch,
    pub recordings: RawRecordings,
    pub dialer: RawDialer,
    pub finaz: RawFinaz,
    pub storage: RawStorage,
    pub log: RawLog,
}

const SECTIONS: [&str; 8] = [
    "http",
    "admin",
    "freeswitch",
    "recordings",
    "dialer",
    "finaz",
    "storage",
    "log",
];

fn section<T: serde::de::DeserializeOwned>(
    f: &Figment,
    name: &str,
    errors: &mut Vec<String>,
) -> Option<T> {
    match f.extract_inner::<T>(name) {
        Ok(v) => Some(v),
        Err(e) => {
            errors.extend(e.into_iter().map(|e| describe(name, &e)));
            None
        }
    }
}

/// With `[[freeswitch.nodes]]`, `freeswitch.address` and `freeswitch.password` are not used:
/// one set in the file or the environment (a leftover of a single-node setup) is an error,
/// not silently ignored.
fn unused_with_nodes(f: &Figment, fs: &RawFreeswitch, errors: &mut Vec<String>) {
    if fs.nodes.is_empty() {
        return;
    }
    for key in ["address", "password"] {
        let Some(md) = f.find_metadata(&format!("freeswitch.{key}")) else {
            continue;
        };
        let from = match md.source.as_ref().and_then(|s| s.file_path()) {
            Some(path) => format!("in {}", path.display()),
            None if md.name.contains("environment") => {
                format!("as FINAZ_FREESWITCH__{}", key.to_uppercase())
            }
            None => continue,
        };
        errors.push(format!(
            "freeswitch.{key} is set ({from}) but [[freeswitch.nodes]] are configured, each with its own {key}: remove it"
        ));
    }
}

/// One problem of section `section`, naming its key as the user wrote it
/// (`freeswitch.address`) and where the value came from.
fn describe(section: &str, e: &figment::Error) -> String {
    let mut key: Vec<&str> = vec![section];
    key.extend(e.path.iter().map(String::as_str).filter(|p| *p != section));
    if let figment::error::Kind::UnknownField(name, _) = &e.kind
        && key.last() != Some(&name.as_str())
    {
        key.push(name);
    }
    let from = match &e.metadata {
        Some(md) => match &md.source {
            Some(source) => format!(" (in {source} {})", md.name),
            // The environment: the variable to look at.
            None if md.name.contains("environment") => {
                format!(" (in FINAZ_{})", key.join("__").to_uppercase())
            }
            None => format!(" (in {})", md.name),
        },
        None => String::new(),
    };
    format!("{}: {}{from}", key.join("."), e.kind)
}

impl RawConfig {
    /// Extracts every section, collecting the errors of all of them.
    pub fn extract(f: &Figment) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        match f.data() {
            Ok(data) => {
                for dict in data.values() {
                    for key in dict.keys() {
                        if !SECTIONS.contains(&key.as_str()) {
                            errors.push(format!(
                                "unknown section [{key}] (known: {})",
                                SECTIONS.join(", ")
                            ));
                        }
                    }
                }
            }
            Err(e) => return Err(ConfigErrors(e.into_iter().map(|e| e.to_string()).collect())),
        }
        let http = section(f, "http", &mut errors);
        let admin = section(f, "admin", &mut errors);
        let freeswitch = section(f, "freeswitch", &mut errors);
        let recordings = section(f, "recordings", &mut errors);
        let dialer = section(f, "dialer", &mut errors);
        let finaz = section(f, "finaz", &mut errors);
        let storage = section(f, "storage", &mut errors);
        let log = section(f, "log", &mut errors);
        if let Some(fs) = &freeswitch {
            unused_with_nodes(f, fs, &mut errors);
        }
        match (
            http, admin, freeswitch, recordings, dialer, finaz, storage, log,
        ) {
            (
                Some(http),
                Some(admin),
                Some(freeswitch),
                Some(recordings),
                Some(dialer),
                Some(finaz),
                Some(storage),
                Some(log),
            ) if errors.is_empty() => Ok(RawConfig {
                http,
                admin,
                freeswitch,
                recordings,
                dialer,
                finaz,
                storage,
                log,
            }),
            _ => Err(ConfigErrors(errors)),
        }
    }

    /// The effective configuration as TOML, with secrets replaced.
    pub fn redacted_toml(&self) -> String {
        let mut c = self.clone();
        c.freeswitch.password = "<redacted>".into();
        for n in &mut c.freeswitch.nodes {
            n.password = "<redacted>".into();
        }
        if c.admin.token.is_some() {
            c.admin.token = Some("<redacted>".into());
        }
        if c.http.chave.is_some() {
            c.http.chave = Some("<redacted>".into());
        }
        c.storage.url = redact_url(&c.storage.url);
        toml::to_string_pretty(&c).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}
