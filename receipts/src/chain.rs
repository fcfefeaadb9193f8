//! The per-gateway hash chain: appending a receipt sets its sequence number and the hash of
//! the one before; a verifier walks receipts in order and reports each break with the
//! receipt id where it shows.
//!
//! Owns the chain's rules. Leaves out the receipt's encoding (`receipt.rs`), locking (the
//! gateway holds a [`Chain`] behind its own lock: appends are serial by nature) and storage.
//!
//! **Invariant:** in a gateway's chain, receipt `n` (from 1) has `sequence == n` and
//! `prev_hash` equal to the hash of receipt `n - 1`, or [`Digest::ZERO`] for `n == 1`.
//!
//! Durability and the head: the gateway appends, then stores (group commit). Should the store
//! refuse a group, every receipt appended from the group's first on links to a hash that will
//! never be stored: the gateway fails those requests (503, nothing released) and sets the head
//! back to the last stored receipt with [`Chain::resume_at`]. A [`Chain`] is a small value;
//! the gateway can keep the head of the last durable receipt beside the live one.

use std::fmt;

use crate::digest::Digest;
use crate::receipt::Receipt;

/// The head of a gateway's chain: what the next receipt links to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    gateway_id: String,
    last_sequence: u64,
    last_hash: Digest,
}

/// A receipt placed in its chain, with its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainedReceipt {
    pub receipt: Receipt,
    pub hash: Digest,
    /// [`Receipt::canonical_bytes`], encoded once for the hash and kept for storage.
    pub bytes: Vec<u8>,
}

/// Why a receipt cannot be appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("receipt {receipt_id} belongs to gateway `{found}`, not `{expected}`")]
    OtherGateway {
        receipt_id: String,
        expected: String,
        found: String,
    },
}

impl Chain {
    /// A new, empty chain.
    pub fn genesis(gateway_id: impl Into<String>) -> Chain {
        Chain {
            gateway_id: gateway_id.into(),
            last_sequence: 0,
            last_hash: Digest::ZERO,
        }
    }

    /// The chain after `last`, its newest stored receipt (the gateway reads it at start).
    pub fn resume(last: &Receipt) -> Chain {
        Chain {
            gateway_id: last.gateway_id.clone(),
            last_sequence: last.sequence,
            last_hash: last.hash(),
        }
    }

    /// The chain after a stored receipt known by its sequence and hash.
    pub fn resume_at(
        gateway_id: impl Into<String>,
        last_sequence: u64,
        last_hash: Digest,
    ) -> Chain {
        Chain {
            gateway_id: gateway_id.into(),
            last_sequence,
            last_hash,
        }
    }

    pub fn gateway_id(&self) -> &str {
        &self.gateway_id
    }

    pub fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    pub fn last_hash(&self) -> Digest {
        self.last_hash
    }

    /// Sets `receipt.sequence` and `receipt.prev_hash`, hashes it and moves the head on.
    pub fn append(&mut self, mut receipt: Receipt) -> Result<ChainedReceipt, ChainError> {
        if receipt.gateway_id != self.gateway_id {
            return Err(ChainError::OtherGateway {
                receipt_id: receipt.id,
                expected: self.gateway_id.clone(),
                found: receipt.gateway_id,
            });
        }
        receipt.sequence = self.last_sequence + 1;
        receipt.prev_hash = self.last_hash;
        let bytes = receipt.canonical_bytes();
        let hash = Digest::of(&bytes);
        self.last_sequence = receipt.sequence;
        self.last_hash = hash;
        Ok(ChainedReceipt {
            receipt,
            hash,
            bytes,
        })
    }
}

/// A break in a chain, found at the receipt `receipt_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    pub receipt_id: String,
    pub sequence: u64,
    pub kind: BreakKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakKind {
    /// The receipt's stored hash is not the hash of its content: the receipt was altered.
    HashMismatch { stored: Digest, computed: Digest },
    /// `prev_hash` is not the hash of the receipt before it: that one was altered, replaced
    /// or removed.
    PrevHashMismatch { expected: Digest, found: Digest },
    /// The sequence number is not the one after the previous receipt's: receipts are missing,
    /// repeated or out of order.
    SequenceGap { expected: u64, found: u64 },
    /// The first receipt of a chain (sequence 1) does not start from the zero digest.
    BadGenesis { found: Digest },
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "receipt {} (#{}): {}",
            self.receipt_id, self.sequence, self.kind
        )
    }
}

impl fmt::Display for BreakKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakKind::HashMismatch { stored, computed } => write!(
                f,
                "content does not match its hash (stored {stored}, computed {computed})"
            ),
            BreakKind::PrevHashMismatch { expected, found } => write!(
                f,
                "previous hash {found} is not the previous receipt's hash {expected}"
            ),
            BreakKind::SequenceGap { expected, found } => {
                write!(f, "sequence {found} where {expected} was expected")
            }
            BreakKind::BadGenesis { found } => {
                write!(f, "first receipt links to {found}, not the zero digest")
            }
        }
    }
}

/// Walks one gateway's receipts in sequence order. Each receipt is checked against the one
/// before it; after a break, checking goes on from the receipt as found, so one altered
/// receipt yields its own report and the next receipt's, not a cascade.
#[derive(Debug, Clone, Default)]
pub struct ChainVerifier {
    previous: Option<(u64, Digest)>,
    /// Whether a jump in sequence numbers is a break (a complete export) or expected (a
    /// filtered one, whose links can only be checked where neighbours are both present).
    contiguous: bool,
}

impl ChainVerifier {
    /// A verifier for a complete, contiguous run of receipts: every gap is a break.
    pub fn contiguous() -> ChainVerifier {
        ChainVerifier {
            previous: None,
            contiguous: true,
        }
    }

    /// A verifier for a filtered selection: links are checked between receipts with
    /// consecutive sequence numbers only.
    pub fn sparse() -> ChainVerifier {
        ChainVerifier {
            previous: None,
            contiguous: false,
        }
    }

    /// A verifier for a selection that goes on after a receipt known only by its sequence
    /// number and stored hash (the receipt before one read on its own).
    pub fn after(sequence: u64, hash: Digest) -> ChainVerifier {
        ChainVerifier {
            previous: Some((sequence, hash)),
            contiguous: false,
        }
    }

    /// Checks the next receipt; `stored_hash` is the hash kept with it, if any. Returns the
    /// receipt's computed hash and the breaks found at it.
    pub fn push(
        &mut self,
        receipt: &Receipt,
        stored_hash: Option<Digest>,
    ) -> (Digest, Vec<ChainBreak>) {
        let computed = receipt.hash();
        let mut breaks = Vec::new();
        let mut report = |kind| {
            breaks.push(ChainBreak {
                receipt_id: receipt.id.clone(),
                sequence: receipt.sequence,
                kind,
            })
        };
        if let Some(stored) = stored_hash
            && stored != computed
        {
            report(BreakKind::HashMismatch { stored, computed });
        }
        if receipt.sequence == 1 && receipt.prev_hash != Digest::ZERO {
            report(BreakKind::BadGenesis {
                found: receipt.prev_hash,
            });
        }
        if let Some((seq, hash)) = self.previous {
            let next = receipt.sequence == seq + 1;
            if next && receipt.prev_hash != hash {
                report(BreakKind::PrevHashMismatch {
                    expected: hash,
                    found: receipt.prev_hash,
                });
            } else if !next && (self.contiguous || receipt.sequence <= seq) {
                report(BreakKind::SequenceGap {
                    expected: seq + 1,
                    found: receipt.sequence,
                });
            }
        }
        // Link the next receipt to what this one hashes to now; a stored hash that differs was
        // reported above.
        self.previous = Some((receipt.sequence, computed));
        (computed, breaks)
    }
}

/// Checks a complete run of receipts in order (each with its stored hash, if kept) and
/// returns every break.
pub fn verify_chain<'a>(
    receipts: impl IntoIterator<Item = (&'a Receipt, Option<Digest>)>,
) -> Vec<ChainBreak> {
    let mut verifier = ChainVerifier::contiguous();
    receipts
        .into_iter()
        .flat_map(|(r, h)| verifier.push(r, h).1)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipt::tests::sample;

    fn chain_of(n: usize) -> Vec<ChainedReceipt> {
        let mut chain = Chain::genesis("gw-1");
        (1..=n)
            .map(|i| chain.append(sample(&format!("r{i}"))).unwrap())
            .collect()
    }

    fn kinds(breaks: &[ChainBreak]) -> Vec<(String, &'static str)> {
        breaks
            .iter()
            .map(|b| {
                let k = match b.kind {
                    BreakKind::HashMismatch { .. } => "hash",
                    BreakKind::PrevHashMismatch { .. } => "prev",
                    BreakKind::SequenceGap { .. } => "gap",
                    BreakKind::BadGenesis { .. } => "genesis",
                };
                (b.receipt_id.clone(), k)
            })
            .collect()
    }

    #[test]
    fn append_links_receipts() {
        let rs = chain_of(3);
        assert_eq!(rs[0].receipt.sequence, 1);
        assert_eq!(rs[0].receipt.prev_hash, Digest::ZERO);
        assert_eq!(rs[1].receipt.prev_hash, rs[0].hash);
        assert_eq!(rs[2].receipt.prev_hash, rs[1].hash);
        assert_eq!(rs[2].hash, rs[2].receipt.hash());
        let mut resumed = Chain::resume(&rs[2].receipt);
        let next = resumed.append(sample("r4")).unwrap();
        assert_eq!(next.receipt.sequence, 4);
        assert_eq!(next.receipt.prev_hash, rs[2].hash);
        assert_eq!(
            Chain::resume_at("gw-1", 3, rs[2].hash),
            Chain::resume(&rs[2].receipt)
        );
    }

    #[test]
    fn append_refuses_another_gateways_receipt() {
        let mut chain = Chain::genesis("gw-2");
        assert!(matches!(
            chain.append(sample("r1")),
            Err(ChainError::OtherGateway { .. })
        ));
        assert_eq!(chain.last_sequence(), 0);
    }

    #[test]
    fn intact_chain_verifies() {
        let rs = chain_of(5);
        assert!(verify_chain(rs.iter().map(|c| (&c.receipt, Some(c.hash)))).is_empty());
        assert!(verify_chain(rs.iter().map(|c| (&c.receipt, None))).is_empty());
    }

    type Tamper = fn(&mut Vec<ChainedReceipt>);

    /// (name, tampering, stored hashes kept, expected (receipt id, break)).
    type BreakCase = (
        &'static str,
        Tamper,
        bool,
        &'static [(&'static str, &'static str)],
    );

    #[test]
    fn breaks_are_reported_with_the_receipt_id() {
        let cases: &[BreakCase] = &[
            (
                "content altered, hash kept",
                |rs| rs[2].receipt.status = 500,
                true,
                &[("r3", "hash"), ("r4", "prev")],
            ),
            (
                "content altered, no stored hash",
                |rs| rs[2].receipt.site = None,
                false,
                &[("r4", "prev")],
            ),
            (
                "content and stored hash altered together",
                |rs| {
                    rs[2].receipt.decision = crate::AccessDecision::Deny;
                    rs[2].hash = rs[2].receipt.hash();
                },
                true,
                &[("r4", "prev")],
            ),
            (
                "receipt removed",
                |rs| {
                    rs.remove(2);
                },
                true,
                &[("r4", "gap")],
            ),
            (
                "receipts swapped",
                |rs| rs.swap(1, 2),
                true,
                &[("r3", "gap"), ("r2", "gap"), ("r4", "gap")],
            ),
            (
                "receipt repeated",
                |rs| {
                    let dup = rs[1].clone();
                    rs.insert(2, dup);
                },
                true,
                &[("r2", "gap")],
            ),
            (
                "forged genesis",
                |rs| {
                    rs[0].receipt.prev_hash = Digest::of(b"x");
                    rs[0].hash = rs[0].receipt.hash();
                },
                true,
                &[("r1", "genesis"), ("r2", "prev")],
            ),
            (
                "last receipt dropped",
                |rs| {
                    rs.pop();
                },
                true,
                &[],
            ),
        ];
        for (name, tamper, with_hash, expected) in cases {
            let mut rs = chain_of(5);
            tamper(&mut rs);
            let breaks = verify_chain(rs.iter().map(|c| (&c.receipt, with_hash.then_some(c.hash))));
            let expected: Vec<(String, &str)> =
                expected.iter().map(|(i, k)| (i.to_string(), *k)).collect();
            assert_eq!(kinds(&breaks), expected, "{name}");
        }
    }

    #[test]
    fn sparse_verifier_accepts_gaps_but_checks_neighbours() {
        let mut rs = chain_of(6);
        rs.remove(1);
        rs[3].receipt.time_ms += 1; // r5 altered: r6 no longer links to it
        let mut v = ChainVerifier::sparse();
        let breaks: Vec<ChainBreak> = rs.iter().flat_map(|c| v.push(&c.receipt, None).1).collect();
        assert_eq!(kinds(&breaks), vec![("r6".to_string(), "prev")]);
        assert!(
            breaks[0]
                .to_string()
                .starts_with("receipt r6 (#6): previous hash")
        );
    }
}
