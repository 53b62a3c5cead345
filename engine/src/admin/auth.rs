//! Authentication and roles for the admin port.
//!
//! The bootstrap admin token comes from `ORBITER_ADMIN_TOKEN`; without it, one is generated on
//! first start into `<data_dir>/admin.token` (mode 0600) and reused afterwards. The token is
//! never logged, only where to find it. API clients ([`super::clients`]) have their own tokens
//! and roles, or present a client certificate whose subject CN is their name (mutual TLS).
//! Comparison is constant-time, failures are rate-limited per address
//! ([`super::ratelimit`]), and 401/403 answers say nothing about why.

use std::any::Any;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::Extensions;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::clients::{token_digest, ApiClients, Digest};
use super::ratelimit::FailureLimiter;
use crate::journal::Journal;

/// What an API client may do. Each role includes the ones below it:
/// `admin` ⊇ `operator` (rerun, enable/disable) ⊇ `viewer` (read). `mediator` stands apart:
/// a mediator's own client may register and beat (and so receive its config, secrets
/// included), and nothing else; only `admin` includes it, so an operator can neither read a
/// mediator's secrets through a heartbeat nor point its endpoint elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
    Mediator,
}

impl Role {
    /// Whether a client with this role may do what `needed` allows.
    pub fn includes(self, needed: Role) -> bool {
        match (self, needed) {
            (Role::Admin, _) => true,
            (Role::Mediator, needed) => needed == Role::Mediator,
            (_, Role::Mediator) => false,
            (mine, needed) => mine >= needed,
        }
    }
}

/// Who is calling, once authenticated: put into the request by the middleware; handlers take it
/// as an extractor and call [`Caller::require`] with the role the route needs.
#[derive(Debug, Clone, Serialize)]
pub struct Caller {
    /// The API client's name (`admin` for the bootstrap token).
    pub name: String,
    pub roles: Vec<Role>,
    /// Whether message bodies are shown unmasked (always for admin and operator).
    pub read_bodies: bool,
    /// Remote address, for the audit trail.
    pub peer: Option<String>,
}

impl Caller {
    pub fn bootstrap(peer: Option<String>) -> Caller {
        Caller {
            name: "admin".into(),
            roles: vec![Role::Admin],
            read_bodies: true,
            peer,
        }
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.iter().any(|r| r.includes(role))
    }

    /// `Ok` when the caller has `role` (or a higher one); otherwise a bare 403.
    pub fn require(&self, role: Role) -> Result<(), actix_web::Error> {
        if self.has(role) {
            Ok(())
        } else {
            Err(actix_web::error::InternalError::from_response(
                "forbidden",
                HttpResponse::Forbidden().json(serde_json::json!({"error": "forbidden"})),
            )
            .into())
        }
    }
}

impl FromRequest for Caller {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Caller, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(req.extensions().get::<Caller>().cloned().ok_or_else(|| {
            actix_web::error::ErrorUnauthorized(serde_json::json!({"error": "unauthorized"}))
        }))
    }
}

/// The accepted bearer token.
#[derive(Clone)]
pub struct AdminToken(String);

/// Where the token came from, for the start-up log line (never the token itself).
#[derive(Debug)]
pub enum TokenSource {
    Environment,
    File(PathBuf),
    Generated(PathBuf),
}

impl AdminToken {
    pub fn new(token: String) -> AdminToken {
        AdminToken(token)
    }

    /// The configured token, or the one in the data dir, or a new one written there.
    pub fn load_or_generate(
        configured: Option<&str>,
        data_dir: &Path,
    ) -> std::io::Result<(AdminToken, TokenSource)> {
        // Trimmed as a presented token is: a Secret made with `--from-file` from
        // `openssl rand -hex 32 > f` ends in a newline no client sends.
        if let Some(token) = configured.map(str::trim).filter(|t| !t.is_empty()) {
            return Ok((AdminToken(token.to_string()), TokenSource::Environment));
        }
        let path = data_dir.join("admin.token");
        if let Ok(existing) = std::fs::read_to_string(&path) {
            let existing = existing.trim();
            if !existing.is_empty() {
                return Ok((AdminToken(existing.to_string()), TokenSource::File(path)));
            }
        }
        crate::data_dir::create(data_dir)?;
        let token = hex::encode(rand::random::<[u8; 32]>());
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path)?;
        file.write_all(token.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        Ok((AdminToken(token), TokenSource::Generated(path)))
    }

    /// Whether an `Authorization` header value carries this token.
    pub fn accepts(&self, header: Option<&str>) -> bool {
        let Some(presented) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        presented.trim().as_bytes().ct_eq(self.0.as_bytes()).into()
    }
}

/// What the middleware needs to know who is calling; one per app, shared by its workers.
pub struct Authenticator {
    /// SHA-256 of the bootstrap token: compared digest to digest, so that the time taken does
    /// not depend on how much of a guess matches, nor on its length.
    bootstrap: Digest,
    clients: Arc<ApiClients>,
    limiter: FailureLimiter,
    /// For audit events of denied calls.
    journal: Journal,
}

impl Authenticator {
    pub fn new(token: &AdminToken, clients: Arc<ApiClients>, journal: Journal) -> Authenticator {
        if token.0.len() < 32 {
            // The length only, never the token.
            tracing::warn!(
                length = token.0.len(),
                "ORBITER_ADMIN_TOKEN is short: use 256 random bits (e.g. `openssl rand -hex 32`)"
            );
        }
        Authenticator {
            bootstrap: token_digest(&token.0),
            clients,
            limiter: FailureLimiter::new(),
            journal,
        }
    }

    /// The caller behind an `Authorization` header or, without one, a verified client
    /// certificate whose subject CN names an API client. A header that is present but wrong is
    /// a failure even if a certificate would do: the caller asked to be someone else.
    fn identify(
        &self,
        header: Option<&str>,
        certificate_cn: Option<&str>,
        peer: Option<String>,
    ) -> Option<Caller> {
        if let Some(header) = header {
            let token = header
                .strip_prefix("Bearer ")
                .or_else(|| header.strip_prefix("bearer "))?
                .trim();
            if bool::from(token_digest(token).ct_eq(&self.bootstrap)) {
                return Some(Caller::bootstrap(peer));
            }
            return self.clients.by_token(token).map(|c| c.caller(peer));
        }
        let cn = certificate_cn?;
        self.clients.by_name(cn).map(|c| c.caller(peer))
    }
}

/// A client certificate that rustls verified against `admin.tls.client_ca`, put into the
/// connection's data by [`on_connect`].
#[derive(Debug, Clone)]
pub struct PeerCertificate {
    pub common_name: String,
}

/// `HttpServer::on_connect` hook: remembers the verified client certificate's subject CN.
pub fn on_connect(conn: &dyn Any, data: &mut Extensions) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    let Some(tls) = conn.downcast_ref::<Tls>() else {
        return;
    };
    let (_, session) = tls.get_ref();
    if let Some(cn) = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| crate::tls::subject_common_name(leaf))
    {
        data.insert(PeerCertificate { common_name: cn });
    }
}

fn unauthorized(path: &str) -> HttpResponse {
    let mut response = HttpResponse::Unauthorized();
    response.insert_header(("WWW-Authenticate", "Bearer"));
    refusal(response, path, "login", "unauthorized")
}

fn is_fhir(path: &str) -> bool {
    path == "/fhir" || path.starts_with("/fhir/")
}

/// A refusal's body: an OperationOutcome under `/fhir` (what a FHIR client parses), the API's
/// `{"error": ...}` elsewhere. `code` is the FHIR issue type (`login`, `forbidden`, `throttled`).
fn refusal(
    mut response: actix_web::HttpResponseBuilder,
    path: &str,
    code: &str,
    error: &str,
) -> HttpResponse {
    if is_fhir(path) {
        response.content_type("application/fhir+json").body(
            serde_json::json!({
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": code, "diagnostics": error}],
            })
            .to_string(),
        )
    } else {
        response.json(serde_json::json!({"error": error}))
    }
}

/// The CapabilityStatement holds no patient data, and FHIR clients (HAPI's, SMART apps) read
/// it before they authenticate: open, as on HAPI.
fn open_without_token(method: &actix_web::http::Method, path: &str) -> bool {
    matches!(method.as_str(), "GET" | "HEAD") && path.trim_end_matches('/') == "/fhir/metadata"
}

/// Whether `caller` may make this request: the embedded CDR holds patient data (reads need
/// the right to read message bodies, writes need admin); everything else as the route table
/// ([`super::routes`]) says. `POST [type]/_search` is a read (a search with its parameters in
/// the body); a POST of a Bundle stays admin-only, whatever its entries.
fn allowed(caller: &Caller, method: &actix_web::http::Method, path: &str) -> bool {
    if is_fhir(path) {
        let search_post =
            method.as_str() == "POST" && path.trim_end_matches('/').ends_with("/_search");
        return if matches!(method.as_str(), "GET" | "HEAD") || search_post {
            super::mask::may_read_bodies(caller)
        } else {
            caller.has(Role::Admin)
        };
    }
    caller.has(super::routes::required_role(method, path))
}

/// Middleware: authenticates the caller (bearer token or client certificate), enforces the
/// route's role, and puts the [`Caller`] into the request. Answers 429 to an address with too
/// many recent failures, 401 to an unknown caller, 403 to a known one without the role; none of
/// these says which part was wrong.
pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let peer_addr = req.peer_addr();
    let peer = peer_addr.map(|a| a.to_string());
    if open_without_token(req.method(), req.path()) {
        req.extensions_mut().insert(Caller {
            name: "(anonymous)".into(),
            roles: Vec::new(),
            read_bodies: false,
            peer,
        });
        return next.call(req).await.map(|res| res.map_into_boxed_body());
    }
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("invalid"));
    let caller = if let Some(auth) = req.app_data::<web::Data<Authenticator>>() {
        let ip = peer_addr.map(|a| a.ip());
        if let Some(wait) = ip.and_then(|ip| auth.limiter.blocked(ip)) {
            let mut response = HttpResponse::TooManyRequests();
            response.insert_header(("Retry-After", wait.to_string()));
            let response = refusal(response, req.path(), "throttled", "too many requests");
            return Ok(req.into_response(response));
        }
        let cn = req
            .conn_data::<PeerCertificate>()
            .map(|c| c.common_name.clone());
        match auth.identify(header, cn.as_deref(), peer) {
            Some(caller) => caller,
            None => {
                // Only a presented credential is a guess; a request without any (a probe, a
                // misconfigured client) gets its 401 without using up the address's budget.
                if let (Some(ip), Some(_)) = (ip, header) {
                    auth.limiter.failed(ip);
                    // A credential refused is a security event: audited (at most the limiter's
                    // budget per address before it answers 429).
                    super::audit::unauthenticated(
                        &auth.journal,
                        peer_addr.map(|a| a.to_string()),
                        req.method().as_str(),
                        req.path(),
                    );
                }
                // Never the header: it may hold a real token with a typo.
                tracing::warn!(
                    peer = peer_addr.map_or_else(|| "unknown".to_owned(), |a| a.to_string()),
                    path = req.path(),
                    "admin API: authentication failed"
                );
                let response = unauthorized(req.path());
                return Ok(req.into_response(response));
            }
        }
    } else {
        // An app without an Authenticator (unit tests): the bootstrap token only.
        match req.app_data::<web::Data<AdminToken>>() {
            Some(token) if token.accepts(header) => Caller::bootstrap(peer),
            _ => {
                let response = unauthorized(req.path());
                return Ok(req.into_response(response));
            }
        }
    };
    if !allowed(&caller, req.method(), req.path()) {
        if let Some(auth) = req.app_data::<web::Data<Authenticator>>() {
            super::audit::denied(&auth.journal, &caller, req.method().as_str(), req.path());
        }
        let response = refusal(
            HttpResponse::Forbidden(),
            req.path(),
            "forbidden",
            "forbidden",
        );
        return Ok(req.into_response(response));
    }
    req.extensions_mut().insert(caller);
    next.call(req).await.map(|res| res.map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_token_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (first, source) = AdminToken::load_or_generate(None, dir.path()).unwrap();
        assert!(matches!(source, TokenSource::Generated(_)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("admin.token"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (second, source) = AdminToken::load_or_generate(None, dir.path()).unwrap();
        assert!(matches!(source, TokenSource::File(_)));
        assert_eq!(first.0, second.0);
        assert_eq!(first.0.len(), 64);
    }

    #[test]
    fn fhir_searches_by_post_are_reads() {
        let caller = |roles: Vec<Role>, read_bodies: bool| Caller {
            name: "t".into(),
            roles,
            read_bodies,
            peer: None,
        };
        let post = actix_web::http::Method::POST;
        let reader = caller(vec![Role::Viewer], true);
        let operator = caller(vec![Role::Operator], false);
        let viewer = caller(vec![Role::Viewer], false);
        for c in [&reader, &operator] {
            assert!(allowed(c, &post, "/fhir/Patient/_search"));
            assert!(allowed(c, &post, "/fhir/Patient/_search/"));
            assert!(!allowed(c, &post, "/fhir/Patient"));
            assert!(!allowed(c, &post, "/fhir"));
            assert!(!allowed(
                c,
                &actix_web::http::Method::PUT,
                "/fhir/Patient/_search"
            ));
        }
        assert!(!allowed(&viewer, &post, "/fhir/Patient/_search"));
        assert!(allowed(&caller(vec![Role::Admin], false), &post, "/fhir"));
    }

    /// A token from a Secret file ends in a newline; the client sends it without one.
    #[test]
    fn a_configured_token_is_trimmed_as_a_presented_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let (token, source) = AdminToken::load_or_generate(Some("0123abcd\n"), dir.path()).unwrap();
        assert!(matches!(source, TokenSource::Environment));
        assert!(token.accepts(Some("Bearer 0123abcd")));
        let (_, source) = AdminToken::load_or_generate(Some(" \n"), dir.path()).unwrap();
        assert!(
            matches!(source, TokenSource::Generated(_)),
            "blank is no token"
        );
    }

    #[test]
    fn only_the_exact_bearer_token_is_accepted() {
        let token = AdminToken::new("abc123".into());
        assert!(token.accepts(Some("Bearer abc123")));
        assert!(!token.accepts(Some("Bearer abc12")));
        assert!(!token.accepts(Some("Bearer abc1234")));
        assert!(!token.accepts(Some("Basic abc123")));
        assert!(!token.accepts(None));
    }
}
