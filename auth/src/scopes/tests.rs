//! Unit tests of scope parsing and enforcement: every rule, v1 and v2, granular narrowing and
//! patient confinement. Each case goes through `check` or `grant`.

use assent_fhir::Interaction;
use serde_json::json;

use super::*;

const LAB: &str = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory";
const CATEGORY_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/observation-category";

fn scopes(text: &str) -> Scopes {
    let (scopes, warnings) = Scopes::parse(text);
    assert!(
        warnings.is_empty(),
        "unexpected warnings for {text:?}: {warnings:?}"
    );
    scopes
}

/// Whether `scope_text` allows `interaction` on `resource_type`.
fn check(scope_text: &str, interaction: Interaction, resource_type: &str) -> bool {
    scopes(scope_text)
        .authorize(interaction, resource_type)
        .is_ok()
}

fn grant(scope_text: &str, interaction: Interaction, resource_type: &str) -> Grant {
    scopes(scope_text)
        .authorize(interaction, resource_type)
        .expect("granted")
}

fn warned(text: &str) -> Vec<&'static str> {
    let (scopes, warnings) = Scopes::parse(text);
    assert!(scopes.resource_scopes().is_empty(), "{text:?} was kept");
    warnings.into_iter().map(|w| w.reason).collect()
}

fn observation(category_code: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": category_code}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
        "status": "final"
    })
}

#[test]
fn v1_read_covers_read_vread_search_history() {
    for i in [
        Interaction::Read,
        Interaction::Vread,
        Interaction::Search,
        Interaction::History,
    ] {
        assert!(check("patient/Observation.read", i, "Observation"), "{i}");
    }
    assert!(!check(
        "patient/Observation.read",
        Interaction::Read,
        "Condition"
    ));
    let s = scopes("user/Observation.read");
    assert!(s.authorize_access(Access::Update, "Observation").is_err());
}

#[test]
fn v1_write_covers_create_update_delete_not_read() {
    let s = scopes("user/Observation.write");
    for a in [Access::Create, Access::Update, Access::Delete] {
        assert!(s.authorize_access(a, "Observation").is_ok(), "{a:?}");
    }
    assert!(s.authorize(Interaction::Read, "Observation").is_err());
    assert!(s.authorize(Interaction::Search, "Observation").is_err());
}

#[test]
fn v1_star_star_covers_everything() {
    let s = scopes("user/*.*");
    for a in [
        Access::Read,
        Access::Vread,
        Access::HistoryInstance,
        Access::HistoryType,
        Access::Search,
        Access::Create,
        Access::Update,
        Access::Delete,
    ] {
        assert!(s.authorize_access(a, "Patient").is_ok(), "{a:?}");
    }
    assert!(grant("user/*.*", Interaction::Search, "Encounter").is_unrestricted());
}

#[test]
fn v2_r_covers_read_vread_instance_history_only() {
    let s = scopes("patient/Observation.r");
    for a in [Access::Read, Access::Vread, Access::HistoryInstance] {
        assert!(s.authorize_access(a, "Observation").is_ok(), "{a:?}");
    }
    for a in [Access::Search, Access::HistoryType, Access::Create] {
        assert!(s.authorize_access(a, "Observation").is_err(), "{a:?}");
    }
    assert!(!check(
        "patient/Observation.r",
        Interaction::Search,
        "Observation"
    ));
}

#[test]
fn v2_s_covers_search_and_type_history_only() {
    let s = scopes("user/Observation.s");
    for a in [Access::Search, Access::HistoryType] {
        assert!(s.authorize_access(a, "Observation").is_ok(), "{a:?}");
    }
    for a in [Access::Read, Access::Vread, Access::HistoryInstance] {
        assert!(s.authorize_access(a, "Observation").is_err(), "{a:?}");
    }
}

#[test]
fn history_and_operation_interactions_need_r_and_s_in_one_scope() {
    assert!(check(
        "user/Observation.rs",
        Interaction::History,
        "Observation"
    ));
    assert!(!check(
        "user/Observation.r",
        Interaction::History,
        "Observation"
    ));
    assert!(!check(
        "user/Observation.r user/Observation.s",
        Interaction::History,
        "Observation"
    ));
    assert!(check("patient/*.rs", Interaction::Operation, "Patient"));
    assert!(!check("patient/*.s", Interaction::Operation, "Patient"));
}

#[test]
fn capabilities_need_no_scope() {
    assert!(grant("", Interaction::Capabilities, "").is_unrestricted());
}

#[test]
fn v2_cud_letters() {
    let s = scopes("system/Patient.cruds");
    assert!(s.authorize_access(Access::Delete, "Patient").is_ok());
    let s = scopes("system/Patient.cu");
    assert!(s.authorize_access(Access::Create, "Patient").is_ok());
    assert!(s.authorize_access(Access::Update, "Patient").is_ok());
    assert!(s.authorize_access(Access::Delete, "Patient").is_err());
    assert!(s.authorize_access(Access::Read, "Patient").is_err());
}

#[test]
fn wildcard_type_covers_every_type() {
    assert!(check("system/*.rs", Interaction::Read, "Observation"));
    assert!(check(
        "system/*.rs",
        Interaction::Search,
        "AllergyIntolerance"
    ));
}

#[test]
fn parses_contexts_types_and_letters() {
    let s = scopes("patient/Observation.rs user/*.cruds system/Patient.s");
    let r = s.resource_scopes();
    assert_eq!(r.len(), 3);
    assert_eq!(r[0].context, ScopeContext::Patient);
    assert_eq!(r[0].resource_type.as_deref(), Some("Observation"));
    assert_eq!(r[0].permissions.letters(), "rs");
    assert_eq!(r[1].context, ScopeContext::User);
    assert_eq!(r[1].resource_type, None);
    assert_eq!(r[1].permissions, Permissions::ALL);
    assert_eq!(r[2].context, ScopeContext::System);
    assert_eq!(r[2].permissions, Permissions::SEARCH);
}

#[test]
fn known_openid_and_launch_scopes_are_kept_without_warning() {
    let s = scopes("openid fhirUser launch launch/patient offline_access profile");
    assert_eq!(s.other_scopes().len(), 6);
    assert!(s.resource_scopes().is_empty());
}

#[test]
fn unparseable_scopes_are_dropped_and_reported_never_widened() {
    for bad in [
        "patient/Observation.sr",                         // letters out of order
        "patient/Observation.rr",                         // repeated letter
        "patient/Observation.x",                          // unknown letter
        "patient/Observation.",                           // no permissions
        "patient/Observation",                            // no '.'
        "patient/observation.rs",                         // not a type name
        "patient/Obs-ervation.rs",                        // not a type name
        "doctor/Observation.rs",                          // unknown context
        "Observation.rs",                                 // no context
        "patient/Observation.READ",                       // v1 is lower case
        "patient/Observation.read?category=laboratory",   // granular is v2 only
        "patient/*.rs?category=laboratory",               // granular needs a type
        "patient/Observation.rs?",                        // empty query
        "patient/Observation.rs?category",                // no '='
        "patient/Observation.rs?category=",               // empty value
        "patient/Observation.rs?category:not=laboratory", // modifier
        "patient/Observation.rs?_tag=x",                  // underscore parameter
        "patient/Observation.rs?category=a|b|c",          // two bars
        "patient/Observation.rs?category=|",              // nothing at all
        "patient/Observation.rs?category=a\\,b",          // escapes
        "something-else",
    ] {
        let reasons = warned(bad);
        assert_eq!(reasons.len(), 1, "{bad:?}");
    }
    // A bad scope next to good ones drops only itself.
    let (s, w) = Scopes::parse("patient/Observation.rs patient/Condition.sr");
    assert_eq!(s.resource_scopes().len(), 1);
    assert_eq!(w[0].scope, "patient/Condition.sr");
    assert!(s.authorize(Interaction::Read, "Condition").is_err());
}

#[test]
fn granular_scope_parses_token_forms() {
    let s = scopes(&format!(
        "patient/Observation.rs?category={LAB} user/Condition.rs?category=problem-list-item,|x,http://s|"
    ));
    let r = s.resource_scopes();
    assert_eq!(
        r[0].conditions,
        vec![SearchCondition {
            parameter: "category".into(),
            values: vec![TokenValue::SystemCode {
                system: CATEGORY_SYSTEM.into(),
                code: "laboratory".into()
            }],
        }]
    );
    assert_eq!(
        r[1].conditions[0].values,
        vec![
            TokenValue::Code("problem-list-item".into()),
            TokenValue::NoSystem("x".into()),
            TokenValue::System("http://s".into()),
        ]
    );
    // Percent-encoded values decode.
    let s = scopes("patient/Observation.rs?category=http%3A%2F%2Fs%7Ccode");
    assert_eq!(
        s.resource_scopes()[0].conditions[0].values,
        vec![TokenValue::SystemCode {
            system: "http://s".into(),
            code: "code".into()
        }]
    );
}

#[test]
fn granular_grant_narrows_search_and_filters_results() {
    let g = grant(
        &format!("user/Observation.rs?category={LAB}"),
        Interaction::Search,
        "Observation",
    );
    assert!(!g.is_unrestricted());
    assert!(!g.patient_confined());
    assert!(g.needs_result_filtering());
    let narrowing = g.search_narrowing().unwrap();
    assert_eq!(
        narrowing[0].to_query_pair(),
        ("category".into(), LAB.into())
    );
    assert!(g.permits(&observation("laboratory"), false));
    assert!(!g.permits(&observation("vital-signs"), false));
    assert!(!g.permits(&json!({"resourceType": "Observation"}), false));
}

#[test]
fn granular_and_plain_scopes_union_to_the_plain_one() {
    let g = grant(
        &format!("user/Observation.rs?category={LAB} user/Observation.rs"),
        Interaction::Search,
        "Observation",
    );
    assert!(g.is_unrestricted());
    assert_eq!(g.rules().len(), 1);
}

#[test]
fn two_granular_scopes_need_result_filtering() {
    let g = grant(
        &format!("user/Observation.rs?category={LAB} user/Observation.rs?category=vital-signs"),
        Interaction::Search,
        "Observation",
    );
    assert_eq!(g.rules().len(), 2);
    assert_eq!(g.search_narrowing(), None);
    assert!(g.permits(&observation("laboratory"), false));
    assert!(g.permits(&observation("vital-signs"), false));
    assert!(!g.permits(&observation("social-history"), false));
}

#[test]
fn several_conditions_in_one_scope_must_all_hold() {
    let g = grant(
        "user/Observation.rs?category=laboratory&code=http://loinc.org|718-7",
        Interaction::Search,
        "Observation",
    );
    assert!(g.permits(&observation("laboratory"), false));
    let mut other_code = observation("laboratory");
    other_code["code"]["coding"][0]["code"] = json!("2345-7");
    assert!(!g.permits(&other_code, false));
}

#[test]
fn token_matching_on_coding_code_and_identifier() {
    let cond = |v: &str| {
        let (s, w) = Scopes::parse(&format!("user/Condition.rs?{v}"));
        assert!(w.is_empty());
        s.resource_scopes()[0].conditions[0].clone()
    };
    let condition = json!({
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": "http://c", "code": "active"}]},
        "category": [{"coding": [{"code": "no-system"}]}],
        "identifier": [{"system": "urn:ids", "value": "42"}],
        "severity": {"coding": [{"system": "http://sev", "code": "mild"}]},
    });
    assert!(cond("clinical-status=active").is_satisfied_by(&condition));
    assert!(cond("clinical-status=http://c|active").is_satisfied_by(&condition));
    assert!(cond("clinical-status=http://c|").is_satisfied_by(&condition));
    assert!(!cond("clinical-status=http://other|active").is_satisfied_by(&condition));
    assert!(!cond("clinical-status=|active").is_satisfied_by(&condition));
    assert!(cond("category=|no-system").is_satisfied_by(&condition));
    assert!(cond("identifier=urn:ids|42").is_satisfied_by(&condition));
    assert!(!cond("verification-status=confirmed").is_satisfied_by(&condition));
    // A code primitive matches a bare code only.
    let obs = observation("laboratory");
    assert!(cond("status=final").is_satisfied_by(&obs));
    assert!(!cond("status=http://hl7.org/fhir/observation-status|final").is_satisfied_by(&obs));
}

#[test]
fn patient_scopes_are_confined() {
    let g = grant("patient/Observation.rs", Interaction::Search, "Observation");
    assert!(g.patient_confined());
    assert!(!g.is_unrestricted());
    assert!(g.permits(&observation("laboratory"), true));
    assert!(!g.permits(&observation("laboratory"), false));
    assert_eq!(g.search_narrowing(), Some(&[][..]));
}

#[test]
fn user_scope_lifts_patient_confinement() {
    let g = grant(
        "patient/Observation.rs user/Observation.rs",
        Interaction::Read,
        "Observation",
    );
    assert!(!g.patient_confined());
    assert!(g.is_unrestricted());
}

#[test]
fn mixed_confinement_and_granularity_keeps_both_rules() {
    // All of the patient's observations, or laboratory ones of anyone.
    let g = grant(
        &format!("patient/Observation.rs user/Observation.rs?category={LAB}"),
        Interaction::Search,
        "Observation",
    );
    assert_eq!(g.rules().len(), 2);
    assert!(!g.patient_confined());
    assert_eq!(g.search_narrowing(), None);
    assert!(g.permits(&observation("vital-signs"), true));
    assert!(g.permits(&observation("laboratory"), false));
    assert!(!g.permits(&observation("vital-signs"), false));
}

#[test]
fn confined_plain_scope_subsumes_confined_granular_one() {
    let g = grant(
        &format!("patient/Observation.rs?category={LAB} patient/Observation.rs"),
        Interaction::Search,
        "Observation",
    );
    assert_eq!(
        g.rules(),
        &[GrantRule {
            patient_confined: true,
            conditions: vec![]
        }]
    );
}

#[test]
fn without_patient_rules_drops_confined_rules() {
    let g = grant("patient/Observation.rs", Interaction::Read, "Observation");
    assert_eq!(g.without_patient_rules(), None);
    let g = grant(
        &format!("patient/Observation.rs user/Observation.rs?category={LAB}"),
        Interaction::Read,
        "Observation",
    );
    let g = g.without_patient_rules().unwrap();
    assert_eq!(g.rules().len(), 1);
    assert!(!g.rules()[0].patient_confined);
}

#[test]
fn insufficient_scope_names_what_was_needed() {
    let err = scopes("patient/Condition.rs")
        .authorize(Interaction::Search, "Observation")
        .unwrap_err();
    assert_eq!(err.code(), "scope-insufficient");
    assert_eq!(
        err,
        AuthError::InsufficientScope {
            needed: "patient/Observation.s user/Observation.s system/Observation.s".into()
        }
    );
    assert!(
        Scopes::default()
            .authorize(Interaction::Read, "Patient")
            .is_err()
    );
}
