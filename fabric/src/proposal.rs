//! The signed messages a Fabric client builds (proposals, the prepared transaction's
//! signature, commit-status and chaincode-events requests) and the reading of what comes back
//! (a transaction's chaincode response and event, a block's chaincode events).
//!
//! Owns the nesting of Fabric's envelopes and headers: transaction id = hex(SHA-256(nonce ‖
//! creator)), a 24-byte random nonce, an `ENDORSER_TRANSACTION` channel header with the
//! chaincode id extension, the signature header, and `ChaincodeProposalPayload` with the
//! invocation spec and transient map. Leaves out keys and signature algorithms (`identity`)
//! and transport (`client`).

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;
use sha2::{Digest, Sha256};

use crate::identity::SigningIdentity;
use crate::protos::common::{
    Block, ChannelHeader, Envelope, HeaderType, Payload, SignatureHeader, TRANSACTIONS_FILTER,
};
use crate::protos::gateway::{
    ChaincodeEventsRequest, CommitStatusRequest, SignedChaincodeEventsRequest,
    SignedCommitStatusRequest,
};
use crate::protos::google::Timestamp;
use crate::protos::orderer::{SeekNextCommit, SeekPosition, SeekSpecified, seek_position};
use crate::protos::peer::{
    ChaincodeAction, ChaincodeActionPayload, ChaincodeEvent, ChaincodeHeaderExtension, ChaincodeId,
    ChaincodeInput, ChaincodeInvocationSpec, ChaincodeProposalPayload, ChaincodeSpec, Proposal,
    ProposalResponsePayload, Response, SignedProposal, Transaction, tx_validation_code,
};

/// The length of a proposal's nonce, in bytes.
pub const NONCE_LEN: usize = 24;

/// `ChaincodeSpec.Type` of chaincode-as-a-service written in neither Go, Node nor Java.
const CHAINCODE_TYPE_UNDEFINED: i32 = 0;

/// Why a message received could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what}: {reason}")]
pub struct MalformedMessage {
    pub what: &'static str,
    pub reason: String,
}

fn malformed(what: &'static str, reason: impl std::fmt::Display) -> MalformedMessage {
    MalformedMessage {
        what,
        reason: reason.to_string(),
    }
}

/// A transaction id: hex(SHA-256(nonce ‖ creator)).
pub fn transaction_id(nonce: &[u8], creator: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(nonce);
    hasher.update(creator);
    hex::encode(hasher.finalize())
}

/// A fresh random nonce.
pub fn new_nonce() -> [u8; NONCE_LEN] {
    rand::random()
}

/// The current time as a protobuf timestamp.
pub fn now_timestamp() -> Timestamp {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since.subsec_nanos()).unwrap_or(0),
    }
}

/// A signed proposal and its transaction id.
#[derive(Debug, Clone)]
pub struct SignedProposalWithId {
    pub transaction_id: String,
    pub proposal: SignedProposal,
}

/// Builds and signs a proposal to invoke `chaincode` on `channel` with `args` (the first
/// being the function name).
pub fn signed_proposal(
    identity: &SigningIdentity,
    channel: &str,
    chaincode: &str,
    args: Vec<Vec<u8>>,
    transient: HashMap<String, Vec<u8>>,
) -> SignedProposalWithId {
    let nonce = new_nonce();
    let creator = identity.creator();
    let tx_id = transaction_id(&nonce, creator);
    let chaincode_id = ChaincodeId {
        name: chaincode.to_owned(),
        ..ChaincodeId::default()
    };
    let channel_header = ChannelHeader {
        r#type: HeaderType::EndorserTransaction as i32,
        version: 0,
        timestamp: Some(now_timestamp()),
        channel_id: channel.to_owned(),
        tx_id: tx_id.clone(),
        epoch: 0,
        extension: ChaincodeHeaderExtension {
            chaincode_id: Some(chaincode_id.clone()),
        }
        .encode_to_vec(),
        tls_cert_hash: Vec::new(),
    };
    let signature_header = SignatureHeader {
        creator: creator.to_vec(),
        nonce: nonce.to_vec(),
    };
    let header = crate::protos::common::Header {
        channel_header: channel_header.encode_to_vec(),
        signature_header: signature_header.encode_to_vec(),
    };
    let invocation = ChaincodeInvocationSpec {
        chaincode_spec: Some(ChaincodeSpec {
            r#type: CHAINCODE_TYPE_UNDEFINED,
            chaincode_id: Some(chaincode_id),
            input: Some(ChaincodeInput {
                args,
                decorations: HashMap::new(),
                is_init: false,
            }),
            timeout: 0,
        }),
    };
    let payload = ChaincodeProposalPayload {
        input: invocation.encode_to_vec(),
        transient_map: transient,
    };
    let proposal = Proposal {
        header: header.encode_to_vec(),
        payload: payload.encode_to_vec(),
        extension: Vec::new(),
    };
    let proposal_bytes = proposal.encode_to_vec();
    let signature = identity.sign(&proposal_bytes);
    SignedProposalWithId {
        transaction_id: tx_id,
        proposal: SignedProposal {
            proposal_bytes,
            signature,
        },
    }
}

/// Signs a prepared transaction (the envelope the gateway returned from Endorse).
pub fn sign_envelope(identity: &SigningIdentity, envelope: &mut Envelope) {
    envelope.signature = identity.sign(&envelope.payload);
}

/// A signed request for the commit status of `transaction_id`.
pub fn signed_commit_status_request(
    identity: &SigningIdentity,
    channel: &str,
    transaction_id: &str,
) -> SignedCommitStatusRequest {
    let request = CommitStatusRequest {
        transaction_id: transaction_id.to_owned(),
        channel_id: channel.to_owned(),
        identity: identity.creator().to_vec(),
    }
    .encode_to_vec();
    let signature = identity.sign(&request);
    SignedCommitStatusRequest { request, signature }
}

/// A signed request for `chaincode`'s events from block `start_block` (`None`: from the next
/// block committed), skipping those up to and including `after_transaction_id`.
pub fn signed_events_request(
    identity: &SigningIdentity,
    channel: &str,
    chaincode: &str,
    start_block: Option<u64>,
    after_transaction_id: Option<&str>,
) -> SignedChaincodeEventsRequest {
    let position = match start_block {
        Some(number) => seek_position::Type::Specified(SeekSpecified { number }),
        None => seek_position::Type::NextCommit(SeekNextCommit {}),
    };
    let request = ChaincodeEventsRequest {
        channel_id: channel.to_owned(),
        chaincode_id: chaincode.to_owned(),
        identity: identity.creator().to_vec(),
        start_position: Some(SeekPosition {
            r#type: Some(position),
        }),
        after_transaction_id: after_transaction_id.unwrap_or_default().to_owned(),
    }
    .encode_to_vec();
    let signature = identity.sign(&request);
    SignedChaincodeEventsRequest { request, signature }
}

/// What an endorsed transaction says: its id and channel, the chaincode's response and the
/// event it set.
#[derive(Debug, Clone, PartialEq)]
pub struct TransactionResult {
    pub transaction_id: String,
    pub channel_id: String,
    pub response: Response,
    /// `None` when the chaincode set no event.
    pub event: Option<ChaincodeEvent>,
}

/// Reads the chaincode response and event out of a transaction envelope (a prepared
/// transaction, or a transaction of a block).
pub fn transaction_result(envelope: &Envelope) -> Result<TransactionResult, MalformedMessage> {
    let payload =
        Payload::decode(envelope.payload.as_slice()).map_err(|e| malformed("payload", e))?;
    let header = payload
        .header
        .ok_or_else(|| malformed("payload", "no header"))?;
    let channel_header = ChannelHeader::decode(header.channel_header.as_slice())
        .map_err(|e| malformed("channel header", e))?;
    if channel_header.r#type != HeaderType::EndorserTransaction as i32 {
        return Err(malformed(
            "channel header",
            format!(
                "type {} is not an endorser transaction",
                channel_header.r#type
            ),
        ));
    }
    let transaction =
        Transaction::decode(payload.data.as_slice()).map_err(|e| malformed("transaction", e))?;
    let action = transaction
        .actions
        .first()
        .ok_or_else(|| malformed("transaction", "no action"))?;
    let action_payload = ChaincodeActionPayload::decode(action.payload.as_slice())
        .map_err(|e| malformed("chaincode action payload", e))?;
    let endorsed = action_payload
        .action
        .ok_or_else(|| malformed("chaincode action payload", "no endorsed action"))?;
    let response_payload =
        ProposalResponsePayload::decode(endorsed.proposal_response_payload.as_slice())
            .map_err(|e| malformed("proposal response payload", e))?;
    let chaincode_action = ChaincodeAction::decode(response_payload.extension.as_slice())
        .map_err(|e| malformed("chaincode action", e))?;
    let event = if chaincode_action.events.is_empty() {
        None
    } else {
        let event = ChaincodeEvent::decode(chaincode_action.events.as_slice())
            .map_err(|e| malformed("chaincode event", e))?;
        (!event.event_name.is_empty()).then_some(event)
    };
    Ok(TransactionResult {
        transaction_id: channel_header.tx_id,
        channel_id: channel_header.channel_id,
        response: chaincode_action
            .response
            .ok_or_else(|| malformed("chaincode action", "no response"))?,
        event,
    })
}

/// The events `chaincode` set in the valid transactions of `block`, in block order. Other
/// transactions (invalid ones, config, other chaincodes) are passed over.
pub fn block_events(block: &Block, chaincode: &str) -> Vec<ChaincodeEvent> {
    let filter = block
        .metadata
        .as_ref()
        .and_then(|m| m.metadata.get(TRANSACTIONS_FILTER))
        .cloned()
        .unwrap_or_default();
    let Some(data) = &block.data else {
        return Vec::new();
    };
    data.data
        .iter()
        .enumerate()
        .filter(|(index, _)| {
            filter.get(*index).copied().map(i32::from) == Some(tx_validation_code::VALID)
        })
        .filter_map(|(_, bytes)| Envelope::decode(bytes.as_slice()).ok())
        .filter_map(|envelope| transaction_result(&envelope).ok())
        .filter_map(|result| result.event)
        .filter(|event| event.chaincode_id == chaincode)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::verify_creator;
    use crate::protos::common::Header;
    use crate::protos::gateway::ChaincodeEventsRequest;

    fn identity() -> SigningIdentity {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["gw".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        SigningIdentity::from_pem("Org1MSP", cert.pem().as_bytes(), &key.serialize_pem()).unwrap()
    }

    #[test]
    fn a_proposal_is_signed_and_named_as_fabric_expects() {
        let id = identity();
        let transient = HashMap::from([("k".to_owned(), b"v".to_vec())]);
        let signed = signed_proposal(
            &id,
            "ch",
            "cc",
            vec![b"f".to_vec(), b"{}".to_vec()],
            transient,
        );
        let proposal = Proposal::decode(signed.proposal.proposal_bytes.as_slice()).unwrap();
        let header = Header::decode(proposal.header.as_slice()).unwrap();
        let channel_header = ChannelHeader::decode(header.channel_header.as_slice()).unwrap();
        let signature_header = SignatureHeader::decode(header.signature_header.as_slice()).unwrap();
        assert_eq!(
            verify_creator(
                &signature_header.creator,
                &signed.proposal.proposal_bytes,
                &signed.proposal.signature
            ),
            Ok("Org1MSP".to_owned())
        );
        assert_eq!(signature_header.creator, id.creator());
        assert_eq!(signature_header.nonce.len(), NONCE_LEN);
        let expected = transaction_id(&signature_header.nonce, &signature_header.creator);
        assert_eq!(channel_header.tx_id, expected);
        assert_eq!(signed.transaction_id, expected);
        assert_eq!(
            channel_header.r#type,
            HeaderType::EndorserTransaction as i32
        );
        assert_eq!(channel_header.channel_id, "ch");
        let extension =
            ChaincodeHeaderExtension::decode(channel_header.extension.as_slice()).unwrap();
        assert_eq!(extension.chaincode_id.unwrap().name, "cc");
        let payload = ChaincodeProposalPayload::decode(proposal.payload.as_slice()).unwrap();
        assert_eq!(
            payload.transient_map.get("k").map(Vec::as_slice),
            Some(&b"v"[..])
        );
        let spec = ChaincodeInvocationSpec::decode(payload.input.as_slice())
            .unwrap()
            .chaincode_spec
            .unwrap();
        assert_eq!(spec.chaincode_id.unwrap().name, "cc");
        assert_eq!(
            spec.input.unwrap().args,
            vec![b"f".to_vec(), b"{}".to_vec()]
        );

        // Two proposals never share a nonce or an id.
        let again = signed_proposal(&id, "ch", "cc", Vec::new(), HashMap::new());
        assert_ne!(again.transaction_id, signed.transaction_id);
        // A flipped bit fails.
        let mut bytes = signed.proposal.proposal_bytes.clone();
        bytes[3] ^= 1;
        assert!(verify_creator(id.creator(), &bytes, &signed.proposal.signature).is_err());
    }

    #[test]
    fn status_and_events_requests_are_signed_by_the_creator() {
        let id = identity();
        let status = signed_commit_status_request(&id, "ch", "tx");
        assert!(verify_creator(id.creator(), &status.request, &status.signature).is_ok());
        let events = signed_events_request(&id, "ch", "cc", Some(7), Some("tx"));
        assert!(verify_creator(id.creator(), &events.request, &events.signature).is_ok());
        let request = ChaincodeEventsRequest::decode(events.request.as_slice()).unwrap();
        assert_eq!(request.after_transaction_id, "tx");
        assert_eq!(
            request.start_position.unwrap().r#type,
            Some(seek_position::Type::Specified(SeekSpecified { number: 7 }))
        );
        let mut envelope = Envelope {
            payload: b"prepared".to_vec(),
            signature: Vec::new(),
        };
        sign_envelope(&id, &mut envelope);
        assert!(verify_creator(id.creator(), &envelope.payload, &envelope.signature).is_ok());
    }
}
