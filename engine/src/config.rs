//! Configuration: one TOML file, every key overridable by an `ORBITER_…` environment variable.
//!
//! Resolution order, later wins: built-in defaults, the TOML file (if any), environment variables,
//! then command-line flags. The environment name of a key is `ORBITER_` followed by its path in
//! upper case joined by `_`: `mllp.addr` is `ORBITER_MLLP_ADDR`, `data_dir` is `ORBITER_DATA_DIR`.
//! Secrets (the admin token, CDR credentials) are only taken from the environment or from files
//! named in the config, never from the TOML itself, so a config file can be committed safely.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything the engine needs to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Journal and embedded CDR live here, and nowhere else, so the container stays stateless.
    pub data_dir: PathBuf,
    /// Channel definitions, one TOML file a channel.
    pub channels_dir: PathBuf,
    /// Rhai scripts; `lib/` below it holds the shared modules.
    pub scripts_dir: PathBuf,
    /// A tracing filter such as `info` or `orbiter=debug`; `ORBITER_LOG` overrides it.
    pub log: String,
    /// Log as JSON lines (for log shippers) instead of human-readable text.
    pub log_json: bool,
    pub mllp: MllpConfig,
    pub http: HttpConfig,
    /// HL7 v2 header checks (`[hl7]`), for every listener that takes HL7 v2.
    pub hl7: Hl7Config,
    pub admin: AdminConfig,
    pub journal: JournalConfig,
    pub cdr: CdrConfig,
    /// Journal pruning defaults (`[retention]`); channels override them in their own file.
    pub retention: crate::journal::retention::RetentionConfig,
    pub mediators: MediatorsConfig,
    /// Sandbox limits for every channel script (`[script]` in the file, `ORBITER_SCRIPT_…`).
    pub script: crate::script::ScriptLimits,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("data"),
            channels_dir: PathBuf::from("channels"),
            scripts_dir: PathBuf::from("scripts"),
            log: "info".into(),
            log_json: false,
            mllp: MllpConfig::default(),
            http: HttpConfig::default(),
            hl7: Hl7Config::default(),
            admin: AdminConfig::default(),
            journal: JournalConfig::default(),
            cdr: CdrConfig::default(),
            retention: crate::journal::retention::RetentionConfig::default(),
            mediators: MediatorsConfig::default(),
            script: crate::script::ScriptLimits::default(),
        }
    }
}

/// The shared MLLP listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MllpConfig {
    /// `false` turns the listener off entirely.
    pub enabled: bool,
    pub addr: SocketAddr,
    /// A frame larger than this is answered with AR and the connection is closed (default 16 MiB).
    pub max_message_bytes: usize,
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout_secs: u64,
    /// Messages read from one connection whose ACKs are not yet written; reading pauses beyond it.
    pub max_in_flight: usize,
    /// Connections beyond this wait in the accept queue.
    pub max_connections: usize,
    /// `on-commit`: AA once the message is durable in the journal.
    pub ack_mode: AckTiming,
    pub tls: TlsConfig,
}

impl Default for MllpConfig {
    fn default() -> Self {
        MllpConfig {
            enabled: true,
            addr: "0.0.0.0:2575".parse().expect("static address"),
            max_message_bytes: 16 * 1024 * 1024,
            idle_timeout_secs: 300,
            max_in_flight: 128,
            max_connections: 1024,
            ack_mode: AckTiming::OnCommit,
            tls: TlsConfig::default(),
        }
    }
}

/// When the sender gets its ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AckTiming {
    /// As soon as the message is durable in the journal.
    OnCommit,
    /// After the CDR answered (needs channels and destinations; until then behaves as on-commit).
    OnDelivery,
}

/// TLS for a listener, from PEM files. Off while `cert` is unset; every key is always present
/// (as null) so that `ORBITER_MLLP_TLS_CERT` and friends can switch it on from the environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert: Option<PathBuf>,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// CA bundle that client certificates must chain to; unset means no client certificates.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca` set: refuse clients without a certificate (default) or merely verify those
    /// that present one.
    pub require_client_cert: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            client_ca: None,
            require_client_cert: true,
        }
    }
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.cert.is_some()
    }
}

/// HTTP ingest (channel sources of kind `http`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub enabled: bool,
    pub addr: SocketAddr,
    /// Largest request body taken; larger ones get 413. CSV bodies are spooled to disk and
    /// streamed, so this bounds disk, not memory, for them.
    pub max_body_bytes: usize,
    /// Server threads (0: one per core).
    pub workers: usize,
    /// A request body that sends nothing for this long is answered 408 and its connection
    /// closed: a client that trickles or stalls cannot hold a connection for ever.
    pub body_idle_timeout_secs: u64,
    /// Connections open at once, over all workers; more wait in the kernel's accept queue, so
    /// that stalled clients cannot use up the process's file descriptors (MLLP and the admin
    /// port go on working).
    pub max_connections: usize,
    pub tls: TlsConfig,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            addr: "0.0.0.0:5001".parse().expect("static address"),
            max_body_bytes: 16 * 1024 * 1024,
            workers: 0,
            body_idle_timeout_secs: 30,
            max_connections: 1024,
            tls: TlsConfig::default(),
        }
    }
}

/// What every HL7 v2 intake takes (the MLLP ports, HTTP `/hl7v2`, folder and SFTP files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hl7Config {
    /// MSH-11.1 values taken (HL7 table 0103: `P` production, `D` debugging, `T` training);
    /// a message with another is answered AR, code 202. A production engine can take `["P"]`
    /// only, so that a test system pointed at it by mistake is refused, not processed.
    pub processing_ids: Vec<String>,
}

impl Default for Hl7Config {
    fn default() -> Self {
        Hl7Config {
            processing_ids: crate::hl7::validate::PROCESSING_IDS
                .iter()
                .map(|p| p.to_string())
                .collect(),
        }
    }
}

/// The admin port: API, metrics, health.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub addr: SocketAddr,
    /// The bootstrap admin token. Only from `ORBITER_ADMIN_TOKEN` (a token in a TOML file would
    /// end up in git); when unset, one is generated into `<data_dir>/admin.token` on first start.
    #[serde(skip_serializing)]
    pub token: Option<String>,
    /// actix-web worker threads for the admin port; it is not on the message path.
    pub workers: usize,
    pub tls: TlsConfig,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            addr: "0.0.0.0:8080".parse().expect("static address"),
            token: None,
            workers: 1,
            tls: TlsConfig::default(),
        }
    }
}

/// The journal (sled).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// sled's page cache (its own default, 1 GiB, is far too much for a Raspberry Pi). The
    /// journal's sled holds only pointers and indexes (bodies and records are in the value log,
    /// cached by the OS), and sled underestimates small entries, so a little goes a long way.
    pub cache_mb: u64,
    /// At most this many appends share one group commit (one fdatasync of the value log).
    pub max_batch: usize,
    /// `false` skips the fsyncs (of the value log before an ACK, of sled at checkpoints):
    /// survives a process crash, not a power cut.
    pub fsync: bool,
    /// sled's mode: `true` favours write throughput (about 15% more messages/s measured, but
    /// more disk until its segment cleaner catches up), `false` favours disk space.
    pub high_throughput: bool,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            cache_mb: 8,
            max_batch: 1024,
            fsync: true,
            high_throughput: true,
        }
    }
}

/// Where FHIR output goes; unset `url` means the embedded CDR.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CdrConfig {
    pub url: Option<String>,
    /// Bearer token for an external CDR; environment only (`ORBITER_CDR_TOKEN`).
    #[serde(skip_serializing)]
    pub token: Option<String>,
    /// Basic-auth user for an external CDR (with `ORBITER_CDR_PASSWORD`), instead of a token.
    pub username: Option<String>,
    /// Environment only (`ORBITER_CDR_PASSWORD`).
    #[serde(skip_serializing)]
    pub password: Option<String>,
    /// Per request to an external CDR.
    pub timeout_secs: u64,
    /// PEM file of the CA(s) an `https` CDR's certificate must chain to, trusted instead of
    /// the system's roots: a HAPI FHIR behind the site's own CA.
    pub tls_ca: Option<PathBuf>,
    /// The embedded CDR's sled page cache.
    pub cache_mb: u64,
}

impl Default for CdrConfig {
    fn default() -> Self {
        CdrConfig {
            url: None,
            token: None,
            username: None,
            password: None,
            timeout_secs: 30,
            tls_ca: None,
            cache_mb: 32,
        }
    }
}

/// Registered mediators (`/api/mediators`) and the `mediator` destination.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediatorsConfig {
    /// A mediator whose last heartbeat is older than this shows as `offline`, and deliveries to
    /// it are queued instead of sent (OpenHIM uses a minute; mediators beat every 10 s).
    pub offline_after_secs: u64,
    /// Per request to a mediator's endpoint.
    pub timeout_secs: u64,
}

impl Default for MediatorsConfig {
    fn default() -> Self {
        MediatorsConfig {
            offline_after_secs: 60,
            timeout_secs: 30,
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The cause is the `source`, which the top of the binary prints after this line's text
    // (`{:#}`): naming it here too printed it twice.
    #[error("cannot read the config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// Keys that are secrets: accepted from the environment, refused in a config file.
const SECRET_KEYS: &[&str] = &["admin.token", "cdr.token", "cdr.password"];

impl Config {
    /// Loads defaults, then `file` (if given, or `./orbiter.toml` if it exists), then the
    /// environment (`vars` is normally `std::env::vars()`; tests pass their own).
    pub fn load(
        file: Option<&Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        // Secret keys are skipped when serializing; the tree gives them a slot so env
        // overrides find them.
        let mut tree = default_tree();
        let implicit = Path::new("orbiter.toml");
        let file = file.or_else(|| implicit.exists().then_some(implicit));
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let from_file: toml::Value = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
            let from_file = serde_json::to_value(from_file).expect("toml is json-compatible");
            for key in SECRET_KEYS {
                let (section, leaf) = key.split_once('.').expect("dotted");
                if from_file.get(section).and_then(|s| s.get(leaf)).is_some() {
                    return Err(ConfigError::Parse {
                        path: path.to_owned(),
                        message: format!(
                            "`{key}` is a secret: set it in the environment, not in a file"
                        ),
                    });
                }
            }
            // Validate the file alone first, typed from its own text, so that an error names
            // the file, the line and the key (`invalid socket address syntax` alone does not
            // say which of the addresses it is).
            toml::from_str::<Config>(&text).map_err(|e| ConfigError::Parse {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
            merge(&mut tree, from_file);
        }
        let vars: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("ORBITER_"))
            .collect();
        apply_env(&mut tree, &vars)?;
        let config: Config = serde_json::from_value(tree)
            .map_err(|e| ConfigError::Invalid(format!("configuration: {e}")))?;
        config.validate()?;
        // A log filter that does not parse stops start-up like any bad value, naming where it
        // came from (it used to fall back to `info` with a line on stderr).
        if let Err(message) = crate::logging::check(&config.log) {
            return Err(
                match (vars.iter().find(|(k, _)| k == "ORBITER_LOG"), file) {
                    (Some((var, _)), _) => ConfigError::Env {
                        var: var.clone(),
                        message,
                    },
                    (None, Some(path)) => ConfigError::Parse {
                        path: path.to_owned(),
                        message: format!("key `log`: {message}"),
                    },
                    (None, None) => ConfigError::Invalid(format!("log: {message}")),
                },
            );
        }
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.mllp.max_message_bytes < 64 {
            return Err(ConfigError::Invalid(
                "mllp.max_message_bytes must be at least 64".into(),
            ));
        }
        if self.http.body_idle_timeout_secs == 0 || self.http.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "http.body_idle_timeout_secs and http.max_connections must be positive".into(),
            ));
        }
        if self.mllp.max_in_flight == 0 || self.mllp.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "mllp.max_in_flight and mllp.max_connections must be positive".into(),
            ));
        }
        let listeners = [
            ("mllp", &self.mllp.tls),
            ("http", &self.http.tls),
            ("admin", &self.admin.tls),
        ];
        for (name, tls) in listeners {
            if tls.cert.is_some() != tls.key.is_some() {
                return Err(ConfigError::Invalid(format!(
                    "{name}.tls needs both cert and key"
                )));
            }
            // Client certificates are a TLS feature: without cert and key the listener would
            // serve plain text and check no one, the opposite of what was asked.
            if tls.client_ca.is_some() && tls.cert.is_none() {
                return Err(ConfigError::Invalid(format!(
                    "{name}.tls.client_ca is set but {name}.tls has no cert and key: client \
                     certificates need TLS on the listener"
                )));
            }
        }
        self.retention
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if self.hl7.processing_ids.is_empty() {
            return Err(ConfigError::Invalid(
                "hl7.processing_ids is empty: no message could be taken (HL7 table 0103: P, D, T)"
                    .into(),
            ));
        }
        let table = crate::hl7::validate::PROCESSING_IDS;
        if let Some(bad) = self
            .hl7
            .processing_ids
            .iter()
            .find(|p| !table.contains(&p.as_str()))
        {
            return Err(ConfigError::Invalid(format!(
                "hl7.processing_ids: `{bad}` is not an HL7 processing id (table 0103: {})",
                table.join(", ")
            )));
        }
        if self.journal.max_batch == 0 {
            return Err(ConfigError::Invalid(
                "journal.max_batch must be positive".into(),
            ));
        }
        Ok(())
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.mllp.idle_timeout_secs)
    }
}

/// Deep-merges `overlay` into `base` (objects merge, everything else replaces).
fn merge(base: &mut serde_json::Value, overlay: serde_json::Value) {
    match (base, overlay) {
        (serde_json::Value::Object(base), serde_json::Value::Object(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (slot, value) => *slot = value,
    }
}

/// The `ORBITER_…` name of every key (leaf) of the config tree, with its path.
fn env_names(
    node: &serde_json::Value,
    prefix: &str,
    path: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, String)>,
) {
    let serde_json::Value::Object(map) = node else {
        return;
    };
    for (key, value) in map {
        let name = format!("{prefix}_{}", key.to_ascii_uppercase());
        path.push(key.clone());
        if value.is_object() {
            env_names(value, &name, path, out);
        } else {
            out.push((path.clone(), name));
        }
        path.pop();
    }
}

/// The tree of defaults, with a slot for each secret key (skipped when serializing).
fn default_tree() -> serde_json::Value {
    let mut tree = serde_json::to_value(Config::default()).expect("config serializes");
    for key in SECRET_KEYS {
        let (section, leaf) = key.split_once('.').expect("dotted");
        tree[section][leaf] = serde_json::Value::Null;
    }
    tree
}

/// For each key whose `ORBITER_…` name is set, replaces the value. The new value takes the
/// type of the default (number, bool) or stays a string. Each variable is checked as it is
/// applied, so that a bad value names its variable, not only what was wrong with it.
fn apply_env(tree: &mut serde_json::Value, vars: &[(String, String)]) -> Result<(), ConfigError> {
    let mut names = Vec::new();
    env_names(tree, "ORBITER", &mut Vec::new(), &mut names);
    for (path, name) in names {
        let Some((_, raw)) = vars.iter().find(|(k, _)| *k == name) else {
            continue;
        };
        let slot = path
            .iter()
            .fold(&mut *tree, |node, key| &mut node[key.as_str()]);
        *slot = match slot {
            serde_json::Value::Bool(_) => match raw.as_str() {
                "1" | "true" | "yes" | "on" => serde_json::Value::Bool(true),
                "0" | "false" | "no" | "off" => serde_json::Value::Bool(false),
                _ => {
                    return Err(ConfigError::Env {
                        var: name,
                        message: "expected true or false".into(),
                    })
                }
            },
            serde_json::Value::Number(_) => {
                serde_json::Value::Number(raw.parse().map_err(|_| ConfigError::Env {
                    var: name.clone(),
                    message: "expected a number".into(),
                })?)
            }
            // A list: comma-separated (`ORBITER_HL7_PROCESSING_IDS=P,T`).
            serde_json::Value::Array(_) => serde_json::Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| serde_json::Value::String(s.to_string()))
                    .collect(),
            ),
            _ => serde_json::Value::String(raw.clone()),
        };
        serde_json::from_value::<Config>(tree.clone()).map_err(|e| ConfigError::Env {
            var: name.clone(),
            message: format!("{e} (for `{}`)", path.join(".")),
        })?;
    }
    Ok(())
}

/// `ORBITER_…` variables of Orbiter's other tools, which the engine does not read, and of the
/// test hooks of debug builds.
const OTHER_TOOLS_VARS: &[&str] = &[
    "ORBITER_API_URL",
    "ORBITER_MEDIATOR_TOKEN",
    "ORBITER_BIN",
    "ORBITER_BUILD_STRIP",
    "ORBITER_FHIR_PYTHON",
    crate::journal::faults::TRIGGER_ENV,
];

/// An `ORBITER_…` variable that is set but names no configuration key (a typo such as
/// `ORBITER_MLLP_ADRR` would otherwise be ignored without a word), with the key name it
/// most likely meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVar {
    pub var: String,
    pub did_you_mean: Option<String>,
}

impl std::fmt::Display for UnknownVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is not a configuration variable (ignored)", self.var)?;
        if let Some(name) = &self.did_you_mean {
            write!(f, "; did you mean {name}?")?;
        }
        Ok(())
    }
}

/// The `ORBITER_…` variables in `vars` that no configuration key reads, sorted.
pub fn unknown_env_vars(vars: impl IntoIterator<Item = (String, String)>) -> Vec<UnknownVar> {
    let mut known = Vec::new();
    env_names(&default_tree(), "ORBITER", &mut Vec::new(), &mut known);
    let known: Vec<String> = known.into_iter().map(|(_, name)| name).collect();
    let mut unknown: Vec<UnknownVar> = vars
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("ORBITER_"))
        .filter(|k| !known.contains(k) && !OTHER_TOOLS_VARS.contains(&k.as_str()))
        .map(|var| {
            let did_you_mean = known
                .iter()
                .map(|name| (edit_distance(&var, name), name))
                .filter(|(d, _)| *d <= 3)
                .min()
                .map(|(_, name)| name.clone());
            UnknownVar { var, did_you_mean }
        })
        .collect();
    unknown.sort_by(|a, b| a.var.cmp(&b.var));
    unknown
}

/// Levenshtein distance (for "did you mean"); names are short.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.mllp.addr.to_string(), "0.0.0.0:2575");
        assert_eq!(c.http.addr.to_string(), "0.0.0.0:5001");
        assert_eq!(c.admin.addr.to_string(), "0.0.0.0:8080");
        assert_eq!(c.data_dir, PathBuf::from("data"));
        assert_eq!(c.mllp.max_message_bytes, 16 * 1024 * 1024);
        assert!(c.cdr.url.is_none());
    }

    #[test]
    fn environment_overrides_every_contract_variable() {
        let c = Config::load(
            None,
            env(&[
                ("ORBITER_DATA_DIR", "/var/lib/orbiter"),
                ("ORBITER_MLLP_ADDR", "127.0.0.1:12575"),
                ("ORBITER_HTTP_ADDR", "127.0.0.1:15001"),
                ("ORBITER_ADMIN_ADDR", "127.0.0.1:18080"),
                ("ORBITER_ADMIN_TOKEN", "s3cret"),
                ("ORBITER_CDR_URL", "http://127.0.0.1:9/fhir"),
                ("ORBITER_CDR_TOKEN", "cdr-s3cret"),
                ("ORBITER_CHANNELS_DIR", "/etc/orbiter/channels"),
                ("ORBITER_SCRIPTS_DIR", "/etc/orbiter/scripts"),
                ("ORBITER_LOG", "debug"),
                ("ORBITER_MLLP_MAX_MESSAGE_BYTES", "1024"),
                ("ORBITER_JOURNAL_FSYNC", "false"),
                ("ORBITER_CDR_USERNAME", "orbiter"),
                ("ORBITER_CDR_PASSWORD", "pw"),
            ]),
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/orbiter"));
        assert_eq!(c.mllp.addr.port(), 12575);
        assert_eq!(c.http.addr.port(), 15001);
        assert_eq!(c.admin.addr.port(), 18080);
        assert_eq!(c.admin.token.as_deref(), Some("s3cret"));
        assert_eq!(c.cdr.url.as_deref(), Some("http://127.0.0.1:9/fhir"));
        assert_eq!(c.cdr.token.as_deref(), Some("cdr-s3cret"));
        assert_eq!(c.channels_dir, PathBuf::from("/etc/orbiter/channels"));
        assert_eq!(c.scripts_dir, PathBuf::from("/etc/orbiter/scripts"));
        assert_eq!(c.log, "debug");
        assert_eq!(c.mllp.max_message_bytes, 1024);
        assert!(!c.journal.fsync);
        assert_eq!(c.cdr.username.as_deref(), Some("orbiter"));
        assert_eq!(c.cdr.password.as_deref(), Some("pw"));
    }

    #[test]
    fn client_certificates_without_tls_are_refused() {
        for listener in ["MLLP", "HTTP", "ADMIN"] {
            let var = format!("ORBITER_{listener}_TLS_CLIENT_CA");
            let err = Config::load(None, env(&[(var.as_str(), "/etc/ca.pem")])).unwrap_err();
            let name = listener.to_lowercase();
            assert!(
                err.to_string()
                    .contains(&format!("{name}.tls.client_ca is set")),
                "{err}"
            );
        }
        let half = Config::load(None, env(&[("ORBITER_HTTP_TLS_CERT", "/etc/c.pem")]));
        assert!(half
            .unwrap_err()
            .to_string()
            .contains("http.tls needs both"));
        let whole = env(&[
            ("ORBITER_HTTP_TLS_CERT", "/etc/c.pem"),
            ("ORBITER_HTTP_TLS_KEY", "/etc/k.pem"),
            ("ORBITER_HTTP_TLS_CLIENT_CA", "/etc/ca.pem"),
        ]);
        assert!(Config::load(None, whole).is_ok());
    }

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orbiter.toml");
        std::fs::write(
            &path,
            "data_dir = \"/srv/o\"\n[mllp]\naddr = \"127.0.0.1:3000\"\nidle_timeout_secs = 5\n",
        )
        .unwrap();
        let c = Config::load(Some(&path), env(&[("ORBITER_MLLP_ADDR", "127.0.0.1:4000")])).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/o"));
        assert_eq!(c.mllp.addr.port(), 4000);
        assert_eq!(c.mllp.idle_timeout_secs, 5);
    }

    #[test]
    fn a_log_filter_that_does_not_parse_is_refused_naming_where_it_came_from() {
        let err = Config::load(None, env(&[("ORBITER_LOG", "verbose")])).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Env { var, .. } if var == "ORBITER_LOG"),
            "{err}"
        );
        assert!(
            err.to_string().contains("`verbose` is not a level"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orbiter.toml");
        std::fs::write(&path, "log = \"warn,orbiter=dbug\"\n").unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err();
        assert!(matches!(&err, ConfigError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("key `log`"), "{err}");
        // The variable wins over the file, and a good one is taken.
        let c = Config::load(Some(&path), env(&[("ORBITER_LOG", "info,orbiter=debug")])).unwrap();
        assert_eq!(c.log, "info,orbiter=debug");
    }

    #[test]
    fn script_limits_come_from_the_file_and_the_environment() {
        let defaults = Config::load(None, env(&[])).unwrap().script;
        assert_eq!(defaults, crate::script::ScriptLimits::default());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orbiter.toml");
        std::fs::write(
            &path,
            "[script]
max_operations = 10
time_budget = \"2s\"\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&path),
            env(&[
                ("ORBITER_SCRIPT_MAX_OPERATIONS", "1000"),
                ("ORBITER_SCRIPT_INLINE_SLICE", "500us"),
                ("ORBITER_SCRIPT_MAX_CALL_LEVELS", "8"),
            ]),
        )
        .unwrap();
        assert_eq!(c.script.max_operations, 1000);
        assert_eq!(c.script.max_call_levels, 8);
        assert_eq!(c.script.time_budget, Duration::from_secs(2));
        assert_eq!(c.script.inline_slice, Duration::from_micros(500));
        // A bare number is milliseconds, as in the file.
        let c = Config::load(None, env(&[("ORBITER_SCRIPT_TIME_BUDGET", "1500")])).unwrap();
        assert_eq!(c.script.time_budget, Duration::from_millis(1500));
    }

    #[test]
    fn processing_ids_from_the_file_and_the_environment() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.hl7.processing_ids, ["P", "D", "T"]);
        let c = Config::load(None, env(&[("ORBITER_HL7_PROCESSING_IDS", "P")])).unwrap();
        assert_eq!(c.hl7.processing_ids, ["P"]);
        let c = Config::load(None, env(&[("ORBITER_HL7_PROCESSING_IDS", " P, T ")])).unwrap();
        assert_eq!(c.hl7.processing_ids, ["P", "T"]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orbiter.toml");
        std::fs::write(&path, "[hl7]\nprocessing_ids = [\"P\", \"D\"]\n").unwrap();
        let c = Config::load(Some(&path), env(&[])).unwrap();
        assert_eq!(c.hl7.processing_ids, ["P", "D"]);
        for bad in ["Z", ""] {
            let err = Config::load(None, env(&[("ORBITER_HL7_PROCESSING_IDS", bad)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("hl7.processing_ids"), "{err}");
        }
        // The other list key still takes its comma-separated form.
        let c = Config::load(
            None,
            env(&[("ORBITER_RETENTION_STATUSES", "delivered,failed")]),
        )
        .unwrap();
        assert_eq!(c.retention.statuses.len(), 2);
    }

    #[test]
    fn unknown_keys_and_secrets_in_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orbiter.toml");
        std::fs::write(&path, "[mllp]\nadress = \"127.0.0.1:3000\"\n").unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(err.contains("adress"), "{err}");
        for secret in [
            "[admin]\ntoken = \"oops\"\n",
            "[cdr]\npassword = \"oops\"\n",
        ] {
            std::fs::write(&path, secret).unwrap();
            let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
            assert!(err.contains("secret"), "{err}");
        }
    }

    #[test]
    fn bad_environment_values_name_the_variable() {
        // Caught while converting (a number expected), and only when the config is built
        // (an address, a negative number, an unknown enum value): both name the variable.
        for (var, value) in [
            ("ORBITER_MLLP_IDLE_TIMEOUT_SECS", "soon"),
            ("ORBITER_MLLP_ADDR", "foo"),
            ("ORBITER_CDR_TIMEOUT_SECS", "-1"),
            ("ORBITER_MLLP_ACK_MODE", "later"),
        ] {
            let err = Config::load(
                None,
                env(&[("ORBITER_ADMIN_ADDR", "127.0.0.1:1"), (var, value)]),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(var), "{err}");
        }
    }

    #[test]
    fn bad_file_values_name_the_line_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orbiter.toml");
        std::fs::write(
            &path,
            "[http]\naddr = \"127.0.0.1:1\"\n[mllp]\naddr = \"nohost:3000\"\n",
        )
        .unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(err.contains("line 4") && err.contains("nohost"), "{err}");
        std::fs::write(&path, "[mllp]\n\nadress = \"127.0.0.1:3000\"\n").unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("adress"), "{err}");
    }

    #[test]
    fn a_missing_config_file_says_so_once() {
        let err = Config::load(Some(Path::new("/nonexistent/orbiter.toml")), env(&[])).unwrap_err();
        let text = format!("{:#}", anyhow::Error::from(err));
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
    }

    #[test]
    fn unknown_variables_are_reported_with_the_likely_name() {
        let unknown = unknown_env_vars(env(&[
            ("ORBITER_MLLP_ADRR", "127.0.0.1:1"),
            ("ORBITER_MLLP_ADDR", "127.0.0.1:1"),
            ("ORBITER_ADMIN_TOKEN", "t"),
            ("ORBITER_CDR_PASSWORD", "p"),
            ("ORBITER_SCRIPT_TIME_BUDGET", "1s"),
            ("ORBITER_API_URL", "http://x"),
            ("ORBITER_SOMETHING_ELSE", "1"),
            ("PATH", "/bin"),
        ]));
        assert_eq!(
            unknown,
            vec![
                UnknownVar {
                    var: "ORBITER_MLLP_ADRR".into(),
                    did_you_mean: Some("ORBITER_MLLP_ADDR".into())
                },
                UnknownVar {
                    var: "ORBITER_SOMETHING_ELSE".into(),
                    did_you_mean: None
                },
            ]
        );
        assert!(unknown[0]
            .to_string()
            .contains("did you mean ORBITER_MLLP_ADDR"));
    }
}
