//! The receipts' tables: the per-gateway chain of receipts (copied from the receipt log in
//! group commits by the receipt indexer on a connection of its own), the patients each
//! receipt reached, and the anchoring batches.
//!
//! Owns the queries, and read-your-writes over the log: every read of the receipt tables
//! first waits until they hold every receipt that was durable in the log when the read began
//! ([`IndexProgress`]), so an audit query made after a response sees that response's
//! receipt. Leaves out what a receipt holds (assent-receipts) and when rows are written
//! (`services/receipts.rs`, `services/anchoring.rs`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use super::schema::{receipt_batches, receipt_patients, receipts};
use super::sqlite_insert::InsertOne;
use super::{AnyConnection, Store, StoreError};

/// A receipt row: the canonical bytes and hash, and the columns audit queries filter on.
#[derive(Debug, Clone, PartialEq, Eq, Insertable, Queryable, Selectable)]
#[diesel(table_name = receipts)]
pub struct ReceiptRow {
    pub gateway_id: String,
    pub sequence: i64,
    pub receipt_id: String,
    pub time_ms: i64,
    pub site: Option<String>,
    pub interaction: Option<String>,
    pub resource_type: Option<String>,
    pub decision: String,
    pub break_glass: bool,
    pub status: i32,
    pub purpose: Option<String>,
    /// The caller in clear (`subject@issuer`).
    pub actor: String,
    pub actor_key: String,
    pub hash: Vec<u8>,
    /// [`assent_receipts::Receipt::canonical_bytes`].
    pub body: Vec<u8>,
    /// The receipt's clear subjects besides actor and patients (JSON).
    pub subjects: String,
    /// [`assent_receipts::AccessKind::as_str`]: `fhir`, `consent-create`, `audit-read`, ...
    pub kind: String,
    /// Every patient the receipt names, in clear (`{site}/Patient/{id}`), in the order of its
    /// keys: a JSON array of strings.
    pub patients: String,
}

/// A receipt row as the indexer writes it, borrowed from the durable receipt (no copy of its
/// strings or bytes). The fields are those of [`ReceiptRow`]. `None` is bound as NULL, so the
/// statement is the same for every row and SQLite's is prepared once per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Insertable)]
#[diesel(table_name = receipts, treat_none_as_default_value = false)]
pub struct NewReceiptRow<'a> {
    pub gateway_id: &'a str,
    pub sequence: i64,
    pub receipt_id: &'a str,
    pub time_ms: i64,
    pub site: Option<&'a str>,
    pub interaction: Option<&'a str>,
    pub resource_type: Option<&'a str>,
    pub decision: &'a str,
    pub break_glass: bool,
    pub status: i32,
    pub purpose: Option<&'a str>,
    pub actor: &'a str,
    pub actor_key: &'a str,
    pub hash: &'a [u8],
    pub body: &'a [u8],
    pub subjects: &'a str,
    pub kind: &'a str,
    pub patients: &'a str,
}

/// A patient a receipt reached.
#[derive(Debug, Clone, PartialEq, Eq, Insertable, Queryable)]
#[diesel(table_name = receipt_patients)]
pub struct ReceiptPatientRow {
    pub receipt_id: String,
    pub patient_key: String,
    pub patient: String,
    pub time_ms: i64,
}

/// A patient row as the indexer writes it, borrowed from the durable receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Insertable)]
#[diesel(table_name = receipt_patients)]
pub struct NewReceiptPatientRow<'a> {
    pub receipt_id: &'a str,
    pub patient_key: &'a str,
    pub patient: &'a str,
    pub time_ms: i64,
}

/// An anchoring batch as stored.
#[derive(Debug, Clone, PartialEq, Eq, Insertable, Queryable, Selectable)]
#[diesel(table_name = receipt_batches)]
pub struct BatchRow {
    pub gateway_id: String,
    pub batch_id: i64,
    pub first_sequence: i64,
    pub last_sequence: i64,
    pub root: Vec<u8>,
    pub closed_at_ms: i64,
    pub tx_id: Option<String>,
    pub block_number: Option<i64>,
    pub anchored_at_ms: Option<i64>,
}

/// What anchoring needs of a receipt.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct LeafRow {
    pub sequence: i64,
    pub receipt_id: String,
    pub hash: Vec<u8>,
}

/// What an audit query selects; every field set narrows it. Times are UTC milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiptFilter {
    /// Receipts that reached this patient (by keyed hash, through `receipt_patients`).
    pub patient_key: Option<String>,
    /// With `patient_key`: receipts that reached any of these patients too (a network
    /// patient's linked site patients).
    pub also_patient_keys: Vec<String>,
    /// The caller in clear, as stored (`Practitioner/…` or `subject@issuer`).
    pub actor: Option<String>,
    /// What the receipts record ([`assent_receipts::AccessKind::as_str`]).
    pub kind: Option<String>,
    pub site: Option<String>,
    pub purpose: Option<String>,
    /// Any of these decisions (`permit`, `deny`, `error`); empty: all.
    pub decisions: Vec<String>,
    /// `Some(true)`: permitted with a status below 400; `Some(false)`: everything else.
    pub success: Option<bool>,
    /// Only receipts whose permit rested on break-glass.
    pub break_glass_only: bool,
    /// `time_ms >= from_ms`.
    pub from_ms: Option<i64>,
    /// `time_ms < to_ms`.
    pub to_ms: Option<i64>,
}

/// Where a page of a search starts: after this receipt in the search's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptCursor {
    /// Newest first: receipts older than (time, id).
    Before { time_ms: i64, receipt_id: String },
    /// Chain order: receipts after (gateway, sequence).
    After { gateway_id: String, sequence: i64 },
}

/// The order of a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptOrder {
    /// By time, newest first, then receipt id (audit searches, the console).
    NewestFirst,
    /// By gateway and sequence (exports: each gateway's chain in order, as `assent verify`
    /// reads it).
    Chain,
}

/// How long a read of the receipt tables waits for them to catch up with the log before it
/// fails (`StoreError::Behind`) rather than answer without receipts already released.
pub const INDEX_WAIT: Duration = Duration::from_secs(10);

/// The newest sequence durable in this gateway's receipt log and the newest copied into the
/// receipt tables, shared by the receipt writer, its indexer and every reader of the store.
///
/// The tables are an index the log can rebuild: the indexer commits them without a sync
/// (SQLite `synchronous = NORMAL`), so an operating-system crash can take back the newest
/// commits. They are then copied again from the log at start. A log segment may therefore be
/// deleted only once its receipts are in a *synced* commit: [`IndexProgress::synced`], which
/// the writer asks for with [`IndexProgress::want_sync`] when it has segments to delete.
#[derive(Debug, Default)]
pub struct IndexProgress {
    state: Mutex<(u64, u64)>,
    changed: Condvar,
    /// Receipts up to this sequence are in the tables and on disk (a synced commit).
    synced: AtomicU64,
    /// The writer wants the tables synced up to this sequence (to delete log segments).
    sync_wanted: AtomicU64,
    /// Readers waiting in [`IndexProgress::wait`] now: a lingering indexer commits at once.
    readers_waiting: AtomicUsize,
}

impl IndexProgress {
    /// Receipts up to `sequence` are durable in the log (and all of them, at start, in SQL).
    pub fn set_durable(&self, sequence: u64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 = state.0.max(sequence);
    }

    /// Receipts up to `sequence` are in the receipt tables.
    pub fn set_indexed(&self, sequence: u64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1 = state.1.max(sequence);
        self.changed.notify_all();
    }

    /// Receipts up to `sequence` are in the tables and synced to disk.
    pub fn set_synced(&self, sequence: u64) {
        self.synced.fetch_max(sequence, Ordering::SeqCst);
    }

    /// The newest receipt in a synced commit of the tables.
    pub fn synced(&self) -> u64 {
        self.synced.load(Ordering::SeqCst)
    }

    /// Asks the indexer for a synced commit covering receipts up to `sequence`.
    pub fn want_sync(&self, sequence: u64) {
        self.sync_wanted.fetch_max(sequence, Ordering::SeqCst);
    }

    /// Whether a batch of the indexer ending at `last` must be committed synced.
    pub fn sync_due(&self, last: u64) -> bool {
        let wanted = self.sync_wanted.load(Ordering::SeqCst);
        wanted > self.synced() && last >= wanted
    }

    /// (durable, indexed).
    pub fn get(&self) -> (u64, u64) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a reader is waiting for the tables to catch up.
    pub fn reader_waiting(&self) -> bool {
        self.readers_waiting.load(Ordering::SeqCst) > 0
    }

    /// Waits until every receipt durable now is in the receipt tables, at most `timeout`.
    pub fn wait(&self, timeout: Duration) -> Result<(), StoreError> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.1 >= state.0 {
            return Ok(());
        }
        self.readers_waiting.fetch_add(1, Ordering::SeqCst);
        let waited = self.wait_locked(state, timeout);
        self.readers_waiting.fetch_sub(1, Ordering::SeqCst);
        waited
    }

    fn wait_locked(
        &self,
        mut state: std::sync::MutexGuard<'_, (u64, u64)>,
        timeout: Duration,
    ) -> Result<(), StoreError> {
        let deadline = Instant::now() + timeout;
        let target = state.0;
        while state.1 < target {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::Behind(format!(
                    "receipts up to {target} are durable, up to {} copied",
                    state.1
                )));
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(())
    }
}

type Backend = <AnyConnection as diesel::Connection>::Backend;

/// Rows per INSERT statement: 18 columns × 50 rows stays well under SQLite's limit of bound
/// parameters.
const ROWS_PER_STATEMENT: usize = 50;

impl Store {
    /// This store's view of the receipt log's progress (set by the receipt writer).
    pub fn index_progress(&self) -> &IndexProgress {
        &self.index
    }

    /// A pooled connection for reading the receipt tables, once they hold every receipt
    /// durable when the call began.
    fn receipts_conn(
        &self,
    ) -> Result<
        diesel::r2d2::PooledConnection<diesel::r2d2::ConnectionManager<AnyConnection>>,
        StoreError,
    > {
        self.index.wait(INDEX_WAIT)?;
        self.conn()
    }

    /// A connection of its own, outside the pool, for the receipt indexer and the request log
    /// writer. On SQLite its commits are not synced (`synchronous = NORMAL`: the receipt log
    /// is the durable record; the request log is operational) unless
    /// [`Store::insert_receipts`] is asked for a synced one; on PostgreSQL likewise
    /// (`synchronous_commit = off` but for a synced batch).
    pub fn index_connection(&self) -> Result<AnyConnection, StoreError> {
        let mut conn =
            AnyConnection::establish(&self.url).map_err(|e| StoreError::Open(e.to_string()))?;
        if let AnyConnection::Sqlite(c) = &mut conn {
            c.batch_execute(
                "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
                 PRAGMA synchronous = NORMAL;",
            )?;
        }
        if let AnyConnection::Postgresql(c) = &mut conn {
            c.batch_execute("SET synchronous_commit = off")?;
        }
        Ok(conn)
    }

    /// Appends receipts and their patients in one transaction. `synced`: the commit is on
    /// disk when this returns, and so is every commit before it (on SQLite in WAL mode a
    /// synced commit syncs the whole write-ahead log; what a checkpoint moved out of it was
    /// synced by the checkpoint).
    ///
    /// On SQLite one statement per row ([`InsertOne`]: prepared once per connection and found
    /// again by type, its text never rebuilt; a statement of many rows would be prepared anew
    /// for every batch, its text differing with the count);
    /// on PostgreSQL multi-row statements (one round trip per chunk).
    pub fn insert_receipts(
        conn: &mut AnyConnection,
        rows: &[NewReceiptRow<'_>],
        patients: &[NewReceiptPatientRow<'_>],
        synced: bool,
    ) -> Result<(), StoreError> {
        match conn {
            AnyConnection::Sqlite(c) => {
                if synced {
                    c.batch_execute("PRAGMA synchronous = FULL")?;
                }
                let inserted = c.transaction(|c| {
                    for row in rows {
                        InsertOne(row).execute(c)?;
                    }
                    for row in patients {
                        InsertOne(row).execute(c)?;
                    }
                    Ok::<_, diesel::result::Error>(())
                });
                if synced {
                    c.batch_execute("PRAGMA synchronous = NORMAL")?;
                }
                inserted?
            }
            // A synchronous commit waits for the write-ahead log to be flushed up to its own
            // commit record, which follows every earlier commit's.
            AnyConnection::Postgresql(c) => c.transaction(|c| {
                if synced {
                    c.batch_execute("SET LOCAL synchronous_commit = on")?;
                }
                for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                    diesel::insert_into(receipts::table)
                        .values(chunk)
                        .execute(c)?;
                }
                for chunk in patients.chunks(ROWS_PER_STATEMENT * 4) {
                    diesel::insert_into(receipt_patients::table)
                        .values(chunk)
                        .execute(c)?;
                }
                Ok::<_, diesel::result::Error>(())
            })?,
        }
        Ok(())
    }

    /// The newest receipt of a gateway's chain: (sequence, canonical bytes).
    pub fn last_receipt(
        conn: &mut AnyConnection,
        gateway_id: &str,
    ) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        Ok(receipts::table
            .filter(receipts::gateway_id.eq(gateway_id))
            .order(receipts::sequence.desc())
            .select((receipts::sequence, receipts::body))
            .first(conn)
            .optional()?)
    }

    /// Receipts of a gateway after `after_sequence`, in chain order, at most `limit`.
    pub fn receipt_leaves(
        &self,
        gateway_id: &str,
        after_sequence: i64,
        limit: i64,
    ) -> Result<Vec<LeafRow>, StoreError> {
        let mut conn = self.receipts_conn()?;
        Ok(receipts::table
            .filter(receipts::gateway_id.eq(gateway_id))
            .filter(receipts::sequence.gt(after_sequence))
            .order(receipts::sequence.asc())
            .limit(limit)
            .select((receipts::sequence, receipts::receipt_id, receipts::hash))
            .load(&mut *conn)?)
    }

    /// Receipts of a gateway from `first` to `last` (inclusive), in chain order.
    pub fn receipt_leaves_between(
        &self,
        gateway_id: &str,
        first: i64,
        last: i64,
    ) -> Result<Vec<LeafRow>, StoreError> {
        let mut conn = self.receipts_conn()?;
        Ok(receipts::table
            .filter(receipts::gateway_id.eq(gateway_id))
            .filter(receipts::sequence.between(first, last))
            .order(receipts::sequence.asc())
            .select((receipts::sequence, receipts::receipt_id, receipts::hash))
            .load(&mut *conn)?)
    }

    /// One receipt by its id.
    pub fn receipt(&self, receipt_id: &str) -> Result<Option<ReceiptRow>, StoreError> {
        let mut conn = self.receipts_conn()?;
        Ok(receipts::table
            .filter(receipts::receipt_id.eq(receipt_id))
            .select(ReceiptRow::as_select())
            .first(&mut *conn)
            .optional()?)
    }

    /// Receipts in chain order after `after_sequence` of `gateway_id`, at most `limit`.
    pub fn receipts_after(
        &self,
        gateway_id: &str,
        after_sequence: i64,
        limit: i64,
    ) -> Result<Vec<ReceiptRow>, StoreError> {
        let mut conn = self.receipts_conn()?;
        Ok(receipts::table
            .filter(receipts::gateway_id.eq(gateway_id))
            .filter(receipts::sequence.gt(after_sequence))
            .order(receipts::sequence.asc())
            .limit(limit)
            .select(ReceiptRow::as_select())
            .load(&mut *conn)?)
    }

    /// The patients a receipt reached.
    pub fn receipt_patients(&self, receipt_id: &str) -> Result<Vec<ReceiptPatientRow>, StoreError> {
        let mut conn = self.receipts_conn()?;
        Ok(receipt_patients::table
            .filter(receipt_patients::receipt_id.eq(receipt_id))
            .order(receipt_patients::patient_key.asc())
            .load(&mut *conn)?)
    }

    /// Stores a closed batch (not yet anchored).
    pub fn insert_batch(&self, row: &BatchRow) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        diesel::insert_into(receipt_batches::table)
            .values(row)
            .execute(&mut *conn)?;
        Ok(())
    }

    /// Marks a batch anchored by ledger transaction `tx_id` in block `block_number`.
    pub fn mark_batch_anchored(
        &self,
        gateway_id: &str,
        batch_id: i64,
        tx_id: &str,
        block_number: Option<i64>,
        anchored_at_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        diesel::update(
            receipt_batches::table
                .filter(receipt_batches::gateway_id.eq(gateway_id))
                .filter(receipt_batches::batch_id.eq(batch_id)),
        )
        .set((
            receipt_batches::tx_id.eq(tx_id),
            receipt_batches::block_number.eq(block_number),
            receipt_batches::anchored_at_ms.eq(anchored_at_ms),
        ))
        .execute(&mut *conn)?;
        Ok(())
    }

    /// The newest closed batch of a gateway.
    pub fn last_batch(&self, gateway_id: &str) -> Result<Option<BatchRow>, StoreError> {
        let mut conn = self.conn()?;
        Ok(receipt_batches::table
            .filter(receipt_batches::gateway_id.eq(gateway_id))
            .order(receipt_batches::batch_id.desc())
            .select(BatchRow::as_select())
            .first(&mut *conn)
            .optional()?)
    }

    /// A gateway's closed batches that are not anchored yet, oldest first.
    pub fn unanchored_batches(&self, gateway_id: &str) -> Result<Vec<BatchRow>, StoreError> {
        let mut conn = self.conn()?;
        Ok(receipt_batches::table
            .filter(receipt_batches::gateway_id.eq(gateway_id))
            .filter(receipt_batches::tx_id.is_null())
            .order(receipt_batches::batch_id.asc())
            .select(BatchRow::as_select())
            .load(&mut *conn)?)
    }

    /// The batch of a gateway holding receipt `sequence`, if it is closed.
    pub fn batch_of(
        &self,
        gateway_id: &str,
        sequence: i64,
    ) -> Result<Option<BatchRow>, StoreError> {
        let mut conn = self.conn()?;
        Ok(receipt_batches::table
            .filter(receipt_batches::gateway_id.eq(gateway_id))
            .filter(receipt_batches::first_sequence.le(sequence))
            .filter(receipt_batches::last_sequence.ge(sequence))
            .select(BatchRow::as_select())
            .first(&mut *conn)
            .optional()?)
    }

    /// How many receipts match `filter` (the console's total beside a page).
    pub fn count_receipts(&self, filter: &ReceiptFilter) -> Result<i64, StoreError> {
        let mut conn = self.receipts_conn()?;
        let query = receipts::table
            .select(diesel::dsl::count_star())
            .into_boxed::<Backend>();
        Ok(filtered(query, filter).get_result(&mut *conn)?)
    }

    /// One page of receipts matching `filter` in `order`, after `cursor`, at most `limit`.
    pub fn search_receipts(
        &self,
        filter: &ReceiptFilter,
        order: ReceiptOrder,
        cursor: Option<&ReceiptCursor>,
        limit: i64,
    ) -> Result<Vec<ReceiptRow>, StoreError> {
        let mut conn = self.receipts_conn()?;
        let query = receipts::table
            .select(ReceiptRow::as_select())
            .into_boxed::<Backend>();
        let mut query = filtered(query, filter);
        match cursor {
            Some(ReceiptCursor::Before {
                time_ms,
                receipt_id,
            }) => {
                query = query.filter(
                    receipts::time_ms.lt(*time_ms).or(receipts::time_ms
                        .eq(*time_ms)
                        .and(receipts::receipt_id.lt(receipt_id.clone()))),
                );
            }
            Some(ReceiptCursor::After {
                gateway_id,
                sequence,
            }) => {
                query = query.filter(
                    receipts::gateway_id
                        .gt(gateway_id.clone())
                        .or(receipts::gateway_id
                            .eq(gateway_id.clone())
                            .and(receipts::sequence.gt(*sequence))),
                );
            }
            None => {}
        }
        query = match order {
            ReceiptOrder::NewestFirst => {
                query.order((receipts::time_ms.desc(), receipts::receipt_id.desc()))
            }
            ReceiptOrder::Chain => {
                query.order((receipts::gateway_id.asc(), receipts::sequence.asc()))
            }
        };
        Ok(query.limit(limit).load(&mut *conn)?)
    }

    /// Receipt `sequence` of a gateway's chain.
    pub fn receipt_at(
        &self,
        gateway_id: &str,
        sequence: i64,
    ) -> Result<Option<ReceiptRow>, StoreError> {
        let mut conn = self.receipts_conn()?;
        Ok(receipts::table
            .filter(receipts::gateway_id.eq(gateway_id))
            .filter(receipts::sequence.eq(sequence))
            .select(ReceiptRow::as_select())
            .first(&mut *conn)
            .optional()?)
    }

    /// Overwrites a stored batch's root (tests of tamper detection only).
    #[cfg(any(test, feature = "testing"))]
    #[doc(hidden)]
    pub fn tamper_batch_root_for_tests(
        &self,
        gateway_id: &str,
        batch_id: i64,
        root: &[u8],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        diesel::update(
            receipt_batches::table
                .filter(receipt_batches::gateway_id.eq(gateway_id))
                .filter(receipt_batches::batch_id.eq(batch_id)),
        )
        .set(receipt_batches::root.eq(root))
        .execute(&mut *conn)?;
        Ok(())
    }

    /// Overwrites a stored receipt's hash (tests of tamper detection only).
    #[cfg(any(test, feature = "testing"))]
    #[doc(hidden)]
    pub fn tamper_receipt_hash_for_tests(
        &self,
        receipt_id: &str,
        hash: &[u8],
    ) -> Result<(), StoreError> {
        let mut conn = self.receipts_conn()?;
        diesel::update(receipts::table.filter(receipts::receipt_id.eq(receipt_id)))
            .set(receipts::hash.eq(hash))
            .execute(&mut *conn)?;
        Ok(())
    }

    /// Overwrites a stored receipt's canonical bytes (tests of tamper detection only).
    #[cfg(any(test, feature = "testing"))]
    #[doc(hidden)]
    pub fn tamper_receipt_for_tests(
        &self,
        receipt_id: &str,
        body: &[u8],
    ) -> Result<(), StoreError> {
        let mut conn = self.receipts_conn()?;
        diesel::update(receipts::table.filter(receipts::receipt_id.eq(receipt_id)))
            .set(receipts::body.eq(body))
            .execute(&mut *conn)?;
        Ok(())
    }
}

/// `query` narrowed to the receipts matching `filter`: one definition of a filter's meaning
/// for a page ([`Store::search_receipts`]) and for a count ([`Store::count_receipts`]).
fn filtered<'a, ST: 'a>(
    mut query: receipts::BoxedQuery<'a, Backend, ST>,
    filter: &ReceiptFilter,
) -> receipts::BoxedQuery<'a, Backend, ST> {
    if let Some(key) = &filter.patient_key {
        let keys: Vec<String> = std::iter::once(key.clone())
            .chain(filter.also_patient_keys.iter().cloned())
            .collect();
        query = query.filter(
            receipts::receipt_id.eq_any(
                receipt_patients::table
                    .filter(receipt_patients::patient_key.eq_any(keys))
                    .select(receipt_patients::receipt_id),
            ),
        );
    }
    if let Some(actor) = &filter.actor {
        query = query.filter(receipts::actor.eq(actor.clone()));
    }
    if let Some(kind) = &filter.kind {
        query = query.filter(receipts::kind.eq(kind.clone()));
    }
    if let Some(site) = &filter.site {
        query = query.filter(receipts::site.eq(site.clone()));
    }
    if let Some(purpose) = &filter.purpose {
        query = query.filter(receipts::purpose.eq(purpose.clone()));
    }
    if !filter.decisions.is_empty() {
        query = query.filter(receipts::decision.eq_any(filter.decisions.clone()));
    }
    match filter.success {
        Some(true) => {
            query = query
                .filter(receipts::decision.eq("permit"))
                .filter(receipts::status.lt(400));
        }
        Some(false) => {
            query = query.filter(receipts::decision.ne("permit").or(receipts::status.ge(400)));
        }
        None => {}
    }
    if filter.break_glass_only {
        query = query.filter(receipts::break_glass.eq(true));
    }
    if let Some(from) = filter.from_ms {
        query = query.filter(receipts::time_ms.ge(from));
    }
    if let Some(to) = filter.to_ms {
        query = query.filter(receipts::time_ms.lt(to));
    }
    query
}
