//! Long-lived services the handlers share: consent state (ledger, documents, decision cache,
//! event follower), durable receipts and their anchoring, the audit log as its readers see it
//! (query, pager, verification, export), the cross-replica cache fan-out, the
//! ledger backends, site adapters, the sites' upstream clients, the sites' directories (the portal's grant form), patient
//! identifier placement,
//! the break-glass webhook and the request log writer.
//!
//! Depends on: `config` and `store` only. Its errors are its own (`UpstreamError`,
//! `ReasonInvalid`, `AuditError`); the error table (`http/error.rs`) answers them.

pub mod adapters;
pub mod anchoring;
pub mod audit;
pub mod break_glass;
pub mod cache_fanout;
pub mod consent;
pub mod directory;
pub mod identity;
pub mod keys;
pub mod ledger;
pub mod network;
pub mod network_learner;
pub mod receipt_log;
pub mod receipts;
pub mod request_log;
pub mod upstream;
