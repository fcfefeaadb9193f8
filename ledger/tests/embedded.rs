//! The embedded ledger over the in-memory block store: the shared conformance suite, then
//! what only the embedded backend does (replay at open refusing a tampered store, a second
//! writer on the same store, a store that fails, slow subscribers, clocks that go back, no
//! clear identifiers in blocks).
//!
//! Leaves out the gateway's SQL block stores (tested in the gateway).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use assent_consent::{
    ConsentSubmission, ConsortiumKey, RecordStatus, RevocationReason, Timestamp, document_hash,
    parse_consent,
};
use assent_fhir::FhirVersion;
use assent_ledger::conformance::{self, ChainAccess, Factory, Subject};
use assent_ledger::{
    BlockRow, BlockStore, Clock, EmbeddedLedger, EmbeddedOptions, InMemoryBlockStore, Ledger,
    LedgerError, ManualClock, SigningKey, StoreError, SystemClock, VerifyStoreError, verify_chain,
    verify_execution, verify_store,
};
use futures_util::StreamExt;

const SEED: [u8; 32] = [42; 32];

async fn open(store: Arc<dyn BlockStore>, options: EmbeddedOptions) -> EmbeddedLedger {
    open_with_clock(store, Arc::new(SystemClock), options).await
}

async fn open_with_clock(
    store: Arc<dyn BlockStore>,
    clock: Arc<dyn Clock>,
    options: EmbeddedOptions,
) -> EmbeddedLedger {
    EmbeddedLedger::open(store, SigningKey::from_bytes(&SEED), clock, options)
        .await
        .expect("the ledger opens")
}

fn embedded() -> Box<Factory> {
    conformance::factory(|| async {
        let store = Arc::new(InMemoryBlockStore::new());
        let ledger = open(store.clone(), EmbeddedOptions::default()).await;
        let public_key = ledger.public_key();
        let reopen_store = store.clone();
        Subject {
            ledger: Arc::new(ledger),
            chain: Some(ChainAccess {
                store: store.clone(),
                public_key,
            }),
            reopen: Some(Box::new(move || {
                let store = reopen_store.clone();
                Box::pin(async move {
                    let ledger: Arc<dyn Ledger> =
                        Arc::new(open(store, EmbeddedOptions::default()).await);
                    ledger
                })
            })),
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_ordering() {
    conformance::ordering(&*embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_history_and_queries() {
    conformance::history_and_queries(&*embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_grantee_queries() {
    conformance::grantee_queries(&*embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_events_once_in_order() {
    conformance::events_once_in_order(&*embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_events_resume_from_checkpoint() {
    conformance::events_resume_from_checkpoint(&*embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_idempotent_replays() {
    conformance::idempotent_replays(&*embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_rejections() {
    conformance::rejections(&*embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_concurrent_writers() {
    conformance::concurrent_writers(&*embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_concurrent_versioned_writers_conflict() {
    conformance::concurrent_versioned_writers_conflict(&*embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_tampered_block_detected() {
    conformance::tampered_block_detected(&*embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_restart_rebuilds_state() {
    conformance::restart_rebuilds_state(&*embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_documents() {
    conformance::documents(&*embedded()).await;
}

fn key() -> ConsortiumKey {
    ConsortiumKey::new(b"embedded-ledger-test-key").unwrap()
}

fn submission(consent: &str, patient: &str, doc: &str) -> ConsentSubmission {
    ConsentSubmission {
        consent_key: key().consent(consent),
        patient_key: key().patient(patient),
        grantee_keys: vec![],
        document_hash: document_hash(&serde_json::json!({ "doc": doc })),
        status: RecordStatus::Active,
        scope: "patient-privacy".into(),
        period_start: None,
        period_end: None,
        expected_version: None,
    }
}

async fn write_blocks(ledger: &EmbeddedLedger, n: usize) {
    for i in 0..n {
        ledger
            .put_consent(submission(&format!("c{i}"), "p1", "v1"))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn opening_a_tampered_store_fails_naming_the_block() {
    let store = Arc::new(InMemoryBlockStore::new());
    write_blocks(&open(store.clone(), EmbeddedOptions::default()).await, 3).await;
    assert_eq!(store.rows().len(), 3);
    let public_key = SigningKey::from_bytes(&SEED).verifying_key();
    let verified = verify_store(&*store, &public_key, 2).await.unwrap();
    assert_eq!(verified.n_blocks, 3);
    store.tamper(1, |row| row.timestamp += 1);
    match verify_store(&*store, &public_key, 2).await {
        Err(VerifyStoreError::Chain(e)) => assert_eq!(e.number, 1),
        other => panic!("expected a chain error at block 1, got {other:?}"),
    }
    let err = EmbeddedLedger::open(
        store.clone(),
        SigningKey::from_bytes(&SEED),
        Arc::new(SystemClock),
        EmbeddedOptions::default(),
    )
    .await
    .err()
    .expect("a tampered store does not open");
    assert!(matches!(err, LedgerError::Corrupt { .. }));
    assert!(err.to_string().contains("block 1"), "{err}");
}

#[tokio::test]
async fn a_chain_rewritten_without_the_key_does_not_open() {
    let store = Arc::new(InMemoryBlockStore::new());
    write_blocks(&open(store.clone(), EmbeddedOptions::default()).await, 2).await;
    // Rewrite the whole chain with another key: every hash and link holds, the head's
    // signature does not.
    let rows = store.rows();
    let forged = InMemoryBlockStore::new();
    let other = SigningKey::from_bytes(&[1; 32]);
    let mut prev = [0u8; 32];
    for row in &rows {
        let body = assent_ledger::BlockBody::decode(&row.body).unwrap();
        let sealed = BlockRow::seal(row.number, prev, row.timestamp, &body, &other);
        prev = sealed.hash_bytes().unwrap();
        forged.append(&sealed).await.unwrap();
    }
    let err = EmbeddedLedger::open(
        Arc::new(forged),
        SigningKey::from_bytes(&SEED),
        Arc::new(SystemClock),
        EmbeddedOptions::default(),
    )
    .await
    .err()
    .expect("a chain signed by another key does not open");
    assert!(err.to_string().contains("block 1"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_on_the_same_store_catches_up() {
    let store = Arc::new(InMemoryBlockStore::new());
    let a = open(store.clone(), EmbeddedOptions::default()).await;
    let b = open(store.clone(), EmbeddedOptions::default()).await;
    let mut events_a = a.subscribe(None).await.unwrap();
    for i in 0..5 {
        let w = if i % 2 == 0 { &a } else { &b };
        w.put_consent(submission(&format!("c{i}"), "p1", "v1"))
            .await
            .expect("each writer commits, catching up on conflict");
    }
    // The shared consent, updated by both: no lost update.
    a.put_consent(submission("shared", "p1", "1"))
        .await
        .unwrap();
    b.put_consent(submission("shared", "p1", "2"))
        .await
        .unwrap();
    a.put_consent(submission("shared", "p1", "3"))
        .await
        .unwrap();
    a.sync().await.unwrap();
    b.sync().await.unwrap();
    for ledger in [&a, &b] {
        assert_eq!(
            ledger
                .patient_consents(&key().patient("p1"))
                .await
                .unwrap()
                .len(),
            6
        );
        let history = ledger
            .consent_history(&key().consent("shared"))
            .await
            .unwrap();
        assert_eq!(history.len(), 3);
        assert_eq!(ledger.head().await.unwrap(), a.head().await.unwrap());
    }
    let mut seen = Vec::new();
    for _ in 0..8 {
        let e = tokio::time::timeout(Duration::from_secs(5), events_a.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push(e.checkpoint);
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    verify_chain(&store.rows(), &a.public_key()).unwrap();
}

/// Appends the block, then answers as if the connection broke.
struct LosingStore {
    inner: InMemoryBlockStore,
    lose_next: AtomicBool,
}

#[async_trait::async_trait]
impl BlockStore for LosingStore {
    async fn append(&self, row: &BlockRow) -> Result<(), StoreError> {
        self.inner.append(row).await?;
        if self.lose_next.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Unavailable {
                reason: "connection reset".into(),
            });
        }
        Ok(())
    }

    async fn read_from(&self, from: i64, limit: usize) -> Result<Vec<BlockRow>, StoreError> {
        self.inner.read_from(from, limit).await
    }

    async fn head(&self) -> Result<Option<i64>, StoreError> {
        self.inner.head().await
    }

    async fn put_document(&self, hash: &str, document: &[u8]) -> Result<(), StoreError> {
        self.inner.put_document(hash, document).await
    }

    async fn document(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.document(hash).await
    }
}

#[tokio::test]
async fn a_lost_append_answer_is_unavailable_and_a_retry_replays() {
    let store = Arc::new(LosingStore {
        inner: InMemoryBlockStore::new(),
        lose_next: AtomicBool::new(true),
    });
    let ledger = open(store.clone(), EmbeddedOptions::default()).await;
    let sub = submission("c1", "p1", "v1");
    let first = ledger.put_consent(sub.clone()).await;
    assert!(matches!(first, Err(LedgerError::Unavailable { .. })));
    let retry = ledger.put_consent(sub).await.unwrap();
    assert!(retry.replayed, "the first attempt had committed");
    let history = ledger.consent_history(&key().consent("c1")).await.unwrap();
    assert_eq!(history.len(), 1);
    let mut events = ledger.subscribe(None).await.unwrap();
    let e = events.next().await.unwrap().unwrap();
    assert_eq!(e.checkpoint.block_number, 0);
}

#[tokio::test]
async fn an_unavailable_store_fails_writes_closed_and_recovers() {
    let store = Arc::new(InMemoryBlockStore::new());
    let ledger = open(store.clone(), EmbeddedOptions::default()).await;
    write_blocks(&ledger, 1).await;
    let mut events = ledger
        .subscribe(ledger.head().await.unwrap())
        .await
        .unwrap();
    store.set_unavailable(Some("disk gone"));
    let err = ledger
        .put_consent(submission("c9", "p1", "v1"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::Unavailable { reason } if reason.contains("disk gone")),
        "{err}"
    );
    assert_eq!(
        ledger.consent(&key().consent("c9")).await.unwrap(),
        None,
        "nothing was applied"
    );
    store.set_unavailable(None);
    let ok = ledger
        .put_consent(submission("c9", "p1", "v1"))
        .await
        .unwrap();
    assert!(!ok.replayed);
    let first = events.next().await.unwrap().unwrap();
    assert_eq!(first.tx_id, ok.tx_id, "the failed write published nothing");
    assert!(
        EmbeddedLedger::open(
            Arc::new({
                let s = InMemoryBlockStore::new();
                s.set_unavailable(Some("down"));
                s
            }),
            SigningKey::from_bytes(&SEED),
            Arc::new(SystemClock),
            EmbeddedOptions::default(),
        )
        .await
        .err()
        .is_some_and(|e| matches!(e, LedgerError::Unavailable { .. }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_falls_back_to_the_store() {
    let store = Arc::new(InMemoryBlockStore::new());
    let options = EmbeddedOptions {
        event_buffer: 1,
        read_page: 3,
        ..EmbeddedOptions::default()
    };
    let ledger = open(store.clone(), options).await;
    let mut stream = ledger.subscribe(None).await.unwrap();
    let first = ledger
        .put_consent(submission("c-first", "p1", "v1"))
        .await
        .unwrap();
    assert_eq!(
        stream.next().await.unwrap().unwrap().tx_id,
        first.tx_id,
        "live delivery"
    );
    write_blocks(&ledger, 20).await;
    let mut seen = Vec::new();
    for _ in 0..20 {
        let e = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push(e.checkpoint.block_number);
    }
    assert_eq!(seen, (1..=20).collect::<Vec<u64>>());
    assert!(
        tokio::time::timeout(Duration::from_millis(100), stream.next())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn block_time_never_goes_back_and_is_the_contract_time() {
    let store = Arc::new(InMemoryBlockStore::new());
    let clock = Arc::new(ManualClock::new(1_700_000_000_500));
    let ledger = open_with_clock(store.clone(), clock.clone(), EmbeddedOptions::default()).await;
    let r = ledger
        .put_consent(submission("c1", "p1", "v1"))
        .await
        .unwrap();
    assert_eq!(r.outcome.consent().unwrap().updated_at, 1_700_000_000);
    clock.set(1_600_000_000_000);
    ledger
        .put_consent(submission("c2", "p1", "v1"))
        .await
        .unwrap();
    let rows = store.rows();
    assert_eq!(rows[1].timestamp, rows[0].timestamp);
    verify_chain(&rows, &ledger.public_key()).unwrap();
    let history = ledger.consent_history(&key().consent("c2")).await.unwrap();
    assert_eq!(
        history[0].record.updated_at,
        Timestamp::from_unix_seconds(1_700_000_000).unix_seconds()
    );
}

#[tokio::test]
async fn blocks_hold_no_clear_identifiers() {
    let store = Arc::new(InMemoryBlockStore::new());
    let ledger = open(store.clone(), EmbeddedOptions::default()).await;
    let doc = serde_json::json!({"resourceType": "Consent", "id": "consent-secret-id",
        "status": "active", "subject": {"reference": "Patient/patient-secret"},
        "decision": "permit",
        "provision": [{"actor": [{"reference": {"reference": "Practitioner/dr-secret"}}]}]});
    let (consent, _) = parse_consent(&doc, FhirVersion::R5).unwrap();
    let sub = ConsentSubmission::from_consent(&consent, &doc, "urn:mpi|secret-42", &key()).unwrap();
    ledger.put_consent(sub).await.unwrap();
    ledger
        .revoke(
            &key().consent("consent-secret-id"),
            RevocationReason::PatientRequest,
        )
        .await
        .unwrap();
    for row in store.rows() {
        let body = String::from_utf8(row.body).unwrap();
        for secret in ["secret", "Patient/", "Practitioner/", "urn:mpi"] {
            assert!(!body.contains(secret), "`{secret}` reached a block");
        }
    }
}

#[tokio::test]
async fn a_signed_block_that_does_not_follow_from_its_arguments_fails_execution() {
    let store = Arc::new(InMemoryBlockStore::new());
    let ledger = open(store.clone(), EmbeddedOptions::default()).await;
    write_blocks(&ledger, 2).await;
    ledger
        .revoke(&key().consent("c0"), RevocationReason::PatientRequest)
        .await
        .unwrap();
    let public_key = ledger.public_key();
    let rows = store.rows();
    verify_execution(&rows, &public_key).expect("honest blocks re-execute");

    // Whoever holds the node key re-signs the last block with a write the contract would
    // not make (the revocation undone); the chain itself still verifies.
    let mut forged = rows.clone();
    let last = forged.pop().unwrap();
    let mut body = assent_ledger::BlockBody::decode(&last.body).unwrap();
    for write in &mut body.transactions[0].writes {
        if let Some(v) = &mut write.value {
            *v = v.replace("\"revoked\"", "\"active\"");
        }
    }
    let prev: [u8; 32] = last.prev_hash.as_slice().try_into().unwrap();
    forged.push(BlockRow::seal(
        last.number,
        prev,
        last.timestamp,
        &body,
        &SigningKey::from_bytes(&SEED),
    ));
    verify_chain(&forged, &public_key).expect("hashes, links and signatures hold");
    let e = verify_execution(&forged, &public_key).unwrap_err();
    assert_eq!(e.number, last.number);
    assert!(e.to_string().contains("writes differ"), "{e}");
}

/// Holds every append until the test lets it through.
struct GateStore {
    inner: InMemoryBlockStore,
    gate: tokio::sync::Mutex<()>,
    appends_started: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl BlockStore for GateStore {
    async fn append(&self, row: &BlockRow) -> Result<(), StoreError> {
        self.appends_started.fetch_add(1, Ordering::SeqCst);
        let _open = self.gate.lock().await;
        self.inner.append(row).await
    }

    async fn read_from(&self, from: i64, limit: usize) -> Result<Vec<BlockRow>, StoreError> {
        self.inner.read_from(from, limit).await
    }

    async fn head(&self) -> Result<Option<i64>, StoreError> {
        self.inner.head().await
    }

    async fn put_document(&self, hash: &str, document: &[u8]) -> Result<(), StoreError> {
        self.inner.put_document(hash, document).await
    }

    async fn document(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.document(hash).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_waiting_together_share_a_block_and_see_each_other() {
    let store = Arc::new(GateStore {
        inner: InMemoryBlockStore::new(),
        gate: tokio::sync::Mutex::new(()),
        appends_started: Default::default(),
    });
    let ledger = Arc::new(open(store.clone(), EmbeddedOptions::default()).await);
    let held = store.gate.lock().await;
    let first = {
        let ledger = ledger.clone();
        tokio::spawn(async move { ledger.put_consent(submission("c0", "p1", "v1")).await })
    };
    while store.appends_started.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // While block 0 is being appended: a new consent, a second version of it, and a replay
    // of the second version, queued in this order (each polled once, which queues it).
    let mut v2 = submission("c1", "p1", "v2");
    v2.expected_version = Some(1);
    let mut calls: Vec<_> = [
        submission("c1", "p1", "v1"),
        v2,
        submission("c1", "p1", "v2"),
    ]
    .into_iter()
    .map(|sub| ledger.put_consent(sub))
    .collect();
    for call in &mut calls {
        assert!(futures_util::poll!(call.as_mut()).is_pending());
    }
    drop(held);
    first.await.unwrap().unwrap();
    let receipts: Vec<_> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let versions: Vec<(u64, u32, u64, bool)> = receipts
        .iter()
        .map(|r| {
            (
                r.block_number,
                r.tx_index,
                r.outcome.consent().unwrap().version,
                r.replayed,
            )
        })
        .collect();
    assert_eq!(
        versions,
        vec![(1, 0, 1, false), (1, 1, 2, false), (1, 2, 2, true)]
    );
    let rows = store.inner.rows();
    assert_eq!(rows.len(), 2);
    verify_execution(&rows, &ledger.public_key()).unwrap();
}
