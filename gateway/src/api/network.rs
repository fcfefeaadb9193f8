//! The network patient index's admin API (`/admin/network/…`, the admin role): the match
//! candidates `Patient/$match` kept (list, `$confirm`, `$reject`), a wrong link removed
//! (`$unlink`), and a network patient's links with how and when each was made.
//!
//! Every call after authentication leaves a receipt (kind `network-*`, durable before the
//! answer, `api/receipt.rs`) naming the site patient and the network patient concerned
//! (keyed on the ledger); a confirmation, rejection or unlink also drops the decision cache
//! of the site patient (a network consent may apply to it, or no longer). A rejected or
//! unlinked pair is never linked again by learning (`services/network.rs`).
//!
//! Routes are registered in `routes.rs`.

use actix_web::{HttpRequest, HttpResponse, web};
use assent_receipts::{AccessKind, NetworkAction};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::receipt::ApiAccess;
use crate::http::access::check_admin;
use crate::http::caller::Caller;
use crate::http::error::GatewayError;
use crate::http::state::AppState;
use crate::services::network::{AdminChange, NETWORK_SITE, NetworkIndex};
use crate::store::network::CandidateRow;

/// The largest `$unlink` body read.
const BODY_LIMIT: usize = 8 * 1024;

/// `GET /admin/network/candidates?status=open|confirmed|rejected|all` (default `open`).
pub async fn candidates(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = state.callers.authenticate(req.headers()).await?;
    let mut access = ApiAccess::new(AccessKind::Network(NetworkAction::Read), &caller, &req);
    let outcome = list_candidates(&req, &state, &caller, &mut access);
    access.finish(&state, outcome).await
}

fn list_candidates(
    req: &HttpRequest,
    state: &AppState,
    caller: &Caller,
    access: &mut ApiAccess,
) -> Result<HttpResponse, GatewayError> {
    check_admin(caller)?;
    let pairs = assent_fhir::query::pairs(req.query_string());
    let status = pairs
        .iter()
        .find(|(n, _)| n == "status")
        .map(|(_, v)| v.as_str())
        .unwrap_or("open");
    let status = match status {
        "all" => None,
        "open" | "confirmed" | "rejected" => Some(status),
        _ => {
            return Err(GatewayError::Malformed(
                "status must be open, confirmed, rejected or all".into(),
            ));
        }
    };
    let rows = state.network.candidates(status).map_err(store_error)?;
    for row in &rows {
        access.add_patient(&row.site, &row.patient_id);
    }
    let list: Vec<Value> = rows.iter().map(candidate_json).collect();
    Ok(HttpResponse::Ok().json(json!({"candidates": list})))
}

/// `POST /admin/network/candidates/{id}/$confirm`: the candidate's site patient is linked to
/// its network patient (`confirmed`, by the caller).
pub async fn confirm(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    decide(req, path.into_inner(), state, NetworkAction::Confirm).await
}

/// `POST /admin/network/candidates/{id}/$reject`: the pair is refused (never linked
/// automatically).
pub async fn reject(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    decide(req, path.into_inner(), state, NetworkAction::Reject).await
}

async fn decide(
    req: HttpRequest,
    id: String,
    state: web::Data<AppState>,
    action: NetworkAction,
) -> Result<HttpResponse, GatewayError> {
    let caller = state.callers.authenticate(req.headers()).await?;
    let mut access = ApiAccess::new(AccessKind::Network(action), &caller, &req);
    let outcome = (|| {
        check_admin(&caller)?;
        let now = state.clock.now_millis();
        let change = match action {
            NetworkAction::Confirm => state.network.confirm_candidate(&id, &caller.id, now),
            _ => state.network.reject_candidate(&id, &caller.id, now),
        }
        .map_err(store_error)?;
        let status = match action {
            NetworkAction::Confirm => "confirmed",
            _ => "rejected",
        };
        changed(&state, &mut access, change, |site, patient, network_id| {
            json!({
                "candidate": id,
                "status": status,
                "site": site,
                "patient": patient,
                "network_id": network_id,
            })
        })
    })();
    access.finish(&state, outcome).await
}

/// The body of `$unlink`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnlinkBody {
    site: String,
    patient: String,
}

/// `POST /admin/network/$unlink` with `{"site": …, "patient": …}`: the site patient's link
/// is removed and the pair refused from then on.
pub async fn unlink(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = state.callers.authenticate(req.headers()).await?;
    let mut access = ApiAccess::new(AccessKind::Network(NetworkAction::Unlink), &caller, &req);
    let outcome = match check_admin(&caller) {
        Err(e) => Err(e),
        Ok(()) => match read_body(payload).await {
            Err(e) => Err(e),
            Ok(body) => {
                access.set_site(&body.site);
                let now = state.clock.now_millis();
                state
                    .network
                    .unlink_by(&body.site, &body.patient, &caller.id, now)
                    .map_err(store_error)
                    .and_then(|change| {
                        changed(&state, &mut access, change, |site, patient, network_id| {
                            json!({
                                "unlinked": true,
                                "site": site,
                                "patient": patient,
                                "network_id": network_id,
                            })
                        })
                    })
            }
        },
    };
    access.finish(&state, outcome).await
}

/// `GET /admin/network/patients/{id}`: the network patient's links, with how and when.
pub async fn patient(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = state.callers.authenticate(req.headers()).await?;
    let mut access = ApiAccess::new(AccessKind::Network(NetworkAction::Read), &caller, &req);
    let id = path.into_inner();
    let outcome = (|| {
        check_admin(&caller)?;
        if !state.network.exists(&id).map_err(store_error)? {
            return Err(GatewayError::NotFound);
        }
        let members = state.network.members(&id).map_err(store_error)?;
        for m in &members {
            access.add_patient(&m.patient.site, &m.patient.id);
        }
        access.add_patient_identity(&format!("{NETWORK_SITE}/Patient/{id}"));
        let links: Vec<Value> = members
            .iter()
            .map(|m| {
                json!({
                    "site": m.patient.site,
                    "patient": m.patient.id,
                    "how": m.how.as_str(),
                    "evidence": m.evidence,
                    "learned_at_ms": m.learned_at_ms,
                })
            })
            .collect();
        Ok(HttpResponse::Ok().json(json!({"id": id, "links": links})))
    })();
    access.finish(&state, outcome).await
}

/// The answer of a change: the receipt names the site patient and the network patient, and
/// the site patient's decision cache is dropped.
fn changed(
    state: &AppState,
    access: &mut ApiAccess,
    change: AdminChange,
    answer: impl FnOnce(&str, &str, &str) -> Value,
) -> Result<HttpResponse, GatewayError> {
    match change {
        AdminChange::Unknown => Err(GatewayError::NotFound),
        AdminChange::Conflict => Err(GatewayError::NetworkLinkConflict(
            "the candidate was decided already, or its patient is linked already (unlink it first)",
        )),
        AdminChange::Done {
            patient,
            network_id,
        } => {
            access.set_site(&patient.site);
            access.add_patient(&patient.site, &patient.id);
            access.add_patient_identity(&format!("{NETWORK_SITE}/Patient/{network_id}"));
            // Decisions at every replica see the change (a network consent applies or
            // stops applying to the patient).
            state.consents.links_changed();
            Ok(HttpResponse::Ok().json(answer(&patient.site, &patient.id, &network_id)))
        }
    }
}

fn candidate_json(row: &CandidateRow) -> Value {
    json!({
        "id": row.id,
        "site": row.site,
        "patient": row.patient_id,
        "network_id": row.network_id,
        "grade": row.grade,
        "score": row.score as f64 / 1000.0,
        "status": row.status,
        "created_at_ms": row.created_at_ms,
        "decided_by": row.decided_by,
        "decided_at_ms": row.decided_at_ms,
    })
}

async fn read_body(mut payload: web::Payload) -> Result<UnlinkBody, GatewayError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|_| GatewayError::Malformed("the body could not be read".into()))?;
        if body.len() + chunk.len() > BODY_LIMIT {
            return Err(GatewayError::BodyTooLarge { limit: BODY_LIMIT });
        }
        body.extend_from_slice(&chunk);
    }
    let parsed: UnlinkBody = serde_json::from_slice(&body).map_err(|e| {
        GatewayError::Malformed(format!("the body must be {{\"site\", \"patient\"}}: {e}"))
    })?;
    if !NetworkIndex::is_network_id(&parsed.patient) && !parsed.patient.is_empty() {
        Ok(parsed)
    } else {
        Err(GatewayError::Malformed(
            "patient must be a site patient's id".into(),
        ))
    }
}

fn store_error(e: crate::store::StoreError) -> GatewayError {
    tracing::error!(error = %e, "the network index could not be read or changed");
    GatewayError::StoreUnavailable
}
