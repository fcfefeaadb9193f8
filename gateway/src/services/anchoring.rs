//! The anchoring task: reads durable receipts in chain order, closes Merkle batches on a size
//! or a time limit (or per receipt in strict mode) and records each batch's root on the ledger
//! in one transaction.
//!
//! Follows the restart protocol of `assent_receipts::batch`: a closed batch is stored before
//! its root is submitted and marked anchored after the ledger committed it; at start,
//! unanchored batches are submitted again (the contract takes a replay of the same root as a
//! no-op), batches the ledger knows but the store does not are rebuilt from the receipts and
//! checked, and batching resumes after the last closed batch. So nothing is anchored twice or
//! skipped. Proofs are not stored: a batch's tree is rebuilt from its receipts' hashes when a
//! proof is asked for.
//!
//! The receipts' hashes come from the receipt writer's [`LeafFeed`] (memory), and from the
//! store only for receipts the feed no longer or not yet holds (after a start, or when
//! anchoring fell far behind).
//!
//! Runs on a thread of its own with a one-thread runtime (the ledger's calls are async, the
//! store's block). Stops when the receipt writer stops, after closing and anchoring what is
//! left.

use std::sync::Arc;
use std::time::Duration;

use assent_ledger::Ledger;
use assent_receipts::{
    BatchConfig, BatchLeaf, Batcher, ClosedBatch, Digest, Resume, adopt_anchor, close_batch,
};
use tokio::sync::watch;

use crate::services::receipts::LeafFeed;
use crate::store::{BatchRow, LeafRow, Store, StoreError};

/// Receipts read from the store per query.
const READ_CHUNK: i64 = 2_048;
/// How long to wait before trying again after the store or the ledger failed.
const RETRY: Duration = Duration::from_millis(500);

/// Why anchoring stopped or must start over.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the ledger: {0}")]
    Ledger(String),
    #[error("a stored receipt hash is not 32 bytes (receipt {0})")]
    BadHash(i64),
    #[error("the receipts do not fit the batches: {0}")]
    Batches(String),
}

/// What the task needs.
pub struct Anchoring {
    pub store: Store,
    pub ledger: Arc<dyn Ledger>,
    pub gateway_id: String,
    /// The gateway's keyed hash on the ledger (`ConsortiumKey::gateway`).
    pub gateway_key: String,
    pub config: BatchConfig,
    /// The newest durable sequence, from the receipt writer; closed when it stops.
    pub committed: watch::Receiver<u64>,
    /// The durable receipts' hashes, from the receipt writer.
    pub feed: Arc<LeafFeed>,
}

impl Anchoring {
    /// Starts the task on its own thread.
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("assent-anchoring".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "the anchoring task could not start");
                        return;
                    }
                };
                runtime.block_on(self.run());
            })
    }

    /// Anchors until the receipt writer stops, starting over from the store after a failure.
    pub async fn run(mut self) {
        loop {
            match self.run_once().await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "anchoring interrupted; resuming from the store");
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    async fn run_once(&mut self) -> Result<(), AnchorError> {
        let resume = self.recover().await?;
        let mut batcher =
            Batcher::new(self.config, resume).map_err(|e| AnchorError::Batches(e.to_string()))?;
        let mut unanchored = !self.store.unanchored_batches(&self.gateway_id)?.is_empty();
        loop {
            // Take every durable receipt not yet in a batch.
            let mut stopping = false;
            loop {
                let after = batcher.last_sequence();
                let mut leaves = self.feed.take_after(after, READ_CHUNK as usize);
                if leaves.is_empty() && *self.committed.borrow() > after {
                    leaves = self
                        .store
                        .receipt_leaves(&self.gateway_id, after as i64, READ_CHUNK)?
                        .into_iter()
                        .map(to_leaf)
                        .collect::<Result<_, _>>()?;
                }
                if leaves.is_empty() {
                    break;
                }
                for leaf in leaves {
                    for batch in batcher
                        .push(leaf, now_ms())
                        .map_err(|e| AnchorError::Batches(e.to_string()))?
                    {
                        unanchored |= !self.close(&batch).await?;
                    }
                }
            }
            if let Some(batch) = batcher.poll(now_ms()) {
                unanchored |= !self.close(&batch).await?;
            }
            if unanchored {
                unanchored = !self.submit_unanchored().await?;
            }

            // Wait for new receipts, the open batch's deadline, or a retry.
            let wait = match batcher.deadline() {
                Some(deadline) => Duration::from_millis((deadline - now_ms()).max(0) as u64),
                None => Duration::from_secs(3600),
            };
            let wait = if unanchored { wait.min(RETRY) } else { wait };
            if !wait.is_zero() {
                tokio::select! {
                    changed = self.committed.changed() => stopping = changed.is_err(),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            if stopping {
                // The writer stopped: what is durable gets anchored before the task ends.
                let rest = self.store.receipt_leaves(
                    &self.gateway_id,
                    batcher.last_sequence() as i64,
                    i64::MAX,
                )?;
                for leaf in rest {
                    for batch in batcher
                        .push(to_leaf(leaf)?, now_ms())
                        .map_err(|e| AnchorError::Batches(e.to_string()))?
                    {
                        self.close(&batch).await?;
                    }
                }
                if let Some(batch) = batcher.flush() {
                    self.close(&batch).await?;
                }
                self.submit_unanchored().await?;
                return Ok(());
            }
        }
    }

    /// Submits stored batches the ledger has not confirmed, and adopts batches the ledger has
    /// that the store lost; returns where batching resumes.
    async fn recover(&self) -> Result<Resume, AnchorError> {
        self.submit_unanchored().await?;
        let mut resume = match self.store.last_batch(&self.gateway_id)? {
            Some(last) => Resume::after_batch(last.batch_id as u64, last.last_sequence as u64),
            None => Resume::fresh(),
        };
        while let Some(anchor) = self
            .ledger
            .anchor(&self.gateway_key, resume.next_batch_id)
            .await
            .map_err(|e| AnchorError::Ledger(e.to_string()))?
        {
            let leaves = self
                .store
                .receipt_leaves(
                    &self.gateway_id,
                    resume.after_sequence as i64,
                    anchor.n_receipts as i64,
                )?
                .into_iter()
                .map(to_leaf)
                .collect::<Result<Vec<_>, _>>()?;
            let (batch, next) = adopt_anchor(resume, &anchor, leaves)
                .map_err(|e| AnchorError::Batches(e.to_string()))?;
            tracing::warn!(
                batch_id = batch.batch_id,
                "a batch the ledger holds was missing from the store; rebuilt from its receipts"
            );
            self.store
                .insert_batch(&batch_row(&self.gateway_id, &batch))?;
            resume = next;
        }
        Ok(resume)
    }

    /// Stores a closed batch, then submits its root. `Ok(false)`: stored but not anchored
    /// (the ledger refused or is unreachable; it is submitted again later).
    async fn close(&self, batch: &ClosedBatch) -> Result<bool, AnchorError> {
        self.store
            .insert_batch(&batch_row(&self.gateway_id, batch))?;
        match self
            .submit(batch.batch_id, batch.submission(&self.gateway_key))
            .await
        {
            Ok(()) => Ok(true),
            Err(AnchorError::Ledger(e)) => {
                tracing::warn!(batch_id = batch.batch_id, error = %e, "batch root not anchored yet; will retry");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    async fn submit(
        &self,
        batch_id: u64,
        submission: assent_consent::AnchorSubmission,
    ) -> Result<(), AnchorError> {
        let receipt = self
            .ledger
            .record_anchor(submission)
            .await
            .map_err(|e| AnchorError::Ledger(e.to_string()))?;
        self.store.mark_batch_anchored(
            &self.gateway_id,
            batch_id as i64,
            &receipt.tx_id,
            Some(receipt.block_number as i64),
            now_ms(),
        )?;
        Ok(())
    }

    /// Submits every stored, unanchored batch in order. `Ok(true)` when none is left.
    async fn submit_unanchored(&self) -> Result<bool, AnchorError> {
        for row in self.store.unanchored_batches(&self.gateway_id)? {
            let Some(root) = digest(&row.root) else {
                return Err(AnchorError::Batches(format!(
                    "stored root of batch {} is not 32 bytes",
                    row.batch_id
                )));
            };
            let submission = assent_consent::AnchorSubmission {
                gateway_key: self.gateway_key.clone(),
                batch_id: row.batch_id as u64,
                root: root.to_hex(),
                n_receipts: (row.last_sequence - row.first_sequence + 1) as u64,
            };
            match self.submit(row.batch_id as u64, submission).await {
                Ok(()) => {}
                Err(AnchorError::Ledger(e)) => {
                    tracing::warn!(batch_id = row.batch_id, error = %e, "batch root not anchored yet; will retry");
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// The closed batch holding receipt `sequence` of `gateway_id`, rebuilt from the stored
/// receipts (for its proof), with the stored batch row.
pub fn rebuild_batch(
    store: &Store,
    gateway_id: &str,
    sequence: i64,
) -> Result<Option<(BatchRow, ClosedBatch)>, AnchorError> {
    let Some(row) = store.batch_of(gateway_id, sequence)? else {
        return Ok(None);
    };
    let leaves = store
        .receipt_leaves_between(gateway_id, row.first_sequence, row.last_sequence)?
        .into_iter()
        .map(to_leaf)
        .collect::<Result<Vec<_>, _>>()?;
    let batch = close_batch(row.batch_id as u64, leaves)
        .map_err(|e| AnchorError::Batches(e.to_string()))?;
    Ok(Some((row, batch)))
}

fn batch_row(gateway_id: &str, batch: &ClosedBatch) -> BatchRow {
    BatchRow {
        gateway_id: gateway_id.to_owned(),
        batch_id: batch.batch_id as i64,
        first_sequence: batch.first_sequence as i64,
        last_sequence: batch.last_sequence as i64,
        root: batch.root.as_bytes().to_vec(),
        closed_at_ms: now_ms(),
        tx_id: None,
        block_number: None,
        anchored_at_ms: None,
    }
}

fn to_leaf(row: LeafRow) -> Result<BatchLeaf, AnchorError> {
    let hash = digest(&row.hash).ok_or(AnchorError::BadHash(row.sequence))?;
    Ok(BatchLeaf {
        sequence: row.sequence as u64,
        receipt_id: row.receipt_id,
        hash,
    })
}

fn digest(bytes: &[u8]) -> Option<Digest> {
    <[u8; 32]>::try_from(bytes).ok().map(Digest)
}

fn now_ms() -> i64 {
    assent_ledger::Clock::now_millis(&assent_ledger::SystemClock)
}
