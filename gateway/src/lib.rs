//! The Assent gateway: the only crate that knows HTTP, SQL and Redis.
//!
//! Start at [`app`] (the facade that builds and runs a gateway), then [`pipeline`] (the
//! request phases in order). Each phase's mechanics have a module of their own.

pub mod adapter_api;
pub mod anchoring;
pub mod api_receipt;
pub mod app;
pub mod audit_api;
pub mod audit_verify;
pub mod authorize;
pub mod break_glass;
pub mod cache_fanout;
pub mod caller;
pub mod capabilities;
pub mod cli;
pub mod config;
pub mod consent_api;
pub mod consent_authz;
pub mod consent_phase;
pub mod consent_service;
pub mod console;
pub mod demo;
pub mod dialect;
pub mod error;
pub mod fhir_request;
pub mod identity;
pub mod keys;
pub mod ledger_store;
pub mod loopback;
pub mod observability;
pub mod paging;
pub mod pipeline;
pub mod receipt_writer;
pub mod record;
pub mod release;
pub mod rewrite;
pub mod routes;
pub mod site_adapter;
pub mod store;
pub mod upstream;
