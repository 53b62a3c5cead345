//! Structural checks of a FHIR R4 resource or Bundle, in two stages:
//!
//! 1. **structure**: a JSON object with a valid `resourceType` and `id`; for a Bundle a known
//!    `type`, entries that are objects with resources, unique `fullUrl`s, a `request` on every
//!    transaction/batch entry, a Composition first in a document and a MessageHeader first in
//!    a message, at most `maxEntries` entries;
//! 2. **references**: every `reference` inside the resources resolves: `urn:uuid:`/`urn:oid:`
//!    to an entry's `fullUrl` (an error otherwise: nobody else can resolve it), `Type/id` to an
//!    entry (a warning otherwise, the server may have it; an error with `strictReferences`).
//!    Conditional references (`Patient?identifier=...`), contained (`#id`) and absolute URLs of
//!    other servers are not checked.
//!
//! No profiles, no terminology, no primitive formats: this is the check a pipeline can afford
//! on every message.

use serde_json::{json, Map, Value};

/// What an admin can set (the mediator's `configDefs`).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Unresolved `Type/id` references are errors, not warnings.
    pub strict_references: bool,
    /// A Bundle with more entries is refused.
    pub max_entries: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            strict_references: false,
            max_entries: 1000,
        }
    }
}

impl Settings {
    /// Applies a config pushed by Orbiter; unknown keys and wrong types are ignored (Orbiter
    /// checked them against the definitions already).
    pub fn apply(&mut self, config: &Map<String, Value>) {
        if let Some(strict) = config.get("strictReferences").and_then(Value::as_bool) {
            self.strict_references = strict;
        }
        if let Some(max) = config.get("maxEntries").and_then(Value::as_f64) {
            self.max_entries = max.max(0.0) as usize;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding, in OperationOutcome terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    pub severity: Severity,
    /// FHIR's issue-type code (`structure`, `required`, `not-found`, `too-costly`...).
    pub code: &'static str,
    /// Where, in FHIRPath-like notation (`Bundle.entry[2].request`).
    pub location: String,
    pub text: String,
}

/// What a validation found, per stage.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub resource_type: Option<String>,
    pub entries: usize,
    pub references_checked: usize,
    pub structure: Vec<Issue>,
    pub references: Vec<Issue>,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.all().filter(|i| i.severity == Severity::Error).count()
    }

    pub fn warnings(&self) -> usize {
        self.all()
            .filter(|i| i.severity == Severity::Warning)
            .count()
    }

    fn all(&self) -> impl Iterator<Item = &Issue> {
        self.structure.iter().chain(&self.references)
    }

    /// The findings as a FHIR OperationOutcome (one `information` issue when there are none).
    pub fn outcome(&self) -> Value {
        let mut issues: Vec<Value> = self
            .all()
            .map(|i| {
                json!({
                    "severity": match i.severity { Severity::Error => "error", Severity::Warning => "warning" },
                    "code": i.code,
                    "diagnostics": i.text,
                    "expression": [i.location],
                })
            })
            .collect();
        if issues.is_empty() {
            issues.push(json!({"severity": "information", "code": "informational",
                               "diagnostics": "structurally valid"}));
        }
        json!({"resourceType": "OperationOutcome", "issue": issues})
    }
}

const BUNDLE_TYPES: [&str; 9] = [
    "document",
    "message",
    "transaction",
    "transaction-response",
    "batch",
    "batch-response",
    "history",
    "searchset",
    "collection",
];
const METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"];

pub fn validate(value: &Value, settings: &Settings) -> Report {
    let mut report = Report::default();
    let Some(resource) = value.as_object() else {
        report
            .structure
            .push(error("structure", "$", "not a JSON object"));
        return report;
    };
    report.resource_type = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .map(str::to_string);
    check_resource(resource, "", &mut report.structure);
    if report.resource_type.as_deref() == Some("Bundle") {
        check_bundle(resource, settings, &mut report);
    }
    if report.errors() == 0 {
        check_references(value, settings, &mut report);
    }
    report
}

fn error(code: &'static str, location: &str, text: &str) -> Issue {
    Issue {
        severity: Severity::Error,
        code,
        location: location.to_string(),
        text: text.to_string(),
    }
}

/// `resourceType` and `id` of one resource; `at` is its path ("" for the top level).
fn check_resource(resource: &Map<String, Value>, at: &str, issues: &mut Vec<Issue>) {
    let here = if at.is_empty() { "$" } else { at };
    match resource.get("resourceType") {
        None => issues.push(error("required", here, "resourceType is missing")),
        Some(Value::String(t))
            if t.len() <= 64
                && t.starts_with(|c: char| c.is_ascii_uppercase())
                && t.chars().all(|c| c.is_ascii_alphanumeric()) => {}
        Some(other) => issues.push(error(
            "value",
            &format!("{here}.resourceType"),
            &format!("resourceType {other} is not a FHIR type name"),
        )),
    }
    if let Some(id) = resource.get("id") {
        let valid = id.as_str().is_some_and(|id| {
            (1..=64).contains(&id.len())
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        });
        if !valid {
            issues.push(error(
                "value",
                &format!("{here}.id"),
                "id must be 1-64 letters, digits, '-' or '.'",
            ));
        }
    }
}

fn check_bundle(bundle: &Map<String, Value>, settings: &Settings, report: &mut Report) {
    let issues = &mut report.structure;
    let kind = bundle.get("type").and_then(Value::as_str);
    match kind {
        None => issues.push(error("required", "Bundle.type", "Bundle.type is missing")),
        Some(k) if !BUNDLE_TYPES.contains(&k) => issues.push(error(
            "value",
            "Bundle.type",
            &format!("`{k}` is not a Bundle type"),
        )),
        Some(_) => {}
    }
    let entries = match bundle.get("entry") {
        None => return,
        Some(Value::Array(entries)) => entries,
        Some(_) => {
            issues.push(error("structure", "Bundle.entry", "entry must be an array"));
            return;
        }
    };
    report.entries = entries.len();
    if entries.len() > settings.max_entries {
        issues.push(error(
            "too-costly",
            "Bundle.entry",
            &format!(
                "{} entries, more than maxEntries ({})",
                entries.len(),
                settings.max_entries
            ),
        ));
        return;
    }
    let needs_request = matches!(kind, Some("transaction" | "batch"));
    let is_response = matches!(kind, Some("transaction-response" | "batch-response"));
    let mut full_urls: Vec<&str> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("Bundle.entry[{i}]");
        let Some(entry) = entry.as_object() else {
            issues.push(error("structure", &at, "an entry must be an object"));
            continue;
        };
        if let Some(url) = entry.get("fullUrl") {
            match url.as_str() {
                Some(url) if full_urls.contains(&url) => issues.push(error(
                    "duplicate",
                    &format!("{at}.fullUrl"),
                    &format!("fullUrl {url} appears twice"),
                )),
                Some(url) => full_urls.push(url),
                None => issues.push(error(
                    "value",
                    &format!("{at}.fullUrl"),
                    "fullUrl must be a string",
                )),
            }
        }
        let method = entry
            .get("request")
            .and_then(|r| r.get("method"))
            .and_then(Value::as_str);
        if needs_request {
            let url = entry
                .get("request")
                .and_then(|r| r.get("url"))
                .and_then(Value::as_str);
            if !method.is_some_and(|m| METHODS.contains(&m)) {
                issues.push(error(
                    "required",
                    &format!("{at}.request.method"),
                    "a transaction or batch entry needs request.method (GET, HEAD, POST, PUT, DELETE or PATCH)",
                ));
            }
            if url.is_none_or(str::is_empty) {
                issues.push(error(
                    "required",
                    &format!("{at}.request.url"),
                    "a transaction or batch entry needs request.url",
                ));
            }
        }
        match entry.get("resource") {
            Some(Value::Object(resource)) => {
                check_resource(resource, &format!("{at}.resource"), issues)
            }
            Some(_) => issues.push(error(
                "structure",
                &format!("{at}.resource"),
                "resource must be an object",
            )),
            // Reads and deletes carry no resource; responses may not.
            None if is_response || matches!(method, Some("GET" | "HEAD" | "DELETE")) => {}
            None => issues.push(error(
                "required",
                &format!("{at}.resource"),
                "the entry has no resource",
            )),
        }
    }
    let first = |t: &str| {
        entries
            .first()
            .and_then(|e| e["resource"]["resourceType"].as_str())
            == Some(t)
    };
    if kind == Some("document") && !first("Composition") {
        issues.push(error(
            "structure",
            "Bundle.entry[0]",
            "a document starts with a Composition",
        ));
    }
    if kind == Some("message") && !first("MessageHeader") {
        issues.push(error(
            "structure",
            "Bundle.entry[0]",
            "a message starts with a MessageHeader",
        ));
    }
}

fn check_references(value: &Value, settings: &Settings, report: &mut Report) {
    // What references can point at: every fullUrl, and `Type/id` of every resource with an id.
    let mut targets: Vec<String> = Vec::new();
    let resources: Vec<(String, &Value)> = match value["entry"].as_array() {
        Some(entries) if value["resourceType"] == "Bundle" => entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                if let Some(url) = e["fullUrl"].as_str() {
                    targets.push(url.to_string());
                }
                let resource = e.get("resource")?;
                if let (Some(t), Some(id)) =
                    (resource["resourceType"].as_str(), resource["id"].as_str())
                {
                    targets.push(format!("{t}/{id}"));
                }
                Some((format!("Bundle.entry[{i}].resource"), resource))
            })
            .collect(),
        _ => vec![("$".to_string(), value)],
    };
    for (at, resource) in resources {
        walk(resource, &at, &mut |location, reference| {
            report.references_checked += 1;
            let resolved = targets.iter().any(|t| {
                t == reference || (t.starts_with("http") && t.ends_with(&format!("/{reference}")))
            });
            if resolved || reference.starts_with('#') || reference.contains('?') {
                return;
            }
            let local = reference.starts_with("urn:uuid:") || reference.starts_with("urn:oid:");
            let relative = !local && !reference.contains("://");
            if local || (relative && settings.strict_references) {
                report.references.push(error(
                    "not-found",
                    location,
                    &format!("reference {reference} does not resolve within the Bundle"),
                ));
            } else if relative {
                report.references.push(Issue {
                    severity: Severity::Warning,
                    code: "not-found",
                    location: location.to_string(),
                    text: format!(
                        "reference {reference} is not in the Bundle (the server may have it)"
                    ),
                });
            }
        });
    }
}

/// Calls `found(path, reference)` for every `reference` string under `value`.
fn walk(value: &Value, at: &str, found: &mut dyn FnMut(&str, &str)) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let path = format!("{at}.{key}");
                match (key.as_str(), child) {
                    ("reference", Value::String(reference)) => found(&path, reference),
                    _ => walk(child, &path, found),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, &format!("{at}[{i}]"), found);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transaction(entries: Value) -> Value {
        json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    }

    fn post(full_url: &str, resource: Value) -> Value {
        json!({"fullUrl": full_url, "resource": resource,
               "request": {"method": "POST", "url": resource["resourceType"]}})
    }

    #[test]
    fn a_transaction_with_resolving_references_is_valid() {
        let bundle = transaction(json!([
            post("urn:uuid:p1", json!({"resourceType": "Patient"})),
            post(
                "urn:uuid:e1",
                json!({"resourceType": "Encounter",
                                        "subject": {"reference": "urn:uuid:p1"},
                                        "participant": [{"individual": {"reference": "Practitioner?identifier=x|1"}}]})
            ),
        ]));
        let report = validate(&bundle, &Settings::default());
        assert_eq!(report.errors(), 0, "{:?}", report.outcome());
        assert_eq!(report.warnings(), 0);
        assert_eq!(report.entries, 2);
        assert_eq!(report.references_checked, 2);
        assert_eq!(report.outcome()["issue"][0]["severity"], "information");
    }

    #[test]
    fn structural_faults_are_errors_with_their_location() {
        let cases = [
            (json!([1]), "$"),
            (json!({"id": "x"}), "$"),
            (json!({"resourceType": "patient"}), "$.resourceType"),
            (json!({"resourceType": "Patient", "id": "a b"}), "$.id"),
            (json!({"resourceType": "Bundle"}), "Bundle.type"),
            (
                json!({"resourceType": "Bundle", "type": "pile"}),
                "Bundle.type",
            ),
            (
                transaction(json!([{"resource": {"resourceType": "Patient"}}])),
                "Bundle.entry[0].request.method",
            ),
            (
                transaction(json!([
                    post("urn:uuid:a", json!({"resourceType": "Patient"})),
                    post("urn:uuid:a", json!({"resourceType": "Patient"}))
                ])),
                "Bundle.entry[1].fullUrl",
            ),
            (
                json!({"resourceType": "Bundle", "type": "collection", "entry": [{"fullUrl": "x"}]}),
                "Bundle.entry[0].resource",
            ),
            (
                json!({"resourceType": "Bundle", "type": "document", "entry": [{"resource": {"resourceType": "Patient"}}]}),
                "Bundle.entry[0]",
            ),
        ];
        for (value, location) in cases {
            let report = validate(&value, &Settings::default());
            assert!(report.errors() > 0, "{value}");
            assert!(
                report.structure.iter().any(|i| i.location == location),
                "{value}: {:?}",
                report.structure
            );
        }
    }

    #[test]
    fn references_urn_must_resolve_and_relative_ones_follow_the_setting() {
        let bundle = transaction(json!([post(
            "urn:uuid:e1",
            json!({"resourceType": "Encounter",
                                        "subject": {"reference": "urn:uuid:missing"},
                                        "serviceProvider": {"reference": "Organization/o1"}})
        ),]));
        let lenient = validate(&bundle, &Settings::default());
        assert_eq!(lenient.errors(), 1);
        assert_eq!(lenient.warnings(), 1);
        let missing = lenient
            .references
            .iter()
            .find(|i| i.severity == Severity::Error)
            .unwrap();
        assert_eq!(
            missing.location,
            "Bundle.entry[0].resource.subject.reference"
        );
        let strict = Settings {
            strict_references: true,
            ..Settings::default()
        };
        assert_eq!(validate(&bundle, &strict).errors(), 2);
    }

    #[test]
    fn max_entries_and_pushed_config() {
        let mut settings = Settings::default();
        settings.apply(
            json!({"maxEntries": 1, "strictReferences": true, "other": 1})
                .as_object()
                .unwrap(),
        );
        assert_eq!(
            settings,
            Settings {
                strict_references: true,
                max_entries: 1
            }
        );
        let bundle = transaction(json!([
            post("urn:uuid:a", json!({"resourceType": "Patient"})),
            post("urn:uuid:b", json!({"resourceType": "Patient"})),
        ]));
        let report = validate(&bundle, &settings);
        assert_eq!(report.structure[0].code, "too-costly");
    }
}
