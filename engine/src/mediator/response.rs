//! OpenHIM's mediator response (`Content-Type: application/json+openhim`): what the mediator
//! answered, the sub-requests it made (orchestrations), and its own verdict.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The content type that marks a mediator response.
pub const CONTENT_TYPE: &str = "application/json+openhim";

/// The whole document, as OpenHIM defines it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediatorResponse {
    #[serde(rename = "x-mediator-urn")]
    pub mediator_urn: String,
    pub status: MediatorStatus,
    pub response: Exchange,
    #[serde(default)]
    pub orchestrations: Vec<Orchestration>,
    #[serde(default)]
    pub properties: Map<String, Value>,
    /// Anything else a mediator adds (OpenHIM ignores it too), kept on the step.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
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
    /// HTTP status (responses only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// One sub-request the mediator made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Orchestration {
    pub name: String,
    pub request: Exchange,
    pub response: Exchange,
}
