//! `/api/mediators`: OpenHIM's mediator API.
//!
//! | route | role |
//! |---|---|
//! | `GET /api/mediators`, `GET /api/mediators/{urn}` | viewer |
//! | `POST /api/mediators` (register), `POST /api/mediators/{urn}/heartbeat` | mediator |
//! | `PUT /api/mediators/{urn}/config`, `DELETE /api/mediators/{urn}` | admin |
//!
//! OpenHIM lets a mediator register and beat with its own API user; here that is an API client
//! with the `mediator` role: it can announce itself and report, but not change the config an
//! admin set, nor remove anyone. A URN belongs to the mediator client that first registered it
//! (`_owner`): another mediator client gets `403` saying so, so that it can neither read that
//! mediator's config (secrets included) through a heartbeat nor point its endpoints elsewhere. Heartbeats are not audit events (one every 10 s per mediator
//! would drown the trail); registrations, config changes and removals are.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::audit::{record, AuditAction};
use super::{AdminState, Caller, Role};
use crate::mediator::config::masked;
use crate::mediator::{Actor, MediatorError, MediatorRecord, Registered, Registration};

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/mediators", web::get().to(list))
        .route("/mediators", web::post().to(register))
        .route("/mediators/{urn}", web::get().to(one))
        .route("/mediators/{urn}", web::delete().to(remove))
        .route("/mediators/{urn}/heartbeat", web::post().to(heartbeat))
        .route("/mediators/{urn}/config", web::put().to(set_config));
}

fn rfc3339(ms: i64) -> Value {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .map(Value::String)
        .unwrap_or(Value::Null)
}

/// OpenHIM's mediator document (its `_`-prefixed internal fields included), plus `status`;
/// passwords in the config masked.
fn describe(state: &AdminState, mediator: &MediatorRecord) -> Value {
    let mut body = serde_json::to_value(&mediator.registration).unwrap_or_default();
    body["config"] = Value::Object(masked(&mediator.registration.config_defs, &mediator.config));
    body["status"] = json!(if state.mediators.is_online(mediator) {
        "online"
    } else {
        "offline"
    });
    body["_lastHeartbeat"] = mediator.last_heartbeat_ms.map(rfc3339).unwrap_or_default();
    body["_uptime"] = json!(mediator.uptime_secs);
    body["_configModifiedTS"] = rfc3339(mediator.config_modified_ms);
    body["_registeredAt"] = rfc3339(mediator.registered_at_ms);
    body["_registeredBy"] = json!(mediator.registered_by);
    body["_owner"] = json!(mediator.owner);
    body
}

/// An admin acts on any URN; a mediator's own client only on those it owns.
fn actor(caller: &Caller) -> Actor<'_> {
    if caller.has(Role::Admin) {
        Actor::Admin(&caller.name)
    } else {
        Actor::Mediator(&caller.name)
    }
}

fn error_response(e: MediatorError) -> HttpResponse {
    match e {
        MediatorError::Invalid(message) => {
            HttpResponse::BadRequest().json(json!({"error": message}))
        }
        MediatorError::NotFound(_) => {
            HttpResponse::NotFound().json(json!({"error": "no such mediator"}))
        }
        // The caller holds the mediator role; what it may not do here is worth saying.
        e @ MediatorError::NotOwner(_) => {
            HttpResponse::Forbidden().json(json!({"error": e.to_string()}))
        }
        other => {
            tracing::error!(error = %other, "mediator registry");
            HttpResponse::InternalServerError()
                .json(json!({"error": "mediator registry unavailable"}))
        }
    }
}

/// [`error_response`], and a URN another client owns is a `denied` audit event, as a call
/// the caller's role does not allow is: someone tried to take over or read a mediator.
fn refused(state: &AdminState, caller: &Caller, route: &str, e: MediatorError) -> HttpResponse {
    if matches!(e, MediatorError::NotOwner(_)) {
        let (method, path) = route.split_once(' ').unwrap_or(("POST", route));
        super::audit::denied(&state.journal, caller, method, path);
    }
    error_response(e)
}

async fn list(state: web::Data<AdminState>, caller: Caller) -> actix_web::Result<HttpResponse> {
    caller.require(Role::Viewer)?;
    let items: Vec<Value> = state
        .mediators
        .list()
        .iter()
        .map(|m| describe(&state, m))
        .collect();
    Ok(HttpResponse::Ok().json(items))
}

async fn one(
    state: web::Data<AdminState>,
    caller: Caller,
    urn: web::Path<String>,
) -> actix_web::Result<HttpResponse> {
    caller.require(Role::Viewer)?;
    Ok(match state.mediators.get(&urn) {
        Some(mediator) => HttpResponse::Ok().json(describe(&state, &mediator)),
        None => error_response(MediatorError::NotFound(urn.into_inner())),
    })
}

async fn register(
    state: web::Data<AdminState>,
    caller: Caller,
    body: Result<web::Json<Registration>, actix_web::Error>,
) -> actix_web::Result<HttpResponse> {
    caller.require(Role::Mediator)?;
    let registration = match body {
        Ok(body) => body.into_inner(),
        Err(e) => return Ok(super::json_body_error(e)),
    };
    let mediators = state.mediators.clone();
    let by = caller.clone();
    let done = web::block(move || mediators.register(registration, actor(&by))).await?;
    Ok(match done {
        Ok((outcome, mediator)) => {
            let action = match outcome {
                Registered::Created => "register",
                Registered::Updated => "update",
            };
            record(
                &state.journal,
                &caller,
                AuditAction {
                    action,
                    target: &format!("mediator/{}", mediator.urn()),
                    detail: json!({
                        "version": mediator.registration.version,
                        "endpoints": mediator.registration.endpoints.iter()
                            .map(|e| e.url()).collect::<Vec<_>>(),
                    }),
                },
            );
            tracing::info!(urn = %mediator.urn(), version = %mediator.registration.version, by = %caller.name, action, "mediator registration");
            HttpResponse::Created().json(describe(&state, &mediator))
        }
        Err(e) => refused(&state, &caller, "POST /api/mediators", e),
    })
}

async fn remove(
    state: web::Data<AdminState>,
    caller: Caller,
    urn: web::Path<String>,
) -> actix_web::Result<HttpResponse> {
    caller.require(Role::Admin)?;
    let urn = urn.into_inner();
    let mediators = state.mediators.clone();
    let target = urn.clone();
    Ok(match web::block(move || mediators.remove(&target)).await? {
        Ok(true) => {
            record(
                &state.journal,
                &caller,
                AuditAction {
                    action: "delete",
                    target: &format!("mediator/{urn}"),
                    detail: Value::Null,
                },
            );
            HttpResponse::Ok().json(json!({"removed": urn}))
        }
        Ok(false) => error_response(MediatorError::NotFound(urn)),
        Err(e) => error_response(e),
    })
}

/// OpenHIM's heartbeat body.
#[derive(Debug, Deserialize)]
struct Heartbeat {
    /// Seconds since the mediator started.
    uptime: f64,
    /// `true`: send the config back even if it has not changed.
    #[serde(default)]
    config: Option<Value>,
}

/// Answers the config (200, JSON object) when it changed since the last heartbeat or was asked
/// for, and an empty 200 otherwise, as OpenHIM does.
async fn heartbeat(
    state: web::Data<AdminState>,
    caller: Caller,
    urn: web::Path<String>,
    body: Result<web::Json<Heartbeat>, actix_web::Error>,
) -> actix_web::Result<HttpResponse> {
    caller.require(Role::Mediator)?;
    let beat = match body {
        Ok(body) => body.into_inner(),
        Err(e) => return Ok(super::json_body_error(e)),
    };
    if !beat.uptime.is_finite() || beat.uptime < 0.0 {
        return Ok(HttpResponse::BadRequest().json(json!({"error": "uptime must be seconds >= 0"})));
    }
    let wants_config = beat.config == Some(Value::Bool(true));
    Ok(
        match state
            .mediators
            .heartbeat(&urn, beat.uptime, wants_config, actor(&caller))
        {
            Ok(Some(config)) => HttpResponse::Ok().json(config),
            Ok(None) => HttpResponse::Ok().finish(),
            Err(e) => refused(
                &state,
                &caller,
                &format!("POST /api/mediators/{urn}/heartbeat"),
                e,
            ),
        },
    )
}

async fn set_config(
    state: web::Data<AdminState>,
    caller: Caller,
    urn: web::Path<String>,
    body: Result<web::Json<Map<String, Value>>, actix_web::Error>,
) -> actix_web::Result<HttpResponse> {
    caller.require(Role::Admin)?;
    let config = match body {
        Ok(body) => body.into_inner(),
        Err(e) => return Ok(super::json_body_error(e)),
    };
    // Only the names: values may be passwords.
    let params: Vec<String> = config.keys().cloned().collect();
    let urn = urn.into_inner();
    let mediators = state.mediators.clone();
    let target = urn.clone();
    Ok(
        match web::block(move || mediators.set_config(&target, config)).await? {
            Ok(mediator) => {
                record(
                    &state.journal,
                    &caller,
                    AuditAction {
                        action: "update",
                        target: &format!("mediator/{urn}/config"),
                        detail: json!({"params": params}),
                    },
                );
                HttpResponse::Ok().json(describe(&state, &mediator))
            }
            Err(e) => error_response(e),
        },
    )
}
