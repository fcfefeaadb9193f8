//! The consent API under `/consent`, a FHIR Consent endpoint: create (`POST`, a
//! server-assigned id) and update (`PUT` of an id, version-aware with `If-Match`) a FHIR
//! Consent of any supported version on the ledger, read, vread, `_history`, search (patient,
//! actor, status, site), `$revoke`, and `$check` (a dry run of the proxy's decision, taking
//! and answering `Parameters`, explained in plain words beside the machine-readable
//! provision). Answers carry `ETag` (`W/"{ledger version}"`) and `Last-Modified`.
//!
//! **Invariant:** no lost update: an `If-Match` version is checked by the ledger's contract
//! in the same transaction that writes the next version, so of two writers that read the
//! same version exactly one writes; the other is 412 `version-conflict`.
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
use assent_auth::{Access, AuthError, PurposeOfUse};
use assent_consent::{
    AccessRequest, AskedInWords, Basis, Caller as ConsentCaller, Consent, ConsentBasis,
    ConsentError, Decision, RevocationReason, decide, parse_consent, parse_consent_any,
};
use assent_fhir::{FhirVersion, Interaction, SitePatient};
use assent_receipts::{AccessKind, ConsentAction, format_instant};
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
use crate::services::network::{NETWORK_SITE, NetworkIndex};
use crate::services::upstream::Site;

/// Largest Consent document accepted.
pub const MAX_CONSENT_BYTES: usize = 256 * 1024;

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

/// The facts the rule needs about `caller`, for `action`; refused when the token's patient
/// launch context is bound to no patient (`patient_context.rs`).
fn manager(
    caller: &Caller,
    state: &AppState,
    action: ConsentAction,
) -> Result<Manager, GatewayError> {
    let access = match action {
        ConsentAction::Create => Access::Create,
        ConsentAction::Update | ConsentAction::Revoke => Access::Update,
        ConsentAction::Search | ConsentAction::Check => Access::Search,
        ConsentAction::History => Access::HistoryInstance,
        ConsentAction::Read => Access::Read,
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
    Ok(Manager {
        patient_context: caller.patient_context.manages(&state.network)?,
        consent_admin: is_consent_admin(caller, state),
        scopes_grant,
        parties,
    })
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
    consent_access::authorize(&manager(caller, state, action)?, &request).map_err(|refusal| {
        tracing::info!(route = "consent", refusal = ?refusal, "consent API call refused");
        match refusal {
            ConsentRefusal::ScopeMissing => GatewayError::Auth(AuthError::InsufficientScope {
                needed: match action {
                    ConsentAction::Create => "patient/Consent.c",
                    ConsentAction::Update | ConsentAction::Revoke => "patient/Consent.u",
                    ConsentAction::Search | ConsentAction::Check => "patient/Consent.s",
                    ConsentAction::History | ConsentAction::Read => "patient/Consent.r",
                }
                .to_owned(),
            }),
            other => GatewayError::ConsentRefused(other),
        }
    })
}

/// `POST /consent/Consent?site=…`: a new consent with a server-assigned id (an id in the
/// body is ignored, as FHIR's create says); 201 with `Location` naming the new version.
pub async fn create(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = state.callers.authenticate(req.headers()).await?;
    let mut access = ApiAccess::new(AccessKind::Consent(ConsentAction::Create), &caller, &req);
    let outcome = store_consent(&req, payload, None, &state, &caller, &mut access).await;
    access.finish(&state, outcome).await
}

/// `PUT /consent/Consent/{id}?site=…`: the consent `id` with a client-chosen id (201 when
/// new), or a new version of it (200). With `If-Match: W/"n"`, only when `n` is the current
/// version (else 412 `version-conflict`, nothing written).
pub async fn update(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = state.callers.authenticate(req.headers()).await?;
    // A create until the consent is found stored (a refusal before then is of a create).
    let mut access = ApiAccess::new(AccessKind::Consent(ConsentAction::Create), &caller, &req);
    let outcome = store_consent(&req, payload, Some(&path), &state, &caller, &mut access).await;
    access.finish(&state, outcome).await
}

/// Create (`path_id` `None`) or update (`PUT` of `path_id`).
async fn store_consent(
    req: &HttpRequest,
    payload: web::Payload,
    path_id: Option<&str>,
    state: &AppState,
    caller: &Caller,
    access: &mut ApiAccess,
) -> Result<HttpResponse, GatewayError> {
    let params = Params::of(req, &["site"])?;
    authorize(
        caller,
        state,
        ConsentAction::Create,
        Target::Pending,
        None,
        None,
    )?;
    let expected_version = match path_id {
        Some(_) => if_match(req)?,
        // A create makes a consent that did not exist.
        None => Some(0),
    };
    let document = read_json(req, payload).await?;
    let version = fhir_version_of(req)?;
    let site = params.one("site").map(str::to_owned);
    let (written, body, created) = write_consent(
        state,
        caller,
        access,
        document,
        path_id,
        site,
        version,
        expected_version,
    )
    .await?;
    let mut response = if created {
        HttpResponse::Created()
    } else {
        HttpResponse::Ok()
    };
    let location = format!(
        "{}/consent/Consent/{}/_history/{}",
        state.public_base, written.consent_id, written.version
    );
    if created {
        response.insert_header((header::LOCATION, location.clone()));
    }
    Ok(response
        .insert_header((header::CONTENT_TYPE, "application/fhir+json"))
        .insert_header((header::CONTENT_LOCATION, location))
        .insert_header((header::ETAG, etag(written.version)))
        .insert_header(header::LastModified(http_date(written.updated_at)))
        .insert_header(("x-assent-ledger-tx", written.tx_id.clone()))
        .insert_header(("x-assent-ledger-block", written.block_number.to_string()))
        .body(body.to_string()))
}

/// Writes `document` as a new consent (`path_id` `None`: a server-assigned id) or as consent
/// `path_id` (a new version when stored), for the patient it names at `site` (else, for a
/// stored consent, its site), asking the rule for the caller first; with `expected_version`,
/// only over that version. The stored version, the Consent as rendered, and whether it was
/// created. What the consent API's create and update and the patient portal's grant share.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn write_consent(
    state: &AppState,
    caller: &Caller,
    access: &mut ApiAccess,
    mut document: Value,
    path_id: Option<&str>,
    site: Option<String>,
    version: Option<FhirVersion>,
    expected_version: Option<u64>,
) -> Result<(crate::services::consent::Stored, Value, bool), GatewayError> {
    authorize(
        caller,
        state,
        ConsentAction::Create,
        Target::Pending,
        None,
        None,
    )?;
    if document.get("resourceType").and_then(Value::as_str) != Some("Consent") {
        return Err(invalid("the body is not a Consent", Some("resourceType")));
    }
    let id = match path_id {
        Some(id) => {
            if valid_id(id).is_none() {
                return Err(bad_parameter("id", id, "a FHIR id ([A-Za-z0-9.-]{1,64})"));
            }
            match document.get("id") {
                None => {}
                Some(Value::String(body_id)) if body_id == id => {}
                Some(_) => {
                    return Err(GatewayError::Malformed(format!(
                        "the Consent's id must be the id of the URL, `{id}`"
                    )));
                }
            }
            id.to_owned()
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    document["id"] = json!(id);
    // A stored id makes this an update: the rule then also sees the version in force.
    let stored = match path_id {
        Some(id) => stored_consent(state, id).await?,
        None => None,
    };
    let site = site.or_else(|| {
        stored
            .as_ref()
            .and_then(|s| s.subject.clone())
            .map(|s| s.site)
    });
    let (site, patient) = patient_of_consent(&document, site.as_deref(), state)?;
    access.set_site(&site);
    access.add_patient(&site, &patient);
    let (written, _issues) = match version {
        Some(v) => parse_consent(&document, v),
        None => parse_consent_any(&document),
    }
    .map_err(|e| consent_error(&e))?;
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
        Target::Patient(&SitePatient::new(&site, &patient)),
        Some(&written),
        current,
    )?;
    let written = state
        .consents
        .put(&site, document.clone(), version, &patient, expected_version)
        .await
        .map_err(service_error)?;
    let body = rendered(&document, written.version, written.updated_at, false);
    access.add_resource(&body);
    Ok((written, body, stored.is_none()))
}

/// `GET /consent/Consent/{id}`: the current version (a revoked consent reads `inactive`).
pub async fn read(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = state.callers.authenticate(req.headers()).await?;
    let mut access = ApiAccess::new(AccessKind::Consent(ConsentAction::Read), &caller, &req);
    let outcome = read_version(&req, &path, None, &state, &caller, &mut access).await;
    access.finish(&state, outcome).await
}

/// `GET /consent/Consent/{id}/_history/{version}`: one version as it was written.
pub async fn vread(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = state.callers.authenticate(req.headers()).await?;
    let mut access = ApiAccess::new(AccessKind::Consent(ConsentAction::Read), &caller, &req);
    let (id, version) = path.into_inner();
    let outcome = read_version(&req, &id, Some(&version), &state, &caller, &mut access).await;
    access.finish(&state, outcome).await
}

async fn read_version(
    req: &HttpRequest,
    id: &str,
    version: Option<&str>,
    state: &AppState,
    caller: &Caller,
    access: &mut ApiAccess,
) -> Result<HttpResponse, GatewayError> {
    Params::of(req, &[])?;
    authorize(
        caller,
        state,
        ConsentAction::Read,
        Target::Pending,
        None,
        None,
    )?;
    let stored = authorized_stored(state, caller, ConsentAction::Read, id, access).await?;
    let (record, document) = match version {
        None => stored.versions.last(),
        Some(v) => {
            let v: u64 = v.parse().map_err(|_| GatewayError::NotFound)?;
            stored.versions.iter().find(|(c, _)| c.record.version == v)
        }
    }
    .map(|(c, d)| (&c.record, d))
    .ok_or(GatewayError::NotFound)?;
    let document = document.as_ref().ok_or(GatewayError::ConsentUnavailable)?;
    let resource = rendered(
        document,
        record.version,
        record.updated_at,
        record.revocation.is_some(),
    );
    access.add_resource(&resource);
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/fhir+json"))
        .insert_header((header::ETAG, etag(record.version)))
        .insert_header(header::LastModified(http_date(record.updated_at)))
        .body(resource.to_string()))
}

/// `GET /consent/Consent?site=…&patient=…[&actor=Type/id][&status=…]`: a searchset Bundle
/// of the patient's consents (newest version of each), filtered by actor and status. Without
/// `patient`, `actor` is required: the consents of every patient of the site naming the
/// actor, each patient's only to a caller who may search that patient's consents (so a
/// launch context sees its own patient's alone); the receipt names every patient returned.
pub async fn search(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = state.callers.authenticate(req.headers()).await?;
    let mut access = ApiAccess::new(AccessKind::Consent(ConsentAction::Search), &caller, &req);
    let outcome = list_consents(&req, &state, &caller, &mut access).await;
    access.finish(&state, outcome).await
}

/// The statuses a stored Consent can have, in the consent endpoint's search.
const STATUSES: &[&str] = &[
    "draft",
    "proposed",
    "active",
    "rejected",
    "inactive",
    "entered-in-error",
    "not-done",
];

async fn list_consents(
    req: &HttpRequest,
    state: &AppState,
    caller: &Caller,
    access: &mut ApiAccess,
) -> Result<HttpResponse, GatewayError> {
    let params = Params::of(req, &["site", "patient", "actor", "status"])?;
    authorize(
        caller,
        state,
        ConsentAction::Search,
        Target::Pending,
        None,
        None,
    )?;
    let site = known_site(params.one("site"), state)?;
    let patient = params
        .one("patient")
        .map(|p| p.strip_prefix("Patient/").unwrap_or(p));
    if let Some(patient) = patient
        && valid_id(patient).is_none()
    {
        return Err(bad_parameter("patient", patient, "a Patient id"));
    }
    if let Some(patient) = patient
        && site == NETWORK_SITE
        && !NetworkIndex::is_network_id(patient)
    {
        return Err(bad_parameter("patient", patient, "a network patient id"));
    }
    let version = state
        .sites
        .get(&site)
        .map(|s| s.config.fhir_version)
        .unwrap_or(FhirVersion::R4);
    let actor = params
        .one("actor")
        .map(|a| typed_reference("actor", a, version))
        .transpose()?;
    let statuses: Option<Vec<&str>> = match params.one("status") {
        None => None,
        Some(list) => Some(
            list.split(',')
                .map(|s| {
                    if STATUSES.contains(&s) {
                        Ok(s)
                    } else {
                        Err(bad_parameter(
                            "status",
                            s,
                            "a Consent status (draft, proposed, active, rejected, inactive, entered-in-error, not-done)",
                        ))
                    }
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    access.set_site(&site);
    // (consent, its patient) of the patient searched, or of every patient of the site whose
    // consents name the actor.
    let consents: Vec<(assent_consent::ConsentRecord, Value, String)> = match (patient, &actor) {
        (Some(patient), _) => {
            access.add_patient(&site, patient);
            authorize(
                caller,
                state,
                ConsentAction::Search,
                Target::Patient(&SitePatient::new(&site, patient)),
                None,
                None,
            )?;
            state
                .consents
                .list(&site, patient)
                .await
                .map_err(service_error)?
                .into_iter()
                .map(|(record, document)| (record, document, patient.to_owned()))
                .collect()
        }
        (None, Some(actor)) => state
            .consents
            .list_by_actor(&site, actor)
            .await
            .map_err(service_error)?
            .into_iter()
            // Each patient's consents only to a caller who may search that patient's (a
            // launch context: its own patient; the administrator role: every patient).
            .filter(|c| {
                authorize(
                    caller,
                    state,
                    ConsentAction::Search,
                    Target::Patient(&SitePatient::new(&site, &c.patient_id)),
                    None,
                    None,
                )
                .is_ok()
            })
            .map(|c| (c.record, c.document, c.patient_id))
            .collect(),
        (None, None) => {
            return Err(GatewayError::Malformed(
                "`patient` or `actor` is required: the consents of one patient, or those naming one actor, are searched".into(),
            ));
        }
    };
    let actor_party = actor.map(|a| ConsentCaller::new().with_reference(&a));
    let mut entries = Vec::new();
    for (record, document, patient) in consents {
        let resource = rendered(
            &document,
            record.version,
            record.updated_at,
            record.revocation.is_some(),
        );
        let status = resource["status"].as_str().unwrap_or_default();
        if statuses.as_ref().is_some_and(|s| !s.contains(&status)) {
            continue;
        }
        if let Some(party) = &actor_party {
            let names_actor =
                parse_consent_any(&document).is_ok_and(|(consent, _)| names_party(&consent, party));
            if !names_actor {
                continue;
            }
        }
        access.add_patient(&site, &patient);
        access.add_resource(&resource);
        let id = resource["id"].as_str().unwrap_or_default().to_owned();
        entries.push(json!({
            "fullUrl": format!("{}/consent/Consent/{id}", state.public_base),
            "resource": resource,
            "search": {"mode": "match"},
        }));
    }
    let self_link = format!(
        "{}/consent/Consent?{}",
        state.public_base,
        req.query_string()
    );
    Ok(fhir_json(json!({
        "resourceType": "Bundle", "type": "searchset", "total": entries.len(),
        "link": [{"relation": "self", "url": self_link}],
        "entry": entries,
    })))
}

/// Whether a provision of `consent` names one of `caller`'s parties as its actor.
fn names_party(consent: &Consent, caller: &ConsentCaller) -> bool {
    consent
        .provisions()
        .into_iter()
        .flat_map(|p| &p.actors)
        .filter_map(|actor| actor.party.as_ref())
        .any(|party| caller.parties.iter().any(|c| party.matches(c)))
}

/// `GET /consent/Consent/{id}/_history`
pub async fn history(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let caller = state.callers.authenticate(req.headers()).await?;
    let mut access = ApiAccess::new(AccessKind::Consent(ConsentAction::History), &caller, &req);
    let outcome = consent_history(&req, &path, &state, &caller, &mut access).await;
    access.finish(&state, outcome).await
}

async fn consent_history(
    req: &HttpRequest,
    id: &str,
    state: &AppState,
    caller: &Caller,
    access: &mut ApiAccess,
) -> Result<HttpResponse, GatewayError> {
    Params::of(req, &[])?;
    authorize(
        caller,
        state,
        ConsentAction::History,
        Target::Pending,
        None,
        None,
    )?;
    let stored = authorized_stored(state, caller, ConsentAction::History, id, access).await?;
    let entries: Vec<Value> = stored
        .versions
        .into_iter()
        .rev()
        .map(|(version, document)| {
            let record = &version.record;
            let document = document.unwrap_or_else(|| json!({"resourceType": "Consent", "id": id}));
            let resource = rendered(
                &document,
                record.version,
                record.updated_at,
                record.revocation.is_some(),
            );
            access.add_resource(&resource);
            let method = if record.version == 1 { "POST" } else { "PUT" };
            json!({
                "fullUrl": format!("{}/consent/Consent/{id}", state.public_base),
                "resource": resource,
                "request": {"method": method, "url": format!("Consent/{id}")},
                "response": {
                    "status": if record.version == 1 { "201" } else { "200" },
                    "etag": etag(record.version),
                    "lastModified": format_instant(record.updated_at.saturating_mul(1000)),
                },
            })
        })
        .collect();
    Ok(fhir_json(json!({
        "resourceType": "Bundle", "type": "history", "total": entries.len(),
        "link": [{"relation": "self", "url": format!("{}/consent/Consent/{id}/_history", state.public_base)}],
        "entry": entries,
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
    let revoked = revoke_checked(state, caller, access, id, reason).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/fhir+json"))
        .insert_header((header::ETAG, etag(revoked.version)))
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

/// Revokes consent `id` for `reason` when the rule lets `caller` revoke it (not found when
/// there is no such consent). What `$revoke` and the patient portal's revoke share.
pub(crate) async fn revoke_checked(
    state: &AppState,
    caller: &Caller,
    access: &mut ApiAccess,
    id: &str,
    reason: RevocationReason,
) -> Result<crate::services::consent::Stored, GatewayError> {
    authorize(
        caller,
        state,
        ConsentAction::Revoke,
        Target::Pending,
        None,
        None,
    )?;
    let stored = authorized_stored(state, caller, ConsentAction::Revoke, id, access).await?;
    let revoked = state
        .consents
        .revoke(id, reason)
        .await
        .map_err(service_error)?;
    // The receipt names the version the revocation made, as the history shows it.
    if let Some((_, Some(document))) = stored.versions.last() {
        access.add_resource(&rendered(
            document,
            revoked.version,
            revoked.updated_at,
            true,
        ));
    }
    Ok(revoked)
}

/// The consents of `patient` (every status, newest version of each) when the rule lets
/// `caller` search them; noted on the call's receipt. What the consent search by patient and
/// the patient portal's list share.
pub(crate) async fn patient_consents(
    state: &AppState,
    caller: &Caller,
    access: &mut ApiAccess,
    patient: &SitePatient,
) -> Result<Vec<(assent_consent::ConsentRecord, Value)>, GatewayError> {
    access.add_patient(&patient.site, &patient.id);
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
        .list(&patient.site, &patient.id)
        .await
        .map_err(service_error)?;
    for (record, document) in &consents {
        access.add_resource(&rendered(
            document,
            record.version,
            record.updated_at,
            record.revocation.is_some(),
        ));
    }
    Ok(consents)
}

/// Every version of consent `id`, oldest first, when the rule lets `caller` read its history.
pub(crate) async fn consent_versions(
    state: &AppState,
    caller: &Caller,
    access: &mut ApiAccess,
    id: &str,
) -> Result<Vec<(assent_consent::ConsentVersion, Option<Value>)>, GatewayError> {
    authorize(
        caller,
        state,
        ConsentAction::History,
        Target::Pending,
        None,
        None,
    )?;
    Ok(
        authorized_stored(state, caller, ConsentAction::History, id, access)
            .await?
            .versions,
    )
}

/// The body of `$check` in its JSON form (the FHIR form is a `Parameters` resource with the
/// same names).
#[derive(Debug, Default, Clone, Deserialize)]
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

impl CheckRequest {
    /// The request from a FHIR `Parameters` resource: each parameter by name, its value as
    /// `valueString`, `valueCode`, `valueId`, `valueUri`, `valueReference.reference` or
    /// (for `purpose`) `valueCoding` of the PurposeOfUse system. An unknown or repeated
    /// parameter is refused, naming it.
    fn from_parameters(parameters: &Value) -> Result<CheckRequest, GatewayError> {
        let mut check = CheckRequest::default();
        let (mut site, mut patient) = (None, None);
        let none = Vec::new();
        let list = match parameters.get("parameter") {
            None => &none,
            Some(Value::Array(list)) => list,
            Some(_) => {
                return Err(GatewayError::Malformed(
                    "the $check Parameters: `parameter` is a list".into(),
                ));
            }
        };
        for p in list {
            let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
            let value = parameter_value(name, p)?;
            let slot = match name {
                "site" => &mut site,
                "patient" => &mut patient,
                "actor" => &mut check.actor,
                "organization" => &mut check.organization,
                "purpose" => &mut check.purpose,
                "resourceType" => &mut check.resource_type,
                "interaction" => &mut check.interaction,
                other => {
                    return Err(GatewayError::Malformed(format!(
                        "$check has no parameter `{other}` (site, patient, actor, organization, purpose, resourceType, interaction)"
                    )));
                }
            };
            if slot.replace(value).is_some() {
                return Err(GatewayError::Malformed(format!(
                    "$check parameter `{name}` is given twice"
                )));
            }
        }
        check.site = site.ok_or_else(|| missing("site"))?;
        check.patient = patient.ok_or_else(|| missing("patient"))?;
        Ok(check)
    }
}

fn missing(name: &str) -> GatewayError {
    GatewayError::Malformed(format!("$check parameter `{name}` is required"))
}

/// The value of one `Parameters.parameter` as text.
fn parameter_value(name: &str, parameter: &Value) -> Result<String, GatewayError> {
    for field in ["valueString", "valueCode", "valueId", "valueUri"] {
        if let Some(v) = parameter.get(field) {
            return v.as_str().map(str::to_owned).ok_or_else(|| {
                GatewayError::Malformed(format!("$check parameter `{name}`: {field} is text"))
            });
        }
    }
    if let Some(reference) = parameter.pointer("/valueReference/reference") {
        return reference.as_str().map(str::to_owned).ok_or_else(|| {
            GatewayError::Malformed(format!("$check parameter `{name}`: a reference is text"))
        });
    }
    if let Some(coding) = parameter.get("valueCoding") {
        let system = coding.get("system").and_then(Value::as_str);
        let code = coding.get("code").and_then(Value::as_str);
        return match (system, code) {
            (None, Some(code)) => Ok(code.to_owned()),
            (Some(system), Some(code)) => Ok(format!("{system}|{code}")),
            _ => Err(GatewayError::Malformed(format!(
                "$check parameter `{name}`: the Coding has no code"
            ))),
        };
    }
    Err(GatewayError::Malformed(format!(
        "$check parameter `{name}` has no value (valueString, valueCode, valueReference, valueCoding)"
    )))
}

/// `POST /consent/$check`: the decision for a caller, patient, purpose and resource type,
/// with its explanation. Takes and answers a FHIR `Parameters` resource (or the JSON form);
/// nothing is forwarded and nothing is released.
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

/// A `$check` request checked against the site: every value known, in the form the proxy
/// decides on.
struct CheckedRequest {
    patient: String,
    caller: ConsentCaller,
    who: String,
    purpose: Option<PurposeOfUse>,
    resource_type: Option<String>,
    interaction: Interaction,
}

/// Validates `check` for `site`: an unknown purpose, resource type or interaction, or an
/// actor that is not `Type/id`, is refused naming the parameter and the value, so that
/// `$check` never decides a request the proxy could not receive. Without a purpose, the
/// site's default purpose applies, as it does for a proxied request.
fn checked(
    check: &CheckRequest,
    site: &crate::services::upstream::Site,
) -> Result<CheckedRequest, GatewayError> {
    let version = site.config.fhir_version;
    let patient = check
        .patient
        .strip_prefix("Patient/")
        .unwrap_or(&check.patient);
    if valid_id(patient).is_none() {
        return Err(bad_parameter(
            "patient",
            &check.patient,
            "Patient/{id} or a Patient id",
        ));
    }
    let mut caller = ConsentCaller::new();
    let mut who = Vec::new();
    for (name, value) in [
        ("actor", &check.actor),
        ("organization", &check.organization),
    ] {
        if let Some(value) = value {
            let reference = typed_reference(name, value, version)?;
            caller = caller.with_reference(&reference);
            who.push(reference);
        }
    }
    let who = match who.as_slice() {
        [] => "a caller with no actor".to_owned(),
        [one] => one.clone(),
        [actor, organization, ..] => format!("{actor} of {organization}"),
    };
    let purpose = match &check.purpose {
        Some(p) => Some(PurposeOfUse::parse(p).ok_or_else(|| {
            bad_parameter(
                "purpose",
                p,
                "a v3 PurposeOfUse code such as TREAT, ETREAT, HPAYMT, HRESCH or PUBHLTH",
            )
        })?),
        None => site.config.default_purpose(),
    };
    if purpose.is_none() && site.config.require_purpose {
        return Err(GatewayError::Malformed(
            "$check parameter `purpose` is required: this site requires a purpose of use".into(),
        ));
    }
    if let Some(t) = &check.resource_type
        && !is_resource_type(version, t)
    {
        return Err(bad_parameter(
            "resourceType",
            t,
            &format!("a resource type of FHIR {version}"),
        ));
    }
    let interaction = match check.interaction.as_deref().unwrap_or("read") {
        "read" => Interaction::Read,
        "vread" => Interaction::Vread,
        "search" => Interaction::Search,
        "history" => Interaction::History,
        other => {
            return Err(bad_parameter(
                "interaction",
                other,
                "read, vread, search or history",
            ));
        }
    };
    Ok(CheckedRequest {
        patient: patient.to_owned(),
        caller,
        who,
        purpose,
        resource_type: check.resource_type.clone(),
        interaction,
    })
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
    let as_parameters = body.get("resourceType").and_then(Value::as_str) == Some("Parameters");
    let check = if as_parameters {
        CheckRequest::from_parameters(&body)?
    } else {
        serde_json::from_value(body)
            .map_err(|e| GatewayError::Malformed(format!("the $check body: {e}")))?
    };
    let wants_fhir = as_parameters
        || req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/fhir+json"));
    if check.site == NETWORK_SITE {
        return check_network(state, caller, access, &check, wants_fhir).await;
    }
    let site = state
        .sites
        .get(&check.site)
        .ok_or(GatewayError::UnknownSite)?;
    let asked = checked(&check, site)?;
    access.set_site(&site.id);
    access.add_patient(&site.id, &asked.patient);
    authorize(
        caller,
        state,
        ConsentAction::Check,
        Target::Patient(&SitePatient::new(&site.id, &asked.patient)),
        None,
        None,
    )?;
    let SiteCheck {
        decision,
        explanation,
        consents_in_force,
    } = site_check(state, site, &asked).await?;
    let verdict = if decision.is_permit() {
        "permit"
    } else {
        "deny"
    };
    let conditional = matches!(&decision, Decision::Permit(p) if p.is_conditional());
    let provision = consent_basis(decision.basis());
    if !wants_fhir {
        return Ok(HttpResponse::Ok().json(json!({
            "decision": verdict,
            "basis": decision.basis().to_string(),
            "conditional": conditional,
            "explanation": explanation,
            "provision": provision.map(|c| json!({
                "consent": format!("Consent/{}", c.consent_id),
                "version": c.consent_version.to_string(),
                "path": c.provision.to_string(),
                "type": c.effect.as_str(),
                "conditions": c.conditions.names().collect::<Vec<_>>(),
            })),
            "detail": decision.explain(),
            "consentsInForce": consents_in_force,
        })));
    }
    let mut parameters = vec![
        json!({"name": "decision", "valueCode": verdict}),
        json!({"name": "explanation", "valueString": explanation}),
        json!({"name": "basis", "valueString": decision.basis().to_string()}),
    ];
    if let Some(c) = provision {
        let mut parts = vec![
            json!({"name": "consent", "valueReference": {"reference": format!("Consent/{}", c.consent_id)}}),
            json!({"name": "version", "valueString": c.consent_version.to_string()}),
            json!({"name": "path", "valueString": c.provision.to_string()}),
            json!({"name": "type", "valueCode": c.effect.as_str()}),
        ];
        parts.extend(
            c.conditions
                .names()
                .map(|n| json!({"name": "condition", "valueCode": n})),
        );
        parameters.push(json!({"name": "provision", "part": parts}));
    }
    parameters.push(json!({"name": "conditional", "valueBoolean": conditional}));
    parameters.push(json!({"name": "consentsInForce", "valueInteger": consents_in_force}));
    parameters.push(json!({"name": "detail", "valueString": decision.explain()}));
    Ok(fhir_json(
        json!({"resourceType": "Parameters", "parameter": parameters}),
    ))
}

/// One site's `$check` answer.
struct SiteCheck {
    decision: Decision,
    explanation: String,
    consents_in_force: usize,
}

/// Decides `asked` at `site` as the proxy's consent phase does: the same decision function
/// on the same consents (the site patient's, with its network patient's when linked) under
/// the site's default policy.
async fn site_check(
    state: &AppState,
    site: &Site,
    asked: &CheckedRequest,
) -> Result<SiteCheck, GatewayError> {
    let consents = state
        .consents
        .consents_for(&site.id, &asked.patient, &state.network)
        .await
        .map_err(service_error)?;
    let mut request = AccessRequest::new(
        &asked.caller,
        asked.interaction,
        asked.resource_type.as_deref(),
        now(),
    );
    if let Some(p) = asked.purpose {
        request = request.with_purpose(p.code());
    }
    let decision = decide(&consents, &request, site.config.default_policy);
    let doing = doing_words(asked.interaction, asked.resource_type.as_deref());
    let explanation = decision.explain_plainly(&AskedInWords {
        who: &asked.who,
        doing: &doing,
        purpose: asked.purpose.map(PurposeOfUse::display),
    });
    Ok(SiteCheck {
        decision,
        explanation,
        consents_in_force: consents.len(),
    })
}

/// `$check` for a network patient (`site=network`, `patient=Patient/{n}`): a part per site
/// holding the patient (its linked record there), each decided as a proxied request at that
/// site would be ([`site_check`]).
async fn check_network(
    state: &AppState,
    caller: &Caller,
    access: &mut ApiAccess,
    check: &CheckRequest,
    wants_fhir: bool,
) -> Result<HttpResponse, GatewayError> {
    let id = check
        .patient
        .strip_prefix("Patient/")
        .unwrap_or(&check.patient);
    if !NetworkIndex::is_network_id(id) {
        return Err(bad_parameter(
            "patient",
            &check.patient,
            "Patient/{network id} (n- and 40 hex digits)",
        ));
    }
    let network_patient = SitePatient::new(NETWORK_SITE, id);
    access.set_site(NETWORK_SITE);
    access.add_patient(NETWORK_SITE, id);
    authorize(
        caller,
        state,
        ConsentAction::Check,
        Target::Patient(&network_patient),
        None,
        None,
    )?;
    if !state
        .network
        .exists(id)
        .map_err(|_| GatewayError::StoreUnavailable)?
    {
        return Err(bad_parameter(
            "patient",
            &check.patient,
            "a known network patient",
        ));
    }
    let members = state
        .network
        .members(id)
        .map_err(|_| GatewayError::StoreUnavailable)?;
    let mut answers = Vec::new();
    for member in members {
        let Some(site) = state.sites.get(&member.patient.site) else {
            continue;
        };
        let at_site = CheckRequest {
            site: site.id.clone(),
            patient: member.patient.id.clone(),
            ..check.clone()
        };
        let asked = checked(&at_site, site)?;
        access.add_patient(&site.id, &asked.patient);
        let answer = site_check(state, site, &asked).await?;
        answers.push((site.id.clone(), answer));
    }
    let verdict = |d: &Decision| if d.is_permit() { "permit" } else { "deny" };
    if !wants_fhir {
        let sites: Vec<Value> = answers
            .iter()
            .map(|(site, a)| {
                json!({
                    "site": site,
                    "decision": verdict(&a.decision),
                    "basis": a.decision.basis().to_string(),
                    "explanation": a.explanation,
                    "consentsInForce": a.consents_in_force,
                })
            })
            .collect();
        return Ok(
            HttpResponse::Ok().json(json!({"patient": format!("Patient/{id}"), "sites": sites}))
        );
    }
    let parameters: Vec<Value> = answers
        .iter()
        .map(|(site, a)| {
            json!({"name": "site", "part": [
                {"name": "site", "valueString": site},
                {"name": "decision", "valueCode": verdict(&a.decision)},
                {"name": "explanation", "valueString": a.explanation},
                {"name": "basis", "valueString": a.decision.basis().to_string()},
                {"name": "consentsInForce", "valueInteger": a.consents_in_force},
            ]})
        })
        .collect();
    Ok(fhir_json(
        json!({"resourceType": "Parameters", "parameter": parameters}),
    ))
}

/// The consent provision a decision rests on (through break-glass, the one it overrode).
fn consent_basis(basis: &Basis) -> Option<&ConsentBasis> {
    match basis {
        Basis::Consent(c) => Some(c),
        Basis::BreakGlass(inner) => consent_basis(inner),
        _ => None,
    }
}

/// What a request does, as a verb phrase: `read Observation records`.
fn doing_words(interaction: Interaction, resource_type: Option<&str>) -> String {
    let records = match resource_type {
        Some(t) => format!("{t} records"),
        None => "the patient's records".to_owned(),
    };
    match interaction {
        Interaction::Vread => format!("read past versions of {records}"),
        Interaction::Search => format!("search {records}"),
        Interaction::History => format!("read the history of {records}"),
        _ => format!("read {records}"),
    }
}

/// Whether `name` is a resource type of `version` (the FHIR definitions the whose-data rule
/// and shaping read: every type of a version has its top-level elements there).
fn is_resource_type(version: FhirVersion, name: &str) -> bool {
    !assent_fhir::shaping::top_elements(version, name).is_empty()
}

/// A reference `Type/id` whose type is a resource type of `version`, else 400 naming the
/// parameter and the value.
fn typed_reference(name: &str, value: &str, version: FhirVersion) -> Result<String, GatewayError> {
    match value.split_once('/') {
        Some((t, id)) if is_resource_type(version, t) && valid_id(id).is_some() => {
            Ok(value.to_owned())
        }
        _ => Err(bad_parameter(
            name,
            value,
            "a reference of the form Type/id, such as Practitioner/dr-alice",
        )),
    }
}

/// 400 naming the parameter, the value given and what was expected.
fn bad_parameter(name: &str, value: &str, expected: &str) -> GatewayError {
    GatewayError::Malformed(format!(
        "parameter `{name}`: `{}` is not {expected}",
        value.escape_debug()
    ))
}

/// `id` when it is a FHIR id (`[A-Za-z0-9.-]{1,64}`).
fn valid_id(id: &str) -> Option<&str> {
    (!id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
    .then_some(id)
}

/// The version an `If-Match` header names (`W/"3"` or `"3"`); `None` without the header.
fn if_match(req: &HttpRequest) -> Result<Option<u64>, GatewayError> {
    let Some(value) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    let quoted = text.strip_prefix("W/").unwrap_or(text);
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .and_then(|v| v.parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| {
            GatewayError::Malformed(
                "`If-Match` names the version the update is based on: W/\"{versionId}\"".into(),
            )
        })
}

fn etag(version: u64) -> String {
    format!("W/\"{version}\"")
}

fn http_date(unix_seconds: i64) -> header::HttpDate {
    let seconds = u64::try_from(unix_seconds).unwrap_or_default();
    header::HttpDate::from(std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds))
}

/// A stored Consent as the endpoint answers it: the version and time the ledger gave it in
/// `meta`, `inactive` once revoked.
fn rendered(document: &Value, version: u64, updated_at: i64, revoked: bool) -> Value {
    let mut resource = document.clone();
    resource["meta"]["versionId"] = json!(version.to_string());
    resource["meta"]["lastUpdated"] = json!(format_instant(updated_at.saturating_mul(1000)));
    if revoked {
        resource["status"] = json!("inactive");
    }
    resource
}

/// A query string read once: each name at most once, and only the names an endpoint knows
/// (anything else is 400 naming it, as FHIR servers refuse a search parameter they do not
/// support).
struct Params(Vec<(String, String)>);

impl Params {
    fn of(req: &HttpRequest, known: &[&str]) -> Result<Params, GatewayError> {
        let pairs = assent_fhir::query::pairs(req.query_string());
        for (i, (name, _)) in pairs.iter().enumerate() {
            if !known.contains(&name.as_str()) {
                return Err(GatewayError::Malformed(if known.is_empty() {
                    format!(
                        "unknown parameter `{}`: this endpoint takes none",
                        name.escape_debug()
                    )
                } else {
                    format!(
                        "unknown parameter `{}` (this endpoint takes {})",
                        name.escape_debug(),
                        known.join(", ")
                    )
                }));
            }
            if pairs[..i].iter().any(|(n, _)| n == name) {
                return Err(GatewayError::Malformed(format!(
                    "parameter `{name}` is given twice"
                )));
            }
        }
        Ok(Params(pairs))
    }

    fn one(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

/// A stored consent, as the rule and the receipt need it: every version (oldest first) with
/// its document, the current version read into the model, and whose it is.
struct StoredConsent {
    versions: Vec<(assent_consent::ConsentVersion, Option<Value>)>,
    /// The current version's document in the model, when it is stored and reads.
    model: Option<Consent>,
    /// The site and site-local patient id, when established: the document's patient
    /// reference whose keyed hash at that site is the ledger record's patient key.
    subject: Option<SitePatient>,
}

impl StoredConsent {
    fn target(&self) -> Target<'_> {
        match &self.subject {
            Some(patient) => Target::Patient(patient),
            None => Target::Unknown,
        }
    }

    /// Names the consent's site and patient on the call's receipt.
    fn note(&self, access: &mut ApiAccess) {
        if let Some(patient) = &self.subject {
            access.set_site(&patient.site);
            access.add_patient(&patient.site, &patient.id);
        }
    }
}

/// The consent `id` as stored, or `None` when there is no such consent.
/// Consent `id` as stored, when `caller` may take `action` on it: not found when there is no
/// such consent, refused when the caller may not act on this one. Its site and patient are
/// noted on the receipt either way.
async fn authorized_stored(
    state: &AppState,
    caller: &Caller,
    action: ConsentAction,
    id: &str,
    access: &mut ApiAccess,
) -> Result<StoredConsent, GatewayError> {
    let stored = stored_consent(state, id)
        .await?
        .ok_or(GatewayError::NotFound)?;
    stored.note(access);
    authorize(
        caller,
        state,
        action,
        stored.target(),
        None,
        stored.model.as_ref(),
    )?;
    Ok(stored)
}

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
        let sites: Vec<&str> = match &site {
            Some(s) => vec![s.as_str()],
            None => state
                .sites
                .keys()
                .map(String::as_str)
                .chain([NETWORK_SITE])
                .collect(),
        };
        sites
            .into_iter()
            .find(|s| state.consents.patient_key(s, &patient) == current.record.patient_key)
            .map(|s| SitePatient::new(s, &patient))
    });
    Ok(Some(StoredConsent {
        versions,
        model,
        subject,
    }))
}

/// The patient's name a Consent document gives (`Consent.patient.display`, R5
/// `Consent.subject.display`), for the console's names beside ids: display only.
pub(crate) fn patient_display(document: &Value) -> Option<&str> {
    ["patient", "subject"]
        .iter()
        .find_map(|f| {
            document
                .pointer(&format!("/{f}/display"))
                .and_then(Value::as_str)
        })
        .map(str::trim)
        .filter(|d| !d.is_empty() && !d.chars().any(char::is_control))
}

/// The patient a stored Consent document names: `(None, id)` for `Patient/{id}`, or the site
/// too for a gateway URL (the network pseudo-site for `{base}/fhir/Patient/{n}`).
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
            ["Patient", id] if !id.is_empty() => {
                Some((Some(NETWORK_SITE.to_owned()), (*id).to_owned()))
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
/// a gateway URL `…/fhir/{site}/Patient/{id}`; or a network patient: `Patient/{n}` with
/// `?site=network`, or the gateway URL `…/fhir/Patient/{n}`, which must exist in the
/// network index (its site is then [`NETWORK_SITE`]).
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
            (Some(s), Some("Patient"), Some(id), None) if !id.is_empty() && s != NETWORK_SITE => {
                Ok((known_site(Some(s), state)?, id.to_owned()))
            }
            (Some("Patient"), Some(id), None, None) => {
                network_patient(state, id, &expression)?;
                Ok((NETWORK_SITE.to_owned(), id.to_owned()))
            }
            _ => Err(invalid("not a patient of a site", Some(&expression))),
        };
    }
    match reference.strip_prefix("Patient/") {
        Some(id) if !id.is_empty() && !id.contains('/') && site == Some(NETWORK_SITE) => {
            network_patient(state, id, &expression)?;
            Ok((NETWORK_SITE.to_owned(), id.to_owned()))
        }
        Some(id) if !id.is_empty() && !id.contains('/') => {
            Ok((known_site(site, state)?, id.to_owned()))
        }
        _ => Err(invalid(
            "the patient must be `Patient/{id}` with `?site=`, or a gateway URL of a site's patient",
            Some(&expression),
        )),
    }
}

/// Refused unless `id` is a network patient of the index: a malformed or unknown id names
/// nobody, and a consent for nobody is not stored.
fn network_patient(state: &AppState, id: &str, expression: &str) -> Result<(), GatewayError> {
    if !NetworkIndex::is_network_id(id) {
        return Err(invalid(
            "not a network patient id (n- and 40 hex digits)",
            Some(expression),
        ));
    }
    let exists = state
        .network
        .exists(id)
        .map_err(|_| GatewayError::StoreUnavailable)?;
    if !exists {
        return Err(invalid("no such network patient", Some(expression)));
    }
    Ok(())
}

/// `site` if it is a configured site, or the network pseudo-site (a network patient's
/// consents).
fn known_site(site: Option<&str>, state: &AppState) -> Result<String, GatewayError> {
    let site = site.ok_or_else(|| GatewayError::Malformed("`site` is required".into()))?;
    if state.sites.contains_key(site) || site == NETWORK_SITE {
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
        ConsentServiceError::OtherMember => GatewayError::ConsentOtherMember,
    }
}

fn consent_error(e: &ConsentError) -> GatewayError {
    GatewayError::InvalidResource {
        message: e.to_string(),
        expression: Some(e.element().to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::patient_display;

    /// The console shows the name a Consent gives its patient, in any version's element, and
    /// never an empty or control-character one.
    #[test]
    fn a_consents_patient_display_is_read_from_its_patient_element() {
        let cases = [
            (
                json!({"patient": {"reference": "Patient/p1", "display": "Jane Doe"}}),
                Some("Jane Doe"),
            ),
            (
                json!({"subject": {"reference": "Patient/p1", "display": " Jo Roe "}}),
                Some("Jo Roe"),
            ),
            (json!({"patient": {"reference": "Patient/p1"}}), None),
            (json!({"patient": {"display": "   "}}), None),
            (json!({"patient": {"display": "Eve\u{1b}[31m"}}), None),
            (json!({"performer": [{"display": "Dr Who"}]}), None),
        ];
        for (document, expected) in cases {
            assert_eq!(patient_display(&document), expected, "{document}");
        }
    }
}
