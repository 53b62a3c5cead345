//! CPU time per Bundle written to the embedded CDR, for A/B comparisons of the write path.
//!
//! Runs a transform on `runs` variants of one message (each token in VARY gets the run number
//! appended, so every variant is a new patient and visit), then writes the Bundles one by one
//! with [`Cdr::process_bundle`] (what the engine's CDR destination does) into a fresh store, and
//! prints the median of several batches of this thread's on-CPU time per Bundle (see
//! `common/cpu.rs`; it includes the kernel time of the fsync each write makes, not the wait
//! for the disk). The transforms run before the clock starts.
//!
//! Run: `cargo run --release -p orbiter --example cdr_cpu -- [script] [message] [runs] [VARY]`
//! (defaults: engine/benches/load/patient_encounter.rhai, fixtures/hl7v2/adt_a01.hl7, 1000
//! Bundles a batch, VARY `MRN100234,ACCT5566778`: PID-3 and PID-18 of that message).

#[path = "common/cpu.rs"]
mod cpu;

use std::path::{Path, PathBuf};

use orbiter::cdr::Cdr;
use orbiter::hl7::Message;
use orbiter::script::{ScriptContext, ScriptHost, ScriptInput, ScriptLimits, TransformOutcome};

const BATCHES: usize = 5;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut args = std::env::args().skip(1);
    let script = args.next().map_or_else(
        || root.join("engine/benches/load/patient_encounter.rhai"),
        PathBuf::from,
    );
    let message = args
        .next()
        .map_or_else(|| root.join("fixtures/hl7v2/adt_a01.hl7"), PathBuf::from);
    let runs: usize = args.next().map_or(1000, |n| n.parse().expect("runs"));
    let vary: Vec<String> = args
        .next()
        .unwrap_or_else(|| "MRN100234,ACCT5566778".into())
        .split(',')
        .map(str::to_string)
        .collect();

    let host = ScriptHost::new(&root.join("scripts/lib"), ScriptLimits::default()).unwrap();
    let ast = host.compile_file(&script).unwrap();
    let text = String::from_utf8(std::fs::read(&message).unwrap()).unwrap();
    let ctx = ScriptContext {
        channel: "cpu".into(),
        script_dir: script.parent().unwrap_or(Path::new(".")).to_path_buf(),
        transaction_id: Some(1),
        output_tree: true,
    };
    let bundle = |n: usize| {
        let variant = vary.iter().fold(text.clone(), |t, token| {
            t.replace(token, &format!("{token}{n}"))
        });
        let msg = Message::parse(variant.as_bytes()).unwrap();
        match host
            .run_transform(&ast, ScriptInput::Hl7(&msg), &ctx)
            .unwrap()
        {
            TransformOutcome::Output { output, .. } => output.to_value(),
            other => panic!("{}: no output: {other:?}", script.display()),
        }
    };

    let dir = tempfile::tempdir().unwrap();
    let cdr = Cdr::open(dir.path(), 64 << 20).unwrap();
    let per = cpu::measure(
        BATCHES,
        runs,
        |batch| {
            (0..runs)
                .map(|n| bundle(batch * runs + n))
                .collect::<Vec<_>>()
        },
        |bundles| {
            for b in bundles {
                let (status, body) = cdr.process_bundle(b, "urn:orbiter:embedded");
                assert_eq!(status, 200, "{body}");
            }
        },
    );
    println!(
        "{}: cpu {:.1} µs/Bundle ({:.0} Bundles/s per core; batches {:.1}..{:.1}), wall {:.1} µs",
        script.file_name().unwrap_or_default().to_string_lossy(),
        per.cpu,
        1e6 / per.cpu,
        per.cpu_min,
        per.cpu_max,
        per.wall,
    );
}
