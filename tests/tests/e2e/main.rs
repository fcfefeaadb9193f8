//! End-to-end tests: one test binary (link time on two cores is real), one module per area.
//! Every test starts its own gateway and FAKE upstreams on 127.0.0.1 port 0; `upstreams` and
//! `enforcement` share one realistic upstream (a Node child process) per module.

mod adapters;
mod audit;
mod auth;
mod break_glass;
mod cache_fanout;
mod clients;
mod consent;
mod consent_endpoint;
mod console;
mod consortium;
mod demo;
mod dialects;
mod enforcement;
mod errors;
mod fabric;
mod federation;
mod http_layer;
mod network_identity;
mod numbers;
mod operations;
mod paging;
mod patient_context;
mod portal;
mod property;
mod proxy;
mod receipts;
mod release;
mod resilience;
mod tidy;
mod tls;
mod upstreams;
