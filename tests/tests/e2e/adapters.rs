//! Site adapters through the gateway: a site with an adapter answers reads and searches in the
//! network's identifier systems and codes, gets search values in its own, the `$translate`
//! dry run shows output and issues, and the admin reload keeps the old adapter on error and
//! swaps on success.

use std::path::{Path, PathBuf};

use assent_e2e::*;
use serde_json::{Value, json};

const SITE_MRN: &str = "urn:oid:1.2.36.1.2001.1005";
const NETWORK_MRN: &str = "https://network.test/sid/mrn";
const LOCAL_LAB: &str = "urn:test:st-mary:lab";
const LOINC: &str = "http://loinc.org";

/// An adapter whose network MRN system is `network_mrn`, with a lab ConceptMap.
fn adapter_text(network_mrn: &str) -> String {
    format!(
        "description = \"e2e\"\n\n[[identifier_systems]]\nsite = \"{SITE_MRN}\"\nnetwork = \"{network_mrn}\"\n\n[[concept_maps]]\nfile = \"maps/lab.json\"\nsource = \"site\"\n"
    )
}

/// Writes the adapter and its ConceptMap into `dir`; returns the adapter's path.
fn write_adapter(dir: &Path, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("maps")).unwrap();
    std::fs::write(
        dir.join("maps/lab.json"),
        json!({"resourceType": "ConceptMap", "url": "urn:test:map:lab", "status": "active",
            "group": [{"source": LOCAL_LAB, "target": LOINC, "element": [
                {"code": "GLU", "target": [{"code": "2345-7", "display": "Glucose", "equivalence": "equivalent"}]},
                {"code": "HB", "target": [{"code": "718-7", "equivalence": "wider"}]}]}]})
        .to_string(),
    )
    .unwrap();
    let path = dir.join("st-mary.adapter.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn site_observation(id: &str, code: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
        "code": {"coding": [{"system": LOCAL_LAB, "code": code, "display": "local"}]},
        "subject": {"reference": "Patient/p1", "identifier": {"system": SITE_MRN, "value": "4711"}}})
}

fn site_patient() -> Value {
    json!({"resourceType": "Patient", "id": "p1",
        "identifier": [{"system": SITE_MRN, "value": "4711"}]})
}

/// A fake site speaking its own dialect: Patient and Observation reads and searches.
fn site_upstream() -> FakeUpstream {
    FakeUpstream::start(|req, _| {
        let body = if req.path.ends_with("/Observation/o1") {
            site_observation("o1", "GLU")
        } else if req.path.ends_with("/Observation/o2") {
            site_observation("o2", "UNMAPPED")
        } else if req.path.ends_with("/Patient/p1") {
            site_patient()
        } else {
            json!({"resourceType": "Bundle", "type": "searchset", "entry": [
                {"resource": site_patient()},
                {"resource": site_observation("o1", "GLU")},
                {"resource": site_observation("o3", "HB")}]})
        };
        FakeResponse::json(200, body)
    })
}

fn gateway(upstream: &FakeUpstream, adapter: &Path) -> StartedGateway {
    TestGateway::new()
        .site_with(
            "st-mary",
            json!({"upstream": upstream.base_url(), "fhir_version": "R4",
                   "default_policy": "opt-out", "adapter": adapter.display().to_string()}),
        )
        .site("plain", &upstream.base_url())
        .start()
}

#[actix_web::test]
async fn reads_and_searches_are_answered_in_the_networks_identifiers_and_codes() {
    let dir = tempfile::tempdir().unwrap();
    let adapter = write_adapter(dir.path(), &adapter_text(NETWORK_MRN));
    let upstream = site_upstream();
    let gw = gateway(&upstream, &adapter);

    let read = get(&gw.url("/fhir/st-mary/Observation/o1")).await;
    assert_eq!(read.status, 200, "{}", read.text());
    let obs = read.json();
    assert_eq!(
        obs["code"]["coding"],
        json!([{"system": LOINC, "code": "2345-7", "display": "Glucose"}])
    );
    assert_eq!(obs["subject"]["identifier"]["system"], NETWORK_MRN);
    assert_eq!(read.header("x-assent-translation-issues"), Some("0"));

    // A code without a mapping is kept, and counted.
    let unmapped = get(&gw.url("/fhir/st-mary/Observation/o2")).await;
    assert_eq!(unmapped.status, 200, "{}", unmapped.text());
    assert_eq!(unmapped.json()["code"]["coding"][0]["code"], "UNMAPPED");
    assert_eq!(unmapped.header("x-assent-translation-issues"), Some("1"));

    // Search values go to the site in its own systems and codes.
    let search = get(&gw.url(
        "/fhir/st-mary/Patient?identifier=https%3A%2F%2Fnetwork.test%2Fsid%2Fmrn%7C4711&_count=10",
    ))
    .await;
    assert_eq!(search.status, 200, "{}", search.text());
    let seen = upstream.requests();
    let last = seen.last().unwrap();
    assert_eq!(last.path, "/fhir/Patient");
    assert_eq!(
        last.query,
        format!("identifier={}%7C4711&_count=10", SITE_MRN)
    );
    let bundle = search.json();
    assert_eq!(
        bundle["entry"][0]["resource"]["identifier"][0]["system"],
        NETWORK_MRN
    );
    assert_eq!(
        bundle["entry"][1]["resource"]["code"]["coding"][0]["code"],
        "2345-7"
    );
    // HB → 718-7 is an approximation: translated and counted.
    assert_eq!(
        bundle["entry"][2]["resource"]["code"]["coding"][0]["code"],
        "718-7"
    );
    assert_eq!(search.header("x-assent-translation-issues"), Some("1"));

    let by_code = get(&gw.url("/fhir/st-mary/Observation?code=http://loinc.org%7C2345-7")).await;
    assert_eq!(by_code.status, 200, "{}", by_code.text());
    assert_eq!(
        upstream.requests().last().unwrap().query,
        format!("code={LOCAL_LAB}%7CGLU")
    );

    // POST _search: the form body is rewritten the same way.
    let posted = send(
        "POST",
        &gw.url("/fhir/st-mary/Observation/_search"),
        Some(clinician_token()),
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(b"code=http%3A%2F%2Floinc.org%7C2345-7".to_vec()),
    )
    .await;
    assert_eq!(posted.status, 200, "{}", posted.text());
    assert_eq!(
        String::from_utf8_lossy(&upstream.requests().last().unwrap().body),
        format!("code={LOCAL_LAB}%7CGLU")
    );

    // A site without an adapter is streamed and left as it is.
    let plain = get(&gw.url("/fhir/plain/Observation/o1")).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.json()["code"]["coding"][0]["code"], "GLU");
    assert_eq!(plain.header("x-assent-translation-issues"), None);
}

async fn post_admin(gw: &StartedGateway, path: &str, token: &str, body: Option<Value>) -> Got {
    send(
        "POST",
        &gw.url(path),
        Some(token),
        &[("content-type", "application/fhir+json")],
        body.map(|b| b.to_string().into_bytes()),
    )
    .await
}

fn parameter<'a>(parameters: &'a Value, name: &str) -> &'a Value {
    parameters["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no parameter {name}: {parameters}"))
}

#[actix_web::test]
async fn translate_is_a_dry_run_showing_output_and_issues() {
    let dir = tempfile::tempdir().unwrap();
    let adapter = write_adapter(dir.path(), &adapter_text(NETWORK_MRN));
    let upstream = site_upstream();
    let gw = gateway(&upstream, &adapter);
    let path = "/admin/sites/st-mary/$translate?to=R5";

    let refused = post_admin(
        &gw,
        path,
        clinician_token(),
        Some(site_observation("x", "GLU")),
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.text());

    let got = post_admin(&gw, path, admin_token(), Some(site_observation("x", "HB"))).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let parameters = got.json();
    assert_eq!(parameters["resourceType"], "Parameters");
    let output = &parameter(&parameters, "return")["resource"];
    assert_eq!(output["code"]["coding"][0]["code"], "718-7");
    assert_eq!(output["subject"]["identifier"]["system"], NETWORK_MRN);
    let outcome = &parameter(&parameters, "outcome")["resource"];
    assert_eq!(outcome["issue"][0]["severity"], "warning");
    assert_eq!(
        outcome["issue"][0]["expression"][0],
        "Observation.code.coding[0]"
    );
    assert_eq!(parameter(&parameters, "to")["valueCode"], "R5");
    assert_eq!(parameter(&parameters, "from")["valueCode"], "R4");
    assert!(
        parameter(&parameters, "adapter")["valueString"]
            .as_str()
            .unwrap()
            .ends_with("st-mary.adapter.toml")
    );

    // Towards the site: network identifiers and codes in, the site's out.
    let to_site = json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "2345-7"}]},
        "subject": {"identifier": {"system": NETWORK_MRN, "value": "4711"}}});
    let got = post_admin(
        &gw,
        "/admin/sites/st-mary/$translate?direction=to-site",
        admin_token(),
        Some(to_site),
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let parameters = got.json();
    let output = &parameter(&parameters, "return")["resource"];
    assert_eq!(output["code"]["coding"][0]["code"], "GLU");
    assert_eq!(output["subject"]["identifier"]["system"], SITE_MRN);
    assert_eq!(parameter(&parameters, "issues")["valueInteger"], 0);
    assert_eq!(
        parameter(&parameters, "outcome")["resource"]["issue"][0]["severity"],
        "information"
    );

    // Nothing reached the site.
    assert!(upstream.requests().is_empty());

    let bad = post_admin(
        &gw,
        "/admin/sites/st-mary/$translate?direction=sideways",
        admin_token(),
        Some(site_patient()),
    )
    .await;
    assert_eq!(bad.error_code(), "malformed-request");
    let absent_in_r5 = post_admin(
        &gw,
        path,
        admin_token(),
        Some(json!({"resourceType": "Media"})),
    )
    .await;
    assert_eq!(absent_in_r5.status, 422);
    assert_eq!(absent_in_r5.error_code(), "invalid-resource");
    let unknown = post_admin(
        &gw,
        "/admin/sites/nowhere/$translate",
        admin_token(),
        Some(site_patient()),
    )
    .await;
    assert_eq!(unknown.error_code(), "unknown-site");
}

#[actix_web::test]
async fn admin_reload_keeps_the_old_adapter_on_error_and_swaps_on_success() {
    let dir = tempfile::tempdir().unwrap();
    let adapter = write_adapter(dir.path(), &adapter_text(NETWORK_MRN));
    let upstream = site_upstream();
    let gw = gateway(&upstream, &adapter);
    let reload = "/admin/sites/st-mary/$reload-adapter";
    let mrn_system = || async {
        let got = get(&gw.url("/fhir/st-mary/Patient/p1")).await;
        assert_eq!(got.status, 200, "{}", got.text());
        got.json()["identifier"][0]["system"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(mrn_system().await, NETWORK_MRN);

    let summary = send(
        "GET",
        &gw.url("/admin/sites/st-mary"),
        Some(admin_token()),
        &[],
        None,
    )
    .await
    .json();
    assert_eq!(summary["adapter"]["identifierSystems"], 1);
    assert_eq!(summary["adapter"]["mappedCodes"], 2);

    // Broken: an unknown key on line 5. The answer names file, line and key; the old adapter
    // keeps serving.
    std::fs::write(
        &adapter,
        adapter_text("https://network.test/sid/mrn-v2").replace("network =", "netwrok ="),
    )
    .unwrap();
    let refused = post_admin(&gw, reload, admin_token(), None).await;
    assert_eq!(refused.status, 422, "{}", refused.text());
    assert_eq!(refused.error_code(), "adapter-invalid");
    let outcome = refused.json();
    let diagnostics = outcome["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(
        diagnostics.contains("st-mary.adapter.toml:5: key `identifier_systems[0].netwrok`"),
        "{diagnostics}"
    );
    assert_eq!(
        outcome["issue"][0]["expression"][0],
        "identifier_systems[0].netwrok"
    );
    assert_eq!(mrn_system().await, NETWORK_MRN);

    // Not an admin: refused before anything is read.
    let forbidden = post_admin(&gw, reload, clinician_token(), None).await;
    assert_eq!(forbidden.status, 403);

    // Fixed: swapped in, and the next request uses it.
    std::fs::write(&adapter, adapter_text("https://network.test/sid/mrn-v2")).unwrap();
    let reloaded = post_admin(&gw, reload, admin_token(), None).await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.text());
    assert_eq!(reloaded.json()["reloaded"], true);
    assert_eq!(mrn_system().await, "https://network.test/sid/mrn-v2");

    let none = post_admin(
        &gw,
        "/admin/sites/plain/$reload-adapter",
        admin_token(),
        None,
    )
    .await;
    assert_eq!(none.status, 404);
    assert_eq!(none.error_code(), "adapter-not-configured");
}

#[test]
fn a_gateway_with_a_broken_adapter_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let adapter = write_adapter(dir.path(), &adapter_text("not a uri"));
    let config = assent_gateway::config::Config::from_value(json!({
        "listen": "127.0.0.1:0",
        "database_url": dir.path().join("gw.db").display().to_string(),
        "sites": {"st-mary": {"upstream": "http://127.0.0.1:9/fhir", "fhir_version": "R4",
                              "default_policy": "opt-out", "adapter": adapter.display().to_string()}},
    }))
    .unwrap();
    let error = assent_gateway::app::spawn(config)
        .err()
        .expect("the start is refused")
        .to_string();
    assert!(
        error.contains("sites.st-mary.adapter") && error.contains("identifier_systems[0].network"),
        "{error}"
    );
}
