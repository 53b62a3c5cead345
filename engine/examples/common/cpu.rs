//! What the CPU-time examples (`script_cpu`, `cdr_cpu`) share: the engine's allocator, and
//! batches timed in this thread's own on-CPU time.
//!
//! Criterion measures wall time, which on a loaded 2-core machine swings by ±20% between runs
//! (other processes preempt the benchmark). On-CPU time (`/proc/thread-self/schedstat`, Linux)
//! is not inflated by preemption; the median of several batches is reported.

use std::time::Instant;

// The allocator the `orbiter` binary runs with (engine/src/main.rs).
#[global_allocator]
static ALLOCATOR: orbiter::allocator::Mimalloc = orbiter::allocator::Mimalloc;

/// Nanoseconds this thread has spent on a CPU.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("/proc/thread-self/schedstat (Linux only)")
}

/// Per item, in µs: the median batch's CPU and wall time, and the lowest and highest CPU.
pub struct PerItem {
    pub cpu: f64,
    pub wall: f64,
    pub cpu_min: f64,
    pub cpu_max: f64,
}

/// Runs `batches` batches of `items` items: `prepare(batch)` off the clock, then `run` on it.
pub fn measure<T>(
    batches: usize,
    items: usize,
    mut prepare: impl FnMut(usize) -> T,
    mut run: impl FnMut(T),
) -> PerItem {
    let mut cpu = Vec::with_capacity(batches);
    let mut wall = Vec::with_capacity(batches);
    for batch in 0..batches {
        let input = prepare(batch);
        let (c0, w0) = (thread_cpu_ns(), Instant::now());
        run(input);
        cpu.push((thread_cpu_ns() - c0) as f64 / items as f64 / 1000.0);
        wall.push(w0.elapsed().as_secs_f64() * 1e6 / items as f64);
    }
    cpu.sort_by(f64::total_cmp);
    wall.sort_by(f64::total_cmp);
    PerItem {
        cpu: cpu[batches / 2],
        wall: wall[batches / 2],
        cpu_min: cpu[0],
        cpu_max: cpu[batches - 1],
    }
}
