//! Destination `mediator`: sends the channel's output (or the raw message) to a registered
//! mediator's endpoint and keeps its OpenHIM answer (status, response, orchestrations,
//! properties) as the delivery step's output.
//!
//! ```toml
//! [[destination]]
//! kind = "mediator"
//! urn = "urn:mediator:orbiter-fhir-validator"
//! endpoint = "validate"   # optional: by name; default its first endpoint
//! payload = "output"      # or "raw": the message as received
//! ```
//!
//! Classification: an unknown URN or an offline mediator (no heartbeat lately) is queued and
//! not called; HTTP answers as for any destination (4xx failed, 408/429/5xx and timeouts
//! queued); a 2xx OpenHIM answer by the mediator's own status (`Failed` failed) and then by
//! the status of the response it carries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::{diagnostics, error_chain, Delivery};
use crate::channel::def::Payload;
use crate::channel::DestinationDef;
use crate::journal::TxId;
use crate::mediator::response::CONTENT_TYPE;
use crate::mediator::{MediatorResponse, MediatorStatus, Mediators};

/// The registry plus one HTTP client for every mediator call.
#[derive(Clone)]
pub struct MediatorTarget {
    registry: Mediators,
    client: reqwest::Client,
    /// Per call, named in the reason when a mediator does not answer in time.
    timeout: Duration,
    /// What each URN looked like at its last delivery, so that the log says once when
    /// deliveries to a mediator start queueing (and when they resume), not once a retry.
    reach: Arc<Mutex<HashMap<String, Reach>>>,
}

/// Whether a mediator could be called at a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    Unregistered,
    Offline,
    Online,
}

impl MediatorTarget {
    pub fn new(registry: Mediators, timeout: Duration) -> Result<MediatorTarget, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout)
            .user_agent(concat!("orbiter/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(MediatorTarget {
            registry,
            client,
            timeout,
            reach: Arc::default(),
        })
    }

    /// Records `now` for `urn` and logs a change worth an operator's eye (URN and channel
    /// only: nothing from the message).
    fn note(&self, urn: &str, channel: &str, now: Reach) {
        let before = {
            let mut reach = self.reach.lock().unwrap_or_else(|p| p.into_inner());
            reach.insert(urn.to_string(), now)
        };
        match transition(before, now) {
            Some(Reach::Unregistered) => tracing::warn!(
                urn,
                channel,
                "a channel routes to a mediator that is not registered: its deliveries queue \
                 until the mediator registers (check the channel's urn)"
            ),
            Some(Reach::Offline) => tracing::warn!(
                urn,
                channel,
                "mediator offline (no recent heartbeat): its deliveries queue until it beats again"
            ),
            Some(Reach::Online) => {
                tracing::info!(urn, channel, "mediator reachable again: delivering")
            }
            None => {}
        }
    }

    pub async fn deliver(
        &self,
        destination: &DestinationDef,
        id: TxId,
        channel: &str,
        output: &Value,
        raw: &[u8],
    ) -> Delivery {
        let Some(urn) = destination.urn.as_deref() else {
            return failed("mediator destination without urn".into());
        };
        // Not registered (yet): the mediator may register later, so wait for it.
        let Some(record) = self.registry.get(urn) else {
            self.note(urn, channel, Reach::Unregistered);
            return Delivery::retry(format!(
                "mediator {urn} is not registered (GET /api/mediators lists those that are; \
                     check the channel's urn, or start the mediator)"
            ));
        };
        if !self.registry.is_online(&record) {
            self.note(urn, channel, Reach::Offline);
            // Unlike OpenHIM, where heartbeats are optional, Orbiter calls only a mediator that
            // beats: say so to whoever ported one that never does.
            let why = match record.last_heartbeat_ms {
                None => "has never sent a heartbeat; Orbiter calls a mediator only while it \
                         beats (POST /api/mediators/{urn}/heartbeat)"
                    .to_string(),
                Some(_) => format!(
                    "is offline (no heartbeat in the last {} s)",
                    self.registry.offline_after().as_secs()
                ),
            };
            return Delivery::retry(format!("mediator {urn} {why}"));
        }
        self.note(urn, channel, Reach::Online);
        let wanted = destination.endpoint.as_deref();
        let Some(endpoint) = record.endpoint(wanted) else {
            return failed(format!(
                "mediator {urn} has no endpoint named `{}`",
                wanted.unwrap_or("")
            ));
        };
        if endpoint.kind != "http" {
            return failed(format!(
                "mediator {urn} endpoint `{}` is of type `{}`; only http can be called",
                endpoint.name, endpoint.kind
            ));
        }
        let url = endpoint.url();
        let (content_type, body) = match destination.payload.unwrap_or(Payload::Output) {
            Payload::Output => (
                "application/fhir+json",
                serde_json::to_vec(output).expect("JSON serializes"),
            ),
            Payload::Raw => (raw_content_type(raw), raw.to_vec()),
        };
        let sent = self
            .client
            .post(&url)
            .header("Content-Type", content_type)
            .header("Accept", format!("{CONTENT_TYPE}, application/json"))
            // OpenHIM's header, so that mediators written for it can correlate.
            .header("X-OpenHIM-TransactionID", id.to_string())
            .header("X-Orbiter-Channel", channel)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) if e.is_timeout() => {
                return Delivery::retry(format!(
                    "mediator {urn} at {url}: no answer within {} s \
                         (mediators.timeout_secs); it will be sent again with the same \
                         X-OpenHIM-TransactionID",
                    self.timeout.as_secs_f64()
                ))
            }
            Err(e) => {
                return Delivery::retry(format!("mediator {urn} at {url}: {}", error_chain(&e)))
            }
        };
        let status = response.status().as_u16();
        let reply_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // Read in chunks up to a bound: the answer is kept on the transaction, and one
        // mediator's runaway answer must not take the engine's memory.
        let mut response = response;
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if body.len() + chunk.len() > MAX_ANSWER_BYTES => {
                    return failed(format!(
                        "mediator {urn}: answer larger than {} MiB (HTTP {status}); \
                         a mediator should answer a summary, not the data",
                        MAX_ANSWER_BYTES >> 20
                    ));
                }
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => {
                    return Delivery::retry(format!(
                        "mediator {urn}: reading the answer: {}",
                        error_chain(&e)
                    ))
                }
            }
        }
        classify_reply(urn, status, reply_type.as_deref(), &body)
    }
}

/// The largest answer kept (as `mllp.max_message_bytes` by default).
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// What to log when a URN's reach goes from `before` to `now`: going away always (the first
/// sight of a URN included), coming back only after having been away.
fn transition(before: Option<Reach>, now: Reach) -> Option<Reach> {
    match (before, now) {
        (Some(b), n) if b == n => None,
        (None | Some(Reach::Online), Reach::Online) => None,
        (_, now) => Some(now),
    }
}

fn failed(error: String) -> Delivery {
    Delivery::Failed {
        error,
        response: None,
    }
}

/// A guess good enough for the mediator to pick a parser.
fn raw_content_type(raw: &[u8]) -> &'static str {
    let start = raw
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(0);
    match raw.get(start..).unwrap_or_default() {
        r if r.starts_with(b"MSH") || r.starts_with(b"FHS") || r.starts_with(b"BHS") => {
            "x-application/hl7-v2+er7"
        }
        r if r.starts_with(b"{") || r.starts_with(b"[") => "application/json",
        r if r.starts_with(b"<") => "application/xml",
        _ => "text/plain",
    }
}

/// What a mediator's answer means for the transaction.
pub fn classify_reply(urn: &str, status: u16, content_type: Option<&str>, body: &[u8]) -> Delivery {
    let is_openhim = content_type
        .and_then(|t| t.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(CONTENT_TYPE));
    let text = || json!({"body": String::from_utf8_lossy(&body[..body.len().min(64 * 1024)])});
    let (document, not_json) = match serde_json::from_slice::<Value>(body) {
        Ok(document) => (document, None),
        Err(e) => (text(), Some(e)),
    };
    if !is_openhim {
        // A plain HTTP service registered as a mediator: judged like any HTTP destination.
        return super::classify(status, document);
    }
    let parsed = match (not_json, (200..300).contains(&status)) {
        (Some(e), true) => {
            return Delivery::Failed {
                error: format!(
                    "mediator {urn}: answered HTTP {status} with Content-Type {CONTENT_TYPE} \
                     but the body is not JSON ({e})"
                ),
                response: Some(document),
            }
        }
        (Some(_), false) => return super::classify(status, document),
        (None, is_2xx) => match serde_json::from_value::<MediatorResponse>(document.clone()) {
            Ok(parsed) => parsed,
            Err(e) if is_2xx => {
                return Delivery::Failed {
                    error: format!("mediator {urn}: malformed {CONTENT_TYPE} answer: {e}"),
                    response: Some(document),
                }
            }
            Err(_) => return super::classify(status, document),
        },
    };
    // The whole OpenHIM document is the step's output: status, orchestrations, properties.
    let output = serde_json::to_value(&parsed).expect("JSON serializes");
    let inner = parsed.response.status;
    let said = |what: &str| {
        let body = parsed
            .response
            .body
            .as_ref()
            .map(|b| match b {
                Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| b.clone()),
                other => other.clone(),
            })
            .map(|b| diagnostics(&b))
            .unwrap_or_default();
        let verdict = parsed
            .status
            .map(|s| format!("{s:?}"))
            .unwrap_or_else(|| "no status".into());
        format!(
            "mediator {urn}: {what} ({verdict}, response {}){}{body}",
            inner.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            if body.is_empty() { "" } else { ": " },
        )
    };
    match status {
        408 | 429 | 500..=599 => {
            return Delivery::Retry {
                error: format!("HTTP {status} from {}", said("unavailable")),
                response: Some(output),
            };
        }
        300..=499 => {
            return Delivery::Failed {
                error: format!("HTTP {status} from {}", said("refused")),
                response: Some(output),
            }
        }
        _ => {}
    }
    // OpenHIM retries a transaction whose mediator reports an `error` (its docs ask mediators
    // to set it when an upstream call fails), whatever the status says.
    if let Some(message) = parsed.error_message() {
        return Delivery::Retry {
            error: format!("{}; error: {message}", said("reported an error")),
            response: Some(output),
        };
    }
    if parsed.status == Some(MediatorStatus::Failed) {
        return Delivery::Failed {
            error: said("failed"),
            response: Some(output),
        };
    }
    match inner {
        Some(408 | 429 | 500..=599) => Delivery::Retry {
            error: said("upstream unavailable"),
            response: Some(output),
        },
        Some(code) if !(200..300).contains(&code) => Delivery::Failed {
            error: said("refused"),
            response: Some(output),
        },
        _ => Delivery::Delivered {
            response: Some(output),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mediator::Actor;

    const URN: &str = "urn:mediator:test";

    fn answer(status: &str, inner: u16) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "x-mediator-urn": URN,
            "status": status,
            "response": {"status": inner, "headers": {}, "body": "{\"resourceType\":\"OperationOutcome\",\"issue\":[{\"diagnostics\":\"bad ref\"}]}",
                         "timestamp": "2026-12-01T12:00:00Z"},
            "orchestrations": [{"name": "lookup",
                                "request": {"method": "GET", "path": "/x", "timestamp": "2026-12-01T12:00:00Z"},
                                "response": {"status": 200, "body": "ok", "timestamp": "2026-12-01T12:00:00Z"}}],
            "properties": {"checked": "3"}
        }))
        .unwrap()
    }

    fn classify(status: u16, body: &[u8]) -> Delivery {
        classify_reply(
            URN,
            status,
            Some("application/json+openhim; charset=utf-8"),
            body,
        )
    }

    #[test]
    fn a_successful_answer_is_delivered_with_its_orchestrations() {
        let Delivery::Delivered {
            response: Some(out),
        } = classify(200, &answer("Successful", 200))
        else {
            panic!("not delivered")
        };
        assert_eq!(out["x-mediator-urn"], URN);
        assert_eq!(out["status"], "Successful");
        assert_eq!(out["orchestrations"][0]["name"], "lookup");
        assert_eq!(out["orchestrations"][0]["response"]["status"], 200);
        assert_eq!(out["properties"]["checked"], "3");
        assert!(matches!(
            classify(200, &answer("Completed with error(s)", 201)),
            Delivery::Delivered { .. }
        ));
    }

    #[test]
    fn failed_or_refused_is_failed_and_keeps_the_document() {
        let Delivery::Failed { error, response } = classify(200, &answer("Failed", 200)) else {
            panic!("not failed")
        };
        assert!(
            error.contains("failed") && error.contains("bad ref"),
            "{error}"
        );
        assert_eq!(response.unwrap()["status"], "Failed");
        let Delivery::Failed { error, response } = classify(200, &answer("Completed", 422)) else {
            panic!("not failed")
        };
        assert!(error.contains("422"), "{error}");
        assert_eq!(response.unwrap()["orchestrations"][0]["name"], "lookup");
        assert!(matches!(
            classify(400, &answer("Completed", 400)),
            Delivery::Failed { .. }
        ));
    }

    #[test]
    fn server_errors_and_upstream_outages_are_retried() {
        let Delivery::Retry { error, response } = classify(500, &answer("Failed", 500)) else {
            panic!("not retried")
        };
        assert!(error.starts_with("HTTP 500"), "{error}");
        // The queued transaction shows what the mediator said, orchestrations included.
        let kept = response.expect("the answer is kept");
        assert_eq!(kept["orchestrations"][0]["name"], "lookup");
        assert!(matches!(
            classify(503, b"down"),
            Delivery::Retry { response: None, .. }
        ));
        let Delivery::Retry { response, .. } = classify(200, &answer("Completed", 502)) else {
            panic!("an upstream 502 was not retried")
        };
        assert_eq!(response.unwrap()["response"]["status"], 502);
        // Not OpenHIM: judged like any HTTP destination.
        assert!(matches!(
            classify_reply(URN, 502, Some("text/html"), b"<html>bad gateway"),
            Delivery::Retry { .. }
        ));
        assert!(matches!(
            classify_reply(URN, 200, Some("application/json"), b"{\"ok\":true}"),
            Delivery::Delivered { .. }
        ));
    }

    #[test]
    fn a_malformed_openhim_answer_fails_and_says_why() {
        let Delivery::Failed { error, .. } = classify(200, b"not json") else {
            panic!("accepted a body that is not JSON")
        };
        assert!(error.contains("body is not JSON"), "{error}");
        for body in [
            &br#"{"status":"Successful"}"#[..],
            br#"{"x-mediator-urn":"u","status":"Great","response":{}}"#,
            br#"{"x-mediator-urn":"u","response":{"status":"OK"}}"#,
        ] {
            let Delivery::Failed { error, .. } = classify(200, body) else {
                panic!("accepted {}", String::from_utf8_lossy(body))
            };
            assert!(error.contains("malformed"), "{error}");
        }
    }

    /// What OpenHIM core accepts from a mediator, Orbiter accepts too.
    #[test]
    fn openhim_leniencies_are_accepted() {
        // No `status`: the response's status decides.
        let no_status = json!({"x-mediator-urn": URN, "response": {"status": 200, "body": "ok"}});
        let Delivery::Delivered {
            response: Some(out),
        } = classify(200, no_status.to_string().as_bytes())
        else {
            panic!("an answer without status was not delivered")
        };
        assert!(out.get("status").is_none(), "{out}");
        let refused = json!({"x-mediator-urn": URN, "response": {"status": 422, "body": "no"}});
        let Delivery::Failed { error, .. } = classify(200, refused.to_string().as_bytes()) else {
            panic!("a 422 without status was not failed")
        };
        assert!(error.contains("no status, response 422"), "{error}");
        // The response status as a string, as OpenHIM's router parses it.
        let text_status = json!({"x-mediator-urn": URN, "status": "Successful",
                                 "response": {"status": "201", "body": ""}});
        let Delivery::Delivered {
            response: Some(out),
        } = classify(200, text_status.to_string().as_bytes())
        else {
            panic!("a string response status was not delivered")
        };
        assert_eq!(out["response"]["status"], 201);
        // An orchestration that never got an answer: an `error` and no `response`.
        let orchestration_error = json!({"x-mediator-urn": URN, "status": "Completed with error(s)",
            "response": {"status": 200, "body": "partial"},
            "orchestrations": [{"name": "registry", "group": "lookups",
                                "request": {"method": "GET", "path": "/x"},
                                "error": {"message": "connect ECONNREFUSED"}},
                               {"name": "no request either", "error": {"message": "skipped"}}]});
        let Delivery::Delivered {
            response: Some(out),
        } = classify(200, orchestration_error.to_string().as_bytes())
        else {
            panic!("an orchestration with an error was not accepted")
        };
        assert_eq!(
            out["orchestrations"][0]["error"]["message"],
            "connect ECONNREFUSED"
        );
        assert_eq!(out["orchestrations"][0]["group"], "lookups");
        assert!(out["orchestrations"][0].get("response").is_none(), "{out}");
    }

    /// OpenHIM retries when the mediator reports an `error` (its upstream was down), even with
    /// status Failed; Failed without an error stays failed.
    #[test]
    fn an_error_in_the_answer_is_retried() {
        for status in ["Failed", "Completed with error(s)"] {
            let body = json!({"x-mediator-urn": URN, "status": status,
                              "response": {"status": 500, "body": "upstream down"},
                              "error": {"message": "connect ECONNREFUSED 10.0.0.9:8080",
                                        "stack": "Error: connect..."}});
            let Delivery::Retry { error, response } = classify(200, body.to_string().as_bytes())
            else {
                panic!("{status} with an error was not retried")
            };
            assert!(error.contains("ECONNREFUSED 10.0.0.9:8080"), "{error}");
            let kept = response.expect("the answer is kept");
            assert_eq!(
                kept["error"]["message"],
                "connect ECONNREFUSED 10.0.0.9:8080"
            );
        }
        assert!(matches!(
            classify(200, &answer("Failed", 500)),
            Delivery::Failed { .. }
        ));
    }

    fn destination(toml_text: &str) -> DestinationDef {
        toml::from_str(toml_text).unwrap()
    }

    /// Unregistered, offline, a missing endpoint, nobody listening: decided without a mediator.
    #[tokio::test]
    async fn what_cannot_be_called_is_queued_or_failed_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Mediators::open(dir.path(), Duration::from_secs(60)).unwrap();
        // A port nobody listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let registration = serde_json::from_value(json!({
            "urn": URN, "version": "1.0.0", "name": "T",
            "endpoints": [{"name": "main", "host": "127.0.0.1", "port": port}]
        }))
        .unwrap();
        let target = MediatorTarget::new(registry.clone(), Duration::from_secs(2)).unwrap();
        let send = |d: DestinationDef| {
            let target = target.clone();
            async move { target.deliver(&d, TxId(7), "c", &json!({}), b"MSH|").await }
        };
        let to =
            |extra: &str| destination(&format!("kind = \"mediator\"\nurn = \"{URN}\"\n{extra}"));

        let Delivery::Retry { error, .. } = send(to("")).await else {
            panic!("unregistered")
        };
        assert!(error.contains("not registered"), "{error}");

        registry
            .register(registration, Actor::Admin("test"))
            .unwrap();
        // Registered, never beaten: a mediator ported from OpenHIM (where heartbeats are
        // optional) must learn why it is never called.
        let Delivery::Retry { error, .. } = send(to("")).await else {
            panic!("offline")
        };
        assert!(error.contains("never sent a heartbeat"), "{error}");

        registry
            .heartbeat(URN, 1.0, false, Actor::Admin("test"))
            .unwrap();
        let Delivery::Failed { error, .. } = send(to("endpoint = \"other\"")).await else {
            panic!("unknown endpoint")
        };
        assert!(error.contains("no endpoint named `other`"), "{error}");
        let Delivery::Retry { error, .. } = send(to("payload = \"raw\"")).await else {
            panic!("connection refused")
        };
        assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");

        // A mediator that takes the connection and never answers: the timeout queues it.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_port = silent.local_addr().unwrap().port();
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = silent.accept().await {
                held.push(stream);
            }
        });
        let moved = serde_json::from_value(json!({
            "urn": URN, "version": "1.0.1", "name": "T",
            "endpoints": [{"name": "main", "host": "127.0.0.1", "port": silent_port}]
        }))
        .unwrap();
        registry.register(moved, Actor::Admin("test")).unwrap();
        let impatient = MediatorTarget::new(registry.clone(), Duration::from_millis(500)).unwrap();
        let started = std::time::Instant::now();
        let answer = impatient
            .deliver(&to(""), TxId(8), "c", &json!({}), b"")
            .await;
        let Delivery::Retry { error, .. } = answer else {
            panic!("timeout not retried")
        };
        assert!(
            error.contains(&format!("127.0.0.1:{silent_port}")),
            "{error}"
        );
        assert!(
            error.contains("no answer within 0.5 s (mediators.timeout_secs)"),
            "{error}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        holder.abort();

        // A mediator whose answer never ends: failed at the bound, not read into memory whole.
        let endless = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endless_port = endless.local_addr().unwrap().port();
        let flood = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut stream, _) = endless.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).await;
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json+openhim\r\n\
                        Transfer-Encoding: chunked\r\n\r\n";
            stream.write_all(head.as_bytes()).await.unwrap();
            let chunk = format!("100000\r\n{}\r\n", "x".repeat(0x100000));
            while stream.write_all(chunk.as_bytes()).await.is_ok() {}
        });
        let flooding = serde_json::from_value(json!({
            "urn": URN, "version": "1.0.2", "name": "T",
            "endpoints": [{"name": "main", "host": "127.0.0.1", "port": endless_port}]
        }))
        .unwrap();
        registry.register(flooding, Actor::Admin("test")).unwrap();
        let Delivery::Failed { error, .. } = send(to("")).await else {
            panic!("an endless answer was not failed")
        };
        assert!(error.contains("answer larger than 16 MiB"), "{error}");
        flood.abort();
    }

    #[test]
    fn the_log_says_when_a_mediator_goes_away_and_comes_back_not_every_retry() {
        use Reach::*;
        assert_eq!(transition(None, Online), None);
        assert_eq!(transition(None, Unregistered), Some(Unregistered));
        assert_eq!(transition(Some(Unregistered), Unregistered), None);
        assert_eq!(transition(Some(Online), Offline), Some(Offline));
        assert_eq!(transition(Some(Offline), Offline), None);
        assert_eq!(transition(Some(Offline), Online), Some(Online));
        assert_eq!(transition(Some(Online), Online), None);
        assert_eq!(transition(Some(Unregistered), Offline), Some(Offline));
    }

    #[test]
    fn raw_payloads_get_a_content_type_from_their_first_bytes() {
        assert_eq!(raw_content_type(b"MSH|^~\\&|"), "x-application/hl7-v2+er7");
        assert_eq!(raw_content_type(b"  {\"a\":1}"), "application/json");
        assert_eq!(raw_content_type(b"<ClinicalDocument/>"), "application/xml");
        assert_eq!(raw_content_type(b"id,name"), "text/plain");
    }
}
