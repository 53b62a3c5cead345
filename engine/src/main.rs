fn main() -> std::process::ExitCode {
    match orbiter::cli::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("orbiter: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
