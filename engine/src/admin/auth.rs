//! Bearer-token authentication for the admin API.
//!
//! The bootstrap admin token comes from `ORBITER_ADMIN_TOKEN`; without it, one is generated on
//! first start into `<data_dir>/admin.token` (mode 0600) and reused afterwards. The token is
//! never logged, only where to find it. Comparison is constant-time, and 401 answers say nothing
//! about why.

use std::io::Write;
use std::path::{Path, PathBuf};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// What an API client may do. Each role includes the ones below it:
/// `admin` ⊇ `operator` (rerun, enable/disable) ⊇ `viewer` (read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
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
        self.roles.iter().any(|r| *r >= role)
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
        if let Some(token) = configured.filter(|t| !t.is_empty()) {
            return Ok((AdminToken(token.to_string()), TokenSource::Environment));
        }
        let path = data_dir.join("admin.token");
        if let Ok(existing) = std::fs::read_to_string(&path) {
            let existing = existing.trim();
            if !existing.is_empty() {
                return Ok((AdminToken(existing.to_string()), TokenSource::File(path)));
            }
        }
        std::fs::create_dir_all(data_dir)?;
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

/// Middleware: lets a request through only with the admin token.
pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let accepted = req
        .app_data::<web::Data<AdminToken>>()
        .map(|token| {
            let header = req
                .headers()
                .get(actix_web::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            token.accepts(header)
        })
        .unwrap_or(false);
    if !accepted {
        let response = HttpResponse::Unauthorized()
            .insert_header(("WWW-Authenticate", "Bearer"))
            .json(serde_json::json!({"error": "unauthorized"}));
        return Ok(req.into_response(response));
    }
    let peer = req.peer_addr().map(|a| a.to_string());
    req.extensions_mut().insert(Caller::bootstrap(peer));
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
    fn only_the_exact_bearer_token_is_accepted() {
        let token = AdminToken::new("abc123".into());
        assert!(token.accepts(Some("Bearer abc123")));
        assert!(!token.accepts(Some("Bearer abc12")));
        assert!(!token.accepts(Some("Bearer abc1234")));
        assert!(!token.accepts(Some("Basic abc123")));
        assert!(!token.accepts(None));
    }
}
