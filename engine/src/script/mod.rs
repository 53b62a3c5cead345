//! Rhai scripts that filter HL7 v2 messages and transform them into FHIR R4.
//!
//! Channel authors write the mapping; the engine must survive whatever they write. So a script
//! runs in a sandbox (every Rhai limit set explicitly, a wall-clock budget, a stack guard, no file
//! or network access, `import` limited to `scripts/lib/`), `print`/`debug` go into the
//! transaction's log instead of stdout, and every failure comes back as a [`ScriptError`] that
//! names the file, line and column. The script API itself is documented for authors in
//! `scripts/README.md`.
//!
//! Layout, one file per concept:
//! - [`host`]: [`ScriptHost`], the Engine (one per worker thread), compile, run filter/transform;
//! - [`limits`]: [`ScriptLimits`], the sandbox settings channels may tune;
//! - [`resolver`]: the module resolver that only sees `scripts/lib/*.rhai`;
//! - [`state`]: per-run state (logs, deadline, stack guard, skip/reject) kept in a thread-local;
//! - [`message`]: the HL7 message, segment, field and group types scripts read and rewrite;
//! - [`fhir`]: bundles, entries, conditional requests, references, deterministic ids;
//! - [`v2`]: HL7 v2 data types (CX, XPN, XAD, XTN, CWE, XCN) → FHIR data types, natively;
//! - [`v2fhir`]: `base64` and `hl7_add_minutes`, small helpers the mapping library needs;
//! - [`dates`]: HL7 `DTM` → FHIR `dateTime` / `date` / `instant`, keeping precision and offset;
//! - [`lookup`]: small CSV/JSON code tables shipped beside a script, loaded once per host;
//! - [`util`]: hashing, logging, `skip`/`reject`, small string helpers;
//! - [`xml`]: XML documents (C-CDA) as `XmlNode` with path helpers;
//! - [`json`]: script values → `serde_json::Value` (pruning empty FHIR elements) and back;
//! - [`output`]: the transform's value → a transaction Bundle;
//! - [`error`]: [`ScriptError`] with file:line:col and what kind of failure it was.

pub mod dates;
pub mod error;
pub mod fhir;
pub mod host;
pub mod json;
pub mod limits;
pub mod lookup;
pub mod message;
pub mod output;
pub mod resolver;
pub mod sort;
pub mod state;
pub mod util;
pub mod v2;
pub mod v2fhir;
pub mod xml;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use error::{LimitKind, ScriptError, ScriptErrorKind};
pub use host::{Script, ScriptHost, ScriptInput};
pub use limits::ScriptLimits;

/// What the engine tells a script run about where it runs.
#[derive(Debug, Clone, Default)]
pub struct ScriptContext {
    /// The channel name, visible to scripts as `ctx.channel` (and handy in logs).
    pub channel: String,
    /// The directory of the script: `lookup("table.csv", key)` reads its tables here.
    pub script_dir: PathBuf,
    /// The journal transaction, visible as `ctx.transaction_id` (`()` when trying a sample).
    pub transaction_id: Option<u64>,
    /// The output is delivered, so destinations want it as a `serde_json::Value` too. When
    /// not, a `transaction()` writes its entries as JSON text only, which is all the journal
    /// keeps (building the tree and serializing it was ~15% of a message's instructions).
    pub output_tree: bool,
}

/// Result of a filter script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterOutcome {
    /// `true`: the message goes on to the transform.
    pub keep: bool,
    /// Why it was filtered, when the script called `skip("reason")`.
    pub reason: Option<String>,
    /// `print`, `debug` and `log` lines, in order, for the transaction log.
    pub logs: Vec<String>,
}

/// Result of a transform script.
#[derive(Debug, Clone, PartialEq)]
pub enum TransformOutcome {
    /// The script produced output: a FHIR transaction Bundle (see [`output`] for how a resource
    /// or an array of resources is wrapped), or a JSON string when the script returned text or
    /// a rewritten message (`msg.encode()`) for HL7 destinations.
    Output {
        /// The output as JSON text, empty FHIR elements pruned ([`StepOutput::to_value`]
        /// parses it).
        output: crate::journal::StepOutput,
        /// The same output as a tree, when it was built anyway: always with
        /// [`ScriptContext::output_tree`], and for outputs other than a `transaction()`.
        tree: Option<serde_json::Value>,
        /// `print`, `debug` and `log` lines.
        logs: Vec<String>,
    },
    /// The script called `skip("reason")`: the message is filtered out, not an error.
    Skip {
        /// The reason given (empty when `skip()` had none).
        reason: String,
        /// `print`, `debug` and `log` lines.
        logs: Vec<String>,
    },
    /// The script called `reject("reason")`: the sender gets an AE acknowledgement.
    Reject {
        /// The reason given, for the ACK's MSA-3/ERR and the transaction.
        reason: String,
        /// `print`, `debug` and `log` lines.
        logs: Vec<String>,
    },
}

impl TransformOutcome {
    /// The log lines, whatever the outcome.
    pub fn logs(&self) -> &[String] {
        match self {
            TransformOutcome::Output { logs, .. }
            | TransformOutcome::Skip { logs, .. }
            | TransformOutcome::Reject { logs, .. } => logs,
        }
    }
}

/// `path` as `<root's name>/<path under root>` (`scripts/lib/codes.rhai`), or as given when it
/// is not under `root`: how the running engine names scripts in errors, which reach senders in
/// AE acknowledgements and so must not show the server's directories.
pub fn label_under(path: &std::path::Path, root: &std::path::Path) -> String {
    match path.strip_prefix(root) {
        Ok(rel) => match root.file_name() {
            Some(name) => std::path::Path::new(name).join(rel).display().to_string(),
            None => rel.display().to_string(),
        },
        Err(_) => path.display().to_string(),
    }
}

#[cfg(test)]
mod label_tests {
    use super::label_under;
    use std::path::Path;

    #[test]
    fn scripts_are_named_from_their_dir_on() {
        let root = Path::new("/srv/orbiter/scripts");
        assert_eq!(
            label_under(&root.join("lib/codes.rhai"), root),
            "scripts/lib/codes.rhai"
        );
        assert_eq!(
            label_under(Path::new("/elsewhere/x.rhai"), root),
            "/elsewhere/x.rhai"
        );
        assert_eq!(
            label_under(Path::new("scripts/x.rhai"), Path::new("scripts")),
            "scripts/x.rhai"
        );
    }
}
