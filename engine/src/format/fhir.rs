//! FHIR R4 JSON taken in as it is (a resource or a Bundle): the structural check done before
//! journaling, the batch/collection → transaction conversion a channel may ask for, and the
//! script value.
//!
//! The check is about the envelope, not the clinical content (the CDR validates resources when
//! it writes them): a known `resourceType`, valid ids, a valid `Bundle.type`, entries that have
//! a resource (and a `request` in a transaction or batch), unique `fullUrl`s, and every
//! `urn:uuid:` reference pointing at an entry's `fullUrl`. Every problem is reported with its
//! JSON path (`Bundle.entry[2].resource.subject.reference`).

use std::collections::{HashMap, HashSet};

use rhai::Dynamic;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::cdr::validate::{is_resource_type, is_uuid, valid_id};
use crate::script::util::{det_uuid, hex, sha256_bytes};

/// The channel's `[fhir]` table.
///
/// ```toml
/// [fhir]
/// as_transaction = true   # a batch, collection, document or searchset Bundle becomes a transaction
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FhirOptions {
    pub as_transaction: bool,
}

/// One structural problem, at a JSON path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FhirIssue {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for FhirIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FhirInputError {
    #[error("not JSON (line {line}, column {column}): {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}", show_issues(.0))]
    Invalid(Vec<FhirIssue>),
    #[error(
        "a {0} Bundle cannot become a transaction (only batch, collection, document and searchset)"
    )]
    NotConvertible(String),
}

fn show_issues(issues: &[FhirIssue]) -> String {
    let mut shown: Vec<String> = issues.iter().take(10).map(|i| i.to_string()).collect();
    if issues.len() > 10 {
        shown.push(format!("... and {} more", issues.len() - 10));
    }
    shown.join("; ")
}

/// What the journal records about a FHIR body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FhirMeta {
    pub resource_type: String,
    /// `Bundle.type` for a Bundle.
    pub bundle_type: Option<String>,
    /// Entries of a Bundle (0 for a single resource).
    pub entries: usize,
    /// The resource's id, or the Bundle's identifier value.
    pub id: Option<String>,
}

/// Bundle.type codes (the required binding the embedded CDR validates against too).
fn bundle_types() -> &'static [&'static str] {
    crate::cdr::r4::binding("Bundle", "type").expect("R4 binds Bundle.type")
}
const METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"];

/// Parses and checks a body. A leading UTF-8 byte order mark (Windows tools write one) is
/// skipped, as JSON parsers may (RFC 8259 §8.1) and as the HL7 v2, C-CDA and CSV readers do.
pub fn parse(bytes: &[u8]) -> Result<Value, FhirInputError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let value: Value = serde_json::from_slice(bytes).map_err(|e| FhirInputError::Json {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    check(&value)?;
    Ok(value)
}

/// The script's `msg`: the resource or Bundle as a map, converted to a transaction first when
/// the channel asks for it.
pub fn to_script(bytes: &[u8]) -> Result<Dynamic, FhirInputError> {
    to_script_with(bytes, &FhirOptions::default())
}

pub fn to_script_with(bytes: &[u8], options: &FhirOptions) -> Result<Dynamic, FhirInputError> {
    let mut value = parse(bytes)?;
    if options.as_transaction && is_bundle(&value) {
        value = as_transaction(value)?;
    }
    Ok(crate::script::json::from_json(&value))
}

fn is_bundle(v: &Value) -> bool {
    v.get("resourceType").and_then(Value::as_str) == Some("Bundle")
}

/// Header facts for the journal.
pub fn summary(v: &Value) -> FhirMeta {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    FhirMeta {
        resource_type: text(v.get("resourceType")).unwrap_or_default(),
        bundle_type: is_bundle(v).then(|| text(v.get("type"))).flatten(),
        entries: v.get("entry").and_then(Value::as_array).map_or(0, Vec::len),
        id: text(v.get("id")).or_else(|| text(v.pointer("/identifier/value"))),
    }
}

/// Checks a resource or Bundle; every issue found, each with its path.
pub fn check(v: &Value) -> Result<(), FhirInputError> {
    let mut issues = Vec::new();
    let Some(ty) = check_resource(v, "", &mut issues) else {
        return Err(FhirInputError::Invalid(issues));
    };
    let mut full_urls = HashSet::new();
    if ty == "Bundle" {
        check_bundle(v, &mut issues, &mut full_urls);
    }
    // Dangling urn:uuid references, anywhere (a single resource can have none that resolve).
    walk_references(v, ty, &mut |path, r| {
        if let Some(uuid) = r.strip_prefix("urn:uuid:") {
            if !is_uuid(uuid) {
                issues.push(issue(path, format!("{r:?} is not a valid urn:uuid")));
            } else if !full_urls.contains(r) {
                issues.push(issue(
                    path,
                    format!("{r} does not match the fullUrl of any entry"),
                ));
            }
        }
    });
    if issues.is_empty() {
        Ok(())
    } else {
        Err(FhirInputError::Invalid(issues))
    }
}

fn issue(path: &str, message: impl Into<String>) -> FhirIssue {
    FhirIssue {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Checks `resourceType` and `id`; returns the type when the value is a resource at all.
/// `at` is the path prefix (`""` at the top, where the path starts with the type).
fn check_resource<'a>(v: &'a Value, at: &str, issues: &mut Vec<FhirIssue>) -> Option<&'a str> {
    let here = if at.is_empty() { "(root)" } else { at };
    let Some(obj) = v.as_object() else {
        issues.push(issue(here, "expected a JSON object (a FHIR resource)"));
        return None;
    };
    let ty = match obj.get("resourceType") {
        Some(Value::String(t)) if is_resource_type(t) => t.as_str(),
        Some(Value::String(t)) => {
            issues.push(issue(
                &format!("{at}{}resourceType", if at.is_empty() { "" } else { "." }),
                format!("{t:?} is not a FHIR R4 resource type"),
            ));
            return None;
        }
        Some(_) => {
            issues.push(issue(here, "resourceType must be a string"));
            return None;
        }
        None => {
            issues.push(issue(here, "no resourceType"));
            return None;
        }
    };
    let path = if at.is_empty() {
        ty.to_owned()
    } else {
        at.to_owned()
    };
    match obj.get("id") {
        None => {}
        Some(Value::String(id)) if valid_id(id) => {}
        Some(id) => issues.push(issue(
            &format!("{path}.id"),
            format!("{id} is not a valid id ([A-Za-z0-9-.], 1-64 characters)"),
        )),
    }
    Some(ty)
}

fn check_bundle(b: &Value, issues: &mut Vec<FhirIssue>, full_urls: &mut HashSet<String>) {
    let kind = match b.get("type") {
        Some(Value::String(t)) if bundle_types().contains(&t.as_str()) => t.as_str(),
        Some(t) => {
            issues.push(issue(
                "Bundle.type",
                format!("{t} is not a Bundle type ({})", bundle_types().join(", ")),
            ));
            ""
        }
        None => {
            issues.push(issue("Bundle.type", "missing"));
            ""
        }
    };
    let entries = match b.get("entry") {
        None => return,
        Some(Value::Array(e)) => e,
        Some(_) => {
            issues.push(issue("Bundle.entry", "must be an array"));
            return;
        }
    };
    let with_requests = matches!(kind, "transaction" | "batch");
    for (i, e) in entries.iter().enumerate() {
        let at = format!("Bundle.entry[{i}]");
        let Some(entry) = e.as_object() else {
            issues.push(issue(&at, "an entry must be an object"));
            continue;
        };
        match entry.get("fullUrl") {
            None => {}
            Some(Value::String(u)) if !u.trim().is_empty() && !u.contains(char::is_whitespace) => {
                let first_time = full_urls.insert(u.clone());
                if !first_time {
                    issues.push(issue(
                        &format!("{at}.fullUrl"),
                        format!("{u} is the fullUrl of an earlier entry too"),
                    ));
                }
            }
            Some(u) => issues.push(issue(&format!("{at}.fullUrl"), format!("{u} is not a URI"))),
        }
        let method = entry
            .get("request")
            .and_then(|r| r.get("method"))
            .and_then(Value::as_str);
        if with_requests {
            match entry.get("request") {
                Some(Value::Object(req)) => {
                    if !method.is_some_and(|m| METHODS.contains(&m)) {
                        issues.push(issue(
                            &format!("{at}.request.method"),
                            format!("must be one of {}", METHODS.join(", ")),
                        ));
                    }
                    let url = req.get("url").and_then(Value::as_str).unwrap_or_default();
                    if url.trim().is_empty() {
                        issues.push(issue(&format!("{at}.request.url"), "missing"));
                    }
                }
                _ => issues.push(issue(
                    &format!("{at}.request"),
                    format!("every entry of a {kind} needs a request (method and url)"),
                )),
            }
        }
        let needs_resource = !with_requests || matches!(method, Some("POST" | "PUT"));
        match entry.get("resource") {
            Some(r) => {
                let rat = format!("{at}.resource");
                if check_resource(r, &rat, issues) == Some("Bundle") {
                    // A Bundle inside a Bundle (documents in a collection) is fine; its own
                    // entries are not checked here.
                }
            }
            None if needs_resource
                && kind != "transaction-response"
                && kind != "batch-response" =>
            {
                issues.push(issue(&format!("{at}.resource"), "missing"));
            }
            None => {}
        }
    }
}

/// Calls `f(path, reference)` for every `reference` string. Paths are JSON-ish:
/// `Bundle.entry[0].resource.subject.reference`.
fn walk_references(v: &Value, root: &str, f: &mut impl FnMut(&str, &str)) {
    fn walk(v: &Value, path: &mut String, f: &mut impl FnMut(&str, &str), depth: usize) {
        if depth > 64 {
            return;
        }
        match v {
            Value::Object(o) => {
                for (k, child) in o {
                    let len = path.len();
                    path.push('.');
                    path.push_str(k);
                    if k == "reference" {
                        if let Value::String(r) = child {
                            f(path, r);
                        }
                    } else {
                        walk(child, path, f, depth + 1);
                    }
                    path.truncate(len);
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    walk(child, path, f, depth + 1);
                    path.truncate(len);
                }
            }
            _ => {}
        }
    }
    let mut path = root.to_owned();
    walk(v, &mut path, f, 0);
}

/// Points every `reference` in the resources of `entries` that names a key of `renamed` at its
/// value (an entry's `fullUrl` at the `Type/id` it is written under).
pub(crate) fn rename_references(entries: &mut [Value], renamed: &HashMap<String, String>) {
    if renamed.is_empty() {
        return;
    }
    for e in entries.iter_mut() {
        if let Some(r) = e.get_mut("resource") {
            walk_references_mut(r, &mut |r| {
                if let Some(to) = renamed.get(r.as_str()) {
                    *r = to.clone();
                }
            });
        }
    }
}

/// Calls `f` on every `reference` string, to rewrite it.
fn walk_references_mut(v: &mut Value, f: &mut impl FnMut(&mut String)) {
    match v {
        Value::Object(o) => {
            for (k, child) in o.iter_mut() {
                match child {
                    Value::String(r) if k == "reference" => f(r),
                    _ => walk_references_mut(child, f),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| walk_references_mut(c, f)),
        _ => {}
    }
}

/// Turns a batch, collection, document or searchset Bundle into a transaction; a transaction
/// is returned as it is, anything else is an error.
///
/// Each entry gets `request`: `PUT Type/id` when its resource has an id (so references by
/// `Type/id` keep pointing at it), else `POST Type`; a batch's own requests are kept. Entries
/// without a `fullUrl` get a `urn:uuid:` one derived from the Bundle's content and the entry's
/// rank (the same Bundle converts the same way twice). References to an entry's absolute
/// `fullUrl` (`http://.../Patient/1`) are rewritten to `Type/id`, which the transaction writes.
/// `search` and `response` elements of entries are dropped.
pub fn as_transaction(bundle: Value) -> Result<Value, FhirInputError> {
    check(&bundle)?;
    let Value::Object(mut b) = bundle else {
        return Err(FhirInputError::Invalid(vec![issue(
            "(root)",
            "expected a Bundle",
        )]));
    };
    if b.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(FhirInputError::Invalid(vec![issue(
            "resourceType",
            "expected a Bundle",
        )]));
    }
    let kind = b
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    match kind.as_str() {
        "transaction" => return Ok(Value::Object(b)),
        "batch" | "collection" | "document" | "searchset" => {}
        other => return Err(FhirInputError::NotConvertible(other.to_owned())),
    }
    let seed = hex(&sha256_bytes(
        serde_json::to_string(&b).unwrap_or_default().as_bytes(),
    ));
    let mut entries = match b.remove("entry") {
        Some(Value::Array(e)) => e,
        _ => Vec::new(),
    };
    let mut rename: HashMap<String, String> = HashMap::new();
    for (i, e) in entries.iter_mut().enumerate() {
        let Some(entry) = e.as_object_mut() else {
            continue;
        };
        entry.remove("search");
        entry.remove("response");
        let (ty, id) = match entry.get("resource") {
            Some(r) => (
                r.get("resourceType")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                r.get("id").and_then(Value::as_str).map(str::to_owned),
            ),
            None => continue,
        };
        if kind != "batch" || !entry.contains_key("request") {
            let request = match &id {
                Some(id) => json!({"method": "PUT", "url": format!("{ty}/{id}")}),
                None => json!({"method": "POST", "url": ty}),
            };
            entry.insert("request".into(), request);
        }
        match entry
            .get("fullUrl")
            .and_then(Value::as_str)
            .map(str::to_owned)
        {
            Some(url) if url.starts_with("urn:") => {}
            Some(url) => {
                if let Some(id) = &id {
                    rename.insert(url, format!("{ty}/{id}"));
                }
            }
            None => {
                let uuid = det_uuid(["as_transaction", seed.as_str(), &i.to_string()]);
                entry.insert("fullUrl".into(), Value::String(format!("urn:uuid:{uuid}")));
            }
        }
    }
    rename_references(&mut entries, &rename);
    let mut out = Map::new();
    out.insert("resourceType".into(), "Bundle".into());
    if let Some(id) = b.get("id") {
        out.insert("id".into(), id.clone());
    }
    out.insert("type".into(), "transaction".into());
    out.insert("entry".into(), Value::Array(entries));
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/fhir")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn issues(v: Value) -> Vec<String> {
        match check(&v) {
            Ok(()) => Vec::new(),
            Err(FhirInputError::Invalid(i)) => i.iter().map(|i| i.to_string()).collect(),
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn fixtures_check_as_expected() {
        for ok in [
            "transaction_bundle.json",
            "collection_bundle.json",
            "patient.json",
        ] {
            parse(&fixture(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let err = parse(&fixture("invalid_bundle.json"))
            .unwrap_err()
            .to_string();
        for expected in [
            "Bundle.entry[0].request: every entry of a transaction needs a request",
            "Bundle.entry[1].resource.resourceType: \"Patinet\" is not a FHIR R4 resource type",
            "Bundle.entry[2].resource.subject.reference: urn:uuid:",
            "does not match the fullUrl of any entry",
        ] {
            assert!(err.contains(expected), "{expected:?} not in {err}");
        }
    }

    #[test]
    fn structural_errors_name_their_path() {
        assert_eq!(
            issues(json!([1])),
            vec!["(root): expected a JSON object (a FHIR resource)"]
        );
        assert_eq!(issues(json!({"id": "x"})), vec!["(root): no resourceType"]);
        assert_eq!(
            issues(json!({"resourceType": "Patient", "id": "a b"})),
            vec!["Patient.id: \"a b\" is not a valid id ([A-Za-z0-9-.], 1-64 characters)"]
        );
        assert_eq!(
            issues(json!({"resourceType": "Bundle", "type": "bag"}))[0],
            "Bundle.type: \"bag\" is not a Bundle type (document, message, transaction, transaction-response, batch, batch-response, history, searchset, collection)"
        );
        let dup = json!({"resourceType": "Bundle", "type": "collection", "entry": [
            {"fullUrl": "urn:uuid:6f1a6a4e-6f5e-4b4e-9d0c-2b7e7d2a9a01", "resource": {"resourceType": "Patient"}},
            {"fullUrl": "urn:uuid:6f1a6a4e-6f5e-4b4e-9d0c-2b7e7d2a9a01", "resource": {"resourceType": "Patient"}}
        ]});
        assert_eq!(issues(dup).len(), 1);
        let bad_method = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": {"resourceType": "Patient"}, "request": {"method": "POTS", "url": "Patient"}}
        ]});
        assert_eq!(
            issues(bad_method),
            vec!["Bundle.entry[0].request.method: must be one of GET, HEAD, POST, PUT, DELETE, PATCH"]
        );
        let dangling = json!({"resourceType": "Observation", "subject": {"reference": "urn:uuid:0b8bd2b1-2a1e-4b8e-8a5a-0c2d9d0e0f11"}});
        assert_eq!(issues(dangling).len(), 1);
        let json_err = parse(b"{\n  \"resourceType\": \"Patient\",,\n}").unwrap_err();
        assert!(
            matches!(json_err, FhirInputError::Json { line: 2, .. }),
            "{json_err}"
        );
    }

    #[test]
    fn a_collection_becomes_a_consistent_transaction() {
        let v = parse(&fixture("collection_bundle.json")).unwrap();
        let tx = as_transaction(v.clone()).unwrap();
        assert_eq!(tx["type"], "transaction");
        check(&tx).unwrap();
        let entries = tx["entry"].as_array().unwrap();
        assert_eq!(entries.len(), v["entry"].as_array().unwrap().len());
        // The Patient has an id and an absolute fullUrl: PUT, and references to it rewritten.
        assert_eq!(entries[0]["request"]["method"], "PUT");
        assert_eq!(entries[0]["request"]["url"], "Patient/pat-1001");
        assert_eq!(entries[1]["request"]["method"], "POST");
        assert_eq!(
            entries[1]["resource"]["subject"]["reference"],
            "Patient/pat-1001"
        );
        // An entry without fullUrl gets a deterministic urn:uuid.
        let generated = entries[2]["fullUrl"].as_str().unwrap();
        assert!(generated.starts_with("urn:uuid:"));
        assert_eq!(as_transaction(v).unwrap(), tx);
        // A transaction stays as it is; a message cannot be converted.
        let t = parse(&fixture("transaction_bundle.json")).unwrap();
        assert_eq!(as_transaction(t.clone()).unwrap(), t);
        let m = json!({"resourceType": "Bundle", "type": "message"});
        assert_eq!(
            as_transaction(m).unwrap_err(),
            FhirInputError::NotConvertible("message".into())
        );
    }

    #[test]
    fn batch_requests_are_kept() {
        let b = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": {"resourceType": "Patient", "id": "p1"}, "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=x|1"}}
        ]});
        let tx = as_transaction(b).unwrap();
        assert_eq!(tx["entry"][0]["request"]["ifNoneExist"], "identifier=x|1");
        assert_eq!(tx["type"], "transaction");
        let meta = summary(&tx);
        assert_eq!(meta.entries, 1);
        assert_eq!(meta.bundle_type.as_deref(), Some("transaction"));
    }
}
