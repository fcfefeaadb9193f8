//! The site adapter admin API: `POST /admin/sites/{site}/$reload-adapter` (read the adapter
//! file again; on error the adapter in use stays and the answer names file, line and key)
//! and `POST /admin/sites/{site}/$translate` (a dry run of the adapter and version conversion
//! on a posted resource, answering the output and the issues).
//!
//! Admin only (an issuer's `admin_subjects`). Routes are registered in `routes.rs`; adapters
//! are held by `site_adapter.rs`.

use actix_web::{HttpRequest, HttpResponse, web};
use assent_adapters::site::Direction;
use assent_fhir::FhirVersion;
use assent_fhir::spelling::Spellings;
use bytes::BytesMut;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::access::require_admin;
use crate::http::error::GatewayError;
use crate::http::state::AppState;
use crate::services::adapters::{self, AdapterLoadError};

/// `POST /admin/sites/{site}/$reload-adapter`
pub async fn reload(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    require_admin(&req, &state).await?;
    let site = path.into_inner();
    if !state.sites.contains_key(&site) {
        return Err(GatewayError::UnknownSite);
    }
    let reloading = state.clone();
    let id = site.clone();
    let outcome = web::block(move || reloading.adapters.reload(&id))
        .await
        .map_err(|_| GatewayError::Internal)?;
    match outcome {
        None => Err(GatewayError::NoAdapter),
        Some(Err(e)) => {
            tracing::warn!(site = %site, error = %e, "site adapter reload refused; the previous adapter stays in use");
            Err(invalid(&e))
        }
        Some(Ok(adapter)) => {
            tracing::info!(site = %site, file = adapter.file(), "site adapter reloaded");
            Ok(HttpResponse::Ok().json(json!({
                "site": site,
                "reloaded": true,
                "adapter": adapters::summary_json(&adapter),
            })))
        }
    }
}

/// An adapter load error as the API answers it.
pub fn invalid(e: &AdapterLoadError) -> GatewayError {
    GatewayError::AdapterInvalid {
        message: e.to_string(),
        key: e.error.key.clone(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranslateQuery {
    /// `to-network` (default) or `to-site`.
    pub direction: Option<String>,
    /// To the network: the version to answer in (default: the site's).
    pub to: Option<String>,
    /// To the site: the version the posted resource is in (default: the site's).
    pub from: Option<String>,
}

/// `POST /admin/sites/{site}/$translate?direction=…&to=…|from=…`
pub async fn translate(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<TranslateQuery>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    require_admin(&req, &state).await?;
    let site = state
        .sites
        .get(path.as_str())
        .cloned()
        .ok_or(GatewayError::UnknownSite)?;
    let site_version = site.config.fhir_version;
    let direction = match query.direction.as_deref() {
        None => Direction::ToNetwork,
        Some(d) => Direction::parse(d).ok_or_else(|| {
            GatewayError::Malformed(format!(
                "direction `{d}`: expected `to-network` or `to-site`"
            ))
        })?,
    };
    let version =
        |name: &str, value: &Option<String>| -> Result<Option<FhirVersion>, GatewayError> {
            value
                .as_deref()
                .map(|v| {
                    v.parse::<FhirVersion>()
                        .map_err(|e| GatewayError::Malformed(format!("{name}: {e}")))
                })
                .transpose()
        };
    let (to, from) = (version("to", &query.to)?, version("from", &query.from)?);
    let (client_version, fixed) = match direction {
        Direction::ToNetwork => (to, from.map(|v| ("from", v))),
        Direction::ToSite => (from, to.map(|v| ("to", v))),
    };
    if let Some((name, v)) = fixed
        && v != site_version
    {
        return Err(GatewayError::Malformed(format!(
            "{name}: the site speaks {site_version}; {} {} is the site's version",
            direction.as_str(),
            name
        )));
    }
    let limit = site.config.max_response_bytes;
    let (resource, spellings) = read_body(payload, limit).await?;
    let adapter = state.adapters.get(&site.id);
    let run = adapters::dry_run(
        adapter.as_deref(),
        site_version,
        direction,
        client_version.unwrap_or(site_version),
        resource,
    )
    .map_err(|e| {
        let issue = e.issue();
        GatewayError::InvalidResource {
            message: issue.diagnostics,
            expression: issue.expression.into_iter().next(),
        }
    })?;
    Ok(HttpResponse::Ok()
        .content_type("application/fhir+json")
        .body(spellings.to_string(&run.to_parameters(adapter.as_deref().map(|a| a.file())))))
}

/// The posted resource, and how its exponents were spelt (written so again in the answer).
async fn read_body(
    mut payload: web::Payload,
    limit: usize,
) -> Result<(Value, Spellings), GatewayError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|_| GatewayError::Malformed("the body could not be read".into()))?;
        if body.len() + chunk.len() > limit {
            return Err(GatewayError::BodyTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| GatewayError::Malformed(format!("the body is not JSON: {e}")))?;
    if value.get("resourceType").and_then(Value::as_str).is_none() {
        return Err(GatewayError::InvalidResource {
            message: "the body is not a FHIR resource".into(),
            expression: Some("resourceType".into()),
        });
    }
    Ok((value, Spellings::of(&body)))
}
