//! The Assent gateway: the only crate that knows HTTP, SQL and Redis.
//!
//! The crate is in wings, each a folder, with dependencies running one way (checked by the
//! workspace tidy test `gateway_wings_depend_one_way`):
//!
//! ```text
//!   cli, demo ─▶ app, routes (the facade) ─▶ proxy ─┐
//!                                         └─▶ api ──┴▶ http ─▶ services ─▶ store ─▶ config
//! ```
//!
//! Start at [`app`] (builds and runs a gateway) and [`routes`] (every URL), then
//! [`proxy::pipeline`] (the FHIR request path in order).

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod http;
pub mod proxy;
pub mod routes;
pub mod services;
pub mod store;
