//! The `assent` command line: `serve`, `demo`, `check-config`, `translate`, `ledger verify`,
//! `verify` (an audit export, offline), `chaincode`, `keys generate`, `keys export
//! --from-database`, `--version`.
//!
//! Exit codes: 0 success, 64 bad configuration or usage (EX_USAGE; missing keys included), 1
//! any other failure.

pub mod verify;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, LedgerBackend};

/// Exit status for bad configuration or usage (sysexits EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

/// What `assent --version` prints: the release, the commit the binary was built from and the
/// build's date (`gateway/build.rs`; `unknown` when built without a git checkout).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("ASSENT_BUILD_COMMIT"),
    ", built ",
    env!("ASSENT_BUILD_DATE"),
    ")"
);

/// Assent: a FHIR gateway with ledger-backed consent.
#[derive(Debug, Parser)]
#[command(name = "assent", version = VERSION, about)]
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
    #[cfg(feature = "demo")]
    Demo {
        /// Address the gateway listens on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Port of the DEMO identity provider on 127.0.0.1 (0: any free port, printed).
        #[arg(long, default_value_t = 0)]
        idp_port: u16,
        /// Log filter for the requests logged on stderr (`info`, `warn`, `assent_gateway=debug`).
        #[arg(long, default_value = "info")]
        log_level: String,
    },
    /// Check a configuration file and exit: 0 when valid, 64 naming the bad key otherwise.
    CheckConfig {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Dry-run a site's adapter and version conversion on a resource file, as the gateway
    /// would apply them: prints the output (stdout) and the issues (stderr). Exit 0 when it
    /// translates without errors, 1 on errors (or, with --strict, warnings), 64 on bad
    /// configuration or a broken adapter.
    Translate {
        #[arg(
            long,
            short = 'c',
            value_name = "FILE",
            env = "ASSENT_CONFIG",
            default_value = "assent.toml"
        )]
        config: PathBuf,
        /// The site whose adapter and FHIR version apply.
        #[arg(long)]
        site: String,
        /// `to-network`: FILE is what the site answers; `to-site`: FILE is what a client sends.
        #[arg(long, default_value = "to-network")]
        direction: String,
        /// The client's FHIR version: the output's towards the network, the input's towards the
        /// site (STU3, R4, R4B, R5). Default: the site's.
        #[arg(long)]
        to: Option<String>,
        /// Fail (exit 1) on warnings too.
        #[arg(long)]
        strict: bool,
        /// The resource (JSON); `-` reads stdin.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// The embedded consent ledger (`verify` does not apply to Fabric: its peers validate
    /// every block).
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
    /// The gateway's keys (docs/keys.md): a new key file, or the keys an older version kept in
    /// its database moved into one.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
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
pub enum KeysCommand {
    /// Write a new key file (mode 0600; an existing file is never replaced) with a fresh
    /// consortium key, node key, paging secret and console session secret. A new consortium
    /// key is for a new network: every member uses the same one, and a gateway that already
    /// holds consents needs the key they were written with.
    Generate {
        #[arg(long, value_name = "KEYFILE")]
        out: PathBuf,
    },
    /// Move the keys an older version kept in its database (`node_settings`) and its
    /// configuration file into a new key file (mode 0600), then delete them from the database.
    /// Exit 0 when moved, 1 when there was nothing to move or it failed, 64 on bad usage.
    Export {
        /// The source: the database of the configuration (the only source there is).
        #[arg(long, required = true)]
        from_database: bool,
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
        #[arg(long, value_name = "KEYFILE")]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Recompute every block's hash, link and signature; name the first bad block.
    /// Exit 0 when the whole chain holds, 1 when a block is bad, 64 on bad configuration or
    /// when the configured backend is Fabric (not applicable: nothing is checked).
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
                let adapters = match crate::services::adapters::Adapters::load(&config) {
                    Ok(adapters) => adapters,
                    Err(e) => {
                        eprintln!("{}: {e}", file.display());
                        return ExitCode::from(EXIT_USAGE);
                    }
                };
                println!(
                    "{}: valid ({} site{})",
                    file.display(),
                    config.sites.len(),
                    if config.sites.len() == 1 { "" } else { "s" }
                );
                match (config.ledger.backend, &config.ledger.fabric) {
                    (LedgerBackend::Fabric, Some(fabric)) => println!(
                        "ledger: fabric, channel `{}`, chaincode `{}`, peer {}, as {} (files read, the key matches the certificate)",
                        fabric.channel, fabric.chaincode, fabric.peer_endpoint, fabric.msp_id
                    ),
                    _ => println!("ledger: embedded, in {}", config.database_url),
                }
                for site in adapters.sites() {
                    if let Some(adapter) = adapters.get(site) {
                        let s = adapter.summary();
                        println!(
                            "  site {site}: adapter {} ({} identifier systems, {} ConceptMaps with {} mapped codes, {} extensions, {} reference bases, {} profiles, {} defaults, {} drops)",
                            adapter.file(),
                            s.identifier_systems,
                            s.concept_maps,
                            s.mapped_codes,
                            s.extensions,
                            s.reference_bases,
                            s.profiles,
                            s.defaults,
                            s.drops
                        );
                    }
                }
                if let Err(e) = config.key_material.require(&config) {
                    eprintln!("{}: {e}", file.display());
                    return ExitCode::from(EXIT_USAGE);
                }
                println!("keys: {}", key_sources(&config));
                print!("{}", not_checked(&config));
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
            crate::http::observability::init_tracing(&config.log);
            if cfg!(feature = "bench-no-receipts") {
                tracing::warn!("BENCHMARK BUILD: responses are released without receipts");
            }
            let workers = workers.unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            });
            let result = actix_web::rt::System::new().block_on(crate::app::serve(config, workers));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.is_configuration() => {
                    eprintln!("assent: {e}");
                    ExitCode::from(EXIT_USAGE)
                }
                Err(e) => {
                    eprintln!("assent: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Translate {
            config,
            site,
            direction,
            to,
            strict,
            file,
        } => translate(&config, &site, &direction, to.as_deref(), strict, &file),
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
            if config.ledger.backend == LedgerBackend::Fabric {
                eprintln!(
                    "assent ledger verify: not applicable to the Fabric backend: this command checks the \
                     embedded ledger's hash chain and signatures. On Fabric every peer validates each \
                     block (orderer signatures, endorsement policy, read-set versions) before it commits \
                     it; audit the channel with Fabric's own tools (e.g. `peer channel fetch`, \
                     `peer channel getinfo`). Nothing was checked."
                );
                return ExitCode::from(EXIT_USAGE);
            }
            match crate::services::ledger::verify(&config) {
                Ok(report) => {
                    println!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e @ crate::services::ledger::LedgerVerifyError::Keys(_)) => {
                    eprintln!("assent ledger verify: {e}");
                    ExitCode::from(EXIT_USAGE)
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
        } => ExitCode::from(crate::cli::verify::main(&crate::cli::verify::VerifyArgs {
            export,
            config,
            anchors,
            options: assent_receipts::VerifyOptions {
                complete,
                require_anchored,
            },
        })),
        Command::Keys { command } => keys(command),
        #[cfg(feature = "demo")]
        Command::Demo { log_level, .. }
            if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() =>
        {
            eprintln!(
                "assent demo: --log-level {log_level:?} is not a log filter (e.g. info, warn, assent_gateway=debug)"
            );
            ExitCode::from(EXIT_USAGE)
        }
        #[cfg(feature = "demo")]
        Command::Demo {
            listen,
            idp_port,
            log_level,
        } => match crate::demo::run(&crate::demo::DemoOptions {
            listen,
            idp_port,
            log_level,
            // The printed `assent verify` runs this very program.
            program: std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "assent".to_owned()),
        }) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("assent demo: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// What `check-config` cannot check without the network, and when it is checked instead: the
/// issuers' discovery (at start: `serve` stops when one fails), a Fabric peer and Redis (at
/// start), the sites and their credentials (at the first request).
pub fn not_checked(config: &Config) -> String {
    let mut text = String::new();
    let mut at_start = Vec::new();
    for issuer in &config.auth.issuers {
        at_start.push(format!(
            "issuer {}: OpenID discovery and its JWKS",
            issuer.issuer.as_str().trim_end_matches('/')
        ));
    }
    if let (LedgerBackend::Fabric, Some(fabric)) = (config.ledger.backend, &config.ledger.fabric) {
        at_start.push(format!("ledger: the Fabric peer {}", fabric.peer_endpoint));
    }
    if let Some(redis) = &config.cache.redis_url {
        let host = url::Url::parse(redis)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| "its host".to_owned());
        at_start.push(format!("cache: Redis at {host}"));
    }
    let mut at_request = Vec::new();
    for (id, site) in &config.sites {
        let mut line = format!("site {id}: upstream {}", site.upstream);
        if let crate::config::UpstreamAuth::ClientCredentials { token_url, .. } =
            &site.upstream_auth
        {
            line.push_str(&format!(" and its token URL {token_url}"));
        }
        at_request.push(line);
    }
    if !at_start.is_empty() {
        text.push_str(
            "not checked (needs the network; `serve` checks it at start and stops if it fails):\n",
        );
        for line in &at_start {
            text.push_str(&format!("  {line}\n"));
        }
    }
    if !at_request.is_empty() {
        text.push_str("not checked (needs the network; reached at the first request):\n");
        for line in &at_request {
            text.push_str(&format!("  {line}\n"));
        }
    }
    text
}

/// Where each key the configuration holds came from (never the key).
fn key_sources(config: &Config) -> String {
    let sources: Vec<String> = crate::config::keys::ALL
        .iter()
        .filter_map(|spec| {
            config
                .key_material
                .source(*spec)
                .map(|source| format!("{} from {source}", spec.name))
        })
        .collect();
    sources.join(", ")
}

/// `assent keys generate` and `assent keys export --from-database`.
fn keys(command: KeysCommand) -> ExitCode {
    use crate::config::keys;
    use crate::services::keys::ExportError;
    match command {
        KeysCommand::Generate { out } => match keys::write_key_file(&out, &keys::generate()) {
            Ok(()) => {
                println!(
                    "wrote {} (mode 0600): consortium_key_hex, node_key_hex, paging_secret_hex, \
                     console_session_secret_hex. Name it in [keys] file. The consortium key is \
                     new: give every member of the network the same one (docs/keys.md).",
                    out.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("assent keys generate: {}: {e}", out.display());
                ExitCode::from(EXIT_USAGE)
            }
        },
        KeysCommand::Export {
            from_database: _,
            config,
            out,
        } => {
            let env: Vec<(String, String)> = std::env::vars().collect();
            match crate::services::keys::export_from_database(&config, &env, &out) {
                Ok(export) => {
                    println!("wrote {} (mode 0600):", out.display());
                    for (spec, from) in &export.written {
                        println!("  {} from {from}", spec.name);
                    }
                    if !export.deleted.is_empty() {
                        println!(
                            "deleted from the database's node_settings: {}",
                            export.deleted.join(", ")
                        );
                    }
                    println!(
                        "next: set [keys] file = \"{}\" in {}",
                        out.display(),
                        config.display()
                    );
                    for key in &export.legacy_config_keys {
                        println!(
                            "      and remove `{key}` from it (and its ASSENT_ variable): keys are no longer read from the configuration"
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e @ ExportError::Usage(_)) => {
                    eprintln!("assent keys export: {e}");
                    ExitCode::from(EXIT_USAGE)
                }
                Err(e) => {
                    eprintln!("assent keys export: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `assent translate`: the dry run of `POST /admin/sites/{site}/$translate` from the command
/// line.
fn translate(
    config: &Path,
    site: &str,
    direction: &str,
    to: Option<&str>,
    strict: bool,
    file: &Path,
) -> ExitCode {
    use assent_adapters::site::Direction;
    use assent_fhir::{FhirVersion, Severity};

    let usage = |message: String| {
        eprintln!("assent translate: {message}");
        ExitCode::from(EXIT_USAGE)
    };
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(e) => return usage(format!("{}: {e}", config.display())),
    };
    let Some(site_config) = config.sites.get(site) else {
        return usage(format!("no site `{site}` in the configuration"));
    };
    let Some(direction) = Direction::parse(direction) else {
        return usage(format!(
            "--direction `{direction}`: expected `to-network` or `to-site`"
        ));
    };
    let site_version = site_config.fhir_version;
    let client_version = match to.map(str::parse::<FhirVersion>).transpose() {
        Ok(v) => v.unwrap_or(site_version),
        Err(e) => return usage(format!("--to: {e}")),
    };
    let adapter = match config.adapter_path(site_config) {
        None => None,
        Some(path) => match crate::services::adapters::load_file(&path, site_version) {
            Ok(a) => Some(a),
            Err(e) => return usage(format!("sites.{site}.adapter: {e}")),
        },
    };
    let text = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map(|_| text)
    } else {
        std::fs::read_to_string(file)
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => return usage(format!("{}: {e}", file.display())),
    };
    let resource: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("assent translate: {}: not JSON: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let run = match crate::services::adapters::dry_run(
        adapter.as_ref(),
        site_version,
        direction,
        client_version,
        resource,
    ) {
        Ok(run) => run,
        Err(e) => {
            eprintln!("assent translate: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Numbers as the file wrote them, exponents too.
    let spellings = assent_fhir::spelling::Spellings::of(text.as_bytes());
    match spellings
        .to_vec(&run.output, true)
        .map(|out| String::from_utf8_lossy(&out).into_owned())
    {
        Ok(out) => println!("{out}"),
        Err(_) => return ExitCode::FAILURE,
    }
    for issue in &run.issues {
        eprintln!(
            "{} {} {}: {}",
            issue.severity.as_str(),
            issue.code.as_str(),
            issue.expression.first().map(String::as_str).unwrap_or("-"),
            issue.diagnostics
        );
    }
    let count = |s: Severity| run.issues.iter().filter(|i| i.severity == s).count();
    let errors = count(Severity::Error) + count(Severity::Fatal);
    let warnings = count(Severity::Warning);
    eprintln!(
        "{} {} -> {} ({}{}): {} issue{} ({errors} errors, {warnings} warnings, {} information)",
        site,
        run.from,
        run.to,
        run.direction.as_str(),
        adapter
            .as_ref()
            .map(|a| format!(", adapter {}", a.file()))
            .unwrap_or_default(),
        run.issues.len(),
        if run.issues.len() == 1 { "" } else { "s" },
        count(Severity::Information)
    );
    if errors > 0 || (strict && warnings > 0) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
