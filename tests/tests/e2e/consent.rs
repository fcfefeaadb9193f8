//! Consent end to end: consents stored through `/consent` on the embedded ledger decide
//! reads and searches at opt-in and opt-out sites; searches are filtered patient by patient;
//! a revocation takes effect at once; `$check` explains; bad Consents are refused naming the
//! element; the consent API authorizes by who is asking (a patient launch context, the
//! consent-administrator role, no grant to oneself: table-driven, every call receipted);
//! and everything runs on SQLite and PostgreSQL.

use assent_e2e::*;
use assent_gateway::store::testing;
use assent_receipts::{AccessDecision, AccessKind, ConsentAction, Receipt};
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

/// Stores `body` under its own id (`PUT /consent/Consent/{id}`): 201 when new, 200 for a
/// new version.
pub(crate) async fn put_consent(gw: &StartedGateway, site: &str, body: &Value) -> Got {
    let id = body["id"].as_str().expect("a consent with an id");
    send(
        "PUT",
        &gw.url(&format!("/consent/Consent/{id}?site={site}")),
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
    // A clinician without the consent-administrator role may not write consents.
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
    assert_eq!(got.error_code(), "consent-admin-required");
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

/// A consent of `patient` whose nested provision names `actor` (any reference): `permit`
/// the actor over a root deny, or deny it under a root permit.
fn consent_for(id: &str, patient: &str, actor: &str, permit: bool) -> Value {
    let mut c = consent(id, patient, "placeholder", permit);
    c["provision"]["provision"][0]["actor"][0]["reference"]["reference"] = json!(actor);
    c
}

/// One attempt on the consent API: who, what, and what must come back.
struct Attempt {
    name: &'static str,
    method: &'static str,
    path: String,
    token: String,
    body: Option<Value>,
    status: u16,
    code: &'static str,
    kind: AccessKind,
    /// The patients the receipt must name (`{site}/Patient/{id}`).
    patients: &'static [&'static str],
}

async fn attempt(gw: &StartedGateway, a: &Attempt) -> Got {
    let content_type = [("content-type", "application/fhir+json; fhirVersion=4.0")];
    send(
        a.method,
        &gw.url(&a.path),
        Some(&a.token),
        if a.body.is_some() { &content_type } else { &[] },
        a.body.as_ref().map(|b| b.to_string().into_bytes()),
    )
    .await
}

/// Class 1 of issue 11: the consent API authorizes by who is asking. Every attempt an attacker
/// would make is refused with its stable code and leaves a denied receipt naming the patient
/// it aimed at; the legitimate forms work; and nothing the refused attempts aimed at changed.
#[actix_web::test]
async fn the_consent_api_authorizes_by_who_is_asking() {
    use AccessKind::Consent as C;
    use ConsentAction::*;
    let upstream = hospital();
    for store in testing::all() {
        let gw = TestGateway::new()
            .database(&store.url)
            // Nobody is an issuer admin here: the role comes from `ledger.consent_admins`
            // or the issuer's consent-administrator scope.
            .issuer_setting("admin_subjects", json!([]))
            .set(
                "ledger",
                json!({"consent_admins": [caller_id("privacy-officer")]}),
            )
            .site_with("north-general", json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": "opt-in"}))
            .site_with("st-mary", json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": "opt-out"}))
            .start();
        // The role: listed (a privacy officer), or by scope (dr-bob, a practitioner).
        let officer = token("privacy-officer", Some("openid fhirUser"), None, None);
        let scoped_admin = token(
            "dr-bob",
            Some("openid fhirUser user/*.rs assent/consent-admin"),
            None,
            None,
        );
        // A patient's app for p1 (no actor), with and without write scopes.
        let p1_app = token(
            "billing-service",
            Some("openid launch/patient patient/Consent.cruds"),
            None,
            Some(PatientLaunch::at("st-mary", "p1")),
        );
        let p1_reader = token(
            "billing-service",
            Some("openid launch/patient patient/Consent.rs"),
            None,
            Some(PatientLaunch::at("st-mary", "p1")),
        );
        // dr-alice launched from an EHR with p1 in context.
        let ehr_alice = token(
            "dr-alice",
            Some("openid fhirUser launch/patient patient/Consent.cruds user/*.rs"),
            None,
            Some(PatientLaunch::at("st-mary", "p1")),
        );
        // Scopes without a context or a role.
        let user_scoped = token(
            "dr-alice",
            Some("openid fhirUser user/Consent.cruds"),
            None,
            None,
        );
        let system_scoped = token("billing-service", Some("system/Consent.cruds"), None, None);
        let patient_scoped = token("billing-service", Some("patient/Consent.cruds"), None, None);
        let wildcard = token("dr-alice", Some("openid user/*.* assent/*"), None, None);

        // p2 at St Mary (opt-out) refuses dr-bob; p3 at North General (opt-in) permits
        // dr-alice. Recorded by the privacy officer.
        let setup = [
            ("st-mary", consent("c-p2", "p2", "dr-bob", false)),
            ("north-general", consent("c-p3", "p3", "dr-alice", true)),
        ];
        for (site, body) in &setup {
            let got = send(
                "PUT",
                &gw.url(&format!(
                    "/consent/Consent/{}?site={site}",
                    body["id"].as_str().unwrap()
                )),
                Some(&officer),
                &[("content-type", "application/fhir+json; fhirVersion=4.0")],
                Some(body.to_string().into_bytes()),
            )
            .await;
            assert_eq!(got.status, 201, "{}", got.text());
        }

        let put = |site: &str, id: &str| format!("/consent/Consent/{id}?site={site}");
        let check = |site: &str, patient: &str| json!({"site": site, "patient": patient});
        let refused =
            |name, method, path: String, token: &String, body, code, kind, patients| Attempt {
                name,
                method,
                path,
                token: token.clone(),
                body,
                status: 403,
                code,
                kind,
                patients,
            };
        let attempts = vec![
            // A patient launch context names another patient.
            refused(
                "patient app creates a consent for another patient",
                "PUT",
                put("st-mary", "c-x1"),
                &p1_app,
                Some(consent("c-x1", "p2", "dr-alice", true)),
                "consent-patient-mismatch",
                C(Create),
                &["st-mary/Patient/p2"],
            ),
            refused(
                "patient app revokes another patient's opt-out",
                "POST",
                "/consent/Consent/c-p2/$revoke".into(),
                &p1_app,
                None,
                "consent-patient-mismatch",
                C(Revoke),
                &["st-mary/Patient/p2"],
            ),
            refused(
                "patient app lists another patient's consents",
                "GET",
                "/consent/Consent?site=st-mary&patient=p2".into(),
                &p1_app,
                None,
                "consent-patient-mismatch",
                C(Search),
                &["st-mary/Patient/p2"],
            ),
            refused(
                "... named as Patient/p2",
                "GET",
                "/consent/Consent?site=st-mary&patient=Patient/p2".into(),
                &p1_app,
                None,
                "consent-patient-mismatch",
                C(Search),
                &["st-mary/Patient/p2"],
            ),
            refused(
                "... at another site",
                "GET",
                "/consent/Consent?site=north-general&patient=p3".into(),
                &p1_app,
                None,
                "consent-patient-mismatch",
                C(Search),
                &["north-general/Patient/p3"],
            ),
            refused(
                "patient app runs $check for another patient",
                "POST",
                "/consent/$check".into(),
                &p1_app,
                Some(check("st-mary", "Patient/p2")),
                "consent-patient-mismatch",
                C(Check),
                &["st-mary/Patient/p2"],
            ),
            refused(
                "patient app reads another patient's consent history",
                "GET",
                "/consent/Consent/c-p2/_history".into(),
                &p1_app,
                None,
                "consent-patient-mismatch",
                C(History),
                &["st-mary/Patient/p2"],
            ),
            refused(
                "patient app writes a version of another patient's consent",
                "PUT",
                put("st-mary", "c-p2"),
                &p1_app,
                Some(consent("c-p2", "p2", "dr-alice", false)),
                "consent-patient-mismatch",
                C(Update),
                &["st-mary/Patient/p2"],
            ),
            refused(
                "patient app moves another patient's consent to its own",
                "PUT",
                put("st-mary", "c-p2"),
                &p1_app,
                Some(consent("c-p2", "p1", "dr-alice", false)),
                "consent-patient-mismatch",
                C(Update),
                &["st-mary/Patient/p1", "st-mary/Patient/p2"],
            ),
            refused(
                "an EHR launch names another patient",
                "GET",
                "/consent/Consent?site=st-mary&patient=p2".into(),
                &ehr_alice,
                None,
                "consent-patient-mismatch",
                C(Search),
                &["st-mary/Patient/p2"],
            ),
            refused(
                "read-only scopes of the context create",
                "PUT",
                put("st-mary", "c-x2"),
                &p1_reader,
                Some(consent("c-x2", "p1", "dr-bob", true)),
                "scope-insufficient",
                C(Create),
                &[],
            ),
            // Scopes alone, without a context or the role.
            refused(
                "user/Consent.* lists a patient's consents",
                "GET",
                "/consent/Consent?site=st-mary&patient=p2".into(),
                &user_scoped,
                None,
                "consent-admin-required",
                C(Search),
                &[],
            ),
            refused(
                "user/Consent.* creates a consent",
                "PUT",
                put("st-mary", "c-x3"),
                &user_scoped,
                Some(consent("c-x3", "p2", "dr-bob", true)),
                "consent-admin-required",
                C(Create),
                &[],
            ),
            refused(
                "system/Consent.* creates a consent",
                "PUT",
                put("st-mary", "c-x4"),
                &system_scoped,
                Some(consent("c-x4", "p2", "dr-bob", true)),
                "consent-admin-required",
                C(Create),
                &[],
            ),
            refused(
                "patient/Consent.* without a context revokes",
                "POST",
                "/consent/Consent/c-p2/$revoke".into(),
                &patient_scoped,
                None,
                "consent-admin-required",
                C(Revoke),
                &[],
            ),
            refused(
                "a wildcard is no role",
                "POST",
                "/consent/$check".into(),
                &wildcard,
                Some(check("st-mary", "p2")),
                "consent-admin-required",
                C(Check),
                &[],
            ),
            refused(
                "user/Consent.* reads a history",
                "GET",
                "/consent/Consent/c-p2/_history".into(),
                &user_scoped,
                None,
                "consent-admin-required",
                C(History),
                &[],
            ),
            // Nobody grants themselves.
            refused(
                "a practitioner with the role grants itself",
                "PUT",
                put("north-general", "c-x5"),
                &scoped_admin,
                Some(consent("c-x5", "p3", "dr-bob", true)),
                "consent-self-grant",
                C(Create),
                &["north-general/Patient/p3"],
            ),
            refused(
                "... by an absolute reference",
                "PUT",
                put("north-general", "c-x6"),
                &scoped_admin,
                Some(consent_for(
                    "c-x6",
                    "p3",
                    "https://fhir.example.org/Practitioner/dr-bob",
                    true,
                )),
                "consent-self-grant",
                C(Create),
                &["north-general/Patient/p3"],
            ),
            refused(
                "... or its organization",
                "PUT",
                put("north-general", "c-x7"),
                &scoped_admin,
                Some(consent_for("c-x7", "p3", "Organization/city-clinic", true)),
                "consent-self-grant",
                C(Create),
                &["north-general/Patient/p3"],
            ),
            refused(
                "a practitioner with the role revokes its own refusal",
                "POST",
                "/consent/Consent/c-p2/$revoke".into(),
                &scoped_admin,
                None,
                "consent-self-grant",
                C(Revoke),
                &["st-mary/Patient/p2"],
            ),
            refused(
                "... or edits it away",
                "PUT",
                put("st-mary", "c-p2"),
                &scoped_admin,
                Some(consent("c-p2", "p2", "dr-alice", false)),
                "consent-self-grant",
                C(Update),
                &["st-mary/Patient/p2"],
            ),
            refused(
                "an EHR launch grants the practitioner itself",
                "PUT",
                put("st-mary", "c-x8"),
                &ehr_alice,
                Some(consent("c-x8", "p1", "dr-alice", true)),
                "consent-self-grant",
                C(Create),
                &["st-mary/Patient/p1"],
            ),
        ];
        let ok =
            |name, method, path: String, token: &String, body, status, kind, patients| Attempt {
                name,
                method,
                path,
                token: token.clone(),
                body,
                status,
                code: "",
                kind,
                patients,
            };
        let legitimate = vec![
            ok(
                "patient app records its own consent",
                "PUT",
                put("st-mary", "c-p1"),
                &p1_app,
                Some(consent("c-p1", "p1", "dr-bob", true)),
                201,
                C(Create),
                &["st-mary/Patient/p1"],
            ),
            ok(
                "patient app lists its consents",
                "GET",
                "/consent/Consent?site=st-mary&patient=p1".into(),
                &p1_app,
                None,
                200,
                C(Search),
                &["st-mary/Patient/p1"],
            ),
            ok(
                "read-only scopes list them too",
                "GET",
                "/consent/Consent?site=st-mary&patient=Patient/p1".into(),
                &p1_reader,
                None,
                200,
                C(Search),
                &["st-mary/Patient/p1"],
            ),
            ok(
                "patient app reads its consent's history",
                "GET",
                "/consent/Consent/c-p1/_history".into(),
                &p1_app,
                None,
                200,
                C(History),
                &["st-mary/Patient/p1"],
            ),
            ok(
                "patient app runs $check for itself",
                "POST",
                "/consent/$check".into(),
                &p1_app,
                Some(check("st-mary", "p1")),
                200,
                C(Check),
                &["st-mary/Patient/p1"],
            ),
            ok(
                "patient app changes its consent",
                "PUT",
                put("st-mary", "c-p1"),
                &p1_app,
                Some(consent("c-p1", "p1", "dr-alice", true)),
                200,
                C(Update),
                &["st-mary/Patient/p1"],
            ),
            ok(
                "patient app revokes its consent",
                "POST",
                "/consent/Consent/c-p1/$revoke".into(),
                &p1_app,
                None,
                200,
                C(Revoke),
                &["st-mary/Patient/p1"],
            ),
            ok(
                "an EHR launch records a refusal of another practitioner",
                "PUT",
                put("st-mary", "c-p1b"),
                &ehr_alice,
                Some(consent("c-p1b", "p1", "dr-bob", false)),
                201,
                C(Create),
                &["st-mary/Patient/p1"],
            ),
            ok(
                "the listed role lists any patient",
                "GET",
                "/consent/Consent?site=st-mary&patient=p2".into(),
                &officer,
                None,
                200,
                C(Search),
                &["st-mary/Patient/p2"],
            ),
            ok(
                "the role by scope records another's grant",
                "PUT",
                put("north-general", "c-p3b"),
                &scoped_admin,
                Some(consent("c-p3b", "p3", "nurse-carol", true)),
                201,
                C(Create),
                &["north-general/Patient/p3"],
            ),
            ok(
                "the role by scope checks any patient",
                "POST",
                "/consent/$check".into(),
                &scoped_admin,
                Some(check("north-general", "p3")),
                200,
                C(Check),
                &["north-general/Patient/p3"],
            ),
            ok(
                "the listed role revokes",
                "POST",
                "/consent/Consent/c-p3b/$revoke".into(),
                &officer,
                None,
                200,
                C(Revoke),
                &["north-general/Patient/p3"],
            ),
        ];
        let key = gw.gateway.state.consents.key();
        let mut n_calls = setup.len();
        for a in attempts.iter().chain(&legitimate) {
            let got = attempt(&gw, a).await;
            n_calls += 1;
            assert_eq!(got.status, a.status, "{}: {}", a.name, got.text());
            if !a.code.is_empty() {
                assert_eq!(got.error_code(), a.code, "{}", a.name);
            }
            // Its receipt: durable, named in the answer, of its kind, deny for a refusal,
            // naming the patient it aimed at.
            let id = got
                .header("x-assent-receipt")
                .unwrap_or_else(|| panic!("{}: no receipt", a.name));
            let row = gw.gateway.state.store.receipt(id).unwrap().unwrap();
            let receipt = Receipt::from_canonical_bytes(&row.body).unwrap();
            assert_eq!(receipt.kind, a.kind, "{}", a.name);
            assert_eq!(receipt.status, a.status, "{}", a.name);
            let decision = if a.status == 403 {
                AccessDecision::Deny
            } else {
                AccessDecision::Permit
            };
            assert_eq!(receipt.decision, decision, "{}", a.name);
            let patients: Vec<String> = a.patients.iter().map(|p| key.patient(p)).collect();
            assert_eq!(receipt.patient_keys, patients, "{}", a.name);
            if decision == AccessDecision::Permit && a.kind != C(Check) {
                assert!(
                    receipt
                        .resources
                        .iter()
                        .all(|r| r.resource_type == "Consent")
                        && !receipt.resources.is_empty(),
                    "{}: {:?}",
                    a.name,
                    receipt.resources
                );
            }
            if decision == AccessDecision::Deny {
                assert!(receipt.resources.is_empty(), "{}", a.name);
            }
        }

        // Nothing the refused attempts aimed at changed: p2's refusal of dr-bob is in force
        // at version 1, dr-bob has no grant at North General, no consent was made for p2.
        let bob = other_clinician_token();
        assert_eq!(
            send(
                "GET",
                &gw.url("/fhir/st-mary/Patient/p2"),
                Some(bob),
                &[],
                None
            )
            .await
            .error_code(),
            "consent-denied"
        );
        assert_eq!(
            send(
                "GET",
                &gw.url("/fhir/north-general/Patient/p3"),
                Some(bob),
                &[],
                None
            )
            .await
            .error_code(),
            "consent-denied"
        );
        let p2 = send(
            "GET",
            &gw.url("/consent/Consent?site=st-mary&patient=p2"),
            Some(&officer),
            &[],
            None,
        )
        .await
        .json();
        let versions: Vec<(&str, &str, &str)> = p2["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let r = &e["resource"];
                (
                    r["id"].as_str().unwrap(),
                    r["meta"]["versionId"].as_str().unwrap(),
                    r["status"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(versions, [("c-p2", "1", "active")]);
        n_calls += 1;

        // Exactly one receipt per consent API call.
        let consent_receipts = gw
            .gateway
            .state
            .store
            .receipts_after("test-gw", 0, 1000)
            .unwrap()
            .into_iter()
            .filter(|row| row.kind.starts_with("consent-"))
            .count();
        assert_eq!(consent_receipts, n_calls);
        // And p2's accounting of disclosures lists who tried what.
        let officer_audit = token(
            "privacy-officer",
            Some("openid user/AuditEvent.rs"),
            None,
            None,
        );
        let report = send(
            "GET",
            &gw.url("/audit/patient/p2/disclosures?site=st-mary"),
            Some(&officer_audit),
            &[],
            None,
        )
        .await
        .json();
        let sentences: Vec<&str> = report["disclosures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["what"].as_str().unwrap())
            .collect();
        assert!(
            sentences.contains(&"revoked a consent")
                || sentences.iter().any(|s| s.starts_with("revoked")),
            "{sentences:?}"
        );
    }
}

/// The consent-administrator scope is the issuer's to name; another issuer's, or a SMART
/// scope, is no role.
#[actix_web::test]
async fn the_consent_admin_scope_is_configured_per_issuer() {
    let upstream = hospital();
    let gw = TestGateway::new()
        .issuer_setting("admin_subjects", json!([]))
        .issuer_setting("consent_admin_scope", json!("urn:test:consents"))
        .site("st-mary", &upstream.base_url())
        .start();
    let list = |scope: &'static str| {
        let url = gw.url("/consent/Consent?site=st-mary&patient=p1");
        async move {
            let t = token("dr-alice", Some(scope), None, None);
            send("GET", &url, Some(&t), &[], None).await
        }
    };
    assert_eq!(list("openid urn:test:consents").await.status, 200);
    assert_eq!(
        list("openid assent/consent-admin").await.error_code(),
        "consent-admin-required"
    );
    assert_eq!(
        list("openid user/Consent.cruds system/Consent.cruds")
            .await
            .error_code(),
        "consent-admin-required"
    );
}
