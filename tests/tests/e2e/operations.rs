//! Health, metrics, OpenAPI, admin, request ids and the request log on every store backend.

use assent_e2e::*;
use assent_gateway::store::testing;
use serde_json::json;

#[actix_web::test]
async fn health_metrics_and_openapi_are_served() {
    let upstream = FakeUpstream::always(json!({"resourceType": "Patient", "id": "p1"}));
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    assert_eq!(
        send("GET", &gw.url("/livez"), None, &[], None).await.status,
        200
    );
    let ready = send("GET", &gw.url("/readyz"), None, &[], None).await;
    assert_eq!(
        (ready.status, ready.json()["store"].as_str()),
        (200, Some("ok"))
    );

    assert_eq!(get(&gw.url("/fhir/st-mary/Patient/p1")).await.status, 200);
    assert_eq!(
        get(&gw.url("/fhir/st-mary/Patient/p1/_history/9x"))
            .await
            .status,
        200
    );
    assert_eq!(
        get(&gw.url("/fhir/nowhere/Patient/secret-patient-id"))
            .await
            .status,
        404
    );
    let metrics = send("GET", &gw.url("/metrics"), None, &[], None)
        .await
        .text();
    assert!(
        metrics
            .contains(r#"assent_requests_total{interaction="read",site="st-mary",status="200"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"assent_requests_total{interaction="vread",site="st-mary",status="200"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"site="unknown",status="404"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("assent_upstream_latency_seconds_bucket{site=\"st-mary\""),
        "{metrics}"
    );
    assert!(
        !metrics.contains("nowhere") && !metrics.contains("secret-patient-id"),
        "client input never becomes a label"
    );

    let openapi = send("GET", &gw.url("/openapi.json"), None, &[], None).await;
    assert_eq!(openapi.status, 200);
    assert!(openapi.json()["paths"]["/admin/sites"]["get"].is_object());
}

#[actix_web::test]
async fn admin_endpoints_need_the_admin_role() {
    let upstream = FakeUpstream::always(json!({}));
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let got = send(
        "GET",
        &gw.url("/admin/sites"),
        Some(admin_token()),
        &[],
        None,
    )
    .await;
    assert_eq!(got.status, 200);
    let sites = got.json();
    assert_eq!(sites["sites"][0]["id"], "st-mary");
    assert_eq!(sites["sites"][0]["fhirVersion"], "R4");
    assert_eq!(sites["sites"][0]["defaultPolicy"], "opt-out");
    assert_eq!(
        send(
            "GET",
            &gw.url("/admin/sites"),
            Some(clinician_token()),
            &[],
            None
        )
        .await
        .error_code(),
        "forbidden"
    );
    assert_eq!(
        send("GET", &gw.url("/admin/sites"), None, &[], None)
            .await
            .error_code(),
        "token-missing"
    );
    assert_eq!(
        send(
            "GET",
            &gw.url("/admin/sites/nope"),
            Some(admin_token()),
            &[],
            None
        )
        .await
        .error_code(),
        "unknown-site"
    );
}

#[actix_web::test]
async fn every_fhir_request_is_recorded_without_patient_identifiers_on_every_backend() {
    let upstream = FakeUpstream::always(json!({"resourceType": "Patient", "id": "p-secret-77"}));
    for store in testing::all() {
        let gw = TestGateway::new()
            .database(&store.url)
            .site("st-mary", &upstream.base_url())
            .site_with("north-general", json!({"upstream": upstream.base_url(), "fhir_version": "STU3", "default_policy": "opt-in"}))
            .start();
        let ok = send(
            "GET",
            &gw.url("/fhir/st-mary/Patient/p-secret-77"),
            Some(clinician_token()),
            &[("x-request-id", "rec-ok")],
            None,
        )
        .await;
        assert_eq!(ok.status, 200);
        let denied = send(
            "GET",
            &gw.url("/fhir/north-general/Patient/p-secret-77"),
            Some(clinician_token()),
            &[("x-request-id", "rec-denied")],
            None,
        )
        .await;
        assert_eq!(denied.status, 403);
        let bad = send(
            "GET",
            &gw.url("/fhir/st-mary/Patient/p-secret-77/x/y/z"),
            Some(clinician_token()),
            &[("x-request-id", "rec-bad")],
            None,
        )
        .await;
        assert_eq!(bad.status, 400);
        let anonymous = send(
            "GET",
            &gw.url("/fhir/st-mary/Patient/p-secret-77"),
            None,
            &[("x-request-id", "rec-anon")],
            None,
        )
        .await;
        assert_eq!(anonymous.status, 401);
        gw.gateway.flush_records();

        let row = |id: &str| {
            let rows = store.store.requests_by_id(id).unwrap();
            assert_eq!(rows.len(), 1, "exactly one row for {id}");
            rows.into_iter().next().unwrap()
        };
        let ok = row("rec-ok");
        assert_eq!(
            (ok.status, ok.site.as_deref(), ok.interaction.as_deref()),
            (200, Some("st-mary"), Some("read"))
        );
        assert_eq!(ok.caller.as_deref(), Some(caller_id("dr-alice").as_str()));
        assert_eq!(ok.decision.as_deref(), Some("permit site-default:opt-out"));
        assert_eq!(ok.gateway_id, "test-gw");
        let denied = row("rec-denied");
        assert_eq!(
            (denied.status, denied.error_code.as_deref()),
            (403, Some("consent-denied"))
        );
        assert_eq!(denied.decision.as_deref(), Some("deny site-default:opt-in"));
        assert_eq!(
            row("rec-bad").error_code.as_deref(),
            Some("malformed-request")
        );
        let anon = row("rec-anon");
        assert_eq!((anon.status, anon.caller), (401, None));
        let everything = format!("{:?}", store.store.recent_requests(100).unwrap());
        assert!(
            !everything.contains("p-secret-77"),
            "no resource id in the request log"
        );
        let sites = store.store.sites().unwrap();
        assert_eq!(sites.len(), 2);
    }
}
