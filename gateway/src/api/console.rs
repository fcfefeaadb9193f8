//! The compliance console at `/console/`: server-rendered pages for compliance officers to
//! search the access log (patient, practitioner, site, dates, decision, break-glass only;
//! a patient or practitioner by plain id too), see a receipt and whether it verifies, and
//! export the current filter as CSV or NDJSON (the form `assent verify` checks offline). Its
//! own errors are pages too (HTML with the status), never an OperationOutcome.
//!
//! Sign-in: OpenID Connect authorization code with PKCE at the first trusted issuer
//! (`assent_auth::LoginClient`); the access token it yields is verified like any bearer token
//! and must carry the audit role (`audit::may_audit`). The session is a signed cookie
//! (`HttpOnly`, `SameSite=Strict`, `Secure` behind https, path `/console`); the sign-in state
//! (state, nonce, PKCE verifier) a second signed cookie scoped to the callback, `SameSite=Lax`
//! so that the identity provider's redirect back carries it.
//!
//! Every page that reads the audit log (the list, a receipt, the CSV export) leaves a receipt
//! like the audit API's (`api_receipt.rs`), its actor the signed-in caller id.
//!
//! CSRF: every page is a GET that changes nothing; the only state change is the callback,
//! which is bound to the sign-in cookie's `state`. Pages carry a strict Content Security
//! Policy (no script at all, styles from `/console/style.css` only, no framing). Nothing
//! clear is logged: reading the audit log is itself an access to health information.
//!
//! Leaves out the data (`services/audit.rs`: the receipt query, the pager, verification,
//! export; the console hands it its typed filter) and the HTML (`pages`).

mod pages;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use assent_receipts::{AccessKind, AuditAction, Disclosure};
use maud::Markup;
use serde::Deserialize;

use crate::api::audit::{export_response, read_receipt};
use crate::api::receipt::ApiAccess;
use crate::api::signin::{
    CallbackQuery, SignIn, SignInSetupError, end_session, html_page, new_session_id, session_ended,
};
pub use crate::api::signin::{CookieSigner, PendingLogin, Session, now_secs};
use crate::config::ConsoleConfig;
use crate::http::access::may_audit;
use crate::http::error::GatewayError;
use crate::http::state::AppState;
use crate::services::audit::{
    AuditError, AuditQuery, ExportFormat, count_matching, export_stream, network_subjects,
    newest_first, parse_cursor, subjects_of,
};
use crate::services::network::NetworkIndex;
use crate::store::ReceiptFilter;
pub use pages::FilterForm;

const SESSION_COOKIE: &str = "assent_console";
/// Accesses per page.
const PAGE_SIZE: i64 = 50;
/// The largest export "Verify this export" reads into memory (bytes of NDJSON).
const VERIFY_MAX_BYTES: usize = 64 * 1024 * 1024;

/// The console's sign-in client and cookie key.
pub struct Console {
    signin: SignIn,
    config: ConsoleConfig,
}

impl Console {
    /// Discovers the first trusted issuer for the sign-in flow; cookies are signed with
    /// `session_key` (`console_session_secret_hex` of the key file or the environment).
    pub async fn start(
        config: &ConsoleConfig,
        issuer: Option<&url::Url>,
        public_base: &str,
        session_key: Option<crate::config::keys::Secret>,
    ) -> Result<Console, SignInSetupError> {
        let signin = SignIn::start_realm(
            "audit.console",
            "console",
            "/console",
            issuer,
            &config.client_id,
            public_base,
            session_key,
        )
        .await?;
        Ok(Console {
            signin,
            config: config.clone(),
        })
    }
}

/// The console's sign-in, registered beside the state when `audit.console` is configured.
type ConsoleData = Option<web::Data<Console>>;

fn console(console: &ConsoleData) -> Option<&Console> {
    console.as_ref().map(|c| c.get_ref())
}

/// The page of a console that is not configured: not found.
fn not_configured() -> HttpResponse {
    error_page(None, &GatewayError::NotFound)
}

/// The console's own error, as a page with the error's status.
fn error_page(who: Option<&str>, error: &GatewayError) -> HttpResponse {
    let status = actix_web::ResponseError::status_code(error);
    html_page(
        status,
        pages::error(who, status.as_u16(), error.code(), &error.to_string()),
    )
}

/// A handler's outcome with its error as a page (what the receipt then records is the page's
/// status).
fn as_page(
    who: &str,
    outcome: Result<HttpResponse, GatewayError>,
) -> Result<HttpResponse, GatewayError> {
    Ok(outcome.unwrap_or_else(|e| error_page(Some(who), &e)))
}

fn ok_page(markup: Markup) -> HttpResponse {
    html_page(actix_web::http::StatusCode::OK, markup)
}

/// The signed-in session, if any.
fn session(req: &HttpRequest, console: &Console) -> Option<Session> {
    let cookie = req.cookie(SESSION_COOKIE)?;
    console.signin.cookies.read_session(cookie.value())
}

/// `GET /console/style.css`
pub async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/css; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "max-age=3600"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(pages::STYLESHEET)
}

/// `GET /console/login`: to the identity provider, with fresh state, nonce and PKCE.
pub async fn login(signin: ConsoleData) -> Result<HttpResponse, GatewayError> {
    let Some(console) = console(&signin) else {
        return Ok(not_configured());
    };
    Ok(console.signin.start(&console.config.scope))
}

/// `GET /console/callback`: checks the state, exchanges the code, verifies the tokens and the
/// audit role, and opens the session.
pub async fn callback(
    req: HttpRequest,
    query: web::Query<CallbackQuery>,
    state: web::Data<AppState>,
    signin: ConsoleData,
) -> Result<HttpResponse, GatewayError> {
    let Some(console) = console(&signin) else {
        return Ok(not_configured());
    };
    let refused = |message: &str| {
        html_page(
            actix_web::http::StatusCode::FORBIDDEN,
            pages::sign_in(Some(message)),
        )
    };
    let caller = match console.signin.finish(&req, &query, &state).await {
        Ok((caller, _token)) => caller,
        Err(message) => return Ok(refused(message)),
    };
    if !may_audit(&caller, &state) {
        tracing::info!(route = "console", "console sign-in refused: no audit role");
        return Ok(refused("Your account does not have the audit role."));
    }
    let expires_at = (now_secs() + console.config.session_ttl_secs)
        .min(caller.verified.expires_at.max(now_secs()));
    let session = Session {
        caller: caller.id.clone(),
        expires_at,
        id: new_session_id(),
    };
    let session_cookie = console.signin.session_cookie(
        SESSION_COOKIE,
        console.signin.cookies.session(&session),
        expires_at,
    );
    let mut response = ok_page(pages::signed_in(&caller.id));
    response
        .add_cookie(&session_cookie)
        .map_err(|_| GatewayError::Internal)?;
    response
        .add_cookie(&console.signin.clear_login())
        .map_err(|_| GatewayError::Internal)?;
    Ok(response)
}

/// `GET /console/logout`: ends the session on the server (`signin::end_session`: a copy of
/// the cookie is refused from now on), then removes the cookie.
pub async fn logout(
    req: HttpRequest,
    state: web::Data<AppState>,
    signin: ConsoleData,
) -> Result<HttpResponse, GatewayError> {
    let Some(console) = console(&signin) else {
        return Ok(not_configured());
    };
    if let Some(session) = session(&req, console) {
        end_session(&state, &session.id, session.expires_at).await?;
    }
    let gone = console.signin.removed_cookie(SESSION_COOKIE);
    let mut response = ok_page(pages::sign_in(Some("You are signed out.")));
    response
        .add_cookie(&gone)
        .map_err(|_| GatewayError::Internal)?;
    Ok(response)
}

/// The console's filter parameters.
#[derive(Debug, Default, Deserialize)]
pub struct FilterQuery {
    #[serde(default)]
    patient: String,
    #[serde(default)]
    practitioner: String,
    #[serde(default)]
    site: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    break_glass: Option<String>,
    /// Paging: the last access shown (`{time_ms}.{receipt_id}`).
    #[serde(default)]
    before: Option<String>,
}

impl FilterQuery {
    fn form(&self) -> FilterForm {
        FilterForm {
            patient: self.patient.clone(),
            practitioner: self.practitioner.clone(),
            site: self.site.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            decision: self.decision.clone(),
            break_glass: self.break_glass.as_deref() == Some("on"),
        }
    }

    /// The same filter as the audit API's query (one set of checks for both). A plain
    /// practitioner id is `Practitioner/{id}`; a plain patient id is the chosen site's patient
    /// (refused without a site: ids are the sites' own).
    fn audit_query(&self) -> Result<AuditQuery, AuditError> {
        let given = |value: &str| Some(value.trim().to_owned()).filter(|v| !v.is_empty());
        let decision = self.decision.trim();
        let practitioner = given(&self.practitioner).map(|p| {
            if p.contains('/') || p.contains('@') {
                p
            } else {
                format!("Practitioner/{p}")
            }
        });
        let patient = given(&self.patient);
        if patient
            .as_deref()
            .is_some_and(|p| !p.contains('/') && !NetworkIndex::is_network_id(p))
            && given(&self.site).is_none()
        {
            return Err(AuditError::Malformed(
                "a patient's plain id needs a site: choose the site, or write site/Patient/id"
                    .to_owned(),
            ));
        }
        Ok(AuditQuery {
            patient,
            agent: practitioner,
            site: given(&self.site),
            dates: [("ge", &self.from), ("le", &self.to)]
                .into_iter()
                .filter_map(|(prefix, date)| given(date).map(|d| format!("{prefix}{d}")))
                .collect(),
            decisions: match decision {
                "" => Vec::new(),
                d => d.split(',').map(str::to_owned).collect(),
            },
            break_glass: (self.break_glass.as_deref() == Some("on")).then(|| "true".to_owned()),
            ..AuditQuery::default()
        })
    }

    /// The receipt filter of this form, and the patients it names by identity. A network
    /// patient (`network/Patient/{id}`, or its id alone) is widened as the disclosures report
    /// widens it: the federated requests that named it and every access to each site patient
    /// linked to it, at every site.
    async fn filter(&self, state: &AppState) -> Result<(ReceiptFilter, Vec<String>), AuditError> {
        let mut audit = self.audit_query()?;
        let site = Some(self.site.trim()).filter(|s| !s.is_empty());
        let network = match audit.patient.as_deref() {
            Some(patient) => network_subjects(&state.network, patient, site).await?,
            None => None,
        };
        let Some(network) = network else {
            let (filter, patient) = audit.filter(state.consents.key())?;
            return Ok((filter, patient.into_iter().collect()));
        };
        audit.patient = None;
        audit.site = None;
        let (mut filter, _) = audit.filter(state.consents.key())?;
        let key = state.consents.key();
        filter.patient_key = Some(key.patient(&network.identity));
        filter.also_patient_keys = network.members.iter().map(|m| key.patient(m)).collect();
        let identities = std::iter::once(network.identity)
            .chain(network.members)
            .collect();
        Ok((filter, identities))
    }

    /// The console's own query string for this filter (links keep it).
    fn console_query(&self) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("patient", &self.patient),
            ("practitioner", &self.practitioner),
            ("site", &self.site),
            ("from", &self.from),
            ("to", &self.to),
            ("decision", &self.decision),
        ] {
            if !value.is_empty() {
                q.append_pair(name, value);
            }
        }
        if self.break_glass.as_deref() == Some("on") {
            q.append_pair("break_glass", "on");
        }
        q.finish()
    }
}

/// Why a console page has no signed-in caller.
enum NotSignedIn {
    /// No console is configured: its pages are not found.
    NotConfigured,
    /// No valid session cookie: the sign-in page.
    SignedOut,
}

impl NotSignedIn {
    fn page(self) -> HttpResponse {
        match self {
            NotSignedIn::NotConfigured => not_configured(),
            NotSignedIn::SignedOut => signed_out(),
        }
    }
}

/// The signed-in caller's session, or why there is none (no cookie that opens, expired, or
/// ended by a sign-out).
async fn signed_in(
    req: &HttpRequest,
    signin: &ConsoleData,
    state: &AppState,
) -> Result<Session, NotSignedIn> {
    let console = console(signin).ok_or(NotSignedIn::NotConfigured)?;
    let session = session(req, console).ok_or(NotSignedIn::SignedOut)?;
    if session_ended(state, &session.id).await {
        return Err(NotSignedIn::SignedOut);
    }
    Ok(session)
}

fn signed_out() -> HttpResponse {
    html_page(
        actix_web::http::StatusCode::UNAUTHORIZED,
        pages::sign_in(None),
    )
}

/// `GET /console/`: the access log with filters.
pub async fn index(
    req: HttpRequest,
    query: web::Query<FilterQuery>,
    state: web::Data<AppState>,
    signin: ConsoleData,
) -> Result<HttpResponse, GatewayError> {
    let session = match signed_in(&req, &signin, &state).await {
        Ok(session) => session,
        Err(why) => return Ok(why.page()),
    };
    let mut access = ApiAccess::for_console(
        AccessKind::Audit(AuditAction::Search),
        &session.caller,
        &req,
    );
    let outcome = search_page(&query, &state, &session, &mut access).await;
    access
        .finish(&state, as_page(&session.caller, outcome))
        .await
}

/// The list page; its receipt names the patient filtered on and every patient of the
/// accesses shown.
async fn search_page(
    query: &FilterQuery,
    state: &web::Data<AppState>,
    session: &Session,
    access: &mut ApiAccess,
) -> Result<HttpResponse, GatewayError> {
    let mut sites: Vec<String> = state.sites.keys().cloned().collect();
    sites.sort();
    let form = query.form();
    let console_query = query.console_query();
    let export_href = format!("/console/export.csv?{console_query}");
    let checked = query.filter(state).await;
    let (filter, patients) = match checked {
        Ok(s) => s,
        Err(e) => {
            let message = match &e {
                AuditError::Malformed(m) => format!("These filters cannot be used: {m}."),
                other => other.to_string(),
            };
            return Ok(html_page(
                actix_web::http::StatusCode::BAD_REQUEST,
                pages::search(
                    &session.caller,
                    &form,
                    &sites,
                    &pages::Listing::default(),
                    &export_href,
                    Some(&message),
                ),
            ));
        }
    };
    let cursor = query.before.as_deref().and_then(parse_cursor);
    for patient in &patients {
        access.add_patient_identity(patient);
    }
    let total = count_matching(&state.store, filter.clone()).await?;
    let page = newest_first(&state.store, filter, cursor, PAGE_SIZE).await?;
    for row in &page.rows {
        for patient in subjects_of(row).patients {
            access.add_patient_identity(&patient);
        }
    }
    let names = names_of(state, &page.rows).await;
    let older = page.next_cursor().map(|before| {
        let mut q = url::form_urlencoded::Serializer::new(console_query.clone());
        q.append_pair("before", &before);
        format!("/console/?{}", q.finish())
    });
    Ok(ok_page(pages::search(
        &session.caller,
        &form,
        &sites,
        &pages::Listing {
            rows: &page.rows,
            names: Some(&names),
            total: Some(total),
            older_href: older.as_deref(),
        },
        &export_href,
        None,
    )))
}

/// At most this many patients' names are looked up for one page (a page shows fewer).
const PATIENT_NAMES_MAX: usize = 100;

/// The names known for the practitioners and patients of `rows` (shown beside their ids):
/// a practitioner's from the store (the name its tokens last gave), a patient's from the
/// patient's consents (`Consent.patient.display`), read through the consent service as a
/// decision reads them, so on every ledger backend (documents fetched by hash and verified).
/// A failure shows the ids alone: names are never needed to read the log.
async fn names_of(state: &AppState, rows: &[crate::store::ReceiptRow]) -> pages::Names {
    let mut actors: Vec<String> = rows.iter().map(|r| r.actor.clone()).collect();
    actors.sort();
    actors.dedup();
    let mut patients: Vec<String> = rows.iter().flat_map(pages::receipt_patients).collect();
    patients.sort();
    patients.dedup();
    let store = state.store.clone();
    let callers = match tokio::task::spawn_blocking(move || store.caller_names(&actors)).await {
        Ok(Ok(callers)) => callers,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "console: names could not be read; ids shown alone");
            Default::default()
        }
        Err(_) => Default::default(),
    };
    let mut names = pages::Names {
        callers,
        patients: Default::default(),
    };
    // Patients named by a site's id: `{site}/Patient/{id}` (those named by an identifier
    // alone have no site to ask).
    for identity in patients.iter().take(PATIENT_NAMES_MAX) {
        let Some((site, id)) = identity.split_once("/Patient/") else {
            continue;
        };
        if !state.sites.contains_key(site) || id.is_empty() || id.contains('/') {
            continue;
        }
        match state.consents.list(site, id).await {
            Ok(consents) => {
                if let Some(name) = consents
                    .iter()
                    .rev()
                    .find_map(|(_, document)| crate::api::consent::patient_display(document))
                {
                    names.patients.insert(identity.clone(), name.to_owned());
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "console: patients' names could not be read; ids shown alone");
                break;
            }
        }
    }
    names
}

/// `GET /console/receipts/{id}`: one receipt and whether it verifies.
pub async fn receipt(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
    signin: ConsoleData,
) -> Result<HttpResponse, GatewayError> {
    let session = match signed_in(&req, &signin, &state).await {
        Ok(session) => session,
        Err(why) => return Ok(why.page()),
    };
    if path.len() > 64 || path.chars().any(char::is_control) {
        return Ok(error_page(Some(&session.caller), &GatewayError::NotFound));
    }
    let mut access =
        ApiAccess::for_console(AccessKind::Audit(AuditAction::Read), &session.caller, &req);
    let outcome = async {
        let detail = read_receipt(&state, &path, &mut access).await?;
        let disclosure = detail
            .decoded
            .as_ref()
            .map(|d| Disclosure::from_receipt(&d.receipt, Some(&d.subjects)));
        let names = names_of(&state, std::slice::from_ref(&detail.row)).await;
        Ok(ok_page(pages::receipt(
            &session.caller,
            &detail,
            disclosure.as_ref(),
            &names,
        )))
    }
    .await;
    access
        .finish(&state, as_page(&session.caller, outcome))
        .await
}

/// `GET /console/export.csv?…filters`: the current filter as CSV, streamed.
pub async fn export_csv(
    req: HttpRequest,
    query: web::Query<FilterQuery>,
    state: web::Data<AppState>,
    signin: ConsoleData,
) -> Result<HttpResponse, GatewayError> {
    export(req, query, state, signin, ExportFormat::Csv).await
}

/// `GET /console/export.ndjson?…filters`: the current filter as NDJSON with proofs and
/// anchors (what `assent verify` checks offline), streamed.
pub async fn export_ndjson(
    req: HttpRequest,
    query: web::Query<FilterQuery>,
    state: web::Data<AppState>,
    signin: ConsoleData,
) -> Result<HttpResponse, GatewayError> {
    export(req, query, state, signin, ExportFormat::Ndjson).await
}

async fn export(
    req: HttpRequest,
    query: web::Query<FilterQuery>,
    state: web::Data<AppState>,
    signin: ConsoleData,
    format: ExportFormat,
) -> Result<HttpResponse, GatewayError> {
    let session = match signed_in(&req, &signin, &state).await {
        Ok(session) => session,
        Err(why) => return Ok(why.page()),
    };
    let mut access = ApiAccess::for_console(
        AccessKind::Audit(AuditAction::Export),
        &session.caller,
        &req,
    );
    let outcome =
        query
            .filter(&state)
            .await
            .map_err(GatewayError::from)
            .map(|(filter, patients)| {
                for patient in &patients {
                    access.add_patient_identity(patient);
                }
                export_response(state.clone(), filter, format)
            });
    access
        .finish(&state, as_page(&session.caller, outcome))
        .await
}

/// `GET /console/verify?…filters`: "Verify this export": the current filter's NDJSON export
/// checked on the server as `assent verify` checks it offline (every receipt's hash, chain
/// link, inclusion proof, and its batch's root against the ledger's anchor), the report shown.
/// A filtered export may skip receipts of a chain: gaps are not failures (`--complete` is for
/// the whole export, offline).
pub async fn verify(
    req: HttpRequest,
    query: web::Query<FilterQuery>,
    state: web::Data<AppState>,
    signin: ConsoleData,
) -> Result<HttpResponse, GatewayError> {
    let session = match signed_in(&req, &signin, &state).await {
        Ok(session) => session,
        Err(why) => return Ok(why.page()),
    };
    let mut access = ApiAccess::for_console(
        AccessKind::Audit(AuditAction::Export),
        &session.caller,
        &req,
    );
    let outcome: Result<HttpResponse, GatewayError> = async {
        let (filter, patients) = query.filter(&state).await.map_err(GatewayError::from)?;
        for patient in &patients {
            access.add_patient_identity(patient);
        }
        let report = verify_export(&state, filter).await?;
        let back = format!("/console/?{}", query.console_query());
        Ok(ok_page(pages::verified(&session.caller, &report, &back)))
    }
    .await;
    access
        .finish(&state, as_page(&session.caller, outcome))
        .await
}

/// The filter's NDJSON export, verified against the anchors the ledger holds for the gateways
/// it names.
async fn verify_export(
    state: &AppState,
    filter: crate::store::ReceiptFilter,
) -> Result<assent_receipts::VerifyReport, GatewayError> {
    use futures_util::StreamExt as _;

    let mut export = Vec::new();
    let mut chunks = std::pin::pin!(export_stream(
        state.store.clone(),
        filter,
        ExportFormat::Ndjson
    ));
    while let Some(chunk) = chunks.next().await {
        export.extend_from_slice(&chunk?);
        if export.len() > VERIFY_MAX_BYTES {
            return Err(GatewayError::Malformed(
                "this export is too large to verify here: download it as NDJSON and run assent verify"
                    .to_owned(),
            ));
        }
    }
    let text = String::from_utf8(export).map_err(|_| GatewayError::Internal)?;
    let mut gateways = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line)
            && let Some(id) = v["receipt"]["gateway_id"].as_str()
        {
            gateways.insert(id.to_owned());
        }
    }
    let ledger = state.consents.ledger();
    let mut anchors = assent_receipts::AnchorSet::new();
    for gateway_id in &gateways {
        let gateway_key = state.consents.key().gateway(gateway_id);
        for batch_id in 1.. {
            let record = ledger
                .anchor(&gateway_key, batch_id)
                .await
                .map_err(|_| GatewayError::StoreUnavailable)?;
            let Some(record) = record else { break };
            if !anchors.insert_record(gateway_id, &record) {
                return Err(GatewayError::Internal);
            }
        }
    }
    let mut verifier =
        assent_receipts::Verifier::new(anchors, assent_receipts::VerifyOptions::default());
    for line in text.lines() {
        verifier.check_line(line);
    }
    Ok(verifier.finish())
}
