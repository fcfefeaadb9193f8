//! `[cache]`: the Redis through which replicas tell each other about consent changes.
//!
//! Leaves out: the cache and the fan-out themselves (`services/cache_fanout.rs`).

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// The consent decision cache (`[cache]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Redis (`redis://…`; TLS is not built in) through which replicas sharing one consent store
    /// tell each other about consent changes. Without it the cache is invalidated by this
    /// replica's own ledger only: run one replica per embedded ledger.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// Prefix of the pub/sub channel (`{prefix}:consent-changed`); replicas of one
    /// deployment must share it.
    #[serde(default = "default_redis_channel_prefix")]
    pub redis_channel_prefix: String,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            redis_url: None,
            redis_channel_prefix: default_redis_channel_prefix(),
        }
    }
}

impl CacheConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.redis_url
            && !url.starts_with("redis://")
        {
            return Err(ConfigError::invalid(
                "cache.redis_url",
                "must be a redis:// URL (rediss:// is not supported)",
            ));
        }
        let prefix = &self.redis_channel_prefix;
        if prefix.is_empty()
            || prefix.len() > 64
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(ConfigError::invalid(
                "cache.redis_channel_prefix",
                "1-64 characters of letters, digits and - _ . :",
            ));
        }
        Ok(())
    }
}

fn default_redis_channel_prefix() -> String {
    "assent".to_owned()
}
