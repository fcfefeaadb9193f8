//! Checking a chain of blocks: numbers in sequence, each hash recomputed, each link to the
//! previous block, each signature, timestamps that never go back, bodies that can be read
//! and transaction ids derived from their position. Reports the first bad block.
//!
//! Owns what "a valid chain" means, and paging through a [`BlockStore`] to check it. Leaves
//! out what the transactions do (re-running them: `embedded::verify_execution`).

use ed25519_dalek::VerifyingKey;

use crate::block::{BlockBody, BlockRow, GENESIS_PREV_HASH, block_hash, tx_id};
use crate::store::{BlockStore, StoreError};

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
    /// Found by [`crate::verify_execution`] only: the block's read-write set or event is not
    /// what the contract does with the transaction's arguments.
    #[error("transaction {index} is not what the contract does: {reason}")]
    ExecutionMismatch { index: u32, reason: String },
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

/// Why [`verify_store`] failed: the store, or the chain it holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyStoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Chain(#[from] ChainError),
}

/// Reads every block of `store`, `page` rows at a time, and verifies the chain as
/// [`verify_chain`] does, without holding it all in memory: what `assent ledger verify`
/// runs.
pub async fn verify_store(
    store: &dyn BlockStore,
    public_key: &VerifyingKey,
    page: usize,
) -> Result<VerifiedChain, VerifyStoreError> {
    let mut verifier = ChainVerifier::new(public_key);
    loop {
        let from = verifier.head().map_or(0, |h| h.number + 1);
        let rows = store.read_from(from, page.max(1)).await?;
        if rows.is_empty() {
            return Ok(verifier.finish());
        }
        for row in &rows {
            verifier.push(row)?;
        }
    }
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

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::block::TxEntry;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[5; 32])
    }

    fn tx(prev: &[u8; 32], number: i64, index: u32) -> TxEntry {
        TxEntry {
            tx_id: tx_id(prev, number, index),
            function: "revoke".into(),
            args: serde_json::json!({}),
            reads: vec![],
            range_reads: vec![],
            writes: vec![],
            event: None,
        }
    }

    /// A valid chain of `n` blocks of one transaction each.
    fn chain(n: i64) -> Vec<BlockRow> {
        let mut rows: Vec<BlockRow> = Vec::new();
        let mut prev = GENESIS_PREV_HASH;
        for number in 0..n {
            let body = BlockBody {
                transactions: vec![tx(&prev, number, 0)],
            };
            let row = BlockRow::seal(number, prev, 1_000 + number, &body, &key());
            prev = row.hash_bytes().unwrap();
            rows.push(row);
        }
        rows
    }

    fn fault(rows: &[BlockRow]) -> (i64, ChainFault) {
        let e = verify_chain(rows, &key().verifying_key()).unwrap_err();
        (e.number, e.fault)
    }

    #[test]
    fn valid_and_empty_chains_verify() {
        let rows = chain(3);
        let v = verify_chain(&rows, &key().verifying_key()).unwrap();
        assert_eq!((v.n_blocks, v.n_transactions), (3, 3));
        assert_eq!(v.head.map(|h| h.number), Some(2));
        let empty = verify_chain(&[], &key().verifying_key()).unwrap();
        assert_eq!((empty.n_blocks, empty.head), (0, None));
    }

    #[test]
    fn each_fault_is_named_at_its_block() {
        let rows = chain(3);
        assert_eq!(
            fault(&rows[1..]),
            (1, ChainFault::OutOfSequence { expected: 0 })
        );

        let mut short_hash = rows.clone();
        short_hash[1].hash.pop();
        assert_eq!(fault(&short_hash), (1, ChainFault::MalformedHash));

        // Blocks re-sealed with the right key but breaking a rule other than the hash.
        let prev = rows[0].hash_bytes().unwrap();
        let reseal = |body: &BlockBody, timestamp: i64| {
            let mut r = rows[..1].to_vec();
            r.push(BlockRow::seal(1, prev, timestamp, body, &key()));
            r
        };
        let empty = BlockBody {
            transactions: vec![],
        };
        assert_eq!(fault(&reseal(&empty, 2_000)), (1, ChainFault::Empty));
        let one = BlockBody {
            transactions: vec![tx(&prev, 1, 0)],
        };
        assert_eq!(
            fault(&reseal(&one, 999)),
            (
                1,
                ChainFault::TimeWentBack {
                    timestamp: 999,
                    previous: 1_000
                }
            )
        );
        let wrong_id = BlockBody {
            transactions: vec![tx(&prev, 1, 0), tx(&prev, 1, 0)],
        };
        assert!(matches!(
            fault(&reseal(&wrong_id, 2_000)),
            (1, ChainFault::WrongTxId { index: 1, .. })
        ));
        let mut unreadable = rows[..1].to_vec();
        let body = b"not json".to_vec();
        let hash = block_hash(1, &prev, 2_000, &body);
        unreadable.push(BlockRow {
            number: 1,
            hash: hash.to_vec(),
            prev_hash: prev.to_vec(),
            timestamp: 2_000,
            body,
            signature: ed25519_dalek::Signer::sign(&key(), &hash)
                .to_bytes()
                .to_vec(),
        });
        assert!(matches!(
            fault(&unreadable),
            (1, ChainFault::UnreadableBody { .. })
        ));
    }

    #[test]
    fn skipping_signatures_still_checks_hashes() {
        let mut rows = chain(2);
        rows[1].signature = vec![0; 64];
        let mut v = ChainVerifier::new(&key().verifying_key()).skip_signatures();
        for row in &rows {
            v.push(row).unwrap();
        }
        rows[1].timestamp += 1;
        let mut v = ChainVerifier::new(&key().verifying_key()).skip_signatures();
        v.push(&rows[0]).unwrap();
        assert_eq!(
            v.push(&rows[1]).unwrap_err().fault,
            ChainFault::HashMismatch
        );
    }
}
