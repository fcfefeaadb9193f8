//! The FHIR request path: `/fhir/{site}/…` from the caller's request to the released answer.
//! [`pipeline`] runs it; each concern (request parsing, scopes, consent, the site's dialect
//! and adapter, links and paging, release and shaping, capabilities) has a module of its own.
//!
//! Depends on: `config`, `store`, `services`, `http`. Nothing outside the facade imports it.

pub mod capabilities;
pub mod consent;
pub mod dialect;
pub mod pipeline;
pub mod release;
pub mod request;
pub mod rewrite;
pub mod scopes;
