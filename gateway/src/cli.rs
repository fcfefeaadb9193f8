//! The `assent` command line: `serve`, `demo`, `check-config`, `--version`.
//!
//! Exit codes: 0 success, 64 bad configuration or usage (EX_USAGE), 1 any other failure.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

/// Exit status for bad configuration or usage (sysexits EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

/// Assent: a FHIR gateway with ledger-backed consent.
#[derive(Debug, Parser)]
#[command(name = "assent", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway with a configuration file.
    Serve {
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
        /// Worker threads (default: one per core).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Run everything in one process with sample hospitals: no other services needed.
    Demo {
        /// Address the gateway listens on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Check a configuration file and exit: 0 when valid, 64 naming the bad key otherwise.
    CheckConfig {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(config) => {
                println!(
                    "{}: valid ({} site{})",
                    file.display(),
                    config.sites.len(),
                    if config.sites.len() == 1 { "" } else { "s" }
                );
                if config.auth.issuers.is_empty() {
                    eprintln!(
                        "{}: warning: no [[auth.issuers]]: every FHIR request will be refused (401)",
                        file.display()
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                ExitCode::from(EXIT_USAGE)
            }
        },
        Command::Serve { config, workers } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            crate::observability::init_tracing(&config.log);
            let workers = workers.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            });
            let result = actix_web::rt::System::new().block_on(crate::app::serve(config, workers));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("assent: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo { listen } => match crate::demo::run(listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("assent demo: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
