//! Federated reads of a network patient: `Patient/{network-id}/$everything` and
//! `{type}?patient={network-id}`, fanned out to every site holding the patient and merged;
//! the network's CapabilityStatement (`/fhir/metadata`); paging across sites.
//!
//! Leaves out: discovery (`discovery.rs`).

use actix_web::{HttpRequest, HttpResponse, web};

use crate::http::error::GatewayError;
use crate::http::state::AppState;
use crate::proxy::network::NetworkRequest;

/// `GET /fhir/metadata`.
pub async fn metadata(
    _req: &HttpRequest,
    _state: &web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    Err(GatewayError::NoSuchEndpoint)
}

/// `GET /fhir/Patient/{network-id}/$everything`.
pub async fn everything(
    _net: &NetworkRequest<'_>,
    _id: &str,
) -> Result<HttpResponse, GatewayError> {
    Err(GatewayError::NoSuchEndpoint)
}

/// `GET /fhir/{type}?patient={network-id}`.
pub async fn search(
    _net: &NetworkRequest<'_>,
    _resource_type: &str,
) -> Result<HttpResponse, GatewayError> {
    Err(GatewayError::NoSuchEndpoint)
}

/// `GET /fhir?_page=…`: the next page of a federated search.
pub async fn page(_net: &NetworkRequest<'_>) -> Result<HttpResponse, GatewayError> {
    Err(GatewayError::NoSuchEndpoint)
}
