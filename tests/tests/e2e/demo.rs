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
    assert!(patients.json()["total"].as_u64().unwrap() >= 20);

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

    let stu3 = send(
        "GET",
        &format!("{base}/fhir/north-general/Patient/ng-p001"),
        key,
        &[],
        None,
    )
    .await;
    assert_eq!(
        (stu3.status, stu3.error_code().as_str()),
        (403, "consent-denied")
    );

    let admin = send("GET", &format!("{base}/admin/sites"), key, &[], None).await;
    assert_eq!(admin.status, 200, "{}", admin.text());
}

async fn bundle_total(url: &str, key: Option<&str>) -> u64 {
    send("GET", url, key, &[], None).await.json()["total"]
        .as_u64()
        .unwrap()
}
