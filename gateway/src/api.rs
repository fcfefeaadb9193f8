//! The gateway's own API, handlers only: consent (`/consent/…`), the audit log and its export
//! (`/audit/…`), the compliance console (`/console/…`), the patient portal (`/portal/…`) and the browser
//! sign-in both share (`signin`), adapter administration
//! (`/admin/adapters/…`), the network patient index's administration (`/admin/network/…`),
//! and the receipt each of these calls leaves.
//!
//! Depends on: `config`, `store`, `services`, `http`. Never on `proxy` or the facade.

pub mod adapters;
pub mod audit;
pub mod consent;
pub mod console;
pub mod network;
pub mod portal;
pub mod receipt;
pub mod signin;
