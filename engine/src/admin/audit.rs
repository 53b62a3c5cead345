//! The audit trail: every API call that changes something, and every read of a message body,
//! as an event in the journal (who, when, what, target, from where, outcome). Append-only:
//! nothing in the API changes or deletes an audit event; `GET /api/audit` (admin) lists them.
//! Only retention deletes them, by age, when `retention.audit_max_age_days` says so
//! ([`prune_before`]).
//!
//! Events live in the journal's `audit` tree, keyed by time: 8 bytes of Unix milliseconds then
//! 8 bytes of a sled-generated sequence number, both big-endian, so that byte order is time order
//! and two events in the same millisecond never collide.

use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::auth::{Caller, Role};
use crate::journal::{now_ms, Journal};

/// One thing a caller did, e.g. `("rerun", "transaction/42")` or `("read_body", "transaction/42")`.
#[derive(Debug, Clone)]
pub struct AuditAction<'a> {
    /// A short verb: `create`, `update`, `delete`, `enable`, `disable`, `reload`, `rerun`,
    /// `read_body`, `register`...
    pub action: &'a str,
    /// What it was done to: `channel/adt-to-fhir`, `transaction/42`, `client/ops`...
    pub target: &'a str,
    /// Anything worth keeping (never a message body or a secret).
    pub detail: serde_json::Value,
}

/// An audit event as stored and listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Opaque, ordered: pass the last one seen as `cursor` for the next page.
    #[serde(default, skip_deserializing)]
    pub id: String,
    pub at: String,
    pub at_ms: i64,
    /// The API client's name (`admin` for the bootstrap token).
    pub actor: String,
    pub roles: Vec<Role>,
    /// The caller's address.
    pub peer: Option<String>,
    pub action: String,
    pub target: String,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
    /// `ok` for what was done; `denied` for a call the caller's role did not allow; `refused`
    /// for a credential that was not accepted (action `authenticate`).
    pub outcome: String,
}

/// Records an audit event. Failures are logged, not returned: an audit write that fails must
/// not turn a successful change into an error the caller would retry.
pub fn record(journal: &Journal, caller: &Caller, what: AuditAction<'_>) {
    record_outcome(journal, caller, what, "ok");
}

/// Middleware for the embedded CDR under `/fhir`: every write that succeeded (POST, PUT, PATCH,
/// DELETE answered 2xx, searches by POST aside) is an audit event, as the API's changes are. The
/// target is the request path only: a conditional update's query names a patient identifier.
pub async fn fhir_writes(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    use actix_web::HttpMessage;
    let method = req.method().clone();
    let path = req.path().to_string();
    let write =
        !matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS") && !path.ends_with("/_search");
    let caller = req.extensions().get::<Caller>().cloned();
    let journal = req
        .app_data::<actix_web::web::Data<super::AdminState>>()
        .map(|s| s.journal.clone());
    let res = next.call(req).await?;
    if let (true, Some(caller), Some(journal)) = (write, caller, journal) {
        if res.status().is_success() {
            record(
                &journal,
                &caller,
                AuditAction {
                    action: "fhir_write",
                    target: &path,
                    detail: serde_json::json!({"method": method.as_str(), "status": res.status().as_u16()}),
                },
            );
        }
    }
    Ok(res.map_into_boxed_body())
}

/// [`record`] with an outcome other than `ok` (the auth middleware records `denied`).
pub fn record_outcome(journal: &Journal, caller: &Caller, what: AuditAction<'_>, outcome: &str) {
    let at_ms = now_ms();
    let event = AuditEvent {
        id: String::new(),
        at: rfc3339(at_ms),
        at_ms,
        actor: caller.name.clone(),
        roles: caller.roles.clone(),
        peer: caller.peer.clone(),
        action: what.action.to_string(),
        target: what.target.to_string(),
        detail: what.detail,
        outcome: outcome.to_string(),
    };
    let written = (|| -> Result<(), String> {
        let tree = journal.audit_tree().map_err(|e| e.to_string())?;
        let seq = journal.generate_id().map_err(|e| e.to_string())?;
        let value = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
        tree.insert(key(at_ms, seq), value)
            .map_err(|e| e.to_string())?;
        Ok(())
    })();
    match written {
        Ok(()) => flush_soon(journal),
        Err(error) => tracing::error!(
            %error,
            actor = %event.actor,
            action = %event.action,
            target = %event.target,
            "audit event not written"
        ),
    }
}

/// The journal's writer flushes sled with every batch of messages, but an idle engine would
/// keep a new audit event only in memory: flush on a blocking thread, at most one pending flush
/// at a time (events recorded meanwhile ride along with it).
fn flush_soon(journal: &Journal) {
    static PENDING: AtomicBool = AtomicBool::new(false);
    if PENDING.swap(true, Ordering::AcqRel) {
        return;
    }
    let journal = journal.clone();
    let flush = move || {
        PENDING.store(false, Ordering::Release);
        if let Err(error) = journal.flush_side_trees() {
            tracing::error!(%error, "audit flush failed");
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn_blocking(flush);
        }
        Err(_) => flush(),
    }
}

fn key(at_ms: i64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&(at_ms.max(0) as u64).to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Deletes the audit events recorded before `cutoff_ms` (Unix ms), oldest first, and flushes;
/// returns how many went. Blocking: run it on the blocking pool.
pub fn prune_before(journal: &Journal, cutoff_ms: i64) -> Result<usize, String> {
    let tree = journal.audit_tree().map_err(|e| e.to_string())?;
    let end = key(cutoff_ms, 0);
    let mut removed = 0;
    for entry in tree.range(..end) {
        let (k, _) = entry.map_err(|e| e.to_string())?;
        tree.remove(k).map_err(|e| e.to_string())?;
        removed += 1;
    }
    if removed > 0 {
        journal.flush_side_trees().map_err(|e| e.to_string())?;
    }
    Ok(removed)
}

pub(crate) fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// A `since`/`until` query value (here and in `GET /api/transactions`): RFC 3339
/// (`2026-12-01T10:00:00Z`) or Unix milliseconds.
pub(super) fn parse_instant(name: &str, value: &str) -> Result<i64, String> {
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(ms);
    }
    OffsetDateTime::parse(value, &Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| format!("`{name}` must be an RFC 3339 time or Unix milliseconds"))
}

/// Filters of `GET /api/audit`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub since: Option<String>,
    pub until: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// A page never walks more than this many events (filters on actor/action are checked on each
/// event): an expensive query answers with a cursor instead of holding a worker.
const MAX_SCAN: usize = 100_000;

/// One page of events, newest first.
#[derive(Debug, Serialize)]
pub struct AuditPage {
    pub items: Vec<AuditEvent>,
    pub next_cursor: Option<String>,
}

/// Lists events matching `query`, newest first. Blocking.
pub fn list(journal: &Journal, query: &AuditQuery) -> Result<AuditPage, String> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(format!("`limit` must be between 1 and {MAX_LIMIT}"));
    }
    let since = query
        .since
        .as_deref()
        .map(|v| parse_instant("since", v))
        .transpose()?;
    let until = query
        .until
        .as_deref()
        .map(|v| parse_instant("until", v))
        .transpose()?;
    let start = key(since.unwrap_or(0), 0).to_vec();
    let mut end = match until {
        Some(u) => key(u.saturating_add(1), 0).to_vec(),
        None => vec![0xff; 17],
    };
    if let Some(cursor) = &query.cursor {
        let c = hex::decode(cursor)
            .ok()
            .filter(|c| c.len() == 16)
            .ok_or("`cursor` must be the next_cursor of a previous page")?;
        if c < end {
            end = c;
        }
    }
    let mut items = Vec::new();
    let mut last_key: Option<Vec<u8>> = None;
    let mut more = false;
    let tree = journal.audit_tree().map_err(|e| e.to_string())?;
    for (scanned, entry) in tree.range(start..end).rev().enumerate() {
        let (k, v) = entry.map_err(|e| e.to_string())?;
        if items.len() == limit || scanned == MAX_SCAN {
            more = true;
            break;
        }
        last_key = Some(k.to_vec());
        let mut event: AuditEvent = match serde_json::from_slice(&v) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "corrupt audit event skipped");
                continue;
            }
        };
        if query.actor.as_ref().is_some_and(|a| *a != event.actor)
            || query.action.as_ref().is_some_and(|a| *a != event.action)
        {
            continue;
        }
        event.id = hex::encode(&k);
        items.push(event);
    }
    let next_cursor = more.then(|| last_key.map(hex::encode)).flatten();
    Ok(AuditPage { items, next_cursor })
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/audit", web::get().to(list_route));
}

async fn list_route(
    caller: Caller,
    state: web::Data<super::AdminState>,
    query: Result<web::Query<AuditQuery>, actix_web::Error>,
) -> actix_web::Result<HttpResponse> {
    caller.require(Role::Admin)?;
    let query = match query {
        Ok(q) => q.into_inner(),
        Err(e) => return Ok(HttpResponse::BadRequest().json(json!({"error": e.to_string()}))),
    };
    let journal = state.journal.clone();
    let page = web::block(move || list(&journal, &query))
        .await
        .map_err(actix_web::error::ErrorInternalServerError)?;
    Ok(match page {
        Ok(page) => HttpResponse::Ok().json(page),
        Err(message) => HttpResponse::BadRequest().json(json!({"error": message})),
    })
}

/// For the auth middleware: records a request whose credential (token or certificate) was
/// refused. The actor is unknown; the peer address says where it came from.
pub(crate) fn unauthenticated(journal: &Journal, peer: Option<String>, method: &str, path: &str) {
    let nobody = Caller {
        name: "(unauthenticated)".into(),
        roles: Vec::new(),
        read_bodies: false,
        peer,
    };
    record_outcome(
        journal,
        &nobody,
        AuditAction {
            action: "authenticate",
            target: &format!("{method} {path}"),
            detail: serde_json::Value::Null,
        },
        "refused",
    );
}

/// For the auth middleware: records a request the caller's role did not allow.
pub(crate) fn denied(journal: &Journal, caller: &Caller, method: &str, path: &str) {
    record_outcome(
        journal,
        caller,
        AuditAction {
            action: "denied",
            target: &format!("{method} {path}"),
            detail: serde_json::Value::Null,
        },
        "denied",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_journal(dir: &std::path::Path) -> Journal {
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
    fn events_are_listed_newest_first_with_filters_and_cursors() {
        let dir = tempfile::tempdir().unwrap();
        let journal = open_journal(dir.path());
        let alice = Caller {
            name: "alice".into(),
            roles: vec![Role::Operator],
            read_bodies: true,
            peer: Some("192.0.2.7:5000".into()),
        };
        let admin = Caller::bootstrap(None);
        for i in 0..5 {
            record(
                &journal,
                &alice,
                AuditAction {
                    action: "rerun",
                    target: &format!("transaction/{i}"),
                    detail: serde_json::Value::Null,
                },
            );
        }
        record(
            &journal,
            &admin,
            AuditAction {
                action: "create",
                target: "client/x",
                detail: json!({"roles": ["viewer"]}),
            },
        );
        let all = list(&journal, &AuditQuery::default()).unwrap();
        assert_eq!(all.items.len(), 6);
        assert_eq!(all.items[0].action, "create", "newest first");
        assert_eq!(all.items[5].target, "transaction/0");
        assert_eq!(all.items[1].peer.as_deref(), Some("192.0.2.7:5000"));
        let q = AuditQuery {
            actor: Some("alice".into()),
            limit: Some(2),
            ..Default::default()
        };
        let first = list(&journal, &q).unwrap();
        assert_eq!(first.items.len(), 2);
        assert_eq!(first.items[0].target, "transaction/4");
        let second = list(
            &journal,
            &AuditQuery {
                cursor: first.next_cursor.clone(),
                ..q
            },
        )
        .unwrap();
        assert_eq!(second.items[0].target, "transaction/2");
        let none = list(
            &journal,
            &AuditQuery {
                until: Some("2000-01-01T00:00:00Z".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(none.items.is_empty());
        assert!(list(
            &journal,
            &AuditQuery {
                cursor: Some("zz".into()),
                ..Default::default()
            }
        )
        .is_err());
        journal.close();
    }

    #[test]
    fn retention_deletes_only_events_older_than_its_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let journal = open_journal(dir.path());
        let tree = journal.audit_tree().unwrap();
        let event = |target: &str| {
            serde_json::to_vec(&json!({
                "at": "", "actor": "a", "roles": [], "action": "rerun",
                "target": target, "detail": null, "outcome": "ok"
            }))
            .unwrap()
        };
        let day = crate::journal::retention::DAY_MS;
        let now = now_ms();
        for (age_days, seq) in [(400, 1), (40, 2), (1, 3)] {
            tree.insert(key(now - age_days * day, seq), event(&format!("t{seq}")))
                .unwrap();
        }
        assert_eq!(prune_before(&journal, now - 30 * day).unwrap(), 2);
        let left: Vec<_> = tree.iter().map(|e| e.unwrap().0).collect();
        assert_eq!(left, vec![sled::IVec::from(&key(now - day, 3)[..])]);
        assert_eq!(prune_before(&journal, now - 30 * day).unwrap(), 0);
    }
}
