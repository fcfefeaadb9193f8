//! Offline verification of an export: every receipt's hash chain, Merkle proof and anchor,
//! checked against the anchors read from the ledger; each failure reported with its receipt
//! id and export line, and a summary of whether all held.
//!
//! Owns the checks and the report. Leaves out reading the file and the ledger (`assent
//! verify` in the gateway reads the export line by line and the anchors through the ledger
//! interface, and turns [`VerifyReport::all_held`] into its exit status).
//!
//! The gateway's detail view of one stored receipt (the audit API and the console) is
//! checked here too, with the same chain verifier and anchor comparison
//! ([`verify_stored`]): one verification for the gateway and `assent verify`.
//!
//! The export lists each gateway's receipts in sequence order (gateways may interleave).
//! What is checked, per receipt:
//! - its hash: recomputed from the content, compared with the stored hash;
//! - its chain link: per gateway, against the receipt before it in the export (every gap is a
//!   break in a complete export; a filtered export checks neighbours only);
//! - its anchor: the ledger holds the batch; the export's root is the ledger's; the proof
//!   leads from the *recomputed* hash to the ledger's root (so altered content fails here
//!   too, even with a matching stored hash);
//! - anchoring without holes: a receipt without a proof before an anchored receipt of the
//!   same gateway was skipped;
//! - in a complete export, nothing cut away: every batch the ledger anchors from the export's
//!   first batch on must have all its receipts in the export (the anchors handed in are then
//!   all of the gateway's), so dropping the tail of a log is found too. Receipts without a proof after the last anchored one are
//!   pending (not yet anchored), a failure only if the options require every receipt
//!   anchored.
//!
//! An export is itself a read of the audit log, and the gateway writes its receipt before the
//! first line: an export of the whole chain ends, for the gateway that served it, with that
//! receipt (kind `audit-export`). Such an end marks how far the log went when the export was
//! made: in a complete export, batches the ledger anchored *after* it (they start past the
//! marker) are later accesses, not a cut tail, and receipts the export holds without a proof
//! whose batch the ledger anchored since count as present (the batches' ranges follow from the
//! ledger's anchors, which cover a chain from receipt 1 without gaps). The marker itself cannot
//! be anchored in its own export and is not required to be. Dropping lines before the marker
//! breaks the chain; dropping the marker with the lines before it leaves an export that does
//! not end with one, checked as strictly as before.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use assent_consent::AnchorRecord;

use crate::chain::{BreakKind, ChainVerifier};
use crate::digest::Digest;
use crate::export::{Anchoring, ExportedReceipt, parse_ndjson_line};
use crate::merkle::root_from_proof;
use crate::receipt::{AccessKind, AuditAction, Receipt};

/// A batch root as the ledger holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerAnchor {
    pub root: Digest,
    pub n_receipts: u64,
}

/// The anchors read from the ledger, by gateway id and batch id.
#[derive(Debug, Clone, Default)]
pub struct AnchorSet {
    anchors: HashMap<(String, u64), LedgerAnchor>,
}

impl AnchorSet {
    pub fn new() -> AnchorSet {
        AnchorSet::default()
    }

    pub fn insert(&mut self, gateway_id: &str, batch_id: u64, anchor: LedgerAnchor) {
        self.anchors
            .insert((gateway_id.to_owned(), batch_id), anchor);
    }

    /// Adds an anchor record read from the ledger for `gateway_id` (whose keyed hash is the
    /// record's `gateway_key`); `false` when its root is not a digest.
    pub fn insert_record(&mut self, gateway_id: &str, record: &AnchorRecord) -> bool {
        match Digest::from_hex(&record.root) {
            Some(root) => {
                self.insert(
                    gateway_id,
                    record.batch_id,
                    LedgerAnchor {
                        root,
                        n_receipts: record.n_receipts,
                    },
                );
                true
            }
            None => false,
        }
    }

    pub fn get(&self, gateway_id: &str, batch_id: u64) -> Option<&LedgerAnchor> {
        self.anchors.get(&(gateway_id.to_owned(), batch_id))
    }

    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// The batches anchored for `gateway_id`, in batch order.
    pub fn batches(&self, gateway_id: &str) -> Vec<(u64, LedgerAnchor)> {
        let mut out: Vec<(u64, LedgerAnchor)> = self
            .anchors
            .iter()
            .filter(|((g, _), _)| g == gateway_id)
            .map(|((_, b), a)| (*b, *a))
            .collect();
        out.sort_by_key(|(b, _)| *b);
        out
    }

    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }
}

/// How strict verification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VerifyOptions {
    /// The export holds every receipt of each gateway from some point on: any gap in
    /// sequence numbers is a failure. Off for filtered exports.
    pub complete: bool,
    /// Every receipt must be anchored (no pending tail).
    pub require_anchored: bool,
}

/// One failed check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The export line, from 1; for a batch missing receipts, the line after the last.
    pub line: u64,
    /// `None` for a line that could not be read as a receipt, and for a batch missing
    /// receipts.
    pub receipt_id: Option<String>,
    pub kind: FailureKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    Unreadable(String),
    Chain(BreakKind),
    /// The ledger has no anchor for the receipt's batch.
    AnchorMissing {
        batch_id: u64,
    },
    /// The export's root for the batch is not the ledger's.
    AnchorMismatch {
        batch_id: u64,
        export_root: Digest,
        ledger_root: Digest,
    },
    /// The proof does not lead from the receipt's hash to the ledger's root.
    ProofInvalid {
        batch_id: u64,
    },
    /// The proof's batch size is not the anchored batch's.
    SizeMismatch {
        batch_id: u64,
        proof_size: u64,
        ledger_size: u64,
    },
    /// Not anchored though a later receipt of the same gateway is: skipped by anchoring.
    Skipped,
    /// Not anchored, and the options require it.
    NotAnchored,
    /// A complete export lacks receipts of a batch the ledger anchors for `gateway_id`.
    BatchIncomplete {
        gateway_id: String,
        batch_id: u64,
        expected: u64,
        found: u64,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: receipt {}: ",
            self.line,
            self.receipt_id.as_deref().unwrap_or("?")
        )?;
        match &self.kind {
            FailureKind::Unreadable(why) => write!(f, "unreadable: {why}"),
            FailureKind::Chain(kind) => write!(f, "{kind}"),
            FailureKind::AnchorMissing { batch_id } => {
                write!(f, "batch {batch_id} is not anchored on the ledger")
            }
            FailureKind::AnchorMismatch {
                batch_id,
                export_root,
                ledger_root,
            } => write!(
                f,
                "batch {batch_id}: export root {export_root} is not the ledger's {ledger_root}"
            ),
            FailureKind::ProofInvalid { batch_id } => write!(
                f,
                "the inclusion proof does not lead to batch {batch_id}'s anchored root"
            ),
            FailureKind::SizeMismatch {
                batch_id,
                proof_size,
                ledger_size,
            } => write!(
                f,
                "batch {batch_id}: the proof says {proof_size} receipts, the ledger {ledger_size}"
            ),
            FailureKind::Skipped => f.write_str("not anchored, though later receipts are"),
            FailureKind::NotAnchored => f.write_str("not anchored"),
            FailureKind::BatchIncomplete {
                gateway_id,
                batch_id,
                expected,
                found,
            } => write!(
                f,
                "gateway {gateway_id}, batch {batch_id}: {found} of its {expected} anchored \
                 receipts are in the export"
            ),
        }
    }
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    pub n_receipts: u64,
    pub n_anchored: u64,
    /// Receipts after each gateway's last anchored one, without a proof yet.
    pub n_pending: u64,
    pub failures: Vec<Failure>,
}

impl VerifyReport {
    /// Whether every check held.
    pub fn all_held(&self) -> bool {
        self.failures.is_empty()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} receipts: {} anchored, {} pending; ",
            self.n_receipts, self.n_anchored, self.n_pending
        )?;
        if self.all_held() {
            f.write_str("all checks held")
        } else {
            write!(f, "{} failures", self.failures.len())
        }
    }
}

#[derive(Debug, Default)]
struct GatewayState {
    chain: Option<ChainVerifier>,
    /// Receipts without a proof since the last anchored one: (line, id, sequence).
    unanchored: Vec<(u64, String, u64)>,
    /// Receipts seen per batch.
    per_batch: BTreeMap<u64, u64>,
    /// The last receipt seen: (line, sequence, whether it is an export's own receipt).
    last: Option<(u64, u64, bool)>,
}

/// Checks an export one receipt at a time; memory grows with the number of gateways and the
/// pending tail, not with the export.
#[derive(Debug)]
pub struct Verifier {
    anchors: AnchorSet,
    options: VerifyOptions,
    gateways: HashMap<String, GatewayState>,
    line: u64,
    report: VerifyReport,
}

impl Verifier {
    pub fn new(anchors: AnchorSet, options: VerifyOptions) -> Verifier {
        Verifier {
            anchors,
            options,
            gateways: HashMap::new(),
            line: 0,
            report: VerifyReport::default(),
        }
    }

    /// Checks the next NDJSON line; blank lines are skipped.
    pub fn check_line(&mut self, text: &str) {
        if text.trim().is_empty() {
            self.line += 1;
            return;
        }
        match parse_ndjson_line(text) {
            Ok(exported) => self.check(&exported),
            Err(e) => {
                self.line += 1;
                let receipt_id = serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .and_then(|v| v.pointer("/receipt/id")?.as_str().map(str::to_owned));
                self.report.n_receipts += 1;
                self.report.failures.push(Failure {
                    line: self.line,
                    receipt_id,
                    kind: FailureKind::Unreadable(e.to_string()),
                });
            }
        }
    }

    /// Checks the next receipt of the export.
    pub fn check(&mut self, exported: &ExportedReceipt) {
        self.line += 1;
        self.report.n_receipts += 1;
        let line = self.line;
        let receipt = &exported.receipt;
        let complete = self.options.complete;
        let state = self.gateways.entry(receipt.gateway_id.clone()).or_default();
        let chain = state.chain.get_or_insert_with(|| {
            if complete {
                ChainVerifier::contiguous()
            } else {
                ChainVerifier::sparse()
            }
        });
        let (hash, breaks) = chain.push(receipt, exported.hash);
        state.last = Some((
            line,
            receipt.sequence,
            receipt.kind == AccessKind::Audit(AuditAction::Export),
        ));
        let mut failures: Vec<Failure> = breaks
            .into_iter()
            .map(|b| Failure {
                line,
                receipt_id: Some(b.receipt_id),
                kind: FailureKind::Chain(b.kind),
            })
            .collect();
        let fail = |kind| Failure {
            line,
            receipt_id: Some(receipt.id.clone()),
            kind,
        };
        match &exported.anchoring {
            None => state
                .unanchored
                .push((line, receipt.id.clone(), receipt.sequence)),
            Some(a) => {
                self.report.n_anchored += 1;
                *state.per_batch.entry(a.batch_id).or_default() += 1;
                for (l, id, seq) in state.unanchored.drain(..) {
                    if seq < receipt.sequence {
                        self.report.failures.push(Failure {
                            line: l,
                            receipt_id: Some(id),
                            kind: FailureKind::Skipped,
                        });
                    }
                }
                match self.anchors.get(&receipt.gateway_id, a.batch_id) {
                    None => failures.push(fail(FailureKind::AnchorMissing {
                        batch_id: a.batch_id,
                    })),
                    Some(ledger) => {
                        failures.extend(
                            batch_mismatches(a.batch_id, a.root, a.proof.size, ledger)
                                .into_iter()
                                .map(fail),
                        );
                        if root_from_proof(&hash, &a.proof) != Some(ledger.root) {
                            failures.push(fail(FailureKind::ProofInvalid {
                                batch_id: a.batch_id,
                            }));
                        }
                    }
                }
            }
        }
        self.report.failures.extend(failures);
    }

    /// The report; receipts still without a proof are the pending tail.
    pub fn finish(mut self) -> VerifyReport {
        let mut gateways: Vec<_> = self.gateways.into_iter().collect();
        gateways.sort_by(|a, b| a.0.cmp(&b.0));
        let end = self.line + 1;
        for (gateway_id, state) in gateways {
            let first_batch = state.per_batch.keys().next().copied();
            // The export's own receipt, when it ends this gateway's part of the export.
            let marker = state
                .last
                .filter(|(_, _, export)| *export)
                .map(|(line, sequence, _)| (line, sequence));
            let ranges = batch_ranges(&self.anchors, &gateway_id);
            if let (true, Some(first)) = (self.options.complete, first_batch) {
                for (batch_id, anchor) in self.anchors.batches(&gateway_id) {
                    let mut found = state.per_batch.get(&batch_id).copied().unwrap_or(0);
                    let mut expected = anchor.n_receipts;
                    if let (Some((_, last)), Some(&(from, to))) = (marker, ranges.get(&batch_id)) {
                        if from > last {
                            // Anchored after the export was made.
                            continue;
                        }
                        let to = to.min(last);
                        expected = to - from + 1;
                        found += state
                            .unanchored
                            .iter()
                            .filter(|(_, _, seq)| (from..=to).contains(seq))
                            .count() as u64;
                    }
                    if batch_id >= first && found != expected {
                        self.report.failures.push(Failure {
                            line: end,
                            receipt_id: None,
                            kind: FailureKind::BatchIncomplete {
                                gateway_id: gateway_id.clone(),
                                batch_id,
                                expected,
                                found,
                            },
                        });
                    }
                }
            }
            for (line, id, _) in state.unanchored {
                self.report.n_pending += 1;
                let own = marker.is_some_and(|(marker_line, _)| marker_line == line);
                if self.options.require_anchored && !own {
                    self.report.failures.push(Failure {
                        line,
                        receipt_id: Some(id),
                        kind: FailureKind::NotAnchored,
                    });
                }
            }
        }
        self.report.failures.sort_by_key(|f| f.line);
        self.report
    }
}

/// How a batch (its root and number of receipts, as the export or the store has them) differs
/// from the ledger's anchor of it: none when it is the anchored batch.
fn batch_mismatches(
    batch_id: u64,
    root: Digest,
    n_receipts: u64,
    ledger: &LedgerAnchor,
) -> Vec<FailureKind> {
    let mut out = Vec::new();
    if root != ledger.root {
        out.push(FailureKind::AnchorMismatch {
            batch_id,
            export_root: root,
            ledger_root: ledger.root,
        });
    }
    if n_receipts != ledger.n_receipts {
        out.push(FailureKind::SizeMismatch {
            batch_id,
            proof_size: n_receipts,
            ledger_size: ledger.n_receipts,
        });
    }
    out
}

// ---------------------------------------------------------------------------------------
// One stored receipt, as the gateway's detail view (the audit API and the console) shows it.

/// What holds for one stored receipt, checked against the store and the ledger.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ReceiptVerification {
    /// The stored bytes decode and hash to the stored hash.
    pub hash: Check,
    /// The receipt's `prev_hash` is the stored hash of the receipt before it.
    pub chain: Check,
    /// The inclusion proof leads from the recomputed hash to the batch's stored root.
    pub proof: Check,
    /// The ledger holds the same root for the batch.
    pub ledger: Check,
    /// Every check held (pending ones do not count as held).
    pub verified: bool,
}

/// The outcome of one check of a stored receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    Holds,
    Fails,
    /// Not anchored yet.
    Pending,
    /// The ledger could not be asked.
    Unavailable,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Holds => "holds",
            Check::Fails => "fails",
            Check::Pending => "pending",
            Check::Unavailable => "unavailable",
        }
    }

    fn holds_if(holds: bool) -> Check {
        if holds { Check::Holds } else { Check::Fails }
    }
}

/// One receipt as the gateway stores it, with what its checks need.
#[derive(Debug, Clone, Copy)]
pub struct StoredReceipt<'a> {
    /// The receipt id the row is stored under.
    pub id: &'a str,
    /// The stored bytes decoded with the stored hash; `None` when either does not read.
    pub receipt: Option<(&'a Receipt, Digest)>,
    /// The stored hash of the receipt before it in its chain, when stored.
    pub previous: Option<Digest>,
    /// The closed batch it belongs to; `None` while it is in none (pending).
    pub batch: Option<StoredBatch<'a>>,
}

/// The closed batch of a stored receipt.
#[derive(Debug, Clone, Copy)]
pub struct StoredBatch<'a> {
    pub batch_id: u64,
    /// The batch's stored root; `None` when it does not read.
    pub root: Option<Digest>,
    /// How many receipts the stored batch covers.
    pub n_receipts: u64,
    /// The receipt's place in the batch rebuilt from the stored hashes.
    pub anchoring: Option<&'a Anchoring>,
    /// What the ledger says of the batch.
    pub ledger: LedgerAnswer,
}

/// What the ledger said of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerAnswer {
    /// The batch is not anchored yet: the ledger was not asked.
    NotAnchored,
    /// The ledger could not be read.
    Unavailable,
    /// The ledger holds no (readable) anchor for the batch.
    Missing,
    Anchored(LedgerAnchor),
}

/// Checks one stored receipt: its hash and chain link with the chain verifier an export is
/// checked with, its proof against the batch's stored root, and the batch against the
/// ledger's anchor with the same comparison as an export's.
pub fn verify_stored(stored: &StoredReceipt<'_>) -> ReceiptVerification {
    let (recomputed, hash, chain) = match stored.receipt {
        None => (None, Check::Fails, Check::Fails),
        Some((receipt, stored_hash)) => {
            let mut verifier = match stored.previous {
                Some(previous) if receipt.sequence > 1 => {
                    ChainVerifier::after(receipt.sequence - 1, previous)
                }
                _ => ChainVerifier::sparse(),
            };
            let (computed, breaks) = verifier.push(receipt, Some(stored_hash));
            let altered = breaks
                .iter()
                .any(|b| matches!(b.kind, BreakKind::HashMismatch { .. }));
            let broken = breaks
                .iter()
                .any(|b| !matches!(b.kind, BreakKind::HashMismatch { .. }));
            // Past the first receipt, a link holds only to a stored receipt before it.
            let linked = !broken && (receipt.sequence == 1 || stored.previous.is_some());
            (
                Some(computed),
                Check::holds_if(!altered && receipt.id == stored.id),
                Check::holds_if(linked),
            )
        }
    };
    let (proof, ledger) = match &stored.batch {
        None => (Check::Pending, Check::Pending),
        Some(batch) => {
            let proof = match (batch.anchoring, recomputed, batch.root) {
                (Some(a), Some(h), Some(root)) => {
                    Check::holds_if(root_from_proof(&h, &a.proof) == Some(root))
                }
                _ => Check::Fails,
            };
            let ledger = match (batch.ledger, batch.root) {
                (LedgerAnswer::NotAnchored, _) => Check::Pending,
                (LedgerAnswer::Unavailable, _) => Check::Unavailable,
                (LedgerAnswer::Anchored(anchor), Some(root)) => Check::holds_if(
                    batch_mismatches(batch.batch_id, root, batch.n_receipts, &anchor).is_empty(),
                ),
                _ => Check::Fails,
            };
            (proof, ledger)
        }
    };
    let verified = [hash, chain, proof, ledger]
        .iter()
        .all(|c| *c == Check::Holds);
    ReceiptVerification {
        hash,
        chain,
        proof,
        ledger,
        verified,
    }
}

/// The sequence range of each of `gateway_id`'s anchored batches, when the anchors hold its
/// batches from 1 without a hole (batches cover a chain from receipt 1 in order); else none.
fn batch_ranges(anchors: &AnchorSet, gateway_id: &str) -> BTreeMap<u64, (u64, u64)> {
    let mut ranges = BTreeMap::new();
    let mut next = 1u64;
    for (expected_id, (batch_id, anchor)) in (1u64..).zip(anchors.batches(gateway_id)) {
        if batch_id != expected_id || anchor.n_receipts == 0 {
            return BTreeMap::new();
        }
        ranges.insert(batch_id, (next, next + anchor.n_receipts - 1));
        next += anchor.n_receipts;
    }
    ranges
}

/// Verifies a whole export held as lines.
pub fn verify_export<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    anchors: AnchorSet,
    options: VerifyOptions,
) -> VerifyReport {
    let mut verifier = Verifier::new(anchors, options);
    for line in lines {
        verifier.check_line(line);
    }
    verifier.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchConfig, BatchLeaf, Batcher, ClosedBatch, Resume};
    use crate::chain::{Chain, ChainedReceipt};
    use crate::export::{Anchoring, ndjson_line};
    use crate::receipt::tests::sample;

    /// `n` receipts of gateway `gw-1`, anchored in batches of 4 except the last `pending`.
    fn export(n: u64, pending: u64) -> (Vec<String>, AnchorSet) {
        let mut chain = Chain::genesis("gw-1");
        let chained: Vec<ChainedReceipt> = (1..=n)
            .map(|i| chain.append(sample(&format!("r{i}"))).unwrap())
            .collect();
        let cfg = BatchConfig {
            max_receipts: 4,
            max_wait_ms: 1_000_000,
            strict: false,
        };
        let mut batcher = Batcher::new(cfg, Resume::fresh()).unwrap();
        let mut batches: Vec<ClosedBatch> = Vec::new();
        for c in chained.iter().take((n - pending) as usize) {
            let leaf = BatchLeaf {
                sequence: c.receipt.sequence,
                receipt_id: c.receipt.id.clone(),
                hash: c.hash,
            };
            batches.extend(batcher.push(leaf, 0).unwrap());
        }
        batches.extend(batcher.flush());
        let mut anchors = AnchorSet::new();
        for b in &batches {
            anchors.insert(
                "gw-1",
                b.batch_id,
                LedgerAnchor {
                    root: b.root,
                    n_receipts: b.n_receipts(),
                },
            );
        }
        let lines = chained
            .iter()
            .map(|c| {
                let anchoring = batches
                    .iter()
                    .find(|b| (b.first_sequence..=b.last_sequence).contains(&c.receipt.sequence))
                    .map(|b| Anchoring {
                        batch_id: b.batch_id,
                        proof: b.proof_for(c.receipt.sequence).unwrap().clone(),
                        root: b.root,
                        tx_id: Some(format!("tx-{}", b.batch_id)),
                        block_number: Some(b.batch_id),
                    });
                ndjson_line(&c.receipt, &c.hash, anchoring.as_ref(), None)
            })
            .collect();
        (lines, anchors)
    }

    /// An export made through the API when receipts 1 to 4 were anchored: receipts 1 to 6,
    /// the 6th its own (`audit-export` when `marked`); by verification time the ledger also
    /// anchored 5 to 8 and 9 to 10 (later accesses).
    fn export_with_its_own_receipt(marked: bool) -> (Vec<String>, AnchorSet) {
        let mut chain = Chain::genesis("gw-1");
        let chained: Vec<ChainedReceipt> = (1..=10u64)
            .map(|i| {
                let mut r = sample(&format!("r{i}"));
                if i == 6 && marked {
                    r.kind = AccessKind::Audit(AuditAction::Export);
                }
                chain.append(r).unwrap()
            })
            .collect();
        let cfg = BatchConfig {
            max_receipts: 4,
            max_wait_ms: 1_000_000,
            strict: false,
        };
        let mut batcher = Batcher::new(cfg, Resume::fresh()).unwrap();
        let mut batches: Vec<ClosedBatch> = Vec::new();
        for c in &chained {
            let leaf = BatchLeaf {
                sequence: c.receipt.sequence,
                receipt_id: c.receipt.id.clone(),
                hash: c.hash,
            };
            batches.extend(batcher.push(leaf, 0).unwrap());
        }
        batches.extend(batcher.flush());
        assert_eq!(batches.len(), 3);
        let mut anchors = AnchorSet::new();
        for b in &batches {
            let anchor = LedgerAnchor {
                root: b.root,
                n_receipts: b.n_receipts(),
            };
            anchors.insert("gw-1", b.batch_id, anchor);
        }
        let first = &batches[0];
        let lines = chained[..6]
            .iter()
            .map(|c| {
                let anchoring = (c.receipt.sequence <= 4).then(|| Anchoring {
                    batch_id: first.batch_id,
                    proof: first.proof_for(c.receipt.sequence).unwrap().clone(),
                    root: first.root,
                    tx_id: None,
                    block_number: None,
                });
                ndjson_line(&c.receipt, &c.hash, anchoring.as_ref(), None)
            })
            .collect();
        (lines, anchors)
    }

    #[test]
    fn an_export_ending_with_its_own_receipt_is_complete_as_of_then() {
        let complete = VerifyOptions {
            complete: true,
            require_anchored: false,
        };
        let (lines, anchors) = export_with_its_own_receipt(true);
        let report = run(&lines, anchors.clone(), complete);
        assert!(report.all_held(), "{:?}", report.failures);
        assert_eq!((report.n_anchored, report.n_pending), (4, 2));
        // Every receipt anchored: the export's own cannot be, the one before it should.
        let report = run(
            &lines,
            anchors.clone(),
            VerifyOptions {
                complete: true,
                require_anchored: true,
            },
        );
        assert_eq!(summary(&report), [("r5".to_owned(), "not-anchored")]);
        // A line cut before the end breaks the chain.
        let mut cut = lines.clone();
        cut.remove(4);
        assert!(
            summary(&run(&cut, anchors.clone(), complete))
                .iter()
                .any(|(id, kind)| id == "r6" && *kind == "gap"),
        );
        // Without the end marker (the marker dropped with the lines before it, or an export
        // that does not end with its own receipt), later batches are a cut tail.
        let report = run(&lines[..5], anchors.clone(), complete);
        assert!(
            summary(&report).contains(&(String::new(), "batch-incomplete")),
            "{:?}",
            report.failures
        );
        let (unmarked, anchors) = export_with_its_own_receipt(false);
        let report = run(&unmarked, anchors, complete);
        assert_eq!(
            summary(&report),
            [
                (String::new(), "batch-incomplete"),
                (String::new(), "batch-incomplete")
            ]
        );
    }

    fn run(lines: &[String], anchors: AnchorSet, options: VerifyOptions) -> VerifyReport {
        verify_export(lines.iter().map(String::as_str), anchors, options)
    }

    fn edit(line: &str, path: &str, value: serde_json::Value) -> String {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        *v.pointer_mut(path).unwrap() = value;
        v.to_string()
    }

    fn flip(hex: &serde_json::Value) -> serde_json::Value {
        let s = hex.as_str().unwrap();
        let first = if s.starts_with('0') { "1" } else { "0" };
        format!("{first}{}", &s[1..]).into()
    }

    fn summary(report: &VerifyReport) -> Vec<(String, &'static str)> {
        report
            .failures
            .iter()
            .map(|f| {
                let kind = match &f.kind {
                    FailureKind::Unreadable(_) => "unreadable",
                    FailureKind::Chain(BreakKind::HashMismatch { .. }) => "hash",
                    FailureKind::Chain(BreakKind::PrevHashMismatch { .. }) => "prev",
                    FailureKind::Chain(BreakKind::SequenceGap { .. }) => "gap",
                    FailureKind::Chain(BreakKind::BadGenesis { .. }) => "genesis",
                    FailureKind::AnchorMissing { .. } => "anchor-missing",
                    FailureKind::AnchorMismatch { .. } => "anchor-mismatch",
                    FailureKind::ProofInvalid { .. } => "proof",
                    FailureKind::SizeMismatch { .. } => "size",
                    FailureKind::Skipped => "skipped",
                    FailureKind::NotAnchored => "not-anchored",
                    FailureKind::BatchIncomplete { .. } => "batch-incomplete",
                };
                (f.receipt_id.clone().unwrap_or_default(), kind)
            })
            .collect()
    }

    const COMPLETE: VerifyOptions = VerifyOptions {
        complete: true,
        require_anchored: false,
    };

    #[test]
    fn an_intact_export_verifies() {
        let (lines, anchors) = export(10, 2);
        let report = run(&lines, anchors, COMPLETE);
        assert!(report.all_held(), "{:?}", report.failures);
        assert_eq!(
            (report.n_receipts, report.n_anchored, report.n_pending),
            (10, 8, 2)
        );
        assert_eq!(
            report.to_string(),
            "10 receipts: 8 anchored, 2 pending; all checks held"
        );
    }

    type Tamper = fn(&mut Vec<String>, &mut AnchorSet);

    /// (name, tampering, expected (receipt id, failure)).
    type TamperCase = (
        &'static str,
        Tamper,
        &'static [(&'static str, &'static str)],
    );

    #[test]
    fn tampering_is_reported_with_the_receipt_id() {
        let cases: &[TamperCase] = &[
            (
                "receipt content altered",
                |l, _| l[2] = edit(&l[2], "/receipt/status", 500.into()),
                &[("r3", "hash"), ("r3", "proof"), ("r4", "prev")],
            ),
            (
                "receipt and its stored hash altered",
                |l, _| {
                    let mut e = crate::export::parse_ndjson_line(&l[2]).unwrap();
                    e.receipt.decision = crate::AccessDecision::Deny;
                    let h = e.receipt.hash();
                    l[2] = ndjson_line(&e.receipt, &h, e.anchoring.as_ref(), None);
                },
                &[("r3", "proof"), ("r4", "prev")],
            ),
            (
                "receipt removed",
                |l, _| {
                    l.remove(5);
                },
                &[("r7", "gap"), ("", "batch-incomplete")],
            ),
            (
                "tail cut away",
                |l, _| l.truncate(4),
                &[("", "batch-incomplete")],
            ),
            (
                "flipped proof sibling",
                |l, _| {
                    let v: serde_json::Value = serde_json::from_str(&l[1]).unwrap();
                    l[1] = edit(&l[1], "/proof/siblings/0", flip(&v["proof"]["siblings"][0]));
                },
                &[("r2", "proof")],
            ),
            (
                "wrong proof index",
                |l, _| l[1] = edit(&l[1], "/proof/index", 2.into()),
                &[("r2", "proof")],
            ),
            (
                "swapped leaf: another receipt's proof",
                |l, _| {
                    let other: serde_json::Value = serde_json::from_str(&l[2]).unwrap();
                    l[1] = edit(&l[1], "/proof", other["proof"].clone());
                },
                &[("r2", "proof")],
            ),
            (
                "wrong proof size",
                |l, _| l[1] = edit(&l[1], "/proof/size", 5.into()),
                &[("r2", "size"), ("r2", "proof")],
            ),
            (
                "tampered anchor in the export",
                |l, _| {
                    let v: serde_json::Value = serde_json::from_str(&l[0]).unwrap();
                    l[0] = edit(&l[0], "/anchor/root", flip(&v["anchor"]["root"]));
                },
                &[("r1", "anchor-mismatch")],
            ),
            (
                "tampered anchor on the ledger",
                |_, a| {
                    let mut anchor = *a.get("gw-1", 2).unwrap();
                    anchor.root.0[0] ^= 1;
                    a.insert("gw-1", 2, anchor);
                },
                &[
                    ("r5", "anchor-mismatch"),
                    ("r5", "proof"),
                    ("r6", "anchor-mismatch"),
                    ("r6", "proof"),
                    ("r7", "anchor-mismatch"),
                    ("r7", "proof"),
                    ("r8", "anchor-mismatch"),
                    ("r8", "proof"),
                ],
            ),
            (
                "anchor missing on the ledger",
                |_, a| *a = AnchorSet::new(),
                &[
                    ("r1", "anchor-missing"),
                    ("r2", "anchor-missing"),
                    ("r3", "anchor-missing"),
                    ("r4", "anchor-missing"),
                    ("r5", "anchor-missing"),
                    ("r6", "anchor-missing"),
                    ("r7", "anchor-missing"),
                    ("r8", "anchor-missing"),
                ],
            ),
            (
                "proof stripped from a receipt in an anchored run",
                |l, _| {
                    let mut v: serde_json::Value = serde_json::from_str(&l[3]).unwrap();
                    let o = v.as_object_mut().unwrap();
                    o.remove("proof");
                    o.remove("anchor");
                    l[3] = v.to_string();
                },
                &[("r4", "skipped"), ("", "batch-incomplete")],
            ),
            (
                "unreadable line",
                |l, _| l[4] = edit(&l[4], "/hash", "nope".into()),
                &[
                    ("r5", "unreadable"),
                    ("r6", "gap"),
                    ("", "batch-incomplete"),
                ],
            ),
        ];
        for (name, tamper, expected) in cases {
            let (mut lines, mut anchors) = export(10, 2);
            tamper(&mut lines, &mut anchors);
            let report = run(&lines, anchors, COMPLETE);
            let expected: Vec<(String, &str)> =
                expected.iter().map(|(i, k)| (i.to_string(), *k)).collect();
            assert_eq!(summary(&report), expected, "{name}");
            assert!(!report.all_held());
            for f in &report.failures {
                assert!(
                    f.to_string()
                        .starts_with(&format!("line {}: receipt ", f.line))
                );
            }
        }
    }

    #[test]
    fn filtered_exports_and_pending_receipts() {
        let (lines, anchors) = export(10, 2);
        let filtered: Vec<String> = lines.iter().step_by(3).cloned().collect();
        let sparse = VerifyOptions::default();
        assert!(run(&filtered, anchors.clone(), sparse).all_held());
        assert_eq!(
            summary(&run(&filtered, anchors.clone(), COMPLETE)),
            vec![
                ("r4".to_string(), "gap"),
                ("r7".to_string(), "gap"),
                ("r10".to_string(), "gap"),
                (String::new(), "batch-incomplete"),
                (String::new(), "batch-incomplete")
            ]
        );
        let strict = VerifyOptions {
            complete: true,
            require_anchored: true,
        };
        assert_eq!(
            summary(&run(&lines, anchors, strict)),
            vec![
                ("r9".to_string(), "not-anchored"),
                ("r10".to_string(), "not-anchored")
            ]
        );
    }

    #[test]
    fn anchor_records_from_the_ledger_are_read() {
        let mut set = AnchorSet::new();
        let record = AnchorRecord {
            gateway_key: "k".into(),
            batch_id: 3,
            root: Digest::of(b"r").to_hex(),
            n_receipts: 2,
            recorded_at: 0,
        };
        assert!(set.insert_record("gw-1", &record));
        assert_eq!(set.get("gw-1", 3).unwrap().n_receipts, 2);
        assert!(!set.insert_record(
            "gw-1",
            &AnchorRecord {
                root: "x".into(),
                ..record
            }
        ));
        assert_eq!(set.len(), 1);
    }
}
