//! HL7 v2 codec benchmarks: parse throughput, path reads, ACK building.
//!
//! The target is at least 300 MB/s parsing typical ADT/ORU messages in a release build; run with
//! `cargo bench --bench hl7` (add `-- --quick` for a short run).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use orbiter::hl7::{build_ack, AckCode, Message, Path};

const ADT: &[u8] = include_bytes!("../../fixtures/hl7v2/adt_a01.hl7");
const ORU: &[u8] = include_bytes!("../../fixtures/hl7v2/oru_r01.hl7");

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    for (name, bytes) in [("adt_a01", ADT), ("oru_r01", ORU)] {
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), bytes, |b, bytes| {
            b.iter(|| Message::parse(black_box(bytes)).map(|m| m.segment_count()))
        });
    }
    g.finish();
}

fn path(c: &mut Criterion) {
    let mut g = c.benchmark_group("path");
    let adt = Message::parse(ADT).expect("ADT fixture parses");
    let oru = Message::parse(ORU).expect("ORU fixture parses");
    for (msg, p) in [
        (&adt, "PID-5.1"),
        (&adt, "PID-3[2].4.1"),
        (&oru, "OBX[3]-5"),
    ] {
        let path = Path::parse(p).expect("bench path parses");
        g.bench_function(BenchmarkId::from_parameter(p), |b| {
            b.iter(|| black_box(msg).get(black_box(&path)))
        });
    }
    g.bench_function("parse_path", |b| {
        b.iter(|| Path::parse(black_box("PID-3[2].4.1")))
    });
    g.finish();
}

fn ack(c: &mut Criterion) {
    let mut g = c.benchmark_group("ack");
    let adt = Message::parse(ADT).expect("ADT fixture parses");
    g.bench_function("build_ack", |b| {
        b.iter(|| {
            build_ack(
                black_box(&adt),
                AckCode::Accept,
                None,
                "ORB000001",
                "20240401120000",
            )
        })
    });
    g.finish();
}

criterion_group!(benches, parse, path, ack);
criterion_main!(benches);
