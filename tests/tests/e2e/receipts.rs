//! Receipts end to end: every request after authentication gets exactly one receipt, durable
//! before its response is released and named in `X-Assent-Receipt`; the chain verifies, every
//! receipt is anchored on the ledger with a proof that verifies; a store that refuses the
//! receipt withholds the response (503) and the chain goes on without a gap.

use assent_e2e::*;
use assent_gateway::anchoring::rebuild_batch;
use assent_gateway::store::{Backend, testing};
use assent_receipts::{
    AccessDecision, AccessKind, Digest, Receipt, ResourceEntry, verify_chain, verify_inclusion,
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
async fn no_data_is_released_when_the_receipt_cannot_be_stored() {
    let upstream = hospital();
    for store in testing::all() {
        let gw = gateway(&store.url, &upstream);
        let url = gw.url("/fhir/st-mary/Patient/p1");
        let read = || send("GET", &url, Some(clinician_token()), &[], None);
        assert_eq!(read().await.status, 200);

        refuse_receipts(&store, true);
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

        refuse_receipts(&store, false);
        let again = read().await;
        assert_eq!(again.status, 200, "{}", again.text());
        let stored = stored_receipts(&gw);
        assert_eq!(stored.len(), 2, "the refused receipt is not in the chain");
        assert_eq!(stored[1].0.sequence, 2, "and leaves no gap");
        assert!(verify_chain(stored.iter().map(|(r, h)| (r, Some(*h)))).is_empty());
    }
}
