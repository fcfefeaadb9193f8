//! Every error is an OperationOutcome with a stable code and the documented status, and no
//! upstream detail leaks.

use assent_e2e::*;
use serde_json::json;
use std::time::Duration;

#[actix_web::test]
async fn client_errors_have_their_documented_status_and_code() {
    let upstream = FakeUpstream::always(json!({"resourceType": "Bundle", "type": "searchset"}));
    let gw = TestGateway::new()
        .set("max_body_bytes", json!(64))
        .site("st-mary", &upstream.base_url())
        .site_with("north-general", json!({"upstream": upstream.base_url(), "fhir_version": "STU3", "default_policy": "opt-in"}))
        .start();
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let cases: Vec<(Got, u16, &str)> = vec![
        (
            get(&gw.url("/fhir/no-such-site/Patient/1")).await,
            404,
            "unknown-site",
        ),
        (
            get(&gw.url("/fhir/st-mary/patient/1")).await,
            400,
            "malformed-request",
        ),
        (
            get(&gw.url("/fhir/st-mary/Patient?na%00me=1")).await,
            400,
            "malformed-request",
        ),
        (
            get(&gw.url("/fhir/st-mary/Patient?name=%E0%80")).await,
            400,
            "malformed-request",
        ),
        (
            send(
                "POST",
                &gw.url("/fhir/st-mary/Patient/_search"),
                Some(clinician_token()),
                &form,
                Some(vec![b'a'; 65]),
            )
            .await,
            413,
            "body-too-large",
        ),
        (
            send(
                "POST",
                &gw.url("/fhir/st-mary/Patient/_search"),
                Some(clinician_token()),
                &[("content-type", "application/json")],
                Some(b"{}".to_vec()),
            )
            .await,
            415,
            "unsupported-media-type",
        ),
        (
            send(
                "GET",
                &gw.url("/fhir/st-mary/Patient/1"),
                Some(clinician_token()),
                &[("accept", "application/fhir+xml")],
                None,
            )
            .await,
            415,
            "unsupported-media-type",
        ),
        (
            get(&gw.url("/fhir/st-mary/Patient?_format=xml")).await,
            415,
            "unsupported-media-type",
        ),
        (
            get(&gw.url("/fhir/north-general/Patient/1")).await,
            403,
            "consent-denied",
        ),
        (
            send(
                "DELETE",
                &gw.url("/fhir/st-mary/Patient/1"),
                Some(clinician_token()),
                &[],
                None,
            )
            .await,
            405,
            "method-not-allowed",
        ),
        (
            send("GET", &gw.url("/fhir/st-mary/Patient/1"), None, &[], None).await,
            401,
            "token-missing",
        ),
        (
            send(
                "GET",
                &gw.url("/fhir/st-mary/Patient/1"),
                Some("wrong-key"),
                &[],
                None,
            )
            .await,
            401,
            "token-malformed",
        ),
        (
            send(
                "GET",
                &gw.url("/fhir/st-mary/Patient/1"),
                Some(admin_token()),
                &[],
                None,
            )
            .await,
            403,
            "scope-insufficient",
        ),
        (get(&gw.url("/nowhere")).await, 404, "not-found"),
    ];
    for (i, (got, status, code)) in cases.iter().enumerate() {
        assert_eq!(got.status, *status, "case {i}: {}", got.text());
        assert_eq!(got.error_code(), *code, "case {i}");
        assert_eq!(
            got.header("content-type"),
            Some("application/fhir+json"),
            "case {i}"
        );
    }
    assert_eq!(
        cases[10].0.header("www-authenticate"),
        Some("Bearer realm=\"assent\"")
    );
    assert!(
        cases[11]
            .0
            .header("www-authenticate")
            .unwrap()
            .contains("error=\"invalid_token\""),
        "{:?}",
        cases[11].0.headers
    );
    assert!(
        cases[12]
            .0
            .header("www-authenticate")
            .unwrap()
            .contains("error=\"insufficient_scope\""),
        "{:?}",
        cases[12].0.headers
    );
    assert!(
        upstream.requests().is_empty(),
        "no refused request reached the upstream"
    );
}

#[actix_web::test]
async fn upstream_failures_map_to_502_and_504_without_leaking_detail() {
    let upstream = FakeUpstream::start(|req, _| match req.path.as_str() {
        "/fhir/Patient/missing" => FakeResponse::json(
            404,
            json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found", "diagnostics": "no row in table PATIENT_V7 on db-host-3"}]}),
        ),
        "/fhir/Patient/crash" => FakeResponse::json(
            500,
            json!({"stack": "java.lang.NullPointerException at org.hospital.internal.Db(Db.java:42) host=db-host-3"}),
        ),
        "/fhir/Patient/slow" => FakeResponse::json(200, json!({"resourceType": "Patient"}))
            .delayed(Duration::from_secs(3)),
        "/fhir/Patient/notjson" => FakeResponse {
            status: 200,
            headers: vec![],
            body: b"<html>proxy error at db-host-3</html>".to_vec(),
            delay: None,
        },
        _ => FakeResponse::json(200, json!({"resourceType": "Patient"})),
    });
    let gw = TestGateway::new()
        .site_with("st-mary", json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": "opt-out",
            "timeout_ms": 500, "circuit_breaker": {"failures": 100}}))
        .site("gone", &closed_port_url())
        .start();
    let cases = [
        ("/fhir/st-mary/Patient/missing", 404, "resource-not-found"),
        ("/fhir/st-mary/Patient/crash", 502, "upstream-error"),
        ("/fhir/st-mary/Patient/slow", 504, "upstream-timeout"),
        (
            "/fhir/st-mary/Patient?notjson=1",
            502,
            "upstream-bad-response",
        ),
        ("/fhir/gone/Patient/1", 502, "upstream-unreachable"),
    ];
    for (path, status, code) in cases {
        let got = get(&gw.url(path)).await;
        assert_eq!(got.status, status, "{path}: {}", got.text());
        assert_eq!(got.error_code(), code, "{path}");
        let text = got.text();
        for leak in ["db-host-3", "PATIENT_V7", "java.lang", "127.0.0.1"] {
            assert!(!text.contains(leak), "{path} leaked {leak}: {text}");
        }
    }
}
