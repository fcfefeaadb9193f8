//! Receipts of every access through the gateway: the receipt and its canonical hash, the
//! per-gateway hash chain, Merkle batches with inclusion proofs and the batcher that closes
//! them, audit renderings (FHIR AuditEvent after the IHE Basic Audit Log Patterns, NDJSON,
//! CSV) and offline verification of an export against the ledger's anchors.
//!
//! Leaves out every kind of I/O: no SQL, no HTTP, no clock, no ledger calls. The gateway
//! stores receipts (durably, before releasing a response), runs the anchoring task, calls the
//! ledger and serves the audit API; it hands this crate values and the time.
//!
//! **Invariant:** this crate does no I/O, spawns nothing and reads no clock.
//!
//! # How the gateway uses it
//!
//! 1. Record phase: build a [`Receipt`] ([`Receipt::new`] with the [`SubjectKeys`] of the
//!    request's [`ReceiptSubjects`], then the facts), append it to the gateway's [`Chain`]
//!    (under one lock), store the [`ChainedReceipt`] (its [`Receipt::canonical_bytes`] are
//!    what was hashed, and read back) and the clear subjects, then release the
//!    response with `X-Assent-Receipt: {id}` and `X-Assent-Consent:
//!    {Receipt::consent_header}`.
//! 2. Anchoring task: feed stored receipts in sequence order to a [`Batcher`] and call
//!    [`Batcher::poll`] at [`Batcher::deadline`]; store each [`ClosedBatch`], submit
//!    [`ClosedBatch::submission`] to the ledger, then mark it anchored; each receipt's proof
//!    ([`InclusionProof::to_bytes`]) and [`ClosedBatch::anchoring`] serve the audit API. See
//!    `batch.rs` for resumption after a restart.
//! 3. Audit: [`audit_event`] per receipt (in the FHIR version asked for), [`ndjson_line`] or
//!    [`csv_row`] per export row.
//! 4. `assent verify`: [`Verifier`] over an NDJSON export, with the anchors read from the
//!    ledger.

mod audit;
mod batch;
mod chain;
mod digest;
mod export;
mod merkle;
mod receipt;
mod time;
mod verify;

pub use audit::{
    ACTOR_KEY_SYSTEM, AuditSource, BALP_PROFILE_BASE, BalpPattern, CLIENT_SYSTEM, GATEWAY_SYSTEM,
    PATIENT_KEY_SYSTEM, RECEIPT_SYSTEM, SITE_POLICY_SYSTEM, audit_event,
};
pub use batch::{
    AdoptError, BatchConfig, BatchError, BatchLeaf, Batcher, ClosedBatch, Resume, adopt_anchor,
    close_batch,
};
pub use chain::{
    BreakKind, Chain, ChainBreak, ChainError, ChainVerifier, ChainedReceipt, verify_chain,
};
pub use digest::{BadDigest, Digest};
pub use export::{
    AnchorWire, Anchoring, CSV_COLUMNS, ConsentWire, ExportError, ExportedReceipt, ProofWire,
    ReceiptRecord, ReceiptWire, ResourceWire, SubjectsWire, csv_header, csv_row, ndjson_line,
    parse_ndjson_line,
};
pub use merkle::{
    InclusionProof, MerkleTree, leaf_hash, merkle_root, node_hash, root_from_proof, root_hash,
    verify_inclusion,
};
pub use receipt::{
    ACTOR_DOMAIN, AccessDecision, ConsentRelied, DecodeError, QUERY_DOMAIN, RECEIPT_DOMAIN,
    Receipt, ReceiptSubjects, ResourceEntry, SubjectKeys, parse_interaction,
};
pub use time::{format_instant, parse_instant};
pub use verify::{
    AnchorSet, Failure, FailureKind, LedgerAnchor, Verifier, VerifyOptions, VerifyReport,
    verify_export,
};

#[cfg(test)]
mod tidy {
    //! Housekeeping checks on this crate's own sources.

    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    fn sources() -> Vec<(PathBuf, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in ["src", "tests", "benches"] {
            rust_files(&root.join(dir), &mut files);
        }
        files
            .into_iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap();
                (p, text)
            })
            .collect()
    }

    #[test]
    fn every_file_says_what_it_owns_and_no_mod_rs() {
        for (path, text) in sources() {
            assert!(
                text.starts_with("//!"),
                "{} must open with `//!`",
                path.display()
            );
            assert_ne!(path.file_name().unwrap(), "mod.rs", "{}", path.display());
        }
    }

    /// **Invariant:** receipts is pure: no I/O, no threads, no clock, no SQL, no HTTP.
    #[test]
    fn library_code_does_no_io_and_reads_no_clock() {
        let forbidden = [
            ["std::", "fs"].concat(),
            ["std::", "net"].concat(),
            ["std::", "thread"].concat(),
            ["System", "Time"].concat(),
            ["Instant", "::now"].concat(),
            ["tok", "io"].concat(),
            ["async ", "fn"].concat(),
            ["die", "sel"].concat(),
            ["act", "ix"].concat(),
        ];
        for (path, text) in sources() {
            if !path.components().any(|c| c.as_os_str() == "src") {
                continue;
            }
            let library = text.split("#[cfg(test)]").next().unwrap_or_default();
            for word in &forbidden {
                assert!(
                    !library.contains(word.as_str()),
                    "{} uses `{word}`",
                    path.display()
                );
            }
        }
        let manifest =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
                .unwrap();
        let deps = manifest
            .split("[dependencies]")
            .nth(1)
            .unwrap()
            .split("\n[")
            .next()
            .unwrap();
        let allowed = [
            "assent-consent",
            "assent-fhir",
            "base64",
            "hex",
            "serde",
            "serde_json",
            "sha2",
            "thiserror",
        ];
        for line in deps.lines().filter(|l| l.contains('=')) {
            let name = line.split('=').next().unwrap().trim();
            assert!(
                allowed.contains(&name),
                "dependency `{name}` is not on the pure list"
            );
        }
    }
}
