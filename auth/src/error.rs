//! The ways authentication and authorization fail, each with a stable code, an HTTP status
//! and the `WWW-Authenticate` challenge (RFC 6750) the gateway should send.
//!
//! Leaves out: building the HTTP response and the OperationOutcome body (the gateway's one
//! error table does that; [`AuthError::to_issue`] gives it the issue).

use assent_fhir::{Issue, IssueCode, Severity};
use thiserror::Error;

/// Why a request's bearer token or its scopes were not accepted.
///
/// Messages never contain the token. The stable [`code`](AuthError::code) is the contract;
/// the display text may change.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    /// No bearer token at all.
    #[error("no bearer token")]
    Missing,
    /// Longer than the configured maximum; not even parsed.
    #[error("token is longer than {max} bytes")]
    TooLarge { max: usize },
    /// Not three base64url parts of JSON, or otherwise unreadable (a truncated token lands here).
    #[error("token is malformed: {reason}")]
    Malformed { reason: &'static str },
    /// The header names an algorithm outside the issuer's allow-list (`none` and HMAC always are).
    #[error("algorithm {alg:?} is not allowed")]
    AlgorithmNotAllowed { alg: String },
    /// The header's `typ` is neither `JWT` nor `at+jwt`.
    #[error("token type {typ:?} is not accepted")]
    WrongType { typ: String },
    /// `iss` is not a configured issuer, or does not match the issuer whose key verified it.
    #[error("issuer is not trusted")]
    WrongIssuer,
    /// `aud` does not name this gateway.
    #[error("audience does not match")]
    WrongAudience,
    /// No key with the token's `kid` at its issuer, even after a (rate-limited) JWKS refetch.
    #[error("no key {kid:?} at the issuer")]
    UnknownKey { kid: String },
    /// The signature does not verify with the issuer's key, or the key does not fit the algorithm.
    #[error("signature does not verify")]
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token is not valid yet")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    #[error("token was issued in the future")]
    IssuedInFuture,
    /// A claim the gateway needs is absent.
    #[error("claim {claim:?} is missing")]
    MissingClaim { claim: String },
    /// A claim is present but not of the expected shape.
    #[error("claim {claim:?} is not valid")]
    BadClaim { claim: String },
    /// The token's purpose-of-use claim is not an HL7 v3 PurposeOfUse code.
    #[error("purpose of use {code:?} in the token is not a known code")]
    PurposeUnknownInToken { code: String },
    /// The `X-Purpose-Of-Use` header is not an HL7 v3 PurposeOfUse code.
    #[error("purpose of use {code:?} in the header is not a known code")]
    PurposeUnknownInHeader { code: String },
    /// The issuer's configuration does not let callers state their purpose in a header.
    #[error("this issuer's tokens may not state a purpose in the X-Purpose-Of-Use header")]
    PurposeHeaderNotAllowed,
    /// The header states a different purpose than the token.
    #[error("X-Purpose-Of-Use {header:?} contradicts the token's purpose {token:?}")]
    PurposeConflict { token: String, header: String },
    /// The request states no purpose of use and the site has no default.
    #[error("a purpose of use is required (token claim or X-Purpose-Of-Use header)")]
    PurposeRequired,
    /// The issuer's keys could not be fetched and none are cached: fail closed.
    #[error("the issuer's keys are unavailable")]
    IssuerUnavailable,
    /// No scope grants this access.
    #[error("scope does not allow {needed}")]
    InsufficientScope { needed: String },
    /// Only `patient/` scopes grant this access, but the token has no `patient` context.
    #[error("patient/ scopes need a patient launch context, and the token has none")]
    PatientContextMissing,
}

impl AuthError {
    /// The stable error code: logged, put in the OperationOutcome, documented.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "token-missing",
            AuthError::TooLarge { .. } => "token-too-large",
            AuthError::Malformed { .. } => "token-malformed",
            AuthError::AlgorithmNotAllowed { .. } => "token-alg-not-allowed",
            AuthError::WrongType { .. } => "token-wrong-typ",
            AuthError::WrongIssuer => "token-wrong-issuer",
            AuthError::WrongAudience => "token-wrong-audience",
            AuthError::UnknownKey { .. } => "token-unknown-kid",
            AuthError::BadSignature => "token-bad-signature",
            AuthError::Expired => "token-expired",
            AuthError::NotYetValid => "token-not-yet-valid",
            AuthError::IssuedInFuture => "token-issued-in-future",
            AuthError::MissingClaim { .. } => "token-missing-claim",
            AuthError::BadClaim { .. } => "token-bad-claim",
            AuthError::PurposeUnknownInToken { .. } => "token-purpose-unknown",
            AuthError::PurposeUnknownInHeader { .. } => "purpose-header-unknown",
            AuthError::PurposeHeaderNotAllowed => "purpose-header-not-allowed",
            AuthError::PurposeConflict { .. } => "purpose-conflict",
            AuthError::PurposeRequired => "purpose-required",
            AuthError::IssuerUnavailable => "issuer-unavailable",
            AuthError::InsufficientScope { .. } => "scope-insufficient",
            AuthError::PatientContextMissing => "scope-patient-context-missing",
        }
    }

    /// The HTTP status: 401 for a token that is not accepted, 403 for insufficient scope or
    /// a missing purpose, 400 for a bad purpose header, 503 when the issuer's keys cannot be had.
    pub fn status(&self) -> u16 {
        if self.is_unavailable() {
            return 503;
        }
        if matches!(self, AuthError::PurposeRequired) {
            return 403;
        }
        match self.bearer_error() {
            Some(BearerError::InsufficientScope) => 403,
            Some(BearerError::InvalidRequest) => 400,
            Some(BearerError::InvalidToken) | None => 401,
        }
    }

    /// The `WWW-Authenticate` header value, or `None` where none is due (503, and a missing
    /// purpose, which is no fault of the token).
    ///
    /// A missing token gets a bare challenge (RFC 6750 §3.1: no error code when the request
    /// carried no credentials).
    pub fn www_authenticate(&self) -> Option<String> {
        if self.is_unavailable() || matches!(self, AuthError::PurposeRequired) {
            return None;
        }
        let Some(error) = self.bearer_error() else {
            return Some("Bearer".to_owned());
        };
        let mut value = format!(
            "Bearer error=\"{}\", error_description=\"{}\"",
            error.as_str(),
            self.code()
        );
        if let AuthError::InsufficientScope { needed } = self {
            // Scope strings are built from a resource type and letters; strip quotes anyway.
            value.push_str(&format!(", scope=\"{}\"", needed.replace('"', "")));
        }
        Some(value)
    }

    /// This failure as an OperationOutcome issue (diagnostics name the code, never the token).
    pub fn to_issue(&self) -> Issue {
        let code = match self.status() {
            401 => IssueCode::Login,
            403 => IssueCode::Forbidden,
            400 => IssueCode::Invalid,
            _ => IssueCode::Transient,
        };
        Issue::new(Severity::Error, code, format!("{}: {}", self.code(), self))
    }

    fn is_unavailable(&self) -> bool {
        matches!(self, AuthError::IssuerUnavailable)
    }

    fn bearer_error(&self) -> Option<BearerError> {
        match self {
            AuthError::Missing | AuthError::IssuerUnavailable => None,
            AuthError::InsufficientScope { .. } | AuthError::PatientContextMissing => {
                Some(BearerError::InsufficientScope)
            }
            AuthError::PurposeUnknownInHeader { .. }
            | AuthError::PurposeHeaderNotAllowed
            | AuthError::PurposeConflict { .. } => Some(BearerError::InvalidRequest),
            _ => Some(BearerError::InvalidToken),
        }
    }
}

/// Configuration or discovery that cannot work: the gateway should refuse to start.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("issuer {issuer:?}: {reason}")]
    Invalid { issuer: String, reason: String },
    #[error("issuer {issuer:?}: OpenID discovery failed: {reason}")]
    Discovery { issuer: String, reason: String },
    #[error("issuer {issuer:?}: JWKS at {url} could not be used: {reason}")]
    Jwks {
        issuer: String,
        url: String,
        reason: String,
    },
    #[error("HTTP client could not be built: {0}")]
    HttpClient(String),
}

#[derive(Debug, Clone, Copy)]
enum BearerError {
    InvalidToken,
    InsufficientScope,
    InvalidRequest,
}

impl BearerError {
    fn as_str(self) -> &'static str {
        match self {
            BearerError::InvalidToken => "invalid_token",
            BearerError::InsufficientScope => "insufficient_scope",
            BearerError::InvalidRequest => "invalid_request",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_challenges() {
        let expired = AuthError::Expired;
        assert_eq!(expired.status(), 401);
        assert_eq!(
            expired.www_authenticate().unwrap(),
            "Bearer error=\"invalid_token\", error_description=\"token-expired\""
        );
        let scope = AuthError::InsufficientScope {
            needed: "user/Observation.s".into(),
        };
        assert_eq!(scope.status(), 403);
        assert_eq!(
            scope.www_authenticate().unwrap(),
            "Bearer error=\"insufficient_scope\", error_description=\"scope-insufficient\", scope=\"user/Observation.s\""
        );
        assert_eq!(AuthError::Missing.status(), 401);
        assert_eq!(AuthError::Missing.www_authenticate().unwrap(), "Bearer");
        assert_eq!(AuthError::PurposeHeaderNotAllowed.status(), 400);
        assert_eq!(AuthError::IssuerUnavailable.status(), 503);
        assert_eq!(AuthError::IssuerUnavailable.www_authenticate(), None);
        assert_eq!(AuthError::PatientContextMissing.status(), 403);
        assert_eq!(AuthError::PurposeRequired.status(), 403);
        assert_eq!(AuthError::PurposeRequired.www_authenticate(), None);
        assert_eq!(AuthError::Expired.to_issue().code, IssueCode::Login);
    }
}
