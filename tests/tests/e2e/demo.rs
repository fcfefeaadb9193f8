//! The demo answers a read, a search with paging and an unknown-site error, from two sample
//! sites of at least 20 patients each, to a token got from its identity provider as its
//! instructions say.

use assent_e2e::*;
use assent_gateway::demo;

#[actix_web::test]
async fn the_demo_answers_as_its_instructions_say() {
    let running = demo::start("127.0.0.1:0".parse().unwrap()).expect("demo starts");
    let base = running.gateway.base_url();
    let token_url = running.identity_provider.token_url();
    let instructions = running.instructions();
    assert!(instructions.contains(&format!("{base}/fhir/st-mary/Patient/stm-p001")));
    assert!(instructions.contains(&format!(
        "-d client_id={} {token_url}",
        demo::DEMO_CLINICIAN
    )));

    // Get a token as the instructions do.
    let form = format!(
        "grant_type=client_credentials&client_id={}",
        demo::DEMO_CLINICIAN
    );
    let got = send(
        "POST",
        &token_url,
        None,
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(form.into_bytes()),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.header("cache-control"), Some("no-store"));
    let token = got.json()["access_token"].as_str().unwrap().to_owned();
    let key = Some(token.as_str());

    let anonymous = send(
        "GET",
        &format!("{base}/fhir/st-mary/Patient/stm-p001"),
        None,
        &[],
        None,
    )
    .await;
    assert_eq!(anonymous.status, 401);

    let read = send(
        "GET",
        &format!("{base}/fhir/st-mary/Patient/stm-p001"),
        key,
        &[],
        None,
    )
    .await;
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(read.json()["id"], "stm-p001");

    let patients = send(
        "GET",
        &format!("{base}/fhir/st-mary/Patient?_count=50"),
        key,
        &[],
        None,
    )
    .await;
    let listed = patients.json()["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .count();
    // 24 at the site; stm-p003 refused every disclosure and is withheld.
    assert!(listed >= 20, "{listed}");

    let mut url = format!("{base}/fhir/st-mary/Observation?patient=stm-p001&_count=2");
    let mut pages = 0;
    let mut seen = 0;
    loop {
        let page = send("GET", &url, key, &[], None).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let bundle = page.json();
        seen += bundle["entry"].as_array().map(Vec::len).unwrap_or(0);
        pages += 1;
        match bundle["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
        {
            Some(next) => url = next["url"].as_str().unwrap().to_owned(),
            None => break,
        }
        assert!(
            url.starts_with(&base) && url.contains("_assent_page="),
            "{url}"
        );
    }
    assert!(pages >= 2, "at least three observations make two pages");
    assert_eq!(
        seen as u64,
        bundle_total(
            &format!("{base}/fhir/st-mary/Observation?patient=stm-p001&_count=50"),
            key
        )
        .await
    );
    assert!(seen >= 3);

    let unknown = send(
        "GET",
        &format!("{base}/fhir/no-such-site/Patient/1"),
        key,
        &[],
        None,
    )
    .await;
    assert_eq!(
        (unknown.status, unknown.error_code().as_str()),
        (404, "unknown-site")
    );

    // Consent, as the instructions show it.
    let get = |path: String| {
        let url = format!("{base}{path}");
        let key = key.map(str::to_owned);
        async move { send("GET", &url, key.as_deref(), &[], None).await }
    };
    let consented = get("/fhir/north-general/Patient/ng-p001".into()).await;
    assert_eq!(consented.status, 200, "{}", consented.text());
    assert!(
        consented
            .header("x-assent-consent")
            .unwrap()
            .starts_with(&format!("consent:{}@1", demo::DEMO_REVOCABLE_CONSENT))
    );
    let none = get("/fhir/north-general/Patient/ng-p003".into()).await;
    assert_eq!(
        (none.status, none.error_code().as_str()),
        (403, "consent-denied")
    );
    let opted_out = get("/fhir/st-mary/Patient/stm-p003".into()).await;
    assert_eq!(opted_out.error_code(), "consent-denied");
    assert_eq!(
        get("/fhir/st-mary/Patient/stm-p004".into()).await.status,
        200
    );
    let conditions = get("/fhir/st-mary/Condition?patient=stm-p004".into()).await;
    assert_eq!(conditions.error_code(), "consent-denied");
    let everything = get("/fhir/st-mary/Patient/stm-p004/$everything".into()).await;
    assert_eq!(everything.status, 200, "{}", everything.text());
    let everything = everything.json();
    let entries = everything["entry"].as_array().unwrap();
    let types: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["resource"]["resourceType"].as_str())
        .collect();
    assert!(
        types.contains(&"Observation") && !types.contains(&"Condition"),
        "{types:?}"
    );
    assert!(entries.iter().any(|e| e["search"]["mode"] == "outcome"));
    // Break-glass, as the instructions show it: dr-bob's default token has the grant and
    // purpose ETREAT.
    assert!(instructions.contains("X-Assent-Break-Glass-Reason"));
    let got = send(
        "POST",
        &token_url,
        None,
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(b"grant_type=client_credentials&client_id=dr-bob".to_vec()),
    )
    .await;
    let bob = got.json()["access_token"].as_str().unwrap().to_owned();
    let url = format!("{base}/fhir/north-general/Patient/ng-p003");
    let refused = send("GET", &url, Some(&bob), &[], None).await;
    assert_eq!(refused.error_code(), "break-glass-justification-required");
    let glass = send(
        "GET",
        &url,
        Some(&bob),
        &[("x-assent-break-glass-reason", "unconscious in ER")],
        None,
    )
    .await;
    assert_eq!(glass.status, 200, "{}", glass.text());
    assert_eq!(
        glass.header("x-assent-consent"),
        Some("break-glass:site-default:opt-in")
    );
    assert!(instructions.contains("$revoke"));
    let revoked = send(
        "POST",
        &format!(
            "{base}/consent/Consent/{}/$revoke",
            demo::DEMO_REVOCABLE_CONSENT
        ),
        key,
        &[],
        None,
    )
    .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    let after = get("/fhir/north-general/Patient/ng-p001".into()).await;
    assert_eq!(after.error_code(), "consent-denied");

    let admin = send("GET", &format!("{base}/admin/sites"), key, &[], None).await;
    assert_eq!(admin.status, 200, "{}", admin.text());
}

async fn bundle_total(url: &str, key: Option<&str>) -> u64 {
    send("GET", url, key, &[], None).await.json()["total"]
        .as_u64()
        .unwrap()
}
