//! The whose-data rule on arbitrary JSON: never panics, answers the same twice, and every
//! literal Patient reference anywhere in the value is placed (or, for a patient the rule
//! cannot place, counted unknown).
#![no_main]

use assent_fhir::FhirVersion;
use assent_fhir::compartment::patients_of;
use assent_fuzz::{check_every_reference_placed, context};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let context = context();
    for version in FhirVersion::ALL {
        let found = patients_of(&value, version, &context);
        assert_eq!(found, patients_of(&value, version, &context));
        check_every_reference_placed(&value, version, &found);
    }
});
