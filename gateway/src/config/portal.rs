//! `[portal]`: the patient portal's sign-in (`/portal/`): OpenID Connect authorization code
//! with PKCE at the first trusted issuer, as a public client, asking for `patient/*` scopes
//! and a patient launch context.
//!
//! Leaves out: the session key (the console's, `console_session_secret_hex` in the key file,
//! `keys.rs`; the portal's cookies are signed under their own purpose labels) and the portal
//! itself (`api/portal.rs`).

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// The patient portal's sign-in (absent: `/portal/` answers 404).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalConfig {
    /// The portal's `client_id` at the identity provider; its redirect URI is
    /// `{public_url}/portal/callback`.
    pub client_id: String,
    /// The scopes asked for at sign-in: the patient's own records and consents, and a patient
    /// launch context.
    #[serde(default = "default_portal_scope")]
    pub scope: String,
    /// How long a portal session lasts (never beyond the access token's expiry).
    #[serde(default = "default_session_ttl")]
    pub session_ttl_secs: u64,
    /// How long a site's directory (its Practitioners and Organizations, id and name, for the
    /// grant form) is kept before it is read again from the site.
    #[serde(default = "default_directory_ttl")]
    pub directory_ttl_secs: u64,
}

impl PortalConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.client_id.trim().is_empty() {
            return Err(ConfigError::invalid(
                "portal.client_id",
                "must not be empty",
            ));
        }
        if self.session_ttl_secs == 0 {
            return Err(ConfigError::invalid(
                "portal.session_ttl_secs",
                "must be above 0",
            ));
        }
        Ok(())
    }
}

fn default_portal_scope() -> String {
    "openid fhirUser launch/patient patient/*.rs patient/Consent.cruds".to_owned()
}

fn default_session_ttl() -> u64 {
    1800
}

fn default_directory_ttl() -> u64 {
    300
}
