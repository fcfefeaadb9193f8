//! The embedded ledger: contract transactions appended as signed, hash-chained blocks through
//! a [`BlockStore`], state derived from the blocks and kept in memory, events streamed to
//! subscribers once their block is durable and applied.
//!
//! Owns the write path (one writer task: batch the pending calls, run them through the
//! contract, seal a block, append it, apply it, publish its events), replay at open, catching
//! up with blocks another writer appended, subscriptions, and the documents kept beside the
//! blocks (by hash, checked against it when stored and when read; never in a block). Leaves out the storage itself
//! (the gateway's [`BlockStore`]) and the chain rules ([`crate::verify`]).
//!
//! **Invariant:** an event is published only after its block is durable in the store and
//! applied to the in-memory state, so a subscriber that reacts to it (a decision cache)
//! reads the new state.
//!
//! **Invariant:** one writer task appends; the store refuses a block whose predecessor is
//! not its head, and the writer then catches up and runs the calls again on the new state.

mod state;

use std::collections::VecDeque;
use std::sync::{Arc, PoisonError, RwLock, Weak};

use assent_consent::{
    AnchorRecord, ConsentContract, ConsentRecord, ConsentVersion, ContractError, Timestamp,
};
use ed25519_dalek::{SigningKey, VerifyingKey};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::api::{
    Checkpoint, Conflict, EventStream, Ledger, LedgerError, LedgerEvent, TxReceipt,
    document_hash_mismatch, document_matches,
};
use crate::block::{BlockBody, BlockRow, EventEntry, GENESIS_PREV_HASH, TxEntry, tx_id};
use crate::call::{Executed, TxCall, contract_error, execute};
use crate::clock::Clock;
use crate::store::{BlockStore, StoreError};
use crate::verify::{ChainError, ChainFault, ChainVerifier, VerifiedBlock};
use state::{Overlay, StateError, TxView, WorldState, block_events, block_number, tx_time};

/// The most transactions a block may hold, whatever the options say.
pub const MAX_BATCH: usize = 1 << 16;

/// The member id the embedded ledger runs the contract as: a gateway on the embedded ledger
/// is one consortium member (replicas sharing its store are the same member).
pub const EMBEDDED_MEMBER: &str = assent_consent::LOCAL_MEMBER;

/// Tuning of the embedded ledger.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// The most transactions in one block (calls waiting together are committed together),
    /// at most [`MAX_BATCH`].
    pub max_batch: usize,
    /// How many times a block is built again after another writer appended first.
    pub append_attempts: u32,
    /// Blocks of events buffered per subscriber before it falls back to reading the store.
    pub event_buffer: usize,
    /// Rows read from the store per call when replaying or catching up.
    pub read_page: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> EmbeddedOptions {
        EmbeddedOptions {
            max_batch: 256,
            append_attempts: 8,
            event_buffer: 1024,
            read_page: 512,
        }
    }
}

/// The embedded ledger backend. Needs a Tokio runtime (it spawns its writer task).
pub struct EmbeddedLedger {
    inner: Arc<Inner>,
    commands: mpsc::Sender<Command>,
}

impl EmbeddedLedger {
    /// Opens the ledger held by `store`: reads every block, checks hashes and links (and the
    /// last block's signature, which covers them all), rebuilds the state, and starts the
    /// writer task. Blocks are signed with `signing_key` and stamped by `clock`.
    pub async fn open(
        store: Arc<dyn BlockStore>,
        signing_key: SigningKey,
        clock: Arc<dyn Clock>,
        options: EmbeddedOptions,
    ) -> Result<EmbeddedLedger, LedgerError> {
        let public_key = signing_key.verifying_key();
        let page = options.read_page.max(1);
        let mut verifier = ChainVerifier::new(&public_key).skip_signatures();
        let mut state = WorldState::default();
        let mut last: Option<BlockRow> = None;
        loop {
            let from = last.as_ref().map_or(0, |r| r.number + 1);
            let rows = store.read_from(from, page).await.map_err(store_error)?;
            if rows.is_empty() {
                break;
            }
            for row in rows {
                let block = verifier.push(&row).map_err(chain_error)?;
                state.apply(block.head, &block.body);
                last = Some(row);
            }
        }
        if let Some(row) = &last
            && !row.signature_verifies(&public_key)
        {
            return Err(chain_error(ChainError {
                number: row.number,
                fault: ChainFault::BadSignature,
            }));
        }
        let (events, _) = broadcast::channel(options.event_buffer.max(1));
        let inner = Arc::new(Inner {
            state: RwLock::new(state),
            store,
            events,
            public_key,
            read_page: page,
        });
        let max_batch = options.max_batch.clamp(1, MAX_BATCH);
        let (commands, receiver) = mpsc::channel(max_batch * 4);
        let writer = Writer {
            inner: inner.clone(),
            signing_key,
            clock,
            commands: receiver,
            max_batch,
            append_attempts: options.append_attempts.max(1),
        };
        tokio::spawn(writer.run());
        Ok(EmbeddedLedger { inner, commands })
    }

    /// The key that verifies this ledger's blocks.
    pub fn public_key(&self) -> VerifyingKey {
        self.inner.public_key
    }

    /// Applies the blocks another writer appended to the store since the last one this
    /// ledger saw (a process sharing the store). Own writes need no sync.
    pub async fn sync(&self) -> Result<(), LedgerError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Sync { reply })
            .await
            .map_err(|_| writer_stopped())?;
        answer.await.map_err(|_| writer_stopped())?
    }

    fn query<T>(
        &self,
        f: impl FnOnce(&state::Snapshot<'_>) -> Result<T, ContractError<StateError>>,
    ) -> Result<T, LedgerError> {
        let state = self.inner.read();
        f(&state.snapshot()).map_err(contract_error)
    }
}

#[async_trait::async_trait]
impl Ledger for EmbeddedLedger {
    async fn submit(&self, call: TxCall) -> Result<TxReceipt, LedgerError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Submit { call, reply })
            .await
            .map_err(|_| writer_stopped())?;
        answer.await.map_err(|_| writer_stopped())?
    }

    async fn active_consents(
        &self,
        patient_key: &str,
        now: Timestamp,
    ) -> Result<Vec<ConsentRecord>, LedgerError> {
        self.query(|s| ConsentContract.active_consents(s, patient_key, now))
    }

    async fn patient_consents(&self, patient_key: &str) -> Result<Vec<ConsentRecord>, LedgerError> {
        self.query(|s| ConsentContract.patient_consents(s, patient_key))
    }

    async fn grantee_consents(&self, grantee_key: &str) -> Result<Vec<ConsentRecord>, LedgerError> {
        self.query(|s| ConsentContract.grantee_consents(s, grantee_key))
    }

    async fn consent(&self, consent_key: &str) -> Result<Option<ConsentRecord>, LedgerError> {
        self.query(|s| match ConsentContract.consent(s, consent_key) {
            Ok(r) => Ok(Some(r)),
            Err(ContractError::NotFound) => Ok(None),
            Err(e) => Err(e),
        })
    }

    async fn consent_history(&self, consent_key: &str) -> Result<Vec<ConsentVersion>, LedgerError> {
        self.query(|s| match ConsentContract.history(s, consent_key) {
            Ok(h) => Ok(h),
            Err(ContractError::NotFound) => Ok(Vec::new()),
            Err(e) => Err(e),
        })
    }

    async fn anchor(
        &self,
        gateway_key: &str,
        batch_id: u64,
    ) -> Result<Option<AnchorRecord>, LedgerError> {
        self.query(|s| ConsentContract.anchor(s, gateway_key, batch_id))
    }

    async fn head(&self) -> Result<Option<Checkpoint>, LedgerError> {
        Ok(self.inner.read().last_tx())
    }

    async fn refresh(&self) -> Result<(), LedgerError> {
        EmbeddedLedger::sync(self).await
    }

    async fn put_document(&self, hash: &str, document: &[u8]) -> Result<(), LedgerError> {
        if !document_matches(hash, document) {
            return Err(document_hash_mismatch());
        }
        self.inner
            .store
            .put_document(hash, document)
            .await
            .map_err(store_error)
    }

    async fn document(&self, hash: &str) -> Result<Option<Vec<u8>>, LedgerError> {
        let Some(document) = self.inner.store.document(hash).await.map_err(store_error)? else {
            return Ok(None);
        };
        if !document_matches(hash, &document) {
            // Changed in the store behind the ledger's back (or stored under a wrong key).
            return Err(LedgerError::corrupt(format!(
                "the document stored under {hash} does not hash to it"
            )));
        }
        Ok(Some(document))
    }

    async fn subscribe(&self, after: Option<Checkpoint>) -> Result<EventStream, LedgerError> {
        // Subscribe before looking at the state: a block applied from now on is broadcast to
        // this receiver, and one applied before is found in the store.
        let receiver = self.inner.events.subscribe();
        let subscription = Subscription {
            inner: Arc::downgrade(&self.inner),
            store: self.inner.store.clone(),
            page: self.inner.read_page,
            receiver,
            last: after,
            buffer: VecDeque::new(),
            cursor: Some(after.map_or(0, |c| c.block_number)),
            done: false,
        };
        Ok(Box::pin(futures_util::stream::unfold(
            subscription,
            Subscription::next,
        )))
    }
}

/// Verifies `blocks` as [`crate::verify_chain`] does, and also runs every transaction again
/// through the consent contract on the state built from the blocks before it, checking that
/// its reads, writes and event are the ones recorded. This catches a block that was signed
/// with the node key but does not follow from its arguments. Blocks written by an older
/// contract whose behaviour has since changed fail it too.
pub fn verify_execution<'a>(
    blocks: impl IntoIterator<Item = &'a BlockRow>,
    public_key: &VerifyingKey,
) -> Result<crate::VerifiedChain, ChainError> {
    let mut verifier = ChainVerifier::new(public_key);
    let mut state = WorldState::default();
    for row in blocks {
        let block = verifier.push(row)?;
        check_execution(&state, &block).map_err(|(index, reason)| ChainError {
            number: row.number,
            fault: ChainFault::ExecutionMismatch { index, reason },
        })?;
        state.apply(block.head, &block.body);
    }
    Ok(verifier.finish())
}

struct Inner {
    state: RwLock<WorldState>,
    store: Arc<dyn BlockStore>,
    events: broadcast::Sender<Arc<[LedgerEvent]>>,
    public_key: VerifyingKey,
    read_page: usize,
}

impl Inner {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, WorldState> {
        // The state is only changed by `apply`, which cannot panic half-way through a
        // change that matters to readers; a poisoned lock still holds consistent blocks.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies a durable block and publishes its events.
    fn apply(&self, block: &VerifiedBlock) {
        let events = self
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .apply(block.head, &block.body);
        if !events.is_empty() {
            // No subscriber is not an error.
            let _ = self.events.send(events.into());
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, LedgerError>>;

enum Command {
    Submit {
        call: TxCall,
        reply: Reply<TxReceipt>,
    },
    Sync {
        reply: Reply<()>,
    },
}

struct Writer {
    inner: Arc<Inner>,
    signing_key: SigningKey,
    clock: Arc<dyn Clock>,
    commands: mpsc::Receiver<Command>,
    max_batch: usize,
    append_attempts: u32,
}

/// A call placed in the block being built.
struct Placed {
    index: u32,
    tx_id: String,
    executed: Executed,
    event: Option<EventEntry>,
}

struct Built {
    block: Option<(BlockRow, VerifiedBlock)>,
    results: Vec<Result<Placed, LedgerError>>,
}

impl Writer {
    async fn run(mut self) {
        while let Some(first) = self.commands.recv().await {
            let mut submits = Vec::new();
            let mut syncs = Vec::new();
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Submit { call, reply } => submits.push((call, reply)),
                    Command::Sync { reply } => syncs.push(reply),
                }
                if submits.len() < self.max_batch {
                    next = self.commands.try_recv().ok();
                }
            }
            if !syncs.is_empty() {
                let result = self.catch_up().await;
                for reply in syncs {
                    let _ = reply.send(result.clone());
                }
            }
            if !submits.is_empty() {
                self.commit(submits).await;
            }
        }
    }

    async fn commit(&self, submits: Vec<(TxCall, Reply<TxReceipt>)>) {
        let (calls, replies): (Vec<TxCall>, Vec<_>) = submits.into_iter().unzip();
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            let built = self.build(&calls);
            let Some((row, block)) = built.block else {
                break Ok((built.results, None));
            };
            match self.inner.store.append(&row).await {
                Ok(()) => {
                    self.inner.apply(&block);
                    break Ok((built.results, Some(block.head)));
                }
                Err(StoreError::Conflict { .. }) if attempt < self.append_attempts => {
                    if let Err(e) = self.catch_up().await {
                        break Err(e);
                    }
                }
                Err(StoreError::Conflict { .. }) => {
                    break Err(LedgerError::Conflict {
                        conflict: Conflict::Writers,
                    });
                }
                Err(StoreError::Unavailable { reason }) => {
                    break Err(LedgerError::unavailable(reason));
                }
            }
        };
        match outcome {
            Ok((results, head)) => {
                let block_number = head.map_or(0, |h| block_number(h.number));
                for (result, reply) in results.into_iter().zip(replies) {
                    let _ = reply.send(result.map(|p| receipt(block_number, p)));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Runs the calls in order on the current state and seals the block of those the
    /// contract accepted.
    fn build(&self, calls: &[TxCall]) -> Built {
        let state = self.inner.read();
        let (number, prev_hash, prev_time) = match state.head() {
            Some(h) => (h.number + 1, h.hash, h.timestamp),
            None => (0, GENESIS_PREV_HASH, i64::MIN),
        };
        let timestamp = self.clock.now_millis().max(prev_time);
        let now = tx_time(timestamp);
        let mut overlay = Overlay::default();
        let mut transactions = Vec::new();
        let mut results = Vec::with_capacity(calls.len());
        for call in calls {
            // At most `MAX_BATCH` calls, which fits in u32.
            let index = u32::try_from(transactions.len()).unwrap_or(u32::MAX);
            let at = Checkpoint {
                block_number: block_number(number),
                tx_index: index,
            };
            let id = tx_id(&prev_hash, number, index);
            let mut view = TxView::new(&state, &mut overlay, at, &id, now);
            match execute(&mut view, call, now, EMBEDDED_MEMBER) {
                Ok(executed) => {
                    let effects = view.commit();
                    transactions.push(TxEntry {
                        tx_id: id.clone(),
                        function: call.function().to_owned(),
                        args: call.args(),
                        reads: effects.reads,
                        range_reads: effects.range_reads,
                        writes: effects.writes,
                        event: effects.event.clone(),
                    });
                    results.push(Ok(Placed {
                        index,
                        tx_id: id,
                        executed,
                        event: effects.event,
                    }));
                }
                Err(e) => results.push(Err(contract_error(e))),
            }
        }
        drop(state);
        if transactions.is_empty() {
            return Built {
                block: None,
                results,
            };
        }
        let body = BlockBody { transactions };
        let row = BlockRow::seal(number, prev_hash, timestamp, &body, &self.signing_key);
        let head = crate::verify::ChainHead {
            number,
            hash: block_hash_of(&row),
            timestamp,
        };
        Built {
            block: Some((row, VerifiedBlock { head, body })),
            results,
        }
    }

    /// Applies the blocks in the store after the state's head (appended by another writer,
    /// or by this one when an append's answer was lost).
    async fn catch_up(&self) -> Result<(), LedgerError> {
        loop {
            let head = self.inner.read().head();
            let from = head.map_or(0, |h| h.number + 1);
            let rows = self
                .inner
                .store
                .read_from(from, self.inner.read_page)
                .await
                .map_err(store_error)?;
            if rows.is_empty() {
                return Ok(());
            }
            let mut verifier = match head {
                Some(h) => ChainVerifier::after(h, &self.inner.public_key),
                None => ChainVerifier::new(&self.inner.public_key),
            };
            for row in &rows {
                let block = verifier.push(row).map_err(chain_error)?;
                self.inner.apply(&block);
            }
        }
    }
}

/// Runs a block's transactions again on `state` and compares their effects with the block's.
fn check_execution(state: &WorldState, block: &VerifiedBlock) -> Result<(), (u32, String)> {
    let now = tx_time(block.head.timestamp);
    let mut overlay = Overlay::default();
    for (i, tx) in block.body.transactions.iter().enumerate() {
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        let fail = |reason: String| (index, reason);
        let call = TxCall::from_parts(&tx.function, &tx.args).map_err(|e| fail(e.to_string()))?;
        let at = Checkpoint {
            block_number: block_number(block.head.number),
            tx_index: index,
        };
        let mut view = TxView::new(state, &mut overlay, at, &tx.tx_id, now);
        if let Err(e) = execute(&mut view, &call, now, EMBEDDED_MEMBER) {
            return Err(fail(format!(
                "the contract refuses it ({})",
                contract_error(e)
            )));
        }
        let effects = view.commit();
        if effects.writes != tx.writes {
            return Err(fail("its writes differ".into()));
        }
        if effects.event != tx.event {
            return Err(fail("its event differs".into()));
        }
        if effects.reads != tx.reads || effects.range_reads != tx.range_reads {
            return Err(fail("its reads differ".into()));
        }
    }
    Ok(())
}

/// A sealed row's hash, as sealed: always 32 bytes.
fn block_hash_of(row: &BlockRow) -> [u8; 32] {
    row.hash_bytes().unwrap_or([0; 32])
}

fn receipt(block_number: u64, placed: Placed) -> TxReceipt {
    let checkpoint = Checkpoint {
        block_number,
        tx_index: placed.index,
    };
    TxReceipt {
        event: placed.event.map(|e| LedgerEvent {
            checkpoint,
            tx_id: placed.tx_id.clone(),
            name: e.name,
            payload: e.payload.into_bytes(),
        }),
        tx_id: placed.tx_id,
        block_number,
        tx_index: placed.index,
        outcome: placed.executed.outcome,
        replayed: placed.executed.replayed,
    }
}

/// One subscriber's position: events from the store up to the applied head, then live
/// events from the broadcast; back to the store when the broadcast lagged.
struct Subscription {
    inner: Weak<Inner>,
    store: Arc<dyn BlockStore>,
    page: usize,
    receiver: broadcast::Receiver<Arc<[LedgerEvent]>>,
    /// The last event delivered (or the subscriber's checkpoint).
    last: Option<Checkpoint>,
    buffer: VecDeque<LedgerEvent>,
    /// The next block to read from the store; `None` when following the broadcast.
    cursor: Option<u64>,
    done: bool,
}

impl Subscription {
    async fn next(mut self) -> Option<(Result<LedgerEvent, LedgerError>, Subscription)> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.last = Some(event.checkpoint);
                return Some((Ok(event), self));
            }
            if self.done {
                return None;
            }
            if let Some(cursor) = self.cursor {
                if let Err(e) = self.read_store(cursor).await {
                    self.done = true;
                    return Some((Err(e), self));
                }
                continue;
            }
            match self.receiver.recv().await {
                Ok(events) => {
                    let last = self.last;
                    self.buffer
                        .extend(events.iter().filter(|e| Some(e.checkpoint) > last).cloned());
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.cursor = Some(self.last.map_or(0, |c| c.block_number));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Reads one page of blocks from `cursor`, no further than the applied head.
    async fn read_store(&mut self, cursor: u64) -> Result<(), LedgerError> {
        let Some(inner) = self.inner.upgrade() else {
            self.done = true;
            return Ok(());
        };
        let head = inner.read().head().map(|h| block_number(h.number));
        drop(inner);
        let Some(head) = head.filter(|h| *h >= cursor) else {
            self.cursor = None;
            return Ok(());
        };
        let from = i64::try_from(cursor).map_err(LedgerError::corrupt)?;
        let rows = self
            .store
            .read_from(from, self.page)
            .await
            .map_err(store_error)?;
        let mut next = cursor;
        for row in rows {
            let number = u64::try_from(row.number).map_err(LedgerError::corrupt)?;
            if number > head {
                break;
            }
            let body = BlockBody::decode(&row.body)
                .map_err(|e| LedgerError::corrupt(format!("block {number} cannot be read: {e}")))?;
            let last = self.last;
            self.buffer.extend(
                block_events(number, &body)
                    .into_iter()
                    .filter(|e| Some(e.checkpoint) > last),
            );
            next = number + 1;
        }
        if next == cursor {
            return Err(LedgerError::corrupt(format!(
                "block {cursor} is applied but missing from the store"
            )));
        }
        self.cursor = (next <= head).then_some(next);
        Ok(())
    }
}

fn store_error(e: StoreError) -> LedgerError {
    match e {
        StoreError::Unavailable { reason } => LedgerError::unavailable(reason),
        other => LedgerError::corrupt(other),
    }
}

fn chain_error(e: ChainError) -> LedgerError {
    LedgerError::corrupt(e)
}

fn writer_stopped() -> LedgerError {
    LedgerError::unavailable("the ledger's writer task has stopped")
}
