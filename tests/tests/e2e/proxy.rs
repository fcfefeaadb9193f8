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
        // The site's URL spelt with JSON escapes: the gateway reads the bytes to decide
        // whether to look for it in every string, so no spelling may slip past.
        let id = req.path.rsplit('/').next().unwrap_or_default();
        let spelt = match id {
            "escaped" => Some(format!("{base}/Patient/p2").replace('/', "\\/")),
            "unicode" => Some(format!("{base}/Patient/p2").replace(':', "\\u003a")),
            "unicode-host" => Some(format!("{base}/Patient/p2").replacen('1', "\\u0031", 1)),
            _ => None,
        };
        if let Some(link) = spelt {
            r.body = format!(
                r#"{{"resourceType":"Patient","id":"{id}","text":{{"status":"generated","div":"<div>{link}</div>"}}}}"#
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
    for spelling in ["escaped", "unicode", "unicode-host"] {
        let got = get(&gw.url(&format!("/fhir/st-mary/Patient/{spelling}"))).await;
        assert_eq!(got.status, 200, "{spelling}: {}", got.text());
        let div = got.json()["text"]["div"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            !div.contains(&upstream.addr.to_string())
                && div.contains(&gw.url("/fhir/st-mary/Patient/p2")),
            "{spelling}: {div}"
        );
    }
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

#[actix_web::test]
async fn head_is_served_like_get_without_a_body_decided_and_receipted() {
    let upstream = FakeUpstream::start(|req, base| {
        let body = if req.path.ends_with("/Patient") {
            json!({"resourceType": "Bundle", "type": "searchset", "entry": [{"fullUrl": format!("{base}/Patient/p1"), "resource": patient(base)}]})
        } else {
            patient(base)
        };
        FakeResponse::json(200, body).header("etag", "W/\"3\"")
    });
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .site_with(
            "north-general",
            json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": "opt-in"}),
        )
        .start();
    for path in ["/fhir/st-mary/Patient/p1", "/fhir/st-mary/Patient?name=x"] {
        let got = get(&gw.url(path)).await;
        let head = send("HEAD", &gw.url(path), Some(clinician_token()), &[], None).await;
        assert_eq!(
            (got.status, head.status),
            (200, 200),
            "{path}: {}",
            got.text()
        );
        assert!(head.body.is_empty(), "{path}");
        assert_eq!(head.header("content-type"), got.header("content-type"));
        assert_eq!(head.header("etag"), got.header("etag"));
        // Receipted as the read it is: its own receipt, and the site asked with GET.
        let (a, b) = (
            got.header("x-assent-receipt"),
            head.header("x-assent-receipt"),
        );
        assert!(a.is_some() && b.is_some() && a != b, "{a:?} {b:?}");
        assert_eq!(upstream.requests().last().unwrap().method, "GET");
    }
    // Decided as the read: the opt-in site without a consent refuses it.
    let head = send(
        "HEAD",
        &gw.url("/fhir/north-general/Patient/p1"),
        Some(clinician_token()),
        &[],
        None,
    )
    .await;
    assert_eq!(head.status, 403);
    assert!(head.body.is_empty());
    assert!(head.header("x-assent-receipt").is_some());
    // And without a token, as GET.
    let head = send("HEAD", &gw.url("/fhir/st-mary/Patient/p1"), None, &[], None).await;
    assert_eq!(head.status, 401);
}

/// A site's CapabilityStatement as servers write it: writes, transactions, XML, free text
/// naming internal hosts.
fn site_statement(base: &str) -> serde_json::Value {
    json!({
        "resourceType": "CapabilityStatement", "status": "active", "date": "2026-01-01",
        "kind": "instance", "fhirVersion": "4.0.1", "format": ["xml", "json"],
        "patchFormat": ["application/json-patch+json"],
        "software": {"name": "HospitalFHIR", "version": "9 on db01.internal"},
        "implementation": {"description": "prod", "url": base},
        "rest": [{
            "mode": "server", "documentation": "db01.internal",
            "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "search-system"}],
            "resource": [
                {"type": "Patient", "interaction": [{"code": "read"}, {"code": "vread"}, {"code": "create"},
                    {"code": "update"}, {"code": "delete"}, {"code": "search-type"}, {"code": "history-instance"}],
                 "searchParam": [{"name": "name", "type": "string"}, {"name": "birthdate", "type": "date"}],
                 "operation": [{"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"},
                    {"name": "match", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-match"}]},
                {"type": "Observation", "interaction": [{"code": "read"}, {"code": "patch"}, {"code": "search-type"}]},
            ],
        }],
    })
}

#[actix_web::test]
async fn metadata_is_the_gateways_own_statement_served_without_a_token() {
    let upstream = FakeUpstream::start(|req, base| {
        assert_eq!(req.path, "/fhir/metadata");
        FakeResponse::json(200, site_statement(base))
    });
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let got = send("GET", &gw.url("/fhir/st-mary/metadata"), None, &[], None).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(got.header("x-assent-receipt").is_none());
    let statement = got.json();
    assert!(!got.text().contains("db01") && !got.text().contains(&upstream.addr.to_string()));
    assert_eq!(
        statement["format"],
        json!(["json", "application/fhir+json"])
    );
    assert!(statement.get("patchFormat").is_none());
    assert_eq!(statement["implementation"]["url"], gw.url("/fhir/st-mary"));
    let rest = &statement["rest"][0];
    assert!(rest.get("interaction").is_none(), "{rest}");
    let codes = |resource: &serde_json::Value| -> Vec<String> {
        resource["interaction"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["code"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        codes(&rest["resource"][0]),
        ["read", "vread", "search-type", "history-instance"]
    );
    assert_eq!(codes(&rest["resource"][1]), ["read", "search-type"]);
    assert_eq!(rest["resource"][0]["searchParam"][0]["name"], "name");
    assert_eq!(
        rest["resource"][0]["operation"],
        json!([{"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}])
    );
    // SMART discovery: the security section names the issuer's endpoints.
    let security = &rest["security"];
    assert_eq!(security["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
    let uris = security["extension"][0]["extension"].as_array().unwrap();
    assert!(uris.iter().any(|u| u["url"] == "token"), "{security}");

    // Valid in every version: STU3 has `acceptUnknown`, each names its own version.
    for (accept, version, accept_unknown) in [
        (
            "application/fhir+json; fhirVersion=3.0",
            "3.0.2",
            Some("no"),
        ),
        ("application/fhir+json; fhirVersion=4.0", "4.0.1", None),
        ("application/fhir+json; fhirVersion=4.3", "4.3.0", None),
        ("application/fhir+json; fhirVersion=5.0", "5.0.0", None),
    ] {
        let got = send(
            "GET",
            &gw.url("/fhir/st-mary/metadata"),
            None,
            &[("accept", accept)],
            None,
        )
        .await;
        assert_eq!(got.status, 200, "{accept}: {}", got.text());
        let statement = got.json();
        assert_eq!(statement["fhirVersion"], version, "{accept}");
        assert_eq!(statement["acceptUnknown"].as_str(), accept_unknown);
        // The SMART service coding names its code system as the version does (R4 moved it
        // to HL7 Terminology).
        let system = if version == "3.0.2" {
            "http://hl7.org/fhir/restful-security-service"
        } else {
            "http://terminology.hl7.org/CodeSystem/restful-security-service"
        };
        assert_eq!(
            statement["rest"][0]["security"]["service"][0]["coding"][0]["system"], system,
            "{accept}"
        );
        for element in ["status", "date", "kind", "format"] {
            assert!(statement.get(element).is_some(), "{accept}: {element}");
        }
    }
    // HEAD, without a body; the site asked once for all of these.
    let head = send("HEAD", &gw.url("/fhir/st-mary/metadata"), None, &[], None).await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(upstream.requests().len(), 1, "the statement is kept");
    // SMART's own discovery document beside it, by HEAD too.
    let head = send(
        "HEAD",
        &gw.url("/fhir/st-mary/.well-known/smart-configuration"),
        None,
        &[],
        None,
    )
    .await;
    assert_eq!(head.status, 200);
    // Writes to it are refused as writes.
    let got = send(
        "POST",
        &gw.url("/fhir/st-mary/metadata"),
        Some(clinician_token()),
        &[],
        None,
    )
    .await;
    assert_eq!((got.status, got.header("allow")), (405, Some("GET, HEAD")));
    let got = send("GET", &gw.url("/fhir/nowhere/metadata"), None, &[], None).await;
    assert_eq!(got.error_code(), "unknown-site");
}

/// An STU3 site's statement: the SMART service coding the gateway adds names its code system
/// as STU3 does, in the site's own version and translated to R4.
#[actix_web::test]
async fn metadata_of_an_stu3_site_names_the_security_code_system_as_stu3_does() {
    let upstream = FakeUpstream::start(|_, base| {
        let mut statement = site_statement(base);
        statement["fhirVersion"] = json!("3.0.2");
        statement["acceptUnknown"] = json!("no");
        FakeResponse::json(200, statement)
    });
    let gw = TestGateway::new()
        .site_with(
            "stu3-site",
            json!({"upstream": upstream.base_url(), "fhir_version": "STU3", "default_policy": "opt-out"}),
        )
        .start();
    for (accept, system) in [
        (
            "application/fhir+json; fhirVersion=3.0",
            "http://hl7.org/fhir/restful-security-service",
        ),
        (
            "application/fhir+json; fhirVersion=4.0",
            "http://terminology.hl7.org/CodeSystem/restful-security-service",
        ),
    ] {
        let got = send(
            "GET",
            &gw.url("/fhir/stu3-site/metadata"),
            None,
            &[("accept", accept)],
            None,
        )
        .await;
        assert_eq!(got.status, 200, "{accept}: {}", got.text());
        let coding = &got.json()["rest"][0]["security"]["service"][0]["coding"][0];
        assert_eq!(coding["system"], system, "{accept}");
        assert_eq!(coding["code"], "SMART-on-FHIR", "{accept}");
    }
}

#[actix_web::test]
async fn metadata_reveals_nothing_of_patients() {
    let upstream = FakeUpstream::start(|_, base| {
        let mut statement = site_statement(base);
        statement["contained"] =
            json!([{"resourceType": "Patient", "id": "p1", "name": [{"family": "Secretperson"}]}]);
        FakeResponse::json(200, statement)
    });
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let got = send("GET", &gw.url("/fhir/st-mary/metadata"), None, &[], None).await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (502, "upstream-bad-response")
    );
    assert!(!got.text().contains("Secretperson"));
    // The failure is kept a while: anonymous callers do not make the gateway ask again.
    let again = send("GET", &gw.url("/fhir/st-mary/metadata"), None, &[], None).await;
    assert_eq!(again.error_code(), "upstream-bad-response");
    assert_eq!(upstream.requests().len(), 1);
}

#[actix_web::test]
async fn pretty_is_honoured() {
    let upstream = FakeUpstream::start(|_, base| FakeResponse::json(200, patient(base)));
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let plain = get(&gw.url("/fhir/st-mary/Patient/p1")).await;
    let pretty = get(&gw.url("/fhir/st-mary/Patient/p1?_pretty=true")).await;
    assert_eq!(pretty.status, 200, "{}", pretty.text());
    assert!(!plain.text().contains('\n'));
    assert!(
        pretty.text().contains("\n  \"resourceType\""),
        "{}",
        pretty.text()
    );
    assert_eq!(plain.json(), pretty.json());
    let not_pretty = get(&gw.url("/fhir/st-mary/Patient/p1?_pretty=false")).await;
    assert!(!not_pretty.text().contains('\n'));
}

/// Adversarial: the only FHIR answer without a token is the CapabilityStatement. Request forms
/// that name `metadata` somewhere (a trailing slash, doubled slashes, dot segments, encoded
/// slashes, a query or a fragment, other methods) or read data with HEAD reach no patient's
/// data: each is the statement, a refusal, or not found, and the site is asked for nothing but
/// its statement.
#[actix_web::test]
async fn no_request_form_reaches_patient_data_without_a_token() {
    let upstream = FakeUpstream::start(|req, base| {
        if req.path.ends_with("/metadata") || req.path == "metadata" {
            FakeResponse::json(200, site_statement(base))
        } else {
            FakeResponse::json(
                200,
                json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Secretperson"}]}),
            )
        }
    });
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let forms: &[(&str, &str)] = &[
        ("GET", "/fhir/st-mary/metadata"),
        ("HEAD", "/fhir/st-mary/metadata"),
        ("GET", "/fhir/st-mary/metadata/"),
        ("GET", "/fhir/st-mary//metadata"),
        ("GET", "/fhir/st-mary/metadata/../Patient/p1"),
        ("GET", "/fhir/st-mary/Patient/../metadata"),
        ("GET", "/fhir/st-mary/Patient/p1/../../metadata"),
        ("GET", "/fhir/st-mary/metadata%2F..%2FPatient%2Fp1"),
        ("GET", "/fhir/st-mary/Patient%2Fp1%2F..%2F..%2Fmetadata"),
        ("GET", "/fhir/st-mary/metadata?_id=p1"),
        ("GET", "/fhir/st-mary/metadata?_include=*&_revinclude=*"),
        ("GET", "/fhir/st-mary/Patient/p1?x=/metadata"),
        ("GET", "/fhir/st-mary/Patient/p1#/metadata"),
        ("GET", "/fhir/st-mary/Patient/p1/metadata"),
        ("GET", "/fhir/st-mary/Patient/metadata"),
        ("HEAD", "/fhir/st-mary/Patient/p1"),
        ("GET", "/fhir/st-mary/Patient/p1"),
        ("GET", "/fhir/st-mary/Patient?_id=p1"),
        ("POST", "/fhir/st-mary/metadata"),
        ("POST", "/fhir/st-mary/Patient/_search"),
        ("OPTIONS", "/fhir/st-mary/Patient/p1"),
    ];
    for (method, path) in forms {
        let got = send(method, &gw.url(path), None, &[], None).await;
        let text = got.text();
        assert!(
            !text.contains("Secretperson") && !text.contains("\"Patient\",\"id\""),
            "{method} {path}: {} {text}",
            got.status
        );
        if got.status == 200 && *method != "HEAD" {
            assert_eq!(
                got.json()["resourceType"],
                "CapabilityStatement",
                "{method} {path}: {text}"
            );
        } else if got.status == 200 {
            // HEAD has no body to look at: only the statement answers HEAD without a token.
            assert!(
                path.ends_with("/metadata") && !path.contains(".."),
                "HEAD {path} answered 200 without a token"
            );
        } else {
            assert!(
                [401, 403, 404, 405, 400].contains(&got.status),
                "{method} {path}: {} {text}",
                got.status
            );
        }
    }
    for seen in upstream.requests() {
        assert!(
            seen.path.ends_with("metadata"),
            "the site was asked for {} {}?{} without a token",
            seen.method,
            seen.path,
            seen.query
        );
    }
}
