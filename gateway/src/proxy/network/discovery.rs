//! Discovery at the network level: `Patient?identifier=` and `Patient/$match` across sites,
//! and the network Patient (`Patient/{network-id}`) with a `link` to each site's record.
//!
//! Leaves out: federated reads of the patient's data (`federated.rs`).

use actix_web::{HttpResponse, web};

use crate::http::error::GatewayError;
use crate::proxy::network::NetworkRequest;

/// `GET /fhir/Patient?identifier=system|value`.
pub async fn search(_net: &NetworkRequest<'_>) -> Result<HttpResponse, GatewayError> {
    Err(GatewayError::NoSuchEndpoint)
}

/// `POST /fhir/Patient/$match`.
pub async fn match_patients(
    _net: &NetworkRequest<'_>,
    _payload: web::Payload,
) -> Result<HttpResponse, GatewayError> {
    Err(GatewayError::NoSuchEndpoint)
}

/// `GET /fhir/Patient/{network-id}`.
pub async fn read(_net: &NetworkRequest<'_>, _id: &str) -> Result<HttpResponse, GatewayError> {
    Err(GatewayError::NoSuchEndpoint)
}
