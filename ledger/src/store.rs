//! Where the embedded ledger keeps its blocks and the documents its records name by hash:
//! the [`BlockStore`] trait the gateway implements over its database, and an in-memory store
//! for tests.
//!
//! Owns the storage contract (atomic append after an expected head, reading from a number,
//! the head; documents put and read by hash). Leaves out SQL (the gateway), what a block
//! holds ([`crate::block`]) and checking a document against its hash (the ledger does, on
//! the way in and on the way out).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::block::BlockRow;

/// Durable block storage. One row per block, numbered from 0 without gaps.
#[async_trait::async_trait]
pub trait BlockStore: Send + Sync {
    /// Appends `row` atomically if the store's last block is `row.number - 1` (or the store is
    /// empty and `row.number` is 0); otherwise changes nothing and answers
    /// [`StoreError::Conflict`]. Two writers therefore cannot both append block N. Returns
    /// once the row is durable. Over SQL: one transaction inserting into a table whose
    /// primary key is `number`, after checking `max(number)`.
    async fn append(&self, row: &BlockRow) -> Result<(), StoreError>;

    /// Up to `limit` rows numbered `from` and above, in number order.
    async fn read_from(&self, from: i64, limit: usize) -> Result<Vec<BlockRow>, StoreError>;

    /// The number of the last block; `None` when empty.
    async fn head(&self) -> Result<Option<i64>, StoreError>;

    /// Keeps `document` under `hash`, off the blocks (the ledger's records hold only the
    /// hash). A document already stored under `hash` is kept as it is: the put changes
    /// nothing and succeeds. Returns once durable. The store does not check the hash.
    async fn put_document(&self, hash: &str, document: &[u8]) -> Result<(), StoreError>;

    /// The bytes stored under `hash`, as stored; `None` when there are none.
    async fn document(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store's head is not the block before the one appended.
    #[error("block {number} cannot follow the store's head {head:?}")]
    Conflict { number: i64, head: Option<i64> },
    /// The store could not be reached or did not answer; an append may or may not have
    /// taken effect.
    #[error("block store unavailable: {reason}")]
    Unavailable { reason: String },
}

/// A [`BlockStore`] in memory, for tests: nothing survives the process. Rows can be
/// replaced to simulate tampering ([`InMemoryBlockStore::tamper`]).
#[derive(Debug, Default)]
pub struct InMemoryBlockStore {
    rows: Mutex<Vec<BlockRow>>,
    documents: Mutex<HashMap<String, Vec<u8>>>,
    unavailable: Mutex<Option<String>>,
}

impl InMemoryBlockStore {
    pub fn new() -> InMemoryBlockStore {
        InMemoryBlockStore::default()
    }

    /// Every row, in order.
    pub fn rows(&self) -> Vec<BlockRow> {
        self.lock_rows().clone()
    }

    /// Changes a stored row in place, as an attacker with database access could.
    pub fn tamper(&self, number: i64, change: impl FnOnce(&mut BlockRow)) {
        let mut rows = self.lock_rows();
        if let Some(row) = usize::try_from(number).ok().and_then(|i| rows.get_mut(i)) {
            change(row);
        }
    }

    /// Replaces the document stored under `hash` (or stores one), as an attacker with
    /// database access could.
    pub fn tamper_document(&self, hash: &str, document: &[u8]) {
        self.lock_documents()
            .insert(hash.to_owned(), document.to_vec());
    }

    fn lock_documents(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u8>>> {
        self.documents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes every call fail with [`StoreError::Unavailable`] (`Some(reason)`) or work again
    /// (`None`).
    pub fn set_unavailable(&self, reason: Option<&str>) {
        *self
            .unavailable
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = reason.map(str::to_owned);
    }

    fn lock_rows(&self) -> std::sync::MutexGuard<'_, Vec<BlockRow>> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_available(&self) -> Result<(), StoreError> {
        match &*self
            .unavailable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Some(reason) => Err(StoreError::Unavailable {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl BlockStore for InMemoryBlockStore {
    async fn append(&self, row: &BlockRow) -> Result<(), StoreError> {
        self.check_available()?;
        let mut rows = self.lock_rows();
        let head = rows.last().map(|r| r.number);
        if row.number != head.map_or(0, |h| h + 1) {
            return Err(StoreError::Conflict {
                number: row.number,
                head,
            });
        }
        rows.push(row.clone());
        Ok(())
    }

    async fn read_from(&self, from: i64, limit: usize) -> Result<Vec<BlockRow>, StoreError> {
        self.check_available()?;
        let rows = self.lock_rows();
        // Rows are kept in number order (appends check it; tampering keeps positions).
        let start = rows.partition_point(|r| r.number < from);
        Ok(rows[start..].iter().take(limit).cloned().collect())
    }

    async fn head(&self) -> Result<Option<i64>, StoreError> {
        self.check_available()?;
        Ok(self.lock_rows().last().map(|r| r.number))
    }

    async fn put_document(&self, hash: &str, document: &[u8]) -> Result<(), StoreError> {
        self.check_available()?;
        self.lock_documents()
            .entry(hash.to_owned())
            .or_insert_with(|| document.to_vec());
        Ok(())
    }

    async fn document(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.check_available()?;
        Ok(self.lock_documents().get(hash).cloned())
    }
}
