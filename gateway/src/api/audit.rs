//! The audit API under `/audit`: receipts searched as FHIR AuditEvents (IHE BALP), one
//! receipt with its proof, anchor and verification, streamed exports (NDJSON for `assent
//! verify`, CSV for spreadsheets) and a patient's accounting of disclosures.
//!
//! Who may call: a caller whose id (`subject@issuer`) is in `audit.subjects`, or whose token
//! carries an explicit `user/` or `system/` AuditEvent read-and-search scope (a wildcard such
//! as `user/*.rs` is not enough: reading the audit log is reading every patient's access
//! history). Everyone else gets 403 `audit-role-required`; no token, 401.
//!
//! Reading the audit log is itself an access to protected health information: every read
//! after authentication leaves a receipt (`api_receipt.rs`; refused reads as denials) naming
//! the patients it showed (the one filtered on, and the patients of the receipts returned or
//! read), and nothing here logs a patient, an actor or a query; logs name the route and the
//! error code only. Searches and exports take `kind` (what a receipt records) besides the
//! BALP filters.
//!
//! Owns parsing the audit search parameters, paging links, and turning stored rows into
//! answers (the renderings themselves are `assent-receipts`'). Leaves out the HTML console
//! (`console.rs`), which uses the same filter, verification and export functions.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use assent_fhir::FhirVersion;
use assent_receipts::{
    AccessKind, AuditAction, AuditSource, Digest, Disclosure, Receipt, ReceiptRecord,
    ReceiptSubjects, audit_event, csv_header, csv_row, ndjson_line, root_from_proof,
};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::api::receipt::ApiAccess;
use crate::http::access::require_audit;
use crate::http::caller::Caller;
use crate::http::error::GatewayError;
use crate::http::state::AppState;
use crate::services::anchoring::rebuild_batch;
use crate::services::consent::ConsentService;
use crate::store::{BatchRow, ReceiptCursor, ReceiptFilter, ReceiptOrder, ReceiptRow, Store};

/// Default and largest page of `GET /audit/AuditEvent`.
pub const DEFAULT_COUNT: i64 = 50;
pub const MAX_COUNT: i64 = 500;
/// Default and largest page of disclosures.
pub const DEFAULT_DISCLOSURES: i64 = 500;
pub const MAX_DISCLOSURES: i64 = 5_000;
/// Rows an export reads from the store per query (and renders per chunk of the body).
pub const EXPORT_CHUNK: i64 = 500;
/// Longest value accepted for any search parameter.
const MAX_VALUE_LEN: usize = 256;
/// The paging links' "site" for the page signer.
const PAGE_SCOPE: &str = "audit";

/// Authenticates the request and opens the receipt of this read of the audit log: every read
/// after authentication leaves one, refused or not (`api_receipt.rs`).
async fn authenticate(
    req: &HttpRequest,
    state: &AppState,
    action: AuditAction,
) -> Result<(Caller, ApiAccess), GatewayError> {
    let caller = state.callers.authenticate(req.headers()).await?;
    let access = ApiAccess::new(AccessKind::Audit(action), &caller, req);
    Ok((caller, access))
}

// ---------------------------------------------------------------------------------------
// Search parameters.

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

fn store_err(e: crate::store::StoreError) -> GatewayError {
    tracing::warn!(error = %e, "audit: the store failed");
    GatewayError::StoreUnavailable
}

fn bad(message: impl Into<String>) -> GatewayError {
    GatewayError::Malformed(message.into())
}

/// Parses `query` (raw, percent-encoded) into a search; `extra` are further parameters this
/// route takes besides the filters. Hostile values (too long, control characters, unknown
/// names, repeated single parameters) are refused with 400.
pub fn parse_search(
    query: &str,
    extra: &[&str],
    state: &AppState,
) -> Result<AuditSearch, GatewayError> {
    let mut single: HashMap<String, String> = HashMap::new();
    let mut dates: Vec<String> = Vec::new();
    let mut decisions: Vec<String> = Vec::new();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let (name, value) = (name.into_owned(), value.into_owned());
        if value.len() > MAX_VALUE_LEN || value.chars().any(char::is_control) {
            return Err(bad(format!(
                "`{name}` is too long or holds control characters"
            )));
        }
        if !FILTER_PARAMS.contains(&name.as_str())
            && !extra.contains(&name.as_str())
            && !["_count", "_cursor", "_sig", "_fhirVersion", "_format"].contains(&name.as_str())
        {
            let shown: String = name.chars().take(40).collect();
            return Err(bad(format!("unknown parameter `{shown}`")));
        }
        match name.as_str() {
            "date" => dates.push(value),
            "decision" => {
                for d in value.split(',') {
                    match d {
                        "permit" | "deny" | "error" => decisions.push(d.to_owned()),
                        _ => return Err(bad("`decision` is one of permit, deny, error")),
                    }
                }
            }
            _ => {
                if single.insert(name.clone(), value).is_some() {
                    return Err(bad(format!("`{name}` is given more than once")));
                }
            }
        }
    }
    let mut filter = ReceiptFilter {
        decisions,
        ..ReceiptFilter::default()
    };
    let site = single.get("site").filter(|s| !s.is_empty()).cloned();
    if let Some(site) = &site {
        if !is_token(site) {
            return Err(bad("`site` is not a site id"));
        }
        filter.site = Some(site.clone());
    }
    let mut patient = None;
    if let Some(named) = single.get("patient").filter(|p| !p.is_empty()) {
        let identity = patient_identity(named, site.as_deref())?;
        filter.patient_key = Some(state.consents.key().patient(&identity));
        patient = Some(identity);
    }
    filter.actor = single.get("agent").filter(|a| !a.is_empty()).cloned();
    filter.kind = match single.get("kind").filter(|k| !k.is_empty()) {
        Some(k) if AccessKind::parse(k).is_some() => Some(k.clone()),
        Some(_) => {
            return Err(bad(
                "`kind` is fhir, consent-create, consent-update, consent-revoke, consent-search, \
                 consent-history, consent-check, audit-search, audit-read, audit-export or audit-disclosures",
            ));
        }
        None => None,
    };
    filter.purpose = match single.get("purpose").filter(|p| !p.is_empty()) {
        Some(p) if is_token(p) => Some(p.clone()),
        Some(_) => return Err(bad("`purpose` is not a PurposeOfUse code")),
        None => None,
    };
    filter.success = match single.get("outcome").map(String::as_str) {
        None | Some("") => None,
        Some("0") => Some(true),
        Some("4" | "8" | "12") => Some(false),
        Some(_) => return Err(bad("`outcome` is one of 0, 4, 8, 12")),
    };
    filter.break_glass_only = match single.get("break-glass").map(String::as_str) {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(bad("`break-glass` is true or false")),
    };
    for date in &dates {
        apply_date(&mut filter, date)?;
    }
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
        format: single.get("_format").cloned(),
    })
}

/// `{site}/Patient/{id}`, or `Patient/{id}` (or `{id}`) with `site`.
fn patient_identity(value: &str, site: Option<&str>) -> Result<String, GatewayError> {
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
    Ok(ConsentService::patient_identity(site, id))
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
fn apply_date(filter: &mut ReceiptFilter, value: &str) -> Result<(), GatewayError> {
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

/// The UTC millisecond range `[start, end)` a FHIR date or dateTime covers at its precision.
pub fn date_range(text: &str) -> Option<(i64, i64)> {
    let num = |s: &str, len: usize| -> Option<i64> {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (date, time) = match text.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let parts: Vec<&str> = date.split('-').collect();
    let year = num(parts.first()?, 4)?;
    let month = parts.get(1).map(|m| num(m, 2)).unwrap_or(Some(1))?;
    let day = parts.get(2).map(|d| num(d, 2)).unwrap_or(Some(1))?;
    if parts.len() > 3 || !(1..=12).contains(&month) || !(1..=days_in(year, month)).contains(&day) {
        return None;
    }
    let day_ms = days_from_civil(year, month, day) * 86_400_000;
    let Some(time) = time else {
        let end = match parts.len() {
            1 => days_from_civil(year + 1, 1, 1) * 86_400_000,
            2 if month == 12 => days_from_civil(year + 1, 1, 1) * 86_400_000,
            2 => days_from_civil(year, month + 1, 1) * 86_400_000,
            _ => day_ms + 86_400_000,
        };
        return Some((day_ms, end));
    };
    if parts.len() != 3 {
        return None;
    }
    // hh:mm[:ss[.fff]] followed by Z or ±hh:mm (a dateTime with a time has a zone).
    let zone_at = time.find(['Z', '+', '-'])?;
    let (clock, zone) = time.split_at(zone_at);
    let offset_ms = match zone {
        "Z" => 0,
        z if z.len() == 6 && &z[3..4] == ":" => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let (h, m) = (num(&z[1..3], 2)?, num(&z[4..6], 2)?);
            if h > 14 || m > 59 {
                return None;
            }
            sign * (h * 60 + m) * 60_000
        }
        _ => return None,
    };
    let (hms, fraction) = match clock.split_once('.') {
        Some((hms, f)) => (hms, Some(f)),
        None => (clock, None),
    };
    let hms: Vec<&str> = hms.split(':').collect();
    let h = num(hms.first()?, 2)?;
    let m = num(hms.get(1)?, 2)?;
    let s = hms.get(2).map(|s| num(s, 2)).unwrap_or(Some(0))?;
    if hms.len() > 3 || h > 23 || m > 59 || s > 59 {
        return None;
    }
    let (millis, unit) = match fraction {
        None if hms.len() == 2 => (0, 60_000),
        None => (0, 1_000),
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            let padded = format!("{f:0<3}");
            (padded[..3].parse::<i64>().ok()?, 1)
        }
        Some(_) => return None,
    };
    let start = day_ms + ((h * 60 + m) * 60 + s) * 1_000 + millis - offset_ms;
    Some((start, start + unit))
}

fn days_in(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn cursor_text(row: &ReceiptRow) -> String {
    format!("{}.{}", row.time_ms, row.receipt_id)
}

fn parse_cursor(text: &str) -> Option<ReceiptCursor> {
    let (time, id) = text.split_once('.')?;
    let time_ms = time.parse().ok()?;
    (!id.is_empty() && id.len() <= 64).then(|| ReceiptCursor::Before {
        time_ms,
        receipt_id: id.to_owned(),
    })
}

/// The query string without its `_sig` (which must come last), and the signature.
fn split_signature(query: &str) -> (&str, Option<&str>) {
    match query.rfind("_sig=") {
        Some(at) if at == 0 || query.as_bytes()[at - 1] == b'&' => {
            let unsigned = query[..at].trim_end_matches('&');
            (unsigned, Some(&query[at + 5..]))
        }
        _ => (query, None),
    }
}

/// Checks a paging link's signature when it carries a cursor.
fn check_page_link(
    state: &AppState,
    caller: &Caller,
    path: &str,
    query: &str,
    search: &AuditSearch,
) -> Result<(), GatewayError> {
    if search.cursor.is_none() {
        return Ok(());
    }
    let (unsigned, signature) = split_signature(query);
    let signature = signature.ok_or(GatewayError::BadPageToken)?;
    state
        .signer
        .verify(
            signature,
            PAGE_SCOPE,
            &caller.id,
            &format!("{path}?{unsigned}"),
        )
        .map_err(|_| GatewayError::BadPageToken)
}

/// The signed link to the page after `last`: the request's own query with the cursor replaced.
fn next_link(
    state: &AppState,
    caller: &Caller,
    path: &str,
    query: &str,
    last: &ReceiptRow,
) -> String {
    let kept: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(n, _)| n != "_cursor" && n != "_sig")
        .map(|(n, v)| (n.into_owned(), v.into_owned()))
        .collect();
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (n, v) in &kept {
        serializer.append_pair(n, v);
    }
    serializer.append_pair("_cursor", &cursor_text(last));
    let unsigned = serializer.finish();
    let signature = state
        .signer
        .sign(PAGE_SCOPE, &caller.id, &format!("{path}?{unsigned}"));
    format!(
        "{}{path}?{unsigned}&_sig={}",
        state.public_base,
        url::form_urlencoded::byte_serialize(signature.as_bytes()).collect::<String>()
    )
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
pub struct BatchCache {
    current: Option<(BatchRow, assent_receipts::ClosedBatch)>,
}

impl BatchCache {
    /// The anchoring of receipt `sequence` of `gateway_id`, once its batch is anchored on the
    /// ledger (a closed batch not yet anchored gives none: the receipt is pending).
    pub fn anchoring(
        &mut self,
        store: &Store,
        gateway_id: &str,
        sequence: i64,
    ) -> Result<Option<assent_receipts::Anchoring>, GatewayError> {
        let hit = self.current.as_ref().is_some_and(|(row, _)| {
            row.gateway_id == gateway_id
                && row.first_sequence <= sequence
                && sequence <= row.last_sequence
        });
        if !hit {
            self.current = rebuild_batch(store, gateway_id, sequence).map_err(|e| {
                tracing::warn!(error = %e, "audit: a batch could not be rebuilt");
                GatewayError::StoreUnavailable
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
// Verification of one stored receipt.

/// What holds for one stored receipt, checked against the store and the ledger.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verification {
    /// The stored bytes decode and hash to the stored hash.
    pub hash: Check,
    /// The receipt's `prev_hash` is the stored hash of the receipt before it.
    pub chain: Check,
    /// The inclusion proof leads from the recomputed hash to the batch's stored root.
    pub proof: Check,
    /// The ledger holds the same root for the batch.
    pub ledger: Check,
    /// Every check held (pending ones do not count as held).
    pub verified: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    Holds,
    Fails,
    /// Not anchored yet.
    Pending,
    /// The ledger could not be asked.
    Unavailable,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Holds => "holds",
            Check::Fails => "fails",
            Check::Pending => "pending",
            Check::Unavailable => "unavailable",
        }
    }
}

/// A stored receipt with everything the detail view shows.
pub struct ReceiptDetail {
    pub row: ReceiptRow,
    pub decoded: Option<Decoded>,
    pub patients: Vec<String>,
    pub batch: Option<BatchRow>,
    pub anchoring: Option<assent_receipts::Anchoring>,
    pub verification: Verification,
}

/// Loads receipt `id` and verifies it; `None` when there is no such receipt.
pub async fn receipt_detail(
    state: &web::Data<AppState>,
    id: &str,
) -> Result<Option<ReceiptDetail>, GatewayError> {
    let store = state.store.clone();
    let id = id.to_owned();
    let loaded = web::block(move || -> Result<_, GatewayError> {
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
            .map_err(|_| GatewayError::StoreUnavailable)?;
        Ok(Some((row, prev, patients, rebuilt)))
    })
    .await
    .map_err(|_| GatewayError::Internal)??;
    let Some((row, prev, patients, rebuilt)) = loaded else {
        return Ok(None);
    };
    let decoded = decode(&row);
    let recomputed = decoded.as_ref().map(|d| d.receipt.hash());
    let hash = match &decoded {
        Some(d) if Some(d.hash) == recomputed && d.receipt.id == row.receipt_id => Check::Holds,
        _ => Check::Fails,
    };
    let chain = match (&decoded, &prev) {
        (Some(d), _) if row.sequence == 1 => {
            if d.receipt.prev_hash == Digest::ZERO {
                Check::Holds
            } else {
                Check::Fails
            }
        }
        (Some(d), Some(p)) if p.hash.as_slice() == d.receipt.prev_hash.as_bytes() => Check::Holds,
        _ => Check::Fails,
    };
    let (batch, anchoring, proof, ledger) = match rebuilt {
        None => (None, None, Check::Pending, Check::Pending),
        Some((batch_row, batch)) => {
            let stored_root = <[u8; 32]>::try_from(batch_row.root.as_slice())
                .ok()
                .map(Digest);
            let anchoring = batch.anchoring(
                row.sequence as u64,
                batch_row.tx_id.clone(),
                batch_row.block_number.map(|b| b as u64),
            );
            let proof = match (&anchoring, recomputed, stored_root) {
                (Some(a), Some(h), Some(root)) if root_from_proof(&h, &a.proof) == Some(root) => {
                    Check::Holds
                }
                _ => Check::Fails,
            };
            let ledger = if batch_row.tx_id.is_none() {
                Check::Pending
            } else {
                let gateway_key = state.consents.key().gateway(&row.gateway_id);
                match state
                    .consents
                    .ledger()
                    .anchor(&gateway_key, batch_row.batch_id as u64)
                    .await
                {
                    Err(e) => {
                        tracing::warn!(error = %e, "audit: the ledger could not be read");
                        Check::Unavailable
                    }
                    Ok(None) => Check::Fails,
                    Ok(Some(record)) => {
                        let same_root = stored_root.map(|r| r.to_hex()) == Some(record.root);
                        let same_size = record.n_receipts as i64
                            == batch_row.last_sequence - batch_row.first_sequence + 1;
                        if same_root && same_size {
                            Check::Holds
                        } else {
                            Check::Fails
                        }
                    }
                }
            };
            (Some(batch_row), anchoring, proof, ledger)
        }
    };
    let verified = [hash, chain, proof, ledger]
        .iter()
        .all(|c| *c == Check::Holds);
    Ok(Some(ReceiptDetail {
        row,
        decoded,
        patients,
        batch,
        anchoring,
        verification: Verification {
            hash,
            chain,
            proof,
            ledger,
            verified,
        },
    }))
}

// ---------------------------------------------------------------------------------------
// Handlers.

/// The FHIR version an AuditEvent search answers in: `_fhirVersion`, else the Accept
/// header's `fhirVersion` parameter, else R4 (the version BALP is defined on).
fn answer_version(req: &HttpRequest, search: &AuditSearch) -> Result<FhirVersion, GatewayError> {
    if let Some(v) = search.version {
        return Ok(v);
    }
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    for parameter in accept.split([';', ',']) {
        if let Some((name, value)) = parameter.split_once('=')
            && name.trim().eq_ignore_ascii_case("fhirVersion")
        {
            return value
                .trim()
                .trim_matches('"')
                .parse()
                .map_err(|_| GatewayError::UnsupportedMediaType("unknown fhirVersion".into()));
        }
    }
    Ok(FhirVersion::R4)
}

/// `GET /audit/AuditEvent`
pub async fn search(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let (caller, mut access) = authenticate(&req, &state, AuditAction::Search).await?;
    let outcome = search_events(&req, &state, &caller, &mut access).await;
    access.finish(&state, outcome).await
}

/// The search's receipt names the patient it filters on and every patient of the receipts it
/// returns, and lists the AuditEvents returned.
async fn search_events(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    caller: &Caller,
    access: &mut ApiAccess,
) -> Result<HttpResponse, GatewayError> {
    require_audit(caller, state)?;
    let search = parse_search(req.query_string(), &[], state)?;
    if let Some(patient) = &search.patient {
        access.add_patient_identity(patient);
    }
    check_page_link(state, caller, req.path(), req.query_string(), &search)?;
    if let Some(format) = &search.format
        && !assent_fhir::format::is_json_format(format)
    {
        return Err(GatewayError::UnsupportedMediaType(
            "AuditEvents are served as JSON".into(),
        ));
    }
    let version = answer_version(req, &search)?;
    let count = search.count.unwrap_or(DEFAULT_COUNT).min(MAX_COUNT);
    let store = state.store.clone();
    let (filter, cursor) = (search.filter.clone(), search.cursor.clone());
    let rows = web::block(move || {
        store.search_receipts(
            &filter,
            ReceiptOrder::NewestFirst,
            cursor.as_ref(),
            count + 1,
        )
    })
    .await
    .map_err(|_| GatewayError::Internal)?
    .map_err(store_err)?;
    let more = rows.len() as i64 > count;
    let rows = &rows[..rows.len().min(count as usize)];
    let source = AuditSource {
        base_url: format!("{}/fhir", state.public_base),
    };
    let mut entries = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(d) = decode(row) else {
            tracing::warn!("audit: a stored receipt does not decode");
            return Err(GatewayError::Internal);
        };
        let (event, _) = audit_event(&d.receipt, &d.hash, Some(&d.subjects), &source, version);
        for patient in &d.subjects.patients {
            access.add_patient_identity(patient);
        }
        access.add_resource(&event);
        entries.push(json!({
            "fullUrl": format!("urn:uuid:{}", row.receipt_id),
            "resource": event,
            "search": {"mode": "match"},
        }));
    }
    let self_link = format!("{}{}?{}", state.public_base, req.path(), req.query_string());
    let mut links = vec![json!({"relation": "self", "url": self_link})];
    if more && let Some(last) = rows.last() {
        links.push(json!({
            "relation": "next",
            "url": next_link(state, caller, req.path(), req.query_string(), last),
        }));
    }
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": entries,
    });
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, version.content_type()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(bundle.to_string()))
}

/// The JSON form of a receipt's detail.
pub fn detail_json(detail: &ReceiptDetail) -> Value {
    let mut body = match &detail.decoded {
        Some(d) => serde_json::to_value(ReceiptRecord::new(
            &d.receipt,
            &d.hash,
            detail.anchoring.as_ref(),
            Some(&d.subjects),
        ))
        .unwrap_or(Value::Null),
        None => json!({"receipt": null, "hash": hex::encode(&detail.row.hash)}),
    };
    body["patients"] = json!(detail.patients);
    if let Some(batch) = &detail.batch {
        body["batch"] = json!({
            "batch_id": batch.batch_id,
            "first_sequence": batch.first_sequence,
            "last_sequence": batch.last_sequence,
            "root": hex::encode(&batch.root),
            "tx_id": batch.tx_id,
            "block_number": batch.block_number,
            "anchored_at": batch.anchored_at_ms.map(assent_receipts::format_instant),
        });
    }
    body["verification"] = serde_json::to_value(&detail.verification).unwrap_or(Value::Null);
    body
}

/// `GET /audit/receipts/{id}`
pub async fn receipt(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let (caller, mut access) = authenticate(&req, &state, AuditAction::Read).await?;
    let outcome = async {
        require_audit(&caller, &state)?;
        if path.len() > 64 || path.chars().any(char::is_control) {
            return Err(bad("not a receipt id"));
        }
        let detail = read_receipt(&state, &path, &mut access).await?;
        Ok(HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(detail_json(&detail)))
    }
    .await;
    access.finish(&state, outcome).await
}

/// Loads receipt `id` with its verification; the read's receipt names the receipt's patients
/// (whose accesses it shows).
pub async fn read_receipt(
    state: &web::Data<AppState>,
    id: &str,
    access: &mut ApiAccess,
) -> Result<ReceiptDetail, GatewayError> {
    let detail = receipt_detail(state, id)
        .await?
        .ok_or(GatewayError::NotFound)?;
    for patient in &detail.patients {
        access.add_patient_identity(patient);
    }
    Ok(detail)
}

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Ndjson,
    Csv,
}

/// Streams every receipt matching `filter`, in chain order, as NDJSON (with proofs and
/// anchors) or CSV: `EXPORT_CHUNK` rows are read and rendered at a time, so memory does not
/// grow with the export.
pub fn export_response(
    state: web::Data<AppState>,
    filter: ReceiptFilter,
    format: ExportFormat,
) -> HttpResponse {
    struct Cursor {
        state: web::Data<AppState>,
        filter: Arc<ReceiptFilter>,
        after: Option<ReceiptCursor>,
        batches: BatchCache,
        header: bool,
        done: bool,
    }
    let start = Cursor {
        state,
        filter: Arc::new(filter),
        after: None,
        batches: BatchCache::default(),
        header: format == ExportFormat::Csv,
        done: false,
    };
    let body = futures_util::stream::unfold(start, move |mut c| async move {
        if c.done {
            return None;
        }
        let store = c.state.store.clone();
        let filter = c.filter.clone();
        let after = c.after.take();
        let mut batches = std::mem::take(&mut c.batches);
        let header = std::mem::replace(&mut c.header, false);
        let chunk = web::block(move || -> Result<_, GatewayError> {
            let rows = store
                .search_receipts(&filter, ReceiptOrder::Chain, after.as_ref(), EXPORT_CHUNK)
                .map_err(store_err)?;
            let mut out = String::new();
            if header {
                out.push_str(&csv_header());
            }
            for row in &rows {
                let d = decode(row).ok_or(GatewayError::Internal)?;
                let anchoring = batches.anchoring(&store, &row.gateway_id, row.sequence)?;
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
        })
        .await;
        match chunk {
            Ok(Ok((out, next, last, batches))) => {
                c.after = next;
                c.batches = batches;
                c.done = last;
                Some((Ok::<_, GatewayError>(Bytes::from(out)), c))
            }
            Ok(Err(e)) => {
                tracing::warn!(error_code = e.code(), "audit export interrupted");
                c.done = true;
                Some((Err(e), c))
            }
            Err(_) => {
                c.done = true;
                Some((Err(GatewayError::Internal), c))
            }
        }
    });
    let (content_type, name) = match format {
        ExportFormat::Ndjson => ("application/x-ndjson", "receipts.ndjson"),
        ExportFormat::Csv => ("text/csv; charset=utf-8", "receipts.csv"),
    };
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ))
        .streaming(body)
}

/// `GET /audit/export?format=ndjson|csv&…filters`. The export's receipt is durable before
/// the first byte streams; it names the patient the filter names, if any (what the export
/// will hold is known only as it streams).
pub async fn export(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let (caller, mut access) = authenticate(&req, &state, AuditAction::Export).await?;
    let outcome = (|| {
        require_audit(&caller, &state)?;
        let search = parse_search(req.query_string(), &["format"], &state)?;
        if let Some(patient) = &search.patient {
            access.add_patient_identity(patient);
        }
        if search.count.is_some() || search.cursor.is_some() {
            return Err(bad(
                "an export takes no `_count` or `_cursor`: it streams everything",
            ));
        }
        let format = export_format(req.query_string())?;
        Ok(export_response(state.clone(), search.filter, format))
    })();
    access.finish(&state, outcome).await
}

/// The `format` parameter: `ndjson` (default) or `csv`.
pub fn export_format(query: &str) -> Result<ExportFormat, GatewayError> {
    let format = url::form_urlencoded::parse(query.as_bytes())
        .find(|(n, _)| n == "format")
        .map(|(_, v)| v.into_owned());
    match format.as_deref() {
        None | Some("ndjson") => Ok(ExportFormat::Ndjson),
        Some("csv") => Ok(ExportFormat::Csv),
        Some(_) => Err(bad("`format` is ndjson or csv")),
    }
}

/// `GET /audit/patient/{id}/disclosures?site=…`: every access that reached the patient, newest
/// first, in plain terms (JSON; `_format=text` for one sentence per line). Its own receipt
/// names the patient: the next accounting lists this read too.
pub async fn disclosures(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let (caller, mut access) = authenticate(&req, &state, AuditAction::Disclosures).await?;
    let outcome = patient_disclosures(&req, &path, &state, &caller, &mut access).await;
    access.finish(&state, outcome).await
}

async fn patient_disclosures(
    req: &HttpRequest,
    path: &str,
    state: &web::Data<AppState>,
    caller: &Caller,
    access: &mut ApiAccess,
) -> Result<HttpResponse, GatewayError> {
    require_audit(caller, state)?;
    let mut search = parse_search(req.query_string(), &[], state)?;
    if search.filter.patient_key.is_some() {
        return Err(bad("the patient is named in the path"));
    }
    check_page_link(state, caller, req.path(), req.query_string(), &search)?;
    let site = search
        .filter
        .site
        .take()
        .ok_or_else(|| bad("`site` is required (the patient's site)"))?;
    let identity = patient_identity(path, Some(&site))?;
    access.set_site(&site);
    access.add_patient_identity(&identity);
    search.filter.patient_key = Some(state.consents.key().patient(&identity));
    let count = search
        .count
        .unwrap_or(DEFAULT_DISCLOSURES)
        .min(MAX_DISCLOSURES);
    let store = state.store.clone();
    let (filter, cursor) = (search.filter.clone(), search.cursor.clone());
    let rows = web::block(move || {
        store.search_receipts(
            &filter,
            ReceiptOrder::NewestFirst,
            cursor.as_ref(),
            count + 1,
        )
    })
    .await
    .map_err(|_| GatewayError::Internal)?
    .map_err(store_err)?;
    let more = rows.len() as i64 > count;
    let rows = &rows[..rows.len().min(count as usize)];
    let mut list = Vec::with_capacity(rows.len());
    for row in rows {
        let d = decode(row).ok_or(GatewayError::Internal)?;
        list.push(Disclosure::from_receipt(&d.receipt, Some(&d.subjects)));
    }
    let next = if more {
        rows.last()
            .map(|last| next_link(state, caller, req.path(), req.query_string(), last))
    } else {
        None
    };
    match search.format.as_deref() {
        Some("text") => {
            let mut text = format!(
                "Accounting of disclosures for {identity}: {} access{} (newest first)\n",
                list.len(),
                if list.len() == 1 { "" } else { "es" }
            );
            for d in &list {
                text.push_str(&d.sentence());
                text.push('\n');
            }
            if let Some(next) = &next {
                text.push_str(&format!("More: {next}\n"));
            }
            Ok(HttpResponse::Ok()
                .insert_header((header::CONTENT_TYPE, "text/plain; charset=utf-8"))
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .body(text))
        }
        None | Some("json") => Ok(HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(json!({
                "patient": identity,
                "disclosures": list,
                "next": next,
            }))),
        Some(_) => Err(bad("`_format` is json or text")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_cover_their_precision() {
        let day = days_from_civil(2026, 11, 22) * 86_400_000;
        assert_eq!(date_range("2026-11-22"), Some((day, day + 86_400_000)));
        assert_eq!(
            date_range("2026-11"),
            Some((
                days_from_civil(2026, 11, 1) * 86_400_000,
                days_from_civil(2026, 12, 1) * 86_400_000
            ))
        );
        assert_eq!(
            date_range("2026").map(|(s, _)| s),
            Some(days_from_civil(2026, 1, 1) * 86_400_000)
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
                Some(days_from_civil(2026, 11, 1) * 86_400_000),
                Some(days_from_civil(2026, 11, 3) * 86_400_000)
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
    fn signatures_are_split_off_the_end() {
        assert_eq!(
            split_signature("a=1&_cursor=5.x&_sig=9.abc"),
            ("a=1&_cursor=5.x", Some("9.abc"))
        );
        assert_eq!(split_signature("a=1"), ("a=1", None));
        assert_eq!(split_signature("x_sig=1"), ("x_sig=1", None));
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
}
