//! `assent verify`: offline verification of an NDJSON export (`GET /audit/export`) against the
//! anchors the ledger holds: every receipt's hash, chain link, inclusion proof and anchor,
//! with each failure reported by export line and receipt id.
//!
//! Owns reading the export (line by line, twice: once for the gateways it names, once to
//! verify; memory does not grow with the export) and the anchors (from the gateway's ledger,
//! opened through `--config`, or from an anchors file). The checks themselves are
//! `assent_receipts::Verifier`'s: the same chain verifier and anchor comparison the gateway's
//! detail view of a receipt runs (`assent_receipts::verify_stored`, `services/audit.rs`).
//!
//! Anchors file: NDJSON, one `{"gateway_id", "batch_id", "root", "n_receipts"}` per batch
//! (what another consortium member's ledger says, when this gateway's store is not at hand).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use assent_receipts::{AnchorSet, Digest, LedgerAnchor, Verifier, VerifyOptions, VerifyReport};
use serde::Deserialize;

use crate::config::Config;
use crate::http::observability::Escaped;

/// Exit status when a check failed (0: all held; 64: bad usage or configuration).
pub const EXIT_FAILED: u8 = 1;

/// What `assent verify` was asked.
#[derive(Debug, Clone)]
pub struct VerifyArgs {
    pub export: PathBuf,
    /// The gateway's configuration: its ledger gives the anchors.
    pub config: Option<PathBuf>,
    /// An anchors file instead of the ledger.
    pub anchors: Option<PathBuf>,
    pub options: VerifyOptions,
}

/// Why verification could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Usage(String),
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    #[error("the ledger: {0}")]
    Ledger(String),
}

fn read_error(path: &Path, e: impl std::fmt::Display) -> VerifyError {
    VerifyError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Runs `assent verify`, printing each failure and the summary; returns the exit status.
pub fn main(args: &VerifyArgs) -> u8 {
    match verify(args) {
        Ok(report) => {
            // Receipt ids and reasons come from the export: escaped, so that a line of it
            // cannot print a line of its own ("all checks held").
            for failure in &report.failures {
                println!("FAIL {}", Escaped(&failure.to_string()));
            }
            println!("{report}");
            if report.all_held() { 0 } else { EXIT_FAILED }
        }
        Err(e @ VerifyError::Usage(_)) => {
            eprintln!("assent verify: {e}");
            crate::cli::EXIT_USAGE
        }
        Err(e) => {
            eprintln!("assent verify: {e}");
            EXIT_FAILED
        }
    }
}

/// Verifies the export against the anchors; the report lists every failure.
pub fn verify(args: &VerifyArgs) -> Result<VerifyReport, VerifyError> {
    let anchors = match (&args.config, &args.anchors) {
        (Some(config), None) => {
            let config = Config::load(config)
                .map_err(|e| VerifyError::Usage(format!("{}: {e}", config.display())))?;
            let gateways = gateways_in(&args.export)?;
            anchors_from_ledger(&config, &gateways)?
        }
        (None, Some(file)) => anchors_from_file(file)?,
        _ => {
            return Err(VerifyError::Usage(
                "give either --config (the gateway's ledger) or --anchors (an anchors file)".into(),
            ));
        }
    };
    verify_with(&args.export, anchors, args.options)
}

/// Verifies the export file against `anchors`, one line at a time.
pub fn verify_with(
    export: &Path,
    anchors: AnchorSet,
    options: VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    let file = File::open(export).map_err(|e| read_error(export, e))?;
    let mut verifier = Verifier::new(anchors, options);
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|e| read_error(export, e))?;
        verifier.check_line(&line);
    }
    Ok(verifier.finish())
}

/// The gateway ids an export names (lines that do not read are left to the verifier).
fn gateways_in(export: &Path) -> Result<BTreeSet<String>, VerifyError> {
    #[derive(Deserialize)]
    struct Line {
        receipt: Gateway,
    }
    #[derive(Deserialize)]
    struct Gateway {
        gateway_id: String,
    }
    let file = File::open(export).map_err(|e| read_error(export, e))?;
    let mut gateways = BTreeSet::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|e| read_error(export, e))?;
        if let Ok(l) = serde_json::from_str::<Line>(&line) {
            gateways.insert(l.receipt.gateway_id);
        }
    }
    Ok(gateways)
}

/// Every anchor the gateway's ledger holds for `gateways` (batches 1, 2, … until one is
/// missing).
pub fn anchors_from_ledger(
    config: &Config,
    gateways: &BTreeSet<String>,
) -> Result<AnchorSet, VerifyError> {
    let store = crate::store::Store::open(&config.database_url)
        .map_err(|e| VerifyError::Ledger(e.to_string()))?;
    let consents = crate::app::open_consents(config, &store).map_err(|e| {
        if e.is_configuration() {
            VerifyError::Usage(e.to_string())
        } else {
            VerifyError::Ledger(e.to_string())
        }
    })?;
    let ledger = consents.ledger();
    // A runtime of its own, on a thread of its own: the caller may be inside another runtime.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| VerifyError::Ledger(e.to_string()))?;
                let mut set = AnchorSet::new();
                for gateway_id in gateways {
                    let gateway_key = consents.key().gateway(gateway_id);
                    for batch_id in 1.. {
                        let record = runtime
                            .block_on(ledger.anchor(&gateway_key, batch_id))
                            .map_err(|e| VerifyError::Ledger(e.to_string()))?;
                        let Some(record) = record else { break };
                        if !set.insert_record(gateway_id, &record) {
                            return Err(VerifyError::Ledger(format!(
                                "gateway {gateway_id}, batch {batch_id}: the anchored root is not a digest"
                            )));
                        }
                    }
                }
                Ok(set)
            })
            .join()
            .map_err(|_| VerifyError::Ledger("the ledger reader failed".into()))?
    })
}

/// Anchors from an anchors file.
pub fn anchors_from_file(path: &Path) -> Result<AnchorSet, VerifyError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct AnchorLine {
        gateway_id: String,
        batch_id: u64,
        root: String,
        n_receipts: u64,
    }
    let file = File::open(path).map_err(|e| read_error(path, e))?;
    let mut set = AnchorSet::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| read_error(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad =
            |what: &str| VerifyError::Usage(format!("{}: line {}: {what}", path.display(), n + 1));
        let a: AnchorLine = serde_json::from_str(&line).map_err(|e| bad(&e.to_string()))?;
        let root =
            Digest::from_hex(&a.root).ok_or_else(|| bad("`root` is not a SHA-256 digest"))?;
        set.insert(
            &a.gateway_id,
            a.batch_id,
            LedgerAnchor {
                root,
                n_receipts: a.n_receipts,
            },
        );
    }
    Ok(set)
}
