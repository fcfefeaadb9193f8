//! `[receipts]`: where the receipt log lives, and when anchoring batches of receipts close,
//! as `assent-receipts`'s [`BatchConfig`] after loading.
//!
//! Leaves out: writing receipts and anchoring them (`services/receipts.rs`,
//! `services/anchoring.rs`).

use std::path::PathBuf;

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
    /// Where receipt logs live (`services/receipt_log.rs`; this gateway's in a directory named
    /// after its `gateway_id`): every receipt is made durable there before its response is
    /// released, and copied into the store's receipt tables off the request path. Default
    /// with SQLite: beside the database (`{database}.receipt-log`); required with PostgreSQL
    /// (a local disk of the gateway's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_dir: Option<PathBuf>,
}

impl Default for ReceiptsConfig {
    fn default() -> Self {
        ReceiptsConfig {
            batch_max_receipts: default_batch_max_receipts(),
            batch_max_wait_ms: default_batch_max_wait_ms(),
            strict: false,
            log_dir: None,
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

    /// The receipt log's directory for gateway `gateway_id` on `database_url`: a directory
    /// named after the gateway in `log_dir`, else in `{database}.receipt-log` beside a SQLite
    /// database (replicas sharing a store keep a log each). `None` with PostgreSQL and no
    /// `log_dir` (the gateway refuses to start: the log belongs on the gateway's own disk, and
    /// a database URL names none).
    pub fn log_dir_for(&self, database_url: &str, gateway_id: &str) -> Option<PathBuf> {
        let base = match &self.log_dir {
            Some(dir) => dir.clone(),
            None if database_url.starts_with("postgres://")
                || database_url.starts_with("postgresql://") =>
            {
                return None;
            }
            None => {
                let path = database_url
                    .strip_prefix("sqlite://")
                    .unwrap_or(database_url);
                PathBuf::from(format!("{path}.receipt-log"))
            }
        };
        // A gateway id as a file name: as it is when plain, else in hex.
        let plain = !gateway_id.is_empty()
            && !gateway_id.starts_with('.')
            && gateway_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        Some(if plain {
            base.join(gateway_id)
        } else {
            base.join(format!("x-{}", hex::encode(gateway_id)))
        })
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.batch_max_receipts == 0 {
            return Err(ConfigError::invalid(
                "receipts.batch_max_receipts",
                "must be above 0",
            ));
        }
        if self
            .log_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            return Err(ConfigError::invalid(
                "receipts.log_dir",
                "must name a directory",
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
