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
            406,
            "not-acceptable",
        ),
        (
            get(&gw.url("/fhir/st-mary/Patient?_format=xml")).await,
            406,
            "not-acceptable",
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

#[actix_web::test]
async fn a_405_says_what_the_path_takes() {
    let upstream = FakeUpstream::always(json!({"resourceType": "Patient", "id": "1"}));
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let token = Some(clinician_token());
    let admin = Some(admin_token());
    for (method, path, token, allow) in [
        ("DELETE", "/fhir/st-mary/Patient/1", token, "GET, HEAD"),
        ("PUT", "/fhir/st-mary/Patient/1", token, "GET, HEAD"),
        ("POST", "/fhir/st-mary/Patient", token, "GET, HEAD"),
        ("PUT", "/fhir/st-mary/Patient/_search", token, "POST"),
        // The gateway's own API: undeclared methods on declared paths.
        ("DELETE", "/consent/Consent", admin, "POST, GET, HEAD"),
        ("GET", "/consent/$check", admin, "POST"),
        ("PUT", "/audit/receipts/r-1", admin, "GET, HEAD"),
        ("POST", "/livez", None, "GET, HEAD"),
        ("DELETE", "/admin/sites/st-mary", admin, "GET, HEAD"),
    ] {
        let got = send(method, &gw.url(path), token, &[], None).await;
        assert_eq!(
            (got.status, got.error_code().as_str()),
            (405, "method-not-allowed"),
            "{method} {path}: {}",
            got.text()
        );
        assert_eq!(got.header("allow"), Some(allow), "{method} {path}");
        assert_eq!(got.header("content-type"), Some("application/fhir+json"));
    }
    // A path no route has stays 404.
    let got = send("DELETE", &gw.url("/consent/Elsewhere"), admin, &[], None).await;
    assert_eq!((got.status, got.error_code().as_str()), (404, "not-found"));
    assert!(upstream.requests().is_empty());
}

#[actix_web::test]
async fn outcomes_say_in_words_what_went_wrong() {
    let upstream = FakeUpstream::always(json!({"resourceType": "Patient", "id": "1"}));
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let text = |got: &Got| {
        let outcome = got.json();
        let issue = &outcome["issue"][0];
        assert_eq!(issue["details"]["text"], issue["diagnostics"], "{outcome}");
        issue["details"]["text"].as_str().unwrap().to_owned()
    };
    assert_eq!(text(&get(&gw.url("/nowhere")).await), "no such endpoint");
    assert_eq!(
        text(&get(&gw.url("/fhir/elsewhere/Patient/1")).await),
        "unknown site"
    );
    // Something that does not exist behind an existing endpoint is not found, not "no such
    // endpoint".
    let auditor = token("nurse-carol", Some("openid user/AuditEvent.rs"), None, None);
    let got = send(
        "GET",
        &gw.url("/audit/receipts/no-such-receipt"),
        Some(&auditor),
        &[],
        None,
    )
    .await;
    assert_eq!((got.status, got.error_code().as_str()), (404, "not-found"));
    assert_eq!(text(&got), "nothing with this id was found");
    // XML is a response format the gateway does not serve: 406, in words.
    let got = send(
        "GET",
        &gw.url("/fhir/st-mary/Patient/1"),
        Some(clinician_token()),
        &[("accept", "application/fhir+xml")],
        None,
    )
    .await;
    assert_eq!(got.status, 406);
    assert!(text(&got).contains("application/fhir+json"));
}

#[actix_web::test]
async fn api_query_errors_are_operation_outcomes() {
    let upstream = FakeUpstream::always(json!({"resourceType": "Patient", "id": "1"}));
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let got = send(
        "POST",
        &gw.url("/admin/sites/st-mary/$translate?bogus=1"),
        Some(admin_token()),
        &[("content-type", "application/fhir+json")],
        Some(br#"{"resourceType": "Patient"}"#.to_vec()),
    )
    .await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (400, "malformed-request"),
        "{}",
        got.text()
    );
    assert_eq!(got.header("content-type"), Some("application/fhir+json"));
    assert!(got.text().contains("query string"), "{}", got.text());
    // Bodies the API cannot read, and bodies over its limit: OperationOutcomes too.
    for (body, status) in [
        (b"{not json".to_vec(), 400),
        (vec![b' '; 2 * 1024 * 1024], 413),
    ] {
        let got = send(
            "POST",
            &gw.url("/consent/$check"),
            Some(admin_token()),
            &[("content-type", "application/json")],
            Some(body),
        )
        .await;
        assert_eq!(got.status, status, "{}", got.text());
        assert_eq!(got.header("content-type"), Some("application/fhir+json"));
        assert_eq!(got.json()["resourceType"], "OperationOutcome");
    }
}
