//! The request side of the whose-data rule on arbitrary queries: `parse_search` (query
//! strings and `_search` forms alike) and `request_patients` never panic; a parameter's name
//! is its code, modifier and chain put back together; the parameters read back the same
//! from their canonical encoding; the answer does not depend on the order of the parameters
//! (they combine with AND); every patient named is taken from the query itself.
#![no_main]

use arbitrary::Arbitrary;
use assent_fhir::FhirVersion;
use assent_fhir::compartment::{PatientRef, RequestPatients, parse_search, request_patients};
use assent_fuzz::context;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    version: u8,
    resource_type: u8,
    id: Option<&'a str>,
    query: &'a str,
}

const TYPES: [&str; 8] = [
    "Patient",
    "Observation",
    "Condition",
    "Encounter",
    "Group",
    "Task",
    "Bundle",
    "Xyz",
];

fuzz_target!(|input: Input| {
    let params = parse_search(input.query);
    for p in &params {
        let mut name = p.code.clone();
        if let Some(m) = &p.modifier {
            name = format!("{name}:{m}");
        }
        if let Some(c) = &p.chain {
            name = format!("{name}.{c}");
        }
        assert_eq!(name, p.raw_name, "{p:?}");
        assert!(!p.raw_name.is_empty());
        let _ = p.values();
    }
    let encoded = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(
            params
                .iter()
                .map(|p| (p.raw_name.as_str(), p.value.as_str())),
        )
        .finish();
    assert_eq!(parse_search(&encoded), params, "{encoded}");

    let version = FhirVersion::ALL[input.version as usize % 4];
    let resource_type = TYPES.get(input.resource_type as usize % 9).copied();
    let context = context();
    let answer = request_patients(version, resource_type, input.id, &params, &context);
    let mut reversed = params.clone();
    reversed.reverse();
    assert_eq!(
        answer,
        request_patients(version, resource_type, input.id, &reversed, &context),
        "the order of parameters changed the answer: {params:?}"
    );
    if let RequestPatients::Named(set) = &answer {
        assert!(!set.is_empty());
        let said: String = params
            .iter()
            .flat_map(|p| p.values())
            .collect::<Vec<_>>()
            .join("\n")
            + input.id.unwrap_or_default();
        for p in set {
            let (PatientRef::Local(text)
            | PatientRef::Site { id: text, .. }
            | PatientRef::Identifier { value: text, .. }) = p;
            assert!(
                said.contains(text.as_str()),
                "{p:?} is not in the request: {params:?}"
            );
        }
    }
});
