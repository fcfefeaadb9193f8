//! FHIR vocabulary shared by every Assent crate: FHIR versions and their media-type names,
//! REST interactions, and the `Issue` that lossy or failing work reports.
//!
//! Owns no I/O and no HTTP types; the gateway turns these into responses.

mod interaction;
mod issue;
mod version;

pub use interaction::Interaction;
pub use issue::{Issue, IssueCode, Severity, operation_outcome};
pub use version::{FhirVersion, UnknownVersion};
