//! FAKE Fabric for tests: an in-process stand-in for a Fabric Gateway peer (the `gateway.Gateway`
//! service) that is also the FAKE peer driving the real chaincode server over
//! `protos.Chaincode/Connect`. Not Fabric: one peer per organization, each its own gateway,
//! on one channel state; no orderer, no endorsement policy (the gateway's own organization's
//! peer endorses alone), no gossip (a committed private write reaches every member's peer).
//!
//! Organizations: by default two, `Org1MSP` and `Org2MSP` ([`CONSORTIUM`]), both members of
//! the documents collection (`assentConsentDocuments`); [`FakeFabric::start_orgs`] takes
//! others, such as one outside the collection. Each has a gateway endpoint of its own, a
//! peer identity of its own, its own stream to the chaincode server and its own private data
//! store. Any organization's client identity is accepted at any gateway.
//!
//! Private data as a real peer keeps it: the proposal's transient map reaches the chaincode
//! (in the signed proposal) but never the transaction or the block; GET_STATE / PUT_STATE
//! naming a collection read and write the collection, and only SHA-256 of key and value lands
//! in the block's write set (`CollectionHashedReadWriteSet`), while the value goes to the
//! private store of every member organization's peer at commit; GET_PRIVATE_DATA_HASH answers
//! from the public hashed state; a creator whose organization is not a member may neither
//! read nor write the collection (`memberOnlyRead`, `memberOnlyWrite`), with the peer's
//! words; a peer that is not a member holds no private data. Each transaction's read-write
//! set is in its block (`ChaincodeAction.results`), so tests can scan blocks for what must
//! never be there.
//!
//! What it does like a real peer: checks every signature it receives (ECDSA P-256 over
//! SHA-256 with the creator's certificate, DER, low S only), recomputes transaction ids from
//! nonce and creator, refuses unknown channels and MSPs with the status codes and words of
//! Fabric 2.5's gateway and peer (checked against a real network), sends ChaincodeEvents'
//! response headers only with the first block of events as the real gateway does, runs the
//! chaincode through the shim
//! protocol (range and history queries answered in pages of two), cuts blocks every few
//! milliseconds, validates read sets at commit (MVCC and phantom reads), keeps history newest
//! first, answers `qscc` GetChainInfo / GetBlockByNumber, and streams chaincode events per
//! block. It can break every event stream after a number of responses, to check that a
//! client resumes without missing or repeating events; and it can answer Endorse as Fabric's
//! gateway does when a second organization's endorser simulated on a state one block behind
//! (`Aborted`, "ProposalResponsePayloads do not match"), as a real two-organization network did
//! under concurrent writes.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use assent_fabric::client::status_with_details;
use assent_fabric::grpc::{Routes, ServiceName, path, server_streaming, unary};
use assent_fabric::protos::common::{
    Block, BlockData, BlockHeader, BlockMetadata, BlockchainInfo, ChannelHeader, Envelope, Header,
    HeaderType, Payload, SignatureHeader,
};
use assent_fabric::protos::gateway::{
    ChaincodeEventsRequest, ChaincodeEventsResponse, CommitStatusRequest, CommitStatusResponse,
    EndorseRequest, EndorseResponse, ErrorDetail, EvaluateRequest, EvaluateResponse,
    SignedChaincodeEventsRequest, SignedCommitStatusRequest, SubmitRequest, SubmitResponse,
};
use assent_fabric::protos::google::Timestamp;
use assent_fabric::protos::msp::SerializedIdentity;
use assent_fabric::protos::orderer::seek_position;
use assent_fabric::protos::paths;
use assent_fabric::protos::peer::chaincode_message::Type;
use assent_fabric::protos::peer::{
    ChaincodeAction, ChaincodeActionPayload, ChaincodeEndorsedAction, ChaincodeEvent,
    ChaincodeHeaderExtension, ChaincodeInput, ChaincodeInvocationSpec, ChaincodeMessage,
    ChaincodeProposalPayload, DelState, Endorsement, GetHistoryForKey, GetState, GetStateByRange,
    KeyModification, Kv, Proposal, ProposalResponsePayload, PutState, QueryResponse,
    QueryResultBytes, QueryStateNext, Response, SignedProposal, Transaction, TransactionAction,
    tx_validation_code,
};
use assent_fabric::protos::rwset::{
    CollectionHashedReadWriteSet, HashedRwSet, KvRead, KvReadHash, KvRwSet, KvWrite, KvWriteHash,
    NsReadWriteSet, TxReadWriteSet, Version as RwVersion,
};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tonic::transport::{Channel, ClientTlsConfig, Server, ServerTlsConfig};
use tonic::{Code, Request, Response as GrpcResponse, Status};
use tonic_prost::ProstCodec;

pub const CHANNEL: &str = "assent-channel";
pub const CHAINCODE: &str = "assent-consent";
pub const MSP: &str = "Org1MSP";
/// The second member organization of the default consortium.
pub const MSP2: &str = "Org2MSP";
/// An organization of the channel outside the documents collection (with
/// [`FakeFabric::start_orgs`]).
pub const OUTSIDER_MSP: &str = "Org3MSP";

/// An organization of the FAKE channel.
#[derive(Debug, Clone, Copy)]
pub struct FakeOrg {
    pub msp: &'static str,
    /// A member of the documents collection.
    pub in_collection: bool,
}

/// The default channel: two organizations, both members of the documents collection.
pub const CONSORTIUM: [FakeOrg; 2] = [
    FakeOrg {
        msp: MSP,
        in_collection: true,
    },
    FakeOrg {
        msp: MSP2,
        in_collection: true,
    },
];
pub const PACKAGE_ID: &str = "assent-consent_1.0:0123abcd";
/// Page size of the fake's range and history answers: small, so paging is exercised.
const PAGE: usize = 2;
const BATCH_TIMEOUT: Duration = Duration::from_millis(15);

/// A key's version: (block, transaction index).
type Version = (u64, u32);

/// A range read: start, end, and the keys seen with their versions.
type RangeRead = (String, String, Vec<(String, Version)>);

/// A private data key: (collection, key).
type PrivateKey = (String, String);

#[derive(Default)]
struct RwSet {
    reads: Vec<(String, Option<Version>)>,
    ranges: Vec<RangeRead>,
    writes: BTreeMap<String, Option<Vec<u8>>>,
    /// Private reads (GetPrivateData, GetPrivateDataHash) at the hashed state's version.
    private_reads: Vec<(PrivateKey, Option<Version>)>,
    private_writes: BTreeMap<PrivateKey, Option<Vec<u8>>>,
}

struct PendingTx {
    tx_id: String,
    envelope: Vec<u8>,
    timestamp: i64,
    rwset: RwSet,
    event: Option<ChaincodeEvent>,
}

#[derive(Default)]
struct World {
    values: BTreeMap<String, (Vec<u8>, Version)>,
    /// The public hashed state of private data, the same at every peer: SHA-256 of the value
    /// and the version of the write.
    private_hashes: BTreeMap<PrivateKey, (Vec<u8>, Version)>,
    /// Per organization (MSP id): its peer's private data store.
    private: HashMap<String, BTreeMap<PrivateKey, Vec<u8>>>,
    /// Per key, oldest first.
    history: HashMap<String, Vec<KeyModification>>,
    blocks: Vec<Block>,
    events: Vec<Vec<ChaincodeEvent>>,
    statuses: HashMap<String, (i32, u64)>,
    endorsed: HashMap<String, (RwSet, Option<ChaincodeEvent>, i64)>,
    pending: Vec<PendingTx>,
}

/// Counts of what the fake saw, for assertions.
#[derive(Default)]
pub struct Seen {
    pub signatures_verified: AtomicU64,
    pub refused: AtomicU64,
    pub streams_broken: AtomicU64,
    pub read_conflicts: AtomicU64,
    /// Endorsements answered as a disagreement of two endorsers.
    pub disagreements: AtomicU64,
}

/// The channel: its state and blocks, shared by every organization's peer.
struct Net {
    world: Mutex<World>,
    height: watch::Sender<u64>,
    /// Break each event stream after this many responses (0: never).
    break_streams_after: AtomicUsize,
    /// Answer this many Endorse calls as endorsers whose responses differ.
    disagree_next: AtomicUsize,
    seen: Seen,
    /// The channel's organizations (MSP ids).
    orgs: Vec<String>,
    /// The members of the documents collection.
    collection_members: Vec<String>,
    /// Every organization's gateway peer, in the order of `orgs`: where a failed evaluation
    /// is tried next.
    peers: Mutex<Vec<std::sync::Weak<Shared>>>,
}

/// One organization's gateway peer.
struct Shared {
    net: Arc<Net>,
    msp: String,
    peer: PeerConnection,
    peer_key: SigningKey,
    peer_creator: Vec<u8>,
    address: String,
}

/// A running FAKE channel with a gateway peer per organization. Stops when dropped.
pub struct FakeFabric {
    /// The first organization's (`Org1MSP`) gateway endpoint.
    pub endpoint: String,
    /// Every organization's gateway endpoint, by MSP id.
    pub endpoints: Vec<(String, String)>,
    net: Arc<Net>,
    _stops: Vec<tokio::sync::oneshot::Sender<()>>,
}

/// TLS of the fake gateway: its certificate and key, and the CA clients trust.
pub struct FakeTls {
    pub cert_pem: String,
    pub key_pem: String,
}

impl FakeFabric {
    /// Starts the default FAKE channel ([`CONSORTIUM`]) with a gateway peer per organization
    /// on 127.0.0.1 (port 0), each connected to the chaincode server at `chaincode_addr`.
    // The gateway's end-to-end tests and the benchmarks start it this way.
    #[allow(dead_code)]
    pub async fn start(chaincode_addr: std::net::SocketAddr, tls: Option<FakeTls>) -> FakeFabric {
        FakeFabric::start_with(chaincode_addr, None, tls).await
    }

    /// The same, dialing the chaincode with `chaincode_tls`.
    pub async fn start_with(
        chaincode_addr: std::net::SocketAddr,
        chaincode_tls: Option<ClientTlsConfig>,
        tls: Option<FakeTls>,
    ) -> FakeFabric {
        FakeFabric::start_orgs(chaincode_addr, chaincode_tls, tls, &CONSORTIUM).await
    }

    /// A FAKE channel of `orgs` (the first is the one [`FakeFabric::endpoint`] serves).
    pub async fn start_orgs(
        chaincode_addr: std::net::SocketAddr,
        chaincode_tls: Option<ClientTlsConfig>,
        tls: Option<FakeTls>,
        orgs: &[FakeOrg],
    ) -> FakeFabric {
        assent_fabric::ensure_crypto_provider();
        let (height, _) = watch::channel(0);
        let net = Arc::new(Net {
            world: Mutex::new(World::default()),
            height,
            break_streams_after: AtomicUsize::new(0),
            disagree_next: AtomicUsize::new(0),
            seen: Seen::default(),
            orgs: orgs.iter().map(|o| o.msp.to_owned()).collect(),
            collection_members: orgs
                .iter()
                .filter(|o| o.in_collection)
                .map(|o| o.msp.to_owned())
                .collect(),
            peers: Mutex::new(Vec::new()),
        });
        net.cut_genesis();
        tokio::spawn(block_cutter(Arc::downgrade(&net)));
        let mut endpoints = Vec::new();
        let mut stops = Vec::new();
        for (index, org) in orgs.iter().enumerate() {
            let peer = PeerConnection::connect(chaincode_addr, chaincode_tls.clone()).await;
            let host = format!("peer0.org{}.example.com", index + 1);
            let (peer_key, peer_cert) = super::support::p256_identity(&host);
            let peer_creator = SerializedIdentity {
                mspid: org.msp.into(),
                id_bytes: peer_cert.into_bytes(),
            }
            .encode_to_vec();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let shared = Arc::new(Shared {
                net: net.clone(),
                msp: org.msp.to_owned(),
                peer,
                peer_key,
                peer_creator,
                address: format!("{host}:{}", addr.port()),
            });
            net.peers.lock().unwrap().push(Arc::downgrade(&shared));
            let tls = tls.as_ref().map(|t| FakeTls {
                cert_pem: t.cert_pem.clone(),
                key_pem: t.key_pem.clone(),
            });
            let (endpoint, stop) = serve_gateway(shared, listener, tls);
            endpoints.push((org.msp.to_owned(), endpoint));
            stops.push(stop);
        }
        FakeFabric {
            endpoint: endpoints[0].1.clone(),
            endpoints,
            net,
            _stops: stops,
        }
    }

    /// The gateway endpoint of organization `msp`.
    pub fn endpoint_of(&self, msp: &str) -> &str {
        &self
            .endpoints
            .iter()
            .find(|(m, _)| m == msp)
            .expect("an organization of the FAKE channel")
            .1
    }

    /// What organization `msp`'s peer holds under `key` in private data `collection`.
    pub fn private_value(&self, msp: &str, collection: &str, key: &str) -> Option<Vec<u8>> {
        let world = self.net.world.lock().unwrap();
        world
            .private
            .get(msp)?
            .get(&(collection.to_owned(), key.to_owned()))
            .cloned()
    }

    /// The keys organization `msp`'s peer holds in private data `collection`.
    pub fn private_keys(&self, msp: &str, collection: &str) -> Vec<String> {
        let world = self.net.world.lock().unwrap();
        world
            .private
            .get(msp)
            .map(|store| {
                store
                    .keys()
                    .filter(|(c, _)| c == collection)
                    .map(|(_, k)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Changes what organization `msp`'s peer holds under `key` in `collection` (a tampered
    /// private store; the public hashed state keeps the committed hash). Panics when absent.
    pub fn tamper_private(
        &self,
        msp: &str,
        collection: &str,
        key: &str,
        change: impl FnOnce(&mut Vec<u8>),
    ) {
        let mut world = self.net.world.lock().unwrap();
        let value = world
            .private
            .get_mut(msp)
            .and_then(|store| store.get_mut(&(collection.to_owned(), key.to_owned())))
            .expect("a private value to tamper with");
        change(value);
    }

    /// Every block of the channel, encoded as a peer stores it.
    pub fn block_bytes(&self) -> Vec<Vec<u8>> {
        let world = self.net.world.lock().unwrap();
        world.blocks.iter().map(Message::encode_to_vec).collect()
    }

    /// Breaks every event stream after `n` responses from now on (0: never).
    pub fn break_event_streams_after(&self, n: usize) {
        self.net.break_streams_after.store(n, Ordering::SeqCst);
    }

    /// Answers the next `n` Endorse calls as Fabric's gateway answers when a second
    /// organization's endorser (`Org2MSP`) returned a different proposal response: nothing is
    /// endorsed or recorded.
    pub fn disagree_on_next_endorsements(&self, n: usize) {
        self.net.disagree_next.store(n, Ordering::SeqCst);
    }

    pub fn seen(&self) -> &Seen {
        &self.net.seen
    }
}

/// Serves `shared`'s gateway on `listener`; its endpoint, and the sender that stops it.
fn serve_gateway(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    tls: Option<FakeTls>,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let addr = listener.local_addr().unwrap();
    let routes = Routes::<GatewayName>::new()
        .route(paths::EVALUATE, {
            let s = shared.clone();
            unary(move |r: Request<EvaluateRequest>| {
                let s = s.clone();
                async move { s.evaluate(r.into_inner()).await.map(GrpcResponse::new) }
            })
        })
        .route(paths::ENDORSE, {
            let s = shared.clone();
            unary(move |r: Request<EndorseRequest>| {
                let s = s.clone();
                async move { s.endorse(r.into_inner()).await.map(GrpcResponse::new) }
            })
        })
        .route(paths::SUBMIT, {
            let s = shared.clone();
            unary(move |r: Request<SubmitRequest>| {
                let s = s.clone();
                async move { s.submit(r.into_inner()).map(GrpcResponse::new) }
            })
        })
        .route(paths::COMMIT_STATUS, {
            let s = shared.clone();
            unary(move |r: Request<SignedCommitStatusRequest>| {
                let s = s.clone();
                async move { s.commit_status(r.into_inner()).await.map(GrpcResponse::new) }
            })
        })
        .route(paths::CHAINCODE_EVENTS, {
            let s = shared.clone();
            server_streaming(move |r: Request<SignedChaincodeEventsRequest>| {
                let s = s.clone();
                async move {
                    // Like Fabric's gateway (grpc-go), the response headers go out with
                    // the first block of events, or the refusal: on a quiet channel the
                    // call has no answer yet.
                    let mut stream = s.chaincode_events(r.into_inner())?;
                    let first = match stream.next().await {
                        Some(Err(status)) => return Err(status),
                        first => first,
                    };
                    Ok(GrpcResponse::new(
                        futures_util::stream::iter(first).chain(stream).boxed(),
                    ))
                }
            })
        });
    let mut server = Server::builder();
    let scheme =
        if let Some(tls) = tls {
            server =
                server
                    .tls_config(ServerTlsConfig::new().identity(
                        tonic::transport::Identity::from_pem(tls.cert_pem, tls.key_pem),
                    ))
                    .unwrap();
            "https"
        } else {
            "http"
        };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            let _ = stream.set_nodelay(true);
        })
    });
    tokio::spawn(async move {
        let _ = server
            .add_service(routes)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await;
    });
    (format!("{scheme}://127.0.0.1:{}", addr.port()), stop)
}

struct GatewayName;

impl ServiceName for GatewayName {
    const NAME: &'static str = paths::GATEWAY_SERVICE;
}

impl Net {
    fn cut_genesis(&self) {
        let channel_header = ChannelHeader {
            r#type: HeaderType::Config as i32,
            channel_id: CHANNEL.into(),
            ..ChannelHeader::default()
        };
        let envelope = Envelope {
            payload: Payload {
                header: Some(Header {
                    channel_header: channel_header.encode_to_vec(),
                    signature_header: Vec::new(),
                }),
                data: Vec::new(),
            }
            .encode_to_vec(),
            signature: Vec::new(),
        };
        let mut world = self.world.lock().unwrap();
        push_block(
            &mut world,
            vec![envelope.encode_to_vec()],
            vec![0],
            Vec::new(),
        );
        self.height.send_replace(world.blocks.len() as u64);
    }

    /// Validates and commits the transactions submitted since the last block.
    fn cut_block(&self) {
        let mut world = self.world.lock().unwrap();
        if world.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut world.pending);
        let number = world.blocks.len() as u64;
        let mut data = Vec::new();
        let mut filter = Vec::new();
        let mut events = Vec::new();
        for (index, tx) in pending.into_iter().enumerate() {
            let version = (number, index as u32);
            let code = validate(&world, &tx.rwset);
            if code != tx_validation_code::VALID {
                self.seen.read_conflicts.fetch_add(1, Ordering::SeqCst);
            }
            if code == tx_validation_code::VALID {
                for (key, value) in &tx.rwset.writes {
                    match value {
                        Some(v) => {
                            world.values.insert(key.clone(), (v.clone(), version));
                        }
                        None => {
                            world.values.remove(key);
                        }
                    }
                    world
                        .history
                        .entry(key.clone())
                        .or_default()
                        .push(KeyModification {
                            tx_id: tx.tx_id.clone(),
                            value: value.clone().unwrap_or_default(),
                            timestamp: Some(Timestamp {
                                seconds: tx.timestamp,
                                nanos: 0,
                            }),
                            is_delete: value.is_none(),
                        });
                }
                for ((collection, key), value) in &tx.rwset.private_writes {
                    let private_key = (collection.clone(), key.clone());
                    // Every peer: the hash. Members' peers: the value (no gossip to wait for).
                    match value {
                        Some(v) => {
                            world
                                .private_hashes
                                .insert(private_key.clone(), (Sha256::digest(v).to_vec(), version));
                        }
                        None => {
                            world.private_hashes.remove(&private_key);
                        }
                    }
                    for member in &self.collection_members {
                        let store = world.private.entry(member.clone()).or_default();
                        match value {
                            Some(v) => {
                                store.insert(private_key.clone(), v.clone());
                            }
                            None => {
                                store.remove(&private_key);
                            }
                        }
                    }
                }
                if let Some(event) = tx.event {
                    events.push(event);
                }
            }
            world.statuses.insert(tx.tx_id, (code, number));
            data.push(tx.envelope);
            filter.push(code as u8);
        }
        push_block(&mut world, data, filter, events);
        self.height.send_replace(world.blocks.len() as u64);
    }
}

async fn block_cutter(shared: Weak<Net>) {
    loop {
        tokio::time::sleep(BATCH_TIMEOUT).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.cut_block();
    }
}

/// Which gateway call a proposal came with: they report an endorser's refusal differently.
#[derive(Clone, Copy)]
enum Call {
    Evaluate,
    Endorse,
}

/// What is wrong with a transaction's header.
enum HeaderFault {
    Malformed(&'static str),
    UnknownChannel(String),
    TxId(String),
}

/// What a verified proposal says.
struct ProposalView {
    tx_id: String,
    /// The MSP id of the proposal's creator.
    creator_msp: String,
    chaincode: String,
    input: ChaincodeInput,
    timestamp: Timestamp,
    header: Vec<u8>,
    signature_header: Vec<u8>,
    payload: Vec<u8>,
    signed: SignedProposal,
}

impl Shared {
    fn refuse(&self, code: Code, message: &str) -> Status {
        self.net.seen.refused.fetch_add(1, Ordering::SeqCst);
        status_with_details(
            code,
            message,
            &[ErrorDetail {
                address: self.address.clone(),
                msp_id: self.msp.clone(),
                message: message.into(),
            }],
        )
    }

    /// The chaincode answered with an error: relayed with the peer's details, as the Fabric
    /// gateway does (not counted as a refusal of the request itself).
    fn chaincode_failed(&self, code: Code, response: &Response) -> Status {
        let message = format!(
            "chaincode response {}, {}",
            response.status, response.message
        );
        status_with_details(
            code,
            "failed to endorse transaction, see attached details for more info",
            &[ErrorDetail {
                address: self.address.clone(),
                msp_id: self.msp.clone(),
                message,
            }],
        )
    }

    /// ECDSA P-256 / SHA-256, DER, low S, by a certificate of a known MSP. The refusal in
    /// the words Fabric 2.5's peer uses: it does not say which check failed.
    fn verify(&self, creator: &[u8], message: &[u8], signature: &[u8]) -> Result<(), String> {
        let malformed = || {
            format!("access denied: channel [{CHANNEL}] creator org unknown, creator is malformed")
        };
        let identity = SerializedIdentity::decode(creator).map_err(|_| malformed())?;
        if !self.net.orgs.contains(&identity.mspid) {
            return Err(malformed());
        }
        let denied = || {
            format!(
                "access denied: channel [{CHANNEL}] creator org [{}]",
                identity.mspid
            )
        };
        let key = certificate_key(&identity.id_bytes).ok_or_else(malformed)?;
        let signature = Signature::from_der(signature).map_err(|_| denied())?;
        if signature.normalize_s() != signature {
            // Fabric's BCCSP: "Invalid S. Must be smaller than half the order".
            return Err(denied());
        }
        key.verify(message, &signature).map_err(|_| denied())?;
        self.net
            .seen
            .signatures_verified
            .fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// A signed commit-status or events request: the gateway refuses a bad signature with
    /// `PermissionDenied`.
    fn verify_request(
        &self,
        creator: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), Status> {
        self.verify(creator, message, signature)
            .map_err(|reason| self.refuse(Code::PermissionDenied, &reason))
    }

    /// What the gateway answers when its endorser refused a proposal in validation (Fabric's
    /// `preProcess`): `FailedPrecondition` from Evaluate, `Aborted` from Endorse, with the
    /// endorser's reason in the details.
    fn endorser_refused(&self, call: Call, reason: &str) -> Status {
        self.net.seen.refused.fetch_add(1, Ordering::SeqCst);
        let detail = format!("error validating proposal: {reason}");
        let (code, message) = match call {
            Call::Evaluate => (
                Code::FailedPrecondition,
                format!("evaluate call to endorser returned error: {detail}"),
            ),
            Call::Endorse => (
                Code::Aborted,
                "failed to endorse transaction, see attached details for more info".to_owned(),
            ),
        };
        status_with_details(
            code,
            &message,
            &[ErrorDetail {
                address: self.address.clone(),
                msp_id: self.msp.clone(),
                message: detail,
            }],
        )
    }

    /// What the gateway answers for a channel it has not joined: unavailable, no details.
    fn unknown_channel(&self, channel: &str) -> Status {
        self.net.seen.refused.fetch_add(1, Ordering::SeqCst);
        Status::unavailable(format!(
            "failed to get config for channel [{channel}]: could not get last config for channel {channel}"
        ))
    }

    fn check_header(
        &self,
        header: &Header,
        expected_tx: &str,
    ) -> Result<(ChannelHeader, SignatureHeader), HeaderFault> {
        let channel_header = ChannelHeader::decode(header.channel_header.as_slice())
            .map_err(|_| HeaderFault::Malformed("bad channel header"))?;
        let signature_header = SignatureHeader::decode(header.signature_header.as_slice())
            .map_err(|_| HeaderFault::Malformed("bad signature header"))?;
        if channel_header.r#type != HeaderType::EndorserTransaction as i32 {
            return Err(HeaderFault::Malformed("not an endorser transaction"));
        }
        if channel_header.channel_id != CHANNEL {
            return Err(HeaderFault::UnknownChannel(channel_header.channel_id));
        }
        let mut hasher = Sha256::new();
        hasher.update(&signature_header.nonce);
        hasher.update(&signature_header.creator);
        let computed = hex::encode(hasher.finalize());
        if signature_header.nonce.len() != 24 {
            return Err(HeaderFault::Malformed("nonce is not 24 bytes"));
        }
        if channel_header.tx_id != computed || channel_header.tx_id != expected_tx {
            return Err(HeaderFault::TxId(format!(
                "incorrectly computed txid '{}' -- expected '{computed}'",
                channel_header.tx_id
            )));
        }
        Ok((channel_header, signature_header))
    }

    /// A header fault as Evaluate or Endorse reports it.
    fn header_refused(&self, call: Call, fault: HeaderFault) -> Status {
        match fault {
            HeaderFault::Malformed(what) => self.refuse(Code::InvalidArgument, what),
            HeaderFault::UnknownChannel(channel) => self.unknown_channel(&channel),
            HeaderFault::TxId(reason) => self.endorser_refused(call, &reason),
        }
    }

    fn check_proposal(
        &self,
        call: Call,
        signed: Option<SignedProposal>,
        tx_id: &str,
        channel: &str,
    ) -> Result<ProposalView, Status> {
        let signed = signed.ok_or_else(|| self.refuse(Code::InvalidArgument, "no proposal"))?;
        let proposal = Proposal::decode(signed.proposal_bytes.as_slice())
            .map_err(|_| self.refuse(Code::InvalidArgument, "bad proposal"))?;
        let header = Header::decode(proposal.header.as_slice())
            .map_err(|_| self.refuse(Code::InvalidArgument, "bad header"))?;
        let (channel_header, signature_header) = self
            .check_header(&header, tx_id)
            .map_err(|fault| self.header_refused(call, fault))?;
        if channel != channel_header.channel_id {
            return Err(self.refuse(
                Code::InvalidArgument,
                "request and proposal channels differ",
            ));
        }
        self.verify(
            &signature_header.creator,
            &signed.proposal_bytes,
            &signed.signature,
        )
        .map_err(|reason| self.endorser_refused(call, &reason))?;
        let extension = ChaincodeHeaderExtension::decode(channel_header.extension.as_slice())
            .map_err(|_| self.refuse(Code::InvalidArgument, "bad header extension"))?;
        let chaincode = extension.chaincode_id.map(|c| c.name).unwrap_or_default();
        let payload = ChaincodeProposalPayload::decode(proposal.payload.as_slice())
            .map_err(|_| self.refuse(Code::InvalidArgument, "bad proposal payload"))?;
        let spec = ChaincodeInvocationSpec::decode(payload.input.as_slice())
            .map_err(|_| self.refuse(Code::InvalidArgument, "bad invocation spec"))?
            .chaincode_spec
            .ok_or_else(|| self.refuse(Code::InvalidArgument, "no chaincode spec"))?;
        if spec.chaincode_id.map(|c| c.name).as_deref() != Some(chaincode.as_str()) {
            return Err(self.refuse(Code::InvalidArgument, "chaincode ids differ"));
        }
        let creator_msp = SerializedIdentity::decode(signature_header.creator.as_slice())
            .map(|i| i.mspid)
            .unwrap_or_default();
        Ok(ProposalView {
            tx_id: channel_header.tx_id,
            creator_msp,
            chaincode,
            input: spec.input.unwrap_or_default(),
            timestamp: channel_header.timestamp.unwrap_or_default(),
            header: proposal.header.clone(),
            signature_header: header.signature_header,
            payload: ChaincodeProposalPayload {
                input: payload.input,
                transient_map: HashMap::new(),
            }
            .encode_to_vec(),
            signed,
        })
    }

    async fn evaluate(
        self: &Arc<Self>,
        request: EvaluateRequest,
    ) -> Result<EvaluateResponse, Status> {
        let view = self.check_proposal(
            Call::Evaluate,
            request.proposed_transaction,
            &request.transaction_id,
            &request.channel_id,
        )?;
        let mut answered_by = self.clone();
        let response = if view.chaincode == "qscc" {
            self.qscc(&view.input)?
        } else if view.chaincode == CHAINCODE {
            // As a Fabric gateway does: a simulation that ends in an error (the chaincode's
            // request refused by the peer; not a status-500 answer of the contract, which is
            // final) is tried on the other organizations' peers, and refused as `Aborted`
            // with every peer's reason when all fail.
            let (mut response, errored) = self.simulate_checked(&view).await;
            if errored {
                let mut details = vec![self.simulation_error(&response)];
                let others: Vec<Arc<Shared>> = self
                    .net
                    .peers
                    .lock()
                    .unwrap()
                    .iter()
                    .filter_map(std::sync::Weak::upgrade)
                    .filter(|peer| peer.msp != self.msp)
                    .collect();
                let mut answered = false;
                for peer in others {
                    let (other, errored) = peer.simulate_checked(&view).await;
                    if errored {
                        details.push(peer.simulation_error(&other));
                    } else {
                        response = other;
                        answered_by = peer;
                        answered = true;
                        break;
                    }
                }
                if !answered {
                    return Err(status_with_details(
                        Code::Aborted,
                        "failed to evaluate transaction, see attached details for more info",
                        &details,
                    ));
                }
            }
            response
        } else {
            return Err(self.refuse(
                Code::FailedPrecondition,
                &format!(
                    "no peers available to evaluate chaincode {} in channel {CHANNEL}",
                    view.chaincode
                ),
            ));
        };
        if response.status >= 400 {
            return Err(answered_by.chaincode_failed(Code::Unknown, &response));
        }
        Ok(EvaluateResponse {
            result: Some(response),
        })
    }

    fn qscc(&self, input: &ChaincodeInput) -> Result<Response, Status> {
        let world = self.net.world.lock().unwrap();
        let arg = |i: usize| {
            input
                .args
                .get(i)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .unwrap_or_default()
        };
        if arg(1) != CHANNEL {
            return Err(self.refuse(Code::NotFound, "qscc: channel not found"));
        }
        let payload = match arg(0).as_str() {
            "GetChainInfo" => BlockchainInfo {
                height: world.blocks.len() as u64,
                ..BlockchainInfo::default()
            }
            .encode_to_vec(),
            "GetBlockByNumber" => {
                let n: usize = arg(2)
                    .parse()
                    .map_err(|_| self.refuse(Code::InvalidArgument, "qscc: bad number"))?;
                world
                    .blocks
                    .get(n)
                    .ok_or_else(|| self.refuse(Code::NotFound, "qscc: no such block"))?
                    .encode_to_vec()
            }
            other => return Err(self.refuse(Code::Unimplemented, &format!("qscc: {other}"))),
        };
        Ok(Response {
            status: 200,
            message: String::new(),
            payload,
        })
    }

    async fn endorse(self: &Arc<Self>, request: EndorseRequest) -> Result<EndorseResponse, Status> {
        let view = self.check_proposal(
            Call::Endorse,
            request.proposed_transaction,
            &request.transaction_id,
            &request.channel_id,
        )?;
        if view.chaincode != CHAINCODE {
            return Err(self.refuse(Code::NotFound, "chaincode not found"));
        }
        let (response, event, rwset) = self.simulate(&view).await;
        if response.status >= 400 {
            return Err(self.chaincode_failed(Code::Aborted, &response));
        }
        let disagree = self
            .net
            .disagree_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if disagree {
            self.net.seen.disagreements.fetch_add(1, Ordering::SeqCst);
            return Err(status_with_details(
                Code::Aborted,
                "failed to collect enough transaction endorsements, see attached details for \
                 more info",
                &[ErrorDetail {
                    address: "peer0.org2.example.com:9051".into(),
                    msp_id: "Org2MSP".into(),
                    message: "ProposalResponsePayloads do not match".into(),
                }],
            ));
        }
        let action = ChaincodeAction {
            results: write_set(&rwset),
            events: event
                .as_ref()
                .map(Message::encode_to_vec)
                .unwrap_or_default(),
            response: Some(response),
            chaincode_id: None,
        };
        let response_payload = ProposalResponsePayload {
            proposal_hash: Sha256::digest(&view.signed.proposal_bytes).to_vec(),
            extension: action.encode_to_vec(),
        }
        .encode_to_vec();
        let mut endorsed_bytes = response_payload.clone();
        endorsed_bytes.extend_from_slice(&self.peer_creator);
        let peer_signature: Signature = self.peer_key.sign(&endorsed_bytes);
        let transaction = Transaction {
            actions: vec![TransactionAction {
                header: view.signature_header.clone(),
                payload: ChaincodeActionPayload {
                    chaincode_proposal_payload: view.payload.clone(),
                    action: Some(ChaincodeEndorsedAction {
                        proposal_response_payload: response_payload,
                        endorsements: vec![Endorsement {
                            endorser: self.peer_creator.clone(),
                            signature: peer_signature.normalize_s().to_der().as_bytes().to_vec(),
                        }],
                    }),
                }
                .encode_to_vec(),
            }],
        };
        let header = Header::decode(view.header.as_slice()).unwrap();
        let payload = Payload {
            header: Some(header),
            data: transaction.encode_to_vec(),
        };
        self.net
            .world
            .lock()
            .unwrap()
            .endorsed
            .insert(view.tx_id.clone(), (rwset, event, view.timestamp.seconds));
        Ok(EndorseResponse {
            prepared_transaction: Some(Envelope {
                payload: payload.encode_to_vec(),
                signature: Vec::new(),
            }),
        })
    }

    fn submit(&self, request: SubmitRequest) -> Result<SubmitResponse, Status> {
        let envelope = request
            .prepared_transaction
            .ok_or_else(|| self.refuse(Code::InvalidArgument, "no transaction"))?;
        let payload = Payload::decode(envelope.payload.as_slice())
            .map_err(|_| self.refuse(Code::InvalidArgument, "bad payload"))?;
        let header = payload
            .header
            .ok_or_else(|| self.refuse(Code::InvalidArgument, "no header"))?;
        let (channel_header, signature_header) = self
            .check_header(&header, &request.transaction_id)
            .map_err(|fault| match fault {
                HeaderFault::Malformed(what) => self.refuse(Code::InvalidArgument, what),
                HeaderFault::UnknownChannel(channel) => self.unknown_channel(&channel),
                HeaderFault::TxId(reason) => self.refuse(Code::InvalidArgument, &reason),
            })?;
        self.verify_request(
            &signature_header.creator,
            &envelope.payload,
            &envelope.signature,
        )?;
        let mut world = self.net.world.lock().unwrap();
        if world.statuses.contains_key(&channel_header.tx_id)
            || world
                .pending
                .iter()
                .any(|p| p.tx_id == channel_header.tx_id)
        {
            return Err(self.refuse(Code::AlreadyExists, "duplicate transaction id"));
        }
        let (rwset, event, timestamp) =
            world
                .endorsed
                .remove(&channel_header.tx_id)
                .ok_or_else(|| {
                    self.refuse(
                        Code::FailedPrecondition,
                        "transaction was not endorsed here",
                    )
                })?;
        world.pending.push(PendingTx {
            tx_id: channel_header.tx_id,
            envelope: envelope.encode_to_vec(),
            timestamp,
            rwset,
            event,
        });
        Ok(SubmitResponse {})
    }

    async fn commit_status(
        &self,
        request: SignedCommitStatusRequest,
    ) -> Result<CommitStatusResponse, Status> {
        let inner = CommitStatusRequest::decode(request.request.as_slice())
            .map_err(|_| self.refuse(Code::InvalidArgument, "bad request"))?;
        self.verify_request(&inner.identity, &request.request, &request.signature)?;
        if inner.channel_id != CHANNEL {
            return Err(self.refuse(Code::NotFound, "channel not found"));
        }
        let mut height = self.net.height.subscribe();
        let wait = async {
            loop {
                if let Some((code, block)) = self
                    .net
                    .world
                    .lock()
                    .unwrap()
                    .statuses
                    .get(&inner.transaction_id)
                {
                    return CommitStatusResponse {
                        result: *code,
                        block_number: *block,
                    };
                }
                let _ = height.changed().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .map_err(|_| self.refuse(Code::DeadlineExceeded, "transaction not committed"))
    }

    fn chaincode_events(
        self: &Arc<Self>,
        request: SignedChaincodeEventsRequest,
    ) -> Result<BoxStream<'static, Result<ChaincodeEventsResponse, Status>>, Status> {
        let inner = ChaincodeEventsRequest::decode(request.request.as_slice())
            .map_err(|_| self.refuse(Code::InvalidArgument, "bad request"))?;
        self.verify_request(&inner.identity, &request.request, &request.signature)?;
        if inner.channel_id != CHANNEL {
            return Err(self.refuse(
                Code::PermissionDenied,
                &format!(
                    "Failed to get policy manager for channel [{}]",
                    inner.channel_id
                ),
            ));
        }
        let height = *self.net.height.borrow();
        let mut next = match inner.start_position.and_then(|p| p.r#type) {
            Some(seek_position::Type::Specified(s)) => s.number,
            Some(seek_position::Type::Oldest(_)) => 0,
            Some(seek_position::Type::Newest(_)) => height.saturating_sub(1),
            Some(seek_position::Type::NextCommit(_)) | None => height,
        };
        let mut skip_until =
            (!inner.after_transaction_id.is_empty()).then_some(inner.after_transaction_id);
        let limit = self.net.break_streams_after.load(Ordering::SeqCst);
        let (sender, receiver) = mpsc::channel(16);
        let shared = self.clone();
        let chaincode = inner.chaincode_id;
        tokio::spawn(async move {
            let mut heights = shared.net.height.subscribe();
            let mut sent = 0;
            loop {
                if heights.wait_for(|h| *h > next).await.is_err() {
                    return;
                }
                let events: Vec<ChaincodeEvent> = {
                    let world = shared.net.world.lock().unwrap();
                    world.events[next as usize]
                        .iter()
                        .filter(|e| e.chaincode_id == chaincode)
                        .cloned()
                        .collect()
                };
                let events: Vec<ChaincodeEvent> = match &skip_until {
                    Some(after) => {
                        let position = events.iter().position(|e| &e.tx_id == after);
                        match position {
                            Some(i) => {
                                skip_until = None;
                                events[i + 1..].to_vec()
                            }
                            None => Vec::new(),
                        }
                    }
                    None => events,
                };
                if !events.is_empty() {
                    if limit > 0 && sent == limit {
                        shared
                            .net
                            .seen
                            .streams_broken
                            .fetch_add(1, Ordering::SeqCst);
                        let _ = sender
                            .send(Err(Status::unavailable(
                                "FAKE: event stream broken on purpose",
                            )))
                            .await;
                        return;
                    }
                    let response = ChaincodeEventsResponse {
                        events,
                        block_number: next,
                    };
                    if sender.send(Ok(response)).await.is_err() {
                        return;
                    }
                    sent += 1;
                }
                next += 1;
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(receiver).boxed())
    }

    /// Whether a state request names a private data collection.
    fn names_collection(&self, kind: Type, payload: &[u8]) -> bool {
        match kind {
            Type::GetState | Type::GetPrivateDataHash => GetState::decode(payload)
                .map(|g| !g.collection.is_empty())
                .unwrap_or(false),
            Type::PutState => PutState::decode(payload)
                .map(|p| !p.collection.is_empty())
                .unwrap_or(false),
            Type::DelState => DelState::decode(payload)
                .map(|d| !d.collection.is_empty())
                .unwrap_or(false),
            _ => false,
        }
    }

    /// A private data request of the chaincode, as a peer answers it: the payload of the
    /// RESPONSE, or the text of the ERROR (in the words of Fabric's chaincode handler).
    fn private_data(
        &self,
        kind: Type,
        payload: &[u8],
        view: &ProposalView,
        rwset: &mut RwSet,
    ) -> Result<Vec<u8>, String> {
        let creator_is_member = self.net.collection_members.contains(&view.creator_msp);
        let peer_is_member = self.net.collection_members.contains(&self.msp);
        let known = |collection: &str| {
            if collection == assent_fabric::wire::DOCUMENTS_COLLECTION {
                Ok(())
            } else {
                Err(format!(
                    "collection {collection} not found in chaincode {CHAINCODE}"
                ))
            }
        };
        match kind {
            Type::GetPrivateDataHash => {
                // Every peer holds the hashes; no membership needed.
                let get = GetState::decode(payload).map_err(|e| e.to_string())?;
                known(&get.collection)?;
                let key = (get.collection, get.key);
                let world = self.net.world.lock().unwrap();
                let current = world.private_hashes.get(&key).cloned();
                drop(world);
                rwset
                    .private_reads
                    .push((key, current.as_ref().map(|c| c.1)));
                Ok(current.map(|c| c.0).unwrap_or_default())
            }
            Type::GetState => {
                let get = GetState::decode(payload).map_err(|e| e.to_string())?;
                known(&get.collection)?;
                if !creator_is_member {
                    return Err(format!(
                        "tx creator does not have read access permission on privatedata in \
                         chaincodeName:{CHAINCODE} collectionName: {}",
                        get.collection
                    ));
                }
                let key = (get.collection, get.key);
                let world = self.net.world.lock().unwrap();
                let hashed = world.private_hashes.get(&key).map(|c| c.1);
                let value = world
                    .private
                    .get(&self.msp)
                    .and_then(|store| store.get(&key))
                    .cloned();
                drop(world);
                if hashed.is_some() && (!peer_is_member || value.is_none()) {
                    let (block, tx) = hashed.unwrap_or_default();
                    return Err(format!(
                        "private data matching public hash version is not available. Public \
                         hash version = {{BlockNum: {block}, TxNum: {tx}}}, Private data version \
                         = <nil>"
                    ));
                }
                rwset.private_reads.push((key, hashed));
                Ok(value.unwrap_or_default())
            }
            Type::PutState | Type::DelState => {
                let (collection, key, value) = if kind == Type::PutState {
                    let put = PutState::decode(payload).map_err(|e| e.to_string())?;
                    (put.collection, put.key, Some(put.value))
                } else {
                    let del = DelState::decode(payload).map_err(|e| e.to_string())?;
                    (del.collection, del.key, None)
                };
                known(&collection)?;
                if !creator_is_member {
                    return Err(format!(
                        "tx creator does not have write access permission on privatedata in \
                         chaincodeName:{CHAINCODE} collectionName: {collection}"
                    ));
                }
                rwset.private_writes.insert((collection, key), value);
                Ok(Vec::new())
            }
            other => Err(format!("FAKE peer: {other:?} names no collection")),
        }
    }

    /// Runs a proposal through the chaincode over the shim stream.
    async fn simulate(&self, view: &ProposalView) -> (Response, Option<ChaincodeEvent>, RwSet) {
        let (response, event, rwset, _) = self.simulate_full(view).await;
        (response, event, rwset)
    }

    /// A simulation's answer, and whether it ended in an error (the chaincode sent ERROR, or
    /// the stream failed) rather than with the contract's answer.
    async fn simulate_checked(&self, view: &ProposalView) -> (Response, bool) {
        let (response, _, _, errored) = self.simulate_full(view).await;
        (response, errored)
    }

    /// This peer's detail for a simulation that ended in an error, in a Fabric peer's words.
    fn simulation_error(&self, response: &Response) -> ErrorDetail {
        ErrorDetail {
            address: self.address.clone(),
            msp_id: self.msp.clone(),
            message: format!(
                "error in simulation: transaction returned with failure: {}",
                response.message
            ),
        }
    }

    async fn simulate_full(
        &self,
        view: &ProposalView,
    ) -> (Response, Option<ChaincodeEvent>, RwSet, bool) {
        let mut replies = self.peer.open(&view.tx_id);
        self.peer.send(ChaincodeMessage {
            r#type: Type::Transaction as i32,
            timestamp: Some(view.timestamp),
            payload: view.input.encode_to_vec(),
            txid: view.tx_id.clone(),
            proposal: Some(view.signed.clone()),
            channel_id: CHANNEL.into(),
            ..ChaincodeMessage::default()
        });
        let mut rwset = RwSet::default();
        let mut iterators: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
        let iterator_ids = AtomicU64::new(0);
        let outcome = loop {
            let Some(message) = replies.recv().await else {
                break (
                    failure("FAKE peer: the chaincode stream closed"),
                    None,
                    true,
                );
            };
            let kind = Type::try_from(message.r#type).unwrap_or(Type::Undefined);
            let reply = |payload: Vec<u8>| ChaincodeMessage {
                r#type: Type::Response as i32,
                payload,
                txid: message.txid.clone(),
                channel_id: message.channel_id.clone(),
                ..ChaincodeMessage::default()
            };
            let page = |results: &mut Vec<Vec<u8>>, id: &str| {
                let rest = results.split_off(results.len().min(PAGE));
                let this = std::mem::replace(results, rest);
                QueryResponse {
                    results: this
                        .into_iter()
                        .map(|result_bytes| QueryResultBytes { result_bytes })
                        .collect(),
                    has_more: !results.is_empty(),
                    id: id.to_owned(),
                    metadata: Vec::new(),
                }
                .encode_to_vec()
            };
            match kind {
                Type::GetState | Type::GetPrivateDataHash | Type::PutState | Type::DelState
                    if self.names_collection(kind, &message.payload) =>
                {
                    let answer = self.private_data(kind, &message.payload, view, &mut rwset);
                    self.peer.send(match answer {
                        Ok(payload) => reply(payload),
                        Err(text) => ChaincodeMessage {
                            r#type: Type::Error as i32,
                            payload: text.into_bytes(),
                            ..reply(Vec::new())
                        },
                    });
                }
                Type::GetState => {
                    let key = GetState::decode(message.payload.as_slice()).unwrap().key;
                    let world = self.net.world.lock().unwrap();
                    let current = world.values.get(&key);
                    rwset.reads.push((key.clone(), current.map(|c| c.1)));
                    let value = current.map(|c| c.0.clone()).unwrap_or_default();
                    drop(world);
                    self.peer.send(reply(value));
                }
                Type::PutState => {
                    let put = PutState::decode(message.payload.as_slice()).unwrap();
                    rwset.writes.insert(put.key, Some(put.value));
                    self.peer.send(reply(Vec::new()));
                }
                Type::DelState => {
                    let del = DelState::decode(message.payload.as_slice()).unwrap();
                    rwset.writes.insert(del.key, None);
                    self.peer.send(reply(Vec::new()));
                }
                Type::GetStateByRange
                    if !GetStateByRange::decode(message.payload.as_slice())
                        .unwrap()
                        .collection
                        .is_empty() =>
                {
                    self.peer.send(ChaincodeMessage {
                        r#type: Type::Error as i32,
                        payload: b"FAKE peer: private range queries are not modelled".to_vec(),
                        ..reply(Vec::new())
                    });
                }
                Type::GetStateByRange => {
                    let range = GetStateByRange::decode(message.payload.as_slice()).unwrap();
                    let found = range_of(
                        &self.net.world.lock().unwrap(),
                        &range.start_key,
                        &range.end_key,
                    );
                    rwset.ranges.push((
                        range.start_key,
                        range.end_key,
                        found.iter().map(|(k, _, v)| (k.clone(), *v)).collect(),
                    ));
                    let mut results: Vec<Vec<u8>> = found
                        .into_iter()
                        .map(|(key, value, _)| {
                            Kv {
                                namespace: CHAINCODE.into(),
                                key,
                                value,
                            }
                            .encode_to_vec()
                        })
                        .collect();
                    let id = format!("it-{}", iterator_ids.fetch_add(1, Ordering::SeqCst));
                    let first = page(&mut results, &id);
                    iterators.insert(id, results);
                    self.peer.send(reply(first));
                }
                Type::GetHistoryForKey => {
                    let key = GetHistoryForKey::decode(message.payload.as_slice())
                        .unwrap()
                        .key;
                    let mut results: Vec<Vec<u8>> = self
                        .net
                        .world
                        .lock()
                        .unwrap()
                        .history
                        .get(&key)
                        .map(|h| h.iter().rev().map(Message::encode_to_vec).collect())
                        .unwrap_or_default();
                    let id = format!("it-{}", iterator_ids.fetch_add(1, Ordering::SeqCst));
                    let first = page(&mut results, &id);
                    iterators.insert(id, results);
                    self.peer.send(reply(first));
                }
                Type::QueryStateNext => {
                    let id = QueryStateNext::decode(message.payload.as_slice())
                        .unwrap()
                        .id;
                    match iterators.get_mut(&id) {
                        Some(results) => {
                            let next = page(results, &id);
                            self.peer.send(reply(next));
                        }
                        None => self.peer.send(ChaincodeMessage {
                            r#type: Type::Error as i32,
                            payload: b"FAKE peer: no such iterator".to_vec(),
                            ..reply(Vec::new())
                        }),
                    }
                }
                Type::QueryStateClose => {
                    let id = assent_fabric::protos::peer::QueryStateClose::decode(
                        message.payload.as_slice(),
                    )
                    .unwrap()
                    .id;
                    iterators.remove(&id);
                    self.peer.send(reply(
                        QueryResponse {
                            id,
                            ..QueryResponse::default()
                        }
                        .encode_to_vec(),
                    ));
                }
                Type::Completed => {
                    let response = Response::decode(message.payload.as_slice()).unwrap();
                    let event = message.chaincode_event.map(|mut e| {
                        e.chaincode_id = CHAINCODE.into();
                        e.tx_id = view.tx_id.clone();
                        e
                    });
                    break (response, event, false);
                }
                Type::Error => {
                    break (
                        failure(&String::from_utf8_lossy(&message.payload)),
                        None,
                        true,
                    );
                }
                other => {
                    break (
                        failure(&format!("FAKE peer: unexpected {other:?}")),
                        None,
                        true,
                    );
                }
            }
        };
        self.peer.close(&view.tx_id);
        (outcome.0, outcome.1, rwset, outcome.2)
    }
}

/// A simulation's read-write set as it lands in the transaction (`ChaincodeAction.results`):
/// public reads and writes in clear, private ones only as SHA-256 of key and value.
fn write_set(rwset: &RwSet) -> Vec<u8> {
    let version = |v: &Option<Version>| {
        v.map(|(block_num, tx_num)| RwVersion {
            block_num,
            tx_num: u64::from(tx_num),
        })
    };
    let public = KvRwSet {
        reads: rwset
            .reads
            .iter()
            .map(|(key, v)| KvRead {
                key: key.clone(),
                version: version(v),
            })
            .collect(),
        writes: rwset
            .writes
            .iter()
            .map(|(key, value)| KvWrite {
                key: key.clone(),
                is_delete: value.is_none(),
                value: value.clone().unwrap_or_default(),
            })
            .collect(),
    };
    let mut collections: BTreeMap<String, (HashedRwSet, KvRwSet)> = BTreeMap::new();
    for ((collection, key), v) in &rwset.private_reads {
        let (hashed, private) = collections.entry(collection.clone()).or_default();
        hashed.hashed_reads.push(KvReadHash {
            key_hash: Sha256::digest(key.as_bytes()).to_vec(),
            version: version(v),
        });
        private.reads.push(KvRead {
            key: key.clone(),
            version: version(v),
        });
    }
    for ((collection, key), value) in &rwset.private_writes {
        let (hashed, private) = collections.entry(collection.clone()).or_default();
        hashed.hashed_writes.push(KvWriteHash {
            key_hash: Sha256::digest(key.as_bytes()).to_vec(),
            is_delete: value.is_none(),
            value_hash: value
                .as_ref()
                .map(|v| Sha256::digest(v).to_vec())
                .unwrap_or_default(),
            is_purge: false,
        });
        private.writes.push(KvWrite {
            key: key.clone(),
            is_delete: value.is_none(),
            value: value.clone().unwrap_or_default(),
        });
    }
    TxReadWriteSet {
        data_model: 0,
        ns_rwset: vec![NsReadWriteSet {
            namespace: CHAINCODE.into(),
            rwset: public.encode_to_vec(),
            collection_hashed_rwset: collections
                .into_iter()
                .map(
                    |(collection_name, (hashed, private))| CollectionHashedReadWriteSet {
                        collection_name,
                        hashed_rwset: hashed.encode_to_vec(),
                        pvt_rwset_hash: Sha256::digest(private.encode_to_vec()).to_vec(),
                    },
                )
                .collect(),
        }],
    }
    .encode_to_vec()
}

fn failure(message: &str) -> Response {
    Response {
        status: 500,
        message: message.to_owned(),
        payload: Vec::new(),
    }
}

fn range_of(world: &World, start: &str, end: &str) -> Vec<(String, Vec<u8>, Version)> {
    world
        .values
        .range(start.to_owned()..)
        .take_while(|(k, _)| end.is_empty() || k.as_str() < end)
        .map(|(k, (v, version))| (k.clone(), v.clone(), *version))
        .collect()
}

/// MVCC: every key read is at the version read; every range holds the same keys at the same
/// versions.
fn validate(world: &World, rwset: &RwSet) -> i32 {
    for (key, version) in &rwset.reads {
        if world.values.get(key).map(|c| c.1) != *version {
            return tx_validation_code::MVCC_READ_CONFLICT;
        }
    }
    for (key, version) in &rwset.private_reads {
        if world.private_hashes.get(key).map(|c| c.1) != *version {
            return tx_validation_code::MVCC_READ_CONFLICT;
        }
    }
    for (start, end, seen) in &rwset.ranges {
        let now: Vec<(String, Version)> = range_of(world, start, end)
            .into_iter()
            .map(|(k, _, v)| (k, v))
            .collect();
        if &now != seen {
            return tx_validation_code::PHANTOM_READ_CONFLICT;
        }
    }
    tx_validation_code::VALID
}

fn push_block(world: &mut World, data: Vec<Vec<u8>>, filter: Vec<u8>, events: Vec<ChaincodeEvent>) {
    let number = world.blocks.len() as u64;
    let previous_hash = world
        .blocks
        .last()
        .and_then(|b| b.header.as_ref())
        .map(|h| Sha256::digest(h.encode_to_vec()).to_vec())
        .unwrap_or_default();
    let data_hash = {
        let mut hasher = Sha256::new();
        for d in &data {
            hasher.update(d);
        }
        hasher.finalize().to_vec()
    };
    world.blocks.push(Block {
        header: Some(BlockHeader {
            number,
            previous_hash,
            data_hash,
        }),
        data: Some(BlockData { data }),
        metadata: Some(BlockMetadata {
            metadata: vec![Vec::new(), Vec::new(), filter, Vec::new(), Vec::new()],
        }),
    });
    world.events.push(events);
}

fn certificate_key(pem: &[u8]) -> Option<VerifyingKey> {
    use p256::pkcs8::DecodePublicKey;
    use x509_cert::der::{DecodePem, Encode};
    let certificate = x509_cert::Certificate::from_pem(pem).ok()?;
    let spki = certificate
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .ok()?;
    VerifyingKey::from_public_key_der(&spki).ok()
}

/// The FAKE peer's end of the chaincode stream: it dials the chaincode server, answers
/// REGISTER with REGISTERED and READY, and routes the chaincode's messages by transaction.
struct PeerConnection {
    outbound: mpsc::UnboundedSender<ChaincodeMessage>,
    routes: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<ChaincodeMessage>>>>,
}

impl PeerConnection {
    async fn connect(addr: std::net::SocketAddr, tls: Option<ClientTlsConfig>) -> PeerConnection {
        assent_fabric::ensure_crypto_provider();
        let mut endpoint = Channel::from_shared(match tls {
            Some(_) => format!("https://{addr}"),
            None => format!("http://{addr}"),
        })
        .unwrap();
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).unwrap();
        }
        let channel = endpoint
            .connect()
            .await
            .expect("the FAKE peer reaches the chaincode server");
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let (outbound, receiver) = mpsc::unbounded_channel();
        let response = grpc
            .streaming(
                Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(
                    receiver,
                )),
                path(paths::CHAINCODE_CONNECT),
                ProstCodec::<ChaincodeMessage, ChaincodeMessage>::default(),
            )
            .await
            .expect("the chaincode accepts the stream");
        let mut inbound = response.into_inner();
        let register = inbound.message().await.unwrap().expect("REGISTER");
        assert_eq!(register.r#type, Type::Register as i32);
        let id =
            assent_fabric::protos::peer::ChaincodeId::decode(register.payload.as_slice()).unwrap();
        assert_eq!(
            id.name, PACKAGE_ID,
            "the chaincode registers with its package id"
        );
        for kind in [Type::Registered, Type::Ready] {
            outbound
                .send(ChaincodeMessage {
                    r#type: kind as i32,
                    ..ChaincodeMessage::default()
                })
                .unwrap();
        }
        let routes: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<ChaincodeMessage>>>> =
            Arc::default();
        let routing = routes.clone();
        tokio::spawn(async move {
            while let Ok(Some(message)) = inbound.message().await {
                assert_eq!(message.channel_id, CHANNEL, "replies carry the channel id");
                let route = routing.lock().unwrap().get(&message.txid).cloned();
                if let Some(route) = route {
                    let _ = route.send(message);
                }
            }
        });
        PeerConnection { outbound, routes }
    }

    fn open(&self, tx_id: &str) -> mpsc::UnboundedReceiver<ChaincodeMessage> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.routes.lock().unwrap().insert(tx_id.to_owned(), sender);
        receiver
    }

    fn close(&self, tx_id: &str) {
        self.routes.lock().unwrap().remove(tx_id);
    }

    fn send(&self, message: ChaincodeMessage) {
        let _ = self.outbound.send(message);
    }
}
