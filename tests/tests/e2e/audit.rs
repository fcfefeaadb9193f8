//! The audit API end to end: who may read the audit log, AuditEvent searches with their
//! filters and signed paging, one receipt with its verification, streamed exports that
//! verify offline, a patient's accounting of disclosures, hostile parameters; and `assent
//! verify` finding a tampered receipt, proof or anchor (table-driven).

use assent_e2e::*;
use assent_gateway::audit_verify::{self, VerifyArgs};
use assent_gateway::store::testing;
use assent_receipts::{AnchorSet, FailureKind, Receipt, VerifyOptions, verify_export};
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
        // Reading the audit log is not a FHIR access: it leaves no receipt.
        assert_eq!(
            gw.gateway
                .state
                .store
                .receipts_after("test-gw", 0, 100)
                .unwrap()
                .len(),
            4
        );

        // Everything, newest first, as R4 BALP AuditEvents.
        let all = audit_get(&gw, "/audit/AuditEvent", officer).await;
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
        let r5 = audit_get(&gw, "/audit/AuditEvent?_fhirVersion=R5", officer).await;
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
            let got = audit_get(&gw, &format!("/audit/AuditEvent?{query}"), officer).await;
            assert_eq!(got.status, 200, "{query}: {}", got.text());
            let expected: Vec<String> = expected.into_iter().cloned().collect();
            assert_eq!(receipt_ids(&got.json()), expected, "{query}");
        }

        // Paging: signed keyset links, bound to the caller.
        let mut seen = Vec::new();
        let mut url = gw.url("/audit/AuditEvent?_count=1&site=st-mary");
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
            (415, "unsupported-media-type")
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
        let list = report["disclosures"].as_array().unwrap();
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
        let ndjson = audit_get(&gw, "/audit/export?format=ndjson", officer).await;
        assert_eq!(ndjson.status, 200);
        assert_eq!(ndjson.header("content-type"), Some("application/x-ndjson"));
        let text = ndjson.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        let report = verify_export(
            lines.iter().copied(),
            ledger_anchors(&gw).await,
            VerifyOptions {
                complete: true,
                require_anchored: true,
            },
        );
        assert!(report.all_held(), "{:?}", report.failures);
        assert_eq!(report.n_anchored, 4);
        let csv = audit_get(&gw, "/audit/export?format=csv&site=st-mary", officer).await;
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
    let n = assent_gateway::audit_api::EXPORT_CHUNK as usize + 20;
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
    assert_eq!(sequences, (1..=n as u64).collect::<Vec<_>>());
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
    let officer = auditor();
    let export = |gw: &StartedGateway| {
        let url = gw.url("/audit/export?format=ndjson");
        let officer = officer.clone();
        async move {
            let got = send("GET", &url, Some(&officer), &[], None).await;
            assert_eq!(got.status, 200);
            got.text()
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
    let detail = audit_get(&gw, &format!("/audit/receipts/{}", ids[5]), &officer).await;
    assert_eq!(detail.json()["verification"]["verified"], false);
    assert_eq!(detail.json()["verification"]["proof"], "fails");
    drop(gw);

    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = {:?}\ngateway_id = \"test-gw\"\n",
            db.display().to_string()
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
        let report = audit_verify::verify(&args).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let status = audit_verify::main(&args);
        let must_fail = !case.named.is_empty() || case.name.contains("dropped");
        if !must_fail {
            assert!(report.all_held(), "{}: {:?}", case.name, report.failures);
            assert_eq!(status, 0, "{}", case.name);
            assert_eq!(report.n_anchored, 8);
            continue;
        }
        assert_eq!(status, audit_verify::EXIT_FAILED, "{}", case.name);
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
    assert_eq!(audit_verify::main(&neither), 64);
}

/// The AuditEvents the audit API serves, in every FHIR version, for each BALP pattern the
/// gateway produces (read, patient read, query, denied, break-glass). With
/// `ASSENT_AUDIT_OUT=DIR` they are written to `DIR/{version}/{n}.json`, and the test script
/// validates them with an independent validator (`scripts/validate_fhir.py --plain`).
#[actix_web::test]
async fn audit_events_in_every_version_for_the_fhir_validator() {
    let upstream = hospital();
    let store = testing::sqlite();
    let gw = gateway(&store.url, &upstream);
    let mut ids = traffic(&gw).await;
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
    let out = std::env::var_os("ASSENT_AUDIT_OUT").map(std::path::PathBuf::from);
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
        expected.sort();
        assert_eq!(served, expected, "{version}: one AuditEvent per receipt");
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
        if let Some(dir) = &out {
            let dir = dir.join(version);
            std::fs::create_dir_all(&dir).unwrap();
            for (n, event) in events.iter().enumerate() {
                std::fs::write(dir.join(format!("{n}.json")), event.to_string()).unwrap();
            }
        }
    }
}
