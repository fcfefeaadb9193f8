//! The Patient compartment as data, per FHIR version.
//!
//! PLACEHOLDER: a hand-written subset of the R4 Patient CompartmentDefinition, used for every
//! version until the generated tables (from the official CompartmentDefinition and
//! SearchParameter resources of each version) replace it.

use crate::FhirVersion;

/// (resource type, compartment search parameters, element paths they read).
const R4_SUBSET: &[(&str, &[&str], &[&str])] = &[
    (
        "AllergyIntolerance",
        &["patient", "recorder", "asserter"],
        &[
            "AllergyIntolerance.patient",
            "AllergyIntolerance.recorder",
            "AllergyIntolerance.asserter",
        ],
    ),
    (
        "Condition",
        &["patient", "asserter"],
        &["Condition.subject", "Condition.asserter"],
    ),
    ("Encounter", &["patient"], &["Encounter.subject"]),
    (
        "MedicationRequest",
        &["subject"],
        &["MedicationRequest.subject"],
    ),
    (
        "MedicationStatement",
        &["subject"],
        &["MedicationStatement.subject"],
    ),
    (
        "Observation",
        &["subject", "performer"],
        &["Observation.subject", "Observation.performer"],
    ),
    (
        "Procedure",
        &["patient", "performer"],
        &["Procedure.subject", "Procedure.performer.actor"],
    ),
    (
        "Task",
        &["owner", "requester"],
        &["Task.for", "Task.owner", "Task.requester"],
    ),
];

/// The search parameters listed for `resource_type` by the Patient CompartmentDefinition.
pub(super) fn patient_params(
    _version: FhirVersion,
    resource_type: &str,
) -> &'static [&'static str] {
    R4_SUBSET
        .iter()
        .find(|(t, _, _)| *t == resource_type)
        .map(|(_, params, _)| *params)
        .unwrap_or(&[])
}

/// Every search parameter of `resource_type` whose value is a reference that may be a
/// Patient (the compartment's parameters, and others such as `Observation.patient`).
pub(super) fn patient_search_params(
    version: FhirVersion,
    resource_type: &str,
) -> Vec<&'static str> {
    let mut params = patient_params(version, resource_type).to_vec();
    if !params.is_empty() && !params.contains(&"patient") {
        params.push("patient");
    }
    if !params.is_empty() && !params.contains(&"subject") {
        params.push("subject");
    }
    params
}

/// Whether the element at `path` (`Observation.subject`, without array indices) may refer
/// to a Patient.
pub(super) fn may_refer_to_patient(_version: FhirVersion, resource_type: &str, path: &str) -> bool {
    R4_SUBSET
        .iter()
        .find(|(t, _, _)| *t == resource_type)
        .is_some_and(|(_, _, paths)| paths.contains(&path))
}
