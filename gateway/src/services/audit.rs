//! The audit log as the audit API and the console read it: the receipt query (the audit
//! search parameters, typed, and the store filter they make), the one pager over receipts
//! (newest first, with a cursor), a stored receipt with its proof, anchor and verification
//! (`assent_receipts::verify_stored`, the checks `assent verify` runs), and the streamed
//! export (NDJSON with proofs and anchors, or CSV).
//!
//! Owns turning parameters into a [`ReceiptFilter`] (hostile values refused), decoding stored
//! rows, rebuilding batch proofs for an export, and reading the ledger's anchor of a batch.
//! Leaves out HTTP (the handlers in `api/audit.rs` and `api/console.rs`, paging-link signing
//! in `http/paging.rs`), the renderings (`assent-receipts`) and the SQL (`store`).

use std::collections::HashMap;
use std::sync::Arc;

use assent_consent::ConsortiumKey;
use assent_fhir::FhirVersion;
use assent_fhir::SitePatient;
use assent_fhir::time::FhirDateTime;
use assent_receipts::{
    AccessKind, Digest, LedgerAnchor, LedgerAnswer, Receipt, ReceiptSubjects, ReceiptVerification,
    StoredBatch, StoredReceipt, csv_header, csv_row, ndjson_line, verify_stored,
};
use bytes::Bytes;
use futures_util::Stream;
use serde_json::Value;

use crate::services::anchoring::rebuild_batch;
use crate::services::consent::ConsentService;
use crate::store::{BatchRow, ReceiptCursor, ReceiptFilter, ReceiptOrder, ReceiptRow, Store};

/// Rows an export reads from the store per query (and renders per chunk of the body).
pub const EXPORT_CHUNK: i64 = 500;
/// Longest value accepted for any search parameter.
const MAX_VALUE_LEN: usize = 256;

/// Why an audit query or read failed; the error table (`http/error.rs`) answers each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// A parameter the audit API cannot use (`bad-request`), with the sentence saying why.
    #[error("{0}")]
    Malformed(String),
    #[error("the store is unavailable")]
    StoreUnavailable,
    #[error("internal error")]
    Internal,
}

impl AuditError {
    /// The stable error code the error table gives it (for logs).
    pub fn code(&self) -> &'static str {
        match self {
            AuditError::Malformed(_) => "malformed-request",
            AuditError::StoreUnavailable => "store-unavailable",
            AuditError::Internal => "internal",
        }
    }
}

fn store_err(e: crate::store::StoreError) -> AuditError {
    tracing::warn!(error = %e, "audit: the store failed");
    AuditError::StoreUnavailable
}

fn bad(message: impl Into<String>) -> AuditError {
    AuditError::Malformed(message.into())
}

/// Runs a store call off the async workers.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, AuditError> + Send + 'static,
) -> Result<T, AuditError> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|_| AuditError::Internal)?
}

// ---------------------------------------------------------------------------------------
// The receipt query.

/// The audit filters as given (the audit API's parameters, the console's form), before they
/// are checked; an empty value is no filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// `{site}/Patient/{id}`, or `Patient/{id}` (or `{id}`) with `site`.
    pub patient: Option<String>,
    /// The caller as stored (`Practitioner/…` or `subject@issuer`).
    pub agent: Option<String>,
    pub site: Option<String>,
    /// FHIR dates or dateTimes with a prefix (`eq` by default): each narrows the range.
    pub dates: Vec<String>,
    /// `0`, `4`, `8` or `12`.
    pub outcome: Option<String>,
    pub purpose: Option<String>,
    /// Any of `permit`, `deny`, `error`.
    pub decisions: Vec<String>,
    /// `true` or `false`.
    pub break_glass: Option<String>,
    /// What a receipt records ([`AccessKind::parse`]).
    pub kind: Option<String>,
}

/// A parsed audit search: the store filter and the paging and rendering choices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSearch {
    pub filter: ReceiptFilter,
    /// The patient the filter names (`{site}/Patient/{id}`), if any.
    pub patient: Option<String>,
    pub count: Option<i64>,
    pub cursor: Option<ReceiptCursor>,
    pub version: Option<FhirVersion>,
    pub format: Option<String>,
}

/// The parameters an audit search takes; anything else is refused (400).
const FILTER_PARAMS: &[&str] = &[
    "patient",
    "agent",
    "date",
    "outcome",
    "site",
    "purpose",
    "decision",
    "break-glass",
    "kind",
];

/// Refuses a value that is too long or holds control characters.
fn check_value(name: &str, value: &str) -> Result<(), AuditError> {
    if value.len() > MAX_VALUE_LEN || value.chars().any(char::is_control) {
        return Err(bad(format!(
            "`{name}` is too long or holds control characters"
        )));
    }
    Ok(())
}

/// Parses `query` (raw, percent-encoded) into a search; `extra` are further parameters this
/// route takes besides the filters. Hostile values (too long, control characters, unknown
/// names, repeated single parameters) are refused with 400.
pub fn parse_search(
    query: &str,
    extra: &[&str],
    key: &ConsortiumKey,
) -> Result<AuditSearch, AuditError> {
    let mut single: HashMap<String, String> = HashMap::new();
    let mut audit = AuditQuery::default();
    for (name, value) in assent_fhir::query::pairs(query) {
        check_value(&name, &value)?;
        if !FILTER_PARAMS.contains(&name.as_str())
            && !extra.contains(&name.as_str())
            && !["_count", "_cursor", "_sig", "_fhirVersion", "_format"].contains(&name.as_str())
        {
            let shown: String = name.chars().take(40).collect();
            return Err(bad(format!("unknown parameter `{shown}`")));
        }
        match name.as_str() {
            "date" => audit.dates.push(value),
            "decision" => {
                let decisions: Vec<String> = value.split(',').map(str::to_owned).collect();
                check_decisions(&decisions)?;
                audit.decisions.extend(decisions);
            }
            _ => {
                if single.insert(name.clone(), value).is_some() {
                    return Err(bad(format!("`{name}` is given more than once")));
                }
            }
        }
    }
    let mut take = |name: &str| single.remove(name).filter(|v| !v.is_empty());
    audit.patient = take("patient");
    audit.agent = take("agent");
    audit.site = take("site");
    audit.outcome = take("outcome");
    audit.purpose = take("purpose");
    audit.break_glass = take("break-glass");
    audit.kind = take("kind");
    let (filter, patient) = audit.filter(key)?;
    let count = match single.get("_count") {
        None => None,
        Some(c) => Some(
            c.parse::<i64>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| bad("`_count` is a positive integer"))?,
        ),
    };
    let cursor = match single.get("_cursor") {
        None => None,
        Some(c) => Some(parse_cursor(c).ok_or_else(|| bad("`_cursor` is not a paging cursor"))?),
    };
    let version = match single.get("_fhirVersion") {
        None => None,
        Some(v) => Some(
            v.parse::<FhirVersion>()
                .map_err(|_| bad("`_fhirVersion` is one of STU3, R4, R4B, R5"))?,
        ),
    };
    Ok(AuditSearch {
        filter,
        patient,
        count,
        cursor,
        version,
        format: single.remove("_format"),
    })
}

fn check_decisions(decisions: &[String]) -> Result<(), AuditError> {
    match decisions
        .iter()
        .all(|d| matches!(d.as_str(), "permit" | "deny" | "error"))
    {
        true => Ok(()),
        false => Err(bad("`decision` is one of permit, deny, error")),
    }
}

impl AuditQuery {
    /// The store filter, and the patient it names (`{site}/Patient/{id}`); the patient is
    /// filtered on by its keyed hash under `key`. Values are refused as by [`parse_search`].
    pub fn filter(
        &self,
        key: &ConsortiumKey,
    ) -> Result<(ReceiptFilter, Option<String>), AuditError> {
        self.check_values()?;
        let given = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        let mut filter = ReceiptFilter {
            decisions: self.decisions.clone(),
            ..ReceiptFilter::default()
        };
        let site = given(&self.site);
        if let Some(site) = &site {
            if !is_token(site) {
                return Err(bad("`site` is not a site id"));
            }
            filter.site = Some(site.clone());
        }
        let mut patient = None;
        if let Some(named) = given(&self.patient) {
            let identity = patient_identity(&named, site.as_deref())?;
            filter.patient_key = Some(key.patient(&identity));
            patient = Some(identity);
        }
        filter.actor = given(&self.agent);
        filter.kind = match given(&self.kind) {
            Some(k) if AccessKind::parse(&k).is_some() => Some(k),
            Some(_) => {
                return Err(bad(
                    "`kind` is fhir, consent-create, consent-update, consent-revoke, consent-search, \
                     consent-history, consent-read, consent-check, audit-search, audit-read, audit-export or audit-disclosures",
                ));
            }
            None => None,
        };
        filter.purpose = match given(&self.purpose) {
            Some(p) if is_token(&p) => Some(p),
            Some(_) => return Err(bad("`purpose` is not a PurposeOfUse code")),
            None => None,
        };
        filter.success = match self.outcome.as_deref() {
            None | Some("") => None,
            Some("0") => Some(true),
            Some("4" | "8" | "12") => Some(false),
            Some(_) => return Err(bad("`outcome` is one of 0, 4, 8, 12")),
        };
        filter.break_glass_only = match self.break_glass.as_deref() {
            None | Some("") | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(bad("`break-glass` is true or false")),
        };
        for date in &self.dates {
            apply_date(&mut filter, date)?;
        }
        Ok((filter, patient))
    }

    /// Refuses values too long or with control characters, and unknown decisions, in the
    /// order the audit API's parameters are checked.
    fn check_values(&self) -> Result<(), AuditError> {
        for (name, value) in [
            ("patient", &self.patient),
            ("agent", &self.agent),
            ("site", &self.site),
        ] {
            check_value(name, value.as_deref().unwrap_or_default())?;
        }
        for date in &self.dates {
            check_value("date", date)?;
        }
        check_value("decision", &self.decisions.join(","))?;
        check_decisions(&self.decisions)?;
        for (name, value) in [
            ("break-glass", &self.break_glass),
            ("outcome", &self.outcome),
            ("purpose", &self.purpose),
            ("kind", &self.kind),
        ] {
            check_value(name, value.as_deref().unwrap_or_default())?;
        }
        Ok(())
    }
}

/// `{site}/Patient/{id}`, or `Patient/{id}` (or `{id}`) with `site`.
pub fn patient_identity(value: &str, site: Option<&str>) -> Result<String, AuditError> {
    let parts: Vec<&str> = value.split('/').collect();
    let (site, id) = match parts.as_slice() {
        [s, "Patient", id] => (*s, *id),
        ["Patient", id] | [id] => (
            site.ok_or_else(|| bad("`patient` as `Patient/{id}` needs `site`"))?,
            *id,
        ),
        _ => {
            return Err(bad(
                "`patient` is `{site}/Patient/{id}`, or `Patient/{id}` with `site`",
            ));
        }
    };
    if !is_token(site) || !is_fhir_id(id) {
        return Err(bad("`patient` is not a site's patient"));
    }
    Ok(SitePatient::new(site, id).to_string())
}

/// A network patient named by the disclosures report: its identity
/// (`network/Patient/{network-id}`) and the identities of every site patient linked to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSubjects {
    pub identity: String,
    pub members: Vec<String>,
}

/// When `value` (with `site`) names a network patient — `network/Patient/{network-id}`,
/// `Patient/{network-id}` or `{network-id}` with `site=network`, or a bare network id — its
/// identity and linked site patients; `Ok(None)` for anything else (a site patient). A network
/// id the index does not hold is refused as malformed (it names no patient).
pub async fn network_subjects(
    network: &std::sync::Arc<crate::services::network::NetworkIndex>,
    value: &str,
    site: Option<&str>,
) -> Result<Option<NetworkSubjects>, AuditError> {
    use crate::services::network::{NETWORK_SITE, NetworkIndex};
    let parts: Vec<&str> = value.split('/').collect();
    let id = match (parts.as_slice(), site) {
        ([s, "Patient", id], None) if *s == NETWORK_SITE => *id,
        (["Patient", id] | [id], Some(s)) if s == NETWORK_SITE => *id,
        ([id], None) if NetworkIndex::is_network_id(id) => *id,
        _ => return Ok(None),
    };
    if !NetworkIndex::is_network_id(id) {
        return Err(bad("`patient` is not a network patient's id"));
    }
    let network = network.clone();
    let id = id.to_owned();
    blocking(move || {
        if !network.exists(&id).map_err(store_err)? {
            return Err(bad("no network patient has this id"));
        }
        let members = network.members(&id).map_err(store_err)?;
        Ok(Some(NetworkSubjects {
            identity: SitePatient::new(NETWORK_SITE, &id).to_string(),
            members: members.iter().map(|m| m.patient.to_string()).collect(),
        }))
    })
    .await
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn is_fhir_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}
/// Narrows `filter` by one `date` parameter with its prefix (`eq` by default).
fn apply_date(filter: &mut ReceiptFilter, value: &str) -> Result<(), AuditError> {
    let (prefix, text) = match value.get(..2) {
        Some(p @ ("eq" | "ge" | "le" | "gt" | "lt")) => (p, &value[2..]),
        Some(p) if p.chars().all(|c| c.is_ascii_alphabetic()) => {
            return Err(bad("`date` prefixes are eq, ge, le, gt, lt"));
        }
        _ => ("eq", value),
    };
    let (start, end) = date_range(text).ok_or_else(|| {
        bad("`date` is a FHIR date or dateTime (YYYY, YYYY-MM, YYYY-MM-DD, or with a time and zone)")
    })?;
    let raise = |slot: &mut Option<i64>, v: i64| *slot = Some(slot.map_or(v, |s| s.max(v)));
    let lower = |slot: &mut Option<i64>, v: i64| *slot = Some(slot.map_or(v, |s| s.min(v)));
    match prefix {
        "eq" => {
            raise(&mut filter.from_ms, start);
            lower(&mut filter.to_ms, end);
        }
        "ge" => raise(&mut filter.from_ms, start),
        "gt" => raise(&mut filter.from_ms, end),
        "le" => lower(&mut filter.to_ms, end),
        _ => lower(&mut filter.to_ms, start),
    }
    Ok(())
}

/// The UTC millisecond range `[start, end)` a FHIR date or dateTime covers at its precision
/// (a time needs its zone).
pub fn date_range(text: &str) -> Option<(i64, i64)> {
    FhirDateTime::parse(text).ok().map(|v| v.range().millis())
}

// ---------------------------------------------------------------------------------------
// The pager.

/// A page of receipts, newest first, and whether more follow.
pub struct ReceiptPage {
    pub rows: Vec<ReceiptRow>,
    pub more: bool,
}

impl ReceiptPage {
    /// The cursor of the page after this one, when more follow (`{time_ms}.{receipt_id}`).
    pub fn next_cursor(&self) -> Option<String> {
        if !self.more {
            return None;
        }
        self.rows.last().map(cursor_text)
    }
}

/// Up to `count` receipts matching `filter`, newest first, after `cursor`.
pub async fn newest_first(
    store: &Store,
    filter: ReceiptFilter,
    cursor: Option<ReceiptCursor>,
    count: i64,
) -> Result<ReceiptPage, AuditError> {
    let store = store.clone();
    let mut rows = blocking(move || {
        store
            .search_receipts(
                &filter,
                ReceiptOrder::NewestFirst,
                cursor.as_ref(),
                count + 1,
            )
            .map_err(store_err)
    })
    .await?;
    let more = rows.len() as i64 > count;
    rows.truncate(count.max(0) as usize);
    Ok(ReceiptPage { rows, more })
}

/// How many receipts match `filter` in all (the total beside a page of them).
pub async fn count_matching(store: &Store, filter: ReceiptFilter) -> Result<i64, AuditError> {
    let store = store.clone();
    blocking(move || store.count_receipts(&filter).map_err(store_err)).await
}

/// A row's paging cursor: `{time_ms}.{receipt_id}`.
pub fn cursor_text(row: &ReceiptRow) -> String {
    format!("{}.{}", row.time_ms, row.receipt_id)
}

/// Reads a paging cursor (`{time_ms}.{receipt_id}`).
pub fn parse_cursor(text: &str) -> Option<ReceiptCursor> {
    let (time, id) = text.split_once('.')?;
    let time_ms = time.parse().ok()?;
    (!id.is_empty() && id.len() <= 64).then(|| ReceiptCursor::Before {
        time_ms,
        receipt_id: id.to_owned(),
    })
}

// ---------------------------------------------------------------------------------------
// Rows to domain values.

/// A stored row decoded: the receipt, its stored hash and its clear subjects.
pub struct Decoded {
    pub receipt: Receipt,
    pub hash: Digest,
    pub subjects: ReceiptSubjects,
}

/// Decodes a stored row; `None` when its bytes or hash do not read (a damaged row).
pub fn decode(row: &ReceiptRow) -> Option<Decoded> {
    let receipt = Receipt::from_canonical_bytes(&row.body).ok()?;
    let hash = Digest(<[u8; 32]>::try_from(row.hash.as_slice()).ok()?);
    Some(Decoded {
        receipt,
        hash,
        subjects: subjects_of(row),
    })
}

/// The clear subjects stored beside a receipt.
pub fn subjects_of(row: &ReceiptRow) -> ReceiptSubjects {
    let extra: Value = serde_json::from_str(&row.subjects).unwrap_or(Value::Null);
    let text = |k: &str| extra.get(k).and_then(Value::as_str).map(str::to_owned);
    ReceiptSubjects {
        actor: row.actor.clone(),
        patients: serde_json::from_str(&row.patients).unwrap_or_default(),
        query: text("query"),
        client_id: text("client_id"),
        client_address: text("client_address"),
    }
}

/// Rebuilds proofs batch by batch, keeping the last batch for the receipts that follow.
#[derive(Default)]
struct BatchCache {
    current: Option<(BatchRow, assent_receipts::ClosedBatch)>,
}

impl BatchCache {
    /// The anchoring of receipt `sequence` of `gateway_id`, once its batch is anchored on the
    /// ledger (a closed batch not yet anchored gives none: the receipt is pending).
    fn anchoring(
        &mut self,
        store: &Store,
        gateway_id: &str,
        sequence: i64,
    ) -> Result<Option<assent_receipts::Anchoring>, AuditError> {
        let hit = self.current.as_ref().is_some_and(|(row, _)| {
            row.gateway_id == gateway_id
                && row.first_sequence <= sequence
                && sequence <= row.last_sequence
        });
        if !hit {
            self.current = rebuild_batch(store, gateway_id, sequence).map_err(|e| {
                tracing::warn!(error = %e, "audit: a batch could not be rebuilt");
                AuditError::StoreUnavailable
            })?;
        }
        Ok(self.current.as_ref().and_then(|(row, batch)| {
            let tx = row.tx_id.clone()?;
            batch.anchoring(
                sequence as u64,
                Some(tx),
                row.block_number.map(|b| b as u64),
            )
        }))
    }
}

// ---------------------------------------------------------------------------------------
// One stored receipt and its verification.

/// A stored receipt with everything the detail view shows.
pub struct ReceiptDetail {
    pub row: ReceiptRow,
    pub decoded: Option<Decoded>,
    pub patients: Vec<String>,
    pub batch: Option<BatchRow>,
    pub anchoring: Option<assent_receipts::Anchoring>,
    pub verification: ReceiptVerification,
}

/// Loads receipt `id` and verifies it against the store and `consents`' ledger; `None` when
/// there is no such receipt.
pub async fn receipt_detail(
    store: &Store,
    consents: &ConsentService,
    id: &str,
) -> Result<Option<ReceiptDetail>, AuditError> {
    let store = store.clone();
    let id = id.to_owned();
    let loaded = blocking(move || {
        let Some(row) = store.receipt(&id).map_err(store_err)? else {
            return Ok(None);
        };
        let prev = if row.sequence > 1 {
            store
                .receipt_at(&row.gateway_id, row.sequence - 1)
                .map_err(store_err)?
        } else {
            None
        };
        let patients = store
            .receipt_patients(&row.receipt_id)
            .map_err(store_err)?
            .into_iter()
            .map(|p| p.patient)
            .collect();
        let rebuilt = rebuild_batch(&store, &row.gateway_id, row.sequence)
            .map_err(|_| AuditError::StoreUnavailable)?;
        Ok(Some((row, prev, patients, rebuilt)))
    })
    .await?;
    let Some((row, prev, patients, rebuilt)) = loaded else {
        return Ok(None);
    };
    let decoded = decode(&row);
    let (batch, anchoring) = match rebuilt {
        None => (None, None),
        Some((batch_row, batch)) => {
            let anchoring = batch.anchoring(
                row.sequence as u64,
                batch_row.tx_id.clone(),
                batch_row.block_number.map(|b| b as u64),
            );
            (Some(batch_row), anchoring)
        }
    };
    let ledger = match &batch {
        Some(b) if b.tx_id.is_some() => ledger_anchor(consents, &row.gateway_id, b).await,
        _ => LedgerAnswer::NotAnchored,
    };
    let verification = verify_stored(&StoredReceipt {
        id: &row.receipt_id,
        receipt: decoded.as_ref().map(|d| (&d.receipt, d.hash)),
        previous: prev
            .as_ref()
            .and_then(|p| <[u8; 32]>::try_from(p.hash.as_slice()).ok().map(Digest)),
        batch: batch.as_ref().map(|b| StoredBatch {
            batch_id: b.batch_id as u64,
            root: <[u8; 32]>::try_from(b.root.as_slice()).ok().map(Digest),
            n_receipts: (b.last_sequence - b.first_sequence + 1) as u64,
            anchoring: anchoring.as_ref(),
            ledger,
        }),
    });
    Ok(Some(ReceiptDetail {
        row,
        decoded,
        patients,
        batch,
        anchoring,
        verification,
    }))
}

/// What the ledger holds for `batch` of `gateway_id`.
async fn ledger_anchor(
    consents: &ConsentService,
    gateway_id: &str,
    batch: &BatchRow,
) -> LedgerAnswer {
    let gateway_key = consents.key().gateway(gateway_id);
    match consents
        .ledger()
        .anchor(&gateway_key, batch.batch_id as u64)
        .await
    {
        Err(e) => {
            tracing::warn!(error = %e, "audit: the ledger could not be read");
            LedgerAnswer::Unavailable
        }
        Ok(None) => LedgerAnswer::Missing,
        Ok(Some(record)) => match Digest::from_hex(&record.root) {
            Some(root) => LedgerAnswer::Anchored(LedgerAnchor {
                root,
                n_receipts: record.n_receipts,
            }),
            None => LedgerAnswer::Missing,
        },
    }
}

// ---------------------------------------------------------------------------------------
// Streamed export.

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Ndjson,
    Csv,
}

impl ExportFormat {
    /// The media type of the body.
    pub fn content_type(self) -> &'static str {
        match self {
            ExportFormat::Ndjson => "application/x-ndjson",
            ExportFormat::Csv => "text/csv; charset=utf-8",
        }
    }

    /// The file name offered for it.
    pub fn file_name(self) -> &'static str {
        match self {
            ExportFormat::Ndjson => "receipts.ndjson",
            ExportFormat::Csv => "receipts.csv",
        }
    }
}

/// Every receipt matching `filter`, in chain order, as NDJSON (with proofs and anchors) or
/// CSV: `EXPORT_CHUNK` rows are read and rendered at a time, so memory does not grow with the
/// export. A failure ends the stream with its error.
pub fn export_stream(
    store: Store,
    filter: ReceiptFilter,
    format: ExportFormat,
) -> impl Stream<Item = Result<Bytes, AuditError>> {
    struct Cursor {
        store: Store,
        filter: Arc<ReceiptFilter>,
        after: Option<ReceiptCursor>,
        batches: BatchCache,
        header: bool,
        done: bool,
    }
    let start = Cursor {
        store,
        filter: Arc::new(filter),
        after: None,
        batches: BatchCache::default(),
        header: format == ExportFormat::Csv,
        done: false,
    };
    futures_util::stream::unfold(start, move |mut c| async move {
        if c.done {
            return None;
        }
        let store = c.store.clone();
        let filter = c.filter.clone();
        let after = c.after.take();
        let batches = std::mem::take(&mut c.batches);
        let header = std::mem::replace(&mut c.header, false);
        let chunk = blocking(move || export_chunk(&store, &filter, after, batches, header, format));
        match chunk.await {
            Ok((out, next, last, batches)) => {
                c.after = next;
                c.batches = batches;
                c.done = last;
                Some((Ok(Bytes::from(out)), c))
            }
            Err(e) => {
                tracing::warn!(error_code = e.code(), "audit export interrupted");
                c.done = true;
                Some((Err(e), c))
            }
        }
    })
}

/// One chunk of an export: the rendered rows after `after`, the cursor after them, whether
/// it is the last, and the batch cache to go on with.
fn export_chunk(
    store: &Store,
    filter: &ReceiptFilter,
    after: Option<ReceiptCursor>,
    mut batches: BatchCache,
    header: bool,
    format: ExportFormat,
) -> Result<(String, Option<ReceiptCursor>, bool, BatchCache), AuditError> {
    let rows = store
        .search_receipts(filter, ReceiptOrder::Chain, after.as_ref(), EXPORT_CHUNK)
        .map_err(store_err)?;
    let mut out = String::new();
    if header {
        out.push_str(&csv_header());
    }
    for row in &rows {
        let d = decode(row).ok_or(AuditError::Internal)?;
        let anchoring = batches.anchoring(store, &row.gateway_id, row.sequence)?;
        out.push_str(&match format {
            ExportFormat::Ndjson => {
                ndjson_line(&d.receipt, &d.hash, anchoring.as_ref(), Some(&d.subjects))
            }
            ExportFormat::Csv => {
                csv_row(&d.receipt, &d.hash, anchoring.as_ref(), Some(&d.subjects))
            }
        });
    }
    let next = rows.last().map(|r| ReceiptCursor::After {
        gateway_id: r.gateway_id.clone(),
        sequence: r.sequence,
    });
    Ok((out, next, (rows.len() as i64) < EXPORT_CHUNK, batches))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix milliseconds of a UTC instant.
    fn ms(instant: &str) -> i64 {
        instant
            .parse::<assent_fhir::time::Timestamp>()
            .unwrap()
            .as_millisecond()
    }

    #[test]
    fn dates_cover_their_precision() {
        let day = ms("2026-11-22T00:00:00Z");
        assert_eq!(date_range("2026-11-22"), Some((day, day + 86_400_000)));
        assert_eq!(
            date_range("2026-11"),
            Some((ms("2026-11-01T00:00:00Z"), ms("2026-12-01T00:00:00Z")))
        );
        assert_eq!(
            date_range("2026").map(|(s, _)| s),
            Some(ms("2026-01-01T00:00:00Z"))
        );
        assert_eq!(
            date_range("2026-11-22T01:02:03Z"),
            Some((day + 3_723_000, day + 3_724_000))
        );
        assert_eq!(
            date_range("2026-11-22T01:02:03.5+01:00"),
            Some((day + 3_723_500 - 3_600_000, day + 3_723_501 - 3_600_000))
        );
        assert_eq!(
            assent_receipts::format_instant(day),
            "2026-11-22T00:00:00.000Z"
        );
        for bad in [
            "",
            "26-11-22",
            "2026-13-01",
            "2026-02-30",
            "2026-11-22T01:02:03",
            "2026-11-22T25:00:00Z",
            "2026-11-22T01:02:03.x Z",
            "2026-11-22T01:02:03+1:00",
            "2026-11-22-01",
        ] {
            assert_eq!(date_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn date_prefixes_narrow_a_range() {
        let mut f = ReceiptFilter::default();
        apply_date(&mut f, "ge2026-11-01").unwrap();
        apply_date(&mut f, "lt2026-11-03").unwrap();
        assert_eq!(
            (f.from_ms, f.to_ms),
            (
                Some(ms("2026-11-01T00:00:00Z")),
                Some(ms("2026-11-03T00:00:00Z"))
            )
        );
        let mut g = ReceiptFilter::default();
        apply_date(&mut g, "gt2026-11-01").unwrap();
        apply_date(&mut g, "le2026-11-01").unwrap();
        assert!(g.from_ms >= g.to_ms, "an empty range");
        assert!(apply_date(&mut g, "sa2026-11-01").is_err());
        assert!(apply_date(&mut g, "eq2026-11-01T").is_err());
    }

    #[test]
    fn cursors_read_back() {
        assert_eq!(
            parse_cursor("17.abc"),
            Some(ReceiptCursor::Before {
                time_ms: 17,
                receipt_id: "abc".into()
            })
        );
        assert_eq!(parse_cursor("x.abc"), None);
    }

    #[test]
    fn patients_are_site_scoped_identities() {
        assert_eq!(
            patient_identity("st-mary/Patient/p1", None).unwrap(),
            "st-mary/Patient/p1"
        );
        assert_eq!(
            patient_identity("Patient/p1", Some("north")).unwrap(),
            "north/Patient/p1"
        );
        assert_eq!(
            patient_identity("p1", Some("north")).unwrap(),
            "north/Patient/p1"
        );
        for bad in [
            "Patient/p1",
            "a/b/c/d",
            "st mary/Patient/p1",
            "s/Patient/",
            "s/Patient/a b",
        ] {
            assert!(patient_identity(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_typed_query_filters_as_its_parameters_do() {
        let key = ConsortiumKey::new(&[5; 32]).unwrap();
        let typed = AuditQuery {
            patient: Some("Patient/p1".into()),
            site: Some("st-mary".into()),
            dates: vec!["ge2026-11-01".into()],
            decisions: vec!["permit".into(), "deny".into()],
            break_glass: Some("true".into()),
            ..AuditQuery::default()
        };
        let parsed = parse_search(
            "patient=Patient%2Fp1&site=st-mary&date=ge2026-11-01&decision=permit,deny&break-glass=true",
            &[],
            &key,
        )
        .unwrap();
        assert_eq!(typed.filter(&key).unwrap(), (parsed.filter, parsed.patient));
        let bad = AuditQuery {
            decisions: vec!["maybe".into()],
            ..AuditQuery::default()
        };
        assert!(bad.filter(&key).is_err());
    }
}
