//! Break-glass end to end: purpose ETREAT, the issuer's break-glass grant and a justification
//! turn a denied read into a permitted one, marked in the response; without a justification
//! the answer says one is required; without the grant, or with another purpose, the deny
//! stands; every override is posted to the configured webhook (retried when it fails), with
//! the patient named only by keyed hash.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use assent_e2e::*;
use serde_json::{Value, json};

use crate::consent::{consent, hospital, put_consent};

const REASON: &str = "x-assent-break-glass-reason";
const GRANT: &str = "openid fhirUser user/*.rs assent/break-glass";
const NO_GRANT: &str = "openid fhirUser user/*.rs";

/// A webhook receiver on loopback: answers 500 to the first `failures` calls, then 200.
fn webhook(failures: usize) -> FakeUpstream {
    let calls = Arc::new(AtomicUsize::new(0));
    FakeUpstream::start(move |_, _| {
        let status = if calls.fetch_add(1, Ordering::SeqCst) < failures {
            500
        } else {
            200
        };
        FakeResponse::json(status, json!({}))
    })
}

/// The webhook calls answered 200, waiting up to 15 s for `n` of them.
fn delivered(hook: &FakeUpstream, n: usize) -> Vec<SeenRequest> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let seen = hook.requests();
        if seen.len() >= n || Instant::now() > deadline {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn gateway(upstream: &FakeUpstream, hook: &FakeUpstream) -> StartedGateway {
    TestGateway::new()
        .site_with(
            "north-general",
            json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": "opt-in"}),
        )
        .site_with(
            "st-mary",
            json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": "opt-out"}),
        )
        .set(
            "break_glass",
            json!({
                "webhook_url": format!("http://{}/hook", hook.addr),
                "webhook_bearer": "hook-token",
                "webhook_timeout_ms": 2000,
            }),
        )
        // The webhook's HMAC key, from the key file like every key.
        .key(assent_gateway::config::keys::WEBHOOK, &"11".repeat(32))
        .start()
}

#[actix_web::test]
async fn break_glass_overrides_a_deny_only_with_grant_emergency_purpose_and_justification() {
    let upstream = hospital();
    let hook = webhook(0);
    let gw = gateway(&upstream, &hook);
    let url = gw.url("/fhir/north-general/Patient/p1");
    let bob = token("dr-bob", Some(GRANT), Some("ETREAT"), None);

    // Opt-in site, no consent: denied as usual for a caller without the grant.
    let plain = token("dr-bob", Some(NO_GRANT), Some("ETREAT"), None);
    let got = send("GET", &url, Some(&plain), &[], None).await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (403, "consent-denied")
    );
    // ... and a justification does not help without the grant.
    let got = send(
        "GET",
        &url,
        Some(&plain),
        &[(REASON, "unconscious in ER")],
        None,
    )
    .await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (403, "consent-denied")
    );

    // The grant with ETREAT but no justification: told that one is required.
    let got = send("GET", &url, Some(&bob), &[], None).await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (403, "break-glass-justification-required"),
        "{}",
        got.text()
    );

    // The grant with another purpose: the normal decision, whatever the header says.
    let treat = token("dr-bob", Some(GRANT), Some("TREAT"), None);
    let got = send(
        "GET",
        &url,
        Some(&treat),
        &[(REASON, "unconscious in ER")],
        None,
    )
    .await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (403, "consent-denied")
    );

    // A justification that is not printable text, or too long, is refused as such.
    let long = "x".repeat(501);
    let got = send("GET", &url, Some(&bob), &[(REASON, long.as_str())], None).await;
    assert_eq!(
        (got.status, got.error_code().as_str()),
        (400, "break-glass-reason-invalid")
    );
    assert!(hook.requests().is_empty(), "nothing was overridden so far");

    // Grant, ETREAT and a justification: permitted, and the response says on what.
    let got = send(
        "GET",
        &url,
        Some(&bob),
        &[
            (REASON, "unconscious in ER, bed 3"),
            ("x-request-id", "bg-1"),
        ],
        None,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["id"], "p1");
    assert_eq!(
        got.header("x-assent-consent"),
        Some("break-glass:site-default:opt-in")
    );
    assert_eq!(got.header("x-assent-break-glass"), Some("used"));

    // Its receipt is flagged and keeps the justification (in the store only, for audit).
    let receipt_id = got.header("x-assent-receipt").unwrap();
    let row = gw.gateway.state.store.receipt(receipt_id).unwrap().unwrap();
    let receipt = assent_receipts::Receipt::from_canonical_bytes(&row.body).unwrap();
    assert!(receipt.break_glass && row.break_glass);
    assert_eq!(
        receipt.break_glass_justification.as_deref(),
        Some("unconscious in ER, bed 3")
    );
    assert_eq!(receipt.decision, assent_receipts::AccessDecision::Permit);

    // The webhook hears of it, off the request path, signed and authenticated.
    let calls = delivered(&hook, 1);
    assert_eq!(calls.len(), 1, "one event per break-glass access");
    let call = &calls[0];
    assert_eq!(
        (call.method.as_str(), call.path.as_str()),
        ("POST", "/hook")
    );
    assert_eq!(call.header("authorization"), Some("Bearer hook-token"));
    assert!(
        call.header("x-assent-signature")
            .is_some_and(|s| s.starts_with("sha256=") && s.len() == 7 + 64)
    );
    let event: Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(event["type"], "assent.break-glass");
    assert_eq!(event["request_id"], "bg-1");
    assert_eq!(event["site"], "north-general");
    assert_eq!(event["caller"], caller_id("dr-bob").as_str());
    assert_eq!(event["purpose_of_use"], "ETREAT");
    assert_eq!(event["justification"], "unconscious in ER, bed 3");
    assert_eq!(event["status"], 200);
    assert_eq!(event["overridden"][0]["basis"], "site-default:opt-in");
    let patient_key = event["overridden"][0]["patient_key"].as_str().unwrap();
    assert!(
        !patient_key.contains("p1") && patient_key.len() >= 32,
        "{patient_key}"
    );
    assert!(
        !String::from_utf8_lossy(&call.body).contains("Patient/p1"),
        "no clear patient identifier in the event"
    );

    // Counted, by site only.
    let metrics = send("GET", &gw.url("/metrics"), None, &[], None)
        .await
        .text();
    assert!(
        metrics.contains("assent_break_glass_total{site=\"north-general\"} 1"),
        "{metrics}"
    );

    // A consent's deny is overridden the same way, and the basis names the consent.
    assert_eq!(
        put_consent(&gw, "st-mary", &consent("c-p2", "p2", "dr-bob", false))
            .await
            .status,
        201
    );
    let url = gw.url("/fhir/st-mary/Patient/p2");
    let got = send("GET", &url, Some(&bob), &[], None).await;
    assert_eq!(got.error_code(), "break-glass-justification-required");
    let got = send(
        "GET",
        &url,
        Some(&bob),
        &[(REASON, "Notaufnahme – bewusstlos")],
        None,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    let basis = got.header("x-assent-consent").unwrap();
    assert!(basis.starts_with("break-glass:consent:c-p2@1:"), "{basis}");
    let calls = delivered(&hook, 2);
    let event: Value = serde_json::from_slice(&calls[1].body).unwrap();
    assert_eq!(event["justification"], "Notaufnahme – bewusstlos");
    assert!(
        event["overridden"][0]["basis"]
            .as_str()
            .unwrap()
            .starts_with("consent:c-p2@1:")
    );

    // A permitted read with the grant and ETREAT needs no justification and is no override.
    let got = send(
        "GET",
        &gw.url("/fhir/st-mary/Patient/p3"),
        Some(&bob),
        &[],
        None,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.header("x-assent-break-glass"), None);
    assert_eq!(got.header("x-assent-consent"), Some("site-default:opt-out"));
}

#[actix_web::test]
async fn searches_keep_entries_on_break_glass_and_the_webhook_is_retried() {
    let upstream = hospital();
    let hook = webhook(2);
    let gw = gateway(&upstream, &hook);
    let bob = token("dr-bob", Some(GRANT), Some("ETREAT"), None);
    // p2 refuses dr-bob at St Mary (opt-out): a search across patients withholds p2's entry.
    assert_eq!(
        put_consent(&gw, "st-mary", &consent("c-p2", "p2", "dr-bob", false))
            .await
            .status,
        201
    );
    let search = gw.url("/fhir/st-mary/Observation?code=x");
    let plain = token("dr-bob", Some(NO_GRANT), Some("ETREAT"), None);
    let got = send("GET", &search, Some(&plain), &[], None).await;
    assert_eq!(got.status, 200);
    let ids = |v: &Value| -> Vec<String> {
        v["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["resource"]["id"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(!ids(&got.json()).contains(&"o-p2".to_owned()));

    let got = send(
        "GET",
        &search,
        Some(&bob),
        &[(REASON, "mass casualty triage")],
        None,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(ids(&got.json()).contains(&"o-p2".to_owned()));
    assert_eq!(got.header("x-assent-break-glass"), Some("used"));

    // Two failures, then delivered: three calls, the same event each time.
    let calls = delivered(&hook, 3);
    assert_eq!(calls.len(), 3, "retried until delivered");
    assert_eq!(calls[0].body, calls[2].body);
    let event: Value = serde_json::from_slice(&calls[2].body).unwrap();
    assert_eq!(event["justification"], "mass casualty triage");
    assert!(
        event["overridden"][0]["basis"]
            .as_str()
            .unwrap()
            .starts_with("consent:c-p2@1:")
    );
    let metrics = send("GET", &gw.url("/metrics"), None, &[], None)
        .await
        .text();
    assert!(
        metrics.contains("assent_break_glass_webhook_delivered_total 1"),
        "{metrics}"
    );
}
