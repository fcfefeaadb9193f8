//! `/consent/Consent` as a FHIR Consent endpoint (issue 15): create with a server-assigned id
//! whose `Location` resolves, PUT with the client's id, read, vread, `_history`, search by
//! patient, actor and status (by actor alone across a site's patients), version-aware updates (a stale `If-Match` is 412 and two
//! writers with the same `If-Match` cannot both win), 404 `not-found` for an unknown consent;
//! `$check` in `Parameters` with its input checked and a plain explanation, deciding as the
//! proxy does; a denied proxied caller told why without any consent's content; and the
//! accounting of disclosures worded for a patient.

use assent_e2e::*;
use assent_gateway::store::testing;
use assent_receipts::{ConsentRelied, Receipt};
use serde_json::{Value, json};

use crate::consent::{consent, hospital, put_consent};

const FHIR_JSON: (&str, &str) = ("content-type", "application/fhir+json; fhirVersion=4.0");

async fn admin(gw: &StartedGateway, method: &str, path: &str, body: Option<&Value>) -> Got {
    admin_with(gw, method, path, &[], body).await
}

async fn admin_with(
    gw: &StartedGateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Got {
    let mut all = vec![FHIR_JSON];
    all.extend_from_slice(headers);
    send(
        method,
        &gw.url(path),
        Some(admin_token()),
        if body.is_some() { &all } else { headers },
        body.map(|b| b.to_string().into_bytes()),
    )
    .await
}

/// The path and query of an absolute gateway URL.
fn path_of(gw: &StartedGateway, url: &str) -> String {
    let base = gw.url("");
    url.strip_prefix(&base)
        .unwrap_or_else(|| panic!("{url} is not under {base}"))
        .to_owned()
}

#[actix_web::test]
async fn the_consent_endpoint_answers_as_a_fhir_server() {
    let upstream = hospital();
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();

    // Create: the server assigns the id (the body's is ignored) and the Location resolves.
    let created = admin(
        &gw,
        "POST",
        "/consent/Consent?site=st-mary",
        Some(&consent("client-chosen", "p1", "dr-alice", true)),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    let body = created.json();
    let id = body["id"].as_str().unwrap().to_owned();
    assert_ne!(id, "client-chosen", "a create assigns the id");
    assert_eq!(body["meta"]["versionId"], "1");
    assert!(body["meta"]["lastUpdated"].as_str().is_some());
    assert_eq!(created.header("etag"), Some("W/\"1\""));
    assert!(created.header("last-modified").is_some());
    let location = created.header("location").unwrap().to_owned();
    assert!(location.ends_with(&format!("/consent/Consent/{id}/_history/1")));
    let at_location = admin(&gw, "GET", &path_of(&gw, &location), None).await;
    assert_eq!(at_location.status, 200, "{}", at_location.text());
    assert_eq!(at_location.json()["id"], id.as_str());
    assert_eq!(at_location.json()["meta"]["versionId"], "1");
    assert_eq!(
        admin(&gw, "GET", "/consent/Consent/client-chosen", None)
            .await
            .error_code(),
        "not-found",
        "the body's id named nothing"
    );

    // Read: the current version with ETag and Last-Modified.
    let read = admin(&gw, "GET", &format!("/consent/Consent/{id}"), None).await;
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(read.header("etag"), Some("W/\"1\""));
    assert!(read.header("last-modified").is_some());
    assert_eq!(read.json()["patient"]["reference"], "Patient/p1");

    // Update with the version read: version 2.
    let mut changed = read.json();
    changed["provision"]["provision"][0]["actor"][0]["reference"]["reference"] =
        json!("Practitioner/nurse-carol");
    let updated = admin_with(
        &gw,
        "PUT",
        &format!("/consent/Consent/{id}?site=st-mary"),
        &[("if-match", "W/\"1\"")],
        Some(&changed),
    )
    .await;
    assert_eq!(updated.status, 200, "{}", updated.text());
    assert_eq!(updated.header("etag"), Some("W/\"2\""));
    assert_eq!(updated.json()["meta"]["versionId"], "2");

    // A stale If-Match: 412, and nothing is written.
    changed["provision"]["provision"][0]["actor"][0]["reference"]["reference"] =
        json!("Practitioner/dr-bob");
    let stale = admin_with(
        &gw,
        "PUT",
        &format!("/consent/Consent/{id}?site=st-mary"),
        &[("if-match", "W/\"1\"")],
        Some(&changed),
    )
    .await;
    assert_eq!(
        (stale.status, stale.error_code().as_str()),
        (412, "version-conflict"),
        "{}",
        stale.text()
    );
    let history = admin(&gw, "GET", &format!("/consent/Consent/{id}/_history"), None).await;
    assert_eq!(history.status, 200);
    let history = history.json();
    assert_eq!(history["total"], 2, "the stale write wrote nothing");
    assert_eq!(history["entry"][0]["response"]["etag"], "W/\"2\"");
    assert!(
        history["link"][0]["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/consent/Consent/{id}/_history"))
    );
    assert!(!history.to_string().contains("dr-bob"));
    // An If-Match that is not a version is refused before anything is read.
    let bad = admin_with(
        &gw,
        "PUT",
        &format!("/consent/Consent/{id}?site=st-mary"),
        &[("if-match", "version one")],
        Some(&changed),
    )
    .await;
    assert_eq!(bad.error_code(), "malformed-request");

    // Vread: each version as it was written; an unknown version is not found.
    let v1 = admin(
        &gw,
        "GET",
        &format!("/consent/Consent/{id}/_history/1"),
        None,
    )
    .await;
    assert_eq!(v1.status, 200);
    assert_eq!(v1.header("etag"), Some("W/\"1\""));
    assert_eq!(
        v1.json()["provision"]["provision"][0]["actor"][0]["reference"]["reference"],
        "Practitioner/dr-alice"
    );
    let v2 = admin(
        &gw,
        "GET",
        &format!("/consent/Consent/{id}/_history/2"),
        None,
    )
    .await;
    assert_eq!(
        v2.json()["provision"]["provision"][0]["actor"][0]["reference"]["reference"],
        "Practitioner/nurse-carol"
    );
    for missing in [
        format!("/consent/Consent/{id}/_history/9"),
        format!("/consent/Consent/{id}/_history/x"),
        "/consent/Consent/no-such-consent".to_owned(),
        "/consent/Consent/no-such-consent/_history".to_owned(),
        "/consent/Consent/no-such-consent/_history/1".to_owned(),
    ] {
        let got = admin(&gw, "GET", &missing, None).await;
        assert_eq!(
            (got.status, got.error_code().as_str()),
            (404, "not-found"),
            "{missing}"
        );
    }
    let got = admin(
        &gw,
        "POST",
        "/consent/Consent/no-such-consent/$revoke",
        None,
    )
    .await;
    assert_eq!((got.status, got.error_code().as_str()), (404, "not-found"));

    // PUT with the client's id: 201 with a Location that resolves; a body id that is not the
    // URL's is refused.
    let put = put_consent(&gw, "st-mary", &consent("c-client", "p1", "dr-bob", false)).await;
    assert_eq!(put.status, 201, "{}", put.text());
    let location = put.header("location").unwrap().to_owned();
    assert!(location.ends_with("/consent/Consent/c-client/_history/1"));
    assert_eq!(
        admin(&gw, "GET", &path_of(&gw, &location), None)
            .await
            .status,
        200
    );
    let mismatch = admin(
        &gw,
        "PUT",
        "/consent/Consent/c-other?site=st-mary",
        Some(&consent("c-client", "p1", "dr-bob", false)),
    )
    .await;
    assert_eq!(mismatch.status, 400, "{}", mismatch.text());
    // The same document again is no new version.
    let again = put_consent(&gw, "st-mary", &consent("c-client", "p1", "dr-bob", false)).await;
    assert_eq!((again.status, again.header("etag")), (200, Some("W/\"1\"")));

    // Search: a searchset with a self link, total and fullUrls, by actor and status.
    let revoked = admin(&gw, "POST", "/consent/Consent/c-client/$revoke", None).await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    let search = |query: &str| {
        let path = format!("/consent/Consent?{query}");
        let gw = &gw;
        async move { admin(gw, "GET", &path, None).await }
    };
    let ids_of = |got: &Got| -> Vec<String> {
        let mut ids: Vec<String> = got.json()["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let all = search("site=st-mary&patient=p1").await;
    assert_eq!(all.status, 200, "{}", all.text());
    let bundle = all.json();
    assert_eq!(bundle["type"], "searchset");
    assert_eq!(bundle["total"], 2);
    assert_eq!(bundle["link"][0]["relation"], "self");
    assert!(
        bundle["link"][0]["url"]
            .as_str()
            .unwrap()
            .ends_with("/consent/Consent?site=st-mary&patient=p1")
    );
    assert!(bundle["entry"].as_array().unwrap().iter().all(|e| {
        e["fullUrl"].as_str().unwrap().ends_with(&format!(
            "/consent/Consent/{}",
            e["resource"]["id"].as_str().unwrap()
        ))
    }));
    let mut both = vec![id.clone(), "c-client".to_owned()];
    both.sort();
    assert_eq!(ids_of(&all), both);
    assert_eq!(
        ids_of(&search("site=st-mary&patient=p1&status=active").await),
        [id.as_str()]
    );
    assert_eq!(
        ids_of(&search("site=st-mary&patient=Patient/p1&status=inactive").await),
        ["c-client"]
    );
    assert_eq!(
        ids_of(&search("site=st-mary&patient=p1&actor=Practitioner/dr-bob").await),
        ["c-client"]
    );
    assert_eq!(
        ids_of(&search("site=st-mary&patient=p1&actor=Practitioner/nurse-carol").await),
        [id.as_str()]
    );
    assert!(
        ids_of(&search("site=st-mary&patient=p1&actor=Practitioner/dr-alice").await).is_empty(),
        "dr-alice was named by version 1 only"
    );
    assert!(ids_of(&search("site=st-mary&patient=p2").await).is_empty());
    for (query, named) in [
        ("site=st-mary&patient=p1&subject=Patient/p1", "subject"),
        ("site=st-mary&patient=p1&status=sort-of", "sort-of"),
        ("site=st-mary&patient=p1&actor=dr-bob", "dr-bob"),
        ("site=st-mary&patient=p1&patient=p2", "patient"),
    ] {
        let got = search(query).await;
        assert_eq!(
            (got.status, got.error_code().as_str()),
            (400, "malformed-request"),
            "{query}"
        );
        assert!(got.text().contains(named), "{query}: {}", got.text());
    }
}

/// Search by actor without a patient (issue 15): every consent of the site's patients that
/// names the actor, revoked ones included (read `inactive`), filtered by status; never
/// another site's; the receipt names every patient returned. ADV: a caller confined to a
/// patient by its launch context gets that patient's consents only, never another
/// patient's, and a caller with neither a context nor the administrator role is refused.
#[actix_web::test]
async fn consents_are_searched_by_actor_without_a_patient() {
    let upstream = hospital();
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .site("north-general", &upstream.base_url())
        .start();
    for (site, body) in [
        ("st-mary", consent("c-alice-p1", "p1", "dr-alice", true)),
        ("st-mary", consent("c-alice-p2", "p2", "dr-alice", true)),
        ("st-mary", consent("c-bob-p1", "p1", "dr-bob", false)),
        // Another site's patient with the same local id: not St Mary's.
        (
            "north-general",
            consent("c-alice-ng", "p1", "dr-alice", true),
        ),
    ] {
        let got = put_consent(&gw, site, &body).await;
        assert_eq!(got.status, 201, "{}", got.text());
    }
    let revoked = admin(&gw, "POST", "/consent/Consent/c-alice-p2/$revoke", None).await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());

    let search = |query: &str, token: &str| {
        let url = gw.url(&format!("/consent/Consent?{query}"));
        let token = token.to_owned();
        async move { send("GET", &url, Some(&token), &[], None).await }
    };
    let ids_of = |got: &Got| -> Vec<String> {
        assert_eq!(got.status, 200, "{}", got.text());
        let bundle = got.json();
        let mut ids: Vec<String> = bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(bundle["total"], ids.len());
        ids.sort();
        ids
    };
    let key = gw.gateway.state.consents.key().clone();
    let receipt_patients = |got: &Got| -> Vec<String> {
        let id = got.header("x-assent-receipt").expect("a receipt");
        let row = gw.gateway.state.store.receipt(id).unwrap().unwrap();
        let mut keys = Receipt::from_canonical_bytes(&row.body)
            .unwrap()
            .patient_keys;
        keys.sort();
        keys
    };
    let keys_of = |patients: &[&str]| -> Vec<String> {
        let mut keys: Vec<String> = patients.iter().map(|p| key.patient(p)).collect();
        keys.sort();
        keys
    };

    // A consent administrator: both patients' consents naming dr-alice, with their status.
    let admin_token = admin_token();
    let alice = search("site=st-mary&actor=Practitioner/dr-alice", admin_token).await;
    assert_eq!(ids_of(&alice), ["c-alice-p1", "c-alice-p2"]);
    assert_eq!(
        receipt_patients(&alice),
        keys_of(&["st-mary/Patient/p1", "st-mary/Patient/p2"]),
        "the receipt names every patient returned"
    );
    assert_eq!(
        ids_of(
            &search(
                "site=st-mary&actor=Practitioner/dr-alice&status=active",
                admin_token
            )
            .await
        ),
        ["c-alice-p1"]
    );
    assert_eq!(
        ids_of(
            &search(
                "site=st-mary&actor=Practitioner/dr-alice&status=inactive",
                admin_token
            )
            .await
        ),
        ["c-alice-p2"],
        "a revoked consent reads inactive"
    );
    assert_eq!(
        ids_of(&search("site=st-mary&actor=Practitioner/dr-bob", admin_token).await),
        ["c-bob-p1"]
    );
    assert_eq!(
        ids_of(
            &search(
                "site=north-general&actor=Practitioner/dr-alice",
                admin_token
            )
            .await
        ),
        ["c-alice-ng"]
    );
    let nobody = search("site=st-mary&actor=Practitioner/dr-nobody", admin_token).await;
    assert!(ids_of(&nobody).is_empty());
    assert!(receipt_patients(&nobody).is_empty());
    // With a patient, the actor still filters that patient's consents.
    assert_eq!(
        ids_of(
            &search(
                "site=st-mary&patient=p1&actor=Practitioner/dr-alice",
                admin_token
            )
            .await
        ),
        ["c-alice-p1"]
    );
    // Neither a patient nor an actor: 400 naming both; a bad actor: 400 naming it.
    for (query, named) in [
        ("site=st-mary", "`patient` or `actor`"),
        ("site=st-mary&status=active", "`patient` or `actor`"),
        ("site=st-mary&actor=dr-alice", "dr-alice"),
        ("actor=Practitioner/dr-alice", "site"),
    ] {
        let got = search(query, admin_token).await;
        assert_eq!(
            (got.status, got.error_code().as_str()),
            (400, "malformed-request"),
            "{query}"
        );
        assert!(got.text().contains(named), "{query}: {}", got.text());
    }

    // ADV: callers confined to a patient, searching by actor alone, get their own patient's
    // consents and nothing of any other patient; the receipt names no other patient.
    let app = |patient: &str| {
        token(
            "billing-service",
            Some("openid launch/patient patient/Consent.rs"),
            None,
            Some(PatientLaunch::at("st-mary", patient)),
        )
    };
    let ehr_alice_p2 = token(
        "dr-alice",
        Some("openid fhirUser launch/patient patient/Consent.cruds user/*.rs"),
        None,
        Some(PatientLaunch::at("st-mary", "p2")),
    );
    // (who, token, actor searched, the one consent and patient it may see, if any)
    let confined = [
        (
            "p1's app, dr-alice",
            app("p1"),
            "Practitioner/dr-alice",
            Some(("c-alice-p1", "p1")),
        ),
        (
            "p1's app, dr-bob",
            app("p1"),
            "Practitioner/dr-bob",
            Some(("c-bob-p1", "p1")),
        ),
        ("p2's app, dr-bob", app("p2"), "Practitioner/dr-bob", None),
        (
            "p3's app, dr-alice",
            app("p3"),
            "Practitioner/dr-alice",
            None,
        ),
        (
            "dr-alice with p2 in context",
            ehr_alice_p2,
            "Practitioner/dr-alice",
            Some(("c-alice-p2", "p2")),
        ),
    ];
    for (name, token, actor, own) in confined {
        let got = search(&format!("site=st-mary&actor={actor}"), &token).await;
        let expected: Vec<String> = own.iter().map(|(id, _)| (*id).to_owned()).collect();
        assert_eq!(ids_of(&got), expected, "{name}");
        let patients: Vec<String> = own
            .iter()
            .map(|(_, p)| format!("st-mary/Patient/{p}"))
            .collect();
        let patients: Vec<&str> = patients.iter().map(String::as_str).collect();
        assert_eq!(receipt_patients(&got), keys_of(&patients), "{name}");
        let body = got.text();
        for other in ["p1", "p2", "p3"] {
            if own.is_none_or(|(_, p)| p != other) {
                assert!(
                    !body.contains(&format!("Patient/{other}")),
                    "{name}: released a consent of {other}: {body}"
                );
            }
        }
    }
    // Neither a launch context nor the administrator role: refused, whatever the search.
    let user_scoped = token(
        "dr-alice",
        Some("openid fhirUser user/Consent.cruds"),
        None,
        None,
    );
    for token in [clinician_token(), user_scoped.as_str()] {
        let got = search("site=st-mary&actor=Practitioner/dr-alice", token).await;
        assert_eq!(
            (got.status, got.error_code().as_str()),
            (403, "consent-admin-required"),
            "{}",
            got.text()
        );
        assert!(!got.text().contains("c-alice"));
    }
}

/// Two administrators read version 1 and both write version 2 with `If-Match: W/"1"` at the
/// same time: exactly one wins, the other is 412 and its change is nowhere. On SQLite and
/// PostgreSQL with the embedded ledger, and on Fabric (the FAKE peer running the real
/// chaincode).
#[actix_web::test]
async fn two_writers_with_the_same_if_match_exactly_one_wins() {
    let upstream = hospital();
    for store in testing::all() {
        let gw = TestGateway::new()
            .database(&store.url)
            .site("st-mary", &upstream.base_url())
            .start();
        race(&gw).await;
    }
    let fabric = FakeFabricNetwork::start();
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .set("ledger", fabric.ledger_config())
        .start();
    race(&gw).await;
}

async fn race(gw: &StartedGateway) {
    for round in 0..3 {
        let id = format!("c-race-{round}");
        let first = put_consent(gw, "st-mary", &consent(&id, "p1", "dr-alice", true)).await;
        assert_eq!(first.status, 201, "{}", first.text());
        let writer = |practitioner: &str| {
            let body = consent(&id, "p1", practitioner, true);
            let url = gw.url(&format!("/consent/Consent/{id}?site=st-mary"));
            async move {
                send(
                    "PUT",
                    &url,
                    Some(admin_token()),
                    &[FHIR_JSON, ("if-match", "W/\"1\"")],
                    Some(body.to_string().into_bytes()),
                )
                .await
            }
        };
        let (a, b, c) = tokio::join!(
            writer("nurse-carol"),
            writer("dr-bob"),
            writer("researcher-dan")
        );
        let all = [("nurse-carol", &a), ("dr-bob", &b), ("researcher-dan", &c)];
        let winners: Vec<&str> = all
            .iter()
            .filter(|(_, got)| got.status == 200)
            .map(|(who, _)| *who)
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "exactly one writer wins: {} / {} / {}",
            a.text(),
            b.text(),
            c.text()
        );
        for (_, got) in all.iter().filter(|(_, got)| got.status != 200) {
            assert_eq!(
                (got.status, got.error_code().as_str()),
                (412, "version-conflict"),
                "{}",
                got.text()
            );
        }
        let current = admin(gw, "GET", &format!("/consent/Consent/{id}"), None).await;
        assert_eq!(current.header("etag"), Some("W/\"2\""));
        assert_eq!(
            current.json()["provision"]["provision"][0]["actor"][0]["reference"]["reference"],
            format!("Practitioner/{}", winners[0])
        );
        let history = admin(gw, "GET", &format!("/consent/Consent/{id}/_history"), None)
            .await
            .json();
        assert_eq!(history["total"], 2, "one new version, not three");
    }
}

/// `$check` in FHIR `Parameters`: input checked (an unknown purpose, resource type,
/// interaction or an actor that is not `Type/id` is 400 naming it), a plain explanation beside
/// the machine-readable provision, and the same decision the proxy makes.
#[actix_web::test]
async fn check_takes_parameters_refuses_what_the_proxy_could_not_receive_and_decides_as_it_does() {
    let upstream = hospital();
    let gw = TestGateway::new()
        .site_with(
            "north-general",
            json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": "opt-in"}),
        )
        .start();
    let mut grant = consent("ng-p001-alice", "p1", "dr-alice", true);
    // Treatment only.
    grant["provision"]["provision"][0]["purpose"] = json!([
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}
    ]);
    assert_eq!(put_consent(&gw, "north-general", &grant).await.status, 201);
    let parameters = |pairs: &[(&str, Value)]| {
        json!({"resourceType": "Parameters", "parameter": pairs.iter().map(|(name, value)| {
            let mut p = json!({"name": name});
            p.as_object_mut().unwrap().extend(value.as_object().unwrap().clone());
            p
        }).collect::<Vec<_>>()})
    };
    let check = |body: Value| {
        let url = gw.url("/consent/$check");
        async move {
            send(
                "POST",
                &url,
                Some(admin_token()),
                &[("content-type", "application/fhir+json")],
                Some(body.to_string().into_bytes()),
            )
            .await
        }
    };
    let get = |answer: &Value, name: &str| -> Value {
        answer["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let valid = [
        ("site", json!({"valueString": "north-general"})),
        (
            "patient",
            json!({"valueReference": {"reference": "Patient/p1"}}),
        ),
        (
            "actor",
            json!({"valueReference": {"reference": "Practitioner/dr-alice"}}),
        ),
        (
            "purpose",
            json!({"valueCoding": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}}),
        ),
        ("resourceType", json!({"valueCode": "Observation"})),
    ];
    let got = check(parameters(&valid)).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(
        got.header("content-type")
            .unwrap()
            .starts_with("application/fhir+json")
    );
    let answer = got.json();
    assert_eq!(answer["resourceType"], "Parameters");
    assert_eq!(get(&answer, "decision")["valueCode"], "permit");
    assert_eq!(
        get(&answer, "explanation")["valueString"],
        "Consent ng-p001-alice v1 permits Practitioner/dr-alice to read Observation records for treatment."
    );
    let provision = get(&answer, "provision");
    let part = |name: &str| {
        provision["part"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        part("consent")["valueReference"]["reference"],
        "Consent/ng-p001-alice"
    );
    assert_eq!(part("version")["valueString"], "1");
    assert_eq!(
        part("path")["valueString"],
        "Consent.provision.provision[0]"
    );
    assert_eq!(part("type")["valueCode"], "permit");
    assert!(
        get(&answer, "basis")["valueString"]
            .as_str()
            .unwrap()
            .starts_with("consent:ng-p001-alice@1:")
    );

    // Input a real request could not carry is refused, naming the parameter and the value.
    let with = |name: &str, value: Value| {
        let mut pairs: Vec<(&str, Value)> =
            valid.iter().filter(|(n, _)| *n != name).cloned().collect();
        pairs.push((name, value));
        parameters(&pairs)
    };
    let refused = [
        (
            with("purpose", json!({"valueCode": "TRET"})),
            ["purpose", "TRET"],
        ),
        (
            with("resourceType", json!({"valueCode": "Observaton"})),
            ["resourceType", "Observaton"],
        ),
        (
            with("actor", json!({"valueString": "dr-alice"})),
            ["actor", "dr-alice"],
        ),
        (
            with("actor", json!({"valueString": "Practioner/dr-alice"})),
            ["actor", "Practioner/dr-alice"],
        ),
        (
            with("interaction", json!({"valueCode": "delete"})),
            ["interaction", "delete"],
        ),
        (
            with("purposeOfUse", json!({"valueCode": "TREAT"})),
            ["purposeOfUse", "purposeOfUse"],
        ),
        (
            parameters(&[valid[0].clone(), valid[1].clone(), valid[1].clone()]),
            ["patient", "twice"],
        ),
    ];
    for (body, [name, value]) in refused {
        let got = check(body).await;
        assert_eq!(
            (got.status, got.error_code().as_str()),
            (400, "malformed-request"),
            "{name}: {}",
            got.text()
        );
        let diagnostics = got.json()["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            diagnostics.contains(&format!("`{name}`")) && diagnostics.contains(value),
            "{diagnostics}"
        );
    }
    // The JSON form is checked the same way, and answered in JSON.
    let got = send(
        "POST",
        &gw.url("/consent/$check"),
        Some(admin_token()),
        &[("content-type", "application/json")],
        Some(
            json!({"site": "north-general", "patient": "p1", "actor": "dr-alice"})
                .to_string()
                .into_bytes(),
        ),
    )
    .await;
    assert_eq!(got.status, 400, "{}", got.text());
    assert!(got.text().contains("dr-alice"));

    // $check decides as the proxy does: for each caller and purpose, the same verdict.
    for (who, actor, purpose) in [
        ("dr-alice", "Practitioner/dr-alice", "TREAT"),
        ("dr-alice", "Practitioner/dr-alice", "HPAYMT"),
        ("dr-alice", "Practitioner/dr-alice", "ETREAT"),
        ("dr-bob", "Practitioner/dr-bob", "TREAT"),
        ("nurse-carol", "PractitionerRole/nurse-carol", "TREAT"),
    ] {
        let caller = token(who, Some("openid fhirUser user/*.rs"), Some(purpose), None);
        let proxied = send(
            "GET",
            &gw.url("/fhir/north-general/Observation?patient=p1"),
            Some(&caller),
            &[],
            None,
        )
        .await;
        assert!(
            [200, 403].contains(&proxied.status),
            "{who} {purpose}: {}",
            proxied.text()
        );
        let got = check(parameters(&[
            valid[0].clone(),
            valid[1].clone(),
            ("actor", json!({"valueString": actor})),
            ("purpose", json!({"valueCode": purpose})),
            ("resourceType", json!({"valueCode": "Observation"})),
            ("interaction", json!({"valueCode": "search"})),
        ]))
        .await;
        assert_eq!(got.status, 200, "{}", got.text());
        let verdict = get(&got.json(), "decision")["valueCode"].clone();
        assert_eq!(
            verdict,
            if proxied.status == 200 {
                "permit"
            } else {
                "deny"
            },
            "{who} {purpose}: $check and the proxy disagree"
        );
    }
}

/// A denied proxied caller learns that it is denied and why, in a fixed sentence: nothing of
/// any consent (id, version, provision) and no patient but the one it asked for; a consent's
/// refusal reads exactly as the opt-in default's does. The receipt keeps the basis.
#[actix_web::test]
async fn a_denied_caller_learns_why_without_any_consent_content() {
    let upstream = hospital();
    let gw = TestGateway::new()
        .site_with(
            "north-general",
            json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": "opt-in"}),
        )
        .site_with(
            "st-mary",
            json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": "opt-out"}),
        )
        .start();
    // p2 refuses dr-bob at St Mary (opt-out); p3 has consents about others at North General.
    for (site, body) in [
        (
            "st-mary",
            consent("secret-refusal-7", "p2", "dr-bob", false),
        ),
        (
            "north-general",
            consent("other-grant-9", "p3", "nurse-carol", true),
        ),
    ] {
        assert_eq!(put_consent(&gw, site, &body).await.status, 201);
    }
    let bob = other_clinician_token();
    let emergency = token(
        "dr-bob",
        Some("openid fhirUser user/*.rs assent/break-glass"),
        Some("ETREAT"),
        None,
    );
    let refusal = ConsentRelied::Consent {
        id: "secret-refusal-7".into(),
        version: "1".into(),
    };
    let cases: [(&str, &str, &str, ConsentRelied); 5] = [
        (
            "a consent's refusal",
            "/fhir/st-mary/Patient/p2",
            bob,
            refusal.clone(),
        ),
        (
            "a search",
            "/fhir/st-mary/Observation?patient=p2",
            bob,
            refusal.clone(),
        ),
        (
            "another's grant (its root refuses everyone else)",
            "/fhir/north-general/Patient/p3",
            bob,
            ConsentRelied::Consent {
                id: "other-grant-9".into(),
                version: "1".into(),
            },
        ),
        (
            "the opt-in default",
            "/fhir/north-general/Patient/p1",
            bob,
            ConsentRelied::SiteDefault("opt-in".into()),
        ),
        (
            "break-glass without a justification",
            "/fhir/st-mary/Patient/p2",
            &emergency,
            refusal,
        ),
    ];
    let mut sentences = Vec::new();
    for (name, path, caller, relied) in cases {
        let got = send("GET", &gw.url(path), Some(caller), &[], None).await;
        assert_eq!(got.status, 403, "{name}: {}", got.text());
        // The body and every header.
        let text = format!("{} {:?}", got.text(), got.headers);
        for secret in [
            "secret-refusal-7",
            "other-grant-9",
            "provision",
            "Consent.",
            "consent:",
            "@1",
            "site-default",
            "nurse-carol",
            "dr-bob",
        ] {
            assert!(
                !text.contains(secret),
                "{name}: the denial reveals `{secret}`: {text}"
            );
        }
        let patients: Vec<&str> = ["p1", "p2", "p3"]
            .into_iter()
            .filter(|p| text.contains(p))
            .collect();
        assert!(
            patients.iter().all(|p| path.contains(p)),
            "{name}: another patient named: {text}"
        );
        let diagnostics = got.json()["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            diagnostics.starts_with("access denied: "),
            "{name}: {diagnostics}"
        );
        sentences.push((got.error_code(), diagnostics));
        // The receipt keeps what the denial does not say.
        let id = got.header("x-assent-receipt").unwrap();
        let row = gw.gateway.state.store.receipt(id).unwrap().unwrap();
        let receipt = Receipt::from_canonical_bytes(&row.body).unwrap();
        assert_eq!(receipt.consent, relied, "{name}");
    }
    // A consent's refusal and the opt-in default read alike: the answer does not tell that a
    // consent names the caller.
    assert_eq!(sentences[0], sentences[2]);
    assert_eq!(sentences[0], sentences[3]);
    assert_eq!(sentences[0].0, "consent-denied");
    assert_eq!(sentences[4].0, "break-glass-justification-required");
    assert!(
        sentences[4].1.contains("X-Assent-Break-Glass-Reason"),
        "{:?}",
        sentences[4]
    );
}

/// The accounting of disclosures in words for a patient: a plain read names the record and
/// what kind it is, never the version the site held; break-glass says it overrode a refusal,
/// never that the default rule permitted it.
#[actix_web::test]
async fn disclosures_are_worded_for_a_patient() {
    // A site that answers with a version, as real FHIR servers do.
    let upstream = FakeUpstream::start(|req, _| {
        let id = req.path.rsplit('/').next().unwrap_or_default().to_owned();
        FakeResponse::json(
            200,
            json!({"resourceType": "Patient", "id": id, "meta": {"versionId": "1"}}),
        )
    });
    let gw = TestGateway::new()
        .site_with(
            "north-general",
            json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": "opt-in"}),
        )
        .start();
    assert_eq!(
        put_consent(
            &gw,
            "north-general",
            &consent("c-p1", "p1", "dr-alice", true)
        )
        .await
        .status,
        201
    );
    let read = send(
        "GET",
        &gw.url("/fhir/north-general/Patient/p1"),
        Some(clinician_token()),
        &[],
        None,
    )
    .await;
    assert_eq!(read.status, 200, "{}", read.text());
    let emergency = token(
        "dr-bob",
        Some("openid fhirUser user/*.rs assent/break-glass"),
        Some("ETREAT"),
        None,
    );
    // p2 has no consent: the opt-in default refuses, break-glass overrides it.
    let glass = send(
        "GET",
        &gw.url("/fhir/north-general/Patient/p2"),
        Some(&emergency),
        &[("x-assent-break-glass-reason", "unconscious in ER")],
        None,
    )
    .await;
    assert_eq!(glass.status, 200, "{}", glass.text());

    let officer = token(
        "privacy-officer",
        Some("openid user/AuditEvent.rs"),
        None,
        None,
    );
    let disclosures = |patient: &str, format: &str| {
        let url = gw.url(&format!(
            "/audit/patient/{patient}/disclosures?site=north-general{format}"
        ));
        let officer = officer.clone();
        async move { send("GET", &url, Some(&officer), &[], None).await }
    };
    let reads_of = |report: &Value| -> Vec<Value> {
        report["disclosures"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["what"].as_str().unwrap().starts_with("read Patient/"))
            .cloned()
            .collect()
    };
    let p1 = disclosures("p1", "").await;
    assert_eq!(p1.status, 200, "{}", p1.text());
    let reads = reads_of(&p1.json());
    assert_eq!(reads.len(), 1, "{}", p1.text());
    assert_eq!(
        reads[0]["what"], "read Patient/p1 (the patient's personal details)",
        "a plain read names the record, not `_history/1`"
    );
    assert_eq!(reads[0]["basis"], "consent c-p1, version 1");
    assert_eq!(reads[0]["decision"], "permitted");

    let reads = reads_of(&disclosures("p2", "").await.json());
    assert_eq!(reads.len(), 1);
    assert_eq!(
        reads[0]["what"],
        "read Patient/p2 (the patient's personal details)"
    );
    assert!(reads[0]["emergency"].is_string());
    let basis = reads[0]["basis"].as_str().unwrap();
    assert!(
        basis.starts_with(
            "emergency access (break-glass), overriding a refusal by the site's default rule (opt-in"
        ),
        "{basis}"
    );
    for patient in ["p1", "p2"] {
        let text = disclosures(patient, "&_format=text").await.text();
        assert!(!text.contains("_history"), "{text}");
        assert!(
            !text.contains("permitted under the site's default"),
            "{text}"
        );
    }
    let text = disclosures("p2", "&_format=text").await.text();
    let line = text
        .lines()
        .find(|l| l.contains("read Patient/p2"))
        .expect("the break-glass read");
    assert!(
        line.contains("permitted by emergency access (break-glass), overriding a refusal"),
        "{line}"
    );
}
