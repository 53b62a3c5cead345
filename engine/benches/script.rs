//! Script benchmarks: the default ADT transform (scripts/adt_to_fhir.rhai and the `scripts/lib`
//! modules it imports) on the small ADT^A01 fixture (5 resources) and on the full one
//! (adt_a01_full.hl7, 11 resources), and on the message issue 7's target names (one each of
//! PID, PV1, NK1, AL1 and DG1, cut from the full one: 7 resources; target 10,000 runs/s per
//! core in a release build),
//! with the AST compiled once and one ScriptHost, as a transform worker runs it. Also: an empty
//! transform (the fixed cost of a run) and compiling the script. On a loaded machine compare
//! with `examples/script_cpu.rs` (on-CPU time) instead: wall time here swings by ±20%.
//!
//! Run: `cargo bench -p orbiter --bench script`

use std::hint::black_box;
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use orbiter::hl7::Message;
use orbiter::script::{ScriptContext, ScriptHost, ScriptLimits, TransformOutcome};

#[path = "../examples/common/segments.rs"]
mod segments;

// The allocator the `orbiter` binary runs with (engine/src/main.rs): with glibc malloc the
// mapping spends ~17% of its time in malloc/free, which production does not.
#[global_allocator]
static ALLOCATOR: orbiter::allocator::Mimalloc = orbiter::allocator::Mimalloc;

fn repo() -> PathBuf {
    let f = Path::new(file!());
    if f.is_absolute() {
        f.ancestors().nth(3).unwrap().to_path_buf()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }
}

fn bench(c: &mut Criterion) {
    let root = repo();
    let host = ScriptHost::new(&root.join("scripts/lib"), ScriptLimits::default()).unwrap();
    let script = root.join("scripts/adt_to_fhir.rhai");
    let ast = host.compile_file(&script).unwrap();
    let bytes = std::fs::read(root.join("fixtures/hl7v2/adt_a01.hl7")).unwrap();
    let msg = Message::parse(&bytes).unwrap();
    let ctx = ScriptContext {
        channel: "adt".into(),
        script_dir: root.join("scripts"),
        transaction_id: Some(1),
        output_tree: false,
    };
    match host.run_transform(&ast, &msg, &ctx).unwrap() {
        TransformOutcome::Output { .. } => {}
        other => panic!("the default script did not produce output: {other:?}"),
    }

    // The full A01 (PID, PD1, NK1 x2, PV1, PV2, AL1 x2, DG1 x2, IN1): 11 resources, the
    // mapping's worst common case.
    let full_bytes = std::fs::read(root.join("fixtures/hl7v2/adt_a01_full.hl7")).unwrap();
    let full = Message::parse(&full_bytes).unwrap();
    match host.run_transform(&ast, &full, &ctx).unwrap() {
        TransformOutcome::Output { .. } => {}
        other => panic!("the default script did not map the full A01: {other:?}"),
    }
    // Issue 7's message (target: 10,000 messages/s per core).
    let issue7_bytes = segments::first_of_each(&full_bytes, segments::ISSUE7);
    let issue7 = Message::parse(&issue7_bytes).unwrap();
    match host.run_transform(&ast, &issue7, &ctx).unwrap() {
        TransformOutcome::Output { .. } => {}
        other => panic!("the default script did not map issue 7's A01: {other:?}"),
    }

    let mut g = c.benchmark_group("script");
    g.throughput(Throughput::Elements(1));
    g.bench_function("adt_to_fhir_a01", |b| {
        b.iter(|| {
            host.run_transform(black_box(&ast), black_box(&msg), &ctx)
                .unwrap()
        })
    });
    g.bench_function("adt_to_fhir_a01_full", |b| {
        b.iter(|| {
            host.run_transform(black_box(&ast), black_box(&full), &ctx)
                .unwrap()
        })
    });
    g.bench_function("adt_to_fhir_a01_issue7", |b| {
        b.iter(|| {
            host.run_transform(black_box(&ast), black_box(&issue7), &ctx)
                .unwrap()
        })
    });
    let empty = host
        .compile_source("empty.rhai", "#{resourceType: \"Basic\"}")
        .unwrap();
    g.bench_function("minimal_transform", |b| {
        b.iter(|| {
            host.run_transform(black_box(&empty), black_box(&msg), &ctx)
                .unwrap()
        })
    });
    let source = std::fs::read_to_string(&script).unwrap();
    g.bench_function("compile_adt_to_fhir", |b| {
        b.iter(|| {
            host.compile_source("adt_to_fhir.rhai", black_box(&source))
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
