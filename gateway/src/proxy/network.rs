//! The network level: `/fhir/…` without a site (DESIGN.md "One network"). A path under
//! `/fhir` whose first segment is not a configured site is a network request: discovery of
//! a patient across sites (`Patient?identifier=`, `Patient/$match`), the network Patient
//! (`Patient/{network-id}`), and federated reads of a network patient
//! (`Patient/{network-id}/$everything`, `{type}?patient={network-id}`), each site's share run
//! as a leg through the pipeline (`federation.rs`).
//!
//! **Invariant:** a network request carries a `Caller` verified from a token before anything
//! else runs, and no site is asked except by a leg (a full pipeline request: that site's
//! consent, the caller's scopes, the site adapter, receipts).
//!
//! Leaves out: what each route does (`network/discovery.rs`: identity; `network/federated.rs`:
//! federated reads).

pub mod discovery;
pub mod federated;

use std::sync::Arc;

use actix_web::http::Method;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

use crate::http::caller::Caller;
use crate::http::error::GatewayError;
use crate::http::state::AppState;
use crate::proxy::exchange::split_fhir_path;
use crate::proxy::pipeline;
use crate::services::upstream::WorkerClients;

/// Every request under `/fhir` that no narrower route took: a site's (the pipeline) or the
/// network's.
pub async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    clients: web::Data<WorkerClients>,
) -> HttpResponse {
    let (first, _) = split_fhir_path(req.path());
    if state.sites.contains_key(first) || !is_network_path(first) {
        return pipeline::handle(req, payload, state, clients).await;
    }
    match network(&req, payload, &state, &clients).await {
        Ok(response) => response,
        Err(error) => error.error_response(),
    }
}

/// Whether the first segment below `/fhir` names the network level: a resource type, the
/// network's `metadata`, or the base itself (`/fhir`, `/fhir?_page=…`).
fn is_network_path(first: &str) -> bool {
    first.is_empty()
        || first == "metadata"
        || first.starts_with('$')
        || first.as_bytes()[0].is_ascii_uppercase()
}

/// A network request as the routes see it: the verified caller and the path's segments
/// below `/fhir`.
pub struct NetworkRequest<'a> {
    pub req: &'a HttpRequest,
    pub state: &'a web::Data<AppState>,
    pub clients: &'a web::Data<WorkerClients>,
    pub caller: Arc<Caller>,
}

async fn network(
    req: &HttpRequest,
    payload: web::Payload,
    state: &web::Data<AppState>,
    clients: &web::Data<WorkerClients>,
) -> Result<HttpResponse, GatewayError> {
    let path = req.path().strip_prefix("/fhir").unwrap_or_default();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments == ["metadata"] && req.method() == Method::GET {
        return federated::metadata(req, state).await;
    }
    let caller = Arc::new(state.callers.authenticate(req.headers()).await?);
    // A launch context bound to no patient is refused here too; each leg binds it at its site.
    caller.patient_context.bound()?;
    let net = NetworkRequest {
        req,
        state,
        clients,
        caller,
    };
    match (req.method().as_str(), segments.as_slice()) {
        ("GET", ["Patient"]) => discovery::search(&net).await,
        ("POST", ["Patient", "$match"]) => discovery::match_patients(&net, payload).await,
        ("GET", ["Patient", id]) => discovery::read(&net, id).await,
        ("GET", ["Patient", id, "$everything"]) => federated::everything(&net, id).await,
        ("GET", [resource_type]) => federated::search(&net, resource_type).await,
        ("GET", []) => federated::page(&net).await,
        _ => Err(GatewayError::NoSuchEndpoint),
    }
}
