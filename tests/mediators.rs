//! End-to-end: the real `orbiter` and the real `orbiter-fhir-validator` mediator on loopback.
//! The mediator registers and beats; an admin's config reaches it through a heartbeat and
//! changes its verdicts; a channel's output goes through it and its orchestrations land on the
//! transaction; an unregistered URN, a mediator answering 500 and an offline mediator queue.
//!
//! The mediator is its own workspace crate, so Cargo does not build it for this test target:
//! the test runs `cargo build -p orbiter-fhir-validator` itself (a no-op when it is fresh) into
//! the same target directory and profile as the `orbiter` binary it was given. Cargo releases
//! its build lock before it runs tests, so this works from `cargo test` too.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ack_fields, repo_root, settled, Engine, TOKEN};
use orbiter::mllp::MllpClient;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const VALIDATOR: &str = "urn:mediator:orbiter-fhir-validator";
const GHOST: &str = "urn:mediator:never-registered";
const BROKEN: &str = "urn:mediator:broken";

/// Builds the mediator binary next to `orbiter` and returns its path.
fn validator_binary() -> PathBuf {
    let orbiter = Path::new(env!("CARGO_BIN_EXE_orbiter"));
    let profile_dir = orbiter.parent().unwrap();
    let target_dir = profile_dir.parent().unwrap();
    let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
        "debug" => "dev",
        other => other,
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "orbiter-fhir-validator",
            "--profile",
            profile,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(repo_root())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building orbiter-fhir-validator failed");
    let binary = profile_dir.join(format!(
        "orbiter-fhir-validator{}",
        std::env::consts::EXE_SUFFIX
    ));
    assert!(binary.exists(), "{} missing", binary.display());
    binary
}

/// Three channels taking ADT^A01 by sending application, each to one mediator destination.
fn workspace(root: &Path) -> Vec<(String, String)> {
    let repo = repo_root();
    std::fs::create_dir_all(root.join("channels")).unwrap();
    std::fs::create_dir_all(root.join("scripts/lib")).unwrap();
    for entry in std::fs::read_dir(repo.join("scripts"))
        .unwrap()
        .chain(std::fs::read_dir(repo.join("scripts/lib")).unwrap())
    {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rhai") {
            let rel = path.strip_prefix(repo.join("scripts")).unwrap();
            std::fs::copy(&path, root.join("scripts").join(rel)).unwrap();
        }
    }
    for (name, app, urn, extra) in [
        (
            "to-validator",
            "VALID",
            VALIDATOR,
            "endpoint = \"validate\"",
        ),
        // The HL7 v2 as received: not the FHIR JSON the validator wants.
        ("raw-to-validator", "RAW", VALIDATOR, "payload = \"raw\""),
        ("to-ghost", "GHOST", GHOST, ""),
        ("to-broken", "BROKEN", BROKEN, ""),
    ] {
        let channel = format!(
            "name = \"{name}\"\n\
             [source]\nkind = \"mllp\"\n\
             [match]\nmessage_type = [\"ADT^A01\"]\nsending_application = [\"{app}\"]\n\
             [transform]\nscript = \"scripts/adt_to_fhir.rhai\"\n\
             [[destination]]\nkind = \"mediator\"\nname = \"{name}-mediator\"\nurn = \"{urn}\"\n{extra}\n\
             [retry]\nmax_attempts = 1000\ninitial_backoff_ms = 200\nmax_backoff_ms = 500\n"
        );
        std::fs::write(root.join(format!("channels/{name}.toml")), channel).unwrap();
    }
    vec![
        (
            "ORBITER_CHANNELS_DIR".into(),
            root.join("channels").display().to_string(),
        ),
        (
            "ORBITER_SCRIPTS_DIR".into(),
            root.join("scripts").display().to_string(),
        ),
        ("ORBITER_MEDIATORS_OFFLINE_AFTER_SECS".into(), "3".into()),
    ]
}

/// An ADT^A01 from `app`, one patient per control id.
fn adt(app: &str, control_id: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|{app}|SENDFAC|ORBITER|HOSP|20261201120000||ADT^A01^ADT_A01|{control_id}|P|2.5.1\r\
         EVN|A01|20261201120000\r\
         PID|1||MRN-{control_id}^^^HOSP^MR||DOE^JANE||19800101|F\r\
         PV1|1|I|WARD1^101^A||||||||||||||||V-{control_id}"
    )
    .into_bytes()
}

async fn send(engine: &Engine, app: &str, control_id: &str) -> Value {
    let mut client = MllpClient::connect(&engine.mllp, Duration::from_secs(10))
        .await
        .unwrap();
    let ack = client.send(&adt(app, control_id)).await.unwrap();
    assert_eq!(ack_fields(&ack).0, "AA", "{control_id}");
    settled(engine, control_id).await
}

/// The transaction with its steps, and its delivery step's output.
async fn delivery(engine: &Engine, tx: &Value) -> (Value, Value) {
    let (status, detail) = engine.api(&format!("/api/transactions/{}", tx["id"])).await;
    assert_eq!(status, 200, "{detail}");
    let step = detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "deliver")
        .unwrap_or_else(|| panic!("no delivery step: {detail}"))
        .clone();
    (detail, step)
}

fn last_reason(tx: &Value) -> String {
    tx["events"]
        .as_array()
        .and_then(|e| e.last())
        .and_then(|e| e["reason"].as_str())
        .unwrap_or("")
        .to_string()
}

async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Polls `GET /api/mediators/{urn}` until `check` holds (15 s at most).
async fn mediator_until(
    engine: &Engine,
    urn: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = engine.api(&format!("/api/mediators/{urn}")).await;
        if status == 200 && check(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{urn} never {what}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends fresh VALID messages until one's mediator answer shows `maxEntries` (the config the
/// mediator got through its heartbeat) and returns that transaction and its delivery step.
async fn until_mediator_uses(engine: &Engine, prefix: &str, max_entries: &str) -> (Value, Value) {
    let deadline = Instant::now() + Duration::from_secs(15);
    for n in 0.. {
        let tx = send(engine, "VALID", &format!("{prefix}-{n}")).await;
        let (detail, step) = delivery(engine, &tx).await;
        if step["output"]["properties"]["maxEntries"] == max_entries {
            return (detail, step);
        }
        assert!(Instant::now() < deadline, "config never applied: {detail}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    unreachable!()
}

/// What a [`canned_mediator`] answers: HTTP status, Content-Type, body.
type Answer = Arc<std::sync::Mutex<(u16, &'static str, String)>>;

/// A mediator that answers every request with HTTP 500 (in OpenHIM's format), counting them.
async fn broken_mediator() -> (u16, Arc<AtomicUsize>) {
    let body = json!({"x-mediator-urn": BROKEN, "status": "Failed",
                      "response": {"status": 500, "body": "database down",
                                   "timestamp": "2026-12-01T12:00:00Z"}});
    let (port, hits, _) = canned_mediator(500, "application/json+openhim", body.to_string()).await;
    (port, hits)
}

/// A mediator that answers every request with the answer in force (the test may change it),
/// counting the requests.
async fn canned_mediator(
    status: u16,
    content_type: &'static str,
    body: String,
) -> (u16, Arc<AtomicUsize>, Answer) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let answer: Answer = Arc::new(std::sync::Mutex::new((status, content_type, body)));
    let (counter, answering) = (hits.clone(), answer.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let (counter, answering) = (counter.clone(), answering.clone());
            tokio::spawn(async move {
                // Read the head, then the body its Content-Length announces.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let (status, content_type, body) = answering.lock().unwrap().clone();
                let answer = format!(
                    "HTTP/1.1 {status} Canned\r\nContent-Type: {content_type}\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (port, hits, answer)
}

struct Mediator(Child);

impl Drop for Mediator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mediator_registers_beats_gets_its_config_and_mediates_a_channel() {
    let binary = validator_binary();
    let dir = tempfile::tempdir().unwrap();
    let env = workspace(&dir.path().join("ws"));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut engine = Engine::start(&dir.path().join("data"), &env_refs);

    // The API is behind the token.
    let anonymous = reqwest::get(engine.url("/api/mediators")).await.unwrap();
    assert_eq!(anonymous.status(), 401);

    // The mediator registers itself (on a port it picked) and beats every second.
    let log = std::fs::File::create(dir.path().join("validator.log")).unwrap();
    let mut validator = Mediator(
        Command::new(&binary)
            .env("ORBITER_API_URL", format!("http://{}", engine.admin))
            .env("ORBITER_MEDIATOR_TOKEN", TOKEN)
            .env("MEDIATOR_ADDR", "127.0.0.1:0")
            .env("MEDIATOR_HEARTBEAT_SECS", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the mediator starts"),
    );
    let registered = mediator_until(&engine, VALIDATOR, "came online", |m| {
        m["status"] == "online" && m["_uptime"].is_number()
    })
    .await;
    assert_eq!(registered["name"], "FHIR structural validator");
    assert_eq!(registered["endpoints"][0]["name"], "validate");
    assert_eq!(registered["endpoints"][0]["host"], "127.0.0.1");
    assert_ne!(registered["endpoints"][0]["port"], 0);
    assert_eq!(registered["configDefs"][1]["param"], "maxEntries");
    assert_eq!(registered["config"]["maxEntries"], 1000);
    let (status, all) = engine.api("/api/mediators").await;
    assert_eq!(status, 200);
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .any(|m| m["urn"] == VALIDATOR),
        "{all}"
    );
    let validator_log = || std::fs::read_to_string(dir.path().join("validator.log")).unwrap();

    // Started with the token of a client without the `mediator` role: it stops, and says why.
    let (status, operator) = call(
        reqwest::Method::POST,
        engine.url("/api/clients"),
        Some(json!({"name": "not-a-mediator", "roles": ["operator"]})),
    )
    .await;
    assert_eq!(status, 201, "{operator}");
    let refused = Command::new(&binary)
        .env("ORBITER_API_URL", format!("http://{}", engine.admin))
        .env(
            "ORBITER_MEDIATOR_TOKEN",
            operator["token"].as_str().unwrap(),
        )
        .env("MEDIATOR_ADDR", "127.0.0.1:0")
        .output()
        .expect("the mediator runs");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{said}");
    assert!(said.contains("needs the `mediator` role"), "{said}");
    assert!(
        !validator_log().contains(TOKEN),
        "the token must never be logged"
    );

    // Config is checked against configDefs.
    let config_url = engine.url(&format!("/api/mediators/{VALIDATOR}/config"));
    for bad in [json!({"maxEntries": "many"}), json!({"colour": "blue"})] {
        let (status, body) =
            call(reqwest::Method::PUT, config_url.clone(), Some(bad.clone())).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, body) = call(
        reqwest::Method::PUT,
        config_url.clone(),
        Some(json!({"strictReferences": false, "maxEntries": 50})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["config"]["maxEntries"], 50);

    // A channel's output through the mediator: delivered, with the mediator's orchestrations,
    // once the new config has reached it through a heartbeat.
    let (detail, step) = until_mediator_uses(&engine, "VALID", "50").await;
    assert_eq!(detail["status"], "delivered", "{detail}");
    assert_eq!(step["destination"], "to-validator-mediator");
    assert_eq!(step["ok"], true);
    let answer = &step["output"];
    assert_eq!(answer["x-mediator-urn"], VALIDATOR);
    assert_eq!(answer["status"], "Successful");
    assert_eq!(answer["response"]["status"], 200);
    let names: Vec<&str> = answer["orchestrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["structure", "references"]);
    assert_eq!(answer["orchestrations"][1]["response"]["status"], 200);
    assert_eq!(answer["properties"]["resourceType"], "Bundle");
    assert_eq!(answer["properties"]["errors"], "0");
    assert!(
        answer["properties"]["entries"]
            .as_str()
            .unwrap()
            .parse::<u32>()
            .unwrap()
            >= 2
    );

    // maxEntries = 1: the mediator now refuses the Bundle (Completed, 422): failed, and the
    // answer is still on the transaction.
    let (status, _) = call(
        reqwest::Method::PUT,
        config_url.clone(),
        Some(json!({"maxEntries": 1})),
    )
    .await;
    assert_eq!(status, 200);
    let (detail, step) = until_mediator_uses(&engine, "TOO-BIG", "1").await;
    assert_eq!(detail["status"], "failed", "{detail}");
    assert!(last_reason(&detail).contains("422"), "{detail}");
    assert!(last_reason(&detail).contains("maxEntries"), "{detail}");
    assert_eq!(step["ok"], false);
    assert_eq!(step["output"]["status"], "Completed");
    assert_eq!(
        step["output"]["orchestrations"][0]["response"]["status"],
        422
    );

    // payload = "raw": the mediator gets the HL7 v2 itself, and says it is not JSON (400).
    let raw = send(&engine, "RAW", "RAW-1").await;
    assert_eq!(raw["status"], "failed", "{raw}");
    assert!(last_reason(&raw).contains("response 400"), "{raw}");
    assert!(last_reason(&raw).contains("not JSON"), "{raw}");

    // A URN nobody registered: queued, and why.
    let ghost = send(&engine, "GHOST", "GHOST-1").await;
    assert_eq!(ghost["status"], "queued", "{ghost}");
    assert!(last_reason(&ghost).contains("is not registered"), "{ghost}");
    // The operator's log says so once, without waiting for anyone to read the transaction.
    let log = engine.log();
    let warned = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("not registered") && l.contains(GHOST))
        .count();
    assert_eq!(warned, 1, "{log}");

    // A registered, beating mediator that answers 500: called, and queued for a retry.
    let (port, hits) = broken_mediator().await;
    let (status, body) = call(
        reqwest::Method::POST,
        engine.url("/api/mediators"),
        Some(json!({"urn": BROKEN, "version": "0.1.0", "name": "Broken",
                    "endpoints": [{"name": "main", "host": "127.0.0.1", "port": port.to_string(), "type": "http"}]})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let beat_url = engine.url(&format!("/api/mediators/{BROKEN}/heartbeat"));
    let beating = tokio::spawn(async move {
        loop {
            call(
                reqwest::Method::POST,
                beat_url.clone(),
                Some(json!({"uptime": 1.0})),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    mediator_until(&engine, BROKEN, "came online", |m| m["status"] == "online").await;
    let broken = send(&engine, "BROKEN", "BROKEN-1").await;
    assert_eq!(broken["status"], "queued", "{broken}");
    assert!(last_reason(&broken).contains("HTTP 500"), "{broken}");
    assert!(
        hits.load(Ordering::SeqCst) >= 1,
        "the broken mediator was never called"
    );
    beating.abort();

    // The validator stops: after the offline window it shows offline and deliveries queue.
    let _ = validator.0.kill();
    let _ = validator.0.wait();
    mediator_until(&engine, VALIDATOR, "went offline", |m| {
        m["status"] == "offline"
    })
    .await;
    let offline = send(&engine, "VALID", "OFFLINE-1").await;
    assert_eq!(offline["status"], "queued", "{offline}");
    assert!(last_reason(&offline).contains("offline"), "{offline}");
    assert!(
        engine
            .log()
            .lines()
            .any(|l| l.contains("WARN") && l.contains("mediator offline") && l.contains(VALIDATOR)),
        "{}",
        engine.log()
    );

    // Registrations and config survive a restart of the engine.
    assert!(engine.stop().success());
    engine.restart();
    let (status, kept) = engine.api(&format!("/api/mediators/{VALIDATOR}")).await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(kept["config"]["maxEntries"], 1);
    assert_eq!(kept["status"], "offline");

    // A heartbeat must say how long the mediator has been up.
    let no_uptime = call(
        reqwest::Method::POST,
        engine.url(&format!("/api/mediators/{VALIDATOR}/heartbeat")),
        Some(json!({"config": true})),
    )
    .await;
    assert_eq!(no_uptime.0, 400, "{}", no_uptime.1);

    // Removal.
    let one = engine.url(&format!("/api/mediators/{VALIDATOR}"));
    assert_eq!(
        call(reqwest::Method::DELETE, one.clone(), None).await.0,
        200
    );
    assert_eq!(
        engine.api(&format!("/api/mediators/{VALIDATOR}")).await.0,
        404
    );
    assert_eq!(call(reqwest::Method::DELETE, one, None).await.0, 404);
    let heartbeat = call(
        reqwest::Method::POST,
        engine.url(&format!("/api/mediators/{VALIDATOR}/heartbeat")),
        Some(json!({"uptime": 1})),
    )
    .await;
    assert_eq!(heartbeat.0, 404);
}

async fn call_as(
    token: &str,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A `mediator` API client, created the way the README says; its token.
async fn mediator_client(engine: &Engine, name: &str) -> String {
    let (status, body) = call(
        reqwest::Method::POST,
        engine.url("/api/clients"),
        Some(json!({"name": name, "roles": ["mediator"]})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_string()
}

/// A mediator written for OpenHIM, with its own `mediator` client: its URN is its own, and
/// the answers OpenHIM core accepts (no status, an `error` asking for a retry) mean here what
/// they mean there; a body that is not JSON says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openhim_mediator_owns_its_urn_and_its_answers_mean_what_they_mean_in_openhim() {
    let dir = tempfile::tempdir().unwrap();
    let env = workspace(&dir.path().join("ws"));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let engine = Engine::start(&dir.path().join("data"), &env_refs);
    let owner = mediator_client(&engine, "med-owner").await;
    let other = mediator_client(&engine, "med-other").await;

    let no_status = json!({"x-mediator-urn": BROKEN,
                           "response": {"status": "200", "body": "done"},
                           "orchestrations": [{"name": "registry lookup",
                                               "error": {"message": "timed out"}}]});
    let (port, hits, answer) =
        canned_mediator(200, "application/json+openhim", no_status.to_string()).await;
    let registration = |port: u16| {
        json!({"urn": BROKEN, "version": "1.0.0", "name": "OpenHIM-style",
               "endpoints": [{"name": "main", "host": "127.0.0.1", "port": port, "type": "http"}],
               "configDefs": [{"param": "apiKey", "type": "password"}],
               "config": {"apiKey": "s3cret"}})
    };
    let mediators = engine.url("/api/mediators");
    let (status, body) = call_as(
        &owner,
        reqwest::Method::POST,
        mediators.clone(),
        Some(registration(port)),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["_owner"], "med-owner");

    // Another mediator's client may neither move the endpoint nor beat (and read the secret).
    let (status, body) = call_as(
        &other,
        reqwest::Method::POST,
        mediators.clone(),
        Some(registration(1)),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("another API client"),
        "{body}"
    );
    let beat_url = engine.url(&format!("/api/mediators/{BROKEN}/heartbeat"));
    let (status, body) = call_as(
        &other,
        reqwest::Method::POST,
        beat_url.clone(),
        Some(json!({"uptime": 1, "config": true})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(!body.to_string().contains("s3cret"), "{body}");
    let (_, kept) = engine.api(&format!("/api/mediators/{BROKEN}")).await;
    assert_eq!(kept["endpoints"][0]["port"], port, "{kept}");
    let (_, audit) = engine.api("/api/audit?actor=med-other").await;
    let denied: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["outcome"] == "denied")
        .collect();
    assert_eq!(denied.len(), 2, "{audit}");

    // Its own client beats and gets the config.
    let (status, config) = call_as(
        &owner,
        reqwest::Method::POST,
        beat_url.clone(),
        Some(json!({"uptime": 1, "config": true})),
    )
    .await;
    assert_eq!((status, &config["apiKey"]), (200, &json!("s3cret")));
    let beating = tokio::spawn(async move {
        loop {
            call_as(
                &owner,
                reqwest::Method::POST,
                beat_url.clone(),
                Some(json!({"uptime": 2})),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    mediator_until(&engine, BROKEN, "came online", |m| m["status"] == "online").await;

    // No `status`, a string response status, an orchestration with only an error: delivered.
    let tx = send(&engine, "BROKEN", "LENIENT-1").await;
    assert_eq!(tx["status"], "delivered", "{tx}");
    let (_, step) = delivery(&engine, &tx).await;
    assert_eq!(step["output"]["response"]["status"], 200);
    assert_eq!(
        step["output"]["orchestrations"][0]["error"]["message"],
        "timed out"
    );

    // `error`: queued and retried, with the mediator's message, until the upstream is back.
    let failing = json!({"x-mediator-urn": BROKEN, "status": "Failed",
                         "response": {"status": 500, "body": "upstream down"},
                         "error": {"message": "connect ECONNREFUSED 10.9.9.9:443"}});
    *answer.lock().unwrap() = (200, "application/json+openhim", failing.to_string());
    let tx = send(&engine, "BROKEN", "ERROR-1").await;
    assert_eq!(tx["status"], "queued", "{tx}");
    assert!(
        last_reason(&tx).contains("ECONNREFUSED 10.9.9.9:443"),
        "{tx}"
    );
    // The queued transaction keeps what the mediator answered, as a delivered one does.
    let (_, step) = delivery(&engine, &tx).await;
    assert_eq!(step["ok"], false, "{step}");
    assert_eq!(
        step["output"]["error"]["message"], "connect ECONNREFUSED 10.9.9.9:443",
        "{step}"
    );
    assert_eq!(step["output"]["response"]["status"], 500, "{step}");
    let before = hits.load(Ordering::SeqCst);
    let fine = json!({"x-mediator-urn": BROKEN, "status": "Successful",
                      "response": {"status": 201, "body": "stored"}});
    *answer.lock().unwrap() = (200, "application/json+openhim", fine.to_string());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, detail) = engine.api(&format!("/api/transactions/{}", tx["id"])).await;
        if detail["status"] == "delivered" {
            break;
        }
        assert!(Instant::now() < deadline, "never delivered: {detail}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(hits.load(Ordering::SeqCst) > before);

    // The OpenHIM content type with a body that is not JSON: failed, and the reason says so.
    *answer.lock().unwrap() = (200, "application/json+openhim", "Internal error".into());
    let tx = send(&engine, "BROKEN", "NOT-JSON-1").await;
    assert_eq!(tx["status"], "failed", "{tx}");
    assert!(last_reason(&tx).contains("body is not JSON"), "{tx}");
    beating.abort();
}
