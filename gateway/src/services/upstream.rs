//! The forward phase: one hospital FHIR server behind the gateway, reached over HTTP(S) with
//! the site's own credentials, timeouts, one retry of idempotent reads on connection failure,
//! and a circuit breaker that cuts off a site that keeps failing.
//!
//! **Invariant:** [`forward`] takes a `&Permit`; there is no other way to send a request
//! upstream. Owns: the per-site runtime state (breaker, TLS, cached client-credentials token)
//! and the header allow-list towards the upstream. Leaves out: what to do with the response
//! (the filter phase).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use assent_consent::Permit;
use bytes::Bytes;
use failsafe::StateMachine;
use failsafe::backoff::Constant;
use failsafe::failure_policy::ConsecutiveFailures;
use serde::Deserialize;

use crate::config::{SiteConfig, UpstreamAuth};
use assent_fhir::compartment::ReferenceContext;

/// Why a request to a site failed; the error table (`http/error.rs`) turns each into its
/// OperationOutcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("the site's circuit is open")]
    CircuitOpen,
    #[error("the site did not answer in time")]
    Timeout,
    #[error("the site could not be reached")]
    Unreachable,
    #[error("the gateway could not authenticate to the site")]
    AuthFailed,
    #[error("the site answered with an error")]
    Failed,
    #[error("the site's answer could not be read")]
    BadResponse,
    #[error("internal error")]
    Internal,
}

/// Request headers passed from the client to the upstream. Everything else (cookies, the
/// client's `Authorization`, forwarding headers) stays at the gateway.
pub const REQUEST_HEADER_ALLOW_LIST: &[&str] = &[
    // Conditional read headers are answered by the gateway after the decision, never
    // forwarded: a 304 from the site would release a fact before any decision.
    "accept-language",
    "prefer",
];

/// The circuit breaker of one site.
pub type Breaker = StateMachine<ConsecutiveFailures<Constant>, ()>;

/// A site at run time: its configuration and the state the forward phase keeps for it.
pub struct Site {
    pub id: String,
    pub config: SiteConfig,
    pub urls: UrlMap,
    /// Where references in this site's answers may point (for the whose-data rule): its
    /// upstream base and gateway base, the other sites' gateway bases, its patient
    /// identifier systems.
    pub references: ReferenceContext,
    breaker: Breaker,
    tls: Option<Arc<rustls::ClientConfig>>,
    token: Mutex<Option<CachedToken>>,
}

struct CachedToken {
    value: String,
    expires: Instant,
}

/// A site whose TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("site `{site}`: {message}")]
pub struct SiteSetupError {
    pub site: String,
    pub message: String,
}

impl Site {
    /// Prepares a site: reads TLS files, sets up the breaker. `public_base` is the gateway's
    /// public base URL; `other_sites` the ids of the gateway's other sites.
    pub fn new(
        id: &str,
        config: SiteConfig,
        public_base: &str,
        other_sites: &[&str],
    ) -> Result<Site, SiteSetupError> {
        let setup_error = |message: String| SiteSetupError {
            site: id.to_owned(),
            message,
        };
        let tls = match (&config.upstream_auth, config.upstream.scheme()) {
            (UpstreamAuth::Mtls { .. }, _) | (_, "https") => Some(Arc::new(
                tls_config(&config.upstream_auth).map_err(setup_error)?,
            )),
            _ => None,
        };
        let breaker = failsafe::Config::new()
            .failure_policy(failsafe::failure_policy::consecutive_failures(
                config.circuit_breaker.failures,
                failsafe::backoff::constant(Duration::from_millis(config.circuit_breaker.open_ms)),
            ))
            .build();
        let urls = UrlMap::new(
            config.upstream.as_str(),
            &format!("{public_base}/fhir/{id}"),
        );
        let references = ReferenceContext {
            local_bases: vec![urls.upstream_base.clone(), urls.public_base.clone()],
            other_sites: other_sites
                .iter()
                .filter(|other| **other != id)
                .map(|other| (format!("{public_base}/fhir/{other}"), (*other).to_owned()))
                .collect(),
            patient_identifier_systems: config.patient_identifier_systems.clone(),
        };
        Ok(Site {
            id: id.to_owned(),
            config,
            urls,
            references,
            breaker,
            tls,
            token: Mutex::new(None),
        })
    }

    /// An HTTP client for this site. awc clients belong to one worker thread: each worker
    /// builds its own.
    pub fn client(&self) -> awc::Client {
        let mut connector = awc::Connector::new()
            .timeout(self.config.connect_timeout())
            .conn_keep_alive(Duration::from_secs(30))
            .limit(256);
        if let Some(tls) = &self.tls {
            connector = connector.rustls_0_23(tls.clone());
        }
        awc::Client::builder()
            .connector(connector)
            .timeout(self.config.timeout())
            .disable_redirects()
            .no_default_headers()
            .finish()
    }

    /// Whether the breaker lets a call through now.
    pub fn circuit_closed(&self) -> bool {
        self.breaker.is_call_permitted()
    }
}

/// What the gateway sends upstream.
pub struct UpstreamRequest {
    pub method: Method,
    /// Path and query relative to the site base (`Patient/1`, `Patient?name=x`).
    pub path_and_query: String,
    /// Allow-listed client headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub request_id: String,
    /// Form body of `POST _search`.
    pub body: Option<Bytes>,
}

impl UpstreamRequest {
    /// A GET the gateway itself makes (capabilities, directories, identity lookups, the pages
    /// of a search it walks): no client headers, no body.
    pub fn get(path_and_query: String, request_id: &str) -> UpstreamRequest {
        UpstreamRequest {
            method: Method::GET,
            path_and_query,
            headers: Vec::new(),
            request_id: request_id.to_owned(),
            body: None,
        }
    }
}

/// Picks the allow-listed headers out of a client request.
pub fn allowed_request_headers(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    REQUEST_HEADER_ALLOW_LIST
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?;
            Some((HeaderName::from_static(name), value.clone()))
        })
        .collect()
}

/// Sends `request` to `site`. Requires a `Permit`: the proof that access was decided.
/// Connection failures (refused, reset, closed before a response) are retried once: every
/// forwarded interaction is an idempotent read. Timeouts are not retried.
pub async fn forward(
    _permit: &Permit,
    site: &Site,
    client: &awc::Client,
    request: &UpstreamRequest,
) -> Result<awc::ClientResponse, UpstreamError> {
    if !site.breaker.is_call_permitted() {
        return Err(UpstreamError::CircuitOpen);
    }
    let auth = upstream_authorization(site, client).await;
    let auth = match auth {
        Ok(a) => a,
        Err(e) => {
            site.breaker.on_error();
            return Err(e);
        }
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let result = send_once(site, client, request, auth.as_ref()).await;
        match result {
            Ok(response) => {
                if response.status().is_server_error() {
                    site.breaker.on_error();
                } else {
                    site.breaker.on_success();
                }
                if response.status() == StatusCode::UNAUTHORIZED {
                    // A client-credentials token may have been revoked: fetch anew next time.
                    if let Ok(mut token) = site.token.lock() {
                        *token = None;
                    }
                }
                return Ok(response);
            }
            Err(SendFailure::Connect) if attempt == 1 => {
                tracing::debug!(site = %site.id, "upstream connection failed; retrying once");
                continue;
            }
            Err(failure) => {
                site.breaker.on_error();
                tracing::warn!(site = %site.id, failure = failure.as_str(), "upstream request failed");
                return Err(match failure {
                    SendFailure::Timeout => UpstreamError::Timeout,
                    SendFailure::Connect | SendFailure::Other => UpstreamError::Unreachable,
                });
            }
        }
    }
}

enum SendFailure {
    Connect,
    Timeout,
    Other,
}

impl SendFailure {
    fn as_str(&self) -> &'static str {
        match self {
            SendFailure::Connect => "connect",
            SendFailure::Timeout => "timeout",
            SendFailure::Other => "send",
        }
    }
}

async fn send_once(
    site: &Site,
    client: &awc::Client,
    request: &UpstreamRequest,
    auth: Option<&HeaderValue>,
) -> Result<awc::ClientResponse, SendFailure> {
    let url = format!("{}/{}", site.urls.upstream_base, request.path_and_query);
    let mut builder = client
        .request(request.method.clone(), url)
        .insert_header((
            header::ACCEPT,
            HeaderValue::from_static("application/fhir+json"),
        ))
        .insert_header((
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        ))
        .insert_header(("x-request-id", request.request_id.as_str()));
    for (name, value) in &request.headers {
        builder = builder.insert_header((name.clone(), value.clone()));
    }
    if let Some(auth) = auth {
        builder = builder.insert_header((header::AUTHORIZATION, auth.clone()));
    }
    let sent = match &request.body {
        Some(body) => {
            builder
                .insert_header((
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                ))
                .send_body(body.clone())
                .await
        }
        None => builder.send().await,
    };
    sent.map_err(|e| {
        use awc::error::{ConnectError, SendRequestError};
        match e {
            SendRequestError::Timeout | SendRequestError::Connect(ConnectError::Timeout) => {
                SendFailure::Timeout
            }
            // Refused, reset, or closed before any response: nothing reached the upstream's
            // application, or it was an idempotent read, so one retry is safe.
            SendRequestError::Connect(_)
            | SendRequestError::Send(_)
            | SendRequestError::Response(_)
            | SendRequestError::H2(_) => SendFailure::Connect,
            _ => SendFailure::Other,
        }
    })
}

/// The `Authorization` header the site expects from the gateway, if any.
async fn upstream_authorization(
    site: &Site,
    client: &awc::Client,
) -> Result<Option<HeaderValue>, UpstreamError> {
    match &site.config.upstream_auth {
        UpstreamAuth::None | UpstreamAuth::Mtls { .. } => Ok(None),
        UpstreamAuth::Bearer { token } => HeaderValue::from_str(&format!("Bearer {token}"))
            .map(Some)
            .map_err(|_| UpstreamError::Internal),
        UpstreamAuth::ClientCredentials {
            token_url,
            client_id,
            client_secret,
            scope,
        } => {
            let cached = site.token.lock().ok().and_then(|t| {
                t.as_ref()
                    .filter(|t| t.expires > Instant::now())
                    .map(|t| t.value.clone())
            });
            let token = match cached {
                Some(token) => token,
                None => {
                    let fresh = fetch_client_credentials(
                        client,
                        token_url,
                        client_id,
                        client_secret,
                        scope.as_deref(),
                    )
                    .await?;
                    let value = fresh.access_token.clone();
                    // Renew a little before the provider's expiry.
                    let lifetime = fresh.expires_in.unwrap_or(300).saturating_sub(30).max(1);
                    if let Ok(mut slot) = site.token.lock() {
                        *slot = Some(CachedToken {
                            value: fresh.access_token,
                            expires: Instant::now() + Duration::from_secs(lifetime),
                        });
                    }
                    value
                }
            };
            HeaderValue::from_str(&format!("Bearer {token}"))
                .map(Some)
                .map_err(|_| UpstreamError::AuthFailed)
        }
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// OAuth 2.0 client credentials grant (RFC 6749 §4.4), client authenticated with HTTP Basic.
async fn fetch_client_credentials(
    client: &awc::Client,
    token_url: &url::Url,
    client_id: &str,
    client_secret: &str,
    scope: Option<&str>,
) -> Result<TokenResponse, UpstreamError> {
    let mut form = vec![("grant_type", "client_credentials")];
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    let mut response = client
        .post(token_url.as_str())
        .basic_auth(client_id, client_secret)
        .insert_header((header::ACCEPT, "application/json"))
        .send_form(&form)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "client credentials token request failed");
            UpstreamError::AuthFailed
        })?;
    if !response.status().is_success() {
        tracing::warn!(
            status = response.status().as_u16(),
            "token endpoint refused the gateway"
        );
        return Err(UpstreamError::AuthFailed);
    }
    response
        .json::<TokenResponse>()
        .limit(64 * 1024)
        .await
        .map_err(|_| UpstreamError::AuthFailed)
}

/// The TLS client configuration of a site: roots from `ca_file` or the system, and the
/// client certificate for mutual TLS.
pub(crate) fn tls_config(auth: &UpstreamAuth) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut roots = rustls::RootCertStore::empty();
    let ca_file = match auth {
        UpstreamAuth::Mtls { ca_file, .. } => ca_file.as_ref(),
        _ => None,
    };
    match ca_file {
        Some(path) => {
            for cert in read_certs(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // A system certificate rustls cannot use is skipped, as browsers do.
                let _ = roots.add(cert);
            }
        }
    }
    let builder = builder.with_root_certificates(roots);
    let mut config = match auth {
        UpstreamAuth::Mtls {
            cert_file,
            key_file,
            ..
        } => {
            let certs = read_certs(cert_file)?;
            let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
                std::fs::File::open(key_file)
                    .map_err(|e| format!("{}: {e}", key_file.display()))?,
            ))
            .map_err(|e| format!("{}: {e}", key_file.display()))?
            .ok_or_else(|| format!("{}: no private key found", key_file.display()))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("client certificate and key do not match: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn read_certs(
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs: Result<Vec<_>, _> =
        rustls_pemfile::certs(&mut std::io::BufReader::new(file)).collect();
    let certs = certs.map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate found", path.display()));
    }
    Ok(certs)
}

/// Per-worker upstream clients by site id (awc clients are bound to their worker thread).
pub struct WorkerClients {
    by_site: HashMap<String, awc::Client>,
}

impl WorkerClients {
    pub fn new(sites: &HashMap<String, Arc<Site>>) -> WorkerClients {
        WorkerClients {
            by_site: sites
                .iter()
                .map(|(id, s)| (id.clone(), s.client()))
                .collect(),
        }
    }

    pub fn get(&self, site: &str) -> Option<&awc::Client> {
        self.by_site.get(site)
    }
}

/// The origins and authorities (`host:port`) of a site's two bases, for the free-text rewrite
/// of [`crate::proxy::rewrite::scrub_strings`]: worked out once per site, when its [`UrlMap`] is made.
#[derive(Debug, Clone)]
pub struct BaseHosts {
    pub(crate) upstream_origin: Option<String>,
    pub(crate) upstream_authority: Option<String>,
    pub(crate) public_origin: String,
    pub(crate) public_authority: String,
}

impl BaseHosts {
    pub fn of(upstream_base: &str, public_base: &str) -> BaseHosts {
        let origin_and_authority = |base: &str| -> Option<(String, String)> {
            let url = url::Url::parse(base).ok()?;
            let host = url.host_str()?;
            let authority = match url.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            };
            Some((format!("{}://{authority}", url.scheme()), authority))
        };
        let upstream = origin_and_authority(upstream_base);
        let public = origin_and_authority(public_base)
            .unwrap_or_else(|| (public_base.to_owned(), public_base.to_owned()));
        BaseHosts {
            upstream_origin: upstream.as_ref().map(|u| u.0.clone()),
            upstream_authority: upstream.map(|u| u.1),
            public_origin: public.0,
            public_authority: public.1,
        }
    }
}

/// The upstream base of one site and the gateway's base for it, both without trailing slash
/// (`http://fhir.st-mary.example/r4` ↔ `https://gateway.example/fhir/st-mary`).
#[derive(Debug, Clone)]
pub struct UrlMap {
    pub upstream_base: String,
    pub public_base: String,
    /// Their origins and authorities, for rewriting free text (parsed once per site).
    pub hosts: BaseHosts,
}

impl UrlMap {
    pub fn new(upstream_base: &str, public_base: &str) -> Self {
        let upstream_base = upstream_base.trim_end_matches('/').to_owned();
        let public_base = public_base.trim_end_matches('/').to_owned();
        UrlMap {
            hosts: BaseHosts::of(&upstream_base, &public_base),
            upstream_base,
            public_base,
        }
    }

    /// The part of `url` below the upstream base (`/Patient?x=1`, `?x=1` or empty), when `url`
    /// is under it. A relative URL (no scheme) is taken as relative to the upstream base.
    pub fn relative<'u>(&self, url: &'u str) -> Option<&'u str> {
        if let Some(rest) = url.strip_prefix(self.upstream_base.as_str()) {
            return (rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
                .then_some(rest);
        }
        if url.contains("://") || url.starts_with("//") {
            return None;
        }
        Some(url)
    }

    /// `url` re-rooted at the gateway, or `None` when it points outside the upstream base.
    pub fn to_public(&self, url: &str) -> Option<String> {
        let rest = self.relative(url)?;
        if rest.is_empty() || rest.starts_with('/') || rest.starts_with('?') {
            Some(format!("{}{}", self.public_base, rest))
        } else {
            Some(format!("{}/{}", self.public_base, rest))
        }
    }
}
