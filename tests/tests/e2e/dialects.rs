//! FHIR versions through the gateway: a client names its version (`fhirVersion` in `Accept`
//! or `_format`), reads an R4 site in it, and its requests reach the site in R4; losses are
//! counted or, with `Prefer: handling=strict`, refused.

use assent_e2e::*;
use serde_json::json;

const R5: &str = "application/fhir+json; fhirVersion=5.0";
const STU3: &str = "application/fhir+json; fhirVersion=3.0";

/// A FAKE R4 site: an Encounter, an AllergyIntolerance, a MedicationStatement, a Media (a
/// type R5 does not have), a CapabilityStatement, and searches answered with two pages of
/// Encounters (the second page also holding a Media).
fn r4_site() -> FakeUpstream {
    FakeUpstream::start(|req, base| {
        let encounter = |id: &str| {
            json!({
                "resourceType": "Encounter", "id": id, "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": {"reference": format!("{base}/Patient/p1")},
                "period": {"start": "2024-01-01T10:00:00Z"}
            })
        };
        let path = req.path.strip_prefix("/fhir/").unwrap_or_default();
        let body = match path {
            "metadata" => json!({
                "resourceType": "CapabilityStatement", "status": "active", "date": "2024-01-01",
                "kind": "instance", "fhirVersion": "4.0.1", "format": ["json"],
                "rest": [{"mode": "server", "resource": [
                    {"type": "Encounter", "interaction": [{"code": "read"}]},
                    {"type": "Media", "interaction": [{"code": "read"}]}
                ]}]
            }),
            "Encounter/e1" => encounter("e1"),
            "AllergyIntolerance/a1" => json!({
                "resourceType": "AllergyIntolerance", "id": "a1",
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]},
                "patient": {"reference": "Patient/p1"},
                "recordedDate": "2020-01-01"
            }),
            "MedicationStatement/ms1" => json!({
                "resourceType": "MedicationStatement", "id": "ms1", "status": "completed",
                "medicationReference": {"reference": "Medication/m1"},
                "subject": {"reference": "Patient/p1"}
            }),
            "Media/c1" => {
                json!({"resourceType": "Media", "id": "c1", "status": "completed", "content": {"contentType": "image/png"}, "subject": {"reference": "Patient/p1"}})
            }
            "Encounter" | "MedicationStatement" | "Condition/_search" => {
                let second = req.query.contains("page=2");
                let mut entries = vec![json!({
                    "fullUrl": format!("{base}/Encounter/e{}", if second { 2 } else { 1 }),
                    "resource": encounter(if second { "e2" } else { "e1" }),
                })];
                let mut links = vec![
                    json!({"relation": "self", "url": format!("{base}/Encounter?{}", req.query)}),
                ];
                if second {
                    entries.push(json!({"resource": {"resourceType": "Media", "id": "c1", "status": "completed", "content": {"contentType": "image/png"}, "subject": {"reference": "Patient/p1"}}}));
                } else {
                    links.push(json!({"relation": "next", "url": format!("{base}/Encounter?subject=Patient/p1&page=2&_format=json")}));
                }
                json!({"resourceType": "Bundle", "type": "searchset", "link": links, "entry": entries})
            }
            _ => return FakeResponse::json(404, json!({"resourceType": "OperationOutcome"})),
        };
        FakeResponse::json(200, body)
    })
}

async fn get_as(url: &str, headers: &[(&str, &str)]) -> Got {
    send("GET", url, Some(clinician_token()), headers, None).await
}

fn issues_header(got: &Got) -> Option<usize> {
    got.header("x-assent-translation-issues")
        .map(|v| v.parse().expect("a count"))
}

#[actix_web::test]
async fn an_r4_site_is_read_as_r5_and_as_stu3() {
    let upstream = r4_site();
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();

    let got = get_as(&gw.url("/fhir/st-mary/Encounter/e1"), &[("accept", R5)]).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.header("content-type"), Some(R5));
    assert_eq!(issues_header(&got), Some(0));
    let encounter = got.json();
    assert_eq!(encounter["status"], "completed");
    assert_eq!(encounter["class"][0]["coding"][0]["code"], "AMB");
    assert_eq!(encounter["actualPeriod"]["start"], "2024-01-01T10:00:00Z");
    assert_eq!(
        encounter["subject"]["reference"],
        gw.url("/fhir/st-mary/Patient/p1")
    );
    // The site was asked in its own version.
    let seen = upstream.requests();
    assert_eq!(seen[0].header("accept"), Some("application/fhir+json"));

    let got = get_as(
        &gw.url("/fhir/st-mary/AllergyIntolerance/a1"),
        &[("accept", STU3)],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.header("content-type"), Some(STU3));
    let allergy = got.json();
    assert_eq!(allergy["clinicalStatus"], "active");
    assert_eq!(allergy["assertedDate"], "2020-01-01");
    assert!(allergy.get("recordedDate").is_none());

    // No version asked: the site's own, streamed as before, without the issues header.
    let got = get_as(&gw.url("/fhir/st-mary/Encounter/e1"), &[]).await;
    assert_eq!(
        got.header("content-type"),
        Some("application/fhir+json; fhirVersion=4.0")
    );
    assert_eq!(issues_header(&got), None);
    assert_eq!(got.json()["status"], "finished");

    // The same version, named: nothing to translate.
    let got = get_as(
        &gw.url("/fhir/st-mary/Encounter/e1"),
        &[("accept", "application/fhir+json; fhirVersion=4.0.1")],
    )
    .await;
    assert_eq!(got.json()["class"]["code"], "AMB");
    assert_eq!(issues_header(&got), None);

    let got = get_as(&gw.url("/fhir/st-mary/metadata"), &[("accept", R5)]).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let statement = got.json();
    assert_eq!(statement["fhirVersion"], "5.0.0");
    let types: Vec<&str> = statement["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Encounter"], "Media cannot be read as R5");
}

#[actix_web::test]
async fn a_search_is_converted_page_by_page_and_paging_keeps_the_version() {
    let upstream = r4_site();
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    // The version in `_format`, no Accept: the paging link carries it.
    let got = get(&gw.url(
        "/fhir/st-mary/Encounter?subject=Patient/p1&_format=application/fhir%2Bjson%3BfhirVersion%3D5.0",
    ))
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.header("content-type"), Some(R5));
    let bundle = got.json();
    assert_eq!(bundle["entry"][0]["resource"]["status"], "completed");
    assert!(!got.text().contains(&upstream.addr.to_string()));
    let next = bundle["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .and_then(|l| l["url"].as_str())
        .expect("a next link")
        .to_owned();
    assert!(
        next.contains("_format=application/fhir%2Bjson%3BfhirVersion%3D5.0"),
        "{next}"
    );
    assert!(next.contains("_assent_page="), "{next}");

    // Page 2: R5 again; it holds a Media, which R5 does not have: reported, not hidden.
    let got = get(&next).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.header("content-type"), Some(R5));
    assert!(
        issues_header(&got).is_some_and(|n| n >= 1),
        "{:?}",
        got.headers
    );
    let page = got.json();
    assert_eq!(
        page["entry"][0]["resource"]["class"][0]["coding"][0]["code"],
        "AMB"
    );

    // A page link altered to ask for another version is refused: the signature covers it.
    let altered = next.replace("fhirVersion%3D5.0", "fhirVersion%3D3.0");
    assert_eq!(get(&altered).await.error_code(), "bad-page-token");

    // The site never saw the client's version.
    for seen in upstream.requests() {
        assert!(!seen.query.contains("fhirVersion"), "{}", seen.query);
        assert!(!seen.query.contains("_assent_page"), "{}", seen.query);
    }

    // Strict: the lossy page is refused with the issues.
    let got = get_as(&next, &[("prefer", "handling=strict")]).await;
    assert_eq!(got.status, 422, "{}", got.text());
    assert_eq!(got.error_code(), "translation-lossy");
    let outcome = got.json();
    let issues = outcome["issue"].as_array().unwrap();
    assert!(issues.len() >= 2, "{outcome}");
    assert!(
        issues[1..].iter().any(|i| i["diagnostics"]
            .as_str()
            .unwrap_or_default()
            .contains("Media")),
        "{outcome}"
    );
}

#[actix_web::test]
async fn renamed_types_and_parameters_reach_the_site_in_its_version() {
    let upstream = r4_site();
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    // R5 ballots' MedicationUsage is the R4 site's MedicationStatement.
    let got = get_as(
        &gw.url("/fhir/st-mary/MedicationUsage/ms1"),
        &[("accept", R5)],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let statement = got.json();
    assert_eq!(statement["resourceType"], "MedicationStatement");
    assert_eq!(
        statement["medication"]["reference"]["reference"],
        "Medication/m1"
    );
    assert_eq!(
        upstream.requests().last().unwrap().path,
        "/fhir/MedicationStatement/ms1"
    );

    // R5's `encounter` on MedicationStatement is R4's `context`.
    let got = get_as(
        &gw.url("/fhir/st-mary/MedicationUsage?encounter=Encounter%2Fe1&subject=Patient%2Fp1"),
        &[("accept", R5)],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = upstream.requests().last().unwrap().clone();
    assert_eq!(seen.path, "/fhir/MedicationStatement");
    assert_eq!(seen.query, "context=Encounter/e1&subject=Patient/p1");

    // The same in a POST _search form.
    let got = send(
        "POST",
        &gw.url("/fhir/st-mary/Condition/_search"),
        Some(clinician_token()),
        &[
            ("accept", R5),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        Some(b"participant-actor=Practitioner%2Fpr1&subject=Patient%2Fp1".to_vec()),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = upstream.requests().last().unwrap().clone();
    assert_eq!(
        String::from_utf8_lossy(&seen.body),
        "asserter=Practitioner/pr1&subject=Patient/p1"
    );

    // A parameter R4 lacks: removed, counted, and said in an outcome entry; refused when strict.
    let url = gw.url("/fhir/st-mary/Encounter?subject=Patient%2Fp1&no-such-parameter=1");
    let got = get_as(&url, &[("accept", R5)]).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(issues_header(&got), Some(1));
    let bundle = got.json();
    let outcome = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .expect("an outcome entry");
    assert_eq!(outcome["resource"]["resourceType"], "OperationOutcome");
    assert_eq!(
        upstream.requests().last().unwrap().query,
        "subject=Patient/p1"
    );
    let before = upstream.requests().len();
    let got = get_as(&url, &[("accept", R5), ("prefer", "handling=strict")]).await;
    assert_eq!(got.status, 422, "{}", got.text());
    assert_eq!(got.error_code(), "translation-lossy");
    assert_eq!(
        upstream.requests().len(),
        before,
        "refused before forwarding"
    );
}

#[actix_web::test]
async fn versions_and_types_the_gateway_cannot_serve_are_refused_clearly() {
    let upstream = r4_site();
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let got = get_as(
        &gw.url("/fhir/st-mary/Encounter/e1"),
        &[("accept", "application/fhir+json; fhirVersion=1.0")],
    )
    .await;
    assert_eq!(got.status, 406, "{}", got.text());
    assert_eq!(got.error_code(), "fhir-version-not-supported");
    assert!(got.text().contains("1.0"));
    let got =
        get(&gw
            .url("/fhir/st-mary/Encounter/e1?_format=application/fhir%2Bjson%3BfhirVersion%3D6.0"))
        .await;
    assert_eq!(got.error_code(), "fhir-version-not-supported");
    let got = get(&gw.url("/fhir/st-mary/Encounter/e1?_format=xml")).await;
    assert_eq!(got.status, 406);
    assert_eq!(got.error_code(), "not-acceptable");
    let got = get_as(
        &gw.url("/fhir/st-mary/Encounter/e1"),
        &[("accept", "application/fhir+xml; fhirVersion=5.0")],
    )
    .await;
    assert_eq!(got.error_code(), "not-acceptable");
    assert!(upstream.requests().is_empty());

    // A type the version asked for does not have: refused, naming it.
    let got = get_as(&gw.url("/fhir/st-mary/Media/c1"), &[("accept", R5)]).await;
    assert_eq!(got.status, 422, "{}", got.text());
    assert_eq!(got.error_code(), "translation-unsupported-type");
    assert_eq!(got.json()["issue"][0]["expression"][0], "Media");
    assert!(upstream.requests().is_empty());
    // ... and passed through in the site's own version.
    let got = get_as(
        &gw.url("/fhir/st-mary/Media/c1"),
        &[("accept", "application/fhir+json; fhirVersion=4.0")],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["resourceType"], "Media");
}

#[actix_web::test]
async fn the_configured_default_version_applies_when_the_client_names_none() {
    let upstream = r4_site();
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .set("fhir", json!({"default_version": "R5"}))
        .start();
    let got = get(&gw.url("/fhir/st-mary/Encounter/e1")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.header("content-type"), Some(R5));
    assert_eq!(got.json()["status"], "completed");
    let got = get_as(
        &gw.url("/fhir/st-mary/Encounter/e1"),
        &[("accept", "application/fhir+json; fhirVersion=4.0")],
    )
    .await;
    assert_eq!(got.json()["status"], "finished");
}
