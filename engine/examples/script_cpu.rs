//! CPU time per run of a transform, for A/B comparisons on a shared machine: the median of
//! several batches of this thread's on-CPU time (see `common/cpu.rs`). Scripts are read at
//! start, so a script change needs no rebuild.
//!
//! Run: `cargo run --release -p orbiter --example script_cpu -- [script] [message] [runs]`
//! (defaults: scripts/adt_to_fhir.rhai, fixtures/hl7v2/adt_a01_full.hl7, 2000 runs per batch).
//! A message that is not HL7 v2 (by its extension: `.xml` C-CDA, `.json` FHIR, `.csv` one row)
//! is parsed on every run, as the transform worker does, so the figure includes the parser:
//! `-- scripts/ccda_to_fhir.rhai fixtures/ccda/ccd_full.xml 20`.
//! `SEGMENTS=issue7` keeps only the first MSH, EVN, PID, PV1, NK1, AL1 and DG1 of an HL7 v2
//! message (issue 7's target message, cut from `adt_a01_full.hl7`); `SEGMENTS=MSH,PID,...`
//! names others.

#[path = "common/cpu.rs"]
mod cpu;
#[path = "common/segments.rs"]
mod segments;

use std::path::{Path, PathBuf};

use orbiter::format::{self, Format};
use orbiter::hl7::Message;
use orbiter::script::{ScriptContext, ScriptHost, ScriptInput, ScriptLimits, TransformOutcome};

const BATCHES: usize = 7;

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
    let cut = std::env::var("SEGMENTS").unwrap_or_default();
    let raw = match cut.as_str() {
        "" => raw,
        "issue7" => segments::first_of_each(&raw, segments::ISSUE7),
        list => segments::first_of_each(&raw, &list.split(',').collect::<Vec<_>>()),
    };
    let hl7 = (format == Format::Hl7v2).then(|| Message::parse(&raw).unwrap());
    let ctx = ScriptContext {
        channel: "cpu".into(),
        script_dir: script.parent().unwrap_or(Path::new(".")).to_path_buf(),
        transaction_id: Some(1),
        output_tree: false,
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

    let per = cpu::measure(
        BATCHES,
        runs as usize,
        |_| (),
        |()| {
            for _ in 0..runs {
                std::hint::black_box(run());
            }
        },
    );
    println!(
        "{}{}: cpu {:.1} µs/run ({:.0} runs/s per core; batches {:.1}..{:.1}), wall {:.1} µs",
        message.file_name().unwrap_or_default().to_string_lossy(),
        if cut.is_empty() {
            String::new()
        } else {
            format!(" (SEGMENTS={cut})")
        },
        per.cpu,
        1e6 / per.cpu,
        per.cpu_min,
        per.cpu_max,
        per.wall,
    );
}
