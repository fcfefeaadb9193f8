//! Integration tests of `assent-auth` over loopback HTTP, in one test binary (link time on two
//! cores is real): the hostile-token battery against a fake provider, the development
//! provider, and end to end against the real `oidc-provider` npm package.
//!
//! Leaves out: scope and purpose rules (unit tests in `src/`).

#[path = "verify/support.rs"]
mod support;

#[path = "verify/dev_idp.rs"]
mod dev_idp;
#[path = "verify/hostile.rs"]
mod hostile;
#[path = "verify/oidc_provider.rs"]
mod oidc_provider;
#[path = "verify/p6.rs"]
mod p6;
