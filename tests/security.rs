//! End-to-end security of the admin port against the real binary: API clients and roles,
//! tokens shown once and stored hashed, rate limiting, the audit trail, masked bodies, the route
//! table behind the OpenAPI document, and TLS / mutual TLS with certificates made here.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{adt, free_port, settled, Engine, TOKEN};
use orbiter::admin::routes::{Method, ROUTES};
use orbiter::admin::Role;
use orbiter::mllp::MllpClient;
use serde_json::{json, Value};

/// Calls the admin API with an optional bearer token; returns status and JSON body.
async fn call(
    engine_admin: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("http://{engine_admin}{path}");
    let mut req = match method {
        Method::Get => client.get(url),
        Method::Post => client.post(url),
        Method::Put => client.put(url),
        Method::Delete => client.delete(url),
    };
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Creates an API client with the bootstrap token; returns its token.
async fn create_client(engine: &Engine, name: &str, roles: &[&str], read_bodies: bool) -> String {
    let (status, body) = call(
        &engine.admin,
        Method::Post,
        "/api/clients",
        Some(TOKEN),
        Some(json!({"name": name, "roles": roles, "read_bodies": read_bodies})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_string()
}

async fn audit(engine: &Engine, query: &str) -> Vec<Value> {
    let (status, body) = call(
        &engine.admin,
        Method::Get,
        &format!("/api/audit{query}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().unwrap().clone()
}

/// Every file under `dir`, read as bytes, searched for `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path);
                }
            }
        }
    }
    found
}

#[tokio::test]
async fn clients_roles_tokens_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut engine = Engine::start(&data, &[]);
    let admin = engine.admin.clone();

    let viewer = create_client(&engine, "dash", &["viewer"], false).await;
    let operator = create_client(&engine, "ops", &["operator"], false).await;
    assert!(viewer.starts_with("orb_") && viewer.len() == 68, "{viewer}");
    assert_ne!(viewer, operator);

    // The token is shown once: the list never holds it.
    let (status, list) = call(&admin, Method::Get, "/api/clients", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dash", "ops"]);
    let text = list.to_string();
    assert!(
        !text.contains(&viewer[4..]) && !text.contains("token"),
        "{text}"
    );
    // Duplicates and bad input.
    let (status, _) = call(
        &admin,
        Method::Post,
        "/api/clients",
        Some(TOKEN),
        Some(json!({"name": "dash", "roles": ["viewer"]})),
    )
    .await;
    assert_eq!(status, 409);
    let (status, _) = call(
        &admin,
        Method::Post,
        "/api/clients",
        Some(TOKEN),
        Some(json!({"name": "x", "roles": ["root"]})),
    )
    .await;
    assert_eq!(status, 400);

    // Role boundaries.
    let (status, _) = call(
        &admin,
        Method::Get,
        "/api/transactions",
        Some(&viewer),
        None,
    )
    .await;
    assert_eq!(status, 200, "a viewer reads");
    let (status, body) = call(
        &admin,
        Method::Post,
        "/api/transactions/1/rerun",
        Some(&viewer),
        None,
    )
    .await;
    assert_eq!(status, 403, "a viewer cannot rerun");
    assert_eq!(
        body,
        json!({"error": "forbidden"}),
        "a 403 says nothing more"
    );
    let (status, _) = call(
        &admin,
        Method::Post,
        "/api/clients",
        Some(&viewer),
        Some(json!({"name": "evil", "roles": ["admin"]})),
    )
    .await;
    assert_eq!(status, 403, "a viewer cannot create clients");
    let (status, _) = call(
        &admin,
        Method::Post,
        "/api/clients",
        Some(&operator),
        Some(json!({"garbage": true})),
    )
    .await;
    assert_eq!(
        status, 403,
        "the role is checked before the body is looked at"
    );
    let (status, _) = call(&admin, Method::Get, "/api/audit", Some(&operator), None).await;
    assert_eq!(status, 403, "only admins read the audit trail");
    let (status, body) = call(
        &admin,
        Method::Post,
        "/api/transactions/999999/rerun",
        Some(&operator),
        None,
    )
    .await;
    assert_eq!(
        status, 404,
        "an operator may rerun (this one does not exist): {body}"
    );
    let (status, _) = call(
        &admin,
        Method::Post,
        "/api/channels/reload",
        Some(&operator),
        None,
    )
    .await;
    assert!(status == 200 || status == 422, "{status}");
    // Bad, missing, and malformed credentials: 401 with nothing useful in it.
    for token in [None, Some("orb_0000"), Some(&viewer[..viewer.len() - 1])] {
        let (status, body) = call(&admin, Method::Get, "/api/channels", token, None).await;
        assert_eq!(status, 401, "{token:?}");
        assert_eq!(body, json!({"error": "unauthorized"}));
    }
    // Mediators: only a mediator's own client (role `mediator`) or an admin registers and beats
    // (a heartbeat carries the mediator's config, secrets included); an operator may not, and
    // the mediator client may do nothing else.
    let registration = json!({"urn": "urn:mediator:sec", "version": "1.0.0", "name": "sec",
        "endpoints": [{"name": "e", "host": "127.0.0.1", "port": 9, "path": "/", "type": "http"}]});
    let (status, _) = call(
        &admin,
        Method::Post,
        "/api/mediators",
        Some(&operator),
        Some(registration.clone()),
    )
    .await;
    assert_eq!(
        status, 403,
        "an operator may not register (or re-point) a mediator"
    );
    let mediator = create_client(&engine, "med", &["mediator"], false).await;
    let (status, body) = call(
        &admin,
        Method::Post,
        "/api/mediators",
        Some(&mediator),
        Some(registration),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let beat = json!({"uptime": 1, "config": true});
    let (status, _) = call(
        &admin,
        Method::Post,
        "/api/mediators/urn:mediator:sec/heartbeat",
        Some(&operator),
        Some(beat.clone()),
    )
    .await;
    assert_eq!(
        status, 403,
        "an operator may not read a mediator's config through a heartbeat"
    );
    let (status, _) = call(
        &admin,
        Method::Post,
        "/api/mediators/urn:mediator:sec/heartbeat",
        Some(&mediator),
        Some(beat),
    )
    .await;
    assert_eq!(status, 200);
    for path in ["/api/channels", "/api/transactions", "/fhir/Patient"] {
        let (status, _) = call(&admin, Method::Get, path, Some(&mediator), None).await;
        assert_eq!(status, 403, "a mediator client reads nothing else: {path}");
    }

    // The embedded CDR: a masked viewer may not read patient data; an operator may.
    // Refusals under /fhir are OperationOutcomes, as a FHIR client expects.
    let (status, body) = call(&admin, Method::Get, "/fhir/Patient", Some(&viewer), None).await;
    assert_eq!(status, 403);
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    assert_eq!(body["issue"][0]["code"], "forbidden", "{body}");
    let (status, body) = call(&admin, Method::Get, "/fhir/Patient", None, None).await;
    assert_eq!(status, 401);
    assert_eq!(body["issue"][0]["code"], "login", "{body}");
    let (status, _) = call(&admin, Method::Get, "/fhir/Patient", Some(&operator), None).await;
    assert_eq!(status, 200);
    // The CapabilityStatement is open (no patient data; clients read it first), and only it.
    let (status, body) = call(&admin, Method::Get, "/fhir/metadata", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["resourceType"], "CapabilityStatement");
    let (status, _) = call(&admin, Method::Get, "/fhir/metadata/../Patient", None, None).await;
    assert_eq!(status, 401, "no way around it through the metadata path");

    // Deleting a client: its token stops working.
    let (status, _) = call(
        &admin,
        Method::Delete,
        "/api/clients/ops",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = call(&admin, Method::Get, "/api/channels", Some(&operator), None).await;
    assert_eq!(status, 401, "a deleted client's token is refused");
    let (status, _) = call(
        &admin,
        Method::Delete,
        "/api/clients/ops",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // Audit: each change, who did it and from where; denied attempts too.
    let events = audit(&engine, "").await;
    let find = |action: &str, target: &str| {
        events
            .iter()
            .find(|e| e["action"] == action && e["target"] == target)
            .unwrap_or_else(|| panic!("no {action} {target} in {events:#?}"))
            .clone()
    };
    let created = find("create", "client/dash");
    assert_eq!(created["actor"], "admin");
    assert_eq!(created["outcome"], "ok");
    assert!(created["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(created["detail"]["roles"], json!(["viewer"]));
    find("create", "client/ops");
    find("delete", "client/ops");
    let reload = find("reload", "channels");
    assert_eq!(reload["actor"], "ops");
    let denied = find("denied", "POST /api/transactions/1/rerun");
    assert_eq!(denied["actor"], "dash");
    assert_eq!(denied["outcome"], "denied");
    // The deleted client's token, refused: audited without an actor, with where it came from.
    let refused = find("authenticate", "GET /api/channels");
    assert_eq!(refused["outcome"], "refused", "{refused}");
    assert_eq!(refused["actor"], "(unauthenticated)");
    assert!(refused["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(
        !events.iter().any(|e| e["action"] == "rerun"),
        "a rerun of nothing is not an event"
    );
    // Filters and paging.
    let by_ops = audit(&engine, "?actor=ops").await;
    assert!(!by_ops.is_empty() && by_ops.iter().all(|e| e["actor"] == "ops"));
    let (status, page) = call(&admin, Method::Get, "/api/audit?limit=1", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    let cursor = page["next_cursor"].as_str().unwrap();
    let next = audit(&engine, &format!("?limit=1&cursor={cursor}")).await;
    assert_ne!(next[0]["id"], page["items"][0]["id"]);
    assert!(audit(&engine, "?until=2000-01-01T00:00:00Z")
        .await
        .is_empty());
    // No route changes or deletes an audit event.
    for method in [Method::Post, Method::Put, Method::Delete] {
        let (status, _) = call(&admin, method, "/api/audit", Some(TOKEN), None).await;
        assert!(
            status == 404 || status == 405,
            "{method:?} /api/audit: {status}"
        );
    }

    // Stored hashed: the token is nowhere in the data dir, in the clear or in hex.
    assert!(files_containing(&data, viewer.as_bytes()).is_empty());
    assert!(files_containing(&data, &viewer.as_bytes()[4..]).is_empty());
    assert!(!engine.log().contains(&viewer[4..]), "never logged");

    // Clients and the audit trail survive a crash (SIGKILL: no shutdown flush).
    engine.kill();
    engine.restart();
    let (status, _) = call(&admin, Method::Get, "/api/channels", Some(&viewer), None).await;
    assert_eq!(status, 200);
    assert!(audit(&engine, "?action=delete").await.len() == 1);
}

#[tokio::test]
async fn bodies_are_masked_for_viewers_and_reads_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(&dir.path().join("data"), &[]);
    let masked = create_client(&engine, "masked", &["viewer"], false).await;
    let reader = create_client(&engine, "reader", &["viewer"], true).await;
    let mut mllp = MllpClient::connect(&engine.mllp, Duration::from_secs(5))
        .await
        .unwrap();
    mllp.send(&adt("MASK-1")).await.unwrap();
    let tx = settled(&engine, "MASK-1").await;
    let path = format!("/api/transactions/{}", tx["id"]);

    let (status, body) = call(&engine.admin, Method::Get, &path, Some(&masked), None).await;
    assert_eq!(status, 200);
    let raw = body["raw"].as_str().unwrap();
    assert!(raw.starts_with("MSH|^~\\&|SENDAPP|"), "{raw}");
    assert!(raw.contains("PID|***"), "{raw}");
    assert!(!raw.contains("DOE") && !raw.contains("MRNMASK-1"), "{raw}");

    let (status, body) = call(&engine.admin, Method::Get, &path, Some(&reader), None).await;
    assert_eq!(status, 200);
    assert!(body["raw"].as_str().unwrap().contains("DOE^JANE"));
    let (_, body) = call(&engine.admin, Method::Get, &path, Some(TOKEN), None).await;
    assert!(body["raw"].as_str().unwrap().contains("DOE^JANE"));

    let reads = audit(&engine, "?action=read_body").await;
    let actors: Vec<&str> = reads.iter().map(|e| e["actor"].as_str().unwrap()).collect();
    assert_eq!(
        actors,
        ["admin", "reader"],
        "unmasked reads only, newest first"
    );
    assert_eq!(reads[0]["target"], format!("transaction/{}", tx["id"]));

    // The values an error quotes come from the message: masked alike, in the list and in the
    // transaction, while the kind of problem stays readable.
    let ack = mllp
        .send(b"ZZSECRETNAME is not an HL7 message")
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&ack).contains("|AR|"), "refused");
    let list = "/api/transactions?status=failed";
    let (status, body) = call(&engine.admin, Method::Get, list, Some(&masked), None).await;
    assert_eq!(status, 200);
    let shown = body.to_string();
    assert!(shown.contains("does not start with MSH"), "{shown}");
    assert!(!shown.contains("ZZSECRET"), "{shown}");
    let failed = format!("/api/transactions/{}", body["items"][0]["id"]);
    let (_, body) = call(&engine.admin, Method::Get, &failed, Some(&masked), None).await;
    assert!(!body.to_string().contains("ZZSECRET"), "{body}");
    let (_, body) = call(&engine.admin, Method::Get, list, Some(&reader), None).await;
    assert!(body.to_string().contains("ZZSECRET"), "{body}");
}

#[tokio::test]
async fn failed_authentication_is_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(&dir.path().join("data"), &[]);
    // Requests without credentials are refused but are not guesses: they do not count.
    for _ in 0..20 {
        let (status, _) = call(&engine.admin, Method::Get, "/api/channels", None, None).await;
        assert_eq!(status, 401);
    }
    for i in 0..10 {
        let (status, _) = call(
            &engine.admin,
            Method::Get,
            "/api/channels",
            Some(&format!("guess-{i}")),
            None,
        )
        .await;
        assert_eq!(status, 401);
    }
    let resp = reqwest::Client::new()
        .get(engine.url("/api/channels"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429, "blocked, even with the right token");
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Probes stay open.
    let (status, _) = call(&engine.admin, Method::Get, "/health", None, None).await;
    assert_eq!(status, 200);
}

/// Routes other branches add (merged later): tolerated as 404 here. Empty this list once they
/// are merged; the test then checks them like every other route.
const PENDING_ELSEWHERE: &[(Method, &str)] = &[];

/// The route table is what the port serves: every route in it answers (not the "no such route"
/// 404, not 405), the OpenAPI document lists exactly its routes, and each role boundary holds.
/// (`admin::routes` checks the other direction: every route registered in code is in the table.)
#[tokio::test]
async fn every_route_in_the_table_is_served_documented_and_guarded() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(&dir.path().join("data"), &[]);
    let viewer = create_client(&engine, "v", &["viewer"], false).await;
    let operator = create_client(&engine, "o", &["operator"], false).await;

    let (status, doc) = call(
        &engine.admin,
        Method::Get,
        "/api/openapi.json",
        Some(&viewer),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert_eq!(documented, ROUTES.len());
    let (status, _) = call(&engine.admin, Method::Get, "/api/openapi.json", None, None).await;
    assert_eq!(
        status, 401,
        "the document needs a token like the rest of /api"
    );

    for route in ROUTES {
        let path = route
            .path
            .replace("{name}", "no-such-thing")
            .replace("{id}", "999999")
            .replace("{urn}", "urn:uuid:00000000-0000-0000-0000-000000000000");
        let op = &doc["paths"][route.path][route.method.as_str().to_ascii_lowercase()];
        assert!(
            op.is_object(),
            "{} {} not documented",
            route.method.as_str(),
            route.path
        );
        assert_eq!(op["x-orbiter-role"], json!(route.role));

        let (status, body) = call(
            &engine.admin,
            route.method,
            &path,
            Some(TOKEN),
            Some(json!({})),
        )
        .await;
        let missing = status == 405
            || (status == 404 && body == json!({"error": "no such route"}))
            || (status == 404 && route.role.is_none());
        let pending = PENDING_ELSEWHERE.contains(&(route.method, route.path));
        assert!(
            !missing || pending,
            "{} {} is in the table but not served ({status} {body})",
            route.method.as_str(),
            route.path
        );
        if pending && !missing {
            eprintln!(
                "{} {} is served now: remove it from PENDING_ELSEWHERE",
                route.method.as_str(),
                route.path
            );
        }

        match route.role {
            None => {
                let (status, _) = call(&engine.admin, route.method, &path, None, None).await;
                assert_eq!(status, 200, "{} is open", route.path);
            }
            Some(role) => {
                let (status, _) = call(&engine.admin, route.method, &path, None, None).await;
                assert_eq!(
                    status,
                    401,
                    "{} {} without a token",
                    route.method.as_str(),
                    route.path
                );
                for (token, has) in [(&viewer, Role::Viewer), (&operator, Role::Operator)] {
                    if has < role {
                        let (status, _) = call(
                            &engine.admin,
                            route.method,
                            &path,
                            Some(token),
                            Some(json!({})),
                        )
                        .await;
                        assert_eq!(
                            status,
                            403,
                            "{} {} as {has:?}",
                            route.method.as_str(),
                            route.path
                        );
                    }
                }
            }
        }
    }
    // Not in the table: admin only, and then an honest 404.
    let (status, _) = call(
        &engine.admin,
        Method::Get,
        "/api/nothing",
        Some(&operator),
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = call(
        &engine.admin,
        Method::Get,
        "/api/nothing",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!((status, body), (404, json!({"error": "no such route"})));
}

// ---------------------------------------------------------------------------------------------
// TLS and mutual TLS

struct Pki {
    dir: PathBuf,
    ca_pem: String,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Orbiter test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca_pem = cert.pem();
        std::fs::write(dir.join("ca.pem"), &ca_pem).unwrap();
        Pki {
            dir: dir.to_path_buf(),
            ca_pem,
            ca: rcgen::Issuer::new(params, key),
        }
    }

    /// A leaf signed by the CA: (certificate PEM, key PEM).
    fn leaf(&self, cn: &str, client: bool) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn server_files(&self) -> (PathBuf, PathBuf) {
        let (cert, key) = self.leaf("orbiter", false);
        let (c, k) = (self.dir.join("server.pem"), self.dir.join("server.key"));
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        (c, k)
    }

    fn client(&self, identity: Option<&str>) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap()]);
        if let Some(cn) = identity {
            let (cert, key) = self.leaf(cn, true);
            builder = builder
                .identity(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
        }
        builder.build().unwrap()
    }
}

/// The engine with TLS on the admin port (the shared `Engine` polls in plain HTTP).
struct TlsEngine {
    child: Child,
    admin: String,
    log: PathBuf,
}

impl TlsEngine {
    async fn start(data: &Path, pki: &Pki, env: &[(&str, &str)]) -> TlsEngine {
        let (cert, key) = pki.server_files();
        let admin = format!("127.0.0.1:{}", free_port());
        let log = data.with_extension("log");
        let mut cmd = Command::new(common::orbiter_bin());
        cmd.arg("run")
            .arg("--data")
            .arg(data)
            .current_dir(data.parent().unwrap())
            .env("ORBITER_ADMIN_TOKEN", TOKEN)
            .env("ORBITER_MLLP_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("ORBITER_HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
            .env("ORBITER_ADMIN_ADDR", &admin)
            .env("ORBITER_ADMIN_TLS_CERT", &cert)
            .env("ORBITER_ADMIN_TLS_KEY", &key)
            .env("ORBITER_ADMIN_TLS_CLIENT_CA", pki.dir.join("ca.pem"))
            .env("ORBITER_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut engine = TlsEngine {
            child: cmd.spawn().unwrap(),
            admin,
            log,
        };
        let probe = pki.client(Some("probe"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = engine.child.try_wait().unwrap() {
                panic!(
                    "orbiter exited ({status}): {}",
                    std::fs::read_to_string(&engine.log).unwrap()
                );
            }
            if let Ok(resp) = probe.get(engine.url("/health")).send().await {
                if resp.status() == 200 {
                    return engine;
                }
            }
            assert!(
                Instant::now() < deadline,
                "not up: {}",
                std::fs::read_to_string(&engine.log).unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!(
            "https://localhost:{}{path}",
            self.admin.rsplit(':').next().unwrap()
        )
    }
}

impl Drop for TlsEngine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn tls_and_client_certificates_mapped_to_api_clients() {
    orbiter::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let engine = TlsEngine::start(
        &dir.path().join("data"),
        &pki,
        &[("ORBITER_ADMIN_TLS_REQUIRE_CLIENT_CERT", "false")],
    )
    .await;

    // Server-only TLS with a bearer token.
    let plain = pki.client(None);
    let resp = plain
        .post(engine.url("/api/clients"))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "ci-bot", "roles": ["operator"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    // No token, no certificate.
    let resp = plain.get(engine.url("/api/channels")).send().await.unwrap();
    assert_eq!(resp.status(), 401);

    // A certificate whose CN is an API client: that client, without a token.
    let bot = pki.client(Some("ci-bot"));
    let resp = bot.get(engine.url("/api/channels")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = bot.get(engine.url("/api/clients")).send().await.unwrap();
    assert_eq!(resp.status(), 403, "ci-bot is an operator, not an admin");
    let resp = bot
        .post(engine.url("/api/channels/reload"))
        .send()
        .await
        .unwrap();
    assert!(resp.status() == 200 || resp.status() == 422);
    // A valid certificate for no client, or a CN that tries to be the bootstrap admin.
    for cn in ["stranger", "admin"] {
        let resp = pki
            .client(Some(cn))
            .get(engine.url("/api/channels"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{cn}");
    }
    // A wrong token is not rescued by a good certificate.
    let resp = bot
        .get(engine.url("/api/channels"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // A certificate from another CA fails the handshake.
    let other = Pki::new(&{
        let d = dir.path().join("other");
        std::fs::create_dir_all(&d).unwrap();
        d
    });
    let rogue = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap()])
        .identity({
            let (cert, key) = other.leaf("ci-bot", true);
            reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap()
        })
        .build()
        .unwrap();
    assert!(rogue.get(engine.url("/api/channels")).send().await.is_err());

    // The audit trail names the certificate's client.
    let resp = plain
        .get(engine.url("/api/audit?action=reload"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["items"][0]["actor"], "ci-bot", "{body}");
    // Plain HTTP is not served on a TLS port.
    assert!(reqwest::get(format!("http://{}/health", engine.admin))
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true));
}

#[tokio::test]
async fn required_client_certificates_refuse_a_handshake_without_one() {
    orbiter::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let engine = TlsEngine::start(&dir.path().join("data"), &pki, &[]).await;
    let err = pki
        .client(None)
        .get(engine.url("/health"))
        .bearer_auth(TOKEN)
        .send()
        .await;
    assert!(err.is_err(), "no certificate, no connection");
    let resp = pki
        .client(Some("anyone"))
        .get(engine.url("/api/channels"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "a certificate plus the token");
}

/// Writes to the embedded CDR through `/fhir` are audit events too (path only, never the
/// query, which may name a patient); reads are not.
#[tokio::test]
async fn writes_to_the_embedded_cdr_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(&dir.path().join("data"), &[]);
    let client = reqwest::Client::new();
    let patient = serde_json::json!({"resourceType": "Patient", "id": "audit1", "name": [{"family": "Audit"}]});
    let resp = client
        .put(engine.url("/fhir/Patient/audit1"))
        .bearer_auth(common::TOKEN)
        .header("Content-Type", "application/fhir+json")
        .json(&patient)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let resp = client
        .put(engine.url("/fhir/Patient?identifier=urn:oid:1.2|SECRET-MRN"))
        .bearer_auth(common::TOKEN)
        .header("Content-Type", "application/fhir+json")
        .json(&serde_json::json!({"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2", "value": "SECRET-MRN"}]}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let (status, _) = engine.api("/fhir/Patient/audit1").await;
    assert_eq!(status, 200);
    let (status, page) = engine.api("/api/audit?action=fhir_write&limit=10").await;
    assert_eq!(status, 200, "{page}");
    let text = page.to_string();
    let items = page["items"].as_array().unwrap_or_else(|| panic!("{page}"));
    assert_eq!(items.len(), 2, "two writes, the read not audited: {page}");
    assert!(text.contains("/fhir/Patient/audit1"), "{page}");
    assert!(
        !text.contains("SECRET-MRN"),
        "the query stays out of the audit trail: {page}"
    );
}

/// A route written with a trailing slash is redirected, method kept, to the route without it
/// (it was a 405 that listed the very method used); the redirect still needs the token.
#[tokio::test]
async fn a_trailing_slash_is_redirected_to_its_route() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(&dir.path().join("data"), &[]);
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = format!("http://{}/api/clients/?x=1", engine.admin);
    let resp = plain.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 308);
    assert_eq!(resp.headers()["location"], "/api/clients?x=1");
    let resp = plain.get(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401, "no token, no redirect");
    let (status, body) = call(
        &engine.admin,
        Method::Get,
        "/api/clients/",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200, "followed: {body}");
    let (status, _) = call(
        &engine.admin,
        Method::Delete,
        "/api/clients/",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 405, "a method the route does not have is still 405");
}
