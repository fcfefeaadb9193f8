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
//! Owns the handlers: who may call, the receipt of each read, the paging links (signed by the
//! page signer, `http/paging.rs`, under the "site" `audit`) and the answers' shape. Leaves
//! out the receipt query, the pager, verification and the streamed export
//! (`services/audit.rs`, shared with the console), the renderings (`assent-receipts`) and the
//! HTML console (`console.rs`).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};

use assent_fhir::FhirVersion;
use assent_receipts::{
    AccessKind, AuditAction, AuditSource, Disclosure, ReceiptRecord, audit_event,
};
use serde_json::{Value, json};

use crate::api::receipt::ApiAccess;
use crate::http::access::require_audit;
use crate::http::caller::Caller;
use crate::http::error::GatewayError;
use crate::http::state::AppState;
use futures_util::StreamExt;

use crate::services::audit::{
    AuditSearch, ReceiptDetail, ReceiptPage, decode, export_stream, network_subjects, newest_first,
    parse_search, patient_identity,
};
use crate::services::network::NETWORK_SITE;
// The export's chunk size and formats and the verification's checks, under the names the tests use.
pub use crate::services::audit::{EXPORT_CHUNK, ExportFormat};
pub use assent_receipts::Check;

/// Default and largest page of `GET /audit/AuditEvent`.
pub const DEFAULT_COUNT: i64 = 50;
pub const MAX_COUNT: i64 = 500;
/// Default and largest page of disclosures.
pub const DEFAULT_DISCLOSURES: i64 = 500;
pub const MAX_DISCLOSURES: i64 = 5_000;
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

fn bad(message: impl Into<String>) -> GatewayError {
    GatewayError::Malformed(message.into())
}

/// Checks a paging link's signature when it carries a cursor.
fn check_page_link(
    state: &AppState,
    caller: &Caller,
    req: &HttpRequest,
    search: &AuditSearch,
) -> Result<(), GatewayError> {
    if search.cursor.is_none() {
        return Ok(());
    }
    state
        .signer
        .verify_query(PAGE_SCOPE, &caller.id, req.path(), req.query_string())
        .map_err(GatewayError::BadPageToken)
}

/// The signed link to the page after `page`, when more follow: the request's own query with
/// the cursor replaced.
fn next_link(
    state: &AppState,
    caller: &Caller,
    req: &HttpRequest,
    page: &ReceiptPage,
) -> Option<String> {
    let cursor = page.next_cursor()?;
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (n, v) in assent_fhir::query::pairs(req.query_string()) {
        if n != "_cursor" && n != "_sig" {
            serializer.append_pair(&n, &v);
        }
    }
    serializer.append_pair("_cursor", &cursor);
    let path = req.path();
    let signed = state
        .signer
        .sign_query(PAGE_SCOPE, &caller.id, path, &serializer.finish());
    Some(format!("{}{path}?{signed}", state.public_base))
}

/// Loads receipt `id` and verifies it against the store and the ledger; `None` when there is
/// no such receipt.
pub async fn receipt_detail(
    state: &web::Data<AppState>,
    id: &str,
) -> Result<Option<ReceiptDetail>, GatewayError> {
    Ok(crate::services::audit::receipt_detail(&state.store, &state.consents, id).await?)
}

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
    let search = parse_search(req.query_string(), &[], state.consents.key())?;
    if let Some(patient) = &search.patient {
        access.add_patient_identity(patient);
    }
    check_page_link(state, caller, req, &search)?;
    if let Some(format) = &search.format
        && !assent_fhir::format::is_json_format(format)
    {
        return Err(GatewayError::NotAcceptable(
            "AuditEvents are served as JSON".into(),
        ));
    }
    let version = answer_version(req, &search)?;
    let count = search.count.unwrap_or(DEFAULT_COUNT).min(MAX_COUNT);
    let page = newest_first(&state.store, search.filter, search.cursor, count).await?;
    let source = AuditSource {
        base_url: format!("{}/fhir", state.public_base),
    };
    let mut entries = Vec::with_capacity(page.rows.len());
    for row in &page.rows {
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
    if let Some(next) = next_link(state, caller, req, &page) {
        links.push(json!({"relation": "next", "url": next}));
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

/// Streams every receipt matching `filter`, in chain order, as NDJSON (with proofs and
/// anchors) or CSV (`services::audit::export_stream`).
pub fn export_response(
    state: web::Data<AppState>,
    filter: crate::store::ReceiptFilter,
    format: ExportFormat,
) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, format.content_type()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{}\"", format.file_name()),
        ))
        .streaming(
            export_stream(state.store.clone(), filter, format)
                .map(|chunk| chunk.map_err(GatewayError::from)),
        )
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
        let search = parse_search(req.query_string(), &["format"], state.consents.key())?;
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
    let format = assent_fhir::query::pairs(query)
        .into_iter()
        .find(|(n, _)| n == "format")
        .map(|(_, v)| v);
    match format.as_deref() {
        None | Some("ndjson") => Ok(ExportFormat::Ndjson),
        Some("csv") => Ok(ExportFormat::Csv),
        Some(_) => Err(bad("`format` is ndjson or csv")),
    }
}

/// `GET /audit/patient/{id}/disclosures?site=…`: every access that reached the patient, newest
/// first, in plain terms (JSON; `_format=text` for one sentence per line). Its own receipt
/// names the patient: the next accounting lists this read too. A network patient
/// (`{network-id}`, `network/Patient/{network-id}`, or `site=network`) is reported across
/// sites: the federated requests that named it and every access to a linked site patient,
/// each row naming its site.
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
    let mut search = parse_search(req.query_string(), &[], state.consents.key())?;
    if search.filter.patient_key.is_some() {
        return Err(bad("the patient is named in the path"));
    }
    check_page_link(state, caller, req, &search)?;
    let site = search.filter.site.take();
    let key = state.consents.key();
    let identity = match network_subjects(&state.network, path, site.as_deref()).await? {
        // A network patient: its own accesses (federated requests) and every linked site
        // patient's, each row naming its site. The read reached each of them.
        Some(network) => {
            access.set_site(NETWORK_SITE);
            access.add_patient_identity(&network.identity);
            for member in &network.members {
                access.add_patient_identity(member);
            }
            search.filter.also_patient_keys =
                network.members.iter().map(|m| key.patient(m)).collect();
            network.identity
        }
        None => {
            let site = site.ok_or_else(|| bad("`site` is required (the patient's site)"))?;
            let identity = patient_identity(path, Some(&site))?;
            access.set_site(&site);
            access.add_patient_identity(&identity);
            identity
        }
    };
    search.filter.patient_key = Some(key.patient(&identity));
    let count = search
        .count
        .unwrap_or(DEFAULT_DISCLOSURES)
        .min(MAX_DISCLOSURES);
    let page = newest_first(&state.store, search.filter, search.cursor, count).await?;
    let mut list = Vec::with_capacity(page.rows.len());
    for row in &page.rows {
        let d = decode(row).ok_or(GatewayError::Internal)?;
        list.push(Disclosure::from_receipt(&d.receipt, Some(&d.subjects)));
    }
    let next = next_link(state, caller, req, &page);
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
