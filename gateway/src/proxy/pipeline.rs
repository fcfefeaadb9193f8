//! The request path of `/fhir/{site}/…`: named phases in a fixed order over one
//! [`RequestContext`]:
//!
//! `authenticate → resolve site → parse → decide → forward → filter → receipt → record`
//!
//! Translation between FHIR versions (`dialect.rs`) sits at the two ends of the site's
//! version: the request is put into the site's version right after parsing (so scopes,
//! consent and the forwarded request all speak the site's version), and the response is put
//! into the client's version last in the filter phase, after consent and scopes have decided
//! what is released and URLs are rewritten.
//!
//! **Invariant:** the record phase runs for every request that reached the pipeline, whatever
//! the outcome; the forward phase runs only with the `Permit` the decide phase returned.
//! **Invariant:** every authenticated request's response is released only after its receipt
//! is durable (the receipt phase); when it cannot be, the answer is 503 with no data.
//! This file is the security order on one screen; each phase's mechanics live in its own module.

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use assent_auth::PurposeOfUse;
use assent_consent::{Decision, Permit};
use assent_receipts::{AccessDecision, Receipt, ReceiptSubjects, ResourceEntry};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use assent_fhir::SitePatient;
use assent_fhir::compartment::{
    RequestPatients, SearchParam, parse_search, patients_of, request_patients,
};
use assent_fhir::shaping::{Shape, is_shaping_param};
use serde_json::json;

use crate::http::caller::Caller;
use crate::http::error::GatewayError;
use crate::http::observability::RequestId;
use crate::http::state::AppState;
use crate::proxy::capabilities;
use crate::proxy::consent::{self, ConsentRequest, Enforcer, PlacedPatient};
use crate::proxy::dialect::{self, Dialect};
use crate::proxy::release::{self, RequestFacts};
use crate::proxy::request::{self, FhirRequest};
use crate::proxy::rewrite;
use crate::proxy::scopes::{self, Authorization};
use crate::services::adapters;
use crate::services::break_glass::{self, BreakGlass};
use crate::services::receipts::PendingReceipt;
use crate::services::receipts::RECEIPT_HEADER;
use crate::services::request_log::RequestRecord;
use crate::services::upstream::WorkerClients;
use crate::services::upstream::{self, Site, UpstreamRequest};
use assent_adapters::site::SiteAdapter;

/// Everything the phases learn about one request.
pub struct RequestContext {
    pub request_id: String,
    pub started: Instant,
    /// The verified caller (actor, organization, scopes, token id, stable caller id).
    pub caller: Option<Arc<Caller>>,
    /// The purpose of use: the caller's, else the site's default; `None` where the site
    /// neither defaults nor requires one.
    pub purpose: Option<PurposeOfUse>,
    pub site: Option<Arc<Site>>,
    pub fhir: Option<FhirRequest>,
    /// What the caller's scopes allow for this request.
    pub authorization: Option<Authorization>,
    pub decision: Option<Decision>,
    /// Set when the caller asked for break-glass: the justification, and the denies it
    /// overrode (`used()`). The receipt and the webhook read it; logs never do.
    pub break_glass: Option<BreakGlass>,
    pub error_code: Option<&'static str>,
    /// When the request arrived, UTC milliseconds (the receipt's time).
    pub time_ms: i64,
    /// The client's address as the gateway saw it.
    pub client_address: Option<String>,
    /// The site's HTTP status, once it answered.
    pub upstream_status: Option<u16>,
    /// What the filter phase released, in response order (for the receipt).
    pub released: Vec<ResourceEntry>,
    /// The patients the request named, placed (decided before forwarding).
    pub named_patients: Vec<PlacedPatient>,
    /// A resource was denied on its content and answered as not found (the receipt says
    /// deny).
    pub content_denied: bool,
    /// The patients of the released resources (the whose-data rule), for the receipt.
    pub released_patients: Vec<PlacedPatient>,
}

/// Runs the phases for one request under `/fhir/{site}/`.
pub async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    clients: web::Data<WorkerClients>,
) -> HttpResponse {
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let mut ctx = RequestContext {
        request_id,
        started: Instant::now(),
        caller: None,
        purpose: None,
        site: None,
        fhir: None,
        authorization: None,
        decision: None,
        break_glass: None,
        error_code: None,
        time_ms: state.clock.now_millis(),
        client_address: req.peer_addr().map(|a| a.ip().to_string()),
        upstream_status: None,
        released: Vec::new(),
        named_patients: Vec::new(),
        content_denied: false,
        released_patients: Vec::new(),
    };
    let mut response = match run(&mut ctx, &req, payload, &state, &clients).await {
        Ok(response) => response,
        Err(error) => {
            ctx.error_code = Some(error.code());
            ctx.content_denied = matches!(error, GatewayError::ContentDenied);
            error.error_response()
        }
    };
    if let Some(caller) = ctx.caller.clone()
        && RECEIPTS_ON
    {
        response = receipt(&mut ctx, &state, &caller, response).await;
    }
    record(&ctx, &state, response.status());
    notify_break_glass(&ctx, &state, response.status());
    response
}

/// The receipt phase: the request's receipt goes into the gateway's chain and the store; the
/// response is released only once it is durable, carrying its id.
async fn receipt(
    ctx: &mut RequestContext,
    state: &AppState,
    caller: &Caller,
    mut response: HttpResponse,
) -> HttpResponse {
    let pending = build_receipt(ctx, state, caller, response.status());
    let receipt_id = pending.receipt.id.clone();
    match state.receipts.write(pending).await {
        Ok(_) => {
            if let Ok(v) = HeaderValue::from_str(&receipt_id) {
                response
                    .headers_mut()
                    .insert(header::HeaderName::from_static(RECEIPT_HEADER), v);
            }
            response
        }
        Err(e) => {
            tracing::error!(request_id = %ctx.request_id, error = %e, "no durable receipt: the response is withheld");
            let error = GatewayError::ReceiptUnavailable;
            ctx.error_code = Some(error.code());
            error.error_response()
        }
    }
}

/// The receipt of the request as the phases left it.
fn build_receipt(
    ctx: &mut RequestContext,
    state: &AppState,
    caller: &Caller,
    status: StatusCode,
) -> PendingReceipt {
    let site = ctx.site.as_ref().map(|s| s.id.clone());
    let identity = |p: &PlacedPatient| SitePatient::new(&p.site, &p.id).to_string();
    let mut subjects = ReceiptSubjects {
        actor: caller
            .verified
            .actor
            .as_deref()
            .map(str::to_owned)
            .unwrap_or_else(|| caller.id.clone()),
        patients: Vec::new(),
        query: ctx
            .fhir
            .as_ref()
            .map(|f| f.query.clone())
            .filter(|q| !q.is_empty()),
        client_id: caller.verified.client_id.as_deref().map(str::to_owned),
        client_address: ctx.client_address.clone(),
    };
    // The receipt names every patient the request reached: every patient it named, then every
    // patient a released resource belongs to.
    for p in ctx.named_patients.iter().chain(&ctx.released_patients) {
        subjects.add_patient(identity(p));
    }
    let key = state.consents.key();
    let mut receipt = Receipt::new(
        uuid::Uuid::new_v4().to_string(),
        ctx.time_ms,
        state.receipts.gateway_id(),
        subjects.keys(key),
        AccessDecision::Error,
        status.as_u16(),
    );
    if let Some(decision) = &ctx.decision {
        receipt.set_decision(decision);
    }
    let released = status.is_success() || status == StatusCode::NOT_MODIFIED;
    let denied_codes = [
        GatewayError::Denied(String::new()).code(),
        GatewayError::BreakGlassJustificationRequired(String::new()).code(),
    ];
    if ctx.content_denied || ctx.error_code.is_some_and(|c| denied_codes.contains(&c)) {
        // Denied after the fetch: the resource's own consent decided.
        receipt.decision = AccessDecision::Deny;
    } else if receipt.decision == AccessDecision::Permit && !released {
        receipt.decision = AccessDecision::Error;
    }
    receipt.organization = caller.verified.organization.as_deref().map(str::to_owned);
    receipt.site = site.clone();
    receipt.interaction = ctx.fhir.as_ref().map(|f| f.interaction);
    receipt.resource_type = ctx.fhir.as_ref().and_then(|f| f.resource_type.clone());
    receipt.resources = std::mem::take(&mut ctx.released);
    receipt.purpose = ctx.purpose.map(|p| p.code().to_owned());
    receipt.upstream_status = ctx.upstream_status;
    if let Some(bg) = &ctx.break_glass {
        // The justification is kept whether or not it was needed; the flag says whether any
        // data was released on it (the request's own decision, or a resource's in the filter).
        receipt.break_glass_justification = bg.justification.clone();
        receipt.break_glass |= bg.used() && released;
    }
    PendingReceipt { receipt, subjects }
}

/// Off only in the benchmark build that measures what receipts cost (feature
/// `bench-no-receipts`).
const RECEIPTS_ON: bool = !cfg!(feature = "bench-no-receipts");

async fn run(
    ctx: &mut RequestContext,
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    clients: &WorkerClients,
) -> Result<HttpResponse, GatewayError> {
    // authenticate: a verified token from a trusted issuer
    let caller = Arc::new(state.callers.authenticate(req.headers()).await?);
    ctx.caller = Some(caller.clone());

    // resolve site
    let (site_id, _) = split_fhir_path(req.path());
    let site = state
        .sites
        .get(site_id)
        .cloned()
        .ok_or(GatewayError::UnknownSite)?;
    ctx.site = Some(site.clone());
    let client = clients.get(&site.id).ok_or(GatewayError::Internal)?;

    // authenticate, continued: the purpose of use, from the caller or the site's default
    ctx.purpose = caller
        .verified
        .purpose
        .or_else(|| site.config.default_purpose());
    if ctx.purpose.is_none() && site.config.require_purpose {
        return Err(assent_auth::AuthError::PurposeRequired.into());
    }

    // parse, with the FHIR version the client reads; operations only from the allow-list
    let (mut fhir, body, mut dialect) = parse(req, payload, state, &site).await?;
    ctx.fhir = Some(fhir.clone());
    if let Some(token) = &fhir.page_token {
        let signed = signed_part(req.path(), &site.id, &fhir.query);
        state
            .signer
            .verify(token, &site.id, &caller.id, &signed)
            .map_err(|e| {
                tracing::info!(request_id = %ctx.request_id, reason = %e, "paging token refused");
                GatewayError::BadPageToken
            })?;
    } else if fhir.resource_type.is_none() && fhir.interaction == assent_fhir::Interaction::Search {
        // The base URL with a query is only ever a paging link the gateway signed.
        return Err(GatewayError::Malformed(
            "a search names a resource type".into(),
        ));
    }
    fhir.allow_operation(site.config.operation_rules())?;
    // translate the request into the site's version (paging links already are)
    let body = dialect.translate_request(&mut fhir, body)?;

    // authorize: the caller's scopes for this interaction and resource type; a confined or
    // granular search is narrowed before it is forwarded
    let authorization = scopes::authorize(&caller.verified, &fhir)?;
    let narrowing = authorization.narrowing(&fhir);
    ctx.authorization = Some(authorization.clone());

    // the search as the site will see it, parsed once (query and form alike), narrowed;
    // shaping (`_summary`, `_elements`, `_count=0`) is the gateway's and is taken out
    let mut search = Search::new(&fhir, body.as_deref(), &narrowing)?;
    let shape = search.take_shape()?;
    let named = request_patients(
        site.config.fhir_version,
        fhir.resource_type.as_deref(),
        fhir.id.as_deref(),
        &search.all(),
        &site.references,
    );

    // decide, before forwarding, on every patient the request names (each must permit);
    // a request that names none is fetched on a conditional permit and every resource of
    // the answer is decided. Break-glass is asked for by a justification, or by the grant
    // with an emergency purpose (so that a missing justification is answered as such).
    let mut consent_request = ConsentRequest::new(&caller, ctx.purpose.map(|p| p.code()), &fhir);
    let justification = break_glass::justification(req.headers())?;
    let emergency = ctx.purpose.is_some_and(|p| p.is_emergency());
    if justification.is_some() || (caller.verified.break_glass && emergency) {
        consent_request =
            consent_request.with_break_glass(justification.as_deref(), caller.verified.break_glass);
        ctx.break_glass = Some(BreakGlass {
            justification,
            overrides: Vec::new(),
        });
    }
    let mut enforcer = Enforcer::new(state, &site, client, &consent_request);
    let decided = enforcer.decide_request(&named).await;
    note_overrides(ctx, &consent_request);
    let (decision, placed) = decided?;
    ctx.decision = Some(decision.clone());
    ctx.named_patients = placed.clone();
    let permit: Permit = match decision {
        Decision::Permit(permit) => permit,
        Decision::Deny(deny) => return Err(consent::denied(&deny)),
    };
    let facts = RequestFacts {
        fhir: &fhir,
        caller: &caller.verified,
        authorization: &authorization,
        named: matches!(named, RequestPatients::Named(_)).then_some(placed.as_slice()),
    };

    // adapt (site adapter): search values go in the site's dialect; every phase above saw
    // the network's. A paging link's query is the site's own already.
    let mut adapting = state.adapters.get(&site.id).map(|adapter| Adapting {
        adapter,
        issues: Vec::new(),
    });
    let (query, form) = search.forwarded();
    let (query, form) = match &mut adapting {
        Some(a) if fhir.page_token.is_none() => (
            adapters::adapt_query(&a.adapter, &query, &mut a.issues),
            form.map(|f| adapters::adapt_query(&a.adapter, &f, &mut a.issues)),
        ),
        _ => (query, form),
    };

    if shape.is_count() {
        let counted = count(
            ctx,
            &site,
            client,
            &permit,
            &mut enforcer,
            &facts,
            &query,
            form.as_deref(),
            &mut adapting,
        )
        .await;
        note_overrides(ctx, &consent_request);
        return counted.map(|total| {
            let mut out = HttpResponse::Ok();
            dialect.response_headers(&mut out, None);
            out.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
            out.body(
                json!({"resourceType": "Bundle", "type": "searchset", "total": total}).to_string(),
            )
        });
    }

    // forward
    let path_and_query = if query.is_empty() {
        fhir.upstream_path.clone()
    } else {
        format!("{}?{}", fhir.upstream_path, query)
    };
    let upstream_request = UpstreamRequest {
        method: if fhir.post_search {
            Method::POST
        } else {
            Method::GET
        },
        path_and_query,
        headers: upstream::allowed_request_headers(req.headers()),
        request_id: ctx.request_id.clone(),
        body: form.map(Bytes::from),
    };
    let timer = Instant::now();
    let response = upstream::forward(&permit, &site, client, &upstream_request).await;
    state
        .metrics
        .upstream_latency
        .with_label_values(&[site.id.as_str()])
        .observe(timer.elapsed().as_secs_f64());
    let response = response?;

    // filter
    ctx.upstream_status = Some(response.status().as_u16());
    let response = filter(
        ctx,
        req,
        state,
        &site,
        &permit,
        client,
        &mut enforcer,
        &facts,
        &shape,
        adapting,
        &dialect,
        response,
    )
    .await;
    note_overrides(ctx, &consent_request);
    response
}

/// Most upstream pages a count may read.
const COUNT_MAX_PAGES: usize = 20;
/// The page size a count asks the site for.
const COUNT_PAGE_SIZE: &str = "500";

/// `_summary=count` (or `_count=0`): the number of matches the caller may see, taken over
/// every page of the site's answer with each match decided as it would be released. Only for
/// a search that named its patients (all permitted); for any other the count could say what
/// was withheld, so it is refused, as is a search whose matches exceed the counting limit.
#[allow(clippy::too_many_arguments)]
async fn count(
    ctx: &mut RequestContext,
    site: &Site,
    client: &awc::Client,
    permit: &Permit,
    enforcer: &mut Enforcer<'_>,
    facts: &RequestFacts<'_>,
    query: &str,
    form: Option<&str>,
    adapting: &mut Option<Adapting>,
) -> Result<usize, GatewayError> {
    if facts.named.is_none() || facts.fhir.interaction != assent_fhir::Interaction::Search {
        return Err(GatewayError::CountNotReleased);
    }
    let mut params = parse_search(query);
    if let Some(form) = form {
        params.extend(parse_search(form));
    }
    params.retain(|p| p.raw_name != "_count");
    let path = facts
        .fhir
        .upstream_path
        .strip_suffix("/_search")
        .unwrap_or(&facts.fhir.upstream_path)
        .to_owned();
    let mut next = Some(format!(
        "{path}?{}",
        assent_fhir::query::encode_pairs(
            params
                .iter()
                .map(|p| (p.raw_name.as_str(), p.value.as_str()))
                .chain([("_count", COUNT_PAGE_SIZE)])
        )
    ));
    let mut total = 0;
    let mut pages = 0;
    while let Some(path_and_query) = next.take() {
        pages += 1;
        if pages > COUNT_MAX_PAGES {
            return Err(GatewayError::CountNotReleased);
        }
        let request = UpstreamRequest {
            method: Method::GET,
            path_and_query,
            headers: Vec::new(),
            request_id: ctx.request_id.clone(),
            body: None,
        };
        let mut response = upstream::forward(permit, site, client, &request).await?;
        ctx.upstream_status = Some(response.status().as_u16());
        if !response.status().is_success() {
            return Err(upstream_error(response.status()));
        }
        let mut bundle = read_json(&mut response, site).await?;
        if bundle.get("resourceType").and_then(|v| v.as_str()) != Some("Bundle") {
            return Err(GatewayError::UpstreamBadResponse);
        }
        if let Some(a) = adapting.as_mut() {
            a.response(&mut bundle);
        }
        let mut matches_only = bundle.clone();
        if let Some(entries) = matches_only.get_mut("entry").and_then(|e| e.as_array_mut()) {
            entries.retain(|e| {
                e.pointer("/search/mode")
                    .and_then(|m| m.as_str())
                    .is_none_or(|m| m == "match")
            });
        }
        let counting = RequestFacts {
            named: None,
            ..*facts
        };
        release::release_bundle(enforcer, &counting, &mut matches_only).await?;
        total += matches_only
            .get("entry")
            .and_then(|e| e.as_array())
            .map_or(0, |e| e.len());
        next = bundle
            .get("link")
            .and_then(|l| l.as_array())
            .into_iter()
            .flatten()
            .find(|l| l.get("relation").and_then(|r| r.as_str()) == Some("next"))
            .and_then(|l| l.get("url"))
            .and_then(|u| u.as_str())
            .and_then(|u| site.urls.relative(u))
            .map(|rest| {
                rewrite::normalise_relative(rest)
                    .trim_start_matches('/')
                    .to_owned()
            });
    }
    Ok(total)
}

/// The error answering a site's error status.
fn upstream_error(status: StatusCode) -> GatewayError {
    match status.as_u16() {
        404 => GatewayError::UpstreamNotFound,
        410 => GatewayError::UpstreamGone,
        401 | 403 => GatewayError::UpstreamAuthFailed,
        400 | 422 => GatewayError::UpstreamRejected,
        _ => GatewayError::UpstreamFailed,
    }
}

/// The search parameters of one request, parsed once from its query and (`POST _search`)
/// its form, as they will be forwarded.
struct Search {
    /// Forwarded as they were signed (a gateway paging link): the site's own link, raw.
    raw_query: Option<String>,
    query: Vec<SearchParam>,
    form: Option<Vec<SearchParam>>,
}

impl Search {
    fn new(
        fhir: &FhirRequest,
        form: Option<&[u8]>,
        narrowing: &[(String, String)],
    ) -> Result<Search, GatewayError> {
        let mut query = parse_search(&fhir.query);
        let mut form = match form {
            Some(f) => Some(parse_search(std::str::from_utf8(f).map_err(|_| {
                GatewayError::Malformed("the form body is not UTF-8".into())
            })?)),
            None => None,
        };
        let narrowed = narrowing.iter().map(|(name, value)| {
            let mut p = parse_search(&assent_fhir::query::encode_pairs([(
                name.as_str(),
                value.as_str(),
            )]));
            p.pop()
        });
        let target = form.as_mut().unwrap_or(&mut query);
        for p in narrowed.flatten() {
            if !target.contains(&p) {
                target.push(p);
            }
        }
        for p in query.iter().chain(form.iter().flatten()) {
            if matches!(p.code.as_str(), "_contained" | "_containedType") {
                return Err(GatewayError::FormNotServed(
                    "_contained returns contained resources out of their container; they cannot be told whose they are".into(),
                ));
            }
        }
        let raw_query =
            (fhir.page_token.is_some() && narrowing.is_empty()).then(|| fhir.query.clone());
        Ok(Search {
            raw_query,
            query,
            form,
        })
    }

    /// Takes the response shaping out: the gateway applies it to what it releases.
    fn take_shape(&mut self) -> Result<Shape, GatewayError> {
        let shape =
            Shape::from_params(&self.all()).map_err(|e| GatewayError::FormNotServed(e.0))?;
        let owned = |p: &SearchParam| {
            is_shaping_param(&p.raw_name) || (p.raw_name == "_count" && p.value.trim() == "0")
        };
        self.query.retain(|p| !owned(p));
        if let Some(form) = &mut self.form {
            form.retain(|p| !owned(p));
        }
        if let Some(raw) = &mut self.raw_query {
            *raw = raw
                .split('&')
                .filter(|pair| {
                    let p = parse_search(pair);
                    !p.first().is_some_and(owned)
                })
                .collect::<Vec<_>>()
                .join("&");
        }
        Ok(shape)
    }

    fn all(&self) -> Vec<SearchParam> {
        self.query
            .iter()
            .chain(self.form.iter().flatten())
            .cloned()
            .collect()
    }

    /// The query and form to forward, in the gateway's one encoding (a paging link as the
    /// site wrote it).
    fn forwarded(&self) -> (String, Option<String>) {
        let query = match &self.raw_query {
            Some(raw) => raw.clone(),
            None => request::encode_params(&self.query),
        };
        (query, self.form.as_ref().map(|f| request::encode_params(f)))
    }
}

/// Moves the denies break-glass overrode onto the context.
fn note_overrides(ctx: &mut RequestContext, request: &ConsentRequest) {
    let overrides = request.take_overrides();
    if let Some(bg) = &mut ctx.break_glass {
        bg.note(overrides);
    }
}

/// Tells the break-glass webhook of a request that rested on break-glass (off the request
/// path: the event is queued).
fn notify_break_glass(ctx: &RequestContext, state: &AppState, status: StatusCode) {
    let Some(bg) = ctx.break_glass.as_ref().filter(|b| b.used()) else {
        return;
    };
    state.break_glass.notify(break_glass::Event {
        request_id: ctx.request_id.clone(),
        at_ms: state.clock.now_millis(),
        gateway_id: state.config.gateway_id.clone(),
        site: ctx.site.as_ref().map(|s| s.id.clone()).unwrap_or_default(),
        caller: ctx
            .caller
            .as_ref()
            .map(|c| c.id.clone())
            .unwrap_or_default(),
        purpose: ctx.purpose.map(|p| p.code()),
        status: status.as_u16(),
        justification: bg.justification.clone(),
        overrides: bg.overrides.clone(),
    });
}

/// The parse phase: the FHIR request, the form body of `POST _search`, and the versions
/// (the client's, negotiated from `Accept` and `_format`; the site's).
async fn parse(
    req: &HttpRequest,
    mut payload: web::Payload,
    state: &AppState,
    site: &Site,
) -> Result<(FhirRequest, Option<Bytes>, Dialect), GatewayError> {
    let (_, rest) = split_fhir_path(req.path());
    let fhir = request::parse(req.method().as_str(), rest, req.query_string())?;
    let dialect = dialect::negotiate(
        req.headers(),
        req.query_string(),
        site.config.fhir_version,
        state.config.fhir.default_version,
    )?;
    if !fhir.post_search {
        return Ok((fhir, None, dialect));
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if !media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(GatewayError::UnsupportedMediaType(
            "_search takes application/x-www-form-urlencoded".into(),
        ));
    }
    let limit = site
        .config
        .max_body_bytes
        .unwrap_or(state.config.max_body_bytes);
    if let Some(length) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        && length > limit
    {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|_| GatewayError::Malformed("the body could not be read".into()))?;
        if body.len() + chunk.len() > limit {
            return Err(GatewayError::BodyTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| GatewayError::Malformed("the form body is not UTF-8".into()))?;
    let (form, token) = request::check_query(text)?;
    if token.is_some() {
        return Err(GatewayError::Malformed(
            "paging tokens go in the URL".into(),
        ));
    }
    Ok((fhir, Some(Bytes::from(form)), dialect))
}

/// `/fhir/{site}/{rest}` → (`site`, `rest`); either may be empty.
fn split_fhir_path(path: &str) -> (&str, &str) {
    let below = path
        .strip_prefix("/fhir")
        .unwrap_or_default()
        .trim_start_matches('/');
    below.split_once('/').unwrap_or((below, ""))
}

/// What a paging token signs for this request: the path below the site and the query without
/// the token, exactly as the rewrite module wrote it into the link.
fn signed_part(path: &str, site_id: &str, query: &str) -> String {
    let prefix_len = "/fhir/".len() + site_id.len();
    let below = path.get(prefix_len..).unwrap_or_default();
    if query.is_empty() {
        below.to_owned()
    } else {
        format!("{below}?{query}")
    }
}

/// The response header saying that data was released on break-glass.
const BREAK_GLASS_USED: (&str, &str) = ("x-assent-break-glass", "used");

/// A site adapter applied to one request, and what it reported.
struct Adapting {
    adapter: Arc<SiteAdapter>,
    issues: Vec<assent_fhir::Issue>,
}

impl Adapting {
    /// A parsed answer of the site, in the network's dialect: before the scope and consent
    /// checks, which speak the network's codes.
    fn response(&mut self, resource: &mut serde_json::Value) {
        adapters::adapt_response(&self.adapter, resource, &mut self.issues);
    }
}

/// The filter phase: maps upstream errors; decides every returned resource (`release.rs`);
/// evaluates conditional read headers after the decision; rewrites upstream URLs; translates
/// what is released into the client's version and shapes it (`_summary`, `_elements`).
#[allow(clippy::too_many_arguments)]
async fn filter(
    ctx: &mut RequestContext,
    req: &HttpRequest,
    state: &AppState,
    site: &Site,
    upstream_permit: &Permit,
    client: &awc::Client,
    enforcer: &mut Enforcer<'_>,
    facts: &RequestFacts<'_>,
    shape: &Shape,
    mut adapting: Option<Adapting>,
    dialect: &Dialect,
    mut response: awc::ClientResponse,
) -> Result<HttpResponse, GatewayError> {
    let status = response.status();
    if !status.is_success() || status == StatusCode::NO_CONTENT {
        tracing::info!(request_id = %ctx.request_id, site = %site.id, upstream_status = status.as_u16(), "upstream answered with an error");
        // The gateway never asks conditionally: a 304 (or any other non-2xx) is an error.
        return Err(if status.is_success() || status.is_redirection() {
            GatewayError::UpstreamBadResponse
        } else {
            upstream_error(status)
        });
    }
    let fhir = facts.fhir;
    let mut out = HttpResponse::Ok();
    dialect.response_headers(&mut out, None);
    out.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
    if let Some(basis) = ctx.decision.as_ref().map(|d| d.basis().to_string())
        && let Ok(v) = HeaderValue::from_str(&basis)
    {
        out.insert_header(("x-assent-consent", v));
    }
    if ctx.break_glass.as_ref().is_some_and(BreakGlass::used) {
        out.insert_header(BREAK_GLASS_USED);
    }

    if fhir.returns_bundle() {
        let mut bundle = read_json(&mut response, site).await?;
        if bundle.get("resourceType").and_then(|v| v.as_str()) != Some("Bundle") {
            return Err(GatewayError::UpstreamBadResponse);
        }
        if let Some(a) = &mut adapting {
            a.response(&mut bundle);
        }
        let mut report = release::release_bundle(enforcer, facts, &mut bundle).await?;
        if facts.named.is_none() && fhir.interaction == assent_fhir::Interaction::Search {
            let more = MorePages {
                site,
                permit: upstream_permit,
                client,
                request_id: &ctx.request_id,
            };
            settle_paging(
                &more,
                enforcer,
                facts,
                &mut adapting,
                &mut bundle,
                &mut report,
            )
            .await?;
        }
        if report.withheld > 0 {
            tracing::info!(request_id = %ctx.request_id, site = %site.id, withheld = report.withheld, "entries withheld");
            // The history of one resource that named no patient: its versions are one
            // record, and withholding any of them is answered as for a record the site does
            // not have (an empty history would tell that it exists).
            if facts.named.is_none()
                && fhir.interaction == assent_fhir::Interaction::History
                && fhir.id.is_some()
            {
                return Err(GatewayError::ContentDenied);
            }
        }
        if report.break_glass {
            out.insert_header(BREAK_GLASS_USED);
        }
        ctx.released_patients.extend(report.patients);
        rewrite::carry_params(&mut bundle, &site.urls, &shape.link_params());
        dialect.carry_format(&mut bundle, &site.urls);
        let caller_id = ctx
            .caller
            .as_ref()
            .map(|c| c.id.clone())
            .unwrap_or_default();
        let sign = |rest: &str| state.signer.sign(&site.id, &caller_id, rest);
        rewrite::rewrite_bundle(&mut bundle, &site.urls, &sign);
        let translation = dialect.translate_response(bundle)?;
        return translated(ctx, site, dialect, out, &adapting, translation, shape, true);
    }
    if fhir.interaction == assent_fhir::Interaction::Capabilities {
        // Parsed and amended: only what the gateway forwards, and the SMART security section
        // naming the trusted issuer's endpoints.
        let mut statement = read_json(&mut response, site).await?;
        if statement.get("resourceType").and_then(|v| v.as_str()) != Some("CapabilityStatement")
            || patients_of(&statement, site.config.fhir_version, &site.references).is_patient_data()
        {
            return Err(GatewayError::UpstreamBadResponse);
        }
        if let Some(a) = &mut adapting {
            a.response(&mut statement);
        }
        capabilities::only_what_is_forwarded(
            &mut statement,
            &site.config,
            &site.id,
            &site.urls.public_base,
        );
        rewrite::scrub_strings(&mut statement, &site.urls);
        if let Some(endpoints) = state.callers.endpoints() {
            let security = endpoints.capability_security();
            if let Some(rests) = statement.get_mut("rest").and_then(|r| r.as_array_mut()) {
                for rest in rests {
                    rest["security"] = security.clone();
                }
            }
        }
        let statement = dialect.translate_capabilities(statement)?;
        return translated(
            ctx,
            site,
            dialect,
            out,
            &adapting,
            statement,
            &Shape::default(),
            false,
        );
    }
    // A single resource: it must be the one asked for; it is decided (scopes, and consent
    // on every patient it belongs to), then conditional headers are answered.
    let validators = Validators::of(&response);
    let mut resource = read_json(&mut response, site).await?;
    if let Some(a) = &mut adapting {
        a.response(&mut resource);
    }
    check_identity(fhir, &resource)?;
    if resource.get("resourceType").and_then(|v| v.as_str()) == Some("OperationOutcome") {
        // An operation answered with the site's own messages: replaced by the gateway's.
        let outcome = assent_fhir::operation_outcome(&[assent_fhir::Issue::new(
            assent_fhir::Severity::Information,
            assent_fhir::IssueCode::Informational,
            "The site answered the operation with messages that are not passed on.",
        )]);
        let translation = dialect.translate_response(outcome)?;
        return translated(
            ctx,
            site,
            dialect,
            out,
            &adapting,
            translation,
            &Shape::default(),
            false,
        );
    }
    let (patients, break_glass) = release::release_resource(enforcer, facts, &resource).await?;
    if break_glass {
        out.insert_header(BREAK_GLASS_USED);
    }
    ctx.released_patients.extend(patients);
    let validators = validators.or_from(&resource);
    if validators.not_modified(req.headers()) {
        let mut not_modified = HttpResponse::NotModified();
        validators.copy_to(&mut not_modified);
        if let Some(entry) = ResourceEntry::from_resource(&resource) {
            ctx.released.push(entry);
        }
        return Ok(not_modified.finish());
    }
    validators.copy_to(&mut out);
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        if let Some(mapped) = response
            .headers()
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| site.urls.to_public(v))
            .and_then(|v| HeaderValue::from_str(&v).ok())
        {
            out.insert_header((name, mapped));
        }
    }
    rewrite::scrub_strings(&mut resource, &site.urls);
    let translation = dialect.translate_response(resource)?;
    translated(ctx, site, dialect, out, &adapting, translation, shape, true)
}

/// Most further pages of the site's answer one client page may read (to skip empty pages and
/// to look ahead before giving a `next` link).
const MAX_PAGES_SCANNED: usize = 10;

/// The way back to the site for further pages of the same answer.
struct MorePages<'a> {
    site: &'a Site,
    permit: &'a Permit,
    client: &'a awc::Client,
    request_id: &'a str,
}

/// Paging of a search that named no patient, so that its links say nothing of what was
/// withheld: a page whose every entry was withheld is replaced by the next page with a
/// released entry; a `next` link is given only when a released entry follows (the gateway
/// looks ahead); `previous` and `last` links, which would count withheld pages, are removed.
/// At most [`MAX_PAGES_SCANNED`] further pages are read; beyond that the `next` link is
/// given as the site gave it.
async fn settle_paging(
    more: &MorePages<'_>,
    enforcer: &mut Enforcer<'_>,
    facts: &RequestFacts<'_>,
    adapting: &mut Option<Adapting>,
    bundle: &mut serde_json::Value,
    report: &mut release::BundleRelease,
) -> Result<(), GatewayError> {
    // Whether the answer so far starts at the search's first page and released nothing
    // before the current page: then, with no `next` link left, it is complete.
    let from_first_page = facts.fhir.page_token.is_none()
        && !has_relation(bundle, "previous")
        && !has_relation(bundle, "prev");
    let site_total = report.site_total;
    let mut scanned = 0;
    while released_entries(bundle) == 0 && scanned < MAX_PAGES_SCANNED {
        let Some(next) = next_link(bundle, more.site) else {
            break;
        };
        scanned += 1;
        let (page, page_report) = fetch_page(more, enforcer, facts, adapting, &next).await?;
        *bundle = page;
        report.patients.extend(page_report.patients);
        report.break_glass |= page_report.break_glass;
        report.withheld += page_report.withheld;
    }
    if let Some(mut next) = next_link(bundle, more.site) {
        loop {
            if scanned >= MAX_PAGES_SCANNED {
                set_next_link(bundle, more.site, &next);
                break;
            }
            scanned += 1;
            let (peek, _) = fetch_page(more, enforcer, facts, adapting, &next).await?;
            if released_entries(&peek) > 0 {
                set_next_link(bundle, more.site, &next);
                break;
            }
            match next_link(&peek, more.site) {
                Some(after) => next = after,
                None => {
                    set_next_link(bundle, more.site, "");
                    break;
                }
            }
        }
    }
    if let Some(links) = bundle.get_mut("link").and_then(|l| l.as_array_mut()) {
        links.retain(|l| {
            !matches!(
                l.get("relation").and_then(|r| r.as_str()),
                Some("previous" | "prev" | "last")
            )
        });
    }
    // Complete from the first page: the total counts the matches released, as for an
    // answer complete in one page.
    if let Some(object) = bundle.as_object_mut() {
        if from_first_page
            && site_total
            && !has_relation(&serde_json::Value::Object(object.clone()), "next")
        {
            let matches = released_matches(object.get("entry"));
            object.insert("total".into(), json!(matches));
        } else {
            object.remove("total");
        }
    }
    Ok(())
}

fn has_relation(bundle: &serde_json::Value, relation: &str) -> bool {
    bundle
        .get("link")
        .and_then(|l| l.as_array())
        .into_iter()
        .flatten()
        .any(|l| l.get("relation").and_then(|r| r.as_str()) == Some(relation))
}

/// Released entries that are search matches.
fn released_matches(entries: Option<&serde_json::Value>) -> usize {
    entries
        .and_then(|e| e.as_array())
        .into_iter()
        .flatten()
        .filter(|e| {
            e.pointer("/search/mode")
                .and_then(|m| m.as_str())
                .is_none_or(|m| m == "match")
                && e.pointer("/resource/resourceType").and_then(|t| t.as_str())
                    != Some("OperationOutcome")
        })
        .count()
}

/// One further page of the site's answer, decided.
async fn fetch_page(
    more: &MorePages<'_>,
    enforcer: &mut Enforcer<'_>,
    facts: &RequestFacts<'_>,
    adapting: &mut Option<Adapting>,
    path_and_query: &str,
) -> Result<(serde_json::Value, release::BundleRelease), GatewayError> {
    let request = UpstreamRequest {
        method: Method::GET,
        path_and_query: path_and_query.to_owned(),
        headers: Vec::new(),
        request_id: more.request_id.to_owned(),
        body: None,
    };
    let mut response = upstream::forward(more.permit, more.site, more.client, &request).await?;
    if !response.status().is_success() {
        return Err(upstream_error(response.status()));
    }
    let mut page = read_json(&mut response, more.site).await?;
    if page.get("resourceType").and_then(|v| v.as_str()) != Some("Bundle") {
        return Err(GatewayError::UpstreamBadResponse);
    }
    if let Some(a) = adapting.as_mut() {
        a.response(&mut page);
    }
    let report = release::release_bundle(enforcer, facts, &mut page).await?;
    Ok((page, report))
}

/// Entries of a decided page that are released resources (not the gateway's outcomes).
fn released_entries(bundle: &serde_json::Value) -> usize {
    bundle
        .get("entry")
        .and_then(|e| e.as_array())
        .into_iter()
        .flatten()
        .filter(|e| {
            e.pointer("/resource/resourceType").and_then(|t| t.as_str()) != Some("OperationOutcome")
        })
        .count()
}

/// The `next` link of a site's page, relative to the site's base (only under it).
fn next_link(bundle: &serde_json::Value, site: &Site) -> Option<String> {
    bundle
        .get("link")
        .and_then(|l| l.as_array())
        .into_iter()
        .flatten()
        .find(|l| l.get("relation").and_then(|r| r.as_str()) == Some("next"))
        .and_then(|l| l.get("url"))
        .and_then(|u| u.as_str())
        .and_then(|u| site.urls.relative(u))
        .map(|rest| {
            rewrite::normalise_relative(rest)
                .trim_start_matches('/')
                .to_owned()
        })
}

/// Points the `next` link of `bundle` at `relative` (under the site's base), or removes it
/// when `relative` is empty.
fn set_next_link(bundle: &mut serde_json::Value, site: &Site, relative: &str) {
    let Some(links) = bundle.get_mut("link").and_then(|l| l.as_array_mut()) else {
        return;
    };
    links.retain(|l| l.get("relation").and_then(|r| r.as_str()) != Some("next"));
    if !relative.is_empty() {
        let separator = if relative.starts_with('?') { "" } else { "/" };
        links.push(json!({
            "relation": "next",
            "url": format!("{}{separator}{relative}", site.urls.upstream_base),
        }));
    }
}

/// A read or vread must answer the resource asked for (type, id, and the version of a
/// vread); anything else is the site's mistake or a lie: nothing of it is released.
fn check_identity(fhir: &FhirRequest, resource: &serde_json::Value) -> Result<(), GatewayError> {
    use assent_fhir::Interaction::{Read, Vread};
    if !matches!(fhir.interaction, Read | Vread) {
        return Ok(());
    }
    let same_type =
        resource.get("resourceType").and_then(|v| v.as_str()) == fhir.resource_type.as_deref();
    let same_id = resource.get("id").and_then(|v| v.as_str()) == fhir.id.as_deref();
    let same_version = fhir.interaction == Read
        || resource
            .pointer("/meta/versionId")
            .and_then(|v| v.as_str())
            .is_none_or(|v| Some(v) == fhir.version_id.as_deref());
    if same_type && same_id && same_version {
        Ok(())
    } else {
        Err(GatewayError::UpstreamMismatch)
    }
}

/// Notes a resource released to the caller, for the receipt.
fn release(ctx: &mut RequestContext, resource: &serde_json::Value) {
    if let Some(entry) = ResourceEntry::from_resource(resource) {
        ctx.released.push(entry);
    }
}

/// The answer with a parsed (and possibly adapted and translated) body, in the client's
/// version and shape, with the count of issues the site adapter and the version translation
/// reported. `patient_data`: the body is what the receipt lists as released (resources, or a
/// Bundle's entries).
#[allow(clippy::too_many_arguments)]
fn translated(
    ctx: &mut RequestContext,
    site: &Site,
    dialect: &Dialect,
    mut out: actix_web::HttpResponseBuilder,
    adapting: &Option<Adapting>,
    mut translated: dialect::Translated,
    shape: &Shape,
    patient_data: bool,
) -> Result<HttpResponse, GatewayError> {
    if let Some(issues) = translated.issues {
        tracing::debug!(request_id = %ctx.request_id, site = %site.id, from = %dialect.site, to = %dialect.client, issues, "translated");
    }
    let issues = match (translated.issues, adapting.as_ref().map(|a| a.issues.len())) {
        (None, None) => None,
        (t, a) => Some(t.unwrap_or(0) + a.unwrap_or(0)),
    };
    dialect.response_headers(&mut out, issues);
    let resource = &mut translated.resource;
    let is_bundle = resource.get("resourceType").and_then(|v| v.as_str()) == Some("Bundle");
    if shape.cuts() {
        if is_bundle && patient_data {
            for r in resource
                .get_mut("entry")
                .and_then(|e| e.as_array_mut())
                .into_iter()
                .flatten()
                .filter_map(|e| e.get_mut("resource"))
                .filter(|r| {
                    r.get("resourceType").and_then(|t| t.as_str()) != Some("OperationOutcome")
                })
            {
                shape.apply(r, dialect.client);
            }
        } else {
            shape.apply(resource, dialect.client);
        }
    }
    if patient_data {
        if is_bundle {
            if let Some(entries) = resource.get("entry").and_then(|e| e.as_array()) {
                for r in entries.iter().filter_map(|e| e.get("resource")) {
                    release(ctx, r);
                }
            }
        } else {
            release(ctx, resource);
        }
    }
    let body = serde_json::to_vec(&translated.resource).map_err(|_| GatewayError::Internal)?;
    Ok(out.body(body))
}

/// The upstream body, buffered within the site's limit, as JSON.
async fn read_json(
    response: &mut awc::ClientResponse,
    site: &Site,
) -> Result<serde_json::Value, GatewayError> {
    let body = response
        .body()
        .limit(site.config.max_response_bytes)
        .await
        .map_err(|_| GatewayError::UpstreamBadResponse)?;
    serde_json::from_slice(&body).map_err(|_| GatewayError::UpstreamBadResponse)
}

/// A released resource's validators (`ETag`, `Last-Modified`), from the site's headers or
/// else the resource's `meta`; conditional read headers are answered with them, by the
/// gateway, after the decision.
struct Validators {
    etag: Option<String>,
    last_modified: Option<String>,
}

impl Validators {
    fn of(response: &awc::ClientResponse) -> Validators {
        let get = |name: header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Validators {
            etag: get(header::ETAG),
            last_modified: get(header::LAST_MODIFIED),
        }
    }

    fn or_from(mut self, resource: &serde_json::Value) -> Validators {
        if self.etag.is_none() {
            self.etag = resource
                .pointer("/meta/versionId")
                .and_then(|v| v.as_str())
                .map(|v| format!("W/\"{v}\""));
        }
        self
    }

    /// `If-None-Match` (weak comparison), else `If-Modified-Since`.
    fn not_modified(&self, headers: &header::HeaderMap) -> bool {
        let opaque = |tag: &str| {
            tag.trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .to_owned()
        };
        if let Some(inm) = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
        {
            return self.etag.as_deref().is_some_and(|etag| {
                inm.split(',')
                    .any(|t| t.trim() == "*" || opaque(t) == opaque(etag))
            });
        }
        let since = headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<header::HttpDate>().ok());
        let modified = self
            .last_modified
            .as_deref()
            .and_then(|v| v.parse::<header::HttpDate>().ok());
        match (since, modified) {
            (Some(since), Some(modified)) => {
                std::time::SystemTime::from(modified) <= std::time::SystemTime::from(since)
            }
            _ => false,
        }
    }

    fn copy_to(&self, out: &mut actix_web::HttpResponseBuilder) {
        for (name, value) in [
            (header::ETAG, &self.etag),
            (header::LAST_MODIFIED, &self.last_modified),
        ] {
            if let Some(v) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
                out.insert_header((name, v));
            }
        }
    }
}

/// The record phase: metrics, the access log line, and the request log row.
fn record(ctx: &RequestContext, state: &AppState, status: StatusCode) {
    let site = ctx.site.as_ref().map(|s| s.id.as_str());
    let interaction = ctx.fhir.as_ref().map(|f| f.interaction.as_str());
    let status_code = status.as_u16();
    state
        .metrics
        .requests
        .with_label_values(&[
            site.unwrap_or("unknown"),
            interaction.unwrap_or("none"),
            status.as_str(),
        ])
        .inc();
    let duration_us = ctx.started.elapsed().as_micros() as i64;
    let decision = ctx.decision.as_ref().map(|d| match d {
        Decision::Permit(p) => format!("permit {}", p.basis()),
        Decision::Deny(d) => format!("deny {}", d.basis()),
    });
    if state.config.log.access_log {
        tracing::info!(
            request_id = %ctx.request_id,
            site = site.unwrap_or("-"),
            interaction = interaction.unwrap_or("-"),
            resource_type = ctx.fhir.as_ref().and_then(|f| f.resource_type.as_deref()).unwrap_or("-"),
            status = status_code,
            error_code = ctx.error_code.unwrap_or("-"),
            caller_kind = ctx.caller.as_ref().map(|c| c.verified.kind.as_str()).unwrap_or("-"),
            purpose = ctx.purpose.map(|p| p.code()).unwrap_or("-"),
            duration_us,
            "fhir request"
        );
    }
    state.recorder.record(RequestRecord {
        request_id: ctx.request_id.clone(),
        at_ms: state.clock.now_millis(),
        site: site.map(str::to_owned),
        caller: ctx.caller.as_ref().map(|c| c.id.clone()),
        interaction: interaction.map(str::to_owned),
        resource_type: ctx.fhir.as_ref().and_then(|f| f.resource_type.clone()),
        status: i32::from(status_code),
        error_code: ctx.error_code.map(str::to_owned),
        decision,
        duration_us,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fhir_paths_split_into_site_and_rest() {
        assert_eq!(
            split_fhir_path("/fhir/st-mary/Patient/1"),
            ("st-mary", "Patient/1")
        );
        assert_eq!(split_fhir_path("/fhir/st-mary"), ("st-mary", ""));
        assert_eq!(split_fhir_path("/fhir/st-mary/"), ("st-mary", ""));
        assert_eq!(split_fhir_path("/fhir"), ("", ""));
        assert_eq!(split_fhir_path("/fhir/"), ("", ""));
    }

    #[test]
    fn the_signed_part_is_what_the_link_carried() {
        assert_eq!(
            signed_part("/fhir/st-mary/Patient", "st-mary", "page=2"),
            "/Patient?page=2"
        );
        assert_eq!(
            signed_part("/fhir/st-mary", "st-mary", "_getpages=x"),
            "?_getpages=x"
        );
        assert_eq!(
            signed_part("/fhir/st-mary/Patient", "st-mary", ""),
            "/Patient"
        );
    }
}
