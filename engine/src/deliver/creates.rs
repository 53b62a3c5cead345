//! Plain creates made repeatable: the ids a Bundle's `POST Type` entries are written under.
//!
//! A `POST Type` entry without `ifNoneExist` creates a resource under a new server-assigned id
//! each time it is delivered. A delivery is repeated whenever the engine cannot know that the
//! last one took (killed after the CDR committed but before the outcome was journaled; a reply
//! lost to a timeout and retried) and when a person reruns the transaction, so such an entry
//! left the CDR with the resource twice. Before a Bundle goes to a FHIR server (`cdr` and
//! `http` destinations), each such entry becomes `PUT Type/<id>`, the id derived from where the
//! delivery comes from ([`IdSeed`]), the channel, the destination, and the entry's position and
//! type. A repeated delivery writes the same resources again (an update that changes nothing)
//! instead of new copies, against any FHIR R4 server that lets clients choose ids on update.
//!
//! - The id is `o` and 31 hex digits of a SHA-256 (a letter first: HAPI FHIR's default client
//!   id strategy refuses purely numeric ids; FHIR ids are `[A-Za-z0-9\-\.]{1,64}`).
//! - The entry keeps its `fullUrl`, and every `reference` in the Bundle that names it is
//!   rewritten to `Type/<id>`: the links hold whether or not the server maps the fullUrl of a
//!   PUT entry as it does a create's (HAPI and the embedded CDR do; links in `uri` elements,
//!   the narrative and conditional criteria still rely on that).
//! - Only plain creates change: a POST with `ifNoneExist` is repeatable already, and a POST to
//!   anything but a resource type (`Patient/_search`) is no create.
//! - The check walks the entries of the tree the destination holds anyway: no parse, and no
//!   copy of a Bundle that has no plain create (the HL7 channels write conditional updates and
//!   creates, and PUTs with ids).
//!
//! The transform step in the journal keeps the Bundle as the script made it; the delivery
//! step's response names the ids written.

use std::collections::HashMap;

use serde_json::Value;

use crate::cdr::r4::is_resource_type;
use crate::journal::TxId;
use crate::script::util::{det_hash, hex};

/// Where a delivery comes from: the same seed, channel and destination give the same ids.
#[derive(Debug, Clone, Copy)]
pub struct IdSeed<'a> {
    /// The journal's own random prefix ([`crate::journal::Journal::ack_id_prefix`]): engines
    /// that share a CDR, and a data dir started afresh, number their transactions from the
    /// same 1, and must not write over each other's resources.
    pub journal: &'a str,
    /// The transaction delivered, or the one its rerun chain started from: a rerun writes the
    /// resources its original wrote.
    pub original: TxId,
}

/// The ids of one delivery's plain creates.
#[derive(Debug, Clone)]
pub struct CreateIds {
    journal: String,
    original: String,
    channel: String,
    destination: String,
}

impl CreateIds {
    pub fn new(seed: IdSeed<'_>, channel: &str, destination: &str) -> CreateIds {
        CreateIds {
            journal: seed.journal.to_string(),
            original: seed.original.0.to_string(),
            channel: channel.to_string(),
            destination: destination.to_string(),
        }
    }

    /// The id of the entry at `index`, of type `ty`.
    pub fn id(&self, index: usize, ty: &str) -> String {
        let hash = det_hash([
            "plain-create",
            self.journal.as_str(),
            self.original.as_str(),
            self.channel.as_str(),
            self.destination.as_str(),
            &index.to_string(),
            ty,
        ]);
        let mut id = hex(&hash[..16]);
        id.truncate(31);
        id.insert(0, 'o');
        id
    }

    /// Turns each plain create of a transaction or batch `bundle` into `PUT Type/<id>` (the
    /// resource's `id` set to match) and points the references to its `fullUrl` at `Type/<id>`.
    /// Returns how many entries changed.
    pub fn apply(&self, bundle: &mut Value) -> usize {
        if !is_batch_or_transaction(bundle) {
            return 0;
        }
        let Some(entries) = bundle.get_mut("entry").and_then(Value::as_array_mut) else {
            return 0;
        };
        // fullUrl → Type/id, for the references.
        let mut renamed: HashMap<String, String> = HashMap::new();
        let mut changed = 0;
        for (index, entry) in entries.iter_mut().enumerate() {
            let Some(ty) = plain_create_type(entry).map(str::to_owned) else {
                continue;
            };
            let id = self.id(index, &ty);
            let path = format!("{ty}/{id}");
            if let Some(resource) = entry.get_mut("resource").and_then(Value::as_object_mut) {
                resource.insert("id".into(), Value::String(id));
            }
            if let Some(request) = entry.get_mut("request").and_then(Value::as_object_mut) {
                request.insert("method".into(), "PUT".into());
                request.insert("url".into(), Value::String(path.clone()));
                // An empty one (which counted as none).
                request.remove("ifNoneExist");
            }
            if let Some(url) = entry.get("fullUrl").and_then(Value::as_str) {
                // The first entry of a fullUrl given twice (a batch may) names it.
                renamed.entry(url.to_owned()).or_insert(path);
            }
            changed += 1;
        }
        crate::format::fhir::rename_references(entries, &renamed);
        changed
    }
}

/// Whether `bundle` is a transaction or batch with a plain create to make repeatable.
pub fn has_plain_creates(bundle: &Value) -> bool {
    is_batch_or_transaction(bundle)
        && bundle
            .get("entry")
            .and_then(Value::as_array)
            .is_some_and(|entries| entries.iter().any(|e| plain_create_type(e).is_some()))
}

fn is_batch_or_transaction(bundle: &Value) -> bool {
    bundle.get("resourceType").and_then(Value::as_str) == Some("Bundle")
        && matches!(
            bundle.get("type").and_then(Value::as_str),
            Some("transaction" | "batch")
        )
}

/// The type an entry creates with a plain `POST Type` (no `ifNoneExist`, or an empty one), of
/// a resource of that type.
fn plain_create_type(entry: &Value) -> Option<&str> {
    let request = entry.get("request")?;
    if request.get("method").and_then(Value::as_str) != Some("POST") {
        return None;
    }
    let conditional = request
        .get("ifNoneExist")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.trim().is_empty());
    if conditional {
        return None;
    }
    let ty = request.get("url").and_then(Value::as_str)?;
    let resource_type = entry.get("resource")?.get("resourceType")?.as_str()?;
    (ty == resource_type && is_resource_type(ty)).then_some(ty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PATIENT_URL: &str = "urn:uuid:3b0f6c2a-7d4e-4f4a-9d44-0d8f2f6c1a01";

    /// A Patient and an Observation about it, both plain creates, and a conditional create of
    /// an Encounter about the Patient (its criteria name the Patient's fullUrl: the server
    /// resolves that one).
    fn bundle() -> Value {
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": PATIENT_URL,
             "resource": {"resourceType": "Patient", "name": [{"family": "Okafor"}]},
             "request": {"method": "POST", "url": "Patient"}},
            {"fullUrl": "urn:uuid:3b0f6c2a-7d4e-4f4a-9d44-0d8f2f6c1a02",
             "resource": {"resourceType": "Observation", "status": "final",
                "code": {"text": "glucose"}, "subject": {"reference": PATIENT_URL}},
             "request": {"method": "POST", "url": "Observation"}},
            {"fullUrl": "urn:uuid:3b0f6c2a-7d4e-4f4a-9d44-0d8f2f6c1a03",
             "resource": {"resourceType": "Encounter", "status": "finished",
                "class": {"code": "AMB"}, "subject": {"reference": PATIENT_URL},
                "identifier": [{"system": "urn:visit", "value": "V1"}]},
             "request": {"method": "POST", "url": "Encounter",
                "ifNoneExist": format!("identifier=urn:visit|V1&subject={PATIENT_URL}")}}
        ]})
    }

    fn ids(n: u64, channel: &str) -> CreateIds {
        let seed = IdSeed {
            journal: "ABCDEF",
            original: TxId(n),
        };
        CreateIds::new(seed, channel, "cdr")
    }

    #[test]
    fn plain_creates_become_puts_under_ids_that_repeat() {
        let mut once = bundle();
        assert!(has_plain_creates(&once));
        assert_eq!(ids(7, "fhir-bundle").apply(&mut once), 2);
        let mut twice = bundle();
        ids(7, "fhir-bundle").apply(&mut twice);
        assert_eq!(once, twice, "the same transaction gives the same Bundle");

        let patient = &once["entry"][0];
        let id = patient["resource"]["id"].as_str().unwrap().to_string();
        let id = id.as_str();
        assert_eq!(
            patient["request"],
            json!({"method": "PUT", "url": format!("Patient/{id}")})
        );
        assert_eq!(patient["fullUrl"], PATIENT_URL, "the fullUrl is kept");
        assert!(id.starts_with('o') && id.len() == 32, "{id}");
        assert!(id[1..].chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        assert!(crate::cdr::validate::valid_id(id));
        let obs = &once["entry"][1];
        let obs_id = obs["resource"]["id"].as_str().unwrap().to_string();
        let obs_id = obs_id.as_str();
        assert_ne!(obs_id, id);
        assert_eq!(obs["request"]["url"], format!("Observation/{obs_id}"));
        // References to the Patient's fullUrl name what the PUT writes.
        let patient_path = format!("Patient/{id}");
        assert_eq!(
            obs["resource"]["subject"]["reference"],
            patient_path.as_str()
        );
        assert_eq!(
            once["entry"][2]["resource"]["subject"]["reference"],
            patient_path.as_str()
        );
        // The conditional create stays as it was.
        assert_eq!(once["entry"][2]["request"], bundle()["entry"][2]["request"]);
        assert!(once["entry"][2]["resource"].get("id").is_none());
        assert!(!has_plain_creates(&once), "nothing left to change");
        assert_eq!(ids(7, "fhir-bundle").apply(&mut once), 0);

        // Another transaction, or another channel: other ids.
        for other in [ids(8, "fhir-bundle"), ids(7, "another")] {
            let mut b = bundle();
            other.apply(&mut b);
            assert_ne!(b["entry"][0]["resource"]["id"], id);
            assert_ne!(b["entry"][1]["resource"]["id"], obs_id);
        }
        // Another journal (another engine in front of the same CDR).
        let seed = IdSeed {
            journal: "GHIJKL",
            original: TxId(7),
        };
        assert_ne!(
            CreateIds::new(seed, "fhir-bundle", "cdr").id(0, "Patient"),
            id
        );
        assert_ne!(
            ids(7, "fhir-bundle").id(1, "Patient"),
            id,
            "another position"
        );
    }

    #[test]
    fn only_plain_creates_of_a_type_change() {
        let untouched = [
            // Conditional creates, updates, searches, a type that does not match.
            json!({"request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=a|1"},
                   "resource": {"resourceType": "Patient"}}),
            json!({"request": {"method": "PUT", "url": "Patient/p1"},
                   "resource": {"resourceType": "Patient", "id": "p1"}}),
            json!({"request": {"method": "POST", "url": "Patient/_search"}}),
            json!({"request": {"method": "POST", "url": "Observation"},
                   "resource": {"resourceType": "Patient"}}),
            json!({"request": {"method": "POST", "url": "Nonsense"},
                   "resource": {"resourceType": "Nonsense"}}),
        ];
        for entry in untouched {
            let mut b = json!({"resourceType": "Bundle", "type": "batch", "entry": [entry]});
            assert!(!has_plain_creates(&b), "{b}");
            let before = b.clone();
            assert_eq!(ids(1, "c").apply(&mut b), 0);
            assert_eq!(b, before);
        }
        // A plain create in a batch, with an empty ifNoneExist (no condition) and an id the
        // server would have ignored.
        let mut b = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "POST", "url": "Patient", "ifNoneExist": ""},
             "resource": {"resourceType": "Patient", "id": "sent"}}]});
        assert!(has_plain_creates(&b));
        assert_eq!(ids(1, "c").apply(&mut b), 1);
        let id = ids(1, "c").id(0, "Patient");
        assert_eq!(
            b["entry"][0]["request"],
            json!({"method": "PUT", "url": format!("Patient/{id}")})
        );
        assert_eq!(b["entry"][0]["resource"]["id"], id.as_str());
        // Not a transaction or batch: left alone.
        let mut c = json!({"resourceType": "Bundle", "type": "collection", "entry": [
            {"request": {"method": "POST", "url": "Patient"}, "resource": {"resourceType": "Patient"}}]});
        assert!(!has_plain_creates(&c));
        assert_eq!(ids(1, "c").apply(&mut c), 0);
    }

    /// The embedded CDR writes the rewritten Bundle once however often it gets it, with the
    /// references to the Patient's fullUrl pointing at it.
    #[test]
    fn the_cdr_holds_each_resource_once_after_two_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let cdr = crate::cdr::Cdr::open(&dir.path().join("cdr"), 1 << 20).unwrap();
        let base = "http://orbiter/fhir";
        for _ in 0..2 {
            let mut b = bundle();
            ids(7, "fhir-bundle").apply(&mut b);
            let (status, body) = cdr.process_bundle(b, base);
            assert_eq!(status, 200, "{body}");
        }
        let search = |query: &str| {
            let r = cdr.handle(
                &crate::cdr::FhirRequest::new(crate::cdr::Method::Get, query, base),
                base,
            );
            r.body.unwrap()
        };
        for ty in ["Patient", "Observation", "Encounter"] {
            assert_eq!(search(ty)["total"], 1, "{ty}: {}", search(ty));
        }
        let patient_id = search("Patient")["entry"][0]["resource"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(patient_id, ids(7, "fhir-bundle").id(0, "Patient"));
        let subject = format!("Patient/{patient_id}");
        for ty in ["Observation", "Encounter"] {
            assert_eq!(
                search(ty)["entry"][0]["resource"]["subject"]["reference"],
                subject.as_str()
            );
        }
    }
}
