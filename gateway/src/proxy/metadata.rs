//! `GET /fhir/{site}/metadata` (and `HEAD`), served without authentication: the gateway's
//! own CapabilityStatement for the site, so that SMART clients can discover the authorization
//! endpoints before they hold a token (SMART App Launch v1 discovery reads them from
//! `rest.security`).
//!
//! The statement is the site's pruned to what the gateway forwards (`capabilities.rs`: no
//! free text, only forwarded interactions and allowed operations, JSON formats only), with the
//! SMART security section, translated into the client's version. It reads no patient's data:
//! the site's statement is fetched on the decision for a request that names no patient and
//! reads no patient data (`assent_consent::decide_unnamed` for `capabilities`), refused when
//! it holds patient data, and kept for [`STATEMENT_TTL`] (a failure for 30 seconds) so that
//! anonymous callers cannot make the gateway call the hospital at their pace. No receipt: there is no caller and nothing of
//! a patient; the request is recorded (metrics, access log, request log) like any other.
//!
//! Leaves out: the pruning rules (`capabilities.rs`), version translation (`dialect.rs`).

use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use assent_consent::{AccessRequest, Caller, Decision, Timestamp, decide_unnamed};
use assent_fhir::compartment::patients_of;
use assent_fhir::{FhirVersion, Interaction};
use serde_json::{Value, json};

use crate::http::error::GatewayError;
use crate::http::state::AppState;
use crate::proxy::adapter::Adapter;
use crate::proxy::answer;
use crate::proxy::capabilities;
use crate::proxy::dialect;
use crate::proxy::exchange::{Asked, Exchange, split_fhir_path};
use crate::proxy::forward;
use crate::proxy::receipt;
use crate::proxy::rewrite;
use crate::services::upstream::{Site, UpstreamRequest, WorkerClients};

/// How long a site's statement, as the gateway serves it, is kept before it is fetched again.
pub const STATEMENT_TTL: Duration = crate::http::state::Statements::TTL;

/// Serves the CapabilityStatement of `/fhir/{site}/metadata`.
pub async fn handle(
    req: HttpRequest,
    state: web::Data<AppState>,
    clients: web::Data<WorkerClients>,
) -> HttpResponse {
    let mut ex = Exchange::new(&req, state.clock.now_millis());
    ex.asked = Some(Asked {
        interaction: Interaction::Capabilities,
        resource_type: None,
        query: String::new(),
    });
    let response = match statement(&mut ex, &req, &state, &clients).await {
        Ok(response) => response,
        Err(error) => {
            ex.failed(&error);
            error.error_response()
        }
    };
    receipt::record(&ex, &state, response.status());
    response
}

async fn statement(
    ex: &mut Exchange,
    req: &HttpRequest,
    state: &AppState,
    clients: &WorkerClients,
) -> Result<HttpResponse, GatewayError> {
    let (site_id, _) = split_fhir_path(req.path());
    let site = state
        .sites
        .get(site_id)
        .cloned()
        .ok_or(GatewayError::UnknownSite)?;
    ex.site = Some(site.clone());
    let query = req.query_string();
    // The query is read as every FHIR query is (limits, `_format`), and nothing else of it
    // is used: the statement does not depend on it.
    crate::proxy::request::check_query(query)?;
    let (version, default) = (site.config.fhir_version, state.config.fhir.default_version);
    let dialect = dialect::negotiate(req.headers(), query, version, default)?;

    let statement = match state.statements.get(&site.id) {
        Some(kept) => kept?,
        None => {
            let client = clients.get(&site.id).ok_or(GatewayError::Internal)?;
            let fetched = fetch(state, &site, client, &ex.id).await;
            state.statements.put(&site.id, fetched.clone());
            fetched?
        }
    };
    let mut translated = dialect.translate_capabilities(statement)?;
    if dialect.client == FhirVersion::Stu3 {
        // Required in STU3 (1..1): whether the server reads resources with unknown elements
        // or extensions. The gateway reads no resource from a FHIR client.
        translated.resource["acceptUnknown"] = json!("no");
    }
    let mut out = HttpResponse::Ok();
    dialect.response_headers(&mut out, translated.issues);
    out.insert_header((
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    ));
    // For HEAD, the HTTP layer sends the head of this answer without its body.
    // The gateway's own statement: the pruning keeps no number of the site's
    // (`capabilities::only_what_is_forwarded`), so there is no spelling to restore.
    let body = answer::body_of(
        &translated.resource,
        answer::pretty(query),
        &Default::default(),
    )?;
    Ok(out.body(body))
}

/// The site's statement, fetched on the decision for a request that reads no patient data,
/// checked, pruned to what the gateway forwards and given the SMART security section (in the
/// site's version).
async fn fetch(
    state: &AppState,
    site: &Site,
    client: &awc::Client,
    request_id: &str,
) -> Result<Value, GatewayError> {
    let nobody = Caller::new();
    let now = Timestamp::from_unix_seconds(state.clock.now_millis() / 1000);
    let access = AccessRequest::new(&nobody, Interaction::Capabilities, None, now);
    let Decision::Permit(permit) = decide_unnamed(&access) else {
        return Err(GatewayError::Internal);
    };
    let request = UpstreamRequest::get("metadata".to_owned(), request_id);
    let mut response = forward::forward(state, &permit, site, client, &request).await?;
    forward::check_status(response.status())?;
    let mut statement = forward::read_json(&mut response, site, &mut Default::default()).await?;
    if statement.get("resourceType").and_then(Value::as_str) != Some("CapabilityStatement")
        || patients_of(&statement, site.config.fhir_version, &site.references).is_patient_data()
    {
        return Err(GatewayError::UpstreamBadResponse);
    }
    Adapter::of(state, &site.id).response(&mut statement);
    capabilities::only_what_is_forwarded(
        &mut statement,
        &site.config,
        &site.id,
        &site.urls.public_base,
    );
    rewrite::scrub_strings(&mut statement, &site.urls);
    if let Some(object) = statement.as_object_mut() {
        object
            .entry("date")
            .or_insert_with(|| json!(assent_receipts::format_instant(state.clock.now_millis())));
    }
    if let Some(endpoints) = state.callers.endpoints() {
        let mut security = endpoints.capability_security();
        // Its service coding names the code system as R4 does: an STU3 site's statement
        // names it as STU3 does (the translation to another version renames it again).
        for coding in security
            .pointer_mut("/service/0/coding")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(system) = coding.get("system").and_then(Value::as_str).and_then(|s| {
                assent_adapters::code_system_uri(s, FhirVersion::R4, site.config.fhir_version)
            }) {
                coding["system"] = json!(system);
            }
        }
        for rest in statement
            .get_mut("rest")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            rest["security"] = security.clone();
        }
    }
    Ok(statement)
}

/// The SMART configuration document (`/.well-known/smart-configuration`, and the same below
/// each site's FHIR base): the trusted issuer's endpoints, without authentication.
pub fn smart_configuration(state: &AppState) -> Result<HttpResponse, GatewayError> {
    let endpoints = state.callers.endpoints().ok_or(GatewayError::NotFound)?;
    Ok(HttpResponse::Ok()
        .insert_header((
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=300"),
        ))
        .json(endpoints.smart_configuration()))
}
