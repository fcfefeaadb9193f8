//! Consent as the gateway uses it: the ledger (embedded over the gateway's store, or a
//! Hyperledger Fabric channel), the clear consent documents (kept off the channel ledger by
//! hash through the ledger itself, so that every consortium member's gateway can fetch them;
//! verified against the record's hash and cached by hash), and the decision cache in front
//! of them, invalidated by the ledger's change events.
//!
//! Owns: patient identities and their keyed hashes, storing and revoking consents, loading a
//! patient's consents in force, the cache, and following the ledger's events (resumed after
//! the last one handled, whose checkpoint is kept in the store). Leaves out: the decision
//! itself (the consent crate), HTTP (the consent routes and the pipeline), the ledgers
//! themselves (`assent-ledger`, `assent-fabric`).
//!
//! **Invariant:** no permit rests on stale state on this replica. A revocation or a new
//! version invalidates the patient's cache entry before the call that made it returns, and
//! again when its ledger event arrives; a load that raced with an invalidation is not cached.
//!
//! **Invariant:** the cache is used only while the event stream is live. Until the first
//! subscription succeeds, and from the moment a stream breaks until it is resumed, every
//! decision reads the ledger (the cache is bypassed, and emptied when the stream breaks);
//! if the ledger cannot be read either, the request fails closed (503). With Fabric every
//! replica follows the channel's chaincode events, so a change made through any replica (or
//! any member's gateway) reaches every replica's cache. Replicas sharing one embedded store
//! see each other's blocks only on their next write or sync; they learn of each other's
//! changes through the cache fan-out (`cache_fanout.rs`, Redis): the change is
//! [announced](ConsentService::announce_to), and on their side the ledger is refreshed from
//! the shared store before the patient's entry is dropped. While a replica's fan-out is down
//! it [bypasses the cache](ConsentService::set_cache_bypass) and refreshes its ledger before
//! every load.
//!
//! **Invariant:** a decision rests only on documents whose bytes hash to the ledger record's
//! `document_hash`; a missing or mismatching document fails the decision closed (503), and a
//! mismatch is logged and counted (`assent_consent_documents_unverified_total`) by its hash
//! alone. A gateway decides on consents stored through any member: it needs nothing of them
//! in its own database.
//!
//! In parts: the ledger and its runtime (`consent/runtime.rs`), the documents by hash
//! (`consent/documents.rs`), the decision cache (`consent/cache.rs`) and the event follower
//! (`consent/follower.rs`); this facade ties them into the service the handlers use.

mod cache;
mod documents;
mod follower;
mod runtime;

use std::sync::Arc;

use assent_consent::{
    Consent, ConsentError, ConsentSubmission, ConsortiumKey, RevocationReason, Timestamp,
    parse_consent,
};
use assent_fhir::FhirVersion;
use assent_ledger::{Checkpoint, Ledger, LedgerError, Rejection, TxReceipt};
use serde_json::Value;

use crate::services::network::{NETWORK_SITE, NetworkIndex};
use crate::store::Store;
use cache::DecisionCache;
use documents::Documents;
use follower::EventFollower;
use runtime::LedgerRuntime;

pub use cache::{ANY_PATIENT, CACHE_CAPACITY};
pub use documents::{DOCUMENT_CACHE_CAPACITY, DOCUMENTS_UNVERIFIED};
pub use runtime::Backend;

/// A consent found by [`ConsentService::list_by_actor`]: the ledger's current version, its
/// verified document, and the site-local id of its patient.
#[derive(Debug, Clone)]
pub struct ActorConsent {
    pub record: assent_consent::ConsentRecord,
    pub document: Value,
    pub patient_id: String,
}

/// The id of the patient a Consent document names (`patient`, R5 `subject`), as the consent
/// model reads it (`assent_consent::parse_consent_any`, the one reader of Consent documents).
/// A candidate only, to be checked against the ledger's patient key.
fn document_patient_id(document: &Value) -> Option<String> {
    let (consent, _) = assent_consent::parse_consent_any(document).ok()?;
    consent.patient?.strip_prefix("Patient/").map(str::to_owned)
}

/// A failure of the consent service, mapped to a response by the caller.
#[derive(Debug, thiserror::Error)]
pub enum ConsentServiceError {
    /// The ledger or the store cannot answer: fail closed.
    #[error("consent state unavailable: {0}")]
    Unavailable(String),
    /// The Consent resource is not acceptable.
    #[error("{0}")]
    Invalid(#[from] ConsentError),
    /// The contract refused the change.
    #[error("{0}")]
    Rejected(String),
    /// The consent was created through another consortium member, which alone may change it
    /// (any member may revoke).
    #[error("the consent belongs to another consortium member")]
    OtherMember,
    /// Another version was written first.
    #[error("{0}")]
    Conflict(String),
    #[error("no such consent")]
    NotFound,
}

impl From<LedgerError> for ConsentServiceError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Unavailable { .. } | LedgerError::Corrupt { .. } => {
                ConsentServiceError::Unavailable(e.to_string())
            }
            LedgerError::Conflict { conflict } => {
                ConsentServiceError::Conflict(conflict.to_string())
            }
            LedgerError::Rejected { rejection } => match rejection {
                Rejection::NotFound => ConsentServiceError::NotFound,
                Rejection::OtherMember => ConsentServiceError::OtherMember,
                other => ConsentServiceError::Rejected(other.to_string()),
            },
        }
    }
}

/// What storing a consent produced.
#[derive(Debug, Clone)]
pub struct Stored {
    pub consent_id: String,
    pub version: u64,
    pub tx_id: String,
    pub block_number: u64,
    pub replayed: bool,
    /// When the version now current was written (Unix seconds, the ledger's transaction
    /// time).
    pub updated_at: i64,
}

/// The consent service of one gateway.
pub struct ConsentService {
    /// First, so that the runtime is shut down before the rest goes.
    runtime: LedgerRuntime,
    key: ConsortiumKey,
    documents: Documents,
    cache: Arc<DecisionCache>,
    events: Arc<EventFollower>,
}

impl ConsentService {
    /// Opens the embedded ledger over `store`, signing blocks with `node_seed`, and starts
    /// following its events.
    pub fn open_embedded(
        store: Store,
        consortium_key: &[u8],
        node_seed: [u8; 32],
    ) -> Result<Arc<ConsentService>, ConsentServiceError> {
        Self::open(store, consortium_key, Backend::Embedded { node_seed })
    }

    /// Opens the consent service on `backend` and starts following the ledger's events.
    /// Fabric connects lazily: an unreachable peer shows as 503s and a follower that keeps
    /// trying, not as a failed start.
    pub fn open(
        store: Store,
        consortium_key: &[u8],
        backend: Backend,
    ) -> Result<Arc<ConsentService>, ConsentServiceError> {
        let key = ConsortiumKey::new(consortium_key).ok_or_else(|| {
            ConsentServiceError::Unavailable("the consortium key is too short".into())
        })?;
        let opened = LedgerRuntime::open(store.clone(), backend)?;
        Ok(Self::with_runtime(
            store,
            key,
            opened.runtime,
            opened.checkpoint_setting,
        ))
    }

    /// The service over `ledger`, following its events on `runtime`.
    #[cfg(test)]
    fn start(
        store: Store,
        key: ConsortiumKey,
        ledger: Arc<dyn Ledger>,
        runtime: tokio::runtime::Runtime,
        public_key: Option<assent_ledger::VerifyingKey>,
        checkpoint_setting: String,
    ) -> Arc<ConsentService> {
        let runtime = LedgerRuntime::new(ledger, runtime, public_key);
        Self::with_runtime(store, key, runtime, checkpoint_setting)
    }

    /// The service over `runtime`'s ledger, following its events there.
    fn with_runtime(
        store: Store,
        key: ConsortiumKey,
        runtime: LedgerRuntime,
        checkpoint_setting: String,
    ) -> Arc<ConsentService> {
        let cache = Arc::new(DecisionCache::default());
        let events = Arc::new(EventFollower::new(
            cache.clone(),
            store.clone(),
            checkpoint_setting,
        ));
        if let Some(handle) = runtime.handle() {
            EventFollower::spawn(&events, runtime.ledger().clone(), &handle);
        }
        Arc::new(ConsentService {
            runtime,
            key,
            documents: Documents::new(),
            cache,
            events,
        })
    }

    /// The ledger, for everything that writes or reads it besides consents (receipt
    /// anchors): the embedded ledger or Fabric, as configured. Usable from any runtime.
    pub fn ledger(&self) -> Arc<dyn Ledger> {
        self.runtime.ledger().clone()
    }

    /// The counter of consent documents that failed verification against the ledger's hash,
    /// for the gateway's metrics registry.
    pub fn documents_unverified_counter(&self) -> prometheus::IntCounter {
        self.documents.unverified_counter()
    }

    /// Whether the ledger's event stream is live (the decision cache is in use).
    pub fn events_live(&self) -> bool {
        self.cache.events_live()
    }

    /// The checkpoint of the last ledger event handled.
    pub fn events_checkpoint(&self) -> Option<Checkpoint> {
        self.events.checkpoint()
    }

    /// The `node_settings` entry the events checkpoint is kept in.
    pub fn checkpoint_setting(&self) -> &str {
        self.events.checkpoint_setting()
    }

    /// The embedded ledger's verifying key (for `assent ledger verify`); `None` on Fabric,
    /// whose peers validate blocks themselves.
    pub fn public_key(&self) -> Option<assent_ledger::VerifyingKey> {
        self.runtime.public_key()
    }

    /// The consortium key that turns identifiers into the ledger's keyed hashes.
    pub fn key(&self) -> &ConsortiumKey {
        &self.key
    }

    /// The cross-site identity of a site-local patient.
    pub fn patient_identity(site: &str, patient_id: &str) -> String {
        assent_fhir::SitePatient::new(site, patient_id).to_string()
    }

    /// The keyed hash the ledger knows a patient by.
    pub fn patient_key(&self, site: &str, patient_id: &str) -> String {
        self.key.patient(&Self::patient_identity(site, patient_id))
    }

    /// The patient's consents in force now, from the cache, or from the ledger and the
    /// documents it keeps by hash (fetched on a miss, verified, cached by hash). For a site
    /// patient linked to a network patient (`network`, asked on a miss only), the network
    /// patient's consents in force too: both sets are decided together as one patient's
    /// (README, "Network consents"), and the entry is dropped when either patient's
    /// consents change. `site` may be [`NETWORK_SITE`]: the network patient's own consents.
    pub async fn consents_for(
        &self,
        site: &str,
        patient_id: &str,
        network: &NetworkIndex,
    ) -> Result<Arc<[Consent]>, ConsentServiceError> {
        // The cache is keyed by the clear identity, so that a hit costs no keyed hash.
        let identity = Self::patient_identity(site, patient_id);
        let ledger = self.runtime.ledger();
        if self.cache.bypassed() {
            // Another replica's change may not have been heard of: read the shared store.
            ledger.refresh().await?;
        } else if let Some(hit) = self.cache.get(&identity) {
            return Ok(hit);
        }
        let generation = self.cache.generation();
        let mut identities = vec![identity.clone()];
        if site != NETWORK_SITE {
            let linked = network
                .network_of(site, patient_id)
                .map_err(|e| ConsentServiceError::Unavailable(format!("the network index: {e}")))?;
            if let Some(n) = linked {
                identities.push(Self::patient_identity(NETWORK_SITE, &n));
            }
        }
        let mut keys = Vec::with_capacity(identities.len());
        let mut consents = Vec::new();
        for identity in &identities {
            let patient_key = self.key.patient(identity);
            self.load_in_force(&patient_key, &mut consents).await?;
            keys.push(patient_key);
        }
        let consents: Arc<[Consent]> = consents.into();
        self.cache
            .put(identity, &keys, consents.clone(), generation);
        Ok(consents)
    }

    /// Appends the consents in force of the patient `patient_key` names, read from the ledger
    /// and their verified documents.
    async fn load_in_force(
        &self,
        patient_key: &str,
        consents: &mut Vec<Consent>,
    ) -> Result<(), ConsentServiceError> {
        let ledger = self.runtime.ledger();
        let records = ledger.active_consents(patient_key, now()).await?;
        for record in records {
            let document = self
                .documents
                .load(&**ledger, &record.document_hash)
                .await?;
            if !record.matches_document(&document) {
                return Err(ConsentServiceError::Unavailable(format!(
                    "the stored document of consent version {} does not match the ledger",
                    record.version
                )));
            }
            let (mut consent, _) = assent_consent::parse_consent_any(&document)?;
            // The ledger's version is the one a decision names.
            consent.version = record.version.to_string().into();
            consents.push(consent);
        }
        Ok(())
    }

    /// Stores a consent for a patient of `site`: the document off the channel ledger by hash
    /// ([`Ledger::put_document`], before the version that names it, so a committed version
    /// always finds its document), its hashes on the ledger. The contract refuses a consent
    /// another consortium member created ([`ConsentServiceError::OtherMember`]). With `expected_version` (`Some(0)`: it must not exist yet), the ledger's
    /// contract refuses the write when the consent's current version is another
    /// ([`ConsentServiceError::Conflict`]): two writers that read the same version cannot
    /// both write the next one.
    pub async fn put(
        &self,
        site: &str,
        document: Value,
        version: Option<FhirVersion>,
        patient_id: &str,
        expected_version: Option<u64>,
    ) -> Result<Stored, ConsentServiceError> {
        let (consent, _issues) = match version {
            Some(v) => parse_consent(&document, v)?,
            None => assent_consent::parse_consent_any(&document)?,
        };
        let identity = Self::patient_identity(site, patient_id);
        let mut submission =
            ConsentSubmission::from_consent(&consent, &document, &identity, &self.key)?;
        submission.expected_version = expected_version;
        let ledger = self.runtime.ledger();
        let hash = self.documents.put(&**ledger, &document).await?;
        debug_assert_eq!(hash, submission.document_hash);
        let patient_key = submission.patient_key.clone();
        let receipt = ledger.put_consent(submission).await?;
        self.invalidate(&patient_key);
        self.cache.announce(&patient_key);
        Ok(stored(consent.id.to_string(), &receipt))
    }

    /// Revokes a consent; effective on this replica before this returns.
    pub async fn revoke(
        &self,
        consent_id: &str,
        reason: RevocationReason,
    ) -> Result<Stored, ConsentServiceError> {
        let consent_key = self.key.consent(consent_id);
        let receipt = self.runtime.ledger().revoke(&consent_key, reason).await?;
        if let Some(record) = receipt.outcome.consent() {
            self.invalidate(&record.patient_key);
            self.cache.announce(&record.patient_key);
        } else {
            self.invalidate_all();
            self.cache.announce(ANY_PATIENT);
        }
        Ok(stored(consent_id.to_owned(), &receipt))
    }

    /// Every version of a consent, oldest first, with its document when it can be fetched
    /// and verified.
    pub async fn history(
        &self,
        consent_id: &str,
    ) -> Result<Vec<(assent_consent::ConsentVersion, Option<Value>)>, ConsentServiceError> {
        let versions = self
            .runtime
            .ledger()
            .consent_history(&self.key.consent(consent_id))
            .await?;
        if versions.is_empty() {
            return Err(ConsentServiceError::NotFound);
        }
        let ledger = self.runtime.ledger();
        let mut out = Vec::with_capacity(versions.len());
        for v in versions {
            let document = self
                .documents
                .load(&**ledger, &v.record.document_hash)
                .await
                .ok()
                .map(|d| Value::clone(&d));
            out.push((v, document));
        }
        Ok(out)
    }

    /// The documents of a patient's consents (every status), newest version of each.
    pub async fn list(
        &self,
        site: &str,
        patient_id: &str,
    ) -> Result<Vec<(assent_consent::ConsentRecord, Value)>, ConsentServiceError> {
        let records = self
            .runtime
            .ledger()
            .patient_consents(&self.patient_key(site, patient_id))
            .await?;
        let ledger = self.runtime.ledger();
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            let document = self
                .documents
                .load(&**ledger, &record.document_hash)
                .await?;
            out.push((record, Value::clone(&document)));
        }
        Ok(out)
    }

    /// The consents of `site`'s patients that name `actor` (a reference `Type/id`) as a
    /// provision's actor, whatever their status, newest version of each, in ledger key order,
    /// each with its site-local patient id: a consent administrator's search by actor without
    /// a patient.
    ///
    /// The ledger is asked by the actor's grantee key, computed as a stored consent's grantee
    /// keys are ([`ConsentSubmission::from_consent`]: the keyed hash of the party the
    /// decision matches, the normalized reference). Each document is fetched by hash and
    /// verified as [`list`](Self::list) does. A consent is kept only when its document's
    /// patient is a patient of `site` by the ledger's own record: the keyed hash of
    /// `site` and the id the document names must be the record's patient key (a document
    /// alone cannot place a consent at a site). Costs a scan of every consent on the ledger
    /// ([`Ledger::grantee_consents`]).
    pub async fn list_by_actor(
        &self,
        site: &str,
        actor: &str,
    ) -> Result<Vec<ActorConsent>, ConsentServiceError> {
        let Some(party) = assent_consent::Caller::new()
            .with_reference(actor)
            .parties
            .pop()
        else {
            return Ok(Vec::new());
        };
        let ledger = self.runtime.ledger();
        let records = ledger.grantee_consents(&self.key.party(&party)).await?;
        let mut out = Vec::new();
        for record in records {
            let document = self
                .documents
                .load(&**ledger, &record.document_hash)
                .await?;
            let Some(patient_id) = document_patient_id(&document) else {
                continue;
            };
            if self.patient_key(site, &patient_id) != record.patient_key {
                continue;
            }
            out.push(ActorConsent {
                record,
                document: Value::clone(&document),
                patient_id,
            });
        }
        Ok(out)
    }

    /// Drops a patient's cached consents (the ledger names patients by keyed hash).
    pub fn invalidate(&self, patient_key: &str) {
        self.cache.invalidate(patient_key);
    }

    /// Drops every cached patient on this replica.
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }

    /// Links between site patients and network patients changed (a link made, confirmed or
    /// removed): a cached entry may hold a network patient's consents for a patient no longer
    /// linked to it, or miss them for one linked now. Drops the whole cache here and tells
    /// the other replicas to ([`ANY_PATIENT`]); called by whatever changes links.
    pub fn links_changed(&self) {
        self.cache.invalidate_all();
        self.cache.announce(ANY_PATIENT);
    }

    /// Sends this replica's consent changes (patient keys, or [`ANY_PATIENT`]) to `sender`
    /// from now on. Set once, by the fan-out.
    pub fn announce_to(&self, sender: tokio::sync::mpsc::UnboundedSender<String>) {
        self.cache.announce_to(sender);
    }

    /// While `bypass` holds, nothing is served from or put in the cache, and every load
    /// refreshes the ledger from the shared store first. Turning it on clears the cache.
    pub fn set_cache_bypass(&self, bypass: bool) {
        self.cache.set_bypass(bypass);
    }

    /// Whether the cache is bypassed (see [`set_cache_bypass`](Self::set_cache_bypass)).
    pub fn cache_bypassed(&self) -> bool {
        self.cache.bypassed()
    }

    /// Applies what other replicas committed to the shared store (the ledger's events then
    /// drop the patients they touched from the cache).
    pub async fn refresh_ledger(&self) -> Result<(), ConsentServiceError> {
        Ok(self.runtime.ledger().refresh().await?)
    }

    /// The runtime the ledger and the fan-out tasks run on.
    pub fn runtime_handle(&self) -> Option<tokio::runtime::Handle> {
        self.runtime.handle()
    }
}

fn stored(consent_id: String, receipt: &TxReceipt) -> Stored {
    Stored {
        consent_id,
        version: receipt.outcome.consent().map(|r| r.version).unwrap_or(0),
        tx_id: receipt.tx_id.clone(),
        block_number: receipt.block_number,
        replayed: receipt.replayed,
        updated_at: receipt
            .outcome
            .consent()
            .map(|r| r.updated_at)
            .unwrap_or_default(),
    }
}

/// The time for consent periods: the ledger's clock (the one clock the gateway reads).
fn now_ms() -> i64 {
    use assent_ledger::Clock;
    assent_ledger::SystemClock.now_millis()
}

/// The current time for consent periods.
pub fn now() -> Timestamp {
    Timestamp::from_unix_seconds(now_ms() / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;
    use assent_consent::{
        AccessRequest, AnchorRecord, Caller, ConsentRecord, ConsentVersion, Decision, SitePolicy,
        decide,
    };
    use assent_fhir::Interaction;
    use assent_ledger::{
        EmbeddedLedger, EmbeddedOptions, EventStream, LedgerEvent, SigningKey, SystemClock, TxCall,
    };
    use futures_util::StreamExt;
    use serde_json::json;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Duration;

    fn consent(id: &str, patient: &str, practitioner: &str) -> Value {
        json!({
            "resourceType": "Consent", "id": id, "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": format!("Patient/{patient}")},
            "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
            "provision": {"type": "deny", "provision": [{
                "type": "permit",
                "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]},
                           "reference": {"reference": format!("Practitioner/{practitioner}")}}]
            }]}
        })
    }

    /// A network index where nobody is linked (over a store of its own, kept for the test
    /// process).
    fn unlinked() -> &'static NetworkIndex {
        static INDEX: std::sync::OnceLock<NetworkIndex> = std::sync::OnceLock::new();
        INDEX.get_or_init(|| {
            let test_store = Box::leak(Box::new(testing::sqlite()));
            let config = crate::config::Config::from_toml(
                "database_url = \"/tmp/x.db\"\n[sites.st-mary]\nupstream = \"http://127.0.0.1:1/fhir\"\nfhir_version = \"R4\"\ndefault_policy = \"opt-out\"\n",
            )
            .unwrap();
            NetworkIndex::new(
                test_store.store.clone(),
                ConsortiumKey::new(&[7; 32]).unwrap(),
                &config,
            )
        })
    }

    fn decide_for(consents: &[Consent], practitioner: &str) -> Decision {
        let caller = Caller::new().with_reference(&format!("Practitioner/{practitioner}"));
        let request = AccessRequest::new(&caller, Interaction::Read, Some("Observation"), now());
        decide(consents, &request, SitePolicy::OptIn)
    }

    /// A network consent is in force for every site patient linked to its network patient,
    /// beside the site patient's own; its revocation drops the linked patients' cached entries.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_network_consent_is_decided_with_each_linked_site_patients_own() {
        const NID: &str = "urn:oid:2.16.840.1.113883.4.1";
        for t in testing::all() {
            let mut text = String::from("database_url = \"/tmp/x.db\"\n");
            for site in ["st-mary", "north-general"] {
                text += &format!(
                    "[sites.{site}]\nupstream = \"http://127.0.0.1:1/fhir\"\nfhir_version = \"R4\"\ndefault_policy = \"opt-in\"\n\
                     patient_identifier_systems = [\"{NID}\"]\n\
                     network_identifier_systems = [\"{NID}\"]\n"
                );
            }
            let config = crate::config::Config::from_toml(&text).unwrap();
            let index = NetworkIndex::new(
                t.store.clone(),
                ConsortiumKey::new(&[5; 32]).unwrap(),
                &config,
            );
            let n = index
                .learn("st-mary", "p1", [(NID, "42")], 1)
                .unwrap()
                .network_id
                .unwrap();
            index
                .learn("north-general", "x7", [(NID, "42")], 1)
                .unwrap();
            let service =
                ConsentService::open_embedded(t.store.clone(), &[5; 32], [6; 32]).unwrap();
            // Warm the cache of both site patients before the network consent exists.
            for (site, id) in [("st-mary", "p1"), ("north-general", "x7")] {
                assert!(
                    service
                        .consents_for(site, id, &index)
                        .await
                        .unwrap()
                        .is_empty()
                );
            }
            service
                .put(NETWORK_SITE, consent("cn", &n, "dr-a"), None, &n, None)
                .await
                .unwrap();
            for (site, id) in [("st-mary", "p1"), ("north-general", "x7")] {
                let consents = service.consents_for(site, id, &index).await.unwrap();
                assert_eq!(consents.len(), 1, "{site}");
                assert!(matches!(decide_for(&consents, "dr-a"), Decision::Permit(_)));
            }
            // Not for a patient that is not linked, nor the same local id elsewhere.
            assert!(
                service
                    .consents_for("north-general", "p1", &index)
                    .await
                    .unwrap()
                    .is_empty()
            );
            // Revoked: gone at both sites at once (the cached entries are dropped).
            service
                .revoke("cn", RevocationReason::PatientRequest)
                .await
                .unwrap();
            for (site, id) in [("st-mary", "p1"), ("north-general", "x7")] {
                let consents = service.consents_for(site, id, &index).await.unwrap();
                assert!(consents.is_empty(), "{site}");
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn put_decide_revoke_on_every_backend() {
        for t in testing::all() {
            let service =
                ConsentService::open_embedded(t.store.clone(), &[5; 32], [6; 32]).unwrap();
            assert!(
                service
                    .consents_for("st-mary", "p1", unlinked())
                    .await
                    .unwrap()
                    .is_empty()
            );
            let stored = service
                .put(
                    "st-mary",
                    consent("c1", "p1", "dr-a"),
                    Some(FhirVersion::R4),
                    "p1",
                    None,
                )
                .await
                .unwrap();
            assert_eq!((stored.version, stored.replayed), (1, false));

            let consents = service
                .consents_for("st-mary", "p1", unlinked())
                .await
                .unwrap();
            assert_eq!(consents.len(), 1);
            assert!(matches!(decide_for(&consents, "dr-a"), Decision::Permit(_)));
            assert!(matches!(decide_for(&consents, "dr-b"), Decision::Deny(_)));
            // Another site's patient with the same local id is someone else.
            assert!(
                service
                    .consents_for("north-general", "p1", unlinked())
                    .await
                    .unwrap()
                    .is_empty()
            );

            // The same document again changes nothing.
            let again = service
                .put(
                    "st-mary",
                    consent("c1", "p1", "dr-a"),
                    Some(FhirVersion::R4),
                    "p1",
                    None,
                )
                .await
                .unwrap();
            assert!(again.replayed);

            // Revocation takes effect before revoke returns: the cached permit is gone.
            service
                .revoke("c1", RevocationReason::PatientRequest)
                .await
                .unwrap();
            let after = service
                .consents_for("st-mary", "p1", unlinked())
                .await
                .unwrap();
            assert!(after.is_empty());
            assert!(matches!(decide_for(&after, "dr-a"), Decision::Deny(_)));

            let history = service.history("c1").await.unwrap();
            assert_eq!(history.len(), 2);
            assert!(
                history[0].1.is_some(),
                "the document of each version is kept"
            );
            assert!(matches!(
                service.history("nope").await,
                Err(ConsentServiceError::NotFound)
            ));
        }
    }

    /// ADV: the search by actor lists the site's consents naming the actor, of every patient
    /// and status, and never another site's consent (same local patient id) nor one whose
    /// document names a patient the ledger's record is not about.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn consents_are_listed_by_actor_within_the_site() {
        let t = testing::sqlite();
        let service = ConsentService::open_embedded(t.store.clone(), &[5; 32], [6; 32]).unwrap();
        for (site, id, patient, practitioner, stored_for) in [
            ("st-mary", "c1", "p1", "dr-alice", "p1"),
            ("st-mary", "c2", "p2", "dr-alice", "p2"),
            ("st-mary", "c3", "p1", "dr-bob", "p1"),
            // Another site's patient with the same local id is someone else.
            ("north-general", "c4", "p1", "dr-alice", "p1"),
            // A document naming p9 stored as p4's: the ledger says p4, the document p9.
            ("st-mary", "c5", "p9", "dr-alice", "p4"),
        ] {
            service
                .put(
                    site,
                    consent(id, patient, practitioner),
                    Some(FhirVersion::R4),
                    stored_for,
                    None,
                )
                .await
                .unwrap();
        }
        service
            .revoke("c2", RevocationReason::PatientRequest)
            .await
            .unwrap();
        let listed = |site: &'static str, actor: &'static str| {
            let service = &service;
            async move {
                let mut out: Vec<(String, String, u64, String)> = service
                    .list_by_actor(site, actor)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|c| {
                        (
                            c.document["id"].as_str().unwrap().to_owned(),
                            c.patient_id,
                            c.record.version,
                            format!("{:?}", c.record.status),
                        )
                    })
                    .collect();
                out.sort();
                out
            }
        };
        assert_eq!(
            listed("st-mary", "Practitioner/dr-alice").await,
            vec![
                ("c1".into(), "p1".into(), 1, "Active".into()),
                ("c2".into(), "p2".into(), 2, "Revoked".into()),
            ]
        );
        assert_eq!(
            listed("north-general", "Practitioner/dr-alice").await,
            vec![("c4".into(), "p1".into(), 1, "Active".into())]
        );
        assert_eq!(
            listed("st-mary", "Practitioner/dr-bob").await,
            vec![("c3".into(), "p1".into(), 1, "Active".into())]
        );
        for nobody in [
            "Practitioner/dr-carol",
            "Practitioner/dr-alice/x",
            "dr-alice",
            "",
        ] {
            assert!(listed("st-mary", nobody).await.is_empty(), "{nobody:?}");
        }
    }

    #[test]
    fn a_documents_patient_id_is_read_as_the_consent_model_reads_it() {
        let with = |reference: &str| {
            let mut document = consent("c1", "p1", "dr-a");
            document["patient"]["reference"] = json!(reference);
            document
        };
        for (reference, id) in [
            ("Patient/p1", Some("p1")),
            ("https://gw.example/fhir/st-mary/Patient/p-2", Some("p-2")),
            ("Patient/p1/_history/2", Some("p1")),
            ("Patient/", None),
            ("Practitioner/p1", None),
            ("p1", None),
        ] {
            assert_eq!(
                document_patient_id(&with(reference)).as_deref(),
                id,
                "{reference}"
            );
        }
        assert_eq!(
            document_patient_id(&json!({"patient": {"reference": "Patient/x"}})),
            None
        );
    }

    /// ADV: a document changed in the embedded ledger's store (an attacker with database
    /// access) is never decided on: 503, on SQLite and PostgreSQL, and the failure is counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_document_changed_in_the_store_fails_closed() {
        for t in testing::all() {
            let service =
                ConsentService::open_embedded(t.store.clone(), &[5; 32], [6; 32]).unwrap();
            let document = consent("c9", "p9", "dr-a");
            service
                .put("st-mary", document.clone(), None, "p9", None)
                .await
                .unwrap();
            let consents = service
                .consents_for("st-mary", "p9", unlinked())
                .await
                .unwrap();
            assert!(matches!(decide_for(&consents, "dr-a"), Decision::Permit(_)));
            let hash = assent_consent::document_hash(&document);
            let forged = assent_consent::canonical_json(&document).replace("dr-a", "dr-x");
            crate::services::ledger::tamper_document_for_tests(&t.store, &hash, forged.as_bytes())
                .unwrap();
            // A fresh gateway (nothing cached) and this one once its caches are dropped.
            service.invalidate(&service.patient_key("st-mary", "p9"));
            service.documents.forget_all();
            let counter = service.documents_unverified_counter();
            assert_eq!(counter.get(), 0);
            assert!(matches!(
                service.consents_for("st-mary", "p9", unlinked()).await,
                Err(ConsentServiceError::Unavailable(_))
            ));
            assert_eq!(counter.get(), 1, "the failed verification is counted");
            assert!(matches!(
                service.list("st-mary", "p9").await,
                Err(ConsentServiceError::Unavailable(_))
            ));
            let history = service.history("c9").await.unwrap();
            assert!(history[0].1.is_none(), "a forged document is never shown");
        }
    }

    /// Two gateways on one ledger, each with a database of its own (two consortium members'
    /// shape): what one stores, the other decides on without ever having stored the
    /// document, fetching it once through the ledger and then from its cache.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_gateway_decides_on_documents_it_never_stored() {
        let ledger = Arc::new(
            EmbeddedLedger::open(
                Arc::new(assent_ledger::InMemoryBlockStore::new()),
                SigningKey::from_bytes(&[8; 32]),
                Arc::new(SystemClock),
                EmbeddedOptions::default(),
            )
            .await
            .unwrap(),
        );
        let counting = Wrapped::new(ledger.clone(), None);
        let (a_store, b_store) = (testing::sqlite(), testing::sqlite());
        let a = service_over(&a_store, ledger.clone(), "a");
        let b = service_over(&b_store, counting.clone(), "b");
        a.put("st-mary", consent("c1", "p1", "dr-a"), None, "p1", None)
            .await
            .unwrap();
        assert_eq!(b.documents.cached_len(), 0);
        let consents = b.consents_for("st-mary", "p1", unlinked()).await.unwrap();
        assert!(matches!(decide_for(&consents, "dr-a"), Decision::Permit(_)));
        assert!(matches!(decide_for(&consents, "dr-b"), Decision::Deny(_)));
        assert_eq!(counting.documents.load(Ordering::SeqCst), 1);
        // Another load (the decision cache dropped): the document comes from the cache.
        b.invalidate_all();
        b.consents_for("st-mary", "p1", unlinked()).await.unwrap();
        assert_eq!(
            counting.documents.load(Ordering::SeqCst),
            1,
            "cached by hash"
        );
        // Neither gateway's database holds the document: it is the ledger's.
        for store in [&a_store.store, &b_store.store] {
            use diesel::prelude::*;
            let mut conn = store.connection().unwrap();
            let n: i64 = crate::store::consent_documents::table
                .count()
                .get_result(&mut *conn)
                .unwrap();
            assert_eq!(n, 0);
        }
        // Revoked at B, denied at A.
        b.revoke("c1", RevocationReason::PatientRequest)
            .await
            .unwrap();
        a.invalidate_all();
        let after = a.consents_for("st-mary", "p1", unlinked()).await.unwrap();
        assert!(matches!(decide_for(&after, "dr-a"), Decision::Deny(_)));
    }

    /// ADV: a backend that hands back other bytes than the record's hash covers (a faulty or
    /// hostile peer), or none at all, is never decided on; nothing wrong is cached.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn documents_that_do_not_match_the_ledger_fail_closed_whatever_the_backend() {
        let inner = Arc::new(
            EmbeddedLedger::open(
                Arc::new(assent_ledger::InMemoryBlockStore::new()),
                SigningKey::from_bytes(&[8; 32]),
                Arc::new(SystemClock),
                EmbeddedOptions::default(),
            )
            .await
            .unwrap(),
        );
        let document = consent("c1", "p1", "dr-a");
        let forged = consent("c1", "p1", "dr-x");
        let canonical = |v: &Value| assent_consent::canonical_json(v).into_bytes();
        let cases: Vec<(&str, Option<Vec<u8>>)> = vec![
            ("another document", Some(canonical(&forged))),
            ("the document with a space", {
                let mut b = canonical(&document);
                b.push(b' ');
                Some(b)
            }),
            (
                "the document pretty-printed",
                Some(serde_json::to_vec_pretty(&document).unwrap()),
            ),
            ("nothing", None),
            ("empty bytes", Some(Vec::new())),
        ];
        let writer_store = testing::sqlite();
        let writer = service_over(&writer_store, inner.clone(), "w");
        writer
            .put("st-mary", document.clone(), None, "p1", None)
            .await
            .unwrap();
        for (name, answer) in cases {
            let counted = usize::from(answer.is_some());
            let lying = Wrapped::new(inner.clone(), Some(answer));
            let t = testing::sqlite();
            let service = service_over(&t, lying.clone(), name);
            let counter = service.documents_unverified_counter();
            match service.consents_for("st-mary", "p1", unlinked()).await {
                Err(ConsentServiceError::Unavailable(_)) => {}
                other => panic!("{name}: must fail closed, got {other:?}"),
            }
            assert_eq!(service.documents.cached_len(), 0, "{name}: nothing cached");
            assert_eq!(
                counter.get() as usize,
                counted,
                "{name}: a mismatch is counted"
            );
            // The honest answer afterwards is decided on.
            let consents = service
                .consents_for("st-mary", "p1", unlinked())
                .await
                .unwrap();
            assert!(
                matches!(decide_for(&consents, "dr-a"), Decision::Permit(_)),
                "{name}"
            );
        }
    }

    #[test]
    fn another_members_consent_is_its_own_refusal() {
        let e = ConsentServiceError::from(LedgerError::Rejected {
            rejection: Rejection::OtherMember,
        });
        assert!(matches!(e, ConsentServiceError::OtherMember));
        let e = ConsentServiceError::from(LedgerError::Rejected {
            rejection: Rejection::NotFound,
        });
        assert!(matches!(e, ConsentServiceError::NotFound));
        let e = ConsentServiceError::from(LedgerError::Rejected {
            rejection: Rejection::Revoked,
        });
        assert!(matches!(e, ConsentServiceError::Rejected(_)));
    }

    fn service_over(
        t: &testing::TestStore,
        ledger: Arc<dyn Ledger>,
        name: &str,
    ) -> Arc<ConsentService> {
        let runtime = std::thread::spawn(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap()
        })
        .join()
        .unwrap();
        ConsentService::start(
            t.store.clone(),
            ConsortiumKey::new(&[5; 32]).unwrap(),
            ledger,
            runtime,
            None,
            format!("ledger_events_checkpoint:test:{name}"),
        )
    }

    /// Forwards every call to `inner`, counts the documents fetched, and answers the next
    /// fetch with `answer` (bytes, or `None` for no document) when one is set.
    struct Wrapped {
        inner: Arc<EmbeddedLedger>,
        documents: AtomicU64,
        answer: Mutex<Option<Option<Vec<u8>>>>,
    }

    impl Wrapped {
        fn new(inner: Arc<EmbeddedLedger>, answer: Option<Option<Vec<u8>>>) -> Arc<Wrapped> {
            Arc::new(Wrapped {
                inner,
                documents: AtomicU64::new(0),
                answer: Mutex::new(answer),
            })
        }
    }

    #[async_trait::async_trait]
    impl Ledger for Wrapped {
        async fn submit(&self, call: TxCall) -> Result<TxReceipt, LedgerError> {
            self.inner.submit(call).await
        }
        async fn active_consents(
            &self,
            patient_key: &str,
            now: Timestamp,
        ) -> Result<Vec<ConsentRecord>, LedgerError> {
            self.inner.active_consents(patient_key, now).await
        }
        async fn patient_consents(&self, key: &str) -> Result<Vec<ConsentRecord>, LedgerError> {
            self.inner.patient_consents(key).await
        }
        async fn grantee_consents(&self, key: &str) -> Result<Vec<ConsentRecord>, LedgerError> {
            self.inner.grantee_consents(key).await
        }
        async fn consent(&self, key: &str) -> Result<Option<ConsentRecord>, LedgerError> {
            self.inner.consent(key).await
        }
        async fn consent_history(&self, key: &str) -> Result<Vec<ConsentVersion>, LedgerError> {
            self.inner.consent_history(key).await
        }
        async fn anchor(&self, key: &str, id: u64) -> Result<Option<AnchorRecord>, LedgerError> {
            self.inner.anchor(key, id).await
        }
        async fn head(&self) -> Result<Option<Checkpoint>, LedgerError> {
            self.inner.head().await
        }
        async fn subscribe(&self, after: Option<Checkpoint>) -> Result<EventStream, LedgerError> {
            self.inner.subscribe(after).await
        }
        async fn put_document(&self, hash: &str, document: &[u8]) -> Result<(), LedgerError> {
            self.inner.put_document(hash, document).await
        }
        async fn document(&self, hash: &str) -> Result<Option<Vec<u8>>, LedgerError> {
            self.documents.fetch_add(1, Ordering::SeqCst);
            let answer = self.answer.lock().unwrap().take();
            match answer {
                Some(answer) => Ok(answer),
                None => self.inner.document(hash).await,
            }
        }
    }

    /// A ledger whose event stream the test breaks and keeps down at will; counts the
    /// reads a decision makes on a cache miss.
    struct Flaky {
        inner: Arc<EmbeddedLedger>,
        down: AtomicBool,
        current: Mutex<Option<tokio::sync::mpsc::Sender<Result<LedgerEvent, LedgerError>>>>,
        reads: AtomicU64,
    }

    impl Flaky {
        fn break_stream(&self) {
            self.down.store(true, Ordering::SeqCst);
            if let Some(sender) = self.current.lock().unwrap().take() {
                let _ = sender.try_send(Err(LedgerError::Unavailable {
                    reason: "TEST: stream broken".into(),
                }));
            }
        }

        fn reads(&self) -> u64 {
            self.reads.load(Ordering::SeqCst)
        }
    }

    #[async_trait::async_trait]
    impl Ledger for Flaky {
        async fn submit(&self, call: TxCall) -> Result<TxReceipt, LedgerError> {
            self.inner.submit(call).await
        }
        async fn active_consents(
            &self,
            patient_key: &str,
            now: Timestamp,
        ) -> Result<Vec<ConsentRecord>, LedgerError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.inner.active_consents(patient_key, now).await
        }
        async fn patient_consents(&self, key: &str) -> Result<Vec<ConsentRecord>, LedgerError> {
            self.inner.patient_consents(key).await
        }
        async fn grantee_consents(&self, key: &str) -> Result<Vec<ConsentRecord>, LedgerError> {
            self.inner.grantee_consents(key).await
        }
        async fn consent(&self, key: &str) -> Result<Option<ConsentRecord>, LedgerError> {
            self.inner.consent(key).await
        }
        async fn consent_history(&self, key: &str) -> Result<Vec<ConsentVersion>, LedgerError> {
            self.inner.consent_history(key).await
        }
        async fn anchor(&self, key: &str, id: u64) -> Result<Option<AnchorRecord>, LedgerError> {
            self.inner.anchor(key, id).await
        }
        async fn head(&self) -> Result<Option<Checkpoint>, LedgerError> {
            self.inner.head().await
        }
        async fn put_document(&self, hash: &str, document: &[u8]) -> Result<(), LedgerError> {
            self.inner.put_document(hash, document).await
        }
        async fn document(&self, hash: &str) -> Result<Option<Vec<u8>>, LedgerError> {
            self.inner.document(hash).await
        }
        async fn subscribe(&self, after: Option<Checkpoint>) -> Result<EventStream, LedgerError> {
            if self.down.load(Ordering::SeqCst) {
                return Err(LedgerError::Unavailable {
                    reason: "TEST: events down".into(),
                });
            }
            let mut events = self.inner.subscribe(after).await?;
            let (sender, receiver) = tokio::sync::mpsc::channel(64);
            *self.current.lock().unwrap() = Some(sender.clone());
            tokio::spawn(async move {
                while let Some(item) = events.next().await {
                    if sender.send(item).await.is_err() {
                        break;
                    }
                }
            });
            Ok(tokio_stream_of(receiver))
        }
    }

    fn tokio_stream_of(
        mut receiver: tokio::sync::mpsc::Receiver<Result<LedgerEvent, LedgerError>>,
    ) -> EventStream {
        futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx)).boxed()
    }

    async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
        for _ in 0..1000 {
            if condition() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never happened: {what}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cache_is_bypassed_while_the_event_stream_is_down_and_resumes_after_the_checkpoint()
    {
        let t = testing::sqlite();
        let inner = Arc::new(
            EmbeddedLedger::open(
                Arc::new(assent_ledger::InMemoryBlockStore::new()),
                SigningKey::from_bytes(&[8; 32]),
                Arc::new(SystemClock),
                EmbeddedOptions::default(),
            )
            .await
            .unwrap(),
        );
        let flaky = Arc::new(Flaky {
            inner: inner.clone(),
            down: AtomicBool::new(false),
            current: Mutex::new(None),
            reads: AtomicU64::new(0),
        });
        let runtime = std::thread::spawn(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap()
        })
        .join()
        .unwrap();
        let setting = "ledger_events_checkpoint:test";
        let service = ConsentService::start(
            t.store.clone(),
            ConsortiumKey::new(&[5; 32]).unwrap(),
            flaky.clone(),
            runtime,
            None,
            setting.to_owned(),
        );
        eventually("events live", || service.events_live()).await;
        let put = service
            .put("st-mary", consent("c1", "p1", "dr-a"), None, "p1", None)
            .await
            .unwrap();
        assert_eq!(put.version, 1);
        eventually("the put's event handled", || {
            service.events_checkpoint().map(|c| c.block_number) == Some(put.block_number)
        })
        .await;
        // Kept in the store just after it is handled (the save follows the event).
        eventually("the checkpoint kept", || {
            t.store
                .setting(setting)
                .unwrap()
                .and_then(|text| serde_json::from_str::<Checkpoint>(&text).ok())
                .map(|c| c.block_number)
                == Some(put.block_number)
        })
        .await;

        // Live: the first decision reads the ledger, the next ones the cache.
        assert_eq!(
            service
                .consents_for("st-mary", "p1", unlinked())
                .await
                .unwrap()
                .len(),
            1
        );
        let reads = flaky.reads();
        for _ in 0..3 {
            assert_eq!(
                service
                    .consents_for("st-mary", "p1", unlinked())
                    .await
                    .unwrap()
                    .len(),
                1
            );
        }
        assert_eq!(flaky.reads(), reads, "served from the cache");

        // Down: every decision reads the ledger.
        flaky.break_stream();
        eventually("events down", || !service.events_live()).await;
        let reads = flaky.reads();
        for _ in 0..3 {
            assert_eq!(
                service
                    .consents_for("st-mary", "p1", unlinked())
                    .await
                    .unwrap()
                    .len(),
                1
            );
        }
        assert_eq!(flaky.reads(), reads + 3, "the cache is bypassed");
        // A revocation this replica is not told of (another replica's) holds at once.
        let revoked = inner
            .revoke(&service.key.consent("c1"), RevocationReason::PatientRequest)
            .await
            .unwrap();
        let after = service
            .consents_for("st-mary", "p1", unlinked())
            .await
            .unwrap();
        assert!(after.is_empty(), "no stale permit while events are down");
        assert!(matches!(decide_for(&after, "dr-a"), Decision::Deny(_)));

        // Resumed after the last event handled: the missed revocation's event arrives.
        flaky.down.store(false, Ordering::SeqCst);
        let missed = revoked.event.expect("the revocation's event").checkpoint;
        eventually("resumed with the missed event", || {
            service.events_live() && service.events_checkpoint() == Some(missed)
        })
        .await;
        assert!(
            service
                .consents_for("st-mary", "p1", unlinked())
                .await
                .unwrap()
                .is_empty()
        );
        let reads = flaky.reads();
        assert!(
            service
                .consents_for("st-mary", "p1", unlinked())
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(flaky.reads(), reads, "the cache is in use again");
        eventually("the missed event's checkpoint kept", || {
            t.store.setting(setting).unwrap().as_deref()
                == Some(serde_json::to_string(&missed).unwrap().as_str())
        })
        .await;
    }
}
