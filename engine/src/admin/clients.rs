//! API clients: named callers with roles and their own bearer tokens, managed through
//! `POST|GET /api/clients` and `DELETE /api/clients/{name}` (admin only).
//!
//! # Tokens
//! A token is `orb_` followed by 256 random bits in hex, from aws-lc-rs's system RNG. It is shown
//! once, in the answer to `POST /api/clients`, and stored only as its SHA-256 digest in the
//! journal's `api_clients` tree.
//!
//! Why SHA-256 and not argon2: a password hash is slow on purpose, to make guessing a
//! *low-entropy* secret from a stolen digest expensive. A 256-bit random token cannot be guessed
//! whatever the hash costs, so a fast, preimage-resistant digest protects it as well (GitHub
//! stores its tokens this way), and a request costs one microsecond instead of tens of
//! milliseconds of argon2 on a Raspberry Pi, which would also make every failed request a cheap
//! denial of service.
//!
//! Lookup is by digest (a map from digest to client), so the time a request takes depends on
//! the digest of what was presented, never on which client names exist; the digest found is
//! then compared once more in constant time.

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::audit::{self, AuditAction};
use super::auth::{Caller, Role};
use crate::journal::{Journal, JournalError};

/// The name the bootstrap token (`ORBITER_ADMIN_TOKEN`) acts under; no client may take it.
pub const BOOTSTRAP_NAME: &str = "admin";
/// Recognisable by secret scanners, and by people reading a config by mistake.
const TOKEN_PREFIX: &str = "orb_";

pub type Digest = [u8; 32];

/// SHA-256 of a presented or generated token.
pub fn token_digest(token: &str) -> Digest {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn new_token() -> Result<String, ClientError> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| ClientError::Random)?;
    Ok(format!("{TOKEN_PREFIX}{}", hex::encode(bytes)))
}

/// One API client as stored (the token only as its digest).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientRecord {
    pub name: String,
    pub roles: Vec<Role>,
    /// Whether a viewer sees message bodies unmasked (operators and admins always do).
    pub read_bodies: bool,
    pub created_at_ms: i64,
    pub created_by: String,
    token_sha256: String,
}

impl ClientRecord {
    /// The caller this client is, for a request from `peer`.
    pub fn caller(&self, peer: Option<String>) -> Caller {
        let roles = self.roles.clone();
        let elevated = roles.iter().any(|r| r.includes(Role::Operator));
        Caller {
            name: self.name.clone(),
            read_bodies: self.read_bodies || elevated,
            roles,
            peer,
        }
    }

    /// What `GET /api/clients` shows: everything but the digest.
    fn public(&self) -> serde_json::Value {
        json!({
            "name": self.name,
            "roles": self.roles,
            "read_bodies": self.read_bodies,
            "created_at": audit::rfc3339(self.created_at_ms),
            "created_by": self.created_by,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Invalid(String),
    #[error("a client with this name exists")]
    Exists,
    #[error("no such client")]
    NotFound,
    #[error("the system random number generator failed")]
    Random,
    #[error("client store: {0}")]
    Storage(#[from] JournalError),
    #[error("client store is corrupt: {0}")]
    Corrupt(String),
}

impl From<sled::Error> for ClientError {
    fn from(e: sled::Error) -> Self {
        ClientError::Storage(e.into())
    }
}

/// The clients, in memory for authentication and in the journal for restarts.
pub struct ApiClients {
    journal: Journal,
    index: RwLock<Index>,
}

#[derive(Default)]
struct Index {
    by_digest: HashMap<Digest, String>,
    by_name: BTreeMap<String, (ClientRecord, Digest)>,
}

impl ApiClients {
    /// Loads every client from the journal.
    pub fn open(journal: &Journal) -> Result<ApiClients, ClientError> {
        let mut index = Index::default();
        for entry in journal.clients_tree()?.iter() {
            let (_, value) = entry?;
            let record: ClientRecord =
                serde_json::from_slice(&value).map_err(|e| ClientError::Corrupt(e.to_string()))?;
            let digest = decode_digest(&record.token_sha256)?;
            index.by_digest.insert(digest, record.name.clone());
            index.by_name.insert(record.name.clone(), (record, digest));
        }
        Ok(ApiClients {
            journal: journal.clone(),
            index: RwLock::new(index),
        })
    }

    /// The client whose token this is.
    pub fn by_token(&self, token: &str) -> Option<ClientRecord> {
        let digest = token_digest(token);
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        let name = index.by_digest.get(&digest)?;
        let (record, stored) = index.by_name.get(name)?;
        bool::from(stored.ct_eq(&digest)).then(|| record.clone())
    }

    /// The client of this name (a client certificate's subject CN names one).
    pub fn by_name(&self, name: &str) -> Option<ClientRecord> {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        index.by_name.get(name).map(|(r, _)| r.clone())
    }

    pub fn list(&self) -> Vec<ClientRecord> {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        index.by_name.values().map(|(r, _)| r.clone()).collect()
    }

    /// Creates a client and returns it with its token (the only time the token exists in
    /// clear). Durable when it returns. Blocking.
    pub fn create(
        &self,
        name: &str,
        roles: &[Role],
        read_bodies: bool,
        created_by: &str,
    ) -> Result<(ClientRecord, String), ClientError> {
        validate_name(name)?;
        if roles.is_empty() {
            return Err(ClientError::Invalid(
                "`roles` must name at least one role".into(),
            ));
        }
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        let token = new_token()?;
        let digest = token_digest(&token);
        let record = ClientRecord {
            name: name.to_string(),
            roles,
            read_bodies,
            created_at_ms: crate::journal::now_ms(),
            created_by: created_by.to_string(),
            token_sha256: hex::encode(digest),
        };
        let bytes = serde_json::to_vec(&record).map_err(|e| ClientError::Corrupt(e.to_string()))?;
        {
            let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
            if index.by_name.contains_key(name) {
                return Err(ClientError::Exists);
            }
            let swapped = self.journal.clients_tree()?.compare_and_swap(
                name.as_bytes(),
                None as Option<&[u8]>,
                Some(bytes),
            )?;
            if swapped.is_err() {
                return Err(ClientError::Exists);
            }
            index.by_digest.insert(digest, name.to_string());
            index
                .by_name
                .insert(name.to_string(), (record.clone(), digest));
        }
        self.journal.flush_side_trees()?;
        Ok((record, token))
    }

    /// Deletes a client; its token is refused from the moment this is called. Blocking.
    pub fn delete(&self, name: &str) -> Result<(), ClientError> {
        {
            let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
            let Some((_, digest)) = index.by_name.remove(name) else {
                return Err(ClientError::NotFound);
            };
            index.by_digest.remove(&digest);
            self.journal.clients_tree()?.remove(name.as_bytes())?;
        }
        self.journal.flush_side_trees()?;
        Ok(())
    }
}

fn decode_digest(hex_digest: &str) -> Result<Digest, ClientError> {
    let bytes = hex::decode(hex_digest).map_err(|e| ClientError::Corrupt(e.to_string()))?;
    bytes
        .try_into()
        .map_err(|_| ClientError::Corrupt("token digest is not 32 bytes".into()))
}

/// 1 to 64 characters of `A-Z a-z 0-9 . _ -`, starting with a letter or digit; not `admin`.
/// (Names end up in certificates' CNs, audit entries and URLs.)
fn validate_name(name: &str) -> Result<(), ClientError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        return Err(ClientError::Invalid(
            "`name` must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
                .into(),
        ));
    }
    if name == BOOTSTRAP_NAME {
        return Err(ClientError::Invalid(format!(
            "`{BOOTSTRAP_NAME}` is the bootstrap token's name"
        )));
    }
    Ok(())
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/clients", web::get().to(list))
        .route("/clients", web::post().to(create))
        .route("/clients/{name}", web::delete().to(delete));
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewClient {
    name: String,
    roles: Vec<Role>,
    #[serde(default)]
    read_bodies: bool,
}

fn error(status: actix_web::http::StatusCode, message: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": message.to_string()}))
}

fn store_error(e: ClientError) -> HttpResponse {
    use actix_web::http::StatusCode as S;
    match e {
        ClientError::Invalid(m) => error(S::BAD_REQUEST, m),
        ClientError::Exists => error(S::CONFLICT, "a client with this name exists"),
        ClientError::NotFound => error(S::NOT_FOUND, "no such client"),
        other => {
            tracing::error!(error = %other, "client store");
            error(S::INTERNAL_SERVER_ERROR, "client store failed")
        }
    }
}

async fn list(caller: Caller, clients: web::Data<ApiClients>) -> actix_web::Result<HttpResponse> {
    caller.require(Role::Admin)?;
    let items: Vec<_> = clients.list().iter().map(ClientRecord::public).collect();
    Ok(HttpResponse::Ok().json(json!({ "clients": items })))
}

async fn create(
    caller: Caller,
    clients: web::Data<ApiClients>,
    state: web::Data<super::AdminState>,
    body: Result<web::Json<NewClient>, actix_web::Error>,
) -> actix_web::Result<HttpResponse> {
    caller.require(Role::Admin)?;
    let body = match body {
        Ok(b) => b.into_inner(),
        Err(e) => return Ok(super::json_body_error(e)),
    };
    let by = caller.name.clone();
    let created =
        web::block(move || clients.create(&body.name, &body.roles, body.read_bodies, &by))
            .await
            .map_err(actix_web::error::ErrorInternalServerError)?;
    let (record, token) = match created {
        Ok(c) => c,
        Err(e) => return Ok(store_error(e)),
    };
    audit::record(
        &state.journal,
        &caller,
        AuditAction {
            action: "create",
            target: &format!("client/{}", record.name),
            detail: json!({"roles": record.roles, "read_bodies": record.read_bodies}),
        },
    );
    let mut answer = record.public();
    answer["token"] = json!(token);
    Ok(HttpResponse::Created()
        // The token is in this body and nowhere else: no cache may keep it.
        .insert_header(("Cache-Control", "no-store"))
        .json(answer))
}

async fn delete(
    caller: Caller,
    clients: web::Data<ApiClients>,
    state: web::Data<super::AdminState>,
    name: web::Path<String>,
) -> actix_web::Result<HttpResponse> {
    caller.require(Role::Admin)?;
    let name = name.into_inner();
    let target = name.clone();
    let deleted = web::block(move || clients.delete(&target))
        .await
        .map_err(actix_web::error::ErrorInternalServerError)?;
    if let Err(e) = deleted {
        return Ok(store_error(e));
    }
    audit::record(
        &state.journal,
        &caller,
        AuditAction {
            action: "delete",
            target: &format!("client/{name}"),
            detail: serde_json::Value::Null,
        },
    );
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(dir: &std::path::Path) -> Journal {
        Journal::open(
            dir,
            &crate::config::JournalConfig {
                fsync: false,
                ..Default::default()
            },
            std::sync::Arc::new(crate::metrics::Metrics::new()),
        )
        .unwrap()
    }

    #[test]
    fn tokens_are_random_hashed_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let j = journal(dir.path());
        let clients = ApiClients::open(&j).unwrap();
        let (record, token) = clients
            .create("ops", &[Role::Operator], false, "admin")
            .unwrap();
        assert!(
            token.starts_with("orb_") && token.len() == 4 + 64,
            "{token}"
        );
        assert!(!record.read_bodies && record.caller(None).read_bodies);
        assert_eq!(clients.by_token(&token).unwrap().name, "ops");
        assert!(clients.by_token(&token[..token.len() - 1]).is_none());
        let (_, other) = clients
            .create("view", &[Role::Viewer], false, "admin")
            .unwrap();
        assert_ne!(token, other);
        assert!(!clients.by_token(&other).unwrap().caller(None).read_bodies);
        assert!(matches!(
            clients.create("ops", &[Role::Viewer], false, "admin"),
            Err(ClientError::Exists)
        ));
        // Stored: the digest, never the token.
        for entry in j.clients_tree().unwrap().iter() {
            let (_, v) = entry.unwrap();
            let text = String::from_utf8(v.to_vec()).unwrap();
            assert!(!text.contains(&token[4..]) && !text.contains(&other[4..]));
        }
        drop(clients);
        let reopened = ApiClients::open(&j).unwrap();
        assert_eq!(
            reopened.by_token(&token).unwrap().roles,
            vec![Role::Operator]
        );
        reopened.delete("ops").unwrap();
        assert!(reopened.by_token(&token).is_none());
        assert!(matches!(reopened.delete("ops"), Err(ClientError::NotFound)));
        assert!(ApiClients::open(&j).unwrap().by_token(&token).is_none());
        j.close();
    }

    #[test]
    fn names_are_checked() {
        for bad in ["", "admin", "-x", "a b", "a/b", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        for good in ["ops", "ci-bot.example_1", "A1"] {
            assert!(validate_name(good).is_ok(), "{good:?}");
        }
    }
}
