//! The floor sled puts under issue 6's end-to-end target: how many Patient + Encounter Bundles
//! a second sled can take when it does nothing but insert the keys the embedded CDR writes for
//! them (current records and index entries), with no planning, validation, JSON, value log,
//! fsync, journal or MLLP around it.
//!
//! Writes `runs` Bundles (each a new patient and visit, as `cdr_cpu` makes them) through the
//! CDR into a scratch store, reads back the keys of its sled tree, groups them by the resource
//! id they end with (UUIDv7: time-ordered, so the groups come back in the order they were
//! written), then inserts them again, in that order, into a fresh sled database opened as the
//! CDR opens its own. Reports the inserts' CPU a Bundle on one thread (the CDR applies commits
//! under its write lock, one writer at a time; the median of five batches, each the next fifth
//! of the Bundles) and the Bundles a second both cores reach with
//! two threads inserting disjoint Bundles at once (an upper bound: the CDR never does that).
//!
//! Run: `cargo run --release -p orbiter --example sled_floor -- [runs]` (default 20,000).

#[path = "common/cpu.rs"]
mod cpu;

use std::path::Path;
use std::time::Instant;

use orbiter::cdr::Cdr;
use orbiter::hl7::Message;
use orbiter::script::{ScriptContext, ScriptHost, ScriptInput, ScriptLimits, TransformOutcome};

/// The length of a UUID in text, which every current-record and index key ends with.
const ID_LEN: usize = 36;

/// Batches the one-thread figure is the median of.
const BATCHES: usize = 5;

type Entry = (sled::IVec, sled::IVec);

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let runs: usize = std::env::args()
        .nth(1)
        .map_or(20_000, |n| n.parse().expect("runs"));
    let script = root.join("engine/benches/load/patient_encounter.rhai");
    let text = std::fs::read_to_string(root.join("fixtures/hl7v2/adt_a01.hl7")).unwrap();

    let host = ScriptHost::new(&root.join("scripts/lib"), ScriptLimits::default()).unwrap();
    let ast = host.compile_file(&script).unwrap();
    let ctx = ScriptContext {
        channel: "floor".into(),
        script_dir: root.join("engine/benches/load"),
        transaction_id: Some(1),
        output_tree: true,
    };

    let scratch = tempfile::tempdir().unwrap();
    {
        let cdr = Cdr::open(scratch.path(), 32 << 20).unwrap();
        for n in 0..runs {
            let variant = text
                .replace("MRN100234", &format!("MRN100234{n}"))
                .replace("ACCT5566778", &format!("ACCT5566778{n}"));
            let msg = Message::parse(variant.as_bytes()).unwrap();
            let bundle = match host
                .run_transform(&ast, ScriptInput::Hl7(&msg), &ctx)
                .unwrap()
            {
                TransformOutcome::Output { output, .. } => output.to_value(),
                other => panic!("no output: {other:?}"),
            };
            let (status, body) = cdr.process_bundle(bundle, "urn:orbiter:embedded");
            assert_eq!(status, 200, "{body}");
        }
    }

    // The keys of each resource, in the order the resources were created.
    let db = orbiter::sled_db::open(&sled::Config::new().path(scratch.path())).unwrap();
    let tree = db.open_tree("cdr").unwrap();
    let mut by_id: std::collections::BTreeMap<Vec<u8>, Vec<Entry>> = Default::default();
    for entry in tree.iter() {
        let (key, value) = entry.unwrap();
        if key.len() < ID_LEN || !matches!(key[0], b'R' | b'I' | b'D') {
            continue; // store metadata
        }
        let id = key[key.len() - ID_LEN..].to_vec();
        by_id.entry(id).or_default().push((key, value));
    }
    drop(tree);
    drop(db);
    let resources: Vec<Vec<Entry>> = by_id.into_values().collect();
    if std::env::var_os("SHOW_KEYS").is_some() {
        for resource in resources.iter().take(2) {
            for (k, v) in resource {
                println!("{:?} ({} value bytes)", String::from_utf8_lossy(k), v.len());
            }
        }
    }
    let keys: usize = resources.iter().map(Vec::len).sum();
    assert_eq!(
        resources.len(),
        2 * runs,
        "a Patient and an Encounter a Bundle"
    );
    println!(
        "{runs} Bundles: {keys} keys ({:.1} a Bundle), {} resources",
        keys as f64 / runs as f64,
        resources.len()
    );

    // One thread, as the CDR's writers (serialised by its write lock) insert them.
    let one = tempfile::tempdir().unwrap();
    let db = open_like_the_cdr(one.path());
    let tree = db.open_tree("cdr").unwrap();
    // Five batches, each the next fifth of the Bundles (the tree grows as in the CDR).
    let fifth = resources.len() / 10 * 2;
    let before = process_cpu_us();
    let per = cpu::measure(
        BATCHES,
        runs / BATCHES,
        |batch| &resources[batch * fifth..(batch + 1) * fifth],
        |batch| {
            for (key, value) in batch.iter().flatten() {
                tree.insert(key, value).unwrap();
            }
        },
    );
    let all = process_cpu_us() - before;
    println!(
        "one thread: {:.1} µs of CPU a Bundle ({:.0} Bundles/s on one core; batches \
         {:.1}..{:.1}), wall {:.1} µs; with sled's own threads {:.1} µs",
        per.cpu,
        1e6 / per.cpu,
        per.cpu_min,
        per.cpu_max,
        per.wall,
        all / runs as f64
    );
    drop(tree);
    drop(db);

    // Two threads, each inserting every other Bundle's keys: both cores, nothing else.
    let two = tempfile::tempdir().unwrap();
    let db = open_like_the_cdr(two.path());
    let tree = db.open_tree("cdr").unwrap();
    let (started, before) = (Instant::now(), process_cpu_us());
    std::thread::scope(|s| {
        for half in 0..2 {
            let (tree, resources) = (&tree, &resources);
            s.spawn(move || {
                for bundle in resources.chunks(2).skip(half).step_by(2) {
                    for (key, value) in bundle.iter().flatten() {
                        tree.insert(key, value).unwrap();
                    }
                }
            });
        }
    });
    let secs = started.elapsed().as_secs_f64();
    println!(
        "two threads: {:.0} Bundles/s ({:.1} µs of wall time, {:.1} µs of CPU a Bundle)",
        runs as f64 / secs,
        secs * 1e6 / runs as f64,
        (process_cpu_us() - before) / runs as f64
    );
}

/// This process's CPU time so far (every thread, user and system), in µs.
fn process_cpu_us() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // USER_HZ is 100 on every Linux this runs on.
    ticks * 10_000.0
}

/// A sled database configured as `cdr::store::Store::open` configures its own.
fn open_like_the_cdr(dir: &Path) -> sled::Db {
    orbiter::sled_db::open(
        &sled::Config::new()
            .path(dir)
            .cache_capacity(32 << 20)
            .flush_every_ms(None)
            .mode(sled::Mode::HighThroughput),
    )
    .unwrap()
}
