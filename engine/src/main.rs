// See engine/Cargo.toml: glibc malloc was the engine's largest cost under load.
#[global_allocator]
static ALLOCATOR: orbiter::allocator::Mimalloc = orbiter::allocator::Mimalloc;

fn main() -> std::process::ExitCode {
    transparent_huge_pages_off_unless_asked();
    match orbiter::cli::main() {
        Ok(code) => code,
        Err(e) => {
            // Not `eprintln!`: it panics when stderr is closed too.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "orbiter: {}",
                orbiter::cli::error_text(&e)
            );
            std::process::ExitCode::from(2)
        }
    }
}

/// mimalloc backs each thread's heap with transparent huge pages when it may: every thread's
/// first allocation then faults in 2 MiB, ~80 MB resident for an idle engine instead of ~25 MB.
/// Once the journal stopped spending its time in the allocator the throughput they bought was
/// within noise (BENCHMARKS.md), so they are off unless `MIMALLOC_ALLOW_THP=1` asks for them.
fn transparent_huge_pages_off_unless_asked() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: PR_SET_THP_DISABLE only sets a flag on this process's memory map; no
        // pointers are passed.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}
