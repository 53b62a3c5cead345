//! `GET /api/channels`, `GET /api/channels/{name}`, `POST /api/channels/reload`.

use actix_web::{web, HttpResponse};
use serde_json::{json, Value};

use super::audit::{self, AuditAction};
use super::{AdminState, Caller, Role};
use crate::channel::Channel;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/channels", web::get().to(list))
        .route("/channels/reload", web::post().to(reload))
        .route("/channels/{name}", web::get().to(one));
}

fn describe(channel: &Channel) -> Value {
    json!({
        "name": channel.name(),
        "description": channel.def.description,
        "enabled": channel.def.enabled,
        "priority": channel.def.priority,
        "revision": channel.revision,
        "file": channel.file,
        "source": channel.def.source,
        "match": channel.def.match_rules,
        "filter": channel.filter.as_ref().map(|s| &s.path),
        "transform": channel.transform.as_ref().map(|s| &s.path),
        "destinations": channel.def.destinations,
        "ack": channel.def.ack,
        "retry": channel.def.retry,
    })
}

async fn list(caller: Caller, state: web::Data<AdminState>) -> HttpResponse {
    if let Err(denied) = caller.require(Role::Viewer) {
        return denied.error_response();
    }
    let set = state.channels.current();
    HttpResponse::Ok().json(json!({
        "channels": set.channels.iter().map(|c| describe(c)).collect::<Vec<_>>(),
        "last_reload": state.channels.last_report(),
    }))
}

async fn one(
    caller: Caller,
    state: web::Data<AdminState>,
    name: web::Path<String>,
) -> HttpResponse {
    if let Err(denied) = caller.require(Role::Viewer) {
        return denied.error_response();
    }
    match state.channels.current().get(&name) {
        Some(channel) => HttpResponse::Ok().json(describe(&channel)),
        None => HttpResponse::NotFound().json(json!({"error": "no such channel"})),
    }
}

/// Recompiles everything; channels that fail keep their running revision.
async fn reload(caller: Caller, state: web::Data<AdminState>) -> HttpResponse {
    if let Err(denied) = caller.require(Role::Operator) {
        return denied.error_response();
    }
    let channels = state.channels.clone();
    match web::block(move || channels.reload()).await {
        Ok(report) => {
            audit::record(
                &state.journal,
                &caller,
                AuditAction {
                    action: "reload",
                    target: "channels",
                    detail: json!({"errors": report.errors.len()}),
                },
            );
            let status = if report.errors.is_empty() {
                actix_web::http::StatusCode::OK
            } else {
                actix_web::http::StatusCode::UNPROCESSABLE_ENTITY
            };
            HttpResponse::build(status).json(report)
        }
        Err(e) => HttpResponse::InternalServerError().json(json!({"error": e.to_string()})),
    }
}
