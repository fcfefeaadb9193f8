//! P5 and P9 at the gateway's consent service (no HTTP): a decision from the decision cache
//! and on a cache miss against the embedded ledger (ledger query, stored document, parse),
//! and the time from a revocation's commit to the first deny, on the same replica and on a
//! second replica told through Redis.
//!
//! Usage: `consent_bench [N]` (default 20000 decisions, N/100 revocations).
//! Environment: `ASSENT_TEST_DATABASE_URL` (PostgreSQL: both replicas share a fresh schema
//! there, dropped at the end; default a temporary SQLite file), `ASSENT_BENCH_REDIS_URL` (default `redis://127.0.0.1:6379`; the
//! cross-replica figure is skipped when Redis is unreachable).

use std::sync::Arc;
use std::time::{Duration, Instant};

use assent_consent::{
    AccessRequest, Caller, ConsortiumKey, Decision, RevocationReason, SitePolicy, decide,
};
use assent_fhir::{FhirVersion, Interaction};
use assent_gateway::config::{CacheConfig, Config};
use assent_gateway::http::observability::Metrics;
use assent_gateway::services::consent::{ConsentService, now};
use assent_gateway::services::network::NetworkIndex;
use assent_gateway::store::{Store, testing};
use serde_json::{Value, json};

const SITE: &str = "bench";
const KEY: [u8; 32] = [7; 32];
const SEED: [u8; 32] = [9; 32];

fn consent(id: &str, patient: &str) -> Value {
    json!({
        "resourceType": "Consent", "id": id, "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{patient}")},
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": {"type": "deny", "provision": [{
            "type": "permit",
            "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]},
                       "reference": {"reference": "Practitioner/dr-a"}}],
            "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}]
        }]}
    })
}

/// The network index over the bench's store: nobody is linked, so a cache miss pays the
/// link lookup (one indexed read) and finds none.
static INDEX: std::sync::OnceLock<NetworkIndex> = std::sync::OnceLock::new();

fn index(store: &Store) -> NetworkIndex {
    let config = Config::from_toml(&format!(
        "database_url = \"/tmp/unused.db\"\n[sites.{SITE}]\nupstream = \"http://127.0.0.1:1/fhir\"\nfhir_version = \"R4\"\ndefault_policy = \"opt-in\"\n"
    ))
    .expect("bench configuration");
    NetworkIndex::new(
        store.clone(),
        ConsortiumKey::new(&KEY).expect("key"),
        &config,
    )
}

async fn decision(service: &ConsentService, caller: &Caller, patient: &str) -> Decision {
    let consents = service
        .consents_for(SITE, patient, INDEX.get().expect("index opened"))
        .await
        .expect("consent state readable");
    let request = AccessRequest::new(caller, Interaction::Read, Some("Observation"), now())
        .with_purpose("TREAT");
    decide(&consents, &request, SitePolicy::OptIn)
}

/// p50, p99 and max of `samples`, in microseconds.
fn percentiles(samples: &mut [Duration]) -> (f64, f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1e6
    };
    (at(0.50), at(0.99), at(1.0))
}

fn open(url: &str) -> Arc<ConsentService> {
    let store = Store::open(url).expect("store opens");
    ConsentService::open_embedded(store, &KEY, SEED).expect("ledger opens")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let (store, backend) = match testing::postgres() {
        Some(store) => (store, "PostgreSQL"),
        None => (testing::sqlite(), "SQLite"),
    };
    let url = store.url.clone();
    let a = open(&url);
    let _ = INDEX.set(index(&Store::open(&url).expect("store opens")));
    let caller = Caller::new().with_reference("Practitioner/dr-a");
    let run = std::process::id();

    // P5: one patient with a consent; the decision read from the cache, then on a miss.
    let patient = format!("p5-{run}");
    a.put(
        SITE,
        consent(&format!("c5-{run}"), &patient),
        Some(FhirVersion::R4),
        &patient,
        None,
    )
    .await
    .expect("consent stored");
    assert!(decision(&a, &caller, &patient).await.is_permit());
    let mut hits = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let d = decision(&a, &caller, &patient).await;
        hits.push(t.elapsed());
        assert!(d.is_permit());
    }
    let hit_rate = n as f64 / started.elapsed().as_secs_f64();
    let (p50, p99, max) = percentiles(&mut hits);
    println!(
        "P5 decision from the cache: p50 {p50:.2} µs, p99 {p99:.2} µs, max {max:.1} µs; {hit_rate:.0} decisions/s on one core"
    );
    let misses_n = (n / 10).max(100);
    let key = a.patient_key(SITE, &patient);
    let mut misses = Vec::with_capacity(misses_n);
    let started = Instant::now();
    for _ in 0..misses_n {
        a.invalidate(&key);
        let t = Instant::now();
        let d = decision(&a, &caller, &patient).await;
        misses.push(t.elapsed());
        assert!(d.is_permit());
    }
    let miss_rate = misses_n as f64 / started.elapsed().as_secs_f64();
    let (p50, p99, max) = percentiles(&mut misses);
    println!(
        "P5 decision on a cache miss ({backend}: ledger state, stored document, parse): p50 {p50:.1} µs, p99 {p99:.1} µs, max {max:.0} µs; {miss_rate:.0} decisions/s on one core"
    );

    // P9, one replica: the revocation invalidates before it returns; the next decision denies.
    let revocations = (n / 100).max(20);
    let mut commits = Vec::with_capacity(revocations);
    let mut to_deny = Vec::with_capacity(revocations);
    for i in 0..revocations {
        let patient = format!("p9-{run}-{i}");
        let id = format!("c9-{run}-{i}");
        a.put(
            SITE,
            consent(&id, &patient),
            Some(FhirVersion::R4),
            &patient,
            None,
        )
        .await
        .expect("consent stored");
        assert!(decision(&a, &caller, &patient).await.is_permit());
        let t = Instant::now();
        a.revoke(&id, RevocationReason::PatientRequest)
            .await
            .expect("revoked");
        let committed = Instant::now();
        commits.push(committed - t);
        let d = decision(&a, &caller, &patient).await;
        to_deny.push(committed.elapsed());
        assert!(!d.is_permit(), "a permit after the revocation committed");
    }
    let (c50, c99, _) = percentiles(&mut commits);
    let (p50, p99, max) = percentiles(&mut to_deny);
    println!(
        "P9 same replica, {revocations} revocations ({backend}): revoke commit p50 {c50:.0} µs, p99 {c99:.0} µs; commit → first deny p50 {p50:.1} µs, p99 {p99:.1} µs, max {max:.0} µs (0 permits after commit)"
    );

    // P9 across replicas: B shares the store and hears of A's changes through Redis.
    let redis = std::env::var("ASSENT_BENCH_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let cache = CacheConfig {
        redis_url: Some(redis.clone()),
        redis_channel_prefix: format!("assent-bench-{run}"),
    };
    let b = open(&url);
    let metrics = Metrics::new();
    for service in [&a, &b] {
        assent_gateway::services::cache_fanout::start(
            service,
            &cache,
            metrics.cache_fanout.clone(),
        )
        .expect("fan-out starts");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.cache_bypassed() || b.cache_bypassed() {
        if Instant::now() > deadline {
            println!("P9 across replicas: skipped, Redis at {redis} unreachable");
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut across = Vec::with_capacity(revocations);
    let mut polls = 0usize;
    for i in 0..revocations {
        let patient = format!("p9x-{run}-{i}");
        let id = format!("c9x-{run}-{i}");
        a.put(
            SITE,
            consent(&id, &patient),
            Some(FhirVersion::R4),
            &patient,
            None,
        )
        .await
        .expect("consent stored");
        let until = Instant::now() + Duration::from_secs(10);
        while !decision(&b, &caller, &patient).await.is_permit() {
            assert!(Instant::now() < until, "B never saw the consent");
            std::thread::sleep(Duration::from_micros(50));
        }
        a.revoke(&id, RevocationReason::PatientRequest)
            .await
            .expect("revoked");
        let committed = Instant::now();
        loop {
            polls += 1;
            if !decision(&b, &caller, &patient).await.is_permit() {
                across.push(committed.elapsed());
                break;
            }
            assert!(
                committed.elapsed() < Duration::from_secs(10),
                "B never denied"
            );
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    let (p50, p99, max) = percentiles(&mut across);
    println!(
        "P9 across replicas through Redis, {revocations} revocations ({backend}): commit on A → first deny on B p50 {p50:.0} µs, p99 {p99:.0} µs, max {max:.0} µs ({polls} polls of B every ~50 µs)"
    );
    drop((a, b));
    drop(store);
}
