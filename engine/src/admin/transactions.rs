//! Transactions: search, details, reruns, and the per-channel stats.
//!
//! - `GET /api/transactions` (viewer): search, newest first, cursor paging;
//! - `GET /api/transactions/{id}` (viewer): one transaction with its raw message, every step's
//!   output, the responses and the status events (reading the body is audited);
//! - `POST /api/transactions/{id}/rerun` (operator): run it again with the current channel
//!   revisions, as a new transaction linked to the original;
//! - `POST /api/transactions/rerun` (operator): the same for every match of a filter (JSON body),
//!   up to `max`;
//! - `GET /api/stats` (viewer): counts per channel and status, from counters the journal writer
//!   keeps on every status change (no scan).

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::audit::{self, parse_instant, AuditAction};
use super::{AdminState, Caller, Role};
use crate::journal::{Status, StepOutput, Transaction, TxFilter, TxId};
use crate::route::RerunError;

pub fn routes(cfg: &mut web::ServiceConfig) {
    // `/transactions/rerun` before `/transactions/{id}`: the literal must win.
    cfg.route("/transactions", web::get().to(list))
        .route("/transactions/rerun", web::post().to(rerun_many))
        .route("/transactions/{id}", web::get().to(detail))
        .route("/transactions/{id}/rerun", web::post().to(rerun_one))
        .route("/stats", web::get().to(stats));
}

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// Reruns by filter: default and ceiling of `max`.
const DEFAULT_RERUN_MAX: usize = 100;
const MAX_RERUN: usize = 1000;
/// Ceiling of `scan_limit` (records examined for one page).
const MAX_SCAN_LIMIT: usize = 100_000;

/// The search filter, shared by `GET /api/transactions` (query string) and
/// `POST /api/transactions/rerun` (JSON body).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Search {
    channel: Option<String>,
    status: Option<String>,
    since: Option<String>,
    until: Option<String>,
    control_id: Option<String>,
    message_type: Option<String>,
    /// PID-3 as `ID` or `ID^^^AUTHORITY` (compared through the same hash the journal stores).
    patient: Option<String>,
    /// Free text over raw messages (case-insensitive).
    q: Option<String>,
    limit: Option<usize>,
    cursor: Option<u64>,
    scan_limit: Option<usize>,
    /// Reruns only: how many transactions at most.
    max: Option<usize>,
}

fn bad_request(message: String) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({"error": message}))
}

fn server_error(e: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::InternalServerError().json(json!({"error": e.to_string()}))
}

/// `ID` or `ID^^^AUTHORITY` (PID-3's components 1 and 4) → the journal's patient key.
fn patient_key(patient: &str) -> String {
    let mut components = patient.split('^');
    let id = components.next().unwrap_or_default();
    let authority = components.nth(2).unwrap_or_default();
    crate::intake::patient_key_of(id, authority)
}

impl Search {
    /// The journal filter, or what is wrong with the request (for a 400).
    fn into_filter(self, limit: usize) -> Result<TxFilter, String> {
        let status = self
            .status
            .as_deref()
            .map(str::parse::<Status>)
            .transpose()?;
        let instant = |name, value: &Option<String>| {
            value.as_deref().map(|v| parse_instant(name, v)).transpose()
        };
        let since_ms = instant("since", &self.since)?;
        let until_ms = instant("until", &self.until)?;
        let scan_limit = self.scan_limit.unwrap_or(0);
        if scan_limit > MAX_SCAN_LIMIT {
            return Err(format!("`scan_limit` must be at most {MAX_SCAN_LIMIT}"));
        }
        let empty_is_none = |v: Option<String>| v.filter(|v| !v.is_empty());
        Ok(TxFilter {
            status,
            since_ms,
            until_ms,
            control_id: empty_is_none(self.control_id),
            channel: empty_is_none(self.channel),
            message_type: empty_is_none(self.message_type),
            patient_key: empty_is_none(self.patient).map(|p| patient_key(&p)),
            text: empty_is_none(self.q),
            before: self.cursor.map(TxId),
            limit,
            scan_limit,
        })
    }
}

fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// The JSON shape of a transaction (times as RFC 3339, ids as numbers).
/// A transaction as listed. For a caller who may not read bodies (`full` false), the values an
/// error or a reason quotes are masked: they come from the message (a bad date of birth, the
/// start of a frame that is not HL7).
fn summary(tx: &Transaction, full: bool) -> Value {
    let shown = |text: &Option<String>| -> Option<String> {
        match full {
            true => text.clone(),
            false => text.as_deref().map(super::mask::mask_quoted),
        }
    };
    let events: Vec<Value> = tx
        .events
        .iter()
        .map(|e| json!({"at": rfc3339(e.at_ms), "status": e.status, "reason": shown(&e.reason)}))
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
        "error": shown(&tx.error),
        "duplicate_of": tx.duplicate_of,
        "rerun_of": tx.rerun_of,
        "body_pruned": tx.body_pruned,
        "channels": tx.channels,
        "events": events,
    })
}

/// The one place a raw message body enters a response: masked for a viewer without
/// `read_bodies`. HL7 is text; non-UTF-8 bytes (e.g. ISO 8859-1) are shown replaced, and the
/// exact bytes are also given in hex.
fn put_raw_body(body: &mut Value, raw: &[u8], caller: &Caller) {
    let text = String::from_utf8_lossy(raw).into_owned();
    if let Some(masked) = super::mask::mask_body(caller, &text) {
        body["raw"] = Value::String(masked);
        return;
    }
    body["raw"] = Value::String(text);
    if std::str::from_utf8(raw).is_err() {
        body["raw_hex"] = Value::String(hex::encode(raw));
    }
}

async fn list(
    caller: Caller,
    state: web::Data<AdminState>,
    query: Result<web::Query<Search>, actix_web::Error>,
) -> Result<HttpResponse, actix_web::Error> {
    caller.require(Role::Viewer)?;
    let query = match query {
        Ok(q) => q.into_inner(),
        Err(e) => return Ok(bad_request(e.to_string())),
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Ok(bad_request(format!(
            "`limit` must be between 1 and {MAX_LIMIT}"
        )));
    }
    if query.max.is_some() {
        return Ok(bad_request("`max` is for reruns only".into()));
    }
    // Which messages match a text tells what they contain (an SSN, a name): a caller who
    // sees bodies masked may not search them either.
    let text_search = query.q.as_deref().is_some_and(|q| !q.is_empty());
    if text_search && !super::mask::may_read_bodies(&caller) {
        audit::denied(&state.journal, &caller, "GET", "/api/transactions?q");
        return Ok(HttpResponse::Forbidden().json(json!({
            "error": "`q` searches message bodies: it needs a client with read_bodies \
                      (or the operator role)"
        })));
    }
    let filter = match query.into_filter(limit) {
        Ok(f) => f,
        Err(message) => return Ok(bad_request(message)),
    };
    let scan_limit = if filter.scan_limit == 0 {
        crate::journal::DEFAULT_SCAN_LIMIT
    } else {
        filter.scan_limit
    };
    let full = super::mask::may_read_bodies(&caller);
    let journal = state.journal.clone();
    Ok(match web::block(move || journal.list(&filter)).await {
        Ok(Ok(page)) => HttpResponse::Ok().json(json!({
            "items": page.items.iter().map(|tx| summary(tx, full)).collect::<Vec<_>>(),
            "next_cursor": page.next_cursor,
            "scanned": page.scanned,
            "scan_limit": scan_limit,
            "scan_limit_reached": page.scan_limit_reached,
        })),
        Ok(Err(e)) => server_error(e),
        Err(e) => server_error(e),
    })
}

async fn detail(
    caller: Caller,
    state: web::Data<AdminState>,
    id: web::Path<String>,
) -> Result<HttpResponse, actix_web::Error> {
    caller.require(Role::Viewer)?;
    let Ok(id) = id.parse::<u64>().map(TxId) else {
        return Ok(bad_request("transaction ids are numbers".into()));
    };
    let journal = state.journal.clone();
    let found = web::block(move || -> Result<_, crate::journal::JournalError> {
        Ok((journal.get(id)?, journal.raw(id)?, journal.steps(id)?))
    })
    .await;
    Ok(match found {
        Ok(Ok((Some(tx), raw, mut steps))) => {
            // Step outputs, script logs and the values errors quote hold the message's data
            // too: masked alike.
            let full = super::mask::may_read_bodies(&caller);
            let mut body = summary(&tx, full);
            if !full {
                for step in &mut steps {
                    step.output = step
                        .output
                        .take()
                        .map(|_| StepOutput::of(&json!(super::mask::MASK)));
                    step.logs.clear();
                    step.error = step.error.as_deref().map(super::mask::mask_quoted);
                }
            }
            body["steps"] = serde_json::to_value(&steps).unwrap_or_default();
            if let Some(raw) = raw {
                put_raw_body(&mut body, &raw, &caller);
            }
            if full {
                audit::record(
                    &state.journal,
                    &caller,
                    AuditAction {
                        action: "read_body",
                        target: &format!("transaction/{id}"),
                        detail: json!({}),
                    },
                );
            }
            HttpResponse::Ok().json(body)
        }
        Ok(Ok((None, _, _))) => HttpResponse::NotFound().json(json!({"error": "not found"})),
        Ok(Err(e)) => server_error(e),
        Err(e) => server_error(e),
    })
}

fn rerun_error(e: RerunError) -> HttpResponse {
    let body = json!({"error": e.to_string()});
    match e {
        RerunError::NotFound(_) => HttpResponse::NotFound().json(body),
        RerunError::BodyPruned(_) | RerunError::NoChannel(_) => HttpResponse::Conflict().json(body),
        RerunError::Journal(_) => HttpResponse::InternalServerError().json(body),
    }
}

/// Runs one transaction again, now, and answers with the new run's outcome.
async fn rerun_one(
    caller: Caller,
    state: web::Data<AdminState>,
    id: web::Path<String>,
) -> Result<HttpResponse, actix_web::Error> {
    caller.require(Role::Operator)?;
    let Ok(id) = id.parse::<u64>().map(TxId) else {
        return Ok(bad_request("transaction ids are numbers".into()));
    };
    let work = match state.pipeline.start_rerun(id).await {
        Ok(work) => work,
        Err(e) => return Ok(rerun_error(e)),
    };
    let new_id = work.id;
    let channels: Vec<Value> = work
        .channels
        .iter()
        .map(|c| json!({"name": c.name(), "revision": c.revision}))
        .collect();
    audit::record(
        &state.journal,
        &caller,
        AuditAction {
            action: "rerun",
            target: &format!("transaction/{id}"),
            detail: json!({"rerun": new_id}),
        },
    );
    let outcome = state.pipeline.process_now(work).await;
    Ok(HttpResponse::Ok().json(json!({
        "id": new_id,
        "rerun_of": id,
        "channels": channels,
        "status": outcome.status,
        "reason": outcome.reason,
    })))
}

/// Reruns every transaction matching the filter in the body (at most `max`, newest first).
/// The new transactions are journaled before the answer and processed in the background.
async fn rerun_many(
    caller: Caller,
    state: web::Data<AdminState>,
    body: Result<web::Json<Search>, actix_web::Error>,
) -> Result<HttpResponse, actix_web::Error> {
    caller.require(Role::Operator)?;
    let search = match body {
        Ok(b) => b.into_inner(),
        Err(e) => return Ok(super::json_body_error(e)),
    };
    let max = search.max.unwrap_or(DEFAULT_RERUN_MAX);
    if max == 0 || max > MAX_RERUN {
        return Ok(bad_request(format!(
            "`max` must be between 1 and {MAX_RERUN}"
        )));
    }
    if search.limit.is_some() || search.cursor.is_some() {
        return Ok(bad_request(
            "reruns take `max`, not `limit` or `cursor`".into(),
        ));
    }
    let no_filter = search.channel.is_none()
        && search.status.is_none()
        && search.since.is_none()
        && search.until.is_none()
        && search.control_id.is_none()
        && search.message_type.is_none()
        && search.patient.is_none()
        && search.q.is_none();
    if no_filter {
        return Ok(bad_request(
            "a rerun by filter needs at least one filter".into(),
        ));
    }
    let filter = match search.into_filter(max) {
        Ok(f) => f,
        Err(message) => return Ok(bad_request(message)),
    };
    let journal = state.journal.clone();
    let page = match web::block(move || journal.list(&filter)).await {
        Ok(Ok(page)) => page,
        Ok(Err(e)) => return Ok(server_error(e)),
        Err(e) => return Ok(server_error(e)),
    };
    let mut started = Vec::new();
    let mut skipped = Vec::new();
    // Oldest first, so that per-patient order is kept among the reruns.
    for tx in page.items.iter().rev() {
        match state.pipeline.start_rerun(tx.id).await {
            Ok(work) => {
                started.push(json!({"id": work.id, "rerun_of": tx.id}));
                state.pipeline.dispatch(work);
            }
            Err(e) => skipped.push(json!({"id": tx.id, "reason": e.to_string()})),
        }
    }
    audit::record(
        &state.journal,
        &caller,
        AuditAction {
            action: "rerun",
            target: "transactions",
            detail: json!({"started": started.len(), "skipped": skipped.len()}),
        },
    );
    Ok(HttpResponse::Ok().json(json!({
        "matched": page.items.len(),
        "more": page.next_cursor.is_some(),
        "scanned": page.scanned,
        "scan_limit_reached": page.scan_limit_reached,
        "started": started,
        "skipped": skipped,
    })))
}

/// Counts per channel and status, from the journal's `stats` counters (kept by the writer on
/// every status change and prune; no scan), plus the transactions per status.
async fn stats(
    caller: Caller,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, actix_web::Error> {
    caller.require(Role::Viewer)?;
    let journal = state.journal.clone();
    let per_channel = match web::block(move || journal.stats()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Ok(server_error(e)),
        Err(e) => return Ok(server_error(e)),
    };
    let mut totals = serde_json::Map::new();
    let mut no_channel = serde_json::Map::new();
    let mut channels = Vec::new();
    for entry in &per_channel {
        let counts: serde_json::Map<String, Value> = entry
            .counts
            .iter()
            .map(|(s, n)| (s.as_str().to_string(), json!(n)))
            .collect();
        if entry.channel.is_empty() {
            no_channel = counts.clone();
        } else if !counts.is_empty() {
            let total: i64 = entry.counts.values().sum();
            channels.push(json!({"channel": entry.channel, "counts": counts, "total": total}));
        }
    }
    // A transaction several channels took counts once per channel above; the totals count
    // transactions (the journal's status gauge, also kept by the writer).
    for status in Status::ALL {
        let n = state
            .metrics
            .transactions_by_status
            .with_label_values(&[status.as_str()])
            .get();
        if n != 0 {
            totals.insert(status.as_str().to_string(), json!(n));
        }
    }
    Ok(HttpResponse::Ok().json(json!({
        "source": "counters",
        "channels": channels,
        "no_channel": no_channel,
        "totals": totals,
    })))
}
