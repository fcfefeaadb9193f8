//! Cross-replica cache invalidation: two gateways share one consent store and one Redis; a
//! revocation on one is a deny on the other as soon as its event arrives (the time from the
//! revocation's commit to the first deny is printed); a replica whose Redis is unreachable
//! serves no cached permit and still sees the other's revocation at its next request.
//! Needs `ASSENT_TEST_REDIS_URL` (scripts/test.sh sets it); skipped without it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use assent_e2e::*;
use assent_gateway::store::testing;
use serde_json::{Value, json};

use crate::consent::{consent, hospital, put_consent};

fn redis_url() -> Option<String> {
    let url = std::env::var("ASSENT_TEST_REDIS_URL").ok();
    if url.is_none() {
        eprintln!("skipped: ASSENT_TEST_REDIS_URL is not set");
    }
    url
}

/// A channel prefix of this test alone, so that parallel tests do not hear each other.
fn channel_prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("assent-test-{test}-{}-{nanos}", std::process::id())
}

fn replica(store_url: &str, upstream: &FakeUpstream, cache: &Value) -> StartedGateway {
    // Replicas on one store keep a receipt chain each: distinct gateway ids.
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    TestGateway::new()
        .database(store_url)
        .set("gateway_id", json!(format!("replica-{n}")))
        .site_with(
            "north-general",
            json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": "opt-in"}),
        )
        .set("cache", cache.clone())
        .start()
}

/// Waits until the replica's fan-out is subscribed (its cache in use).
fn wait_subscribed(gw: &StartedGateway) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while gw.gateway.state.consents.cache_bypassed() {
        assert!(
            Instant::now() < deadline,
            "the cache fan-out never subscribed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

async fn read(gw: &StartedGateway) -> Got {
    send(
        "GET",
        &gw.url("/fhir/north-general/Patient/p1"),
        Some(clinician_token()),
        &[],
        None,
    )
    .await
}

async fn revoke(gw: &StartedGateway) {
    let revoked = send(
        "POST",
        &gw.url("/consent/Consent/c-p1/$revoke"),
        Some(admin_token()),
        &[("content-type", "application/json")],
        Some(br#"{"reason": "patient-request"}"#.to_vec()),
    )
    .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
}

/// Reads on `gw` until the answer has `status`; returns how long that took.
async fn until_status(gw: &StartedGateway, status: u16) -> Duration {
    let start = Instant::now();
    loop {
        let got = read(gw).await;
        if got.status == status {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still {} after 10 s: {}",
            got.status,
            got.text()
        );
        actix_web::rt::time::sleep(Duration::from_millis(1)).await;
    }
}

#[actix_web::test]
async fn a_revocation_on_one_replica_is_a_deny_on_the_other() {
    let Some(redis) = redis_url() else { return };
    let upstream = hospital();
    for store in testing::all() {
        let cache = json!({"redis_url": redis, "redis_channel_prefix": channel_prefix("revoke")});
        let a = replica(&store.url, &upstream, &cache);
        let b = replica(&store.url, &upstream, &cache);
        wait_subscribed(&a);
        wait_subscribed(&b);

        // Opt-in: denied on both until p1 consents (on A).
        assert_eq!(read(&b).await.status, 403);
        let created = put_consent(
            &a,
            "north-general",
            &consent("c-p1", "p1", "dr-alice", true),
        )
        .await;
        assert_eq!(created.status, 201, "{}", created.text());
        until_status(&b, 200).await;
        // B now serves p1's consents from its cache.
        assert_eq!(read(&b).await.status, 200);
        assert!(!b.gateway.state.consents.cache_bypassed());

        // Revoked on A: B denies once the event arrived.
        revoke(&a).await;
        let to_deny = until_status(&b, 403).await;
        eprintln!(
            "cross-replica revocation → first deny on the other replica ({}): {:.2} ms",
            if store.url.starts_with("postgres") {
                "PostgreSQL"
            } else {
                "SQLite"
            },
            to_deny.as_secs_f64() * 1e3
        );
        assert!(to_deny < Duration::from_secs(5), "{to_deny:?}");
        assert_eq!(read(&b).await.error_code(), "consent-denied");
        assert_eq!(read(&a).await.error_code(), "consent-denied");
        let metrics = send("GET", &b.url("/metrics"), None, &[], None)
            .await
            .text();
        assert!(
            metrics.contains("assent_cache_fanout_subscribed 1"),
            "{metrics}"
        );
        assert!(
            !metrics.contains("assent_cache_fanout_received_total 0"),
            "{metrics}"
        );
    }
}

#[actix_web::test]
async fn a_replica_without_its_subscription_serves_no_cached_permit() {
    let Some(redis) = redis_url() else { return };
    let upstream = hospital();
    for store in testing::all() {
        let prefix = channel_prefix("down");
        let a = replica(
            &store.url,
            &upstream,
            &json!({"redis_url": redis, "redis_channel_prefix": prefix}),
        );
        // B's Redis is a closed port: it never subscribes.
        let closed = closed_port_url()
            .replace("http://", "redis://")
            .replace("/fhir", "");
        let b = replica(
            &store.url,
            &upstream,
            &json!({"redis_url": closed, "redis_channel_prefix": prefix}),
        );
        wait_subscribed(&a);
        assert!(b.gateway.state.consents.cache_bypassed());

        let created = put_consent(
            &a,
            "north-general",
            &consent("c-p1", "p1", "dr-alice", true),
        )
        .await;
        assert_eq!(created.status, 201, "{}", created.text());
        // No event reaches B, yet it reads the shared store before deciding.
        assert_eq!(read(&b).await.status, 200);
        assert_eq!(read(&b).await.status, 200);
        revoke(&a).await;
        // The very next request on B is denied: nothing was served from its cache.
        assert_eq!(read(&b).await.error_code(), "consent-denied");
        let metrics = send("GET", &b.url("/metrics"), None, &[], None)
            .await
            .text();
        assert!(
            metrics.contains("assent_cache_fanout_subscribed 0"),
            "{metrics}"
        );
        assert!(
            metrics.contains("assent_cache_fanout_errors_total{kind=\"connect\"}"),
            "{metrics}"
        );
    }
}

/// A network consent's revocation on one replica is a deny on the other at a site patient
/// linked to it: the other replica's cached decision of that site patient holds the network
/// patient's consents, and is dropped when the network patient's keyed hash is announced.
#[actix_web::test]
async fn a_network_consents_revocation_reaches_the_linked_patients_on_the_other_replica() {
    let Some(redis) = redis_url() else { return };
    const NID: &str = "urn:oid:2.16.840.1.113883.4.1";
    let upstream = hospital();
    for store in testing::all() {
        let cache = json!({"redis_url": redis, "redis_channel_prefix": channel_prefix("network")});
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let start = || {
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            TestGateway::new()
                .database(&store.url)
                .set("gateway_id", json!(format!("network-replica-{n}")))
                .site_with(
                    "north-general",
                    json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": "opt-in",
                           "patient_identifier_systems": [NID], "network_identifier_systems": [NID]}),
                )
                .set("cache", cache.clone())
                .start()
        };
        let (a, b) = (start(), start());
        wait_subscribed(&a);
        wait_subscribed(&b);
        // North General's p1 is network patient n (the index is in the shared store).
        let n = a
            .gateway
            .state
            .network
            .learn("north-general", "p1", [(NID, "777")], 1)
            .unwrap()
            .network_id
            .unwrap();
        assert_eq!(read(&b).await.status, 403, "opt-in");
        let created = send(
            "POST",
            &a.url("/consent/Consent?site=network"),
            Some(admin_token()),
            &[("content-type", "application/fhir+json; fhirVersion=4.0")],
            Some(
                consent("net", &n, "dr-alice", true)
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await;
        assert_eq!(created.status, 201, "{}", created.text());
        let id = created.json()["id"].as_str().unwrap().to_owned();
        until_status(&b, 200).await;
        // B serves p1's decision from its cache now, network consent included.
        assert_eq!(read(&b).await.status, 200);
        assert!(!b.gateway.state.consents.cache_bypassed());
        let revoked = send(
            "POST",
            &a.url(&format!("/consent/Consent/{id}/$revoke")),
            Some(admin_token()),
            &[],
            None,
        )
        .await;
        assert_eq!(revoked.status, 200, "{}", revoked.text());
        let to_deny = until_status(&b, 403).await;
        assert!(to_deny < Duration::from_secs(5), "{to_deny:?}");
        assert_eq!(read(&b).await.error_code(), "consent-denied");
    }
}
