//! Receipts end to end: every request after authentication gets exactly one receipt, durable
//! before its response is released and named in `X-Assent-Receipt`; the chain verifies, every
//! receipt is anchored on the ledger with a proof that verifies; a receipt log that cannot be
//! written withholds the response (503) and the chain goes on without a gap; a store that
//! refuses receipts for a while loses none of them; a release that
//! reaches several patients names every one of them (receipt, store, disclosures, export);
//! and a chain of version 1 receipts goes on in version 2 and verifies whole.

use assent_e2e::*;
use assent_gateway::services::anchoring::rebuild_batch;
use assent_gateway::store::{Backend, testing};
use assent_gateway::store::{
    NewReceiptPatientRow, NewReceiptRow, ReceiptPatientRow, ReceiptRow, Store,
};
use assent_receipts::{
    AccessDecision, AccessKind, Chain, Digest, Encoding, Receipt, ReceiptSubjects, ResourceEntry,
    VerifyOptions, verify_chain, verify_export, verify_inclusion,
};
use diesel::connection::SimpleConnection;
use serde_json::json;

/// A FAKE upstream: Patient/p1 exists, everything else is 404.
fn hospital() -> FakeUpstream {
    FakeUpstream::one_resource(
        json!({"resourceType": "Patient", "id": "p1", "meta": {"versionId": "4"}, "name": [{"family": "Example"}]}),
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
        .set("receipts", json!({"batch_max_receipts": 3, "batch_max_wait_ms": 20}))
        .start()
}

/// Every stored receipt of the test gateway, in chain order, decoded, with its stored hash.
fn stored_receipts(gw: &StartedGateway) -> Vec<(Receipt, Digest)> {
    gw.gateway
        .state
        .store
        .receipts_after("test-gw", 0, 10_000)
        .unwrap()
        .into_iter()
        .map(|row| {
            let receipt = Receipt::from_canonical_bytes(&row.body).unwrap();
            assert_eq!(receipt.id, row.receipt_id);
            (receipt, Digest(row.hash.try_into().unwrap()))
        })
        .collect()
}

#[actix_web::test]
async fn every_request_after_authentication_has_one_durable_anchored_receipt() {
    let upstream = hospital();
    for store in testing::all() {
        let gw = gateway(&store.url, &upstream);
        let alice = clinician_token();
        let call = |path: &str, token: Option<&'static str>| {
            let url = gw.url(path);
            async move { send("GET", &url, token, &[], None).await }
        };
        let permitted = call("/fhir/st-mary/Patient/p1", Some(alice)).await;
        assert_eq!(permitted.status, 200, "{}", permitted.text());
        let cases = [
            (permitted, AccessDecision::Permit),
            (
                call("/fhir/st-mary/Patient/p2", Some(alice)).await,
                AccessDecision::Error,
            ),
            (
                call("/fhir/nowhere/Patient/p1", Some(alice)).await,
                AccessDecision::Error,
            ),
            (
                call("/fhir/st-mary/Patient?_count=x%00", Some(alice)).await,
                AccessDecision::Error,
            ),
            (
                call("/fhir/north-general/Patient/p1", Some(alice)).await,
                AccessDecision::Deny,
            ),
        ];
        let statuses: Vec<u16> = cases.iter().map(|(g, _)| g.status).collect();
        assert_eq!(statuses, [200, 404, 404, 400, 403], "{:?}", store.url);

        // Without authentication there is no caller to account for: no receipt.
        let anonymous = call("/fhir/st-mary/Patient/p1", None).await;
        assert_eq!(anonymous.status, 401);
        assert_eq!(anonymous.header("x-assent-receipt"), None);

        let stored = stored_receipts(&gw);
        assert_eq!(
            stored.len(),
            cases.len(),
            "one receipt per authenticated request"
        );
        for ((got, decision), (receipt, _)) in cases.iter().zip(&stored) {
            assert_eq!(got.header("x-assent-receipt"), Some(receipt.id.as_str()));
            assert_eq!(receipt.decision, *decision, "{}", got.text());
            assert_eq!(receipt.status, got.status);
            assert_eq!(receipt.gateway_id, "test-gw");
        }

        // The permitted read names what was released, by version and content hash, and whose
        // data it was (as a keyed hash; the clear value stays in the store).
        let (read, _) = &stored[0];
        let released = ResourceEntry::from_resource(&cases[0].0.json()).unwrap();
        assert_eq!(read.resources, vec![released.clone()]);
        assert_eq!(released.reference(), "Patient/p1/_history/4");
        assert_eq!(read.upstream_status, Some(200));
        assert_eq!(read.site.as_deref(), Some("st-mary"));
        let key = gw.gateway.state.consents.key();
        assert_eq!(read.patient_keys, vec![key.patient("st-mary/Patient/p1")]);
        assert_eq!(read.kind, AccessKind::Fhir);
        let row = gw.gateway.state.store.receipt(&read.id).unwrap().unwrap();
        assert_eq!(row.patients, r#"["st-mary/Patient/p1"]"#);
        assert_eq!(stored[1].0.upstream_status, Some(404));
        assert_eq!(stored[2].0.site, None, "an unknown site is not a site");

        // The chain holds, and every receipt's proof leads to the root the ledger recorded.
        let breaks = verify_chain(stored.iter().map(|(r, h)| (r, Some(*h))));
        assert!(breaks.is_empty(), "{breaks:?}");
        gw.wait_for_anchors("test-gw", stored.len() as i64);
        let ledger = gw.gateway.state.consents.ledger();
        let gateway_key = key.gateway("test-gw");
        for (receipt, hash) in &stored {
            let (row, batch) =
                rebuild_batch(&gw.gateway.state.store, "test-gw", receipt.sequence as i64)
                    .unwrap()
                    .expect("every receipt is in a batch");
            let proof = batch.proof_for(receipt.sequence).unwrap();
            assert!(verify_inclusion(hash, proof, &batch.root));
            assert_eq!(row.root, batch.root.as_bytes().to_vec());
            let anchor = ledger
                .anchor(&gateway_key, batch.batch_id)
                .await
                .unwrap()
                .expect("the batch root is on the ledger");
            assert_eq!(anchor.root, batch.root.to_hex());
            assert_eq!(anchor.n_receipts, batch.n_receipts());
            assert!(row.tx_id.is_some() && row.block_number.is_some());
        }
        // Batches close at 3 receipts (or 20 ms): at least two for five receipts.
        let batches = gw
            .gateway
            .state
            .store
            .last_batch("test-gw")
            .unwrap()
            .unwrap();
        assert!(batches.batch_id >= 2, "{batches:?}");
    }
}

/// Makes the store refuse new receipts (a trigger), or accept them again.
fn refuse_receipts(store: &testing::TestStore, refuse: bool) {
    let mut conn = store.store.connection().unwrap();
    let sql = match (store.store.backend(), refuse) {
        (Backend::Sqlite, true) => {
            "CREATE TRIGGER refuse_receipts BEFORE INSERT ON receipts \
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;"
        }
        (Backend::Sqlite, false) => "DROP TRIGGER refuse_receipts;",
        (Backend::Postgres, true) => {
            "CREATE FUNCTION refuse_receipts() RETURNS trigger AS $$ \
             BEGIN RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER refuse_receipts BEFORE INSERT ON receipts \
             FOR EACH ROW EXECUTE FUNCTION refuse_receipts();"
        }
        (Backend::Postgres, false) => {
            "DROP TRIGGER refuse_receipts ON receipts; DROP FUNCTION refuse_receipts();"
        }
    };
    conn.batch_execute(sql).unwrap();
}

#[actix_web::test]
async fn no_data_is_released_when_the_receipt_cannot_be_logged() {
    let upstream = hospital();
    for store in testing::all() {
        let gw = gateway(&store.url, &upstream);
        let url = gw.url("/fhir/st-mary/Patient/p1");
        let read = || send("GET", &url, Some(clinician_token()), &[], None);
        assert_eq!(read().await.status, 200);

        // The receipt log's disk fails: nothing is released.
        gw.gateway.state.receipts.fail_log_writes_for_tests(true);
        let refused = read().await;
        assert_eq!(
            (refused.status, refused.error_code().as_str()),
            (503, "receipt-unavailable")
        );
        assert_eq!(refused.json()["resourceType"], "OperationOutcome");
        assert!(
            !refused.text().contains("Example"),
            "no patient data: {}",
            refused.text()
        );
        assert_eq!(refused.header("x-assent-receipt"), None);
        // The gateway's own APIs likewise: no answer without a durable receipt.
        let auditor = token("nurse-carol", Some("openid user/AuditEvent.rs"), None, None);
        for (path, token) in [
            ("/audit/AuditEvent", auditor.as_str()),
            ("/audit/export", auditor.as_str()),
            ("/consent/Consent?site=st-mary&patient=p1", admin_token()),
        ] {
            let got = send("GET", &gw.url(path), Some(token), &[], None).await;
            assert_eq!(
                (got.status, got.error_code().as_str()),
                (503, "receipt-unavailable"),
                "{path}"
            );
            assert_eq!(got.json()["resourceType"], "OperationOutcome");
            assert_eq!(got.header("x-assent-receipt"), None);
        }

        gw.gateway.state.receipts.fail_log_writes_for_tests(false);
        let again = read().await;
        assert_eq!(again.status, 200, "{}", again.text());
        let stored = stored_receipts(&gw);
        assert_eq!(stored.len(), 2, "the refused receipts are not in the chain");
        assert_eq!(stored[1].0.sequence, 2, "and leave no gap");
        assert_eq!(
            again.header("x-assent-receipt"),
            Some(stored[1].0.id.as_str())
        );
        assert!(verify_chain(stored.iter().map(|(r, h)| (r, Some(*h)))).is_empty());
    }
}

/// The store's receipt tables are filled from the log off the request path: a store that
/// refuses receipts for a while neither withholds responses nor loses their receipts, and an
/// audit read waits until the tables hold every receipt already released.
#[actix_web::test]
async fn receipts_reach_the_store_after_it_refused_them_for_a_while() {
    let upstream = hospital();
    for store in testing::all() {
        let gw = gateway(&store.url, &upstream);
        let url = gw.url("/fhir/st-mary/Patient/p1");
        let read = || send("GET", &url, Some(clinician_token()), &[], None);
        assert_eq!(read().await.status, 200);

        refuse_receipts(&store, true);
        let mut released = Vec::new();
        for _ in 0..3 {
            let got = read().await;
            assert_eq!(got.status, 200, "{}", got.text());
            released.push(got.header("x-assent-receipt").unwrap().to_owned());
        }
        // Not in the tables yet (the store refuses them).
        for id in &released {
            assert!(store.store.receipt(id).unwrap().is_none(), "{id}");
        }
        refuse_receipts(&store, false);
        // The gateway's reads wait for the tables to catch up: all four, in order.
        let stored = stored_receipts(&gw);
        let ids: Vec<&str> = stored.iter().map(|(r, _)| r.id.as_str()).collect();
        assert_eq!(ids.len(), 4);
        assert_eq!(
            ids[1..],
            released.iter().map(String::as_str).collect::<Vec<_>>()[..]
        );
        assert!(verify_chain(stored.iter().map(|(r, h)| (r, Some(*h)))).is_empty());
        gw.wait_for_anchors("test-gw", 4);
    }
}

/// A search whose answer reaches three patients: its receipt names all three, in the store,
/// the disclosures of each, and the export.
#[actix_web::test]
async fn a_release_names_every_patient_it_reached() {
    let upstream = crate::consent::hospital();
    for store in testing::all() {
        let gw = TestGateway::new()
            .database(&store.url)
            .site("st-mary", &upstream.base_url())
            .start();
        let got = send(
            "GET",
            &gw.url("/fhir/st-mary/Observation?code=x"),
            Some(clinician_token()),
            &[],
            None,
        )
        .await;
        assert_eq!(got.status, 200, "{}", got.text());
        let id = got.header("x-assent-receipt").unwrap();
        let state = &gw.gateway.state;
        let key = state.consents.key();
        let identities = [
            "st-mary/Patient/p1",
            "st-mary/Patient/p2",
            "st-mary/Patient/p3",
        ];
        let row = state.store.receipt(id).unwrap().unwrap();
        let receipt = Receipt::from_canonical_bytes(&row.body).unwrap();
        assert_eq!(receipt.encoding, Encoding::V2);
        let mut keys = receipt.patient_keys.clone();
        keys.sort();
        let mut expected: Vec<String> = identities.iter().map(|p| key.patient(p)).collect();
        expected.sort();
        assert_eq!(keys, expected);
        assert_eq!(receipt.resources.len(), 3);
        let clear: Vec<String> = serde_json::from_str(&row.patients).unwrap();
        let rekeyed: Vec<String> = clear.iter().map(|p| key.patient(p)).collect();
        assert_eq!(
            rekeyed, receipt.patient_keys,
            "clear patients in the keys' order"
        );
        let mut indexed: Vec<String> = state
            .store
            .receipt_patients(id)
            .unwrap()
            .into_iter()
            .map(|p| p.patient)
            .collect();
        indexed.sort();
        assert_eq!(indexed, identities);
        let auditor = token("nurse-carol", Some("openid user/AuditEvent.rs"), None, None);
        for p in ["p1", "p2", "p3"] {
            let report = send(
                "GET",
                &gw.url(&format!("/audit/patient/{p}/disclosures?site=st-mary")),
                Some(&auditor),
                &[],
                None,
            )
            .await
            .json();
            assert!(
                report["disclosures"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|d| d["receipt_id"] == id),
                "{p}: {report}"
            );
        }
        let export = send(
            "GET",
            &gw.url("/audit/export?kind=fhir"),
            Some(&auditor),
            &[],
            None,
        )
        .await
        .text();
        let line: serde_json::Value = serde_json::from_str(export.lines().next().unwrap()).unwrap();
        assert_eq!(line["receipt"]["encoding"], 2);
        assert_eq!(line["receipt"]["kind"], "fhir");
        assert_eq!(line["receipt"]["patient_keys"].as_array().unwrap().len(), 3);
        assert_eq!(line["subjects"]["patients"], json!(clear));
    }
}

/// A store holding version 1 receipts (written before version 2): the gateway goes on with
/// version 2 receipts in the same chain, anchors all of them, and an export of the whole chain
/// verifies complete, version 1 lines as they were.
#[actix_web::test]
async fn a_chain_of_version_1_receipts_goes_on_in_version_2() {
    let upstream = hospital();
    for store in testing::all() {
        let key = {
            // The consortium key the gateway will use: made at its first start, so start it
            // once to have it, then write the old receipts with it.
            let gw = gateway(&store.url, &upstream);
            gw.gateway.state.consents.key().clone()
        };
        let mut chain = Chain::genesis("test-gw");
        let mut rows = Vec::new();
        let mut patients = Vec::new();
        for i in 1..=3u64 {
            let subjects = ReceiptSubjects {
                actor: "Practitioner/dr-alice".into(),
                patients: vec!["st-mary/Patient/p1".into()],
                ..ReceiptSubjects::default()
            };
            let mut r = Receipt::new(
                format!("old-{i}"),
                1_700_000_000_000 + i as i64,
                "test-gw",
                subjects.keys(&key),
                AccessDecision::Permit,
                200,
            );
            r.encoding = Encoding::V1;
            r.site = Some("st-mary".into());
            r.interaction = assent_receipts::parse_interaction("read");
            let chained = chain.append(r).unwrap();
            assert!(chained.bytes.starts_with(b"\0\0\0\x10assent-receipt/1"));
            rows.push(ReceiptRow {
                gateway_id: "test-gw".into(),
                sequence: i as i64,
                receipt_id: chained.receipt.id.clone(),
                time_ms: chained.receipt.time_ms,
                site: Some("st-mary".into()),
                interaction: Some("read".into()),
                resource_type: None,
                decision: "permit".into(),
                break_glass: false,
                status: 200,
                purpose: None,
                actor: subjects.actor.clone(),
                actor_key: chained.receipt.actor_key.clone(),
                hash: chained.hash.as_bytes().to_vec(),
                body: chained.bytes.clone(),
                subjects: "{}".into(),
                kind: "fhir".into(),
                patients: r#"["st-mary/Patient/p1"]"#.into(),
            });
            patients.push(ReceiptPatientRow {
                receipt_id: chained.receipt.id.clone(),
                patient_key: chained.receipt.patient_keys[0].clone(),
                patient: "st-mary/Patient/p1".into(),
                time_ms: chained.receipt.time_ms,
            });
        }
        {
            let rows: Vec<NewReceiptRow> = rows
                .iter()
                .map(|r: &ReceiptRow| NewReceiptRow {
                    gateway_id: &r.gateway_id,
                    sequence: r.sequence,
                    receipt_id: &r.receipt_id,
                    time_ms: r.time_ms,
                    site: r.site.as_deref(),
                    interaction: r.interaction.as_deref(),
                    resource_type: r.resource_type.as_deref(),
                    decision: &r.decision,
                    break_glass: r.break_glass,
                    status: r.status,
                    purpose: r.purpose.as_deref(),
                    actor: &r.actor,
                    actor_key: &r.actor_key,
                    hash: &r.hash,
                    body: &r.body,
                    subjects: &r.subjects,
                    kind: &r.kind,
                    patients: &r.patients,
                })
                .collect();
            let patients: Vec<NewReceiptPatientRow> = patients
                .iter()
                .map(|p: &ReceiptPatientRow| NewReceiptPatientRow {
                    receipt_id: &p.receipt_id,
                    patient_key: &p.patient_key,
                    patient: &p.patient,
                    time_ms: p.time_ms,
                })
                .collect();
            let mut conn = store.store.index_connection().unwrap();
            Store::insert_receipts(&mut conn, &rows, &patients, true).unwrap();
        }
        let gw = gateway(&store.url, &upstream);
        for _ in 0..3 {
            let got = send(
                "GET",
                &gw.url("/fhir/st-mary/Patient/p1"),
                Some(clinician_token()),
                &[],
                None,
            )
            .await;
            assert_eq!(got.status, 200, "{}", got.text());
        }
        let stored = stored_receipts(&gw);
        let encodings: Vec<Encoding> = stored.iter().map(|(r, _)| r.encoding).collect();
        assert_eq!(
            encodings,
            [
                Encoding::V1,
                Encoding::V1,
                Encoding::V1,
                Encoding::V2,
                Encoding::V2,
                Encoding::V2
            ]
        );
        assert!(verify_chain(stored.iter().map(|(r, h)| (r, Some(*h)))).is_empty());
        gw.wait_for_anchors("test-gw", 6);
        let auditor = token("nurse-carol", Some("openid user/AuditEvent.rs"), None, None);
        let export = send("GET", &gw.url("/audit/export"), Some(&auditor), &[], None).await;
        let text = export.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 7, "six accesses and the export's own receipt");
        assert!(lines[0].contains(r#""encoding":1"#) && lines[0].contains(r#""patient_key":"#));
        assert!(lines[3].contains(r#""encoding":2"#));
        let state = &gw.gateway.state;
        let gateway_key = state.consents.key().gateway("test-gw");
        let mut anchors = assent_receipts::AnchorSet::new();
        for batch_id in 1.. {
            match state
                .consents
                .ledger()
                .anchor(&gateway_key, batch_id)
                .await
                .unwrap()
            {
                Some(record) => assert!(anchors.insert_record("test-gw", &record)),
                None => break,
            }
        }
        let report = verify_export(
            lines.iter().copied(),
            anchors,
            VerifyOptions {
                complete: true,
                require_anchored: true,
            },
        );
        assert!(report.all_held(), "{:?}", report.failures);
        // The six accesses; the export's own receipt too when its batch (20 ms window) closed
        // before the anchors were read.
        assert!(
            (6..=7).contains(&report.n_anchored),
            "{}",
            report.n_anchored
        );
    }
}
