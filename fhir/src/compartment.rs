//! Whose data is this: THE rule. For a resource in a given FHIR version, the set of patients
//! it belongs to; for a search, the patients its parameters name.
//!
//! Consent, scopes, receipts and disclosures all ask this module; nothing else answers the
//! question. The rule is the Patient CompartmentDefinition of each version (as data, see
//! `compartment/data.rs` for where it came from) plus a walk of every Reference in the
//! resource: relative, absolute under a known base, versioned, `urn:uuid:` inside a Bundle,
//! contained, identifier-only (placed through the site's patient identifier systems), and the
//! resources inside Bundles, `Parameters` and other containers.
//!
//! A reference to a patient the rule cannot place (an absolute URL under an unknown base, an
//! identifier of an unknown system on an element that may refer to a Patient, a contained
//! Patient without such an identifier) makes the resource belong to an *unknown* patient.
//! Callers decide an unknown patient as a patient whose consents cannot be read: denied.
//!
//! Leaves out: consent (what a patient permits), and resolving an identifier to a site-local
//! id (that needs the site: the gateway does it and asks again).

use std::collections::BTreeSet;

use serde_json::Value;

use crate::FhirVersion;

mod data;
mod search;

pub use search::{RequestPatients, SearchParam, parse_search, request_patients};

/// Where references in one site's answers may point, as the caller knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReferenceContext {
    /// Base URLs (without trailing slash) under which `Patient/{id}` is a patient of the site
    /// answering: its upstream base, the gateway's public base for the site.
    pub local_bases: Vec<String>,
    /// Base URLs of other known sites (without trailing slash), with their site ids.
    pub other_sites: Vec<(String, String)>,
    /// Identifier systems that identify a patient at the site answering.
    pub patient_identifier_systems: Vec<String>,
}

/// A patient a resource or request belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PatientRef {
    /// `Patient/{id}` of the site answering.
    Local(String),
    /// `Patient/{id}` of another known site.
    Site { site: String, id: String },
    /// A patient named by an identifier of one of the site's patient identifier systems;
    /// the gateway resolves it to a [`PatientRef::Local`].
    Identifier { system: String, value: String },
}

/// The patients a resource belongs to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patients {
    /// Every patient the rule placed.
    pub known: BTreeSet<PatientRef>,
    /// How many references to a patient could not be placed (counts only: never which).
    pub unknown: usize,
}

impl Patients {
    /// Whether the resource is a patient's data at all.
    pub fn is_patient_data(&self) -> bool {
        !self.known.is_empty() || self.unknown > 0
    }

    /// Whether every patient it belongs to is placed.
    pub fn all_known(&self) -> bool {
        self.unknown == 0
    }

    /// The site-local patient ids placed (`Local`), in order.
    pub fn local_ids(&self) -> impl Iterator<Item = &str> {
        self.known.iter().filter_map(|p| match p {
            PatientRef::Local(id) => Some(id.as_str()),
            _ => None,
        })
    }

    fn add(&mut self, p: PatientRef) {
        self.known.insert(p);
    }
}

/// The patients `resource` (of FHIR `version`) belongs to, under `context`.
pub fn patients_of(resource: &Value, version: FhirVersion, context: &ReferenceContext) -> Patients {
    let mut out = Patients::default();
    let mut walker = Walker {
        version,
        context,
        out: &mut out,
        full_urls: Vec::new(),
    };
    walker.resource(resource, Place::Root);
    out
}

/// Whether a resource of `resource_type` can belong to a patient at all in `version`: a
/// Patient, or a type of the Patient compartment.
pub fn in_patient_compartment(version: FhirVersion, resource_type: &str) -> bool {
    resource_type == "Patient" || !data::patient_params(version, resource_type).is_empty()
}

/// The search parameters of `resource_type` that put it in the Patient compartment in
/// `version` (`Observation` → `subject`, `performer`).
pub fn patient_params(version: FhirVersion, resource_type: &str) -> &'static [&'static str] {
    data::patient_params(version, resource_type)
}

/// Where a resource sits in the one being walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// The resource asked about, or an entry of a Bundle, or a `Parameters` resource: a
    /// resource with its own identity at the site.
    Root,
    /// `contained`: its id is local to its container.
    Contained,
}

struct Walker<'a> {
    version: FhirVersion,
    context: &'a ReferenceContext,
    out: &'a mut Patients,
    /// `Bundle.entry.fullUrl`s of the Bundles being walked (for `urn:uuid:` references).
    full_urls: Vec<(String, Option<PatientRef>)>,
}

impl Walker<'_> {
    fn resource(&mut self, resource: &Value, place: Place) {
        let Some(object) = resource.as_object() else {
            return;
        };
        let resource_type = object
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if resource_type == "Patient" {
            self.patient_resource(resource, place);
        }
        if resource_type == "Bundle" {
            self.bundle_full_urls(resource);
        }
        for (name, value) in object {
            if name == "resourceType" {
                continue;
            }
            let path = format!("{resource_type}.{name}");
            self.element(value, &path, resource_type);
        }
    }

    fn patient_resource(&mut self, patient: &Value, place: Place) {
        let id = patient.get("id").and_then(Value::as_str);
        match (place, id) {
            (Place::Root, Some(id)) if !id.is_empty() => {
                self.out.add(PatientRef::Local(id.to_owned()))
            }
            _ => match self.identifier_of_patient(patient) {
                Some(p) => self.out.add(p),
                None => self.out.unknown += 1,
            },
        }
    }

    /// A Patient without an identity at the site: placed by an identifier of a known system.
    fn identifier_of_patient(&self, patient: &Value) -> Option<PatientRef> {
        patient
            .get("identifier")?
            .as_array()?
            .iter()
            .find_map(|i| self.known_identifier(i))
    }

    fn known_identifier(&self, identifier: &Value) -> Option<PatientRef> {
        let system = identifier.get("system")?.as_str()?;
        let value = identifier.get("value")?.as_str()?;
        self.context
            .patient_identifier_systems
            .iter()
            .any(|s| s == system)
            .then(|| PatientRef::Identifier {
                system: system.to_owned(),
                value: value.to_owned(),
            })
    }

    fn bundle_full_urls(&mut self, bundle: &Value) {
        for entry in bundle
            .get("entry")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(full_url) = entry.get("fullUrl").and_then(Value::as_str) else {
                continue;
            };
            let patient = entry
                .get("resource")
                .filter(|r| r.get("resourceType").and_then(Value::as_str) == Some("Patient"))
                .and_then(|r| r.get("id"))
                .and_then(Value::as_str)
                .map(|id| PatientRef::Local(id.to_owned()));
            self.full_urls.push((full_url.to_owned(), patient));
        }
    }

    fn element(&mut self, value: &Value, path: &str, resource_type: &str) {
        match value {
            Value::Array(items) => {
                for item in items {
                    self.element(item, path, resource_type);
                }
            }
            Value::Object(object) => {
                if object.contains_key("resourceType") {
                    let place = if path.ends_with(".contained") {
                        Place::Contained
                    } else {
                        Place::Root
                    };
                    self.resource(value, place);
                    return;
                }
                if is_reference(object) {
                    self.reference(value, path, resource_type);
                }
                for (name, inner) in object {
                    if matches!(inner, Value::Object(_) | Value::Array(_)) {
                        self.element(inner, &format!("{path}.{name}"), resource_type);
                    }
                }
            }
            _ => {}
        }
    }

    fn reference(&mut self, reference: &Value, path: &str, resource_type: &str) {
        let may_be_patient = data::may_refer_to_patient(self.version, resource_type, path)
            || reference
                .get("type")
                .and_then(Value::as_str)
                .is_some_and(is_patient_type);
        match reference.get("reference").and_then(Value::as_str) {
            Some(text) => match self.place(text) {
                Placed::Patient(p) => self.out.add(p),
                Placed::NotPatient => {}
                Placed::Unplaced if may_be_patient => self.out.unknown += 1,
                Placed::Unplaced => {}
            },
            None => {
                // An identifier-only (or display-only) reference.
                if !may_be_patient {
                    return;
                }
                match reference
                    .get("identifier")
                    .and_then(|i| self.known_identifier(i))
                {
                    Some(p) => self.out.add(p),
                    None => self.out.unknown += 1,
                }
            }
        }
    }

    /// Where a literal reference points.
    fn place(&self, text: &str) -> Placed {
        if text.starts_with('#') {
            // A contained resource: walked on its own.
            return Placed::NotPatient;
        }
        if let Some((_, patient)) = self.full_urls.iter().find(|(u, _)| u == text) {
            return match patient {
                Some(p) => Placed::Patient(p.clone()),
                None => Placed::NotPatient,
            };
        }
        if text.starts_with("urn:") {
            return Placed::Unplaced;
        }
        let without_history = match text.find("/_history/") {
            Some(at) => &text[..at],
            None => text,
        };
        let (base, type_and_id) = match split_type_and_id(without_history) {
            Some(split) => split,
            None => return Placed::Unplaced,
        };
        let (resource_type, id) = type_and_id;
        if base.is_empty() {
            return if resource_type == "Patient" {
                Placed::Patient(PatientRef::Local(id.to_owned()))
            } else {
                Placed::NotPatient
            };
        }
        if resource_type != "Patient" {
            return Placed::NotPatient;
        }
        let base = base.trim_end_matches('/');
        if self.context.local_bases.iter().any(|b| b == base) {
            return Placed::Patient(PatientRef::Local(id.to_owned()));
        }
        if let Some((_, site)) = self.context.other_sites.iter().find(|(b, _)| b == base) {
            return Placed::Patient(PatientRef::Site {
                site: site.clone(),
                id: id.to_owned(),
            });
        }
        Placed::Unplaced
    }
}

enum Placed {
    Patient(PatientRef),
    NotPatient,
    Unplaced,
}

/// `[base/]Type/id` → (`base/` or empty, (`Type`, `id`)).
fn split_type_and_id(text: &str) -> Option<(&str, (&str, &str))> {
    let text = text.trim_end_matches('/');
    let (head, id) = text.rsplit_once('/')?;
    let (base, resource_type) = match head.rsplit_once('/') {
        Some((base, t)) => (&text[..base.len() + 1], t),
        None => ("", head),
    };
    let type_ok = resource_type
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_uppercase())
        && resource_type.chars().all(|c| c.is_ascii_alphabetic());
    let id_ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !type_ok || !id_ok {
        return None;
    }
    if !base.is_empty() && !base.contains("://") {
        // `a/b/Type/id` that is not absolute: not a FHIR reference form.
        return None;
    }
    Some((base, (resource_type, id)))
}

fn is_patient_type(t: &str) -> bool {
    t == "Patient" || t == "http://hl7.org/fhir/StructureDefinition/Patient"
}

/// Whether an object is shaped like a FHIR Reference: `reference`, or `identifier` (an
/// object) without anything a Reference does not have.
fn is_reference(object: &serde_json::Map<String, Value>) -> bool {
    if object.get("reference").is_some_and(Value::is_string) {
        return true;
    }
    object.get("identifier").is_some_and(Value::is_object)
        && object.keys().all(|k| {
            matches!(
                k.as_str(),
                "identifier" | "type" | "display" | "extension" | "id"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn context() -> ReferenceContext {
        ReferenceContext {
            local_bases: vec![
                "http://upstream.test/fhir".into(),
                "https://gw.test/fhir/st-mary".into(),
            ],
            other_sites: vec![("https://gw.test/fhir/north".into(), "north".into())],
            patient_identifier_systems: vec!["urn:mrn".into()],
        }
    }

    fn of(resource: Value) -> Patients {
        patients_of(&resource, FhirVersion::R4, &context())
    }

    fn local(ids: &[&str]) -> BTreeSet<PatientRef> {
        ids.iter().map(|i| PatientRef::Local((*i).into())).collect()
    }

    #[test]
    fn references_in_every_form_are_placed() {
        let p = of(json!({"resourceType": "Observation",
            "subject": {"reference": "Patient/a"},
            "focus": [{"reference": "http://upstream.test/fhir/Patient/b/_history/2"}],
            "performer": [{"reference": "https://gw.test/fhir/st-mary/Patient/c"}],
            "derivedFrom": [{"reference": "Observation/o2"}]}));
        assert_eq!(p.known, local(&["a", "b", "c"]));
        assert_eq!(p.unknown, 0);
        let p = of(
            json!({"resourceType": "Task", "for": {"reference": "https://gw.test/fhir/north/Patient/z"}}),
        );
        assert_eq!(
            p.known.into_iter().collect::<Vec<_>>(),
            [PatientRef::Site {
                site: "north".into(),
                id: "z".into()
            }]
        );
    }

    #[test]
    fn what_cannot_be_placed_is_unknown() {
        let p = of(
            json!({"resourceType": "Observation", "subject": {"reference": "https://elsewhere.test/Patient/x"}}),
        );
        assert!(p.known.is_empty());
        assert_eq!(p.unknown, 1);
        let p = of(
            json!({"resourceType": "Observation", "subject": {"identifier": {"system": "urn:other", "value": "1"}}}),
        );
        assert_eq!(p.unknown, 1);
        let p = of(
            json!({"resourceType": "Observation", "subject": {"identifier": {"system": "urn:mrn", "value": "1"}}}),
        );
        assert_eq!(
            p.known.into_iter().collect::<Vec<_>>(),
            [PatientRef::Identifier {
                system: "urn:mrn".into(),
                value: "1".into()
            }]
        );
        let p = of(json!({"resourceType": "Observation",
            "contained": [{"resourceType": "Patient", "id": "cp"}],
            "subject": {"reference": "#cp"}}));
        assert_eq!(p.unknown, 1);
    }

    #[test]
    fn bundles_and_patients_are_walked() {
        let p = of(
            json!({"resourceType": "Bundle", "type": "document", "entry": [
                {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "id": "a"}},
                {"fullUrl": "urn:uuid:2", "resource": {"resourceType": "Composition", "subject": {"reference": "urn:uuid:1"}}},
                {"resource": {"resourceType": "Condition", "subject": {"reference": "Patient/b"}}},
            ]}),
        );
        assert_eq!(p.known, local(&["a", "b"]));
        let p = of(
            json!({"resourceType": "Patient", "id": "a", "link": [{"other": {"reference": "Patient/b"}}]}),
        );
        assert_eq!(p.known, local(&["a", "b"]));
        let p = of(json!({"resourceType": "Practitioner", "id": "d"}));
        assert!(!p.is_patient_data());
    }
}
