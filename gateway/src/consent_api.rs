//! The consent API under `/consent`: store a FHIR Consent (any supported version) on the
//! ledger, list a patient's consents, read a consent's history, revoke, and `$check` (a dry
//! run of the decision with its explanation).
//!
//! Who may call: a caller whose scopes grant writing (or, for reads, reading) `Consent`, an
//! issuer's admin subject, or a subject listed in `ledger.consent_admins`. Routes are
//! registered in `routes.rs`; the mechanics live in the consent service.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use assent_auth::Access;
use assent_consent::{
    AccessRequest, Caller as ConsentCaller, ConsentError, Decision, RevocationReason, decide,
};
use assent_fhir::{FhirVersion, Interaction};
use bytes::BytesMut;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::caller::Caller;
use crate::consent_service::{ConsentServiceError, now};
use crate::error::GatewayError;

/// Largest Consent document accepted.
pub const MAX_CONSENT_BYTES: usize = 256 * 1024;

#[derive(Debug, Deserialize)]
pub struct SiteQuery {
    pub site: Option<String>,
    pub patient: Option<String>,
}

/// `POST /consent/Consent?site=…`
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    query: web::Query<SiteQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    authorize(&req, &state, Access::Create).await?;
    let document = read_json(&req, payload).await?;
    if document.get("resourceType").and_then(Value::as_str) != Some("Consent") {
        return Err(invalid("the body is not a Consent", Some("resourceType")));
    }
    let version = fhir_version_of(&req)?;
    let (site, patient) = patient_of_consent(&document, query.site.as_deref(), &state)?;
    let stored = state
        .consents
        .put(&site, document.clone(), version, &patient, None)
        .await
        .map_err(service_error)?;
    let mut body = document;
    body["meta"]["versionId"] = json!(stored.version.to_string());
    Ok(HttpResponse::Created()
        .insert_header((header::CONTENT_TYPE, "application/fhir+json"))
        .insert_header((
            header::LOCATION,
            format!(
                "{}/consent/Consent/{}/_history/{}",
                state.public_base, stored.consent_id, stored.version
            ),
        ))
        .insert_header((header::ETAG, format!("W/\"{}\"", stored.version)))
        .insert_header(("x-assent-ledger-tx", stored.tx_id.clone()))
        .insert_header(("x-assent-ledger-block", stored.block_number.to_string()))
        .body(body.to_string()))
}

/// `GET /consent/Consent?site=…&patient=…`
pub async fn search(
    req: HttpRequest,
    query: web::Query<SiteQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    authorize(&req, &state, Access::Search).await?;
    let site = known_site(query.site.as_deref(), &state)?;
    let patient = query
        .patient
        .as_deref()
        .map(|p| p.strip_prefix("Patient/").unwrap_or(p))
        .filter(|p| !p.is_empty())
        .ok_or_else(|| GatewayError::Malformed("`patient` is required".into()))?;
    let consents = state
        .consents
        .list(&site, patient)
        .await
        .map_err(service_error)?;
    let entries: Vec<Value> = consents
        .into_iter()
        .map(|(record, mut document)| {
            document["meta"]["versionId"] = json!(record.version.to_string());
            if record.revocation.is_some() {
                document["status"] = json!("inactive");
            }
            json!({"resource": document, "search": {"mode": "match"}})
        })
        .collect();
    Ok(fhir_json(json!({
        "resourceType": "Bundle", "type": "searchset", "total": entries.len(), "entry": entries,
    })))
}

/// `GET /consent/Consent/{id}/_history`
pub async fn history(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    authorize(&req, &state, Access::HistoryInstance).await?;
    let versions = state.consents.history(&path).await.map_err(service_error)?;
    let entries: Vec<Value> = versions
        .into_iter()
        .rev()
        .map(|(version, document)| {
            let record = &version.record;
            let mut resource = document.unwrap_or_else(|| json!({"resourceType": "Consent"}));
            resource["meta"]["versionId"] = json!(record.version.to_string());
            if record.revocation.is_some() {
                resource["status"] = json!("inactive");
            }
            json!({
                "resource": resource,
                "request": {"method": if record.version == 1 { "POST" } else { "PUT" }, "url": format!("Consent/{}", path.as_str())},
                "response": {"status": "200", "etag": format!("W/\"{}\"", record.version)},
            })
        })
        .collect();
    Ok(fhir_json(json!({
        "resourceType": "Bundle", "type": "history", "total": entries.len(), "entry": entries,
    })))
}

/// `POST /consent/Consent/{id}/$revoke` with an optional reason code (`patient-request`,
/// `superseded`, `entered-in-error`, `expired`, `legal-order`, `other`).
pub async fn revoke(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    authorize(&req, &state, Access::Update).await?;
    let body = read_optional_json(payload).await?;
    let reason = revocation_reason(body.as_ref())?;
    let stored = state
        .consents
        .revoke(&path, reason)
        .await
        .map_err(service_error)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/fhir+json"))
        .insert_header(("x-assent-ledger-tx", stored.tx_id.clone()))
        .body(
            json!({
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "information", "code": "informational",
                    "diagnostics": format!("consent {} revoked (ledger version {}); it no longer permits anything", stored.consent_id, stored.version)}],
            })
            .to_string(),
        ))
}

/// The body of `$check`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckRequest {
    pub site: String,
    pub patient: String,
    /// The caller's FHIR actor (`Practitioner/123`).
    pub actor: Option<String>,
    pub organization: Option<String>,
    /// A v3 PurposeOfUse code.
    pub purpose: Option<String>,
    pub resource_type: Option<String>,
    /// `read` (default), `search`, `vread`, `history`.
    pub interaction: Option<String>,
}

/// `POST /consent/$check`: the decision for a caller, patient, purpose and resource type,
/// with its explanation. Nothing is forwarded and nothing is released.
pub async fn check(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    authorize(&req, &state, Access::Search).await?;
    let body = read_json(&req, payload).await?;
    let check: CheckRequest = serde_json::from_value(body)
        .map_err(|e| GatewayError::Malformed(format!("the $check body: {e}")))?;
    let site = state
        .sites
        .get(&check.site)
        .ok_or(GatewayError::UnknownSite)?;
    let patient = check
        .patient
        .strip_prefix("Patient/")
        .unwrap_or(&check.patient);
    let consents = state
        .consents
        .consents_for(&site.id, patient)
        .await
        .map_err(service_error)?;
    let mut caller = ConsentCaller::new();
    for reference in [&check.actor, &check.organization].into_iter().flatten() {
        caller = caller.with_reference(reference);
    }
    let interaction = match check.interaction.as_deref().unwrap_or("read") {
        "read" => Interaction::Read,
        "vread" => Interaction::Vread,
        "search" => Interaction::Search,
        "history" => Interaction::History,
        other => {
            return Err(GatewayError::Malformed(format!(
                "unknown interaction `{other}`"
            )));
        }
    };
    let mut request =
        AccessRequest::new(&caller, interaction, check.resource_type.as_deref(), now());
    if let Some(p) = &check.purpose {
        request = request.with_purpose(p);
    }
    let decision = decide(&consents, &request, site.config.default_policy);
    Ok(HttpResponse::Ok().json(json!({
        "decision": if decision.is_permit() { "permit" } else { "deny" },
        "basis": decision.basis().to_string(),
        "conditional": matches!(&decision, Decision::Permit(p) if p.is_conditional()),
        "explanation": decision.explain(),
        "consentsInForce": consents.len(),
    })))
}

async fn authorize(
    req: &HttpRequest,
    state: &AppState,
    access: Access,
) -> Result<Caller, GatewayError> {
    let caller = state.callers.authenticate(req.headers()).await?;
    let allowed = caller.is_admin
        || state.config.ledger.consent_admins.contains(&caller.id)
        || caller.verified.authorize_access(access, "Consent").is_ok();
    if allowed {
        Ok(caller)
    } else {
        Err(GatewayError::Forbidden)
    }
}

/// The site and site-local patient id a Consent is about: `Patient/{id}` with `?site=`, or
/// a gateway URL `…/fhir/{site}/Patient/{id}`.
fn patient_of_consent(
    document: &Value,
    site: Option<&str>,
    state: &AppState,
) -> Result<(String, String), GatewayError> {
    let (element, reference) = ["patient", "subject"]
        .iter()
        .find_map(|f| {
            document
                .pointer(&format!("/{f}/reference"))
                .and_then(Value::as_str)
                .map(|r| (*f, r))
        })
        .ok_or_else(|| invalid("the Consent names no patient", Some("Consent.patient")))?;
    let expression = format!("Consent.{element}.reference");
    let prefix = format!("{}/fhir/", state.public_base);
    if let Some(rest) = reference.strip_prefix(&prefix) {
        let mut parts = rest.split('/');
        return match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(s), Some("Patient"), Some(id), None) if !id.is_empty() => {
                Ok((known_site(Some(s), state)?, id.to_owned()))
            }
            _ => Err(invalid("not a patient of a site", Some(&expression))),
        };
    }
    match reference.strip_prefix("Patient/") {
        Some(id) if !id.is_empty() && !id.contains('/') => {
            Ok((known_site(site, state)?, id.to_owned()))
        }
        _ => Err(invalid(
            "the patient must be `Patient/{id}` with `?site=`, or a gateway URL of a site's patient",
            Some(&expression),
        )),
    }
}

fn known_site(site: Option<&str>, state: &AppState) -> Result<String, GatewayError> {
    let site = site.ok_or_else(|| GatewayError::Malformed("`site` is required".into()))?;
    if state.sites.contains_key(site) {
        Ok(site.to_owned())
    } else {
        Err(GatewayError::UnknownSite)
    }
}

/// The FHIR version the client names in `Content-Type`, if any.
fn fhir_version_of(req: &HttpRequest) -> Result<Option<FhirVersion>, GatewayError> {
    let Some(content_type) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(None);
    };
    let content_type = content_type.to_str().unwrap_or_default();
    let media = content_type.split(';').next().unwrap_or_default().trim();
    if !crate::fhir_request::is_json_format(media) {
        return Err(GatewayError::UnsupportedMediaType(
            "a Consent is sent as application/fhir+json".into(),
        ));
    }
    for parameter in content_type.split(';').skip(1) {
        if let Some((name, value)) = parameter.split_once('=')
            && name.trim().eq_ignore_ascii_case("fhirVersion")
        {
            return value.trim().trim_matches('"').parse().map(Some).map_err(
                |e: assent_fhir::UnknownVersion| GatewayError::UnsupportedMediaType(e.to_string()),
            );
        }
    }
    Ok(None)
}

fn revocation_reason(body: Option<&Value>) -> Result<RevocationReason, GatewayError> {
    let code = body.and_then(|b| {
        b.get("reason").and_then(Value::as_str).or_else(|| {
            b.get("parameter")?
                .as_array()?
                .iter()
                .find(|p| p["name"] == "reason")?
                .get("valueCode")?
                .as_str()
        })
    });
    let Some(code) = code else {
        return Ok(RevocationReason::PatientRequest);
    };
    serde_json::from_value(json!(code)).map_err(|_| {
        invalid(
            "unknown reason (patient-request, superseded, entered-in-error, expired, legal-order, other)",
            Some("reason"),
        )
    })
}

async fn read_json(req: &HttpRequest, payload: web::Payload) -> Result<Value, GatewayError> {
    if let Some(length) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && length > MAX_CONSENT_BYTES
    {
        return Err(GatewayError::BodyTooLarge {
            limit: MAX_CONSENT_BYTES,
        });
    }
    read_optional_json(payload)
        .await?
        .ok_or_else(|| GatewayError::Malformed("a JSON body is required".into()))
}

async fn read_optional_json(mut payload: web::Payload) -> Result<Option<Value>, GatewayError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|_| GatewayError::Malformed("the body could not be read".into()))?;
        if body.len() + chunk.len() > MAX_CONSENT_BYTES {
            return Err(GatewayError::BodyTooLarge {
                limit: MAX_CONSENT_BYTES,
            });
        }
        body.extend_from_slice(&chunk);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| GatewayError::Malformed(format!("the body is not JSON: {e}")))
}

fn fhir_json(value: Value) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/fhir+json"),
        ))
        .body(value.to_string())
}

fn invalid(message: &str, expression: Option<&str>) -> GatewayError {
    GatewayError::InvalidResource {
        message: message.to_owned(),
        expression: expression.map(str::to_owned),
    }
}

fn service_error(e: ConsentServiceError) -> GatewayError {
    match e {
        ConsentServiceError::Unavailable(reason) => {
            tracing::warn!(reason, "consent service unavailable");
            GatewayError::ConsentUnavailable
        }
        ConsentServiceError::Invalid(e) => consent_error(&e),
        ConsentServiceError::Rejected(why) => GatewayError::InvalidResource {
            message: why,
            expression: None,
        },
        ConsentServiceError::Conflict(why) => GatewayError::VersionConflict(why),
        ConsentServiceError::NotFound => GatewayError::NotFound,
    }
}

fn consent_error(e: &ConsentError) -> GatewayError {
    GatewayError::InvalidResource {
        message: e.to_string(),
        expression: Some(e.element().to_owned()),
    }
}
