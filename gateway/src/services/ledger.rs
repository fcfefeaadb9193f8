//! The embedded ledger's block store over the gateway's database (SQLite or PostgreSQL),
//! through diesel: [`SqlBlockStore`] implements `assent_ledger::BlockStore`, blocks in
//! `ledger_blocks` and the documents the blocks name by hash in `consent_documents`.
//!
//! Appends are atomic and ordered: one transaction checks that the store's head is the block
//! before and inserts; the primary key on `number` settles a race between two writers (the
//! loser gets `StoreError::Conflict` and catches up). Documents are keyed by hash, first
//! write wins. Leaves out what blocks mean and checking documents against their hash (the
//! ledger crate) and the consent API (the consent routes and service).

use assent_ledger::{BlockRow, BlockStore, StoreError};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};

use crate::store::{AnyConnection, Store, ledger_blocks};

/// Blocks in the `ledger_blocks` table.
#[derive(Clone)]
pub struct SqlBlockStore {
    store: Store,
}

#[derive(Queryable, Insertable)]
#[diesel(table_name = ledger_blocks)]
struct BlockRecord {
    number: i64,
    hash: Vec<u8>,
    prev_hash: Vec<u8>,
    timestamp_ms: i64,
    body: Vec<u8>,
    signature: Vec<u8>,
}

impl From<BlockRecord> for BlockRow {
    fn from(r: BlockRecord) -> BlockRow {
        BlockRow {
            number: r.number,
            hash: r.hash,
            prev_hash: r.prev_hash,
            timestamp: r.timestamp_ms,
            body: r.body,
            signature: r.signature,
        }
    }
}

impl SqlBlockStore {
    pub fn new(store: Store) -> SqlBlockStore {
        SqlBlockStore { store }
    }

    fn append_blocking(&self, row: &BlockRow) -> Result<(), StoreError> {
        let mut conn = self.store.connection().map_err(unavailable)?;
        let record = BlockRecord {
            number: row.number,
            hash: row.hash.clone(),
            prev_hash: row.prev_hash.clone(),
            timestamp_ms: row.timestamp,
            body: row.body.clone(),
            signature: row.signature.clone(),
        };
        // The insert comes first: a SQLite transaction that read before writing cannot take
        // the write lock once another connection committed (SQLITE_BUSY at once, without the
        // busy timeout); one that writes first waits for the lock like any writer.
        let result = conn.transaction(|conn| {
            diesel::insert_into(ledger_blocks::table)
                .values(&record)
                .execute(conn)?;
            let head: Option<i64> = ledger_blocks::table
                .select(diesel::dsl::max(ledger_blocks::number))
                .first(conn)?;
            let previous_present = match row.number.checked_sub(1).filter(|n| *n >= 0) {
                None => true,
                Some(previous) => diesel::select(diesel::dsl::exists(
                    ledger_blocks::table.filter(ledger_blocks::number.eq(previous)),
                ))
                .get_result(conn)?,
            };
            if head != Some(row.number) || !previous_present || row.number < 0 {
                // Not the next block after the head: undo the insert.
                return Err(DieselError::RollbackTransaction);
            }
            Ok(())
        });
        match result {
            Ok(()) => Ok(()),
            // Not at the head, or another writer inserted the same number first.
            Err(DieselError::RollbackTransaction)
            | Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
                let head = self.head_blocking().ok().flatten();
                Err(StoreError::Conflict {
                    number: row.number,
                    head,
                })
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    fn read_blocking(&self, from: i64, limit: usize) -> Result<Vec<BlockRow>, StoreError> {
        let mut conn = self.store.connection().map_err(unavailable)?;
        let rows: Vec<BlockRecord> = ledger_blocks::table
            .filter(ledger_blocks::number.ge(from))
            .order(ledger_blocks::number.asc())
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .load(&mut *conn)
            .map_err(unavailable)?;
        Ok(rows.into_iter().map(BlockRow::from).collect())
    }

    fn head_blocking(&self) -> Result<Option<i64>, StoreError> {
        let mut conn = self.store.connection().map_err(unavailable)?;
        ledger_blocks::table
            .select(diesel::dsl::max(ledger_blocks::number))
            .first(&mut *conn)
            .map_err(unavailable)
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable {
        reason: e.to_string(),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| unavailable(format!("store task failed: {e}")))?
}

#[async_trait::async_trait]
impl BlockStore for SqlBlockStore {
    async fn append(&self, row: &BlockRow) -> Result<(), StoreError> {
        let this = self.clone();
        let row = row.clone();
        blocking(move || this.append_blocking(&row)).await
    }

    async fn read_from(&self, from: i64, limit: usize) -> Result<Vec<BlockRow>, StoreError> {
        let this = self.clone();
        blocking(move || this.read_blocking(from, limit)).await
    }

    async fn head(&self) -> Result<Option<i64>, StoreError> {
        let this = self.clone();
        blocking(move || this.head_blocking()).await
    }

    async fn put_document(&self, hash: &str, document: &[u8]) -> Result<(), StoreError> {
        use assent_ledger::Clock;
        let store = self.store.clone();
        let (hash, document) = (hash.to_owned(), document.to_vec());
        let now = assent_ledger::SystemClock.now_millis();
        blocking(move || {
            store
                .put_document(&hash, &document, now)
                .map_err(unavailable)
        })
        .await
    }

    async fn document(&self, hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let store = self.store.clone();
        let hash = hash.to_owned();
        blocking(move || store.document(&hash).map_err(unavailable)).await
    }
}

/// `assent ledger verify` could not check the chain, or found it broken.
#[derive(Debug, thiserror::Error)]
pub enum LedgerVerifyError {
    /// The keys are missing, or still in the database (exit 64).
    #[error("{0}")]
    Keys(String),
    #[error("{0}")]
    Failed(String),
}

/// `assent ledger verify`: every block of the configured store, checked against the node's
/// key (`node_key_hex` of the key file or the environment). Returns a one-line report, or the
/// first bad block.
pub fn verify(config: &crate::config::Config) -> Result<String, LedgerVerifyError> {
    let failed = |e: &dyn std::fmt::Display| LedgerVerifyError::Failed(e.to_string());
    let store = Store::open(&config.database_url).map_err(|e| failed(&e))?;
    crate::services::keys::check_database_holds_no_keys(&store)
        .map_err(|e| LedgerVerifyError::Keys(e.to_string()))?;
    let keys = config
        .key_material
        .require_ledger(config)
        .map_err(|e| LedgerVerifyError::Keys(e.to_string()))?;
    let seed = keys
        .node_seed
        .ok_or_else(|| LedgerVerifyError::Keys("the embedded ledger needs a node key".into()))?;
    let public_key = assent_ledger::SigningKey::from_bytes(&seed).verifying_key();
    let blocks = SqlBlockStore::new(store);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failed(&e))?;
    let verified = runtime
        .block_on(assent_ledger::verify_store(&blocks, &public_key, 500))
        .map_err(|e| failed(&e))?;
    Ok(format!(
        "ledger verified: {} blocks, {} transactions, every hash, link and signature holds",
        verified.n_blocks, verified.n_transactions
    ))
}

/// Test support: changes a stored block behind the ledger's back, as an attacker with
/// database access would. Only in tests and with the `testing` feature.
#[cfg(any(test, feature = "testing"))]
pub fn tamper_body_for_tests(store: &Store, number: i64) -> Result<(), crate::store::StoreError> {
    let mut conn = store.connection()?;
    let body: Vec<u8> = ledger_blocks::table
        .filter(ledger_blocks::number.eq(number))
        .select(ledger_blocks::body)
        .first(&mut *conn)?;
    let edited = String::from_utf8_lossy(&body)
        .replacen("put", "PUT", 1)
        .into_bytes();
    diesel::update(ledger_blocks::table.filter(ledger_blocks::number.eq(number)))
        .set(ledger_blocks::body.eq(edited))
        .execute(&mut *conn)?;
    Ok(())
}

/// Test support: replaces the bytes of a stored document behind the ledger's back, as an
/// attacker with database access would. Only in tests and with the `testing` feature.
#[cfg(any(test, feature = "testing"))]
pub fn tamper_document_for_tests(
    store: &Store,
    hash: &str,
    document: &[u8],
) -> Result<(), crate::store::StoreError> {
    use crate::store::consent_documents;
    let mut conn = store.connection()?;
    diesel::update(consent_documents::table.filter(consent_documents::document_hash.eq(hash)))
        .set(consent_documents::document.eq(document))
        .execute(&mut *conn)?;
    Ok(())
}

/// Which backend a connection is, for log lines.
pub fn backend_name(conn: &AnyConnection) -> &'static str {
    match conn {
        AnyConnection::Sqlite(_) => "sqlite",
        AnyConnection::Postgresql(_) => "postgres",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use assent_ledger::conformance::{self, ChainAccess, Subject};
    use assent_ledger::{
        EmbeddedLedger, EmbeddedOptions, Ledger, SigningKey, SystemClock, verify_store,
    };

    use super::*;
    use crate::store::testing;

    const SEED: [u8; 32] = [7; 32];

    async fn open(store: Store) -> EmbeddedLedger {
        EmbeddedLedger::open(
            Arc::new(SqlBlockStore::new(store)),
            SigningKey::from_bytes(&SEED),
            Arc::new(SystemClock),
            EmbeddedOptions::default(),
        )
        .await
        .expect("the ledger opens")
    }

    /// The ledger conformance suite, on the embedded ledger over SQLite and (when
    /// `ASSENT_TEST_DATABASE_URL` is set) PostgreSQL. Each subject gets a fresh database.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_embedded_ledger_over_sql_passes_the_conformance_suite() {
        let backends: Vec<fn() -> Option<testing::TestStore>> =
            vec![|| Some(testing::sqlite()), testing::postgres];
        for make in backends {
            if make().is_none() {
                continue;
            }
            let keep: Arc<std::sync::Mutex<Vec<testing::TestStore>>> = Arc::default();
            let factory = conformance::factory(move || {
                let keep = keep.clone();
                async move {
                    let test_store = make().expect("backend available");
                    let store = test_store.store.clone();
                    keep.lock().expect("lock").push(test_store);
                    let ledger = open(store.clone()).await;
                    let public_key = ledger.public_key();
                    let reopen_store = store.clone();
                    Subject {
                        ledger: Arc::new(ledger),
                        chain: Some(ChainAccess {
                            store: Arc::new(SqlBlockStore::new(store)),
                            public_key,
                        }),
                        reopen: Some(Box::new(move || {
                            let store = reopen_store.clone();
                            Box::pin(async move {
                                let ledger: Arc<dyn Ledger> = Arc::new(open(store).await);
                                ledger
                            })
                        })),
                    }
                }
            });
            conformance::run_all(&factory).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_block_tampered_in_the_database_is_found() {
        for t in testing::all() {
            let ledger = open(t.store.clone()).await;
            let key = ledger.public_key();
            let subject_key = assent_consent::ConsortiumKey::new(&[9; 32]).expect("key");
            for i in 0..3 {
                let consent = serde_json::json!({
                    "resourceType": "Consent", "id": format!("c{i}"), "status": "active",
                    "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
                    "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
                    "patient": {"reference": "Patient/p1"},
                    "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
                    "provision": {"type": "permit"}
                });
                let (model, _) =
                    assent_consent::parse_consent(&consent, assent_fhir::FhirVersion::R4)
                        .expect("parses");
                let submission = assent_consent::ConsentSubmission::from_consent(
                    &model,
                    &consent,
                    "st-mary/Patient/p1",
                    &subject_key,
                )
                .expect("submission");
                ledger.put_consent(submission).await.expect("commits");
            }
            drop(ledger);
            let blocks = SqlBlockStore::new(t.store.clone());
            verify_store(&blocks, &key, 100)
                .await
                .expect("untouched chain verifies");
            let head = blocks.head().await.unwrap().expect("blocks were written");
            tamper_body_for_tests(&t.store, head - 1).unwrap();
            let error = verify_store(&blocks, &key, 100)
                .await
                .expect_err("tampering is found");
            assert!(
                error.to_string().contains(&format!("block {}:", head - 1)),
                "{error}"
            );
        }
    }
}
