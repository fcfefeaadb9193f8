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
use crate::protos::common::{ChannelHeader, Header};
use crate::protos::paths;
use crate::protos::peer::chaincode_message::Type;
use crate::protos::peer::{
    ChaincodeEvent, ChaincodeId, ChaincodeInput, ChaincodeMessage, Proposal, Response,
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

/// The transaction time: the timestamp of the proposal's channel header, which every
/// endorser sees the same; the message's own timestamp only when the peer sent no proposal.
fn transaction_time(message: &ChaincodeMessage) -> Result<Timestamp, MalformedMessage> {
    let malformed = |reason: &str| MalformedMessage {
        what: "transaction",
        reason: reason.to_owned(),
    };
    let Some(signed) = message.proposal.as_ref() else {
        return message
            .timestamp
            .map(|t| Timestamp::from_unix_seconds(t.seconds))
            .ok_or_else(|| malformed("no proposal and no timestamp"));
    };
    let proposal =
        Proposal::decode(signed.proposal_bytes.as_slice()).map_err(|_| malformed("proposal"))?;
    let header = Header::decode(proposal.header.as_slice()).map_err(|_| malformed("header"))?;
    let channel_header = ChannelHeader::decode(header.channel_header.as_slice())
        .map_err(|_| malformed("channel header"))?;
    channel_header
        .timestamp
        .map(|t| Timestamp::from_unix_seconds(t.seconds))
        .ok_or_else(|| malformed("the proposal has no timestamp"))
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
    let now = match transaction_time(message) {
        Ok(t) => t,
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
        Invocation::Write(call) => execute(&mut state, &call, now, "").map(|executed| {
            to_json(&WriteResult {
                outcome: OutcomeWire::from(executed.outcome),
                replayed: executed.replayed,
            })
        }),
        Invocation::Query(query) => run_query(&state, query),
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
