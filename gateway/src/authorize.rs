//! What a verified caller's SMART scopes allow for one parsed FHIR request: the grant for the
//! request's interaction and resource type, the search conditions added to a forwarded search
//! (patient confinement and granular scopes), and the check of returned resources one by one
//! (Bundle entries removed, a read refused) against the grant and the token's patient.
//!
//! The scope rules themselves (v1/v2 letters, granular conditions) are `assent-auth`'s; this
//! module knows FHIR requests and the patient compartment. Narrowing, never widening: a
//! resource whose compartment cannot be told is outside the token's patient.
//!
//! Leaves out: consent (the decide phase) and URL rewriting (`rewrite.rs`).

use assent_auth::{Access, AuthError, Grant, VerifiedCaller};
use assent_fhir::Interaction;
use serde_json::Value;

use crate::error::GatewayError;
use crate::fhir_request::FhirRequest;

/// Stands for "any resource type" when a system-level operation is authorized: only `*`
/// scopes match it.
const ANY_TYPE: &str = "Resource";

/// Elements whose references put a resource in a patient's compartment (the patient
/// CompartmentDefinition's parameters, by element name, across STU3–R5).
const COMPARTMENT_ELEMENTS: &[&str] = &[
    "subject",
    "patient",
    "beneficiary",
    "individual",
    "performer",
    "author",
    "recorder",
    "asserter",
    "requester",
    "participant",
    "informationSource",
    "source",
    "sender",
    "recipient",
    "agent",
    "actor",
];

/// Inside a compartment element: where the reference sits (`participant.individual`, …).
const NESTED_REFERENCES: &[&str] = &["individual", "actor", "who", "party"];

/// What the caller may do for one request.
#[derive(Debug, Clone)]
pub struct Authorization {
    /// The grant for the request's own resource type and interaction; `None` for a paging
    /// link at the base, whose entries are each checked by their own type.
    pub grant: Option<Grant>,
    /// The token's patient launch context (a Patient id), if any.
    pub patient: Option<String>,
}

/// The grant for `fhir`, or why not: 403 `scope-insufficient`, 403
/// `scope-patient-context-missing`, or 403 `scope-patient-mismatch` for another patient's
/// record named by id.
pub fn authorize(
    caller: &VerifiedCaller,
    fhir: &FhirRequest,
) -> Result<Authorization, GatewayError> {
    let patient = caller.patient.as_deref().map(patient_id);
    let resource_type = fhir.resource_type.as_deref();
    let grant = match (fhir.interaction, resource_type) {
        (Interaction::Capabilities, _) => Some(Grant::unrestricted()),
        (Interaction::Search, None) if fhir.page_token.is_some() => None,
        (Interaction::Operation, None) => {
            let grant = caller.authorize(Interaction::Operation, ANY_TYPE)?;
            if !grant.is_unrestricted() {
                return Err(insufficient("*", "rs"));
            }
            Some(grant)
        }
        (_, None) => return Err(insufficient("*", "rs")),
        (Interaction::History, Some(t)) => {
            let access = if fhir.id.is_some() {
                Access::HistoryInstance
            } else {
                Access::HistoryType
            };
            Some(caller.authorize_access(access, t)?)
        }
        (interaction, Some(t)) => Some(caller.authorize(interaction, t)?),
    };
    if let Some(grant) = &grant {
        // A Patient named by id that is not the token's patient: refused before forwarding.
        if grant.patient_confined()
            && resource_type == Some("Patient")
            && let Some(id) = &fhir.id
            && Some(id) != patient.as_ref()
        {
            return Err(GatewayError::OutsidePatientContext);
        }
        // Other operations answer with what the gateway cannot check entry by entry.
        if fhir.interaction == Interaction::Operation
            && !fhir.returns_bundle()
            && !grant.is_unrestricted()
        {
            return Err(insufficient(resource_type.unwrap_or("*"), "rs"));
        }
    }
    Ok(Authorization { grant, patient })
}

impl Authorization {
    /// No restriction at all on the request's own resource type.
    pub fn is_unrestricted(&self) -> bool {
        self.grant.as_ref().is_some_and(Grant::is_unrestricted)
    }

    /// Search parameters to add to a forwarded type-level search: the token's patient when
    /// every rule is confined to it, and a single rule's granular conditions.
    pub fn narrowing(&self, fhir: &FhirRequest) -> Vec<(String, String)> {
        let (Some(grant), Some(resource_type)) = (&self.grant, &fhir.resource_type) else {
            return Vec::new();
        };
        if fhir.interaction != Interaction::Search {
            return Vec::new();
        }
        let mut pairs = Vec::new();
        if grant.patient_confined()
            && let Some(patient) = &self.patient
        {
            let name = if resource_type == "Patient" {
                "_id"
            } else {
                "patient"
            };
            pairs.push((name.to_owned(), patient.clone()));
        }
        if let Some(conditions) = grant.search_narrowing() {
            pairs.extend(conditions.iter().map(|c| c.to_query_pair()));
        }
        pairs
    }

    /// Whether `resource` may be released to the caller. Resources of the request's own type
    /// are checked against the request's grant; others (`_include`, `$everything`, paging at
    /// the base) against the caller's grant for `access` to their own type.
    pub fn releases(
        &self,
        caller: &VerifiedCaller,
        resource: &Value,
        own_type: Option<&str>,
        access: Access,
    ) -> bool {
        self.check(caller, resource, own_type, access).0
    }

    /// Whether `resource` may be released, and whether a restricted grant decided it.
    fn check(
        &self,
        caller: &VerifiedCaller,
        resource: &Value,
        own_type: Option<&str>,
        access: Access,
    ) -> (bool, bool) {
        let Some(resource_type) = resource.get("resourceType").and_then(Value::as_str) else {
            return (false, true);
        };
        if resource_type == "OperationOutcome" {
            return (true, false);
        }
        let other;
        let grant = match (&self.grant, own_type) {
            (Some(grant), Some(own)) if own == resource_type => grant,
            _ => match caller.authorize_access(access, resource_type) {
                Ok(grant) => {
                    other = grant;
                    &other
                }
                Err(_) => return (false, true),
            },
        };
        if grant.is_unrestricted() {
            return (true, false);
        }
        let in_compartment = self
            .patient
            .as_deref()
            .is_some_and(|p| in_patient_compartment(resource, p));
        (grant.permits(resource, in_compartment), true)
    }

    /// The check of a single returned resource (read, vread): 403 when it may not be released.
    pub fn check_resource(
        &self,
        caller: &VerifiedCaller,
        resource: &Value,
        fhir: &FhirRequest,
    ) -> Result<(), GatewayError> {
        let own_type = fhir.resource_type.as_deref();
        if self.releases(caller, resource, own_type, Access::Read) {
            return Ok(());
        }
        let confined = self.grant.as_ref().is_some_and(Grant::patient_confined);
        let in_compartment = self
            .patient
            .as_deref()
            .is_some_and(|p| in_patient_compartment(resource, p));
        if confined && !in_compartment {
            Err(GatewayError::OutsidePatientContext)
        } else {
            Err(insufficient(own_type.unwrap_or("*"), "r"))
        }
    }

    /// Removes the entries of a Bundle the caller may not see. Returns how many were removed.
    /// `Bundle.total` is dropped whenever an entry was checked against a restricted grant, so
    /// that the count of what was withheld does not leak.
    pub fn filter_bundle(
        &self,
        caller: &VerifiedCaller,
        bundle: &mut Value,
        fhir: &FhirRequest,
    ) -> usize {
        let own_type = fhir.resource_type.as_deref();
        // `$everything` returns other types than its own; they count as reads.
        let own_type = if fhir.interaction == Interaction::Operation {
            None
        } else {
            own_type
        };
        let unrestricted = self.is_unrestricted();
        let mut removed = 0;
        let mut restricted = self.grant.as_ref().is_some_and(|g| !g.is_unrestricted());
        if let Some(entries) = bundle.get_mut("entry").and_then(Value::as_array_mut) {
            entries.retain(|entry| {
                let keep = match entry.get("resource") {
                    Some(resource) => {
                        let is_match = entry
                            .pointer("/search/mode")
                            .and_then(Value::as_str)
                            .is_none_or(|m| m == "match");
                        let access = if is_match && fhir.interaction == Interaction::Search {
                            Access::Search
                        } else {
                            Access::Read
                        };
                        let (keep, by_restriction) = self.check(caller, resource, own_type, access);
                        restricted |= by_restriction;
                        keep
                    }
                    // A history entry of a deletion: only for unrestricted callers.
                    None => unrestricted,
                };
                if !keep {
                    removed += 1;
                }
                keep
            });
        }
        if (removed > 0 || restricted)
            && let Some(object) = bundle.as_object_mut()
        {
            object.remove("total");
        }
        removed
    }
}

/// Appends `pairs` to a query string (or form body), percent-encoded; a pair already present
/// as written is not repeated.
pub fn append_pairs(query: &str, pairs: &[(String, String)]) -> String {
    let mut out = query.to_owned();
    for (name, value) in pairs {
        let pair = format!(
            "{}={}",
            url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>(),
            url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>()
        );
        if out.split('&').any(|p| p == pair) {
            continue;
        }
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&pair);
    }
    out
}

/// Whether `resource` is in the compartment of Patient `patient`: the Patient itself, or a
/// resource whose compartment elements refer to it.
pub fn in_patient_compartment(resource: &Value, patient: &str) -> bool {
    if resource.get("resourceType").and_then(Value::as_str) == Some("Patient") {
        return resource.get("id").and_then(Value::as_str) == Some(patient);
    }
    COMPARTMENT_ELEMENTS.iter().any(|name| {
        resource
            .get(*name)
            .is_some_and(|element| refers_to(element, patient, 0))
    })
}

fn refers_to(element: &Value, patient: &str, depth: usize) -> bool {
    match element {
        Value::Array(items) => items.iter().any(|i| refers_to(i, patient, depth)),
        Value::Object(object) => {
            if let Some(reference) = object.get("reference").and_then(Value::as_str) {
                return reference_is_patient(reference, patient);
            }
            depth == 0
                && NESTED_REFERENCES.iter().any(|name| {
                    object
                        .get(*name)
                        .is_some_and(|inner| refers_to(inner, patient, depth + 1))
                })
        }
        _ => false,
    }
}

/// `Patient/p`, `…/Patient/p` or either with `/_history/n`.
fn reference_is_patient(reference: &str, patient: &str) -> bool {
    let reference = match reference.find("/_history/") {
        Some(at) => &reference[..at],
        None => reference,
    };
    let Some(head) = reference.strip_suffix(patient) else {
        return false;
    };
    head == "Patient/" || head.ends_with("/Patient/")
}

/// The Patient id of a `patient` launch-context claim (`123` or `Patient/123`).
fn patient_id(claim: &str) -> String {
    claim
        .rsplit_once("Patient/")
        .map(|(_, id)| id)
        .unwrap_or(claim)
        .to_owned()
}

fn insufficient(resource_type: &str, letters: &str) -> GatewayError {
    GatewayError::Auth(AuthError::InsufficientScope {
        needed: format!(
            "patient/{resource_type}.{letters} user/{resource_type}.{letters} system/{resource_type}.{letters}"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir_request;
    use assent_auth::{CallerKind, Scopes};
    use serde_json::json;
    use std::sync::Arc;

    fn caller(scope: &str, patient: Option<&str>) -> VerifiedCaller {
        VerifiedCaller {
            issuer: "https://idp".into(),
            subject: "s".into(),
            actor: None,
            organization: None,
            scopes: Arc::new(Scopes::parse(scope).0),
            purpose: None,
            patient: patient.map(Into::into),
            token_id: "t".into(),
            client_id: None,
            kind: CallerKind::User,
            expires_at: 0,
            break_glass: false,
        }
    }

    fn request(path: &str, query: &str) -> FhirRequest {
        fhir_request::parse("GET", path, query).unwrap()
    }

    fn code(result: Result<Authorization, GatewayError>) -> &'static str {
        result.map(|_| "ok").unwrap_or_else(|e| e.code())
    }

    #[test]
    fn each_interaction_needs_its_letters() {
        let reader = caller("user/Observation.r", None);
        assert_eq!(
            code(authorize(&reader, &request("Observation/1", ""))),
            "ok"
        );
        assert_eq!(
            code(authorize(&reader, &request("Observation", ""))),
            "scope-insufficient"
        );
        assert_eq!(
            code(authorize(&reader, &request("Observation/1/_history", ""))),
            "ok"
        );
        assert_eq!(
            code(authorize(&reader, &request("Observation/_history", ""))),
            "scope-insufficient"
        );
        assert_eq!(
            code(authorize(&reader, &request("Patient/1", ""))),
            "scope-insufficient"
        );
        assert_eq!(code(authorize(&reader, &request("metadata", ""))), "ok");
        let v1 = caller("user/*.read", None);
        for path in ["Patient/1", "Condition", "Patient/1/$everything", "$meta"] {
            assert_eq!(code(authorize(&v1, &request(path, ""))), "ok", "{path}");
        }
    }

    #[test]
    fn patient_tokens_are_confined_to_their_patient() {
        let p = caller("patient/*.rs", Some("Patient/p1"));
        assert_eq!(code(authorize(&p, &request("Patient/p1", ""))), "ok");
        assert_eq!(
            code(authorize(&p, &request("Patient/p2", ""))),
            "scope-patient-mismatch"
        );
        assert_eq!(
            code(authorize(&p, &request("Patient/p2/$everything", ""))),
            "scope-patient-mismatch"
        );
        let search = request("Observation", "code=x");
        let auth = authorize(&p, &search).unwrap();
        assert_eq!(auth.narrowing(&search), [("patient".into(), "p1".into())]);
        let search = request("Patient", "");
        let auth = authorize(&p, &search).unwrap();
        assert_eq!(auth.narrowing(&search), [("_id".into(), "p1".into())]);
        let observation =
            json!({"resourceType": "Observation", "subject": {"reference": "Patient/p2"}});
        assert_eq!(
            auth.check_resource(&p, &observation, &request("Observation/o1", ""))
                .unwrap_err()
                .code(),
            "scope-patient-mismatch"
        );
        let mine = json!({"resourceType": "Observation", "subject": {"reference": "http://x/fhir/Patient/p1/_history/2"}});
        assert!(auth.releases(&p, &mine, Some("Observation"), Access::Read));
        let no_context = caller("patient/*.rs", None);
        assert_eq!(
            code(authorize(&no_context, &search)),
            "scope-patient-context-missing"
        );
    }

    #[test]
    fn granular_scopes_narrow_searches_and_filter_bundles() {
        let lab = caller(
            "user/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
            None,
        );
        let search = request("Observation", "_count=5");
        let auth = authorize(&lab, &search).unwrap();
        let pairs = auth.narrowing(&search);
        assert_eq!(
            append_pairs(&search.query, &pairs),
            "_count=5&category=http%3A%2F%2Fterminology.hl7.org%2FCodeSystem%2Fobservation-category%7Claboratory"
        );
        let coded = |code: &str| {
            json!({"resource": {"resourceType": "Observation", "category": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": code}]}]}})
        };
        let mut bundle = json!({"resourceType": "Bundle", "total": 3, "entry": [
            coded("laboratory"), coded("vital-signs"),
            {"resource": {"resourceType": "Patient", "id": "p1"}, "search": {"mode": "include"}},
        ]});
        assert_eq!(auth.filter_bundle(&lab, &mut bundle, &search), 2);
        assert_eq!(bundle["entry"].as_array().unwrap().len(), 1);
        assert!(bundle.get("total").is_none());
    }

    #[test]
    fn pages_at_the_base_are_checked_entry_by_entry() {
        let page = fhir_request::parse("GET", "", "_getpages=x&_assent_page=t").unwrap();
        let bundle = || {
            json!({"resourceType": "Bundle", "total": 2, "entry": [
                {"resource": {"resourceType": "Observation", "subject": {"reference": "Patient/p1"}}},
                {"resource": {"resourceType": "Condition", "subject": {"reference": "Patient/p1"}}},
            ]})
        };
        let anyone = caller("user/*.rs", None);
        let auth = authorize(&anyone, &page).unwrap();
        assert!(auth.grant.is_none());
        let mut b = bundle();
        assert_eq!(auth.filter_bundle(&anyone, &mut b, &page), 0);
        assert_eq!(b["total"], 2, "nothing restricted: the total stays");
        let observations = caller("user/Observation.rs", None);
        let mut b = bundle();
        assert_eq!(auth.filter_bundle(&observations, &mut b, &page), 1);
        assert!(b.get("total").is_none());
    }

    #[test]
    fn compartment_membership_reads_references() {
        let enc = json!({"resourceType": "Encounter", "participant": [{"individual": {"reference": "Patient/p1"}}]});
        assert!(in_patient_compartment(&enc, "p1"));
        assert!(!in_patient_compartment(&enc, "p"));
        assert!(!in_patient_compartment(
            &json!({"resourceType": "Observation", "subject": {"reference": "Patient/p10"}}),
            "p1"
        ));
        assert!(!in_patient_compartment(
            &json!({"resourceType": "Observation", "subject": {"reference": "Group/Patient/p1x"}}),
            "p1"
        ));
        assert_eq!(append_pairs("a=1", &[("a".into(), "1".into())]), "a=1");
    }
}
