//! The CDR's error type and its OperationOutcome form.
//!
//! Every failure a FHIR client can see is one [`CdrError`] variant, and each variant knows its
//! HTTP status and its OperationOutcome issue code. Handlers never build error bodies by hand, so
//! a 412 from a REST update and a 412 from a transaction entry look the same.

use serde_json::{json, Value};

/// One OperationOutcome issue: what is wrong and, when known, where (a FHIRPath-like expression
/// such as `Patient.birthDate` or `Bundle.entry[2].request.url`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// FHIR IssueType code (`structure`, `value`, `required`, `invalid`, `code-invalid`...).
    pub code: &'static str,
    /// Human-readable explanation, shown as `diagnostics`.
    pub diagnostics: String,
    /// Where the problem is, shown as `expression`.
    pub expression: Option<String>,
}

impl Issue {
    /// An issue at `expression`.
    pub fn at(
        code: &'static str,
        expression: impl Into<String>,
        diagnostics: impl Into<String>,
    ) -> Issue {
        Issue {
            code,
            diagnostics: diagnostics.into(),
            expression: Some(expression.into()),
        }
    }
}

/// Everything that can go wrong in the CDR, with the HTTP status a FHIR client expects.
#[derive(Debug, thiserror::Error)]
pub enum CdrError {
    /// 400: the request cannot be understood (bad URL, bad search parameter, not a Bundle...).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// 400: the body is not a well-formed FHIR R4 resource (shape, formats, ids, references).
    #[error("invalid resource: {}", summary(.0))]
    Invalid(Vec<Issue>),
    /// 422: the resource parses but breaks an R4 rule (missing required element, code outside a
    /// required value set, a period that ends before it starts).
    #[error("unprocessable resource: {}", summary(.0))]
    Unprocessable(Vec<Issue>),
    /// 404: unknown resource type, or no resource (or version) with that id.
    #[error("not found: {0}")]
    NotFound(String),
    /// 405: the interaction is not supported on that URL.
    #[error("method not allowed: {0}")]
    MethodNotAllowed(String),
    /// 406: a format other than JSON was asked for with `_format`.
    #[error("not acceptable: {0}")]
    NotAcceptable(String),
    /// 409: a conflicting write.
    #[error("conflict: {0}")]
    Conflict(String),
    /// 410: the resource was deleted.
    #[error("gone: {0}")]
    Gone(String),
    /// 412: `If-Match` did not match, or a conditional operation matched several resources.
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    /// 413: the body is larger than the server accepts.
    #[error("payload too large: {0}")]
    TooLarge(String),
    /// 415: the body is not JSON.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// 500: sled failed.
    #[error("storage error: {0}")]
    Storage(#[from] sled::Error),
    /// 500: a file operation failed (opening the store, fsync).
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// 503: writes stopped after a commit failed half way; they go again once sled is reopened
    /// (on its own, once the disk has room), which completes that commit.
    #[error("the CDR takes no writes for now (a write failed half way, e.g. on a full disk); it writes again on its own once there is room")]
    Halted,
    /// 503: the store is being reopened after a failed write; a moment later it answers again.
    #[error("the CDR is reopening its store after a failed write; try again in a moment")]
    Reopening,
    /// 500: stored data could not be decoded (corruption or a bug).
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// 500: processing stopped on a bug (a panic), caught so that it fails one request.
    #[error("internal error: {0}")]
    Internal(String),
    /// An error in one entry of a batch or transaction Bundle; the status is the entry's.
    #[error("Bundle.entry[{index}]: {source}")]
    Entry {
        /// The entry's position in the request Bundle.
        index: usize,
        /// What went wrong with it.
        source: Box<CdrError>,
    },
}

fn summary(issues: &[Issue]) -> String {
    let mut parts: Vec<String> = issues
        .iter()
        .take(3)
        .map(|i| match &i.expression {
            Some(e) => format!("{e}: {}", i.diagnostics),
            None => i.diagnostics.clone(),
        })
        .collect();
    if issues.len() > 3 {
        parts.push(format!("and {} more", issues.len() - 3));
    }
    parts.join("; ")
}

impl CdrError {
    /// The HTTP status a FHIR client gets for this error.
    pub fn status(&self) -> u16 {
        match self {
            CdrError::BadRequest(_) | CdrError::Invalid(_) => 400,
            CdrError::NotFound(_) => 404,
            CdrError::MethodNotAllowed(_) => 405,
            CdrError::NotAcceptable(_) => 406,
            CdrError::Conflict(_) => 409,
            CdrError::Gone(_) => 410,
            CdrError::PreconditionFailed(_) => 412,
            CdrError::TooLarge(_) => 413,
            CdrError::UnsupportedMediaType(_) => 415,
            CdrError::Unprocessable(_) => 422,
            CdrError::Storage(_)
            | CdrError::Io { .. }
            | CdrError::Corrupt(_)
            | CdrError::Internal(_) => 500,
            CdrError::Halted | CdrError::Reopening => 503,
            CdrError::Entry { source, .. } => source.status(),
        }
    }

    /// Wraps the error as coming from entry `index` of a Bundle.
    pub fn in_entry(self, index: usize) -> CdrError {
        match self {
            e @ CdrError::Entry { .. } => e,
            e => CdrError::Entry {
                index,
                source: Box::new(e),
            },
        }
    }

    /// The issues of this error, as they appear in its OperationOutcome.
    pub fn issues(&self) -> Vec<Issue> {
        let one = |code: &'static str, text: &str| {
            vec![Issue {
                code,
                diagnostics: text.to_string(),
                expression: None,
            }]
        };
        match self {
            CdrError::BadRequest(m) => one("invalid", m),
            CdrError::Invalid(issues) | CdrError::Unprocessable(issues) => issues.clone(),
            CdrError::NotFound(m) => one("not-found", m),
            CdrError::MethodNotAllowed(m) | CdrError::NotAcceptable(m) => one("not-supported", m),
            CdrError::UnsupportedMediaType(m) => one("not-supported", m),
            CdrError::Conflict(m) => one("conflict", m),
            CdrError::Gone(m) => one("deleted", m),
            CdrError::PreconditionFailed(m) => one("conflict", m),
            CdrError::TooLarge(m) => one("too-long", m),
            CdrError::Storage(e) => one("exception", &format!("storage error: {e}")),
            CdrError::Io { path, source } => one(
                "exception",
                &format!("I/O error on {}: {source}", path.display()),
            ),
            CdrError::Corrupt(m) => one("exception", &format!("corrupt record: {m}")),
            CdrError::Internal(m) => one("exception", &format!("internal error: {m}")),
            CdrError::Halted | CdrError::Reopening => one("transient", &self.to_string()),
            CdrError::Entry { index, source } => source
                .issues()
                .into_iter()
                .map(|mut issue| {
                    let prefix = format!("Bundle.entry[{index}]");
                    issue.expression = Some(match issue.expression.take() {
                        Some(e) if e.starts_with("Bundle.entry[") => e,
                        Some(e) => format!("{prefix}.resource.{}", strip_type(&e)),
                        None => prefix,
                    });
                    issue.diagnostics = format!("Bundle.entry[{index}]: {}", issue.diagnostics);
                    issue
                })
                .collect(),
        }
    }

    /// This error as an OperationOutcome resource.
    pub fn to_outcome(&self) -> Value {
        let issues: Vec<Value> = self
            .issues()
            .into_iter()
            .map(|i| {
                let severity = if self.status() >= 500 {
                    "fatal"
                } else {
                    "error"
                };
                issue_json(severity, &i)
            })
            .collect();
        json!({"resourceType": "OperationOutcome", "issue": issues})
    }
}

/// `Patient.name[0]` → `name[0]`: inside an entry the expression is rooted at the resource.
fn strip_type(expression: &str) -> &str {
    match expression.split_once('.') {
        Some((head, rest)) if head.chars().next().is_some_and(|c| c.is_ascii_uppercase()) => rest,
        _ => expression,
    }
}

fn issue_json(severity: &str, issue: &Issue) -> Value {
    let mut v = json!({
        "severity": severity,
        "code": issue.code,
        "diagnostics": issue.diagnostics,
    });
    if let Some(e) = &issue.expression {
        v["expression"] = json!([e]);
    }
    v
}

/// An OperationOutcome carrying one informational or warning message (successful deletes,
/// ignored search parameters).
pub fn message(severity: &str, code: &str, text: &str) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": text}]
    })
}

/// The reason phrase for the statuses the CDR uses, for `Bundle.entry.response.status`.
pub fn status_line(status: u16) -> String {
    let reason = match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        409 => "Conflict",
        410 => "Gone",
        412 => "Precondition Failed",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        _ => "Internal Server Error",
    };
    format!("{status} {reason}")
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn entry_errors_keep_the_inner_status_and_point_at_the_entry() {
        let e = CdrError::Invalid(vec![Issue::at("value", "Patient.birthDate", "bad date")])
            .in_entry(3);
        assert_eq!(e.status(), 400);
        let oo = e.to_outcome();
        assert_eq!(
            oo["issue"][0]["expression"][0],
            "Bundle.entry[3].resource.birthDate"
        );
        let e = CdrError::PreconditionFailed("x".into())
            .in_entry(1)
            .in_entry(2);
        assert_eq!(e.status(), 412);
        assert_eq!(
            e.to_outcome()["issue"][0]["expression"][0],
            "Bundle.entry[1]"
        );
    }
}
