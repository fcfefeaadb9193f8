//! The patient portal over HTTP (no browser): a patient signs in through the demo identity
//! provider's authorization-code flow with a patient launch context, grants a practitioner
//! access and sees that practitioner's read succeed at an opt-in site, revokes it and sees
//! the read denied, and finds both accesses on the disclosures page and in its CSV with a
//! receipt id per row. ADV: edited forms (another patient's consent id, another site's,
//! extra fields naming another patient, a forged or missing CSRF token), a clinician's
//! sign-in, a console cookie, a session cookie whose ciphertext was edited and a copy of a
//! cookie taken before its sign-out are refused, and nothing of another patient is shown or
//! changed; an unknown kind of record or a directory entry not in a held site's directory is
//! refused. Kinds of record: a share of test results only permits dr-alice's Observation read,
//! not her MedicationRequest or Condition read. The grant form lists each site's directory
//! (id and name only, never a patient) and says when a site's is unavailable. A network-bound patient sees and revokes consents across
//! sites. In headless Chromium (when chromedriver is installed): sign in, share with dr-alice
//! chosen from St Mary's directory (her read then succeeds), revoke (her read is denied), see
//! both accesses on the disclosures page and download its CSV and PDF through the page's links
//! (each holding every receipt id shown), each page checked by axe-core (`tests/a11y`: no serious or critical
//! violation), with no horizontal scrolling at 360 px;
//! screenshots at 1280 and 360 px in `target/tmp/portal-*.png`.

use std::path::PathBuf;
use std::time::Duration;

use assent_e2e::*;
use fantoccini::{Client, Locator};
use serde_json::{Value, json};

use crate::consent::{consent, hospital, put_consent};
use crate::console::{Driver, chromium, find_binary, text_of};

fn gateway(upstream: &FakeUpstream, policy: &str) -> StartedGateway {
    let site = |policy: &str| {
        json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": policy,
            "patient_identifier_systems": ["urn:test:nid"], "network_identifier_systems": ["urn:test:nid"]})
    };
    TestGateway::new()
        .site_with("st-mary", site(policy))
        .site_with("north-general", site(policy))
        .set("portal", json!({"client_id": "assent-portal"}))
        .set("audit", json!({"console": {"client_id": "assent-console"}}))
        .start()
}

/// A FAKE site for the portal: `hospital()`'s Patients and Observations, Jane's medicines and
/// conditions, and a directory: Practitioners with more than id and name (a telephone
/// number), an Organization, and slipped into the answers a Patient and a Practitioner whose
/// extension names a patient, neither of which may ever be listed.
fn site_with_directory() -> FakeUpstream {
    FakeUpstream::start(|req, base| {
        let path = req.path.trim_start_matches("/fhir/");
        let segments: Vec<&str> = path.split('/').collect();
        let bundle = |resources: Vec<Value>| {
            let entries: Vec<Value> = resources
                .into_iter()
                .map(|r| json!({"fullUrl": format!("{base}/{}/{}", r["resourceType"].as_str().unwrap(), r["id"].as_str().unwrap()), "resource": r}))
                .collect();
            FakeResponse::json(
                200,
                json!({"resourceType": "Bundle", "type": "searchset", "entry": entries}),
            )
        };
        match segments.as_slice() {
            ["Patient", id] => {
                FakeResponse::json(200, json!({"resourceType": "Patient", "id": id}))
            }
            ["Observation", id] => {
                let p = id.trim_start_matches("o-");
                FakeResponse::json(
                    200,
                    json!({"resourceType": "Observation", "id": id, "subject": {"reference": format!("Patient/{p}")}}),
                )
            }
            [kind @ ("MedicationRequest" | "Condition"), id] => FakeResponse::json(
                200,
                json!({"resourceType": kind, "id": id, "subject": {"reference": "Patient/p1"}}),
            ),
            // Searches by patient: one resource of Jane's.
            [kind @ ("Observation" | "MedicationRequest" | "Condition")] => bundle(vec![
                json!({"resourceType": kind, "id": format!("{kind}-1"), "subject": {"reference": "Patient/p1"}}),
            ]),
            ["Practitioner"] => {
                assert!(
                    req.query.contains("_elements=id%2Cname")
                        || req.query.contains("_elements=id,name"),
                    "{}",
                    req.query
                );
                bundle(vec![
                    json!({"resourceType": "Practitioner", "id": "dr-alice", "name": [{"given": ["Alice"], "family": "Adams"}], "telecom": [{"system": "phone", "value": "555-0100"}]}),
                    json!({"resourceType": "Practitioner", "id": "dr-carol", "name": [{"text": "Dr Carol Chen"}], "birthDate": "1971-02-03"}),
                    json!({"resourceType": "Patient", "id": "p1", "name": [{"text": "Jane Doe"}]}),
                    json!({"resourceType": "Practitioner", "id": "sneaky", "name": [{"text": "Sneaky Entry"}],
                        "extension": [{"url": "urn:x", "valueReference": {"reference": "Patient/p1"}}]}),
                ])
            }
            ["Organization"] => bundle(vec![
                json!({"resourceType": "Organization", "id": "stm-cardio", "name": "St Mary Cardiology"}),
            ]),
            _ => FakeResponse::json(404, json!({"resourceType": "OperationOutcome"})),
        }
    })
}

/// The cookie `name=value` a response sets, if any.
fn set_cookie(got: &Got, name: &str) -> Option<String> {
    got.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.split(';').next().unwrap().to_owned())
        .find(|c| c.starts_with(&format!("{name}=")) && c.len() > name.len() + 1)
}

/// Signs `who` in at `/{realm}/login` through the demo provider; the callback's answer.
async fn sign_in(gw: &StartedGateway, realm: &str, who: &str) -> Got {
    let login = send("GET", &gw.url(&format!("/{realm}/login")), None, &[], None).await;
    assert_eq!(login.status, 302, "{}", login.text());
    let cookie = set_cookie(&login, &format!("assent_{realm}_login")).expect("a sign-in cookie");
    let authorize = format!("{}&login_as={who}", login.header("location").unwrap());
    let picked = send("GET", &authorize, None, &[], None).await;
    assert_eq!(picked.status, 302, "{}", picked.text());
    let callback = picked.header("location").unwrap().to_owned();
    send("GET", &callback, None, &[("cookie", &cookie)], None).await
}

/// A signed-in portal session: its cookie and its CSRF token (read from the page's form).
struct Session {
    cookie: String,
    csrf: String,
}

async fn portal_session(gw: &StartedGateway, who: &str) -> Session {
    let signed_in = sign_in(gw, "portal", who).await;
    assert_eq!(signed_in.status, 200, "{}", signed_in.text());
    assert!(signed_in.text().contains("id=\"continue\""));
    let cookie = set_cookie(&signed_in, "assent_portal").expect("a session cookie");
    let attributes = signed_in
        .headers
        .iter()
        .find(|(n, v)| n.eq_ignore_ascii_case("set-cookie") && v.starts_with("assent_portal="))
        .unwrap()
        .1
        .clone();
    assert!(
        attributes.contains("HttpOnly") && attributes.contains("SameSite=Strict"),
        "{attributes}"
    );
    let page = page(gw, &cookie, "/portal/").await;
    assert_eq!(page.status, 200, "{}", page.text());
    let csrf = csrf_of(&page.text());
    Session { cookie, csrf }
}

fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

async fn page(gw: &StartedGateway, cookie: &str, path: &str) -> Got {
    send("GET", &gw.url(path), None, &[("cookie", cookie)], None).await
}

async fn post(gw: &StartedGateway, cookie: &str, path: &str, form: &[(&str, &str)]) -> Got {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    send(
        "POST",
        &gw.url(path),
        None,
        &[
            ("cookie", cookie),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        Some(body.into_bytes()),
    )
    .await
}

/// The status of dr-alice's read of `path` (200, or 403 `consent-denied`).
async fn alice_reads(gw: &StartedGateway, path: &str) -> u16 {
    let got = send("GET", &gw.url(path), Some(clinician_token()), &[], None).await;
    if got.status == 403 {
        assert_eq!(got.error_code(), "consent-denied", "{}", got.text());
    }
    got.status
}

/// The consent ids a sharing page shows (`id="consent-{id}"`).
fn consent_ids(html: &str) -> Vec<String> {
    html.split("id=\"consent-")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .filter(|id| id != "id")
        .collect()
}

/// Consent `id` as the consent API shows it to an administrator.
async fn stored(gw: &StartedGateway, id: &str) -> Value {
    let got = send(
        "GET",
        &gw.url(&format!("/consent/Consent/{id}")),
        Some(admin_token()),
        &[],
        None,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    got.json()
}

#[actix_web::test]
async fn a_patient_grants_and_revokes_access_and_sees_who_saw_their_records() {
    let upstream = hospital();
    let gw = gateway(&upstream, "opt-in");
    let jane = portal_session(&gw, "jane-doe").await;
    let first = page(&gw, &jane.cookie, "/portal/").await;
    let text = first.text();
    assert!(text.contains("no sharing choices"), "{text}");
    let csp = first.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script"),
        "{csp}"
    );
    assert!(
        first.header("x-assent-receipt").is_some(),
        "the page is receipted"
    );

    // Opt-in: nobody reads Jane's records without her consent.
    assert_eq!(alice_reads(&gw, "/fhir/st-mary/Patient/p1").await, 403);

    let granted = post(
        &gw,
        &jane.cookie,
        "/portal/grant",
        &[
            ("csrf", &jane.csrf),
            ("practitioner", "dr-alice"),
            ("purpose", "TREAT"),
            ("until", "2099-03-01"),
        ],
    )
    .await;
    assert_eq!(granted.status, 200, "{}", granted.text());
    assert!(granted.text().contains("took effect"), "{}", granted.text());
    assert!(granted.header("x-assent-receipt").is_some());
    assert_eq!(alice_reads(&gw, "/fhir/st-mary/Patient/p1").await, 200);
    // Only at St Mary's: North General's p1 is someone else.
    assert_eq!(
        alice_reads(&gw, "/fhir/north-general/Patient/p1").await,
        403
    );

    let sharing = page(&gw, &jane.cookie, "/portal/").await.text();
    let ids = consent_ids(&sharing);
    assert_eq!(ids.len(), 1, "{sharing}");
    assert!(
        sharing.contains("at st-mary may see your records for treatment until 1 March 2099"),
        "{sharing}"
    );
    assert!(sharing.contains("Practitioner/dr-alice"), "{sharing}");
    assert!(sharing.contains("In force"), "{sharing}");
    // dr-alice's name is known now (her read): she can be chosen from the list.
    assert!(
        sharing.contains(
            "<option value=\"Practitioner/dr-alice\">Alice Adams (Practitioner/dr-alice)</option>"
        ),
        "{sharing}"
    );
    let written = stored(&gw, &ids[0]).await;
    assert_eq!(written["patient"]["reference"], "Patient/p1");

    let revoked = post(
        &gw,
        &jane.cookie,
        "/portal/revoke",
        &[("csrf", &jane.csrf), ("consent", &ids[0])],
    )
    .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert!(revoked.text().contains("Ledger transaction"));
    assert_eq!(alice_reads(&gw, "/fhir/st-mary/Patient/p1").await, 403);
    let after = page(&gw, &jane.cookie, "/portal/").await.text();
    assert!(
        after.contains("Revoked") && after.contains("2 versions"),
        "{after}"
    );
    assert!(!after.contains("revoke-"), "no revoke button left: {after}");

    // An emergency: dr-bob breaks the glass, with a justification.
    let bob = token(
        "dr-bob",
        Some("openid fhirUser user/*.rs assent/break-glass"),
        Some("ETREAT"),
        None,
    );
    let emergency = send(
        "GET",
        &gw.url("/fhir/st-mary/Patient/p1"),
        Some(&bob),
        &[("x-assent-break-glass-reason", "unconscious in ER, bed 3")],
        None,
    )
    .await;
    assert_eq!(emergency.status, 200, "{}", emergency.text());

    // Who saw my records: the permitted and the denied read, with receipts; the break-glass
    // access highlighted with its justification.
    let seen = page(&gw, &jane.cookie, "/portal/disclosures").await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    let seen = seen.text();
    let highlighted = seen
        .split("<article class=\"card emergency\"")
        .nth(1)
        .expect("a highlighted access");
    assert!(
        highlighted.contains("Practitioner/dr-bob")
            && highlighted.contains("unconscious in ER, bed 3"),
        "{seen}"
    );
    assert!(seen.contains("Practitioner/dr-alice"), "{seen}");
    assert!(
        seen.contains("permitted") && seen.contains("denied"),
        "{seen}"
    );
    let csv = page(&gw, &jane.cookie, "/portal/disclosures.csv").await;
    assert_eq!(csv.status, 200, "{}", csv.text());
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let csv = csv.text();
    let alice_rows: Vec<&str> = csv
        .lines()
        .filter(|l| l.contains("\"Practitioner/dr-alice\"") && l.contains("read Patient"))
        .collect();
    assert!(
        alice_rows.iter().any(|r| r.contains("\"permitted\""))
            && alice_rows.iter().any(|r| r.contains("\"denied\"")),
        "{csv}"
    );
    for row in &alice_rows {
        let receipt_id = row.split(',').next().unwrap().trim_matches('"');
        assert!(!receipt_id.is_empty());
        // A privacy officer can look each one up.
        let got = send(
            "GET",
            &gw.url(&format!("/audit/receipts/{receipt_id}")),
            Some(&token("privacy-officer", None, None, None)),
            &[],
            None,
        )
        .await;
        assert_eq!(got.status, 200, "{receipt_id}: {}", got.text());
    }
    // The PDF holds the same rows: every receipt id of the CSV, whole, in its content.
    assert!(seen.contains("id=\"pdf\""), "{seen}");
    let pdf = page(&gw, &jane.cookie, "/portal/disclosures.pdf").await;
    assert_eq!(pdf.status, 200, "{}", pdf.text());
    assert_eq!(pdf.header("content-type"), Some("application/pdf"));
    assert!(pdf.header("x-assent-receipt").is_some());
    assert!(pdf.body.starts_with(b"%PDF-"));
    let pdf_text = String::from_utf8_lossy(&pdf.body);
    let csv_ids: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|row| row.split(',').next().unwrap().trim_matches('"'))
        .collect();
    assert!(csv_ids.len() >= alice_rows.len());
    for id in &csv_ids {
        assert!(pdf_text.contains(&format!("({id})")), "{id} not in the PDF");
    }
    assert!(
        pdf_text.contains("unconscious in ER, bed 3"),
        "the break-glass reason"
    );
    assert!(!pdf_text.contains("north-general"));
    // Her own reads of her accounting are listed too, resting on no role.
    assert!(
        csv.contains("\"the patient's own accounting of disclosures\""),
        "{csv}"
    );
    // North General's p1 is not Jane: its read is not in her accounting.
    assert!(!csv.contains("north-general"), "{csv}");
    // A period before everything: nothing.
    let empty = page(
        &gw,
        &jane.cookie,
        "/portal/disclosures?from=2001-01-01&to=2001-12-31",
    )
    .await;
    assert!(empty.text().contains("Nobody accessed"), "{}", empty.text());
}

/// A site choice: at an opt-out site Jane opts out (a clinician's read there is 403, at
/// North General's namesake still 200), undoes it (200 again); at an opt-in site she opts in
/// for treatment (403 → 200), and undoes it (403).
#[actix_web::test]
async fn a_patient_opts_out_of_and_into_a_site_and_undoes_it() {
    let upstream = hospital();
    for (policy, before, held, button, sentence) in [
        (
            "opt-out",
            200,
            403,
            "Opt out at st-mary",
            "You opted out at st-mary",
        ),
        (
            "opt-in",
            403,
            200,
            "Opt in for treatment at st-mary",
            "You opted in at st-mary",
        ),
    ] {
        let gw = gateway(&upstream, policy);
        let jane = portal_session(&gw, "jane-doe").await;
        let sharing = page(&gw, &jane.cookie, "/portal/").await.text();
        assert!(sharing.contains(button), "{policy}: {sharing}");
        assert!(
            !sharing.contains("at north-general"),
            "{policy}: only the sites Jane is held at: {sharing}"
        );
        assert_eq!(alice_reads(&gw, "/fhir/st-mary/Patient/p1").await, before);
        let chosen = post(
            &gw,
            &jane.cookie,
            "/portal/site",
            &[("csrf", &jane.csrf), ("site", "st-mary")],
        )
        .await;
        assert_eq!(chosen.status, 200, "{policy}: {}", chosen.text());
        assert!(chosen.text().contains("Ledger transaction"));
        assert!(chosen.header("x-assent-receipt").is_some());
        assert_eq!(
            alice_reads(&gw, "/fhir/st-mary/Patient/p1").await,
            held,
            "{policy}"
        );
        // North General's p1 is someone else: untouched.
        assert_eq!(
            alice_reads(&gw, "/fhir/north-general/Patient/p1").await,
            before,
            "{policy}"
        );
        let sharing = page(&gw, &jane.cookie, "/portal/").await.text();
        assert!(sharing.contains(sentence), "{policy}: {sharing}");
        let ids = consent_ids(&sharing);
        assert_eq!(ids.len(), 1, "{policy}: {sharing}");
        assert!(sharing.contains("id=\"undo-site-st-mary\""), "{sharing}");
        let written = stored(&gw, &ids[0]).await;
        assert_eq!(written["patient"]["reference"], "Patient/p1");
        let undone = post(
            &gw,
            &jane.cookie,
            "/portal/revoke",
            &[("csrf", &jane.csrf), ("consent", &ids[0])],
        )
        .await;
        assert_eq!(undone.status, 200, "{policy}: {}", undone.text());
        assert_eq!(
            alice_reads(&gw, "/fhir/st-mary/Patient/p1").await,
            before,
            "{policy}"
        );
        let sharing = page(&gw, &jane.cookie, "/portal/").await.text();
        assert!(
            sharing.contains(button),
            "{policy}: the choice is offered again: {sharing}"
        );
    }
}

/// Narrowing a share: a new version keeping fewer purposes and ending earlier; the history
/// shows both versions and dr-alice's treatment read is denied. Widening is refused.
#[actix_web::test]
async fn a_patient_narrows_a_share_to_another_purpose() {
    let upstream = hospital();
    let gw = gateway(&upstream, "opt-in");
    let jane = portal_session(&gw, "jane-doe").await;
    let granted = post(
        &gw,
        &jane.cookie,
        "/portal/grant",
        &[
            ("csrf", &jane.csrf),
            ("practitioner", "dr-alice"),
            ("purpose", "TREAT"),
            ("purpose", "HPAYMT"),
            ("until", "2099-03-01"),
        ],
    )
    .await;
    assert_eq!(granted.status, 200, "{}", granted.text());
    assert_eq!(alice_reads(&gw, "/fhir/st-mary/Patient/p1").await, 200);
    let sharing = page(&gw, &jane.cookie, "/portal/").await.text();
    let ids = consent_ids(&sharing);
    assert_eq!(ids.len(), 1, "{sharing}");
    let id = &ids[0];
    assert!(
        sharing.contains(&format!("id=\"narrow-{id}\"")),
        "{sharing}"
    );

    // Widening is not narrowing: a purpose it does not have, or a later end.
    for (what, form) in [
        ("a new purpose", vec![("purpose", "HRESCH")]),
        ("a later end", vec![("until", "2100-01-01")]),
        ("nothing", vec![]),
    ] {
        let mut full = vec![("csrf", jane.csrf.as_str()), ("consent", id.as_str())];
        full.extend(form);
        let got = post(&gw, &jane.cookie, "/portal/narrow", &full).await;
        assert_eq!(got.status, 400, "{what}: {}", got.text());
    }
    assert_eq!(stored(&gw, id).await["meta"]["versionId"], "1");

    let narrowed = post(
        &gw,
        &jane.cookie,
        "/portal/narrow",
        &[
            ("csrf", &jane.csrf),
            ("consent", id),
            ("purpose", "HPAYMT"),
            ("until", "2098-01-01"),
        ],
    )
    .await;
    assert_eq!(narrowed.status, 200, "{}", narrowed.text());
    assert!(narrowed.text().contains("Access narrowed"));
    assert!(narrowed.header("x-assent-receipt").is_some());
    // Her treatment read is no longer covered.
    assert_eq!(alice_reads(&gw, "/fhir/st-mary/Patient/p1").await, 403);
    let written = stored(&gw, id).await;
    assert_eq!(written["meta"]["versionId"], "2", "{written}");
    assert_eq!(written["patient"]["reference"], "Patient/p1");
    assert_eq!(
        written["provision"]["purpose"][0]["code"], "HPAYMT",
        "{written}"
    );
    assert_eq!(written["provision"]["purpose"].as_array().unwrap().len(), 1);
    assert_eq!(written["provision"]["period"]["end"], "2098-01-01");
    let after = page(&gw, &jane.cookie, "/portal/").await.text();
    assert!(after.contains("2 versions"), "{after}");
    assert!(after.contains("1 January 2098"), "{after}");
}

/// Kinds of record: a share of test results only lets dr-alice read Jane's Observation, not
/// her medicines, conditions or details; it is chosen from St Mary's directory (id and name
/// only; never a patient); narrowing drops a kind, and adding one is refused.
#[actix_web::test]
async fn a_patient_shares_test_results_only_with_a_practitioner_from_the_directory() {
    let upstream = site_with_directory();
    let gw = gateway(&upstream, "opt-in");
    let jane = portal_session(&gw, "jane-doe").await;
    let sharing = page(&gw, &jane.cookie, "/portal/").await.text();
    for listed in [
        "<optgroup label=\"Practitioners at st-mary\">",
        "<option value=\"st-mary|Practitioner/dr-alice\">Alice Adams (Practitioner/dr-alice)</option>",
        "<option value=\"st-mary|Practitioner/dr-carol\">Dr Carol Chen (Practitioner/dr-carol)</option>",
        "<optgroup label=\"Organizations at st-mary\">",
        "<option value=\"st-mary|Organization/stm-cardio\">St Mary Cardiology (Organization/stm-cardio)</option>",
        "name=\"category\" value=\"test-results\"",
        "none chosen: all your records",
    ] {
        assert!(sharing.contains(listed), "{listed}: {sharing}");
    }
    for never in [
        "555-0100",
        "1971",
        "Jane Doe",
        "sneaky",
        "Sneaky",
        "directory-unavailable",
    ] {
        assert!(!sharing.contains(never), "{never}: {sharing}");
    }
    let reads = |gw: &StartedGateway| {
        let gw = gw.gateway.base_url();
        async move {
            let mut out = Vec::new();
            for path in [
                "Observation/o-p1",
                "MedicationRequest/m1",
                "Condition/c1",
                "Patient/p1",
                "Observation?patient=p1",
                "MedicationRequest?patient=p1",
                "Condition?patient=p1",
            ] {
                let got = send(
                    "GET",
                    &format!("{gw}/fhir/st-mary/{path}"),
                    Some(clinician_token()),
                    &[],
                    None,
                )
                .await;
                out.push(got.status);
            }
            out
        }
    };
    let grant = |categories: &'static [&'static str]| {
        let mut form = vec![
            ("csrf", jane.csrf.as_str()),
            ("chosen", "st-mary|Practitioner/dr-alice"),
            ("purpose", "TREAT"),
        ];
        form.extend(categories.iter().map(|c| ("category", *c)));
        form
    };
    let granted = post(
        &gw,
        &jane.cookie,
        "/portal/grant",
        &grant(&["test-results"]),
    )
    .await;
    assert_eq!(granted.status, 200, "{}", granted.text());
    // Denied: 403 for a request that names Jane (a search by patient, her Patient read); a
    // read of a resource by id is answered like one the site does not have (404, the
    // gateway's rule for a request naming no patient: nothing said of what exists).
    let only_tests = [200, 404, 404, 403, 200, 403, 403];
    assert_eq!(reads(&gw).await, only_tests);
    let sharing = page(&gw, &jane.cookie, "/portal/").await.text();
    assert!(
        sharing.contains("Alice Adams (Practitioner/dr-alice) at st-mary may see your test results for treatment."),
        "{sharing}"
    );
    let id = consent_ids(&sharing).remove(0);
    let written = stored(&gw, &id).await;
    assert_eq!(
        written["provision"]["class"],
        json!([{"system": "http://hl7.org/fhir/resource-types", "code": "Observation"},
               {"system": "http://hl7.org/fhir/resource-types", "code": "DiagnosticReport"}]),
        "{written}"
    );
    // Adding a kind of record is widening: refused, nothing written.
    let widened = post(
        &gw,
        &jane.cookie,
        "/portal/narrow",
        &[
            ("csrf", &jane.csrf),
            ("consent", &id),
            ("category", "conditions"),
        ],
    )
    .await;
    assert_eq!(widened.status, 400, "{}", widened.text());
    assert_eq!(stored(&gw, &id).await["meta"]["versionId"], "1");
    let revoked = post(
        &gw,
        &jane.cookie,
        "/portal/revoke",
        &[("csrf", &jane.csrf), ("consent", &id)],
    )
    .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());

    // Test results and medicines, then narrowed to test results.
    let granted = post(
        &gw,
        &jane.cookie,
        "/portal/grant",
        &grant(&["medicines", "test-results"]),
    )
    .await;
    assert_eq!(granted.status, 200, "{}", granted.text());
    assert_eq!(reads(&gw).await, [200, 200, 404, 403, 200, 200, 403]);
    let sharing = page(&gw, &jane.cookie, "/portal/").await.text();
    assert!(
        sharing.contains("may see your medicines and test results for treatment."),
        "{sharing}"
    );
    let id = consent_ids(&sharing)
        .into_iter()
        .find(|c| *c != id)
        .unwrap();
    let narrowed = post(
        &gw,
        &jane.cookie,
        "/portal/narrow",
        &[
            ("csrf", &jane.csrf),
            ("consent", &id),
            ("category", "test-results"),
        ],
    )
    .await;
    assert_eq!(narrowed.status, 200, "{}", narrowed.text());
    assert_eq!(reads(&gw).await, only_tests);
    assert_eq!(stored(&gw, &id).await["meta"]["versionId"], "2");
}

/// A site whose FHIR server is down: the form says its directory is unavailable, and a grant
/// by a typed reference still works.
#[actix_web::test]
async fn the_grant_form_works_when_a_sites_directory_is_unavailable() {
    let gw = TestGateway::new()
        .site_with(
            "st-mary",
            json!({"upstream": closed_port_url(), "fhir_version": "R4", "default_policy": "opt-in",
                "patient_identifier_systems": ["urn:test:nid"]}),
        )
        .set("portal", json!({"client_id": "assent-portal"}))
        .start();
    let jane = portal_session(&gw, "jane-doe").await;
    let sharing = page(&gw, &jane.cookie, "/portal/").await.text();
    assert!(
        sharing.contains("id=\"directory-unavailable-st-mary\"")
            && sharing.contains("The directory of st-mary is unavailable"),
        "{sharing}"
    );
    assert!(sharing.contains("id=\"practitioner\""), "{sharing}");
    let granted = post(
        &gw,
        &jane.cookie,
        "/portal/grant",
        &[
            ("csrf", &jane.csrf),
            ("practitioner", "Practitioner/dr-alice"),
            ("purpose", "TREAT"),
        ],
    )
    .await;
    assert_eq!(granted.status, 200, "{}", granted.text());
    let chosen = post(
        &gw,
        &jane.cookie,
        "/portal/grant",
        &[
            ("csrf", &jane.csrf),
            ("chosen", "st-mary|Practitioner/dr-alice"),
            ("purpose", "TREAT"),
        ],
    )
    .await;
    assert_eq!(chosen.status, 400, "{}", chosen.text());
    assert!(chosen.text().contains("unavailable"), "{}", chosen.text());
}

/// A share as the portal writes it: a root permit for dr-bob, for treatment and payment.
fn share(id: &str, patient: &str) -> Value {
    json!({
        "resourceType": "Consent", "id": id, "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{patient}")},
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": {"type": "permit",
            "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]},
                       "reference": {"reference": "Practitioner/dr-bob"}}],
            "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"},
                        {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HPAYMT"}]}
    })
}

/// ADV: however the portal's forms and cookies are edited, a patient neither sees nor changes
/// another patient's consents; the refusals are pages and nothing is written.
#[actix_web::test]
async fn adv_edited_forms_never_reach_another_patients_consents() {
    let upstream = site_with_directory();
    let gw = gateway(&upstream, "opt-in");
    // Another patient at Jane's site, and Jane's local id at another site (someone else).
    for (site, body) in [
        ("st-mary", consent("other-p2", "p2", "dr-bob", true)),
        (
            "north-general",
            consent("other-ng-p1", "p1", "dr-bob", true),
        ),
        // Shaped as the portal's own shares, so that only the rule stops narrowing them.
        ("st-mary", share("other-share-p2", "p2")),
        ("north-general", share("other-share-ng-p1", "p1")),
    ] {
        let got = put_consent(&gw, site, &body).await;
        assert_eq!(got.status, 201, "{}", got.text());
    }
    let jane = portal_session(&gw, "jane-doe").await;
    let others = [
        "other-p2",
        "other-ng-p1",
        "other-share-p2",
        "other-share-ng-p1",
    ];
    let sharing = page(&gw, &jane.cookie, "/portal/").await.text();
    for other in others {
        assert!(!sharing.contains(other), "{sharing}");
    }

    // A console session, a forged portal cookie, and another realm's cookie under the portal's
    // name are all signed out.
    let officer = sign_in(&gw, "console", "privacy-officer").await;
    let console_cookie = set_cookie(&officer, "assent_console").expect("console session");
    let console_as_portal = console_cookie.replacen("assent_console=", "assent_portal=", 1);
    // Jane's cookie with one character of its ciphertext changed: near the start (the
    // nonce), in the middle, near the end (the tag).
    let edited = |at: usize| {
        let mut forged = jane.cookie.clone();
        let swapped = if &forged[at..=at] == "B" { "C" } else { "B" };
        forged.replace_range(at..=at, swapped);
        assert_ne!(forged, jane.cookie);
        forged
    };
    let start = "assent_portal=".len();
    let forged = edited(start + 3);
    let forged_middle = edited((start + jane.cookie.len()) / 2);
    let forged_end = edited(jane.cookie.len() - 6);
    // A copy of a session's cookie taken before its sign-out.
    let earlier = portal_session(&gw, "jane-doe").await;
    let signed_out = page(&gw, &earlier.cookie, "/portal/logout").await;
    assert_eq!(signed_out.status, 200, "{}", signed_out.text());
    assert!(
        signed_out
            .headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("set-cookie") && v.starts_with("assent_portal=;")),
        "the cookie is removed too"
    );

    let grant = |csrf: &str| {
        vec![
            ("csrf".to_owned(), csrf.to_owned()),
            ("practitioner".to_owned(), "dr-bob".to_owned()),
            ("purpose".to_owned(), "TREAT".to_owned()),
        ]
    };
    let with = |mut form: Vec<(String, String)>, extra: &[(&str, &str)]| {
        form.extend(
            extra
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
        );
        form
    };
    struct Case {
        what: &'static str,
        cookie: String,
        path: &'static str,
        form: Vec<(String, String)>,
        status: u16,
        code: Option<&'static str>,
    }
    let revoke = |csrf: &str, id: &str| {
        vec![
            ("csrf".to_owned(), csrf.to_owned()),
            ("consent".to_owned(), id.to_owned()),
        ]
    };
    let cases = vec![
        Case {
            what: "revoke another patient's consent at the same site",
            cookie: jane.cookie.clone(),
            path: "/portal/revoke",
            form: revoke(&jane.csrf, "other-p2"),
            status: 403,
            code: Some("consent-patient-mismatch"),
        },
        Case {
            what: "revoke the consent of Jane's local id at another site",
            cookie: jane.cookie.clone(),
            path: "/portal/revoke",
            form: revoke(&jane.csrf, "other-ng-p1"),
            status: 403,
            code: Some("consent-patient-mismatch"),
        },
        Case {
            what: "revoke with a forged CSRF token",
            cookie: jane.cookie.clone(),
            path: "/portal/revoke",
            form: revoke(&format!("{}x", &jane.csrf[1..]), "other-p2"),
            status: 403,
            code: Some("csrf-token-invalid"),
        },
        Case {
            what: "grant with a forged CSRF token",
            cookie: jane.cookie.clone(),
            path: "/portal/grant",
            form: grant("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
            status: 403,
            code: Some("csrf-token-invalid"),
        },
        Case {
            what: "grant without a CSRF token",
            cookie: jane.cookie.clone(),
            path: "/portal/grant",
            form: grant("").into_iter().filter(|(n, _)| n != "csrf").collect(),
            status: 403,
            code: Some("csrf-token-invalid"),
        },
        Case {
            what: "grant with a console session",
            cookie: console_cookie.clone(),
            path: "/portal/grant",
            form: grant(&jane.csrf),
            status: 401,
            code: None,
        },
        Case {
            what: "grant with a console cookie renamed as the portal's",
            cookie: console_as_portal.clone(),
            path: "/portal/grant",
            form: grant(&jane.csrf),
            status: 401,
            code: None,
        },
        Case {
            what: "revoke with a session cookie whose ciphertext was edited at its start",
            cookie: forged.clone(),
            path: "/portal/revoke",
            form: revoke(&jane.csrf, "other-p2"),
            status: 401,
            code: None,
        },
        Case {
            what: "grant with a session cookie whose ciphertext was edited in its middle",
            cookie: forged_middle.clone(),
            path: "/portal/grant",
            form: grant(&jane.csrf),
            status: 401,
            code: None,
        },
        Case {
            what: "grant with a session cookie whose ciphertext was edited at its end",
            cookie: forged_end.clone(),
            path: "/portal/grant",
            form: grant(&jane.csrf),
            status: 401,
            code: None,
        },
        Case {
            what: "grant with a copy of a session cookie taken before its sign-out",
            cookie: earlier.cookie.clone(),
            path: "/portal/grant",
            form: grant(&earlier.csrf),
            status: 401,
            code: None,
        },
        Case {
            what: "opt out of a site Jane is not held at",
            cookie: jane.cookie.clone(),
            path: "/portal/site",
            form: vec![
                ("csrf".to_owned(), jane.csrf.clone()),
                ("site".to_owned(), "north-general".to_owned()),
            ],
            status: 404,
            code: Some("not-found"),
        },
        Case {
            what: "opt out with a forged CSRF token",
            cookie: jane.cookie.clone(),
            path: "/portal/site",
            form: vec![
                ("csrf".to_owned(), format!("{}x", &jane.csrf[1..])),
                ("site".to_owned(), "st-mary".to_owned()),
            ],
            status: 403,
            code: Some("csrf-token-invalid"),
        },
        Case {
            what: "narrow another patient's consent at the same site",
            cookie: jane.cookie.clone(),
            path: "/portal/narrow",
            form: vec![
                ("csrf".to_owned(), jane.csrf.clone()),
                ("consent".to_owned(), "other-share-p2".to_owned()),
                ("until".to_owned(), "2030-01-01".to_owned()),
            ],
            status: 403,
            code: Some("consent-patient-mismatch"),
        },
        Case {
            what: "narrow the consent of Jane's local id at another site",
            cookie: jane.cookie.clone(),
            path: "/portal/narrow",
            form: vec![
                ("csrf".to_owned(), jane.csrf.clone()),
                ("consent".to_owned(), "other-share-ng-p1".to_owned()),
                ("purpose".to_owned(), "TREAT".to_owned()),
            ],
            status: 403,
            code: Some("consent-patient-mismatch"),
        },
        Case {
            what: "grant an unknown kind of record",
            cookie: jane.cookie.clone(),
            path: "/portal/grant",
            form: with(grant(&jane.csrf), &[("category", "secrets")]),
            status: 400,
            code: Some("malformed-request"),
        },
        Case {
            what: "grant a resource type that is not a listed kind of record",
            cookie: jane.cookie.clone(),
            path: "/portal/grant",
            form: with(grant(&jane.csrf), &[("category", "Procedure")]),
            status: 400,
            code: Some("malformed-request"),
        },
        Case {
            what: "grant to an entry not in the site's directory",
            cookie: jane.cookie.clone(),
            path: "/portal/grant",
            form: vec![
                ("csrf".to_owned(), jane.csrf.clone()),
                (
                    "chosen".to_owned(),
                    "st-mary|Practitioner/not-listed".to_owned(),
                ),
                ("purpose".to_owned(), "TREAT".to_owned()),
            ],
            status: 400,
            code: Some("malformed-request"),
        },
        Case {
            what: "grant to the directory entry of a site Jane is not held at",
            cookie: jane.cookie.clone(),
            path: "/portal/grant",
            form: vec![
                ("csrf".to_owned(), jane.csrf.clone()),
                (
                    "chosen".to_owned(),
                    "north-general|Practitioner/dr-alice".to_owned(),
                ),
                ("purpose".to_owned(), "TREAT".to_owned()),
            ],
            status: 400,
            code: Some("malformed-request"),
        },
        Case {
            what: "grant to the entry slipped in with a patient's reference",
            cookie: jane.cookie.clone(),
            path: "/portal/grant",
            form: vec![
                ("csrf".to_owned(), jane.csrf.clone()),
                (
                    "chosen".to_owned(),
                    "st-mary|Practitioner/sneaky".to_owned(),
                ),
                ("purpose".to_owned(), "TREAT".to_owned()),
            ],
            status: 400,
            code: Some("malformed-request"),
        },
        Case {
            what: "revoke an unknown consent",
            cookie: jane.cookie.clone(),
            path: "/portal/revoke",
            form: revoke(&jane.csrf, "no-such-consent"),
            status: 404,
            code: Some("not-found"),
        },
    ];
    let mut failures = Vec::new();
    for case in &cases {
        let form: Vec<(&str, &str)> = case
            .form
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let got = post(&gw, &case.cookie, case.path, &form).await;
        let text = got.text();
        let html = got
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/html"));
        let code_ok = case
            .code
            .is_none_or(|c| text.contains(&format!("id=\"error-code\">{c}<")));
        if got.status != case.status || !html || !code_ok || text.contains("resourceType") {
            failures.push(format!("{}: {} {text}", case.what, got.status));
        }
        for other in others {
            if text.contains(other) {
                failures.push(format!("{}: shows {other}", case.what));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // Extra fields naming another patient or site are not read: the grant is Jane's.
    let extra = with(
        grant(&jane.csrf),
        &[
            ("patient", "Patient/p2"),
            ("site", "north-general"),
            ("consent", "other-p2"),
        ],
    );
    let form: Vec<(&str, &str)> = extra
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let got = post(&gw, &jane.cookie, "/portal/grant", &form).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let ids = consent_ids(&page(&gw, &jane.cookie, "/portal/").await.text());
    assert_eq!(ids.len(), 1);
    assert_eq!(
        stored(&gw, &ids[0]).await["patient"]["reference"],
        "Patient/p1"
    );
    // Nothing of the others changed: both still active at their first version.
    for other in others {
        let c = stored(&gw, other).await;
        assert_eq!(c["status"], "active", "{c}");
        assert_eq!(c["meta"]["versionId"], "1", "{c}");
    }
    // Dr Bob reads p2 (its own consent), not Jane's North General namesake through hers.
    assert_eq!(
        send(
            "GET",
            &gw.url("/fhir/st-mary/Patient/p2"),
            Some(other_clinician_token()),
            &[],
            None
        )
        .await
        .status,
        200
    );

    // The page too: a copy of the cookie from before the sign-out is signed out.
    assert_eq!(page(&gw, &earlier.cookie, "/portal/").await.status, 401);
    assert_eq!(page(&gw, &jane.cookie, "/portal/").await.status, 200);
    // The console alike: a copy of its cookie from before its sign-out is refused after it.
    assert_eq!(page(&gw, &console_cookie, "/console/").await.status, 200);
    let console_out = page(&gw, &console_cookie, "/console/logout").await;
    assert_eq!(console_out.status, 200, "{}", console_out.text());
    assert_eq!(page(&gw, &console_cookie, "/console/").await.status, 401);

    // A clinician signing in at the portal gets no session.
    let alice = sign_in(&gw, "portal", "dr-alice").await;
    assert_eq!(alice.status, 403, "{}", alice.text());
    assert!(alice.text().contains("for patients"), "{}", alice.text());
    assert!(set_cookie(&alice, "assent_portal").is_none());
    // Without a session, the pages ask to sign in.
    for path in ["/portal/", "/portal/disclosures", "/portal/disclosures.csv"] {
        let got = page(&gw, "", path).await;
        assert_eq!(got.status, 401, "{path}");
        assert!(got.text().contains("id=\"sign-in\""), "{path}");
    }
}

/// A patient bound to a network patient sees the consents of every site record linked to it
/// and revokes one at another site than the one they signed in from; a grant is written for
/// the network patient and permits at every site holding them.
#[actix_web::test]
async fn a_network_patient_manages_consents_across_sites() {
    let upstream = hospital();
    let gw = gateway(&upstream, "opt-in");
    let network = &gw.gateway.state.network;
    let now = gw.gateway.state.clock.now_millis();
    let nid = network
        .learn("north-general", "p2", [("urn:test:nid", "77")], now)
        .unwrap()
        .network_id
        .unwrap();
    network
        .learn("st-mary", "p3", [("urn:test:nid", "77")], now)
        .unwrap();
    identity_provider()
        .provider()
        .bind_network_patient("john-roe", &nid);
    let got = put_consent(&gw, "st-mary", &consent("roe-stm", "p3", "dr-bob", true)).await;
    assert_eq!(got.status, 201, "{}", got.text());
    let got = put_consent(&gw, "st-mary", &consent("not-roe", "p1", "dr-bob", true)).await;
    assert_eq!(got.status, 201, "{}", got.text());
    let john = portal_session(&gw, "john-roe").await;
    let sharing = page(&gw, &john.cookie, "/portal/").await.text();
    assert_eq!(
        consent_ids(&sharing),
        vec!["roe-stm".to_owned()],
        "{sharing}"
    );
    let revoked = post(
        &gw,
        &john.cookie,
        "/portal/revoke",
        &[("csrf", &john.csrf), ("consent", "roe-stm")],
    )
    .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    let granted = post(
        &gw,
        &john.cookie,
        "/portal/grant",
        &[
            ("csrf", &john.csrf),
            ("practitioner", "Practitioner/dr-alice"),
            ("purpose", "TREAT"),
        ],
    )
    .await;
    assert_eq!(granted.status, 200, "{}", granted.text());
    assert_eq!(alice_reads(&gw, "/fhir/st-mary/Patient/p3").await, 200);
    assert_eq!(
        alice_reads(&gw, "/fhir/north-general/Patient/p2").await,
        200
    );
    assert_eq!(alice_reads(&gw, "/fhir/st-mary/Patient/p1").await, 403);
    let sharing = page(&gw, &john.cookie, "/portal/").await.text();
    assert!(
        sharing.contains("at every site holding your records may see your records for treatment"),
        "{sharing}"
    );
    let csv = page(&gw, &john.cookie, "/portal/disclosures.csv")
        .await
        .text();
    assert!(
        csv.contains("st-mary") && csv.contains("north-general"),
        "{csv}"
    );
    assert!(!csv.contains("Patient/p1 "), "{csv}");
}

/// In headless Chromium: Jane signs in at the identity provider's page, shares with dr-alice
/// through the form, revokes, and reads her disclosures; every page fits 360 px without
/// horizontal scrolling; screenshots at 1280 and 360 px are kept in `target/tmp`.
#[actix_web::test]
async fn a_patient_uses_the_portal_in_chromium() {
    let Some(chromedriver) = find_binary(&["chromedriver"]) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromedriver is missing under CI (apt-get install chromium chromium-driver)"
        );
        eprintln!("SKIPPED: no chromedriver on PATH (apt-get install chromium chromium-driver)");
        return;
    };
    let upstream = site_with_directory();
    let gw = gateway(&upstream, "opt-in");
    let driver = Driver::start(&chromedriver);
    let downloads = tempfile::tempdir().unwrap();
    let client = chromium(&driver, "1280,1000", Some(downloads.path())).await;
    let outcome = drive(&client, &gw, downloads.path()).await;
    let _ = client.close().await;
    drop(driver);
    outcome.unwrap();
}

async fn click(client: &Client, id: &str) -> Result<(), String> {
    client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Id(id))
        .await
        .map_err(|e| format!("#{id}: {e}"))?
        .click()
        .await
        .map_err(|e| format!("#{id}: {e}"))
}

async fn shot(client: &Client, name: &str) -> Result<(), String> {
    let png = client.screenshot().await.map_err(|e| e.to_string())?;
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("portal-{name}.png"));
    std::fs::write(&path, png).map_err(|e| e.to_string())?;
    println!("portal screenshot: {}", path.display());
    Ok(())
}

/// axe-core's script (`tests/a11y`, `npm ci`), if installed; required under CI.
fn axe_source() -> Option<String> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("a11y/node_modules/axe-core/axe.min.js");
    match std::fs::read_to_string(&path) {
        Ok(source) => Some(source),
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "axe-core is missing under CI (npm ci --prefix tests/a11y)"
            );
            eprintln!("SKIPPED the accessibility check: no {}", path.display());
            None
        }
    }
}

/// The serious and critical accessibility violations axe-core finds on the current page.
async fn axe_violations(client: &Client, axe: &str) -> Result<Vec<Value>, String> {
    client
        .execute(axe, vec![])
        .await
        .map_err(|e| format!("axe-core injection: {e}"))?;
    let found = client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, {resultTypes: ['violations']})
               .then(r => done(JSON.stringify(r.violations
                  .filter(v => v.impact === 'serious' || v.impact === 'critical')
                  .map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' '))})))))
               .catch(e => done('ERROR ' + e));",
            vec![],
        )
        .await
        .map_err(|e| format!("axe-core run: {e}"))?;
    let text = found.as_str().unwrap_or_default();
    serde_json::from_str::<Vec<Value>>(text).map_err(|_| format!("axe-core: {text}"))
}

/// Fails with the page's serious accessibility violations, if any (and axe-core is installed).
async fn accessible(client: &Client, axe: Option<&str>, page: &str) -> Result<(), String> {
    let Some(axe) = axe else { return Ok(()) };
    let violations = axe_violations(client, axe).await?;
    if violations.is_empty() {
        Ok(())
    } else {
        Err(format!("{page}: {violations:#?}"))
    }
}

/// The page scrolls sideways at the window's width.
async fn scrolls_sideways(client: &Client) -> Result<bool, String> {
    let wider = client
        .execute(
            "return document.documentElement.scrollWidth > window.innerWidth;",
            vec![],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(wider.as_bool().unwrap_or(true))
}

/// The file `name` once Chromium has finished downloading it into `dir`.
async fn downloaded(dir: &std::path::Path, name: &str) -> Result<Vec<u8>, String> {
    let file = dir.join(name);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !file.is_file() {
        if std::time::Instant::now() > deadline {
            return Err(format!("no {name} downloaded into {}", dir.display()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::read(&file).map_err(|e| e.to_string())
}

async fn drive(
    client: &Client,
    gw: &StartedGateway,
    downloads: &std::path::Path,
) -> Result<(), String> {
    let base = gw.gateway.base_url();
    let axe = axe_source();
    let axe = axe.as_deref();
    client
        .goto(&format!("{base}/portal/"))
        .await
        .map_err(|e| e.to_string())?;
    text_of(client, "#sign-in").await;
    accessible(client, axe, "sign-in").await?;
    click(client, "sign-in").await?;
    click(client, "as-jane-doe").await?;
    text_of(client, "#continue").await;
    accessible(client, axe, "signed in").await?;
    click(client, "continue").await?;
    assert!(!text_of(client, "#no-choices").await.is_empty());
    accessible(client, axe, "sharing, empty").await?;
    // dr-alice, chosen from St Mary's directory (its own group in the list).
    client
        .find(Locator::Css(
            "optgroup[label='Practitioners at st-mary'] option[value='st-mary|Practitioner/dr-alice']",
        ))
        .await
        .map_err(|e| e.to_string())?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    click(client, "grant").await?;
    let changed = text_of(client, "#changed").await;
    assert!(changed.contains("took effect"), "{changed}");
    accessible(client, axe, "granted").await?;
    assert_eq!(alice_reads(gw, "/fhir/st-mary/Patient/p1").await, 200);
    client
        .goto(&format!("{base}/portal/"))
        .await
        .map_err(|e| e.to_string())?;
    let sentence = text_of(client, "p.sentence").await;
    assert!(
        sentence.contains("at st-mary may see your records for treatment"),
        "{sentence}"
    );
    accessible(client, axe, "sharing").await?;
    shot(client, "sharing-1280").await?;
    client
        .set_window_size(360, 900)
        .await
        .map_err(|e| e.to_string())?;
    assert!(
        !scrolls_sideways(client).await?,
        "the sharing page scrolls at 360 px"
    );
    shot(client, "sharing-360").await?;
    let revoke = client
        .find(Locator::Css("button.danger"))
        .await
        .map_err(|e| e.to_string())?;
    revoke.click().await.map_err(|e| e.to_string())?;
    text_of(client, "#changed").await;
    assert_eq!(alice_reads(gw, "/fhir/st-mary/Patient/p1").await, 403);
    client
        .goto(&format!("{base}/portal/disclosures"))
        .await
        .map_err(|e| e.to_string())?;
    let first = text_of(client, "article h3").await;
    assert!(!first.is_empty());
    // Both of dr-alice's reads: the one the share permitted, the one after the revocation.
    let listed = client.source().await.map_err(|e| e.to_string())?;
    let alice: Vec<&str> = listed
        .split("<article")
        .skip(1)
        .filter(|a| a.contains("Practitioner/dr-alice") && a.contains("read Patient"))
        .collect();
    assert!(
        alice.iter().any(|a| a.contains(">permitted<"))
            && alice.iter().any(|a| a.contains(">denied<")),
        "{listed}"
    );
    let shown: Vec<String> = listed
        .split("Receipt <span class=\"mono\">")
        .skip(1)
        .map(|rest| rest.split('<').next().unwrap_or_default().to_owned())
        .collect();
    assert!(shown.len() >= 2, "{listed}");
    // The downloads, from the page's own links.
    click(client, "csv").await?;
    let csv = String::from_utf8(downloaded(downloads, "who-saw-my-records.csv").await?)
        .map_err(|e| e.to_string())?;
    click(client, "pdf").await?;
    let pdf = downloaded(downloads, "who-saw-my-records.pdf").await?;
    assert!(pdf.starts_with(b"%PDF-"));
    let pdf = String::from_utf8_lossy(&pdf);
    for id in &shown {
        assert!(
            csv.contains(&format!("\"{id}\"")),
            "{id} not in the CSV: {csv}"
        );
        assert!(pdf.contains(&format!("({id})")), "{id} not in the PDF");
    }
    accessible(client, axe, "disclosures").await?;
    assert!(
        !scrolls_sideways(client).await?,
        "the disclosures page scrolls at 360 px"
    );
    shot(client, "disclosures-360").await?;
    client
        .set_window_size(1280, 1000)
        .await
        .map_err(|e| e.to_string())?;
    shot(client, "disclosures-1280").await?;
    let page = client.source().await.map_err(|e| e.to_string())?;
    assert!(page.contains("Practitioner/dr-alice"), "{page}");
    Ok(())
}
