//! Consent end to end on Hyperledger Fabric: the gateway configured with
//! `[ledger] backend = "fabric"` against the FAKE Fabric gateway peer, which runs the real
//! consent chaincode over the shim protocol. The same scenario (a denied read, a consent
//! granted, permitted reads, a revocation, denied reads again, history, `$check`) runs on the
//! embedded ledger and on Fabric and must answer the same, step by step. Then two replicas
//! on one Fabric channel: a grant or revocation made through one reaches the other's
//! decision cache through the chaincode events, then also when every event stream breaks
//! and must be resumed after the last event handled.

use std::time::{Duration, Instant};

use assent_e2e::*;
use assent_gateway::store::Store;
use serde_json::{Value, json};

use crate::consent::{consent, hospital, put_consent};

const SITE: &str = "north-general";

fn gateway(upstream: &FakeUpstream, ledger: Value) -> TestGateway {
    TestGateway::new()
        .site_with(
            SITE,
            json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": "opt-in"}),
        )
        .set("ledger", ledger)
}

async fn read(gw: &StartedGateway, token: &str, patient: &str) -> Got {
    send(
        "GET",
        &gw.url(&format!("/fhir/{SITE}/Patient/{patient}")),
        Some(token),
        &[],
        None,
    )
    .await
}

/// One line per step: what the gateway answered (status, error code, the consent a
/// decision relied on, versions).
fn line(step: &str, got: &Got) -> String {
    let code = if got.status >= 400 {
        got.error_code()
    } else {
        String::new()
    };
    let basis = got
        .header("x-assent-consent")
        .map(|b| b.split(':').take(2).collect::<Vec<_>>().join(":"))
        .unwrap_or_default();
    let etag = got.header("etag").unwrap_or_default();
    let status = got.status.to_string();
    let parts: Vec<&str> = [status.as_str(), &code, &basis, etag]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect();
    format!("{step}: {}", parts.join(" "))
}

/// Grants, reads, revokes and reads again through `gw`; returns what it saw.
async fn scenario(gw: &StartedGateway) -> Vec<String> {
    let alice = clinician_token(); // Practitioner/dr-alice
    let bob = other_clinician_token(); // Practitioner/dr-bob
    let mut seen = Vec::new();
    seen.push(line("read before consent", &read(gw, alice, "p1").await));
    seen.push(line("read again", &read(gw, alice, "p1").await));
    let granted = put_consent(gw, SITE, &consent("c-p1", "p1", "dr-alice", true)).await;
    assert!(granted.header("x-assent-ledger-tx").is_some());
    seen.push(line("grant", &granted));
    seen.push(line("read after grant", &read(gw, alice, "p1").await));
    seen.push(line("read again (cache)", &read(gw, alice, "p1").await));
    seen.push(line("another clinician", &read(gw, bob, "p1").await));
    seen.push(line(
        "grant again",
        &put_consent(gw, SITE, &consent("c-p1", "p1", "dr-alice", true)).await,
    ));
    let revoke_url = gw.url("/consent/Consent/c-p1/$revoke");
    let revoke = || {
        send(
            "POST",
            &revoke_url,
            Some(admin_token()),
            &[("content-type", "application/json")],
            Some(br#"{"reason": "patient-request"}"#.to_vec()),
        )
    };
    seen.push(line("revoke", &revoke().await));
    seen.push(line("read after revoke", &read(gw, alice, "p1").await));
    seen.push(line("revoke again", &revoke().await));
    let history = send(
        "GET",
        &gw.url("/consent/Consent/c-p1/_history"),
        Some(admin_token()),
        &[],
        None,
    )
    .await;
    let versions: Vec<String> = history.json()["entry"]
        .as_array()
        .expect("history entries")
        .iter()
        .map(|e| {
            e["resource"]["meta"]["versionId"]
                .as_str()
                .unwrap_or("?")
                .to_owned()
        })
        .collect();
    seen.push(format!(
        "history: {} {}",
        history.status,
        versions.join(",")
    ));
    let check = send(
        "POST",
        &gw.url("/consent/$check"),
        Some(admin_token()),
        &[("content-type", "application/json")],
        Some(
            json!({"site": SITE, "patient": "Patient/p1", "actor": "Practitioner/dr-alice", "resourceType": "Patient"})
                .to_string()
                .into_bytes(),
        ),
    )
    .await;
    seen.push(format!(
        "check: {} {}",
        check.status,
        check.json()["decision"]
    ));
    seen.push(line("unknown consent", &{
        send(
            "POST",
            &gw.url("/consent/Consent/none/$revoke"),
            Some(admin_token()),
            &[],
            None,
        )
        .await
    }));
    seen
}

#[actix_web::test]
async fn grant_and_revoke_behave_on_fabric_exactly_as_on_the_embedded_ledger() {
    let upstream = hospital();
    let embedded = {
        // The same consortium key as on Fabric: every test gateway's.
        let gw = gateway(&upstream, json!({"backend": "embedded"})).start();
        scenario(&gw).await
    };
    let network = FakeFabricNetwork::start();
    let on_fabric = {
        let gw = gateway(&upstream, network.ledger_config()).start();
        scenario(&gw).await
    };
    // The scenario's expected answers, so that "the same" is also "right".
    let expected = [
        "read before consent: 403 consent-denied",
        "read again: 403 consent-denied",
        "grant: 201 W/\"1\"",
        "read after grant: 200 consent:c-p1@1",
        "read again (cache): 200 consent:c-p1@1",
        "another clinician: 403 consent-denied",
    ];
    assert_eq!(&embedded[..expected.len()], expected, "{embedded:#?}");
    assert!(
        embedded.contains(&"read after revoke: 403 consent-denied".to_owned()),
        "{embedded:#?}"
    );
    assert!(
        embedded.contains(&"history: 200 2,1".to_owned()),
        "{embedded:#?}"
    );
    assert_eq!(on_fabric, embedded, "Fabric answered differently");
    let seen = network.fake().seen();
    use std::sync::atomic::Ordering;
    assert!(
        seen.signatures_verified.load(Ordering::SeqCst) > 5,
        "the gateway's requests reached the fake peer, signed"
    );
    assert_eq!(
        seen.refused.load(Ordering::SeqCst),
        0,
        "no request was refused"
    );
}

/// Polls `read` until it answers `status`; how long that took.
async fn until_status(gw: &StartedGateway, patient: &str, status: u16) -> Duration {
    let started = Instant::now();
    loop {
        let got = read(gw, clinician_token(), patient).await;
        if got.status == status {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "still {} after 15 s: {}",
            got.status,
            got.text()
        );
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_web::test]
async fn a_revocation_reaches_every_replica_through_chaincode_events_across_broken_streams() {
    let upstream = hospital();
    let network = FakeFabricNetwork::start();
    // Replicas share the store (the consent documents live there) and the channel.
    let shared = tempfile::tempdir().expect("tempdir");
    let db = shared.path().join("shared.db").display().to_string();
    let a = gateway(&upstream, network.ledger_config())
        .database(&db)
        .start();
    // Each replica keeps its own receipt chain: distinct gateway ids.
    let b = gateway(&upstream, network.ledger_config())
        .database(&db)
        .set("gateway_id", serde_json::json!("test-gw-b"))
        .start();

    for round in 1..=4 {
        if round == 3 {
            // From now on every event stream breaks after one response: each replica must
            // resume after its last event to see the next one (and bypasses its cache
            // meanwhile).
            network.fake().break_event_streams_after(1);
        }
        let id = format!("c-round-{round}");
        let granted = put_consent(&a, SITE, &consent(&id, "p2", "dr-alice", true)).await;
        assert_eq!(granted.status, 201, "{}", granted.text());
        // Replica B learns of the grant from the ledger (a cached deny is dropped by the
        // event), and caches the permit.
        until_status(&b, "p2", 200).await;
        assert_eq!(read(&b, clinician_token(), "p2").await.status, 200);
        assert_eq!(read(&a, clinician_token(), "p2").await.status, 200);

        let revoked = send(
            "POST",
            &a.url(&format!("/consent/Consent/{id}/$revoke")),
            Some(admin_token()),
            &[("content-type", "application/json")],
            Some(br#"{"reason": "patient-request"}"#.to_vec()),
        )
        .await;
        assert_eq!(revoked.status, 200, "{}", revoked.text());
        // At once on the replica that revoked; on the other when the event arrives.
        assert_eq!(
            read(&a, clinician_token(), "p2").await.error_code(),
            "consent-denied"
        );
        let took = until_status(&b, "p2", 403).await;
        assert!(took < Duration::from_secs(10), "round {round}: {took:?}");
        // And it stays denied.
        for _ in 0..3 {
            assert_eq!(read(&b, clinician_token(), "p2").await.status, 403);
        }
    }
    use std::sync::atomic::Ordering;
    assert!(
        network.fake().seen().streams_broken.load(Ordering::SeqCst) >= 2,
        "the replicas resumed broken event streams"
    );
    // The checkpoint of the last event handled is kept in the store.
    let store = Store::open(&db).expect("the shared store opens");
    let checkpoint: Value = serde_json::from_str(
        &store
            .setting(&network.checkpoint_setting())
            .expect("the store answers")
            .expect("a checkpoint is stored"),
    )
    .expect("a JSON checkpoint");
    assert!(
        checkpoint["block_number"].as_u64().unwrap_or(0) > 0,
        "{checkpoint}"
    );
    assert!(a.gateway.state.consents.events_checkpoint().is_some());
}
