//! The embedded ledger's world state: the key-value map and per-key history derived from the
//! blocks, kept in memory; read-only snapshots for queries; and the transaction view a
//! contract call runs over while a block is being built (recording its read-write set).
//!
//! Owns applying a committed block to the state. Leaves out building, signing and storing
//! blocks (`embedded`).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use assent_consent::{ContractState, HistoryEntry, Timestamp};

use crate::api::{Checkpoint, LedgerEvent};
use crate::block::{BlockBody, EventEntry, KeyRead, KeyWrite, RangeRead};
use crate::verify::ChainHead;

/// Why the embedded state refused an operation.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StateError {
    #[error("queries cannot write")]
    ReadOnly,
    #[error("`{key}`: the embedded ledger stores UTF-8 text only")]
    NotText { key: String },
}

/// State derived from the blocks applied so far.
#[derive(Debug, Default)]
pub(crate) struct WorldState {
    values: BTreeMap<String, Current>,
    history: HashMap<String, Vec<Version>>,
    head: Option<ChainHead>,
    last_tx: Option<Checkpoint>,
}

#[derive(Debug, Clone)]
struct Current {
    value: Arc<[u8]>,
    version: Checkpoint,
}

#[derive(Debug, Clone)]
struct Version {
    tx_id: Arc<str>,
    timestamp: Timestamp,
    value: Option<Arc<[u8]>>,
}

impl Version {
    fn entry(&self) -> HistoryEntry {
        HistoryEntry {
            tx_id: self.tx_id.to_string(),
            timestamp: self.timestamp,
            value: self.value.as_ref().map(|v| v.to_vec()),
        }
    }
}

/// The contract's transaction time for a block timestamp in milliseconds.
pub(crate) fn tx_time(block_millis: i64) -> Timestamp {
    Timestamp::from_unix_seconds(block_millis.div_euclid(1000))
}

impl WorldState {
    pub(crate) fn head(&self) -> Option<ChainHead> {
        self.head
    }

    pub(crate) fn last_tx(&self) -> Option<Checkpoint> {
        self.last_tx
    }

    /// Applies a verified block and returns its events.
    pub(crate) fn apply(&mut self, head: ChainHead, body: &BlockBody) -> Vec<LedgerEvent> {
        let block_number = block_number(head.number);
        let timestamp = tx_time(head.timestamp);
        for (index, tx) in body.transactions.iter().enumerate() {
            let checkpoint = Checkpoint {
                block_number,
                tx_index: u32::try_from(index).unwrap_or(u32::MAX),
            };
            let tx_id: Arc<str> = Arc::from(tx.tx_id.as_str());
            for write in &tx.writes {
                let value: Option<Arc<[u8]>> =
                    write.value.as_deref().map(|v| Arc::from(v.as_bytes()));
                match &value {
                    Some(v) => {
                        self.values.insert(
                            write.key.clone(),
                            Current {
                                value: v.clone(),
                                version: checkpoint,
                            },
                        );
                    }
                    None => {
                        self.values.remove(&write.key);
                    }
                }
                self.history
                    .entry(write.key.clone())
                    .or_default()
                    .push(Version {
                        tx_id: tx_id.clone(),
                        timestamp,
                        value,
                    });
            }
            self.last_tx = Some(checkpoint);
        }
        self.head = Some(head);
        block_events(block_number, body)
    }

    /// A read-only view for queries.
    pub(crate) fn snapshot(&self) -> Snapshot<'_> {
        Snapshot(self)
    }

    fn range_of(&self, start: &str, end: &str) -> impl Iterator<Item = (&String, &Current)> {
        let bounds = if start < end {
            Some((Bound::Included(start), Bound::Excluded(end)))
        } else {
            None
        };
        bounds
            .into_iter()
            .flat_map(|b| self.values.range::<str, _>(b))
    }
}

/// The events of a block's transactions, in order.
pub(crate) fn block_events(block_number: u64, body: &BlockBody) -> Vec<LedgerEvent> {
    body.transactions
        .iter()
        .enumerate()
        .filter_map(|(index, tx)| {
            let event = tx.event.as_ref()?;
            Some(LedgerEvent {
                checkpoint: Checkpoint {
                    block_number,
                    tx_index: u32::try_from(index).unwrap_or(u32::MAX),
                },
                tx_id: tx.tx_id.clone(),
                name: event.name.clone(),
                payload: event.payload.as_bytes().to_vec(),
            })
        })
        .collect()
}

/// Block numbers are never negative once verified.
pub(crate) fn block_number(number: i64) -> u64 {
    u64::try_from(number).unwrap_or(0)
}

/// Committed state, read-only.
pub(crate) struct Snapshot<'a>(&'a WorldState);

impl ContractState for Snapshot<'_> {
    type Error = StateError;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.0.values.get(key).map(|c| c.value.to_vec()))
    }

    fn put(&mut self, _key: &str, _value: &[u8]) -> Result<(), StateError> {
        Err(StateError::ReadOnly)
    }

    fn delete(&mut self, _key: &str) -> Result<(), StateError> {
        Err(StateError::ReadOnly)
    }

    fn range(&self, start: &str, end: &str) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        Ok(self
            .0
            .range_of(start, end)
            .map(|(k, c)| (k.clone(), c.value.to_vec()))
            .collect())
    }

    fn history(&self, key: &str) -> Result<Vec<HistoryEntry>, StateError> {
        Ok(self
            .0
            .history
            .get(key)
            .map(|h| h.iter().map(Version::entry).collect())
            .unwrap_or_default())
    }

    fn emit_event(&mut self, _name: &str, _payload: &[u8]) -> Result<(), StateError> {
        Err(StateError::ReadOnly)
    }
}

/// A value as written; `None` for a delete.
type Value = Option<Arc<[u8]>>;

/// The writes of the transactions already placed in the block being built.
#[derive(Debug, Default)]
pub(crate) struct Overlay {
    values: BTreeMap<String, (Value, Checkpoint)>,
    history: HashMap<String, Vec<Version>>,
}

impl Overlay {
    fn absorb(&mut self, writes: &[(String, Value)], at: Checkpoint, version: Version) {
        for (key, value) in writes {
            self.values.insert(key.clone(), (value.clone(), at));
            self.history.entry(key.clone()).or_default().push(Version {
                value: value.clone(),
                ..version.clone()
            });
        }
    }
}

/// What one transaction did: its read-write set and event, in block form.
pub(crate) struct TxEffects {
    pub reads: Vec<KeyRead>,
    pub range_reads: Vec<RangeRead>,
    pub writes: Vec<KeyWrite>,
    pub event: Option<EventEntry>,
}

/// The state one transaction runs over: committed state plus the earlier transactions of the
/// block being built. Reads never see the transaction's own writes (as on Fabric).
pub(crate) struct TxView<'a> {
    base: &'a WorldState,
    overlay: &'a mut Overlay,
    at: Checkpoint,
    tx_id: Arc<str>,
    timestamp: Timestamp,
    reads: RefCell<BTreeMap<String, Option<Checkpoint>>>,
    range_reads: RefCell<Vec<RangeRead>>,
    writes: Vec<(String, Value)>,
    event: Option<EventEntry>,
}

impl<'a> TxView<'a> {
    pub(crate) fn new(
        base: &'a WorldState,
        overlay: &'a mut Overlay,
        at: Checkpoint,
        tx_id: &str,
        timestamp: Timestamp,
    ) -> TxView<'a> {
        TxView {
            base,
            overlay,
            at,
            tx_id: Arc::from(tx_id),
            timestamp,
            reads: RefCell::new(BTreeMap::new()),
            range_reads: RefCell::new(Vec::new()),
            writes: Vec::new(),
            event: None,
        }
    }

    /// Places the transaction in the block: later transactions see its writes.
    pub(crate) fn commit(self) -> TxEffects {
        let version = Version {
            tx_id: self.tx_id.clone(),
            timestamp: self.timestamp,
            value: None,
        };
        self.overlay.absorb(&self.writes, self.at, version);
        TxEffects {
            reads: self
                .reads
                .into_inner()
                .into_iter()
                .map(|(key, version)| KeyRead { key, version })
                .collect(),
            range_reads: self.range_reads.into_inner(),
            writes: self
                .writes
                .into_iter()
                .map(|(key, value)| KeyWrite {
                    key,
                    // Checked to be UTF-8 in `put`.
                    value: value.map(|v| String::from_utf8_lossy(&v).into_owned()),
                })
                .collect(),
            event: self.event,
        }
    }

    fn lookup(&self, key: &str) -> (Value, Option<Checkpoint>) {
        if let Some((value, at)) = self.overlay.values.get(key) {
            return (value.clone(), Some(*at));
        }
        match self.base.values.get(key) {
            Some(c) => (Some(c.value.clone()), Some(c.version)),
            None => (None, None),
        }
    }
}

impl ContractState for TxView<'_> {
    type Error = StateError;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        let (value, version) = self.lookup(key);
        self.reads.borrow_mut().insert(key.to_owned(), version);
        Ok(value.map(|v| v.to_vec()))
    }

    fn put(&mut self, key: &str, value: &[u8]) -> Result<(), StateError> {
        if std::str::from_utf8(value).is_err() {
            return Err(StateError::NotText {
                key: key.to_owned(),
            });
        }
        self.writes.push((key.to_owned(), Some(Arc::from(value))));
        Ok(())
    }

    fn delete(&mut self, key: &str) -> Result<(), StateError> {
        self.writes.push((key.to_owned(), None));
        Ok(())
    }

    fn range(&self, start: &str, end: &str) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        self.range_reads.borrow_mut().push(RangeRead {
            start: start.to_owned(),
            end: end.to_owned(),
        });
        let mut merged: BTreeMap<&str, Arc<[u8]>> = self
            .base
            .range_of(start, end)
            .map(|(k, c)| (k.as_str(), c.value.clone()))
            .collect();
        if start < end {
            for (k, (v, _)) in self
                .overlay
                .values
                .range::<str, _>((Bound::Included(start), Bound::Excluded(end)))
            {
                match v {
                    Some(v) => merged.insert(k.as_str(), v.clone()),
                    None => merged.remove(k.as_str()),
                };
            }
        }
        Ok(merged
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_vec()))
            .collect())
    }

    fn history(&self, key: &str) -> Result<Vec<HistoryEntry>, StateError> {
        let base = self.base.history.get(key).into_iter().flatten();
        let overlay = self.overlay.history.get(key).into_iter().flatten();
        Ok(base.chain(overlay).map(Version::entry).collect())
    }

    fn emit_event(&mut self, name: &str, payload: &[u8]) -> Result<(), StateError> {
        let payload = std::str::from_utf8(payload).map_err(|_| StateError::NotText {
            key: format!("event {name}"),
        })?;
        self.event = Some(EventEntry {
            name: name.to_owned(),
            payload: payload.to_owned(),
        });
        Ok(())
    }
}
