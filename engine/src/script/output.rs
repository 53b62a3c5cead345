//! The transform's final value → what the engine delivers.
//!
//! A transform ends with one of:
//! - a `Transaction` (`let tx = transaction(); tx.update(...); tx`): its Bundle, entries
//!   checked as below;
//! - a Bundle map (`bundle_transaction([...])`): used as it is (a transaction or batch Bundle's
//!   entries are checked: each has a `request` with `method` and `url`, and a resource unless
//!   it is a DELETE or GET);
//! - one resource map, or an array of resource maps and/or entry maps: wrapped into a
//!   transaction Bundle. A resource becomes a `POST Type` entry, or `PUT Type/id` when it has an
//!   `id`; its `fullUrl` is a `urn:uuid:` derived from the message and its rank, so a replay is
//!   identical. Entry maps (from `create_entry`/`update_entry`) are kept as they are;
//! - a string or the message itself (`msg`, after `msg.set(...)`): a JSON string, the rewritten
//!   HL7 for channels that forward HL7.
//!
//! An empty transaction or batch (`transaction()` with nothing added, `bundle_transaction([])`,
//! `[]`) is no error: the message is filtered, as by `skip("the transform wrote no resources")`
//! ([`wrote_nothing`]), so that both ways of building a Bundle agree and nothing empty is
//! delivered. Anything else, or a value that prunes to nothing, is an
//! [`super::ScriptErrorKind::Output`] error: a transform that wants to drop a message calls
//! `skip()`.

use rhai::Dynamic;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::fhir::Transaction;
use super::json::to_json;
use super::message::ScriptMessage;
use super::util::{det_uuid, hex, sha256_bytes};

/// Converts the transform's value; `seed` (the raw message or document) seeds the `fullUrl`s
/// of wrapped resources.
/// Returns the JSON text and, when it was built, the tree.
pub fn transform_output(
    value: Dynamic,
    seed: &[u8],
) -> Result<(Box<RawValue>, Option<Value>), String> {
    if value.is::<Transaction>() {
        let Some(tx) = value.try_cast::<Transaction>() else {
            return Err("the transaction could not be read".into());
        };
        return tx.into_bundle_json();
    }
    let value = output_value(value, seed)?;
    let text = serde_json::value::to_raw_value(&value).expect("a JSON value serializes");
    Ok((text, Some(value)))
}

/// Why a transform that ended with an empty transaction, batch or array is filtered.
pub const WROTE_NOTHING: &str = "the transform wrote no resources";

/// Whether the transform's value is an empty transaction or batch: a `Transaction` with no
/// entries, an empty array, or a transaction/batch Bundle map without entries.
pub fn wrote_nothing(value: &Dynamic) -> bool {
    if let Some(tx) = value.read_lock::<Transaction>() {
        return tx.is_empty();
    }
    if let Some(items) = value.read_lock::<rhai::Array>() {
        return items.is_empty();
    }
    let Some(map) = value.read_lock::<rhai::Map>() else {
        return false;
    };
    let text = |key: &str| {
        map.get(key).and_then(|v| {
            v.read_lock::<rhai::ImmutableString>()
                .map(|s| s.to_string())
        })
    };
    text("resourceType").as_deref() == Some("Bundle")
        && matches!(text("type").as_deref(), Some("transaction" | "batch"))
        && map.get("entry").is_none_or(|e| {
            e.read_lock::<rhai::Array>()
                .is_some_and(|entries| entries.is_empty())
        })
}

/// [`transform_output`] for every value but a `Transaction`.
fn output_value(value: Dynamic, seed: &[u8]) -> Result<Value, String> {
    let text = if let Ok(s) = value.as_immutable_string_ref() {
        Some(s.to_string())
    } else {
        value
            .read_lock::<ScriptMessage>()
            .map(|m| m.encoded().to_owned())
    };
    if let Some(text) = text {
        if text.trim().is_empty() {
            return Err("the transform's value is an empty string".into());
        }
        return Ok(Value::String(text));
    }
    let Some(v) = to_json(&value)? else {
        return Err(format!(
            "the transform's value is empty ({}): end with a resource, an array of resources or a Bundle, or call skip(\"reason\")",
            value.type_name()
        ));
    };
    match v {
        Value::Object(o) if o.get("resourceType").and_then(Value::as_str) == Some("Bundle") => {
            check_bundle(&o)?;
            Ok(Value::Object(o))
        }
        Value::Object(o) if !o.contains_key("resourceType") && !o.contains_key("resource") => {
            Err("the transform's value is a map with neither resourceType nor resource: end with a resource, an array of resources or a Bundle".into())
        }
        Value::Object(o) => wrap(vec![Value::Object(o)], seed),
        Value::Array(items) => wrap(items, seed),
        other => Err(format!(
            "the transform's value is a {}: end with a resource, an array of resources or a Bundle",
            kind(&other)
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "map",
    }
}

fn wrap(items: Vec<Value>, input: &[u8]) -> Result<Value, String> {
    let mut seed: Option<String> = None;
    let mut entries = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let Value::Object(o) = item else {
            return Err(format!(
                "element {i} of the transform's array is a {}, not a resource or an entry",
                kind(&item)
            ));
        };
        if o.contains_key("resourceType") {
            let rt = o
                .get("resourceType")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let seed = seed.get_or_insert_with(|| hex(&sha256_bytes(input)));
            let full_url = format!(
                "urn:uuid:{}",
                det_uuid(["output", seed.as_str(), &i.to_string(), &rt])
            );
            let request = match o.get("id").and_then(Value::as_str) {
                Some(id) => json!({"method": "PUT", "url": format!("{rt}/{id}")}),
                None => json!({"method": "POST", "url": rt}),
            };
            entries.push(json!({"fullUrl": full_url, "resource": o, "request": request}));
        } else if o.contains_key("resource") || o.contains_key("request") {
            entries.push(Value::Object(o));
        } else {
            return Err(format!(
                "element {i} of the transform's array has neither resourceType nor resource"
            ));
        }
    }
    let mut b = Map::new();
    b.insert("resourceType".into(), "Bundle".into());
    b.insert("type".into(), "transaction".into());
    b.insert("entry".into(), Value::Array(entries));
    check_bundle(&b)?;
    Ok(Value::Object(b))
}

/// What the check of a transaction or batch Bundle needs of one entry.
pub struct EntryCheck {
    pub method: String,
    pub url: String,
    /// A resource with a `resourceType`.
    pub has_resource: bool,
}

impl EntryCheck {
    pub fn of(e: &Value) -> EntryCheck {
        let req = e.get("request");
        let text = |name: &str| {
            req.and_then(|r| r.get(name))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        EntryCheck {
            method: text("method"),
            url: text("url"),
            has_resource: e
                .get("resource")
                .and_then(|r| r.get("resourceType"))
                .is_some(),
        }
    }
}

/// Checks the entries of a transaction or batch Bundle.
fn check_bundle(b: &Map<String, Value>) -> Result<(), String> {
    let kind = b.get("type").and_then(Value::as_str).unwrap_or_default();
    if kind.is_empty() {
        return Err("the Bundle has no type (use bundle_transaction([...]))".into());
    }
    if kind != "transaction" && kind != "batch" {
        return Ok(());
    }
    let Some(entries) = b.get("entry").and_then(Value::as_array) else {
        // (An empty one is filtered before it gets here: see `wrote_nothing`.)
        return Err(format!("the {kind} Bundle has no entries"));
    };
    let checks: Vec<EntryCheck> = entries.iter().map(EntryCheck::of).collect();
    check_entries(kind, &checks)
}

/// Each entry of a `kind` (transaction or batch) Bundle has a request with a method and a
/// url, and a resource when it creates or updates one.
pub fn check_entries(kind: &str, entries: &[EntryCheck]) -> Result<(), String> {
    for (i, e) in entries.iter().enumerate() {
        let (method, url) = (e.method.as_str(), e.url.as_str());
        if !matches!(method, "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE") {
            return Err(format!(
                "entry {i} of the {kind} Bundle: request.method {method:?} is not GET, HEAD, POST, PUT, PATCH or DELETE"
            ));
        }
        if url.is_empty() {
            return Err(format!("entry {i} of the {kind} Bundle has no request.url"));
        }
        if matches!(method, "POST" | "PUT") && !e.has_resource {
            return Err(format!(
                "entry {i} of the {kind} Bundle ({method} {url}) has no resource with a resourceType"
            ));
        }
    }
    Ok(())
}
