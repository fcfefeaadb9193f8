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

// ---- content hashes: the bytes released are the bytes hashed ------------------------------

/// A FAKE R4 site: `Patient/p1`, a search of three Observations of p1 (awkward strings and
/// numbers, upstream URLs to rewrite) and `Observation/oe`, whose value the site spelt with an
/// exponent (`1E3`), all as raw text.
fn content_site() -> FakeUpstream {
    const PATIENT: &str = r#"{"resourceType": "Patient", "id": "p1", "meta": {"versionId": "4"},
        "name": [{"family": "Zoë", "given": ["Ann \"Q\" \\ /"]}], "birthDate": "1970-01-01",
        "extension": [{"url": "http://example.org/x", "valueDecimal": 1.50}],
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Zoë 😀</div>"}}"#;
    FakeUpstream::start(|req, base| {
        let raw = |status: u16, text: String| FakeResponse {
            status,
            headers: vec![("content-type".into(), "application/fhir+json".into())],
            body: text.into_bytes(),
            delay: None,
        };
        let observation = |id: &str, value: &str| {
            format!(
                r#"{{"resourceType": "Observation", "id": "{id}", "meta": {{"versionId": "1"}}, "status": "final",
                "code": {{"coding": [{{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose \u00e9"}}]}},
                "subject": {{"reference": "Patient/p1"}}, "valueQuantity": {{"value": {value}, "unit": "mg/dL"}},
                "note": [{{"text": "see {base}/Observation/{id}"}}]}}"#
            )
        };
        if req.path.ends_with("/Patient/p1") {
            raw(200, PATIENT.into())
        } else if req.path.ends_with("/Observation/oe") {
            raw(200, observation("oe", "1E3"))
        } else if req.path.ends_with("/Observation") {
            let entries: Vec<String> = [("o1", "1.50"), ("o2", "123456789012345678901234567890.123"), ("o3", "-0")]
                .iter()
                .map(|(id, v)| {
                    format!(
                        r#"{{"fullUrl": "{base}/Observation/{id}", "resource": {}, "search": {{"mode": "match"}}}}"#,
                        observation(id, v)
                    )
                })
                .collect();
            raw(
                200,
                format!(
                    r#"{{"resourceType": "Bundle", "type": "searchset", "link": [{{"relation": "self", "url": "{base}/Observation?patient=p1"}}], "entry": [{}]}}"#,
                    entries.join(",")
                ),
            )
        } else {
            raw(404, r#"{"resourceType": "OperationOutcome"}"#.into())
        }
    })
}

/// A client's own reading of a released body, without serde_json: the bytes of each released
/// resource as received (each `entry[].resource` of a Bundle, else the whole body).
fn released_spans(body: &[u8]) -> Vec<&[u8]> {
    fn ws(b: &[u8], mut i: usize) -> usize {
        while i < b.len() && b" \t\r\n".contains(&b[i]) {
            i += 1;
        }
        i
    }
    /// A string at `i`: its raw bytes and the index after its closing quote.
    fn string_at(b: &[u8], i: usize) -> (&[u8], usize) {
        assert_eq!(b[i], b'"');
        let mut j = i + 1;
        while b[j] != b'"' {
            j += if b[j] == b'\\' { 2 } else { 1 };
        }
        (&b[i + 1..j], j + 1)
    }
    fn value_end(b: &[u8], i: usize) -> usize {
        match b[i] {
            b'"' => string_at(b, i).1,
            b'{' | b'[' => {
                let (mut depth, mut j) = (0, i);
                loop {
                    match b[j] {
                        b'"' => {
                            j = string_at(b, j).1;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return j + 1;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
            }
            _ => {
                let mut j = i;
                while j < b.len() && !b",]} \t\r\n".contains(&b[j]) {
                    j += 1;
                }
                j
            }
        }
    }
    /// A member of an object: its key (raw), where its value starts and ends.
    type Member<'b> = (&'b [u8], usize, usize);
    /// The members of the object at `i`, and the index after it.
    fn members(b: &[u8], i: usize) -> (Vec<Member<'_>>, usize) {
        assert_eq!(b[i], b'{');
        let (mut out, mut i) = (Vec::new(), ws(b, i + 1));
        while b[i] != b'}' {
            let (key, after) = string_at(b, i);
            let start = ws(b, ws(b, after) + 1);
            let end = value_end(b, start);
            out.push((key, start, end));
            i = ws(b, end);
            if b[i] == b',' {
                i = ws(b, i + 1);
            }
        }
        (out, i + 1)
    }
    let start = ws(body, 0);
    let (top, end) = members(body, start);
    let bundle = top
        .iter()
        .any(|(k, s, e)| *k == b"resourceType" && &body[*s..*e] == br#""Bundle""#);
    if !bundle {
        return vec![&body[start..end]];
    }
    let mut spans = Vec::new();
    for (_, s, _) in top.iter().filter(|(k, _, _)| *k == b"entry") {
        let mut i = ws(body, s + 1);
        while body[i] != b']' {
            let end = if body[i] == b'{' {
                let (entry, end) = members(body, i);
                for (_, s, e) in entry.iter().filter(|(k, _, _)| *k == b"resource") {
                    spans.push(&body[*s..*e]);
                }
                end
            } else {
                value_end(body, i)
            };
            i = ws(body, end);
            if body[i] == b',' {
                i = ws(body, i + 1);
            }
        }
    }
    spans
}

/// The content hash a receipt lists for each released resource is the SHA-256 a client
/// computes from the body it received, the documented ways: over each released resource's
/// bytes as received in a compact answer (a read's whole body, each `entry[].resource` of a
/// Bundle), searched, shaped or translated alike; and over the resource's canonical JSON for
/// any answer (`verify_released`), which an indented answer or one whose exponents are
/// written back as the site spelt them needs.
#[actix_web::test]
async fn content_hashes_are_what_a_client_computes_from_the_released_body() {
    let upstream = content_site();
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let r5 = "application/fhir+json; fhirVersion=5.0";
    // (what, path, Accept, whether the bytes as received are the canonical JSON)
    let cases: &[(&str, &str, Option<&str>, bool)] = &[
        ("a read", "/fhir/st-mary/Patient/p1", None, true),
        (
            "a search",
            "/fhir/st-mary/Observation?patient=p1",
            None,
            true,
        ),
        (
            "shaped by _elements",
            "/fhir/st-mary/Observation?patient=p1&_elements=code",
            None,
            true,
        ),
        (
            "a read with _summary",
            "/fhir/st-mary/Patient/p1?_summary=true",
            None,
            true,
        ),
        (
            "translated to R5",
            "/fhir/st-mary/Observation?patient=p1",
            Some(r5),
            true,
        ),
        (
            "indented",
            "/fhir/st-mary/Observation?patient=p1&_pretty=true",
            None,
            false,
        ),
        (
            "an exponent as the site spelt it",
            "/fhir/st-mary/Observation/oe",
            None,
            false,
        ),
    ];
    for (what, path, accept, compact) in cases {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        let got = send(
            "GET",
            &gw.url(path),
            Some(clinician_token()),
            &headers,
            None,
        )
        .await;
        assert_eq!(got.status, 200, "{what}: {}", got.text());
        let id = got.header("x-assent-receipt").expect("a receipt id");
        let (receipt, _) = stored_receipts(&gw)
            .into_iter()
            .find(|(r, _)| r.id == id)
            .expect("the receipt is stored");
        let listed: Vec<Digest> = receipt.resources.iter().map(|r| r.content_hash).collect();
        let spans = released_spans(&got.body);
        assert!(!listed.is_empty(), "{what}: nothing listed");
        assert_eq!(spans.len(), listed.len(), "{what}: {}", got.text());
        // The documented way for every answer: the canonical JSON of each released resource
        // (keys sorted, no whitespace, numbers as their text: serde_json's compact writing of
        // its sorted maps, with `arbitrary_precision`).
        assert_eq!(
            assent_receipts::verify_released(&got.body, &receipt.resources),
            Ok(()),
            "{what}"
        );
        let value = got.json();
        let canonical: Vec<Digest> = assent_receipts::released_resources(&value)
            .map(|r| Digest::of(&serde_json::to_vec(r).unwrap()))
            .collect();
        assert_eq!(canonical, listed, "{what}");
        // And for a compact answer, the bytes as received.
        let as_received: Vec<Digest> = spans.iter().map(|s| Digest::of(s)).collect();
        if *compact {
            assert_eq!(as_received, listed, "{what}: {}", got.text());
        } else {
            assert_ne!(
                as_received, listed,
                "{what}: the bytes differ from canonical JSON"
            );
        }
    }
    let text = send(
        "GET",
        &gw.url("/fhir/st-mary/Observation/oe"),
        Some(clinician_token()),
        &[],
        None,
    )
    .await
    .text();
    assert!(text.contains(r#""value":1E3"#), "{text}");
}

/// ADV: no byte of a released resource can change without the receipt's content hashes
/// failing the client's check: a table of meaningful edits (a digit, a number's precision, a
/// name, a code, a reference, the id, the version, entries dropped or swapped), then every
/// byte of every released resource flipped two ways, on a read and a search as the gateway
/// released them. What is not content (whitespace between tokens) keeps verifying; the
/// Bundle's own envelope (links, `fullUrl`, search mode) is not part of any resource hash.
#[actix_web::test]
async fn adv_a_changed_released_byte_fails_verification() {
    let upstream = content_site();
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .start();
    let fetch = |path: &'static str| {
        let url = gw.url(path);
        async move { send("GET", &url, Some(clinician_token()), &[], None).await }
    };
    let read = fetch("/fhir/st-mary/Patient/p1").await;
    let search = fetch("/fhir/st-mary/Observation?patient=p1").await;
    let stored = stored_receipts(&gw);
    let listed = |got: &Got| {
        let id = got.header("x-assent-receipt").unwrap();
        stored
            .iter()
            .find(|(r, _)| r.id == id)
            .unwrap()
            .0
            .resources
            .clone()
    };
    let (read_listed, search_listed) = (listed(&read), listed(&search));
    assert_eq!(read_listed.len(), 1);
    assert_eq!(search_listed.len(), 3);
    let replace = |body: &[u8], from: &str, to: &str| -> Vec<u8> {
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains(from), "{from} not in {text}");
        text.replacen(from, to, 1).into_bytes()
    };
    type Edit = Box<dyn Fn(&[u8]) -> Vec<u8>>;
    let edits: Vec<(&str, bool, Edit)> = vec![
        (
            "a digit",
            true,
            Box::new(move |b| replace(b, "1.50", "1.51")),
        ),
        (
            "a number's precision",
            true,
            Box::new(move |b| replace(b, "1.50", "1.5 ")),
        ),
        ("a name", false, Box::new(move |b| replace(b, "Zoë", "Zoe"))),
        (
            "a birth date",
            false,
            Box::new(move |b| replace(b, "1970-01-01", "1970-01-02")),
        ),
        (
            "a code",
            true,
            Box::new(move |b| replace(b, "2345-7", "2345-8")),
        ),
        (
            "whose it is",
            true,
            Box::new(move |b| replace(b, "Patient/p1", "Patient/p2")),
        ),
        (
            "the id",
            false,
            Box::new(move |b| replace(b, r#""id":"p1""#, r#""id":"p2""#)),
        ),
        (
            "the version",
            true,
            Box::new(move |b| replace(b, r#""versionId":"1""#, r#""versionId":"2""#)),
        ),
        (
            "an element added",
            false,
            Box::new(move |b| replace(b, r#""birthDate""#, r#""active":true,"birthDate""#)),
        ),
        (
            "an escape",
            false,
            Box::new(move |b| replace(b, r#"\"Q\""#, r#"\"Q'"#)),
        ),
        (
            "an entry dropped",
            true,
            Box::new(move |b| {
                let text = String::from_utf8(b.to_vec()).unwrap();
                let at = text.find(r#",{"fullUrl""#).unwrap();
                let end = text[at + 1..].find(r#",{"fullUrl""#).unwrap() + at + 1;
                format!("{}{}", &text[..at], &text[end..]).into_bytes()
            }),
        ),
        (
            "two entries' ids swapped",
            true,
            Box::new(move |b| {
                let text = String::from_utf8(b.to_vec()).unwrap();
                let text = text.replacen(r#""id":"o1""#, r#""id":"tmp""#, 1);
                let text = text.replacen(r#""id":"o2""#, r#""id":"o1""#, 1);
                text.replacen(r#""id":"tmp""#, r#""id":"o2""#, 1)
                    .into_bytes()
            }),
        ),
    ];
    for (what, in_search, edit) in &edits {
        let (got, listed) = if *in_search {
            (&search, &search_listed)
        } else {
            (&read, &read_listed)
        };
        assert_eq!(assent_receipts::verify_released(&got.body, listed), Ok(()));
        let changed = edit(&got.body);
        assert_ne!(changed, got.body, "{what}");
        assert!(
            assent_receipts::verify_released(&changed, listed).is_err(),
            "{what}: a changed resource verifies"
        );
    }
    // Every byte of every released resource, flipped two ways: never verifies.
    let mut flipped = 0;
    for (got, listed) in [(&read, &read_listed), (&search, &search_listed)] {
        let body = &got.body;
        for span in released_spans(body) {
            let start = span.as_ptr() as usize - body.as_ptr() as usize;
            for at in start..start + span.len() {
                for mask in [0x01u8, 0x20] {
                    let mut changed = body.clone();
                    changed[at] ^= mask;
                    flipped += 1;
                    assert!(
                        assent_receipts::verify_released(&changed, listed).is_err(),
                        "byte {at} ^ {mask:#x} ({:?}) verifies",
                        String::from_utf8_lossy(
                            &changed[at.saturating_sub(20)..(at + 20).min(body.len())]
                        )
                    );
                }
            }
        }
    }
    assert!(flipped > 2_000, "{flipped}");
    // Not content: whitespace between tokens, and the Bundle's envelope.
    let spaced = replace(&search.body, r#"{"entry":["#, "{ \"entry\" :\n[ ");
    assert_eq!(
        assent_receipts::verify_released(&spaced, &search_listed),
        Ok(())
    );
    let envelope = replace(&search.body, r#""mode":"match""#, r#""mode":"include""#);
    assert_eq!(
        assent_receipts::verify_released(&envelope, &search_listed),
        Ok(())
    );
}
