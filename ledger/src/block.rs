//! Blocks of the embedded ledger: the stored row, the body (transactions with their
//! read-write sets and events), the block hash, transaction ids and the node's signature.
//!
//! Owns the canonical encoding. Leaves out where rows are kept ([`crate::BlockStore`]) and
//! checking a whole chain ([`crate::verify_chain`]).
//!
//! # Canonical encoding
//!
//! A block's hash is SHA-256 over, in order:
//! 1. the ASCII bytes `assent-ledger/block/v1` and one zero byte;
//! 2. the block number, 8 bytes, big-endian two's complement;
//! 3. the previous block's hash, 32 bytes (32 zero bytes for block 0);
//! 4. the timestamp, Unix milliseconds, 8 bytes, big-endian two's complement;
//! 5. the body's length in bytes, 8 bytes, big-endian;
//! 6. the body, exactly as stored.
//!
//! The body is the UTF-8 JSON of a [`BlockBody`]; it is hashed as stored, never re-encoded,
//! so the JSON need not be canonical. The signature is Ed25519 (RFC 8032, strict
//! verification) by the node key over the 32 hash bytes.
//!
//! A transaction's id is the lower-case hex of SHA-256 over `assent-ledger/tx/v1`, a zero
//! byte, the previous block's hash, the block number (8 bytes big-endian) and the
//! transaction's index in the block (4 bytes big-endian): unique per position on a chain,
//! and checkable by a verifier.
//!
//! **Invariant:** a body holds keyed hashes only: the call's arguments are the contract's
//! submissions, the writes the contract's records, the events its payloads.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::Checkpoint;

/// The previous hash of block 0.
pub const GENESIS_PREV_HASH: [u8; 32] = [0; 32];

const BLOCK_DOMAIN: &[u8] = b"assent-ledger/block/v1\0";
const TX_DOMAIN: &[u8] = b"assent-ledger/tx/v1\0";

/// One block as a row of the gateway's store. Plain columns: the gateway maps it with diesel
/// (`number BIGINT PRIMARY KEY, hash BLOB, prev_hash BLOB, timestamp BIGINT, body TEXT or
/// BLOB, signature BLOB`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRow {
    /// 0 for the first block, then +1.
    pub number: i64,
    /// SHA-256 of the canonical encoding, 32 bytes.
    pub hash: Vec<u8>,
    /// The previous block's hash, 32 bytes; zeros for block 0.
    pub prev_hash: Vec<u8>,
    /// Unix milliseconds; never earlier than the previous block's.
    pub timestamp: i64,
    /// The UTF-8 JSON of a [`BlockBody`].
    pub body: Vec<u8>,
    /// Ed25519 signature of `hash` by the node key, 64 bytes.
    pub signature: Vec<u8>,
}

/// The transactions of a block. A storage type: its JSON is the block body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockBody {
    pub transactions: Vec<TxEntry>,
}

/// One committed transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TxEntry {
    pub tx_id: String,
    /// The contract function ([`crate::TxCall::function`]).
    pub function: String,
    /// Its arguments ([`crate::TxCall::args`]): keyed hashes, never identifiers in clear.
    pub args: serde_json::Value,
    /// Keys read, with the position of the transaction that last wrote each (`None`: absent).
    pub reads: Vec<KeyRead>,
    /// Key ranges read.
    pub range_reads: Vec<RangeRead>,
    /// Keys written, in order; `value: None` deletes.
    pub writes: Vec<KeyWrite>,
    pub event: Option<EventEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRead {
    pub key: String,
    pub version: Option<Checkpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeRead {
    pub start: String,
    pub end: String,
}

/// A write. Values are UTF-8 text (the contract writes JSON records and keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyWrite {
    pub key: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventEntry {
    pub name: String,
    /// UTF-8 text (the contract's payloads are JSON).
    pub payload: String,
}

/// The block hash of the canonical encoding (see the module docs).
pub fn block_hash(number: i64, prev_hash: &[u8; 32], timestamp: i64, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(BLOCK_DOMAIN);
    h.update(number.to_be_bytes());
    h.update(prev_hash);
    h.update(timestamp.to_be_bytes());
    h.update((body.len() as u64).to_be_bytes());
    h.update(body);
    h.finalize().into()
}

/// The id of transaction `index` of block `number` whose previous hash is `prev_hash`.
pub fn tx_id(prev_hash: &[u8; 32], number: i64, index: u32) -> String {
    let mut h = Sha256::new();
    h.update(TX_DOMAIN);
    h.update(prev_hash);
    h.update(number.to_be_bytes());
    h.update(index.to_be_bytes());
    hex::encode(h.finalize())
}

impl BlockBody {
    /// The stored form: UTF-8 JSON.
    pub fn encode(&self) -> Vec<u8> {
        // Strings, numbers, options and JSON values with string keys: cannot fail.
        serde_json::to_vec(self).expect("block bodies serialise")
    }

    pub fn decode(bytes: &[u8]) -> Result<BlockBody, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

impl BlockRow {
    /// Builds and signs block `number` holding `body`.
    pub fn seal(
        number: i64,
        prev_hash: [u8; 32],
        timestamp: i64,
        body: &BlockBody,
        key: &SigningKey,
    ) -> BlockRow {
        let body = body.encode();
        let hash = block_hash(number, &prev_hash, timestamp, &body);
        let signature = key.sign(&hash);
        BlockRow {
            number,
            hash: hash.to_vec(),
            prev_hash: prev_hash.to_vec(),
            timestamp,
            body,
            signature: signature.to_bytes().to_vec(),
        }
    }

    /// The stored hash as 32 bytes; `None` when it has another length.
    pub fn hash_bytes(&self) -> Option<[u8; 32]> {
        self.hash.as_slice().try_into().ok()
    }

    /// The stored previous hash as 32 bytes; `None` when it has another length.
    pub fn prev_hash_bytes(&self) -> Option<[u8; 32]> {
        self.prev_hash.as_slice().try_into().ok()
    }

    /// Whether the signature verifies (strictly) over the stored hash with `key`.
    pub fn signature_verifies(&self, key: &VerifyingKey) -> bool {
        match Signature::from_slice(&self.signature) {
            Ok(signature) => key.verify_strict(&self.hash, &signature).is_ok(),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_covers_every_field_and_the_signature_the_hash() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let body = BlockBody {
            transactions: vec![],
        };
        let row = BlockRow::seal(3, [1; 32], 1_000, &body, &key);
        assert_eq!(row.hash.len(), 32);
        assert_eq!(row.signature.len(), 64);
        assert!(row.signature_verifies(&key.verifying_key()));
        let base = block_hash(3, &[1; 32], 1_000, &row.body);
        assert_eq!(row.hash_bytes(), Some(base));
        assert_ne!(base, block_hash(4, &[1; 32], 1_000, &row.body));
        assert_ne!(base, block_hash(3, &[2; 32], 1_000, &row.body));
        assert_ne!(base, block_hash(3, &[1; 32], 1_001, &row.body));
        assert_ne!(base, block_hash(3, &[1; 32], 1_000, b"{}"));
        let other = SigningKey::from_bytes(&[8; 32]);
        assert!(!row.signature_verifies(&other.verifying_key()));
        assert_ne!(tx_id(&[1; 32], 3, 0), tx_id(&[1; 32], 3, 1));
        assert_eq!(tx_id(&[1; 32], 3, 0).len(), 64);
    }
}
