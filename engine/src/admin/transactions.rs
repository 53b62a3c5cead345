//! `GET /api/transactions` (search, newest first, cursor paging) and
//! `GET /api/transactions/{id}` (one transaction with its raw message and status events).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::audit::{self, AuditAction};
use super::{AdminState, Caller, Role};
use crate::journal::{Status, Transaction, TxFilter, TxId};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/transactions", web::get().to(list))
        .route("/transactions/{id}", web::get().to(detail))
        .route("/transactions/{id}/rerun", web::post().to(rerun));
}

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    control_id: Option<String>,
    limit: Option<usize>,
    cursor: Option<u64>,
}

fn bad_request(message: String) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({"error": message}))
}

/// RFC 3339 (`2026-12-01T10:00:00Z`) or Unix milliseconds.
fn parse_instant(name: &str, value: &str) -> Result<i64, HttpResponse> {
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(ms);
    }
    OffsetDateTime::parse(value, &Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| {
            bad_request(format!(
                "`{name}` must be an RFC 3339 time or Unix milliseconds"
            ))
        })
}

fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// The JSON shape of a transaction (times as RFC 3339, ids as numbers).
fn summary(tx: &Transaction) -> Value {
    let events: Vec<Value> = tx
        .events
        .iter()
        .map(|e| json!({"at": rfc3339(e.at_ms), "status": e.status, "reason": e.reason}))
        .collect();
    json!({
        "id": tx.id,
        "received_at": rfc3339(tx.received_at_ms),
        "status": tx.status,
        "listener": tx.meta.listener,
        "peer": tx.meta.peer,
        "control_id": tx.meta.control_id,
        "message_type": tx.meta.message_type,
        "sending_application": tx.meta.sending_application,
        "sending_facility": tx.meta.sending_facility,
        "receiving_application": tx.meta.receiving_application,
        "receiving_facility": tx.meta.receiving_facility,
        "version": tx.meta.version,
        "format": tx.meta.format,
        "origin": tx.meta.origin,
        "size": tx.size,
        "truncated": tx.truncated,
        "error": tx.error,
        "duplicate_of": tx.duplicate_of,
        "channels": tx.channels,
        "events": events,
    })
}

async fn list(
    caller: Caller,
    state: web::Data<AdminState>,
    query: Result<web::Query<ListQuery>, actix_web::Error>,
) -> HttpResponse {
    if let Err(denied) = caller.require(Role::Viewer) {
        return denied.error_response();
    }
    let query = match query {
        Ok(q) => q.into_inner(),
        Err(e) => return bad_request(e.to_string()),
    };
    let status = match query
        .status
        .as_deref()
        .map(str::parse::<Status>)
        .transpose()
    {
        Ok(s) => s,
        Err(e) => return bad_request(e),
    };
    let since = match query
        .since
        .as_deref()
        .map(|v| parse_instant("since", v))
        .transpose()
    {
        Ok(v) => v,
        Err(response) => return response,
    };
    let until = match query
        .until
        .as_deref()
        .map(|v| parse_instant("until", v))
        .transpose()
    {
        Ok(v) => v,
        Err(response) => return response,
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return bad_request(format!("`limit` must be between 1 and {MAX_LIMIT}"));
    }
    let filter = TxFilter {
        status,
        since_ms: since,
        until_ms: until,
        control_id: query.control_id,
        before: query.cursor.map(TxId),
        limit,
    };
    let journal = state.journal.clone();
    match web::block(move || journal.list(&filter)).await {
        Ok(Ok(page)) => HttpResponse::Ok().json(json!({
            "items": page.items.iter().map(summary).collect::<Vec<_>>(),
            "next_cursor": page.next_cursor,
        })),
        Ok(Err(e)) => HttpResponse::InternalServerError().json(json!({"error": e.to_string()})),
        Err(e) => HttpResponse::InternalServerError().json(json!({"error": e.to_string()})),
    }
}

async fn detail(
    caller: Caller,
    state: web::Data<AdminState>,
    id: web::Path<String>,
) -> HttpResponse {
    if let Err(denied) = caller.require(Role::Viewer) {
        return denied.error_response();
    }
    let Ok(id) = id.parse::<u64>().map(TxId) else {
        return bad_request("transaction ids are numbers".into());
    };
    let journal = state.journal.clone();
    let found = web::block(move || -> Result<_, crate::journal::JournalError> {
        Ok((journal.get(id)?, journal.raw(id)?, journal.steps(id)?))
    })
    .await;
    match found {
        Ok(Ok((Some(tx), raw, mut steps))) => {
            let mut body = summary(&tx);
            // Step outputs and script logs hold the message's data too: masked alike.
            let full = super::mask::may_read_bodies(&caller);
            if !full {
                for step in &mut steps {
                    step.output = step.output.take().map(|_| json!(super::mask::MASK));
                    step.logs.clear();
                }
            }
            body["steps"] = serde_json::to_value(&steps).unwrap_or_default();
            // HL7 is text; non-UTF-8 bytes (e.g. ISO 8859-1) are shown replaced, and the exact
            // bytes are also given in hex.
            if let Some(raw) = raw {
                let text = String::from_utf8_lossy(&raw).into_owned();
                match super::mask::mask_body(&caller, &text) {
                    Some(masked) => body["raw"] = Value::String(masked),
                    None => {
                        body["raw"] = Value::String(text);
                        if std::str::from_utf8(&raw).is_err() {
                            body["raw_hex"] = Value::String(hex::encode(&raw));
                        }
                    }
                }
            }
            if full {
                audit::record(
                    &state.journal,
                    &caller,
                    AuditAction {
                        action: "read_body",
                        target: &format!("transaction/{}", tx.id),
                        detail: Value::Null,
                    },
                );
            }
            HttpResponse::Ok().json(body)
        }
        Ok(Ok((None, _, _))) => HttpResponse::NotFound().json(json!({"error": "not found"})),
        Ok(Err(e)) => HttpResponse::InternalServerError().json(json!({"error": e.to_string()})),
        Err(e) => HttpResponse::InternalServerError().json(json!({"error": e.to_string()})),
    }
}

/// Runs a transaction through the channels that take it now (their current revisions).
async fn rerun(
    caller: Caller,
    state: web::Data<AdminState>,
    id: web::Path<String>,
) -> HttpResponse {
    if let Err(denied) = caller.require(Role::Operator) {
        return denied.error_response();
    }
    let Ok(id) = id.parse::<u64>().map(TxId) else {
        return bad_request("transaction ids are numbers".into());
    };
    let outcome = state.pipeline.rerun(id, None).await;
    if let Some(outcome) = &outcome {
        audit::record(
            &state.journal,
            &caller,
            AuditAction {
                action: "rerun",
                target: &format!("transaction/{id}"),
                detail: json!({"status": outcome.status}),
            },
        );
    }
    match outcome {
        None => HttpResponse::NotFound().json(json!({"error": "not found"})),
        Some(outcome) => HttpResponse::Ok().json(json!({
            "id": id,
            "status": outcome.status,
            "reason": outcome.reason,
        })),
    }
}
