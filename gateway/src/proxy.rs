//! The FHIR request path: `/fhir/{site}/…` from the caller's request to the released answer.
//! [`pipeline`] runs it over one [`exchange::Exchange`] as two lists, inbound and outbound;
//! each concern holds its inbound and outbound halves in a module of its own: scopes,
//! consent (the enforcer), the site's dialect and adapter, links and paging, release and
//! shaping (`answer`), the receipt and record; request parsing, forwarding and capabilities
//! beside them, and `metadata`, the CapabilityStatement served without authentication.
//!
//! Depends on: `config`, `store`, `services`, `http`. Nothing outside the facade imports it.

pub mod adapter;
pub mod answer;
pub mod capabilities;
pub mod consent;
pub mod dialect;
pub mod exchange;
pub mod federation;
pub mod forward;
pub mod metadata;
pub mod network;
pub mod paging;
pub mod pipeline;
pub mod receipt;
pub mod release;
pub mod request;
pub mod rewrite;
pub mod scopes;
