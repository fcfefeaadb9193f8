//! `[network]`: the network level (`/fhir/…` without a site): deadlines of federated
//! requests.
//!
//! Leaves out: which identifier systems link patients (per site,
//! `sites.*.network_identifier_systems`).

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// Federated requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// How long one site's leg of a federated request may take before it counts as failed
    /// (the answer is then partial, with an OperationOutcome naming the site).
    #[serde(default = "default_site_deadline_ms")]
    pub site_deadline_ms: u64,
    /// How long a whole federated request may take.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            site_deadline_ms: default_site_deadline_ms(),
            deadline_ms: default_deadline_ms(),
        }
    }
}

impl NetworkConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.site_deadline_ms == 0 {
            return Err(ConfigError::invalid(
                "network.site_deadline_ms",
                "must be above 0",
            ));
        }
        if self.deadline_ms < self.site_deadline_ms {
            return Err(ConfigError::invalid(
                "network.deadline_ms",
                "must be at least network.site_deadline_ms",
            ));
        }
        Ok(())
    }

    pub fn site_deadline(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.site_deadline_ms)
    }

    pub fn deadline(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.deadline_ms)
    }
}

fn default_site_deadline_ms() -> u64 {
    3000
}

fn default_deadline_ms() -> u64 {
    5000
}
