//! Destinations: where a channel's FHIR output goes, and how failures are classified.
//!
//! - `cdr`: the configured CDR: the embedded store in-process, or `cdr.url` over HTTP;
//! - `http`: any FHIR server at the destination's own `url`;
//! - `file`: one JSON file per transaction in a directory (under the data dir when relative);
//! - `mllp`: HL7 v2 output to a downstream system's MLLP port (`addr`), classified by its ACK.
//! - `mediator`: a registered mediator's endpoint, by URN ([`mediator`]).
//!
//! Before a Bundle goes to a FHIR server (`cdr`, `http`), its plain creates (`POST Type` without
//! `ifNoneExist`) become `PUT Type/<id>` under ids derived from the transaction ([`creates`]),
//! so that a repeated delivery (a retry, a resume after a crash, a rerun) writes them once.
//!
//! Classification, as a FHIR client would: 2xx delivered; 4xx failed for good (the
//! OperationOutcome is kept), except 408 and 429, and 401 and 403 (the engine's credentials
//! refused, not the message); 5xx, timeouts and refused connections are retried later (the
//! transaction goes to `queued`).

mod availability;
pub mod creates;
mod fhir_http;
pub mod mediator;
mod mllp;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cdr::Cdr;
use crate::channel::{Channel, DestinationDef, DestinationKind};
use crate::journal::TxId;
use crate::metrics::Metrics;

pub use creates::IdSeed;
pub use fhir_http::{client_builder, shown as shown_url, Credentials, FhirHttp};
pub use mediator::MediatorTarget;

/// What a destination did with the output.
#[derive(Debug, Clone)]
pub enum Delivery {
    Delivered {
        response: Option<Value>,
    },
    /// Refused for good (e.g. 4xx with an OperationOutcome).
    Failed {
        error: String,
        response: Option<Value>,
    },
    /// Try again later (5xx, timeout, connection refused). `response`: what the destination
    /// answered, when it answered something worth keeping (a mediator's document with its
    /// orchestrations): the queued transaction shows it.
    Retry {
        error: String,
        response: Option<Value>,
    },
}

impl Delivery {
    /// Try again later, with nothing from the destination to keep.
    pub fn retry(error: impl Into<String>) -> Delivery {
        Delivery::Retry {
            error: error.into(),
            response: None,
        }
    }
}

/// The configured CDR.
#[derive(Clone)]
pub enum CdrTarget {
    /// The embedded store, written in-process (no HTTP hop).
    Embedded(Cdr),
    /// An external FHIR server.
    External(FhirHttp),
}

/// Delivers to every kind of destination.
#[derive(Clone)]
pub struct Deliverer {
    cdr: CdrTarget,
    data_dir: PathBuf,
    /// Timeouts and credentials for `http` destinations.
    http_timeout: Duration,
    metrics: Arc<Metrics>,
    /// Registered mediators, for `mediator` destinations (unset: those fail).
    mediators: Option<MediatorTarget>,
    /// Which destinations are down: logged when that changes, not at every message.
    availability: Arc<availability::Availability>,
}

impl Deliverer {
    pub fn new(cdr: CdrTarget, data_dir: &Path, metrics: Arc<Metrics>) -> Deliverer {
        Deliverer {
            cdr,
            data_dir: data_dir.to_path_buf(),
            http_timeout: Duration::from_secs(30),
            metrics,
            mediators: None,
            availability: Arc::default(),
        }
    }

    /// Enables `mediator` destinations.
    pub fn with_mediators(mut self, mediators: MediatorTarget) -> Deliverer {
        self.mediators = Some(mediators);
        self
    }

    /// Sends `output` to one destination. It is shared (`Arc`) so that the embedded CDR, which
    /// consumes a Bundle, copies it only when another destination still holds it, and never on
    /// the caller's thread. `seed`: where the ids of plain creates come from ([`creates`]).
    pub async fn deliver(
        &self,
        destination: &DestinationDef,
        id: TxId,
        seed: IdSeed<'_>,
        channel: &Channel,
        output: Arc<Value>,
        raw: &[u8],
    ) -> Delivery {
        let name = destination.display_name();
        let started = Instant::now();
        // Plain creates made repeatable for a FHIR server (only a Bundle that has any).
        let to_fhir_server = matches!(
            destination.kind,
            DestinationKind::Cdr | DestinationKind::Http
        );
        let ids = (to_fhir_server && creates::has_plain_creates(&output))
            .then(|| creates::CreateIds::new(seed, channel.name(), &name));
        let embedded_cdr =
            destination.kind == DestinationKind::Cdr && matches!(self.cdr, CdrTarget::Embedded(_));
        // (The embedded CDR rewrites the copy it takes, off this thread.)
        let rewritten = match &ids {
            Some(ids) if !embedded_cdr => {
                let mut copy = Value::clone(&output);
                ids.apply(&mut copy);
                Some(copy)
            }
            _ => None,
        };
        let value: &Value = rewritten.as_ref().unwrap_or(&output);
        // The HTTP status a CDR or FHIR server answered, if it answered.
        let mut code: Option<u16> = None;
        let delivery = match destination.kind {
            DestinationKind::Cdr => match &self.cdr {
                CdrTarget::Embedded(cdr) => embedded(cdr, output, ids, &mut code).await,
                CdrTarget::External(http) => http.post(value, &mut code).await,
            },
            DestinationKind::Http => match &destination.url {
                Some(url) => match FhirHttp::new(url, None, self.http_timeout, None) {
                    Ok(http) => http.post(value, &mut code).await,
                    Err(e) => Delivery::Failed {
                        error: e,
                        response: None,
                    },
                },
                None => Delivery::Failed {
                    error: "http destination without url".into(),
                    response: None,
                },
            },
            DestinationKind::File => {
                let dir = destination
                    .path
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("out"));
                let dir = if dir.is_absolute() {
                    dir
                } else {
                    self.data_dir.join(dir)
                };
                write_file(&dir, id, channel.name(), value).await
            }
            DestinationKind::Mllp => match &destination.addr {
                Some(addr) => {
                    let tls = destination.tls_ca.as_ref().map(|ca| mllp::Tls {
                        ca: if ca.is_absolute() {
                            ca.clone()
                        } else {
                            self.data_dir.join(ca)
                        },
                        name: destination.tls_name.clone(),
                    });
                    mllp::send(addr, tls.as_ref(), value, self.http_timeout).await
                }
                None => Delivery::Failed {
                    error: "mllp destination without addr".into(),
                    response: None,
                },
            },
            DestinationKind::Mediator => match &self.mediators {
                Some(mediators) => {
                    mediators
                        .deliver(destination, id, channel.name(), value, raw)
                        .await
                }
                None => Delivery::Failed {
                    error: "mediator destinations are not enabled".into(),
                    response: None,
                },
            },
        };
        let outcome = match &delivery {
            Delivery::Delivered { .. } => "delivered",
            Delivery::Failed { .. } => "failed",
            Delivery::Retry { .. } => "retry",
        };
        self.metrics
            .deliveries_total
            .with_label_values(&[&name, outcome])
            .inc();
        self.metrics
            .delivery_seconds
            .with_label_values(&[&name])
            .observe(started.elapsed().as_secs_f64());
        if matches!(
            destination.kind,
            DestinationKind::Cdr | DestinationKind::Http
        ) {
            self.metrics
                .cdr_responses_total
                .with_label_values(&[&name, &response_code(code)])
                .inc();
        }
        self.availability
            .note(destination, channel.name(), &delivery);
        delivery
    }
}

/// The `code` label of `orbiter_cdr_responses_total`: the HTTP status the server answered,
/// always as its three digits (`200`, `201`, `422`, `503`...), or `none` when no answer came
/// (connection refused, timeout, TLS, an unusable URL). (It used to be `2xx` for every
/// success and the exact code for the rest.)
fn response_code(code: Option<u16>) -> String {
    code.map_or_else(|| "none".into(), |code| code.to_string())
}

/// Classifies an HTTP-style answer (status and body) the way a FHIR client would.
pub fn classify(status: u16, body: Value) -> Delivery {
    match status {
        200..=299 => Delivery::Delivered {
            response: Some(body),
        },
        408 | 429 | 500..=599 => Delivery::retry(format!("HTTP {status}: {}", diagnostics(&body))),
        // The engine's credentials refused (a wrong, expired or rotated token or password, a
        // missing role): nothing in the message can fix that, and failing every message until
        // someone fixes the secret would leave them all to be rerun by hand. Queued instead,
        // like a destination that is down, and delivered once the credentials work (or failed
        // after `max_attempts`).
        401 | 403 => Delivery::retry(format!(
            "HTTP {status}: {} (the destination refused the engine's credentials)",
            diagnostics(&body)
        )),
        _ => Delivery::Failed {
            error: format!("HTTP {status}: {}", diagnostics(&body)),
            response: Some(body),
        },
    }
}

/// An error with its causes, `outer: inner: innermost` (reqwest hides the useful part, such as
/// "connection refused", in its sources).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The readable part of an OperationOutcome (or whatever came back).
pub fn diagnostics(body: &Value) -> String {
    if body["resourceType"] == "OperationOutcome" {
        let texts: Vec<String> = body["issue"]
            .as_array()
            .map(|issues| {
                issues
                    .iter()
                    .map(|i| {
                        i["diagnostics"]
                            .as_str()
                            .or(i["details"]["text"].as_str())
                            .or(i["code"].as_str())
                            .unwrap_or("")
                            .to_string()
                    })
                    .collect()
            })
            .unwrap_or_default();
        return texts.join("; ");
    }
    let text = body.to_string();
    text.chars().take(300).collect()
}

/// Writes to the embedded CDR, `ids` giving the plain creates their ids (see [`creates`]).
async fn embedded(
    cdr: &Cdr,
    value: Arc<Value>,
    ids: Option<creates::CreateIds>,
    code: &mut Option<u16>,
) -> Delivery {
    let answered = cdr
        .deliver_bundle(value, "urn:orbiter:embedded", move |bundle| {
            if let Some(ids) = ids {
                ids.apply(bundle);
            }
        })
        .await;
    match answered {
        Some((status, body)) => {
            *code = Some(status);
            classify(status, body)
        }
        None => Delivery::retry("embedded CDR: the write was interrupted (shutdown)"),
    }
}

/// Writes `<dir>/<id>-<channel>.json` atomically (temp file, fsync, rename): a reader never
/// sees half a file, and a retry overwrites rather than duplicates.
async fn write_file(dir: &Path, id: TxId, channel: &str, value: &Value) -> Delivery {
    let dir = dir.to_path_buf();
    let name = format!("{id}-{channel}.json");
    let body = serde_json::to_vec_pretty(value).expect("JSON serializes");
    let written = tokio::task::spawn_blocking(move || -> std::io::Result<PathBuf> {
        use std::io::Write;
        std::fs::create_dir_all(&dir)?;
        let final_path = dir.join(&name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&body)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &final_path)?;
        Ok(final_path)
    })
    .await;
    match written {
        Ok(Ok(path)) => Delivery::Delivered {
            response: Some(serde_json::json!({"file": path})),
        },
        Ok(Err(e)) => Delivery::retry(format!("writing file: {e}")),
        Err(e) => Delivery::retry(format!("writing file: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Channel `c` with a CDR destination and an `http` one at a port nobody listens on.
    fn channel(dir: &Path) -> Arc<Channel> {
        let paths = crate::channel::ChannelPaths {
            channels_dir: dir.join("channels"),
            scripts_dir: dir.join("scripts"),
            limits: Default::default(),
        };
        std::fs::create_dir_all(&paths.channels_dir).unwrap();
        std::fs::create_dir_all(paths.lib_dir()).unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            paths.channels_dir.join("c.toml"),
            format!(
                "name = \"c\"\n[source]\nkind = \"mllp\"\n[transform]\nscript = \"scripts/c.rhai\"\n\
                 [[destination]]\nkind = \"cdr\"\n\
                 [[destination]]\nkind = \"http\"\nname = \"down\"\nurl = \"http://127.0.0.1:{closed}/fhir\"\n"
            ),
        )
        .unwrap();
        std::fs::write(paths.scripts_dir.join("c.rhai"), "#{}").unwrap();
        let (channels, report) = crate::channel::Channels::load(paths);
        assert!(report.errors.is_empty(), "{report:?}");
        channels.current().get("c").unwrap()
    }

    /// Where the ids of transaction `n`'s plain creates come from.
    fn seed(n: u64) -> IdSeed<'static> {
        IdSeed {
            journal: "TESTJR",
            original: TxId(n),
        }
    }

    /// Credentials refused (401, 403) are the engine's problem, not the message's: queued
    /// and retried, like a server that is down; other 4xx are failed for good, with the
    /// OperationOutcome kept.
    #[test]
    fn refused_credentials_queue_and_other_client_errors_fail() {
        let outcome = |text: &str| {
            serde_json::json!({"resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "security", "diagnostics": text}]})
        };
        for status in [401, 403] {
            match classify(status, outcome("bad token")) {
                Delivery::Retry { error, .. } => {
                    assert!(
                        error.starts_with(&format!("HTTP {status}: bad token")),
                        "{error}"
                    );
                    assert!(error.contains("credentials"), "{error}");
                }
                other => panic!("{status}: {other:?}"),
            }
        }
        for status in [400, 404, 409, 412, 422] {
            match classify(status, outcome("invalid")) {
                Delivery::Failed { error, response } => {
                    assert_eq!(error, format!("HTTP {status}: invalid"));
                    assert_eq!(response.unwrap()["resourceType"], "OperationOutcome");
                }
                other => panic!("{status}: {other:?}"),
            }
        }
        for status in [408, 429, 500, 503] {
            assert!(matches!(
                classify(status, Value::Null),
                Delivery::Retry { .. }
            ));
        }
    }

    /// `orbiter_cdr_responses_total{code}` is always the status answered, or `none`.
    #[tokio::test]
    async fn cdr_answers_are_counted_by_their_status_code() {
        let dir = tempfile::tempdir().unwrap();
        let channel = channel(dir.path());
        let metrics = Arc::new(Metrics::new());
        let cdr = Cdr::open(&dir.path().join("cdr"), 1 << 20).unwrap();
        let deliverer = Deliverer::new(CdrTarget::Embedded(cdr), dir.path(), metrics.clone());
        let bundle = |entry: Value| {
            Arc::new(serde_json::json!({
                "resourceType": "Bundle", "type": "transaction", "entry": [entry]
            }))
        };
        let patient = bundle(serde_json::json!({
            "resource": {"resourceType": "Patient", "id": "p1"},
            "request": {"method": "PUT", "url": "Patient/p1"}
        }));
        let refused = bundle(serde_json::json!({
            "resource": {"resourceType": "Patient", "id": "p2"},
            "request": {"method": "PATCH", "url": "Nothing/p2"}
        }));
        let [cdr, down] = [&channel.def.destinations[0], &channel.def.destinations[1]];
        let delivered = deliverer
            .deliver(cdr, TxId(1), seed(1), &channel, patient.clone(), b"")
            .await;
        assert!(
            matches!(delivered, Delivery::Delivered { .. }),
            "{delivered:?}"
        );
        let failed = deliverer
            .deliver(cdr, TxId(2), seed(2), &channel, refused, b"")
            .await;
        assert!(matches!(failed, Delivery::Failed { .. }), "{failed:?}");
        let retry = deliverer
            .deliver(down, TxId(3), seed(3), &channel, patient, b"")
            .await;
        assert!(matches!(retry, Delivery::Retry { .. }), "{retry:?}");

        let text = metrics.render();
        let mut counted: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("orbiter_cdr_responses_total{"))
            .collect();
        counted.sort();
        let code = |l: &str| {
            l.split("code=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_string()
        };
        let codes: Vec<String> = counted.iter().map(|l| code(l)).collect();
        assert_eq!(codes.len(), 3, "{counted:?}");
        assert_eq!(codes[0], "200", "{counted:?}");
        assert!(
            codes[1].len() == 3 && codes[1].starts_with('4'),
            "{counted:?}"
        );
        assert_eq!(codes[2], "none", "{counted:?}");
        assert!(counted[2].contains("destination=\"down\""), "{counted:?}");
    }
}
