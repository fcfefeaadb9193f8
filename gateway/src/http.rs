//! The HTTP edge: what every handler of every wing shares. The error table (every refusal as
//! a FHIR OperationOutcome with a stable code), who the caller is and which roles they hold,
//! the state each handler is given, paging-link signing, logs and metrics, and the small
//! thread server the demo and the tests serve with.
//!
//! Depends on: `config`, `store`, `services`. Never on `proxy`, `api` or the facade.

pub mod access;
pub mod caller;
pub mod connection;
pub mod consent_access;
pub mod error;
pub mod loopback;
pub mod observability;
pub mod paging;
pub mod patient_context;
pub mod state;
