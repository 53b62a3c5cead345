//! CPU time per run of a transform, for A/B comparisons on a shared machine.
//!
//! Criterion measures wall time, which on a loaded 2-core machine swings by ±20% between runs
//! (other processes preempt the benchmark). This measures the thread's own on-CPU time
//! (`/proc/thread-self/schedstat`, Linux), which preemption does not inflate, and prints the
//! median of several batches. Scripts are read at start, so a script change needs no rebuild.
//!
//! Run: `cargo run --release -p orbiter --example script_cpu -- [script] [message] [runs]`
//! (defaults: scripts/adt_to_fhir.rhai, fixtures/hl7v2/adt_a01_full.hl7, 2000 runs per batch).
//! A message that is not HL7 v2 (by its extension: `.xml` C-CDA, `.json` FHIR, `.csv` one row)
//! is parsed on every run, as the transform worker does, so the figure includes the parser:
//! `-- scripts/ccda_to_fhir.rhai fixtures/ccda/ccd_full.xml 20`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use orbiter::format::{self, Format};
use orbiter::hl7::Message;
use orbiter::script::{ScriptContext, ScriptHost, ScriptInput, ScriptLimits, TransformOutcome};

// The allocator the `orbiter` binary runs with (engine/src/main.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCHES: usize = 7;

/// Nanoseconds this thread has spent on a CPU.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("/proc/thread-self/schedstat (Linux only)")
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut args = std::env::args().skip(1);
    let script = args
        .next()
        .map_or_else(|| root.join("scripts/adt_to_fhir.rhai"), PathBuf::from);
    let message = args.next().map_or_else(
        || root.join("fixtures/hl7v2/adt_a01_full.hl7"),
        PathBuf::from,
    );
    let runs: u64 = args.next().map_or(2000, |n| n.parse().expect("runs"));

    let host = ScriptHost::new(&root.join("scripts/lib"), ScriptLimits::default()).unwrap();
    let ast = host.compile_file(&script).unwrap();
    let raw = std::fs::read(&message).unwrap();
    let format = Format::from_file_name(&message.to_string_lossy()).unwrap_or_default();
    // A CSV file: its first row, as it is journaled.
    let raw = match format {
        Format::Csv => {
            let options = format::csv::CsvOptions::default();
            format::csv::journal_rows(raw.as_slice(), &options)
                .next()
                .expect("a data row")
                .unwrap()
                .bytes
        }
        _ => raw,
    };
    let hl7 = (format == Format::Hl7v2).then(|| Message::parse(&raw).unwrap());
    let ctx = ScriptContext {
        channel: "cpu".into(),
        script_dir: script.parent().unwrap_or(Path::new(".")).to_path_buf(),
        transaction_id: Some(1),
    };
    let run = || {
        let input = match &hl7 {
            Some(msg) => ScriptInput::Hl7(msg),
            None => ScriptInput::Document {
                value: format::script_input(format, &raw, &Default::default(), &Default::default())
                    .unwrap(),
                raw: &raw,
            },
        };
        host.run_transform(&ast, input, &ctx).unwrap()
    };
    match run() {
        TransformOutcome::Output { .. } => {}
        other => panic!("{}: no output: {other:?}", script.display()),
    }

    let mut cpu = Vec::with_capacity(BATCHES);
    let mut wall = Vec::with_capacity(BATCHES);
    for _ in 0..BATCHES {
        let (c0, w0) = (thread_cpu_ns(), Instant::now());
        for _ in 0..runs {
            std::hint::black_box(run());
        }
        cpu.push((thread_cpu_ns() - c0) as f64 / runs as f64 / 1000.0);
        wall.push(w0.elapsed().as_secs_f64() * 1e6 / runs as f64);
    }
    cpu.sort_by(f64::total_cmp);
    wall.sort_by(f64::total_cmp);
    let (c, w) = (cpu[BATCHES / 2], wall[BATCHES / 2]);
    println!(
        "{}: cpu {c:.1} µs/run ({:.0} runs/s per core; batches {:.1}..{:.1}), wall {w:.1} µs",
        message.file_name().unwrap_or_default().to_string_lossy(),
        1e6 / c,
        cpu[0],
        cpu[BATCHES - 1],
    );
}
