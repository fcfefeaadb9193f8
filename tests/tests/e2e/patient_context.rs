//! A patient-context token is bound to the patient it was issued for (issue 17), and a
//! Consent may name the network patient.
//!
//! ADV (table-driven): two sites where `p1` is a different person at each; a token launched
//! at St Mary's for its `p1` tries North General's `p1` every way (read, searches, `$everything`,
//! the consent API) and gets nothing of it, nor is anything forwarded; tokens whose `aud`
//! binds nothing (two site bases, the network base with a local id) are refused; a network
//! patient's token reaches the one record linked to it at a site and nothing else.
//!
//! Network consents: a consent naming the network patient decides at every site holding it,
//! with each site's default policy (opt-out and opt-in); its revocation takes effect at both;
//! `$check` answers per site; ADV: a site-bound context can neither create nor revoke one; an
//! unknown or malformed network id is refused; a network permit never lifts a site-level
//! refusal beyond the combination rule (deny wins at equal specificity, the more specific
//! provision first).

use assent_e2e::*;
use serde_json::{Value, json};

use crate::consent::{consent, hospital};

/// The network identifier system both sites share.
const NID: &str = "urn:oid:2.16.840.1.113883.4.1";

/// A site table with the shared network identifier system.
fn site(upstream: &FakeUpstream, policy: &str) -> Value {
    json!({
        "upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": policy,
        "patient_identifier_systems": [NID], "network_identifier_systems": [NID],
    })
}

/// Links `site`/`id` by network identifier value `value`; the network patient's id.
fn link(gw: &StartedGateway, site: &str, id: &str, value: &str) -> String {
    gw.gateway
        .state
        .network
        .learn(site, id, [(NID, value)], 1)
        .expect("the index learns")
        .network_id
        .expect("a network patient")
}

/// A patient's app (no actor) with every patient scope, for `launch`.
fn app(launch: PatientLaunch<'_>) -> String {
    token(
        "billing-service",
        Some("openid launch/patient patient/*.cruds"),
        None,
        Some(launch),
    )
}

/// A token of the patient's app whose `aud` is `audiences` as given.
fn app_with_audiences(patient: &str, audiences: &[&str]) -> String {
    identity_provider()
        .provider()
        .mint_with_audiences(
            "billing-service",
            Some("openid launch/patient patient/*.cruds"),
            Some(patient),
            audiences,
        )
        .expect("a token")
}

fn json_body(body: &Value) -> Option<Vec<u8>> {
    Some(body.to_string().into_bytes())
}

const FHIR_JSON: (&str, &str) = ("content-type", "application/fhir+json; fhirVersion=4.0");
const PLAIN_JSON: (&str, &str) = ("content-type", "application/json");

#[actix_web::test]
async fn a_patient_context_is_honoured_only_for_the_patient_it_was_issued_for() {
    let (st_mary, north) = (hospital(), hospital());
    let gw = TestGateway::new()
        .site_with("st-mary", site(&st_mary, "opt-out"))
        .site_with("north-general", site(&north, "opt-out"))
        .start();
    // st-mary/p1 and north-general/p2 are one person; north-general/p1 is someone else.
    let n = link(&gw, "st-mary", "p1", "111");
    assert_eq!(link(&gw, "north-general", "p2", "111"), n);
    // A network patient held at St Mary's alone.
    let m = link(&gw, "st-mary", "p3", "333");
    // North General's p1 has a consent permitting everyone (an administrator's): what
    // stands between a wrongly honoured context and p1's data is the binding alone.
    let ng_consent = permit_all("ng-p1", "p1");
    let got = send(
        "PUT",
        &gw.url("/consent/Consent/ng-p1?site=north-general"),
        Some(admin_token()),
        &[FHIR_JSON],
        json_body(&ng_consent),
    )
    .await;
    assert_eq!(got.status, 201, "{}", got.text());

    let stm_p1 = app(PatientLaunch::at("st-mary", "p1"));
    let two_sites = app_with_audiences(
        "p1",
        &[
            &format!("{TEST_AUDIENCE}/st-mary"),
            &format!("{TEST_AUDIENCE}/north-general"),
        ],
    );
    let network_local = app(PatientLaunch::network("p1"));
    let network_n = app(PatientLaunch::network(&n));
    let network_m = app(PatientLaunch::network(&m));
    let foreign = app_with_audiences("p1", &["https://elsewhere.example/fhir/st-mary"]);

    let create_ng_p1 = consent("new-ng-p1", "p1", "dr-alice", false);
    let check_ng_p1 =
        json!({"site": "north-general", "patient": "p1", "actor": "Practitioner/dr-alice"});
    // (what, token, method, path, body, status, error code)
    type Row<'a> = (
        &'a str,
        &'a str,
        &'a str,
        String,
        Option<(Value, (&'a str, &'a str))>,
        u16,
        &'a str,
    );
    let rows: Vec<Row> = vec![
        // Bound to st-mary/p1: North General's p1 every way.
        (
            "read ng p1",
            &stm_p1,
            "GET",
            "/fhir/north-general/Patient/p1".into(),
            None,
            403,
            "patient-context-unbound",
        ),
        (
            "search ng patient=p1",
            &stm_p1,
            "GET",
            "/fhir/north-general/Observation?patient=p1".into(),
            None,
            403,
            "patient-context-unbound",
        ),
        (
            "search ng no patient",
            &stm_p1,
            "GET",
            "/fhir/north-general/Observation".into(),
            None,
            403,
            "patient-context-unbound",
        ),
        (
            "ng $everything",
            &stm_p1,
            "GET",
            "/fhir/north-general/Patient/p1/$everything".into(),
            None,
            403,
            "patient-context-unbound",
        ),
        (
            "consent create ng p1",
            &stm_p1,
            "POST",
            "/consent/Consent?site=north-general".into(),
            Some((create_ng_p1.clone(), FHIR_JSON)),
            403,
            "consent-patient-mismatch",
        ),
        (
            "consent search ng p1",
            &stm_p1,
            "GET",
            "/consent/Consent?site=north-general&patient=p1".into(),
            None,
            403,
            "consent-patient-mismatch",
        ),
        (
            "consent read ng p1's",
            &stm_p1,
            "GET",
            "/consent/Consent/ng-p1".into(),
            None,
            403,
            "consent-patient-mismatch",
        ),
        (
            "consent revoke ng p1's",
            &stm_p1,
            "POST",
            "/consent/Consent/ng-p1/$revoke".into(),
            None,
            403,
            "consent-patient-mismatch",
        ),
        (
            "consent $check ng p1",
            &stm_p1,
            "POST",
            "/consent/$check".into(),
            Some((check_ng_p1.clone(), PLAIN_JSON)),
            403,
            "consent-patient-mismatch",
        ),
        // Its own patient at its own site: honoured.
        (
            "read own",
            &stm_p1,
            "GET",
            "/fhir/st-mary/Patient/p1".into(),
            None,
            200,
            "",
        ),
        (
            "consent $check own",
            &stm_p1,
            "POST",
            "/consent/$check".into(),
            Some((json!({"site": "st-mary", "patient": "p1"}), PLAIN_JSON)),
            200,
            "",
        ),
        // Bound to nothing: two site bases, the network base with a local id, no base of ours
        // (refused by the audience check already).
        (
            "two sites' aud",
            &two_sites,
            "GET",
            "/fhir/st-mary/Patient/p1".into(),
            None,
            403,
            "patient-context-unbound",
        ),
        (
            "two sites' aud, consents",
            &two_sites,
            "GET",
            "/consent/Consent?site=st-mary&patient=p1".into(),
            None,
            403,
            "patient-context-unbound",
        ),
        (
            "network aud, local id",
            &network_local,
            "GET",
            "/fhir/st-mary/Patient/p1".into(),
            None,
            403,
            "patient-context-unbound",
        ),
        (
            "network aud, local id, $check",
            &network_local,
            "POST",
            "/consent/$check".into(),
            Some((json!({"site": "st-mary", "patient": "p1"}), PLAIN_JSON)),
            403,
            "patient-context-unbound",
        ),
        (
            "another gateway's aud",
            &foreign,
            "GET",
            "/fhir/st-mary/Patient/p1".into(),
            None,
            401,
            "token-wrong-audience",
        ),
        // A network patient: its linked record at each site, nothing else.
        (
            "network n at st-mary",
            &network_n,
            "GET",
            "/fhir/st-mary/Patient/p1".into(),
            None,
            200,
            "",
        ),
        (
            "network n at ng",
            &network_n,
            "GET",
            "/fhir/north-general/Patient/p2".into(),
            None,
            200,
            "",
        ),
        (
            "network n, ng's p1",
            &network_n,
            "GET",
            "/fhir/north-general/Patient/p1".into(),
            None,
            403,
            "scope-patient-mismatch",
        ),
        (
            "network n, stm's p2",
            &network_n,
            "GET",
            "/fhir/st-mary/Patient/p2".into(),
            None,
            403,
            "scope-patient-mismatch",
        ),
        (
            "network n, ng p1's consents",
            &network_n,
            "GET",
            "/consent/Consent?site=north-general&patient=p1".into(),
            None,
            403,
            "consent-patient-mismatch",
        ),
        (
            "network n, ng p1's consent",
            &network_n,
            "POST",
            "/consent/Consent/ng-p1/$revoke".into(),
            None,
            403,
            "consent-patient-mismatch",
        ),
        (
            "network n, its ng record's consents",
            &network_n,
            "GET",
            "/consent/Consent?site=north-general&patient=p2".into(),
            None,
            200,
            "",
        ),
        (
            "network m where unlinked",
            &network_m,
            "GET",
            "/fhir/north-general/Patient/p3".into(),
            None,
            403,
            "patient-context-unbound",
        ),
        (
            "network m where unlinked, search",
            &network_m,
            "GET",
            "/fhir/north-general/Observation".into(),
            None,
            403,
            "patient-context-unbound",
        ),
        (
            "network m where linked",
            &network_m,
            "GET",
            "/fhir/st-mary/Patient/p3".into(),
            None,
            200,
            "",
        ),
    ];
    // Every row is tried; the failures are listed together.
    let mut failures = Vec::new();
    for (what, token, method, path, body, status, code) in rows {
        let before = north.requests().len();
        let (body, headers) = match body {
            Some((b, h)) => (json_body(&b), vec![h]),
            None => (None, vec![]),
        };
        let got = send(method, &gw.url(&path), Some(token), &headers, body).await;
        let text = got.text();
        if got.status != status {
            failures.push(format!("{what}: {} {text}", got.status));
            continue;
        }
        if status != 200 {
            // Refused as the rule says; nothing of North General's patients released, nothing
            // asked of it.
            if got.error_code() != code
                || text.contains("\"resourceType\":\"Patient\"")
                || text.contains("o-p1")
                || text.contains("\"Consent\"")
                || north.requests().len() != before
            {
                failures.push(format!("{what}: {} {text}", got.error_code()));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // A network patient's search is narrowed to its record at the site.
    let got = send(
        "GET",
        &gw.url("/fhir/north-general/Observation"),
        Some(&network_n),
        &[],
        None,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(north.requests().pop().unwrap().query, "patient=p2");
    // North General's consent of p1 stands.
    let got = send(
        "GET",
        &gw.url("/consent/Consent/ng-p1"),
        Some(admin_token()),
        &[],
        None,
    )
    .await;
    assert_eq!(got.json()["status"], "active");
}

/// Whether `token` reads `path` (200), or is refused by consent (403 `consent-denied`).
async fn reads(gw: &StartedGateway, token: &str, path: &str) -> bool {
    let got = send("GET", &gw.url(path), Some(token), &[], None).await;
    match got.status {
        200 => true,
        403 => {
            assert_eq!(got.error_code(), "consent-denied", "{path}");
            false
        }
        other => panic!("{path}: {other} {}", got.text()),
    }
}

/// A consent of `patient` permitting everything (its root, no actor).
fn permit_all(id: &str, patient: &str) -> Value {
    let mut c = consent(id, patient, "nobody", true);
    c["provision"] = json!({"type": "permit"});
    c
}

#[actix_web::test]
async fn a_network_consent_decides_at_every_site_holding_the_patient() {
    let (st_mary, north) = (hospital(), hospital());
    let gw = TestGateway::new()
        .site_with("st-mary", site(&st_mary, "opt-out"))
        .site_with("north-general", site(&north, "opt-in"))
        .start();
    let n = link(&gw, "st-mary", "p1", "111");
    assert_eq!(link(&gw, "north-general", "p2", "111"), n);
    let (alice, bob) = (clinician_token(), other_clinician_token());
    let (stm, ng) = ("/fhir/st-mary/Patient/p1", "/fhir/north-general/Patient/p2");
    // The sites' defaults first: opt-out permits, opt-in denies.
    assert!(reads(&gw, alice, stm).await);
    assert!(!reads(&gw, bob, ng).await);

    // The network consent: refuses everyone but dr-bob, at every site holding the patient.
    let network_consent = consent("net-1", &n, "dr-bob", true);
    let got = send(
        "POST",
        &gw.url("/consent/Consent?site=network"),
        Some(admin_token()),
        &[FHIR_JSON],
        json_body(&network_consent),
    )
    .await;
    assert_eq!(got.status, 201, "{}", got.text());
    let id = got.json()["id"].as_str().unwrap().to_owned();
    assert!(
        !reads(&gw, alice, stm).await,
        "its refusal denies at the opt-out site"
    );
    assert!(!reads(&gw, alice, ng).await);
    assert!(reads(&gw, bob, stm).await);
    assert!(
        reads(&gw, bob, ng).await,
        "its permit permits at the opt-in site"
    );
    // Not at North General's p1, another person with St Mary's local id.
    assert!(!reads(&gw, bob, "/fhir/north-general/Patient/p1").await);

    // Read and searched under the network patient.
    let got = send(
        "GET",
        &gw.url(&format!("/consent/Consent/{id}")),
        Some(admin_token()),
        &[],
        None,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let got = send(
        "GET",
        &gw.url(&format!("/consent/Consent?site=network&patient={n}")),
        Some(admin_token()),
        &[],
        None,
    )
    .await;
    assert_eq!(got.json()["total"], 1, "{}", got.text());

    // $check per site, as the proxy decides.
    let check = |actor: &str, fhir: bool| {
        let body = if fhir {
            json!({"resourceType": "Parameters", "parameter": [
                {"name": "site", "valueString": "network"},
                {"name": "patient", "valueString": format!("Patient/{n}")},
                {"name": "actor", "valueString": actor},
            ]})
        } else {
            json!({"site": "network", "patient": format!("Patient/{n}"), "actor": actor})
        };
        let url = gw.url("/consent/$check");
        async move {
            let header = if fhir { FHIR_JSON } else { PLAIN_JSON };
            send(
                "POST",
                &url,
                Some(admin_token()),
                &[header],
                json_body(&body),
            )
            .await
        }
    };
    let got = check("Practitioner/dr-bob", false).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let mut per_site: Vec<(String, String)> = got.json()["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["site"].as_str().unwrap().to_owned(),
                s["decision"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    per_site.sort();
    assert_eq!(
        per_site,
        [
            ("north-general".to_owned(), "permit".to_owned()),
            ("st-mary".to_owned(), "permit".to_owned())
        ]
    );
    let got = check("Practitioner/dr-alice", true).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let parts = got.json()["parameter"].as_array().unwrap().clone();
    assert_eq!(parts.len(), 2, "{parts:?}");
    for part in &parts {
        assert_eq!(part["name"], "site");
        assert_eq!(part["part"][1]["valueCode"], "deny", "{part}");
        assert!(
            part["part"][2]["valueString"]
                .as_str()
                .unwrap()
                .contains("dr-alice")
        );
    }

    // Revoked: at both sites at once, each back to its default.
    let got = send(
        "POST",
        &gw.url(&format!("/consent/Consent/{id}/$revoke")),
        Some(admin_token()),
        &[],
        None,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(reads(&gw, alice, stm).await);
    assert!(!reads(&gw, bob, ng).await);
}

/// ADV: who may write a network consent, which ids name a network patient, and that a
/// network permit never lifts a site-level refusal beyond the combination rule.
#[actix_web::test]
async fn a_network_consent_cannot_be_written_by_a_site_context_nor_widen_a_site_refusal() {
    let (st_mary, north) = (hospital(), hospital());
    let gw = TestGateway::new()
        .site_with("st-mary", site(&st_mary, "opt-out"))
        .site_with("north-general", site(&north, "opt-in"))
        .start();
    let n = link(&gw, "st-mary", "p1", "111");
    assert_eq!(link(&gw, "north-general", "p2", "111"), n);
    let stm_p1 = app(PatientLaunch::at("st-mary", "p1"));
    let network_n = app(PatientLaunch::network(&n));
    let post = |token: String, query: &str, body: Value| {
        let url = gw.url(&format!("/consent/Consent{query}"));
        async move { send("POST", &url, Some(&token), &[FHIR_JSON], json_body(&body)).await }
    };

    // A site-bound context (even the same person's record) neither creates nor revokes one.
    let got = post(
        stm_p1.clone(),
        "?site=network",
        consent("x1", &n, "dr-bob", true),
    )
    .await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (403, "consent-patient-mismatch")
    );
    let got = post(
        network_n.clone(),
        "?site=network",
        consent("x2", &n, "dr-bob", true),
    )
    .await;
    assert_eq!(
        got.status,
        201,
        "the network patient's own context: {}",
        got.text()
    );
    let own = got.json()["id"].as_str().unwrap().to_owned();
    let got = send(
        "POST",
        &gw.url(&format!("/consent/Consent/{own}/$revoke")),
        Some(&stm_p1),
        &[],
        None,
    )
    .await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (403, "consent-patient-mismatch")
    );
    let got = send(
        "GET",
        &gw.url(&format!("/consent/Consent/{own}")),
        Some(admin_token()),
        &[],
        None,
    )
    .await;
    assert_eq!(got.json()["status"], "active");
    let got = send(
        "POST",
        &gw.url(&format!("/consent/Consent/{own}/$revoke")),
        Some(admin_token()),
        &[],
        None,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());

    // Ids that name no network patient: refused, nothing stored.
    let unknown = format!("n-{}", "0".repeat(40));
    let base = gw.gateway.base_url();
    for (what, query, patient) in [
        ("unknown", "?site=network", format!("Patient/{unknown}")),
        ("malformed", "?site=network", "Patient/n-XYZ".to_owned()),
        ("a local id", "?site=network", "Patient/p1".to_owned()),
        (
            "unknown, gateway URL",
            "",
            format!("{base}/fhir/Patient/{unknown}"),
        ),
        (
            "the pseudo-site as a site",
            "",
            format!("{base}/fhir/network/Patient/{n}"),
        ),
    ] {
        let mut body = consent("bad", "x", "dr-bob", true);
        body["patient"]["reference"] = json!(patient);
        let got = post(admin_token().to_owned(), query, body).await;
        assert_eq!(got.status, 422, "{what}: {}", got.text());
    }
    let got = send(
        "POST",
        &gw.url("/consent/$check"),
        Some(admin_token()),
        &[PLAIN_JSON],
        json_body(&json!({"site": "network", "patient": format!("Patient/{unknown}")})),
    )
    .await;
    assert_eq!(got.status, 400, "{}", got.text());

    // St Mary's own consent refuses dr-bob; network consents try to lift it. The rule: one
    // pool of provisions, the more specific first, deny wins at equal specificity.
    let site_refusal = consent("stm-no-bob", "p1", "dr-bob", false);
    let got = send(
        "PUT",
        &gw.url("/consent/Consent/stm-no-bob?site=st-mary"),
        Some(admin_token()),
        &[FHIR_JSON],
        json_body(&site_refusal),
    )
    .await;
    assert_eq!(got.status, 201, "{}", got.text());
    let bob = other_clinician_token();
    let (stm, ng) = ("/fhir/st-mary/Patient/p1", "/fhir/north-general/Patient/p2");
    for (what, network_consent) in [
        (
            "permit for dr-bob, as specific",
            consent("lift-1", &n, "dr-bob", true),
        ),
        ("permit for everyone", permit_all("lift-2", &n)),
    ] {
        let got = post(admin_token().to_owned(), "?site=network", network_consent).await;
        assert_eq!(got.status, 201, "{what}: {}", got.text());
        let id = got.json()["id"].as_str().unwrap().to_owned();
        assert!(
            !reads(&gw, bob, stm).await,
            "{what}: the site's refusal stands"
        );
        assert!(
            reads(&gw, bob, ng).await,
            "{what}: permits where no site consent refuses"
        );
        let got = send(
            "POST",
            &gw.url(&format!("/consent/Consent/{id}/$revoke")),
            Some(admin_token()),
            &[],
            None,
        )
        .await;
        assert_eq!(got.status, 200, "{}", got.text());
    }
}
