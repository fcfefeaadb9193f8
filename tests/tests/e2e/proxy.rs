//! Forwarding: each interaction reaches the upstream as it should, headers cross only through
//! the allow-lists, and upstream URLs are rewritten to the gateway's.

use assent_e2e::*;
use serde_json::json;

fn patient(base: &str) -> serde_json::Value {
    json!({
        "resourceType": "Patient", "id": "p1", "meta": {"versionId": "3"},
        "managingOrganization": {"reference": format!("{base}/Organization/o1")},
    })
}

#[actix_web::test]
async fn every_read_interaction_is_forwarded_to_the_same_path() {
    let upstream = FakeUpstream::start(|req, base| {
        let body = if req.path.ends_with("/metadata") {
            json!({"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1"})
        } else if req.path.contains("_history") && !req.path.ends_with("/3")
            || req.path.contains('$') && req.path.contains("everything")
            || !req.path.trim_start_matches("/fhir/").contains('/')
            || req.path.ends_with("_search")
        {
            json!({"resourceType": "Bundle", "type": "searchset", "entry": [{"fullUrl": format!("{base}/Patient/p1"), "resource": patient(base)}]})
        } else {
            patient(base)
        };
        FakeResponse::json(200, body)
    });
    let gw = TestGateway::new()
        .site_with(
            "st-mary",
            json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": "opt-out",
                "operations": [{"name": "lastn", "level": "type", "resource_types": ["Observation"], "output": "resource"}]}),
        )
        .start();
    let cases = [
        ("/fhir/st-mary/Patient/p1", "/fhir/Patient/p1", ""),
        (
            "/fhir/st-mary/Patient/p1/_history/3",
            "/fhir/Patient/p1/_history/3",
            "",
        ),
        (
            "/fhir/st-mary/Patient?name=smith&_count=5",
            "/fhir/Patient",
            "name=smith&_count=5",
        ),
        (
            "/fhir/st-mary/Patient/p1/_history",
            "/fhir/Patient/p1/_history",
            "",
        ),
        (
            "/fhir/st-mary/Patient/_history",
            "/fhir/Patient/_history",
            "",
        ),
        ("/fhir/st-mary/metadata", "/fhir/metadata", ""),
        (
            "/fhir/st-mary/Patient/p1/$everything",
            "/fhir/Patient/p1/$everything",
            "",
        ),
        (
            "/fhir/st-mary/Observation/$lastn?max=3",
            "/fhir/Observation/$lastn",
            "max=3",
        ),
    ];
    for (i, (path, upstream_path, upstream_query)) in cases.iter().enumerate() {
        let got = get(&gw.url(path)).await;
        assert_eq!(got.status, 200, "{path}: {}", got.text());
        let seen = &upstream.requests()[i];
        assert_eq!(seen.method, "GET");
        assert_eq!(&seen.path, upstream_path);
        assert_eq!(&seen.query, upstream_query);
        assert!(
            !got.text().contains(&upstream.addr.to_string()),
            "{path} leaked the upstream: {}",
            got.text()
        );
        assert_eq!(
            got.header("content-type"),
            Some("application/fhir+json; fhirVersion=4.0")
        );
    }

    // POST _search carries its form body.
    let got = send(
        "POST",
        &gw.url("/fhir/st-mary/Patient/_search"),
        Some(clinician_token()),
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(b"name=smith&birthdate=ge1970".to_vec()),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/fhir/Patient/_search");
    assert_eq!(seen.body, b"name=smith&birthdate=ge1970");
    assert_eq!(
        seen.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
}

#[actix_web::test]
async fn upstream_urls_never_reach_the_client() {
    let upstream = FakeUpstream::start(|req, base| {
        let mut r = FakeResponse::json(200, patient(base))
            .header("location", &format!("{base}/Patient/p1/_history/3"))
            .header("content-location", "https://elsewhere.example/x");
        if req.path.ends_with("escaped") {
            r.body = format!(
                r#"{{"resourceType":"Patient","id":"p1","link":"{}"}}"#,
                format!("{base}/Patient/p2").replace('/', "\\/")
            )
            .into_bytes();
        }
        r
    });
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let got = get(&gw.url("/fhir/st-mary/Patient/p1")).await;
    assert_eq!(got.status, 200);
    let body = got.json();
    assert_eq!(
        body["managingOrganization"]["reference"],
        gw.url("/fhir/st-mary/Organization/o1")
    );
    assert_eq!(
        got.header("location"),
        Some(gw.url("/fhir/st-mary/Patient/p1/_history/3").as_str())
    );
    assert_eq!(
        got.header("content-location"),
        None,
        "a foreign Content-Location is dropped"
    );
    let got = get(&gw.url("/fhir/st-mary/Patient/escaped")).await;
    assert!(
        !got.text().contains(&upstream.addr.to_string()),
        "{}",
        got.text()
    );
}

#[actix_web::test]
async fn headers_cross_only_through_the_allow_lists() {
    let upstream = FakeUpstream::start(|_, base| {
        FakeResponse::json(200, patient(base))
            .header("etag", "W/\"3\"")
            .header("last-modified", "Sat, 21 Nov 2026 10:00:00 GMT")
            .header("set-cookie", "upstream-session=secret")
            .header("server", "HospitalFHIR/9.1 (internal-host-17)")
            .header("x-powered-by", "internal")
    });
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let got = send(
        "GET",
        &gw.url("/fhir/st-mary/Patient/p1"),
        Some(clinician_token()),
        &[
            ("if-none-match", "W/\"2\""),
            ("prefer", "handling=lenient"),
            ("cookie", "gateway-session=abc"),
            ("x-forwarded-for", "10.9.8.7"),
            ("x-request-id", "client-chosen-id-1"),
        ],
        None,
    )
    .await;
    assert_eq!(got.status, 200);
    let seen = &upstream.requests()[0];
    // Conditional headers are answered by the gateway after the decision, never forwarded.
    assert_eq!(seen.header("if-none-match"), None);
    assert_eq!(seen.header("prefer"), Some("handling=lenient"));
    assert_eq!(seen.header("x-request-id"), Some("client-chosen-id-1"));
    for absent in ["cookie", "x-forwarded-for", "authorization"] {
        assert_eq!(
            seen.header(absent),
            None,
            "{absent} must not reach the upstream"
        );
    }
    assert_eq!(got.header("etag"), Some("W/\"3\""));
    assert_eq!(
        got.header("last-modified"),
        Some("Sat, 21 Nov 2026 10:00:00 GMT")
    );
    assert_eq!(got.header("x-request-id"), Some("client-chosen-id-1"));
    assert_eq!(got.header("cache-control"), Some("no-store"));
    for absent in ["set-cookie", "x-powered-by"] {
        assert_eq!(
            got.header(absent),
            None,
            "{absent} must not reach the client"
        );
    }
    assert!(
        !got.header("server")
            .unwrap_or_default()
            .contains("internal-host")
    );

    // A hostile request id is replaced by one the gateway makes.
    let got = send(
        "GET",
        &gw.url("/fhir/st-mary/Patient/p1"),
        Some(clinician_token()),
        &[("x-request-id", "bad id\twith tab")],
        None,
    )
    .await;
    let id = got.header("x-request-id").unwrap();
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(upstream.requests()[1].header("x-request-id"), Some(id));
}

#[actix_web::test]
async fn upstream_authentication_uses_the_sites_own_credentials() {
    let upstream = FakeUpstream::always(json!({"resourceType": "Patient", "id": "p1"}));
    let token_endpoint = FakeUpstream::start(|req, _| {
        let ok = req.method == "POST"
            && String::from_utf8_lossy(&req.body).contains("grant_type=client_credentials")
            // "gw-client:gw-secret" in HTTP Basic.
            && req.header("authorization") == Some("Basic Z3ctY2xpZW50Omd3LXNlY3JldA==");
        if ok {
            FakeResponse::json(
                200,
                json!({"access_token": "cc-token-1", "token_type": "Bearer", "expires_in": 3600}),
            )
        } else {
            FakeResponse::json(401, json!({"error": "invalid_client"}))
        }
    });
    let gw = TestGateway::new()
        .site_with("bearer-site", json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": "opt-out",
            "upstream_auth": {"kind": "bearer", "token": "static-upstream-token"}}))
        .site_with("cc-site", json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": "opt-out",
            "upstream_auth": {"kind": "client_credentials", "token_url": format!("http://{}/token", token_endpoint.addr),
                "client_id": "gw-client", "client_secret": "gw-secret", "scope": "system/*.rs"}}))
        .start();
    assert_eq!(
        get(&gw.url("/fhir/bearer-site/Patient/p1")).await.status,
        200
    );
    assert_eq!(
        upstream.requests()[0].header("authorization"),
        Some("Bearer static-upstream-token")
    );
    for _ in 0..2 {
        assert_eq!(get(&gw.url("/fhir/cc-site/Patient/p1")).await.status, 200);
    }
    assert_eq!(
        upstream.requests()[1].header("authorization"),
        Some("Bearer cc-token-1")
    );
    assert_eq!(
        upstream.requests()[2].header("authorization"),
        Some("Bearer cc-token-1")
    );
    assert_eq!(
        token_endpoint.requests().len(),
        1,
        "the token is cached until it expires"
    );
    assert!(
        String::from_utf8_lossy(&token_endpoint.requests()[0].body).contains("scope=system%2F*.rs")
    );
}
