//! End-to-end: channels, Rhai transforms and the embedded CDR, through the real binary.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{ack_fields, adt, default_channels, fixture, repo_root, settled, Engine, Workspace};
use orbiter::mllp::MllpClient;

const T: Duration = Duration::from_secs(10);

fn start(data: &Path, env: &[(String, String)]) -> Engine {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Engine::start(data, &env)
}

async fn fhir(engine: &Engine, path: &str) -> serde_json::Value {
    let (status, body) = engine.api(&format!("/fhir/{path}")).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

fn total(bundle: &serde_json::Value) -> usize {
    bundle["entry"].as_array().map(|e| e.len()).unwrap_or(0)
}

#[tokio::test]
async fn default_adt_channel_writes_patient_and_encounter_idempotently() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(&dir.path().join("data"), &default_channels());
    let mut c = MllpClient::connect(&engine.mllp, T).await.unwrap();

    let a01 = fixture("adt_a01.hl7");
    let message = orbiter::hl7::Message::parse(&a01).unwrap();
    let control_id = message.control_id().unwrap().to_string();
    let mrn = message.get_str("PID-3.1").unwrap().unwrap().to_string();
    assert_eq!(ack_fields(&c.send(&a01).await.unwrap()).0, "AA");
    let tx = settled(&engine, &control_id).await;
    assert_eq!(tx["status"], "delivered", "{tx}");

    // The transaction shows the transform's output and the CDR's answer.
    let (_, detail) = engine.api(&format!("/api/transactions/{}", tx["id"])).await;
    let steps = detail["steps"].as_array().unwrap();
    assert!(steps
        .iter()
        .any(|s| s["kind"] == "transform" && s["output"]["resourceType"] == "Bundle"));
    assert!(steps
        .iter()
        .any(|s| s["kind"] == "deliver" && s["ok"] == true));
    assert_eq!(
        detail["channels"][0]["revision"].as_str().unwrap().len(),
        16
    );

    let patients = fhir(&engine, &format!("Patient?identifier={mrn}")).await;
    assert_eq!(total(&patients), 1, "{patients}");
    let patient_id = patients["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let encounters = fhir(&engine, &format!("Encounter?subject=Patient/{patient_id}")).await;
    assert_eq!(total(&encounters), 1, "{encounters}");

    // Replaying the same message changes nothing: still one Patient, version unchanged.
    let version = patients["entry"][0]["resource"]["meta"]["versionId"].clone();
    assert_eq!(ack_fields(&c.send(&a01).await.unwrap()).0, "AA");
    let (_, dups) = engine
        .api(&format!("/api/transactions?control_id={control_id}"))
        .await;
    let replay = &dups["items"][0];
    assert_eq!(
        settled_id(&engine, replay["id"].as_u64().unwrap()).await,
        "delivered"
    );
    let patients = fhir(&engine, &format!("Patient?identifier={mrn}")).await;
    assert_eq!(total(&patients), 1);
    assert_eq!(
        patients["entry"][0]["resource"]["meta"]["versionId"], version,
        "no new version"
    );
    assert_eq!(
        total(&fhir(&engine, &format!("Encounter?subject=Patient/{patient_id}")).await),
        1
    );

    // An A08 for the same patient updates the same Patient.
    let a08 = fixture("adt_a08.hl7");
    let a08_msg = orbiter::hl7::Message::parse(&a08).unwrap();
    assert_eq!(
        a08_msg.get_str("PID-3.1").unwrap().unwrap(),
        mrn,
        "fixture: same patient"
    );
    assert_eq!(ack_fields(&c.send(&a08).await.unwrap()).0, "AA");
    let tx = settled(&engine, a08_msg.control_id().unwrap().as_ref()).await;
    assert_eq!(tx["status"], "delivered", "{tx}");
    let patients = fhir(&engine, &format!("Patient?identifier={mrn}")).await;
    assert_eq!(total(&patients), 1, "updated, not duplicated");
    assert_eq!(patients["entry"][0]["resource"]["id"], patient_id.as_str());
}

async fn settled_id(engine: &Engine, id: u64) -> String {
    for _ in 0..200 {
        let (_, tx) = engine.api(&format!("/api/transactions/{id}")).await;
        let status = tx["status"].as_str().unwrap_or("").to_string();
        if status != "received" && status != "processing" {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("transaction {id} never settled");
}

#[tokio::test]
async fn script_errors_and_limits_fail_one_transaction_only() {
    let ws = Workspace::new();
    let file_dest = "[[destination]]\nkind = \"file\"\npath = \"out\"";
    ws.channel(
        "good",
        "\"ADT^A01\"",
        "#{resourceType: \"Patient\", id: msg.control_id}",
        "on-commit",
        file_dest,
    );
    ws.channel(
        "crashes",
        "\"ADT^A02\"",
        "let x = 1;\nlet y = x.no_such_method();\ny",
        "on-commit",
        file_dest,
    );
    ws.channel(
        "spins",
        "\"ADT^A03\"",
        "let n = 0;\nloop { n += 1; }\nn",
        "on-commit",
        file_dest,
    );
    ws.channel(
        "recurses",
        "\"ADT^A04\"",
        "fn f(n) { f(n + 1) }\nf(0)",
        "on-commit",
        file_dest,
    );
    ws.channel(
        "bloats",
        "\"ADT^A05\"",
        "let s = \"x\";\nloop { s += s; }\ns",
        "on-commit",
        file_dest,
    );
    ws.channel(
        "refuses",
        "\"ADT^A06\"",
        "reject(\"no ward\");",
        "on-delivery",
        file_dest,
    );
    let dir = tempfile::tempdir().unwrap();
    let engine = start(&dir.path().join("data"), &ws.env());
    let mut c = MllpClient::connect(&engine.mllp, T).await.unwrap();

    let typed = |trigger: &str, id: &str| {
        String::from_utf8(adt(id))
            .unwrap()
            .replace("ADT^A01^ADT_A01", &format!("ADT^{trigger}"))
            .into_bytes()
    };
    for (trigger, id) in [
        ("A02", "E-CRASH"),
        ("A03", "E-SPIN"),
        ("A04", "E-DEEP"),
        ("A05", "E-BIG"),
    ] {
        let started = std::time::Instant::now();
        assert_eq!(
            ack_fields(&c.send(&typed(trigger, id)).await.unwrap()).0,
            "AA",
            "on-commit: stored, so AA"
        );
        let tx = settled(&engine, id).await;
        assert_eq!(tx["status"], "failed", "{tx}");
        let error = tx["error"].as_str().unwrap();
        // Named from the scripts dir on, never by the server's absolute path (the error also
        // reaches senders, in AE acknowledgements).
        let script = ws.path("scripts").display().to_string();
        assert!(
            error.contains("scripts/") && error.contains(".rhai:"),
            "file:line:col in {error}"
        );
        assert!(!error.contains(&script), "no server path in {error}");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{id} bounded in time"
        );
    }
    let tx = settled(&engine, "E-CRASH").await;
    assert!(
        tx["error"].as_str().unwrap().contains("crashes.rhai:2:"),
        "{tx}"
    );

    // on-delivery + reject(): the sender gets AE with the reason.
    let (code, _, text) = ack_fields(&c.send(&typed("A06", "E-REJECT")).await.unwrap());
    assert_eq!(code, "AE", "{text}");
    assert!(text.contains("no ward"), "{text}");

    // The engine and the other channels carry on.
    assert_eq!(ack_fields(&c.send(&adt("E-FINE")).await.unwrap()).0, "AA");
    assert_eq!(settled(&engine, "E-FINE").await["status"], "delivered");
    let out = std::fs::read_dir(dir.path().join("data/out"))
        .unwrap()
        .count();
    assert_eq!(out, 1, "the good channel wrote its file");
    // Each failure is in the log by transaction and channel, never with its reason (which can
    // quote the message) above debug.
    let log = engine.log();
    let failed = log
        .lines()
        .filter(|l| l.contains("transaction failed in its channel"))
        .collect::<Vec<_>>();
    assert!(failed.len() >= 4, "{log}");
    assert!(failed.iter().all(|l| l.contains("WARN")), "{failed:?}");
    assert!(!log.contains("no ward"), "reasons stay at debug: {log}");
}

#[tokio::test]
async fn hot_reload_swaps_good_revisions_and_keeps_running_on_broken_ones() {
    let ws = Workspace::new();
    let file_dest = "[[destination]]\nkind = \"file\"\npath = \"out\"";
    ws.channel(
        "live",
        "\"ADT^*\"",
        "#{resourceType: \"Patient\", id: \"v1\"}",
        "on-delivery",
        file_dest,
    );
    let dir = tempfile::tempdir().unwrap();
    let engine = start(&dir.path().join("data"), &ws.env());
    let mut c = MllpClient::connect(&engine.mllp, T).await.unwrap();

    assert_eq!(ack_fields(&c.send(&adt("R-1")).await.unwrap()).0, "AA");
    let first_revision = settled(&engine, "R-1").await["channels"][0]["revision"].clone();

    // A second sender keeps a stream going through every reload below.
    let addr = engine.mllp.clone();
    let background = tokio::spawn(async move {
        let mut c = MllpClient::connect(&addr, T).await.unwrap();
        for n in 0..300 {
            let (code, _, text) = ack_fields(&c.send(&adt(&format!("BG-{n}"))).await.unwrap());
            assert_eq!(code, "AA", "{text}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    // A broken edit: the running revision stays, the API says why.
    ws.write(
        "scripts/live.rhai",
        "#{resourceType: \"Patient\", id: \"v2\"",
    );
    let client = reqwest::Client::new();
    let reload = client
        .post(engine.url("/api/channels/reload"))
        .bearer_auth(common::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 422);
    let report: serde_json::Value = reload.json().await.unwrap();
    assert!(
        report["errors"][0].as_str().unwrap().contains("live.rhai:"),
        "{report}"
    );
    assert_eq!(ack_fields(&c.send(&adt("R-2")).await.unwrap()).0, "AA");
    assert_eq!(
        settled(&engine, "R-2").await["channels"][0]["revision"],
        first_revision
    );

    // A good edit is picked up by the file watcher alone, with no API call.
    ws.write(
        "scripts/live.rhai",
        "#{resourceType: \"Patient\", id: \"v3\"}",
    );
    let mut swapped = false;
    for n in 0..100 {
        let id = format!("R-3-{n}");
        assert_eq!(ack_fields(&c.send(&adt(&id)).await.unwrap()).0, "AA");
        if settled(&engine, &id).await["channels"][0]["revision"] != first_revision {
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(swapped, "the new revision took over");
    let (_, channels) = engine.api("/api/channels").await;
    assert_eq!(channels["channels"][0]["name"], "live");

    // Every message of the stream was acknowledged (on-delivery: after its channel ran) and
    // delivered by one revision or the other.
    background.await.unwrap();
    for n in [0, 150, 299] {
        assert_eq!(
            settled(&engine, &format!("BG-{n}")).await["status"],
            "delivered"
        );
    }
    let (_, failed) = engine.api("/api/transactions?status=failed").await;
    assert!(failed["items"].as_array().unwrap().is_empty(), "{failed}");
}

#[test]
fn check_and_try_from_the_real_binary() {
    let orbiter = env!("CARGO_BIN_EXE_orbiter");
    let root = repo_root();

    // The shipped channels and scripts compile.
    let out = Command::new(orbiter)
        .arg("check")
        .env("ORBITER_CHANNELS_DIR", root.join("channels"))
        .env("ORBITER_SCRIPTS_DIR", root.join("scripts"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("adt-to-fhir"));

    // A broken script: non-zero exit, file:line:col.
    let ws = Workspace::new();
    ws.channel(
        "bad",
        "\"ADT^A01\"",
        "let a = 1;\nlet b = (a + ;\n",
        "on-commit",
        "",
    );
    let out = Command::new(orbiter)
        .arg("check")
        .env("ORBITER_CHANNELS_DIR", ws.path("channels"))
        .env("ORBITER_SCRIPTS_DIR", ws.path("scripts"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.rhai:2:"), "{stderr}");

    // A misspelt key in a channel file: file:line:col.
    ws.write(
        "channels/bad.toml",
        "name = \"bad\"\n[source]\nkind = \"mllp\"\n[transfrom]\nscript = \"bad.rhai\"\n",
    );
    let out = Command::new(orbiter)
        .args(["check"])
        .arg(ws.path("channels/bad.toml"))
        .env("ORBITER_SCRIPTS_DIR", ws.path("scripts"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml:4:"), "{stderr}");

    // try: the default ADT channel on the A01 fixture prints a transaction Bundle.
    let out = Command::new(orbiter)
        .args(["try", "adt-to-fhir"])
        .arg(root.join("fixtures/hl7v2/adt_a01.hl7"))
        .arg("--json")
        .env("ORBITER_CHANNELS_DIR", root.join("channels"))
        .env("ORBITER_SCRIPTS_DIR", root.join("scripts"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let envelope: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(envelope["outcome"], "output");
    assert_eq!(envelope["output"]["resourceType"], "Bundle");
    assert_eq!(envelope["output"]["type"], "transaction");
    let kinds: Vec<&str> = envelope["output"]["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["resourceType"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"Patient") && kinds.contains(&"Encounter"),
        "{kinds:?}"
    );
}

#[test]
fn check_and_try_say_each_thing_once_and_where() {
    let orbiter = env!("CARGO_BIN_EXE_orbiter");
    let root = repo_root();
    let ws = Workspace::new();
    let run = |args: &[&str]| {
        Command::new(orbiter)
            .args(args)
            .envs(ws.env())
            .output()
            .unwrap()
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();

    // A path that is not there is an error, not "0 channel(s)".
    let missing = ws.path("channels/nope");
    let out = run(&["check", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("channels/nope: no such file"), "{stderr}");

    // try: a compile error once, not once per error in the chain.
    ws.channel("undef", "\"ADT^A01\"", "let a = b;\n", "on-commit", "");
    let adt = root.join("fixtures/hl7v2/adt_a01.hl7");
    let adt = adt.to_str().unwrap();
    let out = run(&["try", "undef", adt]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.matches("undef.rhai:1:").count(), 1, "{stderr}");

    // A script that does not exist: at the channel's `script` key.
    ws.write(
        "channels/gone.toml",
        "name = \"gone\"\n[source]\nkind = \"mllp\"\n[transform]\nscript = \"scripts/nope.rhai\"\n",
    );
    let out = run(&["try", "gone", adt]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("gone.toml:5:1: the transform script does not exist (looked for"),
        "{stderr}"
    );

    // HL7 v2 output is printed as HL7, one segment a line; --json keeps it a JSON string.
    ws.channel(
        "rewrite",
        "\"ADT^A01\"",
        "msg.set(\"MSH-5\", \"NEWAPP\");\nmsg\n",
        "on-commit",
        "",
    );
    let out = run(&["try", "rewrite", adt]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.starts_with("MSH|^~\\&|"), "{stdout}");
    assert!(
        stdout.contains("|NEWAPP|") && stdout.contains("\nPID|"),
        "{stdout}"
    );
    assert!(
        !stdout.contains('\r') && stdout.ends_with('\n'),
        "{stdout:?}"
    );
    let out = run(&["try", "rewrite", adt, "--json"]);
    let envelope: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let output = envelope["output"].as_str().unwrap();
    assert!(output.contains("\rPID|"), "{envelope}");
    assert!(!text(&out.stderr).contains("note:"), "it takes ADT^A01");

    // A message the channel's [match] does not take still runs, with a note saying so.
    ws.channel("labs", "\"ORU^R01\"", "msg\n", "on-commit", "");
    let out = run(&["try", "labs", adt]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("note: labs's [match] does not take this message (ADT^A01)"),
        "{stderr}"
    );
}

#[test]
fn a_reader_that_goes_away_stops_try_quietly() {
    let orbiter = env!("CARGO_BIN_EXE_orbiter");
    let root = repo_root();
    // A pipe whose reader is gone before anything is written: every write fails with EPIPE,
    // as `| head -3` makes the later ones fail.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(orbiter)
        .args(["try", "oru-to-fhir"])
        .arg(root.join("fixtures/hl7v2/oru_r01.hl7"))
        .env("ORBITER_CHANNELS_DIR", root.join("channels"))
        .env("ORBITER_SCRIPTS_DIR", root.join("scripts"))
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn a_channel_on_its_own_mllp_port_takes_only_what_arrives_there() {
    let ws = Workspace::new();
    let file_dest = "[[destination]]\nkind = \"file\"\npath = \"out\"";
    ws.channel(
        "shared",
        "\"ADT^*\"",
        "#{resourceType: \"Patient\", id: \"shared\"}",
        "on-delivery",
        file_dest,
    );
    let dir = tempfile::tempdir().unwrap();
    let engine = start(&dir.path().join("data"), &ws.env());

    // Added while running: the port opens at the next reload, without a restart.
    let port = common::free_port();
    ws.write(
        "channels/lab-port.toml",
        &format!(
            "name = \"lab-port\"\n[source]\nkind = \"mllp\"\naddr = \"127.0.0.1:{port}\"\n\
             [transform]\nscript = \"lab-port.rhai\"\n{file_dest}\n[ack]\nmode = \"on-delivery\"\n"
        ),
    );
    ws.write(
        "scripts/lab-port.rhai",
        "#{resourceType: \"Patient\", id: \"own\"}",
    );
    let own = format!("127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + T;
    let mut c = loop {
        if tokio::net::TcpStream::connect(&own).await.is_ok() {
            break MllpClient::connect(&own, T).await.unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "port never opened:\n{}",
            engine.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(ack_fields(&c.send(&adt("OWN-1")).await.unwrap()).0, "AA");
    let tx = settled(&engine, "OWN-1").await;
    let channels: Vec<&str> = tx["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(channels, ["lab-port"], "{tx}");
    assert_eq!(tx["listener"], format!("mllp:{own}"));

    // The shared port does not feed the channel with its own port.
    let mut shared = MllpClient::connect(&engine.mllp, T).await.unwrap();
    assert_eq!(
        ack_fields(&shared.send(&adt("SHARED-1")).await.unwrap()).0,
        "AA"
    );
    let tx = settled(&engine, "SHARED-1").await;
    assert_eq!(tx["channels"][0]["name"], "shared", "{tx}");
    assert_eq!(tx["channels"].as_array().unwrap().len(), 1, "{tx}");

    // Removed: the port closes.
    drop(c);
    std::fs::remove_file(ws.path("channels/lab-port.toml")).unwrap();
    let deadline = std::time::Instant::now() + T;
    while MllpClient::connect(&own, Duration::from_millis(200))
        .await
        .is_ok()
    {
        assert!(std::time::Instant::now() < deadline, "port never closed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_channel_port_that_cannot_open_is_counted_logged_once_and_retried() {
    let ws = Workspace::new();
    // Someone else holds the port the channel asks for.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    ws.write(
        "channels/clash.toml",
        &format!(
            "name = \"clash\"\n[source]\nkind = \"mllp\"\naddr = \"127.0.0.1:{port}\"\n\
             [transform]\nscript = \"clash.rhai\"\n"
        ),
    );
    ws.write(
        "scripts/clash.rhai",
        "#{resourceType: \"Patient\", id: \"p\"}",
    );
    let dir = tempfile::tempdir().unwrap();
    let engine = start(&dir.path().join("data"), &ws.env());
    let ready = || async {
        let body: serde_json::Value = reqwest::get(engine.url("/ready"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body
    };
    // Several retries (one every 2 s) later: counted, still ready, one error line.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let body = ready().await;
    assert_eq!(body["checks"]["channel_ports_failing"], 1, "{body}");
    assert_eq!(
        body["status"], "ready",
        "the shared port still works: {body}"
    );
    assert!(engine
        .metrics()
        .await
        .contains("orbiter_channel_ports_failing 1"));
    let log = engine.log();
    assert_eq!(log.matches("MLLP port cannot open").count(), 1, "{log}");
    // Freed: opened at the next retry, and no longer counted.
    drop(taken);
    let deadline = std::time::Instant::now() + T;
    while ready().await["checks"]["channel_ports_failing"] != 0 {
        assert!(std::time::Instant::now() < deadline, "{}", engine.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut c = MllpClient::connect(&format!("127.0.0.1:{port}"), T)
        .await
        .unwrap();
    assert_eq!(ack_fields(&c.send(&adt("CLASH-1")).await.unwrap()).0, "AA");
}

#[tokio::test]
async fn a_destination_that_stays_down_is_retried_then_given_up() {
    let ws = Workspace::new();
    // Bound but not listening: every attempt is refused (retryable), and no other process can
    // take the port while the test runs (a port merely found free once could be).
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed = reserved.local_addr().unwrap().port();
    ws.channel(
        "down",
        "\"ADT^*\"",
        "#{resourceType: \"Patient\", id: \"x\"}",
        "on-commit",
        &format!(
            "[[destination]]\nkind = \"http\"\nurl = \"http://127.0.0.1:{closed}/fhir\"\n\
             [retry]\nmax_attempts = 3\ninitial_backoff_ms = 50\nmax_backoff_ms = 100"
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let engine = start(&dir.path().join("data"), &ws.env());
    let mut c = MllpClient::connect(&engine.mllp, T).await.unwrap();
    assert_eq!(ack_fields(&c.send(&adt("DOWN-1")).await.unwrap()).0, "AA");
    let deadline = std::time::Instant::now() + T;
    let tx = loop {
        let (_, page) = engine.api("/api/transactions?control_id=DOWN-1").await;
        let tx = page["items"][0].clone();
        if tx["status"] == "failed" {
            break tx;
        }
        assert!(std::time::Instant::now() < deadline, "never gave up: {tx}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let queued = tx["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] == "queued")
        .count();
    assert_eq!(queued, 3, "three attempts, each queued: {tx}");
    assert!(
        tx["error"]
            .as_str()
            .unwrap_or("")
            .contains("gave up after 3 attempts"),
        "{tx}"
    );
    // ...and why: the last attempt's error, not only how many there were.
    assert!(
        tx["error"].as_str().unwrap_or("").contains("refused"),
        "{tx}"
    );
    // The give-up is counted: each attempt was a retry, the end a failure.
    let metrics = engine.metrics().await;
    for line in [
        "orbiter_channel_messages_total{channel=\"down\",status=\"failed\"} 1",
        "orbiter_deliveries_total{destination=\"http\",outcome=\"failed\"} 1",
        "orbiter_deliveries_total{destination=\"http\",outcome=\"retry\"} 3",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    assert!(
        engine.log().contains("gave up"),
        "a warning says which transaction gave up"
    );

    // The same patient's next message is not held behind the one that gave up: it is tried
    // (and queued for the destination being down), not "waiting behind" a failed transaction.
    let next = String::from_utf8(adt("DOWN-1"))
        .unwrap()
        .replace("|DOWN-1|P|", "|DOWN-2|P|");
    assert_eq!(ack_fields(&c.send(next.as_bytes()).await.unwrap()).0, "AA");
    let deadline = std::time::Instant::now() + T;
    let tx = loop {
        let (_, page) = engine.api("/api/transactions?control_id=DOWN-2").await;
        let tx = page["items"][0].clone();
        if tx["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["status"] == "queued"))
        {
            break tx;
        }
        assert!(std::time::Instant::now() < deadline, "never queued: {tx}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let reasons = tx["events"].to_string();
    assert!(!reasons.contains("waiting behind"), "{tx}");
    assert!(
        reasons.contains("Connection refused") || reasons.contains("refused"),
        "{tx}"
    );
}

#[tokio::test]
async fn an_mllp_destination_speaks_tls_to_a_tls_receiver() {
    // The receiver: a second engine whose MLLP port speaks only TLS.
    let receiver_ws = Workspace::new();
    let receiver_dir = tempfile::tempdir().unwrap();
    let pki = common::TestPki::new(receiver_dir.path());
    let mut receiver_env = receiver_ws.env();
    receiver_env.push(("ORBITER_MLLP_TLS_CERT".into(), pki.cert_path.clone()));
    receiver_env.push(("ORBITER_MLLP_TLS_KEY".into(), pki.key_path.clone()));
    let receiver = start(&receiver_dir.path().join("data"), &receiver_env);

    let ws = Workspace::new();
    ws.channel(
        "forward",
        "\"ADT^*\"",
        "msg",
        "on-delivery",
        &format!(
            "[[destination]]\nkind = \"mllp\"\naddr = \"{}\"\ntls_ca = \"{}\"",
            receiver.mllp, pki.ca_path
        ),
    );
    // The same receiver without TLS: the plain-text exchange fails and is retried (AR).
    ws.channel(
        "plain",
        "\"ADT^A08\"",
        "msg",
        "on-delivery",
        &format!(
            "[[destination]]\nkind = \"mllp\"\naddr = \"{}\"",
            receiver.mllp
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let engine = start(&dir.path().join("data"), &ws.env());
    let mut c = MllpClient::connect(&engine.mllp, T).await.unwrap();
    let (code, _, text) = ack_fields(&c.send(&adt("TLS-1")).await.unwrap());
    assert_eq!(code, "AA", "{text}");
    let received = settled(&receiver, "TLS-1").await;
    assert_eq!(received["control_id"], "TLS-1", "{received}");
    // An A08 also goes to `plain`, which speaks plain text to the TLS port: no ACK comes back,
    // so it is queued for a retry and the sender hears AR.
    let a08 = String::from_utf8(adt("TLS-2"))
        .unwrap()
        .replace("ADT^A01^ADT_A01", "ADT^A08^ADT_A01");
    let (code, _, text) = ack_fields(&c.send(a08.as_bytes()).await.unwrap());
    assert_eq!(code, "AR", "{text}");
    assert!(text.contains("plain"), "{text}");
}

#[tokio::test]
async fn an_mllp_destination_forwards_to_a_second_engine_and_keeps_its_ack() {
    // The receiver: a second engine, no channels (it stores and acknowledges).
    let receiver_ws = Workspace::new();
    let receiver_dir = tempfile::tempdir().unwrap();
    let receiver = start(&receiver_dir.path().join("data"), &receiver_ws.env());

    let ws = Workspace::new();
    ws.channel(
        "forward",
        "\"ADT^*\"",
        "msg[\"MSH-5\"] = \"DOWNSTREAM\";\nmsg",
        "on-delivery",
        &format!(
            "[[destination]]\nkind = \"mllp\"\naddr = \"{}\"",
            receiver.mllp
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let engine = start(&dir.path().join("data"), &ws.env());
    let mut c = MllpClient::connect(&engine.mllp, T).await.unwrap();
    let (code, _, text) = ack_fields(&c.send(&adt("FWD-1")).await.unwrap());
    assert_eq!(code, "AA", "{text}");
    let tx = settled(&engine, "FWD-1").await;
    assert_eq!(tx["status"], "delivered", "{tx}");
    let (_, detail) = engine
        .api(&format!("/api/transactions/{}", tx["id"].as_u64().unwrap()))
        .await;
    let deliver = detail["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "deliver")
        .cloned()
        .unwrap_or_else(|| panic!("no deliver step: {detail}"));
    assert_eq!(deliver["output"]["code"], "AA", "{deliver}");

    // The receiver has the edited message.
    let received = settled(&receiver, "FWD-1").await;
    assert_eq!(
        received["receiving_application"], "DOWNSTREAM",
        "{received}"
    );
}
