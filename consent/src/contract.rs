//! The consent contract: pure logic over a key-value state interface, run the same way by the
//! embedded ledger and by Fabric chaincode.
//!
//! Owns the state trait, the records kept on the ledger, their key layout and the
//! operations (put, revoke, read active consents, list consents by patient or by grantee, read
//! history, record an anchor). Leaves
//! out blocks, signatures and transport (the ledger backends) and the consent documents
//! themselves (the gateway store).
//!
//! **Invariant:** nothing written through [`ContractState`] holds an identifier or a document
//! in clear: patients, grantees, consents and gateways appear as keyed hashes
//! ([`ConsortiumKey`]), documents as SHA-256 hashes of their canonical form, revocation
//! reasons as codes.
//!
//! Key layout (ASCII, `/`-separated, hashes in lower-case hex):
//! - `consent/{patient}/{grantee}/{consent}`: the [`ConsentRecord`]; `grantee` is the first
//!   grantee of the first version, or `any`. Writes for different patients, grantees or
//!   consents touch different keys, so concurrent transactions do not collide under Fabric's
//!   read-write-set (MVCC) validation.
//! - `consent-index/{consent}`: the record key of a consent, written once at creation.
//! - `anchor/{gateway}/{batch id, 20 digits}`: an [`AnchorRecord`].
//!
//! Each write operation emits exactly one event (Fabric keeps one event per transaction),
//! and never reads its own writes (Fabric does not show them).
//!
//! **Members.** Every consent write runs as a consortium member (Fabric: the MSP id of the
//! transaction's creator; the embedded ledger: [`LOCAL_MEMBER`]). A consent remembers the
//! member that created it ([`ConsentRecord::member`]); only that member may put a new version
//! of it (another member's put is refused, [`ContractError::OtherMember`], even when it would
//! be a replay). Any member may revoke any consent: a patient may withdraw at any member, and
//! a revocation only narrows access. A write without a member id is refused. Anchors are per
//! gateway and take no member. Records written before members were recorded carry none and
//! belong to [`LOCAL_MEMBER`]; records of [`LOCAL_MEMBER`] are written without the field, so
//! the embedded ledger's blocks are byte for byte what they were and old chains still
//! re-execute ([`ConsentRecord`]'s serde attributes).

mod in_memory;
mod keys;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{Consent, ConsentError, ConsentScope, ConsentStatus};
use crate::time::Timestamp;

pub use in_memory::{ContractEvent, InMemoryContractState};
pub use keys::{
    ConsortiumKey, MIN_KEY_LEN, canonical_json, canonical_sha256, document_hash, write_canonical,
};

/// The key-value state a contract runs over: Fabric's chaincode stub, or the embedded
/// ledger's state. Reads see committed state only.
pub trait ContractState {
    type Error: std::error::Error + Send + Sync + 'static;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Self::Error>;
    fn put(&mut self, key: &str, value: &[u8]) -> Result<(), Self::Error>;
    fn delete(&mut self, key: &str) -> Result<(), Self::Error>;
    /// Keys in `[start, end)`, in key order, with their values.
    fn range(&self, start: &str, end: &str) -> Result<Vec<(String, Vec<u8>)>, Self::Error>;
    /// Every committed value of `key`, oldest first (`value: None` for a delete).
    fn history(&self, key: &str) -> Result<Vec<HistoryEntry>, Self::Error>;
    /// Sets the event of the current transaction.
    fn emit_event(&mut self, name: &str, payload: &[u8]) -> Result<(), Self::Error>;
}

/// One committed value of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub tx_id: String,
    pub timestamp: Timestamp,
    pub value: Option<Vec<u8>>,
}

/// The member id of the embedded ledger's one member, and the member of every record that
/// names none (written before the contract recorded members).
pub const LOCAL_MEMBER: &str = "local";

/// The longest member id accepted, in bytes.
pub const MAX_MEMBER_LEN: usize = 128;

fn local_member() -> String {
    LOCAL_MEMBER.to_owned()
}

fn is_local_member(member: &str) -> bool {
    member == LOCAL_MEMBER
}

/// A consent's status as the ledger keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordStatus {
    Draft,
    Proposed,
    Active,
    Rejected,
    Inactive,
    EnteredInError,
    NotDone,
    Revoked,
}

impl RecordStatus {
    fn from_consent(status: &ConsentStatus) -> RecordStatus {
        match status {
            ConsentStatus::Draft => RecordStatus::Draft,
            ConsentStatus::Proposed => RecordStatus::Proposed,
            ConsentStatus::Active => RecordStatus::Active,
            ConsentStatus::Rejected => RecordStatus::Rejected,
            ConsentStatus::Inactive => RecordStatus::Inactive,
            ConsentStatus::EnteredInError => RecordStatus::EnteredInError,
            ConsentStatus::NotDone => RecordStatus::NotDone,
        }
    }
}

/// Why a consent was revoked: a code, never free text (free text could carry health data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevocationReason {
    PatientRequest,
    Superseded,
    EnteredInError,
    Expired,
    LegalOrder,
    Other,
}

/// What is submitted to store a consent version: hashes only. Built on the gateway side by
/// [`ConsentSubmission::from_consent`], so the document never reaches the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentSubmission {
    pub consent_key: String,
    pub patient_key: String,
    pub grantee_keys: Vec<String>,
    pub document_hash: String,
    pub status: RecordStatus,
    /// `patient-privacy`, `research`, `treatment` or `adr`.
    pub scope: String,
    pub period_start: Option<i64>,
    pub period_end: Option<i64>,
    /// The version the writer last saw (optimistic concurrency); `None` or `Some(0)` to
    /// create.
    pub expected_version: Option<u64>,
}

impl ConsentSubmission {
    /// The submission for a parsed `consent` whose FHIR `document` the gateway stores, for the
    /// patient of cross-site identity `patient_identity`.
    pub fn from_consent(
        consent: &Consent,
        document: &Value,
        patient_identity: &str,
        key: &ConsortiumKey,
    ) -> Result<ConsentSubmission, ConsentError> {
        if consent.id.is_empty() {
            return Err(ConsentError::Invalid {
                element: "Consent.id".into(),
                reason: "a stored consent needs an id".into(),
            });
        }
        if patient_identity.is_empty() || consent.patient.is_none() {
            let element = if consent.fhir_version >= assent_fhir::FhirVersion::R5 {
                "Consent.subject"
            } else {
                "Consent.patient"
            };
            return Err(ConsentError::Invalid {
                element: element.into(),
                reason: "a stored consent needs its patient".into(),
            });
        }
        let period = consent.period;
        Ok(ConsentSubmission {
            consent_key: key.consent(&consent.id),
            patient_key: key.patient(patient_identity),
            grantee_keys: consent
                .grantees()
                .into_iter()
                .map(|p| key.party(p))
                .collect(),
            document_hash: document_hash(document),
            status: RecordStatus::from_consent(&consent.status),
            scope: consent.scope.as_str().to_owned(),
            period_start: period
                .map(|p| p.start)
                .filter(|t| *t != Timestamp::MIN)
                .map(Timestamp::unix_seconds),
            period_end: period
                .map(|p| p.end)
                .filter(|t| *t != Timestamp::MAX)
                .map(Timestamp::unix_seconds),
            expected_version: None,
        })
    }
}

/// A consent version as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    pub consent_key: String,
    pub patient_key: String,
    /// The grantee bucket of the record's key (`any` when the consent names none).
    pub grantee_bucket: String,
    pub grantee_keys: Vec<String>,
    /// 1 for the first version, then +1 per change.
    pub version: u64,
    pub document_hash: String,
    pub status: RecordStatus,
    pub scope: String,
    pub period_start: Option<i64>,
    pub period_end: Option<i64>,
    pub revocation: Option<RevocationReason>,
    /// The transaction time of this version, in Unix seconds.
    pub updated_at: i64,
    /// The consortium member that created the consent (the writer of version 1), the only one
    /// that may put new versions. Kept by every later version, revocations included. Left
    /// out of the stored form for [`LOCAL_MEMBER`], and read as it when absent.
    #[serde(default = "local_member", skip_serializing_if = "is_local_member")]
    pub member: String,
}

impl ConsentRecord {
    /// Whether this version is enforceable at `now`: active, in period, patient privacy.
    pub fn is_in_force(&self, now: Timestamp) -> bool {
        let t = now.unix_seconds();
        self.status == RecordStatus::Active
            && self.period_start.is_none_or(|s| s <= t)
            && self.period_end.is_none_or(|e| t < e)
    }

    /// Whether `document` (from the gateway store) is the document this version was stored
    /// with.
    pub fn matches_document(&self, document: &Value) -> bool {
        document_hash(document) == self.document_hash
    }

    /// Whether the consent's scope is one the gateway enforces.
    pub fn is_enforced_scope(&self) -> bool {
        self.scope == ConsentScope::PatientPrivacy.as_str()
    }
}

/// A batch root of receipts to anchor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorSubmission {
    pub gateway_key: String,
    pub batch_id: u64,
    /// The Merkle root of the batch, 64 hex digits.
    pub root: String,
    pub n_receipts: u64,
}

/// An anchor as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorRecord {
    pub gateway_key: String,
    pub batch_id: u64,
    pub root: String,
    pub n_receipts: u64,
    pub recorded_at: i64,
}

/// The outcome of a write: the record now current, and whether the call was a replay of a
/// write already committed (nothing written, no event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written<T> {
    pub record: T,
    pub replayed: bool,
}

/// One version of a consent with the transaction that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentVersion {
    pub tx_id: String,
    pub record: ConsentRecord,
}

/// Why a contract operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ContractError<E: std::error::Error + 'static> {
    #[error("invalid submission: {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("consent not found")]
    NotFound,
    #[error("version conflict: expected version {expected}, current version {current}")]
    VersionConflict { expected: u64, current: u64 },
    #[error("the consent belongs to another patient")]
    PatientMismatch,
    #[error("the consent is revoked; submit a new consent")]
    Revoked,
    /// Another consortium member created the consent: only it may put new versions (any
    /// member may revoke).
    #[error("the consent belongs to another consortium member; only that member may change it")]
    OtherMember,
    #[error("batch {batch_id} is already anchored with another root")]
    AnchorConflict { batch_id: u64 },
    #[error("stored state is corrupt at `{key}`: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("state: {0}")]
    State(#[source] E),
}

/// Event names, stable: subscribers (decision caches) match on them.
pub const EVENT_CONSENT_PUT: &str = "consent.put";
pub const EVENT_CONSENT_REVOKED: &str = "consent.revoked";
pub const EVENT_ANCHOR_RECORDED: &str = "anchor.recorded";

/// The consent contract. Stateless: every operation takes the state and the transaction
/// time.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConsentContract;

type ContractResult<T, E> = std::result::Result<T, ContractError<E>>;

impl ConsentContract {
    /// Stores a new version of a consent as consortium member `member`. Replaying the current
    /// version (same document hash and status) writes nothing. A revoked consent cannot be put
    /// again; a consent another member created cannot be put at all (not even as a replay).
    pub fn put_consent<S: ContractState>(
        &self,
        state: &mut S,
        submission: &ConsentSubmission,
        member: &str,
        now: Timestamp,
    ) -> ContractResult<Written<ConsentRecord>, S::Error> {
        validate_member(member)?;
        validate_submission(submission)?;
        let index_key = index_key(&submission.consent_key);
        let existing = match state.get(&index_key).map_err(ContractError::State)? {
            Some(k) => {
                let record_key =
                    String::from_utf8(k).map_err(|_| corrupt(&index_key, "not UTF-8"))?;
                let record = read_record(state, &record_key)?;
                Some((record_key, record))
            }
            None => None,
        };
        let expected = submission.expected_version.unwrap_or(0);
        let (record_key, version, bucket, owner) = match existing {
            Some((record_key, current)) => {
                if current.member != member {
                    return Err(ContractError::OtherMember);
                }
                if current.patient_key != submission.patient_key {
                    return Err(ContractError::PatientMismatch);
                }
                if current.status == RecordStatus::Revoked {
                    return Err(ContractError::Revoked);
                }
                if current.document_hash == submission.document_hash
                    && current.status == submission.status
                {
                    return Ok(Written {
                        record: current,
                        replayed: true,
                    });
                }
                if submission.expected_version.is_some() && expected != current.version {
                    return Err(ContractError::VersionConflict {
                        expected,
                        current: current.version,
                    });
                }
                (
                    record_key,
                    current.version + 1,
                    current.grantee_bucket,
                    current.member,
                )
            }
            None => {
                if expected != 0 {
                    return Err(ContractError::VersionConflict {
                        expected,
                        current: 0,
                    });
                }
                let bucket = submission
                    .grantee_keys
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "any".to_owned());
                let record_key = format!(
                    "consent/{}/{}/{}",
                    submission.patient_key, bucket, submission.consent_key
                );
                state
                    .put(&index_key, record_key.as_bytes())
                    .map_err(ContractError::State)?;
                (record_key, 1, bucket, member.to_owned())
            }
        };
        let record = ConsentRecord {
            consent_key: submission.consent_key.clone(),
            patient_key: submission.patient_key.clone(),
            grantee_bucket: bucket,
            grantee_keys: submission.grantee_keys.clone(),
            version,
            document_hash: submission.document_hash.clone(),
            status: submission.status,
            scope: submission.scope.clone(),
            period_start: submission.period_start,
            period_end: submission.period_end,
            revocation: None,
            updated_at: now.unix_seconds(),
            member: owner,
        };
        write_record(state, &record_key, &record)?;
        emit(state, EVENT_CONSENT_PUT, &record)?;
        Ok(Written {
            record,
            replayed: false,
        })
    }

    /// Revokes a consent as consortium member `member` (any member may revoke any consent;
    /// the record keeps its creator): a new version with status `revoked` and the reason.
    /// Revoking a revoked consent writes nothing.
    pub fn revoke<S: ContractState>(
        &self,
        state: &mut S,
        consent_key: &str,
        reason: RevocationReason,
        member: &str,
        now: Timestamp,
    ) -> ContractResult<Written<ConsentRecord>, S::Error> {
        validate_member(member)?;
        let record_key = lookup(state, consent_key)?;
        let current = read_record(state, &record_key)?;
        if current.status == RecordStatus::Revoked {
            return Ok(Written {
                record: current,
                replayed: true,
            });
        }
        let record = ConsentRecord {
            version: current.version + 1,
            status: RecordStatus::Revoked,
            revocation: Some(reason),
            updated_at: now.unix_seconds(),
            ..current
        };
        write_record(state, &record_key, &record)?;
        emit(state, EVENT_CONSENT_REVOKED, &record)?;
        Ok(Written {
            record,
            replayed: false,
        })
    }

    /// The current version of a consent.
    pub fn consent<S: ContractState>(
        &self,
        state: &S,
        consent_key: &str,
    ) -> ContractResult<ConsentRecord, S::Error> {
        let record_key = lookup(state, consent_key)?;
        read_record(state, &record_key)
    }

    /// Every consent of a patient, whatever its status, in key order (for listing).
    pub fn patient_consents<S: ContractState>(
        &self,
        state: &S,
        patient_key: &str,
    ) -> ContractResult<Vec<ConsentRecord>, S::Error> {
        if !keys::is_hash(patient_key) {
            return Err(invalid("patient_key", "not a keyed hash"));
        }
        let start = format!("consent/{patient_key}/");
        let end = format!("consent/{patient_key}0");
        state
            .range(&start, &end)
            .map_err(ContractError::State)?
            .into_iter()
            .map(|(key, bytes)| parse_record(&key, &bytes))
            .collect()
    }

    /// The current version of every consent naming `grantee_key` among its grantees (any
    /// version's grantees, not only the first one's key bucket), whatever its status, in key
    /// order: a consent administrator's search by actor, without a patient.
    ///
    /// Cost: O(all consents on the ledger), a range over every consent record, filtered. That
    /// is acceptable for an administrative search; an index by grantee would change the
    /// contract's writes, which re-executing old chains would not reproduce.
    pub fn grantee_consents<S: ContractState>(
        &self,
        state: &S,
        grantee_key: &str,
    ) -> ContractResult<Vec<ConsentRecord>, S::Error> {
        if !keys::is_hash(grantee_key) {
            return Err(invalid("grantee_key", "not a keyed hash"));
        }
        let mut out = Vec::new();
        for (key, bytes) in state
            .range(CONSENT_RANGE_START, CONSENT_RANGE_END)
            .map_err(ContractError::State)?
        {
            let record = parse_record(&key, &bytes)?;
            if record.grantee_keys.iter().any(|g| g == grantee_key) {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// A patient's consents in force at `now` (active and in period), in key order. Consents
    /// of scopes that are not enforced are included; [`ConsentRecord::is_enforced_scope`]
    /// tells them apart.
    pub fn active_consents<S: ContractState>(
        &self,
        state: &S,
        patient_key: &str,
        now: Timestamp,
    ) -> ContractResult<Vec<ConsentRecord>, S::Error> {
        let mut all = self.patient_consents(state, patient_key)?;
        all.retain(|r| r.is_in_force(now));
        Ok(all)
    }

    /// Every version of a consent, oldest first.
    pub fn history<S: ContractState>(
        &self,
        state: &S,
        consent_key: &str,
    ) -> ContractResult<Vec<ConsentVersion>, S::Error> {
        let record_key = lookup(state, consent_key)?;
        let mut out = Vec::new();
        for entry in state.history(&record_key).map_err(ContractError::State)? {
            if let Some(bytes) = entry.value {
                out.push(ConsentVersion {
                    tx_id: entry.tx_id,
                    record: parse_record(&record_key, &bytes)?,
                });
            }
        }
        Ok(out)
    }

    /// Records a batch root. Recording the same root again writes nothing; another root for
    /// the same batch is refused.
    pub fn record_anchor<S: ContractState>(
        &self,
        state: &mut S,
        submission: &AnchorSubmission,
        now: Timestamp,
    ) -> ContractResult<Written<AnchorRecord>, S::Error> {
        if !keys::is_hash(&submission.gateway_key) {
            return Err(invalid("gateway_key", "not a keyed hash"));
        }
        if !keys::is_hash(&submission.root) {
            return Err(invalid("root", "not 64 lower-case hex digits"));
        }
        let key = anchor_key(&submission.gateway_key, submission.batch_id);
        if let Some(bytes) = state.get(&key).map_err(ContractError::State)? {
            let existing: AnchorRecord =
                serde_json::from_slice(&bytes).map_err(|e| corrupt(&key, e))?;
            if existing.root == submission.root && existing.n_receipts == submission.n_receipts {
                return Ok(Written {
                    record: existing,
                    replayed: true,
                });
            }
            return Err(ContractError::AnchorConflict {
                batch_id: submission.batch_id,
            });
        }
        let record = AnchorRecord {
            gateway_key: submission.gateway_key.clone(),
            batch_id: submission.batch_id,
            root: submission.root.clone(),
            n_receipts: submission.n_receipts,
            recorded_at: now.unix_seconds(),
        };
        let bytes = to_bytes(&record);
        state.put(&key, &bytes).map_err(ContractError::State)?;
        state
            .emit_event(EVENT_ANCHOR_RECORDED, &bytes)
            .map_err(ContractError::State)?;
        Ok(Written {
            record,
            replayed: false,
        })
    }

    /// The anchor of a gateway's batch, if recorded.
    pub fn anchor<S: ContractState>(
        &self,
        state: &S,
        gateway_key: &str,
        batch_id: u64,
    ) -> ContractResult<Option<AnchorRecord>, S::Error> {
        let key = anchor_key(gateway_key, batch_id);
        match state.get(&key).map_err(ContractError::State)? {
            Some(bytes) => Ok(Some(
                serde_json::from_slice(&bytes).map_err(|e| corrupt(&key, e))?,
            )),
            None => Ok(None),
        }
    }
}

/// Every consent record key lies in `[CONSENT_RANGE_START, CONSENT_RANGE_END)`: `consent/`
/// then anything (`0` follows `/` in ASCII); `consent-index/…` sorts before it.
pub const CONSENT_RANGE_START: &str = "consent/";
pub const CONSENT_RANGE_END: &str = "consent0";

fn index_key(consent_key: &str) -> String {
    format!("consent-index/{consent_key}")
}

fn anchor_key(gateway_key: &str, batch_id: u64) -> String {
    format!("anchor/{gateway_key}/{batch_id:020}")
}

fn invalid<E: std::error::Error>(field: &'static str, reason: &str) -> ContractError<E> {
    ContractError::Invalid {
        field,
        reason: reason.to_owned(),
    }
}

fn corrupt<E: std::error::Error>(key: &str, reason: impl std::fmt::Display) -> ContractError<E> {
    ContractError::Corrupt {
        key: key.to_owned(),
        reason: reason.to_string(),
    }
}

/// A member id: 1 to [`MAX_MEMBER_LEN`] printable ASCII characters without spaces (an MSP id
/// such as `Org1MSP`). Empty means the backend could not tell who submits: refused.
fn validate_member<E: std::error::Error>(member: &str) -> ContractResult<(), E> {
    if member.is_empty() {
        return Err(invalid("member", "the submitting member is unknown"));
    }
    if member.len() > MAX_MEMBER_LEN || !member.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "member",
            "not 1 to 128 printable ASCII characters without spaces",
        ));
    }
    Ok(())
}

fn validate_submission<E: std::error::Error>(s: &ConsentSubmission) -> ContractResult<(), E> {
    if !keys::is_hash(&s.consent_key) {
        return Err(invalid("consent_key", "not a keyed hash"));
    }
    if !keys::is_hash(&s.patient_key) {
        return Err(invalid("patient_key", "not a keyed hash"));
    }
    if s.grantee_keys.iter().any(|g| !keys::is_hash(g)) {
        return Err(invalid("grantee_keys", "not a keyed hash"));
    }
    if !keys::is_hash(&s.document_hash) {
        return Err(invalid("document_hash", "not a SHA-256 hex digest"));
    }
    if s.status == RecordStatus::Revoked {
        return Err(invalid("status", "use revoke to revoke a consent"));
    }
    if !["patient-privacy", "research", "treatment", "adr"].contains(&s.scope.as_str()) {
        return Err(invalid("scope", "unknown scope"));
    }
    if let (Some(a), Some(b)) = (s.period_start, s.period_end)
        && b <= a
    {
        return Err(invalid("period_end", "ends before it starts"));
    }
    Ok(())
}

fn lookup<S: ContractState>(state: &S, consent_key: &str) -> ContractResult<String, S::Error> {
    if !keys::is_hash(consent_key) {
        return Err(invalid("consent_key", "not a keyed hash"));
    }
    let index = index_key(consent_key);
    match state.get(&index).map_err(ContractError::State)? {
        Some(k) => String::from_utf8(k).map_err(|_| corrupt(&index, "not UTF-8")),
        None => Err(ContractError::NotFound),
    }
}

fn read_record<S: ContractState>(state: &S, key: &str) -> ContractResult<ConsentRecord, S::Error> {
    match state.get(key).map_err(ContractError::State)? {
        Some(bytes) => parse_record(key, &bytes),
        None => Err(corrupt(key, "indexed record missing")),
    }
}

fn parse_record<E: std::error::Error>(key: &str, bytes: &[u8]) -> ContractResult<ConsentRecord, E> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(key, e))
}

fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    // Records are plain structs of strings, numbers and enums: serialising cannot fail.
    serde_json::to_vec(value).expect("records serialise")
}

fn write_record<S: ContractState>(
    state: &mut S,
    key: &str,
    record: &ConsentRecord,
) -> ContractResult<(), S::Error> {
    state
        .put(key, &to_bytes(record))
        .map_err(ContractError::State)
}

fn emit<S: ContractState>(
    state: &mut S,
    name: &str,
    record: &ConsentRecord,
) -> ContractResult<(), S::Error> {
    let payload = serde_json::json!({
        "consent_key": record.consent_key,
        "patient_key": record.patient_key,
        "version": record.version,
        "status": record.status,
    });
    state
        .emit_event(name, payload.to_string().as_bytes())
        .map_err(ContractError::State)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    use assent_fhir::FhirVersion;
    use serde_json::json;

    use super::*;
    use crate::model::{Party, parse_consent};

    const M: &str = LOCAL_MEMBER;

    fn key() -> ConsortiumKey {
        ConsortiumKey::new(b"consortium-test-key-32-bytes-long").unwrap()
    }

    fn t(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    fn document(id: &str, grantee: &str, note: &str) -> Value {
        json!({"resourceType": "Consent", "id": id, "status": "active",
            "subject": {"reference": "Patient/p1"}, "decision": "deny",
            "period": {"start": "2025-01-01", "end": "2025-12-31"},
            "provision": [{"actor": [{"reference": {"reference": grantee}}]}],
            "note": note})
    }

    fn submission(doc: &Value, patient: &str) -> ConsentSubmission {
        let (consent, _) = parse_consent(doc, FhirVersion::R5).unwrap();
        ConsentSubmission::from_consent(&consent, doc, patient, &key()).unwrap()
    }

    #[test]
    fn put_versions_replays_and_reads_back() {
        let c = ConsentContract;
        let mut s = InMemoryContractState::new();
        let doc = document("c1", "Practitioner/dr-a", "v1");
        let sub = submission(&doc, "urn:mpi|42");
        s.begin("tx1", t("2025-02-01T00:00:00Z"));
        let w = c
            .put_consent(&mut s, &sub, M, t("2025-02-01T00:00:00Z"))
            .unwrap();
        assert_eq!((w.record.version, w.replayed), (1, false));
        assert_eq!(w.record.document_hash, document_hash(&doc));

        s.begin("tx2", t("2025-02-02T00:00:00Z"));
        let again = c
            .put_consent(&mut s, &sub, M, t("2025-02-02T00:00:00Z"))
            .unwrap();
        assert!(again.replayed);
        assert_eq!(again.record.version, 1);
        assert_eq!(s.events().len(), 1, "a replay emits nothing");

        let doc2 = document("c1", "Practitioner/dr-a", "v2");
        let mut sub2 = submission(&doc2, "urn:mpi|42");
        sub2.expected_version = Some(1);
        s.begin("tx3", t("2025-02-03T00:00:00Z"));
        let w2 = c
            .put_consent(&mut s, &sub2, M, t("2025-02-03T00:00:00Z"))
            .unwrap();
        assert_eq!(w2.record.version, 2);
        sub2.document_hash = document_hash(&document("c1", "Practitioner/dr-a", "v3"));
        match c.put_consent(&mut s, &sub2, M, t("2025-02-04T00:00:00Z")) {
            Err(ContractError::VersionConflict {
                expected: 1,
                current: 2,
            }) => {}
            other => panic!("expected a version conflict, got {other:?}"),
        }

        let active = c
            .active_consents(&s, &key().patient("urn:mpi|42"), t("2025-06-01T00:00:00Z"))
            .unwrap();
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].version, 2);
        assert!(active[0].is_enforced_scope());
        let later = c
            .active_consents(&s, &key().patient("urn:mpi|42"), t("2026-01-01T00:00:00Z"))
            .unwrap();
        assert!(later.is_empty(), "out of period");
        let other = c
            .active_consents(&s, &key().patient("urn:mpi|43"), t("2025-06-01T00:00:00Z"))
            .unwrap();
        assert!(other.is_empty());

        assert!(active[0].matches_document(&doc2));
        assert!(!active[0].matches_document(&doc));
        assert_eq!(
            c.patient_consents(&s, &key().patient("urn:mpi|42"))
                .unwrap()
                .len(),
            1
        );
        let history = c.history(&s, &key().consent("c1")).unwrap();
        let versions: Vec<(String, u64)> = history
            .iter()
            .map(|h| (h.tx_id.clone(), h.record.version))
            .collect();
        assert_eq!(versions, vec![("tx1".into(), 1), ("tx3".into(), 2)]);
        let events: Vec<&str> = s.events().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(events, vec![EVENT_CONSENT_PUT, EVENT_CONSENT_PUT]);
    }

    #[test]
    fn revocation_is_versioned_final_and_idempotent() {
        let c = ConsentContract;
        let mut s = InMemoryContractState::new();
        let doc = document("c1", "Practitioner/dr-a", "v1");
        let sub = submission(&doc, "urn:mpi|42");
        let now = t("2025-03-01T00:00:00Z");
        s.begin("tx1", now);
        c.put_consent(&mut s, &sub, M, now).unwrap();
        s.begin("tx2", now);
        let r = c
            .revoke(
                &mut s,
                &key().consent("c1"),
                RevocationReason::PatientRequest,
                M,
                now,
            )
            .unwrap();
        assert_eq!(r.record.version, 2);
        assert_eq!(r.record.status, RecordStatus::Revoked);
        assert_eq!(r.record.revocation, Some(RevocationReason::PatientRequest));
        assert!(
            c.active_consents(&s, &key().patient("urn:mpi|42"), now)
                .unwrap()
                .is_empty()
        );
        let listed = c
            .patient_consents(&s, &key().patient("urn:mpi|42"))
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].status, RecordStatus::Revoked);
        let again = c
            .revoke(
                &mut s,
                &key().consent("c1"),
                RevocationReason::Other,
                M,
                now,
            )
            .unwrap();
        assert!(again.replayed);
        assert!(matches!(
            c.put_consent(&mut s, &sub, M, now),
            Err(ContractError::Revoked)
        ));
        assert!(matches!(
            c.revoke(
                &mut s,
                &key().consent("nope"),
                RevocationReason::Other,
                M,
                now
            ),
            Err(ContractError::NotFound)
        ));
        let events: Vec<&str> = s.events().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(events, vec![EVENT_CONSENT_PUT, EVENT_CONSENT_REVOKED]);
        let payload: Value = serde_json::from_slice(&s.events()[1].payload).unwrap();
        assert_eq!(payload["version"], 2);
        assert_eq!(payload["status"], "revoked");
    }

    #[test]
    fn grantee_consents_finds_every_patients_consents_naming_the_grantee() {
        let c = ConsentContract;
        let mut s = InMemoryContractState::new();
        let now = t("2025-03-01T00:00:00Z");
        let put = |s: &mut InMemoryContractState, id: &str, grantee: &str, patient: &str| {
            c.put_consent(s, &submission(&document(id, grantee, "1"), patient), M, now)
                .unwrap()
        };
        put(&mut s, "c1", "Practitioner/dr-alice", "p-1");
        put(&mut s, "c2", "Practitioner/dr-alice", "p-2");
        put(&mut s, "c3", "Practitioner/dr-bob", "p-1");
        // c4 named dr-bob first (its record key's bucket), then dr-alice: found by its
        // current grantees, not by its key.
        put(&mut s, "c4", "Practitioner/dr-bob", "p-3");
        let mut moved = submission(&document("c4", "Practitioner/dr-alice", "2"), "p-3");
        moved.expected_version = Some(1);
        c.put_consent(&mut s, &moved, M, now).unwrap();
        c.revoke(
            &mut s,
            &key().consent("c2"),
            RevocationReason::Other,
            M,
            now,
        )
        .unwrap();
        // Anchors live beside consents and are never read as consents.
        c.record_anchor(
            &mut s,
            &AnchorSubmission {
                gateway_key: key().gateway("gw-1"),
                batch_id: 1,
                root: "ab".repeat(32),
                n_receipts: 1,
            },
            now,
        )
        .unwrap();

        let alice = key().party(&Party::Reference("Practitioner/dr-alice".into()));
        let mut found: Vec<(String, u64, RecordStatus)> = c
            .grantee_consents(&s, &alice)
            .unwrap()
            .into_iter()
            .map(|r| (r.consent_key, r.version, r.status))
            .collect();
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let mut expected = vec![
            (key().consent("c1"), 1, RecordStatus::Active),
            (key().consent("c2"), 2, RecordStatus::Revoked),
            (key().consent("c4"), 2, RecordStatus::Active),
        ];
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(found, expected);

        let bob = key().party(&Party::Reference("Practitioner/dr-bob".into()));
        let bobs: Vec<String> = c
            .grantee_consents(&s, &bob)
            .unwrap()
            .into_iter()
            .map(|r| r.consent_key)
            .collect();
        assert_eq!(bobs, vec![key().consent("c3")], "c4 no longer names dr-bob");
        let nobody = key().party(&Party::Reference("Practitioner/dr-carol".into()));
        assert!(c.grantee_consents(&s, &nobody).unwrap().is_empty());
        for bad in ["", "Practitioner/dr-alice", "consent/", &"z".repeat(64)] {
            assert!(
                matches!(
                    c.grantee_consents(&s, bad),
                    Err(ContractError::Invalid {
                        field: "grantee_key",
                        ..
                    })
                ),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn a_consent_cannot_move_to_another_patient() {
        let c = ConsentContract;
        let mut s = InMemoryContractState::new();
        let now = t("2025-03-01T00:00:00Z");
        c.put_consent(
            &mut s,
            &submission(&document("c1", "Practitioner/a", "1"), "p-1"),
            M,
            now,
        )
        .unwrap();
        let moved = submission(&document("c1", "Practitioner/a", "2"), "p-2");
        assert!(matches!(
            c.put_consent(&mut s, &moved, M, now),
            Err(ContractError::PatientMismatch)
        ));
    }

    #[test]
    fn nothing_on_the_ledger_is_in_clear() {
        let c = ConsentContract;
        let mut s = InMemoryContractState::new();
        let doc = document("consent-secret-id", "Practitioner/dr-secret", "v1");
        let now = t("2025-03-01T00:00:00Z");
        c.put_consent(&mut s, &submission(&doc, "urn:mpi|patient-secret"), M, now)
            .unwrap();
        c.revoke(
            &mut s,
            &key().consent("consent-secret-id"),
            RevocationReason::PatientRequest,
            M,
            now,
        )
        .unwrap();
        let mut everything = String::new();
        for (k, v) in s.entries() {
            everything.push_str(k);
            everything.push_str(&String::from_utf8_lossy(v));
        }
        for e in s.events() {
            everything.push_str(&String::from_utf8_lossy(&e.payload));
        }
        for secret in ["secret", "Patient/p1", "Practitioner", "Consent"] {
            assert!(
                !everything.contains(secret),
                "`{secret}` reached the ledger"
            );
        }
    }

    /// Records the keys each operation reads and writes, as Fabric's read-write set would.
    struct RwSet<'a> {
        inner: &'a mut InMemoryContractState,
        reads: RefCell<BTreeSet<String>>,
        writes: BTreeSet<String>,
    }

    impl ContractState for RwSet<'_> {
        type Error = std::convert::Infallible;
        fn get(&self, key: &str) -> std::result::Result<Option<Vec<u8>>, Self::Error> {
            self.reads.borrow_mut().insert(key.to_owned());
            self.inner.get(key)
        }
        fn put(&mut self, key: &str, value: &[u8]) -> std::result::Result<(), Self::Error> {
            self.writes.insert(key.to_owned());
            self.inner.put(key, value)
        }
        fn delete(&mut self, key: &str) -> std::result::Result<(), Self::Error> {
            self.writes.insert(key.to_owned());
            self.inner.delete(key)
        }
        fn range(
            &self,
            start: &str,
            end: &str,
        ) -> std::result::Result<Vec<(String, Vec<u8>)>, Self::Error> {
            self.reads.borrow_mut().insert(format!("{start}..{end}"));
            self.inner.range(start, end)
        }
        fn history(&self, key: &str) -> std::result::Result<Vec<HistoryEntry>, Self::Error> {
            self.inner.history(key)
        }
        fn emit_event(
            &mut self,
            name: &str,
            payload: &[u8],
        ) -> std::result::Result<(), Self::Error> {
            self.inner.emit_event(name, payload)
        }
    }

    fn rw(
        state: &mut InMemoryContractState,
        op: impl FnOnce(&mut RwSet<'_>),
    ) -> (BTreeSet<String>, BTreeSet<String>) {
        let mut s = RwSet {
            inner: state,
            reads: RefCell::new(BTreeSet::new()),
            writes: BTreeSet::new(),
        };
        op(&mut s);
        (s.reads.into_inner(), s.writes)
    }

    #[test]
    fn writes_for_different_consents_do_not_collide() {
        let c = ConsentContract;
        let mut s = InMemoryContractState::new();
        let now = t("2025-03-01T00:00:00Z");
        c.put_consent(
            &mut s,
            &submission(&document("c0", "Practitioner/a", "1"), "p-1"),
            M,
            now,
        )
        .unwrap();
        // Same patient, another grantee; another patient; a revocation of the first consent.
        let (r1, w1) = rw(&mut s, |s| {
            let sub = submission(&document("c1", "Practitioner/b", "1"), "p-1");
            c.put_consent(s, &sub, M, now).unwrap();
        });
        let (r2, w2) = rw(&mut s, |s| {
            let sub = submission(&document("c2", "Practitioner/a", "1"), "p-2");
            c.put_consent(s, &sub, M, now).unwrap();
        });
        let (r3, w3) = rw(&mut s, |s| {
            c.revoke(
                s,
                &key().consent("c0"),
                RevocationReason::PatientRequest,
                M,
                now,
            )
            .unwrap();
        });
        let sets = [(r1, w1), (r2, w2), (r3, w3)];
        for (i, (ri, wi)) in sets.iter().enumerate() {
            for (j, (_, wj)) in sets.iter().enumerate() {
                if i != j {
                    assert!(ri.is_disjoint(wj), "op {i} reads what op {j} writes");
                    assert!(wi.is_disjoint(wj), "ops {i} and {j} write the same key");
                }
            }
        }
        let w1: Vec<&String> = sets[0].1.iter().collect();
        let w2: Vec<&String> = sets[1].1.iter().collect();
        assert!(
            w1.iter()
                .any(|k| k.starts_with(&format!("consent/{}/", key().patient("p-1"))))
        );
        assert!(
            w2.iter()
                .any(|k| k.starts_with(&format!("consent/{}/", key().patient("p-2"))))
        );
    }

    #[test]
    fn anchors_are_recorded_once() {
        let c = ConsentContract;
        let mut s = InMemoryContractState::new();
        let now = t("2025-03-01T00:00:00Z");
        let sub = AnchorSubmission {
            gateway_key: key().gateway("gw-1"),
            batch_id: 7,
            root: "ab".repeat(32),
            n_receipts: 100,
        };
        let w = c.record_anchor(&mut s, &sub, now).unwrap();
        assert!(!w.replayed);
        assert!(c.record_anchor(&mut s, &sub, now).unwrap().replayed);
        let forged = AnchorSubmission {
            root: "cd".repeat(32),
            ..sub.clone()
        };
        assert!(matches!(
            c.record_anchor(&mut s, &forged, now),
            Err(ContractError::AnchorConflict { batch_id: 7 })
        ));
        assert_eq!(
            c.anchor(&s, &sub.gateway_key, 7).unwrap().map(|a| a.root),
            Some("ab".repeat(32))
        );
        assert_eq!(c.anchor(&s, &sub.gateway_key, 8).unwrap(), None);
        let bad = AnchorSubmission {
            root: "not-hex".into(),
            ..sub
        };
        assert!(matches!(
            c.record_anchor(&mut s, &bad, now),
            Err(ContractError::Invalid { field: "root", .. })
        ));
        assert_eq!(s.events().len(), 1);
    }

    /// ADV: the member rules. Each row runs a call as some member after a consent was created
    /// by member `Org1MSP` (or by the embedded member, or written before members existed) and
    /// says what must come out; a refused call must write nothing and emit nothing.
    #[test]
    fn only_the_creating_member_may_put_and_any_member_may_revoke() {
        #[derive(Debug)]
        enum Call {
            Put(&'static str),
            PutSame,
            PutVersioned(u64),
            Revoke,
        }
        #[derive(Debug, PartialEq)]
        enum Want {
            Written(u64),
            Replayed(u64),
            OtherMember,
            Revoked,
            InvalidMember,
        }
        enum Creator {
            Member(&'static str),
            /// A record stored before the contract recorded members (no `member` field).
            Legacy,
        }
        use Call::*;
        use Want::*;
        let a = "Org1MSP";
        let b = "Org2MSP";
        // (creator, calls in order as (member, call, expected outcome))
        type Steps = Vec<(&'static str, Call, Want)>;
        let table: Vec<(Creator, Steps)> = vec![
            (Creator::Member(a), vec![(b, Put("v2"), OtherMember)]),
            (Creator::Member(a), vec![(b, PutSame, OtherMember)]),
            (Creator::Member(a), vec![(b, PutVersioned(1), OtherMember)]),
            (
                Creator::Member(a),
                vec![("org1msp", Put("v2"), OtherMember)],
            ),
            (
                Creator::Member(a),
                vec![("Org1MSP ", Put("v2"), InvalidMember)],
            ),
            (
                Creator::Member(a),
                vec![(LOCAL_MEMBER, Put("v2"), OtherMember)],
            ),
            (Creator::Member(a), vec![("", Put("v2"), InvalidMember)]),
            (Creator::Member(a), vec![("", Revoke, InvalidMember)]),
            (
                Creator::Member(a),
                vec![(a, Put("v2"), Written(2)), (a, Put("v2"), Replayed(2))],
            ),
            (Creator::Member(a), vec![(a, PutVersioned(1), Written(2))]),
            (
                Creator::Member(a),
                vec![
                    (b, Revoke, Written(2)),
                    (b, Revoke, Replayed(2)),
                    (a, Revoke, Replayed(2)),
                    (a, Put("v3"), Revoked),
                    (b, Put("v3"), OtherMember),
                ],
            ),
            (
                Creator::Legacy,
                vec![
                    (a, Put("v2"), OtherMember),
                    (LOCAL_MEMBER, Put("v2"), Written(2)),
                ],
            ),
            (Creator::Legacy, vec![(a, Revoke, Written(2))]),
            (
                Creator::Member(LOCAL_MEMBER),
                vec![(b, PutSame, OtherMember), (b, Revoke, Written(2))],
            ),
        ];
        let now = t("2025-03-01T00:00:00Z");
        let doc = |note: &str| document("c1", "Practitioner/dr-a", note);
        for (row, (creator, calls)) in table.into_iter().enumerate() {
            let c = ConsentContract;
            let mut s = InMemoryContractState::new();
            s.begin("tx0", now);
            let first = submission(&doc("v1"), "urn:mpi|42");
            match creator {
                Creator::Member(m) => {
                    c.put_consent(&mut s, &first, m, now).unwrap();
                }
                Creator::Legacy => {
                    c.put_consent(&mut s, &first, LOCAL_MEMBER, now).unwrap();
                    // The bytes an older contract wrote: no member field at all.
                    let (k, v) = s
                        .entries()
                        .find(|(k, _)| k.starts_with("consent/"))
                        .map(|(k, v)| (k.to_owned(), v.to_vec()))
                        .unwrap();
                    assert!(!String::from_utf8_lossy(&v).contains("member"));
                    let mut old: Value = serde_json::from_slice(&v).unwrap();
                    assert!(old.as_object_mut().unwrap().remove("member").is_none());
                    s.put(&k, old.to_string().as_bytes()).unwrap();
                }
            }
            let creator_member = c.consent(&s, &key().consent("c1")).unwrap().member;
            for (i, (member, call, want)) in calls.into_iter().enumerate() {
                let before: Vec<(String, Vec<u8>)> = s
                    .entries()
                    .map(|(k, v)| (k.to_owned(), v.to_vec()))
                    .collect();
                let events_before = s.events().len();
                s.begin(&format!("tx{row}-{i}"), now);
                let result = match &call {
                    Put(note) => {
                        c.put_consent(&mut s, &submission(&doc(note), "urn:mpi|42"), member, now)
                    }
                    PutSame => c.put_consent(&mut s, &first, member, now),
                    PutVersioned(v) => {
                        let mut sub = submission(&doc("versioned"), "urn:mpi|42");
                        sub.expected_version = Some(*v);
                        c.put_consent(&mut s, &sub, member, now)
                    }
                    Revoke => c.revoke(
                        &mut s,
                        &key().consent("c1"),
                        RevocationReason::PatientRequest,
                        member,
                        now,
                    ),
                };
                let got = match result {
                    Ok(w) if w.replayed => Replayed(w.record.version),
                    Ok(w) => {
                        assert_eq!(
                            w.record.member, creator_member,
                            "row {row} call {i}: the record keeps its creator"
                        );
                        Written(w.record.version)
                    }
                    Err(ContractError::OtherMember) => OtherMember,
                    Err(ContractError::Revoked) => Revoked,
                    Err(ContractError::Invalid {
                        field: "member", ..
                    }) => InvalidMember,
                    Err(e) => panic!("row {row} call {i} ({member}, {call:?}): {e}"),
                };
                assert_eq!(got, want, "row {row} call {i}: {member:?} {call:?}");
                if !matches!(got, Written(_)) {
                    let after: Vec<(String, Vec<u8>)> = s
                        .entries()
                        .map(|(k, v)| (k.to_owned(), v.to_vec()))
                        .collect();
                    assert_eq!(before, after, "row {row} call {i}: nothing written");
                    assert_eq!(
                        s.events().len(),
                        events_before,
                        "row {row} call {i}: no event"
                    );
                }
            }
        }
    }

    #[test]
    fn records_name_their_member_only_when_it_is_not_the_local_one() {
        let c = ConsentContract;
        let now = t("2025-03-01T00:00:00Z");
        let sub = submission(&document("c1", "Practitioner/a", "1"), "p-1");
        let stored = |member: &str| {
            let mut s = InMemoryContractState::new();
            c.put_consent(&mut s, &sub, member, now).unwrap();
            s.entries()
                .find(|(k, _)| k.starts_with("consent/"))
                .map(|(_, v)| String::from_utf8(v.to_vec()).unwrap())
                .unwrap()
        };
        let local = stored(LOCAL_MEMBER);
        assert!(!local.contains("member"), "{local}");
        // The bytes the contract wrote before members: the same fields, in the same order.
        assert!(local.ends_with(&format!("\"updated_at\":{}}}", now.unix_seconds())));
        let other = stored("Org1MSP");
        assert!(other.ends_with(",\"member\":\"Org1MSP\"}"), "{other}");
        let back: ConsentRecord = serde_json::from_str(&local).unwrap();
        assert_eq!(back.member, LOCAL_MEMBER);
        let long = "M".repeat(MAX_MEMBER_LEN + 1);
        for bad in ["", " ", "Org 1", "Org1\n", "Orgé", long.as_str()] {
            let mut s = InMemoryContractState::new();
            assert!(
                matches!(
                    c.put_consent(&mut s, &sub, bad, now),
                    Err(ContractError::Invalid {
                        field: "member",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        let mut s = InMemoryContractState::new();
        let longest = "M".repeat(MAX_MEMBER_LEN);
        c.put_consent(&mut s, &sub, &longest, now).unwrap();
    }

    #[test]
    fn submissions_need_an_id_and_a_patient() {
        let doc = json!({"resourceType": "Consent", "status": "active", "decision": "deny",
            "subject": {"reference": "Patient/p1"}});
        let (consent, _) = parse_consent(&doc, FhirVersion::R5).unwrap();
        let e = ConsentSubmission::from_consent(&consent, &doc, "p", &key()).unwrap_err();
        assert_eq!(e.element(), "Consent.id");
        let doc = json!({"resourceType": "Consent", "id": "c", "status": "active",
            "provision": {"type": "deny"}});
        let (consent, _) = parse_consent(&doc, FhirVersion::R4).unwrap();
        let e = ConsentSubmission::from_consent(&consent, &doc, "p", &key()).unwrap_err();
        assert_eq!(e.element(), "Consent.patient");
        let mut sub = submission(&document("c1", "Practitioner/a", "1"), "p");
        sub.status = RecordStatus::Revoked;
        let mut s = InMemoryContractState::new();
        assert!(matches!(
            ConsentContract.put_consent(&mut s, &sub, M, t("2025-01-01")),
            Err(ContractError::Invalid {
                field: "status",
                ..
            })
        ));
    }
}
