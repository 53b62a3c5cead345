//! The one table of the admin port's routes: method, path, the least role that may call it, and
//! what the OpenAPI document says about it.
//!
//! It is the source of truth three times over: the auth middleware enforces [`Route::role`]
//! before any handler or extractor runs (so a viewer gets 403, not a 400 about a body it was never
//! allowed to send); [`super::openapi`] renders the document from it; and the tests check that
//! every route registered in `admin/*.rs` is in here and that every route in here answers.
//! Adding a route means adding a line here; a route that is missing is admin-only by default.

use super::auth::Role;

/// HTTP methods used on the admin port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }

    pub fn from_http(method: &actix_web::http::Method) -> Option<Method> {
        Some(match method.as_str() {
            "GET" | "HEAD" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            _ => return None,
        })
    }
}

/// What a request or response body looks like, for the OpenAPI document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    /// A JSON object; the name refers to `components.schemas` in the document.
    Json(&'static str),
    /// A JSON object as [`Body::Json`], or the same as TOML text (`application/toml`, or any
    /// other type: only JSON is parsed as JSON), as a channel file is written.
    JsonOrToml(&'static str),
    /// Prometheus text exposition.
    Text,
}

/// One route of the admin port.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: Method,
    /// actix-style template: `/api/channels/{name}`.
    pub path: &'static str,
    /// `None`: open (probes and scrapers). Otherwise the least role that may call it.
    pub role: Option<Role>,
    pub summary: &'static str,
    /// Grouping in the document.
    pub tag: &'static str,
    /// Query parameters, each `(name, description)`.
    pub query: &'static [(&'static str, &'static str)],
    pub request: Body,
    pub response: Body,
    /// Whether a successful call is an audit event (a change, or a read of a message body).
    pub audited: bool,
}

const TX_FILTER: &[(&str, &str)] = &[
    ("channel", "channel name"),
    (
        "status",
        "received, filtered, processing, delivered, queued or failed",
    ),
    ("since", "RFC 3339 time or Unix milliseconds (inclusive)"),
    ("until", "RFC 3339 time or Unix milliseconds (inclusive)"),
    ("control_id", "MSH-10 message control id"),
    ("message_type", "e.g. ADT^A01"),
    ("patient", "patient identifier (PID-3)"),
    (
        "q",
        "free text over the raw message (bounded scan); needs read_bodies or the operator role",
    ),
    ("limit", "page size, 1 to 1000 (default 100)"),
    ("cursor", "next_cursor of the previous page"),
    (
        "scan_limit",
        "records examined for one page, up to 100000 (default 10000)",
    ),
];

const AUDIT_FILTER: &[(&str, &str)] = &[
    ("since", "RFC 3339 time or Unix milliseconds (inclusive)"),
    ("until", "RFC 3339 time or Unix milliseconds (inclusive)"),
    ("actor", "API client name (`admin` is the bootstrap token)"),
    ("action", "e.g. create, delete, rerun, read_body, denied"),
    ("limit", "page size, 1 to 1000 (default 100)"),
    ("cursor", "next_cursor of the previous page"),
];

/// Every route of the admin port except the embedded CDR under `/fhir` (its own FHIR
/// CapabilityStatement at `/fhir/metadata` describes it; reads need a caller allowed to see
/// message bodies, writes need `admin`).
pub const ROUTES: &[Route] = &[
    Route {
        method: Method::Get,
        path: "/health",
        role: None,
        summary: "Liveness: the process serves HTTP",
        tag: "operations",
        query: &[],
        request: Body::None,
        response: Body::Json("Health"),
        audited: false,
    },
    Route {
        method: Method::Get,
        path: "/ready",
        role: None,
        summary:
            "Readiness: journal open, channels loaded, CDR reachable when required (503 if not)",
        tag: "operations",
        query: &[],
        request: Body::None,
        response: Body::Json("Ready"),
        audited: false,
    },
    Route {
        method: Method::Get,
        path: "/metrics",
        role: None,
        summary: "Prometheus metrics",
        tag: "operations",
        query: &[],
        request: Body::None,
        response: Body::Text,
        audited: false,
    },
    Route {
        method: Method::Get,
        path: "/api/openapi.json",
        role: Some(Role::Viewer),
        summary: "This document",
        tag: "operations",
        query: &[],
        request: Body::None,
        response: Body::Json("OpenApi"),
        audited: false,
    },
    Route {
        method: Method::Get,
        path: "/api/stats",
        role: Some(Role::Viewer),
        summary: "Transaction counts per channel and status",
        tag: "operations",
        query: &[],
        request: Body::None,
        response: Body::Json("Stats"),
        audited: false,
    },
    Route {
        method: Method::Get,
        path: "/api/channels",
        role: Some(Role::Viewer),
        summary: "All channels with their revision and the last reload report",
        tag: "channels",
        query: &[],
        request: Body::None,
        response: Body::Json("ChannelList"),
        audited: false,
    },
    Route {
        method: Method::Post,
        path: "/api/channels/reload",
        role: Some(Role::Operator),
        summary: "Recompile every channel from disk; broken ones keep their running revision",
        tag: "channels",
        query: &[],
        request: Body::None,
        response: Body::Json("ReloadReport"),
        audited: true,
    },
    Route {
        method: Method::Get,
        path: "/api/channels/{name}",
        role: Some(Role::Viewer),
        summary: "One channel",
        tag: "channels",
        query: &[],
        request: Body::None,
        response: Body::Json("Channel"),
        audited: false,
    },
    Route {
        method: Method::Put,
        path: "/api/channels/{name}",
        role: Some(Role::Admin),
        summary: "Create or replace a channel (validated, then activated atomically)",
        tag: "channels",
        query: &[],
        request: Body::JsonOrToml("ChannelDefinition"),
        response: Body::Json("Channel"),
        audited: true,
    },
    Route {
        method: Method::Delete,
        path: "/api/channels/{name}",
        role: Some(Role::Admin),
        summary: "Remove a channel",
        tag: "channels",
        query: &[],
        request: Body::None,
        response: Body::None,
        audited: true,
    },
    Route {
        method: Method::Post,
        path: "/api/channels/{name}/enable",
        role: Some(Role::Operator),
        summary: "Enable a channel",
        tag: "channels",
        query: &[],
        request: Body::None,
        response: Body::Json("Channel"),
        audited: true,
    },
    Route {
        method: Method::Post,
        path: "/api/channels/{name}/disable",
        role: Some(Role::Operator),
        summary: "Disable a channel (messages for it are still journaled)",
        tag: "channels",
        query: &[],
        request: Body::None,
        response: Body::Json("Channel"),
        audited: true,
    },
    Route {
        method: Method::Get,
        path: "/api/transactions",
        role: Some(Role::Viewer),
        summary: "Search transactions, newest first, cursor paging",
        tag: "transactions",
        query: TX_FILTER,
        request: Body::None,
        response: Body::Json("TransactionPage"),
        audited: false,
    },
    Route {
        method: Method::Post,
        path: "/api/transactions/rerun",
        role: Some(Role::Operator),
        summary: "Rerun every transaction matching a filter with the current channel revisions",
        tag: "transactions",
        query: &[],
        request: Body::Json("RerunFilter"),
        response: Body::Json("RerunReport"),
        audited: true,
    },
    Route {
        method: Method::Get,
        path: "/api/transactions/{id}",
        role: Some(Role::Viewer),
        summary: "One transaction: raw message (masked for viewers without read_bodies), steps, \
                  responses, status events",
        tag: "transactions",
        query: &[],
        request: Body::None,
        response: Body::Json("TransactionDetail"),
        audited: true,
    },
    Route {
        method: Method::Post,
        path: "/api/transactions/{id}/rerun",
        role: Some(Role::Operator),
        summary: "Rerun one transaction with the current channel revisions",
        tag: "transactions",
        query: &[],
        request: Body::None,
        response: Body::Json("RerunOutcome"),
        audited: true,
    },
    Route {
        method: Method::Get,
        path: "/api/mediators",
        role: Some(Role::Viewer),
        summary: "Registered mediators with their last heartbeat",
        tag: "mediators",
        query: &[],
        request: Body::None,
        response: Body::Json("MediatorList"),
        audited: false,
    },
    Route {
        method: Method::Post,
        path: "/api/mediators",
        role: Some(Role::Mediator),
        summary: "Register a mediator (OpenHIM shape: urn, version, name, endpoints, \
                  defaultChannelConfig, configDefs)",
        tag: "mediators",
        query: &[],
        request: Body::Json("MediatorRegistration"),
        response: Body::Json("Mediator"),
        audited: true,
    },
    Route {
        method: Method::Post,
        path: "/api/mediators/{urn}/heartbeat",
        role: Some(Role::Mediator),
        summary: "Mediator heartbeat with uptime; the answer carries its current config",
        tag: "mediators",
        query: &[],
        request: Body::Json("Heartbeat"),
        response: Body::Json("MediatorConfig"),
        audited: false,
    },
    Route {
        method: Method::Get,
        path: "/api/mediators/{urn}",
        role: Some(Role::Viewer),
        summary: "One mediator: registration, status (online/offline), config (secrets masked)",
        tag: "mediators",
        query: &[],
        request: Body::None,
        response: Body::Json("Mediator"),
        audited: false,
    },
    Route {
        method: Method::Delete,
        path: "/api/mediators/{urn}",
        role: Some(Role::Admin),
        summary: "Forget a mediator; channels routing to it queue until it registers again",
        tag: "mediators",
        query: &[],
        request: Body::None,
        response: Body::None,
        audited: true,
    },
    Route {
        method: Method::Put,
        path: "/api/mediators/{urn}/config",
        role: Some(Role::Admin),
        summary: "Set a mediator's config (checked against its configDefs); pushed with the next heartbeat",
        tag: "mediators",
        query: &[],
        request: Body::Json("MediatorConfig"),
        response: Body::Json("Mediator"),
        audited: true,
    },
    Route {
        method: Method::Get,
        path: "/api/clients",
        role: Some(Role::Admin),
        summary: "API clients with their roles (never their tokens)",
        tag: "security",
        query: &[],
        request: Body::None,
        response: Body::Json("ClientList"),
        audited: false,
    },
    Route {
        method: Method::Post,
        path: "/api/clients",
        role: Some(Role::Admin),
        summary: "Create an API client; the answer holds its token, shown this once only",
        tag: "security",
        query: &[],
        request: Body::Json("NewClient"),
        response: Body::Json("CreatedClient"),
        audited: true,
    },
    Route {
        method: Method::Delete,
        path: "/api/clients/{name}",
        role: Some(Role::Admin),
        summary: "Delete an API client; its token stops working at once",
        tag: "security",
        query: &[],
        request: Body::None,
        response: Body::None,
        audited: true,
    },
    Route {
        method: Method::Get,
        path: "/api/audit",
        role: Some(Role::Admin),
        summary: "The audit trail, newest first (append-only: no route changes it)",
        tag: "security",
        query: AUDIT_FILTER,
        request: Body::None,
        response: Body::Json("AuditPage"),
        audited: false,
    },
];

/// The table entry for a request, if any. A literal segment beats a `{parameter}` one, so
/// `POST /api/transactions/rerun` is the rerun-by-filter route, not transaction "rerun".
pub fn find(method: Method, path: &str) -> Option<&'static Route> {
    let wanted: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    ROUTES
        .iter()
        .filter(|r| r.method == method)
        .filter_map(|r| {
            let template: Vec<&str> = r.path.split('/').collect();
            if template.len() != wanted.len() {
                return None;
            }
            let mut literals = 0;
            for (t, w) in template.iter().zip(&wanted) {
                if t.starts_with('{') && t.ends_with('}') {
                    if w.is_empty() {
                        return None;
                    }
                } else if t == w {
                    literals += 1;
                } else {
                    return None;
                }
            }
            Some((literals, r))
        })
        .max_by_key(|(literals, _)| *literals)
        .map(|(_, r)| r)
}

/// The methods the table has for `path` (for a 405's `Allow`), in the table's order.
pub fn methods_of(path: &str) -> Vec<Method> {
    let mut methods = Vec::new();
    for method in [Method::Get, Method::Post, Method::Put, Method::Delete] {
        if find(method, path).is_some() {
            methods.push(method);
        }
    }
    methods
}

/// The role a request needs: the table's, or `admin` for anything not in the table (a route
/// someone forgot to list is closed, not open).
pub fn required_role(method: &actix_web::http::Method, path: &str) -> Role {
    Method::from_http(method)
        .and_then(|m| find(m, path))
        .and_then(|r| r.role)
        .unwrap_or(Role::Admin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_segments_win_over_parameters() {
        let r = find(Method::Post, "/api/transactions/rerun").unwrap();
        assert_eq!(r.path, "/api/transactions/rerun");
        let r = find(Method::Post, "/api/transactions/42/rerun").unwrap();
        assert_eq!(r.path, "/api/transactions/{id}/rerun");
        let r = find(Method::Get, "/api/transactions/42").unwrap();
        assert_eq!(r.path, "/api/transactions/{id}");
        assert!(find(Method::Get, "/api/transactions/42/secret").is_none());
    }

    #[test]
    fn unknown_routes_need_admin() {
        use actix_web::http::Method as M;
        assert_eq!(required_role(&M::GET, "/api/nothing-here"), Role::Admin);
        assert_eq!(required_role(&M::PATCH, "/api/channels/x"), Role::Admin);
        assert_eq!(required_role(&M::GET, "/api/channels/x"), Role::Viewer);
        assert_eq!(
            required_role(&M::POST, "/api/transactions/7/rerun"),
            Role::Operator
        );
    }

    #[test]
    fn methods_of_a_path() {
        assert_eq!(
            methods_of("/api/channels/x"),
            vec![Method::Get, Method::Put, Method::Delete]
        );
        assert_eq!(methods_of("/api/transactions/7/rerun"), vec![Method::Post]);
        assert!(methods_of("/api/nothing-here").is_empty());
    }

    #[test]
    fn no_route_is_listed_twice() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(
                seen.insert((r.method, r.path)),
                "{} {}",
                r.method.as_str(),
                r.path
            );
            assert!(r.path.starts_with('/'));
        }
    }

    /// Every route registered in `src/admin/*.rs` is in the table. Recognised registrations:
    /// `.route("/path", web::get()…)` inside a `configure` function (paths under `/api` unless
    /// the file is `health.rs`), and `web::resource("/path")` followed by `.route(web::post()…)`.
    #[test]
    fn every_registered_route_is_in_the_table() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/admin");
        let mut registered = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let file = path.file_name().unwrap().to_string_lossy().to_string();
            if file == "routes.rs" {
                continue;
            }
            let source: String = std::fs::read_to_string(&path)
                .unwrap()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            let prefix = if file == "health.rs" { "" } else { "/api" };
            for (path, method) in registrations(&source) {
                registered.push((file.clone(), format!("{prefix}{path}"), method));
            }
        }
        assert!(
            registered.iter().any(|(_, p, _)| p == "/api/transactions"),
            "the scanner finds nothing: {registered:?}"
        );
        for (file, path, method) in &registered {
            let method = match method.as_str() {
                "get" => Method::Get,
                "post" => Method::Post,
                "put" => Method::Put,
                "delete" => Method::Delete,
                other => panic!("{file}: method {other} on {path}"),
            };
            assert!(
                ROUTES.iter().any(|r| r.method == method && r.path == path),
                "{file} registers {} {path}, missing from admin::routes::ROUTES",
                method.as_str()
            );
        }
    }

    /// `(path, method)` pairs in whitespace-free source.
    fn registrations(source: &str) -> Vec<(String, String)> {
        let mut found = Vec::new();
        let mut rest = source;
        while let Some(at) = rest.find(".route(\"") {
            rest = &rest[at + 8..];
            let Some(end) = rest.find('"') else { break };
            let path = rest[..end].to_string();
            if let Some(method) = rest[end..].strip_prefix("\",web::") {
                let method: String = method.chars().take_while(|c| c.is_alphabetic()).collect();
                found.push((path, method));
            }
        }
        let mut rest = source;
        while let Some(at) = rest.find("web::resource(\"") {
            rest = &rest[at + 15..];
            let Some(end) = rest.find('"') else { break };
            let path = rest[..end].to_string();
            let chain_end = rest.find(';').unwrap_or(rest.len());
            let chain = &rest[..chain_end];
            let mut methods = chain;
            while let Some(m) = methods.find(".route(web::") {
                methods = &methods[m + 12..];
                let method: String = methods.chars().take_while(|c| c.is_alphabetic()).collect();
                found.push((path.clone(), method));
            }
        }
        found
    }
}
