//! The patient portal at `/portal/`: a patient signs in with the configured OpenID provider
//! (SMART standalone patient launch: authorization code with PKCE, `patient/*` scopes, a
//! patient launch context; the browser sign-in shared with the console, `signin.rs`) and sees
//! **My sharing choices** (every consent of every identity their launch context manages, in
//! plain words, with its history; grant a practitioner or organization (typed, or chosen from
//! the sites' directories, `services/directory.rs`) access for purposes, kinds of record
//! (`portal/categories.rs`) and a period; narrow a share to fewer purposes or kinds of record
//! or an earlier end; revoke; opt out of or into each site holding the patient, as that site's default allows)
//! and **Who saw my records** (the accounting of disclosures across sites, filtered
//! by period, as CSV or PDF with a receipt id per row).
//!
//! **Invariant:** the portal decides nothing of its own about whose consents a patient may
//! see or change. The session keeps the caller: its access token, verified again on every
//! request (`signin::authenticate`, so its launch context is bound by the one rule,
//! `http::patient_context`); every list, grant and revoke goes through the consent API's own
//! functions (`api::consent::{patient_consents, consent_versions, write_consent,
//! revoke_checked}`), which ask `http::consent_access::authorize`. The patient a grant is
//! written for is taken from the session's bound context, never from the form; a consent id
//! of another patient is refused by that rule (403 page). Every page and change leaves a
//! receipt (`api/receipt.rs`), durable before the answer.
//!
//! Security: the session is a signed and encrypted cookie (`HttpOnly`, `SameSite=Strict`,
//! `Secure` behind https, path `/portal`; `signin/session.rs`) holding the caller id, the
//! access token, a CSRF secret and a session id that sign-out ends on the server
//! (`signin::end_session`); every
//! POST must carry that secret in its form (`csrf`), compared in constant time. Pages carry a
//! strict Content Security Policy (no script at all, styles from `/portal/style.css` only, no
//! framing); only patients with a bound launch context are let in (a clinician's sign-in is
//! refused). Nothing clear is logged.
//!
//! Leaves out the HTML (`portal/pages.rs`).

mod categories;
mod pages;
mod pdf;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use assent_auth::CallerKind;
use assent_consent::{RevocationReason, SitePolicy, parse_consent_any};
use assent_fhir::SitePatient;
use assent_receipts::{AccessKind, AuditAction, ConsentAction, Disclosure, format_instant};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::consent::{consent_versions, patient_consents, revoke_checked, write_consent};
use crate::api::receipt::ApiAccess;
use crate::api::signin::{
    CallbackQuery, SignIn, SignInSetupError, authenticate, end_session, html_page, new_session_id,
    now_secs, session_ended,
};
use crate::config::PortalConfig;
use crate::http::caller::Caller;
use crate::http::error::GatewayError;
use crate::http::state::AppState;
use crate::services::audit::{date_range, decode, newest_first};
use crate::services::directory::{Directories, SiteDirectory, plain_id};
use crate::services::network::NETWORK_SITE;
use crate::services::upstream::WorkerClients;
use crate::store::ReceiptFilter;

const SESSION_COOKIE: &str = "assent_portal";
/// Accesses shown on the disclosures page; the CSV holds up to [`CSV_MAX`].
const PAGE_SIZE: i64 = 200;
const CSV_MAX: i64 = 10_000;
/// Practitioners listed to choose from in the grant form.
const KNOWN_MAX: i64 = 200;
/// The purposes a patient may grant access for.
pub const GRANTABLE_PURPOSES: &[&str] = &["TREAT", "ETREAT", "HOPERAT", "HPAYMT", "HRESCH"];

/// The portal's sign-in client and cookie key, and the sites' directories it offers.
pub struct Portal {
    signin: SignIn,
    config: PortalConfig,
    directories: Directories,
}

impl Portal {
    /// Discovers the first trusted issuer; cookies are signed with `session_key` under the
    /// portal's own purpose labels.
    pub async fn start(
        config: &PortalConfig,
        issuer: Option<&url::Url>,
        public_base: &str,
        session_key: Option<crate::config::keys::Secret>,
    ) -> Result<Portal, SignInSetupError> {
        let signin = SignIn::start_realm(
            "portal",
            "portal",
            "/portal",
            issuer,
            &config.client_id,
            public_base,
            session_key,
        )
        .await?;
        Ok(Portal {
            signin,
            config: config.clone(),
            directories: Directories::new(std::time::Duration::from_secs(
                config.directory_ttl_secs,
            )),
        })
    }
}

/// The portal, registered beside the state when `[portal]` is configured.
type PortalData = Option<web::Data<Portal>>;

/// A signed-in patient: the session's caller, verified again from its token.
struct Patient {
    caller: Caller,
    csrf: String,
    /// Every identity the launch context manages (`PatientContext::manages`): a site patient,
    /// or a network patient and each site patient linked to it.
    identities: Vec<SitePatient>,
}

impl Patient {
    /// The identity a grant is written for: the network patient when bound to one (its
    /// consents decide at every site holding the patient), else the site patient.
    fn grant_target(&self) -> &SitePatient {
        &self.identities[0]
    }
}

fn error_page(signed_in: bool, error: &GatewayError) -> HttpResponse {
    let status = actix_web::ResponseError::status_code(error);
    html_page(
        status,
        pages::error(signed_in, status.as_u16(), error.code(), &error.to_string()),
    )
}

fn as_page(outcome: Result<HttpResponse, GatewayError>) -> Result<HttpResponse, GatewayError> {
    Ok(outcome.unwrap_or_else(|e| error_page(true, &e)))
}

fn not_configured() -> HttpResponse {
    error_page(false, &GatewayError::NotFound)
}

fn signed_out(message: Option<&str>) -> HttpResponse {
    html_page(StatusCode::UNAUTHORIZED, pages::sign_in(message))
}

/// The session cookie's fields, once it decrypts and its MAC holds, before its expiry.
struct PortalSession {
    caller_id: String,
    token: String,
    csrf: String,
    expires_at: u64,
    id: String,
}

/// The session cookie's fields: caller id, access token, CSRF secret, expiry, session id
/// (sealed, then encrypted: `signin/session.rs`).
fn read_session(req: &HttpRequest, portal: &Portal) -> Option<PortalSession> {
    let cookie = req.cookie(SESSION_COOKIE)?;
    let cookies = &portal.signin.cookies;
    let sealed = cookies.decrypt_session("session", cookie.value())?;
    let f = cookies.open_named("session", &sealed, 5)?;
    let expires_at: u64 = f[3].parse().ok()?;
    (expires_at > now_secs()).then(|| PortalSession {
        caller_id: f[0].clone(),
        token: f[1].clone(),
        csrf: f[2].clone(),
        expires_at,
        id: f[4].clone(),
    })
}

/// The signed-in patient, or the page to answer instead (not configured, signed out, not a
/// patient).
async fn signed_in(
    req: &HttpRequest,
    portal: &PortalData,
    state: &AppState,
) -> Result<Patient, HttpResponse> {
    let portal = portal.as_ref().ok_or_else(not_configured)?;
    let session = read_session(req, portal).ok_or_else(|| signed_out(None))?;
    if session_ended(state, &session.id).await {
        return Err(signed_out(None));
    }
    let caller = authenticate(state, &session.token)
        .await
        .map_err(|_| signed_out(Some("Your sign-in has expired. Please sign in again.")))?;
    if caller.id != session.caller_id {
        return Err(signed_out(None));
    }
    let csrf = session.csrf;
    let identities = patient_identities(&caller, state).map_err(|e| error_page(false, &e))?;
    Ok(Patient {
        caller,
        csrf,
        identities,
    })
}

/// The identities a patient caller's bound launch context manages; refused for anyone else.
fn patient_identities(caller: &Caller, state: &AppState) -> Result<Vec<SitePatient>, GatewayError> {
    if caller.verified.kind != CallerKind::Patient {
        return Err(GatewayError::PortalPatientRequired);
    }
    match caller.patient_context.manages(&state.network)? {
        Some(identities) if !identities.is_empty() => Ok(identities),
        _ => Err(GatewayError::PortalPatientRequired),
    }
}

/// Constant-time comparison of the form's CSRF token with the session's.
fn csrf_holds(given: Option<&str>, expected: &str) -> bool {
    let Some(given) = given else { return false };
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// `GET /portal/style.css`
pub async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/css; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "max-age=3600"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(pages::STYLESHEET)
}

/// `GET /portal/login`: to the identity provider asking for the patient scopes.
pub async fn login(portal: PortalData) -> HttpResponse {
    match portal.as_ref() {
        Some(portal) => portal.signin.start(&portal.config.scope),
        None => not_configured(),
    }
}

/// `GET /portal/callback`: the shared sign-in checks, then a patient with a bound launch
/// context only; opens the session (with a fresh CSRF secret).
pub async fn callback(
    req: HttpRequest,
    query: web::Query<CallbackQuery>,
    state: web::Data<AppState>,
    portal: PortalData,
) -> Result<HttpResponse, GatewayError> {
    let Some(portal) = portal.as_ref() else {
        return Ok(not_configured());
    };
    let refused = |message: &str| html_page(StatusCode::FORBIDDEN, pages::sign_in(Some(message)));
    let (caller, token) = match portal.signin.finish(&req, &query, &state).await {
        Ok(signed_in) => signed_in,
        Err(message) => return Ok(refused(message)),
    };
    if patient_identities(&caller, &state).is_err() {
        tracing::info!(
            route = "portal",
            "portal sign-in refused: not a bound patient"
        );
        return Ok(refused(
            "The patient portal is for patients: this sign-in has no patient launch context.",
        ));
    }
    let expires_at = (now_secs() + portal.config.session_ttl_secs)
        .min(caller.verified.expires_at.max(now_secs()));
    let csrf = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let cookies = &portal.signin.cookies;
    let sealed = cookies.seal_named(
        "session",
        &[
            &caller.id,
            &token,
            &csrf,
            &expires_at.to_string(),
            &new_session_id(),
        ],
    );
    let value = cookies.encrypt_session("session", sealed);
    let session_cookie = portal
        .signin
        .session_cookie(SESSION_COOKIE, value, expires_at);
    // A page, not a redirect: a `SameSite=Strict` cookie set at the end of a redirect chain
    // that began at the identity provider (another site) would not be sent on the next hop.
    let mut response = html_page(StatusCode::OK, pages::signed_in());
    response
        .add_cookie(&session_cookie)
        .map_err(|_| GatewayError::Internal)?;
    response
        .add_cookie(&portal.signin.clear_login())
        .map_err(|_| GatewayError::Internal)?;
    Ok(response)
}

/// `GET /portal/logout`: ends the session on the server (`signin::end_session`: a copy of
/// the cookie is refused from now on), then removes the cookie.
pub async fn logout(
    req: HttpRequest,
    state: web::Data<AppState>,
    portal: PortalData,
) -> Result<HttpResponse, GatewayError> {
    let Some(portal) = portal.as_ref() else {
        return Ok(not_configured());
    };
    if let Some(session) = read_session(&req, portal) {
        end_session(&state, &session.id, session.expires_at).await?;
    }
    let mut response = html_page(StatusCode::OK, pages::sign_in(Some("You are signed out.")));
    response
        .add_cookie(&portal.signin.removed_cookie(SESSION_COOKIE))
        .map_err(|_| GatewayError::Internal)?;
    Ok(response)
}

/// `GET /portal/`: My sharing choices.
pub async fn index(
    req: HttpRequest,
    state: web::Data<AppState>,
    clients: web::Data<WorkerClients>,
    portal: PortalData,
) -> Result<HttpResponse, GatewayError> {
    let patient = match signed_in(&req, &portal, &state).await {
        Ok(p) => p,
        Err(page) => return Ok(page),
    };
    let Some(portal) = portal.as_ref() else {
        return Ok(not_configured());
    };
    let mut access = ApiAccess::new(
        AccessKind::Consent(ConsentAction::Search),
        &patient.caller,
        &req,
    );
    let directories = site_directories(&state, portal, &clients, &patient).await;
    let outcome = sharing_page(&state, &patient, &mut access, &directories).await;
    access.finish(&state, as_page(outcome)).await
}

/// The sites the patient's records are held at (not the network), each with its directory
/// (`None`: unavailable now).
async fn site_directories(
    state: &AppState,
    portal: &Portal,
    clients: &WorkerClients,
    patient: &Patient,
) -> Vec<(String, Option<std::sync::Arc<SiteDirectory>>)> {
    let mut out = Vec::new();
    for identity in patient.identities.iter().filter(|i| i.site != NETWORK_SITE) {
        if out.iter().any(|(site, _)| *site == identity.site) {
            continue;
        }
        let directory = match (state.sites.get(&identity.site), clients.get(&identity.site)) {
            (Some(site), Some(client)) => portal.directories.of(site, client).await,
            _ => None,
        };
        out.push((identity.site.clone(), directory));
    }
    out
}

async fn sharing_page(
    state: &AppState,
    patient: &Patient,
    access: &mut ApiAccess,
    directories: &[(String, Option<std::sync::Arc<SiteDirectory>>)],
) -> Result<HttpResponse, GatewayError> {
    access.set_site(&patient.grant_target().site);
    let now = now_secs() as i64;
    let mut choices = Vec::new();
    let mut sites = Vec::new();
    for identity in &patient.identities {
        let mut site = (identity.site != NETWORK_SITE)
            .then(|| state.sites.get(&identity.site))
            .flatten()
            .map(|s| pages::SiteChoice {
                site: identity.site.clone(),
                policy: s.config.default_policy,
                held: None,
            });
        for (record, document) in patient_consents(state, &patient.caller, access, identity).await?
        {
            let id = document["id"].as_str().unwrap_or_default().to_owned();
            let in_force = record.revocation.is_none()
                && record.is_in_force(assent_consent::Timestamp::from_unix_seconds(now));
            if let Some(site) = &mut site
                && in_force
                && is_site_choice(&document, site.policy)
            {
                site.held = Some(id.clone());
            }
            let history = consent_versions(state, &patient.caller, access, &id).await?;
            choices.push(pages::Choice {
                id,
                where_: where_words(identity),
                in_force: record.is_in_force(assent_consent::Timestamp::from_unix_seconds(now)),
                revoked: record.revocation.is_some(),
                version: record.version,
                updated_at: record.updated_at,
                tx_id: history
                    .last()
                    .map(|(v, _)| v.tx_id.clone())
                    .unwrap_or_default(),
                sentences: Vec::new(),
                document,
                history: history
                    .iter()
                    .map(|(v, _)| pages::Version {
                        version: v.record.version,
                        updated_at: v.record.updated_at,
                        tx_id: v.tx_id.clone(),
                        revoked: v.record.revocation.is_some(),
                    })
                    .collect(),
            });
        }
        sites.extend(site);
    }
    let mut actors: Vec<String> = choices
        .iter()
        .filter_map(|c| parse_consent_any(&c.document).ok())
        .flat_map(|(consent, _)| {
            consent
                .grantees()
                .into_iter()
                .filter_map(|p| match p {
                    assent_consent::Party::Reference(r) => Some(r.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
        .collect();
    actors.sort();
    actors.dedup();
    let names = known_names(state, actors).await;
    let store = state.store.clone();
    let directory =
        match tokio::task::spawn_blocking(move || store.known_practitioners(KNOWN_MAX)).await {
            Ok(Ok(list)) => list,
            _ => Vec::new(),
        };
    for choice in &mut choices {
        choice.sentences = pages::sentences(&choice.document, &choice.where_, &names);
    }
    // In force first, then the newest change.
    choices.sort_by(|a, b| {
        b.in_force
            .cmp(&a.in_force)
            .then(b.updated_at.cmp(&a.updated_at))
    });
    Ok(html_page(
        StatusCode::OK,
        pages::sharing(&patient.csrf, &choices, &sites, &directory, directories),
    ))
}

/// Where a consent of `identity` applies, in words.
fn where_words(identity: &SitePatient) -> String {
    if identity.site == NETWORK_SITE {
        "at every site holding your records".to_owned()
    } else {
        format!("at {}", identity.site)
    }
}

/// The names the gateway knows for `actors` (the name their tokens last gave); a failure
/// shows the references alone.
async fn known_names(
    state: &AppState,
    actors: Vec<String>,
) -> std::collections::HashMap<String, String> {
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || store.caller_names(&actors)).await {
        Ok(Ok(names)) => names,
        _ => Default::default(),
    }
}

/// The fields of a POSTed form (names may repeat).
/// A posted form's fields, read by the project's one query-string parser.
fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    assent_fhir::query::pairs(&String::from_utf8_lossy(body))
}

/// The consent id a form names (`consent`): a plain id, else not found.
fn consent_field(fields: &[(String, String)]) -> Result<&str, GatewayError> {
    let id = field(fields, "consent").unwrap_or_default();
    if id.is_empty() || id.len() > 64 || id.chars().any(char::is_control) {
        return Err(GatewayError::NotFound);
    }
    Ok(id)
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A posted form, its signed-in patient (CSRF checked) and the receipted access of the change.
/// (`posted` answers the page instead when the patient is not signed in or the token fails.)
struct Posted {
    fields: Vec<(String, String)>,
    patient: Patient,
    access: ApiAccess,
}

async fn posted(
    req: &HttpRequest,
    portal: &PortalData,
    state: &AppState,
    body: &[u8],
    action: ConsentAction,
) -> Result<Posted, HttpResponse> {
    let fields = form_fields(body);
    let patient = signed_in(req, portal, state).await?;
    if !csrf_holds(field(&fields, "csrf"), &patient.csrf) {
        tracing::info!(route = "portal", "portal change refused: CSRF token");
        return Err(error_page(true, &GatewayError::CsrfTokenInvalid));
    }
    let access = ApiAccess::new(AccessKind::Consent(action), &patient.caller, req);
    Ok(Posted {
        fields,
        patient,
        access,
    })
}

/// `POST /portal/grant`: a new consent of the patient (from the session, never the form)
/// permitting one practitioner or organization for the chosen purposes and period.
pub async fn grant(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
    clients: web::Data<WorkerClients>,
    portal: PortalData,
) -> Result<HttpResponse, GatewayError> {
    let Posted {
        fields,
        patient,
        mut access,
    } = match posted(&req, &portal, &state, &body, ConsentAction::Create).await {
        Ok(p) => p,
        Err(page) => return Ok(page),
    };
    let Some(portal) = portal.as_ref() else {
        return Ok(not_configured());
    };
    let outcome = async {
        let fields = chosen_from_directory(fields, &state, portal, &clients, &patient).await?;
        let document = grant_document(&fields, patient.grant_target())?;
        let target = patient.grant_target();
        let (written, _, _) = write_consent(
            &state,
            &patient.caller,
            &mut access,
            document,
            None,
            Some(target.site.clone()),
            None,
            Some(0),
        )
        .await?;
        Ok(html_page(
            StatusCode::OK,
            pages::changed(
                "Access granted",
                &written.consent_id,
                written.version,
                &written.tx_id,
                written.updated_at,
            ),
        ))
    }
    .await;
    access.finish(&state, as_page(outcome)).await
}

/// The form with its `chosen` entry checked: `{site}|{Type}/{id}` must name a site the
/// patient's records are held at and an entry of that site's directory (read now if not
/// cached), and is replaced by the reference alone; a `chosen` without a site is a reference
/// like a typed one (checked by [`grant_document`]). A typed reference wins over the list.
async fn chosen_from_directory(
    mut fields: Vec<(String, String)>,
    state: &AppState,
    portal: &Portal,
    clients: &WorkerClients,
    patient: &Patient,
) -> Result<Vec<(String, String)>, GatewayError> {
    let typed = field(&fields, "practitioner").is_some_and(|t| !t.trim().is_empty());
    let Some(at) = fields.iter().position(|(n, _)| n == "chosen") else {
        return Ok(fields);
    };
    let Some((site_id, reference)) = fields[at]
        .1
        .split_once('|')
        .map(|(s, r)| (s.to_owned(), r.to_owned()))
    else {
        return Ok(fields);
    };
    let site_id = site_id.as_str();
    if typed {
        return Ok(fields);
    }
    let refused = || {
        GatewayError::Malformed(
            "the one you share with is not in the directory of a site holding your records"
                .to_owned(),
        )
    };
    let held = patient
        .identities
        .iter()
        .any(|i| i.site != NETWORK_SITE && i.site == site_id);
    let site = state
        .sites
        .get(site_id)
        .filter(|_| held)
        .ok_or_else(refused)?;
    let client = clients.get(site_id).ok_or_else(refused)?;
    let directory = portal.directories.of(site, client).await.ok_or_else(|| {
        GatewayError::Malformed(format!(
            "the directory of {site_id} is unavailable: write the reference instead"
        ))
    })?;
    if !directory.holds(&reference) {
        return Err(refused());
    }
    fields[at].1 = reference;
    Ok(fields)
}

/// The Consent a grant form asks for (R4): its root permits the one actor, for the purposes,
/// within the period; anyone else is left to the other consents and the site's default.
fn grant_document(
    fields: &[(String, String)],
    target: &SitePatient,
) -> Result<Value, GatewayError> {
    let bad = |m: &str| GatewayError::Malformed(m.to_owned());
    // The reference typed, else the one chosen from the list.
    let who = Some(field(fields, "practitioner").unwrap_or_default().trim())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| field(fields, "chosen").unwrap_or_default().trim());
    let reference = if who.contains('/') {
        who.to_owned()
    } else {
        format!("Practitioner/{who}")
    };
    let (kind, id) = reference
        .split_once('/')
        .ok_or_else(|| bad("name the practitioner as Practitioner/{id} or by id"))?;
    let id_ok = plain_id(id);
    if !matches!(kind, "Practitioner" | "PractitionerRole" | "Organization") || !id_ok {
        return Err(bad(
            "the one you share with is Practitioner/{id}, PractitionerRole/{id} or Organization/{id}",
        ));
    }
    let purposes: Vec<&str> = fields
        .iter()
        .filter(|(n, _)| n == "purpose")
        .map(|(_, v)| v.as_str())
        .collect();
    if purposes.is_empty() {
        return Err(bad("choose at least one purpose"));
    }
    if let Some(p) = purposes.iter().find(|p| !GRANTABLE_PURPOSES.contains(p)) {
        return Err(GatewayError::Malformed(format!("unknown purpose {p:?}")));
    }
    let date = |name: &str| -> Result<Option<String>, GatewayError> {
        match field(fields, name).map(str::trim).filter(|d| !d.is_empty()) {
            None => Ok(None),
            Some(d) if d.len() == 10 && date_range(d).is_some() => Ok(Some(d.to_owned())),
            Some(_) => Err(bad("dates are YYYY-MM-DD")),
        }
    };
    let (from, until) = (date("from")?, date("until")?);
    if let (Some(f), Some(u)) = (&from, &until)
        && u < f
    {
        return Err(bad("the end of the period is before its start"));
    }
    let kinds = categories::chosen(fields)
        .map_err(|c| GatewayError::Malformed(format!("unknown kind of record {c:?}")))?;
    let mut provision = json!({
        "type": "permit",
        "actor": [{
            "role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "PRCP"}]},
            "reference": {"reference": reference},
        }],
        "purpose": purposes.iter().map(|p| json!({"system": assent_consent::ACT_REASON, "code": p})).collect::<Vec<_>>(),
    });
    if from.is_some() || until.is_some() {
        let mut period = serde_json::Map::new();
        if let Some(f) = from {
            period.insert("start".into(), Value::from(f));
        }
        if let Some(u) = until {
            period.insert("end".into(), Value::from(u));
        }
        provision["period"] = Value::Object(period);
    }
    // No category chosen: all data (no `class`).
    if !kinds.is_empty() {
        provision["class"] = categories::class_of(&kinds);
    }
    Ok(json!({
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{}", target.id)},
        "dateTime": format_instant(now_secs() as i64 * 1000),
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": provision,
    }))
}

/// Whether `document` is a patient's choice about a whole site: a root provision naming no
/// actor that denies (an opt-out at an opt-out site) or permits (an opt-in at an opt-in site).
fn is_site_choice(document: &Value, policy: SitePolicy) -> bool {
    let root = &document["provision"];
    let wanted = match policy {
        SitePolicy::OptOut => "deny",
        SitePolicy::OptIn => "permit",
    };
    root["type"].as_str() == Some(wanted)
        && root
            .get("actor")
            .is_none_or(|a| a.as_array().is_some_and(Vec::is_empty))
        && root.get("provision").is_none()
}

/// The Consent of a site choice (R4) for `target`: at an opt-out site a root deny (nobody at
/// that site may see the records), at an opt-in site a root permit for treatment.
fn site_choice_document(policy: SitePolicy, target: &SitePatient) -> Value {
    let (policy_rule, provision) = match policy {
        SitePolicy::OptOut => ("OPTOUT", json!({"type": "deny"})),
        SitePolicy::OptIn => (
            "OPTIN",
            json!({"type": "permit",
                "purpose": [{"system": assent_consent::ACT_REASON, "code": "TREAT"}]}),
        ),
    };
    json!({
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{}", target.id)},
        "dateTime": format_instant(now_secs() as i64 * 1000),
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": policy_rule}]},
        "provision": provision,
    })
}

/// `POST /portal/site`: opts the patient out of the site the form names (at an opt-out site)
/// or into it for treatment (at an opt-in site). The site must be one the session's bound
/// identities are held at; what is written follows the site's own default, never the form.
/// Undoing it is revoking that consent (`/portal/revoke`).
pub async fn site_choice(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
    portal: PortalData,
) -> Result<HttpResponse, GatewayError> {
    let Posted {
        fields,
        patient,
        mut access,
    } = match posted(&req, &portal, &state, &body, ConsentAction::Create).await {
        Ok(p) => p,
        Err(page) => return Ok(page),
    };
    let outcome = async {
        let named = field(&fields, "site").unwrap_or_default();
        let target = patient
            .identities
            .iter()
            .find(|i| i.site != NETWORK_SITE && i.site == named)
            .ok_or(GatewayError::NotFound)?;
        let policy = state
            .sites
            .get(&target.site)
            .map(|s| s.config.default_policy)
            .ok_or(GatewayError::NotFound)?;
        let (written, _, _) = write_consent(
            &state,
            &patient.caller,
            &mut access,
            site_choice_document(policy, target),
            None,
            Some(target.site.clone()),
            None,
            Some(0),
        )
        .await?;
        let title = match policy {
            SitePolicy::OptOut => "Opted out",
            SitePolicy::OptIn => "Opted in",
        };
        Ok(html_page(
            StatusCode::OK,
            pages::changed(
                title,
                &written.consent_id,
                written.version,
                &written.tx_id,
                written.updated_at,
            ),
        ))
    }
    .await;
    access.finish(&state, as_page(outcome)).await
}

/// `POST /portal/narrow`: a new version of a share in force (PUT-like, with its current
/// version as the expected one, through the consent API's update path): the chosen purposes
/// (a subset of its own) and an earlier end. Another patient's consent is refused by the rule
/// when its history is read (403), before anything is written.
pub async fn narrow(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
    portal: PortalData,
) -> Result<HttpResponse, GatewayError> {
    let Posted {
        fields,
        patient,
        mut access,
    } = match posted(&req, &portal, &state, &body, ConsentAction::Update).await {
        Ok(p) => p,
        Err(page) => return Ok(page),
    };
    let outcome = async {
        let id = consent_field(&fields)?;
        let versions = consent_versions(&state, &patient.caller, &mut access, id).await?;
        let (current, document) = versions.last().ok_or(GatewayError::NotFound)?;
        let document = document.clone().ok_or(GatewayError::NotFound)?;
        if current.record.revocation.is_some() {
            return Err(GatewayError::Malformed(
                "a revoked choice cannot be narrowed".to_owned(),
            ));
        }
        let narrowed = narrowed_document(document, &fields)?;
        let (written, _, _) = write_consent(
            &state,
            &patient.caller,
            &mut access,
            narrowed,
            Some(id),
            None,
            None,
            Some(current.record.version),
        )
        .await?;
        Ok(html_page(
            StatusCode::OK,
            pages::changed(
                "Access narrowed",
                &written.consent_id,
                written.version,
                &written.tx_id,
                written.updated_at,
            ),
        ))
    }
    .await;
    access.finish(&state, as_page(outcome)).await
}

/// The purposes of a share's root provision (`None` when `document` is not a share: a root
/// permit naming its actors); an empty list is every purpose.
pub(crate) fn share_purposes(document: &Value) -> Option<Vec<String>> {
    let root = &document["provision"];
    let actors = root["actor"].as_array().is_some_and(|a| !a.is_empty());
    (root["type"].as_str() == Some("permit") && actors && root.get("provision").is_none()).then(
        || {
            root["purpose"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["code"].as_str().map(str::to_owned))
                .collect()
        },
    )
}

/// `document` narrowed by the form: only purposes it already has, only kinds of record
/// (`categories.rs`) it already shares, only an earlier end.
fn narrowed_document(
    mut document: Value,
    fields: &[(String, String)],
) -> Result<Value, GatewayError> {
    let bad = |m: &str| GatewayError::Malformed(m.to_owned());
    let current = share_purposes(&document).ok_or_else(|| bad("only a share can be narrowed"))?;
    let purposes: Vec<&str> = fields
        .iter()
        .filter(|(n, _)| n == "purpose")
        .map(|(_, v)| v.as_str())
        .collect();
    if let Some(p) = purposes.iter().find(|p| {
        !GRANTABLE_PURPOSES.contains(p) || !(current.is_empty() || current.iter().any(|c| c == *p))
    }) {
        return Err(GatewayError::Malformed(format!(
            "narrowing cannot add the purpose {p:?}"
        )));
    }
    let until = match field(fields, "until")
        .map(str::trim)
        .filter(|d| !d.is_empty())
    {
        None => None,
        Some(d) if d.len() == 10 && date_range(d).is_some() => Some(d.to_owned()),
        Some(_) => return Err(bad("dates are YYYY-MM-DD")),
    };
    let kinds = categories::chosen(fields)
        .map_err(|c| GatewayError::Malformed(format!("unknown kind of record {c:?}")))?;
    let held = categories::share_resource_types(&document);
    if let Some(c) = kinds
        .iter()
        .find(|c| !held.is_empty() && !c.resource_types.iter().all(|t| held.iter().any(|h| h == t)))
    {
        return Err(GatewayError::Malformed(format!(
            "narrowing cannot add the kind of record {:?}",
            c.code
        )));
    }
    // Every category kept of a share of all data changes nothing.
    let keeps_all = held.is_empty() && kinds.len() == categories::DATA_CATEGORIES.len();
    let kinds_change = !kinds.is_empty() && !keeps_all;
    if purposes.is_empty() && until.is_none() && !kinds_change {
        return Err(bad(
            "choose the purposes or kinds of record to keep, or an earlier end",
        ));
    }
    let root = &mut document["provision"];
    let day = |v: &Value| v.as_str().map(|s| s.chars().take(10).collect::<String>());
    if let Some(u) = &until {
        if day(&root["period"]["end"]).is_some_and(|end| *u > end) {
            return Err(bad("narrowing can only end a share earlier"));
        }
        if day(&root["period"]["start"]).is_some_and(|start| *u < start) {
            return Err(bad("the end of the period is before its start"));
        }
        if !root["period"].is_object() {
            root["period"] = json!({});
        }
        root["period"]["end"] = Value::from(u.clone());
    }
    if kinds_change {
        root["class"] = categories::class_of(&kinds);
    }
    if !purposes.is_empty() {
        root["purpose"] = purposes
            .iter()
            .map(|p| json!({"system": assent_consent::ACT_REASON, "code": p}))
            .collect();
    }
    if let Some(o) = document.as_object_mut() {
        o.remove("meta");
    }
    document["dateTime"] = Value::from(format_instant(now_secs() as i64 * 1000));
    Ok(document)
}

/// `POST /portal/revoke`: revokes the consent the form names, if the rule lets this patient
/// (a consent of anyone else is refused by `consent_access::authorize`).
pub async fn revoke(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
    portal: PortalData,
) -> Result<HttpResponse, GatewayError> {
    let Posted {
        fields,
        patient,
        mut access,
    } = match posted(&req, &portal, &state, &body, ConsentAction::Revoke).await {
        Ok(p) => p,
        Err(page) => return Ok(page),
    };
    let outcome = async {
        let id = consent_field(&fields)?;
        let revoked = revoke_checked(
            &state,
            &patient.caller,
            &mut access,
            id,
            RevocationReason::PatientRequest,
        )
        .await?;
        Ok(html_page(
            StatusCode::OK,
            pages::changed(
                "Access revoked",
                &revoked.consent_id,
                revoked.version,
                &revoked.tx_id,
                revoked.updated_at,
            ),
        ))
    }
    .await;
    access.finish(&state, as_page(outcome)).await
}

/// The disclosures page's period.
#[derive(Debug, Default, Deserialize)]
pub struct PeriodQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

impl PeriodQuery {
    /// The receipt filter of every identity the patient's context manages, in the period.
    fn filter(&self, state: &AppState, patient: &Patient) -> Result<ReceiptFilter, GatewayError> {
        let key = state.consents.key();
        let mut keys = patient
            .identities
            .iter()
            .map(|p| key.patient(&p.to_string()));
        let mut filter = ReceiptFilter {
            patient_key: keys.next(),
            also_patient_keys: keys.collect(),
            ..ReceiptFilter::default()
        };
        let bad = || GatewayError::Malformed("dates are YYYY-MM-DD".to_owned());
        if !self.from.trim().is_empty() {
            filter.from_ms = Some(date_range(self.from.trim()).ok_or_else(bad)?.0);
        }
        if !self.to.trim().is_empty() {
            filter.to_ms = Some(date_range(self.to.trim()).ok_or_else(bad)?.1);
        }
        Ok(filter)
    }
}

/// The accesses of the patient in the period, newest first, as disclosures.
async fn disclosures_of(
    state: &AppState,
    patient: &Patient,
    query: &PeriodQuery,
    access: &mut ApiAccess,
    limit: i64,
) -> Result<Vec<Disclosure>, GatewayError> {
    let filter = query.filter(state, patient)?;
    access.set_site(&patient.grant_target().site);
    for identity in &patient.identities {
        access.add_patient(&identity.site, &identity.id);
    }
    let page = newest_first(&state.store, filter, None, limit).await?;
    page.rows
        .iter()
        .map(|row| {
            let d = decode(row).ok_or(GatewayError::Internal)?;
            Ok(Disclosure::from_receipt(&d.receipt, Some(&d.subjects)))
        })
        .collect()
}

/// `GET /portal/disclosures?from=&to=`: Who saw my records.
pub async fn disclosures(
    req: HttpRequest,
    query: web::Query<PeriodQuery>,
    state: web::Data<AppState>,
    portal: PortalData,
) -> Result<HttpResponse, GatewayError> {
    let patient = match signed_in(&req, &portal, &state).await {
        Ok(p) => p,
        Err(page) => return Ok(page),
    };
    let mut access = ApiAccess::new(
        AccessKind::Audit(AuditAction::Disclosures),
        &patient.caller,
        &req,
    );
    let outcome = async {
        let list = disclosures_of(&state, &patient, &query, &mut access, PAGE_SIZE).await?;
        let mut actors: Vec<String> = list.iter().map(|d| d.who.clone()).collect();
        actors.sort();
        actors.dedup();
        let names = known_names(&state, actors).await;
        let you = patient.caller.verified.actor.as_deref().map(str::to_owned);
        let csv = format!(
            "/portal/disclosures.csv?{}",
            url::form_urlencoded::Serializer::new(String::new())
                .append_pair("from", &query.from)
                .append_pair("to", &query.to)
                .finish()
        );
        Ok(html_page(
            StatusCode::OK,
            pages::disclosures(&list, &names, you.as_deref(), &query.from, &query.to, &csv),
        ))
    }
    .await;
    access.finish(&state, as_page(outcome)).await
}

/// `GET /portal/disclosures.csv?from=&to=`: the same accesses as CSV, a receipt id per row.
pub async fn disclosures_csv(
    req: HttpRequest,
    query: web::Query<PeriodQuery>,
    state: web::Data<AppState>,
    portal: PortalData,
) -> Result<HttpResponse, GatewayError> {
    download(req, query, state, portal, Download::Csv).await
}

/// `GET /portal/disclosures.pdf?from=&to=`: the same accesses and receipt ids as the CSV, as
/// a PDF (`portal/pdf.rs`).
pub async fn disclosures_pdf(
    req: HttpRequest,
    query: web::Query<PeriodQuery>,
    state: web::Data<AppState>,
    portal: PortalData,
) -> Result<HttpResponse, GatewayError> {
    download(req, query, state, portal, Download::Pdf).await
}

/// The forms "Who saw my records" is downloaded in.
#[derive(Clone, Copy)]
enum Download {
    Csv,
    Pdf,
}

/// A download of the patient's accesses in the period: signed in, receipted as an export,
/// the same rows (and receipt ids) whatever the form.
async fn download(
    req: HttpRequest,
    query: web::Query<PeriodQuery>,
    state: web::Data<AppState>,
    portal: PortalData,
    form: Download,
) -> Result<HttpResponse, GatewayError> {
    let patient = match signed_in(&req, &portal, &state).await {
        Ok(p) => p,
        Err(page) => return Ok(page),
    };
    let mut access = ApiAccess::new(
        AccessKind::Audit(AuditAction::Export),
        &patient.caller,
        &req,
    );
    let outcome = async {
        let list = disclosures_of(&state, &patient, &query, &mut access, CSV_MAX).await?;
        let (content_type, filename, body) = match form {
            Download::Csv => (
                "text/csv; charset=utf-8",
                "attachment; filename=\"who-saw-my-records.csv\"",
                disclosures_csv_text(&list).into_bytes(),
            ),
            Download::Pdf => {
                let period = match (query.from.trim(), query.to.trim()) {
                    ("", "") => "All time".to_owned(),
                    (from, "") => format!("From {from}"),
                    ("", to) => format!("Until {to}"),
                    (from, to) => format!("From {from} to {to}"),
                };
                let body =
                    tokio::task::spawn_blocking(move || pdf::disclosures_pdf(&list, &period))
                        .await
                        .map_err(|_| GatewayError::Internal)?;
                (
                    "application/pdf",
                    "attachment; filename=\"who-saw-my-records.pdf\"",
                    body,
                )
            }
        };
        Ok(HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, content_type))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::CONTENT_DISPOSITION, filename))
            .body(body))
    }
    .await;
    access.finish(&state, as_page(outcome)).await
}

/// The CSV of `list`: a header, then one row per access with its receipt id.
fn disclosures_csv_text(list: &[Disclosure]) -> String {
    let mut out = String::from(
        "receipt_id,when,who,organization,site,what,purpose,decision,basis,emergency\r\n",
    );
    for d in list {
        let fields = [
            d.receipt_id.as_str(),
            d.when.as_str(),
            d.who.as_str(),
            d.organization.as_deref().unwrap_or_default(),
            d.site.as_deref().unwrap_or_default(),
            d.what.as_str(),
            d.why.as_deref().unwrap_or_default(),
            d.decision,
            d.basis.as_str(),
            d.emergency.as_deref().unwrap_or_default(),
        ];
        let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&row.join(","));
        out.push_str("\r\n");
    }
    out
}

/// One CSV field, quoted, with a leading formula character neutralised for spreadsheets.
fn csv_field(value: &str) -> String {
    let guarded = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    format!("\"{}\"", guarded.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_compare_whole() {
        assert!(csrf_holds(Some("abc"), "abc"));
        assert!(!csrf_holds(Some("abd"), "abc"));
        assert!(!csrf_holds(Some("ab"), "abc"));
        assert!(!csrf_holds(Some(""), "abc"));
        assert!(!csrf_holds(None, "abc"));
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_neutralised() {
        assert_eq!(csv_field("a\"b"), "\"a\"\"b\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "\"'=HYPERLINK(1)\"");
    }

    #[test]
    fn a_grant_is_written_for_the_session_patient_only() {
        let target = SitePatient::new("st-mary", "p1");
        let fields = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect()
        };
        let chosen = grant_document(
            &fields(&[
                ("practitioner", ""),
                ("chosen", "PractitionerRole/nurse-carol"),
                ("purpose", "TREAT"),
            ]),
            &target,
        )
        .unwrap();
        assert_eq!(
            chosen["provision"]["actor"][0]["reference"]["reference"],
            "PractitionerRole/nurse-carol"
        );
        let doc = grant_document(
            &fields(&[
                ("practitioner", "dr-alice"),
                ("purpose", "TREAT"),
                ("until", "2027-03-01"),
                // A field naming another patient is not read.
                ("patient", "Patient/p2"),
            ]),
            &target,
        )
        .unwrap();
        assert_eq!(doc["patient"]["reference"], "Patient/p1");
        assert_eq!(
            doc["provision"]["actor"][0]["reference"]["reference"],
            "Practitioner/dr-alice"
        );
        assert_eq!(doc["provision"]["period"]["end"], "2027-03-01");
        assert!(parse_consent_any(&doc).is_ok());
        for bad in [
            vec![("practitioner", "Patient/p2"), ("purpose", "TREAT")],
            vec![("practitioner", "dr-alice")],
            vec![("practitioner", "dr-alice"), ("purpose", "BTG")],
            vec![("practitioner", "a/b/c"), ("purpose", "TREAT")],
            vec![
                ("practitioner", "dr-alice"),
                ("purpose", "TREAT"),
                ("from", "2027-01-01"),
                ("until", "2026-01-01"),
            ],
        ] {
            assert!(grant_document(&fields(&bad), &target).is_err(), "{bad:?}");
        }
    }
}
