//! Federated reads of a network patient (issue 17): `Patient/{network-id}/$everything` and
//! searches by network patient across three sites of different FHIR versions (R4, STU3, R5),
//! each site's share decided by that site's consent, merged in the asked version; partial
//! answers and strict handling; paging across sites; one receipt per leg and one for the
//! federated request; disclosures by network identity; the network's CapabilityStatement; and
//! the ADV table of federated forms for a patient a site refuses.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use assent_e2e::*;
use assent_gateway::store::testing;
use serde_json::{Value, json};

use crate::consent::{consent, put_consent};

/// The network identifier system the three sites share.
const SYSTEM: &str = "urn:oid:2.16.840.1.113883.4.1";
/// The extension naming each entry's site.
const SOURCE_SITE: &str = "urn:assent:source-site";

/// The sites: id, FHIR version, the patient's local id there.
const NORTH: (&str, &str, &str) = ("north", "R4", "pn");
const SOUTH: (&str, &str, &str) = ("south", "STU3", "ps");
const EAST: (&str, &str, &str) = ("east", "R5", "pe");

/// A site's FAKE upstream in `version` holding its patient `local`: `Patient/{local}/$everything`
/// (the Patient, a Condition, an Observation; paged by `_count` from `_offset`), and
/// `Condition` / `Observation` searches by `patient` or `subject` (empty for anyone else).
/// Every answer after `delay`.
fn site_upstream(
    site: &'static str,
    version: &'static str,
    local: &'static str,
    delay: Option<Duration>,
) -> FakeUpstream {
    FakeUpstream::start(move |req, base| {
        let clinical_status = if version == "STU3" {
            json!("active")
        } else {
            json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]})
        };
        let subject = json!({"reference": format!("Patient/{local}")});
        let resources = [
            json!({"resourceType": "Patient", "id": local}),
            json!({"resourceType": "Condition", "id": format!("c-{site}"), "clinicalStatus": clinical_status, "subject": subject}),
            json!({"resourceType": "Observation", "id": format!("o-{site}"), "meta": {"source": format!("urn:source:{site}")},
                   "status": "final", "code": {"text": "weight"}, "subject": subject}),
        ];
        let entry = |r: &Value| {
            json!({"fullUrl": format!("{base}/{}/{}", r["resourceType"].as_str().unwrap(), r["id"].as_str().unwrap()),
                   "resource": r, "search": {"mode": "match"}})
        };
        let param = |name: &str| {
            req.query
                .split('&')
                .find_map(|p| p.strip_prefix(&format!("{name}=")))
                .map(|v| v.replace("%2F", "/"))
        };
        let path = req.path.trim_start_matches("/fhir/");
        let answer = if path == format!("Patient/{local}/$everything") {
            let count: Option<usize> = param("_count").and_then(|v| v.parse().ok());
            let offset: usize = param("_offset").and_then(|v| v.parse().ok()).unwrap_or(0);
            let end = count.map_or(resources.len(), |c| (offset + c).min(resources.len()));
            let entries: Vec<Value> = resources[offset..end].iter().map(entry).collect();
            let mut bundle =
                json!({"resourceType": "Bundle", "type": "searchset", "entry": entries});
            if end < resources.len() {
                bundle["link"] = json!([{"relation": "next", "url": format!(
                    "{base}/Patient/{local}/$everything?_count={}&_offset={end}", count.unwrap_or(0))}]);
            } else if count.is_none() {
                bundle["total"] = json!(resources.len());
            }
            FakeResponse::json(200, bundle)
        } else if path == "Condition" || path == "Observation" {
            let asked = param("patient")
                .or_else(|| param("subject"))
                .unwrap_or_default();
            let mine = asked == local || asked == format!("Patient/{local}");
            let entries: Vec<Value> = resources
                .iter()
                .filter(|r| mine && r["resourceType"] == path)
                .map(entry)
                .collect();
            FakeResponse::json(
                200,
                json!({"resourceType": "Bundle", "type": "searchset", "total": entries.len(), "entry": entries}),
            )
        } else {
            FakeResponse::json(404, json!({"resourceType": "OperationOutcome"}))
        };
        match delay {
            Some(d) => answer.delayed(d),
            None => answer,
        }
    })
}

fn site_config(upstream: &str, version: &str, policy: &str) -> Value {
    json!({
        "upstream": upstream, "fhir_version": version, "default_policy": policy,
        "patient_identifier_systems": [SYSTEM], "network_identifier_systems": [SYSTEM],
    })
}

/// A gateway over the three sites (`east` opt-in unless `east_policy` says otherwise), with
/// `network` deadlines.
fn gateway(urls: [&str; 3], east_policy: &str, network: Value) -> StartedGateway {
    gateway_on(TestGateway::new(), urls, east_policy, network)
}

fn gateway_on(
    builder: TestGateway,
    urls: [&str; 3],
    east_policy: &str,
    network: Value,
) -> StartedGateway {
    builder
        .site_with(NORTH.0, site_config(urls[0], NORTH.1, "opt-out"))
        .site_with(SOUTH.0, site_config(urls[1], SOUTH.1, "opt-out"))
        .site_with(EAST.0, site_config(urls[2], EAST.1, east_policy))
        .set("network", network)
        .start()
}

/// Links the three sites' patients into one network patient, in the gateway's store, as
/// discovery would have learned them. Returns its id.
fn link_patients(gw: &StartedGateway) -> String {
    let network = &gw.gateway.state.network;
    let mut id = None;
    for (site, _, local) in [NORTH, SOUTH, EAST] {
        let learned = network
            .learn(site, local, [(SYSTEM, "123-45-6789")], 1_700_000_000_000)
            .unwrap();
        id = learned.network_id;
    }
    id.unwrap()
}

/// An auditor: an explicit AuditEvent scope.
fn auditor() -> String {
    token("nurse-carol", Some("openid user/AuditEvent.rs"), None, None)
}

fn entries(bundle: &Value) -> Vec<Value> {
    bundle["entry"].as_array().cloned().unwrap_or_default()
}

fn site_of(entry: &Value) -> String {
    entry["extension"]
        .as_array()
        .and_then(|e| e.iter().find(|x| x["url"] == SOURCE_SITE))
        .and_then(|x| x["valueString"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// `(site, Type/id)` of every released resource (not outcomes).
fn released(bundle: &Value) -> BTreeSet<(String, String)> {
    entries(bundle)
        .iter()
        .filter(|e| e["resource"]["resourceType"] != "OperationOutcome")
        .map(|e| {
            let r = &e["resource"];
            (
                site_of(e),
                format!(
                    "{}/{}",
                    r["resourceType"].as_str().unwrap(),
                    r["id"].as_str().unwrap()
                ),
            )
        })
        .collect()
}

/// `(site, code)` of the outcome entries naming a site.
fn outcomes(bundle: &Value) -> BTreeSet<(String, String)> {
    entries(bundle)
        .iter()
        .filter(|e| e["resource"]["resourceType"] == "OperationOutcome")
        .map(|e| {
            (
                site_of(e),
                e["resource"]["issue"][0]["details"]["coding"][0]["code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

fn everything_of(site: (&str, &str, &str)) -> Vec<(String, String)> {
    let (id, _, local) = site;
    vec![
        (id.to_owned(), format!("Patient/{local}")),
        (id.to_owned(), format!("Condition/c-{id}")),
        (id.to_owned(), format!("Observation/o-{id}")),
    ]
}

fn next_link(bundle: &Value) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == "next")
        .map(|l| l["url"].as_str().unwrap().to_owned())
}

async fn get_as(gw: &StartedGateway, path: &str, token: &str, headers: &[(&str, &str)]) -> Got {
    send("GET", &gw.url(path), Some(token), headers, None).await
}

#[actix_web::test]
async fn everything_merges_every_site_in_the_asked_version_decided_per_site() {
    let ups = [
        site_upstream(NORTH.0, NORTH.1, NORTH.2, None),
        site_upstream(SOUTH.0, SOUTH.1, SOUTH.2, None),
        site_upstream(EAST.0, EAST.1, EAST.2, None),
    ];
    let urls = [ups[0].base_url(), ups[1].base_url(), ups[2].base_url()];
    // SQLite, and PostgreSQL when ASSENT_TEST_DATABASE_URL is set (the disclosures query).
    for store in testing::all() {
        let builder = TestGateway::new().database(&store.url);
        let gw = gateway_on(builder, [&urls[0], &urls[1], &urls[2]], "opt-in", json!({}));
        let nid = link_patients(&gw);
        // East is opt-in: its patient consents to dr-alice only.
        let put = put_consent(&gw, EAST.0, &consent("c-east", EAST.2, "dr-alice", true)).await;
        assert!(put.status < 300, "{}", put.text());
        let alice = clinician_token();
        let bob = other_clinician_token();
        let path = format!("/fhir/Patient/{nid}/$everything");

        let all: BTreeSet<_> = [NORTH, SOUTH, EAST]
            .into_iter()
            .flat_map(everything_of)
            .collect();
        let r5_format = "?_format=application%2Ffhir%2Bjson%3BfhirVersion%3D5.0";
        let mut receipt_ids = Vec::new();
        for (asked, accept, query, mime) in [
            ("default (R4)", None, "", "4.0"),
            (
                "STU3 by Accept",
                Some("application/fhir+json; fhirVersion=3.0"),
                "",
                "3.0",
            ),
            ("R5 by _format", None, r5_format, "5.0"),
        ] {
            let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
            let got = get_as(&gw, &format!("{path}{query}"), alice, &headers).await;
            assert_eq!(got.status, 200, "{asked}: {}", got.text());
            assert!(
                got.header("content-type")
                    .unwrap()
                    .contains(&format!("fhirVersion={mime}")),
                "{asked}: {:?}",
                got.header("content-type")
            );
            receipt_ids.push(got.header("x-assent-receipt").unwrap().to_owned());
            let bundle = got.json();
            assert_eq!(bundle["type"], "searchset", "{asked}");
            assert_eq!(released(&bundle), all, "{asked}: {bundle}");
            assert_eq!(bundle["total"], 9, "{asked}");
            for e in entries(&bundle) {
                let site = site_of(&e);
                let full_url = e["fullUrl"].as_str().unwrap();
                assert!(
                    full_url.starts_with(&gw.url(&format!("/fhir/{site}/"))),
                    "{asked}: {full_url}"
                );
                let r = &e["resource"];
                match r["resourceType"].as_str().unwrap() {
                    // The site's own meta.source is kept; the site is on the entry.
                    "Observation" => assert_eq!(r["meta"]["source"], format!("urn:source:{site}")),
                    // Translated into the asked version whatever the site's.
                    "Condition" if mime == "3.0" => {
                        assert_eq!(r["clinicalStatus"], "active", "{asked} {site}")
                    }
                    "Condition" => assert_eq!(
                        r["clinicalStatus"]["coding"][0]["code"], "active",
                        "{asked} {site}: {r}"
                    ),
                    _ => {}
                }
            }
            // No upstream ever sees the network id.
            for up in &ups {
                assert!(
                    up.requests()
                        .iter()
                        .all(|r| !r.query.contains(&nid) && !r.path.contains(&nid))
                );
            }
        }

        // Dr Bob: east refuses him; its share is missing and nothing names it.
        let got = get_as(&gw, &path, bob, &[]).await;
        assert_eq!(got.status, 200, "{}", got.text());
        let bundle = got.json();
        let north_south: BTreeSet<_> = [NORTH, SOUTH].into_iter().flat_map(everything_of).collect();
        assert_eq!(released(&bundle), north_south);
        assert!(outcomes(&bundle).is_empty(), "{bundle}");
        assert!(!got.text().contains("east"), "{}", got.text());

        // Searches by patient and by subject: a leg per site with the site's local id.
        let got = get_as(&gw, &format!("/fhir/Condition?patient={nid}"), alice, &[]).await;
        assert_eq!(got.status, 200, "{}", got.text());
        let conditions: Vec<String> = released(&got.json()).into_iter().map(|(_, r)| r).collect();
        assert_eq!(
            conditions,
            ["Condition/c-east", "Condition/c-north", "Condition/c-south"]
        );
        assert!(
            ups[0]
                .requests()
                .iter()
                .any(|r| r.path.ends_with("/Condition") && r.query.contains("patient=pn"))
        );
        let got = get_as(
            &gw,
            &format!("/fhir/Observation?subject=Patient/{nid}&_count=10"),
            bob,
            &[("accept", "application/fhir+json; fhirVersion=5.0")],
        )
        .await;
        assert_eq!(got.status, 200, "{}", got.text());
        let observations: BTreeSet<_> = released(&got.json());
        assert_eq!(
            observations,
            [
                ("north", "Observation/o-north"),
                ("south", "Observation/o-south")
            ]
            .into_iter()
            .map(|(s, r)| (s.to_owned(), r.to_owned()))
            .collect()
        );
        assert!(!got.text().contains("east"));

        // What is not a federated read of a known network patient.
        let unknown = "n-0000000000000000000000000000000000000000";
        for (path, status, code) in [
            (
                format!("/fhir/Patient/{unknown}/$everything"),
                404,
                "network-patient-not-found",
            ),
            (
                format!("/fhir/Condition?patient={unknown}"),
                404,
                "network-patient-not-found",
            ),
            (
                "/fhir/Patient/pn/$everything".to_owned(),
                404,
                "network-patient-not-found",
            ),
            (
                "/fhir/Condition?code=x".to_owned(),
                400,
                "federated-form-not-served",
            ),
            (
                format!("/fhir/Condition?patient=pn&subject=Patient/{nid}"),
                400,
                "federated-form-not-served",
            ),
            (
                format!("/fhir/Basic?patient={nid}"),
                400,
                "federated-form-not-served",
            ),
        ] {
            let got = get_as(&gw, &path, alice, &[]).await;
            assert_eq!(
                (got.status, got.error_code().as_str()),
                (status, code),
                "{path}"
            );
            assert!(got.header("x-assent-receipt").is_some(), "{path}");
        }
        let anonymous = send("GET", &gw.url(&path), None, &[], None).await;
        assert_eq!(anonymous.status, 401);

        // Disclosures by network identity: the federated requests and every site's legs, each
        // row naming its site; every spelling of the network patient gives the same report.
        let officer = auditor();
        let mut reports = Vec::new();
        let mut raw_lengths = Vec::new();
        for form in [
            format!("/audit/patient/{nid}/disclosures"),
            format!("/audit/patient/{nid}/disclosures?site=network"),
            format!("/audit/patient/network%2FPatient%2F{nid}/disclosures"),
        ] {
            let got = get_as(&gw, &form, &officer, &[]).await;
            assert_eq!(got.status, 200, "{form}: {}", got.text());
            let report = got.json();
            let all_rows = report["disclosures"].as_array().unwrap();
            raw_lengths.push(all_rows.len());
            let rows: Vec<(String, String)> = all_rows
                .iter()
                .filter(|d| {
                    !d["what"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("disclosures")
                })
                .map(|d| {
                    (
                        d["site"].as_str().unwrap_or_default().to_owned(),
                        d["decision"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            reports.push(rows);
        }
        let rows = &reports[0];
        let count = |site: &str, decision: &str| {
            rows.iter()
                .filter(|(s, d)| s == site && d == decision)
                .count()
        };
        // 3 everything by alice + 1 by bob + 1 Condition search + 1 Observation search (bob),
        // and the 3 refused requests for the known patient (the form refusals are error rows).
        assert_eq!(count("network", "permitted"), 6, "{rows:?}");
        assert_eq!(count("north", "permitted"), 6, "{rows:?}");
        assert_eq!(count("south", "permitted"), 6, "{rows:?}");
        // East's four, and the consent written there.
        assert_eq!(count("east", "permitted"), 5, "{rows:?}");
        assert_eq!(count("east", "denied"), 2, "{rows:?}");
        for (n, other) in reports.iter().enumerate() {
            assert_eq!(other, rows, "every spelling of the network patient");
            if n > 0 {
                assert_eq!(
                    raw_lengths[n],
                    raw_lengths[n - 1] + 1,
                    "each report lists the read before"
                );
            }
        }
        let got = get_as(
            &gw,
            &format!("/audit/patient/{unknown}/disclosures"),
            &officer,
            &[],
        )
        .await;
        assert_eq!(got.status, 400, "{}", got.text());

        // The federated request's own receipt names the network patient (by keyed hash; clear in
        // its subjects) and the site `network`.
        let detail = get_as(
            &gw,
            &format!("/audit/receipts/{}", receipt_ids[0]),
            &officer,
            &[],
        )
        .await;
        assert_eq!(detail.status, 200, "{}", detail.text());
        let detail = detail.json();
        assert_eq!(
            detail["subjects"]["patients"],
            json!([format!("network/Patient/{nid}")]),
            "{detail}"
        );
        assert!(
            detail["receipt"].to_string().contains("\"network\""),
            "{detail}"
        );
    }
}

#[actix_web::test]
async fn a_site_down_or_slow_makes_a_partial_answer_that_names_it_or_an_error_when_strict() {
    let north = site_upstream(NORTH.0, NORTH.1, NORTH.2, None);
    let south = site_upstream(SOUTH.0, SOUTH.1, SOUTH.2, Some(Duration::from_secs(3)));
    let east = closed_port_url();
    let gw = gateway(
        [&north.base_url(), &south.base_url(), &east],
        "opt-out",
        json!({"site_deadline_ms": 400, "deadline_ms": 1000}),
    );
    let nid = link_patients(&gw);
    let alice = clinician_token();
    let path = format!("/fhir/Patient/{nid}/$everything");

    let started = Instant::now();
    let got = get_as(&gw, &path, alice, &[]).await;
    let took = started.elapsed();
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    let bundle = got.json();
    assert_eq!(
        released(&bundle),
        everything_of(NORTH).into_iter().collect()
    );
    assert_eq!(
        outcomes(&bundle),
        [
            ("east", "upstream-unreachable"),
            ("south", "upstream-timeout")
        ]
        .into_iter()
        .map(|(s, c)| (s.to_owned(), c.to_owned()))
        .collect()
    );
    for e in entries(&bundle) {
        if e["resource"]["resourceType"] == "OperationOutcome" {
            assert_eq!(e["search"]["mode"], "outcome");
        }
    }
    assert!(
        bundle.get("total").is_none(),
        "a partial answer has no total"
    );
    // Each leg has its request log row, under the federated request's id and its site; the
    // timed-out leg's pipeline gave up (504) and was recorded.
    let parent = got.header("x-request-id").unwrap().to_owned();
    gw.gateway.state.recorder.flush();
    let rows = gw.gateway.state.store.recent_requests(50).unwrap();
    let row = |id: &str| rows.iter().find(|r| r.request_id == id);
    assert_eq!(row(&parent).unwrap().site.as_deref(), Some("network"));
    assert_eq!(row(&format!("{parent}.north")).unwrap().status, 200);
    let south = row(&format!("{parent}.south")).unwrap();
    assert_eq!(
        (south.status, south.error_code.as_deref()),
        (504, Some("upstream-timeout"))
    );
    assert_eq!(row(&format!("{parent}.east")).unwrap().status, 502);

    // Strict handling: the partial answer is an error naming the failed sites.
    let got = get_as(&gw, &path, alice, &[("prefer", "handling=strict")]).await;
    assert_eq!(got.status, 502, "{}", got.text());
    assert_eq!(got.error_code(), "federation-incomplete");
    let text = got.text();
    assert!(
        text.contains("south") && text.contains("east") && !text.contains("north"),
        "{text}"
    );
    assert!(got.header("x-assent-receipt").is_some());

    // Every leg left its receipt, the timed-out ones too, and so did each federated request.
    let got = get_as(
        &gw,
        &format!("/audit/patient/{nid}/disclosures"),
        &auditor(),
        &[],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let report = got.json();
    let sites: Vec<&str> = report["disclosures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["site"].as_str().unwrap_or_default())
        .collect();
    for (site, n) in [("network", 2), ("north", 2), ("south", 2), ("east", 2)] {
        assert_eq!(
            sites.iter().filter(|s| **s == site).count(),
            n,
            "{site}: {sites:?}"
        );
    }
}

#[actix_web::test]
async fn pages_follow_every_site_through_one_signed_link() {
    let ups = [
        site_upstream(NORTH.0, NORTH.1, NORTH.2, None),
        site_upstream(SOUTH.0, SOUTH.1, SOUTH.2, None),
        site_upstream(EAST.0, EAST.1, EAST.2, None),
    ];
    let gw = gateway(
        [&ups[0].base_url(), &ups[1].base_url(), &ups[2].base_url()],
        "opt-out",
        json!({}),
    );
    let nid = link_patients(&gw);
    let accept = [("accept", "application/fhir+json; fhirVersion=3.0")];
    let got = get_as(
        &gw,
        &format!("/fhir/Patient/{nid}/$everything?_count=2"),
        clinician_token(),
        &accept,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let first = got.json();
    assert_eq!(released(&first).len(), 6, "{first}");
    assert!(first.get("total").is_none());
    let next = next_link(&first).expect("a next link");
    assert!(next.starts_with(&gw.url("/fhir?_page=")), "{next}");
    assert!(next.contains("&_sig="), "{next}");
    let got = send("GET", &next, Some(clinician_token()), &accept, None).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(
        got.header("content-type")
            .unwrap()
            .contains("fhirVersion=3.0")
    );
    let second = got.json();
    assert!(next_link(&second).is_none(), "{second}");
    let mut seen = released(&first);
    seen.extend(released(&second));
    let all: BTreeSet<_> = [NORTH, SOUTH, EAST]
        .into_iter()
        .flat_map(everything_of)
        .collect();
    assert_eq!(seen, all);
    // The second page in the first page's version (STU3 Condition.clinicalStatus is a code).
    for e in entries(&second) {
        if e["resource"]["resourceType"] == "Condition" {
            assert_eq!(e["resource"]["clinicalStatus"], "active");
        }
    }
}

#[actix_web::test]
async fn the_network_capability_statement_is_served_without_a_token_in_the_asked_version() {
    let gw = TestGateway::new().start();
    for (accept, fhir_version) in [
        (None, "4.0.1"),
        (Some("application/fhir+json; fhirVersion=3.0"), "3.0.2"),
        (Some("application/fhir+json; fhirVersion=5.0"), "5.0.0"),
    ] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        let got = send("GET", &gw.url("/fhir/metadata"), None, &headers, None).await;
        assert_eq!(got.status, 200, "{}", got.text());
        let statement = got.json();
        assert_eq!(statement["resourceType"], "CapabilityStatement");
        assert_eq!(statement["fhirVersion"], fhir_version);
        let resources = statement["rest"][0]["resource"].as_array().unwrap();
        let patient = resources.iter().find(|r| r["type"] == "Patient").unwrap();
        // STU3 has no operations per resource: the translation keeps them as extensions.
        assert!(
            patient["operation"]
                .as_array()
                .is_some_and(|ops| ops.iter().any(|o| o["name"] == "everything"))
                || (fhir_version == "3.0.2" && patient.to_string().contains("Patient-everything")),
            "{fhir_version}: {patient}"
        );
        assert!(resources.iter().any(|r| r["type"] == "Observation"));
        assert!(got.header("x-assent-receipt").is_none());
    }
}

/// ADV: the forms of a federated request a caller refused at one site (east) could try, and
/// what must never be released: anything of east's patient, or any word that east refused.
#[actix_web::test]
async fn adv_nothing_of_a_refusing_site_is_released_or_named_in_any_federated_form() {
    let ups = [
        site_upstream(NORTH.0, NORTH.1, NORTH.2, None),
        site_upstream(SOUTH.0, SOUTH.1, SOUTH.2, None),
        site_upstream(EAST.0, EAST.1, EAST.2, None),
    ];
    let gw = gateway(
        [&ups[0].base_url(), &ups[1].base_url(), &ups[2].base_url()],
        "opt-in",
        json!({}),
    );
    let nid = link_patients(&gw);
    let put = put_consent(&gw, EAST.0, &consent("c-east", EAST.2, "dr-alice", true)).await;
    assert!(put.status < 300, "{}", put.text());
    let alice = clinician_token();
    let bob = other_clinician_token();

    // Alice's paged answer: its next link carries east's own page link in its cursor.
    let got = get_as(
        &gw,
        &format!("/fhir/Patient/{nid}/$everything?_count=1"),
        alice,
        &[],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(got.text().contains("east"), "alice is permitted at east");
    let alice_next = next_link(&got.json()).unwrap();
    let (base, sig) = alice_next.split_once("&_sig=").unwrap();
    let cursor = base.split_once("_page=").unwrap().1;
    let decoded = decode_cursor(cursor);
    let east_link = decoded["l"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["s"] == "east")
        .unwrap()["p"]
        .as_str()
        .unwrap()
        .to_owned();
    // Bob's own paged answer, and its cursor with alice's east link added.
    let got = get_as(
        &gw,
        &format!("/fhir/Patient/{nid}/$everything?_count=1"),
        bob,
        &[],
    )
    .await;
    let bob_next = next_link(&got.json()).unwrap();
    let (bob_base, bob_sig) = bob_next.split_once("&_sig=").unwrap();
    let mut bob_cursor = decode_cursor(bob_base.split_once("_page=").unwrap().1);
    bob_cursor["l"]
        .as_array_mut()
        .unwrap()
        .push(json!({"s": "east", "g": "east", "p": east_link}));
    let tampered = format!(
        "{}_page={}&_sig={bob_sig}",
        bob_base.split_once("_page=").unwrap().0,
        encode_cursor(&bob_cursor)
    );
    let alice_cursor_bob_sig = format!("{base}&_sig={bob_sig}");
    let _ = sig;

    let absolute = |p: &str| gw.url(p);
    let attempts: Vec<Attempt> = vec![
        (
            "everything",
            absolute(&format!("/fhir/Patient/{nid}/$everything")),
            vec![],
        ),
        (
            "everything, strict",
            absolute(&format!("/fhir/Patient/{nid}/$everything")),
            vec![("prefer", "handling=strict")],
        ),
        (
            "everything, R5",
            absolute(&format!("/fhir/Patient/{nid}/$everything")),
            vec![("accept", "application/fhir+json; fhirVersion=5.0")],
        ),
        (
            "search by patient",
            absolute(&format!("/fhir/Condition?patient={nid}")),
            vec![],
        ),
        (
            "search by Patient/ reference",
            absolute(&format!("/fhir/Observation?patient=Patient/{nid}")),
            vec![],
        ),
        (
            "search by subject",
            absolute(&format!("/fhir/Observation?subject=Patient/{nid}")),
            vec![],
        ),
        (
            "search by subject:Patient",
            absolute(&format!("/fhir/Condition?subject:Patient={nid}")),
            vec![],
        ),
        (
            "search, paged",
            absolute(&format!("/fhir/Condition?patient={nid}&_count=1")),
            vec![],
        ),
        (
            "alice's page link replayed by bob",
            alice_next.clone(),
            vec![],
        ),
        ("bob's cursor with alice's east link", tampered, vec![]),
        (
            "alice's cursor under bob's signature",
            alice_cursor_bob_sig,
            vec![],
        ),
        (
            "east's page link from alice's cursor, direct",
            absolute(&east_link),
            vec![],
        ),
    ];
    for (label, url, headers) in attempts {
        let got = send("GET", &url, Some(bob), &headers, None).await;
        assert!(
            [200, 403].contains(&got.status),
            "{label}: {} {}",
            got.status,
            got.text()
        );
        let text = got.text();
        assert!(!text.contains("east"), "{label}: east is named: {text}");
        for marker in ["c-east", "o-east", "\"pe\"", "Patient/pe"] {
            assert!(!text.contains(marker), "{label}: {marker} released: {text}");
        }
        if got.status == 200 && got.json()["resourceType"] == "Bundle" {
            assert!(outcomes(&got.json()).is_empty(), "{label}: {text}");
        } else {
            assert_eq!(got.error_code(), "bad-page-token", "{label}");
        }
    }
    // Nothing reached east's upstream for bob: its refusals were decided before forwarding.
    let east_seen = ups[2].requests().len();
    let _ = send(
        "GET",
        &gw.url(&format!("/fhir/Patient/{nid}/$everything")),
        Some(bob),
        &[],
        None,
    )
    .await;
    assert_eq!(ups[2].requests().len(), east_seen);
}

/// One ADV attempt: its label, the URL, the headers.
type Attempt<'a> = (&'a str, String, Vec<(&'a str, &'a str)>);

fn decode_cursor(text: &str) -> Value {
    let text = text.replace("%2D", "-").replace("%5F", "_");
    let bytes = base64_decode(&text);
    serde_json::from_slice(&bytes).unwrap()
}

fn encode_cursor(cursor: &Value) -> String {
    base64_encode(&serde_json::to_vec(cursor).unwrap())
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// URL-safe base64 without padding (the cursor's encoding).
fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn base64_decode(text: &str) -> Vec<u8> {
    let values: Vec<u32> = text
        .bytes()
        .map(|c| ALPHABET.iter().position(|a| *a == c).unwrap() as u32)
        .collect();
    let mut out = Vec::new();
    for chunk in values.chunks(4) {
        let n = chunk.iter().fold(0u32, |n, v| (n << 6) | v) << (6 * (4 - chunk.len()));
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}
