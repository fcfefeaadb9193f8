//! The request path of `/fhir/{site}/…`: named phases in a fixed order over one
//! [`RequestContext`]:
//!
//! `authenticate → resolve site → parse → decide → forward → filter → record`
//!
//! Translation between FHIR versions (`dialect.rs`) sits at the two ends of the site's
//! version: the request is put into the site's version right after parsing (so scopes,
//! consent and the forwarded request all speak the site's version), and the response is put
//! into the client's version last in the filter phase, after consent and scopes have decided
//! what is released and URLs are rewritten.
//!
//! **Invariant:** the record phase runs for every request that reached the pipeline, whatever
//! the outcome; the forward phase runs only with the `Permit` the decide phase returned.
//! This file is the security order on one screen; each phase's mechanics live in its own module.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use assent_auth::PurposeOfUse;
use assent_consent::{Decision, Permit};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use crate::app::{AppState, WorkerClients};
use crate::authorize::{self, Authorization};
use crate::caller::Caller;
use crate::consent_phase::{self, ConsentRequest};
use crate::dialect::{self, Dialect};
use crate::error::GatewayError;
use crate::fhir_request::{self, FhirRequest};
use crate::observability::RequestId;
use crate::record::RequestRecord;
use crate::rewrite::{self, StreamRewriter};
use crate::upstream::{self, Site, UpstreamRequest};

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
    pub error_code: Option<&'static str>,
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
        error_code: None,
    };
    let response = match run(&mut ctx, &req, payload, &state, &clients).await {
        Ok(response) => response,
        Err(error) => {
            ctx.error_code = Some(error.code());
            error.error_response()
        }
    };
    record(&ctx, &state, response.status());
    response
}

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

    // authenticate, continued: the purpose of use, from the caller or the site's default
    ctx.purpose = caller
        .verified
        .purpose
        .or_else(|| site.config.default_purpose());
    if ctx.purpose.is_none() && site.config.require_purpose {
        return Err(assent_auth::AuthError::PurposeRequired.into());
    }

    // parse, with the FHIR version the client reads
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
    // translate the request into the site's version (paging links already are)
    let body = dialect.translate_request(&mut fhir, body)?;

    // authorize: the caller's scopes for this interaction and resource type; a confined or
    // granular search is narrowed before it is forwarded
    let authorization = authorize::authorize(&caller.verified, &fhir)?;
    let narrowing = authorization.narrowing(&fhir);
    ctx.authorization = Some(authorization.clone());
    let body = match body {
        Some(form) if !narrowing.is_empty() => {
            let form = std::str::from_utf8(&form).unwrap_or_default();
            Some(Bytes::from(authorize::append_pairs(form, &narrowing)))
        }
        Some(form) => Some(form),
        None => {
            fhir.query = authorize::append_pairs(&fhir.query, &narrowing);
            None
        }
    };

    // decide: on the patient's consents when the request says whose data it reads; else a
    // conditional permit to fetch, and every resource is decided in the filter phase
    let consent_request = ConsentRequest::new(&caller, ctx.purpose.map(|p| p.code()), &fhir, &site);
    let decision = consent_phase::decide_request(state, &site, &fhir, &consent_request).await?;
    ctx.decision = Some(decision.clone());
    let permit: Permit = match decision {
        Decision::Permit(permit) => permit,
        Decision::Deny(deny) => return Err(GatewayError::Denied(deny.basis().to_string())),
    };

    // forward
    let client = clients.get(&site.id).ok_or(GatewayError::Internal)?;
    let path_and_query = if fhir.query.is_empty() {
        fhir.upstream_path.clone()
    } else {
        format!("{}?{}", fhir.upstream_path, fhir.query)
    };
    let upstream_request = UpstreamRequest {
        method: if fhir.post_search {
            Method::POST
        } else {
            req.method().clone()
        },
        path_and_query,
        headers: upstream::allowed_request_headers(req.headers()),
        request_id: ctx.request_id.clone(),
        body,
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
    let consent = ConsentFilter {
        request: &consent_request,
        conditional: permit.is_conditional(),
    };
    filter(
        ctx,
        state,
        &site,
        &caller,
        &authorization,
        &fhir,
        &consent,
        &dialect,
        response,
    )
    .await
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
    let fhir = fhir_request::parse(req.method().as_str(), rest, req.query_string())?;
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
    let (form, token) = fhir_request::check_query(text)?;
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

/// What the filter phase needs of the decision.
struct ConsentFilter<'a> {
    request: &'a ConsentRequest,
    /// Each returned resource must be decided before it is released.
    conditional: bool,
}

/// The filter phase: maps upstream errors, decides returned resources where the decision
/// needs them, rewrites URLs, translates what is released into the client's version, streams
/// what it does not parse.
#[allow(clippy::too_many_arguments)]
async fn filter(
    ctx: &RequestContext,
    state: &AppState,
    site: &Site,
    caller: &Caller,
    authorization: &Authorization,
    fhir: &FhirRequest,
    consent: &ConsentFilter<'_>,
    dialect: &Dialect,
    mut response: awc::ClientResponse,
) -> Result<HttpResponse, GatewayError> {
    let status = response.status();
    if status == StatusCode::NOT_MODIFIED {
        let mut out = HttpResponse::NotModified();
        copy_validators(&response, &mut out);
        return Ok(out.finish());
    }
    if !status.is_success() {
        tracing::info!(request_id = %ctx.request_id, site = %site.id, upstream_status = status.as_u16(), "upstream answered with an error");
        return Err(match status.as_u16() {
            404 => GatewayError::UpstreamNotFound,
            410 => GatewayError::UpstreamGone,
            401 | 403 => GatewayError::UpstreamAuthFailed,
            400 | 422 => GatewayError::UpstreamRejected,
            s if s >= 500 => GatewayError::UpstreamFailed,
            _ => GatewayError::UpstreamFailed,
        });
    }

    let mut out = HttpResponse::build(status);
    dialect.response_headers(&mut out, None);
    out.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
    copy_validators(&response, &mut out);
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
    if let Some(basis) = ctx.decision.as_ref().map(|d| d.basis().to_string())
        && let Ok(v) = HeaderValue::from_str(&basis)
    {
        out.insert_header(("x-assent-consent", v));
    }

    if fhir.returns_bundle() {
        let mut bundle = read_json(&mut response, site).await?;
        if bundle.get("resourceType").and_then(|v| v.as_str()) != Some("Bundle") {
            return Err(GatewayError::UpstreamBadResponse);
        }
        let removed = authorization.filter_bundle(&caller.verified, &mut bundle, fhir);
        if removed > 0 {
            tracing::info!(request_id = %ctx.request_id, site = %site.id, removed, "entries outside the caller's scopes removed");
        }
        // Every entry is decided on its patient's consents: a search may reach several
        // patients, and includes may reach others than the one it names.
        let withheld =
            consent_phase::filter_bundle(state, site, consent.request, &mut bundle).await?;
        if withheld > 0 {
            tracing::info!(request_id = %ctx.request_id, site = %site.id, withheld, "entries withheld by consent");
        }
        dialect.carry_format(&mut bundle, &site.urls);
        let sign = |rest: &str| state.signer.sign(&site.id, &caller.id, rest);
        rewrite::rewrite_bundle(&mut bundle, &site.urls, &sign);
        return translated(ctx, site, dialect, out, dialect.translate_response(bundle)?);
    }
    if fhir.interaction == assent_fhir::Interaction::Capabilities {
        // Parsed and amended: the SMART security section names the trusted issuer's endpoints.
        let mut statement = read_json(&mut response, site).await?;
        if statement.get("resourceType").and_then(|v| v.as_str()) != Some("CapabilityStatement") {
            return Err(GatewayError::UpstreamBadResponse);
        }
        rewrite::rewrite_strings(&mut statement, &site.urls);
        if let Some(endpoints) = state.callers.endpoints() {
            let security = endpoints.capability_security();
            if let Some(rests) = statement.get_mut("rest").and_then(|r| r.as_array_mut()) {
                for rest in rests {
                    rest["security"] = security.clone();
                }
            }
        }
        let statement = dialect.translate_capabilities(statement)?;
        return translated(ctx, site, dialect, out, statement);
    }
    if !authorization.is_unrestricted() || consent.conditional || dialect.translates() {
        // A read under a confined or granular grant, or whose permit depends on the content:
        // the resource itself says whether it may be released, so it is parsed instead of
        // streamed. So is a read in another version than the site's.
        let mut resource = read_json(&mut response, site).await?;
        authorization.check_resource(&caller.verified, &resource, fhir)?;
        if consent.conditional {
            consent_phase::check_resource(state, site, consent.request, &resource).await?;
        }
        rewrite::rewrite_strings(&mut resource, &site.urls);
        return translated(
            ctx,
            site,
            dialect,
            out,
            dialect.translate_response(resource)?,
        );
    }
    let rewriter = StreamRewriter::new(&site.urls);
    Ok(out.streaming(RewritingBody {
        inner: response.take_payload(),
        rewriter,
        done: false,
    }))
}

/// The answer with a parsed (and possibly translated) body, and the issue count when it was
/// translated.
fn translated(
    ctx: &RequestContext,
    site: &Site,
    dialect: &Dialect,
    mut out: actix_web::HttpResponseBuilder,
    translated: dialect::Translated,
) -> Result<HttpResponse, GatewayError> {
    if let Some(issues) = translated.issues {
        tracing::debug!(request_id = %ctx.request_id, site = %site.id, from = %dialect.site, to = %dialect.client, issues, "translated");
    }
    dialect.response_headers(&mut out, translated.issues);
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

fn copy_validators(from: &awc::ClientResponse, to: &mut actix_web::HttpResponseBuilder) {
    for name in [header::ETAG, header::LAST_MODIFIED] {
        if let Some(v) = from.headers().get(&name) {
            to.insert_header((name, v.clone()));
        }
    }
}

/// An upstream body passed through the [`StreamRewriter`] as it arrives.
struct RewritingBody<S> {
    inner: S,
    rewriter: StreamRewriter,
    done: bool,
}

impl<S, E> Stream for RewritingBody<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    let out = self.rewriter.push(&chunk);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    tracing::warn!(error = %e, "upstream body broke off");
                    return Poll::Ready(Some(Err(actix_web::error::ErrorBadGateway(
                        "upstream body broke off",
                    ))));
                }
                Poll::Ready(None) => {
                    self.done = true;
                    let rest = self.rewriter.finish();
                    return Poll::Ready((!rest.is_empty()).then_some(Ok(rest)));
                }
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
        at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
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
