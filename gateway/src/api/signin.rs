//! Browser sign-in shared by the compliance console (`/console/`) and the patient portal
//! (`/portal/`): OpenID Connect authorization code with PKCE at the first trusted issuer
//! (`assent_auth::LoginClient`), the sign-in state kept in a signed cookie scoped to the
//! callback (`SameSite=Lax`, so that the identity provider's redirect back carries it), and
//! the callback's checks: the state matches, the code is exchanged, the access token is
//! verified like any bearer token (`Authenticator::authenticate`, so its patient launch
//! context is bound by the one rule) and names the same subject as the ID token.
//!
//! Leaves out what a realm asks of the caller (the console: the audit role; the portal: a
//! patient launch context) and its session cookie's content (`console.rs`, `portal.rs`).

mod session;

use actix_web::cookie::{Cookie, SameSite, time::Duration as CookieDuration};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use assent_auth::LoginClient;
use maud::Markup;
use serde::Deserialize;

use crate::http::caller::Caller;
use crate::http::error::GatewayError;
use crate::http::state::AppState;
pub use session::{CookieSigner, PendingLogin, Session, new_session_id, now_secs};

/// How long a sign-in may take between the redirect and the callback.
const LOGIN_TTL_SECS: u64 = 600;
/// The pages' Content Security Policy: no script at all, styles from the realm's own
/// stylesheet only, forms posted only here, no framing.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// A server-rendered page of the console or the portal, with its security headers (strict
/// CSP, no framing, no referrer, no sniffing, not stored).
pub fn html_page(status: StatusCode, markup: Markup) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(markup.into_string())
}

/// A realm's sign-in could not start (`{0}` names its configuration table).
#[derive(Debug, thiserror::Error)]
pub enum SignInSetupError {
    #[error("{0} needs a trusted issuer (auth.issuers) to sign in with")]
    NoIssuer(&'static str),
    #[error(
        "{0} needs `console_session_secret_hex` (the key file, or $ASSENT_CONSOLE_SESSION_SECRET_HEX)"
    )]
    NoSessionKey(&'static str),
    #[error("{0}: {1}")]
    Discovery(&'static str, assent_auth::ConfigError),
}

/// One realm's sign-in client and cookie key.
pub struct SignIn {
    login: LoginClient,
    pub cookies: CookieSigner,
    /// `https` public base: cookies are `Secure`.
    secure: bool,
    /// The realm's path (`/console`, `/portal`): its cookies' path.
    path: &'static str,
    /// The sign-in cookie's name and path (the callback).
    login_cookie: &'static str,
    callback: &'static str,
}

/// The identity provider's redirect back.
#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

impl SignIn {
    /// The sign-in of realm `realm` configured by `table` (`audit.console`, `portal`): at
    /// `issuer` (the first trusted one), its cookies signed with `session_key`.
    pub async fn start_realm(
        table: &'static str,
        realm: &'static str,
        path: &'static str,
        issuer: Option<&url::Url>,
        client_id: &str,
        public_base: &str,
        session_key: Option<crate::config::keys::Secret>,
    ) -> Result<SignIn, SignInSetupError> {
        let session_key = session_key.ok_or(SignInSetupError::NoSessionKey(table))?;
        let issuer = issuer.ok_or(SignInSetupError::NoIssuer(table))?;
        SignIn::discover(
            realm,
            path,
            issuer,
            client_id,
            public_base,
            session_key.bytes(),
        )
        .await
        .map_err(|e| SignInSetupError::Discovery(table, e))
    }

    /// Discovers `issuer` for realm `realm` (`console`, `portal`) served under `/{realm}`, its
    /// callback `{public_base}/{realm}/callback`.
    pub async fn discover(
        realm: &'static str,
        path: &'static str,
        issuer: &url::Url,
        client_id: &str,
        public_base: &str,
        session_key: &[u8],
    ) -> Result<SignIn, assent_auth::ConfigError> {
        let issuer = issuer.as_str().trim_end_matches('/');
        let redirect = format!("{public_base}{path}/callback");
        let login = LoginClient::discover(issuer, client_id, &redirect).await?;
        Ok(SignIn {
            login,
            cookies: CookieSigner::for_realm(session_key.to_vec(), realm),
            secure: public_base.starts_with("https://"),
            path,
            login_cookie: match realm {
                "console" => "assent_console_login",
                _ => "assent_portal_login",
            },
            callback: match realm {
                "console" => "/console/callback",
                _ => "/portal/callback",
            },
        })
    }

    /// An `HttpOnly` cookie of this realm (`Secure` behind https).
    pub fn cookie<'c>(&self, name: &'c str, value: String, path: &'c str) -> Cookie<'c> {
        Cookie::build(name, value)
            .path(path)
            .http_only(true)
            .secure(self.secure)
            .finish()
    }

    /// The session cookie `name` holding `value` until `expires_at` (`SameSite=Strict`, the
    /// realm's path).
    pub fn session_cookie<'c>(&self, name: &'c str, value: String, expires_at: u64) -> Cookie<'c> {
        let mut cookie = self.cookie(name, value, self.path);
        cookie.set_same_site(SameSite::Strict);
        cookie.set_max_age(CookieDuration::seconds(
            expires_at.saturating_sub(now_secs()) as i64,
        ));
        cookie
    }

    /// The removal of session cookie `name`.
    pub fn removed_cookie<'c>(&self, name: &'c str) -> Cookie<'c> {
        let mut gone = self.cookie(name, String::new(), self.path);
        gone.make_removal();
        gone
    }

    /// `GET /{realm}/login`: to the identity provider asking for `scope`, with fresh state,
    /// nonce and PKCE kept in the sign-in cookie.
    pub fn start(&self, scope: &str) -> HttpResponse {
        let start = self.login.start(scope);
        let pending = PendingLogin {
            state: start.state,
            nonce: start.nonce,
            pkce_verifier: start.pkce_verifier,
            expires_at: now_secs() + LOGIN_TTL_SECS,
        };
        let mut login_cookie = self.cookie(
            self.login_cookie,
            self.cookies.login(&pending),
            self.callback,
        );
        login_cookie.set_same_site(SameSite::Lax);
        login_cookie.set_max_age(CookieDuration::seconds(LOGIN_TTL_SECS as i64));
        HttpResponse::Found()
            .insert_header((header::LOCATION, start.url))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .cookie(login_cookie)
            .finish()
    }

    /// The removal of the sign-in cookie, once the callback is done.
    pub fn clear_login(&self) -> Cookie<'static> {
        let mut gone = self.cookie(self.login_cookie, String::new(), self.callback);
        gone.make_removal();
        gone
    }

    /// `GET /{realm}/callback`: the verified caller and its access token, or the sentence
    /// to show (the sign-in is refused).
    pub async fn finish(
        &self,
        req: &HttpRequest,
        query: &CallbackQuery,
        state: &AppState,
    ) -> Result<(Caller, String), &'static str> {
        let Some(pending) = req
            .cookie(self.login_cookie)
            .and_then(|c| self.cookies.read_login(c.value()))
        else {
            return Err("The sign-in expired or did not start here. Please sign in again.");
        };
        if query.error.is_some() {
            return Err("The identity provider refused the sign-in.");
        }
        let (Some(code), Some(given_state)) = (&query.code, &query.state) else {
            return Err("The identity provider's answer was incomplete.");
        };
        if given_state != &pending.state {
            tracing::info!(route = self.path, "sign-in refused: state mismatch");
            return Err("The sign-in could not be matched to this browser. Please sign in again.");
        }
        let signed_in = match self
            .login
            .finish(code, &pending.pkce_verifier, &pending.nonce)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::info!(route = self.path, error = %e, "sign-in failed");
                return Err("The sign-in could not be completed.");
            }
        };
        let caller = match authenticate(state, &signed_in.access_token).await {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(
                    route = self.path,
                    error_code = e.code(),
                    "sign-in: access token refused"
                );
                return Err("The identity provider's token was not accepted.");
            }
        };
        if caller.verified.subject.as_ref() != signed_in.subject {
            return Err("The ID token and the access token name different people.");
        }
        Ok((caller, signed_in.access_token))
    }
}

/// Whether the browser session `session_id` was ended by a sign-out (the store's
/// `ended_sessions`, shared by every replica). A store that cannot answer counts as ended:
/// fail closed, the caller signs in again.
pub async fn session_ended(state: &AppState, session_id: &str) -> bool {
    let store = state.store.clone();
    let id = session_id.to_owned();
    !matches!(
        tokio::task::spawn_blocking(move || store.session_ended(&id)).await,
        Ok(Ok(false))
    )
}

/// Ends the browser session `session_id` (which would have expired at `expires_at`, Unix
/// seconds) for every replica: its cookie, and any copy of it, is refused from now on.
pub async fn end_session(
    state: &AppState,
    session_id: &str,
    expires_at: u64,
) -> Result<(), GatewayError> {
    let store = state.store.clone();
    let id = session_id.to_owned();
    let now_ms = now_secs() as i64 * 1000;
    let until_ms = (expires_at as i64).saturating_mul(1000);
    tokio::task::spawn_blocking(move || store.end_session(&id, until_ms, now_ms))
        .await
        .map_err(|_| GatewayError::Internal)?
        .map_err(|_| GatewayError::Internal)
}

/// `token` verified as a bearer token is (the same `Authenticator`).
pub async fn authenticate(state: &AppState, token: &str) -> Result<Caller, GatewayError> {
    let mut headers = HeaderMap::new();
    let bearer =
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| GatewayError::Internal)?;
    headers.insert(header::AUTHORIZATION, bearer);
    state.callers.authenticate(&headers).await
}
