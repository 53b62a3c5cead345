//! What the journal stores about one transaction (one received message).

use serde::{Deserialize, Serialize};

/// A transaction's id: sled's monotonic id generator, so ids also sort by arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TxId(pub u64);

impl TxId {
    pub fn to_key(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    pub fn from_key(key: &[u8]) -> Option<TxId> {
        Some(TxId(u64::from_be_bytes(key.get(..8)?.try_into().ok()?)))
    }
}

impl std::fmt::Display for TxId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a transaction is in its life (DESIGN.md: statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Received,
    Filtered,
    Processing,
    Delivered,
    Queued,
    Failed,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Received,
        Status::Filtered,
        Status::Processing,
        Status::Delivered,
        Status::Queued,
        Status::Failed,
    ];

    /// One byte for the status index key.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Work not finished: never pruned.
    pub fn in_flight(self) -> bool {
        matches!(self, Status::Received | Status::Processing | Status::Queued)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Received => "received",
            Status::Filtered => "filtered",
            Status::Processing => "processing",
            Status::Delivered => "delivered",
            Status::Queued => "queued",
            Status::Failed => "failed",
        }
    }
}

impl std::str::FromStr for Status {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown status `{s}`"))
    }
}

/// One change of status, with when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEvent {
    /// Unix time in milliseconds.
    pub at_ms: i64,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a listener knows about a message when it hands it to the journal. No PHI here beyond
/// what identifies the message (control id, type, sender), so it can be listed without the body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageMeta {
    /// Listener name, e.g. `mllp`.
    pub listener: String,
    /// Remote address (and client certificate subject, when mutual TLS names one).
    pub peer: Option<String>,
    pub control_id: Option<String>,
    /// `ADT^A01` form.
    pub message_type: Option<String>,
    pub sending_application: Option<String>,
    pub sending_facility: Option<String>,
    pub receiving_application: Option<String>,
    pub receiving_facility: Option<String>,
    pub version: Option<String>,
    /// A hash of the patient's first identifier (PID-3): deliveries for one patient keep their
    /// order. Hashed so that no identifier spreads into listings and logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_key: Option<String>,
    /// What the raw bytes are (HL7 v2 unless said otherwise).
    #[serde(default, skip_serializing_if = "is_hl7v2")]
    pub format: crate::format::Format,
    /// The file (or HTTP path) a document arrived as; for a CSV row, `file.csv#line`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

fn is_hl7v2(format: &crate::format::Format) -> bool {
    *format == crate::format::Format::Hl7v2
}

/// A channel a transaction was routed to, and the revision that ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRun {
    pub name: String,
    pub revision: String,
}

/// What one step of the pipeline did: a filter, a transform or a delivery, for one channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub channel: String,
    pub revision: String,
    pub kind: StepKind,
    pub at_ms: i64,
    pub ok: bool,
    /// The step's output: the FHIR produced by a transform, the response of a destination.
    /// Kept as JSON text: the transform worker writes it once, and neither the pipeline nor the
    /// journal writer holds (or copies) the parsed tree for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<StepOutput>,
    /// `log()`/`print` lines of a script.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<String>,
    /// Why it failed (a script error with file:line:col, a destination's answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For deliveries: which destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
}

/// A step's output as JSON text (see [`Step::output`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StepOutput(Box<serde_json::value::RawValue>);

impl StepOutput {
    /// `value` written as JSON.
    pub fn of(value: &serde_json::Value) -> StepOutput {
        StepOutput(serde_json::value::to_raw_value(value).expect("a JSON value serializes"))
    }

    /// JSON text written already.
    pub fn from_raw(json: Box<serde_json::value::RawValue>) -> StepOutput {
        StepOutput(json)
    }

    /// The JSON text.
    pub fn json(&self) -> &str {
        self.0.get()
    }

    /// The output parsed.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.0.get()).expect("a step output holds JSON")
    }
}

/// The same JSON text (what was written is compared, not what it means).
impl PartialEq for StepOutput {
    fn eq(&self, other: &StepOutput) -> bool {
        self.json() == other.json()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    Filter,
    Transform,
    Deliver,
}

/// A new message for the journal: its metadata, raw bytes, and the status it starts in.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub meta: MessageMeta,
    /// The channels it is routed to (empty: none took it).
    pub channels: Vec<ChannelRun>,
    pub raw: bytes::Bytes,
    /// `received` for accepted messages, `failed` for input that was refused (kept for audit).
    pub status: Status,
    /// Why it failed, for refused input.
    pub error: Option<String>,
    /// The raw bytes are only a prefix of what was sent (e.g. an oversize frame).
    pub truncated: bool,
    /// Idempotency key of the document part (see [`crate::ingest::Origin::key`]): a second
    /// append with a key the journal has seen returns the first transaction and writes nothing.
    pub origin_key: Option<String>,
}

/// The stored transaction (without its raw bytes, which live in their own tree).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    pub id: TxId,
    /// Unix time in milliseconds when the journal took it.
    pub received_at_ms: i64,
    #[serde(flatten)]
    pub meta: MessageMeta,
    /// Raw size in bytes as received.
    pub size: usize,
    pub truncated: bool,
    pub status: Status,
    pub error: Option<String>,
    /// The earlier transaction with the same sender and control id, if any: duplicates are kept
    /// and flagged, never dropped silently.
    pub duplicate_of: Option<TxId>,
    /// Fan-out: every channel that took it, with the revision.
    #[serde(default)]
    pub channels: Vec<ChannelRun>,
    pub events: Vec<StatusEvent>,
    /// The transaction this one re-runs (`POST /api/transactions/{id}/rerun`): a rerun is a new
    /// transaction with a copy of the raw message, so the original's history stays as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_of: Option<TxId>,
    /// Retention removed the raw message and the step outputs; metadata and events remain.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub body_pruned: bool,
    /// The document part it came from (see [`NewMessage::origin_key`]), kept so that the
    /// `by_origin` index can be rebuilt from the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_key: Option<String>,
    /// How many steps are stored for it (keyed id + 0..n), so that recording more needs no scan
    /// of the steps tree. `None` in records written before it was kept: the keys are counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_count: Option<u32>,
}

impl Transaction {
    /// The channels this transaction counts under in the per-channel stats (`""` when no
    /// channel took it).
    pub fn channel_names(&self) -> Vec<&str> {
        if self.channels.is_empty() {
            vec![""]
        } else {
            self.channels.iter().map(|c| c.name.as_str()).collect()
        }
    }
}

/// What the journal answers to an append, once it is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub id: TxId,
    pub duplicate_of: Option<TxId>,
    /// The origin key was seen before: `id` is the earlier transaction, nothing was written.
    pub already: bool,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
