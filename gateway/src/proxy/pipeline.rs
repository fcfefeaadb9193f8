//! The request path of `/fhir/{site}/…` over one [`Exchange`], as two lists.
//!
//! **Inbound**, each concern reading and changing the one request as the site will see it:
//! authenticate → resolve the site → purpose of use → parse (and negotiate the client's
//! version, read the form) → paging token → operation allow-list → dialect (into the site's
//! version) → scopes (the launch context bound at this site, `http/patient_context.rs`;
//! authorize, narrow; shaping taken out) → consent (decide) → site adapter
//! (into the site's identifiers and codes) → forward.
//!
//! **Outbound** (`answer.rs`), each concern's other half in reverse: site adapter → release
//! (scopes and consent on every resource; paging settles) → links → dialect (into the client's
//! version) → shaping → receipt → record → break-glass webhook.
//!
//! **Invariant:** the record phase runs for every request that reached the pipeline, whatever
//! the outcome; the forward phase runs only with the `Permit` the decide phase returned.
//! **Invariant:** every authenticated request's response is released only after its receipt
//! is durable (the receipt phase); when it cannot be, the answer is 503 with no data.
//! This file is the security order on one screen; each concern lives in its own module.

use std::sync::Arc;

use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use assent_auth::PurposeOfUse;

use crate::http::caller::Caller;
use crate::http::error::GatewayError;
use crate::http::state::AppState;
use crate::proxy::adapter::Adapter;
use crate::proxy::answer::{self, Outbound};
use crate::proxy::consent::{self, ConsentRequest, Enforcer};
use crate::proxy::dialect;
use crate::proxy::exchange::{Exchange, SiteRequest, split_fhir_path};
use crate::proxy::federation::LegDeadline;
use crate::proxy::forward;
use crate::proxy::paging::{self, Paging};
use crate::proxy::receipt::{self, RECEIPTS_ON};
use crate::proxy::release::{Release, RequestFacts};
use crate::proxy::scopes;
use crate::services::upstream::{Site, WorkerClients};

/// Runs one exchange under `/fhir/{site}/`: inbound and outbound, then the receipt and the
/// record whatever the outcome.
pub async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    clients: web::Data<WorkerClients>,
) -> HttpResponse {
    let mut ex = Exchange::new(&req, state.clock.now_millis());
    // A leg of a federated request gives up at its deadline, so that it still leaves its
    // receipt and record (`federation.rs`).
    let deadline = req.extensions().get::<LegDeadline>().map(|d| d.0);
    let ran = run(&mut ex, &req, payload, &state, &clients);
    let ran = match deadline {
        Some(at) => tokio::time::timeout_at(tokio::time::Instant::from_std(at), ran)
            .await
            .unwrap_or(Err(GatewayError::UpstreamTimeout)),
        None => ran.await,
    };
    let mut response = match ran {
        Ok(response) => response,
        Err(error) => {
            ex.failed(&error);
            error.error_response()
        }
    };
    if RECEIPTS_ON {
        response = receipt::receipt(&mut ex, &state, response).await;
    }
    receipt::record(&ex, &state, response.status());
    receipt::notify_break_glass(&ex, &state, response.status());
    response
}

async fn run(
    ex: &mut Exchange,
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    clients: &WorkerClients,
) -> Result<HttpResponse, GatewayError> {
    // authenticate (a verified token from a trusted issuer), resolve the site, the purpose
    let caller = Arc::new(state.callers.authenticate(req.headers()).await?);
    ex.caller = Some(caller.clone());
    let site = resolve_site(state, req)?;
    ex.site = Some(site.clone());
    let client = clients.get(&site.id).ok_or(GatewayError::Internal)?;
    ex.purpose = purpose(&caller, &site)?;
    let Exchange {
        id,
        purpose,
        break_glass,
        asked,
        request,
        outcome,
        ..
    } = ex;

    // inbound: parse, with the FHIR version the client reads and the form of `POST _search`
    let request = request.insert(SiteRequest::parse(req)?);
    *asked = Some(request.asked());
    let (version, default) = (site.config.fhir_version, state.config.fhir.default_version);
    let mut dialect = dialect::negotiate(req.headers(), req.query_string(), version, default)?;
    let body_limit = site
        .config
        .max_body_bytes
        .unwrap_or(state.config.max_body_bytes);
    request.read_form(req, payload, body_limit).await?;
    paging::check_token(
        &state.signer,
        req.path(),
        &site.id,
        &caller.id,
        &request.fhir,
        id,
    )?;
    request
        .fhir
        .allow_operation(site.config.operation_rules())?;
    dialect.request(request)?;
    let patient = caller
        .patient_context
        .patient_at(&site.id, &state.network)?;
    let scopes = scopes::authorize(&caller.verified, patient, &request.fhir)?;
    let shape = request.settle_search(&scopes.narrowing(&request.fhir))?;
    *break_glass = consent::ask_break_glass(req.headers(), &caller, *purpose)?;
    let code = purpose.map(|p| p.code());
    let consent_request = ConsentRequest::new(&caller, code, &request.fhir, break_glass.as_ref());
    let mut enforcer = Enforcer::new(state, &site, client, &consent_request);
    let answered = async {
        let (permit, named) = enforcer.admit(request, outcome).await?;
        let mut adapter = Adapter::of(state, &site.id);
        adapter.request(request);
        let upstream_request = request.upstream(req, id);
        let facts = RequestFacts {
            fhir: &request.fhir,
            caller: &caller.verified,
            authorization: &scopes,
            named: named.as_deref(),
        };
        let mut release = Release {
            enforcer: &mut enforcer,
            facts,
        };
        let paging = Paging {
            site: &site,
            permit: &permit,
            client,
            request_id: id,
            signer: &state.signer,
            caller_id: &caller.id,
        };
        if shape.is_count() {
            let form = request.form.as_deref();
            let total = paging
                .count(&mut release, &mut adapter, form, outcome)
                .await?;
            return answer::count(&dialect, total, &request.fhir.query);
        }
        let response = forward::forward(state, &permit, &site, client, &upstream_request).await?;

        // outbound
        let outbound = Outbound {
            state,
            site: &site,
            request_id: id,
            release,
            paging,
            adapter,
            dialect,
            shape,
            outcome,
            notes: Default::default(),
        };
        outbound.answer(req.headers(), response).await
    }
    .await;
    // break-glass: the denies it overrode, whatever the outcome
    if let Some(bg) = break_glass {
        bg.note(enforcer.take_overrides());
    }
    answered
}

/// The site of `/fhir/{site}/…`.
fn resolve_site(state: &AppState, req: &HttpRequest) -> Result<Arc<Site>, GatewayError> {
    let (site_id, _) = split_fhir_path(req.path());
    state
        .sites
        .get(site_id)
        .cloned()
        .ok_or(GatewayError::UnknownSite)
}

/// The purpose of use: the caller's, else the site's default; refused when the site requires
/// one and there is none.
fn purpose(caller: &Caller, site: &Site) -> Result<Option<PurposeOfUse>, GatewayError> {
    let purpose = caller
        .verified
        .purpose
        .or_else(|| site.config.default_purpose());
    if purpose.is_none() && site.config.require_purpose {
        return Err(assent_auth::AuthError::PurposeRequired.into());
    }
    Ok(purpose)
}
