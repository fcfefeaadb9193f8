//! Real FHIR client libraries against the gateway, as applications use them: fhir-kit-client
//! (npm) discovers the SMART endpoints from the CapabilityStatement without a token, reads a
//! Patient, and follows a search's pages with its own `nextPage`; fhirpy (PyPI), whose HTTP
//! layer (aiohttp, yarl) re-encodes every link it follows, reads the statement and a Patient
//! and follows every page of a search with a URL and a `|` in its query; fhirclient (PyPI,
//! SMART's Python client) `prepare()`s without a token, reading the statement into its strict
//! R4 models, then reads a Patient. All are pinned in `tests/fhir-clients` and installed by
//! scripts/test.sh.

use std::path::PathBuf;
use std::process::Command;

use assent_e2e::*;
use serde_json::{Value, json};

/// A FAKE upstream: Patient p1, and 5 Observations in pages of 2 whose links carry a URL and
/// a `|`, percent-encoded as HAPI writes them.
fn upstream() -> FakeUpstream {
    FakeUpstream::start(|req, base| {
        if req.path.ends_with("/Patient/p1") {
            return FakeResponse::json(200, json!({"resourceType": "Patient", "id": "p1"}));
        }
        if req.path.ends_with("/metadata") {
            return FakeResponse::json(
                200,
                // Without the `date`, `status` and `kind` R4 requires: the gateway's statement
                // has them all the same (fhirclient's models refuse a statement without).
                json!({"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1",
                    "format": ["xml", "json"], "rest": [{"mode": "server"}]}),
            );
        }
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
        let query = "code=http%3A%2F%2Floinc.org%7C8867-4&_count=2";
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

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fhir-clients")
}

#[actix_web::test]
async fn fhir_kit_client_discovers_reads_and_pages_through_the_gateway() {
    let dir = fixture_dir();
    assert!(
        dir.join("node_modules/fhir-kit-client").is_dir(),
        "fhir-kit-client is not installed in {}: run `npm ci --prefix tests/fhir-clients` (scripts/test.sh does)",
        dir.display()
    );
    let upstream = upstream();
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let base = gw.url("/fhir/st-mary");
    let search = json!({"code": "http://loinc.org|8867-4", "_count": "2"}).to_string();
    let output = actix_web::web::block(move || {
        Command::new("node")
            .arg(dir.join("client.mjs"))
            .args([base.as_str(), clinician_token(), "p1", search.as_str()])
            .current_dir(&dir)
            .output()
    })
    .await
    .unwrap()
    .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got: Value = serde_json::from_str(stdout.trim()).unwrap();
    let issuer = identity_provider().issuer();
    assert_eq!(got["tokenUrl"], format!("{issuer}/token"), "{got}");
    assert_eq!(got["fhirVersion"], "4.0.1");
    assert_eq!(got["patient"], "p1");
    assert_eq!(
        got["pages"],
        json!([["o0", "o1"], ["o2", "o3"], ["o4"]]),
        "{got}"
    );
}

#[actix_web::test]
async fn fhirpy_follows_every_page_though_its_http_layer_re_encodes_the_links() {
    let dir = fixture_dir();
    let python = dir.join(".venv/bin/python");
    assert!(
        python.is_file(),
        "fhirpy is not installed in {}: run `python3 -m venv tests/fhir-clients/.venv && tests/fhir-clients/.venv/bin/pip install -r tests/fhir-clients/requirements.txt` (scripts/test.sh does)",
        dir.display()
    );
    let upstream = upstream();
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let base = gw.url("/fhir/st-mary");
    let output = actix_web::web::block(move || {
        Command::new(python)
            .arg(dir.join("fhirpy_client.py"))
            .args([
                base.as_str(),
                clinician_token(),
                "p1",
                "http://loinc.org|8867-4",
            ])
            .current_dir(&dir)
            .output()
    })
    .await
    .unwrap()
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(got["fhirVersion"], "4.0.1", "{got}");
    assert_eq!(got["patient"], "p1");
    assert_eq!(got["ids"], json!(["o0", "o1", "o2", "o3", "o4"]), "{got}");
    // fhirpy followed pages 2 and 3 in another encoding than the gateway wrote them (`%3A%2F`
    // decoded); the gateway forwards a followed link's query as it came (the other requests
    // of those pages are the gateway's own look-ahead, in the site's encoding).
    let followed: Vec<String> = upstream
        .requests()
        .iter()
        .filter(|r| r.query.contains("page=") && r.query.contains("code=http://loinc.org"))
        .map(|r| r.query.clone())
        .collect();
    assert_eq!(
        followed,
        [
            "code=http://loinc.org%7C8867-4&_count=2&page=2",
            "code=http://loinc.org%7C8867-4&_count=2&page=3"
        ]
    );
}

#[actix_web::test]
async fn fhirclient_prepares_without_a_token_and_reads() {
    let dir = fixture_dir();
    let python = dir.join(".venv/bin/python");
    assert!(
        python.is_file(),
        "fhirclient is not installed in {}: run `python3 -m venv tests/fhir-clients/.venv && tests/fhir-clients/.venv/bin/pip install -r tests/fhir-clients/requirements.txt` (scripts/test.sh does)",
        dir.display()
    );
    let upstream = upstream();
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let base = gw.url("/fhir/st-mary");
    let output = actix_web::web::block(move || {
        Command::new(python)
            .arg(dir.join("fhirclient_client.py"))
            .args([base.as_str(), clinician_token(), "p1"])
            .current_dir(&dir)
            .output()
    })
    .await
    .unwrap()
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got: Value = serde_json::from_str(stdout.trim()).unwrap();
    let issuer = identity_provider().issuer();
    assert_eq!(got["token_uri"], format!("{issuer}/token"), "{got}");
    assert_eq!(got["fhirVersion"], "4.0.1");
    assert_eq!(got["patient"], "p1");
}
