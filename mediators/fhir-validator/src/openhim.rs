//! The OpenHIM mediator documents this mediator produces: its registration and its answers
//! (`application/json+openhim`).

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::validate::{Report, Settings};

pub const URN: &str = "urn:mediator:orbiter-fhir-validator";
pub const CONTENT_TYPE: &str = "application/json+openhim";
/// Where the one endpoint listens.
pub const VALIDATE_PATH: &str = "/validate";

pub fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// The `POST /api/mediators` body: OpenHIM's mediatorConfig.
pub fn registration(host: &str, port: u16) -> Value {
    let defaults = Settings::default();
    json!({
        "urn": URN,
        "version": env!("CARGO_PKG_VERSION"),
        "name": "FHIR structural validator",
        "description": "Checks FHIR R4 resources and Bundles: resourceType, Bundle parts, references",
        "endpoints": [{
            "name": "validate",
            "host": host,
            "port": port,
            "path": VALIDATE_PATH,
            "type": "http"
        }],
        "defaultChannelConfig": [],
        "configDefs": [
            {"param": "strictReferences", "displayName": "Strict references", "type": "bool",
             "description": "Type/id references that are not in the Bundle are errors, not warnings"},
            {"param": "maxEntries", "displayName": "Maximum entries", "type": "number",
             "description": "Bundles with more entries are refused"}
        ],
        "config": {
            "strictReferences": defaults.strict_references,
            "maxEntries": defaults.max_entries
        }
    })
}

/// What `/validate` answers: the OperationOutcome as the response, each stage as an
/// orchestration, and the settings used as properties.
pub fn answer(report: &Report, settings: &Settings, received: &str) -> Value {
    let errors = report.errors();
    let status = if errors == 0 { 200 } else { 422 };
    let stage = |name: &str, issues: &[crate::validate::Issue]| {
        let stage_errors = issues
            .iter()
            .filter(|i| i.severity == crate::validate::Severity::Error)
            .count();
        json!({
            "name": name,
            "request": {"method": "POST", "path": VALIDATE_PATH,
                        "querystring": format!("stage={name}"), "timestamp": received},
            "response": {
                "status": if stage_errors == 0 { 200 } else { 422 },
                "headers": {"content-type": "application/json"},
                "body": json!({"errors": stage_errors, "warnings": issues.len() - stage_errors}).to_string(),
                "timestamp": now()
            }
        })
    };
    json!({
        "x-mediator-urn": URN,
        // OpenHIM: Successful when the request went through; Completed when the mediator did
        // its work and the answer is not a 2xx (here: the content is invalid).
        "status": if errors == 0 { "Successful" } else { "Completed" },
        "response": {
            "status": status,
            "headers": {"content-type": "application/fhir+json"},
            "body": report.outcome().to_string(),
            "timestamp": now()
        },
        "orchestrations": [stage("structure", &report.structure), stage("references", &report.references)],
        "properties": {
            "resourceType": report.resource_type.clone().unwrap_or_default(),
            "entries": report.entries.to_string(),
            "referencesChecked": report.references_checked.to_string(),
            "errors": errors.to_string(),
            "warnings": report.warnings().to_string(),
            "strictReferences": settings.strict_references.to_string(),
            "maxEntries": settings.max_entries.to_string()
        }
    })
}

/// The answer to a body that is not JSON at all.
pub fn unreadable(message: &str) -> Value {
    let outcome = json!({"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "structure", "diagnostics": message}]});
    json!({
        "x-mediator-urn": URN,
        "status": "Completed",
        "response": {"status": 400, "headers": {"content-type": "application/fhir+json"},
                     "body": outcome.to_string(), "timestamp": now()},
        "orchestrations": [],
        "properties": {}
    })
}
