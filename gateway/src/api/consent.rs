//! The consent API under `/consent`: store a FHIR Consent (any supported version) on the
//! ledger, list a patient's consents, read a consent's history, revoke, and `$check` (a dry
//! run of the decision with its explanation).
//!
//! Who may call is decided by one rule, `consent_access::authorize`, asked by every endpoint
//! with what the call would do: a patient launch context confines the caller to its patient;
//! without one, the consent-administrator role is needed ([`is_consent_admin`]); nobody grants
//! themselves access. A consent named by id is looked up first (only by callers who could
//! manage some patient's consents) and the rule asked again with its patient and its current
//! version. Every call after authentication leaves a receipt (`api_receipt.rs`). Routes are
//! registered in `routes.rs`; the mechanics live in the consent service.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use assent_auth::{Access, AuthError};
use assent_consent::{
    AccessRequest, Caller as ConsentCaller, Consent, ConsentError, Decision, RevocationReason,
    decide, parse_consent, parse_consent_any,
};
use assent_fhir::{FhirVersion, Interaction};
use assent_receipts::{AccessKind, ConsentAction};
use bytes::BytesMut;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::receipt::ApiAccess;
use crate::config::issuer_id;
use crate::http::caller::Caller;
use crate::http::consent_access::{self, ConsentRefusal, ManageRequest, Manager, Target};
use crate::http::error::GatewayError;
use crate::http::state::AppState;
use crate::services::consent::{ConsentServiceError, now};

/// Largest Consent document accepted.
pub const MAX_CONSENT_BYTES: usize = 256 * 1024;

#[derive(Debug, Deserialize)]
pub struct SiteQuery {
    pub site: Option<String>,
    pub patient: Option<String>,
}

/// Whether `caller` holds the consent-administrator role: its subject is one of its issuer's
/// `admin_subjects`, its caller id (`subject@issuer`) is in `ledger.consent_admins`, or its
/// token carries its issuer's `consent_admin_scope` (never a SMART scope, never a wildcard).
pub fn is_consent_admin(caller: &Caller, state: &AppState) -> bool {
    if caller.is_admin || state.config.ledger.consent_admins.contains(&caller.id) {
        return true;
    }
    state
        .config
        .auth
        .issuers
        .iter()
        .find(|i| issuer_id(&i.issuer) == caller.verified.issuer.as_ref())
        .is_some_and(|issuer| {
            !issuer.consent_admin_scope.is_empty()
                && caller
                    .verified
                    .scopes
                    .other_scopes()
                    .contains(&issuer.consent_admin_scope)
        })
}

/// The facts the rule needs about `caller`, for `action`.
fn manager(caller: &Caller, state: &AppState, action: ConsentAction) -> Manager {
    let access = match action {
        ConsentAction::Create => Access::Create,
        ConsentAction::Update | ConsentAction::Revoke => Access::Update,
        ConsentAction::Search | ConsentAction::Check => Access::Search,
        ConsentAction::History => Access::HistoryInstance,
    };
    let scopes_grant = caller
        .verified
        .authorize_access(access, "Consent")
        .is_ok_and(|grant| grant.rules().iter().any(|r| r.conditions.is_empty()));
    let parties = caller.verified.actor.as_deref().map(|actor| {
        let mut parties = ConsentCaller::new().with_reference(actor);
        if let Some(org) = &caller.verified.organization {
            parties = parties.with_reference(org);
        }
        parties
    });
    Manager {
        patient_context: caller
            .verified
            .patient
            .as_deref()
            .map(|p| p.strip_prefix("Patient/").unwrap_or(p).to_owned()),
        consent_admin: is_consent_admin(caller, state),
        scopes_grant,
        parties,
    }
}

/// Asks the rule; a refusal becomes the answer.
fn authorize(
    caller: &Caller,
    state: &AppState,
    action: ConsentAction,
    target: Target<'_>,
    written: Option<&Consent>,
    current: Option<&Consent>,
) -> Result<(), GatewayError> {
    let request = ManageRequest {
        action,
        target,
        written,
        current,
    };
    consent_access::authorize(&manager(caller, state, action), &request).map_err(|refusal| {
        tracing::info!(route = "consent", refusal = ?refusal, "consent API call refused");
        match refusal {
            ConsentRefusal::ScopeMissing => GatewayError::Auth(AuthError::InsufficientScope {
                needed: match action {
                    ConsentAction::Create => "patient/Consent.c",
                    ConsentAction::Update | ConsentAction::Revoke => "patient/Consent.u",
                    ConsentAction::Search | ConsentAction::Check => "patient/Consent.s",
                    ConsentAction::History => "patient/Consent.r",
                }
                .to_owned(),
            }),
            other => GatewayError::ConsentRefused(other),
        }
    })
}

/// `POST /consent/Consent?site=…`: a new consent, or a new version of a stored one.
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    query: web::Query<SiteQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = state.callers.authenticate(req.headers()).await?;
    let mut access = ApiAccess::new(AccessKind::Consent(ConsentAction::Create), &caller, &req);
    let outcome = store_consent(&req, payload, &query, &state, &caller, &mut access).await;
    access.finish(&state, outcome).await
}

async fn store_consent(
    req: &HttpRequest,
    payload: web::Payload,
    query: &SiteQuery,
    state: &AppState,
    caller: &Caller,
    access: &mut ApiAccess,
) -> Result<HttpResponse, GatewayError> {
    authorize(
        caller,
        state,
        ConsentAction::Create,
        Target::Pending,
        None,
        None,
    )?;
    let document = read_json(req, payload).await?;
    if document.get("resourceType").and_then(Value::as_str) != Some("Consent") {
        return Err(invalid("the body is not a Consent", Some("resourceType")));
    }
    let version = fhir_version_of(req)?;
    let (site, patient) = patient_of_consent(&document, query.site.as_deref(), state)?;
    access.set_site(&site);
    access.add_patient(&site, &patient);
    let (written, _issues) = match version {
        Some(v) => parse_consent(&document, v),
        None => parse_consent_any(&document),
    }
    .map_err(|e| consent_error(&e))?;
    // A stored id makes this an update: the rule then also sees the version in force.
    let stored = stored_consent(state, &written.id).await?;
    let action = if stored.is_some() {
        ConsentAction::Update
    } else {
        ConsentAction::Create
    };
    access.set_kind(AccessKind::Consent(action));
    let current = stored.as_ref().and_then(|s| s.model.as_ref());
    if let Some(stored) = &stored {
        stored.note(access);
        // A new version of someone's consent is managing that someone's consents too (the
        // ledger refuses moving a consent to another patient anyway).
        authorize(
            caller,
            state,
            action,
            stored.target(),
            Some(&written),
            current,
        )?;
    }
    authorize(
        caller,
        state,
        action,
        Target::Patient(&patient),
        Some(&written),
        current,
    )?;
    let stored = state
        .consents
        .put(&site, document.clone(), version, &patient, None)
        .await
        .map_err(service_error)?;
    let mut body = document;
    body["meta"]["versionId"] = json!(stored.version.to_string());
    access.add_resource(&body);
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
    let caller = state.callers.authenticate(req.headers()).await?;
    let mut access = ApiAccess::new(AccessKind::Consent(ConsentAction::Search), &caller, &req);
    let outcome = list_consents(&query, &state, &caller, &mut access).await;
    access.finish(&state, outcome).await
}

async fn list_consents(
    query: &SiteQuery,
    state: &AppState,
    caller: &Caller,
    access: &mut ApiAccess,
) -> Result<HttpResponse, GatewayError> {
    authorize(
        caller,
        state,
        ConsentAction::Search,
        Target::Pending,
        None,
        None,
    )?;
    let site = known_site(query.site.as_deref(), state)?;
    let patient = query
        .patient
        .as_deref()
        .map(|p| p.strip_prefix("Patient/").unwrap_or(p))
        .filter(|p| !p.is_empty())
        .ok_or_else(|| GatewayError::Malformed("`patient` is required".into()))?;
    access.set_site(&site);
    access.add_patient(&site, patient);
    authorize(
        caller,
        state,
        ConsentAction::Search,
        Target::Patient(patient),
        None,
        None,
    )?;
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
            access.add_resource(&document);
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
    let caller = state.callers.authenticate(req.headers()).await?;
    let mut access = ApiAccess::new(AccessKind::Consent(ConsentAction::History), &caller, &req);
    let outcome = consent_history(&path, &state, &caller, &mut access).await;
    access.finish(&state, outcome).await
}

async fn consent_history(
    id: &str,
    state: &AppState,
    caller: &Caller,
    access: &mut ApiAccess,
) -> Result<HttpResponse, GatewayError> {
    authorize(
        caller,
        state,
        ConsentAction::History,
        Target::Pending,
        None,
        None,
    )?;
    let stored = stored_consent(state, id)
        .await?
        .ok_or(GatewayError::NotFound)?;
    stored.note(access);
    authorize(
        caller,
        state,
        ConsentAction::History,
        stored.target(),
        None,
        stored.model.as_ref(),
    )?;
    let entries: Vec<Value> = stored
        .versions
        .into_iter()
        .rev()
        .map(|(version, document)| {
            let record = &version.record;
            let mut resource = document.unwrap_or_else(|| json!({"resourceType": "Consent"}));
            resource["meta"]["versionId"] = json!(record.version.to_string());
            if record.revocation.is_some() {
                resource["status"] = json!("inactive");
            }
            access.add_resource(&resource);
            json!({
                "resource": resource,
                "request": {"method": if record.version == 1 { "POST" } else { "PUT" }, "url": format!("Consent/{id}")},
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
    let caller = state.callers.authenticate(req.headers()).await?;
    let mut access = ApiAccess::new(AccessKind::Consent(ConsentAction::Revoke), &caller, &req);
    let outcome = revoke_consent(&path, payload, &state, &caller, &mut access).await;
    access.finish(&state, outcome).await
}

async fn revoke_consent(
    id: &str,
    payload: web::Payload,
    state: &AppState,
    caller: &Caller,
    access: &mut ApiAccess,
) -> Result<HttpResponse, GatewayError> {
    authorize(
        caller,
        state,
        ConsentAction::Revoke,
        Target::Pending,
        None,
        None,
    )?;
    let body = read_optional_json(payload).await?;
    let reason = revocation_reason(body.as_ref())?;
    let stored = stored_consent(state, id)
        .await?
        .ok_or(GatewayError::NotFound)?;
    stored.note(access);
    authorize(
        caller,
        state,
        ConsentAction::Revoke,
        stored.target(),
        None,
        stored.model.as_ref(),
    )?;
    let revoked = state
        .consents
        .revoke(id, reason)
        .await
        .map_err(service_error)?;
    // The receipt names the version the revocation made, as the history shows it.
    if let Some((_, Some(document))) = stored.versions.last() {
        let mut resource = document.clone();
        resource["meta"]["versionId"] = json!(revoked.version.to_string());
        resource["status"] = json!("inactive");
        access.add_resource(&resource);
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/fhir+json"))
        .insert_header(("x-assent-ledger-tx", revoked.tx_id.clone()))
        .body(
            json!({
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "information", "code": "informational",
                    "diagnostics": format!("consent {} revoked (ledger version {}); it no longer permits anything", revoked.consent_id, revoked.version)}],
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
    let caller = state.callers.authenticate(req.headers()).await?;
    let mut access = ApiAccess::new(AccessKind::Consent(ConsentAction::Check), &caller, &req);
    let outcome = check_decision(&req, payload, &state, &caller, &mut access).await;
    access.finish(&state, outcome).await
}

async fn check_decision(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    caller: &Caller,
    access: &mut ApiAccess,
) -> Result<HttpResponse, GatewayError> {
    authorize(
        caller,
        state,
        ConsentAction::Check,
        Target::Pending,
        None,
        None,
    )?;
    let body = read_json(req, payload).await?;
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
    access.set_site(&site.id);
    access.add_patient(&site.id, patient);
    authorize(
        caller,
        state,
        ConsentAction::Check,
        Target::Patient(patient),
        None,
        None,
    )?;
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

/// A stored consent, as the rule and the receipt need it: every version (oldest first) with
/// its document, the current version read into the model, and whose it is.
struct StoredConsent {
    versions: Vec<(assent_consent::ConsentVersion, Option<Value>)>,
    /// The current version's document in the model, when it is stored and reads.
    model: Option<Consent>,
    /// The site and site-local patient id, when established: the document's patient
    /// reference whose keyed hash at that site is the ledger record's patient key.
    subject: Option<(String, String)>,
}

impl StoredConsent {
    fn target(&self) -> Target<'_> {
        match &self.subject {
            Some((_, patient)) => Target::Patient(patient),
            None => Target::Unknown,
        }
    }

    /// Names the consent's site and patient on the call's receipt.
    fn note(&self, access: &mut ApiAccess) {
        if let Some((site, patient)) = &self.subject {
            access.set_site(site);
            access.add_patient(site, patient);
        }
    }
}

/// The consent `id` as stored, or `None` when there is no such consent.
async fn stored_consent(state: &AppState, id: &str) -> Result<Option<StoredConsent>, GatewayError> {
    let versions = match state.consents.history(id).await {
        Ok(v) => v,
        Err(ConsentServiceError::NotFound) => return Ok(None),
        Err(e) => return Err(service_error(e)),
    };
    let Some((current, document)) = versions.last() else {
        return Ok(None);
    };
    let model = document
        .as_ref()
        .and_then(|d| parse_consent_any(d).ok())
        .map(|(c, _)| c);
    let subject = document.as_ref().and_then(|d| {
        let (site, patient) = patient_reference(d, state)?;
        let sites: Vec<&String> = match &site {
            Some(s) => vec![s],
            None => state.sites.keys().collect(),
        };
        sites
            .into_iter()
            .find(|s| state.consents.patient_key(s, &patient) == current.record.patient_key)
            .map(|s| (s.clone(), patient.clone()))
    });
    Ok(Some(StoredConsent {
        versions,
        model,
        subject,
    }))
}

/// The patient a stored Consent document names: `(None, id)` for `Patient/{id}`, or the site
/// too for a gateway URL.
fn patient_reference(document: &Value, state: &AppState) -> Option<(Option<String>, String)> {
    let reference = ["patient", "subject"].iter().find_map(|f| {
        document
            .pointer(&format!("/{f}/reference"))
            .and_then(Value::as_str)
    })?;
    let prefix = format!("{}/fhir/", state.public_base);
    if let Some(rest) = reference.strip_prefix(&prefix) {
        let parts: Vec<&str> = rest.split('/').collect();
        return match parts.as_slice() {
            [site, "Patient", id] if !id.is_empty() => {
                Some((Some((*site).to_owned()), (*id).to_owned()))
            }
            _ => None,
        };
    }
    match reference.strip_prefix("Patient/") {
        Some(id) if !id.is_empty() && !id.contains('/') => Some((None, id.to_owned())),
        _ => None,
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
    if !assent_fhir::format::is_json_format(media) {
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
