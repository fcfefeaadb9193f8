//! Crash safety of receipts: the `assent` binary is killed with SIGKILL while clients read
//! through it; after a restart on the same store, every receipt whose response a client
//! received is there (copied from the receipt log before the gateway serves again), the chain
//! holds, and anchoring resumes until every receipt is in an anchored batch whose proofs
//! verify.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use assent_fhir::FhirVersion;
use assent_gateway::demo::identity_provider::DemoIdentityProvider;
use assent_gateway::demo::sample_site::SampleSite;
use assent_gateway::services::anchoring::rebuild_batch;
use assent_gateway::store::Store;
use assent_receipts::{Digest, Receipt, verify_chain, verify_inclusion};
use serde_json::json;

const AUDIENCE: &str = "https://assent.test/fhir";
const GATEWAY_ID: &str = "crash-gw";

/// A gateway process this test started; killed when dropped.
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn start(config: &std::path::Path, addr: SocketAddr) -> Gateway {
    let child = Command::new(env!("CARGO_BIN_EXE_assent"))
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--workers",
            "2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("assent starts");
    let gateway = Gateway(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(addr, "/readyz", None).map(|(s, _, _)| s) != Some(200) {
        assert!(Instant::now() < deadline, "the gateway did not get ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    gateway
}

/// One HTTP/1.1 request on a fresh connection: (status, `X-Assent-Receipt`, body), or `None`
/// when the connection broke before the whole response arrived.
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Option<(u16, Option<String>, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let receipt = head
        .lines()
        .find_map(|l| l.strip_prefix("x-assent-receipt: "))
        .map(str::to_owned);
    // A response released in full: its length is what the header announced.
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))?
        .trim()
        .parse()
        .ok()?;
    (body.len() == length).then(|| (status, receipt, body.to_owned()))
}

#[test]
fn every_released_receipt_survives_a_kill_and_anchoring_resumes() {
    let idp = DemoIdentityProvider::start(AUDIENCE).unwrap();
    let token = idp
        .provider()
        .mint("dr-alice", Some("openid fhirUser user/*.rs"), None, None)
        .unwrap();
    let site = SampleSite::start(
        FhirVersion::R4,
        vec![json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Crash"}]})],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let addr = free_port();
    let config = dir.path().join("assent.toml");
    let keys = dir.path().join("keys.toml");
    assent_gateway::config::keys::write_key_file(&keys, &assent_gateway::config::keys::generate())
        .unwrap();
    std::fs::write(
        &config,
        format!(
            r#"
listen = "{addr}"
database_url = "{db}"
gateway_id = "{GATEWAY_ID}"

[log]
level = "error"
access_log = false

[receipts]
batch_max_receipts = 64
batch_max_wait_ms = 50

[keys]
file = "{keys}"

[[auth.issuers]]
issuer = "{issuer}"
audience = ["{AUDIENCE}"]
algorithms = ["ES256"]

[sites.st-mary]
upstream = "{upstream}"
fhir_version = "R4"
default_policy = "opt-out"
"#,
            db = db.display(),
            keys = keys.display(),
            issuer = idp.issuer(),
            upstream = site.base_url(),
        ),
    )
    .unwrap();

    // Four clients read until the gateway dies under them.
    let gateway = start(&config, addr);
    let released = Arc::new(Mutex::new(Vec::<String>::new()));
    let served = Arc::new(AtomicUsize::new(0));
    let dead = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (released, served, dead, token) = (
                released.clone(),
                served.clone(),
                dead.clone(),
                token.clone(),
            );
            std::thread::spawn(move || {
                let mut failures = 0;
                while failures < 20 {
                    match get(addr, "/fhir/st-mary/Patient/p1", Some(&token)) {
                        Some((200, Some(receipt), body)) => {
                            assert!(body.contains("Crash"), "{body}");
                            released.lock().unwrap().push(receipt);
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        Some((status, _, body)) => panic!("unexpected {status}: {body}"),
                        None if dead.load(Ordering::Relaxed) => failures += 1,
                        None => {}
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while served.load(Ordering::Relaxed) < 300 {
        assert!(Instant::now() < deadline, "the clients were not served");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut gateway = gateway;
    gateway.0.kill().unwrap(); // SIGKILL
    gateway.0.wait().unwrap();
    dead.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let released = released.lock().unwrap().clone();
    assert!(released.len() >= 300);

    // Restarted on the same store: every released receipt is there, the chain holds.
    let _gateway = start(&config, addr);
    let store = Store::open(db.to_str().unwrap()).unwrap();
    for id in &released {
        assert!(
            store.receipt(id).unwrap().is_some(),
            "receipt {id} was released but is not in the store"
        );
    }
    // One more request after the restart continues the same chain.
    let (status, after, _) = get(addr, "/fhir/st-mary/Patient/p1", Some(&token)).unwrap();
    assert_eq!(status, 200);
    // The store's tables are filled from the receipt log off the request path.
    let after = after.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        if let Some(row) = store.receipt(&after).unwrap() {
            break row;
        }
        assert!(
            Instant::now() < deadline,
            "receipt {after} did not reach the store"
        );
        std::thread::sleep(Duration::from_millis(10));
    };

    let rows = store.receipts_after(GATEWAY_ID, 0, i64::MAX).unwrap();
    assert_eq!(rows.last().map(|r| r.sequence), Some(after.sequence));
    let receipts: Vec<(Receipt, Digest)> = rows
        .iter()
        .map(|r| {
            (
                Receipt::from_canonical_bytes(&r.body).unwrap(),
                Digest(r.hash.clone().try_into().unwrap()),
            )
        })
        .collect();
    let breaks = verify_chain(receipts.iter().map(|(r, h)| (r, Some(*h))));
    assert!(breaks.is_empty(), "{breaks:?}");

    // Anchoring resumes: every receipt ends up in an anchored batch, each once.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let covered = store
            .last_batch(GATEWAY_ID)
            .unwrap()
            .is_some_and(|b| b.last_sequence >= after.sequence);
        if covered && store.unanchored_batches(GATEWAY_ID).unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "anchoring did not resume");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut next_first = 1;
    let mut sequence = 1;
    while sequence <= after.sequence {
        let (row, batch) = rebuild_batch(&store, GATEWAY_ID, sequence)
            .unwrap()
            .unwrap();
        assert_eq!(
            row.first_sequence, next_first,
            "batches neither overlap nor skip"
        );
        assert!(row.tx_id.is_some());
        assert_eq!(row.root, batch.root.as_bytes().to_vec());
        for s in row.first_sequence..=row.last_sequence {
            let (_, hash) = &receipts[(s - 1) as usize];
            assert!(verify_inclusion(
                hash,
                batch.proof_for(s as u64).unwrap(),
                &batch.root
            ));
        }
        next_first = row.last_sequence + 1;
        sequence = next_first;
    }
}
