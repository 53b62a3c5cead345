// See engine/Cargo.toml: glibc malloc was the engine's largest cost under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // mimalloc's arenas are huge-page aligned; with transparent huge pages each thread's first
    // touch of a fresh arena faulted in 2 MiB (~50 MB resident at idle). Small pages keep the
    // engine near 15 MB idle, which matters on a Raspberry Pi.
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_THP_DISABLE only sets a flag on this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    match orbiter::cli::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("orbiter: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
