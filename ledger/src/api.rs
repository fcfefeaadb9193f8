//! The ledger interface every backend implements (embedded now, Fabric later): submitting a
//! contract transaction, evaluating queries, and subscribing to the contract's events from a
//! checkpoint; with the receipt, event, checkpoint and error types.
//!
//! Owns the contract between the gateway and a ledger backend. Leaves out how a backend
//! orders, stores or endorses transactions (`embedded`, the Fabric backend) and what the
//! contract does (`assent-consent`).

use std::fmt;

use assent_consent::{
    AnchorRecord, AnchorSubmission, ConsentRecord, ConsentSubmission, ConsentVersion, RecordStatus,
    RevocationReason, Timestamp,
};
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::call::{TxCall, TxOutcome};

/// A ledger backend, held by the gateway as `Arc<dyn Ledger>`.
///
/// Writes go through [`Ledger::submit`] (Fabric: Endorse → Submit → CommitStatus) and return
/// once the transaction is committed and its block durable. Queries (Fabric: Evaluate) read
/// committed state only.
#[async_trait::async_trait]
pub trait Ledger: Send + Sync {
    /// Runs one contract transaction and waits for its commit. A submission that changes
    /// nothing (a replay of what is already committed) commits as a transaction without
    /// writes or event, and its receipt says `replayed`.
    async fn submit(&self, call: TxCall) -> Result<TxReceipt, LedgerError>;

    /// A patient's consents in force at `now` (active, in period), in key order: what a
    /// consent decision reads on a cache miss.
    async fn active_consents(
        &self,
        patient_key: &str,
        now: Timestamp,
    ) -> Result<Vec<ConsentRecord>, LedgerError>;

    /// Every consent of a patient, whatever its status, in key order.
    async fn patient_consents(&self, patient_key: &str) -> Result<Vec<ConsentRecord>, LedgerError>;

    /// The current version of every consent naming `grantee_key` among its grantees, of any
    /// patient and whatever its status, in key order. Scans every consent (an administrator's
    /// search by actor, O(all consents)); a key that is not a keyed hash is refused
    /// ([`LedgerError::Rejected`], [`Rejection::Invalid`]).
    async fn grantee_consents(&self, grantee_key: &str) -> Result<Vec<ConsentRecord>, LedgerError>;

    /// The current version of a consent; `None` when unknown.
    async fn consent(&self, consent_key: &str) -> Result<Option<ConsentRecord>, LedgerError>;

    /// Every version of a consent, oldest first; empty when unknown.
    async fn consent_history(&self, consent_key: &str) -> Result<Vec<ConsentVersion>, LedgerError>;

    /// The anchor of a gateway's batch, if recorded.
    async fn anchor(
        &self,
        gateway_key: &str,
        batch_id: u64,
    ) -> Result<Option<AnchorRecord>, LedgerError>;

    /// The position of the last committed transaction; `None` for an empty ledger. Subscribing
    /// after it delivers exactly the events committed from then on.
    async fn head(&self) -> Result<Option<Checkpoint>, LedgerError>;

    /// The contract's events committed after `after` (`None`: from the first transaction), in
    /// commit order, each once, then live ones as they commit. An event is delivered only
    /// once its block is durable and the backend's queries see it. After an `Err` item the
    /// stream ends; resubscribe from the last checkpoint handled.
    async fn subscribe(&self, after: Option<Checkpoint>) -> Result<EventStream, LedgerError>;

    /// Brings queries up to date with what other writers committed to a shared backend
    /// (the embedded ledger over a store that several gateways share applies their blocks).
    /// Backends whose queries always see every commit have nothing to do.
    async fn refresh(&self) -> Result<(), LedgerError> {
        Ok(())
    }

    /// Keeps `document` off the channel ledger, addressed by `hash`: the lowercase hex SHA-256
    /// of exactly these bytes, which is what the ledger's records hold for it (consent
    /// documents: the ledger holds their hash, never their content). Every member of the
    /// consortium can then fetch it ([`Ledger::document`]); on Fabric it is a private data
    /// collection's entry, on the embedded ledger the block store's. Storing the same
    /// document again changes nothing. A `hash` that does not match the bytes is refused
    /// (`Rejected`, field `document`).
    async fn put_document(&self, hash: &str, document: &[u8]) -> Result<(), LedgerError>;

    /// The document stored under `hash` ([`Ledger::put_document`]), checked against it: bytes
    /// that do not hash to `hash` are `Corrupt`, never returned. `None` when no member
    /// stored it. A member the backend does not let read documents (on Fabric, an
    /// organization outside the collection) is refused with `Unavailable` and the backend's
    /// reason: it fails closed either way.
    async fn document(&self, hash: &str) -> Result<Option<Vec<u8>>, LedgerError>;

    /// Stores a consent version ([`TxCall::PutConsent`]).
    async fn put_consent(&self, submission: ConsentSubmission) -> Result<TxReceipt, LedgerError> {
        self.submit(TxCall::PutConsent(submission)).await
    }

    /// Revokes a consent ([`TxCall::Revoke`]).
    async fn revoke(
        &self,
        consent_key: &str,
        reason: RevocationReason,
    ) -> Result<TxReceipt, LedgerError> {
        self.submit(TxCall::Revoke {
            consent_key: consent_key.to_owned(),
            reason,
        })
        .await
    }

    /// Records a batch root of receipts ([`TxCall::RecordAnchor`]).
    async fn record_anchor(&self, submission: AnchorSubmission) -> Result<TxReceipt, LedgerError> {
        self.submit(TxCall::RecordAnchor(submission)).await
    }
}

/// The contract's events as a stream; see [`Ledger::subscribe`].
pub type EventStream = BoxStream<'static, Result<LedgerEvent, LedgerError>>;

/// The position of a transaction on the ledger: its block and its index in the block.
/// Ordered as the ledger orders transactions. Subscribers store the checkpoint of the last
/// event they handled and resume after it. Serialisable: the gateway stores it.
///
/// The embedded ledger numbers every transaction of a block; a backend that cannot see
/// transaction indexes (Fabric's ChaincodeEvents) may number the contract's events within
/// the block instead: the order, and resuming after a checkpoint, are what must hold.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Checkpoint {
    pub block_number: u64,
    pub tx_index: u32,
}

impl Checkpoint {
    /// After every transaction of block `block_number`.
    pub fn end_of_block(block_number: u64) -> Checkpoint {
        Checkpoint {
            block_number,
            tx_index: u32::MAX,
        }
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.block_number, self.tx_index)
    }
}

/// An event of a committed transaction (each transaction emits at most one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEvent {
    pub checkpoint: Checkpoint,
    pub tx_id: String,
    /// One of the contract's `EVENT_*` names.
    pub name: String,
    pub payload: Vec<u8>,
}

/// What a consent event says changed: enough for a decision cache to drop the patient's
/// entries. Identifiers are keyed hashes, as on the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentChange {
    pub consent_key: String,
    pub patient_key: String,
    pub version: u64,
    pub status: RecordStatus,
}

impl LedgerEvent {
    /// The consent change this event reports; `None` for other events (anchors) or a payload
    /// that cannot be read.
    pub fn consent_change(&self) -> Option<ConsentChange> {
        if self.name != assent_consent::EVENT_CONSENT_PUT
            && self.name != assent_consent::EVENT_CONSENT_REVOKED
        {
            return None;
        }
        let value: serde_json::Value = serde_json::from_slice(&self.payload).ok()?;
        Some(ConsentChange {
            consent_key: value.get("consent_key")?.as_str()?.to_owned(),
            patient_key: value.get("patient_key")?.as_str()?.to_owned(),
            version: value.get("version")?.as_u64()?,
            status: serde_json::from_value(value.get("status")?.clone()).ok()?,
        })
    }
}

/// The outcome of a committed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxReceipt {
    pub tx_id: String,
    pub block_number: u64,
    pub tx_index: u32,
    /// The record now current (the consent version, or the anchor).
    pub outcome: TxOutcome,
    /// The call changed nothing: what it asked for was already committed.
    pub replayed: bool,
    /// The event the transaction emitted; `None` for a replay.
    pub event: Option<LedgerEvent>,
}

impl TxReceipt {
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            block_number: self.block_number,
            tx_index: self.tx_index,
        }
    }
}

/// Why a ledger call failed, by side. Mapping for the gateway: `Unavailable` and `Corrupt` →
/// 503 (fail closed: no decision without the ledger), `Conflict` → 409, `Rejected` → 422
/// (`NotFound` → 404, `OtherMember` → 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The ledger (its store, its peers) could not be reached or did not answer. The
    /// transaction may or may not have committed; resubmitting is safe (replays are
    /// idempotent).
    #[error("ledger unavailable: {reason}")]
    Unavailable { reason: String },
    /// Another write got there first.
    #[error("conflict: {conflict}")]
    Conflict { conflict: Conflict },
    /// The contract refused the transaction; nothing was written.
    #[error("rejected by the contract: {rejection}")]
    Rejected { rejection: Rejection },
    /// The ledger's own data failed verification or could not be read back.
    #[error("ledger data failed verification: {reason}")]
    Corrupt { reason: String },
}

/// Which write conflicted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// The consent moved on since the version the writer saw.
    #[error("expected consent version {expected}, current version is {current}")]
    Version { expected: u64, current: u64 },
    /// The batch is already anchored with another root.
    #[error("batch {batch_id} is already anchored with another root")]
    Anchor { batch_id: u64 },
    /// Other writers kept appending blocks first; retries ran out.
    #[error("other writers kept appending first")]
    Writers,
}

/// Why the contract refused a transaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("consent not found")]
    NotFound,
    #[error("the consent belongs to another patient")]
    PatientMismatch,
    #[error("the consent is revoked; submit a new consent")]
    Revoked,
    /// Another consortium member created the consent; only it may put new versions (any
    /// member may revoke). The gateway answers 403 `consent-other-member`.
    #[error("the consent belongs to another consortium member; only that member may change it")]
    OtherMember,
}

/// Whether `hash` is the lowercase hex SHA-256 of exactly `document`: what
/// [`Ledger::put_document`] requires of its arguments and [`Ledger::document`] of what it
/// returns. Backends and their clients check with this, both ways.
pub fn document_matches(hash: &str, document: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    hash.len() == 64 && hex::encode(Sha256::digest(document)) == hash
}

/// The refusal of a document whose `hash` does not match its bytes ([`Ledger::put_document`]).
pub fn document_hash_mismatch() -> LedgerError {
    LedgerError::Rejected {
        rejection: Rejection::Invalid {
            field: "document".into(),
            reason: "the document does not hash to the given hash (lowercase hex SHA-256)".into(),
        },
    }
}

impl LedgerError {
    pub(crate) fn unavailable(reason: impl fmt::Display) -> LedgerError {
        LedgerError::Unavailable {
            reason: reason.to_string(),
        }
    }

    pub(crate) fn corrupt(reason: impl fmt::Display) -> LedgerError {
        LedgerError::Corrupt {
            reason: reason.to_string(),
        }
    }
}
