//! The conformance suite every ledger backend passes (the embedded ledger now, Fabric
//! later): ordering, history, the search by grantee across patients, events (once, in order, resumable from a checkpoint),
//! idempotent replays, rejections, concurrent writers, a tampered block caught by
//! [`verify_chain`], state rebuilt after a restart, and documents stored and fetched by hash
//! off the chain ([`documents`]).
//!
//! Owns what a backend must do as seen through [`Ledger`]. Leaves out how a backend is set up:
//! each test takes a [`Factory`] that opens a [`Subject`]. This is test code compiled into the
//! library so other crates' tests can run it: it panics (with a message) on any failure, and
//! needs a multi-threaded Tokio runtime.
//!
//! Tests do not assume an empty ledger: keys carry a per-run nonce, and events are read from
//! the head seen when the test starts. So the suite can run against a long-lived network.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use assent_consent::{
    AnchorSubmission, ConsentSubmission, ConsortiumKey, EVENT_ANCHOR_RECORDED, EVENT_CONSENT_PUT,
    EVENT_CONSENT_REVOKED, RecordStatus, RevocationReason, Timestamp, document_hash,
};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;

use crate::api::{Checkpoint, Conflict, EventStream, Ledger, LedgerError, LedgerEvent, Rejection};
use crate::block::{BlockRow, block_hash};
use crate::embedded::verify_execution;
use crate::store::BlockStore;
use crate::verify::{ChainFault, verify_chain};

/// A backend under test.
pub struct Subject {
    pub ledger: Arc<dyn Ledger>,
    /// The raw chain and the key that signs it, for backends that keep one (embedded); the
    /// tamper test is skipped without it.
    pub chain: Option<ChainAccess>,
    /// Opens the same ledger again, as after a restart, once `ledger` has been dropped; the
    /// restart test is skipped without it.
    pub reopen: Option<Box<Reopen>>,
}

/// Opens a backend's ledger again over the same storage.
pub type Reopen = dyn Fn() -> BoxFuture<'static, Arc<dyn Ledger>> + Send + Sync;

/// Where a backend's blocks are and who signs them.
pub struct ChainAccess {
    pub store: Arc<dyn BlockStore>,
    pub public_key: VerifyingKey,
}

/// Opens a backend for one test.
pub type Factory = dyn Fn() -> BoxFuture<'static, Subject> + Send + Sync;

/// Makes a [`Factory`] from an async closure.
pub fn factory<F, Fut>(open: F) -> Box<Factory>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Subject> + Send + 'static,
{
    Box::new(move || Box::pin(open()))
}

/// Every test of the suite, each on a subject of its own.
pub async fn run_all(factory: &Factory) {
    ordering(factory).await;
    history_and_queries(factory).await;
    grantee_queries(factory).await;
    events_once_in_order(factory).await;
    events_resume_from_checkpoint(factory).await;
    idempotent_replays(factory).await;
    rejections(factory).await;
    concurrent_writers(factory).await;
    concurrent_versioned_writers_conflict(factory).await;
    tampered_block_detected(factory).await;
    restart_rebuilds_state(factory).await;
    documents(factory).await;
}

/// Sequential transactions commit in order: receipts, the head and the event stream agree.
pub async fn ordering(factory: &Factory) {
    let subject = factory().await;
    let ledger = subject.ledger;
    let fx = Fixture::new();
    let start = head(&*ledger).await;
    let mut receipts = Vec::new();
    for i in 0..5 {
        let sub = fx.consent(&format!("c{i}"), &format!("p{i}"), "dr-a", "v1");
        receipts.push(ledger.put_consent(sub).await.expect("put_consent commits"));
    }
    receipts.push(
        ledger
            .record_anchor(fx.anchor("gw", 1, "root-1"))
            .await
            .expect("record_anchor commits"),
    );
    for pair in receipts.windows(2) {
        let (a, b) = (event_of(&pair[0]).checkpoint, event_of(&pair[1]).checkpoint);
        assert!(a < b, "commits out of order: {a} then {b}");
        assert!(pair[0].block_number <= pair[1].block_number);
        assert_ne!(pair[0].tx_id, pair[1].tx_id, "transaction ids repeat");
    }
    for r in &receipts {
        assert!(!r.replayed);
        assert!(!r.tx_id.is_empty());
        let event = event_of(r);
        assert_eq!(event.checkpoint.block_number, r.block_number);
        assert_eq!(event.tx_id, r.tx_id);
        assert!(Some(event.checkpoint) > start);
    }
    let names: Vec<&str> = receipts
        .iter()
        .filter_map(|r| r.event.as_ref())
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(&names[..5], &[EVENT_CONSENT_PUT; 5]);
    assert_eq!(names[5], EVENT_ANCHOR_RECORDED);
    let last = receipts.last().map(|r| event_of(r).checkpoint);
    assert_eq!(head(&*ledger).await, last, "head is the last commit");

    let mut stream = subscribe(&*ledger, start).await;
    for r in &receipts {
        let event = next_event(&mut stream).await;
        assert_eq!(Some(&event), r.event.as_ref(), "events in commit order");
    }
}

/// The search by grantee finds the current version of every consent naming the grantee, of
/// every patient and whatever its status, and nothing else; a malformed key is refused.
pub async fn grantee_queries(factory: &Factory) {
    let ledger = factory().await.ledger;
    let fx = Fixture::new();
    for (consent, patient, grantee) in [
        ("c1", "p1", "dr-alice"),
        ("c2", "p2", "dr-alice"),
        ("c3", "p1", "dr-bob"),
    ] {
        ledger
            .put_consent(fx.consent(consent, patient, grantee, "v1"))
            .await
            .expect("put_consent commits");
    }
    ledger
        .revoke(&fx.consent_key("c2"), RevocationReason::PatientRequest)
        .await
        .expect("revoke commits");

    let found = |grantee: &'static str| {
        let ledger = ledger.clone();
        let key = fx.grantee(grantee);
        async move {
            let mut found: Vec<(String, String, u64, RecordStatus)> = ledger
                .grantee_consents(&key)
                .await
                .expect("grantee query")
                .into_iter()
                .map(|r| (r.consent_key, r.patient_key, r.version, r.status))
                .collect();
            found.sort_by(|a, b| a.0.cmp(&b.0));
            found
        }
    };
    let mut alice = vec![
        (
            fx.consent_key("c1"),
            fx.patient("p1"),
            1,
            RecordStatus::Active,
        ),
        (
            fx.consent_key("c2"),
            fx.patient("p2"),
            2,
            RecordStatus::Revoked,
        ),
    ];
    alice.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        found("dr-alice").await,
        alice,
        "both patients' consents naming the grantee, the revoked one with its status"
    );
    assert_eq!(
        found("dr-bob").await,
        vec![(
            fx.consent_key("c3"),
            fx.patient("p1"),
            1,
            RecordStatus::Active
        )],
        "a consent naming another grantee is not listed"
    );
    assert!(found("dr-nobody").await.is_empty());
    match ledger.grantee_consents("not-a-key").await {
        Err(LedgerError::Rejected {
            rejection: Rejection::Invalid { .. },
        }) => {}
        other => panic!("a malformed grantee key must be refused, got {other:?}"),
    }
}

/// Versions, revocation, history and the queries read back what was committed.
pub async fn history_and_queries(factory: &Factory) {
    let ledger = factory().await.ledger;
    let fx = Fixture::new();
    let patient = fx.patient("p1");
    let r1 = ledger
        .put_consent(fx.consent("c1", "p1", "dr-a", "v1"))
        .await
        .expect("v1 commits");
    let mut v2 = fx.consent("c1", "p1", "dr-a", "v2");
    v2.expected_version = Some(1);
    let r2 = ledger.put_consent(v2).await.expect("v2 commits");
    assert_eq!(version_of(&r2), 2);
    let active = ledger
        .active_consents(&patient, Timestamp::from_unix_seconds(1_500))
        .await
        .expect("active consents");
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].version, 2);

    let r3 = ledger
        .revoke(&fx.consent_key("c1"), RevocationReason::PatientRequest)
        .await
        .expect("revoke commits");
    assert_eq!(version_of(&r3), 3);
    let history = ledger
        .consent_history(&fx.consent_key("c1"))
        .await
        .expect("history");
    let seen: Vec<(String, u64, RecordStatus)> = history
        .iter()
        .map(|v| (v.tx_id.clone(), v.record.version, v.record.status))
        .collect();
    assert_eq!(
        seen,
        vec![
            (r1.tx_id.clone(), 1, RecordStatus::Active),
            (r2.tx_id.clone(), 2, RecordStatus::Active),
            (r3.tx_id.clone(), 3, RecordStatus::Revoked),
        ],
        "history lists every version with the transaction that wrote it"
    );
    let current = ledger
        .consent(&fx.consent_key("c1"))
        .await
        .expect("consent")
        .expect("the consent exists");
    assert_eq!(current.status, RecordStatus::Revoked);
    assert_eq!(current.revocation, Some(RevocationReason::PatientRequest));
    assert!(
        ledger
            .active_consents(&patient, Timestamp::from_unix_seconds(1_500))
            .await
            .expect("active consents")
            .is_empty(),
        "a revoked consent is not in force"
    );
    let listed = ledger.patient_consents(&patient).await.expect("listing");
    assert_eq!(listed.len(), 1);

    // Periods are read at the query's time.
    let mut bounded = fx.consent("c2", "p2", "dr-a", "v1");
    bounded.period_start = Some(1_000);
    bounded.period_end = Some(2_000);
    ledger.put_consent(bounded).await.expect("commits");
    let at = |t| {
        let ledger = ledger.clone();
        let patient = fx.patient("p2");
        async move {
            ledger
                .active_consents(&patient, Timestamp::from_unix_seconds(t))
                .await
                .expect("active consents")
                .len()
        }
    };
    assert_eq!((at(999).await, at(1_500).await, at(2_000).await), (0, 1, 0));

    assert_eq!(
        ledger
            .consent(&fx.consent_key("nobody"))
            .await
            .expect("query"),
        None
    );
    assert!(
        ledger
            .consent_history(&fx.consent_key("nobody"))
            .await
            .expect("query")
            .is_empty()
    );
    assert!(
        ledger
            .patient_consents(&fx.patient("nobody"))
            .await
            .expect("query")
            .is_empty()
    );

    let anchor = fx.anchor("gw", 7, "root-7");
    ledger
        .record_anchor(anchor.clone())
        .await
        .expect("anchor commits");
    let read = ledger
        .anchor(&anchor.gateway_key, 7)
        .await
        .expect("anchor query")
        .expect("the anchor exists");
    assert_eq!(read.root, anchor.root);
    assert_eq!(read.n_receipts, anchor.n_receipts);
    assert_eq!(
        ledger.anchor(&anchor.gateway_key, 8).await.expect("query"),
        None
    );
}

/// A live subscriber and a late one each get every event once, in order, and nothing more.
pub async fn events_once_in_order(factory: &Factory) {
    let ledger = factory().await.ledger;
    let fx = Fixture::new();
    let start = head(&*ledger).await;
    let mut live = subscribe(&*ledger, start).await;
    let writer = {
        let ledger = ledger.clone();
        let fx = fx.clone();
        tokio::spawn(async move {
            let mut receipts = Vec::new();
            for i in 0..10 {
                let sub = fx.consent(&format!("c{i}"), "p1", &format!("dr-{i}"), "v1");
                receipts.push(ledger.put_consent(sub).await.expect("commits"));
            }
            receipts
        })
    };
    let mut events = Vec::new();
    for _ in 0..10 {
        events.push(next_event(&mut live).await);
    }
    let receipts = writer.await.expect("the writer task finishes");
    let expected: Vec<LedgerEvent> = receipts.iter().filter_map(|r| r.event.clone()).collect();
    assert_eq!(events, expected, "live events: each once, in commit order");
    no_event_within(&mut live, Duration::from_millis(200)).await;

    let mut late = subscribe(&*ledger, start).await;
    for e in &expected {
        assert_eq!(&next_event(&mut late).await, e, "late subscriber");
    }
    no_event_within(&mut late, Duration::from_millis(200)).await;
}

/// A subscriber that stops and subscribes again from its last checkpoint gets what it missed
/// and nothing twice; from the head it gets only what comes next.
pub async fn events_resume_from_checkpoint(factory: &Factory) {
    let ledger = factory().await.ledger;
    let fx = Fixture::new();
    let start = head(&*ledger).await;
    let mut receipts = Vec::new();
    for i in 0..4 {
        let sub = fx.consent(&format!("c{i}"), "p1", "dr-a", "v1");
        receipts.push(ledger.put_consent(sub).await.expect("commits"));
    }
    let mut first = subscribe(&*ledger, start).await;
    let e1 = next_event(&mut first).await;
    let e2 = next_event(&mut first).await;
    assert_eq!((&e1, &e2), (event_of(&receipts[0]), event_of(&receipts[1])));
    drop(first);
    for i in 4..7 {
        let sub = fx.consent(&format!("c{i}"), "p1", "dr-a", "v1");
        receipts.push(ledger.put_consent(sub).await.expect("commits"));
    }
    let mut resumed = subscribe(&*ledger, Some(e2.checkpoint)).await;
    for r in &receipts[2..] {
        assert_eq!(
            &next_event(&mut resumed).await,
            event_of(r),
            "resumed stream"
        );
    }
    no_event_within(&mut resumed, Duration::from_millis(200)).await;

    let mut from_head = subscribe(&*ledger, head(&*ledger).await).await;
    no_event_within(&mut from_head, Duration::from_millis(100)).await;
    let next = ledger
        .put_consent(fx.consent("c-next", "p1", "dr-a", "v1"))
        .await
        .expect("commits");
    assert_eq!(&next_event(&mut from_head).await, event_of(&next));
    assert_eq!(&next_event(&mut resumed).await, event_of(&next));
}

/// Submitting what is already committed writes no new version and emits no event.
pub async fn idempotent_replays(factory: &Factory) {
    let ledger = factory().await.ledger;
    let fx = Fixture::new();
    let start = head(&*ledger).await;
    let sub = fx.consent("c1", "p1", "dr-a", "v1");
    let first = ledger.put_consent(sub.clone()).await.expect("commits");
    let again = ledger.put_consent(sub).await.expect("a replay succeeds");
    assert!(!first.replayed && again.replayed);
    assert_eq!(again.event, None, "a replay emits nothing");
    assert_eq!(version_of(&again), 1, "a replay makes no new version");

    ledger
        .revoke(&fx.consent_key("c1"), RevocationReason::PatientRequest)
        .await
        .expect("revoke commits");
    let revoked_again = ledger
        .revoke(&fx.consent_key("c1"), RevocationReason::Other)
        .await
        .expect("revoking again succeeds");
    assert!(revoked_again.replayed && revoked_again.event.is_none());
    assert_eq!(version_of(&revoked_again), 2);

    let anchor = fx.anchor("gw", 1, "root");
    ledger
        .record_anchor(anchor.clone())
        .await
        .expect("anchor commits");
    let anchor_again = ledger
        .record_anchor(anchor.clone())
        .await
        .expect("anchoring again succeeds");
    assert!(anchor_again.replayed && anchor_again.event.is_none());
    let forged = AnchorSubmission {
        root: fx.hash("another root"),
        ..anchor
    };
    assert_eq!(
        ledger.record_anchor(forged).await.map(|_| ()),
        Err(LedgerError::Conflict {
            conflict: Conflict::Anchor { batch_id: 1 }
        })
    );

    let history = ledger
        .consent_history(&fx.consent_key("c1"))
        .await
        .expect("history");
    assert_eq!(history.len(), 2, "one put and one revocation");
    let marker = ledger
        .put_consent(fx.consent("marker", "p2", "dr-a", "v1"))
        .await
        .expect("commits");
    let names = event_names_until(&*ledger, start, &marker.tx_id).await;
    assert_eq!(
        names,
        [
            EVENT_CONSENT_PUT,
            EVENT_CONSENT_REVOKED,
            EVENT_ANCHOR_RECORDED,
            EVENT_CONSENT_PUT
        ],
        "replays add no event"
    );
}

/// The contract's refusals come back with their reason and leave no trace.
pub async fn rejections(factory: &Factory) {
    let ledger = factory().await.ledger;
    let fx = Fixture::new();
    let start = head(&*ledger).await;
    let mut bad = fx.consent("c1", "p1", "dr-a", "v1");
    bad.patient_key = "Patient/123".into();
    match ledger.put_consent(bad).await {
        Err(LedgerError::Rejected {
            rejection: Rejection::Invalid { field, .. },
        }) => assert_eq!(field, "patient_key"),
        other => panic!("a clear identifier must be refused, got {other:?}"),
    }
    assert_eq!(
        ledger
            .revoke(&fx.consent_key("missing"), RevocationReason::Other)
            .await
            .map(|_| ()),
        Err(LedgerError::Rejected {
            rejection: Rejection::NotFound
        })
    );
    ledger
        .put_consent(fx.consent("c1", "p1", "dr-a", "v1"))
        .await
        .expect("commits");
    let mut v2 = fx.consent("c1", "p1", "dr-a", "v2");
    v2.expected_version = Some(1);
    ledger.put_consent(v2).await.expect("commits");
    let mut stale = fx.consent("c1", "p1", "dr-a", "v3");
    stale.expected_version = Some(1);
    assert_eq!(
        ledger.put_consent(stale).await.map(|_| ()),
        Err(LedgerError::Conflict {
            conflict: Conflict::Version {
                expected: 1,
                current: 2
            }
        })
    );
    assert_eq!(
        ledger
            .put_consent(fx.consent("c1", "p-other", "dr-a", "v4"))
            .await
            .map(|_| ()),
        Err(LedgerError::Rejected {
            rejection: Rejection::PatientMismatch
        })
    );
    ledger
        .revoke(&fx.consent_key("c1"), RevocationReason::PatientRequest)
        .await
        .expect("commits");
    assert_eq!(
        ledger
            .put_consent(fx.consent("c1", "p1", "dr-a", "v5"))
            .await
            .map(|_| ()),
        Err(LedgerError::Rejected {
            rejection: Rejection::Revoked
        })
    );
    let history = ledger
        .consent_history(&fx.consent_key("c1"))
        .await
        .expect("history");
    assert_eq!(history.len(), 3, "refused calls write nothing");
    let marker = ledger
        .put_consent(fx.consent("marker", "p2", "dr-a", "v1"))
        .await
        .expect("commits");
    let names = event_names_until(&*ledger, start, &marker.tx_id).await;
    assert_eq!(
        names,
        [
            EVENT_CONSENT_PUT,
            EVENT_CONSENT_PUT,
            EVENT_CONSENT_REVOKED,
            EVENT_CONSENT_PUT
        ],
        "refused calls emit nothing"
    );
}

/// Many tasks writing at once all commit: no lost update, one event each, a valid chain.
pub async fn concurrent_writers(factory: &Factory) {
    const TASKS: usize = 16;
    const EACH: usize = 4;
    let subject = factory().await;
    let ledger = subject.ledger;
    let fx = Fixture::new();
    let start = head(&*ledger).await;
    ledger
        .put_consent(fx.consent("shared", "p-shared", "dr-a", "v0"))
        .await
        .expect("commits");
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let ledger = ledger.clone();
        let fx = fx.clone();
        tasks.push(tokio::spawn(async move {
            let mut receipts = Vec::new();
            for i in 0..EACH {
                let own = fx.consent(&format!("c-{t}-{i}"), &format!("p-{t}"), "dr-a", "v1");
                receipts.push(ledger.put_consent(own).await.expect("own consent commits"));
                let shared = fx.consent("shared", "p-shared", "dr-a", &format!("v-{t}-{i}"));
                receipts.push(
                    ledger
                        .put_consent(shared)
                        .await
                        .expect("an unversioned update commits"),
                );
            }
            receipts
        }));
    }
    let mut receipts = Vec::new();
    for task in tasks {
        receipts.extend(task.await.expect("a writer task finishes"));
    }
    assert_eq!(receipts.len(), TASKS * EACH * 2);
    let mut checkpoints: Vec<Checkpoint> =
        receipts.iter().map(|r| event_of(r).checkpoint).collect();
    checkpoints.sort();
    checkpoints.dedup();
    assert_eq!(checkpoints.len(), receipts.len(), "one position per commit");

    let history = ledger
        .consent_history(&fx.consent_key("shared"))
        .await
        .expect("history");
    let versions: Vec<u64> = history.iter().map(|v| v.record.version).collect();
    let expected: Vec<u64> = (1..=(1 + TASKS * EACH) as u64).collect();
    assert_eq!(versions, expected, "no lost update on the shared consent");
    for t in 0..TASKS {
        let listed = ledger
            .patient_consents(&fx.patient(&format!("p-{t}")))
            .await
            .expect("listing");
        assert_eq!(listed.len(), EACH, "every task's consents are there");
    }

    let mut stream = subscribe(&*ledger, start).await;
    let mut seen = Vec::new();
    for _ in 0..=receipts.len() {
        seen.push(next_event(&mut stream).await.checkpoint);
    }
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "events in order");
    no_event_within(&mut stream, Duration::from_millis(200)).await;

    if let Some(chain) = subject.chain {
        let rows = read_chain(&*chain.store).await;
        let verified = verify_chain(&rows, &chain.public_key).expect("the chain verifies");
        assert!(verified.n_transactions as usize > receipts.len());
        verify_execution(&rows, &chain.public_key)
            .expect("every transaction re-runs to the same effects");
    }
}

/// Writers racing on one version: exactly one wins, the others see a version conflict.
pub async fn concurrent_versioned_writers_conflict(factory: &Factory) {
    const TASKS: usize = 8;
    let ledger = factory().await.ledger;
    let fx = Fixture::new();
    ledger
        .put_consent(fx.consent("c1", "p1", "dr-a", "v1"))
        .await
        .expect("commits");
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let ledger = ledger.clone();
        let mut sub = fx.consent("c1", "p1", "dr-a", &format!("v2-{t}"));
        sub.expected_version = Some(1);
        tasks.push(tokio::spawn(async move { ledger.put_consent(sub).await }));
    }
    let (mut won, mut conflicts) = (0, 0);
    for task in tasks {
        match task.await.expect("a writer task finishes") {
            Ok(r) => {
                assert_eq!(version_of(&r), 2);
                won += 1;
            }
            Err(LedgerError::Conflict {
                conflict:
                    Conflict::Version {
                        expected: 1,
                        current: 2,
                    },
            }) => conflicts += 1,
            Err(other) => panic!("expected a version conflict, got {other}"),
        }
    }
    assert_eq!((won, conflicts), (1, TASKS - 1));
}

/// Any change to a stored block is reported at that block by [`verify_chain`].
pub async fn tampered_block_detected(factory: &Factory) {
    let subject = factory().await;
    let Some(chain) = subject.chain else {
        eprintln!("conformance: the backend keeps no embedded chain; tamper test skipped");
        return;
    };
    let fx = Fixture::new();
    for i in 0..4 {
        subject
            .ledger
            .put_consent(fx.consent(&format!("c{i}"), "p1", "dr-a", "v1"))
            .await
            .expect("commits");
    }
    let rows = read_chain(&*chain.store).await;
    assert!(rows.len() >= 3);
    let key = chain.public_key;
    let good = verify_chain(&rows, &key).expect("the untouched chain verifies");
    assert_eq!(good.n_blocks as usize, rows.len());
    let target = rows.len() - 2;
    let number = rows[target].number;

    let check = |name: &str, change: &dyn Fn(&mut Vec<BlockRow>), want: ChainFault| {
        let mut copy = rows.clone();
        change(&mut copy);
        // A removed block is noticed at the one that follows it.
        let at = match want {
            ChainFault::OutOfSequence { .. } => number + 1,
            _ => number,
        };
        match verify_chain(&copy, &key) {
            Err(e) => {
                assert_eq!(e.number, at, "{name}: the first bad block is reported");
                assert_eq!(e.fault, want, "{name}");
            }
            Ok(_) => panic!("{name}: a tampered chain verified"),
        }
    };
    check(
        "body edited",
        &|r| {
            let body = &mut r[target].body;
            let at = body.len() / 2;
            body[at] ^= 1;
        },
        ChainFault::HashMismatch,
    );
    check(
        "timestamp edited",
        &|r| r[target].timestamp += 1,
        ChainFault::HashMismatch,
    );
    check(
        "body edited and hash recomputed without the key",
        &|r| {
            let row = &mut r[target];
            let text = String::from_utf8_lossy(&row.body).replace("active", "ACTIVE");
            row.body = text.into_bytes();
            let prev: [u8; 32] = row.prev_hash.as_slice().try_into().expect("32 bytes");
            row.hash = block_hash(row.number, &prev, row.timestamp, &row.body).to_vec();
        },
        ChainFault::BadSignature,
    );
    check(
        "re-signed with another key",
        &|r| {
            let other = SigningKey::from_bytes(&[9; 32]);
            r[target].signature = other.sign(&r[target].hash).to_bytes().to_vec();
        },
        ChainFault::BadSignature,
    );
    check(
        "block removed",
        &|r| {
            r.remove(target);
        },
        ChainFault::OutOfSequence { expected: number },
    );
    check(
        "previous hash rewritten",
        &|r| r[target].prev_hash = vec![0xaa; 32],
        ChainFault::BrokenLink,
    );
    check(
        "two blocks edited: the first is reported",
        &|r| {
            r[target].timestamp += 1;
            r[target + 1].timestamp += 1;
        },
        ChainFault::HashMismatch,
    );
}

/// After a restart the ledger holds the same state, head and events, and goes on from there.
pub async fn restart_rebuilds_state(factory: &Factory) {
    let subject = factory().await;
    let Some(reopen) = subject.reopen else {
        eprintln!("conformance: the backend cannot be reopened; restart test skipped");
        return;
    };
    let ledger = subject.ledger;
    let fx = Fixture::new();
    let start = head(&*ledger).await;
    ledger
        .put_consent(fx.consent("c1", "p1", "dr-a", "v1"))
        .await
        .expect("commits");
    let mut v2 = fx.consent("c1", "p1", "dr-a", "v2");
    v2.expected_version = Some(1);
    ledger.put_consent(v2).await.expect("commits");
    ledger
        .put_consent(fx.consent("c2", "p1", "dr-b", "v1"))
        .await
        .expect("commits");
    ledger
        .revoke(&fx.consent_key("c2"), RevocationReason::Expired)
        .await
        .expect("commits");
    let anchor = fx.anchor("gw", 3, "root");
    ledger.record_anchor(anchor.clone()).await.expect("commits");
    let before_head = head(&*ledger).await;
    let before_history = ledger
        .consent_history(&fx.consent_key("c1"))
        .await
        .expect("history");
    let before_listing = ledger
        .patient_consents(&fx.patient("p1"))
        .await
        .expect("listing");
    let before_events = events_until(&*ledger, start, before_head).await;
    drop(ledger);

    let ledger = reopen().await;
    assert_eq!(head(&*ledger).await, before_head, "same head");
    assert_eq!(
        ledger
            .consent_history(&fx.consent_key("c1"))
            .await
            .expect("history"),
        before_history
    );
    assert_eq!(
        ledger
            .patient_consents(&fx.patient("p1"))
            .await
            .expect("listing"),
        before_listing
    );
    assert!(
        ledger
            .anchor(&anchor.gateway_key, 3)
            .await
            .expect("anchor")
            .is_some()
    );
    assert_eq!(
        events_until(&*ledger, start, before_head).await,
        before_events
    );
    let mut stream = subscribe(&*ledger, before_head).await;
    let next = ledger
        .put_consent(fx.consent("c3", "p1", "dr-a", "v1"))
        .await
        .expect("a write after the restart commits");
    assert!(Some(event_of(&next).checkpoint) > before_head);
    assert_eq!(&next_event(&mut stream).await, event_of(&next));
    if let Some(chain) = subject.chain {
        let rows = read_chain(&*chain.store).await;
        verify_chain(&rows, &chain.public_key).expect("the chain verifies after a restart");
    }
}

/// Documents by hash ([`Ledger::put_document`], [`Ledger::document`]): what is stored reads
/// back byte for byte, storing again changes nothing, a hash that does not match the bytes is
/// refused and stores nothing, an unknown hash is `None`, and a consent names its document by
/// the same hash. Where the suite reaches the raw chain: no document content is in a block,
/// and bytes stored under a hash they do not match are `Corrupt`, never returned.
pub async fn documents(factory: &Factory) {
    let subject = factory().await;
    let ledger = subject.ledger;
    let fx = Fixture::new();
    let (hash, bytes) = fx.document("d1");
    let (other_hash, other_bytes) = fx.document("d2");
    assert_eq!(
        ledger.document(&hash).await.map_err(|e| e.to_string()),
        Ok(None),
        "a document never stored is None"
    );
    ledger
        .put_document(&hash, &bytes)
        .await
        .expect("a document is stored");
    assert_eq!(
        ledger.document(&hash).await.expect("a document is read"),
        Some(bytes.clone()),
        "read back byte for byte"
    );
    ledger
        .put_document(&hash, &bytes)
        .await
        .expect("storing the same document again succeeds");
    assert_eq!(
        ledger.document(&hash).await.expect("read"),
        Some(bytes.clone())
    );

    // ADV: a hash that is not the lowercase hex SHA-256 of exactly these bytes is refused,
    // and nothing is stored under it (nor changed under the document's own hash).
    let mut spaced = bytes.clone();
    spaced.push(b' ');
    let cases: [(&str, String, &[u8]); 7] = [
        ("another document's hash", other_hash.clone(), &bytes),
        (
            "a stored document's hash for other bytes",
            hash.clone(),
            &other_bytes,
        ),
        ("the bytes with a trailing space", hash.clone(), &spaced),
        ("the hash in upper case", hash.to_uppercase(), &bytes),
        ("the hash cut short", hash[..63].to_owned(), &bytes),
        ("the hash with a prefix", format!("sha256:{hash}"), &bytes),
        ("no hash", String::new(), &bytes),
    ];
    for (name, wrong, document) in cases {
        match ledger.put_document(&wrong, document).await {
            Err(LedgerError::Rejected {
                rejection: Rejection::Invalid { field, .. },
            }) => assert_eq!(field, "document", "{name}"),
            other => panic!("{name}: expected a refusal, got {other:?}"),
        }
        if wrong != hash {
            assert!(
                !matches!(ledger.document(&wrong).await, Ok(Some(_))),
                "{name}: nothing is stored under a refused hash"
            );
        }
    }
    assert_eq!(
        ledger.document(&other_hash).await.expect("read"),
        None,
        "a refused put stores nothing"
    );
    assert_eq!(
        ledger.document(&hash).await.expect("read"),
        Some(bytes.clone()),
        "a refused put changes nothing"
    );

    // A consent names its document by the same hash: any member finds it from the record.
    let mut sub = fx.consent("c1", "p1", "dr-a", "d1");
    sub.document_hash = hash.clone();
    ledger.put_consent(sub).await.expect("the consent commits");
    let record = ledger
        .consent(&fx.consent_key("c1"))
        .await
        .expect("query")
        .expect("the consent exists");
    assert_eq!(
        ledger.document(&record.document_hash).await.expect("read"),
        Some(bytes.clone())
    );

    let Some(chain) = subject.chain else {
        eprintln!("conformance: the backend keeps no embedded chain; document tamper test skipped");
        return;
    };
    // ADV: documents stay off the chain; only their hash is on it.
    let marker = fx.label("document-marker");
    for row in read_chain(&*chain.store).await {
        let body = String::from_utf8_lossy(&row.body);
        assert!(
            !body.contains(&marker),
            "document content reached block {}",
            row.number
        );
    }
    // ADV: bytes under a hash they do not match (changed in the store behind the ledger's
    // back) are never returned.
    let (tampered_hash, _) = fx.document("d3");
    chain
        .store
        .put_document(&tampered_hash, &other_bytes)
        .await
        .expect("the raw store takes anything");
    match ledger.document(&tampered_hash).await {
        Err(LedgerError::Corrupt { .. }) => {}
        other => panic!("a tampered document must be Corrupt, got {other:?}"),
    }
}

/// Builds submissions with keys unique to one run of a test.
#[derive(Clone)]
struct Fixture {
    key: ConsortiumKey,
    run: String,
}

impl Fixture {
    fn new() -> Fixture {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Fixture {
            key: ConsortiumKey::new(b"assent-ledger-conformance-key").expect("long enough"),
            run: format!(
                "{nanos}-{}-{}",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }

    fn label(&self, label: &str) -> String {
        format!("{}/{label}", self.run)
    }

    fn hash(&self, label: &str) -> String {
        document_hash(&serde_json::json!({ "label": self.label(label) }))
    }

    fn patient(&self, label: &str) -> String {
        self.key.patient(&self.label(label))
    }

    fn grantee(&self, label: &str) -> String {
        self.key.keyed_hash("party-ref", &self.label(label))
    }

    fn consent_key(&self, label: &str) -> String {
        self.key.consent(&self.label(label))
    }

    fn consent(
        &self,
        consent: &str,
        patient: &str,
        grantee: &str,
        document: &str,
    ) -> ConsentSubmission {
        ConsentSubmission {
            consent_key: self.consent_key(consent),
            patient_key: self.patient(patient),
            grantee_keys: vec![self.grantee(grantee)],
            document_hash: self.hash(&format!("{consent}/{document}")),
            status: RecordStatus::Active,
            scope: "patient-privacy".into(),
            period_start: None,
            period_end: None,
            expected_version: None,
        }
    }

    /// A consent-like document unique to this run, as the gateway stores one: its canonical
    /// JSON bytes and their hash (which is `document_hash` of the document).
    fn document(&self, label: &str) -> (String, Vec<u8>) {
        let value = serde_json::json!({
            "resourceType": "Consent",
            "id": self.label(label),
            "status": "active",
            "text": { "div": format!("{} ünïcödé ✓", self.label("document-marker")) },
            "padding": "x".repeat(16 * 1024),
        });
        let bytes = assent_consent::canonical_json(&value).into_bytes();
        let hash = document_hash(&value);
        assert!(
            crate::api::document_matches(&hash, &bytes),
            "the canonical bytes hash to the document hash"
        );
        (hash, bytes)
    }

    fn anchor(&self, gateway: &str, batch_id: u64, root: &str) -> AnchorSubmission {
        AnchorSubmission {
            gateway_key: self.key.gateway(&self.label(gateway)),
            batch_id,
            root: self.hash(root),
            n_receipts: 100,
        }
    }
}

const EVENT_WAIT: Duration = Duration::from_secs(10);

async fn head(ledger: &dyn Ledger) -> Option<Checkpoint> {
    ledger.head().await.expect("head")
}

async fn subscribe(ledger: &dyn Ledger, after: Option<Checkpoint>) -> EventStream {
    ledger.subscribe(after).await.expect("subscribe")
}

async fn next_event(stream: &mut EventStream) -> LedgerEvent {
    match tokio::time::timeout(EVENT_WAIT, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("the event stream failed: {e}"),
        Ok(None) => panic!("the event stream ended"),
        Err(_) => panic!("no event within {EVENT_WAIT:?}"),
    }
}

async fn no_event_within(stream: &mut EventStream, wait: Duration) {
    if let Ok(item) = tokio::time::timeout(wait, stream.next()).await {
        panic!("expected no further event, got {item:?}");
    }
}

/// The events after `start` up to and including `last`.
async fn events_until(
    ledger: &dyn Ledger,
    start: Option<Checkpoint>,
    last: Option<Checkpoint>,
) -> Vec<LedgerEvent> {
    let mut stream = subscribe(ledger, start).await;
    let mut events = Vec::new();
    while events.last().map(|e: &LedgerEvent| e.checkpoint) < last {
        events.push(next_event(&mut stream).await);
    }
    events
}

/// The names of the events after `start` up to the one of transaction `tx_id`.
async fn event_names_until(
    ledger: &dyn Ledger,
    start: Option<Checkpoint>,
    tx_id: &str,
) -> Vec<String> {
    let mut stream = subscribe(ledger, start).await;
    let mut names = Vec::new();
    loop {
        let event = next_event(&mut stream).await;
        names.push(event.name.clone());
        if event.tx_id == tx_id {
            return names;
        }
    }
}

async fn read_chain(store: &dyn BlockStore) -> Vec<BlockRow> {
    let mut rows: Vec<BlockRow> = Vec::new();
    loop {
        let from = rows.last().map_or(0, |r| r.number + 1);
        let page = store.read_from(from, 1000).await.expect("the store reads");
        if page.is_empty() {
            return rows;
        }
        rows.extend(page);
    }
}

fn version_of(receipt: &crate::api::TxReceipt) -> u64 {
    receipt
        .outcome
        .consent()
        .expect("a consent transaction")
        .version
}

fn event_of(receipt: &crate::api::TxReceipt) -> &LedgerEvent {
    receipt
        .event
        .as_ref()
        .expect("the transaction emitted an event")
}
