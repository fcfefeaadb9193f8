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
//! **Invariant:** every authenticated network request has exactly one receipt of its own,
//! durable before its answer is released (else 503 `receipt-unavailable`, no data), besides
//! the receipts of its legs: it names the network patient the request named (identity
//! `network/Patient/{network-id}`, keyed like a site patient's), site `network`, what was
//! released (content hashes), and the decision (permit when a leg released, deny when every
//! leg was refused, error otherwise). The legs' receipts are linked to it by request id
//! (`{id}.{site}` in the request log); a receipt has no field for request ids. The network's
//! `metadata` is answered without authentication and has none (no caller, no patient).
//!
//! Leaves out: what each route does (`network/discovery.rs`: identity; `network/federated.rs`:
//! federated reads).

pub mod discovery;
pub mod federated;

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::{Method, StatusCode};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use assent_fhir::{Interaction, SitePatient};
use assent_receipts::{AccessDecision, Receipt, ReceiptSubjects, ResourceEntry};

use crate::http::caller::Caller;
use crate::http::error::GatewayError;
use crate::http::observability::RequestId;
use crate::http::state::AppState;
use crate::proxy::exchange::split_fhir_path;
use crate::proxy::metadata;
use crate::proxy::pipeline;
use crate::proxy::receipt::RECEIPTS_ON;
use crate::services::network::NETWORK_SITE;
use crate::services::receipts::{PendingReceipt, stamp_receipt_header};
use crate::services::request_log::RequestRecord;
use crate::services::upstream::WorkerClients;

/// Every request under `/fhir` that no narrower route took: a site's (the pipeline) or the
/// network's.
pub async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    clients: web::Data<WorkerClients>,
) -> HttpResponse {
    let (first, rest) = split_fhir_path(req.path());
    // A site's discovery documents, without authentication, GET and HEAD only (other methods
    // reach the pipeline and are refused there).
    if matches!(*req.method(), Method::GET | Method::HEAD) && !first.is_empty() {
        match rest {
            "metadata" => return metadata::handle(req, state, clients).await,
            ".well-known/smart-configuration" => {
                let answer = if state.sites.contains_key(first) {
                    metadata::smart_configuration(&state)
                } else {
                    Err(GatewayError::UnknownSite)
                };
                return answer.unwrap_or_else(|e| e.error_response());
            }
            _ => {}
        }
    }
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
    /// What the request's own receipt will say: each route fills it in as it learns.
    pub access: RefCell<NetworkAccess>,
}

/// What a network request's receipt and record say, filled in by its route.
#[derive(Debug, Default)]
pub struct NetworkAccess {
    /// The patients it named, by identity (`network/Patient/{network-id}`, `{site}/Patient/{id}`).
    pub patients: Vec<String>,
    pub interaction: Option<Interaction>,
    pub resource_type: Option<String>,
    /// Set by a route that knows better than the status (a federated read: permit when a
    /// leg released, deny when every leg was refused).
    pub decision: Option<AccessDecision>,
    /// What was released, in response order.
    pub released: Vec<ResourceEntry>,
    /// The request ids of its legs (for the record).
    pub legs: Vec<String>,
}

impl NetworkRequest<'_> {
    /// Notes a patient the request named, by identity.
    pub fn named(&self, identity: String) {
        let mut access = self.access.borrow_mut();
        if !access.patients.contains(&identity) {
            access.patients.push(identity);
        }
    }

    /// Notes network patient `network_id` as named.
    pub fn named_network_patient(&self, network_id: &str) {
        self.named(SitePatient::new(NETWORK_SITE, network_id).to_string());
    }
}

async fn network(
    req: &HttpRequest,
    payload: web::Payload,
    state: &web::Data<AppState>,
    clients: &web::Data<WorkerClients>,
) -> Result<HttpResponse, GatewayError> {
    let started = Instant::now();
    let time_ms = state.clock.now_millis();
    let path = req.path().strip_prefix("/fhir").unwrap_or_default();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments == ["metadata"] && matches!(*req.method(), Method::GET | Method::HEAD) {
        let answer = federated::metadata(req, state).await;
        record(
            req,
            state,
            None,
            &NetworkAccess::default(),
            outcome(&answer),
            started,
        );
        return answer;
    }
    let caller = match state.callers.authenticate(req.headers()).await {
        Ok(caller) => Arc::new(caller),
        Err(e) => {
            let answer = Err(e);
            record(
                req,
                state,
                None,
                &NetworkAccess::default(),
                outcome(&answer),
                started,
            );
            return answer;
        }
    };
    let net = NetworkRequest {
        req,
        state,
        clients,
        caller: caller.clone(),
        access: RefCell::new(NetworkAccess::default()),
    };
    // A launch context bound to no patient is refused here too (with the receipt of the
    // refusal); each leg binds it at its site.
    let answer = match caller.patient_context.bound() {
        Ok(_) => route(&net, payload, &segments).await,
        Err(e) => Err(e),
    };
    let access = net.access.into_inner();
    // The record names the route's error, whose answer the receipt phase has made.
    let error = answer.as_ref().err().cloned();
    let answer = if RECEIPTS_ON {
        receipt(req, state, &caller, &access, answer, time_ms).await
    } else {
        answer
    };
    let (status, code) = match (&answer, error) {
        (Ok(response), Some(error)) if response.status() == error.status_code() => {
            (response.status(), Some(error.code()))
        }
        (Ok(response), _) => (response.status(), None),
        (Err(error), _) => (error.status_code(), Some(error.code())),
    };
    record(req, state, Some(&caller), &access, (status, code), started);
    answer
}

async fn route(
    net: &NetworkRequest<'_>,
    payload: web::Payload,
    segments: &[&str],
) -> Result<HttpResponse, GatewayError> {
    if let ["Patient", ..] = segments {
        let mut access = net.access.borrow_mut();
        access.resource_type = Some("Patient".to_owned());
        access.interaction = Some(match segments {
            ["Patient", id] if !id.starts_with('$') => Interaction::Read,
            ["Patient", "$match"] | ["Patient", _, "$everything"] => Interaction::Operation,
            _ => Interaction::Search,
        });
    }
    match (net.req.method().as_str(), segments) {
        ("GET", ["Patient"]) => discovery::search(net).await,
        ("POST", ["Patient", "$match"]) => discovery::match_patients(net, payload).await,
        ("GET", ["Patient", id]) => discovery::read(net, id).await,
        ("GET", ["Patient", id, "$everything"]) => federated::everything(net, id).await,
        ("GET", [resource_type]) => federated::search(net, resource_type).await,
        ("GET", []) => federated::page(net).await,
        _ => Err(GatewayError::NoSuchEndpoint),
    }
}

/// The network request's own receipt: the answer is released only once it is durable, with
/// its id in `X-Assent-Receipt`; else 503 `receipt-unavailable` and nothing of the answer.
async fn receipt(
    req: &HttpRequest,
    state: &AppState,
    caller: &Caller,
    access: &NetworkAccess,
    answer: Result<HttpResponse, GatewayError>,
    time_ms: i64,
) -> Result<HttpResponse, GatewayError> {
    let status = match &answer {
        Ok(response) => response.status(),
        Err(error) => error.status_code(),
    };
    let query = req.query_string();
    let mut subjects = ReceiptSubjects {
        actor: caller.receipt_actor(),
        patients: Vec::new(),
        query: (!query.is_empty()).then(|| query.to_owned()),
        client_id: caller.verified.client_id.as_deref().map(str::to_owned),
        client_address: req.peer_addr().map(|a| a.ip().to_string()),
    };
    for identity in &access.patients {
        subjects.add_patient(identity.clone());
    }
    let decision = access.decision.unwrap_or(if status.as_u16() < 400 {
        AccessDecision::Permit
    } else if status.as_u16() == 403 {
        AccessDecision::Deny
    } else {
        AccessDecision::Error
    });
    let mut receipt = Receipt::new(
        crate::services::receipts::new_receipt_id(),
        time_ms,
        state.receipts.gateway_id(),
        subjects.keys(state.consents.key()),
        decision,
        status.as_u16(),
    );
    receipt.organization = caller.verified.organization.as_deref().map(str::to_owned);
    receipt.site = Some(NETWORK_SITE.to_owned());
    receipt.interaction = access.interaction;
    receipt.resource_type = access.resource_type.clone();
    if status.is_success() {
        receipt.resources = access.released.clone();
    }
    receipt.purpose = caller.verified.purpose.map(|p| p.code().to_owned());
    let receipt_id = receipt.id.clone();
    match state
        .receipts
        .write(PendingReceipt { receipt, subjects })
        .await
    {
        Ok(_) => {
            let mut response = answer.unwrap_or_else(|error| error.error_response());
            stamp_receipt_header(&mut response, &receipt_id);
            Ok(response)
        }
        Err(e) => {
            let id = request_id(req);
            tracing::error!(request_id = %id, error = %e, "no durable receipt: the network answer is withheld");
            Err(GatewayError::ReceiptUnavailable)
        }
    }
}

/// The record of a network request: metrics and the request log row (site `network`), as the
/// pipeline records a site's; its legs have rows of their own (`{id}.{site}`).
fn record(
    req: &HttpRequest,
    state: &AppState,
    caller: Option<&Caller>,
    access: &NetworkAccess,
    (status, error_code): (StatusCode, Option<&'static str>),
    started: Instant,
) {
    let interaction = access.interaction.map(|i| i.as_str());
    state
        .metrics
        .requests
        .with_label_values(&[NETWORK_SITE, interaction.unwrap_or("none"), status.as_str()])
        .inc();
    let duration_us = started.elapsed().as_micros() as i64;
    let id = request_id(req);
    if state.config.log.access_log {
        tracing::info!(
            request_id = %id,
            site = NETWORK_SITE,
            interaction = interaction.unwrap_or("-"),
            resource_type = access.resource_type.as_deref().unwrap_or("-"),
            status = status.as_u16(),
            error_code = error_code.unwrap_or("-"),
            legs = access.legs.len(),
            duration_us,
            "fhir network request"
        );
    }
    state.recorder.record(RequestRecord {
        request_id: id,
        at_ms: state.clock.now_millis(),
        site: Some(NETWORK_SITE.to_owned()),
        caller: caller.map(|c| c.id.clone()),
        interaction: interaction.map(str::to_owned),
        resource_type: access.resource_type.clone(),
        status: i32::from(status.as_u16()),
        error_code: error_code.map(str::to_owned),
        decision: access.decision.map(|d| d.as_str().to_owned()),
        duration_us,
    });
}

/// The status and error code of an answer.
fn outcome(answer: &Result<HttpResponse, GatewayError>) -> (StatusCode, Option<&'static str>) {
    match answer {
        Ok(response) => (response.status(), None),
        Err(error) => (error.status_code(), Some(error.code())),
    }
}

fn request_id(req: &HttpRequest) -> String {
    req.extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default()
}
