//! Whether each destination is reachable, as the deliveries find it: one WARN line when a
//! destination goes down (deliveries to it queue) and one INFO line when it is back, whatever
//! the number of messages in between (those are counted by `orbiter_deliveries_total`).
//!
//! The lines name the destination (its configured name and kind) and what kind of error it was
//! (`connection refused`, `timeout`, `HTTP 503`...): never the error's text, which can quote
//! the URL with its credentials or an answer about the message.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Delivery;
use crate::channel::{DestinationDef, DestinationKind};

/// Destinations found down, by identity (see [`identity`]).
#[derive(Default)]
pub(super) struct Availability {
    down: Mutex<HashMap<String, Outage>>,
}

/// A destination that is down: since when, and how many deliveries were put off since.
struct Outage {
    since: Instant,
    retries: u64,
}

/// What a delivery changed (and what was logged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Change {
    Down { error: &'static str },
    Up { retries: u64, after: Duration },
}

impl Availability {
    /// Records how a delivery to `destination` went; logs when that changes whether the
    /// destination is reachable.
    pub(super) fn note(
        &self,
        destination: &DestinationDef,
        channel: &str,
        delivery: &Delivery,
    ) -> Option<Change> {
        let change = self.change(destination, delivery)?;
        let name = destination.display_name();
        let kind = destination.kind.as_str();
        match &change {
            Change::Down { error } => tracing::warn!(
                destination = %name,
                kind,
                channel,
                error,
                "destination unavailable: its deliveries are queued and retried with backoff"
            ),
            Change::Up { retries, after } => tracing::info!(
                destination = %name,
                kind,
                channel,
                retries,
                down_secs = after.as_secs(),
                "destination available again: delivering"
            ),
        }
        Some(change)
    }

    fn change(&self, destination: &DestinationDef, delivery: &Delivery) -> Option<Change> {
        let key = identity(destination);
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        match delivery {
            Delivery::Retry { error, .. } => {
                let error = error_kind(destination.kind, error)?;
                match down.get_mut(&key) {
                    Some(outage) => {
                        outage.retries += 1;
                        None
                    }
                    None => {
                        down.insert(
                            key,
                            Outage {
                                since: Instant::now(),
                                retries: 1,
                            },
                        );
                        Some(Change::Down { error })
                    }
                }
            }
            // Delivered, or refused for good: either way it answered.
            Delivery::Delivered { .. } | Delivery::Failed { .. } => {
                let outage = down.remove(&key)?;
                Some(Change::Up {
                    retries: outage.retries,
                    after: outage.since.elapsed(),
                })
            }
        }
    }
}

/// One destination, whatever channel it is in: two channels writing to the CDR share its
/// state, two `http` destinations without a name to different URLs do not.
fn identity(d: &DestinationDef) -> String {
    format!(
        "{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
        d.kind.as_str(),
        d.name.as_deref().unwrap_or(""),
        d.url.as_deref().unwrap_or(""),
        d.addr.as_deref().unwrap_or(""),
        d.path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        d.urn.as_deref().unwrap_or(""),
    )
}

/// What kind of error put a delivery off, in a few words that are safe to log: the status
/// code of an HTTP answer, else the kind of transport failure. `None` for a mediator that is
/// not registered or not beating, which [`super::mediator`] logs itself.
fn error_kind(kind: DestinationKind, error: &str) -> Option<&'static str> {
    let lower = error.to_ascii_lowercase();
    if kind == DestinationKind::Mediator
        && (lower.contains("is not registered")
            || lower.contains("heartbeat")
            || lower.contains("is offline"))
    {
        return None;
    }
    if let Some(code) = error
        .strip_prefix("HTTP ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
    {
        return Some(http_status(code));
    }
    const KINDS: &[(&str, &str)] = &[
        ("connection refused", "connection refused"),
        ("connection reset", "connection reset"),
        ("timed out", "timeout"),
        ("timeout", "timeout"),
        ("no answer within", "timeout"),
        ("dns error", "name not resolved"),
        ("failed to lookup address", "name not resolved"),
        ("name or service not known", "name not resolved"),
        ("no route to host", "no route to host"),
        ("network is unreachable", "network unreachable"),
        ("certificate", "TLS"),
        ("tls", "TLS"),
        ("handshake", "TLS"),
        ("no space left", "disk full"),
        ("permission denied", "permission denied"),
        ("receiver answered", "negative ACK"),
        ("unreadable ack", "unreadable ACK"),
        ("broken pipe", "connection closed"),
        ("closed", "connection closed"),
        ("upstream unavailable", "upstream unavailable"),
        ("reported an error", "mediator error"),
        ("interrupted (shutdown)", "shutting down"),
    ];
    Some(
        KINDS
            .iter()
            .find(|(needle, _)| lower.contains(needle))
            .map_or("unavailable", |(_, kind)| kind),
    )
}

/// `HTTP 503` and the like, as static text (the codes a destination is retried for).
fn http_status(code: u16) -> &'static str {
    match code {
        401 => "HTTP 401",
        403 => "HTTP 403",
        408 => "HTTP 408",
        429 => "HTTP 429",
        500 => "HTTP 500",
        502 => "HTTP 502",
        503 => "HTTP 503",
        504 => "HTTP 504",
        400..=499 => "HTTP 4xx",
        _ => "HTTP 5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(kind: &str, extra: &str) -> DestinationDef {
        toml::from_str(&format!("kind = \"{kind}\"\n{extra}")).unwrap()
    }

    #[test]
    fn a_destination_is_logged_down_once_and_up_once_whatever_the_traffic() {
        let availability = Availability::default();
        let cdr = destination("cdr", "");
        let refused = Delivery::retry(
            "http://orbiter:s3cret@127.0.0.1:9/fhir: error sending request: client error \
             (Connect): tcp connect error: Connection refused (os error 111)",
        );
        let delivered = Delivery::Delivered { response: None };
        assert_eq!(
            availability.note(&cdr, "adt", &refused),
            Some(Change::Down {
                error: "connection refused"
            })
        );
        for _ in 0..100 {
            assert_eq!(availability.note(&cdr, "oru", &refused), None);
        }
        // Another destination has its own state.
        let other = destination("http", "url = \"http://other/fhir\"");
        assert_eq!(availability.note(&other, "adt", &delivered), None);
        match availability.note(&cdr, "adt", &delivered) {
            Some(Change::Up { retries, .. }) => assert_eq!(retries, 101),
            other => panic!("not back up: {other:?}"),
        }
        assert_eq!(availability.note(&cdr, "adt", &delivered), None);
        // A 4xx is an answer: the destination is up, the message is the problem.
        assert!(matches!(
            availability.note(&cdr, "adt", &Delivery::retry("HTTP 503: busy")),
            Some(Change::Down { error: "HTTP 503" })
        ));
        let refused_for_good = Delivery::Failed {
            error: "HTTP 422: bad".into(),
            response: None,
        };
        assert!(matches!(
            availability.note(&cdr, "adt", &refused_for_good),
            Some(Change::Up { retries: 1, .. })
        ));
    }

    #[test]
    fn error_kinds_say_what_failed_and_quote_nothing() {
        let http = DestinationKind::Http;
        for (error, kind) in [
            ("HTTP 503: Patient DOE^JOHN is locked", "HTTP 503"),
            ("HTTP 429: slow down", "HTTP 429"),
            ("HTTP 599: ?", "HTTP 5xx"),
            (
                "https://u:p@cdr/fhir: error sending request: operation timed out",
                "timeout",
            ),
            (
                "http://cdr/fhir: error sending request: client error (Connect): dns error: \
                 failed to lookup address information: Name or service not known",
                "name not resolved",
            ),
            (
                "http://cdr/fhir: client error (Connect): invalid peer certificate: UnknownIssuer",
                "TLS",
            ),
            (
                "writing file: No space left on device (os error 28)",
                "disk full",
            ),
            ("receiver answered AR: busy", "negative ACK"),
            ("something new", "unavailable"),
        ] {
            assert_eq!(error_kind(http, error), Some(kind), "{error}");
        }
        // A mediator's registration and heartbeats are logged by the mediator module.
        let mediator = DestinationKind::Mediator;
        assert_eq!(
            error_kind(
                mediator,
                "mediator urn:x is offline (no heartbeat in the last 60 s)"
            ),
            None
        );
        assert_eq!(
            error_kind(
                mediator,
                "mediator urn:x at http://m/x: no answer within 30 s"
            ),
            Some("timeout")
        );
    }
}
