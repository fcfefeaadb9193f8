//! The clear consent documents: kept off the channel ledger by hash through the ledger itself
//! (`Ledger::put_document`: the embedded ledger's store, or Fabric's private data collection,
//! which every member reads), fetched from it on a miss, checked against the hash the
//! ledger's record holds, and cached by hash.
//!
//! Owns storing, fetching, verifying and caching documents, and reporting one that fails
//! verification (a log line and a counter, naming only the document's hash). Leaves out
//! which hash a decision needs (the facade, `consent.rs`) and where the bytes live (the
//! ledger backends).
//!
//! **Invariant:** a document is used only if its bytes are the ones the ledger's hash covers
//! (the lowercase hex SHA-256 of the canonical JSON, `assent_consent::document_hash`), checked
//! here whatever the backend checked; otherwise the caller fails closed.
//!
//! Documents are immutable by hash, so the cache never goes stale: it only forgets the oldest
//! entries beyond [`DOCUMENT_CACHE_CAPACITY`].

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use assent_ledger::{Ledger, LedgerError, document_matches};
use serde_json::Value;

use super::ConsentServiceError;

/// Most documents kept in memory.
pub const DOCUMENT_CACHE_CAPACITY: usize = 4096;

/// The name of the counter of documents that failed verification.
pub const DOCUMENTS_UNVERIFIED: &str = "assent_consent_documents_unverified_total";

/// The consent documents of one consent service.
pub(super) struct Documents {
    cache: Mutex<Cache>,
    capacity: usize,
    unverified: prometheus::IntCounter,
}

/// Documents by hash, and the order they came in (the oldest is forgotten first).
#[derive(Default)]
struct Cache {
    by_hash: HashMap<String, Arc<Value>>,
    order: VecDeque<String>,
}

impl Documents {
    pub(super) fn new() -> Documents {
        Documents::with_capacity(DOCUMENT_CACHE_CAPACITY)
    }

    pub(super) fn with_capacity(capacity: usize) -> Documents {
        Documents {
            cache: Mutex::default(),
            capacity: capacity.max(1),
            unverified: prometheus::IntCounter::new(
                DOCUMENTS_UNVERIFIED,
                "Consent documents fetched from the ledger that did not match the ledger's hash \
                 (the decision failed closed)",
            )
            .unwrap_or_else(|e| unreachable!("static metric definition: {e}")),
        }
    }

    /// The counter of documents that failed verification, for the gateway's metrics.
    pub(super) fn unverified_counter(&self) -> prometheus::IntCounter {
        self.unverified.clone()
    }

    /// Stores `document` through the ledger under its hash, which is returned: the bytes are
    /// its canonical JSON, whose SHA-256 is `assent_consent::document_hash(document)`.
    pub(super) async fn put(
        &self,
        ledger: &dyn Ledger,
        document: &Value,
    ) -> Result<String, ConsentServiceError> {
        let bytes = assent_consent::canonical_json(document).into_bytes();
        // The SHA-256 of the canonical bytes is `assent_consent::document_hash(document)`.
        let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        ledger.put_document(&hash, &bytes).await?;
        self.remember(&hash, Arc::new(document.clone()));
        Ok(hash)
    }

    /// The document hashing to `hash`: from the cache, or fetched through the ledger and
    /// checked. Missing, unreadable or not matching `hash`: fails closed.
    pub(super) async fn load(
        &self,
        ledger: &dyn Ledger,
        hash: &str,
    ) -> Result<Arc<Value>, ConsentServiceError> {
        if let Some(hit) = self.cached(hash) {
            return Ok(hit);
        }
        let bytes = match ledger.document(hash).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                return Err(ConsentServiceError::Unavailable(
                    "a consent document is missing from the ledger's document store".into(),
                ));
            }
            Err(LedgerError::Corrupt { .. }) => return Err(self.failed_verification(hash)),
            Err(e) => return Err(e.into()),
        };
        if !document_matches(hash, &bytes) {
            return Err(self.failed_verification(hash));
        }
        let document: Value = serde_json::from_slice(&bytes).map_err(|_| {
            tracing::error!(
                document_hash = hash,
                "a consent document matches the ledger's hash but is not JSON; failing closed"
            );
            ConsentServiceError::Unavailable("a consent document cannot be read".into())
        })?;
        let document = Arc::new(document);
        self.remember(hash, document.clone());
        Ok(document)
    }

    fn failed_verification(&self, hash: &str) -> ConsentServiceError {
        self.unverified.inc();
        // The hash is what the ledger holds; nothing of the document is logged.
        tracing::error!(
            document_hash = hash,
            "a consent document failed verification against the ledger's hash; failing closed"
        );
        ConsentServiceError::Unavailable(
            "a consent document does not match the ledger's hash".into(),
        )
    }

    fn cached(&self, hash: &str) -> Option<Arc<Value>> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.by_hash.get(hash).cloned()
    }

    fn remember(&self, hash: &str, document: Arc<Value>) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.by_hash.insert(hash.to_owned(), document).is_none() {
            cache.order.push_back(hash.to_owned());
        }
        while cache.order.len() > self.capacity {
            if let Some(oldest) = cache.order.pop_front() {
                cache.by_hash.remove(&oldest);
            }
        }
    }

    /// How many documents are cached (tests).
    #[cfg(test)]
    pub(super) fn cached_len(&self) -> usize {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_hash
            .len()
    }

    /// Forgets every cached document (tests: the next load fetches through the ledger).
    #[cfg(test)]
    pub(super) fn forget_all(&self) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.by_hash.clear();
        cache.order.clear();
    }
}
