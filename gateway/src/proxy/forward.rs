//! The way to the site and back for one exchange: the request forwarded on the permit of the
//! decide phase (timed), the site's status mapped to the gateway's errors, its body read as
//! JSON within the site's limit (with what its bytes say: [`BodyNotes`]), the identity of a read's answer checked, and the validators
//! (`ETag`, `Last-Modified`) of a released resource for conditional reads.
//!
//! Leaves out: the connection itself (`services::upstream`), what is released (`release.rs`)
//! and further pages (`paging.rs`).

use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use assent_consent::Permit;
use assent_fhir::spelling::Spellings;

use crate::http::error::GatewayError;
use crate::http::state::AppState;
use crate::proxy::request::FhirRequest;
use crate::proxy::rewrite;
use crate::services::upstream::{self, Site, UpstreamRequest};

/// Forwards `request` on `permit`, recording the site's latency.
pub async fn forward(
    state: &AppState,
    permit: &Permit,
    site: &Site,
    client: &awc::Client,
    request: &UpstreamRequest,
) -> Result<awc::ClientResponse, GatewayError> {
    let timer = Instant::now();
    let response = upstream::forward(permit, site, client, request).await;
    state
        .metrics
        .upstream_latency
        .with_label_values(&[site.id.as_str()])
        .observe(timer.elapsed().as_secs_f64());
    Ok(response?)
}

/// The error answering a site's error status.
pub fn upstream_error(status: StatusCode) -> GatewayError {
    match status.as_u16() {
        404 => GatewayError::UpstreamNotFound,
        410 => GatewayError::UpstreamGone,
        401 | 403 => GatewayError::UpstreamAuthFailed,
        400 | 422 => GatewayError::UpstreamRejected,
        _ => GatewayError::UpstreamFailed,
    }
}

/// The error answering a site's answer that is not a success with a body.
pub fn check_status(status: StatusCode) -> Result<(), GatewayError> {
    if status.is_success() && status != StatusCode::NO_CONTENT {
        return Ok(());
    }
    // The gateway never asks conditionally: a 304 (or any other non-2xx) is an error.
    Err(if status.is_success() || status.is_redirection() {
        GatewayError::UpstreamBadResponse
    } else {
        upstream_error(status)
    })
}

/// What the bytes of the site's bodies read for one answer say about writing it: how their
/// exponents were spelt (to write them so again), whether a string in them may name the
/// upstream (then its URLs are scrubbed: `rewrite::may_name_upstream`), and their size (the
/// buffer the answer is written into starts so large).
#[derive(Debug, Default)]
pub struct BodyNotes {
    pub spellings: Spellings,
    pub upstream_named: bool,
    pub bytes: usize,
}

impl BodyNotes {
    /// Adds what one more body of the site says.
    pub fn add(&mut self, body: &[u8], site: &Site) {
        self.spellings.add(body);
        self.upstream_named |= rewrite::may_name_upstream(body, &site.urls);
        self.bytes += body.len();
    }
}

/// The upstream body, buffered within the site's limit, as JSON; what its bytes say is
/// added to `notes`.
pub async fn read_json(
    response: &mut awc::ClientResponse,
    site: &Site,
    notes: &mut BodyNotes,
) -> Result<serde_json::Value, GatewayError> {
    let body = response
        .body()
        .limit(site.config.max_response_bytes)
        .await
        .map_err(|_| GatewayError::UpstreamBadResponse)?;
    let value = serde_json::from_slice(&body).map_err(|_| GatewayError::UpstreamBadResponse)?;
    notes.add(&body, site);
    Ok(value)
}

/// The upstream body as a Bundle.
pub async fn read_bundle(
    response: &mut awc::ClientResponse,
    site: &Site,
    notes: &mut BodyNotes,
) -> Result<serde_json::Value, GatewayError> {
    let bundle = read_json(response, site, notes).await?;
    if bundle.get("resourceType").and_then(|v| v.as_str()) != Some("Bundle") {
        return Err(GatewayError::UpstreamBadResponse);
    }
    Ok(bundle)
}

/// A read or vread must answer the resource asked for (type, id, and the version of a
/// vread); anything else is the site's mistake or a lie: nothing of it is released.
pub fn check_identity(
    fhir: &FhirRequest,
    resource: &serde_json::Value,
) -> Result<(), GatewayError> {
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

/// A released resource's validators (`ETag`, `Last-Modified`), from the site's headers or
/// else the resource's `meta`; conditional read headers are answered with them, by the
/// gateway, after the decision.
pub struct Validators {
    etag: Option<String>,
    last_modified: Option<String>,
}

impl Validators {
    pub fn of(response: &awc::ClientResponse) -> Validators {
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

    pub fn or_from(mut self, resource: &serde_json::Value) -> Validators {
        if self.etag.is_none() {
            self.etag = resource
                .pointer("/meta/versionId")
                .and_then(|v| v.as_str())
                .map(|v| format!("W/\"{v}\""));
        }
        self
    }

    /// `If-None-Match` (weak comparison), else `If-Modified-Since`.
    pub fn not_modified(&self, headers: &header::HeaderMap) -> bool {
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

    pub fn copy_to(&self, out: &mut actix_web::HttpResponseBuilder) {
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
