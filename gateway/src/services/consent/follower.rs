//! The ledger's event follower: each consent event drops its patient's cache entry and moves
//! the checkpoint (kept in the store, so that a restart resumes after the last event
//! handled); a broken stream takes the cache out of use and is resumed with a doubling wait.
//!
//! Owns the subscription, its resume point and the checkpoint. Leaves out the cache itself
//! (`cache.rs`) and the ledger's runtime (`runtime.rs`).

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use assent_ledger::{Checkpoint, EventStream, Ledger, LedgerError, LedgerEvent};
use futures_util::StreamExt;

use super::cache::DecisionCache;
use crate::store::Store;

/// The first wait before subscribing again after the event stream broke; doubled up to
/// [`RESUBSCRIBE_MAX`].
const RESUBSCRIBE_FIRST: Duration = Duration::from_millis(50);
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(5);

/// What the follower keeps: the cache it invalidates and the last event handled.
pub(super) struct EventFollower {
    cache: Arc<DecisionCache>,
    store: Store,
    /// The last event handled.
    checkpoint: Mutex<Option<Checkpoint>>,
    /// The `node_settings` entry that keeps the checkpoint across restarts.
    checkpoint_setting: String,
}

impl EventFollower {
    pub(super) fn new(
        cache: Arc<DecisionCache>,
        store: Store,
        checkpoint_setting: String,
    ) -> EventFollower {
        EventFollower {
            cache,
            store,
            checkpoint: Mutex::new(None),
            checkpoint_setting,
        }
    }

    /// Follows `ledger`'s events on `handle` for as long as `this` lives.
    pub(super) fn spawn(
        this: &Arc<EventFollower>,
        ledger: Arc<dyn Ledger>,
        handle: &tokio::runtime::Handle,
    ) {
        handle.spawn(follow(Arc::downgrade(this), ledger));
    }

    /// The checkpoint of the last ledger event handled.
    pub(super) fn checkpoint(&self) -> Option<Checkpoint> {
        self.checkpoint.lock().ok().and_then(|c| *c)
    }

    /// The `node_settings` entry the checkpoint is kept in.
    pub(super) fn checkpoint_setting(&self) -> &str {
        &self.checkpoint_setting
    }

    /// Where to subscribe from: after the last event handled by this process, else after the
    /// checkpoint kept in the store, else from the ledger's head (the cache starts empty, so
    /// nothing before it matters).
    async fn resume_point(
        &self,
        ledger: &Arc<dyn Ledger>,
        start: &mut Option<Option<Checkpoint>>,
    ) -> Result<Option<Checkpoint>, LedgerError> {
        if let Some(after) = *start {
            return Ok(after);
        }
        let store = self.store.clone();
        let name = self.checkpoint_setting.clone();
        let stored = tokio::task::spawn_blocking(move || store.setting(&name))
            .await
            .map_err(|e| LedgerError::Unavailable {
                reason: e.to_string(),
            })?
            .map_err(|e| LedgerError::Unavailable {
                reason: format!("the stored events checkpoint: {e}"),
            })?
            .and_then(|text| serde_json::from_str::<Checkpoint>(&text).ok());
        let after = match stored {
            Some(c) => Some(c),
            None => ledger.head().await?,
        };
        if let Ok(mut last) = self.checkpoint.lock() {
            *last = after;
        }
        *start = Some(after);
        Ok(after)
    }

    fn handle_event(&self, event: &LedgerEvent) {
        match event.consent_change() {
            Some(change) => self.cache.invalidate(&change.patient_key),
            None if event.name.starts_with("consent.") => {
                // A consent event that cannot be read: drop everything rather than guess.
                tracing::warn!(name = %event.name, "unreadable consent event; cache cleared");
                self.cache.invalidate_all();
            }
            None => {}
        }
        if let Ok(mut last) = self.checkpoint.lock() {
            *last = Some(event.checkpoint);
        }
    }

    /// Keeps `checkpoint` in the store (a failure only costs a longer replay after a restart).
    async fn save_checkpoint(&self, checkpoint: Checkpoint) {
        let store = self.store.clone();
        let name = self.checkpoint_setting.clone();
        let Ok(value) = serde_json::to_string(&checkpoint) else {
            return;
        };
        let saved = tokio::task::spawn_blocking(move || store.put_setting(&name, &value)).await;
        if !matches!(saved, Ok(Ok(()))) {
            tracing::warn!("cannot keep the ledger events checkpoint in the store");
        }
    }
}

/// Follows the ledger's events for as long as the follower lives: each consent event drops
/// its patient's cache entry and moves the checkpoint (kept in the store); a broken stream
/// takes the cache out of use and is resumed after the last event handled, with a doubling
/// wait.
async fn follow(follower: Weak<EventFollower>, ledger: Arc<dyn Ledger>) {
    let mut wait = RESUBSCRIBE_FIRST;
    let mut start: Option<Option<Checkpoint>> = None;
    loop {
        let Some(this) = follower.upgrade() else {
            return;
        };
        let stream = match this.resume_point(&ledger, &mut start).await {
            Ok(after) => ledger.subscribe(after).await,
            Err(e) => Err(e),
        };
        drop(this);
        match stream {
            Ok(events) => {
                let error = follow_stream(&follower, events, &mut start, &mut wait).await;
                let Some(this) = follower.upgrade() else {
                    return;
                };
                // Unknown what changed meanwhile: no cached decision until resumed.
                this.cache.events_down();
                match error {
                    Some(e) => {
                        tracing::warn!(error = %e, "ledger event stream broken; decision cache bypassed until resumed")
                    }
                    None => tracing::warn!(
                        "ledger event stream ended; decision cache bypassed until resumed"
                    ),
                }
            }
            Err(e) => {
                if let Some(this) = follower.upgrade() {
                    this.cache.events_down();
                }
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "cannot subscribe to the ledger's events; decision cache bypassed");
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RESUBSCRIBE_MAX);
    }
}

/// Handles `events` until the stream breaks (`Some`) or ends (`None`).
async fn follow_stream(
    follower: &Weak<EventFollower>,
    mut events: EventStream,
    start: &mut Option<Option<Checkpoint>>,
    wait: &mut Duration,
) -> Option<LedgerError> {
    {
        let this = follower.upgrade()?;
        // Live from here: a load that began before is not cached (the generation moves).
        if !this.cache.events_up() {
            tracing::info!(after = ?this.checkpoint(), "following the ledger's events; decision cache in use");
        }
    }
    while let Some(item) = events.next().await {
        let this = follower.upgrade()?;
        match item {
            Ok(event) => {
                this.handle_event(&event);
                *start = Some(Some(event.checkpoint));
                *wait = RESUBSCRIBE_FIRST;
                this.save_checkpoint(event.checkpoint).await;
            }
            Err(e) => return Some(e),
        }
    }
    None
}
