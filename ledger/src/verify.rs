//! Checking a chain of blocks: numbers in sequence, each hash recomputed, each link to the
//! previous block, each signature, timestamps that never go back, bodies that can be read
//! and transaction ids derived from their position. Reports the first bad block.
//!
//! Owns what "a valid chain" means. Leaves out reading rows from a store (the caller pages
//! through [`crate::BlockStore::read_from`] and feeds a [`ChainVerifier`]).

use ed25519_dalek::VerifyingKey;

use crate::block::{BlockBody, BlockRow, GENESIS_PREV_HASH, block_hash, tx_id};

/// A chain that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedChain {
    pub n_blocks: u64,
    pub n_transactions: u64,
    /// The last block; `None` for an empty chain.
    pub head: Option<ChainHead>,
}

/// The last verified block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    pub number: i64,
    pub hash: [u8; 32],
    pub timestamp: i64,
}

/// The first bad block and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("block {number}: {fault}")]
pub struct ChainError {
    pub number: i64,
    pub fault: ChainFault,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainFault {
    #[error("out of sequence: expected block {expected}")]
    OutOfSequence { expected: i64 },
    #[error("hash or previous hash is not 32 bytes")]
    MalformedHash,
    #[error("previous hash does not match the hash of the block before")]
    BrokenLink,
    #[error("stored hash does not match the hash recomputed from the block")]
    HashMismatch,
    #[error("signature does not verify with the node key")]
    BadSignature,
    #[error("timestamp {timestamp} is earlier than the previous block's {previous}")]
    TimeWentBack { timestamp: i64, previous: i64 },
    #[error("body cannot be read: {reason}")]
    UnreadableBody { reason: String },
    #[error("block holds no transaction")]
    Empty,
    #[error("transaction {index} has id {found}, expected {expected}")]
    WrongTxId {
        index: u32,
        found: String,
        expected: String,
    },
}

/// Recomputes every hash, link and signature of `blocks` (from block 0, in order) with the
/// node's `public_key`, and reports the first bad block.
pub fn verify_chain<'a>(
    blocks: impl IntoIterator<Item = &'a BlockRow>,
    public_key: &VerifyingKey,
) -> Result<VerifiedChain, ChainError> {
    let mut verifier = ChainVerifier::new(public_key);
    for row in blocks {
        verifier.push(row)?;
    }
    Ok(verifier.finish())
}

/// A block that verified: its place in the chain and its transactions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBlock {
    pub head: ChainHead,
    pub body: BlockBody,
}

/// Verifies a chain block by block, so a long chain can be read in pages.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    key: VerifyingKey,
    check_signatures: bool,
    head: Option<ChainHead>,
    n_blocks: u64,
    n_transactions: u64,
}

impl ChainVerifier {
    /// A verifier for a chain starting at block 0, checking every signature.
    pub fn new(public_key: &VerifyingKey) -> ChainVerifier {
        ChainVerifier {
            key: *public_key,
            check_signatures: true,
            head: None,
            n_blocks: 0,
            n_transactions: 0,
        }
    }

    /// A verifier for the blocks that follow `head`, already verified.
    pub fn after(head: ChainHead, public_key: &VerifyingKey) -> ChainVerifier {
        ChainVerifier {
            head: Some(head),
            ..ChainVerifier::new(public_key)
        }
    }

    /// Skips the per-block signature check. Every hash covers the previous one, so checking
    /// the last block's signature afterwards ([`BlockRow::signature_verifies`]) still
    /// authenticates the whole chain; only a bad signature on an earlier block goes unseen.
    pub fn skip_signatures(mut self) -> ChainVerifier {
        self.check_signatures = false;
        self
    }

    /// Checks the next block.
    pub fn push(&mut self, row: &BlockRow) -> Result<VerifiedBlock, ChainError> {
        let fail = |fault| ChainError {
            number: row.number,
            fault,
        };
        let (expected, prev, prev_time) = match self.head {
            Some(h) => (h.number + 1, h.hash, Some(h.timestamp)),
            None => (0, GENESIS_PREV_HASH, None),
        };
        if row.number != expected {
            return Err(fail(ChainFault::OutOfSequence { expected }));
        }
        let (Some(hash), Some(prev_hash)) = (row.hash_bytes(), row.prev_hash_bytes()) else {
            return Err(fail(ChainFault::MalformedHash));
        };
        if prev_hash != prev {
            return Err(fail(ChainFault::BrokenLink));
        }
        if block_hash(row.number, &prev_hash, row.timestamp, &row.body) != hash {
            return Err(fail(ChainFault::HashMismatch));
        }
        if self.check_signatures && !row.signature_verifies(&self.key) {
            return Err(fail(ChainFault::BadSignature));
        }
        if let Some(previous) = prev_time
            && row.timestamp < previous
        {
            return Err(fail(ChainFault::TimeWentBack {
                timestamp: row.timestamp,
                previous,
            }));
        }
        let body = BlockBody::decode(&row.body).map_err(|e| {
            fail(ChainFault::UnreadableBody {
                reason: e.to_string(),
            })
        })?;
        if body.transactions.is_empty() {
            return Err(fail(ChainFault::Empty));
        }
        for (index, tx) in body.transactions.iter().enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            let expected = tx_id(&prev_hash, row.number, index);
            if tx.tx_id != expected {
                return Err(fail(ChainFault::WrongTxId {
                    index,
                    found: tx.tx_id.clone(),
                    expected,
                }));
            }
        }
        let head = ChainHead {
            number: row.number,
            hash,
            timestamp: row.timestamp,
        };
        self.head = Some(head);
        self.n_blocks += 1;
        self.n_transactions += body.transactions.len() as u64;
        Ok(VerifiedBlock { head, body })
    }

    /// The last block verified so far.
    pub fn head(&self) -> Option<ChainHead> {
        self.head
    }

    pub fn finish(self) -> VerifiedChain {
        VerifiedChain {
            n_blocks: self.n_blocks,
            n_transactions: self.n_transactions,
            head: self.head,
        }
    }
}
