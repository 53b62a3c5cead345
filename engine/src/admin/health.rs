//! Liveness, readiness and the Prometheus endpoint: open, for probes and scrapers.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AdminState;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics));
}

/// The process is up and serving HTTP.
async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready to take messages: the journal is open. (Channels and the CDR join the checks when
/// they exist.)
async fn ready(state: web::Data<AdminState>) -> HttpResponse {
    let journal = state.journal.is_open();
    let body = json!({
        "status": if journal { "ready" } else { "not ready" },
        "checks": {"journal": journal},
    });
    if journal {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics(state: web::Data<AdminState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
