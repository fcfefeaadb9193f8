//! `[audit]`: who may read the audit log besides callers with an AuditEvent read scope, and
//! the compliance console's sign-in (`[audit.console]`).
//!
//! Leaves out: the console's session key (the key file, `keys.rs`), checking the audit role
//! (`http/access.rs`) and the console itself (`api/console.rs`).

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// Who may read the audit log (`/audit`, `/console/`), and the console's sign-in.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Caller ids (`subject@issuer`) with the audit role, besides callers whose token carries
    /// an explicit `user/AuditEvent.rs` or `system/AuditEvent.rs` scope.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// The compliance console at `/console/` (absent: the console answers 404).
    #[serde(default)]
    pub console: Option<ConsoleConfig>,
}

/// The compliance console's sign-in: OpenID Connect authorization code with PKCE at the
/// first trusted issuer (`auth.issuers[0]`), as a public client.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// The console's `client_id` at the identity provider; its redirect URI is
    /// `{public_url}/console/callback`.
    pub client_id: String,
    /// The scopes asked for at sign-in.
    #[serde(default = "default_console_scope")]
    pub scope: String,
    /// Moved to the key file (`console_session_secret_hex`): named only to say so.
    #[serde(default, skip_serializing)]
    pub session_secret_hex: Option<figment::value::Value>,
    /// How long a console session lasts.
    #[serde(default = "default_session_ttl")]
    pub session_ttl_secs: u64,
}

impl AuditConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(console) = &self.console
            && console.client_id.trim().is_empty()
        {
            return Err(ConfigError::invalid(
                "audit.console.client_id",
                "must not be empty",
            ));
        }
        Ok(())
    }
}

fn default_console_scope() -> String {
    "openid fhirUser user/AuditEvent.rs".to_owned()
}

fn default_session_ttl() -> u64 {
    3600
}
