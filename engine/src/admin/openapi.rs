//! `GET /api/openapi.json`: an OpenAPI 3.0 document of the admin port, rendered from the route
//! table ([`super::routes::ROUTES`]) so that it cannot drift from what the port serves.
//!
//! It needs a token (role `viewer`) like everything else under `/api`: DESIGN.md leaves only the
//! probes and `/metrics` open, and the document is of no use to someone who cannot call the API.
//! Schemas are deliberately loose (`type: object` with the fields callers rely on): the engine
//! keeps JSON as `serde_json::Value`, and a schema that promised more would drift.

use actix_web::{web, HttpResponse};
use serde_json::{json, Map, Value};

use super::routes::{Body, Route, ROUTES};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(serve));
}

async fn serve() -> HttpResponse {
    HttpResponse::Ok().json(document())
}

fn path_parameters(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

fn body_content(body: Body) -> Option<Value> {
    match body {
        Body::None => None,
        Body::Json(schema) => Some(json!({
            "application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}
        })),
        Body::JsonOrToml(schema) => Some(json!({
            "application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}},
            "application/toml": {"schema": {"type": "string", "description": "a channel file"}}
        })),
        Body::Text => Some(json!({"text/plain": {"schema": {"type": "string"}}})),
    }
}

fn operation(route: &Route) -> Value {
    let mut parameters: Vec<Value> = path_parameters(route.path)
        .into_iter()
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    parameters.extend(route.query.iter().map(|(name, description)| {
        json!({"name": name, "in": "query", "required": false, "description": description,
               "schema": {"type": "string"}})
    }));
    let success = match (route.method, route.response) {
        (super::routes::Method::Post, _) if route.path == "/api/clients" => "201",
        (_, Body::None) => "204",
        _ => "200",
    };
    let mut ok = json!({"description": "success"});
    if let Some(content) = body_content(route.response) {
        ok["content"] = content;
    }
    let mut responses = Map::new();
    responses.insert(success.into(), ok);
    if route.role.is_some() {
        responses.insert(
            "401".into(),
            json!({"$ref": "#/components/responses/Unauthorized"}),
        );
        responses.insert(
            "403".into(),
            json!({"$ref": "#/components/responses/Forbidden"}),
        );
        responses.insert(
            "429".into(),
            json!({"$ref": "#/components/responses/TooManyRequests"}),
        );
    }
    let mut op = json!({
        "operationId": operation_id(route),
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": parameters,
        "responses": responses,
        "x-orbiter-role": route.role,
        "x-orbiter-audited": route.audited,
    });
    match route.role {
        None => op["security"] = json!([]),
        Some(_) => op["security"] = json!([{"bearer": []}, {"clientCertificate": []}]),
    }
    if let Some(content) = body_content(route.request) {
        op["requestBody"] = json!({"required": true, "content": content});
    }
    op
}

/// `get_api_channels_name`: stable, unique (method + path).
fn operation_id(route: &Route) -> String {
    let mut id = route.method.as_str().to_ascii_lowercase();
    for part in route.path.split(|c: char| !c.is_ascii_alphanumeric()) {
        if !part.is_empty() {
            id.push('_');
            id.push_str(part);
        }
    }
    id
}

fn object(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "required": required, "properties": properties})
}

fn schemas() -> Value {
    let s = json!({"type": "string"});
    let n = json!({"type": "integer"});
    let b = json!({"type": "boolean"});
    let any = json!({"type": "object", "additionalProperties": true});
    let roles = json!({"type": "array", "items": {"type": "string", "enum": ["viewer", "operator", "admin"]}});
    let client = object(
        &["name", "roles", "read_bodies"],
        json!({"name": s, "roles": roles, "read_bodies": b, "created_at": s, "created_by": s}),
    );
    let mut created = client.clone();
    created["properties"]["token"] = json!({"type": "string", "description": "shown once"});
    let tx = object(
        &["id", "status", "received_at"],
        json!({"id": n, "status": s, "received_at": s, "control_id": s, "message_type": s,
               "channels": {"type": "array", "items": s}, "events": {"type": "array", "items": any}}),
    );
    let mut detail = tx.clone();
    detail["properties"]["raw"] =
        json!({"type": "string", "description": "masked for viewers without read_bodies"});
    detail["properties"]["steps"] = json!({"type": "array", "items": any});
    let event = object(
        &["id", "at", "actor", "action", "target", "outcome"],
        json!({"id": s, "at": s, "actor": s, "roles": roles, "peer": s, "action": s, "target": s,
               "detail": any, "outcome": {"type": "string", "enum": ["ok", "denied"]}}),
    );
    let page = |items: Value| {
        object(
            &["items"],
            json!({"items": {"type": "array", "items": items}, "next_cursor": {"type": "string", "nullable": true}}),
        )
    };
    json!({
        "Error": object(&["error"], json!({"error": s})),
        "Health": object(&["status"], json!({"status": s})),
        "Ready": object(&["status", "checks"], json!({"status": s, "checks": any})),
        "OpenApi": any,
        "Stats": any,
        "Channel": object(&["name"], json!({"name": s, "enabled": b, "revision": s, "source": any,
                                             "match": any, "destinations": {"type": "array", "items": any}})),
        "ChannelList": object(&["channels"], json!({"channels": {"type": "array", "items": {"$ref": "#/components/schemas/Channel"}},
                                                    "last_reload": any})),
        "ChannelDefinition": any,
        "ReloadReport": any,
        "Transaction": tx,
        "TransactionPage": page(json!({"$ref": "#/components/schemas/Transaction"})),
        "TransactionDetail": detail,
        "RerunFilter": object(&[], json!({"channel": s, "status": s, "since": s, "until": s, "control_id": s,
                                          "message_type": s, "patient": s, "q": s, "scan_limit": n, "max": n})),
        "RerunOutcome": object(&["id", "status"], json!({"id": n, "status": s, "reason": s})),
        "RerunReport": any,
        "Mediator": any,
        "MediatorList": any,
        "MediatorRegistration": object(&["urn", "version", "name", "endpoints"],
            json!({"urn": s, "version": s, "name": s, "description": s, "endpoints": {"type": "array", "items": any},
                   "defaultChannelConfig": {"type": "array", "items": any}, "configDefs": {"type": "array", "items": any}})),
        "Heartbeat": object(&["uptime"], json!({"uptime": {"type": "number"}, "config": b})),
        "MediatorConfig": any,
        "NewClient": object(&["name", "roles"], json!({"name": s, "roles": roles, "read_bodies": b})),
        "Client": client,
        "CreatedClient": created,
        "ClientList": object(&["clients"], json!({"clients": {"type": "array", "items": {"$ref": "#/components/schemas/Client"}}})),
        "AuditEvent": event,
        "AuditPage": page(json!({"$ref": "#/components/schemas/AuditEvent"})),
    })
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let item = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        item[route.method.as_str().to_ascii_lowercase()] = operation(route);
    }
    let error = json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Orbiter admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Roles: admin (everything) > operator (rerun, enable/disable, read) > viewer \
                (read; message bodies masked unless the client has read_bodies). x-orbiter-role is the \
                least role a route needs; x-orbiter-audited says whether a successful call is an audit event.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "ORBITER_ADMIN_TOKEN or an API client's token"},
                "clientCertificate": {"type": "mutualTLS",
                           "description": "with admin.tls.client_ca: a certificate whose subject CN is an API client's name"},
            },
            "responses": {
                "Unauthorized": {"description": "no valid token or certificate", "content": error},
                "Forbidden": {"description": "the caller's role does not allow this", "content": error},
                "TooManyRequests": {"description": "too many failed authentications from this address; see Retry-After",
                                    "content": error},
            },
            "schemas": schemas(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_document_once() {
        let doc = document();
        let mut operations = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                operations += 1;
                let route = ROUTES
                    .iter()
                    .find(|r| r.path == path && r.method.as_str().eq_ignore_ascii_case(method))
                    .unwrap_or_else(|| panic!("{method} {path} is not a route"));
                assert_eq!(op["x-orbiter-role"], json!(route.role));
                for p in path_parameters(path) {
                    assert!(op["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|x| x["name"] == p && x["in"] == "path"));
                }
            }
        }
        assert_eq!(operations, ROUTES.len());
    }

    #[test]
    fn documented_as_served() {
        let doc = document();
        let put = &doc["paths"]["/api/channels/{name}"]["put"]["requestBody"]["content"];
        assert!(put.get("application/json").is_some(), "{put}");
        assert!(put.get("application/toml").is_some(), "{put}");
        let search = doc["paths"]["/api/transactions"]["get"]["parameters"]
            .as_array()
            .unwrap();
        assert!(search.iter().any(|p| p["name"] == "scan_limit"));
        let rerun = &doc["components"]["schemas"]["RerunFilter"]["properties"];
        assert!(
            rerun.get("max").is_some() && rerun.get("limit").is_none(),
            "{rerun}"
        );
    }

    #[test]
    fn every_schema_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        for piece in text.split("\"$ref\":\"").skip(1) {
            let reference = &piece[..piece.find('"').unwrap()];
            let mut node = &doc;
            for part in reference.trim_start_matches("#/").split('/') {
                node = &node[part];
            }
            assert!(!node.is_null(), "{reference} does not resolve");
        }
    }
}
