//! Retries of idempotent reads on connection failure, and the circuit breaker.

use std::sync::atomic::Ordering;

use assent_e2e::*;
use serde_json::json;

#[actix_web::test]
async fn a_read_is_retried_once_when_the_connection_fails() {
    let upstream = DroppingUpstream::start(1, json!({"resourceType": "Patient", "id": "p1"}));
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let got = get(&gw.url("/fhir/st-mary/Patient/p1")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["id"], "p1");
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 2);
}

#[actix_web::test]
async fn a_read_is_retried_only_once() {
    let upstream = DroppingUpstream::start(usize::MAX, json!({}));
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let got = get(&gw.url("/fhir/st-mary/Patient/p1")).await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (502, "upstream-unreachable")
    );
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 2);
}

#[actix_web::test]
async fn a_failing_site_is_cut_off_and_answers_at_once() {
    let upstream = FakeUpstream::start(|_, _| {
        FakeResponse::json(503, json!({"resourceType": "OperationOutcome"}))
    });
    let healthy = FakeUpstream::always(json!({"resourceType": "Patient", "id": "p1"}));
    let gw = TestGateway::new()
        .site_with("st-mary", json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": "opt-out",
            "circuit_breaker": {"failures": 3, "open_ms": 60000}}))
        .site("north-general", &healthy.base_url())
        .start();
    for _ in 0..3 {
        let got = get(&gw.url("/fhir/st-mary/Patient/p1")).await;
        assert_eq!(
            (got.status, got.error_code().as_str()),
            (502, "upstream-error")
        );
    }
    let got = get(&gw.url("/fhir/st-mary/Patient/p1")).await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (503, "upstream-circuit-open")
    );
    assert!(got.header("retry-after").is_some());
    assert_eq!(
        upstream.requests().len(),
        3,
        "an open circuit sends nothing upstream"
    );
    // Other sites are not affected.
    assert_eq!(
        get(&gw.url("/fhir/north-general/Patient/p1")).await.status,
        200
    );
    let admin = send(
        "GET",
        &gw.url("/admin/sites/st-mary"),
        Some(admin_token()),
        &[],
        None,
    )
    .await;
    assert_eq!(admin.json()["circuit"], "open");
}

#[actix_web::test]
async fn an_open_circuit_lets_a_trial_through_after_its_wait() {
    let upstream = FakeUpstream::start(|req, _| {
        if req.path.ends_with("/bad") {
            FakeResponse::json(500, json!({}))
        } else {
            FakeResponse::json(200, json!({"resourceType": "Patient", "id": "ok"}))
        }
    });
    let gw = TestGateway::new()
        .site_with("st-mary", json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": "opt-out",
            "circuit_breaker": {"failures": 2, "open_ms": 300}}))
        .start();
    for _ in 0..2 {
        assert_eq!(get(&gw.url("/fhir/st-mary/Patient/bad")).await.status, 502);
    }
    assert_eq!(get(&gw.url("/fhir/st-mary/Patient/ok")).await.status, 503);
    actix_web::rt::time::sleep(std::time::Duration::from_millis(700)).await;
    assert_eq!(get(&gw.url("/fhir/st-mary/Patient/ok")).await.status, 200);
    assert_eq!(get(&gw.url("/fhir/st-mary/Patient/ok")).await.status, 200);
}
