//! The default C-CDA, CSV and FHIR scripts run on the fixtures through the script host, and
//! their output checked: the Bundle's structure (every `urn:uuid` reference resolves), every
//! resource against the embedded CDR's R4 checks, the transaction applied to a real embedded
//! store twice (the replay must create nothing), and every resource through the independent
//! FHIR R4 validator (`tests/fhir_validate.py`, fhir.resources; see `tests/requirements.txt`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rhai::Dynamic;
use serde_json::Value;

use super::{ccda, csv, fhir};
use crate::script::{ScriptContext, ScriptHost, ScriptLimits, TransformOutcome};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture(path: &str) -> Vec<u8> {
    let p = root().join("fixtures").join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn run(script: &str, msg: Dynamic, raw: &[u8]) -> TransformOutcome {
    let limits = ScriptLimits {
        // Debug builds on a shared machine: the default 1 s budget is for release builds.
        time_budget: Duration::from_secs(20),
        ..ScriptLimits::default()
    };
    let host = ScriptHost::new(&root().join("scripts/lib"), limits).unwrap();
    let ast = host
        .compile_file(&root().join("scripts").join(script))
        .unwrap_or_else(|e| panic!("{e}"));
    let ctx = ScriptContext {
        channel: "test".into(),
        script_dir: root().join("scripts"),
        transaction_id: None,
        output_tree: false,
    };
    host.run_transform_value(&ast, msg, raw, &ctx)
        .unwrap_or_else(|e| panic!("{e}\nlogs: {:?}", e.logs))
}

fn output(outcome: TransformOutcome) -> Value {
    match outcome {
        TransformOutcome::Output { output, .. } => output.to_value(),
        other => panic!("expected output, got {other:?}"),
    }
}

fn resources<'a>(bundle: &'a Value, ty: &str) -> Vec<&'a Value> {
    bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == ty)
        .collect()
}

/// The structural checks every output must pass.
fn check_output(bundle: &Value) {
    assert_eq!(bundle["type"], "transaction");
    fhir::check(bundle).unwrap_or_else(|e| panic!("{e}\n{bundle:#}"));
    for e in bundle["entry"].as_array().unwrap() {
        let r = &e["resource"];
        crate::cdr::validate::check_resource(r, None)
            .unwrap_or_else(|err| panic!("{err:?}\n{r:#}"));
        assert_eq!(
            e["request"]["method"], "PUT",
            "not an idempotent write: {e:#}"
        );
    }
    python_validate(bundle);
}

/// Validates every resource with the project's independent FHIR R4 validator
/// (`tests/fhir_validate.py`, fhir.resources 6.1.0 plus the bindings it does not check). The
/// interpreter is `ORBITER_FHIR_PYTHON` or `python3`; a missing validator fails the test.
fn python_validate(bundle: &Value) {
    let python = std::env::var("ORBITER_FHIR_PYTHON").unwrap_or_else(|_| "python3".into());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bundle.json");
    std::fs::write(&file, serde_json::to_vec(bundle).unwrap()).unwrap();
    let out = std::process::Command::new(&python)
        .arg(root().join("tests/fhir_validate.py"))
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e} (set ORBITER_FHIR_PYTHON)"));
    assert!(
        out.status.success(),
        "the FHIR R4 validator refused the output (exit {:?}; 2 means fhir.resources 6.1.0 is \
         missing: pip install -r tests/requirements.txt or set ORBITER_FHIR_PYTHON):\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Applies a transaction Bundle to a fresh embedded store twice: the first run creates, the
/// replay must create nothing new.
fn apply_twice(bundle: &Value) -> (Vec<String>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::cdr::store::Store::open(dir.path(), 8 * 1024 * 1024).unwrap();
    let statuses = |resp: &Value| -> Vec<String> {
        resp["entry"]
            .as_array()
            .map(|es| {
                es.iter()
                    .map(|e| e["response"]["status"].as_str().unwrap_or("?").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let base = "http://localhost/fhir";
    let (code, first) = crate::cdr::bundle::process(
        &store,
        std::borrow::Cow::Borrowed(bundle),
        base,
        crate::cdr::Return::Minimal,
    );
    assert_eq!(code, 200, "{first:#}");
    let (code, second) = crate::cdr::bundle::process(
        &store,
        std::borrow::Cow::Borrowed(bundle),
        base,
        crate::cdr::Return::Minimal,
    );
    assert_eq!(code, 200, "{second:#}");
    (statuses(&first), statuses(&second))
}

fn assert_replay_creates_nothing(bundle: &Value) {
    let (first, second) = apply_twice(bundle);
    assert!(first.iter().all(|s| s.starts_with("201")), "{first:?}");
    assert!(
        second.iter().all(|s| s.starts_with("200")),
        "the replay created resources: {second:?}"
    );
}

#[test]
fn a_full_ccd_maps_every_section() {
    let raw = fixture("ccda/ccd_full.xml");
    let bundle = output(run(
        "ccda_to_fhir.rhai",
        ccda::to_script(&raw).unwrap(),
        &raw,
    ));
    check_output(&bundle);
    let count = |ty| resources(&bundle, ty).len();
    assert_eq!(count("Patient"), 1);
    assert_eq!(count("Practitioner"), 1);
    assert_eq!(count("Organization"), 1);
    assert_eq!(count("Composition"), 1);
    assert_eq!(count("Condition"), 2);
    assert_eq!(count("AllergyIntolerance"), 1);
    assert_eq!(count("MedicationStatement"), 1);
    assert_eq!(count("DiagnosticReport"), 1);
    assert_eq!(count("Observation"), 5);
    assert_eq!(count("Immunization"), 1);
    assert_eq!(count("Encounter"), 1);

    let p = resources(&bundle, "Patient")[0];
    assert_eq!(
        p["identifier"][0]["system"],
        "urn:oid:2.16.840.1.113883.19.5.99999.2"
    );
    assert_eq!(p["identifier"][0]["value"], "MRN-998991");
    assert_eq!(
        p["identifier"][1]["system"],
        "http://hl7.org/fhir/sid/us-ssn"
    );
    assert_eq!(p["name"][0]["given"], serde_json::json!(["Ellen", "Marie"]));
    assert_eq!(p["birthDate"], "1975-05-01");
    assert_eq!(p["gender"], "female");
    assert_eq!(p["telecom"][1]["system"], "email");

    let conditions = resources(&bundle, "Condition");
    assert_eq!(conditions[0]["code"]["coding"][1]["code"], "I10");
    assert_eq!(
        conditions[0]["clinicalStatus"]["coding"][0]["code"],
        "active"
    );
    assert_eq!(
        conditions[1]["clinicalStatus"]["coding"][0]["code"],
        "resolved"
    );
    assert_eq!(conditions[1]["abatementDateTime"], "2025-03-20");

    let allergy = resources(&bundle, "AllergyIntolerance")[0];
    assert_eq!(allergy["code"]["coding"][0]["code"], "7980");
    assert_eq!(allergy["reaction"][0]["severity"], "moderate");
    assert_eq!(allergy["category"][0], "medication");

    let glucose = resources(&bundle, "Observation")
        .into_iter()
        .find(|o| o["code"]["coding"][0]["code"] == "2345-7")
        .unwrap();
    assert_eq!(glucose["valueQuantity"]["value"], 5.4);
    assert_eq!(glucose["valueQuantity"]["code"], "mmol/L");
    assert_eq!(glucose["effectiveDateTime"], "2026-11-29T08:30:00-05:00");
    assert_eq!(glucose["referenceRange"][0]["high"]["value"], 6.1);
    let report = resources(&bundle, "DiagnosticReport")[0];
    assert_eq!(report["result"].as_array().unwrap().len(), 2);

    let med = resources(&bundle, "MedicationStatement")[0];
    assert_eq!(
        med["medicationCodeableConcept"]["coding"][0]["code"],
        "314076"
    );
    assert_eq!(med["dosage"][0]["timing"]["repeat"]["periodUnit"], "h");
    let imm = resources(&bundle, "Immunization")[0];
    assert_eq!(
        imm["vaccineCode"]["coding"][0]["system"],
        "http://hl7.org/fhir/sid/cvx"
    );
    assert_eq!(imm["lotNumber"], "FLU-2026-A17");

    let comp = resources(&bundle, "Composition")[0];
    assert_eq!(comp["section"].as_array().unwrap().len(), 7);
    assert_eq!(comp["identifier"]["value"], "CCD-20261130-0001");
    assert!(comp["author"][0]["reference"]
        .as_str()
        .unwrap()
        .starts_with("urn:uuid:"));

    // The same document gives the same Bundle, and applying it twice creates nothing twice.
    let again = output(run(
        "ccda_to_fhir.rhai",
        ccda::to_script(&raw).unwrap(),
        &raw,
    ));
    assert_eq!(again, bundle);
    assert_replay_creates_nothing(&bundle);
}

#[test]
fn an_awkward_ccd_maps_what_it_has() {
    let raw = fixture("ccda/ccd_awkward.xml");
    let bundle = output(run(
        "ccda_to_fhir.rhai",
        ccda::to_script(&raw).unwrap(),
        &raw,
    ));
    check_output(&bundle);
    let p = resources(&bundle, "Patient")[0];
    assert_eq!(p["identifier"].as_array().unwrap().len(), 1);
    assert_eq!(p["identifier"][0]["value"], "ÅSE-0042");
    assert_eq!(p["name"][0]["family"], "Øyen-Müller");
    assert_eq!(p["gender"], "unknown");
    assert_eq!(p["birthDate"], "1949");
    assert!(p.get("address").is_none() && p.get("telecom").is_none());

    let allergy = resources(&bundle, "AllergyIntolerance")[0];
    assert_eq!(allergy["code"]["coding"][0]["code"], "716186003");
    let med = resources(&bundle, "MedicationStatement")[0];
    assert_eq!(
        med["medicationCodeableConcept"]["text"],
        "Paracetamol 500 mg tablett"
    );
    assert_eq!(
        med["medicationCodeableConcept"]["coding"][0]["system"],
        "http://www.whocc.no/atc"
    );
    assert!(med.get("effectivePeriod").is_none());
    let blood_group = resources(&bundle, "Observation")
        .into_iter()
        .find(|o| o["code"]["coding"][0]["code"] == "882-1")
        .unwrap();
    assert_eq!(blood_group["valueString"], "A Rh(D) positive");
    let report = resources(&bundle, "DiagnosticReport")[0];
    assert_eq!(report["code"]["text"], "Blood bank");
    assert!(resources(&bundle, "Immunization").is_empty());
    assert!(resources(&bundle, "Encounter").is_empty());
    assert!(resources(&bundle, "Practitioner").is_empty());

    let comp = resources(&bundle, "Composition")[0];
    assert_eq!(comp["author"][0]["display"], "Exporter 2.0");
    assert_eq!(comp["title"], "Résumé de soins — Åse Øyen-Müller");
    let problems = comp["section"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["title"] == "Problems")
        .unwrap();
    assert_eq!(problems["emptyReason"]["coding"][0]["code"], "unavailable");
    assert!(problems["text"]["div"]
        .as_str()
        .unwrap()
        .contains("&lt;not collected&gt;"));
    // No document id extension: the Composition is keyed on the root (a UUID).
    assert_eq!(
        comp["identifier"]["value"],
        "urn:uuid:5f3a1c2e-9b8d-4e7f-a6c5-b4d3e2f1a0b9"
    );
    assert_replay_creates_nothing(&bundle);
}

fn csv_rows(path: &str, options: &csv::CsvOptions) -> Vec<Result<Vec<u8>, String>> {
    let raw = fixture(path);
    let mut reader = csv::CsvReader::new(&raw[..], options);
    let headers = reader.headers().unwrap().to_vec();
    reader
        .map(|r| {
            r.map(|r| csv::row_bytes(&headers, &r.fields, options))
                .map_err(|e| e.to_string())
        })
        .collect()
}

fn run_csv_row(row: &[u8], options: &csv::CsvOptions) -> TransformOutcome {
    run(
        "csv_lab_to_fhir.rhai",
        csv::to_script(row, options).unwrap(),
        row,
    )
}

#[test]
fn csv_lab_rows_become_patient_and_observation() {
    let options = csv::CsvOptions::default();
    let rows = csv_rows("csv/lab_results.csv", &options);
    assert_eq!(rows.len(), 4);
    let mut bundles = Vec::new();
    for row in &rows {
        let bundle = output(run_csv_row(row.as_ref().unwrap(), &options));
        check_output(&bundle);
        assert_eq!(resources(&bundle, "Patient").len(), 1);
        assert_eq!(resources(&bundle, "Observation").len(), 1);
        bundles.push(bundle);
    }
    let obs = resources(&bundles[0], "Observation")[0];
    assert_eq!(obs["code"]["coding"][0]["code"], "2345-7");
    assert_eq!(obs["valueQuantity"]["value"], 5.4);
    assert_eq!(obs["effectiveDateTime"], "2026-11-30T08:15:00+01:00");
    assert_eq!(obs["interpretation"][0]["coding"][0]["code"], "N");
    assert_eq!(
        bundles[0]["entry"][0]["request"]["url"],
        "Patient?identifier=urn:oid:2.16.840.1.113883.19.5|MRN-1001"
    );
    // An in-range creatinine, a local time, an HL7 date, a two-part given name.
    assert_eq!(
        resources(&bundles[1], "Observation")[0]["interpretation"][0]["coding"][0]["code"],
        "N"
    );
    assert_eq!(
        resources(&bundles[2], "Observation")[0]["effectiveDateTime"],
        "2026-11-30T09:02:00Z"
    );
    assert_eq!(
        resources(&bundles[2], "Patient")[0]["name"][0]["given"],
        serde_json::json!(["Thị", "Lan"])
    );
    assert_eq!(
        resources(&bundles[3], "Observation")[0]["effectiveDateTime"],
        "2026-11-30"
    );
    // Re-running a journaled row gives the same Bundle; applying it twice creates nothing twice.
    let again = output(run_csv_row(rows[0].as_ref().unwrap(), &options));
    assert_eq!(again, bundles[0]);
    assert_replay_creates_nothing(&bundles[0]);
}

#[test]
fn quoted_csv_with_another_delimiter() {
    let options: csv::CsvOptions = toml::from_str("delimiter = \";\"").unwrap();
    let rows = csv_rows("csv/lab_results_quoted.csv", &options);
    assert_eq!(rows.len(), 2);
    let first = output(run_csv_row(rows[0].as_ref().unwrap(), &options));
    check_output(&first);
    let p = resources(&first, "Patient")[0];
    assert_eq!(p["name"][0]["family"], "O'Brien; Jr");
    let obs = resources(&first, "Observation")[0];
    assert_eq!(
        obs["note"][0]["text"],
        "sample \"haemolysed\",\r\nrepeat requested"
    );
    let second = output(run_csv_row(rows[1].as_ref().unwrap(), &options));
    let k = resources(&second, "Observation")[0];
    assert_eq!(k["valueQuantity"]["value"], 4.1);
    assert!(k.get("note").is_none());
}

#[test]
fn malformed_csv_rows_are_errors_with_lines_and_bad_rows_are_rejected() {
    let options = csv::CsvOptions::default();
    let rows = csv_rows("csv/lab_results_malformed.csv", &options);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows[0].is_ok());
    assert_eq!(
        rows[1].as_ref().unwrap_err(),
        "line 3: 6 fields where the header has 12"
    );
    // The unclosed quote on line 4 swallows line 5: one bad row, reported where it starts.
    let swallowed = rows[2].as_ref().unwrap_err();
    assert!(swallowed.starts_with("line 4: "), "{swallowed}");
    assert!(swallowed.contains("runs on to line 5"), "{swallowed}");

    let no_mrn = csv::row_bytes(
        &["mrn".into(), "loinc".into()],
        &["".into(), "2345-7".into()],
        &options,
    );
    match run_csv_row(&no_mrn, &options) {
        TransformOutcome::Reject { reason, .. } => assert!(reason.contains("no mrn")),
        other => panic!("expected a reject, got {other:?}"),
    }
}

#[test]
fn fhir_bodies_pass_through() {
    let options = fhir::FhirOptions {
        as_transaction: true,
    };
    let raw = fixture("fhir/transaction_bundle.json");
    let out = output(run(
        "fhir_passthrough.rhai",
        fhir::to_script_with(&raw, &options).unwrap(),
        &raw,
    ));
    let sent: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(out, sent);
    check_output(&out);
    assert_replay_creates_nothing(&out);

    let raw = fixture("fhir/patient.json");
    let out = output(run(
        "fhir_passthrough.rhai",
        fhir::to_script_with(&raw, &options).unwrap(),
        &raw,
    ));
    assert_eq!(out["entry"][0]["request"]["url"], "Patient/pat-2002");
    check_output(&out);

    let raw = fixture("fhir/collection_bundle.json");
    let out = output(run(
        "fhir_passthrough.rhai",
        fhir::to_script_with(&raw, &options).unwrap(),
        &raw,
    ));
    assert_eq!(out["type"], "transaction");
    fhir::check(&out).unwrap();
    let (first, _) = apply_twice(&out);
    assert_eq!(first.len(), 3);
    // Without as_transaction, a collection is refused by the script, not sent as it is.
    match run(
        "fhir_passthrough.rhai",
        fhir::to_script(&raw).unwrap(),
        &raw,
    ) {
        TransformOutcome::Reject { reason, .. } => assert!(reason.contains("as_transaction")),
        other => panic!("expected a reject, got {other:?}"),
    }
    assert!(fhir::to_script(&fixture("fhir/invalid_bundle.json")).is_err());
}

#[test]
fn script_api_on_a_document() {
    let raw = fixture("ccda/ccd_full.xml");
    let host = ScriptHost::new(&root().join("scripts/lib"), ScriptLimits::default()).unwrap();
    let mut scope = rhai::Scope::new();
    scope.push_dynamic("msg", ccda::to_script(&raw).unwrap());
    let got: rhai::Array = host
        .engine()
        .eval_with_scope(
            &mut scope,
            r#"
            let s = msg.section("2.16.840.1.113883.10.20.22.2.5.1");
            let missing = msg.first("no/such/path");
            [
                msg.get("recordTarget/patientRole/patient/name/given"),
                msg["code/@code"],
                s.get("title"),
                s.count("entry"),
                s.first("entry[2]/act/statusCode").attr("code"),
                msg.all("component/structuredBody/component/section").len(),
                missing.exists,
                missing.first("x").attr("y"),
                msg.has("recordTarget/patientRole/id[@root='2.16.840.1.113883.4.1']"),
                s.first("entry/act/entryRelationship/observation/value").xsi_type,
                msg.first("author/assignedAuthor").parent.name,
                msg.section("2.16.840.1.113883.10.20.22.2.6.1").templates()[0],
                s.first("text").deep_text(),
                msg.section("9.9.9").exists,
            ]
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let shown: Vec<String> = got.iter().map(|d| d.to_string()).collect();
    assert_eq!(
        shown,
        [
            "Ellen",
            "34133-9",
            "Problems",
            "2",
            "completed",
            "7",
            "false",
            "",
            "true",
            "CD",
            "author",
            "2.16.840.1.113883.10.20.22.2.6.1",
            "Essential hypertension, since 2024 Pneumonia, resolved",
            "false",
        ]
    );
    // A bad path is a script error naming the path, not a panic.
    let err = host
        .engine()
        .eval_with_scope::<Dynamic>(&mut scope, r#"msg.first("a[")"#)
        .unwrap_err();
    assert!(err.to_string().contains("bad path \"a[\""), "{err}");
}

#[test]
fn the_default_channels_parse_and_their_scripts_compile() {
    let host = ScriptHost::new(&root().join("scripts/lib"), ScriptLimits::default()).unwrap();
    for (file, path, script_file) in [
        ("ccda-to-fhir.toml", "/ccda", "ccda_to_fhir.rhai"),
        ("csv-lab.toml", "/csv/lab", "csv_lab_to_fhir.rhai"),
        ("fhir-bundle.toml", "/fhir", "fhir_passthrough.rhai"),
    ] {
        let p = root().join("channels").join(file);
        let text = std::fs::read_to_string(&p).unwrap();
        let def =
            crate::channel::def::ChannelDef::parse(&p, &text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(def.source.kind, crate::channel::def::SourceKind::Http);
        assert_eq!(def.source.path.as_deref(), Some(path));
        let script = def
            .transform
            .as_ref()
            .unwrap()
            .resolve(&root().join("scripts"));
        assert!(script.ends_with(script_file), "{}", script.display());
        host.compile_file(&script).unwrap_or_else(|e| panic!("{e}"));
    }
    let csv_def = crate::channel::def::ChannelDef::parse(
        Path::new("channels/csv-lab.toml"),
        &std::fs::read_to_string(root().join("channels/csv-lab.toml")).unwrap(),
    )
    .unwrap();
    assert_eq!(csv_def.csv.unwrap().max_row_bytes, 65536);
    let bad = "name = \"x\"\n[source]\nkind = \"http\"\npath = \"/x\"\n[csv]\ndelimiter = \"ab\"\n";
    assert!(crate::channel::def::ChannelDef::parse(Path::new("x.toml"), bad).is_err());
}

#[test]
fn value_runs_filter_and_seed_ids_from_their_raw_input() {
    let host = ScriptHost::new(&root().join("scripts/lib"), ScriptLimits::default()).unwrap();
    let ctx = ScriptContext::default();
    let options = csv::CsvOptions::default();
    let row = |sex: &str| {
        csv::row_bytes(
            &["mrn".into(), "sex".into()],
            &["M1".into(), sex.into()],
            &options,
        )
    };

    let filter = host.compile_source("f.rhai", r#"msg.sex == "F""#).unwrap();
    let keep = |raw: &[u8]| {
        host.run_filter_value(&filter, csv::to_script(raw, &options).unwrap(), raw, &ctx)
            .unwrap()
            .keep
    };
    assert!(keep(&row("F")));
    assert!(!keep(&row("M")));

    // Unconditional creates get fullUrls seeded by the raw input: stable for the same row,
    // different for another row.
    let create = host
        .compile_source(
            "c.rhai",
            r#"let tx = transaction(); tx.create(#{resourceType: "Basic", code: #{text: msg.sex}}); tx"#,
        )
        .unwrap();
    let full_url = |raw: &[u8]| {
        let out = output(
            host.run_transform_value(&create, csv::to_script(raw, &options).unwrap(), raw, &ctx)
                .unwrap(),
        );
        out["entry"][0]["fullUrl"].as_str().unwrap().to_owned()
    };
    assert_eq!(full_url(&row("F")), full_url(&row("F")));
    assert_ne!(full_url(&row("F")), full_url(&row("M")));
}

#[test]
fn script_input_dispatches_on_the_format() {
    use super::{script_input, Format, FormatError};
    let (c, f) = (csv::CsvOptions::default(), fhir::FhirOptions::default());
    let doc = script_input(Format::Ccda, &fixture("ccda/ccd_full.xml"), &c, &f).unwrap();
    assert!(doc.is::<crate::script::xml::XmlNode>());
    let row = script_input(Format::Csv, b"a,b\n1,2\n", &c, &f).unwrap();
    assert_eq!(
        row.cast::<rhai::Map>()["b"].clone().into_string().unwrap(),
        "2"
    );
    let fhir = script_input(Format::Fhir, &fixture("fhir/patient.json"), &c, &f).unwrap();
    assert!(fhir.is_map());
    assert!(matches!(
        script_input(Format::Fhir, b"{}", &c, &f),
        Err(FormatError::Fhir(_))
    ));
    assert!(matches!(
        script_input(Format::Ccda, b"<!DOCTYPE x><x/>", &c, &f),
        Err(FormatError::Ccda(_))
    ));
    assert!(matches!(
        script_input(Format::Hl7v2, b"MSH|^~\\&|", &c, &f),
        Err(FormatError::Hl7v2)
    ));
}
