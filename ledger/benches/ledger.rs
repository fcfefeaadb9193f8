//! Micro-benchmarks of the embedded ledger: P5's ledger part (a patient's active consents
//! read from the in-memory state through `Arc<dyn Ledger>`, what a decision does on a cache
//! miss) with its p50/p99 over single calls, and the commit of one consent (contract run,
//! seal, sign, append to the in-memory store, apply).
//!
//! Leaves out the decision itself (the consent crate's benchmarks) and SQL stores (gateway).
//! Run: `cargo bench -p assent-ledger --bench ledger`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use assent_consent::{ConsentSubmission, ConsortiumKey, RecordStatus, Timestamp, document_hash};
use assent_ledger::{
    EmbeddedLedger, EmbeddedOptions, InMemoryBlockStore, Ledger, SigningKey, SystemClock,
};
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use futures_util::future::join_all;

const PATIENTS: usize = 10_000;
const CONSENTS_PER_PATIENT: usize = 3;

fn key() -> ConsortiumKey {
    ConsortiumKey::new(b"assent-ledger-bench-key").expect("long enough")
}

fn submission(key: &ConsortiumKey, patient: usize, consent: usize) -> ConsentSubmission {
    ConsentSubmission {
        consent_key: key.consent(&format!("c-{patient}-{consent}")),
        patient_key: key.patient(&format!("p-{patient}")),
        grantee_keys: vec![key.keyed_hash("party-ref", &format!("Practitioner/{consent}"))],
        document_hash: document_hash(&serde_json::json!({"p": patient, "c": consent})),
        status: RecordStatus::Active,
        scope: "patient-privacy".into(),
        period_start: Some(0),
        period_end: None,
        expected_version: None,
    }
}

fn populated(runtime: &tokio::runtime::Runtime) -> Arc<dyn Ledger> {
    runtime.block_on(async {
        let ledger = EmbeddedLedger::open(
            Arc::new(InMemoryBlockStore::new()),
            SigningKey::from_bytes(&[3; 32]),
            Arc::new(SystemClock),
            EmbeddedOptions::default(),
        )
        .await
        .expect("opens");
        let ledger: Arc<dyn Ledger> = Arc::new(ledger);
        let key = key();
        let all: Vec<(usize, usize)> = (0..PATIENTS)
            .flat_map(|p| (0..CONSENTS_PER_PATIENT).map(move |c| (p, c)))
            .collect();
        for chunk in all.chunks(256) {
            let puts = chunk
                .iter()
                .map(|&(p, c)| ledger.put_consent(submission(&key, p, c)));
            for r in join_all(puts).await {
                r.expect("commits");
            }
        }
        ledger
    })
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .expect("a runtime");
    let ledger = populated(&runtime);
    let key = key();
    let patients: Vec<String> = (0..1024).map(|p| key.patient(&format!("p-{p}"))).collect();
    let now = Timestamp::from_unix_seconds(1_800_000_000);
    let read = |patient: &str| {
        ledger
            .active_consents(patient, now)
            .now_or_never()
            .expect("the embedded ledger answers queries at once")
            .expect("reads")
    };
    assert_eq!(read(&patients[0]).len(), CONSENTS_PER_PATIENT);

    let mut i = 0;
    c.bench_function("p5_ledger_active_consents_3", |b| {
        b.iter(|| {
            i = (i + 1) % patients.len();
            black_box(read(&patients[i]))
        })
    });

    // Tail latency over single calls (criterion reports means of batches).
    let mut samples: Vec<Duration> = (0..200_000)
        .map(|n| {
            let patient = &patients[n % patients.len()];
            let start = Instant::now();
            black_box(read(patient));
            start.elapsed()
        })
        .collect();
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    println!(
        "p5_ledger_active_consents_3 single calls: p50 {:?}, p99 {:?}, p99.9 {:?} ({} patients x {} consents)",
        at(0.50),
        at(0.99),
        at(0.999),
        PATIENTS,
        CONSENTS_PER_PATIENT
    );

    let mut n = 0usize;
    c.bench_function("commit_one_consent_block", |b| {
        b.iter(|| {
            n += 1;
            runtime
                .block_on(ledger.put_consent(submission(&key, PATIENTS + n, 0)))
                .expect("commits")
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).sample_size(50);
    targets = bench
}
criterion_main!(benches);
