//! The request log writer: the record phase hands each request's row to a bounded queue, and
//! one thread writes them to the store in batches (many rows per transaction).
//!
//! The request log is operational: when the writer falls behind, rows are dropped and counted
//! (`assent_request_log_dropped_total`) rather than slowing clinicians down. Receipts, which
//! must be durable before a response is released, take another path.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus::IntCounter;

use crate::store::{AnyConnection, NewRequestLog, Store, StoreError};

/// Rows waiting at most; beyond this the record phase drops rows.
pub const QUEUE_CAPACITY: usize = 65_536;
/// Rows written in one transaction at most.
pub const BATCH_ROWS: usize = 2_048;
/// How long the writer waits for more rows after the first of a batch: a little latency on
/// an operational log buys one transaction for many requests.
pub const BATCH_LINGER: Duration = Duration::from_millis(20);

/// The fields of a request log row, without the gateway id (the writer adds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    pub request_id: String,
    pub at_ms: i64,
    pub site: Option<String>,
    pub caller: Option<String>,
    pub interaction: Option<String>,
    pub resource_type: Option<String>,
    pub status: i32,
    pub error_code: Option<String>,
    pub decision: Option<String>,
    pub duration_us: i64,
}

enum Message {
    Row(RequestRecord),
    Flush(mpsc::Sender<()>),
}

/// The sending side, shared by every worker.
pub struct Recorder {
    tx: SyncSender<Message>,
    dropped: IntCounter,
    writer: Option<JoinHandle<()>>,
}

impl Recorder {
    /// Starts the writer thread over `store`.
    pub fn start(store: Store, gateway_id: String, dropped: IntCounter) -> Recorder {
        let (tx, rx) = mpsc::sync_channel(QUEUE_CAPACITY);
        let writer = std::thread::Builder::new()
            .name("assent-request-log".into())
            .spawn(move || write_loop(rx, store, gateway_id))
            .ok();
        Recorder {
            tx,
            dropped,
            writer,
        }
    }

    /// Queues a row; never blocks.
    pub fn record(&self, row: RequestRecord) {
        match self.tx.try_send(Message::Row(row)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }

    /// Waits until every row queued before this call is written (for tests and shutdown).
    pub fn flush(&self) {
        let (done_tx, done_rx) = mpsc::channel();
        if self.tx.send(Message::Flush(done_tx)).is_ok() {
            let _ = done_rx.recv_timeout(Duration::from_secs(30));
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
        // The writer ends when the channel closes, which happens once `tx` is gone; it is
        // dropped after this body, so the thread is not joined here.
        let _ = self.writer.take();
    }
}

fn write_loop(rx: Receiver<Message>, store: Store, gateway_id: String) {
    // A connection of its own (as the receipt indexer's): no pool check-out and its
    // validity query per batch, and the per-row statement stays prepared on it.
    let mut conn: Option<AnyConnection> = None;
    let mut batch: Vec<NewRequestLog> = Vec::with_capacity(BATCH_ROWS);
    let mut waiting: Vec<mpsc::Sender<()>> = Vec::new();
    // Whether the last batch was full: rows are waiting, and lingering would fall behind.
    let mut behind = false;
    loop {
        let first = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // The rest of the batch is what arrives while the writer sleeps out the linger, taken
        // at once: a writer blocked in a receive would be woken by every row (a futex wake
        // and a thread switch per request), a sleeping one by none.
        if !behind && matches!(first, Some(Message::Row(_))) {
            std::thread::sleep(BATCH_LINGER);
        }
        let mut next = first;
        while let Some(message) = next {
            match message {
                Message::Row(fields) => batch.push(to_row(fields, &gateway_id)),
                // Someone waits: write what we have now.
                Message::Flush(done) => {
                    waiting.push(done);
                    break;
                }
            }
            if batch.len() >= BATCH_ROWS {
                break;
            }
            next = rx.try_recv().ok();
        }
        behind = batch.len() >= BATCH_ROWS;
        if !batch.is_empty() {
            if let Err(e) = write_batch(&store, &mut conn, &batch) {
                tracing::error!(error = %e, rows = batch.len(), "request log rows could not be written");
                // Opened afresh for the next batch.
                conn = None;
            }
            batch.clear();
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

fn write_batch(
    store: &Store,
    conn: &mut Option<AnyConnection>,
    batch: &[NewRequestLog],
) -> Result<(), StoreError> {
    let conn = match conn {
        Some(c) => c,
        None => conn.insert(store.index_connection()?),
    };
    Store::insert_request_logs_on(conn, batch)
}

fn to_row(f: RequestRecord, gateway_id: &str) -> NewRequestLog {
    NewRequestLog {
        request_id: f.request_id,
        at_ms: f.at_ms,
        gateway_id: gateway_id.to_owned(),
        site: f.site,
        caller: f.caller,
        interaction: f.interaction,
        resource_type: f.resource_type,
        status: f.status,
        error_code: f.error_code,
        decision: f.decision,
        duration_us: f.duration_us,
    }
}
