//! OpenHIM's mediator response (`Content-Type: application/json+openhim`): what the mediator
//! answered, the sub-requests it made (orchestrations), and its own verdict.
//!
//! Parsed as leniently as OpenHIM core reads it, so that a mediator written for OpenHIM works
//! unchanged: `status` is optional, `response.status` may be a numeric string, an orchestration
//! may carry an `error` instead of a response, and a top-level `error` asks for a retry.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// The content type that marks a mediator response.
pub const CONTENT_TYPE: &str = "application/json+openhim";

/// The whole document, as OpenHIM defines it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediatorResponse {
    #[serde(rename = "x-mediator-urn")]
    pub mediator_urn: String,
    /// Optional in OpenHIM: without it, the response's HTTP status decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<MediatorStatus>,
    pub response: Exchange,
    #[serde(default)]
    pub orchestrations: Vec<Orchestration>,
    #[serde(default)]
    pub properties: Map<String, Value>,
    /// OpenHIM's `{"message": ..., "stack": ...}`: an internal error (typically its upstream was not
    /// reachable); OpenHIM retries such a transaction, and so does Orbiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    /// Anything else a mediator adds (OpenHIM ignores it too), kept on the step.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl MediatorResponse {
    /// The `error`'s message (OpenHIM sends `{"message", "stack"}`; a bare string is taken too).
    pub fn error_message(&self) -> Option<String> {
        self.error.as_ref().map(|e| match e {
            Value::Object(details) => details
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| e.to_string()),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}

/// The mediator's own verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MediatorStatus {
    Processing,
    Failed,
    Completed,
    Successful,
    #[serde(rename = "Completed with error(s)")]
    CompletedWithErrors,
}

/// A request or a response inside the document. OpenHIM puts bodies in as strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    /// HTTP status (responses only); OpenHIM also takes it as a string (`"200"`).
    #[serde(
        default,
        deserialize_with = "status_number_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn status_number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    let bad = || serde::de::Error::custom("response status must be an HTTP status code");
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .map(Some)
            .ok_or_else(bad),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

/// One sub-request the mediator made. As in OpenHIM, only the name is required: a call that
/// never got an answer has an `error` and no `response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Orchestration {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Exchange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Exchange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    /// `group` and anything else, kept as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
