//! Who is asking: the authenticate phase's logic, without HTTP server types.
//!
//! Owns OpenID Connect discovery and JWKS fetching over HTTP (client side only), JWT
//! verification, the verified-token cache, SMART App Launch scopes (v1 and v2, granular) and
//! their enforcement, HL7 v3 purpose of use, and a demo-only development identity provider.
//!
//! Leaves out: actix-web, SQL, Redis, and turning errors into HTTP responses (the gateway does
//! that from [`AuthError::status`], [`AuthError::code`] and [`AuthError::www_authenticate`]).
//! Resolving which patient compartment a resource belongs to is the gateway's too; this crate
//! only says when a grant is confined to the token's patient.

#![forbid(unsafe_code)]

mod bearer;
mod caller;
mod config;
pub mod dev_idp;
mod error;
mod jwks;
mod login;
mod purpose;
mod scopes;
mod smart_config;
mod token_cache;
mod verifier;

pub use bearer::bearer_token;
pub use caller::{CallerKind, VerifiedCaller};
pub use config::{
    ClaimNames, DEFAULT_BREAK_GLASS_SCOPE, IssuerConfig, SigningAlgorithm, VerifierOptions,
};
pub use error::{AuthError, ConfigError};
pub use login::{LoginClient, LoginError, LoginStart, SignedIn};
pub use purpose::{PURPOSE_OF_USE_SYSTEM, PurposeOfUse};
pub use scopes::{
    Access, Grant, GrantRule, Permissions, ResourceScope, ScopeContext, ScopeWarning, Scopes,
    SearchCondition, TokenValue,
};
pub use smart_config::{ProviderEndpoints, SCOPES_SUPPORTED};
pub use verifier::Verifier;
