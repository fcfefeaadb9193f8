//! `[receipts]`: when anchoring batches of receipts close, as `assent-receipts`'s
//! [`BatchConfig`] after loading.
//!
//! Leaves out: writing receipts and anchoring them (`services/receipts.rs`,
//! `services/anchoring.rs`).

use assent_receipts::BatchConfig;
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// Receipts of every FHIR request and their anchoring on the ledger.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptsConfig {
    /// An anchoring batch closes when it holds this many receipts.
    #[serde(default = "default_batch_max_receipts")]
    pub batch_max_receipts: usize,
    /// An anchoring batch closes this long after its first receipt, in milliseconds: a
    /// receipt is anchored within this window plus one ledger commit.
    #[serde(default = "default_batch_max_wait_ms")]
    pub batch_max_wait_ms: u64,
    /// Anchor every receipt on its own (one ledger transaction per request).
    #[serde(default)]
    pub strict: bool,
}

impl Default for ReceiptsConfig {
    fn default() -> Self {
        ReceiptsConfig {
            batch_max_receipts: default_batch_max_receipts(),
            batch_max_wait_ms: default_batch_max_wait_ms(),
            strict: false,
        }
    }
}

impl ReceiptsConfig {
    /// The receipts crate's view of these settings. A wait beyond `i64::MAX` milliseconds
    /// (some 292 million years) is that.
    pub fn batch_config(&self) -> BatchConfig {
        BatchConfig {
            max_receipts: self.batch_max_receipts,
            max_wait_ms: i64::try_from(self.batch_max_wait_ms).unwrap_or(i64::MAX),
            strict: self.strict,
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.batch_max_receipts == 0 {
            return Err(ConfigError::invalid(
                "receipts.batch_max_receipts",
                "must be above 0",
            ));
        }
        Ok(())
    }
}

fn default_batch_max_receipts() -> usize {
    BatchConfig::default().max_receipts
}
fn default_batch_max_wait_ms() -> u64 {
    BatchConfig::default().max_wait_ms.unsigned_abs()
}
