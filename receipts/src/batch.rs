//! Anchoring batches as pure logic: a batcher takes receipts in chain order with a clock value
//! passed in, closes a batch on a size or a time limit (or per receipt in strict mode), and
//! yields the batch's id, range, Merkle root and proofs. Resumption after a restart, so that no
//! receipt is anchored twice or skipped.
//!
//! Owns when a batch closes and what it holds. Leaves out the clock, the background task, the
//! ledger call and the store (the gateway).
//!
//! # Batches and resumption
//!
//! **Invariant:** a gateway's batches are numbered from 1 without gaps and cover its chain
//! without gaps or overlap: batch `b + 1` starts at the receipt after batch `b`'s last. So a
//! batch is fixed by its id and its size, and the ledger's anchor record (batch id, root,
//! `n_receipts`) is enough to find its receipts again.
//!
//! The gateway's protocol, which makes restarts safe:
//! 1. When the batcher yields a [`ClosedBatch`], the gateway stores it (id, first and last
//!    sequence, root, proofs) *before* submitting the root to the ledger.
//! 2. It submits the root ([`ClosedBatch::submission`]); the contract treats the same root for
//!    the same batch as a replay, so submitting again after a crash is harmless.
//! 3. It marks the batch anchored with the ledger transaction and block.
//!
//! At start: closed-but-unanchored batches are submitted again (step 2); the batcher is
//! rebuilt with [`Resume::after`] the last closed batch and fed the receipts after it, in
//! sequence order. Receipts fed again are ignored ([`Batcher::push`] returns nothing for a
//! sequence at or below the last one taken), and a missing sequence is an error rather than a
//! silent skip. Should the store know fewer batches than the ledger (a store restored from a
//! backup), [`adopt_anchor`] rebuilds each ledger batch from its receipts and checks the root.

use assent_consent::{AnchorRecord, AnchorSubmission};

use crate::digest::Digest;
use crate::export::Anchoring;
use crate::merkle::{InclusionProof, MerkleTree};

/// When batches close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// A batch closes when it holds this many receipts (at least 1).
    pub max_receipts: usize,
    /// A batch closes this long after its first receipt arrived, in milliseconds (at least 0).
    pub max_wait_ms: i64,
    /// Anchor every receipt on its own, as soon as it arrives.
    pub strict: bool,
}

impl Default for BatchConfig {
    /// One second or 10,000 receipts, whichever comes first: one ledger transaction per
    /// second whatever the request rate (P8).
    fn default() -> Self {
        BatchConfig {
            max_receipts: 10_000,
            max_wait_ms: 1_000,
            strict: false,
        }
    }
}

/// What the batcher needs of a receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchLeaf {
    pub sequence: u64,
    pub receipt_id: String,
    pub hash: Digest,
}

/// Where anchoring resumes: the next batch id and the last receipt already in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    pub next_batch_id: u64,
    pub after_sequence: u64,
}

impl Resume {
    /// Nothing anchored yet: batch 1 starts at receipt 1.
    pub fn fresh() -> Resume {
        Resume {
            next_batch_id: 1,
            after_sequence: 0,
        }
    }

    /// After the last closed batch (anchored or not).
    pub fn after(batch: &ClosedBatch) -> Resume {
        Resume {
            next_batch_id: batch.batch_id + 1,
            after_sequence: batch.last_sequence,
        }
    }

    /// After a batch known by its id and last sequence (as the gateway stores it).
    pub fn after_batch(batch_id: u64, last_sequence: u64) -> Resume {
        Resume {
            next_batch_id: batch_id + 1,
            after_sequence: last_sequence,
        }
    }
}

/// A closed batch: its receipts' range, its root and one proof per receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedBatch {
    pub batch_id: u64,
    pub first_sequence: u64,
    pub last_sequence: u64,
    pub first_receipt_id: String,
    pub last_receipt_id: String,
    pub root: Digest,
    /// The batch's receipts in order, each with its proof.
    pub entries: Vec<(BatchLeaf, InclusionProof)>,
}

impl ClosedBatch {
    pub fn n_receipts(&self) -> u64 {
        self.entries.len() as u64
    }

    /// The ledger submission recording this batch's root; `gateway_key` is the gateway's keyed
    /// hash (`ConsortiumKey::gateway`).
    pub fn submission(&self, gateway_key: &str) -> AnchorSubmission {
        AnchorSubmission {
            gateway_key: gateway_key.to_owned(),
            batch_id: self.batch_id,
            root: self.root.to_hex(),
            n_receipts: self.n_receipts(),
        }
    }

    /// The anchoring of the receipt at `sequence` once the root is recorded by transaction
    /// `tx_id` in block `block_number`, for exports and the audit API.
    pub fn anchoring(
        &self,
        sequence: u64,
        tx_id: Option<String>,
        block_number: Option<u64>,
    ) -> Option<Anchoring> {
        Some(Anchoring {
            batch_id: self.batch_id,
            proof: self.proof_for(sequence)?.clone(),
            root: self.root,
            tx_id,
            block_number,
        })
    }

    /// The proof of the receipt at `sequence`, if it is in this batch.
    pub fn proof_for(&self, sequence: u64) -> Option<&InclusionProof> {
        let offset = sequence.checked_sub(self.first_sequence)?;
        self.entries
            .get(usize::try_from(offset).ok()?)
            .map(|(_, p)| p)
    }
}

/// Why a batch could not be formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("invalid batch configuration: {0}")]
    InvalidConfig(&'static str),
    /// A receipt is missing: anchoring it later would break the batches' contiguity.
    #[error("receipt sequence {found} arrived where {expected} was expected")]
    Gap { expected: u64, found: u64 },
    #[error("a batch needs at least one receipt")]
    Empty,
}

/// Builds batch `batch_id` from its receipts, which must have consecutive sequence numbers.
/// Deterministic: the same receipts give the same root and proofs.
pub fn close_batch(batch_id: u64, leaves: Vec<BatchLeaf>) -> Result<ClosedBatch, BatchError> {
    let (first, last) = match (leaves.first(), leaves.last()) {
        (Some(f), Some(l)) => (f.clone(), l.clone()),
        _ => return Err(BatchError::Empty),
    };
    for pair in leaves.windows(2) {
        if pair[1].sequence != pair[0].sequence + 1 {
            return Err(BatchError::Gap {
                expected: pair[0].sequence + 1,
                found: pair[1].sequence,
            });
        }
    }
    let hashes: Vec<Digest> = leaves.iter().map(|l| l.hash).collect();
    let tree = MerkleTree::build(&hashes).ok_or(BatchError::Empty)?;
    let proofs = tree.proofs();
    Ok(ClosedBatch {
        batch_id,
        first_sequence: first.sequence,
        last_sequence: last.sequence,
        first_receipt_id: first.receipt_id,
        last_receipt_id: last.receipt_id,
        root: tree.root(),
        entries: leaves.into_iter().zip(proofs).collect(),
    })
}

/// Groups receipts into batches. Feed it receipts in chain order ([`Batcher::push`]) and
/// call [`Batcher::poll`] when [`Batcher::deadline`] passes.
#[derive(Debug, Clone)]
pub struct Batcher {
    config: BatchConfig,
    next_batch_id: u64,
    last_sequence: u64,
    pending: Vec<BatchLeaf>,
    opened_at_ms: Option<i64>,
}

impl Batcher {
    pub fn new(config: BatchConfig, resume: Resume) -> Result<Batcher, BatchError> {
        if config.max_receipts == 0 {
            return Err(BatchError::InvalidConfig("max_receipts must be at least 1"));
        }
        if config.max_wait_ms < 0 {
            return Err(BatchError::InvalidConfig(
                "max_wait_ms must not be negative",
            ));
        }
        if resume.next_batch_id == 0 {
            return Err(BatchError::InvalidConfig("batch ids start at 1"));
        }
        Ok(Batcher {
            config,
            next_batch_id: resume.next_batch_id,
            last_sequence: resume.after_sequence,
            pending: Vec::new(),
            opened_at_ms: None,
        })
    }

    /// Takes the next receipt, arrived at `now_ms`. Returns the batches this closes: the
    /// pending batch if its time ran out before this receipt came, and the batch this receipt
    /// fills (or, in strict mode, its own). A receipt at or below the last sequence taken is
    /// ignored (fed again after a restart); one beyond the next is refused.
    pub fn push(&mut self, leaf: BatchLeaf, now_ms: i64) -> Result<Vec<ClosedBatch>, BatchError> {
        if leaf.sequence <= self.last_sequence {
            return Ok(Vec::new());
        }
        if leaf.sequence != self.last_sequence + 1 {
            return Err(BatchError::Gap {
                expected: self.last_sequence + 1,
                found: leaf.sequence,
            });
        }
        let mut closed = Vec::new();
        if let Some(batch) = self.poll(now_ms) {
            closed.push(batch);
        }
        self.last_sequence = leaf.sequence;
        self.pending.push(leaf);
        self.opened_at_ms.get_or_insert(now_ms);
        if self.config.strict || self.pending.len() >= self.config.max_receipts {
            closed.extend(self.flush());
        }
        Ok(closed)
    }

    /// Closes the pending batch if its time limit has passed at `now_ms`.
    pub fn poll(&mut self, now_ms: i64) -> Option<ClosedBatch> {
        match self.deadline() {
            Some(deadline) if now_ms >= deadline => self.flush(),
            _ => None,
        }
    }

    /// When the pending batch closes on time, if one is open.
    pub fn deadline(&self) -> Option<i64> {
        self.opened_at_ms
            .map(|t| t.saturating_add(self.config.max_wait_ms))
    }

    /// Closes the pending batch now, whatever its size or age (at shutdown).
    pub fn flush(&mut self) -> Option<ClosedBatch> {
        if self.pending.is_empty() {
            return None;
        }
        let leaves = std::mem::take(&mut self.pending);
        self.opened_at_ms = None;
        // The pending leaves are non-empty and were taken with consecutive sequences.
        let batch = close_batch(self.next_batch_id, leaves).ok()?;
        self.next_batch_id += 1;
        Some(batch)
    }

    /// The last receipt taken (pending or closed).
    pub fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    pub fn next_batch_id(&self) -> u64 {
        self.next_batch_id
    }
}

/// Why a batch recorded on the ledger does not fit the receipts in the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdoptError {
    #[error("the ledger's batch is {found}, resumption expects {expected}")]
    WrongBatch { expected: u64, found: u64 },
    #[error("batch {batch_id} holds {expected} receipts on the ledger, {found} were given")]
    Count {
        batch_id: u64,
        expected: u64,
        found: u64,
    },
    #[error("batch {batch_id}: the receipts do not start right after receipt {after}")]
    Start { batch_id: u64, after: u64 },
    #[error(
        "batch {batch_id}: the ledger's root {ledger} is not the root {rebuilt} of the receipts"
    )]
    Root {
        batch_id: u64,
        ledger: String,
        rebuilt: String,
    },
    #[error(transparent)]
    Batch(#[from] BatchError),
}

/// Rebuilds the batch `anchor` records on the ledger from the store's receipts, for a store
/// that knows fewer batches than the ledger. `leaves` are the `anchor.n_receipts` receipts
/// after `resume.after_sequence`. Returns the batch (to store as anchored) and where to
/// resume after it.
pub fn adopt_anchor(
    resume: Resume,
    anchor: &AnchorRecord,
    leaves: Vec<BatchLeaf>,
) -> Result<(ClosedBatch, Resume), AdoptError> {
    if anchor.batch_id != resume.next_batch_id {
        return Err(AdoptError::WrongBatch {
            expected: resume.next_batch_id,
            found: anchor.batch_id,
        });
    }
    if leaves.len() as u64 != anchor.n_receipts {
        return Err(AdoptError::Count {
            batch_id: anchor.batch_id,
            expected: anchor.n_receipts,
            found: leaves.len() as u64,
        });
    }
    if leaves.first().map(|l| l.sequence) != Some(resume.after_sequence + 1) {
        return Err(AdoptError::Start {
            batch_id: anchor.batch_id,
            after: resume.after_sequence,
        });
    }
    let batch = close_batch(anchor.batch_id, leaves)?;
    if batch.root.to_hex() != anchor.root.to_ascii_lowercase() {
        return Err(AdoptError::Root {
            batch_id: anchor.batch_id,
            ledger: anchor.root.clone(),
            rebuilt: batch.root.to_hex(),
        });
    }
    let next = Resume::after(&batch);
    Ok((batch, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::verify_inclusion;

    fn leaf(sequence: u64) -> BatchLeaf {
        BatchLeaf {
            sequence,
            receipt_id: format!("r{sequence}"),
            hash: Digest::of(&sequence.to_be_bytes()),
        }
    }

    fn config(max_receipts: usize, max_wait_ms: i64, strict: bool) -> BatchConfig {
        BatchConfig {
            max_receipts,
            max_wait_ms,
            strict,
        }
    }

    /// Feeds `(sequence, arrival)` pairs, polling at each `poll` time, and returns the closed
    /// batches as `(id, first, last)`.
    fn run(cfg: BatchConfig, arrivals: &[(u64, i64)], polls: &[i64]) -> Vec<(u64, u64, u64)> {
        let mut b = Batcher::new(cfg, Resume::fresh()).unwrap();
        let mut events: Vec<(i64, Option<u64>)> = arrivals
            .iter()
            .map(|&(s, t)| (t, Some(s)))
            .chain(polls.iter().map(|&t| (t, None)))
            .collect();
        events.sort_by_key(|&(t, s)| (t, s.is_none()));
        let mut out = Vec::new();
        for (t, s) in events {
            let closed = match s {
                Some(s) => b.push(leaf(s), t).unwrap(),
                None => b.poll(t).into_iter().collect(),
            };
            out.extend(
                closed
                    .iter()
                    .map(|c| (c.batch_id, c.first_sequence, c.last_sequence)),
            );
        }
        out
    }

    /// (name, config, (sequence, arrival) pairs, poll times, closed (id, first, last)).
    type BatchCase = (
        &'static str,
        BatchConfig,
        &'static [(u64, i64)],
        &'static [i64],
        &'static [(u64, u64, u64)],
    );

    #[test]
    fn batches_close_on_size_time_or_strict() {
        let cases: &[BatchCase] = &[
            (
                "size limit",
                config(3, 1_000, false),
                &[(1, 0), (2, 1), (3, 2), (4, 3), (5, 4), (6, 5), (7, 6)],
                &[],
                &[(1, 1, 3), (2, 4, 6)],
            ),
            (
                "time limit on poll",
                config(100, 1_000, false),
                &[(1, 0), (2, 500), (3, 999)],
                &[999, 1_000, 1_500],
                &[(1, 1, 3)],
            ),
            (
                "time limit counts from the first receipt",
                config(100, 1_000, false),
                &[(1, 100), (2, 1_050), (3, 1_200)],
                &[1_099, 1_100, 2_199, 2_200],
                &[(1, 1, 2), (2, 3, 3)],
            ),
            (
                "a late receipt closes the old batch first",
                config(100, 1_000, false),
                &[(1, 0), (2, 2_000), (3, 2_100)],
                &[],
                &[(1, 1, 1)],
            ),
            (
                "strict anchors each receipt alone",
                config(100, 1_000, true),
                &[(1, 0), (2, 0), (3, 5)],
                &[],
                &[(1, 1, 1), (2, 2, 2), (3, 3, 3)],
            ),
            (
                "size one is strict",
                config(1, 1_000, false),
                &[(1, 0), (2, 0)],
                &[],
                &[(1, 1, 1), (2, 2, 2)],
            ),
            (
                "zero wait closes on the next poll",
                config(100, 0, false),
                &[(1, 7), (2, 7)],
                &[7],
                &[(1, 1, 1), (2, 2, 2)],
            ),
        ];
        for (name, cfg, arrivals, polls, expected) in cases {
            assert_eq!(run(*cfg, arrivals, polls), expected.to_vec(), "{name}");
        }
    }

    #[test]
    fn closed_batches_carry_root_and_proofs() {
        let mut b = Batcher::new(config(5, 1_000, false), Resume::fresh()).unwrap();
        let mut closed = Vec::new();
        for s in 1..=5 {
            closed.extend(b.push(leaf(s), 0).unwrap());
        }
        let batch = &closed[0];
        assert_eq!(
            (
                batch.first_receipt_id.as_str(),
                batch.last_receipt_id.as_str()
            ),
            ("r1", "r5")
        );
        for (leaf, proof) in &batch.entries {
            assert!(verify_inclusion(&leaf.hash, proof, &batch.root));
        }
        assert_eq!(batch.proof_for(3), Some(&batch.entries[2].1));
        assert_eq!(batch.proof_for(6), None);
        let a = batch.anchoring(2, Some("tx".into()), Some(9)).unwrap();
        assert_eq!((a.batch_id, a.root, a.proof.index), (1, batch.root, 1));
        assert!(batch.anchoring(0, None, None).is_none());
        let sub = batch.submission(&"a".repeat(64));
        assert_eq!((sub.batch_id, sub.n_receipts, sub.root.len()), (1, 5, 64));
        assert_eq!(b.deadline(), None);
    }

    #[test]
    fn gaps_and_bad_configs_are_refused() {
        let mut b = Batcher::new(BatchConfig::default(), Resume::fresh()).unwrap();
        assert_eq!(
            b.push(leaf(2), 0),
            Err(BatchError::Gap {
                expected: 1,
                found: 2
            })
        );
        assert!(Batcher::new(config(0, 1, false), Resume::fresh()).is_err());
        assert!(Batcher::new(config(1, -1, false), Resume::fresh()).is_err());
        assert_eq!(close_batch(1, vec![]), Err(BatchError::Empty));
        assert_eq!(
            close_batch(1, vec![leaf(1), leaf(3)]),
            Err(BatchError::Gap {
                expected: 2,
                found: 3
            })
        );
    }

    /// Anchors receipts 1..=n with crashes at the given points, rebuilding the batcher each
    /// time from the last closed batch and feeding every stored receipt again. Returns the
    /// ranges anchored, in order.
    fn anchor_with_restarts(
        n: u64,
        crash_after_push: &[u64],
        cfg: BatchConfig,
    ) -> Vec<(u64, u64, u64)> {
        let mut closed: Vec<ClosedBatch> = Vec::new();
        let mut stored = 0;
        let mut now = 0;
        let mut batcher = Batcher::new(cfg, Resume::fresh()).unwrap();
        while stored < n {
            stored += 1;
            now += 10;
            // The gateway feeds every stored receipt it has not seen, then some it has.
            closed.extend(batcher.push(leaf(stored), now).unwrap());
            closed.extend(batcher.push(leaf(stored), now).unwrap());
            if crash_after_push.contains(&stored) {
                let resume = closed.last().map_or(Resume::fresh(), Resume::after);
                batcher = Batcher::new(cfg, resume).unwrap();
                for s in 1..=stored {
                    closed.extend(batcher.push(leaf(s), now).unwrap());
                }
            }
            closed.extend(batcher.poll(now));
        }
        closed.extend(batcher.flush());
        closed
            .iter()
            .map(|c| (c.batch_id, c.first_sequence, c.last_sequence))
            .collect()
    }

    #[test]
    fn resumption_neither_repeats_nor_skips() {
        for (name, crashes, cfg) in [
            ("no crash", vec![], config(4, 35, false)),
            ("crash mid-batch", vec![6, 7], config(4, 35, false)),
            (
                "crash right after a close",
                vec![4, 8, 9],
                config(4, 1_000, false),
            ),
            ("crash in strict mode", vec![2, 3], config(10, 1_000, true)),
            (
                "crash on every receipt",
                (1..=20).collect(),
                config(3, 25, false),
            ),
        ] {
            let ranges = anchor_with_restarts(20, &crashes, cfg);
            let mut expected_first = 1;
            for (i, (id, first, last)) in ranges.iter().enumerate() {
                assert_eq!(*id, i as u64 + 1, "{name}: batch ids");
                assert_eq!(*first, expected_first, "{name}: batch {id} starts");
                assert!(last >= first);
                expected_first = last + 1;
            }
            assert_eq!(expected_first, 21, "{name}: every receipt anchored once");
        }
    }

    #[test]
    fn ledger_batches_are_adopted_when_the_root_matches() {
        let batch = close_batch(1, (1..=4).map(leaf).collect()).unwrap();
        let anchor = AnchorRecord {
            gateway_key: "g".into(),
            batch_id: 1,
            root: batch.root.to_hex(),
            n_receipts: 4,
            recorded_at: 0,
        };
        let (adopted, next) =
            adopt_anchor(Resume::fresh(), &anchor, (1..=4).map(leaf).collect()).unwrap();
        assert_eq!(adopted, batch);
        assert_eq!(
            next,
            Resume {
                next_batch_id: 2,
                after_sequence: 4
            }
        );
        let mut other = (1..=4).map(leaf).collect::<Vec<_>>();
        other[2].hash = Digest::ZERO;
        assert!(matches!(
            adopt_anchor(Resume::fresh(), &anchor, other),
            Err(AdoptError::Root { .. })
        ));
        assert!(matches!(
            adopt_anchor(Resume::fresh(), &anchor, (1..=3).map(leaf).collect()),
            Err(AdoptError::Count { .. })
        ));
        assert!(matches!(
            adopt_anchor(Resume::fresh(), &anchor, (2..=5).map(leaf).collect()),
            Err(AdoptError::Start { .. })
        ));
        assert!(matches!(
            adopt_anchor(next, &anchor, (5..=8).map(leaf).collect()),
            Err(AdoptError::WrongBatch { .. })
        ));
    }
}
