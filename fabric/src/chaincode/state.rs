//! The contract's state inside the chaincode: [`ContractState`] turned into shim requests
//! (GET_STATE, PUT_STATE, DEL_STATE, GET_STATE_BY_RANGE with QUERY_STATE_NEXT paging and
//! QUERY_STATE_CLOSE, GET_HISTORY_FOR_KEY) sent on the peer's stream, each waiting for the
//! peer's RESPONSE or ERROR; and the transaction's event. Private data: GET_STATE and
//! PUT_STATE naming a collection (GetPrivateData, PutPrivateData) and
//! GET_PRIVATE_DATA_HASH.
//!
//! Owns one transaction's side of the conversation. Runs on a blocking thread (the contract
//! is synchronous); leaves routing replies to it to the stream (`chaincode`).

use std::sync::mpsc::Receiver;
use std::time::Duration;

use assent_consent::{ContractState, HistoryEntry, Timestamp};
use prost::Message;
use tokio::sync::mpsc::UnboundedSender;
use tonic::Status;

use crate::protos::peer::chaincode_message::Type;
use crate::protos::peer::{
    ChaincodeMessage, DelState, GetHistoryForKey, GetState, GetStateByRange, KeyModification, Kv,
    PutState, QueryResponse, QueryStateClose, QueryStateNext,
};

/// Why a state operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShimError {
    #[error("the peer refused {request}: {message}")]
    Peer {
        request: &'static str,
        message: String,
    },
    #[error("the peer sent {got:?} in reply to {request}")]
    Unexpected { request: &'static str, got: Type },
    #[error("no reply to {request} within {wait:?}")]
    Timeout {
        request: &'static str,
        wait: Duration,
    },
    #[error("the stream to the peer is closed")]
    Closed,
    #[error("malformed reply to {request}: {reason}")]
    Malformed {
        request: &'static str,
        reason: String,
    },
}

/// The state of one transaction, as the peer holds it.
pub(crate) struct ShimState {
    pub(crate) channel_id: String,
    pub(crate) txid: String,
    pub(crate) outbound: UnboundedSender<Result<ChaincodeMessage, Status>>,
    pub(crate) replies: Receiver<ChaincodeMessage>,
    pub(crate) reply_timeout: Duration,
    pub(crate) event: Option<(String, Vec<u8>)>,
}

impl ShimState {
    fn call(
        &self,
        kind: Type,
        request: &'static str,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, ShimError> {
        let message = ChaincodeMessage {
            r#type: kind as i32,
            payload,
            txid: self.txid.clone(),
            channel_id: self.channel_id.clone(),
            ..ChaincodeMessage::default()
        };
        self.outbound
            .send(Ok(message))
            .map_err(|_| ShimError::Closed)?;
        let reply = self
            .replies
            .recv_timeout(self.reply_timeout)
            .map_err(|e| match e {
                std::sync::mpsc::RecvTimeoutError::Timeout => ShimError::Timeout {
                    request,
                    wait: self.reply_timeout,
                },
                std::sync::mpsc::RecvTimeoutError::Disconnected => ShimError::Closed,
            })?;
        match Type::try_from(reply.r#type) {
            Ok(Type::Response) => Ok(reply.payload),
            Ok(Type::Error) => Err(ShimError::Peer {
                request,
                message: String::from_utf8_lossy(&reply.payload).into_owned(),
            }),
            Ok(other) => Err(ShimError::Unexpected {
                request,
                got: other,
            }),
            Err(_) => Err(ShimError::Unexpected {
                request,
                got: Type::Undefined,
            }),
        }
    }

    /// Runs a query that answers in pages: every result, then the iterator closed.
    fn paged(
        &self,
        kind: Type,
        request: &'static str,
        payload: Vec<u8>,
    ) -> Result<Vec<Vec<u8>>, ShimError> {
        let malformed = |e: prost::DecodeError| ShimError::Malformed {
            request,
            reason: e.to_string(),
        };
        let mut page = QueryResponse::decode(self.call(kind, request, payload)?.as_slice())
            .map_err(malformed)?;
        let mut results = Vec::new();
        loop {
            results.extend(page.results.into_iter().map(|r| r.result_bytes));
            if !page.has_more {
                break;
            }
            let next = QueryStateNext {
                id: page.id.clone(),
            }
            .encode_to_vec();
            let id = page.id.clone();
            page = QueryResponse::decode(
                self.call(Type::QueryStateNext, "QUERY_STATE_NEXT", next)?
                    .as_slice(),
            )
            .map_err(malformed)?;
            if page.id.is_empty() {
                page.id = id;
            }
        }
        if !page.id.is_empty() {
            let close = QueryStateClose { id: page.id }.encode_to_vec();
            self.call(Type::QueryStateClose, "QUERY_STATE_CLOSE", close)?;
        }
        Ok(results)
    }
}

/// Private data: a collection's entries, which the peer keeps off the block (only their
/// hashes are in the write set).
impl ShimState {
    /// GetPrivateData: the value of `key` in `collection`; `None` when absent. The peer
    /// refuses a creator whose organization may not read the collection (`memberOnlyRead`).
    pub(crate) fn get_private(
        &self,
        collection: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, ShimError> {
        self.private_request(Type::GetState, "GET_STATE", collection, key)
    }

    /// PutPrivateData: writes `value` under `key` in `collection`.
    pub(crate) fn put_private(
        &mut self,
        collection: &str,
        key: &str,
        value: &[u8],
    ) -> Result<(), ShimError> {
        let payload = PutState {
            key: key.to_owned(),
            value: value.to_vec(),
            collection: collection.to_owned(),
        }
        .encode_to_vec();
        self.call(Type::PutState, "PUT_STATE", payload).map(drop)
    }

    /// GetPrivateDataHash: SHA-256 of the value of `key` in `collection`, from the public
    /// hashed state that every peer of the channel holds; `None` when absent.
    pub(crate) fn get_private_hash(
        &self,
        collection: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, ShimError> {
        self.private_request(
            Type::GetPrivateDataHash,
            "GET_PRIVATE_DATA_HASH",
            collection,
            key,
        )
    }

    /// A GetState-shaped request naming `collection` (GET_STATE of private data,
    /// GET_PRIVATE_DATA_HASH); an empty answer is `None`.
    fn private_request(
        &self,
        kind: Type,
        name: &'static str,
        collection: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, ShimError> {
        let payload = GetState {
            key: key.to_owned(),
            collection: collection.to_owned(),
        }
        .encode_to_vec();
        let answer = self.call(kind, name, payload)?;
        Ok((!answer.is_empty()).then_some(answer))
    }
}

impl ContractState for ShimState {
    type Error = ShimError;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ShimError> {
        let payload = GetState {
            key: key.to_owned(),
            collection: String::new(),
        }
        .encode_to_vec();
        let value = self.call(Type::GetState, "GET_STATE", payload)?;
        // Fabric answers an absent key with an empty value (and stores no empty values).
        Ok((!value.is_empty()).then_some(value))
    }

    fn put(&mut self, key: &str, value: &[u8]) -> Result<(), ShimError> {
        let payload = PutState {
            key: key.to_owned(),
            value: value.to_vec(),
            collection: String::new(),
        }
        .encode_to_vec();
        self.call(Type::PutState, "PUT_STATE", payload).map(drop)
    }

    fn delete(&mut self, key: &str) -> Result<(), ShimError> {
        let payload = DelState {
            key: key.to_owned(),
            collection: String::new(),
        }
        .encode_to_vec();
        self.call(Type::DelState, "DEL_STATE", payload).map(drop)
    }

    fn range(&self, start: &str, end: &str) -> Result<Vec<(String, Vec<u8>)>, ShimError> {
        let payload = GetStateByRange {
            start_key: start.to_owned(),
            end_key: end.to_owned(),
            collection: String::new(),
            metadata: Vec::new(),
        }
        .encode_to_vec();
        self.paged(Type::GetStateByRange, "GET_STATE_BY_RANGE", payload)?
            .into_iter()
            .map(|bytes| {
                let kv = Kv::decode(bytes.as_slice()).map_err(|e| ShimError::Malformed {
                    request: "GET_STATE_BY_RANGE",
                    reason: e.to_string(),
                })?;
                Ok((kv.key, kv.value))
            })
            .collect()
    }

    fn history(&self, key: &str) -> Result<Vec<HistoryEntry>, ShimError> {
        let payload = GetHistoryForKey {
            key: key.to_owned(),
        }
        .encode_to_vec();
        let mut entries: Vec<HistoryEntry> = self
            .paged(Type::GetHistoryForKey, "GET_HISTORY_FOR_KEY", payload)?
            .into_iter()
            .map(|bytes| {
                let m = KeyModification::decode(bytes.as_slice()).map_err(|e| {
                    ShimError::Malformed {
                        request: "GET_HISTORY_FOR_KEY",
                        reason: e.to_string(),
                    }
                })?;
                Ok(HistoryEntry {
                    tx_id: m.tx_id,
                    timestamp: Timestamp::from_unix_seconds(
                        m.timestamp.map(|t| t.seconds).unwrap_or_default(),
                    ),
                    value: (!m.is_delete).then_some(m.value),
                })
            })
            .collect::<Result<_, ShimError>>()?;
        // Fabric's history iterator returns the newest modification first; the contract
        // wants the oldest first.
        entries.reverse();
        Ok(entries)
    }

    fn emit_event(&mut self, name: &str, payload: &[u8]) -> Result<(), ShimError> {
        self.event = Some((name.to_owned(), payload.to_vec()));
        Ok(())
    }
}
