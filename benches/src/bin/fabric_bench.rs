//! Fabric benchmark, through `FabricLedger` (the gateway's Fabric backend): consent write
//! latency (Endorse → Submit → CommitStatus: submit to commit), evaluate latency (a
//! patient's consents in force, the decision cache's miss path) and anchors per second
//! (receipt batch roots recorded by concurrent writers).
//!
//! `fabric_bench` runs against the real network named by `ASSENT_FABRIC_TEST_CONFIG` (a JSON
//! `FabricConfig`, as the fabric crate's real-network tests read it); `fabric_bench --fake`
//! against the in-process FAKE Fabric gateway peer driving the real chaincode server (one
//! peer, no orderer, blocks cut every 15 ms: a measure of the client, the shim and the
//! contract, not of Fabric). Prints a Markdown table for `benches/run.sh`.
//!
//! Keys carry a per-run nonce, so runs never collide on a long-lived channel.
//! Environment: `WRITES` (default 50), `READS` (default 200), `ANCHORS` (default 200),
//! `CONCURRENCY` (default 16).

use std::sync::Arc;
use std::time::{Duration, Instant};

use assent_consent::{AnchorSubmission, ConsentSubmission, ConsortiumKey, RecordStatus};
use assent_fabric::{FabricConfig, FabricLedger};
use assent_ledger::Ledger;

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// p50, p95, p99 and max of `samples`, in milliseconds.
fn summary(samples: &mut [Duration]) -> String {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    let mean = samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len() as f64;
    format!(
        "{:.2} | {:.2} | {:.2} | {:.2} | {:.2}",
        at(0.50),
        at(0.95),
        at(0.99),
        samples.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        mean * 1000.0
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fake = std::env::args().any(|a| a == "--fake");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(fake))
}

async fn run(fake: bool) -> Result<(), Box<dyn std::error::Error>> {
    let writes = env_count("WRITES", 50).max(1);
    let reads = env_count("READS", 200).max(1);
    let anchors = env_count("ANCHORS", 200).max(1);
    let concurrency = env_count("CONCURRENCY", 16).clamp(1, anchors);

    // The fake network lives as long as this binding.
    let (_network, ledger, target) = if fake {
        let network = assent_fabric::testing::support::Network::start().await;
        let ledger = network.ledger();
        (
            Some(network),
            ledger,
            "the FAKE Fabric (in-process gateway peer, real chaincode over the shim, blocks every 15 ms)".to_owned(),
        )
    } else {
        let path = std::env::var("ASSENT_FABRIC_TEST_CONFIG")
            .map_err(|_| "set ASSENT_FABRIC_TEST_CONFIG, or pass --fake")?;
        let config: FabricConfig = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        assent_fabric::ensure_crypto_provider();
        let target = format!(
            "Fabric at {} (channel `{}`, chaincode `{}`, as {})",
            config.peer_endpoint, config.channel, config.chaincode, config.msp_id
        );
        (None, FabricLedger::from_config(&config)?, target)
    };
    let ledger: Arc<dyn Ledger> = Arc::new(ledger);
    let key = ConsortiumKey::new(&rand_bytes()).ok_or("key")?;
    let nonce = hex(&rand_bytes()[..6]);

    // Writes, one at a time: each is Endorse → Submit → CommitStatus.
    let mut write_latency = Vec::with_capacity(writes);
    for i in 0..writes {
        let submission = ConsentSubmission {
            consent_key: key.consent(&format!("bench-{nonce}-c{i}")),
            patient_key: key.patient(&format!("bench/{nonce}/Patient/p{}", i % 10)),
            grantee_keys: vec![key.keyed_hash("party-ref", &format!("Practitioner/d{i}"))],
            document_hash: hex(&sha(&format!("{nonce}/{i}"))),
            status: RecordStatus::Active,
            scope: "patient-privacy".into(),
            period_start: None,
            period_end: None,
            expected_version: None,
        };
        let started = Instant::now();
        ledger.put_consent(submission).await?;
        write_latency.push(started.elapsed());
    }

    // Evaluates, one at a time, over the patients just written.
    let now = assent_consent::Timestamp::from_unix_seconds(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64,
    );
    let mut read_latency = Vec::with_capacity(reads);
    for i in 0..reads {
        let patient = key.patient(&format!("bench/{nonce}/Patient/p{}", i % 10));
        let started = Instant::now();
        let found = ledger.active_consents(&patient, now).await?;
        read_latency.push(started.elapsed());
        if found.is_empty() {
            return Err("a patient written above has no consent in force".into());
        }
    }

    // Anchors by `concurrency` writers at once (a gateway's batches, one per writer).
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let ledger = ledger.clone();
        let gateway_key = key.gateway(&format!("bench-{nonce}-gw{w}"));
        let mine = anchors / concurrency + usize::from(w < anchors % concurrency);
        let nonce = nonce.clone();
        tasks.push(tokio::spawn(async move {
            for batch in 0..mine {
                let root = hex(&sha(&format!("{nonce}/{w}/{batch}")));
                ledger
                    .record_anchor(AnchorSubmission {
                        gateway_key: gateway_key.clone(),
                        batch_id: batch as u64,
                        root,
                        n_receipts: 1000,
                    })
                    .await?;
            }
            Ok::<_, assent_ledger::LedgerError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    let per_second = anchors as f64 / elapsed.as_secs_f64();

    println!("Against {target}.\n");
    println!("| measure | n | p50 ms | p95 ms | p99 ms | max ms | mean ms |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| consent write, submit → commit (sequential) | {writes} | {} |",
        summary(&mut write_latency)
    );
    println!(
        "| evaluate: a patient's consents in force (sequential) | {reads} | {} |",
        summary(&mut read_latency)
    );
    println!(
        "\n**Anchors per second: {per_second:.1}** ({anchors} anchors by {concurrency} concurrent writers in {:.2} s).",
        elapsed.as_secs_f64()
    );
    Ok(())
}

fn rand_bytes() -> [u8; 32] {
    // Distinct per run: the time and the process id, hashed.
    let seed = format!("{:?}/{}", std::time::SystemTime::now(), std::process::id());
    sha(&seed)
}

fn sha(text: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
