//! Consent end to end: consents stored through `/consent` on the embedded ledger decide
//! reads and searches at opt-in and opt-out sites; searches are filtered patient by patient;
//! a revocation takes effect at once; `$check` explains; bad Consents are refused naming the
//! element; and everything runs on SQLite and PostgreSQL.

use assent_e2e::*;
use assent_gateway::store::testing;
use serde_json::{Value, json};

/// A consent of `patient` (R4 form): deny by default, permit for `practitioner` (or, with
/// `deny_for`, the reverse: permit by default, deny for that practitioner).
pub(crate) fn consent(
    id: &str,
    patient: &str,
    practitioner: &str,
    permit_for_practitioner: bool,
) -> Value {
    let (root, nested) = if permit_for_practitioner {
        ("deny", "permit")
    } else {
        ("permit", "deny")
    };
    json!({
        "resourceType": "Consent", "id": id, "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{patient}")},
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": {"type": root, "provision": [{
            "type": nested,
            "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]},
                       "reference": {"reference": format!("Practitioner/{practitioner}")}}]
        }]}
    })
}

/// A FAKE upstream with patients p1..p3 and one Observation each; searches ignore their
/// parameters, so the gateway's filtering shows.
pub(crate) fn hospital() -> FakeUpstream {
    FakeUpstream::start(|req, base| {
        let patients = ["p1", "p2", "p3"];
        let observation = |p: &str| json!({"resourceType": "Observation", "id": format!("o-{p}"), "subject": {"reference": format!("Patient/{p}")}});
        let path = req.path.trim_start_matches("/fhir/");
        let segments: Vec<&str> = path.split('/').collect();
        match segments.as_slice() {
            ["Patient", id] => {
                FakeResponse::json(200, json!({"resourceType": "Patient", "id": id}))
            }
            ["Observation", id] => {
                let p = id.trim_start_matches("o-");
                FakeResponse::json(200, observation(p))
            }
            ["Observation"] => {
                let entries: Vec<Value> = patients
                    .iter()
                    .map(|p| json!({"fullUrl": format!("{base}/Observation/o-{p}"), "resource": observation(p), "search": {"mode": "match"}}))
                    .collect();
                FakeResponse::json(
                    200,
                    json!({"resourceType": "Bundle", "type": "searchset", "total": 3, "entry": entries}),
                )
            }
            _ => FakeResponse::json(404, json!({"resourceType": "OperationOutcome"})),
        }
    })
}

pub(crate) async fn put_consent(gw: &StartedGateway, site: &str, body: &Value) -> Got {
    send(
        "POST",
        &gw.url(&format!("/consent/Consent?site={site}")),
        Some(admin_token()),
        &[("content-type", "application/fhir+json; fhirVersion=4.0")],
        Some(body.to_string().into_bytes()),
    )
    .await
}

#[actix_web::test]
async fn consents_decide_reads_and_searches_and_revocation_takes_effect_at_once() {
    let upstream = hospital();
    for store in testing::all() {
        let gw = TestGateway::new()
            .database(&store.url)
            .site_with("north-general", json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": "opt-in"}))
            .site_with("st-mary", json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": "opt-out"}))
            .start();
        let alice = clinician_token(); // Practitioner/dr-alice
        let bob = other_clinician_token(); // Practitioner/dr-bob
        let read = |path: &str, token: &'static str| {
            let url = gw.url(path);
            async move { send("GET", &url, Some(token), &[], None).await }
        };

        // Opt-in: nothing without a consent.
        let denied = read("/fhir/north-general/Patient/p1", alice).await;
        assert_eq!(
            (denied.status, denied.error_code().as_str()),
            (403, "consent-denied")
        );

        // p1 consents to dr-alice at North General; p2 refuses dr-bob at St Mary.
        let created = put_consent(
            &gw,
            "north-general",
            &consent("c-p1", "p1", "dr-alice", true),
        )
        .await;
        assert_eq!(created.status, 201, "{}", created.text());
        assert_eq!(created.header("etag"), Some("W/\"1\""));
        assert!(created.header("x-assent-ledger-tx").is_some());
        assert_eq!(
            put_consent(&gw, "st-mary", &consent("c-p2", "p2", "dr-bob", false))
                .await
                .status,
            201
        );

        let permitted = read("/fhir/north-general/Patient/p1", alice).await;
        assert_eq!(permitted.status, 200, "{}", permitted.text());
        assert!(
            permitted
                .header("x-assent-consent")
                .unwrap()
                .starts_with("consent:c-p1@1:")
        );
        let other = read("/fhir/north-general/Patient/p1", bob).await;
        assert_eq!(
            (other.status, other.error_code().as_str()),
            (403, "consent-denied")
        );

        // A read by id whose patient only the answer names is decided on the answer.
        assert_eq!(
            read("/fhir/north-general/Observation/o-p1", alice)
                .await
                .status,
            200
        );
        // Denied on its content, a read that named no patient is answered as a record the
        // site does not have: the answer does not tell that it exists.
        let denied = read("/fhir/north-general/Observation/o-p2", alice).await;
        assert_eq!(
            (denied.status, denied.error_code().as_str()),
            (404, "resource-not-found")
        );

        // A search across patients keeps only what each patient's consents allow.
        let search = read("/fhir/north-general/Observation?code=x", alice).await;
        assert_eq!(search.status, 200, "{}", search.text());
        let bundle = search.json();
        let ids: Vec<&str> = bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["resource"]["id"].as_str())
            .collect();
        let matched: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|i| i.starts_with("o-"))
            .collect();
        assert_eq!(matched, ["o-p1"]);
        assert_eq!(
            bundle["total"], 1,
            "one complete page: the total counts only what was released"
        );
        let outcome = bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["search"]["mode"] == "outcome");
        assert!(
            outcome.is_none(),
            "a search that names no patient says nothing of what was withheld"
        );
        assert!(!search.text().contains("o-p2") && !search.text().contains("o-p3"));

        // Opt-out: permitted unless a consent denies.
        assert_eq!(read("/fhir/st-mary/Patient/p2", alice).await.status, 200);
        assert_eq!(
            read("/fhir/st-mary/Patient/p2", bob).await.error_code(),
            "consent-denied"
        );
        let st_search = read("/fhir/st-mary/Observation?code=x", bob).await.json();
        let n_matches = st_search["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["search"]["mode"] == "match")
            .count();
        assert_eq!(n_matches, 2, "p1 and p3 remain for dr-bob at St Mary");

        // $check explains without forwarding anything.
        let check = send(
            "POST",
            &gw.url("/consent/$check"),
            Some(admin_token()),
            &[("content-type", "application/json")],
            Some(json!({"site": "north-general", "patient": "Patient/p1", "actor": "Practitioner/dr-alice", "resourceType": "Observation"}).to_string().into_bytes()),
        )
        .await;
        assert_eq!(check.status, 200, "{}", check.text());
        assert_eq!(check.json()["decision"], "permit");
        assert!(
            check.json()["basis"]
                .as_str()
                .unwrap()
                .starts_with("consent:c-p1@1")
        );

        // Revocation: the very next request is denied.
        let revoked = send(
            "POST",
            &gw.url("/consent/Consent/c-p1/$revoke"),
            Some(admin_token()),
            &[("content-type", "application/json")],
            Some(br#"{"reason": "patient-request"}"#.to_vec()),
        )
        .await;
        assert_eq!(revoked.status, 200, "{}", revoked.text());
        assert_eq!(
            read("/fhir/north-general/Patient/p1", alice)
                .await
                .error_code(),
            "consent-denied"
        );

        let history = send(
            "GET",
            &gw.url("/consent/Consent/c-p1/_history"),
            Some(admin_token()),
            &[],
            None,
        )
        .await;
        assert_eq!(history.status, 200);
        let history = history.json();
        let versions: Vec<&str> = history["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["meta"]["versionId"].as_str().unwrap())
            .collect();
        assert_eq!(versions, ["2", "1"]);
        let listed = send(
            "GET",
            &gw.url("/consent/Consent?site=north-general&patient=p1"),
            Some(admin_token()),
            &[],
            None,
        )
        .await;
        assert_eq!(listed.json()["entry"][0]["resource"]["status"], "inactive");
    }
}

#[actix_web::test]
async fn bad_consents_and_callers_are_refused() {
    let upstream = hospital();
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let mut no_patient = consent("c1", "p1", "dr-alice", true);
    no_patient.as_object_mut().unwrap().remove("patient");
    let got = put_consent(&gw, "st-mary", &no_patient).await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (422, "invalid-resource"),
        "{}",
        got.text()
    );
    assert_eq!(got.json()["issue"][0]["expression"][0], "Consent.patient");

    let mut bad_status = consent("c1", "p1", "dr-alice", true);
    bad_status["status"] = json!("sort-of");
    let got = put_consent(&gw, "st-mary", &bad_status).await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (422, "invalid-resource"),
        "{}",
        got.text()
    );
    assert!(
        got.json()["issue"][0]["expression"][0]
            .as_str()
            .unwrap()
            .starts_with("Consent.status")
    );

    let got = put_consent(&gw, "nowhere", &consent("c1", "p1", "dr-alice", true)).await;
    assert_eq!(got.error_code(), "unknown-site");
    let got = send(
        "POST",
        &gw.url("/consent/Consent?site=st-mary"),
        Some(admin_token()),
        &[],
        Some(b"{not json".to_vec()),
    )
    .await;
    assert_eq!(got.error_code(), "malformed-request");
    let got = send(
        "POST",
        &gw.url("/consent/Consent?site=st-mary"),
        Some(admin_token()),
        &[],
        Some(vec![b' '; 300 * 1024]),
    )
    .await;
    assert_eq!(got.error_code(), "body-too-large");
    // A clinician with read scopes may not write consents.
    let got = send(
        "POST",
        &gw.url("/consent/Consent?site=st-mary"),
        Some(clinician_token()),
        &[],
        Some(
            consent("c1", "p1", "dr-alice", true)
                .to_string()
                .into_bytes(),
        ),
    )
    .await;
    assert_eq!(got.error_code(), "forbidden");
    let got = send(
        "POST",
        &gw.url("/consent/Consent/none/$revoke"),
        Some(admin_token()),
        &[],
        None,
    )
    .await;
    assert_eq!(got.status, 404, "{}", got.text());
}
