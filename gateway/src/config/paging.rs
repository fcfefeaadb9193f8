//! `[paging]`: how long a signed paging link stays valid.
//!
//! Leaves out: the paging key (the key file, `keys.rs`) and signing links
//! (`http/paging.rs`).

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// Signed paging links.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagingConfig {
    /// Moved to the key file (`paging_secret_hex`): named only to say so.
    #[serde(default, skip_serializing)]
    pub secret_hex: Option<figment::value::Value>,
    /// How long a paging link stays valid.
    #[serde(default = "default_page_ttl")]
    pub ttl_secs: u64,
}

impl Default for PagingConfig {
    fn default() -> Self {
        PagingConfig {
            secret_hex: None,
            ttl_secs: default_page_ttl(),
        }
    }
}

impl PagingConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.ttl_secs == 0 {
            return Err(ConfigError::invalid("paging.ttl_secs", "must be above 0"));
        }
        Ok(())
    }
}

fn default_page_ttl() -> u64 {
    3600
}
