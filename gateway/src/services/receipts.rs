//! The receipt writer: every receipt (of a FHIR request, a consent API call, an audit-log
//! read) is placed in this gateway's hash chain and made durable in the receipt log
//! (`receipt_log.rs`) before its response is released; the store's receipt tables are filled
//! from it off the request path.
//!
//! One thread owns the chain head and the log. The record phase hands it a receipt and
//! waits; the thread takes every receipt queued while the previous sync was running, appends
//! them to the log in one write and one `fdatasync` (group commit), and only then answers
//! them. A failed write answers every waiting request with an error (the pipeline then
//! releases nothing: 503), the log is cut back and the head set back, so the chain never skips
//! or forks.
//!
//! A second thread, the indexer, copies every durable group into the receipt tables (one
//! transaction per batch of groups; retried until the store takes it) and moves the store's
//! [`IndexProgress`] on, which readers of those tables wait for (read-your-writes). The
//! tables are an index of the log: their commits are not synced, except the one the writer
//! asks for before it deletes a log segment (so a segment goes only once its receipts are on
//! disk in the tables too).
//! The anchoring task takes the durable receipts' hashes from memory ([`LeafFeed`]), not from
//! the tables.
//!
//! At start, every log record the tables do not hold yet is copied into them (synced) before
//! the writer takes its first receipt, and the log then starts a new segment; so no receipt
//! whose response was released is lost by a crash (of the process, or of the system with the
//! tables' newest commits), and SQL never runs ahead of the log.
//!
//! **Invariant:** a receipt's `Ok` is sent only after the log write holding it was synced.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use assent_receipts::{BatchLeaf, Chain, ChainedReceipt, Receipt, ReceiptSubjects};
use tokio::sync::{mpsc, oneshot, watch};

use crate::services::receipt_log::{self, LogError, LogLock, ReceiptLog};
use crate::store::{AnyConnection, NewReceiptPatientRow, NewReceiptRow, Store, StoreError};

/// The response header naming a request's receipt.
pub const RECEIPT_HEADER: &str = "x-assent-receipt";

/// Names a response's receipt in [`RECEIPT_HEADER`] (a receipt id is a UUID: always a valid
/// header value).
pub fn stamp_receipt_header(response: &mut actix_web::HttpResponse, receipt_id: &str) {
    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(receipt_id) {
        response.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static(RECEIPT_HEADER),
            v,
        );
    }
}

/// A new receipt's id: a UUID of version 7 (RFC 9562), whose first 48 bits are the time in
/// milliseconds. Ids made one after another sort one after another, so the receipt tables'
/// indexes on `receipt_id` (its unique index, `receipt_patients`' primary key) grow at their
/// right edge instead of at a random page each (a version 4 UUID made every receipt's insert
/// read a random page of two B-trees back once they outgrew the page cache). The time it
/// carries is the receipt's own `time_ms` to the millisecond, which the receipt holds anyway.
pub fn new_receipt_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Receipts waiting for the writer at most; beyond this the record phase waits for room.
pub const QUEUE_CAPACITY: usize = 16_384;
/// Receipts in one group commit at most.
pub const MAX_GROUP: usize = 4_096;
/// Durable groups waiting for the indexer at most; beyond this the writer waits (the store
/// being down for long holds the request path back rather than growing memory without bound).
const INDEX_QUEUE: usize = 256;
/// Receipts in one indexer transaction at most.
const MAX_INDEX_BATCH: usize = 8_192;
/// How long the indexer waits for more durable receipts before a commit, so that at light
/// load one commit (and its write-ahead-log frames) serves several receipts instead of one
/// each. The receipts are durable in the log already: lingering delays only the tables,
/// and a reader waiting for them (or a sync the writer wants) ends it at once.
const INDEX_LINGER: Duration = Duration::from_millis(50);
/// How often a lingering indexer looks for a waiting reader.
const INDEX_LINGER_STEP: Duration = Duration::from_millis(1);
/// Durable receipts kept in memory for the anchoring task at most; beyond this the oldest are
/// dropped and anchoring reads them back from the store.
const FEED_CAPACITY: usize = 1 << 18;

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
    #[error("the receipt log refused the receipts: {0}")]
    Store(String),
    #[error("the receipt writer has stopped")]
    Stopped,
    #[error("the receipt does not belong to this gateway's chain")]
    Chain,
    #[error("the receipt's patient keys and clear patients differ")]
    Patients,
}

/// Why the writer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Log(#[from] LogError),
}

struct Job {
    pending: PendingReceipt,
    done: oneshot::Sender<Result<u64, ReceiptError>>,
}

/// The hashes of durable receipts, in chain order, for the anchoring task.
#[derive(Debug, Default)]
pub struct LeafFeed {
    leaves: Mutex<VecDeque<BatchLeaf>>,
}

impl LeafFeed {
    fn push(&self, leaves: impl IntoIterator<Item = BatchLeaf>) {
        let mut q = self.leaves.lock().unwrap_or_else(|e| e.into_inner());
        q.extend(leaves);
        let excess = q.len().saturating_sub(FEED_CAPACITY);
        q.drain(..excess);
    }

    /// The durable receipts after `after`, in order, at most `max`; empty when the feed does
    /// not hold the one right after `after` (read the store then).
    pub fn take_after(&self, after: u64, max: usize) -> Vec<BatchLeaf> {
        let mut q = self.leaves.lock().unwrap_or_else(|e| e.into_inner());
        while q.front().is_some_and(|l| l.sequence <= after) {
            q.pop_front();
        }
        if q.front().is_none_or(|l| l.sequence != after + 1) {
            return Vec::new();
        }
        let n = q.len().min(max);
        q.drain(..n).collect()
    }
}

/// The writer's queue, for a plain thread (never called on the async runtime: it blocks).
#[derive(Clone)]
pub struct ReceiptSender {
    tx: mpsc::Sender<Job>,
}

impl ReceiptSender {
    /// Places `pending` in the chain and returns its sequence once it is durable, blocking.
    pub fn write_blocking(&self, pending: PendingReceipt) -> Result<u64, ReceiptError> {
        let (done, answer) = oneshot::channel();
        self.tx
            .blocking_send(Job { pending, done })
            .map_err(|_| ReceiptError::Stopped)?;
        answer.blocking_recv().map_err(|_| ReceiptError::Stopped)?
    }
}

/// The sending side, shared by every worker.
pub struct ReceiptWriter {
    tx: mpsc::Sender<Job>,
    committed: watch::Receiver<u64>,
    gateway_id: String,
    feed: Arc<LeafFeed>,
    #[cfg_attr(not(any(test, feature = "testing")), allow(dead_code))]
    fail_log: Arc<AtomicBool>,
}

impl ReceiptWriter {
    /// Copies into the store what the log in `log_dir` holds beyond it, resumes the chain
    /// after the newest receipt of `gateway_id`, and starts the writer and indexer threads.
    pub fn start(
        store: &Store,
        gateway_id: &str,
        log_dir: &Path,
    ) -> Result<ReceiptWriter, StartError> {
        // Locked first: a previous holder (this gateway stopping) has finished writing the
        // tables before the head is read from them.
        let lock = LogLock::acquire(log_dir, receipt_log::LOCK_WAIT)?;
        let index_lock = lock.share()?;
        let mut conn = store.index_connection()?;
        let stored = resume_chain(&mut conn, gateway_id)?;
        let (log, records) = ReceiptLog::open(lock, gateway_id, stored.last_sequence())?;
        let mut chain = stored;
        // What the tables hold may not be on disk yet (their commits are not synced): the
        // segments holding it stay until a synced commit, unless the copy below is one.
        let mut synced = 0;
        if !records.is_empty() {
            let mut entries = Vec::with_capacity(records.len());
            for record in records {
                let receipt =
                    Receipt::from_canonical_bytes(&record.body).map_err(|e| LogError::Damaged {
                        path: log_dir.to_owned(),
                        reason: format!("receipt {} cannot be read: {e}", record.sequence),
                    })?;
                if receipt.sequence != record.sequence
                    || receipt.prev_hash != chain.last_hash()
                    || assent_receipts::Digest::of(&record.body) != record.hash
                {
                    return Err(LogError::Damaged {
                        path: log_dir.to_owned(),
                        reason: format!("receipt {} does not continue the chain", record.sequence),
                    }
                    .into());
                }
                chain = Chain::resume_at(gateway_id, record.sequence, record.hash);
                entries.push(Entry {
                    chained: ChainedReceipt {
                        receipt,
                        hash: record.hash,
                        bytes: record.body,
                    },
                    subjects: record.subjects,
                });
            }
            tracing::info!(
                receipts = entries.len(),
                "receipts from the log copied into the store"
            );
            let chunks = entries.len().div_ceil(MAX_INDEX_BATCH);
            let mut text = Vec::new();
            for (i, chunk) in entries.chunks(MAX_INDEX_BATCH).enumerate() {
                let (rows, patients) = rows(chunk, &mut text);
                // The last commit synced: it syncs every one before it.
                Store::insert_receipts(&mut conn, &rows, &patients, i + 1 == chunks)?;
            }
            synced = chain.last_sequence();
        }
        let progress = store.index_progress();
        let log = log.restart(chain.last_sequence() + 1, synced)?;
        progress.set_durable(chain.last_sequence());
        progress.set_indexed(chain.last_sequence());
        progress.set_synced(synced);
        if let Some(wanted) = log.awaiting_sync() {
            progress.want_sync(wanted);
        }

        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (committed_tx, committed) = watch::channel(chain.last_sequence());
        let (index_tx, index_rx) = std_mpsc::sync_channel(INDEX_QUEUE);
        let feed = Arc::new(LeafFeed::default());
        let fail_log = Arc::new(AtomicBool::new(false));
        let indexer = Indexer {
            store: store.clone(),
            conn: Some(conn),
            _lock: index_lock,
            text: Vec::new(),
        };
        std::thread::Builder::new()
            .name("assent-receipt-index".into())
            .spawn(move || indexer.run(index_rx))
            .map_err(|e| StoreError::Open(format!("cannot start the receipt indexer: {e}")))?;
        let writer = Writer {
            store: store.clone(),
            log,
            chain,
            committed: committed_tx,
            index: index_tx,
            feed: feed.clone(),
            fail_log: fail_log.clone(),
            buf: Vec::with_capacity(1 << 16),
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
            feed,
            fail_log,
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

    /// A sender for a thread outside the async runtime (the network learner): it writes a
    /// receipt and waits until it is durable.
    pub fn sender(&self) -> ReceiptSender {
        ReceiptSender {
            tx: self.tx.clone(),
        }
    }

    /// The sequence of the newest durable receipt, updated after every sync (the anchoring
    /// task waits on it).
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    /// The durable receipts' hashes, for the anchoring task.
    pub fn feed(&self) -> Arc<LeafFeed> {
        self.feed.clone()
    }

    /// Makes every log write fail (as a full or failing disk would), or work again.
    #[cfg(any(test, feature = "testing"))]
    pub fn fail_log_writes_for_tests(&self, fail: bool) {
        self.fail_log.store(fail, Ordering::SeqCst);
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

/// A durable receipt on its way into the store.
struct Entry {
    chained: ChainedReceipt,
    subjects: ReceiptSubjects,
}

struct Writer {
    store: Store,
    log: ReceiptLog,
    chain: Chain,
    committed: watch::Sender<u64>,
    index: std_mpsc::SyncSender<Vec<Entry>>,
    feed: Arc<LeafFeed>,
    fail_log: Arc<AtomicBool>,
    /// The group's records, encoded (reused).
    buf: Vec<u8>,
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
        let saved = self.chain.clone();
        let progress = self.store.index_progress();
        if let Err(e) = self
            .log
            .roll_over_if_full(self.chain.last_sequence() + 1, progress.synced())
        {
            tracing::error!(error = %e, receipts = jobs.len(), "the receipt log cannot start a new segment: responses are withheld");
            let error = ReceiptError::Store(e.to_string());
            for job in jobs.drain(..) {
                let _ = job.done.send(Err(error.clone()));
            }
            return;
        }
        if let Some(wanted) = self.log.awaiting_sync() {
            progress.want_sync(wanted);
        }
        self.buf.clear();
        let mut entries = Vec::with_capacity(jobs.len());
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
                    receipt_log::encode(
                        &mut self.buf,
                        chained.receipt.sequence,
                        &chained.hash,
                        &chained.bytes,
                        &subjects,
                    );
                    placed.push((done, chained.receipt.sequence));
                    entries.push(Entry { chained, subjects });
                }
                Err(_) => {
                    let _ = done.send(Err(ReceiptError::Chain));
                }
            }
        }
        if entries.is_empty() {
            return;
        }
        let written = if self.fail_log.load(Ordering::SeqCst) {
            Err(LogError::Io {
                path: self.log.dir().to_owned(),
                error: std::io::Error::other("log writes fail (test)"),
            })
        } else {
            self.log.append(&self.buf)
        };
        match written {
            Ok(()) => {
                let last = self.chain.last_sequence();
                self.store.index_progress().set_durable(last);
                self.feed.push(entries.iter().map(|e| BatchLeaf {
                    sequence: e.chained.receipt.sequence,
                    receipt_id: e.chained.receipt.id.clone(),
                    hash: e.chained.hash,
                }));
                let _ = self.committed.send(last);
                // Waits when the indexer is far behind (see INDEX_QUEUE); it stops only
                // when this thread does.
                let _ = self.index.send(entries);
                for (done, sequence) in placed {
                    let _ = done.send(Ok(sequence));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, receipts = placed.len(), "receipts could not be logged: their responses are withheld");
                let error = ReceiptError::Store(e.to_string());
                for (done, _) in placed {
                    let _ = done.send(Err(error.clone()));
                }
                // The log was cut back to the last synced group (or is cut back before the
                // next one is written): the head goes back with it.
                self.chain = saved;
            }
        }
    }
}

/// Copies durable receipts into the store's receipt tables.
struct Indexer {
    store: Store,
    /// `None` after a failure broke the connection; re-established on the next try.
    conn: Option<AnyConnection>,
    /// The log stays locked until the indexer has written everything it was given.
    _lock: std::fs::File,
    /// The JSON columns of the batch being written (reused).
    text: Vec<String>,
}

impl Indexer {
    fn run(mut self, rx: std_mpsc::Receiver<Vec<Entry>>) {
        while let Ok(first) = rx.recv() {
            let mut entries = first;
            let lingering_until = Instant::now() + INDEX_LINGER;
            while entries.len() < MAX_INDEX_BATCH {
                match rx.try_recv() {
                    Ok(more) => {
                        entries.extend(more);
                        continue;
                    }
                    Err(std_mpsc::TryRecvError::Disconnected) => break,
                    Err(std_mpsc::TryRecvError::Empty) => {}
                }
                let last = entries.last().map_or(0, |e| e.chained.receipt.sequence);
                let progress = self.store.index_progress();
                let now = Instant::now();
                if now >= lingering_until || progress.reader_waiting() || progress.sync_due(last) {
                    break;
                }
                // Slept, not received: a receiver blocked on the queue is woken by every group
                // the writer sends (a futex wake and a thread switch each); what arrived is
                // taken at the top of the loop.
                std::thread::sleep(INDEX_LINGER_STEP.min(lingering_until - now));
            }
            let Some(last) = entries.last().map(|e| e.chained.receipt.sequence) else {
                continue;
            };
            let mut text = std::mem::take(&mut self.text);
            let (rows, patients) = rows(&entries, &mut text);
            let synced = self.store.index_progress().sync_due(last);
            let mut backoff = Duration::from_millis(50);
            while let Err(e) = self.insert(&rows, &patients, synced) {
                tracing::error!(error = %e, receipts = rows.len(), "durable receipts could not be copied into the store yet; retrying");
                self.conn = None;
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            drop((rows, patients));
            self.text = text;
            let progress = self.store.index_progress();
            progress.set_indexed(last);
            if synced {
                progress.set_synced(last);
            }
        }
    }

    fn insert(
        &mut self,
        rows: &[NewReceiptRow<'_>],
        patients: &[NewReceiptPatientRow<'_>],
        synced: bool,
    ) -> Result<(), StoreError> {
        if self.conn.is_none() {
            self.conn = Some(self.store.index_connection()?);
        }
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| StoreError::Open("no connection".into()))?;
        Store::insert_receipts(conn, rows, patients, synced)
    }
}

/// The receipt and patient rows of durable receipts, borrowed from them; `text` holds each
/// receipt's two JSON columns (patients, then subjects), written once.
fn rows<'a>(
    entries: &'a [Entry],
    text: &'a mut Vec<String>,
) -> (Vec<NewReceiptRow<'a>>, Vec<NewReceiptPatientRow<'a>>) {
    text.clear();
    for Entry { subjects, .. } in entries {
        text.push(patients_json(subjects));
        text.push(subjects_json(subjects));
    }
    let mut rows = Vec::with_capacity(entries.len());
    let mut patients = Vec::new();
    for (Entry { chained, subjects }, json) in entries.iter().zip(text.chunks_exact(2)) {
        let r = &chained.receipt;
        for (patient, patient_key) in subjects.patients.iter().zip(&r.patient_keys) {
            patients.push(NewReceiptPatientRow {
                receipt_id: &r.id,
                patient_key,
                patient,
                time_ms: r.time_ms,
            });
        }
        rows.push(NewReceiptRow {
            gateway_id: &r.gateway_id,
            sequence: r.sequence as i64,
            receipt_id: &r.id,
            time_ms: r.time_ms,
            site: r.site.as_deref(),
            interaction: r.interaction.map(|i| i.as_str()),
            resource_type: r.resource_type.as_deref(),
            decision: r.decision.as_str(),
            break_glass: r.break_glass,
            status: i32::from(r.status),
            purpose: r.purpose.as_deref(),
            actor: &subjects.actor,
            actor_key: &r.actor_key,
            kind: r.kind.as_str(),
            patients: &json[0],
            hash: chained.hash.as_bytes(),
            body: &chained.bytes,
            subjects: &json[1],
        });
    }
    // The same patient twice in one receipt is one row.
    patients.sort_by(|a, b| (a.receipt_id, a.patient_key).cmp(&(b.receipt_id, b.patient_key)));
    patients.dedup_by(|a, b| a.receipt_id == b.receipt_id && a.patient_key == b.patient_key);
    (rows, patients)
}

/// The `patients` column: the clear patients as a JSON array of strings.
fn patients_json(subjects: &ReceiptSubjects) -> String {
    // A list of strings always serialises.
    serde_json::to_string(&subjects.patients).unwrap_or_else(|_| "[]".into())
}

/// The `subjects` column: the clear subjects besides actor and patients, as a JSON object
/// with its keys in sorted order (as a `serde_json::Map` writes them).
fn subjects_json(subjects: &ReceiptSubjects) -> String {
    #[derive(serde::Serialize)]
    struct Clear<'a> {
        client_address: Option<&'a str>,
        client_id: Option<&'a str>,
        query: Option<&'a str>,
    }
    serde_json::to_string(&Clear {
        client_address: subjects.client_address.as_deref(),
        client_id: subjects.client_id.as_deref(),
        query: subjects.query.as_deref(),
    })
    // Strings always serialise.
    .unwrap_or_else(|_| "{}".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;
    use assent_consent::ConsortiumKey;
    use assent_receipts::{AccessDecision, verify_chain};
    use diesel::connection::SimpleConnection;

    #[test]
    fn receipt_ids_made_in_turn_sort_in_turn_and_are_unique() {
        let ids: Vec<String> = (0..20_000).map(|_| new_receipt_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, ids, "ids are made in ascending order, none twice");
        let id = uuid::Uuid::parse_str(&ids[0]).unwrap();
        assert_eq!(id.get_version_num(), 7);
    }

    fn pending(n: u64) -> PendingReceipt {
        let key = ConsortiumKey::new(&[7u8; 32]).unwrap();
        let subjects = ReceiptSubjects {
            actor: "dr-alice@https://idp".into(),
            patients: vec![format!("st-mary/Patient/p{n}")],
            query: Some(format!("_id=p{n}")),
            client_id: None,
            client_address: Some("127.0.0.1".into()),
        };
        let receipt = Receipt::new(
            format!("r-{n}"),
            1_700_000_000_000 + n as i64,
            "gw",
            subjects.keys(&key),
            AccessDecision::Permit,
            200,
        );
        PendingReceipt { receipt, subjects }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Receipts released but not yet copied into the store when the gateway died are copied
    /// in at the next start, and the chain goes on after them.
    #[test]
    fn receipts_missing_from_the_store_are_copied_from_the_log_at_start() {
        for store in testing::all() {
            let dir = tempfile::tempdir().unwrap();
            let writer = ReceiptWriter::start(&store.store, "gw", dir.path()).unwrap();
            let rt = runtime();
            for n in 1..=5 {
                assert_eq!(rt.block_on(writer.write(pending(n))).unwrap(), n);
            }
            assert_eq!(store.store.receipts_after("gw", 0, 100).unwrap().len(), 5);
            drop(writer);
            // As if the indexer had not copied the last three before the crash.
            let fresh = crate::store::Store::open(&store.url).unwrap();
            fresh
                .connection()
                .unwrap()
                .batch_execute(
                    "DELETE FROM receipt_patients WHERE receipt_id IN ('r-3', 'r-4', 'r-5'); \
                     DELETE FROM receipts WHERE sequence > 2;",
                )
                .unwrap();
            assert_eq!(fresh.receipts_after("gw", 0, 100).unwrap().len(), 2);

            let writer = ReceiptWriter::start(&fresh, "gw", dir.path()).unwrap();
            let rows = fresh.receipts_after("gw", 0, 100).unwrap();
            assert_eq!(rows.len(), 5, "copied before the writer takes a receipt");
            assert_eq!(fresh.receipt_patients("r-4").unwrap().len(), 1);
            assert_eq!(rt.block_on(writer.write(pending(6))).unwrap(), 6);
            let rows = fresh.receipts_after("gw", 0, 100).unwrap();
            let receipts: Vec<_> = rows
                .iter()
                .map(|r| {
                    (
                        Receipt::from_canonical_bytes(&r.body).unwrap(),
                        assent_receipts::Digest(r.hash.clone().try_into().unwrap()),
                    )
                })
                .collect();
            assert_eq!(receipts.len(), 6);
            assert!(verify_chain(receipts.iter().map(|(r, h)| (r, Some(*h)))).is_empty());
            let subjects: serde_json::Value = serde_json::from_str(&rows[3].subjects).unwrap();
            assert_eq!(
                subjects["query"], "_id=p4",
                "clear subjects come back from the log"
            );
        }
    }

    /// A failed log write answers its receipts with an error, and the next receipt takes the
    /// sequence the failed one would have had: no gap, no fork.
    #[test]
    fn a_failed_log_write_leaves_no_gap() {
        let store = testing::sqlite();
        let dir = tempfile::tempdir().unwrap();
        let writer = ReceiptWriter::start(&store.store, "gw", dir.path()).unwrap();
        let rt = runtime();
        assert_eq!(rt.block_on(writer.write(pending(1))).unwrap(), 1);
        writer.fail_log_writes_for_tests(true);
        assert!(matches!(
            rt.block_on(writer.write(pending(2))),
            Err(ReceiptError::Store(_))
        ));
        writer.fail_log_writes_for_tests(false);
        assert_eq!(rt.block_on(writer.write(pending(3))).unwrap(), 2);
        drop(writer);
        // And a restart reads the same log back without complaint.
        let writer = ReceiptWriter::start(&store.store, "gw", dir.path()).unwrap();
        assert_eq!(rt.block_on(writer.write(pending(4))).unwrap(), 3);
    }

    /// ADV: the tables' commits are not synced, so a log segment whose receipts the store
    /// holds is not deleted at start (the store may hold them only in memory, after a crash
    /// of the process), nor afterwards until a synced commit of the indexer covers them.
    #[test]
    fn log_segments_stay_until_a_synced_commit_covers_them() {
        let segments = |dir: &Path| {
            std::fs::read_dir(dir)
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(".rlog")
                })
                .count()
        };
        for store in testing::all() {
            let dir = tempfile::tempdir().unwrap();
            let rt = runtime();
            let writer = ReceiptWriter::start(&store.store, "gw", dir.path()).unwrap();
            for n in 1..=3 {
                rt.block_on(writer.write(pending(n))).unwrap();
            }
            drop(writer);
            let progress = store.store.index_progress();
            assert_eq!(progress.synced(), 0, "no commit of the indexer was synced");

            let writer = ReceiptWriter::start(&store.store, "gw", dir.path()).unwrap();
            assert_eq!(
                segments(dir.path()),
                2,
                "receipts 1-3 are in the store but not known to be on disk: their segment stays"
            );
            assert_eq!(rt.block_on(writer.write(pending(4))).unwrap(), 4);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while progress.synced() < 4 {
                assert!(std::time::Instant::now() < deadline, "no synced commit");
                std::thread::sleep(Duration::from_millis(5));
            }
            assert_eq!(
                segments(dir.path()),
                2,
                "deleted by the writer's next group"
            );
            rt.block_on(writer.write(pending(5))).unwrap();
            assert_eq!(segments(dir.path()), 1);
            drop(writer);
            let writer = ReceiptWriter::start(&store.store, "gw", dir.path()).unwrap();
            assert_eq!(rt.block_on(writer.write(pending(6))).unwrap(), 6);
        }
    }

    #[test]
    fn the_feed_hands_out_what_follows_or_nothing() {
        let feed = LeafFeed::default();
        let leaf = |sequence| BatchLeaf {
            sequence,
            receipt_id: format!("r-{sequence}"),
            hash: assent_receipts::Digest::ZERO,
        };
        feed.push((3..=6).map(leaf));
        assert!(
            feed.take_after(1, 10).is_empty(),
            "2 is missing: read the store"
        );
        let got: Vec<u64> = feed.take_after(2, 2).iter().map(|l| l.sequence).collect();
        assert_eq!(got, [3, 4]);
        let got: Vec<u64> = feed.take_after(4, 10).iter().map(|l| l.sequence).collect();
        assert_eq!(got, [5, 6]);
        assert!(feed.take_after(6, 10).is_empty());
    }
}
