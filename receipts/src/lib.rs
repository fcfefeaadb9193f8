//! Receipts of every access through the gateway: the receipt and its canonical hash, the
//! per-gateway hash chain, Merkle batches with inclusion proofs and the batcher that closes
//! them, audit renderings (FHIR AuditEvent after the IHE Basic Audit Log Patterns, NDJSON,
//! CSV) and offline verification of an export against the ledger's anchors.
//!
//! Leaves out every kind of I/O: no SQL, no HTTP, no clock, no ledger calls. The gateway
//! stores receipts (durably, before releasing a response), runs the anchoring task, calls the
//! ledger and serves the audit API; it hands this crate values and the time.
//!
//! **Invariant:** this crate does no I/O, spawns nothing and reads no clock.
//!
//! # How the gateway uses it
//!
//! 0. Answer: write a released body with [`write_released`], which lists the resources it
//!    releases ([`ResourceEntry`]) with content hashes taken from the bytes written; a client
//!    checks a body it received against the receipt with [`verify_released`].
//! 1. Record phase: build a [`Receipt`] ([`Receipt::new`] with the [`SubjectKeys`] of the
//!    request's [`ReceiptSubjects`], then the facts), append it to the gateway's [`Chain`]
//!    (under one lock), store the [`ChainedReceipt`] (its [`Receipt::canonical_bytes`] are
//!    what was hashed, and read back) and the clear subjects, then release the
//!    response with `X-Assent-Receipt: {id}` and `X-Assent-Consent:
//!    {Receipt::consent_header}`.
//! 2. Anchoring task: feed stored receipts in sequence order to a [`Batcher`] and call
//!    [`Batcher::poll`] at [`Batcher::deadline`]; store each [`ClosedBatch`], submit
//!    [`ClosedBatch::submission`] to the ledger, then mark it anchored; each receipt's proof
//!    ([`InclusionProof::to_bytes`]) and [`ClosedBatch::anchoring`] serve the audit API. See
//!    `batch.rs` for resumption after a restart.
//! 3. Audit: [`audit_event`] per receipt (in the FHIR version asked for), [`ndjson_line`] or
//!    [`csv_row`] per export row, [`Disclosure`] per access for a patient's accounting.
//! 4. `assent verify`: [`Verifier`] over an NDJSON export, with the anchors read from the
//!    ledger.

mod audit;
mod batch;
mod chain;
mod content;
mod digest;
mod disclosure;
mod export;
mod merkle;
mod receipt;
mod time;
mod verify;

pub use audit::{
    ACTOR_KEY_SYSTEM, AuditSource, BALP_PROFILE_BASE, BalpPattern, CLIENT_SYSTEM, GATEWAY_SYSTEM,
    PATIENT_KEY_SYSTEM, RECEIPT_SYSTEM, SITE_POLICY_SYSTEM, audit_event,
};
pub use batch::{
    AdoptError, BatchConfig, BatchError, BatchLeaf, Batcher, ClosedBatch, Resume, adopt_anchor,
    close_batch,
};
pub use chain::{
    BreakKind, Chain, ChainBreak, ChainError, ChainVerifier, ChainedReceipt, verify_chain,
};
pub use content::{
    ContentMismatch, WrittenBody, maps_sort_keys, released_resources, verify_released,
    write_released, write_released_sized,
};
pub use digest::{BadDigest, Digest};
pub use disclosure::Disclosure;
pub use export::{
    AnchorWire, Anchoring, CSV_COLUMNS, ConsentWire, ExportError, ExportedReceipt, ProofWire,
    ReceiptRecord, ReceiptWire, ResourceWire, SubjectsWire, csv_header, csv_row, ndjson_line,
    parse_ndjson_line,
};
pub use merkle::{
    InclusionProof, MerkleTree, leaf_hash, merkle_root, node_hash, root_from_proof, root_hash,
    verify_inclusion,
};
pub use receipt::{
    ACTOR_DOMAIN, AccessDecision, AccessKind, AuditAction, ConsentAction, ConsentRelied,
    DecodeError, Encoding, NetworkAction, QUERY_DOMAIN, RECEIPT_DOMAIN, RECEIPT_DOMAIN_V1, Receipt,
    ReceiptSubjects, ResourceEntry, SubjectKeys, parse_interaction,
};
pub use time::{format_instant, parse_instant};
pub use verify::{
    AnchorSet, Check, Failure, FailureKind, LedgerAnchor, LedgerAnswer, ReceiptVerification,
    StoredBatch, StoredReceipt, Verifier, VerifyOptions, VerifyReport, verify_export,
    verify_stored,
};

#[cfg(test)]
mod flow {
    //! The whole path as the gateway drives it: record, chain, batch on a clock, anchor through
    //! the consent contract, export, verify; then a restart in the middle.

    use assent_consent::{ConsentContract, ConsortiumKey, InMemoryContractState, Timestamp};
    use assent_fhir::Interaction;

    use super::*;

    fn key() -> ConsortiumKey {
        ConsortiumKey::new(b"flow-test-consortium-key-32-byte").unwrap()
    }

    fn record(i: u64, time_ms: i64) -> (Receipt, ReceiptSubjects) {
        let subjects = ReceiptSubjects {
            actor: format!("Practitioner/{}", i % 3),
            patients: vec![format!("urn:oid:1.2.3|p-{}", i % 5)],
            ..ReceiptSubjects::default()
        };
        let decision = if i.is_multiple_of(7) {
            AccessDecision::Deny
        } else {
            AccessDecision::Permit
        };
        let mut r = Receipt::new(
            format!("r{i}"),
            time_ms,
            "gw-1",
            subjects.keys(&key()),
            decision,
            if decision == AccessDecision::Deny {
                403
            } else {
                200
            },
        );
        r.site = Some("north".into());
        r.interaction = Some(Interaction::Read);
        (r, subjects)
    }

    struct Gateway {
        chain: Chain,
        batcher: Batcher,
        stored: Vec<ChainedReceipt>,
        /// Closed batches as stored (write-ahead), with the block that anchored them.
        batches: Vec<(ClosedBatch, Option<u64>)>,
        ledger: InMemoryContractState,
        n_tx: u64,
    }

    impl Gateway {
        fn new(config: BatchConfig) -> Gateway {
            Gateway {
                chain: Chain::genesis("gw-1"),
                batcher: Batcher::new(config, Resume::fresh()).unwrap(),
                stored: Vec::new(),
                batches: Vec::new(),
                ledger: InMemoryContractState::new(),
                n_tx: 0,
            }
        }

        fn anchor(&mut self, closed: Vec<ClosedBatch>, now_ms: i64) {
            for batch in closed {
                self.batches.push((batch, None));
            }
            // Submit every closed batch not yet anchored (again, after a crash).
            for (batch, block) in self.batches.iter_mut().filter(|(_, b)| b.is_none()) {
                self.n_tx += 1;
                self.ledger.begin(
                    &format!("tx-{}", self.n_tx),
                    Timestamp::from_unix_seconds(now_ms / 1000),
                );
                ConsentContract
                    .record_anchor(
                        &mut self.ledger,
                        &batch.submission(&key().gateway("gw-1")),
                        Timestamp::from_unix_seconds(now_ms / 1000),
                    )
                    .unwrap();
                *block = Some(self.n_tx);
            }
        }

        fn request(&mut self, i: u64, now_ms: i64) {
            let (r, _) = record(i, now_ms);
            let chained = self.chain.append(r).unwrap();
            self.stored.push(chained.clone());
            let leaf = BatchLeaf {
                sequence: chained.receipt.sequence,
                receipt_id: chained.receipt.id.clone(),
                hash: chained.hash,
            };
            let closed = self.batcher.push(leaf, now_ms).unwrap();
            self.anchor(closed, now_ms);
        }

        fn tick(&mut self, now_ms: i64) {
            let closed = self.batcher.poll(now_ms).into_iter().collect();
            self.anchor(closed, now_ms);
        }

        /// A crash: memory is lost; the store (receipts, closed batches) and ledger survive.
        fn restart(&mut self, config: BatchConfig, now_ms: i64) {
            // The crash came after the last batch's submission, before it was marked anchored.
            if let Some(last) = self.batches.last_mut() {
                last.1 = None;
            }
            self.chain = Chain::resume(&self.stored.last().unwrap().receipt);
            let resume = self
                .batches
                .last()
                .map_or(Resume::fresh(), |(b, _)| Resume::after(b));
            self.batcher = Batcher::new(config, resume).unwrap();
            let leaves: Vec<BatchLeaf> = self
                .stored
                .iter()
                .map(|c| BatchLeaf {
                    sequence: c.receipt.sequence,
                    receipt_id: c.receipt.id.clone(),
                    hash: c.hash,
                })
                .collect();
            for leaf in leaves {
                let closed = self.batcher.push(leaf, now_ms).unwrap();
                self.anchor(closed, now_ms);
            }
        }

        fn export(&self) -> Vec<String> {
            self.stored
                .iter()
                .map(|c| {
                    let anchoring = self.batches.iter().find_map(|(b, block)| {
                        b.anchoring(
                            c.receipt.sequence,
                            Some(format!("tx-{}", (*block)?)),
                            *block,
                        )
                    });
                    ndjson_line(&c.receipt, &c.hash, anchoring.as_ref(), None)
                })
                .collect()
        }

        fn anchors(&self) -> AnchorSet {
            let mut set = AnchorSet::new();
            for (b, _) in &self.batches {
                if let Some(record) = ConsentContract
                    .anchor(&self.ledger, &key().gateway("gw-1"), b.batch_id)
                    .unwrap()
                {
                    assert!(set.insert_record("gw-1", &record));
                }
            }
            set
        }
    }

    #[test]
    fn record_anchor_export_verify() {
        let config = BatchConfig {
            max_receipts: 16,
            max_wait_ms: 100,
            strict: false,
        };
        let mut gw = Gateway::new(config);
        let mut now = 1_795_568_844_000;
        for i in 1..=100 {
            now += 7;
            gw.request(i, now);
            if i.is_multiple_of(10) {
                gw.tick(now);
            }
            if i == 55 {
                gw.restart(config, now);
            }
        }
        gw.tick(now + 1_000);
        // One ledger transaction per batch (and one replay after the crash), batches far
        // fewer than receipts.
        assert_eq!(gw.n_tx as usize, gw.batches.len() + 1);
        assert!(gw.batches.len() < 20, "{} batches", gw.batches.len());
        let report = verify_export(
            gw.export().iter().map(String::as_str),
            gw.anchors(),
            VerifyOptions {
                complete: true,
                require_anchored: true,
            },
        );
        assert!(report.all_held(), "{:?}", report.failures);
        assert_eq!((report.n_receipts, report.n_anchored), (100, 100));
        // The contract refuses another root for a batch already anchored.
        let mut forged = gw.batches[0].0.submission(&key().gateway("gw-1"));
        forged.root = Digest::of(b"forged").to_hex();
        assert!(
            ConsentContract
                .record_anchor(&mut gw.ledger, &forged, Timestamp::from_unix_seconds(0))
                .is_err()
        );
    }

    #[test]
    fn strict_mode_anchors_each_receipt() {
        let config = BatchConfig {
            strict: true,
            ..BatchConfig::default()
        };
        let mut gw = Gateway::new(config);
        for i in 1..=5 {
            gw.request(i, 1_000 * i as i64);
        }
        assert_eq!(gw.batches.len(), 5);
        assert!(
            gw.batches
                .iter()
                .all(|(b, block)| b.n_receipts() == 1 && block.is_some())
        );
        let report = verify_export(
            gw.export().iter().map(String::as_str),
            gw.anchors(),
            VerifyOptions::default(),
        );
        assert!(report.all_held());
    }
}
