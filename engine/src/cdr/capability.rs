//! The CapabilityStatement served at `GET /fhir/metadata`.
//!
//! Built from the same tables that drive the server (the R4 type list, the search parameter
//! table), so it says exactly what is supported: every R4 type with read, vread, update
//! (create-on-update), delete, instance history, create and type search; conditional create,
//! update and delete; `_include`/`_revinclude` on reference parameters; batch and transaction.
//! Not listed, because not supported: PATCH, type and system history, system search.

use serde_json::{json, Value};

use super::params::{self, ParamType};
use super::validate::R4_TYPES;

/// The CapabilityStatement; `base` is the server's base URL.
pub fn statement(base: &str) -> Value {
    let resources: Vec<Value> = R4_TYPES
        .iter()
        .map(|ty| {
            let mut search_params = vec![json!({
                "name": "_id", "type": "token",
                "documentation": "The logical id of the resource"
            })];
            let mut includes = Vec::new();
            for p in params::all(ty) {
                search_params.push(json!({
                    "name": p.name,
                    "type": p.kind.code(),
                    "documentation": format!("{} ({})", p.paths.join(" | "), p.kind.code()),
                }));
                if p.kind == ParamType::Reference {
                    includes.push(format!("{ty}:{}", p.name));
                }
            }
            let mut rev: Vec<String> = Vec::new();
            for src in R4_TYPES {
                for p in params::type_params(src) {
                    if p.kind == ParamType::Reference && p.target.is_none_or(|t| t == *ty) {
                        rev.push(format!("{src}:{}", p.name));
                    }
                }
            }
            let mut r = json!({
                "type": ty,
                "interaction": [
                    {"code": "read"}, {"code": "vread"}, {"code": "update"}, {"code": "delete"},
                    {"code": "history-instance"}, {"code": "create"}, {"code": "search-type"}
                ],
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "not-supported",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "referencePolicy": ["literal", "local"],
                "searchParam": search_params,
            });
            if !includes.is_empty() {
                r["searchInclude"] = json!(includes);
            }
            if !rev.is_empty() {
                r["searchRevInclude"] = json!(rev);
            }
            r
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": super::datetime::format_instant(super::datetime::now_ms()),
        "publisher": "Orbiter",
        "kind": "instance",
        "software": {"name": "Orbiter embedded CDR", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "Orbiter embedded FHIR R4 store (sled)", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "documentation": "Unknown search parameters are ignored and reported in an \
                OperationOutcome entry of the searchset (Prefer: handling=strict makes them a \
                400); conditional operations are always strict. An update whose content equals \
                the current version (meta aside) creates no new version. Paging: _count \
                (default 20, max 1000) and _offset; _sort on _id, _lastUpdated and \
                non-reference parameters.",
            "security": {
                "description": "Every interaction but this CapabilityStatement needs an Orbiter API \
                    client: Authorization: Bearer <token>, or a client certificate on a mutual-TLS \
                    admin port. Reads and searches need the right to read message bodies \
                    (read_bodies, operator, admin); writes, batches and transactions need admin. \
                    401 and 403 come as OperationOutcomes."
            },
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}],
            "searchParam": [
                {"name": "_id", "type": "token"},
                {"name": "_lastUpdated", "type": "date"},
                {"name": "_tag", "type": "token"},
                {"name": "_security", "type": "token"},
                {"name": "_count", "type": "number"},
                {"name": "_offset", "type": "number"},
                {"name": "_sort", "type": "string"},
                {"name": "_include", "type": "string"},
                {"name": "_revinclude", "type": "string"},
                {"name": "_summary", "type": "token", "documentation": "count only"}
            ]
        }]
    })
}
