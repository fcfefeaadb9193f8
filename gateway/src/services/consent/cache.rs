//! The decision cache: the patients' consents in force by clear identity, in front of the
//! ledger and the stored documents, and the announcement of this replica's changes to the
//! others (the cache fan-out, `cache_fanout.rs`).
//!
//! Owns when the cache may answer (only while the ledger's event stream is live and the
//! fan-out is up), what may be put in it (a load that raced with an invalidation is not
//! cached: a generation counter) and invalidation. Leaves out loading (the facade,
//! `consent.rs`) and following the events that invalidate (`follower.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use assent_consent::Consent;

/// Most patients whose consents are cached; beyond it the cache starts afresh.
pub const CACHE_CAPACITY: usize = 100_000;

/// Announced instead of a patient key when a change's patient is not known: every replica
/// drops its whole cache.
pub const ANY_PATIENT: &str = "*";

/// The cache of one consent service.
#[derive(Default)]
pub(super) struct DecisionCache {
    entries: Mutex<Entries>,
    /// Bumped on every invalidation; a load caches its result only if this did not move.
    generation: AtomicU64,
    /// The event stream is live: the cache may answer. Cleared (and the cache emptied) when
    /// the stream breaks; set again once it is resumed.
    events_live: AtomicBool,
    /// Set while news of other replicas' changes may be missed (the fan-out is down): no
    /// cache, and the ledger is refreshed from the shared store before every load.
    bypass: AtomicBool,
    /// Where this replica's consent changes are announced to the others (patient keys).
    announcer: OnceLock<tokio::sync::mpsc::UnboundedSender<String>>,
}

/// The patients' consents in force by clear identity, and which identities each keyed hash
/// (as ledger events name patients) is part of: a site patient's own key, and the key of the
/// network patient it is linked to (its entry holds that network patient's consents too).
#[derive(Default)]
struct Entries {
    by_identity: HashMap<String, Arc<[Consent]>>,
    identities_of: HashMap<String, Vec<String>>,
}

impl Entries {
    fn clear(&mut self) {
        self.by_identity.clear();
        self.identities_of.clear();
    }
}

impl DecisionCache {
    /// The cached consents of `identity`, while the events are live.
    pub(super) fn get(&self, identity: &str) -> Option<Arc<[Consent]>> {
        if !self.events_live.load(Ordering::Acquire) {
            return None;
        }
        self.entries.lock().ok()?.by_identity.get(identity).cloned()
    }

    /// The generation a load begins at (handed back to [`put`](Self::put)).
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Caches a load that began at `generation`, unless an invalidation came since or the
    /// events are down. Checked under the lock: an invalidation moves the generation before
    /// it takes the lock, so it either stops this put or removes what it put. The entry is
    /// dropped when any of `patient_keys` changes (the patient's own, and its network
    /// patient's when linked).
    pub(super) fn put(
        &self,
        identity: String,
        patient_keys: &[String],
        consents: Arc<[Consent]>,
        generation: u64,
    ) {
        if let Ok(mut cache) = self.entries.lock() {
            if !self.events_live.load(Ordering::Acquire)
                || self.bypass.load(Ordering::Acquire)
                || self.generation.load(Ordering::Acquire) != generation
            {
                return;
            }
            if cache.by_identity.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            for key in patient_keys {
                let identities = cache.identities_of.entry(key.clone()).or_default();
                if !identities.contains(&identity) {
                    identities.push(identity.clone());
                }
            }
            cache.by_identity.insert(identity, consents);
        }
    }

    /// Drops a patient's cached consents (the ledger names patients by keyed hash): a site
    /// patient's entry, or, for a network patient, the entry of every site patient linked to
    /// it that was cached with its consents.
    pub(super) fn invalidate(&self, patient_key: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut cache) = self.entries.lock()
            && let Some(identities) = cache.identities_of.remove(patient_key)
        {
            for identity in identities {
                cache.by_identity.remove(&identity);
            }
        }
    }

    /// Drops every cached patient.
    pub(super) fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut cache) = self.entries.lock() {
            cache.clear();
        }
    }

    /// Whether the ledger's event stream is live (the cache may answer).
    pub(super) fn events_live(&self) -> bool {
        self.events_live.load(Ordering::Acquire)
    }

    /// The event stream is live from here: a load that began before is not cached (the
    /// generation moves). Returns whether it was live already.
    pub(super) fn events_up(&self) -> bool {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.events_live.swap(true, Ordering::AcqRel)
    }

    /// The event stream is down: the cache is emptied and bypassed until it is resumed.
    pub(super) fn events_down(&self) {
        self.events_live.store(false, Ordering::Release);
        self.invalidate_all();
    }

    /// While `bypass` holds, nothing is served from or put in the cache. Turning it on
    /// clears the cache.
    pub(super) fn set_bypass(&self, bypass: bool) {
        self.bypass.store(bypass, Ordering::Release);
        if bypass {
            self.invalidate_all();
        }
    }

    pub(super) fn bypassed(&self) -> bool {
        self.bypass.load(Ordering::Acquire)
    }

    /// Sends this replica's changes to `sender` from now on (set once).
    pub(super) fn announce_to(&self, sender: tokio::sync::mpsc::UnboundedSender<String>) {
        let _ = self.announcer.set(sender);
    }

    /// Tells the other replicas that `patient_key` (or [`ANY_PATIENT`]) changed.
    pub(super) fn announce(&self, patient_key: &str) {
        if let Some(sender) = self.announcer.get() {
            let _ = sender.send(patient_key.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A site patient's entry holds its network patient's consents too: a change of either
    /// patient's consents drops it, and the other site patients linked to the same network
    /// patient with it.
    #[test]
    fn a_network_patients_change_drops_every_linked_site_patients_entry() {
        let cache = DecisionCache::default();
        cache.events_up();
        let none: Arc<[Consent]> = Arc::from(Vec::new());
        let put = |identity: &str, keys: &[&str]| {
            let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
            cache.put(identity.to_owned(), &keys, none.clone(), cache.generation());
        };
        put("a/Patient/p1", &["ka", "kn"]);
        put("b/Patient/x7", &["kb", "kn"]);
        put("c/Patient/q", &["kc"]);
        assert!(cache.get("a/Patient/p1").is_some());
        cache.invalidate("kn");
        assert!(cache.get("a/Patient/p1").is_none());
        assert!(cache.get("b/Patient/x7").is_none());
        assert!(
            cache.get("c/Patient/q").is_some(),
            "an unlinked patient stays"
        );
        // A site patient's own change drops its entry alone.
        put("a/Patient/p1", &["ka", "kn"]);
        put("b/Patient/x7", &["kb", "kn"]);
        cache.invalidate("ka");
        assert!(cache.get("a/Patient/p1").is_none());
        assert!(cache.get("b/Patient/x7").is_some());
    }
}
