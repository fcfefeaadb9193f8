//! A consortium on one Fabric channel: two members' gateways (organizations `Org1MSP` and
//! `Org2MSP` of the FAKE Fabric, each with its own gateway peer, enrolment and database)
//! enforce each other's consents. A consent stored at member A is decided at member B; a
//! revocation made at B is enforced at A; B cannot overwrite A's consent; a consent document
//! tampered with in B's private store is refused at B (fail closed); and no block holds a
//! document, a patient id or a document's text (ADV). Each member anchors its own receipts,
//! and `assent verify` run with another member's configuration checks an export against the
//! channel (and finds a forged one).

use std::time::{Duration, Instant};

use assent_e2e::*;
use assent_fabric::testing::fake;
use assent_fabric::wire::DOCUMENTS_COLLECTION;
use assent_gateway::api::audit;
use assent_gateway::cli::verify::{self, VerifyArgs};
use assent_gateway::store::ReceiptFilter;
use assent_receipts::VerifyOptions;
use serde_json::json;

use crate::consent::{consent, hospital, put_consent};

const SITE: &str = "north-general";

/// A member's gateway: its own database (a fresh one per gateway), its own organization on
/// the channel, its own gateway id (anchors are per gateway).
fn member(upstream: &FakeUpstream, network: &FakeFabricNetwork, msp: &str) -> StartedGateway {
    TestGateway::new()
        .site_with(
            SITE,
            json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": "opt-in"}),
        )
        .set("ledger", network.ledger_config_of(msp))
        .set("gateway_id", json!(format!("gw-{}", msp.to_lowercase())))
        .start()
}

async fn read(gw: &StartedGateway, patient: &str) -> Got {
    send(
        "GET",
        &gw.url(&format!("/fhir/{SITE}/Patient/{patient}")),
        Some(clinician_token()), // Practitioner/dr-alice
        &[],
        None,
    )
    .await
}

async fn revoke(gw: &StartedGateway, id: &str) -> Got {
    send(
        "POST",
        &gw.url(&format!("/consent/Consent/{id}/$revoke")),
        Some(admin_token()),
        &[("content-type", "application/json")],
        Some(br#"{"reason": "patient-request"}"#.to_vec()),
    )
    .await
}

/// Polls a read of `patient` at `gw` until it answers `status`; the last answer.
async fn until_status(gw: &StartedGateway, patient: &str, status: u16) -> Got {
    let started = Instant::now();
    loop {
        let got = read(gw, patient).await;
        if got.status == status {
            return got;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "still {} after 15 s: {}",
            got.status,
            got.text()
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[actix_web::test]
async fn two_members_enforce_each_others_consents_and_no_document_reaches_the_channel() {
    let upstream = hospital();
    let network = FakeFabricNetwork::start();
    let a = member(&upstream, &network, fake::MSP);
    let b = member(&upstream, &network, fake::MSP2);

    // Stored at A, decided at B: B never stored the document; it fetches it through its own
    // peer from the collection and checks it against the hash on the channel.
    assert_eq!(
        read(&b, "pat-consortium-a").await.error_code(),
        "consent-denied"
    );
    let stored = put_consent(
        &a,
        SITE,
        &consent("c-cons-a", "pat-consortium-a", "dr-alice", true),
    )
    .await;
    assert_eq!(stored.status, 201, "{}", stored.text());
    let permitted = until_status(&b, "pat-consortium-a", 200).await;
    assert!(
        permitted
            .header("x-assent-consent")
            .is_some_and(|basis| basis.contains("c-cons-a")),
        "B's permit rests on A's consent: {:?}",
        permitted.header("x-assent-consent")
    );
    assert_eq!(read(&a, "pat-consortium-a").await.status, 200);

    // Revoked at B (any member may revoke), denied at A.
    let revoked = revoke(&b, "c-cons-a").await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert_eq!(
        read(&b, "pat-consortium-a").await.error_code(),
        "consent-denied"
    );
    let denied = until_status(&a, "pat-consortium-a", 403).await;
    assert_eq!(denied.error_code(), "consent-denied");

    // ADV: B cannot overwrite A's consent, neither widening nor narrowing it; A's version
    // stands and still decides, at both members.
    let granted = put_consent(
        &a,
        SITE,
        &consent("c-cons-b", "pat-consortium-b", "dr-alice", true),
    )
    .await;
    assert_eq!(granted.status, 201, "{}", granted.text());
    until_status(&b, "pat-consortium-b", 200).await;
    for (what, body) in [
        (
            "another practitioner",
            consent("c-cons-b", "pat-consortium-b", "dr-mallory", true),
        ),
        (
            "a denial",
            consent("c-cons-b", "pat-consortium-b", "dr-alice", false),
        ),
    ] {
        let overwrite = put_consent(&b, SITE, &body).await;
        assert!(
            overwrite.status == 403 || overwrite.status == 409,
            "{what}: B overwrote A's consent: {} {}",
            overwrite.status,
            overwrite.text()
        );
    }
    let history = send(
        "GET",
        &a.url("/consent/Consent/c-cons-b/_history"),
        Some(admin_token()),
        &[],
        None,
    )
    .await;
    assert_eq!(history.status, 200, "{}", history.text());
    assert_eq!(
        history.json()["entry"].as_array().map(Vec::len),
        Some(1),
        "one version, A's: {}",
        history.text()
    );
    assert_eq!(read(&a, "pat-consortium-b").await.status, 200);
    assert_eq!(read(&b, "pat-consortium-b").await.status, 200);

    // ADV: a document changed in B's private store (after A stored it, before B first
    // reads it) is refused at B: fail closed, not a permit.
    let before = network
        .fake()
        .private_keys(fake::MSP2, DOCUMENTS_COLLECTION);
    let stored = put_consent(
        &a,
        SITE,
        &consent("c-cons-c", "pat-consortium-c", "dr-alice", true),
    )
    .await;
    assert_eq!(stored.status, 201, "{}", stored.text());
    let new_keys: Vec<String> = network
        .fake()
        .private_keys(fake::MSP2, DOCUMENTS_COLLECTION)
        .into_iter()
        .filter(|k| !before.contains(k))
        .collect();
    assert_eq!(
        new_keys.len(),
        1,
        "one new document in B's store: {new_keys:?}"
    );
    network
        .fake()
        .tamper_private(fake::MSP2, DOCUMENTS_COLLECTION, &new_keys[0], |bytes| {
            let text = String::from_utf8(bytes.clone()).unwrap();
            *bytes = text.replace("dr-alice", "dr-mallo").into_bytes();
        });
    let refused = read(&b, "pat-consortium-c").await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.error_code(), "consent-unavailable");
    assert_eq!(
        read(&b, "pat-consortium-c").await.status,
        503,
        "still refused: a tampered document is never cached"
    );
    // A, whose own copy is intact, decides it.
    assert_eq!(read(&a, "pat-consortium-c").await.status, 200);

    // ADV: nothing of a document is on the channel: no block holds a patient id, a
    // practitioner id or a document's text; only hashes.
    let blocks = network.fake().block_bytes();
    assert!(blocks.len() > 3, "the scenario wrote blocks");
    let needles: [&[u8]; 8] = [
        b"pat-consortium-a",
        b"pat-consortium-b",
        b"pat-consortium-c",
        b"dr-alice",
        b"dr-mallory",
        b"59284-0",
        b"terminology.hl7.org",
        b"Practitioner/",
    ];
    for (number, block) in blocks.iter().enumerate() {
        for needle in needles {
            assert!(
                !contains(block, needle),
                "block {number} holds {:?}",
                String::from_utf8_lossy(needle)
            );
        }
    }
    // The documents themselves are in both members' private stores (and only there).
    for msp in [fake::MSP, fake::MSP2] {
        assert!(
            network.fake().private_keys(msp, DOCUMENTS_COLLECTION).len() >= 3,
            "{msp}"
        );
    }
}

/// Each member anchors its own receipts on the channel; an export of member A's receipts is
/// verified by `assent verify` run with member B's configuration (B's organization, B's
/// database, which holds none of A's receipts): the anchors are read from the channel. ADV:
/// an export whose receipt was altered, or whose anchor root was replaced, fails there too.
#[actix_web::test]
async fn an_export_of_one_member_verifies_against_the_channel_at_another() {
    let upstream = hospital();
    let network = FakeFabricNetwork::start();
    let a = TestGateway::new()
        .site_with(
            SITE,
            json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": "opt-in"}),
        )
        .set("ledger", network.ledger_config_of(fake::MSP))
        .set("gateway_id", json!("gw-member-a"))
        .set(
            "receipts",
            json!({"batch_max_receipts": 2, "batch_max_wait_ms": 600_000}),
        )
        .start();
    for patient in [
        "pat-export-1",
        "pat-export-2",
        "pat-export-3",
        "pat-export-4",
    ] {
        let got = read(&a, patient).await;
        assert_eq!(got.error_code(), "consent-denied", "{}", got.text());
    }
    a.wait_for_anchors("gw-member-a", 4);
    let response = audit::export_response(
        a.gateway.state.clone(),
        ReceiptFilter::default(),
        audit::ExportFormat::Ndjson,
    );
    let body = actix_web::body::to_bytes(response.into_body())
        .await
        .unwrap_or_else(|_| panic!("the export streams"));
    let intact: Vec<String> = String::from_utf8(body.to_vec())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(intact.len(), 4, "{intact:?}");

    // Member B's configuration: its own organization on the channel and its own database.
    let dir = tempfile::tempdir().unwrap();
    let fabric = network.ledger_config_of(fake::MSP2)["fabric"].clone();
    let mut toml = format!(
        "database_url = {:?}\ngateway_id = \"gw-member-b\"\n[keys]\nfile = {:?}\n[ledger]\nbackend = \"fabric\"\n[ledger.fabric]\n",
        dir.path().join("member-b.db").display().to_string(),
        write_test_key_file(dir.path()).display().to_string(),
    );
    for (key, value) in fabric.as_object().unwrap() {
        // JSON strings and numbers are TOML values as written.
        toml.push_str(&format!("{key} = {value}\n"));
    }
    let config = dir.path().join("member-b.toml");
    std::fs::write(&config, toml).unwrap();

    let altered_receipt = {
        let mut lines = intact.clone();
        let mut v: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        v["receipt"]["status"] = json!(299);
        lines[1] = v.to_string();
        lines
    };
    let replaced_root = {
        let mut lines = intact.clone();
        let mut v: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
        v["anchor"]["root"] = json!("11".repeat(32));
        lines[2] = v.to_string();
        lines
    };
    for (name, export, holds) in [
        ("intact", intact, true),
        ("a receipt altered", altered_receipt, false),
        ("an anchor root replaced", replaced_root, false),
    ] {
        let path = dir.path().join("export.ndjson");
        std::fs::write(&path, export.join("\n") + "\n").unwrap();
        let args = VerifyArgs {
            export: path,
            config: Some(config.clone()),
            anchors: None,
            options: VerifyOptions {
                complete: true,
                require_anchored: true,
            },
        };
        let report = verify::verify(&args).unwrap_or_else(|e| panic!("{name}: {e}"));
        if holds {
            assert!(report.all_held(), "{name}: {:?}", report.failures);
            assert_eq!(report.n_anchored, 4, "{name}");
        } else {
            assert!(!report.all_held(), "{name}: verified at member B");
        }
    }
}

/// A member's gateway on a real Fabric network: `ASSENT_FABRIC_TEST_CONFIG` (and `_2`) name
/// JSON files of `[ledger.fabric]` (docs/fabric.md, "Testing against a real network").
fn real_member(upstream: &FakeUpstream, path: &str) -> StartedGateway {
    let fabric: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("readable")).expect("JSON");
    let msp = fabric["msp_id"].as_str().expect("msp_id").to_lowercase();
    TestGateway::new()
        .site_with(
            SITE,
            json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": "opt-in"}),
        )
        .set("ledger", json!({"backend": "fabric", "fabric": fabric}))
        .set("gateway_id", json!(format!("gw-real-{msp}")))
        .start()
}

/// The consortium scenario on a real Fabric network (two organizations, the chaincode
/// deployed with the documents collection): stored at A, decided at B, revoked at B, denied
/// at A; B cannot overwrite A's consent. Skipped with a notice without the two variables.
#[actix_web::test]
async fn two_members_enforce_each_others_consents_on_a_real_fabric_network() {
    let (Ok(path_a), Ok(path_b)) = (
        std::env::var("ASSENT_FABRIC_TEST_CONFIG"),
        std::env::var("ASSENT_FABRIC_TEST_CONFIG_2"),
    ) else {
        eprintln!(
            "skipped: set ASSENT_FABRIC_TEST_CONFIG and ASSENT_FABRIC_TEST_CONFIG_2 to two \
             members' JSON Fabric configurations (one channel) to run the consortium scenario \
             on a real network"
        );
        return;
    };
    let upstream = hospital();
    let a = real_member(&upstream, &path_a);
    let b = real_member(&upstream, &path_b);
    // A long-lived channel: ids unique to this run.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let patient = format!("pat-real-{run}");
    let id = format!("c-real-{run}");

    assert_eq!(read(&b, &patient).await.error_code(), "consent-denied");
    let started = Instant::now();
    let stored = put_consent(&a, SITE, &consent(&id, &patient, "dr-alice", true)).await;
    assert_eq!(stored.status, 201, "{}", stored.text());
    eprintln!("stored at A: {} in {:?}", stored.status, started.elapsed());
    let started = Instant::now();
    let permitted = until_status(&b, &patient, 200).await;
    eprintln!(
        "permitted at B: {} after {:?}",
        permitted.status,
        started.elapsed()
    );
    assert!(
        permitted
            .header("x-assent-consent")
            .is_some_and(|basis| basis.contains(&id)),
        "B's permit rests on A's consent: {:?}",
        permitted.header("x-assent-consent")
    );
    assert_eq!(read(&a, &patient).await.status, 200);

    // ADV: B cannot overwrite A's consent.
    let overwrite = put_consent(&b, SITE, &consent(&id, &patient, "dr-mallory", true)).await;
    eprintln!("overwrite at B: {} {}", overwrite.status, overwrite.text());
    assert!(
        overwrite.status == 403 || overwrite.status == 409,
        "B overwrote A's consent: {} {}",
        overwrite.status,
        overwrite.text()
    );
    assert_eq!(read(&b, &patient).await.status, 200);

    // Revoked at B (any member may revoke), denied at A.
    let revoked = revoke(&b, &id).await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    assert_eq!(read(&b, &patient).await.error_code(), "consent-denied");
    let started = Instant::now();
    let denied = until_status(&a, &patient, 403).await;
    eprintln!(
        "denied at A: {} after {:?}",
        denied.status,
        started.elapsed()
    );
    assert_eq!(denied.error_code(), "consent-denied");
}
