//! The audit trail: every API call that changes something, and every read of a message body,
//! as an event in the journal (who, when, what, from where). Append-only: nothing in the API
//! changes or deletes an audit event.

use super::auth::Caller;
use crate::journal::Journal;

/// One thing a caller did, e.g. `("rerun", "transaction/42")` or `("read_body", "transaction/42")`.
#[derive(Debug, Clone)]
pub struct AuditAction<'a> {
    /// A short verb: `create`, `update`, `delete`, `enable`, `disable`, `reload`, `rerun`,
    /// `read_body`, `register`...
    pub action: &'a str,
    /// What it was done to: `channel/adt-to-fhir`, `transaction/42`, `client/ops`...
    pub target: &'a str,
    /// Anything worth keeping (never a message body or a secret).
    pub detail: serde_json::Value,
}

/// Records an audit event. Failures are logged, not returned: an audit write that fails must
/// not turn a successful change into an error the caller would retry.
pub fn record(journal: &Journal, caller: &Caller, what: AuditAction<'_>) {
    // Filled in by the audit work (issue 10): a journal tree of events keyed by time.
    let _ = (journal, caller, what);
}
