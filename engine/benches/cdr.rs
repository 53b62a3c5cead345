//! Embedded CDR benchmarks: transaction Bundles written durably, and reads by id.
//!
//! Targets (issue 6): at least 5,000 resources/s through transaction Bundles of 10 entries
//! (Patient + Encounter + 8 Observations, all conditional creates linked by urn:uuid), and
//! reads by id under 1 ms p99. Every `process_bundle` here is durable when it returns (sled
//! flush + fsync of its log, shared by concurrent writers: group commit), so one writer is
//! bound by the disk's fsync latency and concurrent writers (one per patient stream, as the
//! deliver side runs them) share flushes.
//!
//! Besides criterion's figures, `read_latency` prints percentiles from a timing loop, for reads
//! through the API and through HTTP over loopback (actix-web, keep-alive).
//!
//! Run: `cargo bench -p orbiter --bench cdr`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use orbiter::cdr::{Cdr, FhirRequest, Method};
use serde_json::{json, Value};

const BASE: &str = "http://127.0.0.1:8080/fhir";

/// A realistic ADT/ORU-shaped transaction: Patient (~1 KB), Encounter (~0.7 KB) and 8
/// Observations (~0.6 KB each), all conditional creates, linked by urn:uuid.
fn bundle(n: u64) -> Value {
    let pu = format!("urn:uuid:00000000-0000-4000-8000-{:012x}", n * 16);
    let eu = format!("urn:uuid:00000000-0000-4000-8000-{:012x}", n * 16 + 1);
    let mrn = format!("MRN{n:08}");
    let mut entry = vec![
        json!({"fullUrl": pu, "request": {"method": "POST", "url": "Patient",
                "ifNoneExist": format!("identifier=urn:oid:2.16.840.1.113883.3.72.5.9.1|{mrn}")},
            "resource": {"resourceType": "Patient",
                "identifier": [
                    {"use": "usual", "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                     "system": "urn:oid:2.16.840.1.113883.3.72.5.9.1", "value": mrn},
                    {"use": "official", "system": "urn:oid:2.16.840.1.113883.4.1", "value": format!("{:09}", n * 7 % 999_999_999)}],
                "active": true,
                "name": [{"use": "official", "family": format!("Family{}", n % 5000), "given": [format!("Given{}", n % 300), "Middle"], "prefix": ["Mr."]}],
                "telecom": [{"system": "phone", "value": format!("+1-555-{:07}", n % 10_000_000), "use": "home"},
                            {"system": "email", "value": format!("p{n}@example.org")}],
                "gender": if n & 1 == 0 { "male" } else { "female" },
                "birthDate": format!("{}-{:02}-{:02}", 1930 + n % 90, 1 + n % 12, 1 + n % 28),
                "address": [{"use": "home", "line": [format!("{} Main Street", n % 999), "Apt 4"], "city": "Springfield",
                             "state": "IL", "postalCode": format!("{:05}", n % 99_999), "country": "US"}],
                "maritalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M"}]},
                "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en-US"}]}, "preferred": true}]}}),
        json!({"fullUrl": eu, "request": {"method": "POST", "url": "Encounter",
                "ifNoneExist": format!("identifier=urn:oid:2.16.840.1.113883.3.72.5.9.2|V{n:08}")},
            "resource": {"resourceType": "Encounter",
                "identifier": [{"system": "urn:oid:2.16.840.1.113883.3.72.5.9.2", "value": format!("V{n:08}")}],
                "status": "in-progress",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP", "display": "inpatient encounter"},
                "type": [{"coding": [{"system": "http://snomed.info/sct", "code": "32485007", "display": "Hospital admission"}]}],
                "subject": {"reference": pu},
                "participant": [{"individual": {"reference": "Practitioner/dr-1", "display": "Dr. Who"}}],
                "period": {"start": "2024-05-01T08:30:00+02:00"},
                "location": [{"location": {"reference": "Location/ward-3", "display": "Ward 3"}}],
                "serviceProvider": {"reference": "Organization/hosp-1"}}}),
    ];
    let codes = [
        ("8867-4", "Heart rate", "/min"),
        ("9279-1", "Respiratory rate", "/min"),
        ("8310-5", "Body temperature", "Cel"),
        ("8480-6", "Systolic blood pressure", "mm[Hg]"),
        ("8462-4", "Diastolic blood pressure", "mm[Hg]"),
        ("2708-6", "Oxygen saturation", "%"),
        ("29463-7", "Body weight", "kg"),
        ("8302-2", "Body height", "cm"),
    ];
    for (i, (code, display, unit)) in codes.iter().enumerate() {
        entry.push(json!({
            "fullUrl": format!("urn:uuid:00000000-0000-4000-8000-{:012x}", n * 16 + 2 + i as u64),
            "request": {"method": "POST", "url": "Observation",
                "ifNoneExist": format!("identifier=urn:oid:2.16.840.1.113883.3.72.5.9.3|O{n:08}-{i}")},
            "resource": {"resourceType": "Observation",
                "identifier": [{"system": "urn:oid:2.16.840.1.113883.3.72.5.9.3", "value": format!("O{n:08}-{i}")}],
                "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}], "text": display},
                "subject": {"reference": pu}, "encounter": {"reference": eu},
                "effectiveDateTime": "2024-05-01T09:00:00+02:00",
                "issued": "2024-05-01T09:05:00.000+02:00",
                "valueQuantity": {"value": 50 + (n + i as u64) % 50, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}
        }));
    }
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entry})
}

fn open(dir: &Path) -> Cdr {
    Cdr::open(&dir.join("cdr"), 256 << 20).expect("open the CDR")
}

fn write(cdr: &Cdr, bundle: &Value) {
    // A copy handed over, as the engine's CDR destination hands over its own.
    let (status, body) = cdr.process_bundle(bundle.clone(), BASE);
    assert_eq!(status, 200, "{body}");
}

/// Durable transaction Bundles, one writer and several.
fn transactions(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cdr = open(dir.path());
    let next = AtomicU64::new(0);
    let mut group = c.benchmark_group("cdr");
    group.throughput(Throughput::Elements(10));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("transaction10/1-writer", |b| {
        b.iter_batched(
            || bundle(next.fetch_add(1, Ordering::Relaxed)),
            |bundle| write(&cdr, &bundle),
            BatchSize::SmallInput,
        )
    });
    for writers in [4u64, 16] {
        group.bench_function(format!("transaction10/{writers}-writers"), |b| {
            b.iter_custom(|iters| {
                // Bundles are built before the clock starts: this measures the CDR.
                let per = iters.div_ceil(writers);
                let work: Vec<Vec<Value>> = (0..writers)
                    .map(|_| {
                        (0..per)
                            .map(|_| bundle(next.fetch_add(1, Ordering::Relaxed)))
                            .collect()
                    })
                    .collect();
                let start = Instant::now();
                std::thread::scope(|s| {
                    for bundles in &work {
                        let cdr = &cdr;
                        s.spawn(move || bundles.iter().for_each(|b| write(cdr, b)));
                    }
                });
                // Scale to exactly `iters` bundles.
                start
                    .elapsed()
                    .mul_f64(iters as f64 / (per * writers) as f64)
            })
        });
    }
    // A replay: every entry matches, nothing is written.
    let replays: Vec<Value> = (0..100).map(bundle).collect();
    group.bench_function("transaction10/replay", |b| {
        let mut n = 0;
        b.iter(|| {
            write(&cdr, &replays[n % replays.len()]);
            n += 1;
        })
    });
    group.finish();
}

/// Loads `patients` bundles (10 resources each) with 16 writers; returns the Patient ids.
fn load(cdr: &Cdr, patients: u64) -> Vec<String> {
    let next = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= patients {
                    break;
                }
                write(cdr, &bundle(n));
            });
        }
    });
    let mut ids = Vec::new();
    let mut url = "Patient?_count=1000".to_string();
    loop {
        let r = cdr.handle(&FhirRequest::new(Method::Get, &url, BASE), BASE);
        let body = r.body.expect("searchset");
        for e in body["entry"].as_array().into_iter().flatten() {
            ids.push(e["resource"]["id"].as_str().unwrap_or_default().to_string());
        }
        let next = body["link"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["relation"] == "next"))
            .and_then(|l| l["url"].as_str())
            .map(|u| u.trim_start_matches(BASE).to_string());
        match next {
            Some(n) => url = n,
            None => break,
        }
    }
    ids
}

fn percentiles(name: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p) as usize];
    println!(
        "{name}: n={} p50={:?} p90={:?} p99={:?} p99.9={:?} max={:?}",
        samples.len(),
        at(0.50),
        at(0.90),
        at(0.99),
        at(0.999),
        samples[samples.len() - 1]
    );
}

/// Reads by id: criterion's figure through the API, then percentiles through the API and
/// through HTTP over loopback.
fn reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cdr = open(dir.path());
    let patients = 10_000u64;
    let started = Instant::now();
    let ids = load(&cdr, patients);
    println!(
        "loaded {} resources in {:?} ({} patients)",
        patients * 10,
        started.elapsed(),
        ids.len()
    );
    let mut i = 0usize;
    c.bench_function("cdr/read_by_id/api", |b| {
        b.iter(|| {
            i = (i + 7919) % ids.len();
            let r = cdr.handle(
                &FhirRequest::new(Method::Get, &format!("Patient/{}", ids[i]), BASE),
                BASE,
            );
            assert_eq!(r.status, 200);
            std::hint::black_box(r)
        })
    });

    let mut samples = Vec::with_capacity(100_000);
    for k in 0..100_000usize {
        let id = &ids[(k * 7919) % ids.len()];
        let t = Instant::now();
        let r = cdr.handle(
            &FhirRequest::new(Method::Get, &format!("Patient/{id}"), BASE),
            BASE,
        );
        samples.push(t.elapsed());
        assert_eq!(r.status, 200);
    }
    percentiles("read_by_id/api", samples);

    let (addr, stop) = serve(cdr.clone());
    let mut conn = TcpStream::connect(addr).expect("connect");
    conn.set_nodelay(true).expect("nodelay");
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut samples = Vec::with_capacity(50_000);
    for k in 0..50_000usize {
        let id = &ids[(k * 104_729) % ids.len()];
        let t = Instant::now();
        write!(
            conn,
            "GET /fhir/Patient/{id} HTTP/1.1\r\nHost: bench\r\n\r\n"
        )
        .expect("send");
        let (status, body) = read_response(&mut reader);
        samples.push(t.elapsed());
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    percentiles("read_by_id/http", samples);

    // The same while 4 writers keep writing transactions: a read can wait for a sled batch
    // being applied (sled excludes reads during a batch).
    let writing = std::sync::atomic::AtomicBool::new(true);
    let next = AtomicU64::new(patients);
    let written = std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while writing.load(Ordering::Relaxed) {
                    write(&cdr, &bundle(next.fetch_add(1, Ordering::Relaxed)));
                }
            });
        }
        let started = Instant::now();
        let mut samples = Vec::with_capacity(20_000);
        for k in 0..20_000usize {
            let id = &ids[(k * 104_729) % ids.len()];
            let t = Instant::now();
            write!(
                conn,
                "GET /fhir/Patient/{id} HTTP/1.1\r\nHost: bench\r\n\r\n"
            )
            .expect("send");
            let (status, body) = read_response(&mut reader);
            samples.push(t.elapsed());
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        }
        writing.store(false, Ordering::Relaxed);
        percentiles("read_by_id/http while 4 writers write", samples);
        started.elapsed()
    });
    let bundles = next.load(Ordering::Relaxed) - patients;
    println!(
        "  meanwhile: {} resources written ({:.0}/s)",
        bundles * 10,
        (bundles * 10) as f64 / written.as_secs_f64()
    );
    stop();
}

/// Serves the CDR on a free loopback port in its own actix system; returns the address and a
/// function that stops it.
fn serve(cdr: Cdr) -> (std::net::SocketAddr, impl FnOnce()) {
    use actix_web::{web, App, HttpServer};
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let data = web::Data::new(cdr);
            let server = HttpServer::new(move || {
                App::new()
                    .app_data(data.clone())
                    .service(web::scope("/fhir").configure(orbiter::cdr::routes))
            })
            .workers(2)
            .bind(("127.0.0.1", 0))
            .expect("bind");
            let addr = server.addrs()[0];
            let server = server.run();
            tx.send((addr, server.handle())).expect("send address");
            server.await.expect("server");
        })
    });
    let (addr, handle) = rx.recv().expect("server address");
    (addr, move || {
        actix_web::rt::System::new().block_on(handle.stop(true));
        let _ = thread.join();
    })
}

/// Reads one HTTP/1.1 response with a Content-Length body.
fn read_response(r: &mut BufReader<TcpStream>) -> (u16, Vec<u8>) {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut len = 0usize;
    loop {
        line.clear();
        r.read_line(&mut line).expect("header");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).expect("body");
    (status, body)
}

criterion_group!(benches, transactions, reads);
criterion_main!(benches);
