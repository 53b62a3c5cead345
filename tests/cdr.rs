//! End-to-end: one engine delivering to a second engine as its external CDR, and an outage of
//! that CDR across a restart of the first: everything arrives, in order, exactly once in effect.

mod common;

use std::time::{Duration, Instant};

use common::{ack_fields, repo_root, settled, Engine};
use orbiter::mllp::MllpClient;

const T: Duration = Duration::from_secs(10);

/// The default ADT channel and script, with short retry backoffs for the test.
fn channels_with_fast_retry(root: &std::path::Path) -> Vec<(String, String)> {
    let repo = repo_root();
    std::fs::create_dir_all(root.join("channels")).unwrap();
    std::fs::create_dir_all(root.join("scripts/lib")).unwrap();
    let channel = std::fs::read_to_string(repo.join("channels/adt-to-fhir.toml"))
        .unwrap()
        .replace("initial_backoff_ms = 1000", "initial_backoff_ms = 100")
        .replace("max_backoff_ms = 300000", "max_backoff_ms = 800");
    std::fs::write(root.join("channels/adt-to-fhir.toml"), channel).unwrap();
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
    vec![
        (
            "ORBITER_CHANNELS_DIR".into(),
            root.join("channels").display().to_string(),
        ),
        (
            "ORBITER_SCRIPTS_DIR".into(),
            root.join("scripts").display().to_string(),
        ),
    ]
}

/// An ADT for patient `mrn` with family name `family`.
fn adt(trigger: &str, control_id: &str, mrn: &str, family: &str) -> Vec<u8> {
    format!(
        "MSH|^~\\&|SENDAPP|SENDFAC|ORBITER|HOSP|20261201120000||ADT^{trigger}^ADT_A01|{control_id}|P|2.5.1\r\
         EVN|{trigger}|20261201120000\r\
         PID|1||{mrn}^^^HOSP^MR||{family}^JANE||19800101|F\r\
         PV1|1|I|WARD1^101^A||||||||||||||||V{mrn}|||||||||||||||||||||||||20261201115500"
    )
    .into_bytes()
}

async fn patients(cdr: &Engine, mrn: &str) -> Vec<serde_json::Value> {
    let (status, body) = cdr.api(&format!("/fhir/Patient?identifier={mrn}")).await;
    assert_eq!(status, 200, "{body}");
    body["entry"]
        .as_array()
        .map(|e| e.iter().map(|x| x["resource"].clone()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_engine_as_external_cdr_through_an_outage_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cdr = Engine::start(&dir.path().join("cdr-data"), &[]);
    let mut env = channels_with_fast_retry(&dir.path().join("ws"));
    env.push((
        "ORBITER_CDR_URL".into(),
        format!("http://{}/fhir", cdr.admin),
    ));
    env.push(("ORBITER_CDR_TOKEN".into(), common::TOKEN.into()));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut engine = Engine::start(&dir.path().join("data"), &env_refs);
    let mut c = MllpClient::connect(&engine.mllp, T).await.unwrap();

    // Up: delivered over HTTP, visible in the second engine's CDR.
    assert_eq!(
        ack_fields(
            &c.send(&adt("A01", "UP-1", "MRN-UP", "EARLY"))
                .await
                .unwrap()
        )
        .0,
        "AA"
    );
    assert_eq!(settled(&engine, "UP-1").await["status"], "delivered");
    assert_eq!(patients(&cdr, "MRN-UP").await.len(), 1);

    // Down: messages are acknowledged (on-commit) and queued.
    cdr.kill();
    let mut sent = Vec::new();
    for n in 0..10 {
        let mrn = format!("MRN-{n}");
        assert_eq!(
            ack_fields(
                &c.send(&adt("A01", &format!("OUT-{n}"), &mrn, "FIRST"))
                    .await
                    .unwrap()
            )
            .0,
            "AA"
        );
        sent.push(mrn);
    }
    // The same patient: admitted, then updated; the update must land after the admission.
    assert_eq!(
        ack_fields(
            &c.send(&adt("A08", "OUT-UPD", "MRN-0", "SECOND"))
                .await
                .unwrap()
        )
        .0,
        "AA"
    );
    let tx = settled(&engine, "OUT-0").await;
    assert_eq!(tx["status"], "queued", "{tx}");
    assert_eq!(settled(&engine, "OUT-UPD").await["status"], "queued");

    // The engine notices the CDR is gone, and stays ready: in on-commit mode it queues.
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        let (status, ready) = engine.api("/ready").await;
        assert_eq!(status, 200, "{ready}");
        assert_eq!(ready["checks"]["cdr_required"], false);
        if ready["checks"]["cdr"] == false {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "CDR outage never noticed: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Restart the first engine while messages are queued.
    drop(c);
    assert!(engine.stop().success());
    engine.restart();

    // Bring the CDR back: everything arrives.
    cdr.restart();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (_, body) = engine.api("/api/transactions?status=queued").await;
        if body["items"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still queued: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for n in 0..10 {
        assert_eq!(
            settled(&engine, &format!("OUT-{n}")).await["status"],
            "delivered"
        );
    }
    assert_eq!(settled(&engine, "OUT-UPD").await["status"], "delivered");
    for mrn in &sent {
        assert_eq!(patients(&cdr, mrn).await.len(), 1, "{mrn} exactly once");
    }
    let updated = patients(&cdr, "MRN-0").await;
    assert_eq!(
        updated[0]["name"][0]["family"], "SECOND",
        "the A08 applied after the A01"
    );

    // A rerun of a delivered transaction changes nothing in the CDR.
    let tx = settled(&engine, "OUT-3").await;
    let before = patients(&cdr, "MRN-3").await;
    let client = reqwest::Client::new();
    let rerun = client
        .post(engine.url(&format!("/api/transactions/{}/rerun", tx["id"])))
        .bearer_auth(common::TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(rerun.status(), 200);
    let after = patients(&cdr, "MRN-3").await;
    assert_eq!(after.len(), 1);
    assert_eq!(
        after[0]["meta"]["versionId"], before[0]["meta"]["versionId"],
        "no new version"
    );
}
