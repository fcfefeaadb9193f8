//! Consent as the gateway uses it: the ledger (embedded, over the gateway's store), the clear
//! consent documents (in the store, content-addressed), and the decision cache in front of
//! them, invalidated by the ledger's change events.
//!
//! Owns: patient identities and their keyed hashes, storing and revoking consents, loading a
//! patient's consents in force, and the cache. Leaves out: the decision itself (the consent
//! crate), HTTP (the consent routes and the pipeline).
//!
//! **Invariant:** no permit rests on stale state on this replica. A revocation or a new
//! version invalidates the patient's cache entry before the call that made it returns, and
//! again when its ledger event arrives; a load that raced with an invalidation is not cached.
//! Other replicas learn of it through the cache fan-out (`cache_fanout.rs`, Redis): the
//! change is [announced](ConsentService::announce_to), and on their side the ledger is
//! refreshed from the shared store before the patient's entry is dropped. While a replica's
//! fan-out is down it [bypasses the cache](ConsentService::set_cache_bypass) and refreshes
//! its ledger before every load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use assent_consent::{
    Consent, ConsentError, ConsentSubmission, ConsortiumKey, RevocationReason, Timestamp,
    document_hash, parse_consent,
};
use assent_fhir::FhirVersion;
use assent_ledger::{
    EmbeddedLedger, EmbeddedOptions, Ledger, LedgerError, SigningKey, SystemClock, TxReceipt,
};
use futures_util::StreamExt;
use serde_json::Value;

use crate::ledger_store::SqlBlockStore;
use crate::store::Store;

/// Most patients whose consents are cached; beyond it the cache starts afresh.
pub const CACHE_CAPACITY: usize = 100_000;

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
            LedgerError::Rejected { rejection } => {
                let text = rejection.to_string();
                if text.contains("not found") {
                    ConsentServiceError::NotFound
                } else {
                    ConsentServiceError::Rejected(text)
                }
            }
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
}

/// The consent service of one gateway.
pub struct ConsentService {
    ledger: Arc<dyn Ledger>,
    key: ConsortiumKey,
    store: Store,
    cache: Mutex<ConsentCache>,
    /// Bumped on every invalidation; a load caches its result only if this did not move.
    generation: AtomicU64,
    /// Set while news of other replicas' changes may be missed (the fan-out is down): no
    /// cache, and the ledger is refreshed from the shared store before every load.
    bypass_cache: AtomicBool,
    /// Where this replica's consent changes are announced to the others (patient keys).
    announcer: OnceLock<tokio::sync::mpsc::UnboundedSender<String>>,
    /// The runtime that runs the embedded ledger's writer and the event subscriber.
    runtime: Option<tokio::runtime::Runtime>,
    public_key: assent_ledger::VerifyingKey,
}

impl ConsentService {
    /// Opens the embedded ledger over `store`, signing blocks with `node_seed`, and starts
    /// following its events.
    pub fn open_embedded(
        store: Store,
        consortium_key: &[u8],
        node_seed: [u8; 32],
    ) -> Result<Arc<ConsentService>, ConsentServiceError> {
        let key = ConsortiumKey::new(consortium_key).ok_or_else(|| {
            ConsentServiceError::Unavailable("the consortium key is too short".into())
        })?;
        // Opened on a thread of its own: the caller may be inside another async runtime,
        // where blocking on this one is not allowed.
        let opened = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("assent-ledger")
                .enable_all()
                .build()
                .map_err(|e| ConsentServiceError::Unavailable(e.to_string()))?;
            let blocks = Arc::new(SqlBlockStore::new(store.clone()));
            let ledger = runtime.block_on(EmbeddedLedger::open(
                blocks,
                SigningKey::from_bytes(&node_seed),
                Arc::new(SystemClock),
                EmbeddedOptions::default(),
            ))?;
            // Follow the ledger from its head: what came before is read on demand.
            let head = runtime.block_on(ledger.head())?;
            let events = runtime.block_on(ledger.subscribe(head))?;
            Ok::<_, ConsentServiceError>((runtime, ledger, events, store))
        })
        .join()
        .map_err(|_| ConsentServiceError::Unavailable("the ledger failed to open".into()))?;
        let (runtime, ledger, mut events, store) = opened?;
        let public_key = ledger.public_key();
        let ledger: Arc<dyn Ledger> = Arc::new(ledger);
        let handle = runtime.handle().clone();
        let service = Arc::new(ConsentService {
            ledger,
            key,
            store,
            cache: Mutex::new(ConsentCache::default()),
            generation: AtomicU64::new(0),
            bypass_cache: AtomicBool::new(false),
            announcer: OnceLock::new(),
            runtime: Some(runtime),
            public_key,
        });
        let follower = Arc::downgrade(&service);
        handle.spawn(async move {
            while let Some(event) = events.next().await {
                let Some(service) = follower.upgrade() else {
                    break;
                };
                match event {
                    Ok(event) => {
                        if let Some(change) = event.consent_change() {
                            service.invalidate(&change.patient_key);
                        }
                    }
                    Err(e) => {
                        // Unknown what changed: drop everything rather than serve stale state.
                        tracing::warn!(error = %e, "ledger event stream error; cache cleared");
                        service.invalidate_all();
                    }
                }
            }
        });
        Ok(service)
    }

    /// The ledger's verifying key (for `assent ledger verify`).
    pub fn public_key(&self) -> assent_ledger::VerifyingKey {
        self.public_key
    }

    /// The cross-site identity of a site-local patient.
    pub fn patient_identity(site: &str, patient_id: &str) -> String {
        format!("{site}/Patient/{patient_id}")
    }

    /// The keyed hash the ledger knows a patient by.
    pub fn patient_key(&self, site: &str, patient_id: &str) -> String {
        self.key.patient(&Self::patient_identity(site, patient_id))
    }

    /// The patient's consents in force now, from the cache or the ledger and the store.
    pub async fn consents_for(
        &self,
        site: &str,
        patient_id: &str,
    ) -> Result<Arc<[Consent]>, ConsentServiceError> {
        // The cache is keyed by the clear identity, so that a hit costs no keyed hash.
        let identity = Self::patient_identity(site, patient_id);
        let bypass = self.bypass_cache.load(Ordering::Acquire);
        if bypass {
            // Another replica's change may not have been heard of: read the shared store.
            self.ledger.refresh().await?;
        } else if let Some(hit) = self.cache_get(&identity) {
            return Ok(hit);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let patient_key = self.key.patient(&identity);
        let records = self.ledger.active_consents(&patient_key, now()).await?;
        let mut consents = Vec::with_capacity(records.len());
        for record in records {
            let document = self.load_document(&record.document_hash).await?;
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
        let consents: Arc<[Consent]> = consents.into();
        if !bypass && self.generation.load(Ordering::Acquire) == generation {
            self.cache_put(identity, patient_key, consents.clone());
        }
        Ok(consents)
    }

    /// Stores a consent for a patient of `site`: the document in the store, its hashes on
    /// the ledger.
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
        let hash = document_hash(&document);
        {
            let store = self.store.clone();
            let consent_key = submission.consent_key.clone();
            let site = site.to_owned();
            let text = document.to_string();
            let hash = hash.clone();
            tokio::task::spawn_blocking(move || {
                store.put_consent_document(&hash, &consent_key, &site, &text, now_ms())
            })
            .await
            .map_err(|e| ConsentServiceError::Unavailable(e.to_string()))?
            .map_err(|e| ConsentServiceError::Unavailable(e.to_string()))?;
        }
        let patient_key = submission.patient_key.clone();
        let receipt = self.ledger.put_consent(submission).await?;
        self.invalidate(&patient_key);
        self.announce(&patient_key);
        Ok(stored(consent.id.to_string(), &receipt))
    }

    /// Revokes a consent; effective on this replica before this returns.
    pub async fn revoke(
        &self,
        consent_id: &str,
        reason: RevocationReason,
    ) -> Result<Stored, ConsentServiceError> {
        let consent_key = self.key.consent(consent_id);
        let receipt = self.ledger.revoke(&consent_key, reason).await?;
        if let Some(record) = receipt.outcome.consent() {
            self.invalidate(&record.patient_key);
            self.announce(&record.patient_key);
        } else {
            self.invalidate_all();
            self.announce(ANY_PATIENT);
        }
        Ok(stored(consent_id.to_owned(), &receipt))
    }

    /// Every version of a consent, oldest first, with its document when stored.
    pub async fn history(
        &self,
        consent_id: &str,
    ) -> Result<Vec<(assent_consent::ConsentVersion, Option<Value>)>, ConsentServiceError> {
        let versions = self
            .ledger
            .consent_history(&self.key.consent(consent_id))
            .await?;
        if versions.is_empty() {
            return Err(ConsentServiceError::NotFound);
        }
        let mut out = Vec::with_capacity(versions.len());
        for v in versions {
            let document = self.load_document(&v.record.document_hash).await.ok();
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
            .ledger
            .patient_consents(&self.patient_key(site, patient_id))
            .await?;
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            let document = self.load_document(&record.document_hash).await?;
            out.push((record, document));
        }
        Ok(out)
    }

    async fn load_document(&self, hash: &str) -> Result<Value, ConsentServiceError> {
        let store = self.store.clone();
        let hash = hash.to_owned();
        let found = tokio::task::spawn_blocking(move || store.consent_document(&hash))
            .await
            .map_err(|e| ConsentServiceError::Unavailable(e.to_string()))?
            .map_err(|e| ConsentServiceError::Unavailable(e.to_string()))?;
        let (_site, text) = found.ok_or_else(|| {
            ConsentServiceError::Unavailable("a consent document is missing from the store".into())
        })?;
        serde_json::from_str(&text).map_err(|e| ConsentServiceError::Unavailable(e.to_string()))
    }

    fn cache_get(&self, identity: &str) -> Option<Arc<[Consent]>> {
        self.cache.lock().ok()?.by_identity.get(identity).cloned()
    }

    fn cache_put(&self, identity: String, patient_key: String, consents: Arc<[Consent]>) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.by_identity.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.identity_of.insert(patient_key, identity.clone());
            cache.by_identity.insert(identity, consents);
        }
    }

    /// Drops a patient's cached consents (the ledger names patients by keyed hash).
    pub fn invalidate(&self, patient_key: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut cache) = self.cache.lock()
            && let Some(identity) = cache.identity_of.remove(patient_key)
        {
            cache.by_identity.remove(&identity);
        }
    }

    /// Drops every cached patient.
    pub fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }

    /// Sends this replica's consent changes (patient keys, or [`ANY_PATIENT`]) to `sender`
    /// from now on. Set once, by the fan-out.
    pub fn announce_to(&self, sender: tokio::sync::mpsc::UnboundedSender<String>) {
        let _ = self.announcer.set(sender);
    }

    fn announce(&self, patient_key: &str) {
        if let Some(sender) = self.announcer.get() {
            let _ = sender.send(patient_key.to_owned());
        }
    }

    /// While `bypass` holds, nothing is served from or put in the cache, and every load
    /// refreshes the ledger from the shared store first. Turning it on clears the cache.
    pub fn set_cache_bypass(&self, bypass: bool) {
        self.bypass_cache.store(bypass, Ordering::Release);
        if bypass {
            self.invalidate_all();
        }
    }

    /// Whether the cache is bypassed (see [`set_cache_bypass`](Self::set_cache_bypass)).
    pub fn cache_bypassed(&self) -> bool {
        self.bypass_cache.load(Ordering::Acquire)
    }

    /// Applies what other replicas committed to the shared store (the ledger's events then
    /// drop the patients they touched from the cache).
    pub async fn refresh_ledger(&self) -> Result<(), ConsentServiceError> {
        Ok(self.ledger.refresh().await?)
    }

    /// The runtime the ledger and the fan-out tasks run on.
    pub fn runtime_handle(&self) -> Option<tokio::runtime::Handle> {
        self.runtime.as_ref().map(|r| r.handle().clone())
    }
}

/// Announced instead of a patient key when a change's patient is not known: every replica
/// drops its whole cache.
pub const ANY_PATIENT: &str = "*";

/// The patients' consents in force by clear identity, and which identity each keyed hash
/// (as ledger events name patients) stands for.
#[derive(Default)]
struct ConsentCache {
    by_identity: HashMap<String, Arc<[Consent]>>,
    identity_of: HashMap<String, String>,
}

impl ConsentCache {
    fn clear(&mut self) {
        self.by_identity.clear();
        self.identity_of.clear();
    }
}

impl Drop for ConsentService {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn stored(consent_id: String, receipt: &TxReceipt) -> Stored {
    Stored {
        consent_id,
        version: receipt.outcome.consent().map(|r| r.version).unwrap_or(0),
        tx_id: receipt.tx_id.clone(),
        block_number: receipt.block_number,
        replayed: receipt.replayed,
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The current time for consent periods.
pub fn now() -> Timestamp {
    Timestamp::from_unix_seconds(now_ms() / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing;
    use assent_consent::{AccessRequest, Caller, Decision, SitePolicy, decide};
    use assent_fhir::Interaction;
    use serde_json::json;

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

    fn decide_for(consents: &[Consent], practitioner: &str) -> Decision {
        let caller = Caller::new().with_reference(&format!("Practitioner/{practitioner}"));
        let request = AccessRequest::new(&caller, Interaction::Read, Some("Observation"), now());
        decide(consents, &request, SitePolicy::OptIn)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn put_decide_revoke_on_every_backend() {
        for t in testing::all() {
            let service =
                ConsentService::open_embedded(t.store.clone(), &[5; 32], [6; 32]).unwrap();
            assert!(
                service
                    .consents_for("st-mary", "p1")
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

            let consents = service.consents_for("st-mary", "p1").await.unwrap();
            assert_eq!(consents.len(), 1);
            assert!(matches!(decide_for(&consents, "dr-a"), Decision::Permit(_)));
            assert!(matches!(decide_for(&consents, "dr-b"), Decision::Deny(_)));
            // Another site's patient with the same local id is someone else.
            assert!(
                service
                    .consents_for("north-general", "p1")
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
            let after = service.consents_for("st-mary", "p1").await.unwrap();
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_document_changed_in_the_store_fails_closed() {
        let t = testing::sqlite();
        let service = ConsentService::open_embedded(t.store.clone(), &[5; 32], [6; 32]).unwrap();
        let document = consent("c9", "p9", "dr-a");
        service
            .put("st-mary", document.clone(), None, "p9", None)
            .await
            .unwrap();
        let hash = document_hash(&document);
        let mut conn = t.store.connection().unwrap();
        use diesel::prelude::*;
        diesel::update(crate::store::consent_documents::table)
            .filter(crate::store::consent_documents::document_hash.eq(&hash))
            .set(
                crate::store::consent_documents::document
                    .eq(document.to_string().replace("dr-a", "dr-x")),
            )
            .execute(&mut *conn)
            .unwrap();
        drop(conn);
        service.invalidate(&service.patient_key("st-mary", "p9"));
        assert!(matches!(
            service.consents_for("st-mary", "p9").await,
            Err(ConsentServiceError::Unavailable(_))
        ));
    }
}
