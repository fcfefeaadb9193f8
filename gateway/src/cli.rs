//! The `assent` command line: `serve`, `demo`, `check-config`, `ledger verify`, `verify`
//! (an audit export, offline), `chaincode`, `--version`.
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
    /// The embedded consent ledger.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Verify an NDJSON audit export (`GET /audit/export`) offline: every receipt's hash,
    /// chain link, inclusion proof and anchor. Exit 0 when all hold, 1 when any fails (each
    /// failure printed with its receipt id), 64 on bad usage.
    Verify {
        #[arg(value_name = "EXPORT")]
        export: PathBuf,
        /// The gateway's configuration: the anchors are read from its ledger.
        #[arg(long, short = 'c', value_name = "FILE", conflicts_with = "anchors")]
        config: Option<PathBuf>,
        /// An anchors file (NDJSON: gateway_id, batch_id, root, n_receipts) instead.
        #[arg(long, value_name = "FILE")]
        anchors: Option<PathBuf>,
        /// The export is unfiltered: a gap in a chain, or a batch cut short, is a failure.
        #[arg(long)]
        complete: bool,
        /// Every receipt must be anchored (no pending tail).
        #[arg(long)]
        require_anchored: bool,
    },
    /// Serve the consent contract as Fabric chaincode-as-a-service (see docs/fabric.md).
    Chaincode {
        /// Address the peer connects to (`connection.json`'s `address`).
        #[arg(long)]
        listen: SocketAddr,
        /// The package id `peer lifecycle chaincode install` printed.
        #[arg(long)]
        package_id: String,
        /// TLS server certificate (PEM); with `--tls-key`.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// CA of the peer's client certificate (PEM): mutual TLS.
        #[arg(long, requires = "tls_cert")]
        tls_client_ca: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Recompute every block's hash, link and signature; name the first bad block.
    /// Exit 0 when the whole chain holds, 1 when a block is bad, 64 on bad configuration.
    Verify {
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    // One process-wide TLS crypto provider for the libraries that use the default.
    assent_fabric::ensure_crypto_provider();
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
        Command::Ledger {
            command: LedgerCommand::Verify { config },
        } => {
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}: {e}", config.display());
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            match crate::ledger_store::verify(&config) {
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("assent ledger verify: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Chaincode {
            listen,
            package_id,
            tls_cert,
            tls_key,
            tls_client_ca,
        } => {
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => {
                    match assent_fabric::ChaincodeTls::from_files(
                        &cert,
                        &key,
                        tls_client_ca.as_deref(),
                    ) {
                        Ok(tls) => Some(tls),
                        Err(e) => {
                            eprintln!("assent chaincode: TLS files: {e}");
                            return ExitCode::from(EXIT_USAGE);
                        }
                    }
                }
                _ => None,
            };
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("assent chaincode: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(assent_fabric::serve_chaincode(listen, package_id, tls)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("assent chaincode: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Verify {
            export,
            config,
            anchors,
            complete,
            require_anchored,
        } => ExitCode::from(crate::audit_verify::main(
            &crate::audit_verify::VerifyArgs {
                export,
                config,
                anchors,
                options: assent_receipts::VerifyOptions {
                    complete,
                    require_anchored,
                },
            },
        )),
        Command::Demo { listen } => match crate::demo::run(listen) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("assent demo: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
