//! Inputs the cargo-fuzz targets (`fuzz/`) found to break the whose-data rule, kept as
//! regression tests: each is the minimised input, written out as the resource it built.
//!
//! Leaves out the fuzz targets themselves (their own workspace, run by `scripts/fuzz.sh`).

use assent_fhir::FhirVersion;
use assent_fhir::compartment::{PatientRef, ReferenceContext, patients_of};
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

/// `compartment_structured`: a Bundle entry whose `fullUrl` is `Patient/x0` but holds no
/// Patient made the reference `Patient/x0` of another entry resolve to it, and the patient
/// was lost (neither placed nor counted unknown): a document could carry a patient's data as
/// no one's.
#[test]
fn a_bundle_entry_cannot_hide_a_patient_reference() {
    let bundle = json!({"resourceType": "Bundle", "entry": [
        {"fullUrl": "Patient/x0"},
        {"fullUrl": "urn:uuid:11", "resource": {"resourceType": "Observation",
            "patient": {"reference": "Practitioner/x7", "type": "Practitioner"},
            "subject": {"reference": "Patient/x0"}}},
    ]});
    let lying = json!({"resourceType": "Bundle", "entry": [
        {"fullUrl": "http://upstream.test/fhir/Patient/x0",
         "resource": {"resourceType": "Observation", "id": "o1"}},
        {"resource": {"resourceType": "Condition",
            "subject": {"reference": "http://upstream.test/fhir/Patient/x0"}}},
    ]});
    for version in FhirVersion::ALL {
        for resource in [&bundle, &lying] {
            let found = patients_of(resource, version, &context());
            assert!(
                found.known.contains(&PatientRef::Local("x0".into())),
                "{version:?} {resource}: {found:?}"
            );
        }
    }
}

/// `compartment_structured` (on the generated tables): a Reference-shaped object where the
/// tables expect no Reference (directly under `extension`, a backbone element holding a
/// `reference` itself, a list in a list) was skipped, and nothing was counted unknown, so a
/// resource whose patient reference sat there was released on fewer patients' consents than
/// it names (or as no patient's data). An upstream can send such JSON; any object with a
/// `reference` is a Reference to the rule, wherever it sits (or, if the rule will not place
/// it, an unknown patient).
#[test]

fn a_reference_where_the_tables_expect_none_is_placed() {
    for resource in [
        json!({"resourceType": "Observation", "extension": {"reference": "Patient/x0"}}),
        json!({"resourceType": "Observation", "extension": [{"reference": "Patient/x0"}]}),
        json!({"resourceType": "Observation", "modifierExtension": [{"reference": "Patient/x0"}]}),
        json!({"resourceType": "Provenance", "entity": {"reference": "Patient/x0"}}),
        json!({"resourceType": "Encounter", "participant": [{"reference": "Patient/x0"}]}),
        json!({"resourceType": "Appointment", "participant": {"reference": "Patient/x0"}}),
        json!({"resourceType": "Patient", "id": "x5", "link": [{"reference": "Patient/x0"}]}),
        json!({"resourceType": "DocumentReference", "context": [[{"reference": "Patient/x0"}]]}),
        json!({"resourceType": "Patient", "id": "x4",
            "patient": [[{"extension": {"reference": "Patient/x0", "type": "Patient"}}]]}),
    ] {
        for version in FhirVersion::ALL {
            let found = patients_of(&resource, version, &context());
            assert!(
                found.known.contains(&PatientRef::Local("x0".into())) || found.unknown > 0,
                "{version:?} {resource}: {found:?}"
            );
        }
    }
}

/// `compartment_structured` (issue 11, the bare-string variant): a `reference` string where
/// the definition's `reference` element is a Reference object
/// (`ImplementationGuide.definition.resource.reference`, `Consent.provision.actor`) was
/// skipped, and so were a `reference` string on a resource itself and an object under a
/// `resourceType` key; an identifier-only Reference directly under `modifierExtension` was
/// not read. Each names a patient the resource's release must be decided on.
#[test]
fn a_patient_reference_in_a_malformed_place_is_still_placed() {
    let x0 = PatientRef::Local("x0".into());
    let mrn = PatientRef::Identifier {
        system: "urn:mrn".into(),
        value: "x0".into(),
    };
    for (resource, versions, want) in [
        (
            json!({"resourceType": "ImplementationGuide", "definition":
                [{"resource": [{"reference": "Patient/x0"}]}]}),
            &FhirVersion::ALL[..],
            &x0,
        ),
        (
            json!({"resourceType": "Consent", "provision": {"actor": [{"reference": "Patient/x0"}]}}),
            &FhirVersion::ALL[..],
            &x0,
        ),
        (
            json!({"resourceType": "Observation", "note": [{"resourceType": {"reference": "Patient/x0"}}]}),
            &FhirVersion::ALL[..],
            &x0,
        ),
        (
            json!({"resourceType": "Condition", "evidence": [{"reference": "Patient/x0"}]}),
            &FhirVersion::ALL[..],
            &x0,
        ),
        (
            json!({"resourceType": "Observation", "reference": "Patient/x0"}),
            &FhirVersion::ALL[..],
            &x0,
        ),
        (
            json!({"resourceType": "Observation", "modifierExtension":
                {"identifier": {"system": "urn:mrn", "value": "x0"}, "type": "Patient"}}),
            &FhirVersion::ALL[..],
            &mrn,
        ),
    ] {
        for version in versions {
            let found = patients_of(&resource, *version, &context());
            assert!(
                found.known.contains(want),
                "{version:?} {resource}: {found:?}"
            );
        }
    }
    // A uri named `reference` on a resource (`DetectedIssue.reference`) is no unknown patient.
    let issue = json!({"resourceType": "DetectedIssue", "status": "final",
        "reference": "https://guidance.example.org/interactions/42"});
    assert_eq!(
        patients_of(&issue, FhirVersion::R4, &context()),
        Default::default()
    );
}
