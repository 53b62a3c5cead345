//! A channel definition as written in `channels/<name>.toml`.
//!
//! Parsed with `deny_unknown_fields` everywhere: a misspelt key is an error with file:line:col,
//! never a silently ignored setting.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ChannelError;
use crate::config::AckTiming;

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
    pub fn resolve(&self, scripts_dir: &Path) -> PathBuf {
        if self.script.is_absolute() {
            return self.script.clone();
        }
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
        if self.source.kind == SourceKind::Http && self.source.path.is_none() {
            return Err(at("[source]", "an http source needs a `path`".into()));
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
        Ok(())
    }
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
        let bad_payload =
            parse("kind = \"mediator\"\nurn = \"urn:mediator:v\"\npayload = \"pdf\"\n")
                .unwrap_err();
        assert!(bad_payload.contains("m.toml:"), "{bad_payload}");
    }
}
