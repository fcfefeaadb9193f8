//! The clear consent documents, kept in the gateway's store by content hash beside the hashes
//! the ledger holds.
//!
//! Owns writing and reading them off the async workers. Leaves out checking a document against
//! its ledger record (the facade, `consent.rs`) and the SQL (`store`).

use serde_json::Value;

use super::ConsentServiceError;
use crate::store::Store;

/// The store of consent documents.
pub(super) struct Documents {
    store: Store,
}

impl Documents {
    pub(super) fn new(store: Store) -> Documents {
        Documents { store }
    }

    /// Keeps `document` (hashing to `hash`) of consent `consent_key` at `site`.
    pub(super) async fn put(
        &self,
        hash: &str,
        consent_key: &str,
        site: &str,
        document: &Value,
        now_ms: i64,
    ) -> Result<(), ConsentServiceError> {
        let store = self.store.clone();
        let (hash, consent_key, site) = (hash.to_owned(), consent_key.to_owned(), site.to_owned());
        let text = document.to_string();
        tokio::task::spawn_blocking(move || {
            store.put_consent_document(&hash, &consent_key, &site, &text, now_ms)
        })
        .await
        .map_err(|e| ConsentServiceError::Unavailable(e.to_string()))?
        .map_err(|e| ConsentServiceError::Unavailable(e.to_string()))
    }

    /// The document hashing to `hash`; a missing one fails closed.
    pub(super) async fn load(&self, hash: &str) -> Result<Value, ConsentServiceError> {
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
}
