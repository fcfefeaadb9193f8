//! The scopes concern, [`Authorization`]: inbound, [`authorize`] and [`Authorization::narrowing`];
//! outbound, [`Authorization::check`] and [`Authorization::check_resource`] (through
//! `release.rs`).
//!
//! What a verified caller's SMART scopes allow for one parsed FHIR request: the grant for the
//! request's interaction and resource type, the search conditions added to a forwarded search
//! (patient confinement and granular scopes), and the check of returned resources one by one
//! (Bundle entries removed, a read refused) against the grant and the token's patient.
//!
//! The scope rules themselves (v1/v2 letters, granular conditions) are `assent-auth`'s; whose
//! data a resource is comes from THE rule (`assent_fhir::compartment`, computed once per
//! resource by the caller and handed in). Narrowing, never widening: a resource is inside the
//! token's patient only when the rule places that patient in it.
//!
//! Leaves out: consent (the decide phase) and URL rewriting (`rewrite.rs`).

use assent_auth::{Access, AuthError, Grant, VerifiedCaller};
use assent_fhir::Interaction;
use assent_fhir::compartment::Patients;
use serde_json::Value;

use crate::http::error::GatewayError;
use crate::proxy::request::FhirRequest;

/// Stands for "any resource type" when a system-level operation is authorized: only `*`
/// scopes match it.
const ANY_TYPE: &str = "Resource";

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
/// record named by id. `patient` is the token's launch context at this site, as THE rule
/// binds it (`http/patient_context.rs`: `PatientContext::patient_at`), never the bare claim.
pub fn authorize(
    caller: &VerifiedCaller,
    patient: Option<String>,
    fhir: &FhirRequest,
) -> Result<Authorization, GatewayError> {
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
        patients: &Patients,
        own_type: Option<&str>,
        access: Access,
    ) -> bool {
        self.check(caller, resource, patients, own_type, access).0
    }

    /// Whether `resource` may be released, and whether a restricted grant decided it.
    pub fn check(
        &self,
        caller: &VerifiedCaller,
        resource: &Value,
        patients: &Patients,
        own_type: Option<&str>,
        access: Access,
    ) -> (bool, bool) {
        let Some(resource_type) = resource.get("resourceType").and_then(Value::as_str) else {
            return (false, true);
        };
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
        let in_compartment = self.in_token_patient(patients);
        (grant.permits(resource, in_compartment), true)
    }

    /// Whether the token's patient is one of the patients a resource belongs to.
    pub fn in_token_patient(&self, patients: &Patients) -> bool {
        self.patient
            .as_deref()
            .is_some_and(|p| patients.local_ids().any(|id| id == p))
    }

    /// The check of a single returned resource (read, vread): 403 when it may not be released.
    pub fn check_resource(
        &self,
        caller: &VerifiedCaller,
        resource: &Value,
        patients: &Patients,
        fhir: &FhirRequest,
    ) -> Result<(), GatewayError> {
        let own_type = fhir.resource_type.as_deref();
        if self.releases(caller, resource, patients, own_type, Access::Read) {
            return Ok(());
        }
        let confined = self.grant.as_ref().is_some_and(Grant::patient_confined);
        if confined && !self.in_token_patient(patients) {
            Err(GatewayError::OutsidePatientContext)
        } else {
            Err(insufficient(own_type.unwrap_or("*"), "r"))
        }
    }
}

/// The access a Bundle entry is checked for: a match of a search needs search access to its
/// type; everything else (`_include`d, `$everything`, history) counts as a read.
pub fn entry_access(fhir: &FhirRequest, entry: &Value) -> Access {
    let is_match = entry
        .pointer("/search/mode")
        .and_then(Value::as_str)
        .is_none_or(|m| m == "match");
    if is_match && fhir.interaction == Interaction::Search {
        Access::Search
    } else {
        Access::Read
    }
}

/// The resource type an answer's resources are checked against the request's own grant
/// for: the request's type, except for operations (their answers hold other types).
pub fn own_type(fhir: &FhirRequest) -> Option<&str> {
    if fhir.interaction == Interaction::Operation {
        None
    } else {
        fhir.resource_type.as_deref()
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

/// The Patient id of a `patient` launch-context claim (`123` or `Patient/123`).
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
    use crate::proxy::request;
    use assent_auth::{CallerKind, Scopes};
    use serde_json::json;
    use std::sync::Arc;

    /// The pipeline's call, with the claim as the launch context (binding is
    /// `patient_context.rs`'s, tested there).
    fn authorize(
        caller: &VerifiedCaller,
        fhir: &FhirRequest,
    ) -> Result<Authorization, GatewayError> {
        let patient = caller
            .patient
            .as_deref()
            .map(|p| p.strip_prefix("Patient/").unwrap_or(p).to_owned());
        super::authorize(caller, patient, fhir)
    }

    fn caller(scope: &str, patient: Option<&str>) -> VerifiedCaller {
        VerifiedCaller {
            issuer: "https://idp".into(),
            subject: "s".into(),
            actor: None,
            organization: None,
            display: None,
            scopes: Arc::new(Scopes::parse(scope).0),
            purpose: None,
            patient: patient.map(Into::into),
            token_id: "t".into(),
            client_id: None,
            kind: CallerKind::User,
            expires_at: 0,
            break_glass: false,
            audiences: std::sync::Arc::from([]),
        }
    }

    fn request(path: &str, query: &str) -> FhirRequest {
        request::parse("GET", path, query).unwrap()
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
            auth.check_resource(
                &p,
                &observation,
                &patients(&observation),
                &request("Observation/o1", "")
            )
            .unwrap_err()
            .code(),
            "scope-patient-mismatch"
        );
        let mine = json!({"resourceType": "Observation", "subject": {"reference": "Patient/p1/_history/2"}});
        assert!(auth.releases(
            &p,
            &mine,
            &patients(&mine),
            Some("Observation"),
            Access::Read
        ));
        let no_context = caller("patient/*.rs", None);
        assert_eq!(
            code(authorize(&no_context, &search)),
            "scope-patient-context-missing"
        );
    }

    fn patients(resource: &Value) -> Patients {
        assent_fhir::compartment::patients_of(
            resource,
            assent_fhir::FhirVersion::R4,
            &Default::default(),
        )
    }

    /// How many entries of `bundle` the caller may see, as the filter phase checks them.
    fn visible(
        auth: &Authorization,
        caller: &VerifiedCaller,
        bundle: &Value,
        fhir: &FhirRequest,
    ) -> usize {
        bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                let r = &e["resource"];
                auth.releases(
                    caller,
                    r,
                    &patients(r),
                    own_type(fhir),
                    entry_access(fhir, e),
                )
            })
            .count()
    }

    #[test]
    fn granular_scopes_narrow_searches_and_check_entries() {
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
        let bundle = json!({"resourceType": "Bundle", "total": 3, "entry": [
            coded("laboratory"), coded("vital-signs"),
            {"resource": {"resourceType": "Patient", "id": "p1"}, "search": {"mode": "include"}},
        ]});
        assert_eq!(visible(&auth, &lab, &bundle, &search), 1);
    }

    #[test]
    fn pages_at_the_base_are_checked_entry_by_entry() {
        let page = request::parse("GET", "", "_getpages=x&_assent_page=t").unwrap();
        let bundle = json!({"resourceType": "Bundle", "total": 2, "entry": [
            {"resource": {"resourceType": "Observation", "subject": {"reference": "Patient/p1"}}},
            {"resource": {"resourceType": "Condition", "subject": {"reference": "Patient/p1"}}},
        ]});
        let anyone = caller("user/*.rs", None);
        let auth = authorize(&anyone, &page).unwrap();
        assert!(auth.grant.is_none());
        assert_eq!(visible(&auth, &anyone, &bundle, &page), 2);
        let observations = caller("user/Observation.rs", None);
        assert_eq!(visible(&auth, &observations, &bundle, &page), 1);
    }

    #[test]
    fn the_token_patient_is_placed_by_the_one_rule() {
        let p = caller("patient/*.rs", Some("Patient/p1"));
        let auth = authorize(&p, &request("Observation", "")).unwrap();
        let enc = json!({"resourceType": "Encounter", "participant": [{"individual": {"reference": "Patient/p1"}}]});
        assert!(auth.in_token_patient(&patients(&enc)));
        let other = json!({"resourceType": "Observation", "subject": {"reference": "Patient/p10"}});
        assert!(!auth.in_token_patient(&patients(&other)));
        let group =
            json!({"resourceType": "Observation", "subject": {"reference": "Group/Patient/p1x"}});
        assert!(!auth.in_token_patient(&patients(&group)));
        let focus = json!({"resourceType": "Observation", "focus": [{"reference": "Patient/p1/_history/3"}]});
        assert!(auth.in_token_patient(&patients(&focus)));
        assert_eq!(append_pairs("a=1", &[("a".into(), "1".into())]), "a=1");
    }
}
