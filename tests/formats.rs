//! End-to-end: the default C-CDA, CSV and FHIR channels over the HTTP ingest port, with the
//! real binary and its embedded CDR. Every document is journaled, mapped and written; a replay
//! changes nothing; malformed and hostile input is refused, kept in the journal, and named.

mod common;

use std::time::{Duration, Instant};

use common::{default_channels, repo_root, Engine};

const T: Duration = Duration::from_secs(15);

fn start(dir: &std::path::Path) -> Engine {
    let pairs = default_channels();
    let env: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    Engine::start(&dir.join("data"), &env)
}

fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(repo_root().join("fixtures").join(rel)).unwrap()
}

/// Waits until transaction `id` has left received/processing; returns it.
async fn settled_id(engine: &Engine, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + T;
    loop {
        let (status, tx) = engine.api(&format!("/api/transactions/{id}")).await;
        assert_eq!(status, 200, "{tx}");
        let s = tx["status"].as_str().unwrap_or("");
        if s != "received" && s != "processing" {
            return tx;
        }
        assert!(Instant::now() < deadline, "{id} never settled: {tx}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Posts `bundle` to the ingest port's `/fhir`; the transaction once settled.
async fn post_fhir(engine: &Engine, bundle: &serde_json::Value) -> serde_json::Value {
    let resp = engine
        .ingest(
            "/fhir",
            "application/fhir+json",
            bundle.to_string().into_bytes(),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 202);
    let body: serde_json::Value = resp.json().await.unwrap();
    settled_id(engine, body["id"].as_str().unwrap()).await
}

async fn total(engine: &Engine, query: &str) -> u64 {
    let (status, bundle) = engine.api(&format!("/fhir/{query}")).await;
    assert_eq!(status, 200, "{query}: {bundle}");
    bundle["total"]
        .as_u64()
        .unwrap_or_else(|| panic!("{query}: {bundle}"))
}

#[tokio::test]
async fn a_ccd_becomes_fhir_in_the_cdr_and_a_replay_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path());
    let ccd = fixture("ccda/ccd_full.xml");

    let resp = engine
        .ingest("/ccda", "application/cda+xml", ccd.clone())
        .await;
    assert_eq!(resp.status().as_u16(), 202);
    let body: serde_json::Value = resp.json().await.unwrap();
    let tx = settled_id(&engine, body["id"].as_str().unwrap()).await;
    assert_eq!(tx["status"], "delivered", "{tx}");
    assert_eq!(tx["format"], "ccda");
    assert_eq!(tx["message_type"], "CCD");
    assert_eq!(
        tx["control_id"],
        "2.16.840.1.113883.19.5.99999.1^CCD-20261130-0001"
    );
    assert_eq!(total(&engine, "Patient?identifier=MRN-998991").await, 1);
    let counts = [
        total(&engine, "Composition").await,
        total(&engine, "Condition").await,
        total(&engine, "AllergyIntolerance").await,
        total(&engine, "Observation").await,
    ];
    assert!(counts.iter().all(|n| *n > 0), "{counts:?}");

    // The same document again: journaled again, but the CDR is unchanged.
    let resp = engine.ingest("/ccda", "application/xml", ccd).await;
    assert_eq!(resp.status().as_u16(), 202);
    let body: serde_json::Value = resp.json().await.unwrap();
    let tx = settled_id(&engine, body["id"].as_str().unwrap()).await;
    assert_eq!(tx["status"], "delivered", "{tx}");
    let again = [
        total(&engine, "Composition").await,
        total(&engine, "Condition").await,
        total(&engine, "AllergyIntolerance").await,
        total(&engine, "Observation").await,
    ];
    assert_eq!(counts, again);
    assert_eq!(total(&engine, "Patient?identifier=MRN-998991").await, 1);
    let (_, history) = engine.api("/fhir/Patient?identifier=MRN-998991").await;
    assert_eq!(
        history["entry"][0]["resource"]["meta"]["versionId"], "1",
        "an identical replay makes no new version"
    );
}

/// A C-CDA saved as ISO-8859-1 (its XML declaration says so), as older EHRs export: read as
/// Latin-1, not refused as bad UTF-8, and its names reach the CDR intact.
#[tokio::test]
async fn a_ccd_declared_latin1_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path());
    let resp = engine
        .ingest("/ccda", "application/xml", fixture("ccda/ccd_latin1.xml"))
        .await;
    assert_eq!(resp.status().as_u16(), 202);
    let body: serde_json::Value = resp.json().await.unwrap();
    let tx = settled_id(&engine, body["id"].as_str().unwrap()).await;
    assert_eq!(tx["status"], "delivered", "{tx}");
    let (_, found) = engine
        .api("/fhir/Patient?family=%C3%98yen-M%C3%BCller")
        .await;
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(
        found["entry"][0]["resource"]["name"][0]["family"], "Øyen-Müller",
        "{found}"
    );
}

#[tokio::test]
async fn hostile_and_broken_xml_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path());
    let laughs = br#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<ClinicalDocument xmlns="urn:hl7-org:v3">&lol2;</ClinicalDocument>"#;
    for (body, expect) in [
        (laughs.to_vec(), "DOCTYPE"),
        (
            b"<ClinicalDocument xmlns=\"urn:hl7-org:v3\"><id".to_vec(),
            "C-CDA",
        ),
    ] {
        let resp = engine.ingest("/ccda", "application/xml", body).await;
        assert_eq!(resp.status().as_u16(), 400);
        let id = resp.headers()["x-orbiter-transaction"]
            .to_str()
            .unwrap()
            .to_string();
        let outcome: serde_json::Value = resp.json().await.unwrap();
        let text = outcome["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(text.contains(expect), "{text}");
        let (_, tx) = engine.api(&format!("/api/transactions/{id}")).await;
        assert_eq!(tx["status"], "failed", "{tx}");
        // Recorded under the channel whose path it was posted to (not run by it).
        assert_eq!(tx["channels"][0]["name"], "ccda-to-fhir", "{tx}");
    }
    let (_, page) = engine
        .api("/api/transactions?channel=ccda-to-fhir&status=failed")
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2, "{page}");
}

#[tokio::test]
async fn a_csv_file_becomes_one_transaction_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path());
    let resp = engine
        .ingest("/csv/lab", "text/csv", fixture("csv/lab_results.csv"))
        .await;
    assert_eq!(resp.status().as_u16(), 202);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["rows"], 4, "{body}");
    assert_eq!(body["failed"], 0, "{body}");
    for id in body["ids"].as_array().unwrap() {
        let tx = settled_id(&engine, id.as_str().unwrap()).await;
        assert_eq!(tx["status"], "delivered", "{tx}");
        assert_eq!(tx["format"], "csv");
        assert!(
            tx["origin"].as_str().unwrap().starts_with("/csv/lab#"),
            "{tx}"
        );
    }
    assert_eq!(total(&engine, "Observation").await, 4);
    assert_eq!(total(&engine, "Patient?identifier=MRN-1001").await, 1);
    // An upload's rows run their scripts on the pool, not on the HTTP worker reading it.
    let metrics = engine.metrics().await;
    assert!(
        metrics.contains("orbiter_transform_runs_total{thread=\"pool\"} 4")
            && !metrics.contains("orbiter_transform_runs_total{thread=\"inline\"}"),
        "{metrics}"
    );

    // Malformed rows are journaled as failed with their line; good rows go through.
    let resp = engine
        .ingest(
            "/csv/lab",
            "text/csv",
            fixture("csv/lab_results_malformed.csv"),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 202);
    let first = resp.headers()["x-orbiter-transaction"]
        .to_str()
        .unwrap()
        .to_string();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["first_id"], first.as_str(), "{body}");
    assert!(body["failed"].as_u64().unwrap() >= 1, "{body}");
    // The answer names the rows to fix: line, transaction and why (never the row's text).
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(
        errors.len() as u64,
        body["failed"].as_u64().unwrap(),
        "{body}"
    );
    assert_eq!(errors[0]["line"], 3, "{body}");
    assert!(
        errors[0]["reason"]
            .as_str()
            .unwrap()
            .contains("fields where the header has"),
        "{body}"
    );
    assert!(!body.to_string().contains("MRN-6006"), "{body}");

    // A sender that says its file is Latin-1 (`charset`) is read so, whatever the channel says.
    let mut latin1 = b"mrn,family,given,birth_date,sex,loinc,test_name,value,unit,ref_low,ref_high,collected_at\n".to_vec();
    latin1.extend_from_slice(b"MRN-L2,Dupr\xe9,No\xebl,1970-01-01,M,2345-7,Glucose,5.0,mmol/L,3.9,6.1,2026-11-30T08:00:00Z\n");
    let resp = engine
        .ingest("/csv/lab", "text/csv; charset=ISO-8859-1", latin1)
        .await;
    assert_eq!(resp.status().as_u16(), 202);
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(answer["failed"], 0, "{answer}");
    let tx = settled_id(&engine, answer["first_id"].as_str().unwrap()).await;
    assert_eq!(tx["status"], "delivered", "{tx}");
    let (_, found) = engine.api("/fhir/Patient?identifier=MRN-L2").await;
    assert_eq!(
        found["entry"][0]["resource"]["name"][0]["family"], "Dupré",
        "{found}"
    );
    let mut failed_reasons = Vec::new();
    for id in body["ids"].as_array().unwrap() {
        let tx = settled_id(&engine, id.as_str().unwrap()).await;
        if tx["status"] == "failed" {
            failed_reasons.push(tx["error"].as_str().unwrap_or("").to_string());
        }
    }
    assert!(
        failed_reasons.iter().any(|r| r.contains("line 3")),
        "{failed_reasons:?}"
    );
}

/// A header row that cannot be read (here a Latin-1 column name in a file sent as UTF-8) is the
/// file's fault: 400 naming the column and the fix, nothing journaled, as for a file with no
/// header. (It was journaled as one failed "row" and answered 202, its data rows dropped.)
#[tokio::test]
async fn a_csv_file_whose_header_cannot_be_read_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path());
    let mut file = b"mrn,family,given,birth_date,sex,loinc,test_name,value,unit,ref_low,ref_high,collected_at,Pr\xe9nom\n".to_vec();
    for mrn in ["MRN-H1", "MRN-H2"] {
        file.extend_from_slice(
            format!(
                "{mrn},A,B,1970-01-01,M,2345-7,Glucose,5.0,mmol/L,3.9,6.1,2026-11-30T08:00:00Z,x\n"
            )
            .as_bytes(),
        );
    }
    let resp = engine.ingest("/csv/lab", "text/csv", file.clone()).await;
    assert_eq!(resp.status().as_u16(), 400);
    assert!(!resp.headers().contains_key("x-orbiter-transaction"));
    let outcome: serde_json::Value = resp.json().await.unwrap();
    let text = outcome["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(
        text.starts_with("line 1: header column 13 is not UTF-8")
            && text.contains("charset=ISO-8859-1"),
        "{outcome}"
    );
    let (_, page) = engine.api("/api/transactions?limit=10").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 0, "{page}");
    // Sent as what it is, the same file is taken, every row.
    let resp = engine
        .ingest("/csv/lab", "text/csv; charset=ISO-8859-1", file)
        .await;
    assert_eq!(resp.status().as_u16(), 202);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        (body["rows"].as_u64(), body["failed"].as_u64()),
        (Some(2), Some(0)),
        "{body}"
    );
}

/// A FHIR body that starts with a UTF-8 byte order mark (PowerShell, Notepad and many Windows
/// exports write one) is taken and delivered, as BOM-prefixed HL7 v2, C-CDA and CSV are: it
/// was refused as "not JSON (line 1, column 1)".
#[tokio::test]
async fn a_fhir_body_with_a_byte_order_mark_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path());
    let mut body = b"\xEF\xBB\xBF".to_vec();
    body.extend(fixture("fhir/patient.json"));
    let resp = engine.ingest("/fhir", "application/fhir+json", body).await;
    assert_eq!(resp.status().as_u16(), 202);
    let answer: serde_json::Value = resp.json().await.unwrap();
    let tx = settled_id(&engine, answer["id"].as_str().unwrap()).await;
    assert_eq!(tx["status"], "delivered", "{tx}");
    assert_eq!(tx["message_type"], "Patient", "{tx}");
    assert_eq!(total(&engine, "Patient?_id=pat-2002").await, 1);
}

#[tokio::test]
async fn a_collection_bundle_is_written_as_a_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path());
    let resp = engine
        .ingest(
            "/fhir",
            "application/fhir+json",
            fixture("fhir/collection_bundle.json"),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 202);
    let body: serde_json::Value = resp.json().await.unwrap();
    let tx = settled_id(&engine, body["id"].as_str().unwrap()).await;
    assert_eq!(tx["status"], "delivered", "{tx}");
    assert_eq!(total(&engine, "Condition").await, 1);
    assert_eq!(total(&engine, "Observation").await, 1);

    // Structurally invalid: refused with the JSON path of the problem.
    let resp = engine
        .ingest(
            "/fhir",
            "application/fhir+json",
            fixture("fhir/invalid_bundle.json"),
        )
        .await;
    assert_eq!(resp.status().as_u16(), 400);
    let outcome: serde_json::Value = resp.json().await.unwrap();
    assert!(
        outcome["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("Bundle."),
        "{outcome}"
    );
}

/// The ingest port trusts its network as an MLLP port does, so the shipped FHIR channel writes
/// what senders post but refuses an entry that would delete a resource: a sender must not be
/// able to remove patients from the CDR without an admin token.
#[tokio::test]
async fn the_fhir_channel_refuses_a_delete_and_the_resource_stays() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path());
    let put = serde_json::json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [{
            "resource": {"resourceType": "Patient", "id": "keep-me", "gender": "female"},
            "request": {"method": "PUT", "url": "Patient/keep-me"}
        }]
    });
    let tx = post_fhir(&engine, &put).await;
    assert_eq!(tx["status"], "delivered", "{tx}");

    let delete = serde_json::json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": "Patient/keep-me"}}]
    });
    let tx = post_fhir(&engine, &delete).await;
    assert_eq!(tx["status"], "failed", "{tx}");
    assert!(
        tx.to_string().contains("DELETE Patient/keep-me"),
        "the reason names the refused entry: {tx}"
    );
    let (status, patient) = engine.api("/fhir/Patient/keep-me").await;
    assert_eq!(status, 200, "{patient}");
    assert_eq!(patient["gender"], "female");
}

#[tokio::test]
async fn a_csv_file_dropped_in_a_folder_is_journaled_row_by_row_and_moved() {
    let dir = tempfile::tempdir().unwrap();
    let drop = dir.path().join("drop");
    let channels = dir.path().join("channels");
    std::fs::create_dir_all(&drop).unwrap();
    std::fs::create_dir_all(&channels).unwrap();
    std::fs::write(
        channels.join("lab-folder.toml"),
        format!(
            "name = \"lab-folder\"\n[source]\nkind = \"dir\"\ndir = \"{}\"\nformat = \"csv\"\n\
             poll_ms = 200\n[csv]\ndelimiter = \";\"\n[transform]\nscript = \"csv_lab_to_fhir.rhai\"\n\
             [[destination]]\nkind = \"cdr\"\n",
            drop.display()
        ),
    )
    .unwrap();
    // A lab system that writes ISO-8859-1, as many still do.
    let latin1 = dir.path().join("latin1");
    std::fs::create_dir_all(&latin1).unwrap();
    std::fs::write(
        channels.join("lab-latin1.toml"),
        format!(
            "name = \"lab-latin1\"\n[source]\nkind = \"dir\"\ndir = \"{}\"\npoll_ms = 200\n\
             [csv]\nencoding = \"latin1\"\n[transform]\nscript = \"csv_lab_to_fhir.rhai\"\n\
             [[destination]]\nkind = \"cdr\"\n",
            latin1.display()
        ),
    )
    .unwrap();
    let channels = channels.display().to_string();
    let scripts = repo_root().join("scripts").display().to_string();
    let engine = Engine::start(
        &dir.path().join("data"),
        &[
            ("ORBITER_CHANNELS_DIR", &channels),
            ("ORBITER_SCRIPTS_DIR", &scripts),
        ],
    );
    // The channel's own delimiter.
    let csv = String::from_utf8(fixture("csv/lab_results.csv"))
        .unwrap()
        .replace(',', ";");
    std::fs::write(drop.join("results.csv"), csv).unwrap();
    let deadline = Instant::now() + T;
    while !drop.join("processed/results.csv").exists() {
        assert!(Instant::now() < deadline, "never moved:\n{}", engine.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + T;
    loop {
        let (_, page) = engine
            .api("/api/transactions?status=delivered&limit=10")
            .await;
        let items = page["items"].as_array().unwrap();
        if items.len() == 4 {
            assert!(items.iter().all(|t| t["format"] == "csv"
                && t["origin"].as_str().unwrap().starts_with("results.csv#")));
            break;
        }
        assert!(Instant::now() < deadline, "rows not delivered: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(total(&engine, "Observation").await, 4);

    // A file with nothing to take goes to error/, and the journal says so under the channel
    // (not only the log): a failed transaction with the reason, found by `?channel=`.
    std::fs::write(drop.join("empty.csv"), b"").unwrap();
    let deadline = Instant::now() + T;
    while !drop.join("error/empty.csv").exists() {
        assert!(Instant::now() < deadline, "never moved:\n{}", engine.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, page) = engine
        .api("/api/transactions?channel=lab-folder&status=failed")
        .await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["origin"], "empty.csv", "{page}");
    assert!(
        items[0]["error"]
            .as_str()
            .unwrap()
            .contains("no header row"),
        "{page}"
    );

    // "Müller", "Zoé" in Latin-1: read as such, journaled and written as UTF-8.
    let mut file = b"mrn,family,given,birth_date,sex,loinc,test_name,value,unit,ref_low,ref_high,collected_at\n".to_vec();
    file.extend_from_slice(b"MRN-L1,M\xfcller,Zo\xe9,1970-01-01,F,2345-7,Glucose,5.0,mmol/L,3.9,6.1,2026-11-30T08:00:00Z\n");
    std::fs::write(latin1.join("export.csv"), file).unwrap();
    let deadline = Instant::now() + T;
    while total(&engine, "Patient?family=M%C3%BCller").await != 1 {
        assert!(
            Instant::now() < deadline,
            "never written:\n{}",
            engine.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, found) = engine.api("/fhir/Patient?family=M%C3%BCller").await;
    assert_eq!(
        found["entry"][0]["resource"]["name"][0]["given"][0], "Zoé",
        "{found}"
    );
    assert!(latin1.join("processed/export.csv").exists());
}

#[tokio::test]
async fn an_hl7_batch_file_in_a_folder_becomes_its_messages_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let drop = dir.path().join("drop");
    let channels = dir.path().join("channels");
    std::fs::create_dir_all(&drop).unwrap();
    std::fs::create_dir_all(&channels).unwrap();
    // A channel without a transform: each message is journaled and routed, nothing delivered.
    std::fs::write(
        channels.join("batches.toml"),
        format!(
            "name = \"batches\"\n[source]\nkind = \"dir\"\ndir = \"{}\"\npoll_ms = 200\n",
            drop.display()
        ),
    )
    .unwrap();
    let channels = channels.display().to_string();
    let scripts = repo_root().join("scripts").display().to_string();
    let engine = Engine::start(
        &dir.path().join("data"),
        &[
            ("ORBITER_CHANNELS_DIR", &channels),
            ("ORBITER_SCRIPTS_DIR", &scripts),
        ],
    );
    std::fs::write(drop.join("night.hl7"), fixture("hl7v2/batch.hl7")).unwrap();
    let deadline = Instant::now() + T;
    let controls = loop {
        let (_, page) = engine.api("/api/transactions?limit=10").await;
        let items = page["items"].as_array().unwrap().clone();
        if items.len() == 3 {
            // Newest first: the journal kept the file's order.
            break items
                .iter()
                .map(|t| t["control_id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>();
        }
        assert!(Instant::now() < deadline, "not journaled: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(controls, ["B0003", "B0002", "B0001"]);
    let deadline = Instant::now() + T;
    while !drop.join("processed/night.hl7").exists() {
        assert!(Instant::now() < deadline, "never moved:\n{}", engine.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each shipped document channel declares its format: a document of another kind posted to its
/// path (a FHIR Patient to `/ccda`, a C-CDA to `/fhir`, a C-CDA to `/csv/lab`) is answered 415
/// and never journaled, instead of being accepted (202) and failing later in the wrong script.
#[tokio::test]
async fn a_shipped_path_refuses_documents_of_another_format() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start(dir.path());
    for (path, content_type, body) in [
        (
            "/ccda",
            "application/fhir+json",
            fixture("fhir/patient.json"),
        ),
        ("/fhir", "application/xml", fixture("ccda/ccd_full.xml")),
        (
            "/csv/lab",
            "application/cda+xml",
            fixture("ccda/ccd_full.xml"),
        ),
        ("/ccda", "text/csv", fixture("csv/lab_results.csv")),
    ] {
        let resp = engine.ingest(path, content_type, body).await;
        assert_eq!(resp.status().as_u16(), 415, "{content_type} to {path}");
        let outcome: serde_json::Value = resp.json().await.unwrap();
        let text = outcome["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(text.contains("this path takes"), "{text}");
    }
    let (_, page) = engine.api("/api/transactions?limit=10").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 0, "{page}");
}
