//! Filtering a search-result Bundle: every entry (matches, `_include`d and `_revinclude`d
//! resources) is decided on its own content; denied entries are removed.
//!
//! Owns the rewriting of the Bundle's entries and `total`. Leaves out paging links (the
//! gateway rewrites and signs them) and translation between FHIR versions.

use assent_fhir::{Issue, IssueCode, Severity, operation_outcome};
use serde_json::{Value, json};

use crate::decide::{AccessRequest, RelatedIndex, decide};
use crate::decision::{Basis, Decision, SitePolicy};
use crate::model::{Conditions, Consent};

/// What filtering removed and kept. Counts only: never which resources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilterReport {
    /// Entries kept (not counting the outcome entry added).
    pub kept: usize,
    /// Entries removed, of every kind.
    pub removed: usize,
    /// Removed entries with `search.mode` `match` (or no mode).
    pub removed_matches: usize,
    /// Removed entries with `search.mode` `include` (`_include` and `_revinclude`).
    pub removed_includes: usize,
    /// Removed entries denied by a provision about security labels.
    pub removed_by_security_label: usize,
    /// Removed entries that carried no resource and so could not be decided.
    pub removed_without_resource: usize,
    /// Entries kept only because break-glass overrode a deny: the receipt flags them.
    pub kept_by_break_glass: usize,
}

/// The diagnostics of the OperationOutcome entry added when entries were withheld.
pub const WITHHELD_DIAGNOSTICS: &str =
    "Some results were withheld under the patient's consent or the site's policy.";

/// Decides every entry of `bundle` against `consents`, with `request` giving the caller,
/// purpose, time and break-glass (its resource fields are replaced by each entry's).
///
/// Denied entries are removed, including resources of a permitted type that carry a denied
/// security label. When anything was removed, `Bundle.total` is dropped (it would tell how
/// many were withheld) and an OperationOutcome entry with `search.mode = "outcome"` says that
/// results were withheld, without saying which. Every entry is decided whatever its
/// `search.mode` says, but an OperationOutcome (which is no patient's record) is kept. An
/// entry without a resource cannot be decided and is removed.
///
/// This decides every entry on ONE patient's consents: the consent fixtures use it. The
/// gateway, whose answers reach several patients, decides each resource with [`decide`] on
/// the consents of every patient the whose-data rule (`assent_fhir::compartment`) finds.
pub fn filter_bundle(
    bundle: &mut Value,
    consents: &[Consent],
    request: &AccessRequest<'_>,
    policy: SitePolicy,
) -> FilterReport {
    let mut report = FilterReport::default();
    let Some(entries) = bundle.get("entry").and_then(Value::as_array) else {
        return report;
    };
    let related = RelatedIndex::from_resources(entries.iter().filter_map(|e| e.get("resource")));
    let mut keep = Vec::with_capacity(entries.len());
    for entry in entries {
        let mode = entry
            .pointer("/search/mode")
            .and_then(Value::as_str)
            .unwrap_or("match");
        let is_outcome = entry
            .get("resource")
            .and_then(|r| r.get("resourceType"))
            .and_then(Value::as_str)
            == Some("OperationOutcome");
        if is_outcome {
            keep.push(true);
            report.kept += 1;
            continue;
        }
        let kept = match entry.get("resource") {
            None => {
                report.removed_without_resource += 1;
                false
            }
            Some(resource) => {
                let mut r = *request;
                r.resource_type = None;
                r.resource_id = None;
                r.related = Some(&related);
                let r = r.with_resource(resource);
                match decide(consents, &r, policy) {
                    Decision::Permit(p) => {
                        if p.break_glass() {
                            report.kept_by_break_glass += 1;
                        }
                        true
                    }
                    Decision::Deny(d) => {
                        if let Basis::Consent(c) = d.basis()
                            && c.conditions.contains(Conditions::SECURITY_LABEL)
                        {
                            report.removed_by_security_label += 1;
                        }
                        false
                    }
                }
            }
        };
        if kept {
            report.kept += 1;
        } else {
            report.removed += 1;
            if mode == "include" {
                report.removed_includes += 1;
            } else {
                report.removed_matches += 1;
            }
        }
        keep.push(kept);
    }
    if report.removed == 0 {
        return report;
    }
    if let Some(Value::Array(entries)) = bundle.get_mut("entry") {
        let mut flags = keep.into_iter();
        entries.retain(|_| flags.next().unwrap_or(false));
        entries.push(withheld_entry());
    }
    if let Some(obj) = bundle.as_object_mut() {
        obj.remove("total");
    }
    report
}

fn withheld_entry() -> Value {
    let issue = Issue::new(
        Severity::Information,
        IssueCode::Suppressed,
        WITHHELD_DIAGNOSTICS,
    );
    json!({
        "resource": operation_outcome(&[issue]),
        "search": { "mode": "outcome" },
    })
}
