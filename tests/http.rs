//! End-to-end: the HTTP ingest port with the real binary. HL7 v2 answered with its ACK (and an
//! HTTP status that says the same), FHIR documents journaled and delivered, and every refusal
//! (unknown path, wrong type, too large, no credentials, not a document) defined and tested.

mod common;

use std::path::Path;

use common::{ack_fields, default_channels, repo_root, settled, Engine};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// A channels dir with the repository's scripts and these extra channel files.
fn channels_dir(
    root: &Path,
    extra: &[(&str, &str)],
    scripts: &[(&str, &str)],
) -> Vec<(String, String)> {
    let repo = repo_root();
    let channels = root.join("channels");
    let script_dir = root.join("scripts");
    std::fs::create_dir_all(&channels).unwrap();
    std::fs::create_dir_all(script_dir.join("lib")).unwrap();
    for dir in ["scripts", "scripts/lib"] {
        for entry in std::fs::read_dir(repo.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rhai") {
                let rel = path.strip_prefix(repo.join("scripts")).unwrap();
                std::fs::copy(&path, script_dir.join(rel)).unwrap();
            }
        }
    }
    std::fs::copy(
        repo.join("channels/adt-to-fhir.toml"),
        channels.join("adt-to-fhir.toml"),
    )
    .unwrap();
    for (name, text) in extra {
        std::fs::write(channels.join(name), text).unwrap();
    }
    for (name, text) in scripts {
        std::fs::write(script_dir.join(name), text).unwrap();
    }
    vec![
        (
            "ORBITER_CHANNELS_DIR".into(),
            channels.display().to_string(),
        ),
        (
            "ORBITER_SCRIPTS_DIR".into(),
            script_dir.display().to_string(),
        ),
    ]
}

fn env<'a>(pairs: &'a [(String, String)], more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(more.iter().copied())
        .collect()
}

#[tokio::test]
async fn hl7_over_http_is_acknowledged_and_takes_the_mllp_channels() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = default_channels();
    let engine = Engine::start(&dir.path().join("data"), &env(&pairs, &[]));

    let resp = engine
        .ingest("/hl7v2", "application/hl7-v2", common::adt("HTTP1"))
        .await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/hl7-v2"
    );
    assert!(resp.headers().contains_key("x-orbiter-transaction"));
    let (code, control, _) = ack_fields(&resp.bytes().await.unwrap());
    assert_eq!((code.as_str(), control.as_str()), ("AA", "HTTP1"));
    let tx = settled(&engine, "HTTP1").await;
    assert_eq!(tx["status"], "delivered", "{tx}");
    assert_eq!(tx["origin"], "/hl7v2");
    // It came in over HTTP, whichever channels it goes to.
    assert_eq!(tx["listener"], "http", "{tx}");
    let (status, bundle) = engine.api("/fhir/Patient?identifier=MRNHTTP1").await;
    assert_eq!(status, 200);
    assert_eq!(bundle["total"], 1, "{bundle}");
    // A rerun routes it as it was routed: to the MLLP port's channels.
    let (_, rerun) = engine.rerun(&tx["id"]).await;
    assert_eq!(rerun["status"], "delivered", "{rerun}");
    assert_eq!(rerun["channels"][0]["name"], "adt-to-fhir", "{rerun}");

    // x-application/hl7-v2+er7 is the same thing.
    let resp = engine
        .ingest("/hl7v2", "x-application/hl7-v2+er7", common::adt("HTTP2"))
        .await;
    assert_eq!(resp.status().as_u16(), 200);

    // Bytes that are not HL7: journaled as failed, answered AR with 400.
    let resp = engine
        .ingest("/hl7v2", "text/plain", b"hello, not hl7".to_vec())
        .await;
    assert_eq!(resp.status().as_u16(), 400);
    let id = resp.headers()["x-orbiter-transaction"]
        .to_str()
        .unwrap()
        .to_string();
    let (code, _, _) = ack_fields(&resp.bytes().await.unwrap());
    assert_eq!(code, "AR");
    let (status, tx) = engine.api(&format!("/api/transactions/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(tx["status"], "failed", "{tx}");

    // HL7 missing MSH-10: AE, 422.
    let no_id = b"MSH|^~\\&|A|B|C|D|20261201||ADT^A01||P|2.5.1\rPID|1||X^^^H^MR".to_vec();
    let resp = engine.ingest("/hl7v2", "application/hl7-v2", no_id).await;
    assert_eq!(resp.status().as_u16(), 422);
    let (code, _, text) = ack_fields(&resp.bytes().await.unwrap());
    assert_eq!(code, "AE", "{text}");

    // Counted under the HTTP listener, not the MLLP port (which received nothing).
    let metrics = engine.metrics().await;
    for line in [
        "orbiter_messages_total{listener=\"http\",outcome=\"accepted\"} 2",
        "orbiter_ack_latency_seconds_count{listener=\"http\"} 4",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    assert!(!metrics.contains("listener=\"mllp\""), "{metrics}");
}

#[tokio::test]
async fn refusals_are_defined() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = default_channels();
    let engine = Engine::start(
        &dir.path().join("data"),
        &env(&pairs, &[("ORBITER_HTTP_MAX_BODY_BYTES", "4096")]),
    );
    let resp = engine
        .ingest("/nowhere", "application/hl7-v2", common::adt("R1"))
        .await;
    assert_eq!(resp.status().as_u16(), 404);
    let outcome: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(outcome["resourceType"], "OperationOutcome");

    let resp = engine
        .ingest("/hl7v2", "image/png", common::adt("R2"))
        .await;
    assert_eq!(resp.status().as_u16(), 415);
    // The refusal says what the path takes, with every type that names it.
    let outcome: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        outcome["issue"][0]["diagnostics"],
        "Content-Type \"image/png\": this path takes hl7v2 (application/hl7-v2, \
         x-application/hl7-v2+er7 or text/plain)",
        "{outcome}"
    );
    let resp = engine
        .ingest("/hl7v2", "application/fhir+json", b"{}".to_vec())
        .await;
    assert_eq!(resp.status().as_u16(), 415);
    let resp = engine
        .ingest("/ccda", "application/json", b"{}".to_vec())
        .await;
    assert_eq!(resp.status().as_u16(), 415);
    let outcome: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        outcome["issue"][0]["diagnostics"],
        "this path takes ccda (application/xml, application/cda+xml or text/xml), not fhir",
        "{outcome}"
    );

    // A CSV whose charset the reader cannot decode is refused whole, not read as UTF-8 and
    // failed row by row.
    let resp = engine
        .ingest(
            "/csv/lab",
            "text/csv; charset=windows-1252",
            b"mrn,family\n1,M\xfcller\n".to_vec(),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 415);
    let outcome: serde_json::Value = resp.json().await.unwrap();
    assert!(
        outcome["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .starts_with("charset \"windows-1252\" is not one a CSV path reads"),
        "{outcome}"
    );

    // A compressed body is refused as such, not journaled as bytes that are "not HL7".
    let resp = client()
        .post(format!("http://{}/hl7v2", engine.http))
        .header("Content-Type", "application/hl7-v2")
        .header("Content-Encoding", "gzip")
        .body(vec![0x1f, 0x8b, 0x08, 0x00, 0x00])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    assert_eq!(resp.headers()["accept-encoding"], "identity");
    let outcome: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        outcome["issue"][0]["diagnostics"],
        "Content-Encoding \"gzip\" is not taken: send the body uncompressed",
        "{outcome}"
    );

    let mut big = common::adt("R3");
    big.extend(std::iter::repeat_n(b'x', 8192));
    let resp = engine.ingest("/hl7v2", "application/hl7-v2", big).await;
    assert_eq!(resp.status().as_u16(), 413);

    let resp = client()
        .get(format!("http://{}/hl7v2", engine.http))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    // Nothing of the refused requests reached the journal.
    let (_, page) = engine.api("/api/transactions?limit=10").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 0, "{page}");
    // ... but an operator can see that senders are being turned away, and with what.
    let metrics = engine.metrics().await;
    for line in [
        "orbiter_http_refused_total{code=\"404\"} 1",
        "orbiter_http_refused_total{code=\"405\"} 1",
        "orbiter_http_refused_total{code=\"413\"} 1",
        "orbiter_http_refused_total{code=\"415\"} 5",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
}

/// A client that sends its headers and then stalls mid-body (or trickles too slowly) is
/// answered 408 and closed after `http.body_idle_timeout_secs`, for HL7 and for CSV (which is
/// spooled to disk), and nothing is journaled: it cannot hold a connection for ever.
#[tokio::test]
async fn a_stalled_body_is_answered_408_and_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let pairs = default_channels();
    let engine = Engine::start(
        &dir.path().join("data"),
        &env(&pairs, &[("ORBITER_HTTP_BODY_IDLE_TIMEOUT_SECS", "1")]),
    );
    for (path, content_type) in [("/hl7v2", "application/hl7-v2"), ("/csv/lab", "text/csv")] {
        let mut stream = tokio::net::TcpStream::connect(&engine.http).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n\
             Content-Length: 100000\r\n\r\nMSH|"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_to_end(&mut answer),
        )
        .await;
        assert!(read.is_ok(), "{path}: the connection is closed");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(answer.contains("stalled"), "{answer}");
    }
    let (_, page) = engine.api("/api/transactions?limit=10").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 0, "{page}");
}

const FHIR_CHANNEL: &str = r#"
name = "fhir-in"
[source]
kind = "http"
path = "/fhir"
format = "fhir"
[transform]
script = "scripts/fhir_in.rhai"
[[destination]]
kind = "cdr"
"#;

const FHIR_SCRIPT: &str = r#"
// Incoming FHIR resources and Bundles pass through as they are.
if msg.resourceType == "Bundle" { msg } else { [msg] }
"#;

const SECURED_CHANNEL: &str = r#"
name = "fhir-secured"
[source]
kind = "http"
path = "/secured"
[source.auth]
kind = "bearer"
token_env = "TEST_INGEST_TOKEN"
[transform]
script = "scripts/fhir_in.rhai"
[[destination]]
kind = "cdr"
[ack]
mode = "on-delivery"
"#;

/// Bearer auth whose token variable the engine was not given: nobody gets in, and the log
/// says it is the engine's setup, not the sender's token.
const UNSET_SECRET_CHANNEL: &str = r#"
name = "fhir-unset"
[source]
kind = "http"
path = "/unset"
[source.auth]
kind = "bearer"
token_env = "TEST_INGEST_TOKEN_NEVER_SET"
[transform]
script = "scripts/fhir_in.rhai"
[[destination]]
kind = "cdr"
"#;

/// On-delivery to a FHIR server that is down (`{port}`: nothing listens there).
const DOWN_CHANNEL: &str = r#"
name = "fhir-down"
[source]
kind = "http"
path = "/down"
[transform]
script = "scripts/fhir_in.rhai"
[[destination]]
kind = "http"
url = "http://127.0.0.1:{port}/fhir"
[ack]
mode = "on-delivery"
"#;

/// The same with HTTP Basic credentials (the password from the environment).
const BASIC_CHANNEL: &str = r#"
name = "fhir-basic"
[source]
kind = "http"
path = "/basic"
[source.auth]
kind = "basic"
user = "lab-feed"
password_env = "TEST_INGEST_PASSWORD"
[transform]
script = "scripts/fhir_in.rhai"
[[destination]]
kind = "cdr"
[ack]
mode = "on-delivery"
"#;

fn patient_bundle(mrn: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{
            "fullUrl": "urn:uuid:7d3c8c62-3b73-4f35-9b2c-2d4c8f9b1a01",
            "resource": {
                "resourceType": "Patient",
                "identifier": [{"system": "urn:oid:1.2.3", "value": mrn}],
                "name": [{"family": "Posted", "given": ["Fhir"]}]
            },
            "request": {"method": "PUT", "url": format!("Patient?identifier=urn:oid:1.2.3|{mrn}")}
        }]
    }))
    .unwrap()
}

#[tokio::test]
async fn fhir_documents_are_journaled_routed_and_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let down_channel = DOWN_CHANNEL.replace("{port}", &common::free_port().to_string());
    let pairs = channels_dir(
        dir.path(),
        &[
            ("fhir-in.toml", FHIR_CHANNEL),
            ("fhir-secured.toml", SECURED_CHANNEL),
            ("fhir-basic.toml", BASIC_CHANNEL),
            ("fhir-unset.toml", UNSET_SECRET_CHANNEL),
            ("fhir-down.toml", &down_channel),
        ],
        &[("fhir_in.rhai", FHIR_SCRIPT)],
    );
    let engine = Engine::start(
        &dir.path().join("data"),
        &env(
            &pairs,
            &[
                ("TEST_INGEST_TOKEN", "ingest-secret-42"),
                ("TEST_INGEST_PASSWORD", "pa:ss-wörd"),
            ],
        ),
    );

    let resp = engine
        .ingest("/fhir", "application/fhir+json", patient_bundle("F1"))
        .await;
    assert_eq!(resp.status().as_u16(), 202);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "received");
    let id = body["id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, tx) = engine.api(&format!("/api/transactions/{id}")).await;
        if tx["status"] == "delivered" {
            assert_eq!(tx["format"], "fhir");
            assert_eq!(tx["message_type"], "Bundle");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never delivered: {tx}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (_, found) = engine.api("/fhir/Patient?identifier=F1").await;
    assert_eq!(found["total"], 1, "{found}");

    // Not JSON: journaled as failed, answered 400 with an OperationOutcome.
    let resp = engine
        .ingest("/fhir", "application/fhir+json", b"{not json".to_vec())
        .await;
    assert_eq!(resp.status().as_u16(), 400);
    let id = resp.headers()["x-orbiter-transaction"]
        .to_str()
        .unwrap()
        .to_string();
    let outcome: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert!(
        outcome["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("not JSON"),
        "{outcome}"
    );
    let (_, tx) = engine.api(&format!("/api/transactions/{id}")).await;
    assert_eq!(tx["status"], "failed");

    // A channel that declares its format refuses others.
    let resp = engine
        .ingest("/fhir", "application/xml", b"<x/>".to_vec())
        .await;
    assert_eq!(resp.status().as_u16(), 415);

    // Client credentials, and an on-delivery answer once the CDR has it.
    let resp = engine
        .ingest("/secured", "application/fhir+json", patient_bundle("F2"))
        .await;
    assert_eq!(resp.status().as_u16(), 401);
    let resp = client()
        .post(format!("http://{}/secured", engine.http))
        .header("Content-Type", "application/fhir+json")
        .bearer_auth("wrong")
        .body(patient_bundle("F2"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = client()
        .post(format!("http://{}/secured", engine.http))
        .header("Content-Type", "application/fhir+json")
        .bearer_auth("ingest-secret-42")
        .body(patient_bundle("F2"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "delivered", "{body}");
    let (_, found) = engine.api("/fhir/Patient?identifier=F2").await;
    assert_eq!(found["total"], 1, "{found}");

    // Basic credentials: a wrong password is refused with the challenge, the right one taken.
    let post_basic = |password: &'static str| {
        client()
            .post(format!("http://{}/basic", engine.http))
            .header("Content-Type", "application/fhir+json")
            .basic_auth("lab-feed", Some(password))
            .body(patient_bundle("F3"))
            .send()
    };
    let resp = post_basic("pa:ss-word").await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Basic realm=\"orbiter\""
    );
    let resp = post_basic("pa:ss-wörd").await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // Whoever sets up a sender can see why it is refused, and never what it presented.
    let log = engine.log();
    assert!(
        log.contains("ingest request refused: no or wrong credentials"),
        "{log}"
    );
    assert!(
        !log.contains("pa:ss-word") && !log.contains("wrong\""),
        "{log}"
    );
    let (_, found) = engine.api("/fhir/Patient?identifier=F3").await;
    assert_eq!(found["total"], 1, "{found}");

    // A channel whose secret the engine lacks refuses everyone, and the log names the
    // variable to set (the sender's credentials are not the problem).
    let resp = client()
        .post(format!("http://{}/unset", engine.http))
        .header("Content-Type", "application/fhir+json")
        .bearer_auth("anything")
        .body(patient_bundle("F4"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let log = engine.log();
    let line = log
        .lines()
        .find(|l| l.contains("channel=fhir-unset"))
        .unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    assert!(
        line.contains("secret is not set") && line.contains("TEST_INGEST_TOKEN_NEVER_SET"),
        "{line}"
    );

    // On delivery to a destination that is down: 503 queued, with when to come back.
    let resp = engine
        .ingest("/down", "application/fhir+json", patient_bundle("F5"))
        .await;
    assert_eq!(resp.status().as_u16(), 503);
    assert!(resp.headers().contains_key("x-orbiter-transaction"));
    assert_eq!(resp.headers()["retry-after"], "30");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["status"], "queued", "{body}");
}

#[tokio::test]
async fn ingest_over_tls_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let common::TestPki {
        ca,
        client_cert,
        client_key,
        ca_path,
        cert_path,
        key_path,
    } = common::TestPki::new(dir.path());
    let pairs = default_channels();
    let engine = Engine::start(
        &dir.path().join("data"),
        &env(
            &pairs,
            &[
                ("ORBITER_HTTP_TLS_CERT", &cert_path),
                ("ORBITER_HTTP_TLS_KEY", &key_path),
                ("ORBITER_HTTP_TLS_CLIENT_CA", &ca_path),
            ],
        ),
    );
    let root = reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap();
    let identity = reqwest::Identity::from_pem(
        format!("{}{}", client_cert.pem(), client_key.serialize_pem()).as_bytes(),
    )
    .unwrap();
    let url = format!("https://{}/hl7v2", engine.http);
    let with_cert = reqwest::Client::builder()
        .tls_certs_only([root.clone()])
        .identity(identity)
        .build()
        .unwrap();
    let resp = with_cert
        .post(&url)
        .header("Content-Type", "application/hl7-v2")
        .body(common::adt("TLS-H1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (code, _, _) = ack_fields(&resp.bytes().await.unwrap());
    assert_eq!(code, "AA");

    // No client certificate: the handshake fails, nothing is journaled.
    let without = reqwest::Client::builder()
        .tls_certs_only([root])
        .build()
        .unwrap();
    let refused = without
        .post(&url)
        .header("Content-Type", "application/hl7-v2")
        .body(common::adt("TLS-H2"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a client without a certificate is refused"
    );
    // Plain HTTP to the TLS port gets nothing either.
    let plain = client()
        .post(format!("http://{}/hl7v2", engine.http))
        .header("Content-Type", "application/hl7-v2")
        .body(common::adt("TLS-H3"))
        .send()
        .await;
    assert!(plain.map(|r| r.status().as_u16() != 200).unwrap_or(true));
    let (_, page) = engine.api("/api/transactions?limit=10").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
}
