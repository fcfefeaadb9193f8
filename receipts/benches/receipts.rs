//! Micro-benchmarks of P7's pure share: receipts hashed and chained per second, Merkle root
//! plus every proof per second for a batch, and the per-row cost of the renderings
//! (AuditEvent R4, NDJSON, CSV) and of offline verification; and an answer's content hashes
//! taken from the bytes written once (`write_released`) against a second, canonical pass.
//!
//! Leaves out durability (the gateway's group commit and fsync) and the ledger call.
//! Run: `cargo bench -p assent-receipts --bench receipts`.

use std::hint::black_box;

use assent_consent::ConsortiumKey;
use assent_fhir::{FhirVersion, Interaction};
use assent_receipts::{
    AccessDecision, AnchorSet, Anchoring, AuditSource, BatchLeaf, Chain, ChainedReceipt,
    ConsentRelied, LedgerAnchor, Receipt, ReceiptSubjects, ResourceEntry, VerifyOptions,
    audit_event, close_batch, csv_row, ndjson_line, released_resources, verify_export,
    write_released,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

const BATCH: usize = 10_000;

fn subjects() -> ReceiptSubjects {
    ReceiptSubjects {
        actor: "Practitioner/dr-who".into(),
        patients: vec!["urn:oid:1.2.3|p-42".into()],
        query: Some("code=http://loinc.org|1234-5".into()),
        client_id: Some("ehr-app".into()),
        client_address: Some("10.0.0.7".into()),
    }
}

/// A permitted read of one Observation, as the record phase builds it.
fn template() -> Receipt {
    let key = ConsortiumKey::new(b"assent-receipts-bench-key-32byte").expect("long enough");
    let mut r = Receipt::new(
        "00000000-0000-4000-8000-000000000000",
        1_795_568_844_123,
        "gw-1",
        subjects().keys(&key),
        AccessDecision::Permit,
        200,
    );
    r.organization = Some("Organization/st-elsewhere".into());
    r.site = Some("north".into());
    r.interaction = Some(Interaction::Read);
    r.resource_type = Some("Observation".into());
    r.resources = vec![
        ResourceEntry::from_resource(&json!({
            "resourceType": "Observation", "id": "o1", "meta": {"versionId": "3"}
        }))
        .expect("has type and id"),
    ];
    r.purpose = Some("TREAT".into());
    r.consent = ConsentRelied::Consent {
        id: "c1".into(),
        version: "2".into(),
    };
    r.upstream_status = Some(200);
    r
}

fn receipts(n: usize) -> Vec<Receipt> {
    let t = template();
    (0..n)
        .map(|i| {
            let mut r = t.clone();
            r.id = format!("00000000-0000-4000-8000-{i:012}");
            r.time_ms += i as i64;
            r
        })
        .collect()
}

fn chained(n: usize) -> Vec<ChainedReceipt> {
    let mut chain = Chain::genesis("gw-1");
    receipts(n)
        .into_iter()
        .map(|r| chain.append(r).expect("same gateway"))
        .collect()
}

fn leaves(chained: &[ChainedReceipt]) -> Vec<BatchLeaf> {
    chained
        .iter()
        .map(|c| BatchLeaf {
            sequence: c.receipt.sequence,
            receipt_id: c.receipt.id.clone(),
            hash: c.hash,
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("receipts");
    group.throughput(Throughput::Elements(BATCH as u64));

    group.bench_function("hash_and_chain_10k", |b| {
        b.iter_batched(
            || receipts(BATCH),
            |rs| {
                let mut chain = Chain::genesis("gw-1");
                for r in rs {
                    black_box(chain.append(r).expect("same gateway"));
                }
                chain.last_hash()
            },
            BatchSize::LargeInput,
        )
    });

    let cs = chained(BATCH);
    group.bench_function("merkle_root_and_proofs_10k", |b| {
        b.iter_batched(
            || leaves(&cs),
            |ls| black_box(close_batch(1, ls).expect("contiguous")),
            BatchSize::LargeInput,
        )
    });

    let batch = close_batch(1, leaves(&cs)).expect("contiguous");
    let anchoring: Vec<Anchoring> = cs
        .iter()
        .map(|c| Anchoring {
            batch_id: 1,
            proof: batch
                .proof_for(c.receipt.sequence)
                .expect("in the batch")
                .clone(),
            root: batch.root,
            tx_id: Some("tx-1".into()),
            block_number: Some(1),
        })
        .collect();
    let subj = subjects();
    let source = AuditSource {
        base_url: "https://gw.example.org/fhir".into(),
    };
    group.bench_function("audit_event_r4_10k", |b| {
        b.iter(|| {
            for c in &cs {
                black_box(audit_event(
                    &c.receipt,
                    &c.hash,
                    Some(&subj),
                    &source,
                    FhirVersion::R4,
                ));
            }
        })
    });
    group.bench_function("ndjson_10k", |b| {
        b.iter(|| {
            for (c, a) in cs.iter().zip(&anchoring) {
                black_box(ndjson_line(&c.receipt, &c.hash, Some(a), None));
            }
        })
    });
    group.bench_function("csv_10k", |b| {
        b.iter(|| {
            for (c, a) in cs.iter().zip(&anchoring) {
                black_box(csv_row(&c.receipt, &c.hash, Some(a), Some(&subj)));
            }
        })
    });

    let lines: Vec<String> = cs
        .iter()
        .zip(&anchoring)
        .map(|(c, a)| ndjson_line(&c.receipt, &c.hash, Some(a), None))
        .collect();
    let mut anchors = AnchorSet::new();
    anchors.insert(
        "gw-1",
        1,
        LedgerAnchor {
            root: batch.root,
            n_receipts: batch.n_receipts(),
        },
    );
    let options = VerifyOptions {
        complete: true,
        require_anchored: true,
    };
    group.bench_function("verify_10k", |b| {
        b.iter(|| {
            let report = verify_export(lines.iter().map(String::as_str), anchors.clone(), options);
            assert!(report.all_held());
            report
        })
    });
    group.finish();
}

/// The ~1 KB Patient the P1/P3 trivial upstream answers (`assent_benches::sample_patient`).
fn patient(id: &str) -> serde_json::Value {
    let mut patient: serde_json::Value =
        serde_json::from_str(include_str!("../../benches/src/sample_patient.json"))
            .expect("the sample Patient is JSON");
    patient["id"] = json!(id);
    patient
}

/// An answer's body and content hashes: written once with the hashes taken from its bytes
/// (what the gateway does), against written and then hashed by a second, canonical pass (what
/// it did before), for a read of the ~1 KB Patient and a searchset of 50 of them.
fn content(c: &mut Criterion) {
    let read = patient("bench-1");
    let search = json!({"resourceType": "Bundle", "type": "searchset",
        "entry": (0..50).map(|i| json!({"fullUrl": format!("https://gw/fhir/s/Patient/p{i}"),
            "resource": patient(&format!("p{i}")), "search": {"mode": "match"}})).collect::<Vec<_>>()});
    let mut group = c.benchmark_group("content_hash");
    for (name, body) in [("read", &read), ("searchset_50", &search)] {
        let bytes = serde_json::to_vec(body).expect("JSON").len() as u64;
        group.throughput(Throughput::Bytes(bytes));
        group.bench_function(format!("{name}_written_once"), |b| {
            b.iter(|| write_released(black_box(body)).expect("JSON"))
        });
        group.bench_function(format!("{name}_second_canonical_pass"), |b| {
            b.iter(|| {
                let body = black_box(body);
                let bytes = serde_json::to_vec(body).expect("JSON");
                let entries: Vec<ResourceEntry> = released_resources(body)
                    .filter_map(ResourceEntry::from_resource)
                    .collect();
                (bytes, entries)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench, content);
criterion_main!(benches);
