//! The decide phase and the consent half of the filter phase: whose data a request touches,
//! the patient's consents in force, and the decision, before forwarding and again per
//! resource on the way back when the answer is what says whose data it is.
//!
//! Owns: patient resolution from the request and from resources, and grouping a Bundle's
//! entries by patient. Leaves out: the decision rules (the consent crate) and where consents
//! come from (the consent service).

use std::collections::BTreeMap;
use std::sync::Mutex;

use assent_consent::{
    AccessRequest, Basis, BreakGlass as BreakGlassAsk, BreakGlassRefusal, Caller as ConsentCaller,
    Decision, Deny, SitePolicy, decide, permit_per_resource, permit_without_patient_data,
};
use assent_fhir::Interaction;
use serde_json::Value;

use crate::break_glass::Override;
use crate::caller::Caller;
use crate::consent_service::{ConsentServiceError, now};
use crate::error::GatewayError;
use crate::fhir_request::FhirRequest;
use crate::upstream::Site;

/// The search parameters that name the patient a search is about.
const PATIENT_PARAMS: &[&str] = &["patient", "subject", "patient:Patient", "subject:Patient"];

/// What the consent engine needs to know about the caller and the request.
pub struct ConsentRequest {
    caller: ConsentCaller,
    purpose: Option<&'static str>,
    interaction: Interaction,
    resource_type: Option<String>,
    resource_id: Option<String>,
    policy: SitePolicy,
    /// Break-glass asked for: the justification (empty when none was given) and whether the
    /// caller holds the grant.
    break_glass: Option<(String, bool)>,
    /// Denies that break-glass overrode, for the request context.
    overrides: Mutex<Vec<Override>>,
}

impl ConsentRequest {
    pub fn new(
        caller: &Caller,
        purpose: Option<&'static str>,
        fhir: &FhirRequest,
        site: &Site,
    ) -> Self {
        let mut consent_caller = ConsentCaller::new();
        for reference in [&caller.verified.actor, &caller.verified.organization]
            .into_iter()
            .flatten()
        {
            consent_caller = consent_caller.with_reference(&relative_reference(reference));
        }
        ConsentRequest {
            caller: consent_caller,
            purpose,
            interaction: fhir.interaction,
            resource_type: fhir.resource_type.clone(),
            resource_id: fhir.id.clone(),
            policy: site.config.default_policy,
            break_glass: None,
            overrides: Mutex::new(Vec::new()),
        }
    }

    /// Asks for break-glass: a deny is overridden when the caller holds the grant
    /// (`granted`), the purpose is emergency treatment and `justification` is not empty.
    pub fn with_break_glass(mut self, justification: Option<&str>, granted: bool) -> Self {
        self.break_glass = Some((justification.unwrap_or_default().to_owned(), granted));
        self
    }

    /// Whether break-glass overrode a deny since the last [`take_overrides`](Self::take_overrides).
    pub fn has_overrides(&self) -> bool {
        self.overrides.lock().is_ok_and(|o| !o.is_empty())
    }

    /// The denies break-glass overrode since the last call.
    pub fn take_overrides(&self) -> Vec<Override> {
        self.overrides
            .lock()
            .map(|mut o| std::mem::take(&mut *o))
            .unwrap_or_default()
    }

    fn note_override(&self, patient_key: String, overridden: &Basis) {
        if let Ok(mut o) = self.overrides.lock() {
            o.push(Override {
                patient_key,
                overridden: overridden.to_string(),
            });
        }
    }

    fn access(&self) -> AccessRequest<'_> {
        let mut request = AccessRequest::new(
            &self.caller,
            self.interaction,
            self.resource_type.as_deref(),
            now(),
        );
        if let Some(p) = self.purpose {
            request = request.with_purpose(p);
        }
        if let Some(id) = &self.resource_id {
            request = request.with_resource_id(id);
        }
        if let Some((justification, granted)) = &self.break_glass {
            request = request.with_break_glass(BreakGlassAsk {
                justification,
                scope_granted: *granted,
            });
        }
        request
    }
}

/// The error answering a deny: a deny that break-glass would have overridden but for the
/// missing justification says so with its own code.
pub fn denied(deny: &Deny) -> GatewayError {
    match deny.break_glass_refused() {
        Some(BreakGlassRefusal::NoJustification) => {
            GatewayError::BreakGlassJustificationRequired(deny.basis().to_string())
        }
        _ => GatewayError::Denied(deny.basis().to_string()),
    }
}

/// Notes an override when `decision` rests on break-glass.
fn note_if_break_glass(
    state: &crate::app::AppState,
    site: &Site,
    patient: &str,
    request: &ConsentRequest,
    decision: &Decision,
) {
    if let Decision::Permit(p) = decision
        && let Basis::BreakGlass(overridden) = p.basis()
    {
        request.note_override(state.consents.patient_key(&site.id, patient), overridden);
    }
}

/// The decide phase.
pub async fn decide_request(
    state: &crate::app::AppState,
    site: &Site,
    fhir: &FhirRequest,
    request: &ConsentRequest,
) -> Result<Decision, GatewayError> {
    if fhir.interaction == Interaction::Capabilities {
        return Ok(Decision::Permit(permit_without_patient_data()));
    }
    let Some(patient) = patient_of_request(fhir) else {
        // Whose data this is shows in the answer: fetch, then decide each resource.
        return Ok(Decision::Permit(permit_per_resource()));
    };
    let consents = state
        .consents
        .consents_for(&site.id, &patient)
        .await
        .map_err(unavailable)?;
    let decision = decide(&consents, &request.access(), request.policy);
    note_if_break_glass(state, site, &patient, request, &decision);
    Ok(decision)
}

/// Decides one returned resource (a read whose permit was conditional or per-resource).
pub async fn check_resource(
    state: &crate::app::AppState,
    site: &Site,
    request: &ConsentRequest,
    resource: &Value,
) -> Result<(), GatewayError> {
    let Some(patient) = patient_of_resource(resource) else {
        // Not a patient's data (a Practitioner, an Organization, a Medication).
        return Ok(());
    };
    let consents = state
        .consents
        .consents_for(&site.id, &patient)
        .await
        .map_err(unavailable)?;
    let decision = decide(
        &consents,
        &request.access().with_resource(resource),
        request.policy,
    );
    note_if_break_glass(state, site, &patient, request, &decision);
    match decision {
        Decision::Permit(_) => Ok(()),
        Decision::Deny(d) => Err(denied(&d)),
    }
}

/// Decides every entry of a search Bundle, patient by patient; denied entries are removed,
/// `total` is dropped and an outcome entry says results were withheld. Returns how many
/// entries were removed.
pub async fn filter_bundle(
    state: &crate::app::AppState,
    site: &Site,
    request: &ConsentRequest,
    bundle: &mut Value,
) -> Result<usize, GatewayError> {
    let Some(entries) = bundle.get_mut("entry").and_then(Value::as_array_mut) else {
        return Ok(0);
    };
    let mut by_patient: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, entry) in entries.iter().enumerate() {
        if let Some(patient) = entry.get("resource").and_then(patient_of_resource) {
            by_patient.entry(patient).or_default().push(i);
        }
    }
    let mut keep = vec![true; entries.len()];
    let mut outcome: Option<Value> = None;
    for (patient, indices) in by_patient {
        let consents = state
            .consents
            .consents_for(&site.id, &patient)
            .await
            .map_err(unavailable)?;
        // One patient's entries, tagged with their place so the survivors can be found.
        let group: Vec<Value> = indices
            .iter()
            .map(|&i| {
                let mut e = entries[i].clone();
                e["_assent_index"] = Value::from(i);
                e
            })
            .collect();
        let mut sub =
            serde_json::json!({"resourceType": "Bundle", "type": "searchset", "entry": group});
        let report =
            assent_consent::filter_bundle(&mut sub, &consents, &request.access(), request.policy);
        if report.kept_by_break_glass > 0 {
            // What was overridden: the patient-level decision without break-glass.
            let mut plain = request.access();
            plain.break_glass = None;
            let overridden = match decide(&consents, &plain, request.policy) {
                Decision::Deny(d) => d.basis().clone(),
                Decision::Permit(_) => Basis::PerResource,
            };
            request.note_override(state.consents.patient_key(&site.id, &patient), &overridden);
        }
        if report.removed == 0 {
            continue;
        }
        for &i in &indices {
            keep[i] = false;
        }
        for e in sub["entry"].as_array().into_iter().flatten() {
            match e.get("_assent_index").and_then(Value::as_u64) {
                Some(i) => keep[i as usize] = true,
                None => outcome = outcome.or_else(|| Some(e.clone())),
            }
        }
    }
    let removed = keep.iter().filter(|k| !**k).count();
    if removed == 0 {
        return Ok(0);
    }
    let mut flags = keep.into_iter();
    entries.retain(|_| flags.next().unwrap_or(false));
    if let Some(o) = outcome {
        entries.push(o);
    }
    if let Some(obj) = bundle.as_object_mut() {
        obj.remove("total");
    }
    Ok(removed)
}

/// The patient a request is about, when the request itself says: `Patient/{id}…`, or a
/// search naming one patient.
pub fn patient_of_request(fhir: &FhirRequest) -> Option<String> {
    if fhir.resource_type.as_deref() == Some("Patient")
        && let Some(id) = &fhir.id
    {
        return Some(id.clone());
    }
    if fhir.interaction != Interaction::Search {
        return None;
    }
    let mut found: Option<String> = None;
    for pair in fhir.query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
        let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
        let is_patient_param = PATIENT_PARAMS.contains(&name.as_ref())
            || (fhir.resource_type.as_deref() == Some("Patient") && name == "_id");
        if !is_patient_param || value.contains(',') {
            continue;
        }
        let id = match value.strip_prefix("Patient/") {
            Some(id) => id.to_owned(),
            None if name.starts_with("subject") && value.contains('/') => return None,
            None => value.into_owned(),
        };
        match &found {
            Some(existing) if *existing != id => return None,
            _ => found = Some(id),
        }
    }
    found
}

/// The patient a resource belongs to: a Patient itself, or the patient its `subject` or
/// `patient` refers to.
pub fn patient_of_resource(resource: &Value) -> Option<String> {
    if resource.get("resourceType").and_then(Value::as_str) == Some("Patient") {
        return resource
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    for field in ["subject", "patient", "beneficiary"] {
        if let Some(reference) = resource
            .pointer(&format!("/{field}/reference"))
            .and_then(Value::as_str)
            && let Some((ty, id)) = relative_reference(reference).split_once('/')
            && ty == "Patient"
        {
            return Some(id.to_owned());
        }
    }
    None
}

/// `Type/id` from a relative or absolute reference.
fn relative_reference(reference: &str) -> String {
    let parts: Vec<&str> = reference.trim_end_matches('/').rsplitn(3, '/').collect();
    match parts.as_slice() {
        [id, ty, ..] => format!("{ty}/{id}"),
        _ => reference.to_owned(),
    }
}

fn unavailable(e: ConsentServiceError) -> GatewayError {
    tracing::warn!(error = %e, "consent state unavailable: failing closed");
    GatewayError::ConsentUnavailable
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir_request::parse;
    use serde_json::json;

    fn patient(method: &str, rest: &str, query: &str) -> Option<String> {
        patient_of_request(&parse(method, rest, query).unwrap())
    }

    #[test]
    fn the_request_names_its_patient_or_not() {
        assert_eq!(patient("GET", "Patient/p1", ""), Some("p1".into()));
        assert_eq!(
            patient("GET", "Patient/p1/$everything", ""),
            Some("p1".into())
        );
        assert_eq!(
            patient("GET", "Patient/p1/_history/2", ""),
            Some("p1".into())
        );
        assert_eq!(
            patient("GET", "Observation", "patient=p1&code=x"),
            Some("p1".into())
        );
        assert_eq!(
            patient("GET", "Observation", "subject=Patient%2Fp1"),
            Some("p1".into())
        );
        assert_eq!(patient("GET", "Observation", "subject=Group/g1"), None);
        assert_eq!(patient("GET", "Observation", "patient=p1,p2"), None);
        assert_eq!(patient("GET", "Observation", "patient=p1&patient=p2"), None);
        assert_eq!(patient("GET", "Patient", "_id=p3"), Some("p3".into()));
        assert_eq!(patient("GET", "Observation", "code=x"), None);
        assert_eq!(patient("GET", "Observation/o1", ""), None);
    }

    #[test]
    fn a_resource_names_its_patient() {
        assert_eq!(
            patient_of_resource(&json!({"resourceType": "Patient", "id": "p1"})),
            Some("p1".into())
        );
        assert_eq!(
            patient_of_resource(
                &json!({"resourceType": "Observation", "subject": {"reference": "Patient/p2"}})
            ),
            Some("p2".into())
        );
        assert_eq!(
            patient_of_resource(
                &json!({"resourceType": "AllergyIntolerance", "patient": {"reference": "https://gw.example/fhir/s/Patient/p3"}})
            ),
            Some("p3".into())
        );
        assert_eq!(
            patient_of_resource(
                &json!({"resourceType": "Observation", "subject": {"reference": "Group/g"}})
            ),
            None
        );
        assert_eq!(
            patient_of_resource(&json!({"resourceType": "Practitioner", "id": "d"})),
            None
        );
    }
}
