//! The `assent` binary: parses the command line and hands over to [`assent_gateway::cli`].

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: per-thread free lists make the many small allocations of a request cheap (see
/// the dependency's note in Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match assent_gateway::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                assent_gateway::cli::EXIT_USAGE
            } else {
                0
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    assent_gateway::cli::run(cli)
}
