//! The `vitte` binary; see `vitte --help`.

fn main() -> std::process::ExitCode {
    match vitte::cli::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One line: the outermost context and its causes.
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
