//! The release concern, [`Release`] (the outbound halves of scopes and consent together): what
//! of a site's answer may leave the gateway.
//!
//! Every resource of an answer is decided before it is released, whatever its place: a
//! search match, an `_include`d or `_revinclude`d resource, an entry marked
//! `search.mode = outcome`, a resource nested in a Bundle or a document. A resource is
//! released only when the caller's scopes allow it and every patient it belongs to permits
//! it (`consent::Enforcer`); the site's own OperationOutcomes are never passed on.
//!
//! What an answer may say about what was withheld:
//! - `Bundle.total` only when the answer is complete in one page, and then it is the number
//!   of matches released (so it says nothing the entries do not);
//! - the "some results were withheld" notice only when the request named its patients, all
//!   of them were permitted, and every resource withheld belonged to those patients alone
//!   (the caller may learn that a patient it may see has more than it may see, never
//!   anything of a patient it may not see).
//!
//! Leaves out: the decisions themselves (consent crate, `authorize.rs`), URL rewriting and
//! translation (they follow).

use assent_auth::VerifiedCaller;
use assent_consent::{Decision, RelatedIndex, WITHHELD_DIAGNOSTICS};
use assent_fhir::{Interaction, Issue, IssueCode, Severity, operation_outcome};
use serde_json::{Value, json};

use crate::http::error::GatewayError;
use crate::proxy::consent::{self, Enforcer, PlacedPatient};
use crate::proxy::request::FhirRequest;
use crate::proxy::scopes::{self, Authorization};

/// The release concern: scopes and consent on every resource of an answer, for one request.
/// Its inbound halves are the scopes' authorization and the enforcer's decide phase.
pub struct Release<'a, 'e> {
    pub enforcer: &'a mut Enforcer<'e>,
    pub facts: RequestFacts<'a>,
}

impl Release<'_, '_> {
    /// [`release_bundle`] for this request.
    pub async fn bundle(&mut self, bundle: &mut Value) -> Result<BundleRelease, GatewayError> {
        release_bundle(self.enforcer, &self.facts, bundle).await
    }

    /// [`release_resource`] for this request.
    pub async fn resource(
        &mut self,
        resource: &Value,
    ) -> Result<(Vec<PlacedPatient>, bool), GatewayError> {
        release_resource(self.enforcer, &self.facts, resource).await
    }
}

/// What the release rules need to know about the request.
#[derive(Clone, Copy)]
pub struct RequestFacts<'a> {
    pub fhir: &'a FhirRequest,
    pub caller: &'a VerifiedCaller,
    pub authorization: &'a Authorization,
    /// The patients the request named, all permitted by the decide phase; `None` when the
    /// request named none (each resource decided on its own, no count signals).
    pub named: Option<&'a [PlacedPatient]>,
}

/// What releasing a Bundle did.
#[derive(Debug, Default)]
pub struct BundleRelease {
    /// Entries withheld (scopes or consent).
    pub withheld: usize,
    /// The site's OperationOutcome entries dropped.
    pub site_outcomes: usize,
    /// The patients of the released resources.
    pub patients: Vec<PlacedPatient>,
    /// Whether a released resource rests on break-glass.
    pub break_glass: bool,
    /// Whether the site's page carried a `total`.
    pub site_total: bool,
}

/// Decides every entry of a Bundle answer and removes what may not be released; sets or
/// removes `total` and adds the withheld notice by the rules above.
pub async fn release_bundle(
    enforcer: &mut Enforcer<'_>,
    facts: &RequestFacts<'_>,
    bundle: &mut Value,
) -> Result<BundleRelease, GatewayError> {
    let mut report = BundleRelease::default();
    let entries = match bundle.get_mut("entry").map(Value::take) {
        Some(Value::Array(entries)) => entries,
        Some(Value::Null) | None => Vec::new(),
        Some(_) => return Err(GatewayError::UpstreamBadResponse),
    };
    let related = RelatedIndex::from_resources(entries.iter().filter_map(|e| e.get("resource")));
    let own_type = scopes::own_type(facts.fhir);
    // Whether each entry is released, in order.
    let mut keep = Vec::with_capacity(entries.len());
    // Whether something withheld belonged to a patient outside the named ones (or to none
    // that could be placed): then nothing may hint at it.
    let mut withheld_outside = false;
    for entry in &entries {
        let Some(resource) = entry.get("resource") else {
            // A history entry of a deletion: it says a version existed. Kept only in the
            // history of a named, permitted Patient.
            let named_patient_history = facts.named.is_some()
                && facts.fhir.interaction == Interaction::History
                && facts.fhir.resource_type.as_deref() == Some("Patient")
                && facts.fhir.id.is_some();
            if !named_patient_history {
                report.withheld += 1;
                withheld_outside = true;
            }
            keep.push(named_patient_history);
            continue;
        };
        if resource.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome") {
            report.site_outcomes += 1;
            keep.push(false);
            continue;
        }
        let verdict = enforcer.decide_resource(resource, Some(&related)).await?;
        let (scope_ok, _) = facts.authorization.check(
            facts.caller,
            resource,
            &verdict.found,
            own_type,
            scopes::entry_access(facts.fhir, entry),
        );
        let released = scope_ok && verdict.released();
        keep.push(released);
        if released {
            if matches!(&verdict.decision, Decision::Permit(p) if p.break_glass()) {
                report.break_glass = true;
            }
            report.patients.extend(verdict.patients);
        } else {
            report.withheld += 1;
            let inside = facts.named.is_some_and(|named| {
                verdict.found.unknown == 0
                    && verdict.patients.len() == verdict.found.known.len()
                    && !verdict.patients.is_empty()
                    && verdict.patients.iter().all(|p| named.contains(p))
            });
            withheld_outside |= !inside;
        }
    }
    drop(related);
    let mut kept: Vec<Value> = entries
        .into_iter()
        .zip(keep)
        .filter_map(|(entry, keep)| keep.then_some(entry))
        .collect();
    let complete =
        facts.fhir.page_token.is_none() && !has_link(bundle, &["next", "previous", "prev"]);
    if report.withheld > 0 && facts.named.is_some() && !withheld_outside {
        kept.push(withheld_entry());
    }
    let matches = kept
        .iter()
        .filter(|e| {
            e.pointer("/search/mode")
                .and_then(Value::as_str)
                .is_none_or(|m| m == "match")
                && e.get("resource")
                    .and_then(|r| r.get("resourceType"))
                    .and_then(Value::as_str)
                    != Some("OperationOutcome")
        })
        .count();
    report.site_total = bundle.get("total").is_some();
    if let Some(object) = bundle.as_object_mut() {
        if complete && object.contains_key("total") {
            object.insert("total".into(), json!(matches));
        } else {
            object.remove("total");
        }
        if !kept.is_empty() {
            object.insert("entry".into(), Value::Array(kept));
        }
    }
    Ok(report)
}

/// Decides a single resource answer (a read, a vread, an operation answering one resource):
/// released only when the scopes allow it and every patient it belongs to permits it.
/// Returns the patients it belongs to, and whether it rests on break-glass.
///
/// A resource of a request that named no patient, denied, is answered like a resource the
/// site does not have (404 `resource-not-found`), so that the answer says nothing of whether
/// a record of a patient the caller may not see exists; a request that named its patient
/// was told so before forwarding. A deny break-glass would override but for the missing
/// justification says so (only a caller holding the grant, in an emergency, gets it).
pub async fn release_resource(
    enforcer: &mut Enforcer<'_>,
    facts: &RequestFacts<'_>,
    resource: &Value,
) -> Result<(Vec<PlacedPatient>, bool), GatewayError> {
    let verdict = enforcer.decide_resource(resource, None).await?;
    let scope =
        facts
            .authorization
            .check_resource(facts.caller, resource, &verdict.found, facts.fhir);
    if let Err(e) = scope {
        return Err(match (facts.named, e) {
            (None, GatewayError::OutsidePatientContext) => GatewayError::UpstreamNotFound,
            (_, e) => e,
        });
    }
    match &verdict.decision {
        Decision::Permit(p) => Ok((verdict.patients, p.break_glass())),
        Decision::Deny(deny) => {
            let error = consent::denied(deny);
            Err(match (facts.named, error) {
                (_, e @ GatewayError::BreakGlassJustificationRequired(_)) => e,
                (None, GatewayError::Denied(_)) => GatewayError::ContentDenied,
                (_, e) => e,
            })
        }
    }
}

/// Whether `bundle` has a link of one of `relations`.
fn has_link(bundle: &Value, relations: &[&str]) -> bool {
    bundle
        .get("link")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|l| l.get("relation").and_then(Value::as_str))
        .any(|r| relations.contains(&r))
}

/// The generic "some results were withheld" entry (`search.mode = outcome`).
pub fn withheld_entry() -> Value {
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
