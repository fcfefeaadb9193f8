//! P7 and P8: receipts durably recorded per second through the gateway's receipt writer
//! (group commit into the receipt log, `fdatasync`ed; the store's tables filled off the path),
//! and the time from a receipt's commit to its anchor on the embedded ledger.
//!
//! Usage: `receipts_bench STORE_URL [SECONDS] [IN_FLIGHT]` (a SQLite path or `postgres://…`).
//! Prints `P7 …` and `P8 …` lines that `benches/run.sh` copies into BENCHMARKS.md.
//!
//! With `RECEIPTS_BENCH_COUNT=N` it writes exactly N receipts instead of running for SECONDS,
//! waits for the tables to catch up and stops (no P8): for instruction counting under
//! callgrind (`benches/run.sh --only receipts` runs N and 6N).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use assent_fhir::Interaction;
use assent_gateway::services::anchoring::Anchoring;
use assent_gateway::services::consent::ConsentService;
use assent_gateway::services::receipts::{PendingReceipt, ReceiptWriter, new_receipt_id};
use assent_gateway::store::Store;
use assent_receipts::{
    AccessDecision, BatchConfig, Digest, Receipt, ReceiptSubjects, ResourceEntry,
};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A receipt like the gateway's for a permitted read of one resource.
fn pending(service: &ConsentService, gateway_id: &str, n: u64) -> PendingReceipt {
    let patient = format!("bench/Patient/p{}", n % 1000);
    let subjects = ReceiptSubjects {
        actor: "Practitioner/dr-bench".into(),
        patients: vec![patient.clone()],
        query: None,
        client_id: Some("bench-client".into()),
        client_address: Some("127.0.0.1".into()),
    };
    let key = service.key();
    let mut receipt = Receipt::new(
        new_receipt_id(),
        now_ms(),
        gateway_id,
        subjects.keys(key),
        AccessDecision::Permit,
        200,
    );
    receipt.site = Some("bench".into());
    receipt.interaction = Some(Interaction::Read);
    receipt.resource_type = Some("Patient".into());
    receipt.purpose = Some("TREAT".into());
    receipt.upstream_status = Some(200);
    receipt.resources = vec![ResourceEntry {
        resource_type: "Patient".into(),
        id: format!("p{}", n % 1000),
        version_id: Some("1".into()),
        content_hash: Digest::of(n.to_string().as_bytes()),
    }];
    PendingReceipt { receipt, subjects }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .expect("usage: receipts_bench STORE_URL [SECONDS] [IN_FLIGHT]");
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let in_flight: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(512);
    let count: Option<u64> = std::env::var("RECEIPTS_BENCH_COUNT")
        .ok()
        .and_then(|s| s.parse().ok());
    let store = Store::open(&url).expect("store opens");
    let service = ConsentService::open_embedded(store.clone(), &[7u8; 32], [9u8; 32])
        .expect("embedded ledger opens");
    let gateway_id = format!("bench-{}", std::process::id());
    let log_dir = if url.starts_with("postgres") {
        std::env::temp_dir().join(format!("assent-bench-receipt-log-{}", std::process::id()))
    } else {
        std::path::PathBuf::from(format!("{url}.receipt-log"))
    };
    let writer =
        Arc::new(ReceiptWriter::start(&store, &gateway_id, &log_dir).expect("writer starts"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();

    // P7: closed loop, IN_FLIGHT requests waiting on their receipt at once.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let latencies = runtime.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..in_flight {
            let writer = writer.clone();
            let service = service.clone();
            let gateway_id = gateway_id.clone();
            tasks.push(tokio::spawn(async move {
                let mut n = t as u64;
                let mut latencies = Vec::new();
                while match count {
                    Some(count) => n < count,
                    None => Instant::now() < deadline,
                } {
                    let at = Instant::now();
                    writer
                        .write(pending(&service, &gateway_id, n))
                        .await
                        .expect("receipt stored");
                    latencies.push(at.elapsed().as_secs_f64() * 1e6);
                    n += in_flight as u64;
                }
                latencies
            }));
        }
        let mut all = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap());
        }
        all
    });
    let elapsed = started.elapsed().as_secs_f64();
    // The store's tables catch up off the request path.
    let (durable, _) = store.index_progress().get();
    let mut index_lag = Duration::ZERO;
    while store.index_progress().get().1 < durable {
        std::thread::sleep(Duration::from_millis(1));
        index_lag = started.elapsed() - Duration::from_secs_f64(elapsed);
    }
    let mut sorted = latencies;
    sorted.sort_by(f64::total_cmp);
    let backend = if url.starts_with("postgres") {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!(
        "P7 receipt log (fdatasync), tables in {backend}: {:.0} receipts/s durably recorded ({} in {elapsed:.1} s, {in_flight} in flight); wait for durability p50 {:.0} µs, p99 {:.0} µs; tables caught up {:.0} ms after the load",
        sorted.len() as f64 / elapsed,
        sorted.len(),
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        index_lag.as_secs_f64() * 1e3,
    );

    if count.is_some() {
        return;
    }

    // P8: a receipt every 20 ms; from its commit to its batch anchored on the ledger.
    let anchoring = Anchoring {
        store: store.clone(),
        ledger: service.ledger(),
        gateway_id: gateway_id.clone(),
        gateway_key: service.key().gateway(&gateway_id),
        config: BatchConfig::default(),
        committed: writer.committed(),
        feed: writer.feed(),
    };
    // Everything from P7 is anchored first (one batch per 10,000), then timing starts.
    let _task = anchoring.spawn().expect("anchoring starts");
    let last = writer.committed().borrow().to_owned() as i64;
    wait_anchored(&store, &gateway_id, last, Duration::from_secs(120));
    let mut delays = Vec::new();
    runtime.block_on(async {
        for i in 0..150u64 {
            let committed_at = Instant::now();
            let sequence = writer
                .write(pending(&service, &gateway_id, 10_000_000 + i))
                .await
                .expect("receipt stored") as i64;
            let store = store.clone();
            let gateway_id = gateway_id.clone();
            delays.push(tokio::task::spawn_blocking(move || {
                wait_anchored(&store, &gateway_id, sequence, Duration::from_secs(30));
                committed_at.elapsed().as_secs_f64() * 1e3
            }));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut delays: Vec<f64> = runtime.block_on(async {
        let mut out = Vec::new();
        for d in delays {
            out.push(d.await.unwrap());
        }
        out
    });
    delays.sort_by(f64::total_cmp);
    println!(
        "P8 embedded ledger, batch window {} ms: receipt commit → anchored p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} receipts at 50/s)",
        BatchConfig::default().max_wait_ms,
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays.last().copied().unwrap_or(f64::NAN),
        delays.len(),
    );
}

/// Polls until receipt `sequence` is in an anchored batch.
fn wait_anchored(store: &Store, gateway_id: &str, sequence: i64, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(batch)) = store.batch_of(gateway_id, sequence)
            && batch.tx_id.is_some()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "receipt {sequence} was not anchored"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}
