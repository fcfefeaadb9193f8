//! `[auth]`: the trusted OpenID Connect issuers (`[[auth.issuers]]`), checked and turned into
//! `assent-auth`'s [`IssuerConfig`]; their `claims` table is `assent-auth`'s own
//! [`ClaimNames`].
//!
//! Leaves out: discovery and token verification (`assent-auth`, `http/caller.rs`) and roles
//! (`http/access.rs`).

use std::time::Duration;

use assent_auth::{ClaimNames, IssuerConfig, SigningAlgorithm};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, is_loopback};

/// Who may call the gateway: bearer tokens (JWTs) from trusted OpenID Connect issuers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Trusted token issuers. Every FHIR request needs a token from one of them; with none,
    /// every FHIR request is refused (401).
    #[serde(default)]
    pub issuers: Vec<IssuerSettings>,
    /// Static API keys were removed: kept only to name the key when an old file has them.
    #[serde(default, skip_serializing)]
    pub api_keys: Option<figment::value::Value>,
}

/// One trusted OpenID Connect issuer (`[[auth.issuers]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSettings {
    /// The issuer identifier, exactly as in tokens' `iss` and its discovery document.
    /// `https`, or `http` on a loopback address (development only).
    pub issuer: url::Url,
    /// The gateway's network FHIR base(s) (`https://gw.example/fhir`): a token must name one,
    /// or a site's base under one (`{audience}/{site}`), which binds a patient launch context
    /// to that site's patient (`http/patient_context.rs`).
    pub audience: Vec<String>,
    /// Accepted signing algorithms: `RS256`, `ES256`, `EdDSA` (never `none` or HMAC).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds (at most 300).
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
    /// Token claims read for the caller's attributes; the defaults follow SMART App Launch.
    #[serde(default)]
    pub claims: ClaimNames,
    /// Whether callers may state their purpose of use in an `X-Purpose-Of-Use` header.
    #[serde(default)]
    pub allow_purpose_header: bool,
    /// At most one JWKS refetch per this many seconds when tokens name unknown keys.
    #[serde(default = "default_refetch_secs")]
    pub jwks_refetch_min_interval_secs: u64,
    /// Token subjects (`sub`) of this issuer that may use `/admin`.
    #[serde(default)]
    pub admin_subjects: Vec<String>,
    /// The scope by which this issuer grants break-glass (overriding a patient's deny with
    /// purpose `ETREAT` and a justification); empty: this issuer cannot grant it.
    #[serde(default = "default_break_glass_scope")]
    pub break_glass_scope: String,
    /// The scope by which this issuer grants the consent-administrator role (managing any
    /// patient's consents through `/consent`); empty: this issuer grants it to nobody by
    /// scope. Not a SMART scope (no `patient/`, `user/` or `system/`), never a wildcard.
    #[serde(default = "default_consent_admin_scope")]
    pub consent_admin_scope: String,
}

/// The scope that grants the consent-administrator role unless an issuer says otherwise.
pub const DEFAULT_CONSENT_ADMIN_SCOPE: &str = "assent/consent-admin";

impl IssuerSettings {
    /// The auth crate's configuration for this issuer. The configuration was checked when it
    /// was loaded: every algorithm named is one the auth crate accepts.
    pub fn to_issuer_config(&self) -> IssuerConfig {
        let mut config = IssuerConfig::new(issuer_id(&self.issuer), String::new());
        config.audience = self.audience.clone();
        config.algorithms = self
            .algorithms
            .iter()
            .filter_map(|a| SigningAlgorithm::from_jose(a))
            .collect();
        config.leeway = Duration::from_secs(self.leeway_secs);
        config.claims = self.claims.clone();
        config.allow_purpose_header = self.allow_purpose_header;
        config.jwks_refetch_min_interval = Duration::from_secs(self.jwks_refetch_min_interval_secs);
        config.break_glass_scope =
            (!self.break_glass_scope.is_empty()).then(|| self.break_glass_scope.clone());
        config.role_scopes = if self.consent_admin_scope.is_empty() {
            Vec::new()
        } else {
            vec![self.consent_admin_scope.clone()]
        };
        config
    }
}

/// The issuer identifier as tokens carry it: the configured URL without the trailing slash
/// that URL parsing adds to a bare host.
pub fn issuer_id(url: &url::Url) -> String {
    let text = url.as_str();
    if url.path() == "/" && url.query().is_none() {
        text.trim_end_matches('/').to_owned()
    } else {
        text.to_owned()
    }
}

impl AuthConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.api_keys.is_some() {
            return Err(ConfigError::invalid(
                "auth.api_keys",
                "static API keys are no longer accepted; configure [[auth.issuers]] (OpenID Connect)",
            ));
        }
        for (i, issuer) in self.issuers.iter().enumerate() {
            issuer.validate(i, &self.issuers[..i])?;
        }
        Ok(())
    }
}

impl IssuerSettings {
    /// Checks issuer `i` (`auth.issuers[i]`), configured after `earlier`.
    fn validate(&self, i: usize, earlier: &[IssuerSettings]) -> Result<(), ConfigError> {
        let at = |field: &str| format!("auth.issuers[{i}].{field}");
        match self.issuer.scheme() {
            "https" => {}
            "http" if is_loopback(&self.issuer) => {}
            _ => {
                return Err(ConfigError::invalid(
                    at("issuer"),
                    "must be https (http only on a loopback address)",
                ));
            }
        }
        if self.issuer.query().is_some() || self.issuer.fragment().is_some() {
            return Err(ConfigError::invalid(
                at("issuer"),
                "must not carry a query or fragment",
            ));
        }
        if earlier
            .iter()
            .any(|other| issuer_id(&other.issuer) == issuer_id(&self.issuer))
        {
            return Err(ConfigError::invalid(at("issuer"), "configured twice"));
        }
        if self.audience.is_empty() || self.audience.iter().any(|a| a.trim().is_empty()) {
            return Err(ConfigError::invalid(
                at("audience"),
                "must name at least one non-empty audience",
            ));
        }
        if self.algorithms.is_empty() {
            return Err(ConfigError::invalid(
                at("algorithms"),
                "must allow at least one algorithm",
            ));
        }
        if let Some(bad) = self
            .algorithms
            .iter()
            .find(|a| SigningAlgorithm::from_jose(a).is_none())
        {
            return Err(ConfigError::invalid(
                at("algorithms"),
                format!("`{bad}` is not accepted (RS256, ES256 or EdDSA)"),
            ));
        }
        if self.leeway_secs > 300 {
            return Err(ConfigError::invalid(
                at("leeway_secs"),
                "must be at most 300",
            ));
        }
        if self.jwks_refetch_min_interval_secs == 0 {
            return Err(ConfigError::invalid(
                at("jwks_refetch_min_interval_secs"),
                "must be above 0",
            ));
        }
        let claims = &self.claims;
        for (name, value) in [
            ("actor", &claims.actor),
            ("organization", &claims.organization),
            ("purpose", &claims.purpose),
            ("patient", &claims.patient),
        ] {
            if value.trim().is_empty() {
                return Err(ConfigError::invalid(
                    at(&format!("claims.{name}")),
                    "must not be empty",
                ));
            }
        }
        if self.admin_subjects.iter().any(|s| s.is_empty()) {
            return Err(ConfigError::invalid(
                at("admin_subjects"),
                "must not hold an empty subject",
            ));
        }
        let role = &self.consent_admin_scope;
        let smart = ["patient/", "user/", "system/"]
            .iter()
            .any(|p| role.starts_with(p));
        if smart
            || role.contains(['*', ' '])
            || (!role.is_empty() && *role == self.break_glass_scope)
        {
            return Err(ConfigError::invalid(
                at("consent_admin_scope"),
                "must be a scope of its own: not a SMART resource scope, no wildcard or space, not the break-glass scope",
            ));
        }
        Ok(())
    }
}

fn default_algorithms() -> Vec<String> {
    ["RS256", "ES256", "EdDSA"].map(str::to_owned).to_vec()
}
fn default_leeway_secs() -> u64 {
    30
}
fn default_refetch_secs() -> u64 {
    30
}
fn default_break_glass_scope() -> String {
    assent_auth::DEFAULT_BREAK_GLASS_SCOPE.to_owned()
}
fn default_consent_admin_scope() -> String {
    DEFAULT_CONSENT_ADMIN_SCOPE.to_owned()
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::config::tests::{GOOD, error_of};

    const ISSUER: &str = r#"
        [[auth.issuers]]
        issuer = "https://idp.example/realms/a"
        audience = ["https://gw.example/fhir"]
    "#;

    #[test]
    fn issuers_map_to_the_auth_crate() {
        let c = Config::from_toml(&format!("{GOOD}\n{ISSUER}")).unwrap();
        let issuer = c.auth.issuers[0].to_issuer_config();
        assert_eq!(issuer.issuer, "https://idp.example/realms/a");
        assert_eq!(issuer.algorithms.len(), 3);
        assert_eq!(issuer.claims.actor, "fhirUser");
        assert!(!issuer.allow_purpose_header);
        let bare = ISSUER.replace("https://idp.example/realms/a", "https://idp.example");
        let c = Config::from_toml(&format!("{GOOD}\n{bare}")).unwrap();
        assert_eq!(
            c.auth.issuers[0].to_issuer_config().issuer,
            "https://idp.example"
        );
    }

    #[test]
    fn auth_errors_name_the_key() {
        let with = |issuer: &str| error_of(&format!("{GOOD}\n{issuer}"));
        let e = with(&ISSUER.replace("https://idp", "http://idp"));
        assert!(e.contains("auth.issuers[0].issuer"), "{e}");
        assert!(
            Config::from_toml(&format!(
                "{GOOD}\n{}",
                ISSUER.replace("https://idp.example", "http://127.0.0.1:9")
            ))
            .is_ok()
        );
        let e = with(&format!("{ISSUER}algorithms = [\"HS256\"]"));
        assert!(e.contains("auth.issuers[0].algorithms"), "{e}");
        let e = with(&format!("{ISSUER}leeway_secs = 900"));
        assert!(e.contains("auth.issuers[0].leeway_secs"), "{e}");
        let e = with(&ISSUER.replace("[\"https://gw.example/fhir\"]", "[]"));
        assert!(e.contains("auth.issuers[0].audience"), "{e}");
        let e = with(&format!("{ISSUER}{ISSUER}"));
        assert!(e.contains("auth.issuers[1].issuer"), "{e}");
        let e = with("[[auth.api_keys]]\nid = \"x\"");
        assert!(e.contains("auth.api_keys"), "{e}");
        let e = error_of(&format!("{GOOD}default_purpose = \"NOSY\""));
        assert!(e.contains("sites.st-mary.default_purpose"), "{e}");
        let e = error_of(&format!(
            "{GOOD}default_purpose = \"TREAT\"\nrequire_purpose = true"
        ));
        assert!(e.contains("sites.st-mary.require_purpose"), "{e}");
        let c = Config::from_toml(&format!("{GOOD}default_purpose = \"HRESCH\"")).unwrap();
        assert_eq!(
            c.sites["st-mary"].default_purpose().map(|p| p.code()),
            Some("HRESCH")
        );
    }
}
