//! A channel definition as written in `channels/<name>.toml`.
//!
//! Parsed with `deny_unknown_fields` everywhere: a misspelt key is an error with file:line:col,
//! never a silently ignored setting.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ChannelError;
use crate::config::AckTiming;
use crate::format::Format;

/// One channel: where its messages come from, which ones it takes, what it does with them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelDef {
    /// Unique; by convention the file name without `.toml`.
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Among channels that match the same message, higher runs first (then by name).
    #[serde(default)]
    pub priority: i32,
    pub source: SourceDef,
    #[serde(default, rename = "match")]
    pub match_rules: MatchDef,
    #[serde(default)]
    pub filter: Option<ScriptRef>,
    #[serde(default)]
    pub transform: Option<ScriptRef>,
    /// Where the output goes; each destination kind is described by the delivery issue.
    #[serde(default, rename = "destination")]
    pub destinations: Vec<DestinationDef>,
    #[serde(default)]
    pub ack: AckDef,
    #[serde(default)]
    pub retry: RetryDef,
    /// How CSV flat files are read (`[csv]`: delimiter, quote, header, row size limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csv: Option<crate::format::csv::CsvOptions>,
    /// FHIR JSON input (`[fhir]`: `as_transaction` turns batch/collection Bundles into
    /// transactions before the script sees them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fhir: Option<crate::format::fhir::FhirOptions>,
    /// Journal pruning for this channel's transactions; unset keys take `[retention]` of
    /// `orbiter.toml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<crate::journal::retention::ChannelRetention>,
}

fn yes() -> bool {
    true
}

/// Which listener feeds the channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDef {
    pub kind: SourceKind,
    /// A named listener of that kind; unset means the shared one (e.g. MLLP on 2575).
    #[serde(default)]
    pub listener: Option<String>,
    /// For `http`: the path this channel owns on the ingest port.
    #[serde(default)]
    pub path: Option<String>,
    /// What arrives: `hl7v2`, `fhir`, `ccda` or `csv`. Unset: HL7 v2 on MLLP, the request's
    /// `Content-Type` over HTTP, the file extension for folders and SFTP. When set, HTTP
    /// requests of another type are refused with 415.
    #[serde(default)]
    pub format: Option<Format>,
    /// For `http`: client authentication this path requires (besides mutual TLS on the port).
    #[serde(default)]
    pub auth: Option<HttpAuthDef>,
    /// For `mllp`: the channel's own port (e.g. `"0.0.0.0:2576"`) instead of the shared one;
    /// it takes only what arrives there. Its listener is named `mllp:<addr>` and shares the
    /// `[mllp]` settings (size limit, timeouts, TLS).
    #[serde(default)]
    pub addr: Option<std::net::SocketAddr>,

    // File sources (`dir`, `sftp`): see `listen::files`. Each such channel has its own poller
    // and gets only the files of its own source (listener `dir:<channel>`, `sftp:<channel>`).
    /// The watched directory: local for `dir`, on the server for `sftp` (absolute, or relative
    /// to the login directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// File name patterns (`*` wildcard, case-insensitive); unset or empty takes every file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub glob: Vec<String>,
    /// Time between two looks at the directory (default 5000). A file is taken once its size
    /// and modification time are unchanged over two looks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_ms: Option<u64>,
    /// A suffix such as `.done`: a file is taken only once `<file><suffix>` exists (the sender
    /// writes it last), instead of waiting for its size to settle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_marker: Option<String>,
    /// What happens to a file once journaled (default `move`).
    #[serde(default, skip_serializing_if = "AfterAction::is_default")]
    pub after: AfterAction,
    /// With `after = "move"`: where journaled files go (default `processed`, under `dir`
    /// when relative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_dir: Option<String>,
    /// With `after = "move"`: where refused files go (default `error`, under `dir` when
    /// relative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_dir: Option<String>,

    // SFTP only. Secrets are never written here: the password comes from an environment
    // variable or a file named here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Default 22.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// An OpenSSH private key file (ed25519 preferred; no passphrase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The name of an environment variable holding the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// A file holding the password (e.g. a mounted Kubernetes secret); trailing newline ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// OpenSSH `known_hosts` file the server's key must be in (default `~/.ssh/known_hosts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<PathBuf>,
    /// Trust a server whose key is not in `known_hosts` yet and add it there (trust on first
    /// use). A key that differs from the recorded one is always refused. Default `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trust_unknown_host: bool,
}

/// How an HTTP client proves who it is. Secrets are named by environment variable, never
/// written in the channel file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum HttpAuthDef {
    /// `Authorization: Bearer <token>`, the token in the environment variable `token_env`.
    Bearer { token_env: String },
    /// `Authorization: Basic`, the password in the environment variable `password_env`.
    Basic { user: String, password_env: String },
}

impl SourceDef {
    /// Whether this source is the listener a message came in on. HTTP listeners are named
    /// `http:<path>` after the path the message was posted to; others by their own name, and a
    /// source without a `listener` takes the shared one of its kind.
    pub fn takes_from(&self, listener: &str) -> bool {
        match self.kind {
            SourceKind::Http => {
                listener.strip_prefix("http:").is_some()
                    && self.path.as_deref() == listener.strip_prefix("http:")
            }
            SourceKind::Mllp => match (&self.addr, &self.listener) {
                (Some(addr), _) => listener == own_mllp_listener(*addr),
                (None, Some(named)) => listener == named,
                (None, None) => {
                    listener == SHARED_MLLP_LISTENER || listener == HL7_OVER_HTTP_LISTENER
                }
            },
            _ => self.listener.as_deref().is_none_or(|l| l == listener),
        }
    }
}

/// The shared MLLP port's listener name: channels with an MLLP source and no port of their own
/// take from it.
pub const SHARED_MLLP_LISTENER: &str = "mllp";

/// HL7 v2 posted to the HTTP port's built-in `/hl7v2`: counted and shown as `http` (it did not
/// come in over MLLP), and routed like the shared MLLP port's messages (same channels, same ACK
/// policy), as the README promises.
pub const HL7_OVER_HTTP_LISTENER: &str = "http";

/// The listener name of a channel's own MLLP port.
pub fn own_mllp_listener(addr: std::net::SocketAddr) -> String {
    format!("mllp:{addr}")
}

/// What a file source does with a file once the journal has it (or refused it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfterAction {
    /// Into `processed_dir` (journaled) or `error_dir` (refused).
    #[default]
    Move,
    Delete,
    /// Left where it is; the source remembers it (by name, size and modification time) and
    /// takes it again only if it changes.
    Leave,
}

impl AfterAction {
    fn is_default(&self) -> bool {
        *self == AfterAction::default()
    }
}

impl SourceDef {
    /// True for sources that poll a directory for files.
    pub fn is_file_source(&self) -> bool {
        matches!(self.kind, SourceKind::Dir | SourceKind::Sftp)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Mllp,
    Http,
    Sftp,
    Dir,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Mllp => "mllp",
            SourceKind::Http => "http",
            SourceKind::Sftp => "sftp",
            SourceKind::Dir => "dir",
        }
    }
}

/// Match rules: every list that is set must contain a matching pattern (AND across keys, OR
/// within a list). Patterns may use `*` as a wildcard: `ADT^*`, `LAB*`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchDef {
    #[serde(default)]
    pub message_type: Vec<String>,
    #[serde(default)]
    pub sending_application: Vec<String>,
    #[serde(default)]
    pub sending_facility: Vec<String>,
    #[serde(default)]
    pub receiving_application: Vec<String>,
    #[serde(default)]
    pub receiving_facility: Vec<String>,
    #[serde(default)]
    pub version: Vec<String>,
}

/// A script, relative to the scripts directory (a leading `scripts/` is accepted too, as in
/// the examples of DESIGN.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptRef {
    pub script: PathBuf,
}

impl ScriptRef {
    /// Its path under `scripts_dir` (a definition naming an absolute path or `..` is refused
    /// when it is parsed).
    pub fn resolve(&self, scripts_dir: &Path) -> PathBuf {
        let relative = self.script.strip_prefix("scripts").unwrap_or(&self.script);
        scripts_dir.join(relative)
    }
}

/// A destination: `kind` plus the kind's own settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationDef {
    pub kind: DestinationKind,
    /// Shown in logs, metrics and the transaction; defaults to the kind.
    #[serde(default)]
    pub name: Option<String>,
    /// For `http`: the FHIR base URL; for `file`: the directory (under the data dir when
    /// relative).
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// For `mllp`: the receiver's `host:port`.
    #[serde(default)]
    pub addr: Option<String>,
    /// For `mllp`: speak TLS to the receiver, trusting the CA certificate(s) in this PEM file
    /// (under the data dir when relative); the receiver's certificate must name the host of
    /// `addr`, or `tls_name`.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// For `mllp` with `tls_ca`: the name the receiver's certificate must carry.
    #[serde(default)]
    pub tls_name: Option<String>,
    /// For `mediator`: the registered mediator's URN (`urn:mediator:...`).
    #[serde(default)]
    pub urn: Option<String>,
    /// For `mediator`: which of its endpoints, by name; unset means its first one.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// For `mediator`: what is sent, the channel's FHIR output (default) or the raw message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Payload>,
}

/// What a destination sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Payload {
    /// The transform's FHIR output, as JSON.
    Output,
    /// The message exactly as received (HL7 v2, CSV, C-CDA...).
    Raw,
}

impl DestinationDef {
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.kind.as_str().to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DestinationKind {
    Cdr,
    Http,
    Mllp,
    File,
    Mediator,
}

impl DestinationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Cdr => "cdr",
            DestinationKind::Http => "http",
            DestinationKind::Mllp => "mllp",
            DestinationKind::File => "file",
            DestinationKind::Mediator => "mediator",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckDef {
    #[serde(default = "on_commit")]
    pub mode: AckTiming,
}

fn on_commit() -> AckTiming {
    AckTiming::OnCommit
}

impl Default for AckDef {
    fn default() -> Self {
        AckDef {
            mode: AckTiming::OnCommit,
        }
    }
}

/// How a destination that is down is retried.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryDef {
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for RetryDef {
    fn default() -> Self {
        RetryDef {
            max_attempts: 20,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 300_000,
        }
    }
}

impl ChannelDef {
    /// Parses one channel file's text; errors name `file:line:col`.
    pub fn parse(file: &Path, text: &str) -> Result<ChannelDef, ChannelError> {
        let def: ChannelDef = toml::from_str(text).map_err(|e| {
            let (line, column) = e
                .span()
                .map(|span| line_col(text, span.start))
                .unwrap_or((1, 1));
            ChannelError::Definition {
                file: file.to_path_buf(),
                line,
                column,
                message: e.message().to_string(),
            }
        })?;
        def.validate(file, text)?;
        Ok(def)
    }

    fn validate(&self, file: &Path, text: &str) -> Result<(), ChannelError> {
        let at = |key: &str, message: String| {
            let offset = text.find(key).unwrap_or(0);
            let (line, column) = line_col(text, offset);
            ChannelError::Definition {
                file: file.to_path_buf(),
                line,
                column,
                message,
            }
        };
        let valid_name = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_name {
            return Err(at(
                "name",
                format!(
                    "channel name `{}` must be 1-64 letters, digits, `-` or `_`",
                    self.name
                ),
            ));
        }
        if self.source.addr.is_some() && self.source.kind != SourceKind::Mllp {
            return Err(at("addr", "only an mllp source has its own `addr`".into()));
        }
        if self.source.kind == SourceKind::Http && self.source.path.is_none() {
            return Err(at("[source]", "an http source needs a `path`".into()));
        }
        for d in &self.destinations {
            let missing = match d.kind {
                DestinationKind::Http if d.url.is_none() => {
                    Some("an http destination needs a `url`")
                }
                DestinationKind::Mllp if d.addr.is_none() => {
                    Some("an mllp destination needs an `addr` (host:port)")
                }
                _ => None,
            };
            if let Some(message) = missing {
                return Err(at("[[destination]]", message.into()));
            }
            if d.kind != DestinationKind::Mllp && (d.tls_ca.is_some() || d.tls_name.is_some()) {
                return Err(at(
                    "tls_ca",
                    "`tls_ca` and `tls_name` are for an mllp destination".into(),
                ));
            }
            if d.tls_name.is_some() && d.tls_ca.is_none() {
                return Err(at("tls_name", "`tls_name` needs `tls_ca`".into()));
            }
        }
        self.validate_file_source(&at)?;
        // Scripts come from the scripts dir only, as lookup tables and imports do: a channel
        // put through the admin API could otherwise have any file on the host read (and
        // quoted back in the syntax error).
        for (table, script) in [("filter", &self.filter), ("transform", &self.transform)] {
            let Some(script) = script else { continue };
            let outside = script.script.is_absolute()
                || script
                    .script
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)));
            if outside {
                let (line, column) = script_key_position(text, table);
                return Err(ChannelError::Definition {
                    file: file.to_path_buf(),
                    line,
                    column,
                    message: format!(
                        "[{table}] script `{}` must name a file in the scripts dir \
                         (no absolute path, no `..`)",
                        script.script.display()
                    ),
                });
            }
        }
        if self.transform.is_none() && !self.destinations.is_empty() {
            return Err(at(
                "[[destination]]",
                "destinations need a [transform] script to produce their output".into(),
            ));
        }
        for destination in &self.destinations {
            let is_mediator = destination.kind == DestinationKind::Mediator;
            if is_mediator && destination.urn.as_deref().is_none_or(str::is_empty) {
                return Err(at(
                    "mediator",
                    "a mediator destination needs the mediator's `urn`".into(),
                ));
            }
            // A URN no mediator can register under would leave every message queued until its
            // attempts run out: say so when the channel is checked.
            if let Some(urn) = destination
                .urn
                .as_deref()
                .filter(|u| is_mediator && !u.is_empty())
            {
                if !crate::mediator::registration::valid_urn(urn) {
                    return Err(at(
                        "urn",
                        format!(
                            "`{urn}` is not a mediator URN a mediator can register with: \
                             `urn:` and at least two more parts (e.g. `urn:mediator:my-validator`), \
                             no spaces, `/`, `?`, `#` or `%`"
                        ),
                    ));
                }
            }
            let mediator_keys = destination.urn.is_some()
                || destination.endpoint.is_some()
                || destination.payload.is_some();
            if !is_mediator && mediator_keys {
                return Err(at(
                    "[[destination]]",
                    format!(
                        "`urn`, `endpoint` and `payload` are for mediator destinations, not `{}`",
                        destination.kind.as_str()
                    ),
                ));
            }
        }
        for pattern in &self.match_rules.message_type {
            if pattern.is_empty() || pattern.contains(char::is_whitespace) {
                return Err(at(
                    "message_type",
                    format!("message type pattern `{pattern}` is empty or has spaces"),
                ));
            }
        }
        if self.retry.initial_backoff_ms == 0
            || self.retry.max_backoff_ms < self.retry.initial_backoff_ms
        {
            return Err(at(
                "[retry]",
                "retry backoffs must be positive, max_backoff_ms >= initial_backoff_ms".into(),
            ));
        }
        if let Some(statuses) = self.retention.as_ref().and_then(|r| r.statuses.as_ref()) {
            crate::journal::retention::validate_statuses(statuses)
                .map_err(|e| at("[retention]", e.to_string()))?;
        }
        Ok(())
    }
}

impl ChannelDef {
    /// The listener name a channel's messages carry. File sources are one per channel, so
    /// their listener is named after it; the others use their `listener` key (or the shared
    /// listener of their kind).
    pub fn listener_name(&self) -> Option<String> {
        match self.source.kind {
            SourceKind::Dir | SourceKind::Sftp => {
                Some(format!("{}:{}", self.source.kind.as_str(), self.name))
            }
            SourceKind::Mllp | SourceKind::Http => self.source.listener.clone(),
        }
    }

    /// Whether messages from `listener` (of this channel's source kind) are this channel's:
    /// the same test as [`ChannelDef::listener_name`], without allocating on the MLLP path.
    pub fn takes_from(&self, listener: &str) -> bool {
        match self.source.kind {
            SourceKind::Dir | SourceKind::Sftp => {
                listener
                    .strip_prefix(self.source.kind.as_str())
                    .and_then(|rest| rest.strip_prefix(':'))
                    == Some(self.name.as_str())
            }
            SourceKind::Mllp | SourceKind::Http => self.source.takes_from(listener),
        }
    }

    fn validate_file_source(
        &self,
        at: &dyn Fn(&str, String) -> ChannelError,
    ) -> Result<(), ChannelError> {
        let source = &self.source;
        let kind = source.kind.as_str();
        let file_keys = [
            ("dir", source.dir.is_some()),
            ("glob", !source.glob.is_empty()),
            ("poll_ms", source.poll_ms.is_some()),
            ("done_marker", source.done_marker.is_some()),
            ("after", source.after != AfterAction::Move),
            ("processed_dir", source.processed_dir.is_some()),
            ("error_dir", source.error_dir.is_some()),
        ];
        let sftp_keys = [
            ("host", source.host.is_some()),
            ("port", source.port.is_some()),
            ("user", source.user.is_some()),
            ("key_file", source.key_file.is_some()),
            ("password_env", source.password_env.is_some()),
            ("password_file", source.password_file.is_some()),
            ("known_hosts", source.known_hosts.is_some()),
            ("trust_unknown_host", source.trust_unknown_host),
        ];
        // A key that the kind ignores is as likely a mistake as a misspelt one.
        let misplaced =
            |keys: &[(&'static str, bool)]| keys.iter().find(|(_, set)| *set).map(|(k, _)| *k);
        if !source.is_file_source() {
            if let Some(key) = misplaced(&file_keys).or(misplaced(&sftp_keys)) {
                return Err(at(
                    key,
                    format!("`{key}` is for dir and sftp sources, not {kind}"),
                ));
            }
            return Ok(());
        }
        if source.kind == SourceKind::Dir {
            if let Some(key) = misplaced(&sftp_keys) {
                return Err(at(key, format!("`{key}` is for sftp sources, not dir")));
            }
        }
        if source.listener.is_some() {
            return Err(at(
                "listener",
                format!(
                    "a {kind} source is its own listener (`{kind}:{}`); remove `listener`",
                    self.name
                ),
            ));
        }
        if source.dir.as_deref().is_none_or(str::is_empty) {
            return Err(at("[source]", format!("a {kind} source needs a `dir`")));
        }
        if source.poll_ms == Some(0) {
            return Err(at("poll_ms", "`poll_ms` must be positive".into()));
        }
        if source.done_marker.as_deref() == Some("") {
            return Err(at("done_marker", "`done_marker` must not be empty".into()));
        }
        for pattern in &source.glob {
            if pattern.is_empty() || pattern.contains('/') {
                return Err(at(
                    "glob",
                    format!("glob `{pattern}` must be a non-empty file name pattern (no `/`)"),
                ));
            }
        }
        if source.kind == SourceKind::Sftp {
            if source.host.as_deref().is_none_or(str::is_empty) {
                return Err(at("[source]", "an sftp source needs a `host`".into()));
            }
            if source.user.as_deref().is_none_or(str::is_empty) {
                return Err(at("[source]", "an sftp source needs a `user`".into()));
            }
            let auths = [
                source.key_file.is_some(),
                source.password_env.is_some(),
                source.password_file.is_some(),
            ];
            match auths.iter().filter(|set| **set).count() {
                1 => {}
                0 => {
                    return Err(at(
                        "[source]",
                        "an sftp source needs one of `key_file`, `password_env`, `password_file` \
                         (passwords are never written in channel files)"
                            .into(),
                    ))
                }
                _ => {
                    return Err(at(
                        "key_file",
                        "set only one of `key_file`, `password_env`, `password_file`".into(),
                    ))
                }
            }
        }
        Ok(())
    }
}

/// Where `[<table>] script = ...` is written, as 1-based line and column of the `script` key
/// (`table` is `filter` or `transform`); line 1, column 1 if the text does not say.
pub fn script_key_position(text: &str, table: &str) -> (usize, usize) {
    // Only to locate the value: the definition has been parsed (and validated) already.
    #[derive(Deserialize)]
    struct Located {
        script: toml::Spanned<toml::Value>,
    }
    #[derive(Deserialize)]
    struct Tables {
        filter: Option<Located>,
        transform: Option<Located>,
    }
    let Ok(tables) = toml::from_str::<Tables>(text) else {
        return (1, 1);
    };
    let located = match table {
        "filter" => tables.filter,
        _ => tables.transform,
    };
    let Some(value_start) = located.map(|l| l.script.span().start) else {
        return (1, 1);
    };
    // Point at the key when it is on the value's line (`script = "..."`), else at the value.
    let line_start = text[..value_start].rfind('\n').map_or(0, |i| i + 1);
    let offset = text[line_start..value_start]
        .find("script")
        .map_or(value_start, |i| line_start + i);
    line_col(text, offset)
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map(|i| offset - i).unwrap_or(offset + 1);
    (line, column)
}

#[cfg(test)]
mod mediator_destination_tests {
    use super::*;

    const HEAD: &str =
        "name = \"m\"\n[source]\nkind = \"mllp\"\n[transform]\nscript = \"t.rhai\"\n";

    fn parse(destination: &str) -> Result<ChannelDef, String> {
        let text = format!("{HEAD}[[destination]]\n{destination}");
        ChannelDef::parse(Path::new("m.toml"), &text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_mediator_destination_takes_urn_endpoint_and_payload() {
        let def = parse(
            "kind = \"mediator\"\nurn = \"urn:mediator:v\"\nendpoint = \"validate\"\npayload = \"raw\"\n",
        )
        .unwrap();
        let d = &def.destinations[0];
        assert_eq!(d.urn.as_deref(), Some("urn:mediator:v"));
        assert_eq!(d.endpoint.as_deref(), Some("validate"));
        assert_eq!(d.payload, Some(Payload::Raw));
        assert_eq!(
            parse("kind = \"mediator\"\nurn = \"urn:mediator:v\"\n")
                .unwrap()
                .destinations[0]
                .payload,
            None
        );
    }

    #[test]
    fn mediator_keys_are_checked() {
        let missing = parse("kind = \"mediator\"\n").unwrap_err();
        assert!(missing.contains("needs the mediator's `urn`"), "{missing}");
        let misplaced = parse("kind = \"cdr\"\nurn = \"urn:mediator:v\"\n").unwrap_err();
        assert!(
            misplaced.contains("for mediator destinations"),
            "{misplaced}"
        );
        let not_a_urn = parse("kind = \"mediator\"\nurn = \"fhir-validator\"\n").unwrap_err();
        assert!(
            not_a_urn.contains("m.toml:") && not_a_urn.contains("not a mediator URN"),
            "{not_a_urn}"
        );
        let bad_payload =
            parse("kind = \"mediator\"\nurn = \"urn:mediator:v\"\npayload = \"pdf\"\n")
                .unwrap_err();
        assert!(bad_payload.contains("m.toml:"), "{bad_payload}");
    }
}
