//! The gateway's store through diesel: SQLite (bundled, the embedded default) or PostgreSQL,
//! one set of queries over both, migrations per backend embedded in the binary and applied
//! when the store opens.
//!
//! Owns: connections, pools, migrations and the queries of the tables in `store/schema.rs`.
//! Leaves out: when to write (the record phase batches), what the rows mean.
//! Every call blocks: async code reaches it through `tokio::task::spawn_blocking`.

mod names;
pub mod network;
mod receipt_rows;
mod schema;
mod sessions;
mod sqlite_insert;

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use sqlite_insert::InsertOne;

pub use receipt_rows::{
    BatchRow, INDEX_WAIT, IndexProgress, LeafRow, NewReceiptPatientRow, NewReceiptRow,
    ReceiptCursor, ReceiptFilter, ReceiptOrder, ReceiptPatientRow, ReceiptRow,
};
pub use schema::{
    consent_documents, ledger_blocks, node_settings, receipt_batches, receipt_patients, receipts,
    request_log, sites,
};

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../migrations/postgres");

/// One connection to either backend; queries are written once for both.
#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    Postgresql(diesel::PgConnection),
    Sqlite(diesel::SqliteConnection),
}

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of(url: &str) -> Backend {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }
}

/// A store failure. Callers answer 503 (`store-unavailable`); the detail goes to the log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store: {0}")]
    Open(String),
    #[error("migrations failed: {0}")]
    Migrate(String),
    #[error("no connection available: {0}")]
    Pool(#[from] diesel::r2d2::PoolError),
    #[error("query failed: {0}")]
    Query(#[from] diesel::result::Error),
    #[error("the receipt tables are behind the receipt log: {0}")]
    Behind(String),
}

/// A site row, mirrored from configuration.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Insertable, AsChangeset)]
#[diesel(table_name = sites)]
pub struct SiteRow {
    pub id: String,
    pub upstream_base_url: String,
    pub fhir_version: String,
    pub default_policy: String,
    pub config_json: String,
    pub updated_at_ms: i64,
}

/// One FHIR request as recorded. No patient identifiers. `None` is bound as NULL, so the
/// statement is the same for every row (SQLite's is prepared once per connection).
#[derive(Debug, Clone, PartialEq, Eq, Insertable)]
#[diesel(table_name = request_log, treat_none_as_default_value = false)]
pub struct NewRequestLog {
    pub request_id: String,
    pub at_ms: i64,
    pub gateway_id: String,
    pub site: Option<String>,
    pub caller: Option<String>,
    pub interaction: Option<String>,
    pub resource_type: Option<String>,
    pub status: i32,
    pub error_code: Option<String>,
    pub decision: Option<String>,
    pub duration_us: i64,
}

/// A request log row as read back.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct RequestLogRow {
    pub id: i64,
    pub request_id: String,
    pub at_ms: i64,
    pub gateway_id: String,
    pub site: Option<String>,
    pub caller: Option<String>,
    pub interaction: Option<String>,
    pub resource_type: Option<String>,
    pub status: i32,
    pub error_code: Option<String>,
    pub decision: Option<String>,
    pub duration_us: i64,
}

/// A pool of connections to the store.
#[derive(Clone)]
pub struct Store {
    pool: Pool<ConnectionManager<AnyConnection>>,
    backend: Backend,
    /// The URL as diesel takes it (for connections outside the pool).
    url: String,
    /// How far the receipt tables have caught up with this gateway's receipt log; reads of
    /// those tables wait for it (`receipt_rows.rs`).
    index: std::sync::Arc<IndexProgress>,
}

impl Store {
    /// Opens the store named by `url` (`postgres://…`, or a SQLite path, optionally
    /// `sqlite://path`) and applies pending migrations.
    pub fn open(url: &str) -> Result<Store, StoreError> {
        let backend = Backend::of(url);
        let (url, size) = match backend {
            Backend::Postgres => (url.to_owned(), 8),
            Backend::Sqlite => {
                let path = url.strip_prefix("sqlite://").unwrap_or(url);
                if let Some(parent) = std::path::Path::new(path).parent()
                    && !parent.as_os_str().is_empty()
                    && !parent.exists()
                {
                    return Err(StoreError::Open(format!(
                        "directory {} does not exist",
                        parent.display()
                    )));
                }
                (path.to_owned(), 4)
            }
        };
        let pool = Pool::builder()
            .max_size(size)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(5))
            .connection_customizer(Box::new(Pragmas))
            .build(ConnectionManager::<AnyConnection>::new(url.clone()))
            .map_err(|e| StoreError::Open(e.to_string()))?;
        let store = Store {
            pool,
            backend,
            url,
            index: Default::default(),
        };
        store.migrate()?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn conn(&self) -> Result<PooledConnection<ConnectionManager<AnyConnection>>, StoreError> {
        Ok(self.pool.get()?)
    }

    /// A pooled connection, for the gateway's other stores (the ledger's blocks).
    pub fn connection(
        &self,
    ) -> Result<PooledConnection<ConnectionManager<AnyConnection>>, StoreError> {
        self.conn()
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let result = match &mut *conn {
            AnyConnection::Sqlite(c) => c.run_pending_migrations(SQLITE_MIGRATIONS).map(|_| ()),
            AnyConnection::Postgresql(c) => {
                c.run_pending_migrations(POSTGRES_MIGRATIONS).map(|_| ())
            }
        };
        result.map_err(|e| StoreError::Migrate(e.to_string()))
    }

    /// Checks that the store answers (for `/readyz`).
    pub fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        diesel::sql_query("SELECT 1").execute(&mut *conn)?;
        Ok(())
    }

    /// Replaces the mirrored site table with `rows` in one transaction.
    pub fn replace_sites(&self, rows: &[SiteRow]) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        conn.transaction(|conn| {
            diesel::delete(sites::table).execute(conn)?;
            for row in rows {
                diesel::insert_into(sites::table)
                    .values(row)
                    .execute(conn)?;
            }
            Ok::<_, diesel::result::Error>(())
        })?;
        Ok(())
    }

    /// All mirrored sites, by id.
    pub fn sites(&self) -> Result<Vec<SiteRow>, StoreError> {
        let mut conn = self.conn()?;
        Ok(sites::table.order(sites::id.asc()).load(&mut *conn)?)
    }

    /// Appends request log rows in one transaction (group commit).
    pub fn insert_request_logs(&self, rows: &[NewRequestLog]) -> Result<(), StoreError> {
        Store::insert_request_logs_on(&mut *self.conn()?, rows)
    }

    /// Appends request log rows in one transaction on `conn` (the request log writer keeps a
    /// connection of its own, see [`Store::index_connection`]). On SQLite one statement per
    /// row ([`InsertOne`]: prepared once per connection, its text never rebuilt; a multi-row statement's text differs with
    /// its row count, so it would be prepared anew for every batch); on PostgreSQL multi-row
    /// statements, one round trip per chunk (500 rows × 11 columns stays under the
    /// bound-parameter limit).
    pub fn insert_request_logs_on(
        conn: &mut AnyConnection,
        rows: &[NewRequestLog],
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        match conn {
            AnyConnection::Sqlite(c) => c.transaction(|c| {
                for row in rows {
                    InsertOne(row).execute(c)?;
                }
                Ok::<_, diesel::result::Error>(())
            })?,
            AnyConnection::Postgresql(c) => c.transaction(|c| {
                for chunk in rows.chunks(500) {
                    diesel::insert_into(request_log::table)
                        .values(chunk)
                        .execute(c)?;
                }
                Ok::<_, diesel::result::Error>(())
            })?,
        }
        Ok(())
    }

    /// The newest request log rows, newest first.
    pub fn recent_requests(&self, limit: i64) -> Result<Vec<RequestLogRow>, StoreError> {
        let mut conn = self.conn()?;
        Ok(request_log::table
            .order(request_log::id.desc())
            .limit(limit)
            .load(&mut *conn)?)
    }

    /// Stores a document under its hash, for the embedded ledger (`SqlBlockStore`): a
    /// second store under the same hash keeps the first and succeeds. The hash is not checked
    /// here; the ledger checks it both ways.
    pub fn put_document(
        &self,
        document_hash: &str,
        document: &[u8],
        stored_at_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let inserted = diesel::insert_into(consent_documents::table)
            .values((
                consent_documents::document_hash.eq(document_hash),
                consent_documents::document.eq(document),
                consent_documents::stored_at_ms.eq(stored_at_ms),
            ))
            .execute(&mut *conn);
        match inserted {
            Ok(_) => Ok(()),
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The bytes stored under `document_hash`, as stored.
    pub fn document(&self, document_hash: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.conn()?;
        Ok(consent_documents::table
            .filter(consent_documents::document_hash.eq(document_hash))
            .select(consent_documents::document)
            .first(&mut *conn)
            .optional()?)
    }

    /// The setting `name`, if set.
    pub fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn()?;
        Ok(node_settings::table
            .filter(node_settings::name.eq(name))
            .select(node_settings::value)
            .first(&mut *conn)
            .optional()?)
    }

    /// Sets `name` to `value`, replacing what was there.
    pub fn put_setting(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        conn.transaction(|conn| {
            let updated = diesel::update(node_settings::table.filter(node_settings::name.eq(name)))
                .set(node_settings::value.eq(value))
                .execute(conn)?;
            if updated == 0 {
                diesel::insert_into(node_settings::table)
                    .values((node_settings::name.eq(name), node_settings::value.eq(value)))
                    .execute(conn)?;
            }
            Ok::<_, diesel::result::Error>(())
        })?;
        Ok(())
    }

    /// Deletes the setting `name`; whether there was one.
    pub fn delete_setting(&self, name: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let deleted = diesel::delete(node_settings::table.filter(node_settings::name.eq(name)))
            .execute(&mut *conn)?;
        Ok(deleted > 0)
    }

    /// The setting `name`, made by `make` and kept if there is none yet. Two nodes starting
    /// together agree on the first one written.
    pub fn setting_or_insert(
        &self,
        name: &str,
        make: impl FnOnce() -> String,
    ) -> Result<String, StoreError> {
        let mut conn = self.conn()?;
        let existing: Option<String> = node_settings::table
            .filter(node_settings::name.eq(name))
            .select(node_settings::value)
            .first(&mut *conn)
            .optional()?;
        if let Some(value) = existing {
            return Ok(value);
        }
        let inserted = diesel::insert_into(node_settings::table)
            .values((
                node_settings::name.eq(name),
                node_settings::value.eq(make()),
            ))
            .execute(&mut *conn);
        match inserted {
            Ok(_)
            | Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => Ok(node_settings::table
                .filter(node_settings::name.eq(name))
                .select(node_settings::value)
                .first(&mut *conn)?),
            Err(e) => Err(e.into()),
        }
    }

    /// The request log rows of one request id.
    pub fn requests_by_id(&self, request_id: &str) -> Result<Vec<RequestLogRow>, StoreError> {
        let mut conn = self.conn()?;
        Ok(request_log::table
            .filter(request_log::request_id.eq(request_id))
            .order(request_log::id.asc())
            .load(&mut *conn)?)
    }
}

/// Per-connection settings: SQLite in WAL mode with a busy timeout and foreign keys.
#[derive(Debug)]
struct Pragmas;

impl CustomizeConnection<AnyConnection, diesel::r2d2::Error> for Pragmas {
    fn on_acquire(&self, conn: &mut AnyConnection) -> Result<(), diesel::r2d2::Error> {
        if let AnyConnection::Sqlite(c) = conn {
            c.batch_execute(
                // busy_timeout first: connections opening together wait for each other.
                "PRAGMA busy_timeout = 5000; PRAGMA journal_mode = WAL; \
                 PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
            )
            .map_err(diesel::r2d2::Error::QueryError)?;
        }
        Ok(())
    }
}

/// Test support: a store on SQLite in a temporary directory, and (when
/// `ASSENT_TEST_DATABASE_URL` is set) one on PostgreSQL in a schema of its own. Only in this
/// crate's tests and with the `testing` feature.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use super::*;

    /// A store that lives as long as this value.
    pub struct TestStore {
        pub store: Store,
        pub url: String,
        _dir: Option<tempfile::TempDir>,
        schema: Option<(String, String)>,
    }

    impl Drop for TestStore {
        fn drop(&mut self) {
            if let Some((admin_url, schema)) = &self.schema
                && let Ok(mut c) = diesel::PgConnection::establish(admin_url)
            {
                let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
            }
            if self.schema.is_some() {
                let _ = std::fs::remove_dir_all(receipt_log_dir(&self.url));
            }
        }
    }

    /// The receipt log directory tests use for a gateway on the PostgreSQL store `url` (a
    /// SQLite store's log is beside it): the same for every gateway a test starts on it, and
    /// removed with the [`TestStore`].
    pub fn receipt_log_dir(url: &str) -> std::path::PathBuf {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        url.hash(&mut h);
        std::env::temp_dir()
            .join("assent-test-receipt-logs")
            .join(format!("{:016x}", h.finish()))
    }

    /// A fresh SQLite store.
    pub fn sqlite() -> TestStore {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = dir.path().join("assent.db").display().to_string();
        TestStore {
            store: Store::open(&url).expect("open SQLite store"),
            url,
            _dir: Some(dir),
            schema: None,
        }
    }

    /// A fresh PostgreSQL store in a new schema, when `ASSENT_TEST_DATABASE_URL` is set.
    pub fn postgres() -> Option<TestStore> {
        // An empty value means "not set": formatted into a URL below it would name a SQLite file
        // (`?options=…`) in the working directory.
        let admin_url = std::env::var("ASSENT_TEST_DATABASE_URL")
            .ok()
            .filter(|url| !url.is_empty())?;
        let schema = format!("assent_test_{}", uuid::Uuid::new_v4().simple());
        let mut c = diesel::PgConnection::establish(&admin_url)
            .expect("ASSENT_TEST_DATABASE_URL is set but PostgreSQL is unreachable");
        c.batch_execute(&format!("CREATE SCHEMA {schema}"))
            .expect("create test schema");
        let separator = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!("{admin_url}{separator}options=-csearch_path%3D{schema}");
        Some(TestStore {
            store: Store::open(&url).expect("open PostgreSQL store"),
            url,
            _dir: None,
            schema: Some((admin_url, schema)),
        })
    }

    /// Every backend available to this test run.
    pub fn all() -> Vec<TestStore> {
        let mut stores = vec![sqlite()];
        stores.extend(postgres());
        stores
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_row(n: i64) -> NewRequestLog {
        NewRequestLog {
            request_id: format!("req-{n}"),
            at_ms: 1_700_000_000_000 + n,
            gateway_id: "gw".into(),
            site: Some("st-mary".into()),
            caller: Some("alice".into()),
            interaction: Some("read".into()),
            resource_type: Some("Patient".into()),
            status: 200,
            error_code: None,
            decision: Some("permit".into()),
            duration_us: 10 + n,
        }
    }

    #[test]
    fn sites_and_request_log_round_trip_on_every_backend() {
        for t in testing::all() {
            let store = &t.store;
            store.ping().unwrap();
            let row = SiteRow {
                id: "st-mary".into(),
                upstream_base_url: "http://x/fhir".into(),
                fhir_version: "R4".into(),
                default_policy: "opt-out".into(),
                config_json: "{}".into(),
                updated_at_ms: 1,
            };
            store.replace_sites(std::slice::from_ref(&row)).unwrap();
            store.replace_sites(std::slice::from_ref(&row)).unwrap();
            assert_eq!(store.sites().unwrap(), vec![row], "{:?}", store.backend());

            let rows: Vec<_> = (0..1200).map(log_row).collect();
            store.insert_request_logs(&rows).unwrap();
            let recent = store.recent_requests(2).unwrap();
            assert_eq!(recent.len(), 2);
            assert_eq!(recent[0].request_id, "req-1199");
            assert_eq!(recent[0].duration_us, 1209);
            let one = store.requests_by_id("req-7").unwrap();
            assert_eq!(one.len(), 1);
            assert_eq!(one[0].status, 200);
            assert_eq!(one[0].site.as_deref(), Some("st-mary"));
        }
    }

    #[test]
    fn documents_are_kept_by_hash_first_write_wins() {
        for t in testing::all() {
            let store = &t.store;
            store.put_document("h1", b"{}", 1).unwrap();
            store.put_document("h1", b"{\"other\":1}", 2).unwrap();
            assert_eq!(store.document("h1").unwrap(), Some(b"{}".to_vec()));
            assert_eq!(store.document("h2").unwrap(), None);
            // Any bytes, not only UTF-8 text.
            store.put_document("h3", &[0, 0xff, 0xfe], 3).unwrap();
            assert_eq!(store.document("h3").unwrap(), Some(vec![0, 0xff, 0xfe]));
        }
    }

    /// Whether migration `version` (digits only, `20261206000081`) is applied on `conn`.
    fn migration_applied(conn: &mut AnyConnection, version: &str) -> bool {
        let versions = match conn {
            AnyConnection::Sqlite(c) => c.applied_migrations(),
            AnyConnection::Postgresql(c) => c.applied_migrations(),
        }
        .unwrap();
        versions
            .iter()
            .any(|v| v.to_string().replace('-', "") == version)
    }

    /// Documents stored before the ledger kept them by hash (text, with the consent key and
    /// the site) are read back after the migration as the same bytes, which still hash to
    /// their key; down and up again.
    #[test]
    fn documents_stored_as_text_are_read_back_as_their_bytes() {
        use diesel::sql_types::{BigInt, Text};
        const VERSION: &str = "20261206000081";
        let applied = |conn: &mut AnyConnection| migration_applied(conn, VERSION);
        let document = serde_json::json!({"resourceType": "Consent", "id": "c1",
            "status": "active", "text": {"div": "ünïcödé"}});
        let text = assent_consent::canonical_json(&document);
        let hash = assent_consent::document_hash(&document);
        for t in testing::all() {
            let mut conn = t.store.conn().unwrap();
            while applied(&mut conn) {
                match &mut *conn {
                    AnyConnection::Sqlite(c) => c.revert_last_migration(SQLITE_MIGRATIONS),
                    AnyConnection::Postgresql(c) => c.revert_last_migration(POSTGRES_MIGRATIONS),
                }
                .unwrap();
            }
            let insert = match &*conn {
                AnyConnection::Sqlite(_) => {
                    "INSERT INTO consent_documents (document_hash, consent_key, site, document, \
                     stored_at_ms) VALUES (?, 'k1', 'st-mary', ?, ?)"
                }
                AnyConnection::Postgresql(_) => {
                    "INSERT INTO consent_documents (document_hash, consent_key, site, document, \
                     stored_at_ms) VALUES ($1, 'k1', 'st-mary', $2, $3)"
                }
            };
            diesel::sql_query(insert)
                .bind::<Text, _>(&hash)
                .bind::<Text, _>(&text)
                .bind::<BigInt, _>(7)
                .execute(&mut *conn)
                .unwrap();
            drop(conn);
            t.store.migrate().unwrap();
            let bytes = t.store.document(&hash).unwrap().expect("the row moved");
            assert_eq!(bytes, text.as_bytes(), "{:?}", t.store.backend());
            assert!(assent_ledger::document_matches(&hash, &bytes));
        }
    }

    #[test]
    fn settings_are_made_once() {
        for t in testing::all() {
            let first = t.store.setting_or_insert("k", || "one".into()).unwrap();
            let second = t.store.setting_or_insert("k", || "two".into()).unwrap();
            assert_eq!((first.as_str(), second.as_str()), ("one", "one"));
        }
    }

    #[test]
    fn migrations_apply_once_and_reopen_cleanly() {
        for t in testing::all() {
            let again = Store::open(&t.url).unwrap();
            again.insert_request_logs(&[log_row(1)]).unwrap();
            assert_eq!(t.store.recent_requests(10).unwrap().len(), 1);
        }
    }

    /// Receipts stored before version 2 (one `patient` / `patient_key` column pair) move into
    /// the patient list, and into `receipt_patients` when missing there; down and up again.
    #[test]
    fn version_1_receipt_rows_move_to_the_patient_list() {
        use diesel::sql_types::{BigInt, Binary, Text};
        const VERSION: &str = "20261123000071";
        let applied = |conn: &mut AnyConnection| migration_applied(conn, VERSION);
        for t in testing::all() {
            let mut conn = t.store.conn().unwrap();
            while applied(&mut conn) {
                match &mut *conn {
                    AnyConnection::Sqlite(c) => c.revert_last_migration(SQLITE_MIGRATIONS),
                    AnyConnection::Postgresql(c) => c.revert_last_migration(POSTGRES_MIGRATIONS),
                }
                .unwrap();
            }
            let insert = match &*conn {
                AnyConnection::Sqlite(_) => {
                    "INSERT INTO receipts (gateway_id, sequence, receipt_id, time_ms, site, \
                     interaction, resource_type, decision, break_glass, status, purpose, actor, \
                     patient, actor_key, patient_key, hash, body, subjects) VALUES \
                     ('gw', ?, ?, 5, 'st-mary', 'read', 'Patient', 'permit', false, 200, NULL, \
                     'dr', ?, 'ak', ?, ?, ?, '{}')"
                }
                AnyConnection::Postgresql(_) => {
                    "INSERT INTO receipts (gateway_id, sequence, receipt_id, time_ms, site, \
                     interaction, resource_type, decision, break_glass, status, purpose, actor, \
                     patient, actor_key, patient_key, hash, body, subjects) VALUES \
                     ('gw', $1, $2, 5, 'st-mary', 'read', 'Patient', 'permit', false, 200, NULL, \
                     'dr', $3, 'ak', $4, $5, $6, '{}')"
                }
            };
            for (n, id) in [(1i64, "r-1"), (2, "r-2")] {
                diesel::sql_query(insert)
                    .bind::<BigInt, _>(n)
                    .bind::<Text, _>(id)
                    .bind::<Text, _>(format!("st-mary/Patient/p{n}"))
                    .bind::<Text, _>(format!("key-p{n}"))
                    .bind::<Binary, _>(vec![n as u8; 32])
                    .bind::<Binary, _>(b"v1 bytes".to_vec())
                    .execute(&mut *conn)
                    .unwrap();
            }
            // Receipt r-1's patient was indexed already; r-2's was not.
            diesel::insert_into(schema::receipt_patients::table)
                .values(ReceiptPatientRow {
                    receipt_id: "r-1".into(),
                    patient_key: "key-p1".into(),
                    patient: "st-mary/Patient/p1".into(),
                    time_ms: 5,
                })
                .execute(&mut *conn)
                .unwrap();
            drop(conn);
            t.store.migrate().unwrap();
            for n in [1, 2] {
                let row = t.store.receipt(&format!("r-{n}")).unwrap().unwrap();
                assert_eq!(row.kind, "fhir");
                let patients: Vec<String> = serde_json::from_str(&row.patients).unwrap();
                assert_eq!(
                    patients,
                    [format!("st-mary/Patient/p{n}")],
                    "{:?}",
                    t.store.backend()
                );
                let indexed = t.store.receipt_patients(&row.receipt_id).unwrap();
                assert_eq!(indexed.len(), 1);
                assert_eq!(indexed[0].patient_key, format!("key-p{n}"));
                let found = t
                    .store
                    .search_receipts(
                        &ReceiptFilter {
                            patient_key: Some(format!("key-p{n}")),
                            ..ReceiptFilter::default()
                        },
                        ReceiptOrder::Chain,
                        None,
                        10,
                    )
                    .unwrap();
                assert_eq!(found.len(), 1);
                assert_eq!(found[0].body, b"v1 bytes");
                // The count reads the filter as the page does.
                let by_patient = ReceiptFilter {
                    patient_key: Some(format!("key-p{n}")),
                    ..ReceiptFilter::default()
                };
                assert_eq!(t.store.count_receipts(&by_patient).unwrap(), 1);
            }
            assert_eq!(
                t.store.count_receipts(&ReceiptFilter::default()).unwrap(),
                2
            );
            let nobody = ReceiptFilter {
                actor: Some("nobody".into()),
                ..ReceiptFilter::default()
            };
            assert_eq!(t.store.count_receipts(&nobody).unwrap(), 0);
            // A network patient's report: its key and its linked patients' keys.
            let either = ReceiptFilter {
                patient_key: Some("key-p1".into()),
                also_patient_keys: vec!["key-p2".into(), "key-none".into()],
                ..ReceiptFilter::default()
            };
            assert_eq!(t.store.count_receipts(&either).unwrap(), 2);
            let page = t
                .store
                .search_receipts(&either, ReceiptOrder::Chain, None, 10)
                .unwrap();
            assert_eq!(page.len(), 2);
        }
    }

    #[test]
    fn a_missing_directory_is_a_clear_error() {
        let e = Store::open("/nonexistent-dir/for/assent.db").err().unwrap();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }
}
