//! Liveness, readiness and the Prometheus endpoint: open, for probes and scrapers.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::AdminState;
use crate::channel::DestinationKind;
use crate::config::AckTiming;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health))
        .route("/ready", web::get().to(ready))
        .route("/metrics", web::get().to(metrics));
}

/// The process is up and serving HTTP.
async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready to take messages: the journal is open, and the CDR answers if a channel in ACK mode
/// `on-delivery` writes to it (in `on-commit` mode messages queue durably while the CDR is down,
/// so an outage must not take the engine out of its Service).
async fn ready(state: web::Data<AdminState>) -> HttpResponse {
    let journal = state.journal.is_open();
    let set = state.channels.current();
    let cdr = state
        .cdr_reachable
        .load(std::sync::atomic::Ordering::Relaxed);
    let needs_cdr = set.channels.iter().any(|c| {
        c.def.ack.mode == AckTiming::OnDelivery
            && c.def
                .destinations
                .iter()
                .any(|d| d.kind == DestinationKind::Cdr)
    });
    let ready = journal && (cdr || !needs_cdr);
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "checks": {
            "journal": journal,
            "channels": set.channels.len(),
            "channel_errors": state.channels.last_report().errors.len(),
            // Counted, not a reason to be unready: the shared port and the other channels work.
            "channel_ports_failing": state.metrics.channel_ports_failing.get(),
            "cdr": cdr,
            "cdr_required": needs_cdr,
        },
    });
    if ready {
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
