//! The consent service's ledger and the runtime it runs on: the embedded ledger over the
//! gateway's store (blocks signed with the node's Ed25519 seed) or a Hyperledger Fabric channel,
//! opened on a Tokio runtime of the service's own, whatever runtime the caller is on.
//!
//! Owns opening the ledger, the runtime's life (shut down with the service) and running every
//! Fabric call on that runtime. Leaves out what is read and written (the facade, `consent.rs`),
//! the event follower (`follower.rs`) and the ledgers themselves (`assent-ledger`,
//! `assent-fabric`).

use std::sync::Arc;

use assent_consent::{AnchorRecord, ConsentRecord, ConsentVersion, Timestamp};
use assent_fabric::{FabricConnection, FabricLedger};
use assent_ledger::{
    Checkpoint, EmbeddedLedger, EmbeddedOptions, EventStream, Ledger, LedgerError, SigningKey,
    SystemClock, TxCall, TxReceipt, VerifyingKey,
};

use super::ConsentServiceError;
use crate::services::ledger::SqlBlockStore;
use crate::store::Store;

/// Which ledger the consent service runs on.
pub enum Backend {
    /// The embedded ledger over the gateway's store, its blocks signed with this Ed25519 seed.
    Embedded { node_seed: [u8; 32] },
    /// A Fabric channel (files loaded, key checked).
    Fabric(Box<FabricConnection>),
}

/// The ledger and the runtime that runs it (the embedded writer, or Fabric's gRPC channel)
/// and the event follower; the runtime is shut down when this is dropped.
pub(super) struct LedgerRuntime {
    ledger: Arc<dyn Ledger>,
    runtime: Option<tokio::runtime::Runtime>,
    public_key: Option<VerifyingKey>,
}

/// A ledger opened: its runtime, and the `node_settings` entry that keeps its events
/// checkpoint.
pub(super) struct Opened {
    pub runtime: LedgerRuntime,
    pub checkpoint_setting: String,
}

impl LedgerRuntime {
    /// Opens `backend` on a runtime of its own. Fabric connects lazily: an unreachable peer
    /// shows as 503s and a follower that keeps trying, not as a failed start.
    pub(super) fn open(store: Store, backend: Backend) -> Result<Opened, ConsentServiceError> {
        // Opened on a thread of its own: the caller may be inside another async runtime,
        // where blocking on this one is not allowed.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("assent-ledger")
                .enable_all()
                .build()
                .map_err(|e| ConsentServiceError::Unavailable(e.to_string()))?;
            let (ledger, public_key, setting): (Arc<dyn Ledger>, _, _) = match backend {
                Backend::Embedded { node_seed } => {
                    let blocks = Arc::new(SqlBlockStore::new(store));
                    let ledger = runtime.block_on(EmbeddedLedger::open(
                        blocks,
                        SigningKey::from_bytes(&node_seed),
                        Arc::new(SystemClock),
                        EmbeddedOptions::default(),
                    ))?;
                    let public_key = ledger.public_key();
                    (
                        Arc::new(ledger),
                        Some(public_key),
                        "ledger_events_checkpoint:embedded".to_owned(),
                    )
                }
                Backend::Fabric(connection) => {
                    let mut connection = *connection;
                    // A broken stream is reported at once: the follower resumes it itself
                    // and keeps the cache out of use meanwhile.
                    connection.options.event_reconnect_attempts = 0;
                    let setting = format!(
                        "ledger_events_checkpoint:fabric:{}:{}",
                        connection.channel, connection.chaincode
                    );
                    let _entered = runtime.enter();
                    let ledger = FabricLedger::new(connection)
                        .map_err(|e| ConsentServiceError::Unavailable(e.to_string()))?;
                    let ledger = OnRuntime {
                        inner: Arc::new(ledger),
                        handle: runtime.handle().clone(),
                    };
                    (Arc::new(ledger), None, setting)
                }
            };
            Ok::<_, ConsentServiceError>(Opened {
                runtime: LedgerRuntime::new(ledger, runtime, public_key),
                checkpoint_setting: setting,
            })
        })
        .join()
        .map_err(|_| ConsentServiceError::Unavailable("the ledger failed to open".into()))?
    }

    /// `ledger` run on `runtime`.
    pub(super) fn new(
        ledger: Arc<dyn Ledger>,
        runtime: tokio::runtime::Runtime,
        public_key: Option<VerifyingKey>,
    ) -> LedgerRuntime {
        LedgerRuntime {
            ledger,
            runtime: Some(runtime),
            public_key,
        }
    }

    pub(super) fn ledger(&self) -> &Arc<dyn Ledger> {
        &self.ledger
    }

    pub(super) fn public_key(&self) -> Option<VerifyingKey> {
        self.public_key
    }

    pub(super) fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.runtime.as_ref().map(|r| r.handle().clone())
    }
}

impl Drop for LedgerRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A ledger whose every call runs on the consent service's own runtime: the Fabric client's
/// gRPC channel and its tasks live there, whatever runtime the caller is on (an HTTP worker,
/// the receipts writer, a test).
struct OnRuntime<L> {
    inner: Arc<L>,
    handle: tokio::runtime::Handle,
}

impl<L: Ledger + 'static> OnRuntime<L> {
    async fn run<T, F, Fut>(&self, call: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<L>) -> Fut,
        Fut: std::future::Future<Output = Result<T, LedgerError>> + Send + 'static,
    {
        self.handle
            .spawn(call(self.inner.clone()))
            .await
            .map_err(|e| LedgerError::Unavailable {
                reason: format!("the ledger task failed: {e}"),
            })?
    }
}

#[async_trait::async_trait]
impl<L: Ledger + 'static> Ledger for OnRuntime<L> {
    async fn submit(&self, call: TxCall) -> Result<TxReceipt, LedgerError> {
        self.run(|l| async move { l.submit(call).await }).await
    }

    async fn active_consents(
        &self,
        patient_key: &str,
        now: Timestamp,
    ) -> Result<Vec<ConsentRecord>, LedgerError> {
        let key = patient_key.to_owned();
        self.run(|l| async move { l.active_consents(&key, now).await })
            .await
    }

    async fn patient_consents(&self, patient_key: &str) -> Result<Vec<ConsentRecord>, LedgerError> {
        let key = patient_key.to_owned();
        self.run(|l| async move { l.patient_consents(&key).await })
            .await
    }

    async fn grantee_consents(&self, grantee_key: &str) -> Result<Vec<ConsentRecord>, LedgerError> {
        let key = grantee_key.to_owned();
        self.run(|l| async move { l.grantee_consents(&key).await })
            .await
    }

    async fn consent(&self, consent_key: &str) -> Result<Option<ConsentRecord>, LedgerError> {
        let key = consent_key.to_owned();
        self.run(|l| async move { l.consent(&key).await }).await
    }

    async fn consent_history(&self, consent_key: &str) -> Result<Vec<ConsentVersion>, LedgerError> {
        let key = consent_key.to_owned();
        self.run(|l| async move { l.consent_history(&key).await })
            .await
    }

    async fn anchor(
        &self,
        gateway_key: &str,
        batch_id: u64,
    ) -> Result<Option<AnchorRecord>, LedgerError> {
        let key = gateway_key.to_owned();
        self.run(|l| async move { l.anchor(&key, batch_id).await })
            .await
    }

    async fn head(&self) -> Result<Option<Checkpoint>, LedgerError> {
        self.run(|l| async move { l.head().await }).await
    }

    async fn subscribe(&self, after: Option<Checkpoint>) -> Result<EventStream, LedgerError> {
        self.run(|l| async move { l.subscribe(after).await }).await
    }

    async fn refresh(&self) -> Result<(), LedgerError> {
        self.run(|l| async move { l.refresh().await }).await
    }

    // Forwarded explicitly: the trait's fail-closed defaults would otherwise answer for the
    // backend.
    async fn put_document(&self, hash: &str, document: &[u8]) -> Result<(), LedgerError> {
        let (hash, document) = (hash.to_owned(), document.to_vec());
        self.run(|l| async move { l.put_document(&hash, &document).await })
            .await
    }

    async fn document(&self, hash: &str) -> Result<Option<Vec<u8>>, LedgerError> {
        let hash = hash.to_owned();
        self.run(|l| async move { l.document(&hash).await }).await
    }
}
