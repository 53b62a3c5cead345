//! The HTTP ingest port (5001 by default): channels with an `http` source own a path on it.
//!
//! `POST <path>` with
//! - HL7 v2 (`application/hl7-v2`, `x-application/hl7-v2+er7`, `text/plain`): the answer is the
//!   HL7 ACK, HTTP 200 for AA/CA, 422 for AE/CE, 503 (with `Retry-After`) when the message was
//!   not stored or its destination is down, 400 for bytes that are not HL7 at all;
//! - FHIR JSON (`application/fhir+json`), C-CDA (`application/xml`, `application/cda+xml`): 202
//!   with the transaction id once it is journaled (on-delivery channels: 200 once delivered,
//!   422 failed, 503 queued); a body that is not such a document is journaled as `failed` and
//!   answered 400 with an OperationOutcome naming the problem;
//! - CSV (`text/csv`): spooled to disk, then each row journaled as its own transaction; 202 with
//!   the row count and ids.
//!
//! `/hl7v2` is built in: HL7 v2 posted there is taken by the channels of the shared MLLP port
//! (journaled with listener `http` and origin `/hl7v2`), unless a channel claims the path.
//!
//! A path no channel owns is 404, an unknown or mismatching `Content-Type` 415, a body over
//! `http.max_body_bytes` 413, missing or wrong client credentials 401.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{header, ConnectionType, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use futures_util::StreamExt;
use subtle::ConstantTimeEq;

use super::ListenError;
use crate::channel::def::{HttpAuthDef, HL7_OVER_HTTP_LISTENER};
use crate::channel::{Channels, SourceKind};
use crate::config::HttpConfig;
use crate::format::Format;
use crate::hl7::AckCode;
use crate::ingest::{Body, Document, Origin};
use crate::intake::{Arrival, Intake};
use crate::journal::{Journal, Status};
use crate::metrics::Metrics;
use crate::route::Pipeline;

/// The path where HL7 v2 reaches the shared MLLP channels over HTTP.
pub const SHARED_HL7_PATH: &str = "/hl7v2";

/// A CSV answer lists every transaction id up to this many rows.
const LIST_IDS_UP_TO: usize = 1000;

/// Request-body chunks waiting for the spool writer (actix hands them over in up to 64 KiB).
const SPOOL_CHUNKS_IN_FLIGHT: usize = 16;

/// What the handlers share.
#[derive(Clone)]
struct IngestState {
    journal: Journal,
    metrics: Arc<Metrics>,
    pipeline: Pipeline,
    channels: Channels,
    max_body_bytes: usize,
    /// Longest wait for the next piece of a body (`http.body_idle_timeout_secs`).
    body_idle: Duration,
    /// Where CSV bodies are written before they are streamed row by row.
    spool_dir: PathBuf,
}

/// Binds the ingest port; returns the server (await or spawn it) and its addresses.
pub fn server(
    config: &HttpConfig,
    journal: Journal,
    metrics: Arc<Metrics>,
    pipeline: Pipeline,
    data_dir: &std::path::Path,
) -> Result<(actix_web::dev::Server, Vec<SocketAddr>), ListenError> {
    let tls = crate::tls::server_config(&config.tls)?;
    let state = web::Data::new(IngestState {
        journal,
        metrics,
        channels: pipeline.channels.clone(),
        pipeline,
        max_body_bytes: config.max_body_bytes,
        body_idle: Duration::from_secs(config.body_idle_timeout_secs),
        spool_dir: data_dir.join("spool").join("http"),
    });
    let factory = move || {
        App::new()
            .app_data(state.clone())
            // The body is read by hand (size limit, spooling), so no extractor limits apply.
            .default_service(web::to(ingest))
    };
    let addr = config.addr;
    let bind_err = |source| ListenError::Bind { addr, source };
    let workers = if config.workers == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        config.workers
    };
    let server = HttpServer::new(factory)
        .workers(workers)
        .max_connections(config.max_connections.div_ceil(workers).max(1))
        .disable_signals()
        .shutdown_timeout(5);
    let server = match tls {
        None => server.bind(addr).map_err(bind_err)?,
        Some(config) => server
            .bind_rustls_0_23(addr, Arc::unwrap_or_clone(config))
            .map_err(bind_err)?,
    };
    let addrs = server.addrs();
    Ok((server.run(), addrs))
}

/// A refusal before anything is journaled (wrong path, method, type, size, credentials).
fn refuse(status: StatusCode, text: &str) -> HttpResponse {
    HttpResponse::build(status).json(operation_outcome("error", refusal_code(status), text))
}

/// A body over `http.max_body_bytes`, declared or as it arrives.
fn too_large() -> HttpResponse {
    refuse(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
}

fn refusal_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "login",
        404 => "not-found",
        413 => "too-long",
        415 | 400 => "structure",
        _ => "processing",
    }
}

fn operation_outcome(severity: &str, code: &str, text: &str) -> serde_json::Value {
    serde_json::json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": text}]
    })
}

/// One request; a refusal that journaled nothing (wrong path, method, type, size,
/// credentials, a stalled or broken body, not stored) is counted, as nothing else shows it.
async fn ingest(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<IngestState>,
) -> HttpResponse {
    let response = ingest_request(&req, payload, &state).await;
    let status = response.status();
    if (status.is_client_error() || status.is_server_error())
        && !response.headers().contains_key("x-orbiter-transaction")
    {
        state
            .metrics
            .http_refused_total
            .with_label_values(&[status.as_str()])
            .inc();
        tracing::debug!(
            path = %req.path(),
            peer = %req.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
            status = status.as_u16(),
            "ingest request refused, nothing journaled"
        );
    }
    response
}

async fn ingest_request(
    req: &HttpRequest,
    mut payload: web::Payload,
    state: &IngestState,
) -> HttpResponse {
    let path = req.path().to_string();
    let set = state.channels.current();
    let owners: Vec<_> = set
        .channels
        .iter()
        .filter(|c| c.def.enabled && c.def.source.kind == SourceKind::Http)
        .filter(|c| c.def.source.path.as_deref() == Some(path.as_str()))
        .cloned()
        .collect();
    // `/hl7v2` is built in: unless a channel claims it, HL7 v2 posted there goes to the
    // channels of the shared MLLP port, so every HL7 channel works over both.
    let shared_hl7 = owners.is_empty() && path == SHARED_HL7_PATH;
    if owners.is_empty() && !shared_hl7 {
        return refuse(
            StatusCode::NOT_FOUND,
            "no channel takes documents at this path",
        );
    }
    if req.method() != actix_web::http::Method::POST {
        let mut response = refuse(StatusCode::METHOD_NOT_ALLOWED, "only POST is accepted");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return response;
    }
    for channel in &owners {
        if let Some(auth) = &channel.def.source.auth {
            if let Err(refusal) = authorized(auth, req) {
                // Logged so that whoever sets up a sender sees why it is refused (never what
                // it presented).
                let peer = req.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                let presented = req.headers().contains_key(header::AUTHORIZATION);
                match refusal {
                    AuthRefusal::Credentials => tracing::warn!(
                        channel = %channel.name(),
                        %path,
                        %peer,
                        presented,
                        "ingest request refused: no or wrong credentials"
                    ),
                    // Not the sender's fault: every request is refused until it is set.
                    AuthRefusal::SecretUnset(variable) => tracing::warn!(
                        channel = %channel.name(),
                        %path,
                        %peer,
                        %variable,
                        "ingest request refused: the channel's [source.auth] secret is not set \
                         (its environment variable is unset or empty in the engine), so no \
                         credentials are taken"
                    ),
                }
                return HttpResponse::Unauthorized()
                    .insert_header((header::WWW_AUTHENTICATE, challenge(auth)))
                    .json(operation_outcome("error", "login", "unauthorized"));
            }
        }
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // What this path takes: its channel's declared format, HL7 v2 at the shared path, else any.
    let takes: Vec<Format> = match owners.iter().find_map(|c| c.def.source.format) {
        Some(declared) => vec![declared],
        None if shared_hl7 => vec![Format::Hl7v2],
        None => Format::ALL.to_vec(),
    };
    let Some(format) = Format::from_content_type(content_type) else {
        let shown = if content_type.is_empty() {
            "no Content-Type".to_string()
        } else {
            format!("Content-Type {content_type:?}")
        };
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("{shown}: this path takes {}", described(&takes)),
        );
    };
    if !takes.contains(&format) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!("this path takes {}, not {format}", described(&takes)),
        );
    }
    // A compressed body would be journaled as its compressed bytes and refused as "not HL7",
    // "not JSON" or a CSV header "not UTF-8": say what is wrong instead.
    if let Some(coding) = req.headers().get(header::CONTENT_ENCODING) {
        let coding = coding.to_str().unwrap_or("?").trim();
        if !coding.is_empty() && !coding.eq_ignore_ascii_case("identity") {
            let mut refused = refuse(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!("Content-Encoding {coding:?} is not taken: send the body uncompressed"),
            );
            refused.headers_mut().insert(
                header::ACCEPT_ENCODING,
                header::HeaderValue::from_static("identity"),
            );
            return refused;
        }
    }
    let declared_len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared_len.is_some_and(|n| n > state.max_body_bytes) {
        return too_large();
    }
    let peer = req.peer_addr().map(|a| a.to_string());
    let (listener, source) = if shared_hl7 {
        (HL7_OVER_HTTP_LISTENER.to_string(), SourceKind::Mllp)
    } else {
        (format!("http:{path}"), SourceKind::Http)
    };
    let intake = Intake::new(
        state.journal.clone(),
        state.metrics.clone(),
        &listener,
        source,
        Some(state.pipeline.clone()),
    );
    if format == Format::Csv {
        let charset = match crate::format::csv::CsvEncoding::from_content_type(content_type) {
            Ok(charset) => charset,
            Err(charset) => {
                return refuse(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    &format!(
                        "charset {charset:?} is not one a CSV path reads: send UTF-8 or \
                         ISO-8859-1 (`text/csv; charset=ISO-8859-1`)"
                    ),
                )
            }
        };
        return ingest_csv(state, &intake, &mut payload, path, peer, charset).await;
    }
    let body = match read_body(&mut payload, state.max_body_bytes, state.body_idle).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let arrival = Arrival {
        peer,
        origin: Some(path),
        origin_key: None,
    };
    match format {
        Format::Hl7v2 => {
            // As on the MLLP port: from the whole message read to its ACK ready to send.
            let read_at = std::time::Instant::now();
            let reply = intake.submit_hl7(body, arrival).await;
            state
                .metrics
                .ack_latency_seconds
                .with_label_values(&[&listener])
                .observe(read_at.elapsed().as_secs_f64());
            hl7_reply(reply, content_type)
        }
        _ => {
            let facts = crate::format::facts(format, &body);
            match intake.submit_document(facts, body, arrival).await {
                Err(e) => HttpResponse::ServiceUnavailable()
                    .insert_header((header::RETRY_AFTER, "5"))
                    .json(operation_outcome("error", "transient", e.not_stored())),
                Ok(reply) => document_reply(reply),
            }
        }
    }
}

/// The formats a path takes, with their `Content-Type`s: `ccda (application/xml,
/// application/cda+xml or text/xml)`.
fn described(formats: &[Format]) -> String {
    let one = |f: &Format| {
        let types = f.content_types();
        let (last, rest) = types.split_last().expect("every format has a type");
        if rest.is_empty() {
            format!("{f} ({last})")
        } else {
            format!("{f} ({} or {last})", rest.join(", "))
        }
    };
    formats.iter().map(one).collect::<Vec<_>>().join(", ")
}

/// The next piece of a body; `Err(408)` when none comes within `idle`.
async fn next_chunk(
    payload: &mut web::Payload,
    idle: Duration,
) -> Result<Option<Result<Bytes, actix_web::error::PayloadError>>, HttpResponse> {
    tokio::time::timeout(idle, payload.next())
        .await
        .map_err(|_| {
            let mut refused = refuse(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "request body stalled: nothing received for {} s",
                    idle.as_secs()
                ),
            );
            // The rest of the body will not be read: the connection cannot be reused.
            refused
                .head_mut()
                .set_connection_type(ConnectionType::Close);
            refused
        })
}

/// Reads the whole body, refusing past `limit` or when it stalls for `idle`.
async fn read_body(
    payload: &mut web::Payload,
    limit: usize,
    idle: Duration,
) -> Result<Bytes, HttpResponse> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = next_chunk(payload, idle).await? {
        let chunk =
            chunk.map_err(|_| refuse(StatusCode::BAD_REQUEST, "request body unreadable"))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The ACK as the response body, with an HTTP status that tells an HTTP client the same.
fn hl7_reply(reply: crate::intake::AckReply, content_type: &str) -> HttpResponse {
    let status = match reply.code {
        AckCode::Accept => StatusCode::OK,
        AckCode::Error => StatusCode::UNPROCESSABLE_ENTITY,
        // Not stored, or stored but its destination is down: the sender should resend later.
        AckCode::Reject if reply.id.is_none() || reply.queued => StatusCode::SERVICE_UNAVAILABLE,
        AckCode::Reject => StatusCode::BAD_REQUEST,
    };
    let mut response = HttpResponse::build(status);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.insert_header((header::RETRY_AFTER, "30"));
    }
    if let Some(id) = reply.id {
        response.insert_header(("X-Orbiter-Transaction", id.to_string()));
    }
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("text/plain")
        .trim();
    response
        .content_type(essence.to_string())
        .body(reply.ack.unwrap_or_default())
}

fn document_reply(reply: crate::intake::DocumentReply) -> HttpResponse {
    let id = reply.id.to_string();
    if let Some(reason) = &reply.refused {
        return HttpResponse::BadRequest()
            .insert_header(("X-Orbiter-Transaction", id))
            .json(operation_outcome("error", "structure", reason));
    }
    let (status, state, reason) = match &reply.delivery {
        None => (StatusCode::ACCEPTED, "received", None),
        Some(outcome) => match outcome.status {
            Status::Failed => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "failed",
                outcome.reason.clone(),
            ),
            Status::Queued => (
                StatusCode::SERVICE_UNAVAILABLE,
                "queued",
                outcome.reason.clone(),
            ),
            Status::Filtered => (StatusCode::OK, "filtered", outcome.reason.clone()),
            _ => (StatusCode::OK, "delivered", None),
        },
    };
    let mut response = HttpResponse::build(status);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        // As for HL7: its destination is down; the engine retries it, a resend waits as long.
        response.insert_header((header::RETRY_AFTER, "30"));
    }
    response
        .insert_header(("X-Orbiter-Transaction", id.clone()))
        .json(serde_json::json!({
            "id": id,
            "status": state,
            "reason": reason,
            "already": reply.already,
        }))
}

/// CSV: written to a spool file as it arrives (memory stays flat for large files), then
/// streamed through the journal row by row.
async fn ingest_csv(
    state: &IngestState,
    intake: &Intake,
    payload: &mut web::Payload,
    path: String,
    peer: Option<String>,
    charset: Option<crate::format::csv::CsvEncoding>,
) -> HttpResponse {
    let unavailable = || {
        HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, "5"))
            .json(operation_outcome(
                "error",
                "transient",
                "not stored; please resend",
            ))
    };
    if tokio::fs::create_dir_all(&state.spool_dir).await.is_err() {
        return unavailable();
    }
    let spool = state
        .spool_dir
        .join(format!("{:016x}.csv", rand::random::<u64>()));
    // One blocking thread writes the whole body, chunk by chunk as they arrive (at most
    // `SPOOL_CHUNKS_IN_FLIGHT` waiting). `tokio::fs` would hand every chunk to the blocking
    // pool as a copy of its own: a 100 MB upload grew the pool to ~80 threads, each allocator
    // heap keeping its buffers (~70 MB resident).
    let (chunks, mut to_write) = tokio::sync::mpsc::channel::<bytes::Bytes>(SPOOL_CHUNKS_IN_FLIGHT);
    let spool_path = spool.clone();
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::File::create(&spool_path)?;
        while let Some(chunk) = to_write.blocking_recv() {
            file.write_all(&chunk)?;
        }
        file.flush()
    });
    // `Ok(Err(refusal))`: too large, or stalled.
    let received = async {
        let mut total = 0usize;
        loop {
            let chunk = match next_chunk(payload, state.body_idle).await {
                Ok(Some(chunk)) => chunk.map_err(std::io::Error::other)?,
                Ok(None) => break,
                Err(stalled) => return Ok(Err(stalled)),
            };
            total += chunk.len();
            if total > state.max_body_bytes {
                return Ok(Err(too_large()));
            }
            if chunks.send(chunk).await.is_err() {
                // The writer stopped: its error is reported below.
                break;
            }
        }
        Ok::<_, std::io::Error>(Ok(total))
    }
    .await;
    drop(chunks);
    let written = match writer.await {
        Ok(Ok(())) => received,
        Ok(Err(e)) => Err(e),
        Err(e) => Err(std::io::Error::other(e)),
    };
    let response = match written {
        Err(_) => unavailable(),
        Ok(Err(refused)) => refused,
        Ok(Ok(_)) => {
            let doc = Document {
                format: Format::Csv,
                body: Body::File(spool.clone()),
                origin: Origin {
                    listener: format!("http:{path}"),
                    peer,
                    name: Some(path),
                    key: None,
                },
                charset,
            };
            match intake.accept(doc).await {
                // Every id for a small file; a large one answers with the range (ids grow with
                // time, so first..last covers them) instead of a megabyte of JSON.
                Ok(accepted) => {
                    let mut body = serde_json::json!({
                        "rows": accepted.ids.len(),
                        "failed": accepted.failed,
                        "first_id": accepted.ids.first().map(|id| id.to_string()),
                        "last_id": accepted.ids.last().map(|id| id.to_string()),
                    });
                    if accepted.ids.len() <= LIST_IDS_UP_TO {
                        body["ids"] = accepted.ids.iter().map(|id| id.to_string()).collect();
                    }
                    // Which rows to fix and send again (the first 1,000; `failed` counts all).
                    body["errors"] = accepted
                        .failures
                        .iter()
                        .take(LIST_IDS_UP_TO)
                        .map(|f| {
                            serde_json::json!({
                                "line": f.line,
                                "id": f.id.to_string(),
                                "reason": f.reason,
                            })
                        })
                        .collect();
                    let mut response = HttpResponse::Accepted();
                    // As for every journaled request; a CSV file has many: the first row's.
                    if let Some(first) = accepted.ids.first() {
                        response.insert_header(("X-Orbiter-Transaction", first.to_string()));
                    }
                    response.json(body)
                }
                Err(crate::ingest::IngestError::Refused { reason, .. }) => {
                    refuse(StatusCode::BAD_REQUEST, &reason)
                }
                Err(_) => unavailable(),
            }
        }
    };
    let _ = tokio::fs::remove_file(&spool).await;
    response
}

fn challenge(auth: &HttpAuthDef) -> &'static str {
    match auth {
        HttpAuthDef::Bearer { .. } => "Bearer",
        HttpAuthDef::Basic { .. } => "Basic realm=\"orbiter\"",
    }
}

/// Why a request was not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AuthRefusal {
    /// No credentials, or not the channel's.
    Credentials,
    /// The channel's secret is not in the engine's environment (the variable named here).
    SecretUnset(String),
}

/// Whether the request carries the credentials the channel asks for. A secret that is not set
/// in the environment lets nobody in.
fn authorized(auth: &HttpAuthDef, req: &HttpRequest) -> Result<(), AuthRefusal> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Digest to digest, as the admin port does: the time taken depends neither on how much of
    // a guess matches nor on its length (comparing the slices returns at once on a length
    // that differs, which tells the secret's length).
    let same = |a: &str, b: &str| {
        use crate::admin::clients::token_digest;
        bool::from(token_digest(a).ct_eq(&token_digest(b)))
    };
    match auth {
        HttpAuthDef::Bearer { token_env } => {
            let Some(expected) = std::env::var(token_env).ok().filter(|t| !t.is_empty()) else {
                return Err(AuthRefusal::SecretUnset(token_env.clone()));
            };
            presented
                .strip_prefix("Bearer ")
                .is_some_and(|t| same(t.trim(), &expected))
                .then_some(())
                .ok_or(AuthRefusal::Credentials)
        }
        HttpAuthDef::Basic { user, password_env } => {
            let Some(password) = std::env::var(password_env).ok().filter(|t| !t.is_empty()) else {
                return Err(AuthRefusal::SecretUnset(password_env.clone()));
            };
            // Compared encoded, without decoding what the caller sent.
            let expected = crate::script::v2fhir::base64(format!("{user}:{password}").as_bytes());
            presented
                .strip_prefix("Basic ")
                .is_some_and(|t| same(t.trim(), &expected))
                .then_some(())
                .ok_or(AuthRefusal::Credentials)
        }
    }
}
