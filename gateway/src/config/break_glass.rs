//! `[break_glass]`: the webhook told of every access that rested on break-glass.
//!
//! Leaves out: who may use break-glass (the issuers' `break_glass_scope`, `auth.rs`), the
//! webhook's key (the key file, `keys.rs`) and sending events (`services/break_glass.rs`).

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, is_loopback};

/// Break-glass: who is told when an emergency override is used (`[break_glass]`). Who may
/// use it is the issuers' `break_glass_scope`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassConfig {
    /// Called with a JSON event (POST) for every access that rested on break-glass, off the
    /// request path. `https`, or `http` on a loopback address.
    #[serde(default)]
    pub webhook_url: Option<url::Url>,
    /// Sent as `Authorization: Bearer …` to the webhook.
    #[serde(default)]
    pub webhook_bearer: Option<String>,
    /// Moved to the key file (`webhook_secret_hex`, an HMAC-SHA256 key over the body sent as
    /// `X-Assent-Signature: sha256=<hex>`): named only to say so.
    #[serde(default, skip_serializing)]
    pub webhook_secret_hex: Option<figment::value::Value>,
    /// Timeout of one webhook call.
    #[serde(default = "default_webhook_timeout_ms")]
    pub webhook_timeout_ms: u64,
    /// Attempts per event (with exponential backoff from 200 ms) before it is given up.
    #[serde(default = "default_webhook_attempts")]
    pub webhook_attempts: u32,
    /// Events waiting for the webhook; beyond it new events are dropped (and counted).
    #[serde(default = "default_webhook_queue")]
    pub webhook_queue: usize,
}

impl Default for BreakGlassConfig {
    fn default() -> Self {
        BreakGlassConfig {
            webhook_url: None,
            webhook_bearer: None,
            webhook_secret_hex: None,
            webhook_timeout_ms: default_webhook_timeout_ms(),
            webhook_attempts: default_webhook_attempts(),
            webhook_queue: default_webhook_queue(),
        }
    }
}

impl BreakGlassConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.webhook_url {
            match url.scheme() {
                "https" => {}
                "http" if is_loopback(url) => {}
                _ => {
                    return Err(ConfigError::invalid(
                        "break_glass.webhook_url",
                        "must be https (http only on a loopback address)",
                    ));
                }
            }
        }
        if self
            .webhook_bearer
            .as_deref()
            .is_some_and(|b| b.is_empty() || !b.bytes().all(|c| c.is_ascii_graphic()))
        {
            return Err(ConfigError::invalid(
                "break_glass.webhook_bearer",
                "must be non-empty visible ASCII",
            ));
        }
        if self.webhook_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "break_glass.webhook_timeout_ms",
                "must be above 0",
            ));
        }
        if self.webhook_attempts == 0 || self.webhook_attempts > 20 {
            return Err(ConfigError::invalid(
                "break_glass.webhook_attempts",
                "must be 1 to 20",
            ));
        }
        if self.webhook_queue == 0 {
            return Err(ConfigError::invalid(
                "break_glass.webhook_queue",
                "must be above 0",
            ));
        }
        Ok(())
    }
}

fn default_webhook_timeout_ms() -> u64 {
    5_000
}

fn default_webhook_attempts() -> u32 {
    5
}

fn default_webhook_queue() -> usize {
    1_024
}
