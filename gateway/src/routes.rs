//! Every route the gateway serves, registered in this one file.
//!
//! **Invariant:** the gateway's own API (everything but the FHIR surface under `/fhir`) is
//! exactly the list in [`API_ROUTES`], and `openapi/openapi.yaml` describes exactly that list;
//! a test holds both, and a tidy test keeps route registration out of every other file.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

use crate::api::adapters;
use crate::api::audit;
use crate::api::consent;
use crate::api::console;
use crate::api::network as network_admin;
use crate::api::portal;
use crate::http::access::require_admin;
use crate::http::error::GatewayError;
use crate::http::state::AppState;
use crate::proxy::metadata;
use crate::proxy::network;

/// The OpenAPI document, as written.
pub const OPENAPI_YAML: &str = include_str!("../../openapi/openapi.yaml");

/// The gateway's own API: (method, OpenAPI path).
pub const API_ROUTES: &[(&str, &str)] = &[
    ("get", "/livez"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/.well-known/smart-configuration"),
    ("get", "/admin/sites"),
    ("get", "/admin/sites/{site}"),
    ("post", "/admin/sites/{site}/$reload-adapter"),
    ("post", "/admin/sites/{site}/$translate"),
    ("get", "/admin/network/candidates"),
    ("post", "/admin/network/candidates/{id}/$confirm"),
    ("post", "/admin/network/candidates/{id}/$reject"),
    ("post", "/admin/network/$unlink"),
    ("get", "/admin/network/patients/{id}"),
    ("post", "/consent/Consent"),
    ("get", "/consent/Consent"),
    ("get", "/consent/Consent/{id}"),
    ("put", "/consent/Consent/{id}"),
    ("get", "/consent/Consent/{id}/_history"),
    ("get", "/consent/Consent/{id}/_history/{version}"),
    ("post", "/consent/Consent/{id}/$revoke"),
    ("post", "/consent/$check"),
    ("get", "/audit/AuditEvent"),
    ("get", "/audit/receipts/{id}"),
    ("get", "/audit/export"),
    ("get", "/audit/patient/{id}/disclosures"),
    ("get", "/console/"),
    ("get", "/console/style.css"),
    ("get", "/console/login"),
    ("get", "/console/callback"),
    ("get", "/console/logout"),
    ("get", "/console/receipts/{id}"),
    ("get", "/console/export.csv"),
    ("get", "/console/export.ndjson"),
    ("get", "/console/verify"),
    ("get", "/portal/"),
    ("get", "/portal/style.css"),
    ("get", "/portal/login"),
    ("get", "/portal/callback"),
    ("get", "/portal/logout"),
    ("post", "/portal/grant"),
    ("post", "/portal/revoke"),
    ("post", "/portal/site"),
    ("post", "/portal/narrow"),
    ("get", "/portal/disclosures"),
    ("get", "/portal/disclosures.csv"),
    ("get", "/portal/disclosures.pdf"),
];

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // Extractor refusals (a query string or path the handler cannot read) answer with an
    // OperationOutcome like every other error, never actix's plain-text body.
    cfg.app_data(web::QueryConfig::default().error_handler(|e, _| {
        GatewayError::Malformed(format!("the query string cannot be read: {e}")).into()
    }))
    .app_data(web::PathConfig::default().error_handler(|e, _| {
        GatewayError::Malformed(format!("the path cannot be read: {e}")).into()
    }));
    // The FHIR surface: a prefix, not a pattern, so that matching costs no regular
    // expression per request; the pipeline splits site and path itself. Every method
    // reaches it, and it refuses what it does not forward with an OperationOutcome.
    // Registered first: every FHIR request is matched by this prefix before the API
    // routes' patterns are tried (each pattern with a `{…}` segment costs a regular expression).
    cfg.service(
        // The site's CapabilityStatement and SMART discovery relative to each site's FHIR
        // base (`/fhir/{site}/metadata`, `/fhir/{site}/.well-known/smart-configuration`,
        // without authentication) are told apart by `network::handle` from the path's
        // segments, not by patterns.
        web::scope("/fhir").default_service(web::route().to(network::handle)),
    );
    cfg.route("/livez", web::get().to(livez))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .route("/openapi.json", web::get().to(openapi))
        .route(
            "/.well-known/smart-configuration",
            web::get().to(smart_configuration),
        )
        .route("/admin/sites", web::get().to(admin_sites))
        .route("/admin/sites/{site}", web::get().to(admin_site))
        .route(
            "/admin/sites/{site}/$reload-adapter",
            web::post().to(adapters::reload),
        )
        .route(
            "/admin/sites/{site}/$translate",
            web::post().to(adapters::translate),
        )
        .route(
            "/admin/network/candidates",
            web::get().to(network_admin::candidates),
        )
        .route(
            "/admin/network/candidates/{id}/$confirm",
            web::post().to(network_admin::confirm),
        )
        .route(
            "/admin/network/candidates/{id}/$reject",
            web::post().to(network_admin::reject),
        )
        .route(
            "/admin/network/$unlink",
            web::post().to(network_admin::unlink),
        )
        .route(
            "/admin/network/patients/{id}",
            web::get().to(network_admin::patient),
        )
        .route("/consent/Consent", web::post().to(consent::create))
        .route("/consent/Consent", web::get().to(consent::search))
        .route("/consent/Consent/{id}", web::get().to(consent::read))
        .route("/consent/Consent/{id}", web::put().to(consent::update))
        .route(
            "/consent/Consent/{id}/_history",
            web::get().to(consent::history),
        )
        .route(
            "/consent/Consent/{id}/_history/{version}",
            web::get().to(consent::vread),
        )
        .route(
            "/consent/Consent/{id}/$revoke",
            web::post().to(consent::revoke),
        )
        .route("/consent/$check", web::post().to(consent::check))
        .route("/audit/AuditEvent", web::get().to(audit::search))
        .route("/audit/receipts/{id}", web::get().to(audit::receipt))
        .route("/audit/export", web::get().to(audit::export))
        .route(
            "/audit/patient/{id}/disclosures",
            web::get().to(audit::disclosures),
        )
        .route("/console/", web::get().to(console::index))
        .route("/console/style.css", web::get().to(console::stylesheet))
        .route("/console/login", web::get().to(console::login))
        .route("/console/callback", web::get().to(console::callback))
        .route("/console/logout", web::get().to(console::logout))
        .route("/console/receipts/{id}", web::get().to(console::receipt))
        .route("/console/export.csv", web::get().to(console::export_csv))
        .route(
            "/console/export.ndjson",
            web::get().to(console::export_ndjson),
        )
        .route("/console/verify", web::get().to(console::verify))
        .route("/portal/", web::get().to(portal::index))
        .route("/portal/style.css", web::get().to(portal::stylesheet))
        .route("/portal/login", web::get().to(portal::login))
        .route("/portal/callback", web::get().to(portal::callback))
        .route("/portal/logout", web::get().to(portal::logout))
        .route("/portal/grant", web::post().to(portal::grant))
        .route("/portal/revoke", web::post().to(portal::revoke))
        .route("/portal/site", web::post().to(portal::site_choice))
        .route("/portal/narrow", web::post().to(portal::narrow))
        .route("/portal/disclosures", web::get().to(portal::disclosures))
        .route(
            "/portal/disclosures.csv",
            web::get().to(portal::disclosures_csv),
        )
        .route(
            "/portal/disclosures.pdf",
            web::get().to(portal::disclosures_pdf),
        )
        .default_service(web::route().to(not_found));
}

/// The OpenAPI document as JSON.
pub fn openapi_json() -> Result<String, String> {
    let value: serde_json::Value =
        serde_yaml_ng::from_str(OPENAPI_YAML).map_err(|e| e.to_string())?;
    serde_json::to_string(&value).map_err(|e| e.to_string())
}

async fn livez() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let store = state.store.clone();
    let ready = web::block(move || store.ping()).await;
    match ready {
        Ok(Ok(())) => {
            HttpResponse::Ok().json(serde_json::json!({"status": "ready", "store": "ok"}))
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: store unavailable");
            GatewayError::StoreUnavailable.error_response()
        }
        Err(_) => GatewayError::Internal.error_response(),
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        ))
        .body(state.metrics.render())
}

async fn openapi(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(state.openapi_json.clone())
}

/// The SMART configuration (SMART App Launch 2.x discovery) of the first trusted issuer,
/// with the scopes and capabilities the gateway enforces. 404 without a trusted issuer.
async fn smart_configuration(state: web::Data<AppState>) -> Result<HttpResponse, GatewayError> {
    metadata::smart_configuration(&state)
}

fn site_summary(state: &AppState, id: &str) -> Option<serde_json::Value> {
    let site = state.sites.get(id)?;
    Some(serde_json::json!({
        "id": id,
        "fhirVersion": site.config.fhir_version.name(),
        "defaultPolicy": site.config.default_policy.as_str(),
        "upstream": site.config.upstream.as_str(),
        "timeoutMs": site.config.timeout_ms,
        "circuit": if site.circuit_closed() { "closed" } else { "open" },
        "base": format!("{}/fhir/{id}", state.public_base),
        "adapter": state.adapters.get(id).map(|a| crate::services::adapters::summary_json(&a)),
    }))
}

async fn admin_sites(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    require_admin(&req, &state).await?;
    let mut ids: Vec<&String> = state.sites.keys().collect();
    ids.sort();
    let sites: Vec<_> = ids
        .into_iter()
        .filter_map(|id| site_summary(&state, id))
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "sites": sites })))
}

async fn admin_site(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, GatewayError> {
    require_admin(&req, &state).await?;
    let summary = site_summary(&state, &path).ok_or(GatewayError::UnknownSite)?;
    Ok(HttpResponse::Ok().json(summary))
}

/// Everything no route took: a path of the API with a method it does not declare is 405
/// with `Allow` naming the methods it does; any other path is 404.
async fn not_found(req: HttpRequest) -> HttpResponse {
    let allowed = declared_methods(req.path());
    if allowed.is_empty() {
        let e = GatewayError::NoSuchEndpoint;
        debug_assert_eq!(e.row().status, StatusCode::NOT_FOUND);
        e.error_response()
    } else {
        GatewayError::ApiMethodNotAllowed(allowed.join(", ")).error_response()
    }
}

/// The methods [`API_ROUTES`] declares for `path` (upper case), none when no route has it;
/// `HEAD` follows `GET` ([`head_as_get`]).
fn declared_methods(path: &str) -> Vec<String> {
    let mut methods: Vec<String> = API_ROUTES
        .iter()
        .filter(|(_, template)| path_matches(template, path))
        .map(|(method, _)| method.to_ascii_uppercase())
        .collect();
    methods.dedup();
    if let Some(get) = methods.iter().position(|m| m == "GET") {
        methods.insert(get + 1, "HEAD".to_owned());
    }
    methods
}

/// HEAD on the gateway's own API is served as GET (RFC 9110: HEAD works wherever GET does):
/// the request is routed as a GET, and actix-http, which read the request as HEAD, writes the
/// GET's head without its body. The FHIR surface routes HEAD itself (the pipeline decides and
/// receipts it as the read it is). Called for every request before routing.
pub fn head_as_get(req: &mut actix_web::dev::ServiceRequest) {
    if req.method() == actix_web::http::Method::HEAD && !req.path().starts_with("/fhir/") {
        req.head_mut().method = actix_web::http::Method::GET;
    }
}

/// Whether `path` fits the OpenAPI path `template` (`{name}` is one non-empty segment).
fn path_matches(template: &str, path: &str) -> bool {
    let (mut template, mut path) = (template.split('/'), path.split('/'));
    loop {
        match (template.next(), path.next()) {
            (None, None) => return true,
            (Some(t), Some(p)) if t.starts_with('{') && t.ends_with('}') => {
                if p.is_empty() {
                    return false;
                }
            }
            (Some(t), Some(p)) if t == p => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn undeclared_methods_are_told_what_the_path_takes() {
        assert_eq!(
            declared_methods("/consent/Consent"),
            ["POST", "GET", "HEAD"]
        );
        assert_eq!(declared_methods("/consent/Consent/c1/$revoke"), ["POST"]);
        assert_eq!(declared_methods("/audit/receipts/r-1"), ["GET", "HEAD"]);
        assert_eq!(declared_methods("/console/"), ["GET", "HEAD"]);
        assert!(declared_methods("/audit/receipts/").is_empty());
        assert!(declared_methods("/audit/receipts/a/b").is_empty());
        assert!(declared_methods("/nowhere").is_empty());
    }

    #[test]
    fn the_openapi_document_describes_exactly_the_api_routes() {
        let doc: serde_json::Value = serde_json::from_str(&openapi_json().unwrap()).unwrap();
        assert_eq!(
            doc["openapi"].as_str().map(|v| v.starts_with("3.1")),
            Some(true)
        );
        let described: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .filter(|m| {
                        ["get", "put", "post", "delete", "patch", "head", "options"]
                            .contains(&m.as_str())
                    })
                    .map(move |m| (m.clone(), path.clone()))
            })
            .collect();
        let served: BTreeSet<(String, String)> = API_ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        let undocumented: Vec<_> = served.difference(&described).collect();
        let unserved: Vec<_> = described.difference(&served).collect();
        assert!(
            undocumented.is_empty(),
            "routes missing from openapi.yaml: {undocumented:?}"
        );
        assert!(
            unserved.is_empty(),
            "openapi.yaml describes routes not served: {unserved:?}"
        );
    }

    #[test]
    fn configure_registers_every_api_route() {
        // Each API route appears in `configure` with its method; read this file's own text.
        let source = include_str!("routes.rs");
        let configure = source
            .split("pub fn configure")
            .nth(1)
            .and_then(|s| s.split("\n}\n").next())
            .unwrap();
        // Whitespace collapsed: rustfmt may break a registration over several lines.
        let flat = configure.split_whitespace().collect::<Vec<_>>().join(" ");
        let registered: BTreeSet<(String, String)> = flat
            .split(".route(")
            .skip(1)
            .filter_map(|item| {
                let path = item.trim_start().strip_prefix('"')?.split('"').next()?;
                let method = item.split("web::").nth(1)?.split('(').next()?;
                // The FHIR surface (the `/fhir` scope) is not the gateway's own API.
                (!path.starts_with("/fhir") && !path.starts_with("/{site}"))
                    .then(|| (method.to_owned(), path.to_owned()))
            })
            .collect();
        let listed: BTreeSet<(String, String)> = API_ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(registered, listed);
    }
}
