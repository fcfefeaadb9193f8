//! The Fabric backend's integration tests, in one binary: the ledger conformance suite run
//! against `FabricLedger` talking over TLS to the FAKE Fabric gateway peer, which drives the
//! real chaincode server over the shim protocol; what the fake refuses (as a real peer
//! would); the chaincode's shim driven message by message by a test peer; and the suite
//! against a real Fabric network when `ASSENT_FABRIC_TEST_CONFIG` names one.
//!
//! Owns the scenarios. The fakes and setup live in `fabric/fake.rs` and `fabric/support.rs`.

#[path = "fabric/fake.rs"]
mod fake;
#[path = "fabric/support.rs"]
mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use assent_consent::{
    ConsentRecord, ConsentSubmission, ConsortiumKey, EVENT_CONSENT_PUT, RecordStatus,
    RevocationReason, document_hash,
};
use assent_fabric::grpc::path;
use assent_fabric::proposal::signed_proposal;
use assent_fabric::protos::common::{Block, Envelope, Payload};
use assent_fabric::protos::common::{ChannelHeader, Header};
use assent_fabric::protos::gateway::EvaluateRequest;
use assent_fabric::protos::google::Timestamp;
use assent_fabric::protos::paths;
use assent_fabric::protos::peer::chaincode_message::Type;
use assent_fabric::protos::peer::{
    ChaincodeAction, ChaincodeActionPayload, ProposalResponsePayload, Transaction,
};
use assent_fabric::protos::peer::{
    ChaincodeId, ChaincodeInput, ChaincodeMessage, GetState, GetStateByRange, Kv, Proposal,
    PutState, QueryResponse, QueryResultBytes, QueryStateClose, QueryStateNext, Response,
};
use assent_fabric::protos::rwset::{HashedRwSet, KvWriteHash, TxReadWriteSet};
use assent_fabric::wire::{self, Query, WriteResult, write_args};
use assent_fabric::{FabricConfig, FabricLedger, IdentityError, SigningIdentity, gateway_error};
use assent_ledger::conformance::{Subject, factory, run_all};
use assent_ledger::{Ledger, LedgerError, TxCall};
use prost::Message;
use sha2::Digest;
use tokio::sync::mpsc;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_prost::ProstCodec;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_suite_against_the_fake_fabric() {
    let network = support::Network::start().await;
    // Every event stream breaks after three responses: subscriptions must resume from their
    // last event without missing or repeating one.
    network.fake.break_event_streams_after(3);
    let net = network.clone();
    let open = factory(move || {
        let net = net.clone();
        async move {
            let reopen_net = net.clone();
            Subject {
                ledger: Arc::new(net.ledger()),
                chain: None,
                reopen: Some(Box::new(move || {
                    let net = reopen_net.clone();
                    Box::pin(async move { Arc::new(net.ledger()) as Arc<dyn Ledger> })
                })),
            }
        }
    });
    run_all(&*open).await;
    let seen = network.fake.seen();
    assert!(seen.signatures_verified.load(Ordering::SeqCst) > 100);
    assert_eq!(
        seen.refused.load(Ordering::SeqCst),
        0,
        "no signature was refused"
    );
    assert!(
        seen.streams_broken.load(Ordering::SeqCst) > 0,
        "the suite ran over broken event streams"
    );
    assert!(
        seen.read_conflicts.load(Ordering::SeqCst) > 0,
        "concurrent writers met MVCC conflicts and were retried"
    );
}

/// Whether `needle` occurs anywhere in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// The hashed writes to `collection` in the write sets of every transaction of `blocks`.
fn hashed_writes(blocks: &[Vec<u8>], collection: &str) -> Vec<KvWriteHash> {
    let mut found = Vec::new();
    for bytes in blocks {
        let block = Block::decode(bytes.as_slice()).unwrap();
        for data in block.data.unwrap_or_default().data {
            let envelope = Envelope::decode(data.as_slice()).unwrap();
            let payload = Payload::decode(envelope.payload.as_slice()).unwrap();
            let Ok(transaction) = Transaction::decode(payload.data.as_slice()) else {
                continue;
            };
            for action in transaction.actions {
                let action = ChaincodeActionPayload::decode(action.payload.as_slice()).unwrap();
                let endorsed = action.action.unwrap();
                let response =
                    ProposalResponsePayload::decode(endorsed.proposal_response_payload.as_slice())
                        .unwrap();
                let chaincode_action =
                    ChaincodeAction::decode(response.extension.as_slice()).unwrap();
                let rwset = TxReadWriteSet::decode(chaincode_action.results.as_slice()).unwrap();
                for ns in rwset.ns_rwset {
                    for c in ns.collection_hashed_rwset {
                        if c.collection_name == collection {
                            let hashed = HashedRwSet::decode(c.hashed_rwset.as_slice()).unwrap();
                            found.extend(hashed.hashed_writes);
                        }
                    }
                }
            }
        }
    }
    found
}

/// A document shaped like a consent document, with a patient identifier and text that must
/// never reach the channel.
fn private_document(patient: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "resourceType": "Consent",
        "patient": {"reference": format!("Patient/{patient}"), "display": "Ada Secretname"},
        "provision": {"type": "permit"},
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_are_shared_among_members_and_only_their_hash_reaches_the_channel() {
    let network = support::Network::start().await;
    let org1 = network.ledger_of(fake::MSP);
    let org2 = network.ledger_of(fake::MSP2);
    let document = private_document("p-doc-7731");
    let hash = sha256_hex(&document);

    assert_eq!(
        org2.document(&hash).await,
        Ok(None),
        "unknown before it is stored"
    );
    org1.put_document(&hash, &document).await.expect("stored");
    // The other member's gateway reads it through its own peer.
    assert_eq!(org2.document(&hash).await, Ok(Some(document.clone())));
    assert_eq!(org1.document(&hash).await, Ok(Some(document.clone())));
    for msp in [fake::MSP, fake::MSP2] {
        assert_eq!(
            network.fake.private_keys(msp, wire::DOCUMENTS_COLLECTION),
            vec![hash.clone()]
        );
        assert_eq!(
            network
                .fake
                .private_value(msp, wire::DOCUMENTS_COLLECTION, &hash)
                .as_deref(),
            Some(document.as_slice()),
            "{msp}'s peer holds the document"
        );
    }

    // Storing it again, from either member, writes nothing: no transaction is submitted.
    let height = network.fake.block_bytes().len();
    org2.put_document(&hash, &document).await.expect("a replay");
    org1.put_document(&hash, &document).await.expect("a replay");
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(network.fake.block_bytes().len(), height);

    // Bytes that do not hash to the hash given are refused, by the client and the chaincode.
    let other = private_document("p-doc-other");
    let refused = org1.put_document(&hash, &other).await;
    assert!(
        matches!(&refused, Err(LedgerError::Rejected { rejection: assent_ledger::Rejection::Invalid { field, .. } }) if field == "document"),
        "{refused:?}"
    );
    assert!(matches!(
        org1.document("not-a-hash").await,
        Err(LedgerError::Rejected { .. })
    ));

    // ADV: no block holds the document, the patient id or the document's text; the write
    // set holds the SHA-256 of the key and of the value, nothing more.
    let blocks = network.fake.block_bytes();
    for bytes in &blocks {
        for needle in [
            document.as_slice(),
            b"p-doc-7731".as_slice(),
            b"Ada Secretname".as_slice(),
            b"resourceType".as_slice(),
            b"provision".as_slice(),
        ] {
            assert!(
                !contains(bytes, needle),
                "a block holds {:?}",
                String::from_utf8_lossy(needle)
            );
        }
    }
    let writes = hashed_writes(&blocks, wire::DOCUMENTS_COLLECTION);
    assert_eq!(writes.len(), 1, "one hashed write: {writes:?}");
    assert_eq!(hex::encode(&writes[0].value_hash), hash);
    assert_eq!(
        writes[0].key_hash,
        sha2::Sha256::digest(hash.as_bytes()).to_vec()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_private_document_is_refused_not_returned() {
    let network = support::Network::start().await;
    let org1 = network.ledger_of(fake::MSP);
    let org2 = network.ledger_of(fake::MSP2);
    let document = private_document("p-tamper");
    let hash = sha256_hex(&document);
    org1.put_document(&hash, &document).await.unwrap();

    // ADV: each way the bytes in one member's private store can change.
    type Change = (&'static str, fn(&mut Vec<u8>));
    let changes: [Change; 4] = [
        ("a flipped bit", |d| d[10] ^= 1),
        ("a truncation", |d| d.truncate(d.len() - 1)),
        ("an appended byte", |d| d.push(b' ')),
        ("another document", |d| {
            *d = private_document("p-someone-else")
        }),
    ];
    for (what, change) in changes {
        let original = network
            .fake
            .private_value(fake::MSP2, wire::DOCUMENTS_COLLECTION, &hash)
            .unwrap();
        network
            .fake
            .tamper_private(fake::MSP2, wire::DOCUMENTS_COLLECTION, &hash, change);
        let got = org2.document(&hash).await;
        assert!(
            matches!(&got, Err(LedgerError::Corrupt { reason }) if reason.contains(wire::DOCUMENT_CORRUPT)),
            "{what}: {got:?}"
        );
        // The other member's copy is intact.
        assert_eq!(
            org1.document(&hash).await,
            Ok(Some(document.clone())),
            "{what}"
        );
        network
            .fake
            .tamper_private(fake::MSP2, wire::DOCUMENTS_COLLECTION, &hash, |d| {
                *d = original
            });
    }
    assert_eq!(org2.document(&hash).await, Ok(Some(document)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organization_outside_the_collection_can_neither_read_nor_write_documents() {
    let network = support::Network::start_orgs(&[
        fake::FakeOrg {
            msp: fake::MSP,
            in_collection: true,
        },
        fake::FakeOrg {
            msp: fake::OUTSIDER_MSP,
            in_collection: false,
        },
    ])
    .await;
    let member = network.ledger_of(fake::MSP);
    let outsider = network.ledger_of(fake::OUTSIDER_MSP);
    let document = private_document("p-outside");
    let hash = sha256_hex(&document);
    member.put_document(&hash, &document).await.unwrap();

    // ADV: the outsider's gateway is refused with the peer's words, reading or writing.
    let read = outsider.document(&hash).await;
    match &read {
        Err(LedgerError::Unavailable { reason }) => assert!(
            reason.contains(
                "tx creator does not have read access permission on privatedata in \
                 chaincodeName:assent-consent collectionName: assentConsentDocuments"
            ),
            "{reason}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let other = private_document("p-outside-2");
    let write = outsider.put_document(&sha256_hex(&other), &other).await;
    match &write {
        Err(LedgerError::Unavailable { reason }) => {
            assert!(reason.contains("write access permission"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Its peer holds nothing of the collection.
    assert_eq!(
        network
            .fake
            .private_value(fake::OUTSIDER_MSP, wire::DOCUMENTS_COLLECTION, &hash),
        None
    );
    // A member's client on the outsider's peer: that peer has only the hash and fails the
    // simulation, so the gateway asks the member's peer, as a Fabric gateway does (seen on a
    // real 2.5.16 network): the document, from the member's store.
    let mut connection = network.connection.clone();
    connection.peer_endpoint = network.fake.endpoint_of(fake::OUTSIDER_MSP).to_owned();
    let via_outsider_peer = FabricLedger::new(connection).unwrap();
    assert_eq!(via_outsider_peer.document(&hash).await, Ok(Some(document)));
    // ADV: when every peer fails, the refusal names each peer's reason; no bytes.
    let unknown = private_document("p-outside-3");
    let missing = outsider.document(&sha256_hex(&unknown)).await;
    match &missing {
        Err(LedgerError::Unavailable { reason }) => {
            assert!(
                reason.contains("Aborted: failed to evaluate transaction")
                    && reason
                        .matches("error in simulation: transaction returned with failure: ")
                        .count()
                        == 2
                    && reason
                        .matches("tx creator does not have read access permission")
                        .count()
                        == 2,
                "{reason}"
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_runs_as_the_organization_that_signed_the_proposal() {
    let network = support::Network::start().await;
    let org1 = network.ledger_of(fake::MSP);
    let org2 = network.ledger_of(fake::MSP2);
    let key = ConsortiumKey::new(b"member-test-consortium-key").unwrap();
    let submission = |consent: &str, grantee: &str| ConsentSubmission {
        consent_key: key.consent(consent),
        patient_key: key.patient("p-member"),
        grantee_keys: vec![key.keyed_hash("party-ref", grantee)],
        document_hash: document_hash(&serde_json::json!({ "id": consent, "to": grantee })),
        status: RecordStatus::Active,
        scope: "patient-privacy".into(),
        period_start: None,
        period_end: None,
        expected_version: None,
    };
    let written = org1
        .put_consent(submission("c-m1", "Practitioner/dr-a"))
        .await
        .unwrap();
    let record = written.outcome.consent().unwrap().clone();
    assert_eq!(
        record.member,
        fake::MSP,
        "the creator's MSP id is the member"
    );

    // ADV: the other organization can neither change it nor replay it as its own.
    for (what, attempt) in [
        ("another grantee", submission("c-m1", "Practitioner/dr-x")),
        ("the same content", submission("c-m1", "Practitioner/dr-a")),
    ] {
        let refused = org2.put_consent(attempt).await;
        assert_eq!(
            refused.map(|_| ()),
            Err(LedgerError::Rejected {
                rejection: assent_ledger::Rejection::OtherMember
            }),
            "{what}"
        );
    }
    assert_eq!(
        org1.consent(&record.consent_key).await.unwrap(),
        Some(record.clone())
    );
    // The creator may; any member may revoke.
    org1.put_consent(submission("c-m1", "Practitioner/dr-b"))
        .await
        .expect("the creating member puts a new version");
    let revoked = org2
        .revoke(&record.consent_key, RevocationReason::PatientRequest)
        .await
        .expect("another member revokes");
    let revoked = revoked.outcome.consent().unwrap().clone();
    assert_eq!(revoked.status, RecordStatus::Revoked);
    assert_eq!(
        revoked.member,
        fake::MSP,
        "revoking does not change the owner"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_refuses_what_a_peer_refuses() {
    let network = support::Network::start().await;
    let ledger = network.ledger();
    refusals_as_fabric_gives_them(
        &ledger,
        &network.connection.identity,
        fake::CHANNEL,
        fake::CHAINCODE,
        "peer0.org1.example.com",
        fake::MSP,
    )
    .await;
    // Four refusals, and the unknown channel once per attempt (the gateway calls it
    // unavailable, so the client tries again).
    let attempts = u64::from(network.connection.options.calls.reconnect_attempts);
    assert_eq!(
        network.fake.seen().refused.load(Ordering::SeqCst),
        4 + attempts
    );

    // What the client signs is always low-S.
    let identity = &network.connection.identity;
    for i in 0..200u32 {
        let der = identity.sign(&i.to_be_bytes());
        let signature = p256::ecdsa::Signature::from_der(&der).unwrap();
        assert_eq!(signature.normalize_s(), signature);
    }
}

/// What a Fabric 2.5 gateway peer refuses, and how it says so: the same against the FAKE and
/// a real network (`peer` and `msp` name the gateway peer's address and organization).
async fn refusals_as_fabric_gives_them(
    ledger: &FabricLedger,
    identity: &SigningIdentity,
    channel: &str,
    chaincode: &str,
    peer: &str,
    msp: &str,
) {
    let client = ledger.client();
    let query = Query::Consent {
        consent_key: "a".repeat(64),
    };
    let evaluate = |proposal: assent_fabric::proposal::SignedProposalWithId, channel: &str| {
        client.evaluate(EvaluateRequest {
            transaction_id: proposal.transaction_id,
            channel_id: channel.to_owned(),
            proposed_transaction: Some(proposal.proposal),
            target_organizations: Vec::new(),
        })
    };
    let good = || signed_proposal(identity, channel, chaincode, query.args(), HashMap::new());

    // A well-formed proposal is answered.
    let answer = evaluate(good(), channel).await.expect("a good proposal");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.payload, b"null");

    // High S: the same signature with s replaced by n - s still verifies mathematically,
    // but Fabric refuses it; its peer does not say why beyond "access denied".
    let mut high = good();
    let signature = p256::ecdsa::Signature::from_der(&high.proposal.signature).unwrap();
    let (r, s) = signature.split_scalars();
    let negated = -(*s.as_ref());
    let flipped = p256::ecdsa::Signature::from_scalars(r.to_bytes(), negated.to_bytes()).unwrap();
    assert_ne!(
        flipped.normalize_s(),
        flipped,
        "the flipped signature is high-S"
    );
    high.proposal.signature = flipped.to_der().as_bytes().to_vec();
    let error = evaluate(high, channel).await.unwrap_err();
    assert_eq!(error.code, Code::FailedPrecondition, "{error}");
    assert!(
        error.to_string().contains(&format!(
            "access denied: channel [{channel}] creator org [{msp}]"
        )),
        "{error}"
    );

    // A transaction id that is not hex(SHA-256(nonce ‖ creator)), correctly signed.
    let mut wrong = good();
    let mut proposal = Proposal::decode(wrong.proposal.proposal_bytes.as_slice()).unwrap();
    let mut header = Header::decode(proposal.header.as_slice()).unwrap();
    let mut channel_header = ChannelHeader::decode(header.channel_header.as_slice()).unwrap();
    channel_header.tx_id = "ab".repeat(32);
    header.channel_header = channel_header.encode_to_vec();
    proposal.header = header.encode_to_vec();
    wrong.proposal.proposal_bytes = proposal.encode_to_vec();
    wrong.proposal.signature = identity.sign(&wrong.proposal.proposal_bytes);
    wrong.transaction_id = "ab".repeat(32);
    let error = evaluate(wrong, channel).await.unwrap_err();
    assert_eq!(error.code, Code::FailedPrecondition, "{error}");
    assert!(
        error.to_string().contains("incorrectly computed txid"),
        "{error}"
    );

    // An unknown channel: the gateway cannot read its configuration and calls it
    // unavailable.
    let elsewhere = signed_proposal(
        identity,
        "no-such-channel",
        chaincode,
        query.args(),
        HashMap::new(),
    );
    let error = evaluate(elsewhere, "no-such-channel").await.unwrap_err();
    assert_eq!(error.code, Code::Unavailable, "{error}");
    assert!(
        error
            .to_string()
            .contains("failed to get config for channel [no-such-channel]"),
        "{error}"
    );

    // An identity of an organization that is not a member.
    let stranger = support::client_identity("EvilMSP");
    let foreign = signed_proposal(&stranger, channel, chaincode, query.args(), HashMap::new());
    let error = evaluate(foreign, channel).await.unwrap_err();
    assert_eq!(error.code, Code::FailedPrecondition, "{error}");

    // A tampered proposal (signed bytes changed after signing).
    let mut tampered = good();
    let last = tampered.proposal.proposal_bytes.len() - 1;
    tampered.proposal.proposal_bytes[last] ^= 1;
    assert!(evaluate(tampered, channel).await.is_err());

    // The ledger error names the peer and the organization that refused, and why.
    match gateway_error(error) {
        LedgerError::Unavailable { reason } => {
            assert!(reason.contains(peer), "{reason}");
            assert!(reason.contains(&format!("(MSP {msp})")), "{reason}");
            assert!(reason.contains("creator org unknown"), "{reason}");
        }
        other => panic!("expected unavailable, got {other:?}"),
    }

    // A contract refusal crosses the chaincode, the peer and the gateway intact.
    let refused = ledger
        .submit(TxCall::Revoke {
            consent_key: "c".repeat(64),
            reason: RevocationReason::Other,
        })
        .await;
    assert_eq!(
        refused.map(|_| ()),
        Err(LedgerError::Rejected {
            rejection: assent_ledger::Rejection::NotFound
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_a_block_and_after_a_transaction_id() {
    let network = support::Network::start().await;
    let ledger = network.ledger();
    let key = ConsortiumKey::new(b"events-test-consortium-key").unwrap();
    let mut receipts = Vec::new();
    for i in 0..3 {
        let submission = ConsentSubmission {
            consent_key: key.consent(&format!("c{i}")),
            patient_key: key.patient("p1"),
            grantee_keys: Vec::new(),
            document_hash: document_hash(&serde_json::json!({ "i": i })),
            status: RecordStatus::Active,
            scope: "patient-privacy".into(),
            period_start: None,
            period_end: None,
            expected_version: None,
        };
        receipts.push(ledger.put_consent(submission).await.unwrap());
    }
    let identity = &network.connection.identity;
    let request = assent_fabric::proposal::signed_events_request(
        identity,
        fake::CHANNEL,
        fake::CHAINCODE,
        Some(receipts[0].block_number),
        Some(&receipts[0].tx_id),
    );
    let mut stream = ledger.client().chaincode_events(request).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let response = stream.message().await.unwrap().unwrap();
        seen.extend(response.events.into_iter().map(|e| e.tx_id));
    }
    assert_eq!(
        seen,
        vec![receipts[1].tx_id.clone(), receipts[2].tx_id.clone()]
    );

    // The head is the last event's position.
    assert_eq!(
        ledger.head().await.unwrap(),
        receipts[2].event.as_ref().map(|e| e.checkpoint)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chaincode_serves_over_mutual_tls() {
    let ca = support::TestCa::new();
    let (server_cert, server_key) = ca.leaf("localhost", true);
    let (client_cert, client_key) = ca.leaf("peer0.org1.example.com", false);
    let (addr, _stop) = support::start_chaincode_with(Some(assent_fabric::ChaincodeTls {
        cert_pem: server_cert.into_bytes(),
        key_pem: server_key.into_bytes(),
        client_ca_pem: Some(ca.pem().into_bytes()),
    }))
    .await;

    assent_fabric::ensure_crypto_provider();
    // A peer without a client certificate gets no stream.
    let anonymous = async {
        let channel = Channel::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca.pem()))
                    .domain_name("localhost"),
            )
            .unwrap()
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|e| e.to_string())?;
        let (_keep, receiver) = mpsc::unbounded_channel::<ChaincodeMessage>();
        let mut stream = grpc
            .streaming(
                tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(
                    receiver,
                )),
                path(paths::CHAINCODE_CONNECT),
                ProstCodec::<ChaincodeMessage, ChaincodeMessage>::default(),
            )
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        stream.message().await.map_err(|e| e.to_string())
    };
    assert!(
        !matches!(anonymous.await, Ok(Some(_))),
        "a peer without a client certificate must not get a REGISTER"
    );

    // The FAKE peer with its client certificate drives a write and a read.
    let peer_tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.pem()))
        .identity(Identity::from_pem(client_cert, client_key))
        .domain_name("localhost");
    let fake = fake::FakeFabric::start_with(addr, Some(peer_tls), None).await;
    let connection = assent_fabric::FabricConnection {
        peer_endpoint: fake.endpoint.clone(),
        tls: None,
        identity: support::client_identity(fake::MSP),
        channel: fake::CHANNEL.to_owned(),
        chaincode: fake::CHAINCODE.to_owned(),
        options: assent_fabric::FabricOptions::default(),
    };
    let ledger = FabricLedger::new(connection).unwrap();
    let key = ConsortiumKey::new(b"mtls-test-consortium-key").unwrap();
    let submission = ConsentSubmission {
        consent_key: key.consent("c1"),
        patient_key: key.patient("p1"),
        grantee_keys: Vec::new(),
        document_hash: document_hash(&serde_json::json!({ "id": "c1" })),
        status: RecordStatus::Active,
        scope: "patient-privacy".into(),
        period_start: None,
        period_end: None,
        expected_version: None,
    };
    let receipt = ledger.put_consent(submission).await.unwrap();
    assert_eq!(receipt.outcome.consent().unwrap().version, 1);
    let read = ledger.consent(&key.consent("c1")).await.unwrap().unwrap();
    assert_eq!(read.version, 1);
}

/// Two organizations' endorsers one block apart return different proposal responses and
/// Fabric's gateway refuses to assemble the transaction (seen on a real network under
/// concurrent writes): the write is proposed afresh, and fails as a writers' conflict only
/// when the retries run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endorsers_that_disagree_are_asked_again_with_a_fresh_proposal() {
    let network = support::Network::start().await;
    let ledger = network.ledger();
    let key = ConsortiumKey::new(b"disagreement-test-consortium-key").unwrap();
    let submission = |i: u32| ConsentSubmission {
        consent_key: key.consent(&format!("c{i}")),
        patient_key: key.patient("p1"),
        grantee_keys: Vec::new(),
        document_hash: document_hash(&serde_json::json!({ "i": i })),
        status: RecordStatus::Active,
        scope: "patient-privacy".into(),
        period_start: None,
        period_end: None,
        expected_version: None,
    };
    network.fake.disagree_on_next_endorsements(2);
    let receipt = ledger
        .put_consent(submission(0))
        .await
        .expect("commits once the endorsers agree");
    assert!(!receipt.replayed);
    assert_eq!(network.fake.seen().disagreements.load(Ordering::SeqCst), 2);
    assert_eq!(
        ledger
            .consent(&key.consent("c0"))
            .await
            .unwrap()
            .map(|r| r.version),
        Some(1)
    );

    // More disagreements than retries: a writers' conflict, and nothing was written.
    let mut connection = network.connection.clone();
    connection.options.mvcc_retries = 2;
    let impatient = FabricLedger::new(connection).unwrap();
    network.fake.disagree_on_next_endorsements(3);
    let error = impatient.put_consent(submission(1)).await.unwrap_err();
    assert!(
        matches!(
            error,
            LedgerError::Conflict {
                conflict: assent_ledger::Conflict::Writers
            }
        ),
        "{error:?}"
    );
    assert_eq!(ledger.consent(&key.consent("c1")).await.unwrap(), None);
}

/// Fabric's gateway answers ChaincodeEvents only with the first block of events: a
/// subscription on a quiet channel returns anyway (after the refusal window) and delivers the
/// next event; one the peer refuses fails at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_on_a_quiet_channel_returns_and_then_delivers() {
    let network = support::Network::start().await;
    let mut connection = network.connection.clone();
    connection.channel = "no-such-channel".into();
    quiet_subscription(
        &network.ledger(),
        &FabricLedger::new(connection).unwrap(),
        "fake",
    )
    .await;
}

/// `ledger`'s channel is quiet (no write is under way); `elsewhere` names a channel its peer
/// does not serve.
async fn quiet_subscription(ledger: &FabricLedger, elsewhere: &FabricLedger, run: &str) {
    use futures_util::StreamExt;
    let head = ledger.head().await.unwrap();
    let started = std::time::Instant::now();
    let mut events = tokio::time::timeout(Duration::from_secs(10), ledger.subscribe(head))
        .await
        .expect("subscribe returns on a quiet channel")
        .expect("the subscription stands");
    assert!(started.elapsed() < Duration::from_secs(5));
    let key = ConsortiumKey::new(b"quiet-channel-consortium-key").unwrap();
    let receipt = ledger
        .put_consent(ConsentSubmission {
            consent_key: key.consent(&format!("{run}/c1")),
            patient_key: key.patient(&format!("{run}/p1")),
            grantee_keys: Vec::new(),
            document_hash: document_hash(&serde_json::json!({ "quiet": run })),
            status: RecordStatus::Active,
            scope: "patient-privacy".into(),
            period_start: None,
            period_end: None,
            expected_version: None,
        })
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(30), events.next())
        .await
        .expect("the event arrives")
        .expect("the stream is open")
        .expect("an event");
    assert_eq!(event.tx_id, receipt.tx_id);
    assert_eq!(event.name, EVENT_CONSENT_PUT);

    // A channel the peer does not serve: refused at subscribe.
    let refused = tokio::time::timeout(Duration::from_secs(10), elsewhere.subscribe(None))
        .await
        .expect("a refusal is prompt");
    assert!(refused.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_peer_is_unavailable_after_retries() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let connection = assent_fabric::FabricConnection {
        peer_endpoint: format!("http://{addr}"),
        tls: None,
        identity: support::client_identity(fake::MSP),
        channel: fake::CHANNEL.to_owned(),
        chaincode: fake::CHAINCODE.to_owned(),
        options: assent_fabric::FabricOptions {
            calls: assent_fabric::CallOptions {
                reconnect_attempts: 3,
                reconnect_backoff: Duration::from_millis(10),
                connect_timeout: Duration::from_millis(500),
                ..assent_fabric::CallOptions::default()
            },
            ..assent_fabric::FabricOptions::default()
        },
    };
    let ledger = FabricLedger::new(connection).unwrap();
    let started = std::time::Instant::now();
    match ledger.consent(&"a".repeat(64)).await {
        Err(LedgerError::Unavailable { .. }) => {}
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "fails closed, and fast"
    );
    assert!(matches!(
        ledger.subscribe(None).await.map(|_| ()),
        Err(LedgerError::Unavailable { .. })
    ));
}

#[tokio::test]
async fn the_configuration_is_loaded_and_checked_from_files() {
    let dir = std::env::temp_dir().join(format!(
        "assent-fabric-config-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = support::p256_pem("gateway");
    let (_, other_key) = support::p256_pem("other");
    let ca = support::TestCa::new();
    std::fs::write(dir.join("cert.pem"), &cert).unwrap();
    std::fs::write(dir.join("key.pem"), &key).unwrap();
    std::fs::write(dir.join("other.pem"), &other_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let json = |key_file: &str| {
        serde_json::json!({
            "peer_endpoint": "https://peer0.org1.example.com:7051",
            "tls_ca_file": dir.join("ca.pem"),
            "msp_id": "Org1MSP",
            "cert_file": dir.join("cert.pem"),
            "key_file": dir.join(key_file),
            "channel": "assent",
            "chaincode": "assent-consent",
        })
    };
    let config: FabricConfig = serde_json::from_value(json("key.pem")).unwrap();
    let loaded = config.load().unwrap();
    assert_eq!(loaded.identity.msp_id(), "Org1MSP");
    assert!(FabricLedger::new(loaded).is_ok());
    let mismatched: FabricConfig = serde_json::from_value(json("other.pem")).unwrap();
    assert!(matches!(
        mismatched.load(),
        Err(assent_fabric::ConfigError::Identity(
            IdentityError::KeyMismatch
        ))
    ));
    let missing: FabricConfig = serde_json::from_value(json("absent.pem")).unwrap();
    assert!(matches!(
        missing.load(),
        Err(assent_fabric::ConfigError::Identity(
            IdentityError::Read { .. }
        ))
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn identities_are_checked_when_loaded() {
    let (cert, _) = support::p256_pem("a");
    let (_, other_key) = support::p256_pem("b");
    assert!(matches!(
        SigningIdentity::from_pem("Org1MSP", cert.as_bytes(), &other_key),
        Err(IdentityError::KeyMismatch)
    ));
    assert!(matches!(
        SigningIdentity::from_pem("", cert.as_bytes(), &other_key),
        Err(IdentityError::NoMspId)
    ));
    assert!(matches!(
        SigningIdentity::from_pem("Org1MSP", b"not a certificate", &other_key),
        Err(IdentityError::Certificate(_))
    ));
}

/// A test peer's end of one chaincode stream.
struct TestPeer {
    outbound: mpsc::UnboundedSender<ChaincodeMessage>,
    inbound: tonic::Streaming<ChaincodeMessage>,
}

impl TestPeer {
    fn send(&self, kind: Type, txid: &str, payload: Vec<u8>) {
        self.outbound
            .send(ChaincodeMessage {
                r#type: kind as i32,
                payload,
                txid: txid.to_owned(),
                channel_id: fake::CHANNEL.to_owned(),
                timestamp: Some(Timestamp {
                    seconds: 1_700_000_000,
                    nanos: 0,
                }),
                ..ChaincodeMessage::default()
            })
            .unwrap();
    }

    async fn expect(&mut self, kind: Type, txid: &str) -> ChaincodeMessage {
        let message = tokio::time::timeout(Duration::from_secs(10), self.inbound.message())
            .await
            .expect("the chaincode answers")
            .expect("the stream is healthy")
            .expect("the stream is open");
        assert_eq!(
            (
                Type::try_from(message.r#type).unwrap(),
                message.txid.as_str()
            ),
            (kind, txid),
            "{message:?}"
        );
        if !txid.is_empty() {
            assert_eq!(message.channel_id, fake::CHANNEL);
        }
        message
    }

    /// A TRANSACTION without a proposal (what a query may come as).
    fn transaction(&self, txid: &str, args: Vec<Vec<u8>>) {
        let input = ChaincodeInput {
            args,
            ..ChaincodeInput::default()
        };
        self.send(Type::Transaction, txid, input.encode_to_vec());
    }

    /// A TRANSACTION with the signed proposal of `creator`, as a peer sends it (transient
    /// data included).
    fn proposed(
        &self,
        txid: &str,
        creator: &SigningIdentity,
        args: Vec<Vec<u8>>,
        transient: HashMap<String, Vec<u8>>,
    ) {
        let signed = signed_proposal(
            creator,
            fake::CHANNEL,
            fake::CHAINCODE,
            args.clone(),
            transient,
        );
        let input = ChaincodeInput {
            args,
            ..ChaincodeInput::default()
        };
        self.outbound
            .send(ChaincodeMessage {
                r#type: Type::Transaction as i32,
                payload: input.encode_to_vec(),
                txid: txid.to_owned(),
                channel_id: fake::CHANNEL.to_owned(),
                proposal: Some(signed.proposal),
                ..ChaincodeMessage::default()
            })
            .unwrap();
    }
}

fn response_of(message: &ChaincodeMessage) -> Response {
    Response::decode(message.payload.as_slice()).unwrap()
}

fn record(key: &ConsortiumKey, consent: &str, patient: &str) -> ConsentRecord {
    ConsentRecord {
        consent_key: key.consent(consent),
        patient_key: key.patient(patient),
        grantee_bucket: "any".into(),
        grantee_keys: Vec::new(),
        version: 1,
        document_hash: document_hash(&serde_json::json!({ "id": consent })),
        status: RecordStatus::Active,
        scope: "patient-privacy".into(),
        period_start: None,
        period_end: None,
        revocation: None,
        updated_at: 1_700_000_000,
        member: assent_consent::LOCAL_MEMBER.into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaincode_shim_message_by_message() {
    let (addr, _stop) = support::start_chaincode().await;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let (outbound, receiver) = mpsc::unbounded_channel();
    let inbound = grpc
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::UnboundedReceiverStream::new(
                receiver,
            )),
            path(paths::CHAINCODE_CONNECT),
            ProstCodec::<ChaincodeMessage, ChaincodeMessage>::default(),
        )
        .await
        .unwrap()
        .into_inner();
    let mut peer = TestPeer { outbound, inbound };

    // REGISTER with the package id; KEEPALIVE echoed; REGISTERED, READY.
    let register = peer.expect(Type::Register, "").await;
    assert_eq!(
        ChaincodeId::decode(register.payload.as_slice())
            .unwrap()
            .name,
        fake::PACKAGE_ID
    );
    peer.send(Type::Keepalive, "", Vec::new());
    peer.expect(Type::Keepalive, "").await;
    peer.send(Type::Registered, "", Vec::new());
    peer.send(Type::Ready, "", Vec::new());

    let key = ConsortiumKey::new(b"shim-test-consortium-key").unwrap();
    let submission = ConsentSubmission {
        consent_key: key.consent("c1"),
        patient_key: key.patient("p1"),
        grantee_keys: vec![key.keyed_hash("party-ref", "Practitioner/dr-a")],
        document_hash: document_hash(&serde_json::json!({ "id": "c1" })),
        status: RecordStatus::Active,
        scope: "patient-privacy".into(),
        period_start: None,
        period_end: None,
        expected_version: None,
    };

    // Writes come with the signed proposal: its creator's MSP is the member the contract
    // runs as. A write without one is refused before the contract runs.
    let org1 = support::client_identity(fake::MSP);
    peer.transaction("tx0", write_args(&TxCall::PutConsent(submission.clone())));
    let done = peer.expect(Type::Completed, "tx0").await;
    assert_eq!(response_of(&done).status, 500);
    assert!(response_of(&done).message.contains("proposal"));

    // Two transactions interleaved on one stream: tx1 writes, tx2 reads.
    peer.proposed(
        "tx1",
        &org1,
        write_args(&TxCall::PutConsent(submission.clone())),
        HashMap::new(),
    );
    let get = peer.expect(Type::GetState, "tx1").await;
    let index_key = format!("consent-index/{}", submission.consent_key);
    assert_eq!(
        GetState::decode(get.payload.as_slice()).unwrap().key,
        index_key
    );
    peer.transaction(
        "tx2",
        Query::Consent {
            consent_key: key.consent("c2"),
        }
        .args(),
    );
    let get = peer.expect(Type::GetState, "tx2").await;
    assert_eq!(
        GetState::decode(get.payload.as_slice()).unwrap().key,
        format!("consent-index/{}", key.consent("c2"))
    );
    peer.send(Type::Response, "tx2", Vec::new());
    let done = peer.expect(Type::Completed, "tx2").await;
    assert_eq!(response_of(&done).status, 200);
    assert_eq!(response_of(&done).payload, b"null");
    assert_eq!(done.chaincode_event, None, "a query sets no event");

    peer.send(Type::Response, "tx1", Vec::new());
    let put = peer.expect(Type::PutState, "tx1").await;
    let put = PutState::decode(put.payload.as_slice()).unwrap();
    assert_eq!(put.key, index_key);
    let record_key = String::from_utf8(put.value).unwrap();
    assert!(record_key.starts_with(&format!("consent/{}/", submission.patient_key)));
    peer.send(Type::Response, "tx1", Vec::new());
    let put = peer.expect(Type::PutState, "tx1").await;
    let put = PutState::decode(put.payload.as_slice()).unwrap();
    assert_eq!(put.key, record_key);
    let stored: ConsentRecord = serde_json::from_slice(&put.value).unwrap();
    assert_eq!(
        stored.member,
        fake::MSP,
        "written as the proposal's creator"
    );
    peer.send(Type::Response, "tx1", Vec::new());
    let done = peer.expect(Type::Completed, "tx1").await;
    let response = response_of(&done);
    assert_eq!(response.status, 200, "{}", response.message);
    let written: WriteResult = serde_json::from_slice(&response.payload).unwrap();
    assert!(!written.replayed);
    let event = done.chaincode_event.expect("the write sets its event");
    assert_eq!(event.event_name, EVENT_CONSENT_PUT);
    assert_eq!(event.tx_id, "tx1");

    // The peer refuses a state request: the transaction ends with ERROR.
    peer.proposed(
        "tx3",
        &org1,
        write_args(&TxCall::Revoke {
            consent_key: submission.consent_key.clone(),
            reason: RevocationReason::PatientRequest,
        }),
        HashMap::new(),
    );
    peer.expect(Type::GetState, "tx3").await;
    peer.send(
        Type::Error,
        "tx3",
        b"FAKE: state database unavailable".to_vec(),
    );
    let failed = peer.expect(Type::Error, "tx3").await;
    assert!(String::from_utf8_lossy(&failed.payload).contains("state database unavailable"));

    // A range query in pages: GET_STATE_BY_RANGE, QUERY_STATE_NEXT, QUERY_STATE_CLOSE.
    peer.transaction(
        "tx4",
        Query::PatientConsents {
            patient_key: key.patient("p1"),
        }
        .args(),
    );
    let range = peer.expect(Type::GetStateByRange, "tx4").await;
    let range = GetStateByRange::decode(range.payload.as_slice()).unwrap();
    assert_eq!(range.start_key, format!("consent/{}/", key.patient("p1")));
    let page = |record: &ConsentRecord, has_more: bool| {
        QueryResponse {
            results: vec![QueryResultBytes {
                result_bytes: Kv {
                    namespace: fake::CHAINCODE.into(),
                    key: format!("consent/{}/any/{}", record.patient_key, record.consent_key),
                    value: serde_json::to_vec(record).unwrap(),
                }
                .encode_to_vec(),
            }],
            has_more,
            id: "iter-1".into(),
            metadata: Vec::new(),
        }
        .encode_to_vec()
    };
    let (first, second) = (record(&key, "c1", "p1"), record(&key, "c3", "p1"));
    peer.send(Type::Response, "tx4", page(&first, true));
    let next = peer.expect(Type::QueryStateNext, "tx4").await;
    assert_eq!(
        QueryStateNext::decode(next.payload.as_slice()).unwrap().id,
        "iter-1"
    );
    peer.send(Type::Response, "tx4", page(&second, false));
    let close = peer.expect(Type::QueryStateClose, "tx4").await;
    assert_eq!(
        QueryStateClose::decode(close.payload.as_slice())
            .unwrap()
            .id,
        "iter-1"
    );
    peer.send(Type::Response, "tx4", Vec::new());
    let done = peer.expect(Type::Completed, "tx4").await;
    let listed: Vec<ConsentRecord> = serde_json::from_slice(&response_of(&done).payload).unwrap();
    assert_eq!(listed, vec![first, second]);

    // An unknown function and a contract refusal: COMPLETED with status 500.
    peer.transaction("tx5", vec![b"drop_table".to_vec(), b"{}".to_vec()]);
    let done = peer.expect(Type::Completed, "tx5").await;
    assert_eq!(response_of(&done).status, 500);
    let mut bad = submission.clone();
    bad.patient_key = "Patient/123".into();
    peer.proposed(
        "tx6",
        &org1,
        write_args(&TxCall::PutConsent(bad)),
        HashMap::new(),
    );
    let done = peer.expect(Type::Completed, "tx6").await;
    let response = response_of(&done);
    assert_eq!(response.status, 500);
    assert!(matches!(
        assent_ledger::parse_refusal(&response.message),
        Some(LedgerError::Rejected { .. })
    ));

    // Two transactions with the same id at once: the second is refused.
    peer.transaction(
        "tx7",
        Query::Consent {
            consent_key: key.consent("c1"),
        }
        .args(),
    );
    peer.expect(Type::GetState, "tx7").await;
    peer.transaction(
        "tx7",
        Query::Consent {
            consent_key: key.consent("c1"),
        }
        .args(),
    );
    peer.expect(Type::Error, "tx7").await;
    peer.send(Type::Response, "tx7", Vec::new());
    peer.expect(Type::Completed, "tx7").await;

    shim_private_data(&mut peer, &org1).await;
}

/// The private data part of the shim conversation: `put_document` (bytes in the transient
/// map; GET_PRIVATE_DATA_HASH, then PUT_STATE naming the collection) and `document`
/// (GET_STATE naming the collection), each checked against the hash.
async fn shim_private_data(peer: &mut TestPeer, org1: &SigningIdentity) {
    let document = br#"{"resourceType":"Consent","id":"c1"}"#.to_vec();
    let hash = sha256_hex(&document);
    let transient =
        |bytes: &[u8]| HashMap::from([(wire::TRANSIENT_DOCUMENT.to_owned(), bytes.to_vec())]);
    let in_collection = |collection: &str, key: &str| {
        assert_eq!(collection, wire::DOCUMENTS_COLLECTION);
        assert_eq!(key, hash);
    };

    // Not stored yet: the hash is absent, the document is written to the collection.
    peer.proposed(
        "tx8",
        org1,
        wire::put_document_args(&hash),
        transient(&document),
    );
    let ask = peer.expect(Type::GetPrivateDataHash, "tx8").await;
    let ask = GetState::decode(ask.payload.as_slice()).unwrap();
    in_collection(&ask.collection, &ask.key);
    peer.send(Type::Response, "tx8", Vec::new());
    let put = peer.expect(Type::PutState, "tx8").await;
    let put = PutState::decode(put.payload.as_slice()).unwrap();
    in_collection(&put.collection, &put.key);
    assert_eq!(put.value, document);
    peer.send(Type::Response, "tx8", Vec::new());
    let done = peer.expect(Type::Completed, "tx8").await;
    let response = response_of(&done);
    assert_eq!(response.status, 200, "{}", response.message);
    assert_eq!(
        serde_json::from_slice::<wire::DocumentStored>(&response.payload).unwrap(),
        wire::DocumentStored { replayed: false }
    );
    assert_eq!(
        done.chaincode_event, None,
        "storing a document sets no event"
    );

    // Stored already (its hash is in the hashed state): nothing is written.
    peer.proposed(
        "tx9",
        org1,
        wire::put_document_args(&hash),
        transient(&document),
    );
    peer.expect(Type::GetPrivateDataHash, "tx9").await;
    peer.send(
        Type::Response,
        "tx9",
        sha2::Sha256::digest(&document).to_vec(),
    );
    let done = peer.expect(Type::Completed, "tx9").await;
    assert_eq!(
        serde_json::from_slice::<wire::DocumentStored>(&response_of(&done).payload).unwrap(),
        wire::DocumentStored { replayed: true }
    );

    // ADV: refused before any state request: bytes of another hash, no bytes, a bad hash.
    for (txid, args, data) in [
        (
            "tx10",
            wire::put_document_args(&hash),
            transient(b"{\"id\":\"other\"}"),
        ),
        ("tx11", wire::put_document_args(&hash), HashMap::new()),
        (
            "tx12",
            wire::put_document_args("Patient/123"),
            transient(&document),
        ),
    ] {
        peer.proposed(txid, org1, args, data);
        let done = peer.expect(Type::Completed, txid).await;
        let response = response_of(&done);
        assert_eq!(response.status, 500, "{txid}");
        assert!(
            matches!(
                assent_ledger::parse_refusal(&response.message),
                Some(LedgerError::Rejected { .. })
            ),
            "{txid}: {}",
            response.message
        );
    }

    // Reading: GET_STATE naming the collection; the bytes are checked against the hash.
    let read = |peer: &TestPeer, txid: &str| peer.transaction(txid, wire::document_args(&hash));
    read(peer, "tx13");
    let get = peer.expect(Type::GetState, "tx13").await;
    let get = GetState::decode(get.payload.as_slice()).unwrap();
    in_collection(&get.collection, &get.key);
    peer.send(Type::Response, "tx13", document.clone());
    let done = peer.expect(Type::Completed, "tx13").await;
    assert_eq!(response_of(&done).status, 200);
    assert_eq!(response_of(&done).payload, document);

    // ADV: tampered bytes are refused, never returned.
    read(peer, "tx14");
    peer.expect(Type::GetState, "tx14").await;
    let mut tampered = document.clone();
    tampered[5] ^= 1;
    peer.send(Type::Response, "tx14", tampered);
    let done = peer.expect(Type::Completed, "tx14").await;
    let response = response_of(&done);
    assert_eq!(response.status, 500);
    assert!(
        response.message.contains(wire::DOCUMENT_CORRUPT),
        "{}",
        response.message
    );
    assert!(response.payload.is_empty());

    // Absent: an empty answer. Refused by the peer (a creator outside the collection): ERROR
    // with the peer's words.
    read(peer, "tx15");
    peer.expect(Type::GetState, "tx15").await;
    peer.send(Type::Response, "tx15", Vec::new());
    let done = peer.expect(Type::Completed, "tx15").await;
    assert_eq!(response_of(&done).status, 200);
    assert!(response_of(&done).payload.is_empty());
    read(peer, "tx16");
    peer.expect(Type::GetState, "tx16").await;
    peer.send(
        Type::Error,
        "tx16",
        b"tx creator does not have read access permission on privatedata".to_vec(),
    );
    let failed = peer.expect(Type::Error, "tx16").await;
    assert!(String::from_utf8_lossy(&failed.payload).contains("read access permission"));
}

/// The conformance suite against a real Fabric network, when `ASSENT_FABRIC_TEST_CONFIG`
/// names a JSON file of [`FabricConfig`] (peer endpoint, TLS and identity files, channel,
/// chaincode); skipped with a notice otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_suite_against_a_real_fabric_network() {
    let Ok(path) = std::env::var("ASSENT_FABRIC_TEST_CONFIG") else {
        eprintln!(
            "skipped: set ASSENT_FABRIC_TEST_CONFIG to a JSON FabricConfig file to run the \
             conformance suite against a real Fabric network"
        );
        return;
    };
    let text = std::fs::read_to_string(&path).expect("the test config is readable");
    let config: FabricConfig = serde_json::from_str(&text).expect("the test config parses");
    let connection = config.load().expect("the configured files load");
    let open = factory(move || {
        let connection = connection.clone();
        async move {
            let reopen_connection = connection.clone();
            Subject {
                ledger: Arc::new(FabricLedger::new(connection).expect("connects")),
                chain: None,
                reopen: Some(Box::new(move || {
                    let connection = reopen_connection.clone();
                    Box::pin(async move {
                        Arc::new(FabricLedger::new(connection).expect("connects"))
                            as Arc<dyn Ledger>
                    })
                })),
            }
        }
    });
    run_all(&*open).await;
}

/// Write latency (submit to commit), evaluate latency and anchors per second against a real
/// network, when `ASSENT_FABRIC_TEST_CONFIG` names one; printed for the benchmark notes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn benchmark_against_a_real_fabric_network() {
    let Ok(path) = std::env::var("ASSENT_FABRIC_TEST_CONFIG") else {
        eprintln!("skipped: set ASSENT_FABRIC_TEST_CONFIG to benchmark a real Fabric network");
        return;
    };
    let text = std::fs::read_to_string(&path).expect("the test config is readable");
    let config: FabricConfig = serde_json::from_str(&text).expect("the test config parses");
    let ledger = Arc::new(FabricLedger::from_config(&config).expect("the configured files load"));
    let run = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let key = ConsortiumKey::new(b"assent-fabric-benchmark-key").unwrap();
    const WRITES: usize = 20;
    let mut writes = Vec::new();
    for i in 0..WRITES {
        let submission = ConsentSubmission {
            consent_key: key.consent(&format!("{run}/c{i}")),
            patient_key: key.patient(&format!("{run}/p{i}")),
            grantee_keys: Vec::new(),
            document_hash: document_hash(&serde_json::json!({ "run": run, "i": i })),
            status: RecordStatus::Active,
            scope: "patient-privacy".into(),
            period_start: None,
            period_end: None,
            expected_version: None,
        };
        let started = std::time::Instant::now();
        ledger.put_consent(submission).await.expect("commits");
        writes.push(started.elapsed());
    }
    let mut reads = Vec::new();
    for i in 0..WRITES {
        let started = std::time::Instant::now();
        ledger
            .consent(&key.consent(&format!("{run}/c{i}")))
            .await
            .expect("evaluates");
        reads.push(started.elapsed());
    }
    const ANCHORS: u64 = 64;
    const WRITERS: u64 = 8;
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let ledger = ledger.clone();
        let key = key.clone();
        let run = run.clone();
        tasks.push(tokio::spawn(async move {
            for b in 0..ANCHORS / WRITERS {
                let anchor = assent_consent::AnchorSubmission {
                    gateway_key: key.gateway(&format!("{run}/gw{w}")),
                    batch_id: b,
                    root: document_hash(&serde_json::json!({ "w": w, "b": b })),
                    n_receipts: 100,
                };
                ledger.record_anchor(anchor).await.expect("anchors");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let per_second = ANCHORS as f64 / started.elapsed().as_secs_f64();
    let percentile = |samples: &mut Vec<Duration>, p: usize| {
        samples.sort();
        samples[(samples.len() * p / 100).min(samples.len() - 1)]
    };
    println!(
        "fabric benchmark: consent write p50 {:?} p95 {:?}; evaluate p50 {:?} p95 {:?}; \
         {per_second:.1} anchors/s with {WRITERS} writers",
        percentile(&mut writes, 50),
        percentile(&mut writes, 95),
        percentile(&mut reads, 50),
        percentile(&mut reads, 95),
    );
}

/// The refusals of [`refusals_as_fabric_gives_them`] from a real Fabric network, when
/// `ASSENT_FABRIC_TEST_CONFIG` names one: what the FAKE's refusals were checked against.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_fabric_network_refuses_as_the_fake_does() {
    let Some(config) = real_network_config() else {
        return;
    };
    let connection = config.load().expect("the configured files load");
    let identity = connection.identity.clone();
    let ledger = FabricLedger::new(connection).expect("connects");
    // The gateway names its peer by `peer.address`, which need not be the endpoint the
    // client dials: any address will do.
    refusals_as_fabric_gives_them(
        &ledger,
        &identity,
        &config.channel,
        &config.chaincode,
        "; peer ",
        &config.msp_id,
    )
    .await;
}

/// The real network's configuration, or `None` with a printed notice.
fn real_network_config() -> Option<FabricConfig> {
    let Ok(path) = std::env::var("ASSENT_FABRIC_TEST_CONFIG") else {
        eprintln!(
            "skipped: set ASSENT_FABRIC_TEST_CONFIG to a JSON FabricConfig file to run the tests against a real Fabric network"
        );
        return None;
    };
    let text = std::fs::read_to_string(&path).expect("the test config is readable");
    Some(serde_json::from_str(&text).expect("the test config parses"))
}

/// [`quiet_subscription`] against a real network, when `ASSENT_FABRIC_TEST_CONFIG` names one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_on_a_quiet_real_channel_returns_and_then_delivers() {
    let Some(config) = real_network_config() else {
        return;
    };
    let ledger = FabricLedger::from_config(&config).expect("the configured files load");
    let mut other = config.clone();
    other.channel = "no-such-channel".into();
    let elsewhere = FabricLedger::from_config(&other).expect("the configured files load");
    let run = format!("{:?}", std::time::SystemTime::now());
    quiet_subscription(&ledger, &elsewhere, &run).await;
}

/// An event stream with nothing to say outlives the peer's keepalive policy (Fabric's peer
/// closes connections that ping more often than `peer.keepalive.minInterval`, 60 s by
/// default): after 150 s of silence it still waits instead of failing. With pings every 30 s
/// a Fabric 2.5.12 peer ended it after 121 s with "transport error". Against a real network,
/// when `ASSENT_FABRIC_TEST_CONFIG` names one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_event_stream_outlives_the_peers_ping_policy() {
    let Some(config) = real_network_config() else {
        return;
    };
    let connection = config.load().expect("the configured files load");
    let ledger = FabricLedger::new(connection.clone()).expect("connects");
    // A block far ahead: the peer has nothing to send and keeps the call open.
    let request = assent_fabric::proposal::signed_events_request(
        &connection.identity,
        &connection.channel,
        &connection.chaincode,
        Some(u64::from(u32::MAX)),
        None,
    );
    let waited = tokio::time::timeout(
        Duration::from_secs(150),
        ledger.client().chaincode_events(request),
    )
    .await;
    match waited {
        Err(_) => {} // Still waiting: the connection survived.
        Ok(answer) => panic!("the idle event stream ended: {:?}", answer.map(|_| ())),
    }
}

/// A patient with more consents than a Fabric peer returns in one page of a range query
/// (100): the chaincode asks for the next pages with QUERY_STATE_NEXT and lists them all.
/// Against a real network, when `ASSENT_FABRIC_TEST_CONFIG` names one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_range_of_several_pages_against_a_real_fabric_network() {
    let Some(config) = real_network_config() else {
        return;
    };
    let ledger = Arc::new(FabricLedger::from_config(&config).expect("the configured files load"));
    let run = format!("{:?}", std::time::SystemTime::now());
    let key = ConsortiumKey::new(b"paging-test-consortium-key").unwrap();
    const CONSENTS: usize = 105;
    const WRITERS: usize = 8;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (ledger, key, run) = (ledger.clone(), key.clone(), run.clone());
        tasks.push(tokio::spawn(async move {
            for i in (w..CONSENTS).step_by(WRITERS) {
                ledger
                    .put_consent(ConsentSubmission {
                        consent_key: key.consent(&format!("{run}/c{i}")),
                        patient_key: key.patient(&format!("{run}/p")),
                        grantee_keys: Vec::new(),
                        document_hash: document_hash(&serde_json::json!({ "i": i })),
                        status: RecordStatus::Active,
                        scope: "patient-privacy".into(),
                        period_start: None,
                        period_end: None,
                        expected_version: None,
                    })
                    .await
                    .expect("commits");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let listed = ledger
        .patient_consents(&key.patient(&format!("{run}/p")))
        .await
        .expect("evaluates");
    assert_eq!(listed.len(), CONSENTS);
    let mut keys: Vec<&str> = listed.iter().map(|r| r.consent_key.as_str()).collect();
    keys.dedup();
    assert_eq!(keys.len(), CONSENTS, "no consent listed twice");
}

/// Two members of a real network, when `ASSENT_FABRIC_TEST_CONFIG` names one organization's
/// configuration and `ASSENT_FABRIC_TEST_CONFIG_2` another's, on the same channel and
/// chaincode (deployed with `fabric/deploy/collections_config.json`): a document stored
/// through the first is read through the second and only its hash reaches the blocks; a
/// consent written by the first is seen by the second, which may revoke it but not overwrite
/// it. Skipped with a notice otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_and_consents_cross_members_on_a_real_fabric_network() {
    let Some(config1) = real_network_config() else {
        return;
    };
    let Ok(path2) = std::env::var("ASSENT_FABRIC_TEST_CONFIG_2") else {
        eprintln!(
            "skipped: set ASSENT_FABRIC_TEST_CONFIG_2 to a second member's JSON FabricConfig \
             file (same channel and chaincode) to run the cross-member test on a real network"
        );
        return;
    };
    let text = std::fs::read_to_string(&path2).expect("the second test config is readable");
    let config2: FabricConfig = serde_json::from_str(&text).expect("the second config parses");
    assert_ne!(config1.msp_id, config2.msp_id, "two different members");
    let connection1 = config1.load().expect("the configured files load");
    let org1 = FabricLedger::new(connection1.clone()).expect("connects");
    let org2 = FabricLedger::from_config(&config2).expect("the configured files load");
    let run = format!(
        "{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let height = || async {
        let info = real_qscc(&org1, &connection1, vec![b"GetChainInfo".to_vec()]).await;
        assent_fabric::protos::common::BlockchainInfo::decode(info.as_slice())
            .unwrap()
            .height
    };
    let before = height().await;

    let patient = format!("p-real-{run}");
    let document = private_document(&patient);
    let hash = sha256_hex(&document);
    assert_eq!(
        org2.document(&hash).await,
        Ok(None),
        "unknown before it is stored"
    );
    org1.put_document(&hash, &document).await.expect("stored");
    // The other member's gateway reads it through its own organization's peer.
    assert_eq!(org2.document(&hash).await, Ok(Some(document.clone())));
    assert_eq!(org1.document(&hash).await, Ok(Some(document.clone())));
    org2.put_document(&hash, &document).await.expect("a replay");
    let other = private_document(&format!("{patient}-other"));
    let refused = org2.put_document(&hash, &other).await;
    assert!(
        matches!(&refused, Err(LedgerError::Rejected { rejection: assent_ledger::Rejection::Invalid { field, .. } }) if field == "document"),
        "{refused:?}"
    );

    // A consent that names the document, written by the first member.
    let key = ConsortiumKey::new(b"real-cross-member-consortium-key").unwrap();
    let submission = |grantee: &str| ConsentSubmission {
        consent_key: key.consent(&format!("{run}/c")),
        patient_key: key.patient(&patient),
        grantee_keys: vec![key.keyed_hash("party-ref", grantee)],
        document_hash: hash.clone(),
        status: RecordStatus::Active,
        scope: "patient-privacy".into(),
        period_start: None,
        period_end: None,
        expected_version: None,
    };
    let written = org1
        .put_consent(submission("Practitioner/dr-a"))
        .await
        .expect("commits");
    let record = written.outcome.consent().unwrap().clone();
    assert_eq!(record.member, config1.msp_id);
    assert_eq!(
        org2.consent(&record.consent_key).await.unwrap(),
        Some(record.clone())
    );
    // ADV: the second member cannot overwrite the first's consent.
    let overwrite = org2.put_consent(submission("Practitioner/dr-x")).await;
    assert_eq!(
        overwrite.map(|_| ()),
        Err(LedgerError::Rejected {
            rejection: assent_ledger::Rejection::OtherMember
        })
    );
    // Any member may revoke; the first member sees the revocation.
    let revoked = org2
        .revoke(&record.consent_key, RevocationReason::PatientRequest)
        .await
        .expect("another member revokes");
    assert_eq!(
        revoked.outcome.consent().unwrap().status,
        RecordStatus::Revoked
    );
    let seen = org1.consent(&record.consent_key).await.unwrap().unwrap();
    assert_eq!(seen.status, RecordStatus::Revoked);
    assert_eq!(
        seen.member, config1.msp_id,
        "revoking does not change the owner"
    );

    // ADV: no block of this run holds the document, the patient id or the document's text;
    // the collection's hashed write set holds the document's hash.
    let after = height().await;
    let mut blocks = Vec::new();
    for number in before..after {
        blocks.push(
            real_qscc(
                &org1,
                &connection1,
                vec![
                    b"GetBlockByNumber".to_vec(),
                    number.to_string().into_bytes(),
                ],
            )
            .await,
        );
    }
    assert!(!blocks.is_empty());
    for bytes in &blocks {
        for needle in [
            document.as_slice(),
            patient.as_bytes(),
            b"Ada Secretname".as_slice(),
            b"resourceType".as_slice(),
        ] {
            assert!(
                !contains(bytes, needle),
                "a block holds {:?}",
                String::from_utf8_lossy(needle)
            );
        }
    }
    let writes = hashed_writes(&blocks, wire::DOCUMENTS_COLLECTION);
    assert_eq!(writes.len(), 1, "one hashed document write: {writes:?}");
    assert_eq!(hex::encode(&writes[0].value_hash), hash);
}

/// Evaluates `qscc` `function` on the configured channel through `ledger`'s peer; the
/// channel name is inserted after the function name.
async fn real_qscc(
    ledger: &FabricLedger,
    connection: &assent_fabric::FabricConnection,
    mut args: Vec<Vec<u8>>,
) -> Vec<u8> {
    args.insert(1, connection.channel.as_bytes().to_vec());
    let proposal = signed_proposal(
        &connection.identity,
        &connection.channel,
        "qscc",
        args,
        HashMap::new(),
    );
    let response = ledger
        .client()
        .evaluate(EvaluateRequest {
            transaction_id: proposal.transaction_id,
            channel_id: connection.channel.clone(),
            proposed_transaction: Some(proposal.proposal),
            target_organizations: Vec::new(),
        })
        .await
        .expect("qscc answers");
    response.payload
}

/// An organization of the channel outside the documents collection, on a real network, when
/// `ASSENT_FABRIC_TEST_CONFIG` names a member's configuration and
/// `ASSENT_FABRIC_TEST_CONFIG_OUTSIDER` one of an organization of the same channel that the
/// collection's `policy` leaves out (with its own peer, where the chaincode is installed):
/// what `an_organization_outside_the_collection_can_neither_read_nor_write_documents` checks
/// on the FAKE. Skipped with a notice otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organization_outside_the_collection_on_a_real_fabric_network() {
    let Some(member_config) = real_network_config() else {
        return;
    };
    let Ok(path) = std::env::var("ASSENT_FABRIC_TEST_CONFIG_OUTSIDER") else {
        eprintln!(
            "skipped: set ASSENT_FABRIC_TEST_CONFIG_OUTSIDER to the JSON FabricConfig of a \
             channel organization outside the documents collection"
        );
        return;
    };
    let text = std::fs::read_to_string(&path).expect("the outsider's config is readable");
    let outsider_config: FabricConfig = serde_json::from_str(&text).expect("it parses");
    let member = FabricLedger::from_config(&member_config).expect("the configured files load");
    let outsider = FabricLedger::from_config(&outsider_config).expect("the files load");
    let document = private_document(&format!("p-outside-{:?}", std::time::SystemTime::now()));
    let hash = sha256_hex(&document);
    member.put_document(&hash, &document).await.expect("stored");

    // ADV: the outsider's gateway is refused with the peer's words, reading or writing.
    let read = outsider.document(&hash).await;
    eprintln!("outsider reads: {read:?}");
    match &read {
        Err(LedgerError::Unavailable { reason }) => assert!(
            reason.contains("Aborted: failed to evaluate transaction")
                && reason.contains(&format!(
                    "tx creator does not have read access permission on privatedata in \
                 chaincodeName:{} collectionName: {}",
                    member_config.chaincode,
                    wire::DOCUMENTS_COLLECTION
                )),
            "{reason}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    let other = private_document("p-outside-2");
    let write = outsider.put_document(&sha256_hex(&other), &other).await;
    eprintln!("outsider writes: {write:?}");
    match &write {
        Err(LedgerError::Unavailable { reason }) => {
            assert!(reason.contains("write access permission"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // ADV: the outsider's peer holds only the hash: asked directly (the gateway told to use
    // that organization alone), it has no bytes to give, whoever asks.
    let connection = member_config.load().expect("the configured files load");
    let proposal = signed_proposal(
        &connection.identity,
        &connection.channel,
        &connection.chaincode,
        wire::document_args(&hash),
        HashMap::new(),
    );
    let on_outsider = member
        .client()
        .evaluate(EvaluateRequest {
            transaction_id: proposal.transaction_id,
            channel_id: connection.channel.clone(),
            proposed_transaction: Some(proposal.proposal),
            target_organizations: vec![outsider_config.msp_id.clone()],
        })
        .await;
    match &on_outsider {
        Err(error) => {
            assert!(
                error
                    .details
                    .iter()
                    .all(|d| d.msp_id == outsider_config.msp_id)
                    && error.messages().any(|m| m
                        .contains("private data matching public hash version is not available")),
                "{error:?}"
            )
        }
        Ok(response) => panic!("the outsider's peer answered: {response:?}"),
    }
    // A member's client whose gateway is the outsider's peer still reads the document: a
    // Fabric gateway that fails to evaluate on its own organization's peer asks the other
    // organizations' peers (the FAKE's gateway asks only its own).
    let mut via_outsider_peer = member_config.clone();
    via_outsider_peer.peer_endpoint = outsider_config.peer_endpoint.clone();
    via_outsider_peer.tls_ca_file = outsider_config.tls_ca_file.clone();
    via_outsider_peer.tls_server_name = outsider_config.tls_server_name.clone();
    let via_outsider_peer = FabricLedger::from_config(&via_outsider_peer).expect("loads");
    assert_eq!(via_outsider_peer.document(&hash).await, Ok(Some(document)));
}
