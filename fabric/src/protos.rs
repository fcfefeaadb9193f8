//! Fabric's wire messages, written by hand as prost derives: only the ones Assent sends or
//! reads. Each module is named after the protobuf package the message lives in; the field
//! numbers are those of Fabric's published protocol (facts of the wire format, checked
//! against Fabric's `.proto` files by reading them, not copied from them).
//!
//! Owns the byte layout. Leaves out building and checking messages (`proposal`,
//! `identity`), transport (`client`, `chaincode`) and everything Fabric defines that
//! Assent never sees (config transactions, private data's gossip and purge, the orderer's
//! broadcast, …).

/// `google.protobuf` and `google.rpc` messages Fabric embeds.
pub mod google {
    /// `google.protobuf.Timestamp`.
    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }

    /// `google.protobuf.Any`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    /// `google.rpc.Status`: what a gRPC status's details bytes hold.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RpcStatus {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<Any>,
    }
}

/// Package `common`: envelopes, headers and blocks.
pub mod common {
    use super::google::Timestamp;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Envelope {
        #[prost(bytes = "vec", tag = "1")]
        pub payload: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub signature: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Payload {
        #[prost(message, optional, tag = "1")]
        pub header: Option<Header>,
        #[prost(bytes = "vec", tag = "2")]
        pub data: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Header {
        #[prost(bytes = "vec", tag = "1")]
        pub channel_header: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub signature_header: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ChannelHeader {
        #[prost(int32, tag = "1")]
        pub r#type: i32,
        #[prost(int32, tag = "2")]
        pub version: i32,
        #[prost(message, optional, tag = "3")]
        pub timestamp: Option<Timestamp>,
        #[prost(string, tag = "4")]
        pub channel_id: String,
        #[prost(string, tag = "5")]
        pub tx_id: String,
        #[prost(uint64, tag = "6")]
        pub epoch: u64,
        #[prost(bytes = "vec", tag = "7")]
        pub extension: Vec<u8>,
        #[prost(bytes = "vec", tag = "8")]
        pub tls_cert_hash: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SignatureHeader {
        #[prost(bytes = "vec", tag = "1")]
        pub creator: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub nonce: Vec<u8>,
    }

    /// `common.HeaderType` (only the values Assent uses).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum HeaderType {
        Message = 0,
        Config = 1,
        ConfigUpdate = 2,
        EndorserTransaction = 3,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Block {
        #[prost(message, optional, tag = "1")]
        pub header: Option<BlockHeader>,
        #[prost(message, optional, tag = "2")]
        pub data: Option<BlockData>,
        #[prost(message, optional, tag = "3")]
        pub metadata: Option<BlockMetadata>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BlockHeader {
        #[prost(uint64, tag = "1")]
        pub number: u64,
        #[prost(bytes = "vec", tag = "2")]
        pub previous_hash: Vec<u8>,
        #[prost(bytes = "vec", tag = "3")]
        pub data_hash: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BlockData {
        #[prost(bytes = "vec", repeated, tag = "1")]
        pub data: Vec<Vec<u8>>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BlockMetadata {
        #[prost(bytes = "vec", repeated, tag = "1")]
        pub metadata: Vec<Vec<u8>>,
    }

    /// Position of the transaction validation codes (one byte per transaction) in
    /// [`BlockMetadata::metadata`] (`common.BlockMetadataIndex.TRANSACTIONS_FILTER`).
    pub const TRANSACTIONS_FILTER: usize = 2;

    /// `common.BlockchainInfo` (what `qscc GetChainInfo` returns).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BlockchainInfo {
        #[prost(uint64, tag = "1")]
        pub height: u64,
        #[prost(bytes = "vec", tag = "2")]
        pub current_block_hash: Vec<u8>,
        #[prost(bytes = "vec", tag = "3")]
        pub previous_block_hash: Vec<u8>,
    }
}

/// Package `msp`.
pub mod msp {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SerializedIdentity {
        #[prost(string, tag = "1")]
        pub mspid: String,
        /// The PEM certificate, as bytes.
        #[prost(bytes = "vec", tag = "2")]
        pub id_bytes: Vec<u8>,
    }
}

/// Package `orderer` (only the seek position the events request carries).
pub mod orderer {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SeekPosition {
        #[prost(oneof = "seek_position::Type", tags = "1, 2, 3, 4")]
        pub r#type: Option<seek_position::Type>,
    }

    pub mod seek_position {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Type {
            #[prost(message, tag = "1")]
            Newest(super::SeekNewest),
            #[prost(message, tag = "2")]
            Oldest(super::SeekOldest),
            #[prost(message, tag = "3")]
            Specified(super::SeekSpecified),
            #[prost(message, tag = "4")]
            NextCommit(super::SeekNextCommit),
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SeekNewest {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SeekOldest {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SeekNextCommit {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SeekSpecified {
        #[prost(uint64, tag = "1")]
        pub number: u64,
    }
}

/// Package `protos`: proposals, responses, transactions, events and the chaincode shim.
pub mod peer {
    use std::collections::HashMap;

    use super::google::Timestamp;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SignedProposal {
        #[prost(bytes = "vec", tag = "1")]
        pub proposal_bytes: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub signature: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Proposal {
        #[prost(bytes = "vec", tag = "1")]
        pub header: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub payload: Vec<u8>,
        #[prost(bytes = "vec", tag = "3")]
        pub extension: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ChaincodeHeaderExtension {
        #[prost(message, optional, tag = "2")]
        pub chaincode_id: Option<ChaincodeId>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ChaincodeProposalPayload {
        #[prost(bytes = "vec", tag = "1")]
        pub input: Vec<u8>,
        #[prost(map = "string, bytes", tag = "2")]
        pub transient_map: HashMap<String, Vec<u8>>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ChaincodeAction {
        #[prost(bytes = "vec", tag = "1")]
        pub results: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub events: Vec<u8>,
        #[prost(message, optional, tag = "3")]
        pub response: Option<Response>,
        #[prost(message, optional, tag = "4")]
        pub chaincode_id: Option<ChaincodeId>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ProposalResponse {
        #[prost(int32, tag = "1")]
        pub version: i32,
        #[prost(message, optional, tag = "2")]
        pub timestamp: Option<Timestamp>,
        #[prost(message, optional, tag = "4")]
        pub response: Option<Response>,
        #[prost(bytes = "vec", tag = "5")]
        pub payload: Vec<u8>,
        #[prost(message, optional, tag = "6")]
        pub endorsement: Option<Endorsement>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Response {
        #[prost(int32, tag = "1")]
        pub status: i32,
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(bytes = "vec", tag = "3")]
        pub payload: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ProposalResponsePayload {
        #[prost(bytes = "vec", tag = "1")]
        pub proposal_hash: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub extension: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Endorsement {
        #[prost(bytes = "vec", tag = "1")]
        pub endorser: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub signature: Vec<u8>,
    }

    #[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
    pub struct ChaincodeId {
        #[prost(string, tag = "1")]
        pub path: String,
        #[prost(string, tag = "2")]
        pub name: String,
        #[prost(string, tag = "3")]
        pub version: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ChaincodeInput {
        #[prost(bytes = "vec", repeated, tag = "1")]
        pub args: Vec<Vec<u8>>,
        #[prost(map = "string, bytes", tag = "2")]
        pub decorations: HashMap<String, Vec<u8>>,
        #[prost(bool, tag = "3")]
        pub is_init: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ChaincodeSpec {
        #[prost(int32, tag = "1")]
        pub r#type: i32,
        #[prost(message, optional, tag = "2")]
        pub chaincode_id: Option<ChaincodeId>,
        #[prost(message, optional, tag = "3")]
        pub input: Option<ChaincodeInput>,
        #[prost(int32, tag = "4")]
        pub timeout: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ChaincodeInvocationSpec {
        #[prost(message, optional, tag = "1")]
        pub chaincode_spec: Option<ChaincodeSpec>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ChaincodeEvent {
        #[prost(string, tag = "1")]
        pub chaincode_id: String,
        #[prost(string, tag = "2")]
        pub tx_id: String,
        #[prost(string, tag = "3")]
        pub event_name: String,
        #[prost(bytes = "vec", tag = "4")]
        pub payload: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Transaction {
        #[prost(message, repeated, tag = "1")]
        pub actions: Vec<TransactionAction>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TransactionAction {
        #[prost(bytes = "vec", tag = "1")]
        pub header: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub payload: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ChaincodeActionPayload {
        #[prost(bytes = "vec", tag = "1")]
        pub chaincode_proposal_payload: Vec<u8>,
        #[prost(message, optional, tag = "2")]
        pub action: Option<ChaincodeEndorsedAction>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ChaincodeEndorsedAction {
        #[prost(bytes = "vec", tag = "1")]
        pub proposal_response_payload: Vec<u8>,
        #[prost(message, repeated, tag = "2")]
        pub endorsements: Vec<Endorsement>,
    }

    /// `protos.TxValidationCode` (the values Assent tells apart; others stay numbers).
    pub mod tx_validation_code {
        pub const VALID: i32 = 0;
        pub const BAD_CREATOR_SIGNATURE: i32 = 4;
        pub const BAD_PROPOSAL_TXID: i32 = 8;
        pub const DUPLICATE_TXID: i32 = 9;
        pub const ENDORSEMENT_POLICY_FAILURE: i32 = 10;
        pub const MVCC_READ_CONFLICT: i32 = 11;
        pub const PHANTOM_READ_CONFLICT: i32 = 12;
        pub const TARGET_CHAIN_NOT_FOUND: i32 = 14;
    }

    /// `protos.ChaincodeMessage`: one message of the chaincode shim stream.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ChaincodeMessage {
        #[prost(enumeration = "chaincode_message::Type", tag = "1")]
        pub r#type: i32,
        #[prost(message, optional, tag = "2")]
        pub timestamp: Option<Timestamp>,
        #[prost(bytes = "vec", tag = "3")]
        pub payload: Vec<u8>,
        #[prost(string, tag = "4")]
        pub txid: String,
        #[prost(message, optional, tag = "5")]
        pub proposal: Option<SignedProposal>,
        #[prost(message, optional, tag = "6")]
        pub chaincode_event: Option<ChaincodeEvent>,
        #[prost(string, tag = "7")]
        pub channel_id: String,
    }

    pub mod chaincode_message {
        /// `protos.ChaincodeMessage.Type`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
        #[repr(i32)]
        pub enum Type {
            Undefined = 0,
            Register = 1,
            Registered = 2,
            Init = 3,
            Ready = 4,
            Transaction = 5,
            Completed = 6,
            Error = 7,
            GetState = 8,
            PutState = 9,
            DelState = 10,
            InvokeChaincode = 11,
            Response = 13,
            GetStateByRange = 14,
            GetQueryResult = 15,
            QueryStateNext = 16,
            QueryStateClose = 17,
            Keepalive = 18,
            GetHistoryForKey = 19,
            GetStateMetadata = 20,
            PutStateMetadata = 21,
            GetPrivateDataHash = 22,
            PurgePrivateData = 23,
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetState {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(string, tag = "2")]
        pub collection: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutState {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
        #[prost(string, tag = "3")]
        pub collection: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DelState {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(string, tag = "2")]
        pub collection: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetStateByRange {
        #[prost(string, tag = "1")]
        pub start_key: String,
        #[prost(string, tag = "2")]
        pub end_key: String,
        #[prost(string, tag = "3")]
        pub collection: String,
        #[prost(bytes = "vec", tag = "4")]
        pub metadata: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GetHistoryForKey {
        #[prost(string, tag = "1")]
        pub key: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct QueryStateNext {
        #[prost(string, tag = "1")]
        pub id: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct QueryStateClose {
        #[prost(string, tag = "1")]
        pub id: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct QueryResultBytes {
        #[prost(bytes = "vec", tag = "1")]
        pub result_bytes: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct QueryResponse {
        #[prost(message, repeated, tag = "1")]
        pub results: Vec<QueryResultBytes>,
        #[prost(bool, tag = "2")]
        pub has_more: bool,
        #[prost(string, tag = "3")]
        pub id: String,
        #[prost(bytes = "vec", tag = "4")]
        pub metadata: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct QueryResponseMetadata {
        #[prost(int32, tag = "1")]
        pub fetched_records_count: i32,
        #[prost(string, tag = "2")]
        pub bookmark: String,
    }

    /// `queryresult.KV`: one result of a range query.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Kv {
        #[prost(string, tag = "1")]
        pub namespace: String,
        #[prost(string, tag = "2")]
        pub key: String,
        #[prost(bytes = "vec", tag = "3")]
        pub value: Vec<u8>,
    }

    /// `queryresult.KeyModification`: one result of a history query.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyModification {
        #[prost(string, tag = "1")]
        pub tx_id: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
        #[prost(message, optional, tag = "3")]
        pub timestamp: Option<Timestamp>,
        #[prost(bool, tag = "4")]
        pub is_delete: bool,
    }
}

/// Packages `rwset` and `kvrwset`: a transaction's read-write set, as it lands in the block
/// (`ChaincodeAction.results`). Private data appears there only hashed: a collection's
/// `CollectionHashedReadWriteSet` carries SHA-256 of each key and value, never the value.
pub mod rwset {
    /// `rwset.TxReadWriteSet` (data model 0: KV).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TxReadWriteSet {
        #[prost(int32, tag = "1")]
        pub data_model: i32,
        #[prost(message, repeated, tag = "2")]
        pub ns_rwset: Vec<NsReadWriteSet>,
    }

    /// `rwset.NsReadWriteSet`: one chaincode's reads and writes.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NsReadWriteSet {
        #[prost(string, tag = "1")]
        pub namespace: String,
        /// A [`KvRwSet`], encoded.
        #[prost(bytes = "vec", tag = "2")]
        pub rwset: Vec<u8>,
        #[prost(message, repeated, tag = "3")]
        pub collection_hashed_rwset: Vec<CollectionHashedReadWriteSet>,
    }

    /// `rwset.CollectionHashedReadWriteSet`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CollectionHashedReadWriteSet {
        #[prost(string, tag = "1")]
        pub collection_name: String,
        /// A [`HashedRwSet`], encoded.
        #[prost(bytes = "vec", tag = "2")]
        pub hashed_rwset: Vec<u8>,
        /// SHA-256 of the collection's private read-write set.
        #[prost(bytes = "vec", tag = "3")]
        pub pvt_rwset_hash: Vec<u8>,
    }

    /// `kvrwset.KVRWSet` (public data, and a collection's private set off the block).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KvRwSet {
        #[prost(message, repeated, tag = "1")]
        pub reads: Vec<KvRead>,
        #[prost(message, repeated, tag = "3")]
        pub writes: Vec<KvWrite>,
    }

    /// `kvrwset.HashedRWSet`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HashedRwSet {
        #[prost(message, repeated, tag = "1")]
        pub hashed_reads: Vec<KvReadHash>,
        #[prost(message, repeated, tag = "2")]
        pub hashed_writes: Vec<KvWriteHash>,
    }

    /// `kvrwset.KVRead`: no version for a key that did not exist.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KvRead {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub version: Option<Version>,
    }

    /// `kvrwset.KVWrite`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KvWrite {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(bool, tag = "2")]
        pub is_delete: bool,
        #[prost(bytes = "vec", tag = "3")]
        pub value: Vec<u8>,
    }

    /// `kvrwset.KVReadHash`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KvReadHash {
        #[prost(bytes = "vec", tag = "1")]
        pub key_hash: Vec<u8>,
        #[prost(message, optional, tag = "2")]
        pub version: Option<Version>,
    }

    /// `kvrwset.KVWriteHash`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KvWriteHash {
        #[prost(bytes = "vec", tag = "1")]
        pub key_hash: Vec<u8>,
        #[prost(bool, tag = "2")]
        pub is_delete: bool,
        #[prost(bytes = "vec", tag = "3")]
        pub value_hash: Vec<u8>,
        #[prost(bool, tag = "4")]
        pub is_purge: bool,
    }

    /// `kvrwset.Version`: the height of the transaction that wrote the key.
    #[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
    pub struct Version {
        #[prost(uint64, tag = "1")]
        pub block_num: u64,
        #[prost(uint64, tag = "2")]
        pub tx_num: u64,
    }
}

/// Package `gateway`: the Fabric Gateway service's requests and responses.
pub mod gateway {
    use super::common::Envelope;
    use super::orderer::SeekPosition;
    use super::peer::{ChaincodeEvent, Response, SignedProposal};

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EvaluateRequest {
        #[prost(string, tag = "1")]
        pub transaction_id: String,
        #[prost(string, tag = "2")]
        pub channel_id: String,
        #[prost(message, optional, tag = "3")]
        pub proposed_transaction: Option<SignedProposal>,
        #[prost(string, repeated, tag = "4")]
        pub target_organizations: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EvaluateResponse {
        #[prost(message, optional, tag = "1")]
        pub result: Option<Response>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EndorseRequest {
        #[prost(string, tag = "1")]
        pub transaction_id: String,
        #[prost(string, tag = "2")]
        pub channel_id: String,
        #[prost(message, optional, tag = "3")]
        pub proposed_transaction: Option<SignedProposal>,
        #[prost(string, repeated, tag = "4")]
        pub endorsing_organizations: Vec<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct EndorseResponse {
        #[prost(message, optional, tag = "1")]
        pub prepared_transaction: Option<Envelope>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SubmitRequest {
        #[prost(string, tag = "1")]
        pub transaction_id: String,
        #[prost(string, tag = "2")]
        pub channel_id: String,
        #[prost(message, optional, tag = "3")]
        pub prepared_transaction: Option<Envelope>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SubmitResponse {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SignedCommitStatusRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub request: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub signature: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CommitStatusRequest {
        #[prost(string, tag = "1")]
        pub transaction_id: String,
        #[prost(string, tag = "2")]
        pub channel_id: String,
        #[prost(bytes = "vec", tag = "3")]
        pub identity: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CommitStatusResponse {
        /// A `protos.TxValidationCode`.
        #[prost(int32, tag = "1")]
        pub result: i32,
        #[prost(uint64, tag = "2")]
        pub block_number: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SignedChaincodeEventsRequest {
        #[prost(bytes = "vec", tag = "1")]
        pub request: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub signature: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ChaincodeEventsRequest {
        #[prost(string, tag = "1")]
        pub channel_id: String,
        #[prost(string, tag = "2")]
        pub chaincode_id: String,
        #[prost(bytes = "vec", tag = "3")]
        pub identity: Vec<u8>,
        #[prost(message, optional, tag = "4")]
        pub start_position: Option<SeekPosition>,
        #[prost(string, tag = "5")]
        pub after_transaction_id: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ChaincodeEventsResponse {
        #[prost(message, repeated, tag = "1")]
        pub events: Vec<ChaincodeEvent>,
        #[prost(uint64, tag = "2")]
        pub block_number: u64,
    }

    #[derive(Clone, PartialEq, Eq, prost::Message)]
    pub struct ErrorDetail {
        #[prost(string, tag = "1")]
        pub address: String,
        #[prost(string, tag = "2")]
        pub msp_id: String,
        #[prost(string, tag = "3")]
        pub message: String,
    }

    /// The type URL of [`ErrorDetail`] inside a status's `details`.
    pub const ERROR_DETAIL_TYPE_URL: &str = "type.googleapis.com/gateway.ErrorDetail";
}

/// gRPC method paths, written out (no code generation).
pub mod paths {
    pub const GATEWAY_SERVICE: &str = "gateway.Gateway";
    pub const EVALUATE: &str = "/gateway.Gateway/Evaluate";
    pub const ENDORSE: &str = "/gateway.Gateway/Endorse";
    pub const SUBMIT: &str = "/gateway.Gateway/Submit";
    pub const COMMIT_STATUS: &str = "/gateway.Gateway/CommitStatus";
    pub const CHAINCODE_EVENTS: &str = "/gateway.Gateway/ChaincodeEvents";
    pub const CHAINCODE_SERVICE: &str = "protos.Chaincode";
    pub const CHAINCODE_CONNECT: &str = "/protos.Chaincode/Connect";
}
