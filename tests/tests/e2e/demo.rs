//! The demo answers a read, a search with paging and an unknown-site error, from two sample
//! sites of at least 20 patients each.

use assent_e2e::*;
use assent_gateway::demo;

#[actix_web::test]
async fn the_demo_answers_as_its_instructions_say() {
    let running = demo::start("127.0.0.1:0".parse().unwrap()).expect("demo starts");
    let base = running.gateway.base_url();
    let key = Some(demo::DEMO_CLINICIAN_KEY);
    let instructions = demo::instructions(&base);
    assert!(instructions.contains(&format!("{base}/fhir/st-mary/Patient/stm-p001")));

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
}

async fn bundle_total(url: &str, key: Option<&str>) -> u64 {
    send("GET", url, key, &[], None).await.json()["total"]
        .as_u64()
        .unwrap()
}
