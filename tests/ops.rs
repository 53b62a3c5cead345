//! End-to-end, through the real binary: channels managed over the API, transaction search,
//! reruns, stats, retention, and `orbiter doctor`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ack_fields, adt, free_port, repo_root, Engine, Workspace, TOKEN};
use orbiter::mllp::MllpClient;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

/// A channel without destinations taking `types` (a transformed message is `delivered`).
fn channel_toml(name: &str, types: &str, script: &str, extra: &str) -> String {
    format!(
        "name = \"{name}\"\n[source]\nkind = \"mllp\"\n[match]\nmessage_type = [{types}]\n\
         [transform]\nscript = \"{script}\"\n{extra}"
    )
}

/// Maps to a Patient; control ids containing FAIL make it throw.
const PATIENT_SCRIPT: &str =
    "if msg.control_id.contains(\"FAIL\") { throw \"refused on purpose\"; }\n\
     #{resourceType: \"Patient\", id: msg.control_id}";

async fn call(
    engine: &Engine,
    method: reqwest::Method,
    path: &str,
    content_type: Option<&str>,
    body: Option<String>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, engine.url(path))
        .bearer_auth(TOKEN);
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    if let Some(body) = body {
        req = req.body(body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn put_toml(engine: &Engine, name: &str, toml: &str) -> (u16, Value) {
    let path = format!("/api/channels/{name}");
    call(
        engine,
        reqwest::Method::PUT,
        &path,
        Some("application/toml"),
        Some(toml.into()),
    )
    .await
}

async fn post(engine: &Engine, path: &str, body: Option<Value>) -> (u16, Value) {
    let ct = body.as_ref().map(|_| "application/json");
    call(
        engine,
        reqwest::Method::POST,
        path,
        ct,
        body.map(|b| b.to_string()),
    )
    .await
}

async fn send(engine: &Engine, messages: &[Vec<u8>]) {
    let mut c = MllpClient::connect(&engine.mllp, T).await.unwrap();
    for m in messages {
        let ack = c.send(m).await.unwrap();
        assert_eq!(ack_fields(&ack).0, "AA", "{}", ack_fields(&ack).2);
    }
}

/// Waits until transaction `id` leaves `received`/`processing`; returns its details.
async fn settled(engine: &Engine, id: u64) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let (status, body) = engine.api(&format!("/api/transactions/{id}")).await;
        assert_eq!(status, 200, "{body}");
        let s = body["status"].as_str().unwrap_or("");
        if s != "received" && s != "processing" {
            return body;
        }
        assert!(Instant::now() < deadline, "{id} never settled: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The transaction with this control id (the newest if reruns exist), settled, with details.
async fn by_control(engine: &Engine, control_id: &str) -> Value {
    let listed = common::settled(engine, control_id).await;
    settled(engine, listed["id"].as_u64().unwrap()).await
}

async fn search(engine: &Engine, query: &str) -> Value {
    let (status, body) = engine.api(&format!("/api/transactions?{query}")).await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

fn control_ids(page: &Value) -> Vec<String> {
    let mut ids: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["control_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

fn oru(control_id: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|LAB|SENDFAC|ORBITER|HOSP|20261201120000||ORU^R01^ORU_R01|{control_id}|P|2.5.1\r\
         PID|1||MRNO1^^^HOSP^MR||ROE^RICHARD\r\
         OBR|1||42|GLU\r\
         OBX|1|NM|GLU||5.4|mmol/L"
    )
    .into_bytes()
}

#[tokio::test]
async fn channels_are_managed_over_the_api_and_route_accordingly() {
    let ws = Workspace::new();
    ws.write("scripts/patient.rhai", PATIENT_SCRIPT);
    let engine = ws.start(&[]);
    let toml = channel_toml("adt", "\"ADT^A01\"", "patient.rhai", "");

    // Create: 201, running, written to the channels dir.
    let (status, body) = put_toml(&engine, "adt", &toml).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["enabled"], true);
    let first_revision = body["revision"].as_str().unwrap().to_string();
    assert!(ws.path("channels/adt.toml").is_file());
    let (status, body) = engine.api("/api/channels/adt").await;
    assert_eq!((status, body["name"].as_str()), (200, Some("adt")));
    let (status, body) = engine.api("/api/channels").await;
    assert_eq!(status, 200);
    assert_eq!(body["channels"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["channels"][0]["revision"], first_revision.as_str());
    send(&engine, &[adt("CH-1")]).await;
    let tx = by_control(&engine, "CH-1").await;
    assert_eq!(tx["status"], "delivered", "{tx}");
    assert_eq!(tx["channels"][0]["name"], "adt");

    // Invalid definitions are refused with where, and nothing is written.
    let (status, body) = put_toml(&engine, "adt", &format!("{toml}colour = \"red\"\n")).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["line"], 8, "{body}");
    assert!(body["error"].as_str().unwrap().contains("colour"), "{body}");
    ws.write("scripts/broken.rhai", "let x = ;\n");
    let broken = channel_toml("adt", "\"ADT^A01\"", "broken.rhai", "");
    let (status, body) = put_toml(&engine, "adt", &broken).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("broken.rhai:1:"),
        "{body}"
    );
    // Where in the script, apart too, as for a definition's mistake.
    assert!(
        body["file"].as_str().unwrap().ends_with("broken.rhai"),
        "{body}"
    );
    assert_eq!(
        (&body["line"], &body["column"]),
        (&json!(1), &json!(9)),
        "{body}"
    );
    // A script that is not there: located at its `script` key, like any other mistake.
    let missing = channel_toml("adt", "\"ADT^A01\"", "scripts/nope.rhai", "");
    let (status, body) = put_toml(&engine, "adt", &missing).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["line"], 7, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("the transform script does not exist"),
        "{body}"
    );
    let (status, _) = put_toml(&engine, "other-name", &toml).await;
    assert_eq!(status, 400);
    let on_disk = std::fs::read_to_string(ws.path("channels/adt.toml")).unwrap();
    assert_eq!(on_disk, toml);

    // Disable: the file says so and messages no longer route to it; enable again.
    let (status, body) = post(&engine, "/api/channels/adt/disable", None).await;
    assert_eq!(
        (status, body["enabled"].as_bool()),
        (200, Some(false)),
        "{body}"
    );
    let on_disk = std::fs::read_to_string(ws.path("channels/adt.toml")).unwrap();
    assert!(on_disk.contains("enabled = false"), "{on_disk}");
    send(&engine, &[adt("CH-2")]).await;
    let tx = by_control(&engine, "CH-2").await;
    assert_eq!(tx["status"], "failed", "{tx}");
    let (status, _) = post(&engine, "/api/channels/adt/enable", None).await;
    assert_eq!(status, 200);
    send(&engine, &[adt("CH-3")]).await;
    assert_eq!(by_control(&engine, "CH-3").await["status"], "delivered");

    // Update from JSON: 200, a new revision that takes A04 too.
    let (_, current) = engine.api("/api/channels/adt").await;
    let update = json!({
        "name": "adt",
        "source": {"kind": "mllp"},
        "match": {"message_type": ["ADT^A01", "ADT^A04"]},
        "transform": {"script": "patient.rhai"},
    });
    let (status, body) = call(
        &engine,
        reqwest::Method::PUT,
        "/api/channels/adt",
        Some("application/json"),
        Some(update.to_string()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(body["revision"], current["revision"]);
    assert_ne!(body["revision"].as_str().unwrap(), first_revision);
    assert_eq!(body["match"]["message_type"][1], "ADT^A04");

    // Reload answers with a report.
    let (status, body) = post(&engine, "/api/channels/reload", None).await;
    assert_eq!(status, 200, "{body}");

    // Delete: gone from the API and the disk; messages no longer route.
    let (status, _) = call(
        &engine,
        reqwest::Method::DELETE,
        "/api/channels/adt",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(!ws.path("channels/adt.toml").exists());
    let (status, _) = engine.api("/api/channels/adt").await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &engine,
        reqwest::Method::DELETE,
        "/api/channels/adt",
        None,
        None,
    )
    .await;
    assert_eq!(status, 404);
    send(&engine, &[adt("CH-4")]).await;
    assert_eq!(by_control(&engine, "CH-4").await["status"], "failed");
}

#[tokio::test]
async fn search_rerun_and_stats() {
    let ws = Workspace::new();
    ws.write("scripts/patient.rhai", PATIENT_SCRIPT);
    ws.write(
        "scripts/lab.rhai",
        "#{resourceType: \"Observation\", id: msg.control_id}",
    );
    ws.write(
        "channels/adt.toml",
        &channel_toml("adt", "\"ADT^A01\"", "patient.rhai", ""),
    );
    ws.write(
        "channels/lab.toml",
        &channel_toml("lab", "\"ORU^R01\"", "lab.rhai", ""),
    );
    let engine = ws.start(&[]);
    send(
        &engine,
        &[adt("S-1"), adt("S-2"), adt("S-FAIL"), oru("S-LAB")],
    )
    .await;
    let failed = by_control(&engine, "S-FAIL").await;
    assert_eq!(failed["status"], "failed", "{failed}");
    for id in ["S-1", "S-2", "S-LAB"] {
        assert_eq!(by_control(&engine, id).await["status"], "delivered");
    }

    // Each filter alone.
    assert_eq!(
        control_ids(&search(&engine, "channel=adt").await),
        ["S-1", "S-2", "S-FAIL"]
    );
    assert_eq!(
        control_ids(&search(&engine, "status=failed").await),
        ["S-FAIL"]
    );
    assert_eq!(
        control_ids(&search(&engine, "control_id=S-2").await),
        ["S-2"]
    );
    assert_eq!(
        control_ids(&search(&engine, "message_type=ORU%5ER01").await),
        ["S-LAB"]
    );
    assert_eq!(
        control_ids(&search(&engine, "message_type=ADT%5E*").await).len(),
        3
    );
    // The patient as in PID-3 (ID^^^AUTHORITY): compared through the stored hash.
    assert_eq!(
        control_ids(&search(&engine, "patient=MRNS-1%5E%5E%5EHOSP").await),
        ["S-1"]
    );
    assert_eq!(
        control_ids(&search(&engine, "patient=MRNS-1").await).len(),
        0
    );
    assert_eq!(control_ids(&search(&engine, "q=richard").await), ["S-LAB"]);
    assert_eq!(
        control_ids(&search(&engine, "q=jane&channel=adt").await).len(),
        3
    );
    assert_eq!(
        control_ids(&search(&engine, "since=2999-01-01T00:00:00Z").await).len(),
        0
    );
    assert_eq!(
        control_ids(&search(&engine, "until=2999-01-01T00:00:00Z&status=delivered").await).len(),
        3
    );
    // Free text is bounded: with a scan limit of 1 the page says so and gives a cursor on.
    let page = search(&engine, "q=jane&scan_limit=1").await;
    assert_eq!(page["scanned"], 1);
    assert_eq!(page["scan_limit_reached"], true);
    assert!(page["next_cursor"].as_u64().is_some(), "{page}");
    let (status, _) = engine.api("/api/transactions?colour=red").await;
    assert_eq!(status, 400);

    // Stats from the counters.
    let (status, stats) = engine.api("/api/stats").await;
    assert_eq!(status, 200);
    assert_eq!(stats["source"], "counters");
    let counts = |stats: &Value, channel: &str| -> Value {
        stats["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["channel"] == channel)
            .map(|c| c["counts"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        counts(&stats, "adt"),
        json!({"delivered": 2, "failed": 1}),
        "{stats}"
    );
    assert_eq!(counts(&stats, "lab"), json!({"delivered": 1}), "{stats}");
    assert_eq!(stats["totals"]["delivered"], 3);

    // Fix the script, rerun the failed one: a new transaction, linked both ways, with the new
    // revision.
    ws.write(
        "scripts/patient.rhai",
        "#{resourceType: \"Patient\", id: msg.control_id}",
    );
    let (status, _) = post(&engine, "/api/channels/reload", None).await;
    assert_eq!(status, 200);
    let (_, channel) = engine.api("/api/channels/adt").await;
    let original = failed["id"].as_u64().unwrap();
    let (status, rerun) = post(
        &engine,
        &format!("/api/transactions/{original}/rerun"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{rerun}");
    assert_eq!(rerun["status"], "delivered", "{rerun}");
    assert_eq!(rerun["rerun_of"], original);
    let new_id = rerun["id"].as_u64().unwrap();
    assert_ne!(new_id, original);
    let new_tx = settled(&engine, new_id).await;
    assert_eq!(new_tx["rerun_of"], original);
    assert_eq!(new_tx["channels"][0]["revision"], channel["revision"]);
    assert!(new_tx["raw"].as_str().unwrap().contains("S-FAIL"));
    let old_tx = settled(&engine, original).await;
    assert_eq!(old_tx["status"], "failed", "the original keeps its history");
    let linked = old_tx["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["reason"] == format!("rerun as transaction {new_id}"));
    assert!(linked, "{old_tx}");
    let (status, _) = post(&engine, "/api/transactions/999999999/rerun", None).await;
    assert_eq!(status, 404);

    let (_, stats) = engine.api("/api/stats").await;
    assert_eq!(
        counts(&stats, "adt"),
        json!({"delivered": 3, "failed": 1}),
        "{stats}"
    );

    // Rerun by filter: every delivered adt transaction, at most 10; ids of the new runs.
    let (status, bulk) = post(
        &engine,
        "/api/transactions/rerun",
        Some(json!({"channel": "adt", "status": "delivered", "max": 10})),
    )
    .await;
    assert_eq!(status, 200, "{bulk}");
    let started = bulk["started"].as_array().unwrap();
    assert_eq!(started.len(), 3, "{bulk}");
    for run in started {
        let tx = settled(&engine, run["id"].as_u64().unwrap()).await;
        assert_eq!(tx["status"], "delivered");
        assert_eq!(tx["rerun_of"], run["rerun_of"]);
    }
    let (status, bulk) = post(&engine, "/api/transactions/rerun", Some(json!({"max": 2}))).await;
    assert_eq!(status, 400, "a rerun of everything needs a filter: {bulk}");
    let (status, _) = post(
        &engine,
        "/api/transactions/rerun",
        Some(json!({"channel": "adt", "max": 5000})),
    )
    .await;
    assert_eq!(status, 400);

    let (_, stats) = engine.api("/api/stats").await;
    assert_eq!(
        counts(&stats, "adt"),
        json!({"delivered": 6, "failed": 1}),
        "{stats}"
    );
    let metrics = engine.metrics().await;
    assert!(
        metrics.contains("orbiter_channel_received_total{channel=\"adt\"} 7")
            && !metrics
                .contains("orbiter_channel_messages_total{channel=\"adt\",status=\"received\"}"),
        "{metrics}"
    );
    // MLLP messages ran their scripts on the connection's thread; reruns on the pool.
    for line in [
        "orbiter_transform_runs_total{thread=\"inline\"} 4",
        "orbiter_transform_runs_total{thread=\"pool\"} 4",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
}

#[tokio::test]
async fn retention_prunes_bodies_then_transactions_and_keeps_queued_ones() {
    let ws = Workspace::new();
    ws.write("scripts/patient.rhai", PATIENT_SCRIPT);
    // `short` keeps whole transactions ~4 s; bodies go after ~1 s (the global default here).
    ws.write(
        "channels/short.toml",
        &channel_toml(
            "short",
            "\"ADT^A01\"",
            "patient.rhai",
            "[retention]\nmax_age_days = 0.00005\n",
        ),
    );
    // `down` delivers to nothing that answers: its transactions stay queued.
    ws.write(
        "channels/down.toml",
        &channel_toml(
            "down",
            "\"ADT^A04\"",
            "patient.rhai",
            "[[destination]]\nkind = \"http\"\nurl = \"http://127.0.0.1:9/fhir\"\n",
        ),
    );
    let engine = ws.start(&[
        ("ORBITER_RETENTION_BODIES_AFTER_DAYS", "0.00001"),
        ("ORBITER_RETENTION_MAX_AGE_DAYS", "0.00005"),
        ("ORBITER_RETENTION_STATUSES", "delivered,failed"),
        ("ORBITER_RETENTION_INTERVAL_SECS", "1"),
    ]);
    let a04 = String::from_utf8(adt("R-Q"))
        .unwrap()
        .replace("ADT^A01^ADT_A01", "ADT^A04")
        .into_bytes();
    send(&engine, &[adt("R-1"), a04]).await;
    let kept = by_control(&engine, "R-1").await;
    assert_eq!(kept["status"], "delivered");
    assert!(kept["raw"].is_string());
    let queued = by_control(&engine, "R-Q").await;
    assert_eq!(queued["status"], "queued", "{queued}");
    let id = kept["id"].as_u64().unwrap();

    // First the body: metadata stays, the raw message is gone.
    let deadline = Instant::now() + Duration::from_secs(15);
    let pruned = loop {
        let (status, tx) = engine.api(&format!("/api/transactions/{id}")).await;
        if status == 200 && tx["body_pruned"] == true {
            break tx;
        }
        assert!(status == 200, "the transaction went before its body: {tx}");
        assert!(Instant::now() < deadline, "body never pruned: {tx}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        pruned.get("raw").is_none() || pruned["raw"].is_null(),
        "{pruned}"
    );
    assert_eq!(pruned["control_id"], "R-1");

    // Then the whole transaction.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = engine.api(&format!("/api/transactions/{id}")).await;
        if status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "transaction never pruned");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // In-flight work is never pruned, whatever its age.
    let still = by_control(&engine, "R-Q").await;
    assert_eq!(still["status"], "queued");
    assert!(still["raw"].is_string(), "{still}");
    let metrics = engine.metrics().await;
    // The unreachable destination is counted among CDR/HTTP answers as `none`.
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("orbiter_cdr_responses_total")
                && l.contains("code=\"none\"")
                && l.contains("destination=\"http\"")),
        "{metrics}"
    );
    // The destination that is down was logged once, when it was found down (its retries
    // since were not), by name and kind of error, without its URL.
    let log = engine.log();
    let down: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("destination unavailable"))
        .collect();
    assert_eq!(down.len(), 1, "{log}");
    assert!(
        down[0].contains("WARN")
            && down[0].contains("destination=http")
            && down[0].contains("connection refused")
            && !down[0].contains("127.0.0.1:9"),
        "{log}"
    );
    for line in [
        "orbiter_retention_pruned_total{channel=\"short\",kind=\"body\"} 1",
        "orbiter_retention_pruned_total{channel=\"short\",kind=\"transaction\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
}

/// Runs `orbiter doctor` with only the given `ORBITER_…` variables; (exit code, stdout).
fn doctor(args: &[&str], env: &[(&str, String)], cwd: &Path) -> (i32, String) {
    let mut cmd = Command::new(common::orbiter_bin());
    cmd.arg("doctor").args(args).current_dir(cwd);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ORBITER_")) {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn has_line(out: &str, level: &str, subject: &str) -> bool {
    out.lines()
        .any(|l| l.starts_with(level) && l[level.len()..].trim_start().starts_with(subject))
}

/// A setup the doctor passes: the shipped channels and scripts, three free loopback ports
/// (admin, mllp, http, in that order after the two dirs).
fn doctor_env() -> Vec<(&'static str, String)> {
    let port = || format!("127.0.0.1:{}", free_port());
    vec![
        (
            "ORBITER_CHANNELS_DIR",
            repo_root().join("channels").display().to_string(),
        ),
        (
            "ORBITER_SCRIPTS_DIR",
            repo_root().join("scripts").display().to_string(),
        ),
        ("ORBITER_ADMIN_ADDR", port()),
        ("ORBITER_MLLP_ADDR", port()),
        ("ORBITER_HTTP_ADDR", port()),
    ]
}

#[test]
fn doctor_passes_a_good_setup_and_names_what_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let good = doctor_env();
    let data = dir.path().join("data");
    let data_arg = data.display().to_string();
    let (code, out) = doctor(&["--data", &data_arg], &good, dir.path());
    assert_eq!(code, 0, "{out}");
    for subject in [
        "clock",
        "config",
        "data dir",
        "port admin",
        "port mllp",
        "channels",
        "cdr",
    ] {
        assert!(
            has_line(&out, "ok", subject),
            "ok {subject} missing:\n{out}"
        );
    }
    assert!(out.contains("free space:"), "{out}");
    assert!(out.contains("0 failure(s)"), "{out}");

    // A broken channel and a port held by someone else: two failures, each with its fix.
    let channels = dir.path().join("channels");
    std::fs::create_dir_all(&channels).unwrap();
    std::fs::write(
        channels.join("bad.toml"),
        "name = \"bad\"\n[source]\nkind = \"carrier-pigeon\"\n",
    )
    .unwrap();
    let stranger = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut broken = good.clone();
    broken[0].1 = channels.display().to_string();
    broken[2].1 = stranger.local_addr().unwrap().to_string();
    let (code, out) = doctor(&["--data", &data_arg], &broken, dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(has_line(&out, "fail", "channels"), "{out}");
    assert!(out.contains("bad.toml:3:"), "{out}");
    assert!(has_line(&out, "fail", "port admin"), "{out}");
    assert!(out.contains("fix:"), "{out}");
    drop(stranger);

    // A config file that does not parse.
    let config = dir.path().join("orbiter.toml");
    std::fs::write(&config, "[mllp]\nadress = \"127.0.0.1:1\"\n").unwrap();
    let config_arg = config.display().to_string();
    let (code, out) = doctor(&["--config", &config_arg], &good, dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(has_line(&out, "fail", "config"), "{out}");
    assert!(out.contains("adress"), "{out}");
}

/// An external CDR that cannot be reached: the doctor says why (the refused connection, a CA
/// file that holds no certificate), and never prints the credentials `cdr.url` may carry.
#[test]
fn doctor_says_why_the_cdr_is_unreachable_without_its_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = reserved.local_addr().unwrap().port();
    drop(reserved);
    let env = |url: String, ca: Option<String>| {
        let mut env = doctor_env();
        env.push(("ORBITER_CDR_URL", url));
        env.extend(ca.map(|ca| ("ORBITER_CDR_TLS_CA", ca)));
        env
    };
    let data = dir.path().join("data").display().to_string();
    let (code, out) = doctor(
        &["--data", &data],
        &env(
            format!("http://orb:s3cret@127.0.0.1:{closed}/fhir?token=abc"),
            None,
        ),
        dir.path(),
    );
    assert_eq!(code, 1, "{out}");
    assert!(has_line(&out, "fail", "cdr"), "{out}");
    assert!(
        out.contains("refused"),
        "the cause, not only 'error sending request':\n{out}"
    );
    assert!(
        !out.contains("s3cret") && !out.contains("token=abc"),
        "{out}"
    );

    let not_a_ca = dir.path().join("not-a-ca.pem");
    std::fs::write(&not_a_ca, "not a certificate\n").unwrap();
    let (code, out) = doctor(
        &["--data", &data],
        &env(
            format!("https://127.0.0.1:{closed}/fhir"),
            Some(not_a_ca.display().to_string()),
        ),
        dir.path(),
    );
    assert_eq!(code, 1, "{out}");
    assert!(has_line(&out, "fail", "cdr"), "{out}");
    assert!(out.contains("no PEM certificate"), "{out}");
    assert!(out.contains("cdr.tls_ca"), "{out}");
}

#[tokio::test]
async fn doctor_recognises_a_running_engine_on_its_ports() {
    let ws = Workspace::new();
    let engine = ws.start(&[]);
    let env = [
        (
            "ORBITER_CHANNELS_DIR",
            ws.path("channels").display().to_string(),
        ),
        (
            "ORBITER_SCRIPTS_DIR",
            ws.path("scripts").display().to_string(),
        ),
        ("ORBITER_ADMIN_ADDR", engine.admin.clone()),
        ("ORBITER_MLLP_ADDR", engine.mllp.clone()),
        ("ORBITER_HTTP_ADDR", format!("127.0.0.1:{}", free_port())),
    ];
    let data = engine.data_dir.display().to_string();
    let cwd = ws.path("");
    let (code, out) = tokio::task::spawn_blocking(move || doctor(&["--data", &data], &env, &cwd))
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("in use by the running engine"), "{out}");
    assert!(has_line(&out, "ok", "port mllp"), "{out}");
    // An empty channels dir is worth a warning, not a failure.
    assert!(has_line(&out, "warn", "channels"), "{out}");

    // The engine's embedded FHIR server as someone's external CDR: metadata and its clock.
    let cdr_env = |url: String| {
        vec![
            ("ORBITER_CDR_URL", url),
            ("ORBITER_CDR_TOKEN", TOKEN.to_string()),
            ("ORBITER_ADMIN_ADDR", format!("127.0.0.1:{}", free_port())),
            ("ORBITER_MLLP_ADDR", format!("127.0.0.1:{}", free_port())),
            ("ORBITER_HTTP_ADDR", format!("127.0.0.1:{}", free_port())),
        ]
    };
    let env = cdr_env(engine.url("/fhir"));
    let cwd = ws.path("");
    let (code, out) = tokio::task::spawn_blocking(move || doctor(&[], &env, &cwd))
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("answers metadata (FHIR 4.0.1)"), "{out}");
    assert!(out.contains("within 5 minutes of the CDR's"), "{out}");
    let env = cdr_env(format!("http://127.0.0.1:{}/fhir", free_port()));
    let cwd = ws.path("");
    let (code, out) = tokio::task::spawn_blocking(move || doctor(&[], &env, &cwd))
        .await
        .unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(has_line(&out, "fail", "cdr"), "{out}");
}

/// A port in use fails start-up with the address in the error, before any listener runs (an
/// MLLP listener started and then torn down with the runtime used to panic on the way out).
#[test]
fn a_port_in_use_fails_start_up_cleanly() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(common::orbiter_bin());
    cmd.arg("run").current_dir(dir.path());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ORBITER_")) {
        cmd.env_remove(k);
    }
    cmd.env("ORBITER_DATA_DIR", dir.path().join("data"))
        .env("ORBITER_CHANNELS_DIR", dir.path().join("channels"))
        .env("ORBITER_ADMIN_TOKEN", TOKEN)
        .env("ORBITER_MLLP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("ORBITER_ADMIN_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("ORBITER_HTTP_ADDR", &taken);
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = exited(child, "orbiter kept running with its HTTP port taken");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains(&taken), "the error names the address: {text}");
    assert!(!text.contains("panicked"), "{text}");
    drop(held);
}

/// The output of an engine expected to refuse to start; `still_running` is the failure when
/// it is still up after 30 s (it is killed).
fn exited(mut child: std::process::Child, still_running: &str) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{still_running}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// `orbiter run` with `args` and only the given `ORBITER_…` variables (free loopback ports
/// unless given), expected to refuse to start: its stderr.
fn refused_start(args: &[&str], env: &[(&str, String)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(common::orbiter_bin());
    cmd.arg("run").args(args).current_dir(dir.path());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("ORBITER_")) {
        cmd.env_remove(k);
    }
    cmd.env("ORBITER_DATA_DIR", dir.path().join("data"))
        .env("ORBITER_ADMIN_TOKEN", TOKEN)
        .env("ORBITER_MLLP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("ORBITER_ADMIN_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("ORBITER_HTTP_ADDR", format!("127.0.0.1:{}", free_port()));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = exited(child, &format!("orbiter started with {args:?} {env:?}"));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Each start-up mistake says where it is (variable, file and line, file names) and what to
/// do, and says it once: several used to print their cause twice, or name no key.
#[test]
fn start_up_mistakes_name_the_variable_the_line_or_the_file() {
    let err = refused_start(&[], &[("ORBITER_MLLP_ADDR", "foo".into())]);
    assert!(err.contains("ORBITER_MLLP_ADDR"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("orbiter.toml");
    std::fs::write(&config, "log = \"info\"\n[mllp]\naddr = \"nohost:2575\"\n").unwrap();
    let err = refused_start(&["--config", config.to_str().unwrap()], &[]);
    assert!(err.contains("line 3") && err.contains("nohost"), "{err}");

    // A log filter that does not parse: refused (it used to fall back to `info`), naming the
    // variable, or the file and its key.
    let err = refused_start(&[], &[("ORBITER_LOG", "verbose".into())]);
    assert!(
        err.contains("ORBITER_LOG") && err.contains("`verbose` is not a level"),
        "{err}"
    );
    std::fs::write(&config, "log = \"infoo\"\n").unwrap();
    let err = refused_start(&["--config", config.to_str().unwrap()], &[]);
    assert!(
        err.contains("orbiter.toml") && err.contains("key `log`") && err.contains("infoo"),
        "{err}"
    );

    let missing = dir.path().join("nope.toml");
    let err = refused_start(&["--config", missing.to_str().unwrap()], &[]);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");

    // A key that is not the certificate's: named as such, with both files, once.
    let pki = common::TestPki::new(dir.path());
    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, pki.client_key.serialize_pem()).unwrap();
    let err = refused_start(
        &[],
        &[
            ("ORBITER_ADMIN_TLS_CERT", pki.cert_path.clone()),
            ("ORBITER_ADMIN_TLS_KEY", other_key.display().to_string()),
        ],
    );
    assert!(
        err.contains("the key does not belong to the certificate"),
        "{err}"
    );
    assert!(
        err.contains(&pki.cert_path) && err.contains("other.key"),
        "{err}"
    );
    assert_eq!(err.matches("TLS").count(), 1, "{err}");

    // A data dir this process cannot write in (even root cannot create files in /proc/self).
    #[cfg(target_os = "linux")]
    {
        let err = refused_start(&[], &[("ORBITER_DATA_DIR", "/proc/self".into())]);
        assert!(err.contains("/proc/self is not writable"), "{err}");
        assert!(err.contains("fsGroup"), "{err}");
    }
}

/// Typos that used to be silent: an `ORBITER_…` variable that names no key, a channels dir
/// that does not exist (every message ACKed, then failed with "no channel"). (A log level
/// that `tracing` reads as a target, which silenced the engine, now stops start-up: see
/// [`start_up_mistakes_name_the_variable_the_line_or_the_file`].)
#[test]
fn silent_typos_are_reported_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = Engine::start(
        &dir.path().join("data"),
        &[
            ("ORBITER_MLLP_ADRR", "127.0.0.1:1"),
            ("ORBITER_CHANNELS_DIR", "/nonexistent/channels"),
        ],
    );
    assert!(engine.stop().success());
    let log = engine.log();
    assert!(
        log.contains("ORBITER_MLLP_ADRR is not a configuration variable"),
        "{log}"
    );
    assert!(log.contains("did you mean ORBITER_MLLP_ADDR?"), "{log}");
    assert!(
        log.contains("orbiter running") && log.contains("version="),
        "{log}"
    );
    assert!(log.contains("the channels dir does not exist"), "{log}");
}

#[test]
fn doctor_checks_tls_pairs_on_every_listener_and_unknown_variables() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::TestPki::new(dir.path());
    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, pki.client_key.serialize_pem()).unwrap();
    let port = || format!("127.0.0.1:{}", free_port());
    let env = [
        (
            "ORBITER_CHANNELS_DIR",
            repo_root().join("channels").display().to_string(),
        ),
        (
            "ORBITER_SCRIPTS_DIR",
            repo_root().join("scripts").display().to_string(),
        ),
        ("ORBITER_ADMIN_ADDR", port()),
        ("ORBITER_MLLP_ADDR", port()),
        ("ORBITER_HTTP_ADDR", port()),
        ("ORBITER_HTTP_TLS_CERT", pki.cert_path.clone()),
        ("ORBITER_HTTP_TLS_KEY", other_key.display().to_string()),
        ("ORBITER_HTTP_ADRR", port()),
    ];
    let data = dir.path().join("data").display().to_string();
    let (code, out) = doctor(&["--data", &data], &env, dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(has_line(&out, "fail", "tls http"), "{out}");
    assert!(
        out.contains("the key does not belong to the certificate"),
        "{out}"
    );
    assert!(has_line(&out, "warn", "config"), "{out}");
    assert!(out.contains("did you mean ORBITER_HTTP_ADDR?"), "{out}");
}

/// SIGTERM (what the kubelet sends on a rollout) while senders are mid-stream: the engine
/// exits cleanly, and after the restart every message that got an AA is in the journal,
/// once. Senders of what was cut off get no ACK and resend, as MLLP expects.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_loses_no_acknowledged_message() {
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let channels = common::default_channels();
    let env: Vec<(&str, &str)> = channels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut engine = Engine::start(&dir.path().join("data"), &env);
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut senders = Vec::new();
    for sender in 0..4 {
        let (addr, acked) = (engine.mllp.clone(), acked.clone());
        senders.push(tokio::spawn(async move {
            let Ok(mut client) = MllpClient::connect(&addr, T).await else {
                return;
            };
            for n in 0.. {
                let id = format!("TERM{sender}-{n}");
                match client.send(&adt(&id)).await {
                    Ok(ack) if ack_fields(&ack).0 == "AA" => acked.lock().unwrap().push(id),
                    // "Not stored, resend" while it stops, or no ACK at all: resent later.
                    Ok(_) | Err(_) => return,
                }
            }
        }));
    }
    // Under way on every connection before the signal.
    while acked.lock().unwrap().len() < 400 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = tokio::task::block_in_place(|| engine.stop());
    assert!(status.success(), "{status}\n{}", engine.log());
    for sender in senders {
        sender.await.unwrap();
    }
    tokio::task::block_in_place(|| engine.restart());
    let acked = acked.lock().unwrap().clone();
    for id in &acked {
        let page = search(&engine, &format!("control_id={id}")).await;
        assert_eq!(
            control_ids(&page),
            vec![id.clone()],
            "{id} after the restart: {page}"
        );
    }
}

/// SIGHUP reloads the channels (as daemons do) instead of killing the engine uncleanly.
#[tokio::test]
async fn sighup_reloads_the_channels_and_the_engine_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = Engine::start(&dir.path().join("data"), &[]);
    engine.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !engine.log().contains("SIGHUP: reloading the channels") {
        assert!(
            engine.running(),
            "the engine died on SIGHUP:\n{}",
            engine.log()
        );
        assert!(std::time::Instant::now() < deadline, "{}", engine.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = engine.api("/api/channels").await;
    assert_eq!(status, 200);
    assert!(engine.running());
    assert!(engine.stop().success(), "{}", engine.log());
}

/// `orbiter check` in CI with a channels dir that is not there (a typo, the image's path) must
/// fail: it printed "0 channel(s) and their scripts compile" and exited 0.
#[test]
fn check_fails_when_the_configured_channels_dir_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::orbiter_bin())
        .arg("check")
        .current_dir(dir.path())
        .env("ORBITER_CHANNELS_DIR", dir.path().join("chanels"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(err.contains("chanels does not exist"), "{err}");
}
