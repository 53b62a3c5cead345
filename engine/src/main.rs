// See engine/Cargo.toml: glibc malloc was the engine's largest cost under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    match orbiter::cli::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("orbiter: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
