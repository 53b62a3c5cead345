//! End-to-end: the HL7 v2 → FHIR R4 mapping library and the default channels.
//!
//! Every fixture that has an expectation file (`fixtures/expected/<name>.json`) goes through
//! its channel with the real `orbiter try CHANNEL FILE --json`, and then:
//! - its resources are counted by type and compared with the expectation;
//! - every field-level expectation ("fact": a resource, a JSON path, a value) must hold;
//! - every request is idempotent by construction (`PUT` to a conditional URL or `Type/id`, or a
//!   conditional create on an identifier) and a second run gives the identical Bundle;
//! - every Bundle is validated by an independent FHIR R4 implementation, `tests/fhir_validate.py`
//!   (PyPI `fhir.resources` 6.1.0, see `tests/requirements.txt`), plus the required code
//!   bindings it does not check. A missing validator fails the test: it never passes unchecked.
//!
//! Accuracy: each expectation file also lists "gaps", facts of the message the mapping does not
//! carry over (each with the reason). The test prints met / (facts + gaps) per kind of fact and
//! asserts at least 98% for patient, observation, order and document facts together.
//!
//! The interpreter is `python3`, or `ORBITER_FHIR_PYTHON` (e.g. a virtualenv's python, when the
//! machine's own needs pydantic 2).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{ack_fields, default_channels, repo_root, settled, Engine};
use orbiter::mllp::MllpClient;
use serde_json::Value;

/// One field-level expectation, as written in `fixtures/expected/*.json`.
struct Fact {
    kind: String,
    from: String,
    /// `Type` (the first resource of that type) or `Type[n]` (the n-th, from 0).
    at: String,
    /// `a.b[0].c`; empty with value `"$none"`: there is no resource of type `at`.
    path: String,
    /// The expected JSON value; `"$ref:Type[n]"` means that resource's fullUrl.
    value: Option<Value>,
    /// The element must be absent.
    absent: bool,
}

struct Expectation {
    name: String,
    message: String,
    channel: String,
    outcome: String,
    resources: BTreeMap<String, u64>,
    facts: Vec<Fact>,
    gaps: Vec<(String, String)>,
}

fn load_expectations() -> Vec<Expectation> {
    let dir = repo_root().join("fixtures/expected");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            let v: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            let facts = v["facts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| Fact {
                    kind: f["kind"].as_str().unwrap().into(),
                    from: f["from"].as_str().unwrap().into(),
                    at: f["at"].as_str().unwrap().into(),
                    path: f["path"].as_str().unwrap().into(),
                    value: f.get("value").cloned(),
                    absent: f["absent"].as_bool().unwrap_or(false),
                })
                .collect();
            let gaps = v["gaps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| {
                    (
                        g["kind"].as_str().unwrap().to_string(),
                        g["from"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            Expectation {
                name: path.file_stem().unwrap().to_string_lossy().into(),
                message: s("message"),
                channel: s("channel"),
                outcome: s("outcome"),
                resources: v["resources"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
                    .collect(),
                facts,
                gaps,
            }
        })
        .collect()
}

/// `orbiter try CHANNEL FILE --json` with the repository's channels and scripts: the envelope.
fn try_channel(channel: &str, message: &Path) -> Value {
    let root = repo_root();
    let out = Command::new(env!("CARGO_BIN_EXE_orbiter"))
        .args(["try", channel])
        .arg(message)
        .arg("--json")
        .env("ORBITER_CHANNELS_DIR", root.join("channels"))
        .env("ORBITER_SCRIPTS_DIR", root.join("scripts"))
        .current_dir(&root)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "orbiter try {channel} {}: no JSON envelope ({e}):\n{}\n{}",
            message.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The entry of `bundle` that `at` (`Type` or `Type[n]`) names.
fn select<'a>(bundle: &'a Value, at: &str) -> Option<&'a Value> {
    let (ty, index) = match at.split_once('[') {
        Some((ty, rest)) => (ty, rest.trim_end_matches(']').parse::<usize>().unwrap()),
        None => (at, 0),
    };
    bundle["entry"]
        .as_array()?
        .iter()
        .filter(|e| e["resource"]["resourceType"] == ty)
        .nth(index)
}

/// Follows `a.b[0].c` into `v`.
fn walk<'a>(mut v: &'a Value, path: &str) -> Option<&'a Value> {
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            v = v.get(key)?;
        }
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            v = v.get(index.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(v)
}

/// JSON equality, with numbers compared by value (7.0 and 7 are the same FHIR decimal).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Checks one fact; `Err` says what was found instead.
fn check_fact(bundle: &Value, fact: &Fact) -> Result<(), String> {
    let entry = select(bundle, &fact.at);
    if fact.value.as_ref().and_then(Value::as_str) == Some("$none") {
        return match entry {
            None => Ok(()),
            Some(_) => Err(format!("a {} was written", fact.at)),
        };
    }
    let entry = entry.ok_or_else(|| format!("no {} in the output", fact.at))?;
    let found = walk(&entry["resource"], &fact.path);
    if fact.absent {
        return match found {
            None => Ok(()),
            Some(v) => Err(format!("expected absent, found {v}")),
        };
    }
    let mut want = fact
        .value
        .clone()
        .expect("a fact has a value or absent: true");
    if let Some(target) = want.as_str().and_then(|s| s.strip_prefix("$ref:")) {
        let target_entry =
            select(bundle, target).ok_or_else(|| format!("no {target} to refer to"))?;
        want = target_entry["fullUrl"].clone();
    }
    match found {
        Some(v) if same(v, &want) => Ok(()),
        Some(v) => Err(format!("expected {want}, found {v}")),
        None => Err(format!("expected {want}, found nothing")),
    }
}

/// Every entry must be a `PUT` to `Type?identifier=...` or `Type/id`, or a `POST` with
/// `ifNoneExist: identifier=...` (the Patient and Encounter of non-ADT channels): a replay
/// matches what the first run wrote instead of creating it again.
fn idempotency_problems(bundle: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut full_urls = BTreeSet::new();
    for e in bundle["entry"].as_array().unwrap() {
        let ty = e["resource"]["resourceType"].as_str().unwrap_or("?");
        let method = e["request"]["method"].as_str().unwrap_or("");
        let url = e["request"]["url"].as_str().unwrap_or("");
        let keyed = url.starts_with(&format!("{ty}?identifier="))
            || url
                .strip_prefix(&format!("{ty}/"))
                .is_some_and(|id| !id.is_empty() && !id.contains(['/', '?']));
        let created_once = method == "POST"
            && url == ty
            && e["request"]["ifNoneExist"]
                .as_str()
                .is_some_and(|c| c.starts_with("identifier="));
        if !(method == "PUT" && keyed || created_once) {
            problems.push(format!("{ty}: {method} {url} is not a keyed update"));
        }
        if !full_urls.insert(e["fullUrl"].as_str().unwrap_or("").to_string()) {
            problems.push(format!("{ty}: fullUrl {} is used twice", e["fullUrl"]));
        }
    }
    problems
}

/// The interpreter that runs `tests/fhir_validate.py`.
fn python() -> String {
    std::env::var("ORBITER_FHIR_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs the validator over `files`: its error lines (empty when everything is valid). Panics
/// when the validator cannot run at all: a missing validator must not look like a pass.
fn validate(files: &[PathBuf]) -> Vec<String> {
    let script = repo_root().join("tests/fhir_validate.py");
    let out = Command::new(python())
        .arg(&script)
        .args(files)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): the FHIR validator needs Python 3 with \
                 `pip install -r tests/requirements.txt` (or set ORBITER_FHIR_PYTHON)",
                python()
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        Some(0) => Vec::new(),
        Some(1) => stdout.lines().map(str::to_string).collect(),
        _ => panic!(
            "the FHIR validator could not run ({}): {}{}\n\
             install it with `{} -m pip install -r tests/requirements.txt` \
             (fhir.resources 6.1.0 with pydantic<2), or set ORBITER_FHIR_PYTHON",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            stdout,
            python()
        ),
    }
}

#[test]
fn the_validator_rejects_invalid_fhir() {
    // The validator must be able to fail, or the mapping test proves nothing.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:1", "request": {"method": "PUT", "url": "Patient?identifier=x|1"},
             "resource": {"resourceType": "Patient", "gender": "F", "birthDate": "1980-13-45",
                          "nickname": "not an element"}},
            {"fullUrl": "urn:uuid:2", "request": {"method": "PUT", "url": "Observation/x"},
             "resource": {"resourceType": "Observation", "status": "done",
                          "code": {"text": "x"}, "subject": {"reference": "urn:uuid:9"}}}]}"#,
    )
    .unwrap();
    let errors = validate(&[bad]).join("\n");
    for expected in [
        "birthDate",
        "nickname",
        "Patient.gender = 'F'",
        "Observation.status = 'done'",
        "urn:uuid:9 names no entry",
    ] {
        assert!(
            errors.contains(expected),
            "{expected:?} not reported:\n{errors}"
        );
    }
}

#[test]
fn every_fixture_maps_to_valid_fhir_with_its_expected_facts() {
    let root = repo_root();
    let expectations = load_expectations();
    assert!(
        expectations.len() >= 25,
        "{} expectation files",
        expectations.len()
    );
    let out_dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut bundles = Vec::new();
    let mut met: BTreeMap<String, usize> = BTreeMap::new();
    let mut total: BTreeMap<String, usize> = BTreeMap::new();
    let mut channels_seen = BTreeSet::new();

    for exp in &expectations {
        let message = root.join("fixtures/hl7v2").join(&exp.message);
        let envelope = try_channel(&exp.channel, &message);
        channels_seen.insert(exp.channel.clone());
        if envelope["outcome"] != exp.outcome.as_str() {
            failures.push(format!(
                "{}: outcome {} (expected {}): {}",
                exp.name, envelope["outcome"], exp.outcome, envelope["steps"]
            ));
            continue;
        }
        let bundle = envelope["output"].clone();

        // Deterministic output: the same message gives the same Bundle.
        let again = try_channel(&exp.channel, &message);
        if again["output"] != bundle {
            failures.push(format!(
                "{}: a second run gave a different Bundle",
                exp.name
            ));
        }
        for p in idempotency_problems(&bundle) {
            failures.push(format!("{}: {p}", exp.name));
        }

        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for e in bundle["entry"].as_array().unwrap() {
            let ty = e["resource"]["resourceType"].as_str().unwrap().to_string();
            *counts.entry(ty).or_default() += 1;
        }
        if counts != exp.resources {
            failures.push(format!(
                "{}: resources {counts:?}, expected {:?}",
                exp.name, exp.resources
            ));
        }

        for fact in &exp.facts {
            *total.entry(fact.kind.clone()).or_default() += 1;
            match check_fact(&bundle, fact) {
                Ok(()) => *met.entry(fact.kind.clone()).or_default() += 1,
                Err(why) => failures.push(format!(
                    "{}: {} -> {} {}: {why}",
                    exp.name, fact.from, fact.at, fact.path
                )),
            }
        }
        for (kind, _) in &exp.gaps {
            *total.entry(kind.clone()).or_default() += 1;
        }

        let file = out_dir.path().join(format!("{}.json", exp.name));
        std::fs::write(&file, serde_json::to_vec_pretty(&bundle).unwrap()).unwrap();
        bundles.push(file);
    }

    // Every default HL7 v2 channel is exercised (the other formats have their own tests).
    for entry in std::fs::read_dir(root.join("channels")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let def: toml::Value = toml::from_str(&text).unwrap();
        if def["source"]["kind"].as_str() != Some("mllp") {
            continue;
        }
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        assert!(
            channels_seen.contains(&name),
            "channel {name} has no fixture with expectations"
        );
    }

    // One validator run over every Bundle (each error line names its file).
    for line in validate(&bundles) {
        failures.push(format!("invalid FHIR: {line}"));
    }

    println!("facts met / (facts + gaps), per kind:");
    let mut core = (0, 0);
    for (kind, n) in &total {
        let m = met.get(kind).copied().unwrap_or(0);
        println!(
            "  {kind:12} {m:4} / {n:4} = {:.1}%",
            100.0 * m as f64 / *n as f64
        );
        if ["patient", "observation", "order", "document"].contains(&kind.as_str()) {
            core.0 += m;
            core.1 += n;
        }
    }
    let accuracy = 100.0 * core.0 as f64 / core.1 as f64;
    println!(
        "  patient+observation+order+document: {} / {} = {accuracy:.1}%",
        core.0, core.1
    );

    assert!(
        failures.is_empty(),
        "{} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(accuracy >= 98.0, "accuracy {accuracy:.1}% is below 98%");
}

#[test]
fn every_new_fixture_has_expectations() {
    // Fixtures that test the HL7 codec itself, or a message no default channel takes.
    let codec_only = [
        "qbp_q22_no_channel",
        "batch",
        "custom_delimiters",
        "enhanced_ack",
        "escapes",
        "latin1",
        "malformed_no_msh",
        "mixed_separators",
        "no_control_id",
        "v27_truncation",
    ];
    let root = repo_root();
    for entry in std::fs::read_dir(root.join("fixtures/hl7v2")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if codec_only.contains(&name.as_str()) {
            continue;
        }
        assert!(
            root.join(format!("fixtures/expected/{name}.json"))
                .is_file(),
            "fixtures/hl7v2/{name}.hl7 has no fixtures/expected/{name}.json"
        );
    }
}

/// `(module, function name, arity)` of every `fn` in `scripts/lib/*.rhai`.
fn library_functions() -> Vec<(String, String, usize)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("scripts/lib")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "rhai") {
            continue;
        }
        let module = path.file_stem().unwrap().to_string_lossy().to_string();
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let Some(rest) = line.strip_prefix("fn ") else {
                continue;
            };
            let (name, args) = rest.split_once('(').unwrap();
            let args = args.split(')').next().unwrap();
            let arity = args.split(',').filter(|a| !a.trim().is_empty()).count();
            out.push((module.clone(), name.trim().to_string(), arity));
        }
    }
    out
}

#[test]
fn library_function_names_do_not_collide_across_modules() {
    // Rhai can resolve an unqualified call inside one module to a same-name, same-arity function
    // of another imported module. Helpers therefore get names unique across scripts/lib; only
    // entry points called with a module prefix (write, write_all) may repeat.
    let mut seen: BTreeMap<(String, usize), String> = BTreeMap::new();
    let entry_points = ["write", "write_all"];
    for (module, name, arity) in library_functions() {
        if entry_points.contains(&name.as_str()) {
            continue;
        }
        if let Some(other) = seen.insert((name.clone(), arity), module.clone()) {
            panic!("{name}/{arity} is defined in both {other}.rhai and {module}.rhai");
        }
    }
}

#[test]
fn the_mapping_table_in_the_readme_names_existing_functions() {
    // Rows of the table look like: | `PID-5` | `Patient.name` | `patient::patient_resource` |
    let readme = std::fs::read_to_string(repo_root().join("scripts/README.md")).unwrap();
    let functions: BTreeSet<String> = library_functions()
        .into_iter()
        .map(|(m, f, _)| format!("{m}::{f}"))
        .collect();
    let mut rows = 0;
    let mut segments = BTreeSet::new();
    for line in readme.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 5 || !cells[3].starts_with('`') || !cells[3].contains("::") {
            continue;
        }
        rows += 1;
        for source in cells[1].split(',') {
            let source = source.trim().trim_start_matches('`');
            segments.insert(source.chars().take(3).collect::<String>());
        }
        for f in cells[3].split(',') {
            let f = f.trim().trim_matches('`');
            assert!(
                functions.contains(f),
                "README mapping row names {f}, which does not exist: {line}"
            );
        }
    }
    assert!(
        rows >= 60,
        "only {rows} mapping rows found in scripts/README.md"
    );
    for segment in [
        "MSH", "PID", "PD1", "NK1", "PV1", "PV2", "AL1", "DG1", "IN1", "ORC", "OBR", "OBX", "NTE",
        "SPM", "RXA", "RXR", "SCH", "AIL", "AIP", "TXA", "MRG",
    ] {
        assert!(segments.contains(segment), "no mapping row for {segment}");
    }
}

/// Every resource in the embedded CDR of the types the channels write: `Type/id` → versionId.
async fn cdr_versions(engine: &Engine) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for ty in [
        "Patient",
        "Encounter",
        "RelatedPerson",
        "AllergyIntolerance",
        "Condition",
        "Coverage",
        "ServiceRequest",
        "DiagnosticReport",
        "Observation",
        "Specimen",
        "Immunization",
        "Appointment",
        "DocumentReference",
        "MessageHeader",
        "Provenance",
    ] {
        let (status, body) = engine.api(&format!("/fhir/{ty}?_count=1000")).await;
        assert_eq!(status, 200, "{ty}: {body}");
        for e in body["entry"].as_array().into_iter().flatten() {
            let r = &e["resource"];
            out.insert(
                format!("{ty}/{}", r["id"].as_str().unwrap()),
                r["meta"]["versionId"].as_str().unwrap_or("").to_string(),
            );
        }
    }
    out
}

#[tokio::test]
async fn replaying_any_fixture_leaves_the_cdr_unchanged() {
    // Through the real engine and its embedded CDR: each message is delivered, and sending it
    // again right away creates no resource and no version. Messages about the same patient
    // (A01, A08, A03, ORU, ORM...) update one Patient.
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::start(
        &dir.path().join("data"),
        &{
            let env = default_channels();
            env.into_iter().collect::<Vec<_>>()
        }
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect::<Vec<_>>(),
    );
    let mut client = MllpClient::connect(&engine.mllp, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    let root = repo_root();
    for exp in load_expectations() {
        let bytes = std::fs::read(root.join("fixtures/hl7v2").join(&exp.message)).unwrap();
        let control_id = orbiter::hl7::Message::parse(&bytes)
            .unwrap()
            .control_id()
            .unwrap()
            .to_string();
        // AA, or CA for the fixtures that ask for enhanced acknowledgements (MSH-15).
        let ack = ack_fields(&client.send(&bytes).await.unwrap()).0;
        assert!(ack == "AA" || ack == "CA", "{}: {ack}", exp.name);
        let tx = settled(&engine, &control_id).await;
        assert_eq!(tx["status"], "delivered", "{}: {tx}", exp.name);
        let before = cdr_versions(&engine).await;
        let ack = ack_fields(&client.send(&bytes).await.unwrap()).0;
        assert!(ack == "AA" || ack == "CA", "{} (replay): {ack}", exp.name);
        let tx = settled(&engine, &control_id).await;
        assert_eq!(tx["status"], "delivered", "{} (replay): {tx}", exp.name);
        let after = cdr_versions(&engine).await;
        assert_eq!(before, after, "{}: the replay changed the CDR", exp.name);
    }
    // One Patient for MRN E4471002 however many messages spoke of it (A01, A03, A08, A13, A40,
    // ORU, OUL, ORM, OML, SIU, MDM, BAR, DFT, RDE).
    let (_, patients) = engine
        .api("/fhir/Patient?identifier=urn:oid:2.16.840.1.113883.3.9999.1|E4471002")
        .await;
    assert_eq!(
        patients["entry"].as_array().map(Vec::len),
        Some(1),
        "{patients}"
    );
    let (_, orders) = engine
        .api("/fhir/ServiceRequest?identifier=urn:id:CPOE|RAD-5512")
        .await;
    // The cancel (orm_o01_cancel) and the new order (orm_o01_new_v23) updated one resource.
    assert_eq!(
        orders["entry"].as_array().map(Vec::len),
        Some(1),
        "{orders}"
    );
    assert_eq!(
        orders["entry"][0]["resource"]["meta"]["versionId"], "2",
        "{orders}"
    );
}

#[tokio::test]
async fn results_orders_and_documents_keep_the_demographics_and_visit_the_adt_feed_sent() {
    // A discharge with the patient's full demographics, then a late result and a document
    // whose PID is an MRN and a name and whose PV1 is a class and the visit number (as lab and
    // transcription systems send them). They must not erase the address, phone, SSN and marital
    // status, nor set the finished visit back to in-progress; a result for a patient the CDR
    // does not know yet still creates it.
    let dir = tempfile::tempdir().unwrap();
    let (engine, mut client) = default_engine(dir.path()).await;
    let messages = [
        "MSH|^~\\&|ADT|GENHOSP|ORBITER|HIE|20261201100000-0500||ADT^A03^ADT_A03|KEEP-1|P|2.5.1\r\
         EVN|A03|20261201100000-0500\r\
         PID|1||K100^^^GENHOSP^MR~111-22-3333^^^USSSA^SS||KEEP^ANNA^^^^^L||19700101|F|||\
         1 MAIN ST^^PORTLAND^ME^04101^USA^H||^PRN^PH^^1^207^5550101|||M\r\
         PV1|1|I|3EAST^301^A^GENHOSP||||1902837465^PATEL^ANJALI^^^DR^^^NPI|||MED|||||||||\
         VK100^^^GENHOSP^VN|||||||||||||||||01^Home^HL70112||||||||\
         20261128080000-0500|20261201095500-0500\r",
        "MSH|^~\\&|LAB|GENHOSP_LAB|ORBITER|HIE|20261201120000-0500||ORU^R01^ORU_R01|KEEP-2|P|2.5.1\r\
         PID|1||K100^^^GENHOSP^MR||KEEP^ANNA||19700101|F\r\
         PV1|1|I|||||||||||||||||VK100^^^GENHOSP^VN\r\
         OBR|1|PK1^ORDERSYS|FK1^LABSYS|2345-7^Glucose^LN|||20261201090000-0500|||||||||||||||||CH|F\r\
         OBX|1|NM|2345-7^Glucose^LN||98|mg/dL|70-99|N|||F\r",
        "MSH|^~\\&|TRANS|GENHOSP|ORBITER|HIE|20261201130000-0500||MDM^T02^MDM_T02|KEEP-3|P|2.6\r\
         EVN|T02|20261201130000-0500\r\
         PID|1||K100^^^GENHOSP^MR||KEEP^ANNA||19700101|F\r\
         PV1|1|I|||||||||||||||||VK100^^^GENHOSP^VN\r\
         TXA|1|DS^Discharge summary^HL70270|TX|20261201125000-0500||||||||DOC-K100|||||AU\r\
         OBX|1|TX|18842-5^Discharge summary^LN||Discharged home in good condition.||||||F\r",
        "MSH|^~\\&|LAB|GENHOSP_LAB|ORBITER|HIE|20261201140000-0500||ORU^R01^ORU_R01|KEEP-4|P|2.5.1\r\
         PID|1||K200^^^GENHOSP^MR||FIRST^SEEN||19800101|M\r\
         OBR|1|PK2^ORDERSYS|FK2^LABSYS|2345-7^Glucose^LN|||20261201090000-0500|||||||||||||||||CH|F\r\
         OBX|1|NM|2345-7^Glucose^LN||101|mg/dL|70-99|H|||F\r",
    ];
    for m in messages {
        let control_id = orbiter::hl7::Message::parse(m.as_bytes())
            .unwrap()
            .control_id()
            .unwrap()
            .to_string();
        let ack = ack_fields(&client.send(m.as_bytes()).await.unwrap()).0;
        assert_eq!(ack, "AA", "{control_id}");
        let tx = settled(&engine, &control_id).await;
        assert_eq!(tx["status"], "delivered", "{control_id}: {tx}");
    }
    let (_, found) = engine
        .api("/fhir/Patient?identifier=urn:oid:2.16.840.1.113883.3.9999.1|K100")
        .await;
    assert_eq!(found["total"], 1, "{found}");
    let patient = &found["entry"][0]["resource"];
    assert_eq!(patient["address"][0]["line"][0], "1 MAIN ST", "{patient}");
    assert_eq!(
        patient["telecom"][0]["value"], "+1 207 5550101",
        "{patient}"
    );
    assert_eq!(
        patient["maritalStatus"]["coding"][0]["code"], "M",
        "{patient}"
    );
    assert_eq!(
        patient["identifier"].as_array().map(Vec::len),
        Some(2),
        "{patient}"
    );
    assert_eq!(patient["name"][0]["use"], "official", "{patient}");

    let (_, found) = engine
        .api("/fhir/Encounter?identifier=urn:oid:2.16.840.1.113883.3.9999.1|VK100")
        .await;
    assert_eq!(found["total"], 1, "{found}");
    let encounter = &found["entry"][0]["resource"];
    assert_eq!(encounter["status"], "finished", "{encounter}");
    assert_eq!(
        encounter["period"]["end"], "2026-12-01T09:55:00-05:00",
        "{encounter}"
    );
    assert_eq!(
        encounter["participant"][0]["individual"]["identifier"]["value"], "1902837465",
        "{encounter}"
    );
    // The result and the document point at that Patient and Encounter.
    let patient_ref = format!("Patient/{}", patient["id"].as_str().unwrap());
    let encounter_ref = format!("Encounter/{}", encounter["id"].as_str().unwrap());
    let (_, obs) = engine.api("/fhir/Observation?code=2345-7").await;
    let results: Vec<&Value> = obs["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["subject"]["reference"] == patient_ref.as_str())
        .collect();
    assert_eq!(results.len(), 1, "{obs}");
    assert_eq!(results[0]["encounter"]["reference"], encounter_ref.as_str());
    let (_, docs) = engine.api("/fhir/DocumentReference").await;
    assert_eq!(
        docs["entry"][0]["resource"]["subject"]["reference"],
        patient_ref.as_str(),
        "{docs}"
    );

    // A patient first seen in a result is created from that result's PID.
    let (_, found) = engine
        .api("/fhir/Patient?identifier=urn:oid:2.16.840.1.113883.3.9999.1|K200")
        .await;
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(found["entry"][0]["resource"]["name"][0]["family"], "FIRST");
}

#[tokio::test]
async fn a_correction_that_resends_only_the_corrected_obx_updates_that_observation() {
    // Labs often send a correction (OBX-11 C) with just the corrected OBX, numbered OBX-1 = 1
    // whatever its place in the first report. The corrected value must replace the first one,
    // not sit beside it as a second "final" potassium; text split over several OBX with one
    // code stays several Observations.
    let dir = tempfile::tempdir().unwrap();
    let (engine, mut client) = default_engine(dir.path()).await;
    let header = "PID|1||C100^^^GENHOSP^MR||CORR^ANNA||19700101|F\r\
                  OBR|1|PC1^ORDERSYS|FC1^LABSYS|24323-8^Metabolic panel^LN|||20261201090000-0500\
                  |||||||||||||||||CH|";
    let first = format!(
        "MSH|^~\\&|LAB|GENHOSP_LAB|ORBITER|HIE|20261201120000-0500||ORU^R01^ORU_R01|CORR-1|P|2.5.1\r\
         {header}F\r\
         OBX|1|NM|2345-7^Glucose^LN||98|mg/dL|70-99|N|||F\r\
         OBX|2|NM|2823-3^Potassium^LN||6.8|mmol/L|3.5-5.1|HH|||F\r\
         OBX|3|TX|8251-1^Comment^LN||Specimen hemolyzed.||||||F\r\
         OBX|4|TX|8251-1^Comment^LN||Recollection advised.||||||F\r"
    );
    let correction = format!(
        "MSH|^~\\&|LAB|GENHOSP_LAB|ORBITER|HIE|20261201150000-0500||ORU^R01^ORU_R01|CORR-2|P|2.5.1\r\
         {header}C\r\
         OBX|1|NM|2823-3^Potassium^LN||4.1|mmol/L|3.5-5.1|N|||C\r"
    );
    for (m, control_id) in [(&first, "CORR-1"), (&correction, "CORR-2")] {
        let ack = ack_fields(&client.send(m.as_bytes()).await.unwrap()).0;
        assert_eq!(ack, "AA", "{control_id}");
        let tx = settled(&engine, control_id).await;
        assert_eq!(tx["status"], "delivered", "{control_id}: {tx}");
    }
    let (_, found) = engine.api("/fhir/Observation?_count=100").await;
    let observations: Vec<&Value> = found["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .collect();
    assert_eq!(observations.len(), 4, "{found}");
    let potassium: Vec<&&Value> = observations
        .iter()
        .filter(|o| o["code"]["coding"][0]["code"] == "2823-3")
        .collect();
    assert_eq!(potassium.len(), 1, "{found}");
    assert_eq!(potassium[0]["valueQuantity"]["value"], 4.1);
    assert_eq!(potassium[0]["status"], "corrected");
    assert_eq!(potassium[0]["interpretation"][0]["coding"][0]["code"], "N");
    let (_, reports) = engine.api("/fhir/DiagnosticReport").await;
    assert_eq!(reports["total"], 1, "{reports}");
    assert_eq!(reports["entry"][0]["resource"]["status"], "corrected");
}

/// An engine on the shipped channels with its data under `dir`, and an MLLP client to it.
async fn default_engine(dir: &std::path::Path) -> (Engine, MllpClient<tokio::net::TcpStream>) {
    let env = default_channels();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let engine = Engine::start(&dir.join("data"), &env);
    let client = MllpClient::connect(&engine.mllp, std::time::Duration::from_secs(10))
        .await
        .unwrap();
    (engine, client)
}
