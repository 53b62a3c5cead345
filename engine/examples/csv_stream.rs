//! Streams a CSV file through the journal's row form (`format::csv::journal_rows`) and prints
//! the rows, the bytes they would journal, and the process's peak resident memory: the reader's
//! share of the "100 MB CSV under 128 MB" target.
//!
//! Run: `python3 engine/benches/gen_lab_csv.py /tmp/lab_100mb.csv 100`, then
//! `cargo run --release -p orbiter --example csv_stream -- /tmp/lab_100mb.csv`.

use orbiter::format::csv::{journal_rows, CsvOptions};

fn main() {
    let path = std::env::args().nth(1).expect("usage: csv_stream FILE.csv");
    let file = std::fs::File::open(&path).expect("readable CSV file");
    let (mut rows, mut bytes) = (0u64, 0usize);
    for row in journal_rows(file, &CsvOptions::default()) {
        bytes += row.expect("a well-formed row").bytes.len();
        rows += 1;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let peak = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?");
    println!("{rows} rows, {bytes} journal bytes, peak {peak}");
}
