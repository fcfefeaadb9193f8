//! FHIR vocabulary shared by every Assent crate: FHIR versions and their media-type names,
//! REST interactions, the `Issue` that lossy or failing work reports, and THE rule of whose
//! data a resource or a request is (`compartment`), response shaping (`shaping`), query strings
//! (`query`), format names (`format`), FHIR dates and times (`time`), numbers written back
//! as they were spelt (`spelling`) and
//! the cross-site patient identity (`SitePatient`).
//!
//! Owns no I/O and no HTTP types; the gateway turns these into responses.

pub mod compartment;
pub mod format;
mod interaction;
mod issue;
mod patient;
pub mod query;
pub mod shaping;
pub mod spelling;
pub mod time;
mod version;

pub use interaction::Interaction;
pub use issue::{Issue, IssueCode, Severity, operation_outcome};
pub use patient::{NotSitePatient, SitePatient};
pub use version::{FhirVersion, UnknownVersion};
