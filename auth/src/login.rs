//! Browser sign-in for the gateway's own pages (the compliance console): the OpenID Connect
//! authorization-code flow with PKCE (S256), state and nonce, as a public client, with the
//! `openidconnect` crate.
//!
//! Owns discovery of the issuer for the flow, the authorization URL and the code exchange with
//! the ID token's verification (signature against the issuer's JWKS, issuer, audience,
//! expiry, nonce). Leaves out cookies and pages (the gateway keeps the state, nonce and PKCE
//! verifier between the two steps, and checks the access token with its [`crate::Verifier`]
//! like any bearer token). Never logs a token or a code.

use std::time::Duration;

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AuthType, AuthorizationCode, ClientId, CsrfToken, HttpRequest, HttpResponse, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use thiserror::Error;

use crate::error::ConfigError;

/// The flow's client at one issuer.
pub struct LoginClient {
    metadata: CoreProviderMetadata,
    client_id: String,
    redirect: RedirectUrl,
    http: reqwest::Client,
}

/// The first step's values: send the browser to `url`; keep the rest for the callback.
#[derive(Debug, Clone)]
pub struct LoginStart {
    pub url: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// A completed sign-in.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The ID token's subject.
    pub subject: String,
    /// The access token, to be verified like any bearer token.
    pub access_token: String,
}

/// Why a sign-in failed; the messages name no token or code.
#[derive(Debug, Error)]
pub enum LoginError {
    #[error("the code exchange failed: {0}")]
    Exchange(String),
    #[error("the token response has no ID token")]
    NoIdToken,
    #[error("the ID token was not accepted: {0}")]
    IdToken(String),
}

/// An HTTP failure as `openidconnect` wants to see it.
#[derive(Debug, Error)]
#[error("{0}")]
struct FetchError(String);

async fn fetch(http: &reqwest::Client, request: HttpRequest) -> Result<HttpResponse, FetchError> {
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
    let body = crate::jwks::read_limited(response)
        .await
        .map_err(FetchError)?;
    let mut out = HttpResponse::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}

impl LoginClient {
    /// Discovers `issuer` (OpenID discovery and JWKS) for client `client_id`, whose redirect
    /// URI is `redirect_uri`.
    pub async fn discover(
        issuer: &str,
        client_id: &str,
        redirect_uri: &str,
    ) -> Result<LoginClient, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            issuer: issuer.to_owned(),
            reason,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            // The token endpoint must answer itself: no redirects (SSRF, code leakage).
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ConfigError::HttpClient(e.to_string()))?;
        let issuer_url =
            IssuerUrl::new(issuer.to_owned()).map_err(|e| invalid(format!("not a URL: {e}")))?;
        let redirect = RedirectUrl::new(redirect_uri.to_owned())
            .map_err(|e| invalid(format!("redirect URI: {e}")))?;
        let client = |request: HttpRequest| fetch(&http, request);
        let metadata = CoreProviderMetadata::discover_async(issuer_url, &client)
            .await
            .map_err(|e| ConfigError::Discovery {
                issuer: issuer.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(LoginClient {
            metadata,
            client_id: client_id.to_owned(),
            redirect,
            http,
        })
    }

    fn client(
        &self,
    ) -> CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    > {
        CoreClient::from_provider_metadata(
            self.metadata.clone(),
            ClientId::new(self.client_id.clone()),
            None,
        )
        .set_redirect_uri(self.redirect.clone())
        .set_auth_type(AuthType::RequestBody)
    }

    /// The authorization URL asking for `scope` (space-separated; `openid` is always asked),
    /// with fresh state, nonce and PKCE challenge.
    pub fn start(&self, scope: &str) -> LoginStart {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let client = self.client();
        let mut request = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for s in scope.split_whitespace().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(s.to_owned()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        LoginStart {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        }
    }

    /// Exchanges `code` with the PKCE verifier and verifies the ID token against `nonce`.
    pub async fn finish(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<SignedIn, LoginError> {
        let client = self.client();
        let http = |request: HttpRequest| fetch(&self.http, request);
        let token = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| LoginError::Exchange(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&http)
            .await
            .map_err(|e| LoginError::Exchange(e.to_string()))?;
        let id_token = token.id_token().ok_or(LoginError::NoIdToken)?;
        let verifier = client.id_token_verifier().set_allowed_algs([
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            CoreJwsSigningAlgorithm::RsaSsaPssSha256,
            CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        ]);
        let claims = id_token
            .claims(&verifier, &Nonce::new(nonce.to_owned()))
            .map_err(|e| LoginError::IdToken(e.to_string()))?;
        Ok(SignedIn {
            subject: claims.subject().to_string(),
            access_token: token.access_token().secret().clone(),
        })
    }
}
