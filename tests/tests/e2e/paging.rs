//! Paging links: rewritten to the gateway, signed for one caller and one site, and checked on
//! the way back; every page goes through the whole pipeline again.

use assent_e2e::*;
use serde_json::{Value, json};

/// A FAKE upstream with 5 Observations, pages of 2, next links in its own URL space (with the
/// query shape HAPI uses at the base, and a type-level one).
fn paging_upstream() -> FakeUpstream {
    FakeUpstream::start(|req, base| {
        let offset: usize = req
            .query
            .split('&')
            .find_map(|p| p.strip_prefix("_getpagesoffset="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let entries: Vec<Value> = (offset..(offset + 2).min(5))
            .map(|i| json!({"fullUrl": format!("{base}/Observation/o{i}"), "resource": {"resourceType": "Observation", "id": format!("o{i}")}}))
            .collect();
        let mut links =
            vec![json!({"relation": "self", "url": format!("{base}/Observation?code=x")})];
        if offset + 2 < 5 {
            links.push(json!({"relation": "next", "url": format!("{base}?_getpages=abc&_getpagesoffset={}&_count=2", offset + 2)}));
        }
        FakeResponse::json(
            200,
            json!({"resourceType": "Bundle", "type": "searchset", "total": 5, "link": links, "entry": entries}),
        )
    })
}

fn next_link(bundle: &Value) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == "next")
        .map(|l| l["url"].as_str().unwrap().to_owned())
}

#[actix_web::test]
async fn pages_are_followed_through_the_gateway() {
    let upstream = paging_upstream();
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let mut url = gw.url("/fhir/st-mary/Observation?code=x&_count=2");
    let mut ids = Vec::new();
    for _ in 0..5 {
        let got = get(&url).await;
        assert_eq!(got.status, 200, "{url}: {}", got.text());
        let bundle = got.json();
        assert!(!got.text().contains(&upstream.addr.to_string()));
        ids.extend(
            bundle["entry"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["resource"]["id"].as_str().unwrap().to_owned()),
        );
        match next_link(&bundle) {
            Some(next) => {
                assert!(
                    next.starts_with(&gw.url("/fhir/st-mary?_getpages=abc")),
                    "{next}"
                );
                assert!(next.contains("_assent_page="), "{next}");
                url = next;
            }
            None => break,
        }
    }
    assert_eq!(ids, ["o0", "o1", "o2", "o3", "o4"]);
    // The token never reaches the upstream.
    assert!(
        upstream
            .requests()
            .iter()
            .all(|r| !r.query.contains("_assent_page"))
    );
}

#[actix_web::test]
async fn a_page_link_is_bound_to_its_caller_site_and_query() {
    let upstream = paging_upstream();
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .site("north-general", &upstream.base_url())
        .start();
    let first = get(&gw.url("/fhir/st-mary/Observation?code=x&_count=2")).await;
    let next = next_link(&first.json()).unwrap();
    let n_upstream = upstream.requests().len();

    // Someone else holding the link.
    let got = send("GET", &next, Some(other_clinician_token()), &[], None).await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (403, "bad-page-token")
    );
    // The same link replayed against another site.
    let got = get(&next.replace("/fhir/st-mary", "/fhir/north-general")).await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (403, "bad-page-token")
    );
    // The query altered.
    let got = get(&next.replace("_getpagesoffset=2", "_getpagesoffset=4")).await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (403, "bad-page-token")
    );
    // A forged token.
    let forged = format!(
        "{}99999999999.AAAA",
        &next[..next.find("_assent_page=").unwrap() + "_assent_page=".len()]
    );
    let got = get(&forged).await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (403, "bad-page-token")
    );
    // The base URL with a query and no token is no search.
    let got = get(&gw.url("/fhir/st-mary?_getpages=abc&_getpagesoffset=2")).await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (400, "malformed-request")
    );
    assert_eq!(
        upstream.requests().len(),
        n_upstream,
        "refused pages never reach the upstream"
    );

    // The rightful caller still gets the page.
    assert_eq!(get(&next).await.status, 200);
}

#[actix_web::test]
async fn links_to_elsewhere_are_removed() {
    let upstream = FakeUpstream::start(|_, base| {
        FakeResponse::json(
            200,
            json!({"resourceType": "Bundle", "type": "searchset", "link": [
                {"relation": "self", "url": format!("{base}/Patient")},
                {"relation": "next", "url": "https://other-hospital.example/fhir/Patient?page=2"},
            ]}),
        )
    });
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let got = get(&gw.url("/fhir/st-mary/Patient")).await;
    let bundle = got.json();
    assert_eq!(bundle["link"].as_array().unwrap().len(), 1);
    assert!(!got.text().contains("other-hospital"));
}

/// A FAKE upstream whose searches carry a URL and a `|` in their query, percent-encoded as
/// HAPI writes them: 5 Observations, pages of 2, `page=` in its own type-level links.
fn encoded_query_upstream() -> FakeUpstream {
    FakeUpstream::start(|req, base| {
        let page: usize = req
            .query
            .split('&')
            .find_map(|p| p.strip_prefix("page="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let offset = (page - 1) * 2;
        let entries: Vec<Value> = (offset..(offset + 2).min(5))
            .map(|i| json!({"fullUrl": format!("{base}/Observation/o{i}"), "resource": {"resourceType": "Observation", "id": format!("o{i}")}}))
            .collect();
        let query = "code=http%3A%2F%2Floinc.org%7C8867-4&_profile=http%3A%2F%2Fhl7.org%2Ffhir%2FStructureDefinition%2Fvitalsigns&_count=2";
        let mut links = vec![
            json!({"relation": "self", "url": format!("{base}/Observation?{query}&page={page}")}),
        ];
        if offset + 2 < 5 {
            links.push(json!({"relation": "next", "url": format!("{base}/Observation?{query}&page={}", page + 1)}));
        }
        FakeResponse::json(
            200,
            json!({"resourceType": "Bundle", "type": "searchset", "link": links, "entry": entries}),
        )
    })
}

/// What an HTTP layer that re-encodes queries (aiohttp, as fhirpy uses it) sends for `url`:
/// `%3A` and `%2F` decoded, `%7C` lower-cased; nothing reordered.
fn reencoded(url: &str) -> String {
    url.replace("%3A", ":")
        .replace("%2F", "/")
        .replace("%7C", "%7c")
}

fn entry_ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_owned())
        .collect()
}

#[actix_web::test]
async fn page_links_hold_when_the_client_re_encodes_the_query() {
    let upstream = encoded_query_upstream();
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let first = get(&gw.url(
        "/fhir/st-mary/Observation?code=http%3A%2F%2Floinc.org%7C8867-4&_profile=http%3A%2F%2Fhl7.org%2Ffhir%2FStructureDefinition%2Fvitalsigns&_count=2",
    ))
    .await;
    assert_eq!(first.status, 200, "{}", first.text());
    let mut next = next_link(&first.json()).unwrap();
    assert!(next.contains("%7C") && next.contains("%3A%2F%2F"), "{next}");
    let mut ids = entry_ids(&first.json());
    while !next.is_empty() {
        let url = reencoded(&next);
        assert_ne!(url, next);
        let got = get(&url).await;
        assert_eq!(got.status, 200, "{url}: {}", got.text());
        ids.extend(entry_ids(&got.json()));
        next = next_link(&got.json()).unwrap_or_default();
    }
    assert_eq!(ids, ["o0", "o1", "o2", "o3", "o4"]);
}

#[actix_web::test]
async fn a_re_encoded_page_link_still_refuses_tampering_other_callers_and_expiry() {
    let upstream = encoded_query_upstream();
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .set("paging", json!({"ttl_secs": 2}))
        .start();
    let first = get(&gw.url(
        "/fhir/st-mary/Observation?code=http%3A%2F%2Floinc.org%7C8867-4&_profile=http%3A%2F%2Fhl7.org%2Ffhir%2FStructureDefinition%2Fvitalsigns&_count=2",
    ))
    .await;
    let next = reencoded(&next_link(&first.json()).unwrap());
    let n_upstream = upstream.requests().len();
    let refused = |got: &Got, why: &str| {
        assert_eq!(
            (got.status, got.error_code().as_str()),
            (403, "bad-page-token"),
            "{}",
            got.text()
        );
        let outcome = got.json();
        let text = outcome["issue"][0]["details"]["text"].as_str().unwrap();
        assert!(
            text.contains(why) && text.contains("run the search again"),
            "{text}"
        );
    };
    // Another code in the same encoding, a `+` for a `%2B`, another order: not the link.
    for tampered in [
        next.replace("8867-4", "8867-5"),
        next.replace("%7c", "%2B"),
        next.replace("&_count=2", "").replacen("?", "?_count=2&", 1),
    ] {
        refused(&get(&tampered).await, "another caller, site or query");
    }
    refused(
        &send("GET", &next, Some(other_clinician_token()), &[], None).await,
        "another caller, site or query",
    );
    assert_eq!(upstream.requests().len(), n_upstream);
    assert_eq!(get(&next).await.status, 200);
    std::thread::sleep(std::time::Duration::from_millis(3100));
    refused(&get(&next).await, "expired");
}

#[actix_web::test]
async fn a_bundle_without_links_has_no_link_element() {
    for links in [
        json!([]),
        json!([{"relation": "next", "url": "https://other-hospital.example/fhir/Patient?page=2"}]),
    ] {
        let upstream = FakeUpstream::always(
            json!({"resourceType": "Bundle", "type": "searchset", "link": links}),
        );
        let gw = TestGateway::new()
            .site("st-mary", &upstream.base_url())
            .start();
        let got = get(&gw.url("/fhir/st-mary/Patient")).await;
        assert_eq!(got.status, 200, "{}", got.text());
        assert!(got.json().get("link").is_none(), "{}", got.text());
    }
}
