//! Where the embedded ledger keeps its blocks: the [`BlockStore`] trait the gateway
//! implements over its database, and an in-memory store for tests.
//!
//! Owns the storage contract (atomic append after an expected head, reading from a number,
//! the head). Leaves out SQL (the gateway) and what a block holds ([`crate::block`]).

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
}
