//! The consent contract as Fabric chaincode-as-a-service: a gRPC server of
//! `protos.Chaincode/Connect` speaking the chaincode shim protocol with the peer that
//! connects to it.
//!
//! On each stream the chaincode sends REGISTER (its package id), expects REGISTERED then
//! READY, and from then on runs every INIT and TRANSACTION it receives on a blocking thread
//! of its own, so several transactions are in flight on one stream; the state requests a
//! transaction sends and the peer's RESPONSE or ERROR replies are routed by channel id and
//! transaction id. A transaction ends with COMPLETED (a `Response` payload, and the contract's
//! event when it set one), or ERROR when its state could not be read. KEEPALIVE is echoed.
//!
//! The contract runs as the consortium member that created the proposal: the MSP id of its
//! creator (SignatureHeader.creator → SerializedIdentity.mspid), which the peer has already
//! checked against the creator's signature. A write without a proposal (so without a known
//! creator) is refused. Documents (`put_document`, `document`; [`crate::wire`]) live in the
//! private data collection [`wire::DOCUMENTS_COLLECTION`]: their bytes come in the
//! proposal's transient map, are checked against the hash they are stored under, and are
//! checked again when read.
//!
//! Owns the shim protocol and dispatch to the contract ([`crate::wire`] says which
//! functions exist). Leaves out the contract's logic (`assent-consent`, unchanged) and how
//! the peer finds the server (the `ccaas` builder's `connection.json`, see docs/fabric.md).

mod state;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use assent_consent::{ConsentContract, ContractError, Timestamp};
use assent_ledger::{contract_error, execute, refusal_message};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use prost::Message;
use tokio::sync::mpsc::{self, UnboundedSender};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response as GrpcResponse, Status, Streaming};

use crate::grpc::{Routes, ServiceName, bidi};
use crate::proposal::MalformedMessage;
use crate::protos::common::{ChannelHeader, Header, SignatureHeader};
use crate::protos::msp::SerializedIdentity;
use crate::protos::paths;
use crate::protos::peer::chaincode_message::Type;
use crate::protos::peer::{
    ChaincodeEvent, ChaincodeId, ChaincodeInput, ChaincodeMessage, ChaincodeProposalPayload,
    Proposal, Response,
};
use crate::wire::{self, Invocation, OutcomeWire, Query, VersionWire, WriteResult};
pub use state::ShimError;

/// How long a transaction waits for the peer's reply to one state request.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// TLS of the chaincode server, as the `ccaas` builder's `connection.json` asks for it.
#[derive(Clone)]
pub struct ChaincodeTls {
    /// The server's certificate and key (PEM).
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// For `client_auth_required`: the CA of the peer's client certificate (PEM).
    pub client_ca_pem: Option<Vec<u8>>,
}

impl ChaincodeTls {
    /// Reads the server's certificate and key, and the client CA when given (PEM files).
    pub fn from_files(
        cert: &std::path::Path,
        key: &std::path::Path,
        client_ca: Option<&std::path::Path>,
    ) -> std::io::Result<ChaincodeTls> {
        Ok(ChaincodeTls {
            cert_pem: std::fs::read(cert)?,
            key_pem: std::fs::read(key)?,
            client_ca_pem: client_ca.map(std::fs::read).transpose()?,
        })
    }
}

impl std::fmt::Debug for ChaincodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChaincodeTls")
            .field("client_auth", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// Why the chaincode server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ChaincodeError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("chaincode server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves the consent chaincode on `listen` until the process ends; the gateway's
/// `assent chaincode --listen ADDR --package-id ID` runs this.
pub async fn serve_chaincode(
    listen: SocketAddr,
    package_id: String,
    tls: Option<ChaincodeTls>,
) -> Result<(), ChaincodeError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ChaincodeError::Listen {
            addr: listen,
            source,
        })?;
    serve_chaincode_on(listener, package_id, tls, std::future::pending()).await
}

/// Serves the consent chaincode on a bound listener until `shutdown` completes.
pub async fn serve_chaincode_on(
    listener: tokio::net::TcpListener,
    package_id: String,
    tls: Option<ChaincodeTls>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ChaincodeError> {
    let mut server = Server::builder();
    if let Some(tls) = tls {
        crate::ensure_crypto_provider();
        let mut config =
            ServerTlsConfig::new().identity(Identity::from_pem(tls.cert_pem, tls.key_pem));
        if let Some(ca) = tls.client_ca_pem {
            config = config.client_ca_root(Certificate::from_pem(ca));
        }
        server = server.tls_config(config)?;
    }
    let package_id = Arc::new(package_id);
    let routes = Routes::<ChaincodeServiceName>::new().route(
        paths::CHAINCODE_CONNECT,
        bidi(move |request: Request<Streaming<ChaincodeMessage>>| {
            let package_id = package_id.clone();
            async move {
                Ok(GrpcResponse::new(connect(
                    request.into_inner(),
                    &package_id,
                )))
            }
        }),
    );
    server
        .add_service(routes)
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await?;
    Ok(())
}

/// The peers' connections, with Nagle's algorithm off. The shim is a conversation of small
/// messages (GET_STATE, its RESPONSE, the next request, COMPLETED), and with Nagle on, a
/// message written while the previous one is unacknowledged waits for the peer's delayed
/// ACK: against a real Fabric 2.5.12 peer a one-read query took 47 ms and chaincode
/// executions 73 ms at the median.
fn incoming(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

struct ChaincodeServiceName;

impl ServiceName for ChaincodeServiceName {
    const NAME: &'static str = paths::CHAINCODE_SERVICE;
}

type Outbound = UnboundedSender<Result<ChaincodeMessage, Status>>;

/// Replies waiting to be handed to a transaction, by (channel id, transaction id).
type Pending = Arc<Mutex<HashMap<(String, String), std::sync::mpsc::Sender<ChaincodeMessage>>>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// REGISTER sent, waiting for REGISTERED.
    Created,
    /// Waiting for READY.
    Established,
    Ready,
}

/// One stream from a peer: the messages the chaincode sends.
fn connect(
    mut inbound: Streaming<ChaincodeMessage>,
    package_id: &str,
) -> BoxStream<'static, Result<ChaincodeMessage, Status>> {
    let (outbound, receiver) = mpsc::unbounded_channel();
    let register = ChaincodeMessage {
        r#type: Type::Register as i32,
        payload: ChaincodeId {
            name: package_id.to_owned(),
            ..ChaincodeId::default()
        }
        .encode_to_vec(),
        ..ChaincodeMessage::default()
    };
    // The receiver is alive: it is returned below.
    let _ = outbound.send(Ok(register));
    let pending: Pending = Arc::default();
    tokio::spawn(async move {
        let mut phase = Phase::Created;
        while let Some(message) = inbound.next().await {
            let message = match message {
                Ok(m) => m,
                Err(_) => break,
            };
            let kind = Type::try_from(message.r#type).unwrap_or(Type::Undefined);
            match (phase, kind) {
                (_, Type::Keepalive) => {
                    let _ = outbound.send(Ok(ChaincodeMessage {
                        r#type: Type::Keepalive as i32,
                        ..message
                    }));
                }
                (Phase::Created, Type::Registered) => phase = Phase::Established,
                (Phase::Established, Type::Ready) => phase = Phase::Ready,
                (Phase::Ready, Type::Init | Type::Transaction) => {
                    start_transaction(message, kind, &outbound, &pending);
                }
                (Phase::Ready, Type::Response | Type::Error) => {
                    let key = (message.channel_id.clone(), message.txid.clone());
                    let waiting = pending
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(&key)
                        .cloned();
                    if let Some(waiting) = waiting {
                        let _ = waiting.send(message);
                    }
                }
                (_, other) => {
                    let _ = outbound.send(Err(Status::failed_precondition(format!(
                        "chaincode: unexpected {other:?} while {phase:?}"
                    ))));
                    break;
                }
            }
        }
        // The peer went away: waiting transactions see their reply channel close.
        pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    });
    tokio_stream::wrappers::UnboundedReceiverStream::new(receiver).boxed()
}

fn start_transaction(
    message: ChaincodeMessage,
    kind: Type,
    outbound: &Outbound,
    pending: &Pending,
) {
    let key = (message.channel_id.clone(), message.txid.clone());
    let (sender, replies) = std::sync::mpsc::channel();
    {
        let mut pending = pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.contains_key(&key) {
            let _ = outbound.send(Ok(error_message(
                &message,
                format!("transaction {} is already running", message.txid),
            )));
            return;
        }
        pending.insert(key.clone(), sender);
    }
    let outbound = outbound.clone();
    let pending = pending.clone();
    tokio::task::spawn_blocking(move || {
        let reply = run_transaction(&message, kind, &outbound, replies);
        pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key);
        let _ = outbound.send(Ok(reply));
    });
}

fn error_message(about: &ChaincodeMessage, text: String) -> ChaincodeMessage {
    ChaincodeMessage {
        r#type: Type::Error as i32,
        payload: text.into_bytes(),
        txid: about.txid.clone(),
        channel_id: about.channel_id.clone(),
        ..ChaincodeMessage::default()
    }
}

/// What a transaction's proposal says: its time, its creator's organization and its
/// transient data.
struct TransactionContext {
    /// The timestamp of the proposal's channel header, which every endorser sees the same;
    /// the message's own timestamp only when the peer sent no proposal.
    now: Timestamp,
    /// The MSP id of the proposal's creator; `None` without a proposal.
    member: Option<String>,
    /// The proposal's transient map (never part of the transaction or the block).
    transient: HashMap<String, Vec<u8>>,
}

fn transaction_context(message: &ChaincodeMessage) -> Result<TransactionContext, MalformedMessage> {
    let malformed = |reason: &str| MalformedMessage {
        what: "transaction",
        reason: reason.to_owned(),
    };
    let Some(signed) = message.proposal.as_ref() else {
        let now = message
            .timestamp
            .map(|t| Timestamp::from_unix_seconds(t.seconds))
            .ok_or_else(|| malformed("no proposal and no timestamp"))?;
        return Ok(TransactionContext {
            now,
            member: None,
            transient: HashMap::new(),
        });
    };
    let proposal =
        Proposal::decode(signed.proposal_bytes.as_slice()).map_err(|_| malformed("proposal"))?;
    let header = Header::decode(proposal.header.as_slice()).map_err(|_| malformed("header"))?;
    let channel_header = ChannelHeader::decode(header.channel_header.as_slice())
        .map_err(|_| malformed("channel header"))?;
    let signature_header = SignatureHeader::decode(header.signature_header.as_slice())
        .map_err(|_| malformed("signature header"))?;
    let creator = SerializedIdentity::decode(signature_header.creator.as_slice())
        .map_err(|_| malformed("the proposal's creator"))?;
    if creator.mspid.is_empty() {
        return Err(malformed("the proposal's creator names no MSP"));
    }
    let payload = ChaincodeProposalPayload::decode(proposal.payload.as_slice())
        .map_err(|_| malformed("proposal payload"))?;
    let now = channel_header
        .timestamp
        .map(|t| Timestamp::from_unix_seconds(t.seconds))
        .ok_or_else(|| malformed("the proposal has no timestamp"))?;
    Ok(TransactionContext {
        now,
        member: Some(creator.mspid),
        transient: payload.transient_map,
    })
}

/// Runs one INIT or TRANSACTION to its COMPLETED or ERROR message.
fn run_transaction(
    message: &ChaincodeMessage,
    kind: Type,
    outbound: &Outbound,
    replies: std::sync::mpsc::Receiver<ChaincodeMessage>,
) -> ChaincodeMessage {
    let completed = |response: Response, event: Option<ChaincodeEvent>| ChaincodeMessage {
        r#type: Type::Completed as i32,
        payload: response.encode_to_vec(),
        txid: message.txid.clone(),
        channel_id: message.channel_id.clone(),
        chaincode_event: event,
        ..ChaincodeMessage::default()
    };
    let failure = |text: String| Response {
        status: 500,
        message: text,
        payload: Vec::new(),
    };
    if kind == Type::Init {
        // The contract keeps no state to initialise.
        return completed(ok(Vec::new()), None);
    }
    let input = match ChaincodeInput::decode(message.payload.as_slice()) {
        Ok(input) => input,
        Err(e) => return completed(failure(format!("malformed chaincode input: {e}")), None),
    };
    let invocation = match wire::parse_args(&input.args) {
        Ok(i) => i,
        Err(e) => return completed(failure(e.to_string()), None),
    };
    let context = match transaction_context(message) {
        Ok(c) => c,
        Err(e) => return completed(failure(e.to_string()), None),
    };
    let mut state = state::ShimState {
        channel_id: message.channel_id.clone(),
        txid: message.txid.clone(),
        outbound: outbound.clone(),
        replies,
        reply_timeout: REPLY_TIMEOUT,
        event: None,
    };
    let result = match invocation {
        Invocation::Write(call) => {
            let Some(member) = context.member.as_deref() else {
                return completed(
                    failure("a write needs the proposal: its creator is the member".into()),
                    None,
                );
            };
            execute(&mut state, &call, context.now, member).map(|executed| {
                to_json(&WriteResult {
                    outcome: OutcomeWire::from(executed.outcome),
                    replayed: executed.replayed,
                })
            })
        }
        Invocation::Query(query) => run_query(&state, query),
        Invocation::PutDocument { hash } => {
            let document = context.transient.get(wire::TRANSIENT_DOCUMENT);
            return match put_document(&mut state, &hash, document) {
                Ok(Ok(stored)) => completed(ok(to_json(&stored)), None),
                Ok(Err(refusal)) => completed(failure(refusal), None),
                Err(e) => error_message(message, e.to_string()),
            };
        }
        Invocation::Document { hash } => {
            return match read_document(&state, &hash) {
                Ok(Ok(bytes)) => completed(ok(bytes), None),
                Ok(Err(text)) => completed(failure(text), None),
                Err(e) => error_message(message, e.to_string()),
            };
        }
    };
    match result {
        Ok(payload) => {
            let event = state.event.take().map(|(name, payload)| ChaincodeEvent {
                chaincode_id: String::new(),
                tx_id: message.txid.clone(),
                event_name: name,
                payload,
            });
            completed(ok(payload), event)
        }
        Err(ContractError::State(e)) => error_message(message, e.to_string()),
        Err(e) => {
            let error = contract_error(e);
            let text = refusal_message(&error).unwrap_or_else(|| error.to_string());
            completed(failure(text), None)
        }
    }
}

/// A refusal of a document call, in the contract's refusal form.
fn document_refusal(field: &str, reason: &str) -> String {
    let error = assent_ledger::LedgerError::Rejected {
        rejection: assent_ledger::Rejection::Invalid {
            field: field.to_owned(),
            reason: reason.to_owned(),
        },
    };
    refusal_message(&error).unwrap_or_else(|| error.to_string())
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// `put_document`: the transient document, checked against `hash`, written to the documents
/// collection unless its hash is already there (then nothing is written). The outer error is
/// the peer's (the transaction ends with ERROR), the inner one a refusal (status 500).
fn put_document(
    state: &mut state::ShimState,
    hash: &str,
    document: Option<&Vec<u8>>,
) -> Result<Result<wire::DocumentStored, String>, ShimError> {
    if !wire::is_document_hash(hash) {
        return Ok(Err(document_refusal("hash", "not a lowercase hex SHA-256")));
    }
    let Some(document) = document.filter(|d| !d.is_empty()) else {
        return Ok(Err(document_refusal(
            "document",
            "no document in the transient data",
        )));
    };
    if sha256_hex(document) != hash {
        return Ok(Err(document_refusal(
            "document",
            "the document does not hash to the hash given",
        )));
    }
    // The key is the value's hash, so a key present holds this very document.
    let present = state.get_private_hash(wire::DOCUMENTS_COLLECTION, hash)?;
    if let Some(value_hash) = present {
        if hex::encode(&value_hash) != hash {
            return Ok(Err(format!(
                "{}: the collection's hash under document {hash} is another value's",
                wire::DOCUMENT_CORRUPT
            )));
        }
        return Ok(Ok(wire::DocumentStored { replayed: true }));
    }
    state.put_private(wire::DOCUMENTS_COLLECTION, hash, document)?;
    Ok(Ok(wire::DocumentStored { replayed: false }))
}

/// `document`: the bytes stored under `hash` (empty when none), checked against it: bytes
/// that do not hash to their key are refused (status 500), never returned.
fn read_document(
    state: &state::ShimState,
    hash: &str,
) -> Result<Result<Vec<u8>, String>, ShimError> {
    if !wire::is_document_hash(hash) {
        return Ok(Err(document_refusal("hash", "not a lowercase hex SHA-256")));
    }
    let Some(bytes) = state.get_private(wire::DOCUMENTS_COLLECTION, hash)? else {
        return Ok(Ok(Vec::new()));
    };
    if sha256_hex(&bytes) != hash {
        return Ok(Err(format!(
            "{}: document {hash}: the stored bytes hash to another value",
            wire::DOCUMENT_CORRUPT
        )));
    }
    Ok(Ok(bytes))
}

fn ok(payload: Vec<u8>) -> Response {
    Response {
        status: 200,
        message: String::new(),
        payload,
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Records and their wrappers are plain structs of strings and numbers: cannot fail.
    serde_json::to_vec(value).expect("answers serialise")
}

fn run_query(state: &state::ShimState, query: Query) -> Result<Vec<u8>, ContractError<ShimError>> {
    let contract = ConsentContract;
    Ok(match query {
        Query::Consent { consent_key } => match contract.consent(state, &consent_key) {
            Ok(record) => to_json(&Some(record)),
            Err(ContractError::NotFound) => to_json(&None::<()>),
            Err(e) => return Err(e),
        },
        Query::PatientConsents { patient_key } => {
            to_json(&contract.patient_consents(state, &patient_key)?)
        }
        Query::GranteeConsents { grantee_key } => {
            to_json(&contract.grantee_consents(state, &grantee_key)?)
        }
        Query::ActiveConsents { patient_key, now } => {
            to_json(&contract.active_consents(state, &patient_key, now)?)
        }
        Query::ConsentHistory { consent_key } => match contract.history(state, &consent_key) {
            Ok(versions) => to_json(
                &versions
                    .into_iter()
                    .map(VersionWire::from)
                    .collect::<Vec<_>>(),
            ),
            Err(ContractError::NotFound) => to_json(&Vec::<VersionWire>::new()),
            Err(e) => return Err(e),
        },
        Query::Anchor {
            gateway_key,
            batch_id,
        } => to_json(&contract.anchor(state, &gateway_key, batch_id)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_send_without_delay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = Box::pin(incoming(listener));
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let server_side = accepted.next().await.unwrap().unwrap();
        assert!(server_side.nodelay().unwrap());
    }
}
