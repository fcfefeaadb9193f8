//! The release rules end to end, against a FAKE site that pages and honours `patient`,
//! `_count` and `_offset`: pages of an unnamed search say nothing of what was withheld
//! (empty pages skipped, a `next` link only when a released entry follows), counts are
//! taken over released matches only, shaping and conditional reads are the gateway's, GET
//! and `POST _search` are decided alike, and the site's lies are not passed on.

use assent_e2e::*;
use serde_json::{Value, json};

use crate::consent::consent;

/// Observations: `o1`, `o2`, `o4`, `o5`, `o6` of `p2`, `o3` of `p1` (or, `with_p2 = false`,
/// only `o3`). A FAKE site: `Observation?…` honours `patient`, `_count` (default 2) and
/// `_offset`, with `next` links; `Observation/{id}` reads with an ETag.
fn paged_site(with_p2: bool) -> FakeUpstream {
    FakeUpstream::start(move |req, base| {
        let all: Vec<(&str, &str)> = [
            ("o1", "p2"),
            ("o2", "p2"),
            ("o3", "p1"),
            ("o4", "p2"),
            ("o5", "p2"),
            ("o6", "p2"),
        ]
        .into_iter()
        .filter(|(_, p)| with_p2 || *p == "p1")
        .collect();
        let observation = |id: &str, p: &str| {
            json!({"resourceType": "Observation", "id": id, "meta": {"versionId": "1"},
                "status": "final", "code": {"text": "x"},
                "subject": {"reference": format!("Patient/{p}")}})
        };
        let path = req.path.trim_start_matches("/fhir/");
        let form = if req.method == "POST" {
            req.body.clone()
        } else {
            req.query.clone().into_bytes()
        };
        let params: Vec<(String, String)> =
            url::form_urlencoded::parse(&form).into_owned().collect();
        let param = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        if let Some(id) = path
            .strip_prefix("Observation/")
            .filter(|id| *id != "_search")
        {
            return match all.iter().find(|(o, _)| *o == id) {
                Some((o, p)) => {
                    FakeResponse::json(200, observation(o, p)).header("etag", "W/\"1\"")
                }
                None => FakeResponse::json(404, json!({"resourceType": "OperationOutcome"})),
            };
        }
        let matching: Vec<&(&str, &str)> = all
            .iter()
            .filter(|(_, p)| param("patient").is_none_or(|want| want == *p))
            .collect();
        let count: usize = param("_count").and_then(|c| c.parse().ok()).unwrap_or(2);
        let offset: usize = param("_offset").and_then(|c| c.parse().ok()).unwrap_or(0);
        let page: Vec<Value> = matching
            .iter()
            .skip(offset)
            .take(count)
            .map(|(o, p)| json!({"fullUrl": format!("{base}/Observation/{o}"), "resource": observation(o, p), "search": {"mode": "match"}}))
            .collect();
        let mut links =
            vec![json!({"relation": "self", "url": format!("{base}/Observation?{}", req.query)})];
        let keep: Vec<String> = params
            .iter()
            .filter(|(n, _)| n != "_offset")
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        if offset + count < matching.len() {
            links.push(json!({"relation": "next", "url": format!("{base}/Observation?{}&_offset={}", keep.join("&"), offset + count)}));
        }
        if offset > 0 {
            links.push(json!({"relation": "previous", "url": format!("{base}/Observation?{}&_offset={}", keep.join("&"), offset.saturating_sub(count))}));
        }
        FakeResponse::json(
            200,
            json!({"resourceType": "Bundle", "type": "searchset", "total": matching.len(), "link": links, "entry": page}),
        )
    })
}

/// A gateway on `site` (opt-out) where `p2` denies dr-alice.
async fn gateway(site: &FakeUpstream) -> StartedGateway {
    let gw = TestGateway::new().site("st-mary", &site.base_url()).start();
    let stored = send(
        "POST",
        &gw.url("/consent/Consent?site=st-mary"),
        Some(admin_token()),
        &[("content-type", "application/fhir+json")],
        Some(
            consent("c-p2", "p2", "dr-alice", false)
                .to_string()
                .into_bytes(),
        ),
    )
    .await;
    assert_eq!(stored.status, 201, "{}", stored.text());
    gw
}

fn ids(got: &Got) -> Vec<String> {
    got.json()["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|e| e["resource"]["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn relations(got: &Got) -> Vec<String> {
    got.json()["link"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|l| l["relation"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[actix_web::test]
async fn pages_of_an_unnamed_search_say_nothing_of_what_was_withheld() {
    let with = paged_site(true);
    let without = paged_site(false);
    let gw_with = gateway(&with).await;
    let gw_without = gateway(&without).await;
    let path = "/fhir/st-mary/Observation?code=x&_count=2";
    let a = get(&gw_with.url(path)).await;
    let b = get(&gw_without.url(path)).await;
    assert_eq!((a.status, b.status), (200, 200), "{}", a.text());
    // The first page (o1, o2: both withheld) gives way to the next with a released entry;
    // after it only withheld entries follow, so there is no `next` link.
    assert_eq!(ids(&a), ["o3"]);
    assert_eq!(ids(&a), ids(&b));
    assert_eq!(relations(&a), relations(&b), "{} / {}", a.text(), b.text());
    assert!(!relations(&a).contains(&"next".to_owned()));
    assert_eq!(a.json().get("total"), b.json().get("total"));
    assert!(
        !a.text().contains("\"outcome\""),
        "no withheld notice: {}",
        a.text()
    );
    // The withheld entries' ids, as an id or in a reference (a bare "o1" may occur by
    // chance inside a signed paging token).
    for withheld in ["\"o1\"", "/o1", "\"o4\"", "/o4"] {
        assert!(!a.text().contains(withheld), "{withheld}: {}", a.text());
    }
}

#[actix_web::test]
async fn counts_are_taken_over_released_matches_of_named_patients_only() {
    let site = paged_site(true);
    let gw = gateway(&site).await;
    let got = get(&gw.url("/fhir/st-mary/Observation?patient=p1&_summary=count")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["total"], 1);
    assert!(got.json().get("entry").is_none());
    assert!(
        site.requests()
            .iter()
            .all(|r| !r.query.contains("_summary")),
        "the site is asked for whole resources"
    );
    for path in [
        "/fhir/st-mary/Observation?code=x&_summary=count",
        "/fhir/st-mary/Observation?code=x&_count=0",
    ] {
        let got = get(&gw.url(path)).await;
        assert_eq!(
            (got.status, got.error_code().as_str()),
            (403, "count-not-released"),
            "{path}"
        );
    }
    // A named patient who denies: refused before anything is counted.
    let n = site.requests().len();
    let got = get(&gw.url("/fhir/st-mary/Observation?patient=p2&_count=0")).await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (403, "consent-denied")
    );
    assert_eq!(site.requests().len(), n);
}

#[actix_web::test]
async fn shaping_and_conditional_reads_are_the_gateways() {
    let site = paged_site(true);
    let gw = gateway(&site).await;
    let got = get(&gw.url("/fhir/st-mary/Observation?patient=p1&_elements=code")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = site.requests().pop().unwrap();
    assert!(!seen.query.contains("_elements"), "{}", seen.query);
    let resource = &got.json()["entry"][0]["resource"];
    assert_eq!(resource["id"], "o3");
    assert!(resource.get("subject").is_none(), "{resource}");
    assert_eq!(resource["code"]["text"], "x");
    assert_eq!(resource["meta"]["tag"][0]["code"], "SUBSETTED");

    let conditional = |id: &str| {
        let url = gw.url(&format!("/fhir/st-mary/Observation/{id}"));
        async move {
            send(
                "GET",
                &url,
                Some(clinician_token()),
                &[("if-none-match", "W/\"1\"")],
                None,
            )
            .await
        }
    };
    let got = conditional("o3").await;
    assert_eq!(got.status, 304);
    assert_eq!(got.header("etag"), Some("W/\"1\""));
    assert!(
        site.requests()
            .iter()
            .all(|r| r.header("if-none-match").is_none()),
        "conditional headers are never forwarded"
    );
    // A denied resource is not "not modified": it is not found.
    let got = conditional("o1").await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (404, "resource-not-found")
    );
}

#[actix_web::test]
async fn get_and_post_search_are_decided_alike() {
    let site = paged_site(true);
    let gw = gateway(&site).await;
    let get_denied = get(&gw.url("/fhir/st-mary/Observation?patient=p2")).await;
    let post = |body: &'static str| {
        let url = gw.url("/fhir/st-mary/Observation/_search");
        async move {
            send(
                "POST",
                &url,
                Some(clinician_token()),
                &[("content-type", "application/x-www-form-urlencoded")],
                Some(body.as_bytes().to_vec()),
            )
            .await
        }
    };
    let n = site.requests().len();
    for got in [
        get_denied,
        post("patient=p2").await,
        post("patient=Patient%2Fp2&code=x").await,
        post("subject:Patient=p2").await,
    ] {
        assert_eq!(
            (got.status, got.error_code().as_str()),
            (403, "consent-denied"),
            "{}",
            got.text()
        );
    }
    assert_eq!(site.requests().len(), n, "nothing was forwarded");
    let got = post("patient=p1").await;
    assert_eq!(got.status, 200);
    assert_eq!(ids(&got), ["o3"]);
}

#[actix_web::test]
async fn the_sites_lies_are_not_passed_on() {
    let site = FakeUpstream::start(|req, base| {
        let obs = |id: &str, p: &str| {
            json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": "x"},
                "text": {"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">see {base}/Patient/{p}</div>")},
                "subject": {"reference": format!("Patient/{p}")}})
        };
        match req.path.trim_start_matches("/fhir/") {
            // A read answered with another resource.
            "Observation/o3" => FakeResponse::json(200, obs("o4", "p2")),
            "Observation/o5" => FakeResponse::json(200, obs("o5", "p1")),
            _ => FakeResponse::json(
                200,
                json!({"resourceType": "Bundle", "type": "searchset", "entry": [
                    {"resource": obs("o3", "p1"), "search": {"mode": "match"}},
                    {"resource": obs("o1", "p2"), "search": {"mode": "outcome"}},
                    {"resource": {"resourceType": "OperationOutcome", "issue": [{"severity": "warning", "code": "processing",
                        "diagnostics": "slow query on db01.internal:5432"}]}, "search": {"mode": "outcome"}},
                ]}),
            ),
        }
    });
    let gw = gateway(&site).await;
    let got = get(&gw.url("/fhir/st-mary/Observation/o3")).await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (502, "upstream-mismatch")
    );
    assert!(!got.text().contains("o4"));
    let got = get(&gw.url("/fhir/st-mary/Observation?code=x")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(
        ids(&got),
        ["o3"],
        "the outcome-mode entry was decided and withheld"
    );
    assert!(!got.text().contains("db01.internal"));
    let upstream = site.addr.to_string();
    assert!(!got.text().contains(&upstream), "{}", got.text());
    let got = get(&gw.url("/fhir/st-mary/Observation/o5")).await;
    assert_eq!(got.status, 200);
    assert!(!got.text().contains(&upstream), "{}", got.text());
    assert!(got.text().contains(&gw.url("/fhir/st-mary/Patient/p1")));
}

#[actix_web::test]
async fn operations_pass_only_from_the_allow_list() {
    let site = paged_site(true);
    let gw = gateway(&site).await;
    let n = site.requests().len();
    for path in [
        "/fhir/st-mary/Observation/$lastn?patient=p1",
        "/fhir/st-mary/Observation/$stats",
        "/fhir/st-mary/Composition/c1/$document",
        "/fhir/st-mary/$meta",
    ] {
        let got = get(&gw.url(path)).await;
        assert_eq!(
            (got.status, got.error_code().as_str()),
            (403, "operation-not-allowed"),
            "{path}"
        );
    }
    assert_eq!(site.requests().len(), n);
}

#[actix_web::test]
async fn patients_named_by_identifier_are_placed_at_the_site_or_denied() {
    const MRN: &str = "urn:oid:1.2.3.4";
    let site = FakeUpstream::start(|req, _| {
        let by_identifier = |sys: &str, value: &str| {
            json!({"resourceType": "Observation", "id": format!("o-{value}"), "status": "final", "code": {"text": "x"},
                "subject": {"identifier": {"system": sys, "value": value}}})
        };
        let path = req.path.trim_start_matches("/fhir/");
        match path {
            "Patient" => {
                // The lookup: `identifier=system|value`; MRN 1 is p1, MRN 2 is p2.
                let query: Vec<(String, String)> =
                    url::form_urlencoded::parse(req.query.as_bytes())
                        .into_owned()
                        .collect();
                let wanted = query
                    .iter()
                    .find(|(n, _)| n == "identifier")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                let entries: Vec<Value> = [("p1", "1"), ("p2", "2")]
                    .iter()
                    .filter(|(_, mrn)| wanted == format!("{MRN}|{mrn}"))
                    .map(|(id, mrn)| {
                        json!({"resource": {"resourceType": "Patient", "id": id,
                        "identifier": [{"system": MRN, "value": mrn}]}})
                    })
                    .collect();
                FakeResponse::json(
                    200,
                    json!({"resourceType": "Bundle", "type": "searchset", "entry": entries}),
                )
            }
            "Observation/o-1" => FakeResponse::json(200, by_identifier(MRN, "1")),
            "Observation/o-2" => FakeResponse::json(200, by_identifier(MRN, "2")),
            "Observation/o-3" => FakeResponse::json(200, by_identifier("urn:other", "3")),
            _ => FakeResponse::json(404, json!({"resourceType": "OperationOutcome"})),
        }
    });
    let gw = TestGateway::new()
        .site_with(
            "st-mary",
            json!({"upstream": site.base_url(), "fhir_version": "R4", "default_policy": "opt-out",
                "patient_identifier_systems": [MRN]}),
        )
        .start();
    let stored = send(
        "POST",
        &gw.url("/consent/Consent?site=st-mary"),
        Some(admin_token()),
        &[("content-type", "application/fhir+json")],
        Some(
            consent("c-p2", "p2", "dr-alice", false)
                .to_string()
                .into_bytes(),
        ),
    )
    .await;
    assert_eq!(stored.status, 201, "{}", stored.text());
    let read = |id: &str| {
        let url = gw.url(&format!("/fhir/st-mary/Observation/{id}"));
        async move { get(&url).await }
    };
    // MRN 1 is p1 (no consent, opt-out): released, and its receipt names p1.
    let got = read("o-1").await;
    assert_eq!(got.status, 200, "{}", got.text());
    let receipt = got.header("x-assent-receipt").unwrap();
    let reached: Vec<String> = gw
        .gateway
        .state
        .store
        .receipt_patients(receipt)
        .unwrap()
        .into_iter()
        .map(|r| r.patient)
        .collect();
    assert_eq!(reached, ["st-mary/Patient/p1"]);
    // MRN 2 is p2, who denies dr-alice; another system cannot be placed: both withheld,
    // even on an opt-out site.
    for id in ["o-2", "o-3"] {
        let got = read(id).await;
        assert_eq!(
            (got.status, got.error_code().as_str()),
            (404, "resource-not-found"),
            "{id}"
        );
    }
    // A search naming the patient by identifier is decided before forwarding.
    let n = site.requests().len();
    let got = get(&gw.url(&format!(
        "/fhir/st-mary/Observation?patient.identifier={MRN}%7C2"
    )))
    .await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (403, "consent-denied")
    );
    assert!(
        site.requests()[n..]
            .iter()
            .all(|r| !r.path.ends_with("/Observation")),
        "only the identifier was looked up"
    );
}
