//! Plain configuration structs for trusted issuers and the verifier.
//!
//! Leaves out: where configuration comes from (file, environment, flags): the gateway loads it
//! and builds these. No serde here on purpose (these are not a wire format), except on
//! [`ClaimNames`], which is exactly the gateway's `claims` table of an issuer and is read
//! into as it is.

use std::time::Duration;

/// A JWS algorithm a trusted issuer may sign with. HMAC and `none` cannot be expressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningAlgorithm {
    Rs256,
    Es256,
    EdDsa,
}

impl SigningAlgorithm {
    /// The JOSE `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::Rs256 => "RS256",
            SigningAlgorithm::Es256 => "ES256",
            SigningAlgorithm::EdDsa => "EdDSA",
        }
    }

    /// The algorithm named `alg` in a JOSE header, if it is one this crate can accept.
    pub fn from_jose(alg: &str) -> Option<SigningAlgorithm> {
        match alg {
            "RS256" => Some(SigningAlgorithm::Rs256),
            "ES256" => Some(SigningAlgorithm::Es256),
            "EdDSA" => Some(SigningAlgorithm::EdDsa),
            _ => None,
        }
    }

    pub(crate) fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            SigningAlgorithm::Rs256 => jsonwebtoken::Algorithm::RS256,
            SigningAlgorithm::Es256 => jsonwebtoken::Algorithm::ES256,
            SigningAlgorithm::EdDsa => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

/// Which token claims carry the caller's attributes. Defaults follow SMART App Launch; a
/// claim not named keeps its default.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClaimNames {
    /// The acting user: a FHIR reference (`fhirUser` in SMART).
    pub actor: String,
    /// The actor's organization (no standard claim; `organization` by default).
    pub organization: String,
    /// The HL7 v3 PurposeOfUse code (`purpose_of_use` by default).
    pub purpose: String,
    /// The patient launch context (`patient` in SMART).
    pub patient: String,
}

impl Default for ClaimNames {
    fn default() -> Self {
        ClaimNames {
            actor: "fhirUser".to_owned(),
            organization: "organization".to_owned(),
            purpose: "purpose_of_use".to_owned(),
            patient: "patient".to_owned(),
        }
    }
}

/// One trusted token issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerConfig {
    /// The issuer identifier, exactly as in `iss` and in its discovery document.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one. Never empty.
    pub audience: Vec<String>,
    /// Accepted `alg` values. Never empty.
    pub algorithms: Vec<SigningAlgorithm>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    pub claims: ClaimNames,
    /// Whether callers with this issuer's tokens may state a purpose in `X-Purpose-Of-Use`.
    pub allow_purpose_header: bool,
    /// At most one JWKS refetch per this interval, however many tokens name unknown keys.
    pub jwks_refetch_min_interval: Duration,
    /// The scope that grants break-glass (see [`DEFAULT_BREAK_GLASS_SCOPE`]); `None` when
    /// this issuer cannot grant it. The scope is taken out of the token's scopes and shows
    /// as [`crate::VerifiedCaller::break_glass`].
    pub break_glass_scope: Option<String>,
    /// Scopes by which this issuer grants a gateway role (the consent-administrator scope):
    /// kept exactly as stated among [`crate::Scopes::other_scopes`], never read as SMART
    /// resource scopes, so that the gateway can look for them.
    pub role_scopes: Vec<String>,
}

/// The scope that grants break-glass unless an issuer is configured otherwise.
///
/// SMART App Launch defines no break-glass scope, and HL7 expresses an emergency override as
/// a purpose of use (v3 ActReason `ETREAT`, or its specialisation `BTG`, "break the glass"),
/// not as an access scope. The purpose says *why* this request is made; whether the user
/// *may* override a patient's refusal is an entitlement the identity provider grants to
/// some users (emergency staff). That entitlement is this scope: a name outside SMART's
/// `patient/`, `user/` and `system/` resource scopes, so that no SMART parser reads it as
/// access to resources, and so that a token without it can never widen into it.
pub const DEFAULT_BREAK_GLASS_SCOPE: &str = "assent/break-glass";

impl IssuerConfig {
    /// An issuer with the defaults: RS256, ES256 and EdDSA, 30 s leeway, SMART claim names,
    /// no purpose header, a JWKS refetch at most every 30 s, break-glass granted by
    /// [`DEFAULT_BREAK_GLASS_SCOPE`].
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        IssuerConfig {
            issuer: issuer.into(),
            audience: vec![audience.into()],
            algorithms: vec![
                SigningAlgorithm::Rs256,
                SigningAlgorithm::Es256,
                SigningAlgorithm::EdDsa,
            ],
            leeway: Duration::from_secs(30),
            claims: ClaimNames::default(),
            allow_purpose_header: false,
            jwks_refetch_min_interval: Duration::from_secs(30),
            break_glass_scope: Some(DEFAULT_BREAK_GLASS_SCOPE.to_owned()),
            role_scopes: Vec::new(),
        }
    }
}

/// Settings of the verifier as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierOptions {
    /// Longer tokens are refused before any parsing.
    pub max_token_bytes: usize,
    /// Verified tokens kept (each entry is a few hundred bytes).
    pub token_cache_capacity: usize,
    /// Timeout of each discovery and JWKS request.
    pub http_timeout: Duration,
    /// JWKS freshness when the provider sends no `Cache-Control: max-age`.
    pub jwks_default_max_age: Duration,
    /// Upper bound on how long a JWKS is trusted whatever the provider says.
    pub jwks_max_age_cap: Duration,
}

impl Default for VerifierOptions {
    fn default() -> Self {
        VerifierOptions {
            max_token_bytes: 8 * 1024,
            token_cache_capacity: 100_000,
            http_timeout: Duration::from_secs(5),
            jwks_default_max_age: Duration::from_secs(300),
            jwks_max_age_cap: Duration::from_secs(24 * 3600),
        }
    }
}
