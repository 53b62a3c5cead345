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

/// Ready to take messages: the journal is open and can write (after a failed write, a full disk,
/// it says why until it writes again: `journal_unwritable`), with room to grow (see
/// [`MIN_FREE_BYTES`]), and the CDR answers if a channel in ACK mode
/// `on-delivery` writes to it (in `on-commit` mode messages queue durably while the CDR is down,
/// so an outage must not take the engine out of its Service).
async fn ready(state: web::Data<AdminState>) -> HttpResponse {
    let journal = state.journal.is_open();
    // It cannot store messages (they get "not stored, resend") until it writes again, which
    // it finds out on its own once there is room (or, after a failed fsync, a restart).
    let unwritable = state.journal.unwritable();
    let set = state.channels.current();
    // The embedded CDR after a write failed half way takes no writes until it has reopened its
    // store, on its own once the disk has room.
    let cdr_halted = state.cdr.as_ref().is_some_and(|cdr| cdr.halted());
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
    let free = crate::data_dir::free_bytes(state.journal.path());
    let room = has_room(free);
    let ready = journal && unwritable.is_none() && room && (cdr || !needs_cdr) && !cdr_halted;
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "checks": {
            "journal": journal,
            "journal_unwritable": unwritable.is_some(),
            "journal_error": unwritable.as_ref().map(|u| &u.reason),
            "journal_restart_needed": unwritable.as_ref().is_some_and(|u| u.restart_needed),
            "disk_free_bytes": free,
            "disk_room": room,
            "channels": set.channels.len(),
            "channel_errors": state.channels.last_report().errors.len(),
            // Counted, not a reason to be unready: the shared port and the other channels work.
            "channel_ports_failing": state.metrics.channel_ports_failing.get(),
            "cdr": cdr,
            "cdr_required": needs_cdr,
            "cdr_halted": cdr_halted,
        },
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Below this much free space on the data dir's filesystem the journal cannot prepare its next
/// value-log segment (16 MiB, created full) and will soon answer every message "not stored,
/// please resend": better out of the Service (senders go to another engine, or retry against
/// a refused connection) and an alert (`OrbiterNotReady`) than a stream of negative ACKs.
pub const MIN_FREE_BYTES: u64 = 32 * 1024 * 1024;

/// Enough room to go on taking messages; unknown (no statvfs) counts as enough.
fn has_room(free: Option<u64>) -> bool {
    free.is_none_or(|bytes| bytes >= MIN_FREE_BYTES)
}

async fn metrics(state: web::Data<AdminState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_nearly_full_disk_is_not_ready() {
        assert!(super::has_room(Some(1 << 30)));
        assert!(super::has_room(Some(super::MIN_FREE_BYTES)));
        assert!(!super::has_room(Some(16 * 1024 * 1024)));
        assert!(!super::has_room(Some(0)));
        assert!(super::has_room(None));
    }
}
