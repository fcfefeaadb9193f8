//! One [`Exchange`] per FHIR request: the caller's facts (who asks, at which site, for what
//! purpose, on break-glass or not), the request as the site will see it ([`SiteRequest`],
//! updated in place as each concern translates or narrows it, so every phase reads the same
//! current request), and what the exchange came to ([`Outcome`], for the receipt and the
//! record).
//!
//! Owns reading the request (the path below the site, the query, the `POST _search` form
//! within the body limit) and the search as it is forwarded (parsed once, narrowed, shaping
//! taken out). Leaves out: what each concern does to the request (scopes, consent, dialect,
//! site adapter, paging: their own modules) and the answer (`answer.rs`).

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::Method;
use actix_web::http::header;
use actix_web::{HttpMessage, HttpRequest, web};
use assent_auth::PurposeOfUse;
use assent_consent::Decision;
use assent_fhir::compartment::{SearchParam, parse_search};
use assent_fhir::shaping::{Shape, is_shaping_param};
use assent_receipts::ResourceEntry;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::http::caller::Caller;
use crate::http::error::GatewayError;
use crate::http::observability::RequestId;
use crate::proxy::consent::PlacedPatient;
use crate::proxy::request::{self, FhirRequest};
use crate::services::break_glass::BreakGlass;
use crate::services::upstream::{self, Site, UpstreamRequest};

/// Everything known of one request under `/fhir/{site}/`, from its arrival to its record.
pub struct Exchange {
    /// The request id (`X-Request-Id`).
    pub id: String,
    pub started: Instant,
    /// When the request arrived, UTC milliseconds (the receipt's time).
    pub time_ms: i64,
    /// The client's address as the gateway saw it.
    pub client_address: Option<String>,
    /// The verified caller (actor, organization, scopes, token id, stable caller id).
    pub caller: Option<Arc<Caller>>,
    pub site: Option<Arc<Site>>,
    /// The purpose of use: the caller's, else the site's default; `None` where the site
    /// neither defaults nor requires one.
    pub purpose: Option<PurposeOfUse>,
    /// Set when the caller asked for break-glass: the justification, and the denies it
    /// overrode (`used()`). The receipt and the webhook read it; logs never do.
    pub break_glass: Option<BreakGlass>,
    /// The request as the caller asked it, in its own terms: how the receipt and the record
    /// name it. `None` until it is parsed.
    pub asked: Option<Asked>,
    /// The request as the site will see it; `None` until it is parsed.
    pub request: Option<SiteRequest>,
    pub outcome: Outcome,
}

/// The request as the caller asked it (before any concern translated or narrowed it).
pub struct Asked {
    pub interaction: assent_fhir::Interaction,
    /// The resource type in the client's version.
    pub resource_type: Option<String>,
    /// The query string as received, the paging token taken out.
    pub query: String,
}

/// What the exchange came to: read by the receipt and the record.
#[derive(Default)]
pub struct Outcome {
    /// The decision on the request before it was forwarded.
    pub decision: Option<Decision>,
    /// The patients the request named, placed (decided before forwarding).
    pub named_patients: Vec<PlacedPatient>,
    /// The patients of the released resources (the whose-data rule).
    pub released_patients: Vec<PlacedPatient>,
    /// What was released, in response order.
    pub released: Vec<ResourceEntry>,
    /// The site's HTTP status, once it answered.
    pub upstream_status: Option<u16>,
    pub error_code: Option<&'static str>,
    /// A resource was denied on its content and answered as not found (the receipt says
    /// deny).
    pub content_denied: bool,
}

impl Exchange {
    /// A new exchange for `req`, received at `time_ms` (the gateway's clock).
    pub fn new(req: &HttpRequest, time_ms: i64) -> Exchange {
        Exchange {
            id: req
                .extensions()
                .get::<RequestId>()
                .map(|r| r.0.clone())
                .unwrap_or_default(),
            started: Instant::now(),
            time_ms,
            client_address: req.peer_addr().map(|a| a.ip().to_string()),
            caller: None,
            site: None,
            purpose: None,
            break_glass: None,
            asked: None,
            request: None,
            outcome: Outcome::default(),
        }
    }

    /// Notes the error the exchange was answered with.
    pub fn failed(&mut self, error: &GatewayError) {
        self.outcome.error_code = Some(error.code());
        self.outcome.content_denied = matches!(error, GatewayError::ContentDenied);
    }

    /// Whether data was released on break-glass.
    pub fn on_break_glass(&self) -> bool {
        self.break_glass.as_ref().is_some_and(BreakGlass::used)
    }
}

/// The request as the site will see it: the FHIR request (its path and query in the site's
/// terms once translated) and the form of `POST _search`, in the same encoding.
pub struct SiteRequest {
    pub fhir: FhirRequest,
    pub form: Option<String>,
}

impl SiteRequest {
    /// The parse phase: the FHIR request from the path below the site and the query.
    pub fn parse(req: &HttpRequest) -> Result<SiteRequest, GatewayError> {
        let (_, rest) = split_fhir_path(req.path());
        let fhir = request::parse(req.method().as_str(), rest, req.query_string())?;
        Ok(SiteRequest { fhir, form: None })
    }

    /// The request as the caller asked it.
    pub fn asked(&self) -> Asked {
        Asked {
            interaction: self.fhir.interaction,
            resource_type: self.fhir.resource_type.clone(),
            query: self.fhir.query.clone(),
        }
    }

    /// The form body of `POST _search`, read within the site's body limit.
    pub async fn read_form(
        &mut self,
        req: &HttpRequest,
        mut payload: web::Payload,
        limit: usize,
    ) -> Result<(), GatewayError> {
        if !self.fhir.post_search {
            return Ok(());
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
        self.form = Some(form);
        Ok(())
    }

    /// The search as the site will see it, parsed once (query and form alike): `narrowing`
    /// added, and the response shaping (`_summary`, `_elements`, `_count=0`), which is the
    /// gateway's, taken out and returned. A gateway paging link not narrowed is forwarded as
    /// the site wrote it.
    pub fn settle_search(&mut self, narrowing: &[(String, String)]) -> Result<Shape, GatewayError> {
        let mut search = Search::new(&self.fhir, self.form.as_deref(), narrowing)?;
        let shape = search.take_shape()?;
        let (query, form) = search.forwarded();
        self.fhir.query = query;
        self.form = form;
        Ok(shape)
    }

    /// The search parameters of the query and the form.
    pub fn params(&self) -> Vec<SearchParam> {
        let mut params = parse_search(&self.fhir.query);
        if let Some(form) = &self.form {
            params.extend(parse_search(form));
        }
        params
    }

    /// The request to forward to the site.
    pub fn upstream(&self, req: &HttpRequest, request_id: &str) -> UpstreamRequest {
        let fhir = &self.fhir;
        let path_and_query = if fhir.query.is_empty() {
            fhir.upstream_path.clone()
        } else {
            format!("{}?{}", fhir.upstream_path, fhir.query)
        };
        UpstreamRequest {
            method: if fhir.post_search {
                Method::POST
            } else {
                Method::GET
            },
            path_and_query,
            headers: upstream::allowed_request_headers(req.headers()),
            request_id: request_id.to_owned(),
            body: self.form.clone().map(Bytes::from),
        }
    }
}

/// `/fhir/{site}/{rest}` → (`site`, `rest`); either may be empty.
pub fn split_fhir_path(path: &str) -> (&str, &str) {
    let below = path
        .strip_prefix("/fhir")
        .unwrap_or_default()
        .trim_start_matches('/');
    below.split_once('/').unwrap_or((below, ""))
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
        form: Option<&str>,
        narrowing: &[(String, String)],
    ) -> Result<Search, GatewayError> {
        let mut query = parse_search(&fhir.query);
        let mut form = form.map(parse_search);
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
}
