//! An in-memory [`ContractState`] for tests and the contract's own checks: a sorted map with
//! per-key history and the events emitted, grouped in explicit transactions.
//!
//! Owns nothing durable. Leaves out blocks, hashing and signatures (the embedded ledger).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;

use crate::contract::{ContractState, HistoryEntry};
use crate::time::Timestamp;

/// An event emitted by a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractEvent {
    pub tx_id: String,
    pub name: String,
    pub payload: Vec<u8>,
}

/// In-memory contract state. Writes apply at once and are stamped with the current
/// transaction (see [`InMemoryContractState::begin`]).
#[derive(Debug, Clone, Default)]
pub struct InMemoryContractState {
    values: BTreeMap<String, Vec<u8>>,
    history: HashMap<String, Vec<HistoryEntry>>,
    events: Vec<ContractEvent>,
    tx_id: String,
    tx_time: Option<Timestamp>,
}

impl InMemoryContractState {
    pub fn new() -> InMemoryContractState {
        InMemoryContractState::default()
    }

    /// Starts a transaction: following writes and events carry `tx_id` and `time`.
    pub fn begin(&mut self, tx_id: &str, time: Timestamp) {
        self.tx_id = tx_id.to_owned();
        self.tx_time = Some(time);
    }

    /// Every event emitted, in order.
    pub fn events(&self) -> &[ContractEvent] {
        &self.events
    }

    /// Every key and value held, in key order (to check what the ledger would see).
    pub fn entries(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    fn record(&mut self, key: &str, value: Option<Vec<u8>>) {
        let entry = HistoryEntry {
            tx_id: self.tx_id.clone(),
            timestamp: self.tx_time.unwrap_or(Timestamp::from_unix_seconds(0)),
            value,
        };
        self.history.entry(key.to_owned()).or_default().push(entry);
    }
}

impl ContractState for InMemoryContractState {
    type Error = Infallible;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Infallible> {
        Ok(self.values.get(key).cloned())
    }

    fn put(&mut self, key: &str, value: &[u8]) -> Result<(), Infallible> {
        self.values.insert(key.to_owned(), value.to_vec());
        self.record(key, Some(value.to_vec()));
        Ok(())
    }

    fn delete(&mut self, key: &str) -> Result<(), Infallible> {
        if self.values.remove(key).is_some() {
            self.record(key, None);
        }
        Ok(())
    }

    fn range(&self, start: &str, end: &str) -> Result<Vec<(String, Vec<u8>)>, Infallible> {
        if end <= start {
            return Ok(Vec::new());
        }
        Ok(self
            .values
            .range(start.to_owned()..end.to_owned())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn history(&self, key: &str) -> Result<Vec<HistoryEntry>, Infallible> {
        Ok(self.history.get(key).cloned().unwrap_or_default())
    }

    fn emit_event(&mut self, name: &str, payload: &[u8]) -> Result<(), Infallible> {
        self.events.push(ContractEvent {
            tx_id: self.tx_id.clone(),
            name: name.to_owned(),
            payload: payload.to_vec(),
        });
        Ok(())
    }
}
