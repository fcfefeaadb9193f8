//! The authenticate phase end to end: tokens from the trusted issuer (401 otherwise, with the
//! right challenge), SMART scopes per interaction (v1 and v2, users and backend services),
//! patient confinement, granular narrowing and filtering, purpose of use, and the SMART
//! discovery documents. The hostile-token battery and the real-provider tests live in
//! `auth/tests`; these check the gateway's use of them.

use assent_e2e::*;
use assent_gateway::demo::identity_provider::DemoIdentityProvider;
use serde_json::{Value, json};

const LAB: &str = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory";

fn observation(base: &str, id: &str, patient: &str, category: &str) -> Value {
    json!({
        "resourceType": "Observation", "id": id,
        "subject": {"reference": format!("{base}/Patient/{patient}")},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
    })
}

/// A FAKE upstream holding Patients p1 and p2 and Observations (o1: p1 laboratory, o2: p2
/// laboratory, o3: p1 vital-signs). Searches ignore every parameter, as a lenient server may,
/// so that the gateway's own filtering shows.
fn clinic() -> FakeUpstream {
    FakeUpstream::start(|req, base| {
        let resources = [
            json!({"resourceType": "Patient", "id": "p1"}),
            json!({"resourceType": "Patient", "id": "p2"}),
            observation(base, "o1", "p1", "laboratory"),
            observation(base, "o2", "p2", "laboratory"),
            observation(base, "o3", "p1", "vital-signs"),
        ];
        let path = req.path.trim_start_matches("/fhir/");
        if path == "metadata" {
            return FakeResponse::json(
                200,
                json!({"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1",
                    "implementation": {"url": base}, "rest": [{"mode": "server"}]}),
            );
        }
        let segments: Vec<&str> = path.split('/').collect();
        let of_type = |ty: &str| -> Vec<Value> {
            resources
                .iter()
                .filter(|r| r["resourceType"] == ty)
                .cloned()
                .collect()
        };
        let bundle = |entries: Vec<Value>| {
            let n = entries.len();
            json!({"resourceType": "Bundle", "type": "searchset", "total": n,
                "entry": entries.into_iter().map(|r| json!({"resource": r, "search": {"mode": "match"}})).collect::<Vec<_>>()})
        };
        match segments.as_slice() {
            [ty] | [ty, "_search"] | [ty, "_history"] => {
                FakeResponse::json(200, bundle(of_type(ty)))
            }
            [ty, id] | [ty, id, "_history", _] => {
                match resources
                    .iter()
                    .find(|r| r["resourceType"] == *ty && r["id"] == *id)
                {
                    Some(r) => FakeResponse::json(200, r.clone()),
                    None => FakeResponse::json(404, json!({"resourceType": "OperationOutcome"})),
                }
            }
            [ty, id, "_history"] => FakeResponse::json(
                200,
                bundle(
                    resources
                        .iter()
                        .filter(|r| r["resourceType"] == *ty && r["id"] == *id)
                        .cloned()
                        .collect(),
                ),
            ),
            ["Patient", _, "$everything"] => FakeResponse::json(200, bundle(resources.to_vec())),
            _ => FakeResponse::json(404, json!({"resourceType": "OperationOutcome"})),
        }
    })
}

/// (path, status) pairs a token is expected to get.
type Expected<'a> = &'a [(&'a str, u16)];

fn ids(got: &Got) -> Vec<String> {
    got.json()["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| e["resource"]["id"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[actix_web::test]
async fn fhir_requests_need_a_valid_token_from_the_trusted_issuer() {
    let upstream = clinic();
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let url = gw.url("/fhir/st-mary/Patient/p1");

    let missing = send("GET", &url, None, &[], None).await;
    assert_eq!(
        (missing.status, missing.error_code().as_str()),
        (401, "token-missing")
    );
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"assent\"")
    );

    // Signed by a provider the gateway does not trust.
    let stranger = DemoIdentityProvider::start(TEST_AUDIENCE).unwrap();
    let forged = stranger
        .provider()
        .mint("dr-alice", Some("user/*.rs"), None, None)
        .unwrap();
    let truncated = &clinician_token()[..clinician_token().len() - 10];
    for (token, codes) in [
        ("not-a-jwt", &["token-malformed"][..]),
        (truncated, &["token-bad-signature", "token-malformed"][..]),
        (forged.as_str(), &["token-unknown-kid"][..]),
    ] {
        let got = send("GET", &url, Some(token), &[], None).await;
        assert_eq!(got.status, 401, "{}", got.text());
        assert!(codes.contains(&got.error_code().as_str()), "{}", got.text());
        let challenge = got.header("www-authenticate").unwrap_or_default();
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
        assert!(!got.text().contains(token), "the token is never echoed");
    }

    // Trusted as a second issuer, the same provider's tokens pass (one or more issuers).
    let both = TestGateway::new()
        .set(
            "auth",
            json!({"issuers": [
                {"issuer": identity_provider().issuer(), "audience": [TEST_AUDIENCE]},
                {"issuer": stranger.issuer(), "audience": [TEST_AUDIENCE], "admin_subjects": ["dr-alice"]},
            ]}),
        )
        .site("st-mary", &upstream.base_url())
        .start();
    let got = send(
        "GET",
        &both.url("/fhir/st-mary/Patient/p1"),
        Some(&forged),
        &[],
        None,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let admin = |token: &str| {
        let url = both.url("/admin/sites");
        let token = token.to_owned();
        async move { send("GET", &url, Some(&token), &[], None).await.status }
    };
    assert_eq!(
        admin(&forged).await,
        200,
        "dr-alice is an admin at the second issuer"
    );
    assert_eq!(admin(clinician_token()).await, 403, "but not at the first");
    let n_upstream = upstream.requests().len();

    // A gateway expecting another audience refuses the same valid token.
    let other = TestGateway::new()
        .issuer_setting("audience", json!(["https://elsewhere.test/fhir"]))
        .site("st-mary", &upstream.base_url())
        .start();
    let got = get(&other.url("/fhir/st-mary/Patient/p1")).await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (401, "token-wrong-audience")
    );

    // Valid, but without the scope.
    let nurse = token("nurse-carol", Some("user/Observation.rs"), None, None);
    let got = send("GET", &url, Some(&nurse), &[], None).await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (403, "scope-insufficient")
    );
    let challenge = got.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("scope=\"patient/Patient.r"),
        "{challenge}"
    );

    assert_eq!(
        upstream.requests().len(),
        n_upstream,
        "no refused request reached the upstream"
    );
    assert_eq!(get(&url).await.status, 200);
}

#[actix_web::test]
async fn an_issuer_that_cannot_be_discovered_stops_the_start() {
    let nowhere = closed_port_url().trim_end_matches("/fhir").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let config = json!({
        "listen": "127.0.0.1:0",
        "database_url": dir.path().join("gw.db").display().to_string(),
        "keys": {"file": write_test_key_file(dir.path()).display().to_string()},
        "auth": {"issuers": [{"issuer": nowhere, "audience": [TEST_AUDIENCE]}]},
    });
    let config = assent_gateway::config::Config::from_value(&config).unwrap();
    let error = match assent_gateway::app::spawn(config) {
        Ok(_) => panic!("a gateway started without its issuer"),
        Err(e) => e.to_string(),
    };
    assert!(
        error.contains("auth.issuers") && error.contains("discovery"),
        "{error}"
    );
}

#[actix_web::test]
async fn scopes_are_enforced_per_interaction_in_v1_and_v2() {
    let upstream = clinic();
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let read = "/fhir/st-mary/Observation/o1";
    let vread = "/fhir/st-mary/Observation/o1/_history/1";
    let search = "/fhir/st-mary/Observation?code=x";
    let instance_history = "/fhir/st-mary/Observation/o1/_history";
    let type_history = "/fhir/st-mary/Observation/_history";
    let patient = "/fhir/st-mary/Patient/p1";
    let everything = "/fhir/st-mary/Patient/p1/$everything";
    let cases: &[(&str, &str, Expected)] = &[
        // v2 letters
        (
            "dr-alice",
            "user/Observation.r",
            &[
                (read, 200),
                (vread, 200),
                (instance_history, 200),
                (search, 403),
                (type_history, 403),
                (patient, 403),
            ],
        ),
        (
            "dr-alice",
            "user/Observation.s",
            &[
                (read, 403),
                (instance_history, 403),
                (search, 200),
                (type_history, 200),
            ],
        ),
        (
            "dr-alice",
            "user/Observation.cud",
            &[(read, 403), (search, 403)],
        ),
        // v1
        (
            "dr-alice",
            "user/Observation.read",
            &[(read, 200), (search, 200), (patient, 403)],
        ),
        (
            "dr-alice",
            "user/Observation.write",
            &[(read, 403), (search, 403)],
        ),
        (
            "dr-alice",
            "user/*.read",
            &[(patient, 200), (everything, 200), (search, 200)],
        ),
        // A SMART backend service (client credentials, no user) with system/ scopes.
        (
            "billing-service",
            "system/Observation.rs",
            &[(read, 200), (search, 200), (patient, 403)],
        ),
        (
            "billing-service",
            "system/*.rs",
            &[(patient, 200), (everything, 200)],
        ),
        // Unparseable scopes are dropped, never widened.
        (
            "dr-alice",
            "user/Observation.sr user/observation.rs user/Observation.rs?_id=o1",
            &[(read, 403), (search, 403)],
        ),
    ];
    for (caller, scope, expectations) in cases {
        let token = token(caller, Some(scope), None, None);
        for (path, status) in *expectations {
            let got = send("GET", &gw.url(path), Some(&token), &[], None).await;
            assert_eq!(
                got.status,
                *status,
                "{caller} {scope} {path}: {}",
                got.text()
            );
            if *status == 403 {
                assert_eq!(got.error_code(), "scope-insufficient", "{scope} {path}");
            }
        }
    }
}

#[actix_web::test]
async fn patient_tokens_are_confined_to_their_patient() {
    let upstream = clinic();
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let confined = token(
        "dr-alice",
        Some("patient/*.rs"),
        None,
        Some(PatientLaunch::at("st-mary", "p1")),
    );
    let as_confined = |path: &str| {
        let url = gw.url(path);
        let token = confined.clone();
        async move { send("GET", &url, Some(&token), &[], None).await }
    };

    // Searches are narrowed to the patient, and what comes back is filtered too.
    let got = as_confined("/fhir/st-mary/Observation?code=x").await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(ids(&got), ["o1", "o3"]);
    // One complete page: the total counts what was released, nothing more.
    assert_eq!(got.json()["total"], 2, "the total counts what was released");
    let seen = upstream.requests().pop().unwrap();
    assert_eq!(seen.query, "code=x&patient=p1");
    let got = as_confined("/fhir/st-mary/Patient").await;
    assert_eq!(ids(&got), ["p1"]);
    assert_eq!(upstream.requests().pop().unwrap().query, "_id=p1");

    // Reads: the patient's own records pass; another patient's are 403.
    assert_eq!(as_confined("/fhir/st-mary/Patient/p1").await.status, 200);
    assert_eq!(
        as_confined("/fhir/st-mary/Observation/o1").await.status,
        200
    );
    let n_upstream = upstream.requests().len();
    for path in [
        "/fhir/st-mary/Patient/p2",
        "/fhir/st-mary/Patient/p2/$everything",
    ] {
        let got = as_confined(path).await;
        assert_eq!(
            (got.status, got.error_code().as_str()),
            (403, "scope-patient-mismatch"),
            "{path}"
        );
        assert!(
            got.header("www-authenticate")
                .unwrap()
                .contains("insufficient_scope")
        );
    }
    assert_eq!(
        upstream.requests().len(),
        n_upstream,
        "an id that tells is refused before forwarding"
    );
    // The id alone cannot tell: the returned resource's compartment decides, and the
    // answer is the one for a record the site does not have (it does not tell it exists).
    let got = as_confined("/fhir/st-mary/Observation/o2").await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (404, "resource-not-found")
    );
    assert!(
        !got.text().contains("laboratory"),
        "nothing of the resource is released"
    );

    let got = as_confined("/fhir/st-mary/Patient/p1/$everything").await;
    assert_eq!(ids(&got), ["p1", "o1", "o3"]);
    let got = as_confined("/fhir/st-mary/Observation/_history").await;
    assert_eq!(ids(&got), ["o1", "o3"]);

    // patient/ scopes without a patient launch context grant nothing.
    let no_context = token("dr-alice", Some("patient/*.rs"), None, None);
    let got = send(
        "GET",
        &gw.url("/fhir/st-mary/Observation/o1"),
        Some(&no_context),
        &[],
        None,
    )
    .await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (403, "scope-patient-context-missing")
    );
}

#[actix_web::test]
async fn granular_scopes_narrow_searches_and_filter_results() {
    let upstream = clinic();
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    // researcher-dan's default scope: laboratory Observations only.
    let researcher = token("researcher-dan", None, None, None);
    let got = send(
        "GET",
        &gw.url("/fhir/st-mary/Observation?_count=5"),
        Some(&researcher),
        &[],
        None,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(ids(&got), ["o1", "o2"]);
    assert_eq!(got.json()["total"], 2, "the total counts what was released");
    let seen = upstream.requests().pop().unwrap();
    let narrowed: Vec<(String, String)> = url::form_urlencoded::parse(seen.query.as_bytes())
        .into_owned()
        .collect();
    assert_eq!(
        narrowed,
        [
            ("_count".into(), "5".into()),
            ("category".into(), LAB.into())
        ]
    );

    // POST _search: the condition joins the form body.
    let got = send(
        "POST",
        &gw.url("/fhir/st-mary/Observation/_search"),
        Some(&researcher),
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(b"code=x".to_vec()),
    )
    .await;
    assert_eq!(ids(&got), ["o1", "o2"]);
    let body = String::from_utf8(upstream.requests().pop().unwrap().body).unwrap();
    assert!(body.starts_with("code=x&category="), "{body}");

    // A read outside the condition is refused; inside it passes.
    let got = send(
        "GET",
        &gw.url("/fhir/st-mary/Observation/o3"),
        Some(&researcher),
        &[],
        None,
    )
    .await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (403, "scope-insufficient")
    );
    let got = send(
        "GET",
        &gw.url("/fhir/st-mary/Observation/o1"),
        Some(&researcher),
        &[],
        None,
    )
    .await;
    assert_eq!(got.status, 200);
    // Other types are not granted at all.
    let got = send(
        "GET",
        &gw.url("/fhir/st-mary/Patient"),
        Some(&researcher),
        &[],
        None,
    )
    .await;
    assert_eq!(got.status, 403);

    // Two rules: no single narrowing; results filtered by either.
    let two = token(
        "dr-alice",
        Some(&format!(
            "user/Observation.rs?category={LAB} patient/Observation.rs"
        )),
        None,
        Some(PatientLaunch::at("st-mary", "p1")),
    );
    let got = send(
        "GET",
        &gw.url("/fhir/st-mary/Observation"),
        Some(&two),
        &[],
        None,
    )
    .await;
    assert_eq!(ids(&got), ["o1", "o2", "o3"]);
    assert_eq!(upstream.requests().pop().unwrap().query, "");
    // An unrestricted user sees everything, with the total.
    let got = get(&gw.url("/fhir/st-mary/Observation")).await;
    assert_eq!(ids(&got), ["o1", "o2", "o3"]);
    assert_eq!(got.json()["total"], 3);
}

#[actix_web::test]
async fn purpose_comes_from_the_token_the_header_or_the_site() {
    let upstream = clinic();
    let site = |extra: Value| {
        let mut site = json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": "opt-out"});
        for (k, v) in extra.as_object().unwrap() {
            site[k] = v.clone();
        }
        site
    };
    // Tokens of this issuer state no purpose (their claim is not the one configured).
    let gw = TestGateway::new()
        .issuer_setting("claims", json!({"purpose": "no_such_claim"}))
        .site_with("strict", site(json!({"require_purpose": true})))
        .site_with("defaulted", site(json!({"default_purpose": "TREAT"})))
        .site_with("lenient", site(json!({})))
        .start();
    let path = |site: &str| gw.url(&format!("/fhir/{site}/Patient/p1"));
    let with_header = |purpose: &'static str| [("x-purpose-of-use", purpose)];

    let got = get(&path("strict")).await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (403, "purpose-required")
    );
    assert_eq!(
        got.header("www-authenticate"),
        None,
        "no fault of the token"
    );
    let got = send(
        "GET",
        &path("strict"),
        Some(clinician_token()),
        &with_header("TREAT"),
        None,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(get(&path("defaulted")).await.status, 200);
    assert_eq!(get(&path("lenient")).await.status, 200);
    let got = send(
        "GET",
        &path("lenient"),
        Some(clinician_token()),
        &with_header("NOSY"),
        None,
    )
    .await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (400, "purpose-header-unknown")
    );

    // The default issuer setup: the token's purpose (dr-alice: TREAT) counts, the header may
    // repeat it but not contradict it.
    let gw = TestGateway::new()
        .site_with("strict", site(json!({"require_purpose": true})))
        .start();
    let url = gw.url("/fhir/strict/Patient/p1");
    assert_eq!(get(&url).await.status, 200);
    let got = send(
        "GET",
        &url,
        Some(clinician_token()),
        &with_header("TREAT"),
        None,
    )
    .await;
    assert_eq!(got.status, 200);
    let got = send(
        "GET",
        &url,
        Some(clinician_token()),
        &with_header("HRESCH"),
        None,
    )
    .await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (400, "purpose-conflict")
    );

    // An issuer that does not allow the header.
    let gw = TestGateway::new()
        .issuer_setting("allow_purpose_header", json!(false))
        .site("st-mary", &upstream.base_url())
        .start();
    let got = send(
        "GET",
        &gw.url("/fhir/st-mary/Patient/p1"),
        Some(clinician_token()),
        &with_header("TREAT"),
        None,
    )
    .await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (400, "purpose-header-not-allowed")
    );
}

#[actix_web::test]
async fn smart_configuration_and_the_capability_statement_name_the_issuer() {
    let upstream = clinic();
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let issuer = identity_provider().issuer();
    for path in [
        "/.well-known/smart-configuration",
        "/fhir/st-mary/.well-known/smart-configuration",
    ] {
        let got = send("GET", &gw.url(path), None, &[], None).await;
        assert_eq!(got.status, 200, "{path}: {}", got.text());
        let smart = got.json();
        assert_eq!(smart["issuer"], issuer);
        assert_eq!(smart["token_endpoint"], format!("{issuer}/token"));
        assert_eq!(smart["jwks_uri"], format!("{issuer}/jwks"));
        let capabilities = smart["capabilities"].as_array().unwrap();
        assert!(capabilities.contains(&json!("permission-v2")));
        assert!(
            smart["scopes_supported"]
                .as_array()
                .unwrap()
                .contains(&json!("system/*.rs"))
        );
    }
    let got = send(
        "GET",
        &gw.url("/fhir/nowhere/.well-known/smart-configuration"),
        None,
        &[],
        None,
    )
    .await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (404, "unknown-site")
    );

    let got = get(&gw.url("/fhir/st-mary/metadata")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let statement = got.json();
    let security = &statement["rest"][0]["security"];
    assert_eq!(security["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
    let uris = security["extension"][0]["extension"].as_array().unwrap();
    assert!(uris.contains(&json!({"url": "token", "valueUri": format!("{issuer}/token")})));
    assert_eq!(statement["implementation"]["url"], gw.url("/fhir/st-mary"));
    assert!(!got.text().contains(&upstream.addr.to_string()));
    // SMART v1 clients read it before they hold a token.
    let anonymous = send("GET", &gw.url("/fhir/st-mary/metadata"), None, &[], None).await;
    assert_eq!(anonymous.status, 200, "{}", anonymous.text());
    assert_eq!(anonymous.json()["rest"][0]["security"], *security);
}
