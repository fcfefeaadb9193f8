//! [`FabricLedger`]: the ledger interface over the Fabric Gateway service. Writes are
//! Endorse → Submit → CommitStatus (a transaction invalidated by an MVCC or phantom read
//! conflict is proposed afresh, a bounded number of times); queries are Evaluate; events
//! come from ChaincodeEvents, resumed after the last one delivered when the stream breaks.
//!
//! Owns the configuration ([`FabricConfig`], files on disk; [`FabricConnection`], loaded),
//! the mapping of gateway errors to [`LedgerError`], and event positions: a [`Checkpoint`]
//! is the block number and the index of the event among this chaincode's events in that
//! block (the ChaincodeEvents service does not say a transaction's index in its block). A
//! receipt of a replay (no event) carries `tx_index = u32::MAX`, "after the block".
//! Documents go to the private data collection `assentConsentDocuments` through the
//! chaincode: the bytes in the proposal's transient map (Endorse, Submit, CommitStatus; not
//! submitted when the collection holds the document already), read back with Evaluate and
//! checked against their hash on this side too.
//! Leaves out message layout (`proposal`) and transport (`client`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use assent_consent::{AnchorRecord, ConsentRecord, ConsentVersion, Timestamp};
use assent_ledger::{
    Checkpoint, EventStream, Ledger, LedgerError, LedgerEvent, TxCall, TxReceipt, parse_refusal,
};
use futures_util::StreamExt;
use prost::Message;
use tokio::sync::mpsc;

use crate::client::{CallOptions, ConnectError, GatewayClient, GatewayError, TlsMaterial};
use crate::identity::{IdentityError, SigningIdentity};
use crate::proposal::{
    block_events, sign_envelope, signed_commit_status_request, signed_events_request,
    signed_proposal, transaction_result,
};
use crate::protos::common::{Block, BlockchainInfo};
use crate::protos::gateway::{EndorseRequest, EvaluateRequest, SubmitRequest};
use crate::protos::peer::{ChaincodeEvent, tx_validation_code};
use crate::wire::{self, Query, VersionWire, WriteResult};

/// The gateway's Fabric settings as they appear in its configuration file (section
/// `[ledger.fabric]`, see `docs/fabric.md`): the gateway reads that table into this struct.
/// Absent optional values take [`FabricOptions::default`]'s.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FabricConfig {
    /// `https://peer0.org1.example.com:7051` (`http://` only for tests).
    pub peer_endpoint: String,
    /// The CA certificate of the peer's TLS certificate (PEM).
    pub tls_ca_file: Option<PathBuf>,
    /// Overrides the name checked against the peer's TLS certificate.
    pub tls_server_name: Option<String>,
    /// Client certificate and key for mutual TLS (PEM).
    pub tls_client_cert_file: Option<PathBuf>,
    pub tls_client_key_file: Option<PathBuf>,
    /// The organization's MSP id, e.g. `Org1MSP`.
    pub msp_id: String,
    /// The gateway's enrollment certificate and private key (PEM, ECDSA P-256).
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub channel: String,
    pub chaincode: String,
    /// Fresh proposals after an MVCC read conflict (default 10).
    #[serde(default)]
    pub mvcc_retries: Option<u32>,
    /// Deadline of connecting to the peer, in milliseconds (default 5,000).
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    /// Deadline of one Evaluate (a query), in milliseconds (default 5,000).
    #[serde(default)]
    pub evaluate_timeout_ms: Option<u64>,
    /// Deadline of one Endorse (collecting the endorsing peers' signatures), in milliseconds
    /// (default 15,000).
    #[serde(default)]
    pub endorse_timeout_ms: Option<u64>,
    /// Deadline of one Submit (handing the transaction to the orderers), in milliseconds
    /// (default 5,000).
    #[serde(default)]
    pub submit_timeout_ms: Option<u64>,
    /// How long to wait for a submitted transaction's commit, in milliseconds (default 60,000).
    #[serde(default)]
    pub commit_timeout_ms: Option<u64>,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("identity: {0}")]
    Identity(#[from] IdentityError),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Connect(#[from] ConnectError),
}

impl FabricConfig {
    /// Reads every file, checks the key against the certificate and the TLS settings: what
    /// `assent check-config` runs.
    pub fn load(&self) -> Result<FabricConnection, ConfigError> {
        let identity = SigningIdentity::from_files(&self.msp_id, &self.cert_file, &self.key_file)?;
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        let tls = match &self.tls_ca_file {
            Some(ca) => Some(TlsMaterial {
                ca_pem: read(ca)?,
                client_identity: match (&self.tls_client_cert_file, &self.tls_client_key_file) {
                    (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
                    (None, None) => None,
                    _ => {
                        return Err(ConfigError::Invalid(
                            "tls_client_cert_file and tls_client_key_file go together".into(),
                        ));
                    }
                },
                server_name: self.tls_server_name.clone(),
            }),
            None => None,
        };
        if self.channel.is_empty() || self.chaincode.is_empty() {
            return Err(ConfigError::Invalid(
                "channel and chaincode must be set".into(),
            ));
        }
        let mut options = FabricOptions::default();
        if let Some(n) = self.mvcc_retries {
            options.mvcc_retries = n;
        }
        let calls = &mut options.calls;
        for (ms, deadline) in [
            (self.connect_timeout_ms, &mut calls.connect_timeout),
            (self.evaluate_timeout_ms, &mut calls.evaluate_timeout),
            (self.endorse_timeout_ms, &mut calls.endorse_timeout),
            (self.submit_timeout_ms, &mut calls.submit_timeout),
            (self.commit_timeout_ms, &mut calls.commit_status_timeout),
        ] {
            if let Some(ms) = ms {
                *deadline = Duration::from_millis(ms);
            }
        }
        Ok(FabricConnection {
            peer_endpoint: self.peer_endpoint.clone(),
            tls,
            identity,
            channel: self.channel.clone(),
            chaincode: self.chaincode.clone(),
            options,
        })
    }
}

/// Tuning of the Fabric backend.
#[derive(Debug, Clone)]
pub struct FabricOptions {
    pub calls: CallOptions,
    /// Fresh proposals after a transaction was invalidated by an MVCC or phantom read
    /// conflict.
    pub mvcc_retries: u32,
    /// Attempts to reopen a broken event stream before the subscription reports an error.
    pub event_reconnect_attempts: u32,
}

impl Default for FabricOptions {
    fn default() -> FabricOptions {
        FabricOptions {
            calls: CallOptions::default(),
            mvcc_retries: 10,
            event_reconnect_attempts: 8,
        }
    }
}

/// Everything needed to talk to Fabric, loaded.
#[derive(Debug, Clone)]
pub struct FabricConnection {
    pub peer_endpoint: String,
    pub tls: Option<TlsMaterial>,
    pub identity: SigningIdentity,
    pub channel: String,
    pub chaincode: String,
    pub options: FabricOptions,
}

/// The Fabric ledger backend.
#[derive(Debug, Clone)]
pub struct FabricLedger {
    client: GatewayClient,
    identity: SigningIdentity,
    channel: String,
    chaincode: String,
    options: FabricOptions,
}

impl FabricLedger {
    /// A ledger over the gateway peer of `connection`. Connects lazily; call it inside a
    /// Tokio runtime (the channel's connection task is spawned on it).
    pub fn new(connection: FabricConnection) -> Result<FabricLedger, ConnectError> {
        let client = GatewayClient::new(
            &connection.peer_endpoint,
            connection.tls.as_ref(),
            connection.options.calls.clone(),
        )?;
        Ok(FabricLedger {
            client,
            identity: connection.identity,
            channel: connection.channel,
            chaincode: connection.chaincode,
            options: connection.options,
        })
    }

    /// Loads `config` and opens the ledger.
    pub fn from_config(config: &FabricConfig) -> Result<FabricLedger, ConfigError> {
        Ok(FabricLedger::new(config.load()?)?)
    }

    /// The low-level client (for tools and tests).
    pub fn client(&self) -> &GatewayClient {
        &self.client
    }

    async fn evaluate_raw(
        &self,
        chaincode: &str,
        args: Vec<Vec<u8>>,
    ) -> Result<Vec<u8>, LedgerError> {
        let proposal = signed_proposal(
            &self.identity,
            &self.channel,
            chaincode,
            args,
            HashMap::new(),
        );
        let response = self
            .client
            .evaluate(EvaluateRequest {
                transaction_id: proposal.transaction_id,
                channel_id: self.channel.clone(),
                proposed_transaction: Some(proposal.proposal),
                target_organizations: Vec::new(),
            })
            .await
            .map_err(gateway_error)?;
        if response.status >= 400 {
            return Err(response_error(response.status, &response.message));
        }
        Ok(response.payload)
    }

    async fn query<T: serde::de::DeserializeOwned>(&self, query: Query) -> Result<T, LedgerError> {
        let chaincode = self.chaincode.clone();
        let payload = self.evaluate_raw(&chaincode, query.args()).await?;
        serde_json::from_slice(&payload).map_err(|e| LedgerError::Corrupt {
            reason: format!("the chaincode's answer to `{}`: {e}", query.function()),
        })
    }

    /// Endorses a proposal of `args` (with `transient` data): the prepared transaction and
    /// what the chaincode answered, or `None` when the endorsers disagreed (propose afresh).
    async fn endorse(
        &self,
        args: Vec<Vec<u8>>,
        transient: HashMap<String, Vec<u8>>,
    ) -> Result<Option<Endorsed>, LedgerError> {
        let proposal = signed_proposal(
            &self.identity,
            &self.channel,
            &self.chaincode,
            args,
            transient,
        );
        let tx_id = proposal.transaction_id.clone();
        let endorsed = self
            .client
            .endorse(EndorseRequest {
                transaction_id: tx_id.clone(),
                channel_id: self.channel.clone(),
                proposed_transaction: Some(proposal.proposal),
                endorsing_organizations: Vec::new(),
            })
            .await;
        let envelope = match endorsed {
            Ok(envelope) => envelope,
            // Nothing was submitted: a fresh proposal, once the peers have caught up.
            Err(e) if endorsers_disagreed(&e) => return Ok(None),
            Err(e) => return Err(gateway_error(e)),
        };
        let result = transaction_result(&envelope).map_err(|e| LedgerError::Corrupt {
            reason: format!("the prepared transaction: {e}"),
        })?;
        if result.transaction_id != tx_id {
            return Err(LedgerError::Corrupt {
                reason: "the prepared transaction has another transaction id".into(),
            });
        }
        if result.response.status >= 400 {
            return Err(response_error(
                result.response.status,
                &result.response.message,
            ));
        }
        Ok(Some(Endorsed {
            tx_id,
            envelope,
            result,
        }))
    }

    /// Signs and submits an endorsed transaction and waits for its validation code and block.
    async fn commit(
        &self,
        tx_id: &str,
        mut envelope: crate::protos::common::Envelope,
    ) -> Result<(i32, u64), LedgerError> {
        sign_envelope(&self.identity, &mut envelope);
        self.client
            .submit(SubmitRequest {
                transaction_id: tx_id.to_owned(),
                channel_id: self.channel.clone(),
                prepared_transaction: Some(envelope),
            })
            .await
            .map_err(gateway_error)?;
        let status = self
            .client
            .commit_status(signed_commit_status_request(
                &self.identity,
                &self.channel,
                tx_id,
            ))
            .await
            .map_err(gateway_error)?;
        Ok((status.result, status.block_number))
    }

    /// One attempt: endorse, sign, submit, wait for the commit.
    async fn submit_once(&self, call: &TxCall) -> Result<Attempt, LedgerError> {
        let Some(Endorsed {
            tx_id,
            envelope,
            result,
        }) = self.endorse(wire::write_args(call), HashMap::new()).await?
        else {
            return Ok(Attempt::ReadConflict);
        };
        let written: WriteResult =
            serde_json::from_slice(&result.response.payload).map_err(|e| LedgerError::Corrupt {
                reason: format!("the chaincode's answer to `{}`: {e}", call.function()),
            })?;
        let (code, block_number) = self.commit(&tx_id, envelope).await?;
        match code {
            tx_validation_code::VALID => Ok(Attempt::Committed(Box::new(Committed {
                tx_id,
                block_number,
                written,
                event: result.event,
            }))),
            tx_validation_code::MVCC_READ_CONFLICT | tx_validation_code::PHANTOM_READ_CONFLICT => {
                Ok(Attempt::ReadConflict)
            }
            code => Err(LedgerError::Unavailable {
                reason: format!(
                    "transaction {tx_id} was invalidated at commit with validation code {code}"
                ),
            }),
        }
    }

    /// The index of `tx_id`'s event among this chaincode's events of `block_number`.
    async fn event_index(&self, block_number: u64, tx_id: &str) -> Result<u32, LedgerError> {
        let request = signed_events_request(
            &self.identity,
            &self.channel,
            &self.chaincode,
            Some(block_number),
            None,
        );
        let mut stream = self
            .client
            .chaincode_events(request)
            .await
            .map_err(gateway_error)?;
        let wait = self.options.calls.commit_status_timeout;
        let first = tokio::time::timeout(wait, stream.message())
            .await
            .map_err(|_| LedgerError::Unavailable {
                reason: format!("no events of block {block_number} within {wait:?}"),
            })?
            .map_err(|s| gateway_error(GatewayError::from_status("ChaincodeEvents", &s)))?;
        let response = first.ok_or_else(|| LedgerError::Unavailable {
            reason: "the event stream ended".into(),
        })?;
        if response.block_number != block_number {
            return Err(LedgerError::Corrupt {
                reason: format!(
                    "the events of block {block_number} do not hold transaction {tx_id}"
                ),
            });
        }
        response
            .events
            .iter()
            .position(|e| e.tx_id == tx_id)
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| LedgerError::Corrupt {
                reason: format!("block {block_number} holds no event of transaction {tx_id}"),
            })
    }

    async fn qscc(&self, args: Vec<Vec<u8>>) -> Result<Vec<u8>, LedgerError> {
        self.evaluate_raw("qscc", args).await
    }
}

enum Attempt {
    Committed(Box<Committed>),
    ReadConflict,
}

/// An endorsed transaction, not yet submitted.
struct Endorsed {
    tx_id: String,
    envelope: crate::protos::common::Envelope,
    result: crate::proposal::TransactionResult,
}

fn document_rejected(reason: &str) -> LedgerError {
    LedgerError::Rejected {
        rejection: assent_ledger::Rejection::Invalid {
            field: "document".into(),
            reason: reason.into(),
        },
    }
}

struct Committed {
    tx_id: String,
    block_number: u64,
    written: WriteResult,
    event: Option<ChaincodeEvent>,
}

#[async_trait::async_trait]
impl Ledger for FabricLedger {
    async fn submit(&self, call: TxCall) -> Result<TxReceipt, LedgerError> {
        let mut wait = Duration::from_millis(5);
        for _ in 0..=self.options.mvcc_retries {
            match self.submit_once(&call).await? {
                Attempt::ReadConflict => {
                    // Spread the retries of writers that collided.
                    let jitter = Duration::from_millis(u64::from(rand::random::<u8>() % 20));
                    tokio::time::sleep(wait + jitter).await;
                    wait = (wait * 2).min(Duration::from_millis(500));
                }
                Attempt::Committed(committed) => {
                    let Committed {
                        tx_id,
                        block_number,
                        written,
                        event,
                    } = *committed;
                    let (tx_index, event) = match event {
                        Some(e) => {
                            let index = self.event_index(block_number, &tx_id).await?;
                            let checkpoint = Checkpoint {
                                block_number,
                                tx_index: index,
                            };
                            (index, Some(ledger_event(checkpoint, e)))
                        }
                        None => (u32::MAX, None),
                    };
                    return Ok(TxReceipt {
                        tx_id,
                        block_number,
                        tx_index,
                        outcome: written.outcome.into(),
                        replayed: written.replayed,
                        event,
                    });
                }
            }
        }
        Err(LedgerError::Conflict {
            conflict: assent_ledger::Conflict::Writers,
        })
    }

    /// Endorse → Submit → CommitStatus of `put_document` with the bytes in the transient
    /// map; the endorsers are the gateway's choice for a transaction that writes the
    /// collection (its member organizations). Nothing is submitted when the collection holds
    /// the document already.
    async fn put_document(&self, hash: &str, document: &[u8]) -> Result<(), LedgerError> {
        if !wire::is_document_hash(hash) {
            return Err(document_rejected("the hash is not a lowercase hex SHA-256"));
        }
        if !assent_ledger::document_matches(hash, document) {
            return Err(assent_ledger::document_hash_mismatch());
        }
        let mut wait = Duration::from_millis(5);
        for _ in 0..=self.options.mvcc_retries {
            let transient =
                HashMap::from([(wire::TRANSIENT_DOCUMENT.to_owned(), document.to_vec())]);
            let endorsed = self
                .endorse(wire::put_document_args(hash), transient)
                .await?;
            if let Some(Endorsed {
                tx_id,
                envelope,
                result,
            }) = endorsed
            {
                let stored: wire::DocumentStored = serde_json::from_slice(&result.response.payload)
                    .map_err(|e| LedgerError::Corrupt {
                        reason: format!("the chaincode's answer to `put_document`: {e}"),
                    })?;
                if stored.replayed {
                    return Ok(());
                }
                match self.commit(&tx_id, envelope).await?.0 {
                    tx_validation_code::VALID => return Ok(()),
                    tx_validation_code::MVCC_READ_CONFLICT
                    | tx_validation_code::PHANTOM_READ_CONFLICT => {}
                    code => {
                        return Err(LedgerError::Unavailable {
                            reason: format!(
                                "transaction {tx_id} was invalidated at commit with validation \
                                 code {code}"
                            ),
                        });
                    }
                }
            }
            let jitter = Duration::from_millis(u64::from(rand::random::<u8>() % 20));
            tokio::time::sleep(wait + jitter).await;
            wait = (wait * 2).min(Duration::from_millis(500));
        }
        Err(LedgerError::Conflict {
            conflict: assent_ledger::Conflict::Writers,
        })
    }

    /// Evaluate of `document`, the bytes checked against `hash` here as well as in the
    /// chaincode: bytes that do not hash to it are `Corrupt`, never returned.
    async fn document(&self, hash: &str) -> Result<Option<Vec<u8>>, LedgerError> {
        if !wire::is_document_hash(hash) {
            return Err(document_rejected("the hash is not a lowercase hex SHA-256"));
        }
        let chaincode = self.chaincode.clone();
        let bytes = self
            .evaluate_raw(&chaincode, wire::document_args(hash))
            .await
            .map_err(|e| match e {
                // The chaincode found bytes that do not hash to their key.
                LedgerError::Unavailable { reason } if reason.contains(wire::DOCUMENT_CORRUPT) => {
                    LedgerError::Corrupt { reason }
                }
                other => other,
            })?;
        if bytes.is_empty() {
            return Ok(None);
        }
        if !assent_ledger::document_matches(hash, &bytes) {
            return Err(LedgerError::Corrupt {
                reason: format!(
                    "document {hash} failed verification: the peer's bytes hash to another value"
                ),
            });
        }
        Ok(Some(bytes))
    }

    async fn active_consents(
        &self,
        patient_key: &str,
        now: Timestamp,
    ) -> Result<Vec<ConsentRecord>, LedgerError> {
        self.query(Query::ActiveConsents {
            patient_key: patient_key.to_owned(),
            now,
        })
        .await
    }

    async fn patient_consents(&self, patient_key: &str) -> Result<Vec<ConsentRecord>, LedgerError> {
        self.query(Query::PatientConsents {
            patient_key: patient_key.to_owned(),
        })
        .await
    }

    async fn grantee_consents(&self, grantee_key: &str) -> Result<Vec<ConsentRecord>, LedgerError> {
        self.query(Query::GranteeConsents {
            grantee_key: grantee_key.to_owned(),
        })
        .await
    }

    async fn consent(&self, consent_key: &str) -> Result<Option<ConsentRecord>, LedgerError> {
        self.query(Query::Consent {
            consent_key: consent_key.to_owned(),
        })
        .await
    }

    async fn consent_history(&self, consent_key: &str) -> Result<Vec<ConsentVersion>, LedgerError> {
        let versions: Vec<VersionWire> = self
            .query(Query::ConsentHistory {
                consent_key: consent_key.to_owned(),
            })
            .await?;
        Ok(versions.into_iter().map(Into::into).collect())
    }

    async fn anchor(
        &self,
        gateway_key: &str,
        batch_id: u64,
    ) -> Result<Option<AnchorRecord>, LedgerError> {
        self.query(Query::Anchor {
            gateway_key: gateway_key.to_owned(),
            batch_id,
        })
        .await
    }

    /// The last event's position in the newest block (read through `qscc`), or "after the
    /// newest block" when it holds no event of this chaincode.
    async fn head(&self) -> Result<Option<Checkpoint>, LedgerError> {
        let info = self
            .qscc(vec![
                b"GetChainInfo".to_vec(),
                self.channel.as_bytes().to_vec(),
            ])
            .await?;
        let info = BlockchainInfo::decode(info.as_slice()).map_err(|e| LedgerError::Corrupt {
            reason: format!("chain info: {e}"),
        })?;
        let Some(last) = info.height.checked_sub(1) else {
            return Ok(None);
        };
        let block = self
            .qscc(vec![
                b"GetBlockByNumber".to_vec(),
                self.channel.as_bytes().to_vec(),
                last.to_string().into_bytes(),
            ])
            .await?;
        let block = Block::decode(block.as_slice()).map_err(|e| LedgerError::Corrupt {
            reason: format!("block {last}: {e}"),
        })?;
        let n_events = block_events(&block, &self.chaincode).len();
        Ok(Some(match n_events.checked_sub(1) {
            Some(index) => Checkpoint {
                block_number: last,
                tx_index: u32::try_from(index).unwrap_or(u32::MAX - 1),
            },
            None => Checkpoint::end_of_block(last),
        }))
    }

    /// Returns once the peer accepted the subscription or [`SUBSCRIBE_REFUSAL_WINDOW`]
    /// passed without a refusal, so a broken setup (unknown channel, identity refused,
    /// peer down) shows here, and a quiet channel does not hold the caller up.
    async fn subscribe(&self, after: Option<Checkpoint>) -> Result<EventStream, LedgerError> {
        let (sender, receiver) = mpsc::channel(256);
        let subscription = Subscription {
            ledger: self.clone(),
            last: after,
            sender,
        };
        let mut opening = tokio::spawn(open_events(self.clone(), after));
        let first = match tokio::time::timeout(SUBSCRIBE_REFUSAL_WINDOW, &mut opening).await {
            Ok(joined) => Opening::Open(Box::new(joined.map_err(|e| {
                LedgerError::Unavailable {
                    reason: format!("opening the event stream: {e}"),
                }
            })??)),
            Err(_) => Opening::Pending(opening),
        };
        tokio::spawn(subscription.run(first));
        Ok(tokio_stream::wrappers::ReceiverStream::new(receiver).boxed())
    }
}

type EventsStream = tonic::Streaming<crate::protos::gateway::ChaincodeEventsResponse>;

/// How long [`FabricLedger::subscribe`] waits for the peer to refuse a subscription. Fabric's
/// gateway sends ChaincodeEvents' response headers only with the first block of events (or
/// with a refusal), so on a quiet channel the call has no answer until the next event is
/// committed: refusals come at once, and silence means the subscription stands.
pub const SUBSCRIBE_REFUSAL_WINDOW: Duration = Duration::from_secs(1);

/// A stream being opened: answered, or still waiting for the peer's first response.
enum Opening {
    Open(Box<EventsStream>),
    Pending(tokio::task::JoinHandle<Result<EventsStream, LedgerError>>),
}

/// Opens `chaincode`'s events from the block of `last` (or after it, when `last` is past the
/// block's events; from block 0 without one). Returns when the peer answers: with the first
/// block of events, or a refusal.
async fn open_events(
    ledger: FabricLedger,
    last: Option<Checkpoint>,
) -> Result<EventsStream, LedgerError> {
    let start = match last {
        None => 0,
        Some(c) if c.tx_index == u32::MAX => c.block_number + 1,
        Some(c) => c.block_number,
    };
    let request = signed_events_request(
        &ledger.identity,
        &ledger.channel,
        &ledger.chaincode,
        Some(start),
        None,
    );
    ledger
        .client
        .chaincode_events(request)
        .await
        .map_err(gateway_error)
}

/// A running subscription: reads ChaincodeEvents and reopens the stream after the last
/// event delivered whenever it breaks.
struct Subscription {
    ledger: FabricLedger,
    /// The last event delivered (or the subscriber's starting point).
    last: Option<Checkpoint>,
    sender: mpsc::Sender<Result<LedgerEvent, LedgerError>>,
}

impl Subscription {
    async fn run(mut self, first: Opening) {
        let mut failures = 0;
        let mut wait = self.ledger.options.calls.reconnect_backoff;
        let mut opened = match first {
            Opening::Open(stream) => Ok(*stream),
            Opening::Pending(mut opening) => tokio::select! {
                joined = &mut opening => joined.unwrap_or_else(|e| Err(LedgerError::Unavailable {
                    reason: format!("opening the event stream: {e}"),
                })),
                () = self.sender.closed() => {
                    opening.abort();
                    return;
                }
            },
        };
        loop {
            let error = match opened {
                Ok(stream) => self.deliver(stream, &mut failures).await,
                Err(e) => Some(e),
            };
            let Some(error) = error else {
                return; // The subscriber is gone.
            };
            // Reopen after the last event delivered, with a doubling wait.
            let mut last_error = error;
            opened = loop {
                failures += 1;
                if failures > self.ledger.options.event_reconnect_attempts
                    || self.sender.is_closed()
                {
                    let _ = self.sender.send(Err(last_error)).await;
                    return;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
                // On a quiet channel the peer answers only with the next block of events.
                let reopened = tokio::select! {
                    reopened = open_events(self.ledger.clone(), self.last) => reopened,
                    () = self.sender.closed() => return,
                };
                match reopened {
                    Ok(s) => {
                        wait = self.ledger.options.calls.reconnect_backoff;
                        break Ok(s);
                    }
                    Err(e) => last_error = e,
                }
            };
        }
    }

    /// Hands the stream's events on until it breaks (the error) or the subscriber is gone
    /// (`None`).
    async fn deliver(
        &mut self,
        mut stream: EventsStream,
        failures: &mut u32,
    ) -> Option<LedgerError> {
        loop {
            let message = tokio::select! {
                message = stream.message() => message,
                // The subscriber is gone: stop reading (and close the stream) at once.
                () = self.sender.closed() => return None,
            };
            match message {
                Ok(Some(response)) => {
                    *failures = 0;
                    for (index, event) in response.events.into_iter().enumerate() {
                        let checkpoint = Checkpoint {
                            block_number: response.block_number,
                            tx_index: u32::try_from(index).unwrap_or(u32::MAX - 1),
                        };
                        if Some(checkpoint) <= self.last {
                            continue;
                        }
                        if self
                            .sender
                            .send(Ok(ledger_event(checkpoint, event)))
                            .await
                            .is_err()
                        {
                            return None;
                        }
                        self.last = Some(checkpoint);
                    }
                }
                Ok(None) => {
                    return Some(LedgerError::Unavailable {
                        reason: "the event stream ended".into(),
                    });
                }
                Err(status) => {
                    return Some(gateway_error(GatewayError::from_status(
                        "ChaincodeEvents",
                        &status,
                    )));
                }
            }
        }
    }
}

fn ledger_event(checkpoint: Checkpoint, event: ChaincodeEvent) -> LedgerEvent {
    LedgerEvent {
        checkpoint,
        tx_id: event.tx_id,
        name: event.event_name,
        payload: event.payload,
    }
}

/// A chaincode response of error status as a ledger error: the contract's refusal when the
/// message carries one.
fn response_error(status: i32, message: &str) -> LedgerError {
    parse_refusal(message).unwrap_or_else(|| LedgerError::Corrupt {
        reason: format!("the chaincode answered {status}: {message}"),
    })
}

/// What Fabric's gateway says of an endorser whose proposal response differs from the first
/// endorser's (`ErrorDetail` message, with status `Aborted`).
pub const PAYLOADS_DO_NOT_MATCH: &str = "ProposalResponsePayloads do not match";

/// Whether Endorse failed because the endorsing peers simulated the proposal on different
/// states: one organization's peer had committed a block the other's had not yet, so their
/// read sets, writes and events differ. Seen on a real two-organization network under
/// concurrent writes to one key. Like an MVCC conflict at commit, it passes once the peers
/// agree, so the write is proposed afresh rather than reported.
pub fn endorsers_disagreed(error: &GatewayError) -> bool {
    error.code == tonic::Code::Aborted
        && error
            .details
            .iter()
            .any(|d| d.message.contains(PAYLOADS_DO_NOT_MATCH))
}

/// A failed gateway call as a ledger error: the contract's refusal if a peer relayed one,
/// otherwise unavailable, naming the peers and organizations that refused and why.
pub fn gateway_error(error: GatewayError) -> LedgerError {
    if let Some(refusal) = error.messages().find_map(parse_refusal) {
        return refusal;
    }
    LedgerError::Unavailable {
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protos::gateway::ErrorDetail;
    use tonic::Code;

    fn endorse_error(code: Code, messages: &[&str]) -> GatewayError {
        GatewayError {
            method: crate::protos::paths::ENDORSE,
            code,
            message: "failed to collect enough transaction endorsements, see attached details \
                      for more info"
                .into(),
            details: messages
                .iter()
                .map(|m| ErrorDetail {
                    address: "127.0.0.1:19051".into(),
                    msp_id: "Org2MSP".into(),
                    message: (*m).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn endorsers_on_different_states_are_a_retryable_disagreement() {
        // What Fabric 2.5's gateway answered when the two organizations' peers were one block
        // apart.
        assert!(endorsers_disagreed(&endorse_error(
            Code::Aborted,
            &["ProposalResponsePayloads do not match"]
        )));
        // A peer that refused, or another code, is not a disagreement.
        assert!(!endorsers_disagreed(&endorse_error(
            Code::Aborted,
            &["chaincode response 500, assent-refusal {\"code\":\"not-found\"}"]
        )));
        assert!(!endorsers_disagreed(&endorse_error(
            Code::Unavailable,
            &["ProposalResponsePayloads do not match"]
        )));
        assert!(!endorsers_disagreed(&endorse_error(Code::Aborted, &[])));
    }
}
