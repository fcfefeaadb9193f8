//! The audit API end to end: who may read the audit log, every read of it leaving a receipt
//! (refused or not), AuditEvent searches with their filters and signed paging, one receipt
//! with its verification, streamed exports that verify offline, a patient's accounting of
//! disclosures (which lists who read it), hostile parameters; and `assent verify` finding a
//! tampered receipt, proof or anchor (table-driven).

use assent_e2e::*;
use assent_gateway::api::audit;
use assent_gateway::cli::verify::{self, VerifyArgs};
use assent_gateway::store::ReceiptFilter;
use assent_gateway::store::testing;
use assent_receipts::{
    AccessDecision, AccessKind, AnchorSet, AuditAction, FailureKind, Receipt, VerifyOptions,
    verify_export,
};
use serde_json::{Value, json};

/// A FAKE upstream: Patient/p1 exists, everything else is 404.
fn hospital() -> FakeUpstream {
    FakeUpstream::one_resource(
        json!({"resourceType": "Patient", "id": "p1", "meta": {"versionId": "2"}}),
    )
}

fn gateway(store_url: &str, upstream: &FakeUpstream) -> StartedGateway {
    TestGateway::new()
        .database(store_url)
        .site("st-mary", &upstream.base_url())
        .site_with(
            "north-general",
            json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": "opt-in"}),
        )
        // Batches of exactly two receipts (every test makes an even number of requests).
        .set("receipts", json!({"batch_max_receipts": 2, "batch_max_wait_ms": 600_000}))
        .set("audit", json!({"subjects": [caller_id("researcher-dan")]}))
        .start()
}

/// A compliance officer: an explicit AuditEvent scope.
fn auditor() -> String {
    token("nurse-carol", Some("openid user/AuditEvent.rs"), None, None)
}

/// Four accesses: alice reads p1 (permit), alice reads p2 (404), alice at north-general
/// (deny: opt-in), bob reads p1 (permit). Returns their receipt ids.
async fn traffic(gw: &StartedGateway) -> Vec<String> {
    let bob = other_clinician_token();
    let mut ids = Vec::new();
    for (path, token, status) in [
        ("/fhir/st-mary/Patient/p1", clinician_token(), 200),
        ("/fhir/st-mary/Patient/p2", clinician_token(), 404),
        ("/fhir/north-general/Patient/p1", clinician_token(), 403),
        ("/fhir/st-mary/Patient/p1", bob, 200),
    ] {
        let got = send("GET", &gw.url(path), Some(token), &[], None).await;
        assert_eq!(got.status, status, "{path}: {}", got.text());
        ids.push(got.header("x-assent-receipt").unwrap().to_owned());
    }
    ids
}

async fn audit_get(gw: &StartedGateway, path: &str, token: &str) -> Got {
    send("GET", &gw.url(path), Some(token), &[], None).await
}

fn receipt_ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    e["fullUrl"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches("urn:uuid:")
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The anchors the gateway's ledger holds for test-gw.
async fn ledger_anchors(gw: &StartedGateway) -> AnchorSet {
    let state = &gw.gateway.state;
    let key = state.consents.key().gateway("test-gw");
    let mut set = AnchorSet::new();
    for batch_id in 1.. {
        match state
            .consents
            .ledger()
            .anchor(&key, batch_id)
            .await
            .unwrap()
        {
            Some(record) => assert!(set.insert_record("test-gw", &record)),
            None => break,
        }
    }
    set
}

#[actix_web::test]
async fn the_audit_api_searches_verifies_exports_and_accounts() {
    let upstream = hospital();
    for store in testing::all() {
        let gw = gateway(&store.url, &upstream);
        let ids = traffic(&gw).await;
        gw.wait_for_anchors("test-gw", 4);
        let officer = auditor();
        let officer = officer.as_str();

        // Who may read it: the AuditEvent scope, or a listed subject; not `user/*.rs`.
        let listed = token("researcher-dan", Some("openid"), None, None);
        assert_eq!(
            audit_get(&gw, "/audit/AuditEvent", &listed).await.status,
            200
        );
        let refused = audit_get(&gw, "/audit/AuditEvent", clinician_token()).await;
        assert_eq!(
            (refused.status, refused.error_code().as_str()),
            (403, "audit-role-required")
        );
        let anonymous = send("GET", &gw.url("/audit/export"), None, &[], None).await;
        assert_eq!(anonymous.status, 401);
        for path in [
            "/audit/receipts/x",
            "/audit/export",
            "/audit/patient/p1/disclosures?site=st-mary",
        ] {
            let got = audit_get(&gw, path, clinician_token()).await;
            assert_eq!(got.status, 403, "{path}");
        }
        // Reading the audit log is itself an access: every read after authentication leaves a
        // receipt, the refused ones denied; the anonymous one none.
        let audit_reads: Vec<Receipt> = gw
            .gateway
            .state
            .store
            .receipts_after("test-gw", 4, 100)
            .unwrap()
            .iter()
            .map(|row| Receipt::from_canonical_bytes(&row.body).unwrap())
            .collect();
        let seen: Vec<(AccessKind, AccessDecision)> =
            audit_reads.iter().map(|r| (r.kind, r.decision)).collect();
        assert_eq!(
            seen,
            [
                (
                    AccessKind::Audit(AuditAction::Search),
                    AccessDecision::Permit
                ),
                (AccessKind::Audit(AuditAction::Search), AccessDecision::Deny),
                (AccessKind::Audit(AuditAction::Read), AccessDecision::Deny),
                (AccessKind::Audit(AuditAction::Export), AccessDecision::Deny),
                (
                    AccessKind::Audit(AuditAction::Disclosures),
                    AccessDecision::Deny
                ),
            ]
        );
        // The permitted search names every patient whose receipts it returned, and lists the
        // AuditEvents it returned.
        let key = gw.gateway.state.consents.key();
        let mut named = audit_reads[0].patient_keys.clone();
        named.sort();
        let mut expected = vec![
            key.patient("st-mary/Patient/p1"),
            key.patient("st-mary/Patient/p2"),
            key.patient("north-general/Patient/p1"),
        ];
        expected.sort();
        assert_eq!(named, expected);
        assert_eq!(audit_reads[0].resources.len(), 4);
        assert!(
            audit_reads[0]
                .resources
                .iter()
                .all(|r| r.resource_type == "AuditEvent" && ids.contains(&r.id))
        );
        assert!(audit_reads[1..].iter().all(|r| r.resources.is_empty()));

        // Every FHIR access, newest first, as R4 BALP AuditEvents.
        let all = audit_get(&gw, "/audit/AuditEvent?kind=fhir", officer).await;
        assert_eq!(all.status, 200, "{}", all.text());
        let bundle = all.json();
        assert_eq!(
            (bundle["resourceType"].as_str(), bundle["type"].as_str()),
            (Some("Bundle"), Some("searchset"))
        );
        let mut newest_first = ids.clone();
        newest_first.reverse();
        assert_eq!(receipt_ids(&bundle), newest_first);
        let first = &bundle["entry"][0]["resource"];
        assert_eq!(first["resourceType"], "AuditEvent");
        assert!(
            first["type"]["code"].is_string(),
            "R4 has AuditEvent.type: {first}"
        );
        assert!(
            first["meta"]["profile"][0]
                .as_str()
                .is_some_and(|p| p.contains("IHE.BasicAudit")),
            "{first}"
        );
        let r5 = audit_get(&gw, "/audit/AuditEvent?_fhirVersion=R5&kind=fhir", officer).await;
        let r5_event = &r5.json()["entry"][0]["resource"];
        assert!(
            r5_event["code"].is_object() && r5_event.get("type").is_none(),
            "{r5_event}"
        );
        let stu3 = send(
            "GET",
            &gw.url("/audit/AuditEvent"),
            Some(officer),
            &[("accept", "application/fhir+json; fhirVersion=3.0")],
            None,
        )
        .await;
        assert!(stu3.header("content-type").unwrap().contains("3.0"));

        // Filters.
        let today = &assent_receipts::format_instant(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64,
        )[..10];
        let cases: Vec<(String, Vec<&String>)> = vec![
            ("patient=st-mary/Patient/p1".into(), vec![&ids[3], &ids[0]]),
            (
                "patient=Patient/p1&site=north-general".into(),
                vec![&ids[2]],
            ),
            ("agent=Practitioner/dr-bob".into(), vec![&ids[3]]),
            ("outcome=0".into(), vec![&ids[3], &ids[0]]),
            ("outcome=8".into(), vec![&ids[2], &ids[1]]),
            ("decision=deny".into(), vec![&ids[2]]),
            ("decision=deny,error".into(), vec![&ids[2], &ids[1]]),
            ("site=north-general".into(), vec![&ids[2]]),
            (
                "purpose=TREAT&site=st-mary&agent=Practitioner/dr-alice".into(),
                vec![&ids[1], &ids[0]],
            ),
            ("break-glass=true".into(), vec![]),
            (format!("date={today}"), newest_first.iter().collect()),
            (
                format!("date=ge{today}&date=le{today}"),
                newest_first.iter().collect(),
            ),
            ("date=lt2000-01-01".into(), vec![]),
            (format!("date=gt{today}"), vec![]),
        ];
        for (query, expected) in cases {
            let query = format!("{query}&kind=fhir");
            let got = audit_get(&gw, &format!("/audit/AuditEvent?{query}"), officer).await;
            assert_eq!(got.status, 200, "{query}: {}", got.text());
            let expected: Vec<String> = expected.into_iter().cloned().collect();
            assert_eq!(receipt_ids(&got.json()), expected, "{query}");
        }

        // Paging: signed keyset links, bound to the caller.
        let mut seen = Vec::new();
        let mut url = gw.url("/audit/AuditEvent?_count=1&site=st-mary&kind=fhir");
        let mut next_links = Vec::new();
        loop {
            let page = send("GET", &url, Some(officer), &[], None).await;
            assert_eq!(page.status, 200, "{}", page.text());
            let page = page.json();
            seen.extend(receipt_ids(&page));
            let next = page["link"]
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["relation"] == "next")
                .map(|l| l["url"].as_str().unwrap().to_owned());
            match next {
                Some(n) => {
                    assert!(n.starts_with("http://127.0.0.1"), "{n}");
                    next_links.push(n.clone());
                    url = n;
                }
                None => break,
            }
        }
        assert_eq!(seen, vec![ids[3].clone(), ids[1].clone(), ids[0].clone()]);
        let link = &next_links[0];
        let other = send("GET", link, Some(&listed), &[], None).await;
        assert_eq!(
            (other.status, other.error_code().as_str()),
            (403, "bad-page-token")
        );
        let altered = link.replace("site=st-mary", "site=north-general");
        let altered = send("GET", &altered, Some(officer), &[], None).await;
        assert_eq!(altered.error_code(), "bad-page-token");
        let unsigned = link.split("&_sig=").next().unwrap();
        let unsigned = send("GET", unsigned, Some(officer), &[], None).await;
        assert_eq!(unsigned.error_code(), "bad-page-token");

        // Hostile parameters: 400 with a stable code.
        for query in [
            "nonsense=1",
            "site=a&site=b",
            "date=xx2026-01-01",
            "date=2026-13-01",
            "date=2026-01-01T10:00",
            "_count=0",
            "_count=-5",
            "outcome=3",
            "decision=maybe",
            "patient=../../etc/passwd",
            "patient=Patient/p1",
            "break-glass=yes",
            "_fhirVersion=R9",
            "site=%00",
            "_cursor=not-a-cursor",
            "kind=consent-delete",
        ] {
            let got = audit_get(&gw, &format!("/audit/AuditEvent?{query}"), officer).await;
            assert_eq!(
                (got.status, got.error_code().as_str()),
                (400, "malformed-request"),
                "{query}"
            );
        }
        let xml = audit_get(&gw, "/audit/AuditEvent?_format=xml", officer).await;
        assert_eq!(
            (xml.status, xml.error_code().as_str()),
            (406, "not-acceptable")
        );
        let long = format!("/audit/AuditEvent?agent={}", "a".repeat(300));
        assert_eq!(audit_get(&gw, &long, officer).await.status, 400);

        // One receipt: decoded, with its subjects, proof, anchor, and verified.
        let detail = audit_get(&gw, &format!("/audit/receipts/{}", ids[0]), officer).await;
        assert_eq!(detail.status, 200, "{}", detail.text());
        let detail = detail.json();
        assert_eq!(detail["receipt"]["id"], ids[0].as_str());
        assert_eq!(detail["subjects"]["actor"], "Practitioner/dr-alice");
        assert_eq!(
            detail["subjects"]["patients"],
            json!(["st-mary/Patient/p1"])
        );
        assert_eq!(detail["patients"], json!(["st-mary/Patient/p1"]));
        assert!(detail["anchor"]["tx_id"].is_string(), "{detail}");
        assert!(detail["proof"]["siblings"].is_array());
        assert_eq!(
            detail["verification"],
            json!({"hash": "holds", "chain": "holds", "proof": "holds", "ledger": "holds", "verified": true})
        );
        assert_eq!(
            audit_get(&gw, "/audit/receipts/no-such-receipt", officer)
                .await
                .error_code(),
            "not-found"
        );

        // A patient's accounting of disclosures.
        let got = audit_get(&gw, "/audit/patient/p1/disclosures?site=st-mary", officer).await;
        assert_eq!(got.status, 200, "{}", got.text());
        let report = got.json();
        assert_eq!(report["patient"], "st-mary/Patient/p1");
        let all_disclosures = report["disclosures"].as_array().unwrap();
        let list: Vec<&Value> = all_disclosures
            .iter()
            .filter(|d| d["what"].as_str().unwrap().starts_with("read Patient/"))
            .collect();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["who"], "Practitioner/dr-bob");
        assert_eq!(list[1]["who"], "Practitioner/dr-alice");
        assert_eq!(list[1]["decision"], "permitted");
        assert_eq!(list[1]["site"], "st-mary");
        assert!(
            list[1]["what"]
                .as_str()
                .unwrap()
                .starts_with("read Patient/p1")
        );
        // Reads of the audit log that showed the patient's accesses are disclosures too.
        let whats: Vec<&str> = all_disclosures
            .iter()
            .map(|d| d["what"].as_str().unwrap())
            .collect();
        assert!(
            whats.contains(&"searched the access log (2 records returned)")
                && whats.contains(&"read an access receipt"),
            "{whats:?}"
        );
        assert!(
            all_disclosures
                .iter()
                .all(|d| d["who"] != "PractitionerRole/nurse-carol" || d["decision"] == "permitted")
        );
        let again = audit_get(&gw, "/audit/patient/p1/disclosures?site=st-mary", officer).await;
        let newest = &again.json()["disclosures"][0];
        assert_eq!(
            (newest["who"].as_str(), newest["what"].as_str()),
            (
                Some("PractitionerRole/nurse-carol"),
                Some("read the accounting of disclosures")
            ),
            "the read before is listed"
        );
        let text = audit_get(
            &gw,
            "/audit/patient/p1/disclosures?site=st-mary&_format=text",
            officer,
        )
        .await;
        assert!(
            text.header("content-type")
                .unwrap()
                .starts_with("text/plain")
        );
        assert!(
            text.text().contains("Practitioner/dr-alice"),
            "{}",
            text.text()
        );
        assert_eq!(
            audit_get(&gw, "/audit/patient/p1/disclosures", officer)
                .await
                .status,
            400,
            "the site is required"
        );

        // Exports: NDJSON verifies offline against the ledger's anchors; CSV has every row.
        // (A filtered export is not the whole chain: its neighbours are checked, not its
        // completeness; `assent verify` with a complete export is tested below.)
        let ndjson = audit_get(&gw, "/audit/export?format=ndjson&kind=fhir", officer).await;
        assert_eq!(ndjson.status, 200);
        assert_eq!(ndjson.header("content-type"), Some("application/x-ndjson"));
        let text = ndjson.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        let report = verify_export(
            lines.iter().copied(),
            ledger_anchors(&gw).await,
            VerifyOptions {
                complete: false,
                require_anchored: true,
            },
        );
        assert!(report.all_held(), "{:?}", report.failures);
        assert_eq!(report.n_anchored, 4);
        // The whole chain, audit reads included, verifies as a complete export: its last line
        // is the export's own receipt (durable before the first byte), which marks how far the
        // log went; what the ledger anchors after it are later accesses. Another read first,
        // so that batches close after the export. Every batch already full is anchored first:
        // a batch anchored while the export is being read would leave some of its lines with
        // a proof and some without, which the verifier rightly calls skipped.
        let before = gw
            .gateway
            .state
            .store
            .receipts_after("test-gw", 0, 1000)
            .unwrap()
            .len();
        gw.wait_for_anchors("test-gw", (before - before % 2) as i64);
        let everything = audit_get(&gw, "/audit/export?format=ndjson", officer).await;
        let receipt_id = everything.header("x-assent-receipt").unwrap().to_owned();
        let text = everything.text();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.last().unwrap().contains(&receipt_id));
        for _ in 0..3 {
            audit_get(&gw, "/audit/AuditEvent?_count=1", officer).await;
        }
        let n = gw
            .gateway
            .state
            .store
            .receipts_after("test-gw", 0, 1000)
            .unwrap()
            .len();
        gw.wait_for_anchors("test-gw", (n - n % 2) as i64);
        let report = verify_export(
            lines.iter().copied(),
            ledger_anchors(&gw).await,
            VerifyOptions {
                complete: true,
                require_anchored: false,
            },
        );
        assert!(report.all_held(), "{:?}", report.failures);
        assert_eq!(report.n_receipts, lines.len() as u64);
        // Cut the lines before the export's own receipt: the chain breaks.
        let mut cut = lines.clone();
        cut.remove(cut.len() - 2);
        let report = verify_export(
            cut.iter().copied(),
            ledger_anchors(&gw).await,
            VerifyOptions {
                complete: true,
                require_anchored: false,
            },
        );
        assert!(!report.all_held());
        let csv = audit_get(
            &gw,
            "/audit/export?format=csv&site=st-mary&kind=fhir",
            officer,
        )
        .await;
        assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
        let csv = csv.text();
        let rows: Vec<&str> = csv.lines().collect();
        assert!(rows[0].starts_with("receipt_id,encoding,sequence,time"));
        assert_eq!(rows.len(), 1 + 3, "{csv}");
        assert!(rows[1].contains(&ids[0]) && rows[1].contains("Practitioner/dr-alice"));
        assert_eq!(
            audit_get(&gw, "/audit/export?format=xml", officer)
                .await
                .status,
            400
        );
    }
}

/// An export larger than one streamed chunk comes out whole and in chain order.
#[actix_web::test]
async fn exports_stream_past_one_chunk() {
    let upstream = hospital();
    let store = testing::sqlite();
    let gw = gateway(&store.url, &upstream);
    let n = assent_gateway::api::audit::EXPORT_CHUNK as usize + 20;
    let url = gw.url("/fhir/st-mary/Patient/p2");
    for _ in 0..n {
        send("GET", &url, Some(clinician_token()), &[], None).await;
    }
    let got = audit_get(&gw, "/audit/export?format=csv", &auditor()).await;
    let text = got.text();
    let sequences: Vec<u64> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    // Every FHIR request, then the export's own receipt.
    assert_eq!(sequences, (1..=n as u64 + 1).collect::<Vec<_>>());
    assert!(text.lines().last().unwrap().contains(",audit-export,"));
}

/// Re-encodes a stored receipt with a changed status, as someone with database access might.
fn altered(body: &[u8]) -> Vec<u8> {
    let mut receipt = Receipt::from_canonical_bytes(body).unwrap();
    receipt.status = 299;
    receipt.canonical_bytes()
}

/// Changes one field of export line `index` (0-based).
fn edit_line(lines: &[String], index: usize, edit: impl Fn(&mut Value)) -> Vec<String> {
    let mut out = lines.to_vec();
    let mut v: Value = serde_json::from_str(&out[index]).unwrap();
    edit(&mut v);
    out[index] = v.to_string();
    out
}

#[actix_web::test]
async fn assent_verify_finds_a_tampered_receipt_proof_or_anchor() {
    let upstream = hospital();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gw.db");
    let gw = gateway(db.to_str().unwrap(), &upstream);
    let mut ids = traffic(&gw).await;
    ids.extend(traffic(&gw).await);
    gw.wait_for_anchors("test-gw", 8);
    // The exports and the detail are made with the audit API's own functions, not through
    // HTTP: a read through HTTP leaves a receipt, whose anchoring would change the ledger
    // between the export and its verification (a complete export must be the whole chain).
    let export = |gw: &StartedGateway| {
        let state = gw.gateway.state.clone();
        async move {
            let response = audit::export_response(
                state,
                ReceiptFilter::default(),
                audit::ExportFormat::Ndjson,
            );
            let body = actix_web::body::to_bytes(response.into_body())
                .await
                .unwrap_or_else(|_| panic!("the export streams"));
            String::from_utf8(body.to_vec())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<String>>()
        }
    };
    let intact = export(&gw).await;
    let anchors: Vec<String> = {
        let set = ledger_anchors(&gw).await;
        set.batches("test-gw")
            .into_iter()
            .map(|(batch_id, a)| {
                json!({"gateway_id": "test-gw", "batch_id": batch_id,
                       "root": a.root.to_hex(), "n_receipts": a.n_receipts})
                .to_string()
            })
            .collect()
    };
    assert!(anchors.len() >= 4, "batches of 2: {anchors:?}");

    // Tampering in the store: receipt 3's content; then receipt 6's content and stored hash
    // together (so that only the chain and the anchor can tell).
    let store = gw.gateway.state.store.clone();
    let row = store.receipt(&ids[2]).unwrap().unwrap();
    store
        .tamper_receipt_for_tests(&ids[2], &altered(&row.body))
        .unwrap();
    let content_tampered = export(&gw).await;
    store.tamper_receipt_for_tests(&ids[2], &row.body).unwrap();
    let row = store.receipt(&ids[5]).unwrap().unwrap();
    let body = altered(&row.body);
    let rehashed = Receipt::from_canonical_bytes(&body).unwrap().hash();
    store.tamper_receipt_for_tests(&ids[5], &body).unwrap();
    store
        .tamper_receipt_hash_for_tests(&ids[5], rehashed.as_bytes())
        .unwrap();
    let rewritten = export(&gw).await;
    // The detail view sees it too.
    let detail = audit::receipt_detail(&gw.gateway.state, &ids[5])
        .await
        .unwrap()
        .unwrap();
    assert!(!detail.verification.verified);
    assert_eq!(detail.verification.proof, audit::Check::Fails);
    assert_eq!(
        gw.gateway
            .state
            .store
            .receipts_after("test-gw", 0, 100)
            .unwrap()
            .len(),
        8,
        "no receipt beside the traffic's"
    );
    drop(gw);

    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = {:?}\ngateway_id = \"test-gw\"\n[keys]\nfile = {:?}\n",
            db.display().to_string(),
            write_test_key_file(dir.path()).display().to_string()
        ),
    )
    .unwrap();
    let bad_proof = edit_line(&intact, 4, |v| {
        v["proof"]["siblings"][0] = json!("00".repeat(32));
    });
    let bad_anchor = edit_line(&intact, 6, |v| {
        v["anchor"]["root"] = json!("11".repeat(32));
    });
    let mut forged_anchors = anchors.clone();
    let mut first: Value = serde_json::from_str(&forged_anchors[0]).unwrap();
    first["root"] = json!("22".repeat(32));
    forged_anchors[0] = first.to_string();
    let dropped_tail = intact[..7].to_vec();

    struct Case {
        name: &'static str,
        export: Vec<String>,
        /// `None`: the ledger through `--config`; else an anchors file.
        anchors: Option<Vec<String>>,
        /// Receipt ids that must be named among the failures; empty: all hold.
        named: Vec<String>,
        kind: fn(&FailureKind) -> bool,
    }
    let any: fn(&FailureKind) -> bool = |_| true;
    let cases = [
        Case {
            name: "intact, ledger",
            export: intact.clone(),
            anchors: None,
            named: vec![],
            kind: any,
        },
        Case {
            name: "intact, anchors file",
            export: intact.clone(),
            anchors: Some(anchors.clone()),
            named: vec![],
            kind: any,
        },
        Case {
            name: "receipt content altered in the store",
            export: content_tampered,
            anchors: None,
            named: vec![ids[2].clone()],
            kind: |k| matches!(k, FailureKind::Chain(_) | FailureKind::ProofInvalid { .. }),
        },
        Case {
            name: "receipt content and hash rewritten in the store",
            export: rewritten,
            anchors: None,
            named: vec![ids[5].clone(), ids[6].clone()],
            kind: |k| matches!(k, FailureKind::Chain(_) | FailureKind::ProofInvalid { .. }),
        },
        Case {
            name: "proof altered in the export",
            export: bad_proof,
            anchors: None,
            named: vec![ids[4].clone()],
            kind: |k| matches!(k, FailureKind::ProofInvalid { .. }),
        },
        Case {
            name: "anchor root altered in the export",
            export: bad_anchor,
            anchors: None,
            named: vec![ids[6].clone()],
            kind: |k| matches!(k, FailureKind::AnchorMismatch { .. }),
        },
        Case {
            name: "anchor forged in the anchors file",
            export: intact.clone(),
            anchors: Some(forged_anchors),
            named: vec![ids[0].clone(), ids[1].clone()],
            kind: |k| {
                matches!(
                    k,
                    FailureKind::AnchorMismatch { .. } | FailureKind::ProofInvalid { .. }
                )
            },
        },
        Case {
            name: "last receipt dropped from a complete export",
            export: dropped_tail,
            anchors: None,
            named: vec![],
            kind: |k| matches!(k, FailureKind::BatchIncomplete { .. }),
        },
    ];
    for case in cases {
        let export_path = dir.path().join("export.ndjson");
        std::fs::write(&export_path, case.export.join("\n") + "\n").unwrap();
        let anchors_path = dir.path().join("anchors.ndjson");
        let args = VerifyArgs {
            export: export_path,
            config: case.anchors.is_none().then(|| config.clone()),
            anchors: case.anchors.as_ref().map(|lines| {
                std::fs::write(&anchors_path, lines.join("\n")).unwrap();
                anchors_path.clone()
            }),
            options: VerifyOptions {
                complete: true,
                require_anchored: true,
            },
        };
        let report = verify::verify(&args).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let status = verify::main(&args);
        let must_fail = !case.named.is_empty() || case.name.contains("dropped");
        if !must_fail {
            assert!(report.all_held(), "{}: {:?}", case.name, report.failures);
            assert_eq!(status, 0, "{}", case.name);
            assert_eq!(report.n_anchored, 8);
            continue;
        }
        assert_eq!(status, verify::EXIT_FAILED, "{}", case.name);
        assert!(
            report.failures.iter().any(|f| (case.kind)(&f.kind)),
            "{}: {:?}",
            case.name,
            report.failures
        );
        for id in &case.named {
            assert!(
                report
                    .failures
                    .iter()
                    .any(|f| f.receipt_id.as_deref() == Some(id.as_str()) && (case.kind)(&f.kind)),
                "{}: receipt {id} not named in {:?}",
                case.name,
                report.failures
            );
        }
        // Receipts nobody touched are not blamed.
        let untouched = &ids[7];
        if case.name != "last receipt dropped from a complete export" {
            assert!(
                report
                    .failures
                    .iter()
                    .all(|f| f.receipt_id.as_deref() != Some(untouched.as_str())),
                "{}: {:?}",
                case.name,
                report.failures
            );
        }
    }

    // Usage errors are told apart from failed checks.
    let neither = VerifyArgs {
        export: dir.path().join("export.ndjson"),
        config: None,
        anchors: None,
        options: VerifyOptions::default(),
    };
    assert_eq!(verify::main(&neither), 64);
}

/// The AuditEvents the audit API serves, in every FHIR version, for each BALP pattern the
/// gateway produces (read, patient read, query, denied, break-glass, a search reaching several
/// patients, a consent created and revoked, reads of the audit log). With
/// `ASSENT_AUDIT_OUT=DIR` they are written to `DIR/{version}/{n}.json`, and the test script
/// validates them with an independent validator (`scripts/validate_fhir.py --plain`).
#[actix_web::test]
async fn audit_events_in_every_version_for_the_fhir_validator() {
    let upstream = hospital();
    let several = crate::consent::hospital();
    let store = testing::sqlite();
    let gw = TestGateway::new()
        .database(&store.url)
        .site("st-mary", &upstream.base_url())
        .site_with(
            "north-general",
            json!({"upstream": upstream.base_url(), "fhir_version": "R4", "default_policy": "opt-in"}),
        )
        .site("st-luke", &several.base_url())
        .start();
    let mut ids = traffic(&gw).await;
    // A search whose answer reaches three patients.
    let search = send(
        "GET",
        &gw.url("/fhir/st-luke/Observation?code=x"),
        Some(clinician_token()),
        &[],
        None,
    )
    .await;
    assert_eq!(search.status, 200, "{}", search.text());
    ids.push(search.header("x-assent-receipt").unwrap().to_owned());
    // A consent created and revoked, and a read of the accounting of disclosures.
    let created = crate::consent::put_consent(
        &gw,
        "st-mary",
        &crate::consent::consent("c-v", "p1", "dr-bob", true),
    )
    .await;
    assert_eq!(created.status, 201, "{}", created.text());
    ids.push(created.header("x-assent-receipt").unwrap().to_owned());
    let revoked = send(
        "POST",
        &gw.url("/consent/Consent/c-v/$revoke"),
        Some(admin_token()),
        &[],
        None,
    )
    .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    ids.push(revoked.header("x-assent-receipt").unwrap().to_owned());
    // A query, and an access granted by break-glass over the opt-in site's deny.
    let query = send(
        "GET",
        &gw.url("/fhir/st-mary/Observation?patient=p1"),
        Some(clinician_token()),
        &[],
        None,
    )
    .await;
    ids.push(query.header("x-assent-receipt").unwrap().to_owned());
    let emergency = send(
        "GET",
        &gw.url("/fhir/north-general/Patient/p1"),
        Some(&token(
            "dr-bob",
            Some("openid fhirUser user/*.rs assent/break-glass"),
            Some("ETREAT"),
            None,
        )),
        &[("x-assent-break-glass-reason", "unconscious on arrival")],
        None,
    )
    .await;
    assert_eq!(emergency.status, 200, "{}", emergency.text());
    ids.push(emergency.header("x-assent-receipt").unwrap().to_owned());

    let officer = auditor();
    let read = audit_get(&gw, "/audit/patient/p1/disclosures?site=st-mary", &officer).await;
    assert_eq!(read.status, 200, "{}", read.text());
    ids.push(read.header("x-assent-receipt").unwrap().to_owned());
    let out = std::env::var_os("ASSENT_AUDIT_OUT").map(std::path::PathBuf::from);
    let mut searches: Vec<String> = Vec::new();
    for version in ["STU3", "R4", "R4B", "R5"] {
        let got = audit_get(
            &gw,
            &format!("/audit/AuditEvent?_fhirVersion={version}&_count=50"),
            &officer,
        )
        .await;
        assert_eq!(got.status, 200, "{version}: {}", got.text());
        let bundle = got.json();
        let mut served = receipt_ids(&bundle);
        served.sort();
        let mut expected = ids.clone();
        expected.extend(searches.iter().cloned());
        expected.sort();
        assert_eq!(served, expected, "{version}: one AuditEvent per receipt");
        searches.push(got.header("x-assent-receipt").unwrap().to_owned());
        let events: Vec<&Value> = bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["resource"])
            .collect();
        for event in &events {
            assert_eq!(event["resourceType"], "AuditEvent");
            assert!(event["agent"].as_array().is_some_and(|a| !a.is_empty()));
            assert!(event["source"].is_object(), "{event}");
        }
        // The emergency access is its own pattern (a security alert: BALP has none for it).
        assert!(
            events
                .iter()
                .any(|e| e.to_string().contains("unconscious on arrival")
                    || e.to_string().contains("BTG")
                    || e.to_string().contains("break-glass")),
            "{version}: the break-glass access is recognisable"
        );
        // The search that reached three patients names each of them.
        let multi = events.iter().find(|e| e["id"] == ids[4].as_str()).unwrap();
        let patients = multi["entity"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e.to_string().contains("st-luke/Patient/"))
            .count();
        assert_eq!(patients, 3, "{version}: {multi}");
        if let Some(dir) = &out {
            let dir = dir.join(version);
            std::fs::create_dir_all(&dir).unwrap();
            for (n, event) in events.iter().enumerate() {
                std::fs::write(dir.join(format!("{n}.json")), event.to_string()).unwrap();
            }
        }
    }
}
