//! The gateway's parse phase on arbitrary requests (`proxy::request::parse`): never panics;
//! what it accepts is a FHIR REST interaction whose parts come from the path as written; the
//! query it forwards carries no paging token and no `_assent` parameter; its parameters,
//! forwarded in the gateway's one encoding (`encode_params`), read back as exactly the
//! parameters the decision saw; and a read of `Patient/{id}` names that patient.
#![no_main]

use arbitrary::Arbitrary;
use assent_fhir::FhirVersion;
use assent_fhir::compartment::{PatientRef, RequestPatients, parse_search, request_patients};
use assent_fuzz::context;
use assent_gateway::proxy::request::{self as fhir_request, PAGE_TOKEN_PARAM};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    method: u8,
    path: &'a str,
    query: &'a str,
}

const METHODS: [&str; 5] = ["GET", "HEAD", "POST", "PUT", "DELETE"];

fuzz_target!(|input: Input| {
    let method = METHODS[input.method as usize % METHODS.len()];
    let Ok(fhir) = fhir_request::parse(method, input.path, input.query) else {
        return;
    };
    assert_eq!(fhir.upstream_path, input.path);
    assert!(fhir.query.len() <= input.query.len());
    if let Some(t) = &fhir.resource_type {
        assert!(input.path.starts_with(t.as_str()), "{fhir:?}");
    }
    if let Some(id) = &fhir.id {
        assert!(input.path.contains(id.as_str()), "{fhir:?}");
    }
    assert_eq!(fhir.post_search, method == "POST");
    let params = parse_search(&fhir.query);
    for p in &params {
        assert_ne!(p.raw_name, PAGE_TOKEN_PARAM, "{fhir:?}");
        assert!(!p.raw_name.starts_with("_assent"), "{fhir:?}");
    }
    // The query as forwarded reads back as the parameters decided on.
    let forwarded = fhir_request::encode_params(&params);
    assert_eq!(parse_search(&forwarded), params, "{forwarded}");
    // And passes the same checks again, unchanged (when the encoding kept it short enough).
    if forwarded.len() <= fhir_request::MAX_QUERY_BYTES {
        let (again, token) =
            fhir_request::check_query(&forwarded).expect("the forwarded query is accepted");
        assert_eq!(token, None);
        assert_eq!(again, forwarded);
    }

    let context = context();
    for version in FhirVersion::ALL {
        let named = request_patients(
            version,
            fhir.resource_type.as_deref(),
            fhir.id.as_deref(),
            &params,
            &context,
        );
        if fhir.resource_type.as_deref() == Some("Patient")
            && let Some(id) = &fhir.id
        {
            assert!(
                matches!(&named, RequestPatients::Named(s) if s.contains(&PatientRef::Local(id.clone()))),
                "{fhir:?}: {named:?}"
            );
        }
    }
});
