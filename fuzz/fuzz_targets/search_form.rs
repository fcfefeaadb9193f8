//! `POST [type]/_search` form bodies, as the gateway reads them (the same checks as a query,
//! a paging token refused, `parse_search`), and the narrowing a granular SMART scope adds to
//! a search: never panics; the form forwarded (`encode_params`) reads back as the parameters
//! decided on; the same parameters as a GET query string and as a form body name the same
//! patients; a scope's condition, added as the gateway adds it (`encode_pairs`, then
//! `parse_search`), is exactly one parameter with the condition's name and value.
#![no_main]

use arbitrary::Arbitrary;
use assent_auth::Scopes;
use assent_fhir::FhirVersion;
use assent_fhir::compartment::{parse_search, request_patients};
use assent_fuzz::context;
use assent_gateway::proxy::request as fhir_request;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    body: &'a [u8],
    resource_type: u8,
    scope: &'a str,
}

const TYPES: [&str; 5] = ["Patient", "Observation", "Condition", "Encounter", "Task"];

fuzz_target!(|input: Input| {
    let resource_type = TYPES[input.resource_type as usize % TYPES.len()];
    let context = context();
    if let Ok(text) = std::str::from_utf8(input.body)
        && let Ok((form, None)) = fhir_request::check_query(text)
    {
        let params = parse_search(&form);
        let forwarded = fhir_request::encode_params(&params);
        assert_eq!(parse_search(&forwarded), params, "{forwarded}");
        // The same search as GET.
        let get = fhir_request::parse("GET", resource_type, &form)
            .expect("a checked form is a valid query");
        let post =
            fhir_request::parse("POST", &format!("{resource_type}/_search"), "").expect("_search");
        assert!(post.post_search && !get.post_search);
        let from_query = parse_search(&get.query);
        assert_eq!(from_query, params);
        for version in FhirVersion::ALL {
            assert_eq!(
                request_patients(version, Some(resource_type), None, &from_query, &context),
                request_patients(version, Some(resource_type), None, &params, &context),
            );
        }
    }
    let (scopes, _) = Scopes::parse(input.scope);
    for scope in scopes.resource_scopes() {
        for condition in &scope.conditions {
            let (name, value) = condition.to_query_pair();
            let added = parse_search(&assent_fhir::query::encode_pairs([(
                name.as_str(),
                value.as_str(),
            )]));
            assert_eq!(added.len(), 1, "{condition:?} → {added:?}");
            assert_eq!(
                (added[0].raw_name.as_str(), added[0].value.as_str()),
                (name.as_str(), value.as_str())
            );
        }
    }
});
