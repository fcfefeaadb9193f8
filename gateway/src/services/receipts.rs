//! The receipt writer: every receipt (of a FHIR request, a consent API call, an audit-log
//! read) is placed in this gateway's hash chain and made durable before its response is
//! released.
//!
//! One thread owns the chain head and a store connection of its own (synced commits). The
//! record phase hands it a receipt and waits; the thread takes every receipt queued while the
//! previous commit was running and writes them in one transaction (group commit), so a sync is
//! shared by many requests. A failed commit answers every waiting request with an error (the
//! pipeline then releases nothing: 503) and the head is read back from the store, so the chain
//! never skips or forks.
//!
//! **Invariant:** a receipt's `Ok` is sent only after the transaction holding it committed.

use std::sync::mpsc as std_mpsc;

use assent_receipts::{Chain, ChainedReceipt, Receipt, ReceiptSubjects};
use tokio::sync::{mpsc, oneshot, watch};

use crate::store::{AnyConnection, ReceiptPatientRow, ReceiptRow, Store, StoreError};

/// The response header naming a request's receipt.
pub const RECEIPT_HEADER: &str = "x-assent-receipt";

/// Receipts waiting for the writer at most; beyond this the record phase waits for room.
pub const QUEUE_CAPACITY: usize = 16_384;
/// Receipts in one transaction at most.
pub const MAX_GROUP: usize = 4_096;

/// A receipt as the record phase builds it, before the chain places it.
///
/// Every patient the access reached is `subjects.patients`, and their keyed hashes, in the
/// same order, `receipt.patient_keys` (both made by [`ReceiptSubjects::keys`]): the writer
/// stores one `receipt_patients` row per pair (the index of a patient's disclosures), so the
/// receipt and the disclosures cannot name different patients. A receipt whose two lists
/// differ in length is refused ([`ReceiptError::Patients`]).
#[derive(Debug, Clone)]
pub struct PendingReceipt {
    /// `sequence` and `prev_hash` are set by the writer.
    pub receipt: Receipt,
    pub subjects: ReceiptSubjects,
}

/// Why a receipt was not recorded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReceiptError {
    #[error("the store refused the receipts: {0}")]
    Store(String),
    #[error("the receipt writer has stopped")]
    Stopped,
    #[error("the receipt does not belong to this gateway's chain")]
    Chain,
    #[error("the receipt's patient keys and clear patients differ")]
    Patients,
}

struct Job {
    pending: PendingReceipt,
    done: oneshot::Sender<Result<u64, ReceiptError>>,
}

/// The sending side, shared by every worker.
pub struct ReceiptWriter {
    tx: mpsc::Sender<Job>,
    committed: watch::Receiver<u64>,
    gateway_id: String,
}

impl ReceiptWriter {
    /// Resumes the chain after the newest stored receipt of `gateway_id` and starts the writer
    /// thread.
    pub fn start(store: &Store, gateway_id: &str) -> Result<ReceiptWriter, StoreError> {
        let mut conn = store.durable_connection()?;
        let chain = resume_chain(&mut conn, gateway_id)?;
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (committed_tx, committed) = watch::channel(chain.last_sequence());
        let writer = Writer {
            store: store.clone(),
            conn: Some(conn),
            chain,
            committed: committed_tx,
        };
        let (started_tx, started_rx) = std_mpsc::channel();
        std::thread::Builder::new()
            .name("assent-receipts".into())
            .spawn(move || {
                let _ = started_tx.send(());
                writer.run(rx)
            })
            .map_err(|e| StoreError::Open(format!("cannot start the receipt writer: {e}")))?;
        let _ = started_rx.recv();
        Ok(ReceiptWriter {
            tx,
            committed,
            gateway_id: gateway_id.to_owned(),
        })
    }

    pub fn gateway_id(&self) -> &str {
        &self.gateway_id
    }

    /// Places `pending` in the chain and returns its sequence once it is durable.
    pub async fn write(&self, pending: PendingReceipt) -> Result<u64, ReceiptError> {
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Job { pending, done })
            .await
            .map_err(|_| ReceiptError::Stopped)?;
        answer.await.map_err(|_| ReceiptError::Stopped)?
    }

    /// The sequence of the newest durable receipt, updated after every commit (the anchoring
    /// task waits on it).
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }
}

fn resume_chain(conn: &mut AnyConnection, gateway_id: &str) -> Result<Chain, StoreError> {
    match Store::last_receipt(conn, gateway_id)? {
        None => Ok(Chain::genesis(gateway_id)),
        Some((sequence, body)) => {
            let last = Receipt::from_canonical_bytes(&body).map_err(|e| {
                StoreError::Open(format!(
                    "stored receipt {sequence} of gateway `{gateway_id}` cannot be read: {e}"
                ))
            })?;
            Ok(Chain::resume(&last))
        }
    }
}

struct Writer {
    store: Store,
    /// `None` after a failure broke the connection; re-established on the next group.
    conn: Option<AnyConnection>,
    chain: Chain,
    committed: watch::Sender<u64>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut jobs = Vec::with_capacity(MAX_GROUP);
        while let Some(first) = rx.blocking_recv() {
            jobs.push(first);
            while jobs.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            self.commit_group(&mut jobs);
        }
    }

    fn commit_group(&mut self, jobs: &mut Vec<Job>) {
        if self.conn.is_none()
            && let Err(e) = self.reconnect()
        {
            tracing::error!(error = %e, receipts = jobs.len(), "the receipt store is unreachable: responses are withheld");
            let error = ReceiptError::Store(e.to_string());
            for job in jobs.drain(..) {
                let _ = job.done.send(Err(error.clone()));
            }
            return;
        }
        let saved = self.chain.clone();
        let mut rows = Vec::with_capacity(jobs.len());
        let mut patients = Vec::new();
        let mut placed = Vec::with_capacity(jobs.len());
        for job in jobs.drain(..) {
            let Job { pending, done } = job;
            let PendingReceipt { receipt, subjects } = pending;
            if receipt.patient_keys.len() != subjects.patients.len() {
                let _ = done.send(Err(ReceiptError::Patients));
                continue;
            }
            match self.chain.append(receipt) {
                Ok(chained) => {
                    let sequence = chained.receipt.sequence;
                    for (patient, patient_key) in
                        subjects.patients.iter().zip(&chained.receipt.patient_keys)
                    {
                        patients.push(ReceiptPatientRow {
                            receipt_id: chained.receipt.id.clone(),
                            patient_key: patient_key.clone(),
                            patient: patient.clone(),
                            time_ms: chained.receipt.time_ms,
                        });
                    }
                    rows.push(row(&chained, &subjects));
                    placed.push((done, sequence));
                }
                Err(_) => {
                    let _ = done.send(Err(ReceiptError::Chain));
                }
            }
        }
        if rows.is_empty() {
            return;
        }
        // The same patient twice in one receipt is one row.
        patients
            .sort_by(|a, b| (&a.receipt_id, &a.patient_key).cmp(&(&b.receipt_id, &b.patient_key)));
        patients.dedup_by(|a, b| a.receipt_id == b.receipt_id && a.patient_key == b.patient_key);
        match self.insert(&rows, &patients) {
            Ok(()) => {
                let _ = self.committed.send(self.chain.last_sequence());
                for (done, sequence) in placed {
                    let _ = done.send(Ok(sequence));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, receipts = rows.len(), "receipts could not be stored: their responses are withheld");
                let error = ReceiptError::Store(e.to_string());
                for (done, _) in placed {
                    let _ = done.send(Err(error.clone()));
                }
                // The commit may or may not have happened (a connection lost mid-commit):
                // the head is read back from the store before the next group.
                self.conn = None;
                self.chain = saved;
            }
        }
    }

    /// A new connection, and the chain head as the store has it.
    fn reconnect(&mut self) -> Result<(), StoreError> {
        let mut conn = self.store.durable_connection()?;
        self.chain = resume_chain(&mut conn, self.chain.gateway_id())?;
        self.conn = Some(conn);
        Ok(())
    }

    fn insert(
        &mut self,
        rows: &[ReceiptRow],
        patients: &[ReceiptPatientRow],
    ) -> Result<(), StoreError> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| StoreError::Open("no connection".into()))?;
        Store::insert_receipts(conn, rows, patients)
    }
}

fn row(chained: &ChainedReceipt, subjects: &ReceiptSubjects) -> ReceiptRow {
    let r = &chained.receipt;
    ReceiptRow {
        gateway_id: r.gateway_id.clone(),
        sequence: r.sequence as i64,
        receipt_id: r.id.clone(),
        time_ms: r.time_ms,
        site: r.site.clone(),
        interaction: r.interaction.map(|i| i.as_str().to_owned()),
        resource_type: r.resource_type.clone(),
        decision: r.decision.as_str().to_owned(),
        break_glass: r.break_glass,
        status: i32::from(r.status),
        purpose: r.purpose.clone(),
        actor: subjects.actor.clone(),
        actor_key: r.actor_key.clone(),
        kind: r.kind.as_str().to_owned(),
        // A list of strings always serialises.
        patients: serde_json::to_string(&subjects.patients).unwrap_or_else(|_| "[]".into()),
        hash: chained.hash.as_bytes().to_vec(),
        body: chained.bytes.clone(),
        subjects: serde_json::json!({
            "query": subjects.query,
            "client_id": subjects.client_id,
            "client_address": subjects.client_address,
        })
        .to_string(),
    }
}
