//! FHIR REST behaviours of the embedded CDR, through actix-web's test service over a temporary
//! store: CRUD, versions and history, `If-Match`, search parameters and prefixes, paging,
//! includes, transactions (urn:uuid, conditional create/update, replay, all-or-nothing),
//! batches, validation errors, and persistence across close/reopen.

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::HeaderMap;
use actix_web::test::{self, TestRequest};
use actix_web::{web, App};
use serde_json::{json, Value};

use super::{index, routes, Cdr, FhirRequest, FhirResponse, Method};

const BASE: &str = "http://localhost:8080/fhir";

struct Res {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Res {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// The ids of the `match` entries of a searchset.
    fn ids(&self) -> Vec<String> {
        entries(&self.body)
            .iter()
            .filter(|e| e["search"]["mode"] == "match")
            .filter_map(|e| e["resource"]["id"].as_str().map(str::to_string))
            .collect()
    }

    fn total(&self) -> u64 {
        self.body["total"].as_u64().unwrap_or(u64::MAX)
    }

    fn link(&self, relation: &str) -> Option<String> {
        self.body["link"]
            .as_array()?
            .iter()
            .find(|l| l["relation"] == relation)
            .and_then(|l| l["url"].as_str())
            .map(str::to_string)
    }
}

fn entries(v: &Value) -> Vec<Value> {
    v["entry"].as_array().cloned().unwrap_or_default()
}

fn rq(method: &str, uri: &str, body: Option<&Value>, headers: &[(&str, &str)]) -> TestRequest {
    let mut r = match method {
        "GET" => TestRequest::get(),
        "POST" => TestRequest::post(),
        "PUT" => TestRequest::put(),
        "DELETE" => TestRequest::delete(),
        "PATCH" => TestRequest::patch(),
        other => panic!("method {other}"),
    }
    .uri(&encode_uri(uri));
    if let Some(b) = body {
        r = r
            .insert_header(("content-type", "application/fhir+json"))
            .set_payload(serde_json::to_vec(b).unwrap());
    }
    for (k, v) in headers {
        r = r.insert_header((*k, *v));
    }
    r
}

/// Percent-encodes what a client would in the query part (non-ASCII, `|`, quotes, spaces).
fn encode_uri(uri: &str) -> String {
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, q),
        None => return uri.to_string(),
    };
    let mut out = format!("{path}?");
    for &b in query.as_bytes() {
        if b.is_ascii_alphanumeric() || b"=&,:/-._~+%".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn send<S, R, B>(app: &S, req: R) -> Res
where
    S: Service<R, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let resp = test::call_service(app, req).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = test::read_body(resp).await;
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("body not JSON ({e}): {bytes:?}"))
    };
    Res {
        status,
        headers,
        body,
    }
}

macro_rules! app {
    ($cdr:expr) => {
        test::init_service(
            App::new()
                .app_data(web::Data::new($cdr.clone()))
                .service(web::scope("/fhir").configure(routes)),
        )
        .await
    };
}

macro_rules! call {
    ($app:expr, $m:expr, $u:expr) => {
        send(&$app, rq($m, $u, None, &[]).to_request()).await
    };
    ($app:expr, $m:expr, $u:expr, $b:expr) => {
        send(&$app, rq($m, $u, Some(&$b), &[]).to_request()).await
    };
    ($app:expr, $m:expr, $u:expr, $b:expr, $h:expr) => {
        send(&$app, rq($m, $u, $b, $h).to_request()).await
    };
}

fn open() -> (tempfile::TempDir, Cdr) {
    let dir = tempfile::tempdir().unwrap();
    let cdr = Cdr::open(&dir.path().join("cdr"), 16 << 20).unwrap();
    (dir, cdr)
}

fn patient(family: &str, given: &str, gender: &str, birth: &str, mrn: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.2.36.146", "value": mrn}],
        "name": [{"family": family, "given": [given]}],
        "gender": gender,
        "birthDate": birth
    })
}

/// The id in a `Location`/`location` (`.../Type/id/_history/n`).
fn id_of(location: &str) -> String {
    let parts: Vec<&str> = location.split('/').collect();
    let h = parts.iter().rposition(|p| *p == "_history").unwrap();
    parts[h - 1].to_string()
}

fn outcome_codes(v: &Value) -> Vec<String> {
    assert_eq!(v["resourceType"], "OperationOutcome", "{v}");
    v["issue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap().to_string())
        .collect()
}

#[actix_web::test]
async fn metadata_tells_the_truth() {
    let (_d, cdr) = open();
    let app = app!(cdr);
    let r = call!(app, "GET", "/fhir/metadata");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/fhir+json"));
    assert_eq!(r.body["resourceType"], "CapabilityStatement");
    assert_eq!(r.body["fhirVersion"], "4.0.1");
    let rest = &r.body["rest"][0];
    let interactions: Vec<&str> = rest["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["code"].as_str().unwrap())
        .collect();
    assert_eq!(interactions, ["transaction", "batch"]);
    let resources = rest["resource"].as_array().unwrap();
    assert_eq!(resources.len(), 146);
    // Every advertised search parameter of the common types is accepted without a warning.
    for res in resources {
        let ty = res["type"].as_str().unwrap();
        if ![
            "Patient",
            "Observation",
            "Encounter",
            "MessageHeader",
            "Provenance",
            "Coverage",
        ]
        .contains(&ty)
        {
            continue;
        }
        for p in res["searchParam"].as_array().unwrap() {
            let name = p["name"].as_str().unwrap();
            let value = match p["type"].as_str().unwrap() {
                "date" => "ge2000-01-01",
                "reference" => "x",
                _ => "x",
            };
            let s = call!(app, "GET", &format!("/fhir/{ty}?{name}={value}"));
            assert_eq!(s.status, 200, "{ty}?{name}: {}", s.body);
            assert!(
                entries(&s.body)
                    .iter()
                    .all(|e| e["search"]["mode"] != "outcome"),
                "{ty}?{name} warned: {}",
                s.body
            );
        }
    }
    let patient = resources.iter().find(|r| r["type"] == "Patient").unwrap();
    let birthdate = patient["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "birthdate")
        .unwrap();
    assert_eq!(birthdate["type"], "date");
    assert_eq!(patient["conditionalCreate"], true);
    assert!(patient["interaction"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["code"] != "patch"));
}

#[actix_web::test]
async fn crud_vread_history_delete() {
    let (_d, cdr) = open();
    let app = app!(cdr);
    let mut p = patient("Smith", "John", "male", "1970-01-01", "1");
    p["id"] = json!("client-chosen"); // ignored on create
    let r = call!(app, "POST", "/fhir/Patient", p);
    assert_eq!(r.status, 201, "{}", r.body);
    let location = r.header("location").unwrap();
    assert!(
        location.starts_with(&format!("{BASE}/Patient/")) && location.ends_with("/_history/1"),
        "{location}"
    );
    let id = id_of(&location);
    assert_ne!(id, "client-chosen");
    assert_eq!(r.header("etag").unwrap(), "W/\"1\"");
    assert!(r.header("last-modified").unwrap().ends_with("GMT"));
    assert_eq!(r.body["id"], id.as_str());
    assert_eq!(r.body["meta"]["versionId"], "1");
    assert!(r.body["meta"]["lastUpdated"]
        .as_str()
        .unwrap()
        .ends_with('Z'));

    let g = call!(app, "GET", &format!("/fhir/Patient/{id}"));
    assert_eq!(g.status, 200);
    assert_eq!(g.header("etag").unwrap(), "W/\"1\"");
    assert_eq!(g.body, r.body);

    let mut changed = g.body.clone();
    changed["name"][0]["family"] = json!("Smyth");
    let u = call!(app, "PUT", &format!("/fhir/Patient/{id}"), changed);
    assert_eq!(u.status, 200);
    assert_eq!(u.header("etag").unwrap(), "W/\"2\"");
    assert_eq!(u.body["meta"]["versionId"], "2");

    // The same content again (with stale meta) creates no version.
    let again = call!(app, "PUT", &format!("/fhir/Patient/{id}"), changed);
    assert_eq!(again.status, 200);
    assert_eq!(again.header("etag").unwrap(), "W/\"2\"");

    let v1 = call!(app, "GET", &format!("/fhir/Patient/{id}/_history/1"));
    assert_eq!(v1.status, 200);
    assert_eq!(v1.body["name"][0]["family"], "Smith");
    assert_eq!(v1.header("etag").unwrap(), "W/\"1\"");
    assert_eq!(
        call!(app, "GET", &format!("/fhir/Patient/{id}/_history/3")).status,
        404
    );
    assert_eq!(
        call!(app, "GET", &format!("/fhir/Patient/{id}/_history/x")).status,
        404
    );

    let h = call!(app, "GET", &format!("/fhir/Patient/{id}/_history"));
    assert_eq!(h.status, 200);
    assert_eq!(h.body["type"], "history");
    assert_eq!(h.total(), 2);
    let versions: Vec<&str> = h.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["meta"]["versionId"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["2", "1"]);

    let del = call!(app, "DELETE", &format!("/fhir/Patient/{id}"));
    assert_eq!(del.status, 200);
    assert_eq!(del.header("etag").unwrap(), "W/\"3\"");
    assert_eq!(outcome_codes(&del.body), ["informational"]);
    let gone = call!(app, "GET", &format!("/fhir/Patient/{id}"));
    assert_eq!(gone.status, 410);
    assert_eq!(outcome_codes(&gone.body), ["deleted"]);
    assert_eq!(
        call!(app, "GET", &format!("/fhir/Patient/{id}/_history/3")).status,
        410
    );
    assert_eq!(
        call!(app, "GET", &format!("/fhir/Patient/{id}/_history/2")).status,
        200
    );
    // Deleting again writes nothing.
    assert_eq!(
        call!(app, "DELETE", &format!("/fhir/Patient/{id}")).status,
        200
    );
    let h = call!(app, "GET", &format!("/fhir/Patient/{id}/_history"));
    assert_eq!(h.total(), 3);
    assert_eq!(h.body["entry"][0]["request"]["method"], "DELETE");
    assert!(h.body["entry"][0].get("resource").is_none());
    // Deleted resources are not found by search.
    assert_eq!(call!(app, "GET", "/fhir/Patient?identifier=1").total(), 0);
    // Updating a deleted resource brings it back as a new version.
    let back = call!(app, "PUT", &format!("/fhir/Patient/{id}"), changed);
    assert_eq!(back.status, 201);
    assert_eq!(back.header("etag").unwrap(), "W/\"4\"");

    let missing = call!(app, "GET", "/fhir/Patient/nope");
    assert_eq!(missing.status, 404);
    assert_eq!(outcome_codes(&missing.body), ["not-found"]);
    assert_eq!(call!(app, "GET", "/fhir/Patient/nope/_history").status, 404);
}

#[actix_web::test]
async fn update_creates_with_client_id_and_checks_ids() {
    let (_d, cdr) = open();
    let app = app!(cdr);
    let mut p = patient("Doe", "Jane", "female", "1980", "2");
    p["id"] = json!("abc");
    let r = call!(app, "PUT", "/fhir/Patient/abc", p);
    assert_eq!(r.status, 201);
    assert_eq!(
        r.header("location").unwrap(),
        format!("{BASE}/Patient/abc/_history/1")
    );
    let mismatch = call!(app, "PUT", "/fhir/Patient/other", p);
    assert_eq!(mismatch.status, 400);
    let mut no_id = p.clone();
    no_id.as_object_mut().unwrap().remove("id");
    assert_eq!(call!(app, "PUT", "/fhir/Patient/abc", no_id).status, 400);
    assert_eq!(call!(app, "PUT", "/fhir/Observation/abc", p).status, 400);
    assert_eq!(call!(app, "GET", "/fhir/Patient/a_b").status, 400);
}

#[actix_web::test]
async fn if_match_and_prefer() {
    let (_d, cdr) = open();
    let app = app!(cdr);
    let mut p = patient("Lee", "Ann", "female", "1990", "3");
    p["id"] = json!("p3");
    assert_eq!(call!(app, "PUT", "/fhir/Patient/p3", p).status, 201);
    p["active"] = json!(true);
    let ok = call!(
        app,
        "PUT",
        "/fhir/Patient/p3",
        Some(&p),
        &[("If-Match", "W/\"1\"")]
    );
    assert_eq!(ok.status, 200);
    p["active"] = json!(false);
    let stale = call!(
        app,
        "PUT",
        "/fhir/Patient/p3",
        Some(&p),
        &[("If-Match", "W/\"1\"")]
    );
    assert_eq!(stale.status, 412);
    assert_eq!(outcome_codes(&stale.body), ["conflict"]);
    assert_eq!(call!(app, "GET", "/fhir/Patient/p3").body["active"], true);
    assert_eq!(
        call!(
            app,
            "DELETE",
            "/fhir/Patient/p3",
            None,
            &[("If-Match", "W/\"1\"")]
        )
        .status,
        412
    );
    assert_eq!(
        call!(
            app,
            "PUT",
            "/fhir/Patient/p3",
            Some(&p),
            &[("If-Match", "bogus")]
        )
        .status,
        400
    );

    let minimal = call!(
        app,
        "PUT",
        "/fhir/Patient/p3",
        Some(&p),
        &[("If-Match", "\"2\""), ("Prefer", "return=minimal")]
    );
    assert_eq!(minimal.status, 200);
    assert_eq!(minimal.body, Value::Null);
    assert_eq!(minimal.header("etag").unwrap(), "W/\"3\"");
    let oo = call!(
        app,
        "POST",
        "/fhir/Patient",
        Some(&patient("X", "Y", "other", "2000", "4")),
        &[("Prefer", "return=OperationOutcome")]
    );
    assert_eq!(oo.status, 201);
    assert_eq!(oo.body["resourceType"], "OperationOutcome");
}

/// Writes through the in-process API (what the HTTP handler calls).
fn write(cdr: &Cdr, method: Method, url: &str, body: Value) -> FhirResponse {
    let mut req = FhirRequest::new(method, url, BASE);
    req.body = Some(body);
    cdr.handle(&req, BASE)
}

/// Patients, encounters and observations for the search tests; returns the patient ids.
fn seed(cdr: &Cdr) -> Vec<String> {
    let people = [
        ("Müller", "Zoë", "female", "1980-05-17", "100"),
        ("Mueller", "Hans", "male", "1980-12-31", "101"),
        ("Smith", "John", "male", "1975", "102"),
        ("Smithson", "Ann", "female", "2001-02-03", "103"),
        ("O'Brien", "Seán", "male", "1990-07", "104"),
    ];
    let mut ids = Vec::new();
    for (f, g, s, b, mrn) in people {
        let r = write(cdr, Method::Post, "Patient", patient(f, g, s, b, mrn));
        assert_eq!(r.status, 201, "{:?}", r.body);
        ids.push(r.body.unwrap()["id"].as_str().unwrap().to_string());
    }
    // An identifier without a system, and one in another system.
    let mut p = patient("Nosys", "Nina", "unknown", "1960-01-01", "X1");
    p["identifier"] = json!([{"value": "X1"}, {"system": "http://other", "value": "100"}]);
    let r = write(cdr, Method::Post, "Patient", p);
    ids.push(r.body.unwrap()["id"].as_str().unwrap().to_string());

    let enc = json!({"resourceType": "Encounter", "id": "e1", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": format!("Patient/{}", ids[0])},
        "period": {"start": "2021-03-01T10:00:00Z", "end": "2021-03-05T10:00:00Z"}});
    assert_eq!(write(cdr, Method::Put, "Encounter/e1", enc).status, 201);
    // Open-ended: still in progress since 2019.
    let open = json!({"resourceType": "Encounter", "id": "e2", "status": "in-progress",
        "class": {"code": "AMB"}, "subject": {"reference": format!("Patient/{}", ids[1])},
        "period": {"start": "2019-01-01"}});
    assert_eq!(write(cdr, Method::Put, "Encounter/e2", open).status, 201);
    let obs = |id: &str, pid: &str, code: &str, status: &str, when: Value| {
        let mut o = json!({"resourceType": "Observation", "id": id, "status": status,
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": format!("Patient/{pid}")}});
        if id != "o4" {
            o["encounter"] = json!({"reference": "Encounter/e1"});
        }
        let obj = o.as_object_mut().unwrap();
        for (k, v) in when.as_object().unwrap() {
            obj.insert(k.clone(), v.clone());
        }
        o
    };
    for o in [
        obs(
            "o1",
            &ids[0],
            "8867-4",
            "final",
            json!({"effectiveDateTime": "2021-03-02T08:00:00Z"}),
        ),
        obs(
            "o2",
            &ids[0],
            "8310-5",
            "preliminary",
            json!({"effectiveDateTime": "2021-03-03"}),
        ),
        obs(
            "o3",
            &ids[0],
            "8867-4",
            "final",
            json!({"effectivePeriod": {"start": "2021-03-04T00:00:00Z", "end": "2021-03-04T06:00:00Z"}}),
        ),
        obs(
            "o4",
            &ids[2],
            "8867-4",
            "amended",
            json!({"effectiveDateTime": "2022-01-01T00:00:00+02:00"}),
        ),
    ] {
        let url = format!("Observation/{}", o["id"].as_str().unwrap());
        let r = write(cdr, Method::Put, &url, o);
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    ids
}

#[actix_web::test]
async fn search_parameters() {
    let (_d, cdr) = open();
    let app = app!(cdr);
    let ids = seed(&cdr);
    let search = |q: &str| format!("/fhir/{q}");
    let found = |r: &Res| {
        let mut v = r.ids();
        v.sort();
        v
    };
    let pids = |idx: &[usize]| {
        let mut v: Vec<String> = idx.iter().map(|&i| ids[i].clone()).collect();
        v.sort();
        v
    };
    macro_rules! expect {
        ($q:expr, $want:expr) => {{
            let r = call!(app, "GET", &search($q));
            assert_eq!(r.status, 200, "{}: {}", $q, r.body);
            assert_eq!(r.body["type"], "searchset");
            let want: Vec<String> = $want;
            assert_eq!(found(&r), want, "{}", $q);
            assert_eq!(r.total() as usize, want.len(), "{}", $q);
        }};
    }
    let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();

    expect!(&format!("Patient?_id={}", ids[1]), pids(&[1]));
    expect!(&format!("Patient?_id={},{}", ids[1], ids[3]), pids(&[1, 3]));
    expect!(
        "Patient?_lastUpdated=gt2020-01-01",
        pids(&[0, 1, 2, 3, 4, 5])
    );
    expect!("Patient?_lastUpdated=lt2020-01-01", vec![]);
    // identifier: system|value, |value, system|, value alone.
    expect!("Patient?identifier=urn:oid:1.2.36.146|100", pids(&[0]));
    expect!("Patient?identifier=100", pids(&[0, 5]));
    expect!("Patient?identifier=|X1", pids(&[5]));
    expect!("Patient?identifier=|100", vec![]);
    expect!("Patient?identifier=http://other|", pids(&[5]));
    expect!(
        "Patient?identifier=urn:oid:1.2.36.146|",
        pids(&[0, 1, 2, 3, 4])
    );
    expect!(
        "Patient?identifier=urn:oid:1.2.36.146|100,urn:oid:1.2.36.146|104",
        pids(&[0, 4])
    );
    // string: case- and accent-insensitive starts-with; :exact; :contains.
    expect!("Patient?family=muller", pids(&[0]));
    expect!("Patient?family=MÜL", pids(&[0]));
    expect!("Patient?family=mu", pids(&[0, 1]));
    expect!("Patient?family:exact=Müller", pids(&[0]));
    expect!("Patient?family:exact=muller", vec![]);
    expect!("Patient?family:contains=ITH", pids(&[2, 3]));
    expect!("Patient?given=zoe", pids(&[0]));
    expect!("Patient?given=sean", pids(&[4]));
    // family and given are answered from name's keys, checked on the resources: a given name
    // does not match a family search, nor the other way round.
    expect!("Patient?family=john", vec![]);
    expect!("Patient?given=smith", vec![]);
    expect!("Patient?given:contains=AN", pids(&[1, 3, 4]));
    expect!("Patient?name=smith", pids(&[2, 3]));
    expect!("Patient?name=john", pids(&[2]));
    expect!("Patient?name=o'b", pids(&[4]));
    // date with prefixes and partial dates.
    expect!("Patient?birthdate=1980", pids(&[0, 1]));
    expect!("Patient?birthdate=eq1980-05", pids(&[0]));
    expect!("Patient?birthdate=1980-05-17", pids(&[0]));
    expect!("Patient?birthdate=ge1980-06-01", pids(&[1, 3, 4]));
    expect!("Patient?birthdate=gt1990", pids(&[3]));
    expect!("Patient?birthdate=lt1976", pids(&[2, 5]));
    expect!("Patient?birthdate=le1975-06", pids(&[2, 5]));
    expect!("Patient?birthdate=ne1980", pids(&[2, 3, 4, 5]));
    expect!("Patient?birthdate=sa1990-07-15", pids(&[3]));
    expect!("Patient?birthdate=eb1970", pids(&[5]));
    expect!("Patient?birthdate=ge1980&birthdate=lt1981", pids(&[0, 1]));
    // token.
    expect!("Patient?gender=female", pids(&[0, 3]));
    // A code element's required binding is its system: with it, the same matches; with
    // another, none.
    expect!(
        "Patient?gender=http://hl7.org/fhir/administrative-gender|female",
        pids(&[0, 3])
    );
    expect!("Patient?gender=http://example.org/sex|female", pids(&[]));
    expect!("Patient?gender=male,unknown", pids(&[1, 2, 4, 5]));
    expect!("Patient?gender:not=male", pids(&[0, 3, 5]));
    expect!("Patient?gender=female&family=mu", pids(&[0]));
    expect!("Patient?birthdate:missing=false&gender=unknown", pids(&[5]));
    // references: Type/id, bare id, :Type, patient, absolute URL of this server.
    expect!(
        &format!("Observation?subject=Patient/{}", ids[0]),
        strs(&["o1", "o2", "o3"])
    );
    expect!(&format!("Observation?subject={}", ids[2]), strs(&["o4"]));
    expect!(
        &format!("Observation?subject:Patient={}", ids[2]),
        strs(&["o4"])
    );
    expect!(
        &format!("Observation?patient={}", ids[0]),
        strs(&["o1", "o2", "o3"])
    );
    expect!(
        &format!("Observation?patient={BASE}/Patient/{}", ids[2]),
        strs(&["o4"])
    );
    expect!(
        &format!("Encounter?patient=Patient/{}", ids[0]),
        strs(&["e1"])
    );
    expect!(
        "Observation?encounter=Encounter/e1",
        strs(&["o1", "o2", "o3"])
    );
    expect!("Observation?encounter:missing=true", strs(&["o4"]));
    // code, status, date on Observation and Encounter.
    expect!(
        "Observation?code=http://loinc.org|8867-4",
        strs(&["o1", "o3", "o4"])
    );
    expect!("Observation?code=8310-5", strs(&["o2"]));
    expect!("Observation?code=http://snomed.info/sct|8867-4", vec![]);
    expect!("Observation?status=final", strs(&["o1", "o3"]));
    expect!(
        "Observation?status=http://hl7.org/fhir/observation-status|final",
        strs(&["o1", "o3"])
    );
    expect!(
        "Observation?status=final,amended&code=8867-4",
        strs(&["o1", "o3", "o4"])
    );
    expect!("Observation?date=2021-03-03", strs(&["o2"]));
    expect!("Observation?date=2021-03", strs(&["o1", "o2", "o3"]));
    expect!("Observation?date=ge2021-03-03", strs(&["o2", "o3", "o4"]));
    expect!("Observation?date=lt2021-03-03", strs(&["o1"]));
    expect!("Observation?date=gt2021-12-31T21:00:00Z", strs(&["o4"]));
    expect!("Observation?date=gt2021-12-31T23:00:00Z", vec![]);
    expect!("Observation?date=2021-12-31", strs(&["o4"])); // +02:00 is 2021-12-31T22:00Z
    expect!("Encounter?date=2021-03-02", vec![]);
    expect!("Encounter?date=ge2021-03-02", strs(&["e1", "e2"]));
    expect!("Encounter?date=le2021-03-02", strs(&["e1", "e2"]));
    expect!("Encounter?date=gt2030-01-01", strs(&["e2"]));
    expect!("Encounter?date=ge2030", strs(&["e2"]));
    expect!("Encounter?date=sa2020", strs(&["e1"]));
    expect!("Encounter?date=eb2022", strs(&["e1"]));
    expect!("Encounter?date=eb2021-03-05", vec![]);
    expect!("Encounter?date=lt2020", strs(&["e2"]));
    expect!("Encounter?status=finished&class=IMP", strs(&["e1"]));
    // no parameters: everything.
    expect!("Observation", strs(&["o1", "o2", "o3", "o4"]));
}

#[actix_web::test]
async fn search_errors_and_unknown_parameters() {
    let (_d, cdr) = open();
    let app = app!(cdr);
    seed(&cdr);
    // Lenient by default: ignored, with a warning entry; not in the self link.
    let r = call!(app, "GET", "/fhir/Patient?foo=bar&gender=male");
    assert_eq!(r.status, 200);
    assert_eq!(r.total(), 3);
    let outcome = entries(&r.body)
        .into_iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .unwrap();
    assert_eq!(outcome["resource"]["issue"][0]["severity"], "warning");
    assert!(outcome["resource"]["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("foo"));
    let self_link = r.link("self").unwrap();
    assert!(
        self_link.contains("gender=male") && !self_link.contains("foo"),
        "{self_link}"
    );
    // Strict on request.
    let strict = call!(
        app,
        "GET",
        "/fhir/Patient?foo=bar",
        None,
        &[("Prefer", "handling=strict")]
    );
    assert_eq!(strict.status, 400);
    assert_eq!(outcome_codes(&strict.body), ["invalid"]);
    for bad in [
        "/fhir/Patient?birthdate=19800101",
        "/fhir/Patient?birthdate=xx2020",
        "/fhir/Patient?family:fuzzy=x",
        "/fhir/Patient?_count=many",
        "/fhir/Observation?subject=Nope/1",
        "/fhir/Patient?_sort=nope",
    ] {
        assert_eq!(call!(app, "GET", bad).status, 400, "{bad}");
    }
    assert_eq!(call!(app, "GET", "/fhir/Nope?x=1").status, 404);
    // _summary=count and _count=0 give the total only.
    let c = call!(app, "GET", "/fhir/Patient?_summary=count");
    assert_eq!(c.total(), 6);
    assert!(c.body.get("entry").is_none());
    // POST _search with a form body.
    let form = TestRequest::post()
        .uri("/fhir/Patient/_search")
        .insert_header(("content-type", "application/x-www-form-urlencoded"))
        .set_payload("gender=female&family=m%C3%BC")
        .to_request();
    let r = send(&app, form).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.total(), 1);
}

#[actix_web::test]
async fn paging_follows_links_to_the_end() {
    let (_d, cdr) = open();
    let app = app!(cdr);
    for i in 0..45 {
        let r = call!(
            app,
            "POST",
            "/fhir/Patient",
            patient(
                "Pager",
                &format!("G{i}"),
                "other",
                "2000",
                &format!("pg{i}")
            )
        );
        assert_eq!(r.status, 201);
    }
    call!(
        app,
        "POST",
        "/fhir/Patient",
        patient("Other", "X", "other", "2000", "zz")
    );
    let mut url = "/fhir/Patient?family=pager&_count=10".to_string();
    let mut seen = std::collections::HashSet::new();
    let mut pages = 0;
    loop {
        let r = call!(app, "GET", &url);
        assert_eq!(r.status, 200, "{url}: {}", r.body);
        assert_eq!(r.total(), 45);
        pages += 1;
        if pages == 2 {
            assert!(r.link("previous").is_some());
        }
        for id in r.ids() {
            assert!(seen.insert(id), "an id appeared on two pages");
        }
        match r.link("next") {
            Some(next) => {
                assert!(next.starts_with(BASE), "{next}");
                assert!(next.contains("family=pager"), "{next}");
                url = next.trim_start_matches("http://localhost:8080").to_string();
            }
            None => {
                assert_eq!(r.ids().len(), 5);
                assert!(r.link("last").unwrap().contains("_offset=40"));
                break;
            }
        }
        assert!(pages < 10);
    }
    assert_eq!(pages, 5);
    assert_eq!(seen.len(), 45);
    // _sort, descending, by a string parameter.
    let sorted = call!(
        app,
        "GET",
        "/fhir/Patient?_sort=-given&_count=3&family=pager"
    );
    let givens: Vec<String> = entries(&sorted.body)
        .iter()
        .map(|e| {
            e["resource"]["name"][0]["given"][0]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(givens, ["G9", "G8", "G7"]);
}

#[actix_web::test]
async fn name_and_address_parts_are_searched_through_the_whole_elements_keys() {
    let (_d, cdr) = open();
    let app = app!(cdr);
    let a = json!({"resourceType": "Patient", "name": [{"given": ["Carter"]}],
        "address": [{"line": ["1 Rue Boston"], "city": "Paris", "postalCode": "75001"}]});
    let b = json!({"resourceType": "Patient", "name": [{"family": "Carter", "given": ["Ann"]}],
        "address": [{"city": "Boston", "postalCode": "02101"}]});
    let a = write(&cdr, Method::Post, "Patient", a).body.unwrap()["id"].clone();
    let b = write(&cdr, Method::Post, "Patient", b).body.unwrap()["id"].clone();
    let (a, b) = (a.as_str().unwrap(), b.as_str().unwrap());
    macro_rules! found {
        ($q:expr) => {{
            let r = call!(app, "GET", &format!("/fhir/Patient?{}", $q));
            assert_eq!(r.status, 200, "{}: {}", $q, r.body);
            let mut ids = r.ids();
            ids.sort();
            ids
        }};
    }
    let both = {
        let mut v = vec![a.to_string(), b.to_string()];
        v.sort();
        v
    };
    assert_eq!(found!("family=carter"), [b]);
    assert_eq!(found!("given=carter"), [a]);
    assert_eq!(found!("name=carter"), both);
    assert_eq!(found!("family:missing=true"), [a]);
    assert_eq!(found!("family:missing=false"), [b]);
    assert_eq!(found!("address-city=boston"), [b]);
    assert_eq!(found!("address:contains=boston"), both);
    assert_eq!(found!("address-postalcode=75"), [a]);
    assert_eq!(found!("address-postalcode:exact=02101"), [b]);
    // No keys of their own...
    for (id, r) in [(a, &cdr.read("Patient", a)), (b, &cdr.read("Patient", b))] {
        let r = r.as_ref().unwrap().as_ref().unwrap();
        let keys = index::entries("Patient", id, r);
        for part in ["family", "given", "address-city", "address-postalcode"] {
            let prefix = index::param_prefix("Patient", part);
            assert!(!keys.keys().any(|k| k.starts_with(&prefix)), "{part}");
        }
    }
    // ...and sorting by them still works (a Patient without a family last).
    let sorted = call!(app, "GET", "/fhir/Patient?_sort=family,_id");
    assert_eq!(sorted.ids(), [b, a]);
    let sorted = call!(app, "GET", "/fhir/Patient?_sort=-given");
    assert_eq!(sorted.ids(), [a, b]);
}

#[actix_web::test]
async fn include_and_revinclude() {
    let (_d, cdr) = open();
    let app = app!(cdr);
    let ids = seed(&cdr);
    let r = call!(
        app,
        "GET",
        "/fhir/Observation?code=8310-5&_include=Observation:subject"
    );
    assert_eq!(r.total(), 1);
    let inc: Vec<Value> = entries(&r.body)
        .into_iter()
        .filter(|e| e["search"]["mode"] == "include")
        .collect();
    assert_eq!(inc.len(), 1);
    assert_eq!(inc[0]["resource"]["id"], ids[0].as_str());
    assert_eq!(inc[0]["fullUrl"], format!("{BASE}/Patient/{}", ids[0]));
    let rev = call!(
        app,
        "GET",
        &format!(
            "/fhir/Patient?_id={}&_revinclude=Observation:subject",
            ids[0]
        )
    );
    assert_eq!(rev.total(), 1);
    let mut inc: Vec<String> = entries(&rev.body)
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect();
    inc.sort();
    assert_eq!(inc, ["o1", "o2", "o3"]);
    let rev = call!(
        app,
        "GET",
        &format!(
            "/fhir/Patient?_id={}&_revinclude=Observation:patient&_revinclude=Encounter:subject",
            ids[0]
        )
    );
    assert_eq!(entries(&rev.body).len(), 5);
    // `patient` only means Patients, `subject` any type.
    assert_eq!(
        call!(app, "GET", "/fhir/Observation?patient=Group/1").status,
        400
    );
    assert_eq!(
        call!(app, "GET", "/fhir/Observation?subject=Group/1").status,
        200
    );
    let group_obs = json!({"resourceType": "Observation", "id": "o5", "status": "final",
        "code": {"text": "x"}, "subject": {"reference": "Group/g1"}});
    assert_eq!(
        call!(app, "PUT", "/fhir/Observation/o5", group_obs).status,
        201
    );
    assert_eq!(
        call!(app, "GET", "/fhir/Observation?patient:missing=true").ids(),
        ["o5"]
    );
    assert_eq!(
        call!(app, "GET", "/fhir/Observation?subject:missing=true").total(),
        0
    );
    assert_eq!(
        call!(app, "GET", "/fhir/Observation?patient:missing=false").total(),
        4
    );
    assert_eq!(
        call!(app, "GET", "/fhir/Observation?subject=g1").ids(),
        ["o5"]
    );
}

#[actix_web::test]
async fn indexes_follow_updates_and_deletes() {
    let (_d, cdr) = open();
    let app = app!(cdr);
    let mut p = patient("Before", "A", "male", "1999", "ix1");
    p["id"] = json!("ix");
    call!(app, "PUT", "/fhir/Patient/ix", p);
    p["name"][0]["family"] = json!("After");
    p["birthDate"] = json!("2001");
    call!(app, "PUT", "/fhir/Patient/ix", p);
    assert_eq!(call!(app, "GET", "/fhir/Patient?family=before").total(), 0);
    assert_eq!(call!(app, "GET", "/fhir/Patient?birthdate=1999").total(), 0);
    assert_eq!(
        call!(app, "GET", "/fhir/Patient?family=after&birthdate=2001").total(),
        1
    );
    call!(app, "DELETE", "/fhir/Patient/ix");
    assert_eq!(call!(app, "GET", "/fhir/Patient?family=after").total(), 0);
    assert_eq!(call!(app, "GET", "/fhir/Patient?identifier=ix1").total(), 0);
    assert_eq!(call!(app, "GET", "/fhir/Patient").total(), 0);
    // A resource larger than one storage chunk round-trips and is indexed.
    let mut big = patient("Large", "L", "female", "1950", "big");
    big["text"] = json!({"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{}</div>", "x".repeat(20_000))});
    let r = call!(app, "POST", "/fhir/Patient", big);
    let id = r.body["id"].as_str().unwrap().to_string();
    let g = call!(app, "GET", &format!("/fhir/Patient/{id}"));
    assert_eq!(g.body["text"], big["text"]);
    assert_eq!(call!(app, "GET", "/fhir/Patient?family=large").ids(), [id]);
}

/// A transaction as a channel would send it: a Patient, its Encounter and Observations, all
/// conditional creates linked by urn:uuid, plus a conditional update of the Organization.
fn adt_bundle(mrn: &str, n_obs: usize) -> Value {
    let pu = "urn:uuid:11111111-1111-4111-8111-111111111111";
    let eu = "urn:uuid:22222222-2222-4222-8222-222222222222";
    let mut entry = vec![
        json!({"fullUrl": pu, "resource": {"resourceType": "Patient",
            "identifier": [{"system": "urn:mrn", "value": mrn}],
            "name": [{"family": "Trans", "given": ["Action"]}], "gender": "female", "birthDate": "1984-02-29",
            "managingOrganization": {"reference": "Organization?identifier=urn:org|ORG1"}},
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": format!("identifier=urn:mrn|{mrn}")}}),
        json!({"fullUrl": eu, "resource": {"resourceType": "Encounter", "status": "in-progress",
            "identifier": [{"system": "urn:visit", "value": format!("V{mrn}")}],
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": pu}, "period": {"start": "2024-01-01T10:00:00Z"}},
            "request": {"method": "POST", "url": "Encounter", "ifNoneExist": format!("identifier=urn:visit|V{mrn}")}}),
    ];
    for i in 0..n_obs {
        entry.push(json!({"fullUrl": format!("urn:uuid:33333333-3333-4333-8333-{i:012}"),
            "resource": {"resourceType": "Observation", "status": "final",
                "identifier": [{"system": "urn:obs", "value": format!("{mrn}-{i}")}],
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": pu}, "encounter": {"reference": eu},
                "effectiveDateTime": "2024-01-01T10:05:00Z", "valueQuantity": {"value": 60 + i, "unit": "/min"}},
            "request": {"method": "POST", "url": "Observation", "ifNoneExist": format!("identifier=urn:obs|{mrn}-{i}")}}));
    }
    // Listed last, processed before the Patient that references it conditionally? No: POSTs
    // come before PUTs, so the Organization must already exist (created by the test first).
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entry})
}

#[actix_web::test]
async fn transaction_links_in_uri_elements_and_the_narrative_name_the_written_resources() {
    let (_d, cdr) = open();
    let app = app!(cdr);
    let obs = "urn:uuid:aaaaaaaa-0000-4000-8000-000000000002";
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": obs, "request": {"method": "POST", "url": "Observation"},
         "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "t"},
            "text": {"status": "generated",
                "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\"><a href=\"{obs}\">x</a></div>")}}},
        {"request": {"method": "POST", "url": "DocumentReference"},
         "resource": {"resourceType": "DocumentReference", "status": "current",
            "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": obs},
            "content": [{"attachment": {"url": obs}}]}}
    ]});
    let r = call!(app, "POST", "/fhir", bundle);
    assert_eq!(r.status, 200, "{}", r.body);
    let es = entries(&r.body);
    let location = |e: &Value| {
        let l = e["response"]["location"].as_str().unwrap();
        l[..l.find("/_history").unwrap()].to_string()
    };
    let obs_path = location(&es[0]);
    let obs_rel = obs_path[obs_path.find("Observation/").unwrap()..].to_string();
    let doc = call!(
        app,
        "GET",
        &format!(
            "/fhir/{}",
            &location(&es[1])[location(&es[1]).find("DocumentReference/").unwrap()..]
        )
    );
    assert_eq!(
        doc.body["content"][0]["attachment"]["url"],
        obs_rel.as_str(),
        "{}",
        doc.body
    );
    // An identifier's value is a string, not a link: kept as sent.
    assert_eq!(doc.body["masterIdentifier"]["value"], obs, "{}", doc.body);
    let o = call!(app, "GET", &format!("/fhir/{obs_rel}"));
    let div = o.body["text"]["div"].as_str().unwrap();
    assert!(div.contains(&format!("href=\"{obs_rel}\"")), "{div}");
}

/// A `PUT Type/id` entry's fullUrl resolves like a create's: in references, in a link, and in
/// the criteria of a conditional create listed before it (the engine's CDR destinations send
/// unconditional creates as such updates). Sent twice, it writes each resource once.
#[actix_web::test]
async fn a_put_entrys_full_url_resolves_everywhere_a_creates_does() {
    let (_d, cdr) = open();
    let app = app!(cdr);
    let pu = "urn:uuid:55555555-5555-4555-8555-555555555555";
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:55555555-5555-4555-8555-000000000001",
         "resource": {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
            "identifier": [{"system": "urn:visit", "value": "V1"}], "subject": {"reference": pu}},
         "request": {"method": "POST", "url": "Encounter",
            "ifNoneExist": format!("identifier=urn:visit|V1&subject={pu}")}},
        {"resource": {"resourceType": "DocumentReference", "status": "current",
            "content": [{"attachment": {"url": pu}}], "subject": {"reference": pu}},
         "request": {"method": "PUT", "url": "DocumentReference/d1"}},
        {"fullUrl": pu, "resource": {"resourceType": "Patient", "id": "p1"},
         "request": {"method": "PUT", "url": "Patient/p1"}}
    ]});
    for round in 0..2 {
        let mut b = bundle.clone();
        b["entry"][1]["resource"]["id"] = json!("d1");
        let r = call!(app, "POST", "/fhir", b);
        assert_eq!(r.status, 200, "round {round}: {}", r.body);
    }
    let found = call!(app, "GET", "/fhir/Encounter?subject=Patient/p1");
    assert_eq!(found.total(), 1, "{}", found.body);
    let doc = call!(app, "GET", "/fhir/DocumentReference/d1");
    assert_eq!(doc.body["subject"]["reference"], "Patient/p1");
    assert_eq!(doc.body["content"][0]["attachment"]["url"], "Patient/p1");
}

#[actix_web::test]
async fn transaction_resolves_urn_uuids_and_replays_idempotently() {
    let (_d, cdr) = open();
    let app = app!(cdr);
    let org = json!({"resourceType": "Organization", "identifier": [{"system": "urn:org", "value": "ORG1"}], "name": "Hospital"});
    let r = call!(
        app,
        "PUT",
        "/fhir/Organization?identifier=urn:org|ORG1",
        org
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let org_id = r.body["id"].as_str().unwrap().to_string();
    let r = call!(
        app,
        "PUT",
        "/fhir/Organization?identifier=urn:org|ORG1",
        org
    );
    assert_eq!(
        (r.status, r.header("etag").unwrap()),
        (200, "W/\"1\"".to_string())
    );

    let bundle = adt_bundle("M1", 3);
    let r = call!(app, "POST", "/fhir", bundle);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["type"], "transaction-response");
    let es = entries(&r.body);
    assert_eq!(es.len(), 5);
    for e in &es {
        assert_eq!(e["response"]["status"], "201 Created", "{e}");
        assert!(e["response"]["location"]
            .as_str()
            .unwrap()
            .ends_with("/_history/1"));
        assert_eq!(e["response"]["etag"], "W/\"1\"");
        assert!(e["response"]["lastModified"].is_string());
        assert!(e.get("resource").is_none(), "minimal by default");
    }
    let pid = id_of(es[0]["response"]["location"].as_str().unwrap());
    let eid = id_of(es[1]["response"]["location"].as_str().unwrap());
    assert_eq!(es[0]["fullUrl"], format!("{BASE}/Patient/{pid}"));
    let oid = id_of(es[2]["response"]["location"].as_str().unwrap());
    let obs = call!(app, "GET", &format!("/fhir/Observation/{oid}"));
    assert_eq!(obs.body["subject"]["reference"], format!("Patient/{pid}"));
    assert_eq!(
        obs.body["encounter"]["reference"],
        format!("Encounter/{eid}")
    );
    let pat = call!(app, "GET", &format!("/fhir/Patient/{pid}"));
    assert_eq!(
        pat.body["managingOrganization"]["reference"],
        format!("Organization/{org_id}")
    );
    assert_eq!(
        call!(
            app,
            "GET",
            &format!("/fhir/Observation?patient={pid}&encounter={eid}")
        )
        .total(),
        3
    );

    // Replay through the in-process API: nothing new, no new versions.
    let (status, replay) = cdr.process_bundle(bundle.clone(), BASE);
    assert_eq!(status, 200, "{replay}");
    for (a, b) in entries(&replay).iter().zip(&es) {
        assert_eq!(a["response"]["status"], "200 OK", "{a}");
        assert_eq!(a["response"]["location"], b["response"]["location"]);
        assert_eq!(a["response"]["etag"], "W/\"1\"");
    }
    assert_eq!(call!(app, "GET", "/fhir/Patient").total(), 1);
    assert_eq!(call!(app, "GET", "/fhir/Observation").total(), 3);
    assert_eq!(
        call!(app, "GET", &format!("/fhir/Patient/{pid}/_history")).total(),
        1
    );

    // The same message as conditional updates: replays change nothing either.
    let mut upd = bundle.clone();
    for e in upd["entry"].as_array_mut().unwrap() {
        let crit = e["request"]["ifNoneExist"].as_str().unwrap().to_string();
        let ty = e["request"]["url"].as_str().unwrap().to_string();
        e["request"] = json!({"method": "PUT", "url": format!("{ty}?{crit}")});
    }
    for round in 0..2 {
        let (status, r) = cdr.process_bundle(upd.clone(), BASE);
        assert_eq!(status, 200, "{r}");
        for e in entries(&r) {
            assert_eq!(e["response"]["status"], "200 OK", "round {round}: {e}");
            assert_eq!(e["response"]["etag"], "W/\"1\"", "round {round}: {e}");
        }
    }
    // A changed value makes exactly one new version of that Observation.
    upd["entry"][2]["resource"]["valueQuantity"]["value"] = json!(99);
    let (_, r) = cdr.process_bundle(upd.clone(), BASE);
    assert_eq!(entries(&r)[2]["response"]["etag"], "W/\"2\"");
    assert_eq!(entries(&r)[0]["response"]["etag"], "W/\"1\"");
    assert_eq!(
        call!(app, "GET", &format!("/fhir/Observation/{oid}/_history")).total(),
        2
    );

    // Conditional update with several matches is a 412; with none it creates.
    call!(
        app,
        "POST",
        "/fhir/Patient",
        patient("Dup", "A", "male", "2000", "dup")
    );
    call!(
        app,
        "POST",
        "/fhir/Patient",
        patient("Dup", "B", "male", "2000", "dup")
    );
    let p = patient("Dup", "C", "male", "2000", "dup");
    assert_eq!(
        call!(app, "PUT", "/fhir/Patient?identifier=dup", p).status,
        412
    );
    let c = call!(
        app,
        "POST",
        "/fhir/Patient",
        Some(&p),
        &[("If-None-Exist", "identifier=dup")]
    );
    assert_eq!(c.status, 412);
    let c = call!(
        app,
        "POST",
        "/fhir/Patient",
        Some(&p),
        &[("If-None-Exist", "identifier=urn:mrn|M1")]
    );
    assert_eq!(
        (c.status, c.body["id"].as_str().unwrap()),
        (200, pid.as_str())
    );
    assert_eq!(
        call!(
            app,
            "PUT",
            "/fhir/Patient?identifier=fresh",
            patient("F", "F", "male", "2000", "fresh")
        )
        .status,
        201
    );
    // In a transaction too: no match creates (201, a new id), and the same entry again
    // finds what it created.
    let fresh = json!({"resourceType": "Bundle", "type": "transaction", "entry": [{
        "resource": patient("G", "G", "female", "2001", "bfresh"),
        "request": {"method": "PUT", "url": "Patient?identifier=bfresh"}
    }]});
    let (status, r) = cdr.process_bundle(fresh.clone(), BASE);
    assert_eq!(status, 200, "{r}");
    assert_eq!(entries(&r)[0]["response"]["status"], "201 Created", "{r}");
    let created = id_of(entries(&r)[0]["response"]["location"].as_str().unwrap());
    let (_, again) = cdr.process_bundle(fresh, BASE);
    assert_eq!(
        entries(&again)[0]["response"]["status"],
        "200 OK",
        "{again}"
    );
    assert_eq!(
        id_of(entries(&again)[0]["response"]["location"].as_str().unwrap()),
        created
    );
    assert_eq!(
        call!(app, "GET", "/fhir/Patient?identifier=bfresh").total(),
        1
    );
    // Conditional delete.
    assert_eq!(
        call!(app, "DELETE", "/fhir/Patient?identifier=dup").status,
        412
    );
    assert_eq!(
        call!(app, "DELETE", "/fhir/Patient?identifier=fresh").status,
        200
    );
    assert_eq!(
        call!(app, "GET", "/fhir/Patient?identifier=fresh").total(),
        0
    );
    // Criteria with unknown parameters are refused, not widened.
    assert_eq!(
        call!(app, "PUT", "/fhir/Patient?idnetifier=dup", p).status,
        400
    );
}

#[actix_web::test]
async fn transaction_is_all_or_nothing() {
    let (_d, cdr) = open();
    let app = app!(cdr);
    let mut bundle = adt_bundle("M2", 2);
    // Drop the conditional Organization reference (no Organization exists here).
    bundle["entry"][0]["resource"]
        .as_object_mut()
        .unwrap()
        .remove("managingOrganization");
    bundle["entry"][3]["resource"]["effectiveDateTime"] = json!("2024-13-01");
    let r = call!(app, "POST", "/fhir", bundle);
    assert_eq!(r.status, 400, "{}", r.body);
    let issue = &r.body["issue"][0];
    assert_eq!(issue["code"], "value");
    assert_eq!(
        issue["expression"][0],
        "Bundle.entry[3].resource.effectiveDateTime"
    );
    for ty in ["Patient", "Encounter", "Observation"] {
        assert_eq!(
            call!(app, "GET", &format!("/fhir/{ty}")).total(),
            0,
            "{ty} written"
        );
    }
    // A 412 in the middle (ifNoneExist matching two) also leaves nothing.
    call!(
        app,
        "POST",
        "/fhir/Encounter",
        json!({"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}, "identifier": [{"system": "urn:visit", "value": "VM2"}]})
    );
    call!(
        app,
        "POST",
        "/fhir/Encounter",
        json!({"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}, "identifier": [{"system": "urn:visit", "value": "VM2"}]})
    );
    let mut ok = adt_bundle("M2", 2);
    ok["entry"][0]["resource"]
        .as_object_mut()
        .unwrap()
        .remove("managingOrganization");
    let r = call!(app, "POST", "/fhir", ok);
    assert_eq!(r.status, 412, "{}", r.body);
    assert_eq!(r.body["issue"][0]["expression"][0], "Bundle.entry[1]");
    assert_eq!(call!(app, "GET", "/fhir/Patient").total(), 0);
    // An unresolvable urn:uuid reference, and a conditional reference matching nothing.
    let dangling = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "subject": {"reference": "urn:uuid:99999999-9999-4999-8999-999999999999"}},
         "request": {"method": "POST", "url": "Observation"}}]});
    assert_eq!(call!(app, "POST", "/fhir", dangling).status, 400);
    let mut cond = dangling.clone();
    cond["entry"][0]["resource"]["subject"]["reference"] = json!("Patient?identifier=none");
    assert_eq!(call!(app, "POST", "/fhir", cond).status, 400);
    // Two entries for the same resource.
    let twice = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "id": "t"}, "request": {"method": "PUT", "url": "Patient/t"}},
        {"resource": {"resourceType": "Patient", "id": "t", "active": true}, "request": {"method": "PUT", "url": "Patient/t"}}]});
    assert_eq!(call!(app, "POST", "/fhir", twice).status, 400);
    assert_eq!(call!(app, "GET", "/fhir/Patient/t").status, 404);
    assert_eq!(call!(app, "GET", "/fhir/Observation").total(), 0);
}

#[actix_web::test]
async fn transaction_order_get_and_delete() {
    let (_d, cdr) = open();
    let app = app!(cdr);
    let mut old = patient("Old", "O", "male", "1950", "old");
    old["id"] = json!("old");
    call!(app, "PUT", "/fhir/Patient/old", old);
    // Entries listed GET, PUT, POST, DELETE: processed DELETE, POST, PUT, GET.
    let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": "Patient?family=new"}},
        {"resource": {"resourceType": "Patient", "id": "put1", "name": [{"family": "Newer"}]},
         "request": {"method": "PUT", "url": "Patient/put1"}},
        {"fullUrl": "urn:uuid:44444444-4444-4444-8444-444444444444",
         "resource": {"resourceType": "Patient", "name": [{"family": "New"}], "link": [{"other": {"reference": "Patient/put1"}, "type": "seealso"}]},
         "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "DELETE", "url": "Patient/old"}}
    ]});
    let r = call!(
        app,
        "POST",
        "/fhir",
        Some(&b),
        &[("Prefer", "return=representation")]
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let es = entries(&r.body);
    assert_eq!(es[0]["response"]["status"], "200 OK");
    assert_eq!(es[0]["resource"]["total"], 2, "GET ran after the writes");
    assert_eq!(es[1]["response"]["status"], "201 Created");
    assert_eq!(es[1]["resource"]["id"], "put1");
    assert_eq!(es[2]["resource"]["name"][0]["family"], "New");
    assert_eq!(es[3]["response"]["status"], "200 OK");
    assert_eq!(call!(app, "GET", "/fhir/Patient/old").status, 410);
}

#[actix_web::test]
async fn batch_entries_succeed_or_fail_alone() {
    let (_d, cdr) = open();
    let app = app!(cdr);
    let b = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": patient("Good", "G", "male", "2000", "b1"), "request": {"method": "POST", "url": "Patient"}},
        {"resource": patient("Bad", "B", "M", "2000", "b2"), "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient/missing"}},
        {"resource": {"resourceType": "Patient", "birthDate": "yesterday"}, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "PATCH", "url": "Patient/x"}},
        {"resource": {"resourceType": "Patient", "id": "b6", "active": true}, "request": {"method": "PUT", "url": "Patient/b6"}},
        {"resource": {"resourceType": "Patient", "id": "b6", "active": false}, "request": {"method": "PUT", "url": "Patient/b6"}},
        {"request": {"method": "GET", "url": "Patient?family=good"}}
    ]});
    let r = call!(app, "POST", "/fhir", b);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["type"], "batch-response");
    let statuses: Vec<String> = entries(&r.body)
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        statuses,
        [
            "201 Created",
            "422 Unprocessable Entity",
            "404 Not Found",
            "400 Bad Request",
            "405 Method Not Allowed",
            "201 Created",
            "200 OK",
            "200 OK"
        ]
    );
    let es = entries(&r.body);
    assert_eq!(
        outcome_codes(&es[1]["response"]["outcome"]),
        ["code-invalid"]
    );
    assert_eq!(es[6]["response"]["etag"], "W/\"2\"");
    assert_eq!(es[7]["resource"]["total"], 1);
    assert_eq!(call!(app, "GET", "/fhir/Patient?identifier=b1").total(), 1);
    assert_eq!(call!(app, "GET", "/fhir/Patient?identifier=b2").total(), 0);
    assert_eq!(call!(app, "GET", "/fhir/Patient/b6").body["active"], false);
}

#[actix_web::test]
async fn validation_errors_are_operation_outcomes() {
    let (_d, cdr) = open();
    let app = app!(cdr);
    let cases: Vec<(Option<Value>, &str, u16, &str)> = vec![
        (Some(json!([1, 2])), "/fhir/Patient", 400, "structure"),
        (
            Some(json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}})),
            "/fhir/Patient",
            400,
            "structure",
        ),
        (
            Some(json!({"resourceType": "Patient", "birthDate": "1970-02-30"})),
            "/fhir/Patient",
            400,
            "value",
        ),
        (
            Some(json!({"resourceType": "Patient", "name": {"family": "x"}})),
            "/fhir/Patient",
            400,
            "structure",
        ),
        (
            Some(
                json!({"resourceType": "Patient", "generalPractitioner": [{"reference": "not a ref"}]}),
            ),
            "/fhir/Patient",
            400,
            "value",
        ),
        (
            Some(json!({"resourceType": "Patient", "active": null})),
            "/fhir/Patient",
            400,
            "structure",
        ),
        (
            Some(json!({"resourceType": "Patient", "gender": "F"})),
            "/fhir/Patient",
            422,
            "code-invalid",
        ),
        (
            Some(json!({"resourceType": "Observation", "code": {"text": "x"}})),
            "/fhir/Observation",
            422,
            "required",
        ),
        (
            Some(json!({"resourceType": "Bundle", "type": "collection"})),
            "/fhir",
            400,
            "invalid",
        ),
        (None, "/fhir/Patient", 400, "invalid"),
    ];
    for (body, url, status, code) in cases {
        let r = call!(app, "POST", url, body.as_ref(), &[]);
        assert_eq!(r.status, status, "{body:?}: {}", r.body);
        assert_eq!(outcome_codes(&r.body)[0], code, "{body:?}");
    }
    let e = call!(
        app,
        "POST",
        "/fhir/Patient",
        json!({"resourceType": "Patient", "birthDate": "x"})
    );
    assert_eq!(e.body["issue"][0]["expression"][0], "Patient.birthDate");
    // Not JSON; not a FHIR type; not an interaction; not JSON formats.
    let raw = TestRequest::post()
        .uri("/fhir/Patient")
        .insert_header(("content-type", "application/fhir+json"))
        .set_payload("{oops")
        .to_request();
    assert_eq!(send(&app, raw).await.status, 400);
    let xml = TestRequest::post()
        .uri("/fhir/Patient")
        .insert_header(("content-type", "application/fhir+xml"))
        .set_payload("<Patient/>")
        .to_request();
    assert_eq!(send(&app, xml).await.status, 415);
    let plain_json = TestRequest::post()
        .uri("/fhir/Patient")
        .insert_header(("content-type", "application/json"))
        .set_payload("{\"resourceType\":\"Patient\"}")
        .to_request();
    assert_eq!(send(&app, plain_json).await.status, 201);
    assert_eq!(call!(app, "GET", "/fhir/Unknown/1").status, 404);
    assert_eq!(call!(app, "GET", "/fhir/metadata?_format=xml").status, 406);
    assert_eq!(call!(app, "GET", "/fhir/metadata?_format=json").status, 200);
    assert_eq!(call!(app, "PATCH", "/fhir/Patient/1").status, 405);
    assert_eq!(
        call!(
            app,
            "POST",
            "/fhir/Patient/1",
            json!({"resourceType": "Patient"})
        )
        .status,
        405
    );
    assert_eq!(call!(app, "GET", "/fhir/Patient/_history").status, 405);
    assert_eq!(call!(app, "GET", "/fhir").status, 405);
}

#[actix_web::test]
async fn concurrent_conditional_creates_make_one_resource() {
    let (_d, cdr) = open();
    let mut bundle = adt_bundle("C1", 2);
    bundle["entry"][0]["resource"]
        .as_object_mut()
        .unwrap()
        .remove("managingOrganization");
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let cdr = cdr.clone();
            let b = bundle.clone();
            std::thread::spawn(move || cdr.process_bundle(b.clone(), BASE).0)
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    let app = app!(cdr);
    assert_eq!(call!(app, "GET", "/fhir/Patient").total(), 1);
    assert_eq!(call!(app, "GET", "/fhir/Encounter").total(), 1);
    assert_eq!(call!(app, "GET", "/fhir/Observation").total(), 2);
}

#[actix_web::test]
async fn store_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cdr");
    let pid;
    {
        let cdr = Cdr::open(&path, 8 << 20).unwrap();
        let mut b = adt_bundle("R1", 2);
        b["entry"][0]["resource"]
            .as_object_mut()
            .unwrap()
            .remove("managingOrganization");
        let (status, r) = cdr.process_bundle(b.clone(), BASE);
        assert_eq!(status, 200, "{r}");
        pid = id_of(entries(&r)[0]["response"]["location"].as_str().unwrap());
        let app = app!(cdr);
        let mut p = call!(app, "GET", &format!("/fhir/Patient/{pid}")).body;
        p["active"] = json!(true);
        assert_eq!(
            call!(app, "PUT", &format!("/fhir/Patient/{pid}"), p).status,
            200
        );
        cdr.flush().unwrap();
    }
    let cdr = Cdr::open(&path, 8 << 20).unwrap();
    let app = app!(cdr);
    let g = call!(app, "GET", &format!("/fhir/Patient/{pid}"));
    assert_eq!(g.status, 200);
    assert_eq!(g.header("etag").unwrap(), "W/\"2\"");
    assert_eq!(g.body["active"], true);
    assert_eq!(
        call!(app, "GET", &format!("/fhir/Patient/{pid}/_history")).total(),
        2
    );
    assert_eq!(
        call!(app, "GET", "/fhir/Observation?identifier=urn:obs|R1-1").total(),
        1
    );
    assert_eq!(
        call!(
            app,
            "GET",
            &format!("/fhir/Observation?subject=Patient/{pid}&date=2024-01")
        )
        .total(),
        2
    );
    // Writing after the reopen continues the versions.
    let mut p = g.body.clone();
    p["active"] = json!(false);
    assert_eq!(
        call!(app, "PUT", &format!("/fhir/Patient/{pid}"), p)
            .header("etag")
            .unwrap(),
        "W/\"3\""
    );
}

/// Child side of `abort_after_acknowledged_writes_loses_nothing`; does nothing unless the
/// parent test set the variable.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("ORBITER_CDR_CRASH_DIR") else {
        return;
    };
    let cdr = Cdr::open(std::path::Path::new(&dir), 8 << 20).unwrap();
    for n in 0..20 {
        let mut b = adt_bundle(&format!("K{n}"), 2);
        b["entry"][0]["resource"]
            .as_object_mut()
            .unwrap()
            .remove("managingOrganization");
        let (status, r) = cdr.process_bundle(b.clone(), BASE);
        assert_eq!(status, 200, "{r}");
        println!("acked K{n}");
    }
    let r = write(
        &cdr,
        Method::Put,
        "Patient/last",
        json!({"resourceType": "Patient", "id": "last"}),
    );
    assert_eq!(r.status, 201);
    println!("acked last");
    // No destructors, no sled flush on drop: only what was made durable survives.
    std::process::abort();
}

#[test]
fn abort_after_acknowledged_writes_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cdr");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "cdr::tests::crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ORBITER_CDR_CRASH_DIR", &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "the child should have aborted: {stdout}"
    );
    assert_eq!(stdout.matches("acked").count(), 21, "{stdout}");
    let cdr = Cdr::open(&path, 8 << 20).unwrap();
    let count = |q: &str| {
        let r = cdr.handle(&FhirRequest::new(Method::Get, q, BASE), BASE);
        r.body.unwrap()["total"].as_u64().unwrap()
    };
    assert_eq!(count("Patient?identifier=urn:mrn|"), 20);
    assert_eq!(count("Observation"), 40);
    assert_eq!(count("Encounter?subject:missing=false"), 20);
    assert!(cdr.read("Patient", "last").unwrap().is_some());
}

#[actix_web::test]
async fn index_is_rebuilt_when_its_layout_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cdr");
    {
        let cdr = Cdr::open(&path, 8 << 20).unwrap();
        let r = write(
            &cdr,
            Method::Post,
            "Patient",
            patient("Rebuilt", "R", "male", "1999", "rb1"),
        );
        assert_eq!(r.status, 201);
    }
    {
        // As an older version would have left it: no layout marker, index entries missing.
        let db = crate::sled_db::open(&sled::Config::new().path(&path)).unwrap();
        let tree = db.open_tree("cdr").unwrap();
        let stale: Vec<_> = tree
            .iter()
            .keys()
            .map(Result::unwrap)
            .filter(|k| matches!(k.first(), Some(b'I' | b'D' | b'M')))
            .collect();
        assert!(stale.len() > 3);
        for k in stale {
            tree.remove(k).unwrap();
        }
        db.flush().unwrap();
    }
    // The open waits out the file lock sled's threads keep a moment after the drop (sled_db).
    let cdr = Cdr::open(&path, 8 << 20).expect("reopening the store");
    let app = app!(cdr);
    assert_eq!(call!(app, "GET", "/fhir/Patient?identifier=rb1").total(), 1);
    assert_eq!(
        call!(app, "GET", "/fhir/Patient?family=rebuilt&birthdate=1999").total(),
        1
    );
}

#[actix_web::test]
async fn hostile_inputs_get_4xx_not_panics() {
    let (_d, cdr) = open();
    let mut deep = json!("x");
    for _ in 0..200 {
        deep = json!({"extension": [{"url": "u", "valueString": "v", "extension": [deep]}]});
    }
    let bundles = [
        json!(null),
        json!({"resourceType": "Bundle"}),
        json!({"resourceType": "Bundle", "type": "transaction", "entry": 5}),
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [null, 1, "x"]}),
        json!({"resourceType": "Bundle", "type": "batch", "entry": [null, {"request": {}}, {"request": {"method": 7, "url": []}}]}),
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "POST", "url": "Patient"}, "resource": "text"}]}),
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "PUT", "url": "Patient?"}, "resource": {"resourceType": "Patient"}}]}),
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "POST", "url": "Patient", "ifNoneExist": "%ZZ&=&&birthdate=ge"}, "resource": {"resourceType": "Patient"}}]}),
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "DELETE", "url": "Patient?_id=a,b&_count=-1"}}]}),
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "GET", "url": "Patient/../../etc/passwd"}}]}),
        json!({"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "POST", "url": "Basic"}, "resource": {"resourceType": "Basic", "code": {"text": "x"}, "extension": [deep]}}]}),
        json!({"resourceType": "Bundle", "type": "batch", "entry": [{"request": {"method": "POST", "url": "Patient"}, "resource": {"resourceType": "Patient", "birthDate": "9999-99-99T99:99:99Z", "multipleBirthInteger": 1e300, "name": [{"given": [null]}]}}]}),
    ];
    for b in bundles {
        let (status, body) = cdr.process_bundle(b.clone(), BASE);
        assert!(
            status == 200 || (400..500).contains(&status),
            "{status} for {b}: {body}"
        );
    }
    let app = app!(cdr);
    for url in [
        "/fhir/Patient?birthdate=ge99999",
        "/fhir/Patient?birthdate=ap1000-01-01",
        "/fhir/Patient?_count=99999999999999999999",
        "/fhir/Patient?_offset=18446744073709551615&_count=1000",
        "/fhir/Patient?identifier=%00%1F|%1F",
        "/fhir/Patient?name:contains=&family=%E2%80%AE",
        "/fhir/Patient?_sort=-_lastUpdated,_id&_include=Patient:organization:Organization",
        "/fhir/Observation?subject:Patient=a/b",
        "/fhir/Patient/x/_history/99999999999999999999999",
        "/fhir/Patient/x/_history?_since=yesterday",
    ] {
        let r = call!(app, "GET", url);
        assert!(
            r.status == 200 || (400..500).contains(&r.status),
            "{url}: {} {}",
            r.status,
            r.body
        );
    }
}

#[actix_web::test]
async fn absolute_references_to_this_server_are_searched_as_relative_ones() {
    let (_d, cdr) = open();
    let app = app!(cdr);
    let r = call!(
        app,
        "PUT",
        "/fhir/Patient/P1",
        json!({"resourceType": "Patient", "id": "P1"})
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let obs = |id: &str, reference: &str| {
        json!({"resourceType": "Observation", "id": id, "status": "final",
            "code": {"text": "x"}, "subject": {"reference": reference}})
    };
    for (id, reference) in [
        ("abs", format!("{BASE}/Patient/P1")),
        ("rel", "Patient/P1".to_string()),
        ("other", "http://elsewhere/fhir/Patient/P1".to_string()),
    ] {
        let r = call!(
            app,
            "PUT",
            &format!("/fhir/Observation/{id}"),
            obs(id, &reference)
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let sorted = |r: &Res| {
        let mut ids = r.ids();
        ids.sort();
        ids
    };
    for url in [
        "/fhir/Observation?subject=Patient/P1".to_string(),
        format!("/fhir/Observation?subject={BASE}/Patient/P1"),
        "/fhir/Observation?subject=P1".to_string(),
        "/fhir/Observation?patient=P1".to_string(),
        "/fhir/Observation?subject:Patient=P1".to_string(),
    ] {
        let r = call!(app, "GET", &url);
        assert_eq!(r.status, 200, "{url}: {}", r.body);
        assert_eq!(sorted(&r), ["abs", "rel"], "{url}");
    }
    // Another server's Patient/P1 is another resource.
    let r = call!(
        app,
        "GET",
        "/fhir/Observation?subject=http://elsewhere/fhir/Patient/P1"
    );
    assert_eq!(r.ids(), ["other"]);
    let r = call!(
        app,
        "GET",
        "/fhir/Patient?_id=P1&_revinclude=Observation:subject"
    );
    let mut included: Vec<String> = entries(&r.body)
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect();
    included.sort();
    assert_eq!(included, ["abs", "rel"]);
}

#[actix_web::test]
async fn delete_honours_if_match() {
    let (_d, cdr) = open();
    let app = app!(cdr);
    let r = call!(
        app,
        "PUT",
        "/fhir/Patient/x",
        json!({"resourceType": "Patient", "id": "x"})
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = call!(
        app,
        "DELETE",
        "/fhir/Patient/x",
        None,
        &[("If-Match", "W/\"9\"")]
    );
    assert_eq!(r.status, 412, "{}", r.body);
    let r = call!(
        app,
        "DELETE",
        "/fhir/Patient/x",
        None,
        &[("If-Match", "nine")]
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(call!(app, "GET", "/fhir/Patient/x").status, 200);
    let r = call!(
        app,
        "DELETE",
        "/fhir/Patient/x",
        None,
        &[("If-Match", "W/\"1\"")]
    );
    assert!(r.status == 200 || r.status == 204, "{}", r.body);
    assert_eq!(call!(app, "GET", "/fhir/Patient/x").status, 410);
}

#[actix_web::test]
async fn history_links_keep_since_and_at_is_refused() {
    let (_d, cdr) = open();
    let app = app!(cdr);
    for family in ["A", "B", "C"] {
        let r = call!(
            app,
            "PUT",
            "/fhir/Patient/h",
            json!({"resourceType": "Patient", "id": "h", "name": [{"family": family}]})
        );
        assert!(r.status == 200 || r.status == 201, "{}", r.body);
    }
    let r = call!(
        app,
        "GET",
        "/fhir/Patient/h/_history?_since=2000-01-01T00:00:00Z&_count=1"
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.total(), 3);
    let next = r.link("next").unwrap();
    assert!(next.contains("_since=2000-01-01T00"), "{next}");
    // A _since after every version: following the link must not bring them all back.
    let r = call!(
        app,
        "GET",
        "/fhir/Patient/h/_history?_since=2999-01-01T00:00:00Z&_count=1"
    );
    assert_eq!(r.total(), 0);
    let page = r.link("self").unwrap();
    let r = call!(app, "GET", page.trim_start_matches("http://localhost:8080"));
    assert_eq!(r.status, 200, "{page}: {}", r.body);
    assert_eq!(r.total(), 0, "{page}");
    // No empty arrays in FHIR JSON.
    assert!(r.body.get("entry").is_none(), "{}", r.body);
    let r = call!(app, "GET", "/fhir/Patient/h/_history?_offset=10");
    assert_eq!(r.status, 200);
    assert!(r.body.get("entry").is_none(), "{}", r.body);
    let r = call!(app, "GET", "/fhir/Patient/h/_history?_at=2020");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("_at is not supported"));
}

#[actix_web::test]
async fn empty_bundles_answer_without_an_entry_array() {
    let (_d, cdr) = open();
    for ty in ["transaction", "batch"] {
        let (status, body) = cdr.process_bundle(
            json!({"resourceType": "Bundle", "type": ty, "entry": []}),
            BASE,
        );
        assert_eq!(status, 200, "{body}");
        assert!(body.get("entry").is_none(), "{body}");
    }
}

/// Whether every character of `url`'s query is allowed there by RFC 3986.
fn query_is_rfc3986(url: &str) -> bool {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    query
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b))
}

#[actix_web::test]
async fn links_percent_encode_what_a_uri_does_not_allow() {
    let (_d, cdr) = open();
    let app = app!(cdr);
    for i in 0..2 {
        let p = json!({"resourceType": "Patient",
            "identifier": [{"system": "urn:esc", "value": "a,b"}], "gender": format!("{}", ["male", "female"][i])});
        assert_eq!(call!(app, "POST", "/fhir/Patient", p).status, 201);
    }
    let r = call!(
        app,
        "GET",
        "/fhir/Patient?identifier=urn:esc|a%5C,b&_count=1"
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.total(), 2, "{}", r.body);
    for relation in ["self", "first", "next", "last"] {
        let link = r.link(relation).unwrap();
        assert!(query_is_rfc3986(&link), "{relation}: {link}");
    }
    let next = r.link("next").unwrap();
    assert!(next.contains("urn:esc%7Ca%5C,b"), "{next}");
    let r = call!(app, "GET", next.trim_start_matches("http://localhost:8080"));
    assert_eq!(r.ids().len(), 1);
    assert_eq!(r.total(), 2);
}

#[actix_web::test]
async fn unknown_elements_and_double_choices_are_refused() {
    let (_d, cdr) = open();
    let app = app!(cdr);
    let obs = |extra: Value| {
        let mut o =
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}});
        for (k, v) in extra.as_object().unwrap() {
            o[k] = v.clone();
        }
        o
    };
    for (ty, body, path) in [
        (
            "Patient",
            json!({"resourceType": "Patient", "name": [{"fmaily": "x"}]}),
            "Patient.name[0].fmaily",
        ),
        (
            "Patient",
            json!({"resourceType": "Patient", "foo": 1}),
            "Patient.foo",
        ),
        (
            "Patient",
            json!({"resourceType": "Patient", "contained": [{"resourceType": "Patient", "id": "c", "foo": 1}]}),
            "Patient.contained[0].foo",
        ),
        (
            "Patient",
            json!({"resourceType": "Patient", "extension": [{"url": "u", "valueString": "a", "valueInteger": 1}]}),
            "Patient.extension[0].value[x]",
        ),
        (
            "Patient",
            json!({"resourceType": "Patient", "extension": [{"url": "u", "vaule": "a"}]}),
            "Patient.extension[0].vaule",
        ),
        (
            "Observation",
            obs(json!({"valueString": "a", "valueInteger": 1})),
            "Observation.value[x]",
        ),
        (
            "Observation",
            obs(json!({"code": {"coding": [{"code": "c", "sytem": "s"}]}})),
            "Observation.code.coding[0].sytem",
        ),
    ] {
        let r = call!(app, "POST", &format!("/fhir/{ty}"), body.clone());
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        let issue = &r.body["issue"][0];
        assert_eq!(issue["expression"][0], path, "{}", r.body);
    }
    // What must still pass: extensions everywhere, primitive extensions, choices, the base
    // elements, and names of types or backbone elements without a table.
    for (ty, body) in [
        (
            "Patient",
            json!({"resourceType": "Patient", "id": "ok", "meta": {"tag": [{"code": "t"}]},
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"},
            "implicitRules": "http://x", "language": "en",
            "extension": [{"url": "u", "valueString": "a", "_valueString": {"id": "e"}}],
            "modifierExtension": [{"url": "m", "extension": [{"url": "n", "valueCodeableConcept": {"text": "t"}}]}],
            "birthDate": "2000", "_birthDate": {"extension": [{"url": "u", "valueBoolean": true}]},
            "name": [{"id": "n1", "family": "F", "_family": {"extension": [{"url": "u", "valueString": "x"}]},
                "given": ["A", null], "_given": [null, {"extension": [{"url": "u", "valueString": "x"}]}],
                "extension": [{"url": "u", "valueString": "x"}]}],
            "deceasedBoolean": false,
            "contact": [{"anything": 1}],
            "contained": [{"resourceType": "Organization", "id": "o", "name": "O"}]}),
        ),
        (
            "Observation",
            obs(json!({"valueQuantity": {"value": 1, "unit": "mg"}, "effectiveDateTime": "2020"})),
        ),
        (
            "Basic",
            json!({"resourceType": "Basic", "code": {"text": "x"}, "whatever": 1}),
        ),
    ] {
        let r = call!(app, "POST", &format!("/fhir/{ty}"), body.clone());
        assert_eq!(r.status, 201, "{body}: {}", r.body);
    }
}

/// Channels' deliveries ([`Cdr::deliver_bundle`]) queued together share the delivery thread's
/// batches: each is still its own transaction, answered as `POST /fhir` would answer it, and a
/// refused one changes nothing for the others.
#[actix_rt::test]
async fn deliveries_queued_together_are_each_answered_and_written_once() {
    let (_dir, cdr) = open();
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..64 {
        let cdr = cdr.clone();
        let bundle = if n == 17 {
            // Refused: a collection is not written.
            json!({"resourceType": "Bundle", "type": "collection", "entry": []})
        } else {
            json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"fullUrl": "urn:uuid:7c6e1c2a-0000-4000-8000-000000000001",
                 "resource": patient("Batch", &format!("N{n}"), "female", "1980-01-01", &format!("MRN{n}")),
                 "request": {"method": "PUT", "url": format!("Patient?identifier=urn:oid:1.2.36.146|MRN{n}")}},
                {"resource": {"resourceType": "Encounter", "status": "finished",
                  "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                  "subject": {"reference": "urn:uuid:7c6e1c2a-0000-4000-8000-000000000001"}},
                 "request": {"method": "POST", "url": "Encounter"}}
            ]})
        };
        calls.spawn_local(async move {
            let answer = cdr.deliver_bundle(bundle.into(), BASE, |_| ()).await;
            (n, answer)
        });
    }
    let mut answered = 0;
    while let Some(call) = calls.join_next().await {
        let (n, answer) = call.unwrap();
        let (status, body) = answer.expect("answered");
        answered += 1;
        if n == 17 {
            assert_eq!(status, 400, "{body:#}");
            continue;
        }
        assert_eq!(status, 200, "{body:#}");
        let locations: Vec<String> = entries(&body)
            .iter()
            .map(|e| e["response"]["location"].as_str().unwrap().to_string())
            .collect();
        let patient_id = id_of(&locations[0]);
        let encounter = cdr
            .read("Encounter", &id_of(&locations[1]))
            .unwrap()
            .unwrap();
        assert_eq!(
            encounter["subject"]["reference"],
            format!("Patient/{patient_id}")
        );
    }
    assert_eq!(answered, 64);
    let found = cdr.handle(
        &FhirRequest::new(Method::Get, "Patient?family=Batch&_summary=count", BASE),
        BASE,
    );
    assert_eq!(found.body.as_ref().unwrap()["total"], 63);
}

/// A delivery that panics (a bug) fails alone, with a 500 its channel retries; the delivery
/// thread lives on for the next one.
#[actix_rt::test]
async fn a_delivery_that_panics_fails_alone() {
    let (_dir, cdr) = open();
    let bundle = || {
        std::sync::Arc::new(
            json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": patient("Panic", "After", "male", "1970-01-01", "MRN-P"),
                 "request": {"method": "PUT", "url": "Patient?identifier=urn:oid:1.2.36.146|MRN-P"}}
            ]}),
        )
    };
    let (status, body) = cdr
        .deliver_bundle(bundle(), BASE, |_| panic!("a bug in a delivery"))
        .await
        .expect("answered");
    assert_eq!(status, 500, "{body:#}");
    assert!(body.to_string().contains("a bug in a delivery"), "{body:#}");
    let (status, body) = cdr
        .deliver_bundle(bundle(), BASE, |_| ())
        .await
        .expect("the delivery thread still answers");
    assert_eq!(status, 200, "{body:#}");
}
