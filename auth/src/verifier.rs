//! The verifier: OpenID discovery of each trusted issuer (with the `openidconnect` crate),
//! JWKS caching and rate-limited refetching, JWT checks (with `jsonwebtoken`), claim
//! extraction into a [`VerifiedCaller`], and the verified-token cache.
//!
//! Leaves out: HTTP server types (the gateway passes the bearer token and the
//! `X-Purpose-Of-Use` header value as strings) and scope enforcement (`scopes.rs`).
//! Never logs a token; failures are logged with their code at `info`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Validation, decode};
use openidconnect::core::CoreProviderMetadata;
use openidconnect::{HttpRequest, HttpResponse, IssuerUrl};
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::{Map, Value};
use thiserror::Error;
use tracing::{info, warn};

use crate::caller::{CallerKind, VerifiedCaller};
use crate::config::{IssuerConfig, SigningAlgorithm, VerifierOptions};
use crate::error::{AuthError, ConfigError};
use crate::jwks::{self, KeyEntry, KeySet};
use crate::purpose::PurposeOfUse;
use crate::scopes::Scopes;
use crate::smart_config::ProviderEndpoints;
use crate::token_cache::{CachedToken, TokenCache, token_digest};

/// Verifies bearer tokens from the configured issuers. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

impl Verifier {
    /// Discovers every issuer (`/.well-known/openid-configuration`) and fetches its JWKS, with
    /// [`VerifierOptions::default`]. Fails if any issuer cannot be used: fix the configuration
    /// or the network and start again.
    pub async fn discover(configs: Vec<IssuerConfig>) -> Result<Verifier, ConfigError> {
        Verifier::discover_with(configs, VerifierOptions::default()).await
    }

    /// [`discover`](Verifier::discover) with explicit options.
    pub async fn discover_with(
        configs: Vec<IssuerConfig>,
        options: VerifierOptions,
    ) -> Result<Verifier, ConfigError> {
        check_configs(&configs)?;
        let http = reqwest::Client::builder()
            .timeout(options.http_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| ConfigError::HttpClient(e.to_string()))?;
        let mut issuers = Vec::with_capacity(configs.len());
        for config in configs {
            issuers.push(discover_issuer(&http, config, &options).await?);
        }
        let by_issuer = issuers
            .iter()
            .enumerate()
            .map(|(i, s)| (s.config.issuer.clone(), i))
            .collect();
        Ok(Verifier {
            inner: Arc::new(Inner {
                token_cache: TokenCache::new(options.token_cache_capacity),
                issuers,
                by_issuer,
                options,
                http,
            }),
        })
    }

    /// Verifies `token` (the bearer token, without `Bearer `) and resolves the purpose of use
    /// from the token's claim or `purpose_header` (the `X-Purpose-Of-Use` value, where the
    /// issuer allows it). Async because a token naming an unknown key may trigger a JWKS
    /// refetch.
    pub async fn verify(
        &self,
        token: &str,
        purpose_header: Option<&str>,
    ) -> Result<VerifiedCaller, AuthError> {
        let result = self.inner.verify(token, purpose_header).await;
        if let Err(error) = &result {
            info!(code = error.code(), reason = %error, "bearer token not accepted");
        }
        result
    }

    /// How many JWKS documents were fetched for `issuer` since start (discovery included).
    pub fn jwks_fetch_count(&self, issuer: &str) -> Option<u64> {
        let index = *self.inner.by_issuer.get(issuer)?;
        Some(
            self.inner.issuers[index]
                .n_jwks_fetches
                .load(Ordering::Relaxed),
        )
    }

    /// The configured issuers, in order.
    pub fn issuers(&self) -> impl Iterator<Item = &IssuerConfig> {
        self.inner.issuers.iter().map(|s| &s.config)
    }

    /// What discovery found for `issuer`: endpoints for `/.well-known/smart-configuration`
    /// and the CapabilityStatement security section.
    pub fn endpoints(&self, issuer: &str) -> Option<&ProviderEndpoints> {
        let index = *self.inner.by_issuer.get(issuer)?;
        Some(&self.inner.issuers[index].endpoints)
    }
}

struct Inner {
    issuers: Vec<IssuerState>,
    by_issuer: HashMap<String, usize>,
    token_cache: TokenCache,
    options: VerifierOptions,
    http: reqwest::Client,
}

struct IssuerState {
    config: IssuerConfig,
    jwks_uri: String,
    endpoints: ProviderEndpoints,
    /// One `jsonwebtoken` validation per allowed algorithm, built once.
    validations: Vec<(SigningAlgorithm, Validation)>,
    keys: RwLock<Arc<KeySet>>,
    /// When the JWKS was last fetched (or tried); held while a fetch is under way, so that
    /// concurrent tokens wait for it instead of fetching again.
    /// `None` until the first refetch after discovery.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    n_jwks_fetches: AtomicU64,
}

impl IssuerState {
    fn keys(&self) -> Arc<KeySet> {
        // A poisoned lock only means a panic elsewhere while swapping an Arc; the Arc inside
        // is always whole, so keep using it.
        match self.keys.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_keys(&self, keys: KeySet) -> bool {
        let mut slot = match self.keys.write() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Keys without a kid cannot be compared; count them as replaced.
        let removed =
            !slot.unnamed.is_empty() || slot.kids().any(|kid| !keys.by_kid.contains_key(kid));
        *slot = Arc::new(keys);
        removed
    }
}

/// The JOSE header fields this crate looks at.
#[derive(Deserialize)]
struct JoseHeader {
    alg: String,
    kid: Option<String>,
    typ: Option<String>,
    crit: Option<Value>,
}

impl Inner {
    async fn verify(
        &self,
        token: &str,
        purpose_header: Option<&str>,
    ) -> Result<VerifiedCaller, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > self.options.max_token_bytes {
            return Err(AuthError::TooLarge {
                max: self.options.max_token_bytes,
            });
        }
        let digest = token_digest(token);
        let now = unix_now();
        if let Some(hit) = self.token_cache.get(&digest, now) {
            let config = &self.issuers[hit.issuer_index].config;
            return with_purpose_header(hit.caller.clone(), config, purpose_header);
        }

        let (header, payload, signature) = split_token(token)?;
        let header: JoseHeader = decode_part(header)?;
        // With one issuer, `jsonwebtoken` checks `iss` below; with several, `iss` picks the keys.
        let issuer_index = if self.issuers.len() == 1 {
            0
        } else {
            let iss = peek_issuer(payload)?;
            *self.by_issuer.get(&iss).ok_or(AuthError::WrongIssuer)?
        };
        let issuer = &self.issuers[issuer_index];
        let config = &issuer.config;

        let alg = SigningAlgorithm::from_jose(&header.alg)
            .filter(|a| config.algorithms.contains(a))
            .ok_or_else(|| AuthError::AlgorithmNotAllowed {
                alg: printable(&header.alg),
            })?;
        if let Some(typ) = &header.typ {
            let typ = typ.to_ascii_lowercase();
            let typ = typ.strip_prefix("application/").unwrap_or(&typ);
            if typ != "jwt" && typ != "at+jwt" {
                return Err(AuthError::WrongType {
                    typ: printable(typ),
                });
            }
        }
        if signature.is_empty() {
            return Err(AuthError::Malformed {
                reason: "no signature",
            });
        }
        if header.crit.is_some() {
            return Err(AuthError::Malformed {
                reason: "critical header extensions are not supported",
            });
        }

        self.refresh_if_stale(issuer).await;
        let key = self.find_key(issuer, header.kid.as_deref(), alg).await?;

        let validation = issuer
            .validations
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, v)| v)
            .ok_or_else(|| AuthError::AlgorithmNotAllowed {
                alg: printable(&header.alg),
            })?;
        let data = decode::<Map<String, Value>>(token, &key.key, validation)
            .map_err(|e| map_jwt_error(e.into_kind(), &header.alg))?;
        let claims = data.claims;
        // The times are checked here, not by `jsonwebtoken`: it reads `exp` and `nbf` from the
        // token's bytes with a visitor that serde_json's `arbitrary_precision` (numbers kept as
        // text, workspace-wide) does not feed a fractional or exponent NumericDate, which RFC
        // 7519 allows. The claims map reads every number.
        let leeway = config.leeway.as_secs() as f64;
        let exp = numeric_date(&claims, "exp")?.ok_or(AuthError::MissingClaim {
            claim: "exp".to_owned(),
        })?;
        if exp < now as f64 - leeway {
            return Err(AuthError::Expired);
        }
        if numeric_date(&claims, "nbf")?.is_some_and(|nbf| nbf > now as f64 + leeway) {
            return Err(AuthError::NotYetValid);
        }
        if numeric_date(&claims, "iat")?.is_some_and(|iat| iat > now as f64 + leeway) {
            return Err(AuthError::IssuedInFuture);
        }

        let caller = caller_from_claims(&claims, config, &digest)?;
        self.token_cache.insert(
            digest,
            CachedToken {
                caller: caller.clone(),
                issuer_index,
            },
        );
        with_purpose_header(caller, config, purpose_header)
    }

    /// Refetches the JWKS when the provider's freshness lifetime has passed. Another task's
    /// fetch under way, the rate limit, or a failure all leave the current keys in use.
    async fn refresh_if_stale(&self, issuer: &IssuerState) {
        if issuer.keys().fresh_until > Instant::now() {
            return;
        }
        let Ok(mut last_fetch) = issuer.last_fetch.try_lock() else {
            return;
        };
        if rate_limited(*last_fetch, &issuer.config) {
            return;
        }
        self.refetch(issuer, &mut last_fetch, "keys stale").await;
    }

    /// The key that verifies a token naming `kid` (or none) with `alg`. An unknown `kid`
    /// triggers a JWKS refetch unless one happened within the issuer's minimum interval.
    async fn find_key(
        &self,
        issuer: &IssuerState,
        kid: Option<&str>,
        alg: SigningAlgorithm,
    ) -> Result<Arc<KeyEntry>, AuthError> {
        let Some(kid) = kid else {
            let keys = issuer.keys();
            let mut fitting = keys
                .unnamed
                .iter()
                .chain(keys.by_kid.values())
                .filter(|k| k.allows(alg));
            return match (fitting.next(), fitting.next()) {
                (Some(key), None) => Ok(key.clone()),
                _ => Err(AuthError::UnknownKey { kid: String::new() }),
            };
        };
        let lookup = |keys: &KeySet| -> Option<Result<Arc<KeyEntry>, AuthError>> {
            let key = keys.by_kid.get(kid)?;
            Some(if key.allows(alg) {
                Ok(key.clone())
            } else {
                Err(AuthError::BadSignature)
            })
        };
        if let Some(found) = lookup(&issuer.keys()) {
            return found;
        }
        let mut last_fetch = issuer.last_fetch.lock().await;
        // Another task may have refetched while this one waited.
        if let Some(found) = lookup(&issuer.keys()) {
            return found;
        }
        let unknown = || AuthError::UnknownKey {
            kid: printable(kid),
        };
        if rate_limited(*last_fetch, &issuer.config) {
            return Err(unknown());
        }
        if !self.refetch(issuer, &mut last_fetch, "unknown kid").await
            && issuer.keys().by_kid.is_empty()
        {
            return Err(AuthError::IssuerUnavailable);
        }
        lookup(&issuer.keys()).unwrap_or_else(|| Err(unknown()))
    }

    /// Fetches the issuer's JWKS and installs it; false if that failed. Clears the token
    /// cache when a key disappeared, so tokens signed with it stop passing at once.
    async fn refetch(
        &self,
        issuer: &IssuerState,
        last_fetch: &mut Option<Instant>,
        why: &str,
    ) -> bool {
        *last_fetch = Some(Instant::now());
        issuer.n_jwks_fetches.fetch_add(1, Ordering::Relaxed);
        let result = jwks::fetch(&self.http, &issuer.jwks_uri)
            .await
            .and_then(|(headers, body)| {
                let fresh_for = freshness(&headers, &self.options);
                KeySet::parse(&body, &issuer.config.algorithms, fresh_for)
            });
        match result {
            Ok((keys, skipped)) => {
                for reason in skipped {
                    warn!(issuer = %issuer.config.issuer, %reason, "JWKS key skipped");
                }
                info!(issuer = %issuer.config.issuer, why, n_keys = keys.by_kid.len() + keys.unnamed.len(), "JWKS refetched");
                if issuer.set_keys(keys) {
                    self.token_cache.clear();
                }
                true
            }
            Err(reason) => {
                warn!(issuer = %issuer.config.issuer, why, %reason, "JWKS refetch failed; keeping the keys held");
                false
            }
        }
    }
}

/// An HTTP failure as `openidconnect` wants to see it.
#[derive(Debug, Error)]
#[error("{0}")]
struct FetchError(String);

/// One response seen during discovery, kept so that the JWKS fetched by `openidconnect` is
/// not fetched a second time.
struct Seen {
    url: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

async fn discover_issuer(
    http: &reqwest::Client,
    config: IssuerConfig,
    options: &VerifierOptions,
) -> Result<IssuerState, ConfigError> {
    let issuer_url = IssuerUrl::new(config.issuer.clone()).map_err(|e| ConfigError::Invalid {
        issuer: config.issuer.clone(),
        reason: format!("not a URL: {e}"),
    })?;
    let seen: Mutex<Vec<Seen>> = Mutex::new(Vec::new());
    let client = |request: HttpRequest| {
        let seen = &seen;
        async move {
            let url = request.uri().to_string();
            let response = http
                .request(request.method().clone(), &url)
                .headers(request.headers().clone())
                .body(request.into_body())
                .send()
                .await
                .map_err(|e| FetchError(format!("{url}: {e}")))?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = jwks::read_limited(response).await.map_err(FetchError)?;
            let mut out = HttpResponse::new(body.clone());
            *out.status_mut() = status;
            *out.headers_mut() = headers.clone();
            if let Ok(mut seen) = seen.lock() {
                seen.push(Seen { url, headers, body });
            }
            Ok::<_, FetchError>(out)
        }
    };
    let metadata = CoreProviderMetadata::discover_async(issuer_url, &client)
        .await
        .map_err(|e| ConfigError::Discovery {
            issuer: config.issuer.clone(),
            reason: error_chain(&e),
        })?;
    let jwks_uri = metadata.jwks_uri().url().to_string();
    let endpoints = ProviderEndpoints::from_discovery(
        &serde_json::to_value(&metadata).unwrap_or_default(),
        jwks_uri.clone(),
    );
    let jwks_error = |reason: String| ConfigError::Jwks {
        issuer: config.issuer.clone(),
        url: jwks_uri.clone(),
        reason,
    };
    let seen = seen.into_inner().unwrap_or_else(|p| p.into_inner());
    let (headers, body) = match seen.into_iter().find(|s| same_url(&s.url, &jwks_uri)) {
        Some(s) => (s.headers, s.body),
        None => jwks::fetch(http, &jwks_uri).await.map_err(jwks_error)?,
    };
    let (keys, skipped) = KeySet::parse(&body, &config.algorithms, freshness(&headers, options))
        .map_err(jwks_error)?;
    for reason in skipped {
        warn!(issuer = %config.issuer, %reason, "JWKS key skipped");
    }
    if keys.by_kid.is_empty() && keys.unnamed.is_empty() {
        return Err(jwks_error("no usable signature key".to_owned()));
    }
    info!(issuer = %config.issuer, %jwks_uri, n_keys = keys.by_kid.len() + keys.unnamed.len(), "issuer discovered");
    let validations = config
        .algorithms
        .iter()
        .map(|alg| (*alg, validation_for(&config, *alg)))
        .collect();
    Ok(IssuerState {
        config,
        jwks_uri,
        validations,
        endpoints,
        keys: RwLock::new(Arc::new(keys)),
        last_fetch: tokio::sync::Mutex::new(None),
        n_jwks_fetches: AtomicU64::new(1),
    })
}

/// What `jsonwebtoken` checks for `config` and `alg`: the signature, `iss`, `aud` and `sub`
/// present, the issuer and the audience. `exp`, `nbf` and `iat` are checked by `verify` from
/// the claims (see there why).
fn validation_for(config: &IssuerConfig, alg: SigningAlgorithm) -> Validation {
    let mut validation = Validation::new(alg.to_jsonwebtoken());
    validation.leeway = config.leeway.as_secs();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.set_issuer(&[&config.issuer]);
    validation.set_audience(&config.audience);
    validation.set_required_spec_claims(&["iss", "aud", "sub"]);
    validation
}

/// A NumericDate claim (seconds since the epoch, RFC 7519: possibly fractional): `None`
/// when absent, an error unless it is a finite number from 0 below 2^64.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => value
            .as_f64()
            .filter(|t| (0.0..u64::MAX as f64).contains(t))
            .map(Some)
            .ok_or_else(|| bad_claim(name)),
    }
}

/// Whether a refetch now would break the issuer's minimum interval.
fn rate_limited(last_fetch: Option<Instant>, config: &IssuerConfig) -> bool {
    last_fetch.is_some_and(|t| t.elapsed() < config.jwks_refetch_min_interval)
}

fn check_configs(configs: &[IssuerConfig]) -> Result<(), ConfigError> {
    let invalid = |config: &IssuerConfig, reason: &str| ConfigError::Invalid {
        issuer: config.issuer.clone(),
        reason: reason.to_owned(),
    };
    if configs.is_empty() {
        return Err(ConfigError::Invalid {
            issuer: String::new(),
            reason: "no trusted issuer configured".to_owned(),
        });
    }
    for (i, config) in configs.iter().enumerate() {
        if config.audience.is_empty() || config.audience.iter().any(String::is_empty) {
            return Err(invalid(config, "audience must be set"));
        }
        if config.algorithms.is_empty() {
            return Err(invalid(config, "at least one algorithm must be allowed"));
        }
        if config.leeway > Duration::from_secs(300) {
            return Err(invalid(config, "leeway over 300 s is not a small leeway"));
        }
        if configs[..i].iter().any(|c| c.issuer == config.issuer) {
            return Err(invalid(config, "issuer configured twice"));
        }
    }
    Ok(())
}

fn freshness(headers: &HeaderMap, options: &VerifierOptions) -> Duration {
    jwks::max_age(headers)
        .unwrap_or(options.jwks_default_max_age)
        .min(options.jwks_max_age_cap)
}

fn same_url(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The three parts of a compact JWS, checked to be base64url; only the signature may be
/// empty here, so that an unsigned token is refused for its `alg` (checked next).
fn split_token(token: &str) -> Result<(&str, &str, &str), AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed {
            reason: "not three dot-separated parts",
        });
    };
    let base64url = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !base64url(header) || !base64url(payload) || !(signature.is_empty() || base64url(signature))
    {
        return Err(AuthError::Malformed {
            reason: "a part is empty or not base64url",
        });
    }
    Ok((header, payload, signature))
}

fn decode_part<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed {
            reason: "a part is not valid base64url",
        })?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed {
        reason: "a part is not the expected JSON object",
    })
}

fn peek_issuer(payload: &str) -> Result<String, AuthError> {
    #[derive(Deserialize)]
    struct Peek {
        iss: Option<Value>,
    }
    let peek: Peek = decode_part(payload)?;
    match peek.iss {
        Some(Value::String(iss)) => Ok(iss),
        Some(_) => Err(bad_claim("iss")),
        None => Err(AuthError::MissingClaim {
            claim: "iss".to_owned(),
        }),
    }
}

fn map_jwt_error(kind: ErrorKind, alg: &str) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim { claim },
        ErrorKind::InvalidClaimFormat(claim) => AuthError::BadClaim { claim },
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm => AuthError::AlgorithmNotAllowed {
            alg: printable(alg),
        },
        _ => AuthError::Malformed {
            reason: "token could not be decoded",
        },
    }
}

fn bad_claim(claim: &str) -> AuthError {
    AuthError::BadClaim {
        claim: claim.to_owned(),
    }
}

/// A string claim: absent or null is `None`, any other non-string is an error.
fn string_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<Arc<str>>, AuthError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(Arc::from(s.as_str()))),
        Some(_) => Err(bad_claim(name)),
    }
}

/// The `aud` claim: one string or an array of at most 16 strings (RFC 7519). Its presence and
/// one configured audience in it are checked with the signature; absent here, it binds nothing.
fn audiences(claims: &Map<String, Value>) -> Result<Arc<[Arc<str>]>, AuthError> {
    match claims.get("aud") {
        None => Ok(Arc::from([])),
        Some(Value::String(s)) => Ok(Arc::from([Arc::from(s.as_str())])),
        Some(Value::Array(items)) if items.len() <= 16 => items
            .iter()
            .map(|v| v.as_str().map(Arc::from).ok_or_else(|| bad_claim("aud")))
            .collect::<Result<Vec<Arc<str>>, _>>()
            .map(Arc::from),
        _ => Err(bad_claim("aud")),
    }
}

/// The longest display name kept, in characters.
const DISPLAY_MAX_CHARS: usize = 200;

/// The user's name for display: `name`, else `given_name` and `family_name` joined. A claim
/// that is not a string, holds control characters or is too long is ignored (a display name
/// never refuses a token).
fn display_name(claims: &Map<String, Value>) -> Option<Arc<str>> {
    let text = |name: &str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let name = match text("name") {
        Some(name) => name.to_owned(),
        None => [text("given_name"), text("family_name")]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" "),
    };
    let usable = !name.is_empty()
        && name.chars().count() <= DISPLAY_MAX_CHARS
        && !name.chars().any(char::is_control);
    usable.then(|| Arc::from(name))
}

fn caller_from_claims(
    claims: &Map<String, Value>,
    config: &IssuerConfig,
    digest: &[u8; 32],
) -> Result<VerifiedCaller, AuthError> {
    let names = &config.claims;
    let issuer: Arc<str> = Arc::from(config.issuer.as_str());
    let subject = string_claim(claims, "sub")?.ok_or_else(|| AuthError::MissingClaim {
        claim: "sub".to_owned(),
    })?;
    let actor = string_claim(claims, &names.actor)?;
    let organization = string_claim(claims, &names.organization)?;
    let display = display_name(claims);
    let patient = string_claim(claims, &names.patient)?;
    let audiences = audiences(claims)?;
    let client_id = match string_claim(claims, "client_id")? {
        Some(id) => Some(id),
        None => string_claim(claims, "azp")?,
    };
    let token_id = match string_claim(claims, "jti")? {
        Some(jti) => jti,
        None => Arc::from(format!("sha256:{}", hex(&digest[..16]))),
    };
    let expires_at = numeric_date(claims, "exp")?.ok_or_else(|| bad_claim("exp"))? as u64;

    let listed: Vec<&str> = match (claims.get("scope"), claims.get("scp")) {
        (Some(Value::String(s)), _) | (None, Some(Value::String(s))) => {
            s.split(' ').filter(|s| !s.is_empty()).collect()
        }
        (None, Some(Value::Array(items))) => {
            let items: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            items.ok_or_else(|| bad_claim("scp"))?
        }
        (None, None) => Vec::new(),
        (Some(_), _) => return Err(bad_claim("scope")),
        (None, Some(_)) => return Err(bad_claim("scp")),
    };
    // The break-glass grant is not a SMART scope: it is taken out before SMART parsing.
    let (granted, listed): (Vec<&str>, Vec<&str>) = listed
        .into_iter()
        .partition(|s| config.break_glass_scope.as_deref() == Some(*s));
    let break_glass = !granted.is_empty();
    // Role scopes are kept as stated beside the SMART scopes, never parsed as such.
    let (roles, listed): (Vec<&str>, Vec<&str>) = listed
        .into_iter()
        .partition(|s| config.role_scopes.iter().any(|r| r == s));
    let (mut scopes, warnings) = Scopes::from_list(listed);
    for role in roles {
        scopes.keep_other(role);
    }
    for w in &warnings {
        warn!(issuer = %issuer, scope = %w.scope, reason = w.reason, "scope ignored");
    }

    let purpose = match claims.get(&names.purpose) {
        None | Some(Value::Null) => None,
        Some(Value::String(code)) => Some(purpose_from_token(code)?),
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::String(code)] => Some(purpose_from_token(code)?),
            _ => return Err(bad_claim(&names.purpose)),
        },
        Some(_) => return Err(bad_claim(&names.purpose)),
    };

    let kind = match actor.as_deref() {
        None => CallerKind::System,
        Some(reference) if reference_type(reference) == Some("Patient") => CallerKind::Patient,
        Some(_) => CallerKind::User,
    };

    Ok(VerifiedCaller {
        issuer,
        subject,
        actor,
        organization,
        display,
        scopes: Arc::new(scopes),
        purpose,
        patient,
        audiences,
        token_id,
        client_id,
        kind,
        expires_at,
        break_glass,
    })
}

fn purpose_from_token(code: &str) -> Result<PurposeOfUse, AuthError> {
    PurposeOfUse::parse(code).ok_or_else(|| AuthError::PurposeUnknownInToken {
        code: printable(code),
    })
}

/// Applies an `X-Purpose-Of-Use` header to a verified caller.
fn with_purpose_header(
    mut caller: VerifiedCaller,
    config: &IssuerConfig,
    header: Option<&str>,
) -> Result<VerifiedCaller, AuthError> {
    let Some(header) = header else {
        return Ok(caller);
    };
    if !config.allow_purpose_header {
        return Err(AuthError::PurposeHeaderNotAllowed);
    }
    let stated = PurposeOfUse::parse(header).ok_or_else(|| AuthError::PurposeUnknownInHeader {
        code: printable(header),
    })?;
    match caller.purpose {
        Some(token) if token != stated => Err(AuthError::PurposeConflict {
            token: token.code().to_owned(),
            header: stated.code().to_owned(),
        }),
        _ => {
            caller.purpose = Some(stated);
            Ok(caller)
        }
    }
}

/// The resource type of a relative or absolute FHIR reference (`Practitioner/1`,
/// `https://x/fhir/Patient/2`).
fn reference_type(reference: &str) -> Option<&str> {
    let mut segments = reference.rsplit('/');
    let _id = segments.next()?;
    segments.next()
}

/// At most 64 printable ASCII characters of attacker-supplied text, for errors and logs.
fn printable(text: &str) -> String {
    text.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_only_three_base64url_parts() {
        assert!(split_token("a.b.c").is_ok());
        assert_eq!(split_token("a.b.").unwrap().2, "");
        for bad in [
            "a.b", "a.b.c.d", "a..c", ".b.c", "a=.b.c", "a.b+.c", "a b.c.d",
        ] {
            assert_eq!(
                split_token(bad).unwrap_err().code(),
                "token-malformed",
                "{bad}"
            );
        }
    }

    #[test]
    fn a_display_name_is_taken_from_name_or_given_and_family_and_never_refuses() {
        let cases: Vec<(Value, Option<&str>)> = vec![
            (
                serde_json::json!({"name": "Alice Adams"}),
                Some("Alice Adams"),
            ),
            (
                serde_json::json!({"name": " Alice ", "given_name": "X"}),
                Some("Alice"),
            ),
            (
                serde_json::json!({"given_name": "Alice", "family_name": "Adams"}),
                Some("Alice Adams"),
            ),
            (serde_json::json!({"family_name": "Adams"}), Some("Adams")),
            (serde_json::json!({}), None),
            (serde_json::json!({"name": ""}), None),
            (serde_json::json!({"name": 7}), None),
            (serde_json::json!({"name": "Alice\nAdams"}), None),
            (serde_json::json!({"name": "a".repeat(201)}), None),
        ];
        for (claims, expected) in cases {
            let claims = claims.as_object().unwrap();
            assert_eq!(display_name(claims).as_deref(), expected, "{claims:?}");
        }
    }

    #[test]
    fn reference_types() {
        assert_eq!(reference_type("Practitioner/1"), Some("Practitioner"));
        assert_eq!(reference_type("https://x/fhir/Patient/2"), Some("Patient"));
        assert_eq!(reference_type("nobody"), None);
    }

    #[test]
    fn purpose_header_rules() {
        let mut config = IssuerConfig::new("https://idp", "aud");
        let caller = VerifiedCaller {
            issuer: "https://idp".into(),
            subject: "s".into(),
            actor: None,
            organization: None,
            display: None,
            scopes: Arc::new(Scopes::default()),
            purpose: None,
            patient: None,
            token_id: "t".into(),
            client_id: None,
            kind: CallerKind::System,
            expires_at: 0,
            break_glass: false,
            audiences: std::sync::Arc::from([]),
        };
        assert_eq!(
            with_purpose_header(caller.clone(), &config, Some("TREAT")).unwrap_err(),
            AuthError::PurposeHeaderNotAllowed
        );
        config.allow_purpose_header = true;
        assert_eq!(
            with_purpose_header(caller.clone(), &config, Some("TREAT"))
                .unwrap()
                .purpose
                .unwrap()
                .code(),
            "TREAT"
        );
        assert_eq!(
            with_purpose_header(caller.clone(), &config, Some("NOSY"))
                .unwrap_err()
                .code(),
            "purpose-header-unknown"
        );
        let mut with_claim = caller;
        with_claim.purpose = PurposeOfUse::parse("HPAYMT");
        assert_eq!(
            with_purpose_header(with_claim.clone(), &config, Some("TREAT"))
                .unwrap_err()
                .code(),
            "purpose-conflict"
        );
        assert!(with_purpose_header(with_claim, &config, Some("HPAYMT")).is_ok());
    }

    #[test]
    fn the_audiences_are_kept_as_stated() {
        let config = IssuerConfig::new("https://idp", "aud");
        let digest = [0u8; 32];
        let with = |aud: Value| {
            let v = serde_json::json!({"sub": "s", "exp": 10, "aud": aud});
            caller_from_claims(v.as_object().unwrap(), &config, &digest)
        };
        let one = with("https://gw/fhir/a".into()).unwrap();
        assert_eq!(one.audiences.len(), 1);
        assert_eq!(&*one.audiences[0], "https://gw/fhir/a");
        let two = with(serde_json::json!(["https://gw/fhir", "https://gw/fhir/a"])).unwrap();
        assert_eq!(two.audiences.len(), 2);
        for bad in [
            serde_json::json!(5),
            serde_json::json!(["a", 5]),
            serde_json::json!(vec!["a"; 17]),
        ] {
            assert_eq!(with(bad).unwrap_err(), bad_claim("aud"));
        }
    }

    #[test]
    fn the_break_glass_scope_becomes_a_flag_and_nothing_else() {
        let claims = |scope: Value| {
            let v = serde_json::json!({"sub": "dr-bob", "exp": 10, "scope": scope});
            v.as_object().unwrap().clone()
        };
        let mut config = IssuerConfig::new("https://idp", "aud");
        let digest = [0u8; 32];
        let granted = caller_from_claims(
            &claims("user/*.rs assent/break-glass".into()),
            &config,
            &digest,
        )
        .unwrap();
        assert!(granted.break_glass);
        // It grants no resource access and is not kept among the other scopes.
        assert_eq!(granted.scopes.resource_scopes().len(), 1);
        assert!(granted.scopes.other_scopes().is_empty());
        let plain = caller_from_claims(&claims("user/*.rs".into()), &config, &digest).unwrap();
        assert!(!plain.break_glass);
        // A look-alike is no grant; nor is the scope of another issuer's configuration.
        let alike = caller_from_claims(
            &claims("assent/break-glass-x user/*.rs?break-glass".into()),
            &config,
            &digest,
        )
        .unwrap();
        assert!(!alike.break_glass);
        config.break_glass_scope = Some("urn:hospital:emergency".into());
        let other = caller_from_claims(
            &claims("assent/break-glass user/*.rs".into()),
            &config,
            &digest,
        )
        .unwrap();
        assert!(!other.break_glass);
        config.break_glass_scope = None;
        assert!(
            !caller_from_claims(&claims("assent/break-glass".into()), &config, &digest)
                .unwrap()
                .break_glass
        );
    }

    #[test]
    fn role_scopes_are_kept_as_stated_and_grant_no_resource_access() {
        let claims = |scope: &str| {
            let v = serde_json::json!({"sub": "privacy", "exp": 10, "scope": scope});
            v.as_object().unwrap().clone()
        };
        let mut config = IssuerConfig::new("https://idp", "aud");
        let digest = [0u8; 32];
        // Not configured: an unknown scope, dropped.
        let dropped =
            caller_from_claims(&claims("assent/consent-admin"), &config, &digest).unwrap();
        assert!(dropped.scopes.other_scopes().is_empty());
        config.role_scopes = vec!["assent/consent-admin".into()];
        let kept = caller_from_claims(
            &claims("openid assent/consent-admin assent/consent-admin-x"),
            &config,
            &digest,
        )
        .unwrap();
        assert_eq!(
            kept.scopes.other_scopes(),
            ["openid".to_owned(), "assent/consent-admin".to_owned()]
        );
        assert!(kept.scopes.resource_scopes().is_empty());
    }

    #[test]
    fn printable_strips_control_characters() {
        assert_eq!(printable("a\nb\u{7f}c"), "a?b?c");
        assert_eq!(printable(&"x".repeat(100)).len(), 64);
    }
}
