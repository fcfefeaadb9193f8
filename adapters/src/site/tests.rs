//! Site adapter tests: identifier and code rewrites both ways, the equivalence rules,
//! unmapped codes reported, defaults, drops, profiles, extensions, references, Bundles, search
//! values, and load errors naming the line and the key. Fixtures are written here.

use super::*;
use serde_json::json;

const SITE_MRN: &str = "urn:oid:1.2.36.146.595.217.0.1";
const NETWORK_MRN: &str = "https://assent.test/sid/mrn/st-mary";
const LOCAL_LAB: &str = "http://st-mary.test/codes/lab";
const LOINC: &str = "http://loinc.org";
const LOCAL_DX: &str = "http://st-mary.test/codes/diagnosis";
const SNOMED: &str = "http://snomed.info/sct";

/// Site lab codes → LOINC (R4 `equivalence`), source = site.
fn lab_map() -> String {
    json!({
        "resourceType": "ConceptMap", "url": "https://st-mary.test/ConceptMap/lab",
        "status": "active",
        "group": [{
            "source": LOCAL_LAB, "target": LOINC,
            "element": [
                {"code": "GLU", "target": [{"code": "2345-7", "display": "Glucose [Mass/volume] in Serum or Plasma", "equivalence": "equivalent"}]},
                {"code": "HB-VEN", "target": [{"code": "718-7", "display": "Hemoglobin [Mass/volume] in Blood", "equivalence": "wider"}]},
                {"code": "K", "target": [{"code": "2823-3", "equivalence": "narrower"}]},
                {"code": "NA", "target": [{"equivalence": "unmatched"}]},
                {"code": "CREA", "target": [{"code": "2160-0", "equivalence": "inexact"}]}
            ]
        }]
    })
    .to_string()
}

/// SNOMED → site diagnosis codes (R5 `relationship`), source = network.
fn dx_map() -> String {
    json!({
        "resourceType": "ConceptMap", "url": "https://st-mary.test/ConceptMap/dx",
        "status": "active",
        "group": [{
            "source": SNOMED, "target": LOCAL_DX,
            "element": [
                {"code": "44054006", "target": [{"code": "DM2", "display": "Diabetes type 2", "relationship": "equivalent"}]},
                {"code": "38341003", "target": [{"code": "HTN-ESS", "relationship": "source-is-broader-than-target"}]},
                {"code": "73211009", "noMap": true}
            ]
        }]
    })
    .to_string()
}

const ADAPTER: &str = r#"
description = "St Mary test adapter"

[[identifier_systems]]
site = "urn:oid:1.2.36.146.595.217.0.1"
network = "https://assent.test/sid/mrn/st-mary"

[[concept_maps]]
file = "maps/lab.json"
source = "site"

[[concept_maps]]
file = "maps/dx.json"
source = "network"

[[extensions]]
site = "http://st-mary.test/fhir/ext/birth-place"
network = "https://assent.test/fhir/ext/birth-place"

[[reference_bases]]
site = "http://ehr.st-mary.local/fhir/"
network = ""

[[profiles]]
resource = "Patient"
site = ["http://st-mary.test/fhir/profile/patient"]
network = ["https://assent.test/fhir/profile/patient"]

[[defaults]]
path = "Observation.status"
value = "final"

[[defaults]]
path = "Patient.name.use"
value = "official"
direction = "to-site"

[[drops]]
path = "Patient.photo"
"#;

fn reader(name: &str) -> Result<String, String> {
    match name {
        "maps/lab.json" => Ok(lab_map()),
        "maps/dx.json" => Ok(dx_map()),
        other => Err(format!("no such file: {other}")),
    }
}

fn load(text: &str) -> Result<SiteAdapter, AdapterError> {
    SiteAdapter::load("st-mary.adapter.toml", text, FhirVersion::R4, &mut reader)
}

fn adapter() -> SiteAdapter {
    load(ADAPTER).unwrap_or_else(|e| panic!("{e}"))
}

fn coding(system: &str, code: &str) -> Value {
    json!({"system": system, "code": code, "display": "as the source said"})
}

fn observation(system: &str, code: &str) -> Value {
    json!({"resourceType": "Observation", "id": "o1", "status": "final",
           "code": {"coding": [coding(system, code)], "text": "lab"}})
}

#[test]
fn identifier_systems_are_rewritten_both_ways() {
    let a = adapter();
    let mut patient = json!({
        "resourceType": "Patient", "id": "p1",
        "identifier": [{"system": SITE_MRN, "value": "4711"}, {"system": "urn:other", "value": "x"}],
        "generalPractitioner": [{"identifier": {"system": SITE_MRN, "value": "9"}}]
    });
    let issues = a.apply(&mut patient, Direction::ToNetwork);
    assert!(issues.is_empty(), "{issues:?}");
    assert_eq!(patient["identifier"][0]["system"], NETWORK_MRN);
    assert_eq!(patient["identifier"][0]["value"], "4711");
    assert_eq!(patient["identifier"][1]["system"], "urn:other");
    assert_eq!(
        patient["generalPractitioner"][0]["identifier"]["system"],
        NETWORK_MRN
    );
    a.apply(&mut patient, Direction::ToSite);
    assert_eq!(patient["identifier"][0]["system"], SITE_MRN);
    assert_eq!(
        patient["generalPractitioner"][0]["identifier"]["system"],
        SITE_MRN
    );
}

#[test]
fn an_equivalent_code_is_translated_without_issue_and_back() {
    let a = adapter();
    let mut obs = observation(LOCAL_LAB, "GLU");
    let issues = a.apply(&mut obs, Direction::ToNetwork);
    assert!(issues.is_empty(), "{issues:?}");
    assert_eq!(
        obs["code"]["coding"],
        json!([{"system": LOINC, "code": "2345-7", "display": "Glucose [Mass/volume] in Serum or Plasma"}])
    );
    assert_eq!(obs["code"]["text"], "lab");
    // The same map read backward: LOINC → the site's code.
    let issues = a.apply(&mut obs, Direction::ToSite);
    assert!(issues.is_empty(), "{issues:?}");
    assert_eq!(obs["code"]["coding"][0]["system"], LOCAL_LAB);
    assert_eq!(obs["code"]["coding"][0]["code"], "GLU");
}

#[test]
fn a_broader_target_is_an_approximation_used_one_way_only() {
    let a = adapter();
    let mut obs = observation(LOCAL_LAB, "HB-VEN");
    let issues = a.apply(&mut obs, Direction::ToNetwork);
    assert_eq!(obs["code"]["coding"][0]["code"], "718-7");
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].severity, Severity::Warning);
    assert_eq!(issues[0].expression, vec!["Observation.code.coding[0]"]);
    assert!(issues[0].diagnostics.contains("approximated"), "{issues:?}");
    // Back: 718-7 is broader than HB-VEN, so it does not become HB-VEN.
    let issues = a.apply(&mut obs, Direction::ToSite);
    assert_eq!(obs["code"]["coding"][0]["code"], "718-7");
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].code, IssueCode::CodeInvalid);
    assert!(
        issues[0]
            .diagnostics
            .contains("source-is-broader-than-target"),
        "{issues:?}"
    );
}

#[test]
fn narrower_unmatched_related_and_unlisted_codes_are_kept_and_reported() {
    let a = adapter();
    for (code, says) in [
        ("K", "source-is-broader-than-target"),
        ("NA", "has no counterpart"),
        ("CREA", "related-to"),
        ("ZZZ", "is not in https://st-mary.test/ConceptMap/lab"),
    ] {
        let mut obs = observation(LOCAL_LAB, code);
        let issues = a.apply(&mut obs, Direction::ToNetwork);
        assert_eq!(obs["code"]["coding"][0]["code"], code);
        assert_eq!(obs["code"]["coding"][0]["system"], LOCAL_LAB);
        assert_eq!(issues.len(), 1, "{code}: {issues:?}");
        assert_eq!(issues[0].severity, Severity::Warning);
        assert_eq!(issues[0].code, IssueCode::CodeInvalid);
        assert!(issues[0].diagnostics.contains(says), "{code}: {issues:?}");
    }
    // A system no map covers is none of the adapter's business.
    let mut obs = observation("http://other.test", "ZZZ");
    assert!(a.apply(&mut obs, Direction::ToNetwork).is_empty());
}

#[test]
fn a_network_sourced_r5_map_goes_forward_to_the_site_and_back_to_the_network() {
    let a = adapter();
    let mut condition = json!({"resourceType": "Condition", "id": "c1",
        "code": {"coding": [coding(SNOMED, "44054006")]}});
    assert!(a.apply(&mut condition, Direction::ToSite).is_empty());
    assert_eq!(condition["code"]["coding"][0]["code"], "DM2");
    assert_eq!(condition["code"]["coding"][0]["display"], "Diabetes type 2");
    assert!(a.apply(&mut condition, Direction::ToNetwork).is_empty());
    assert_eq!(condition["code"]["coding"][0]["system"], SNOMED);
    assert_eq!(condition["code"]["coding"][0]["code"], "44054006");
    // The display named the site's code: without a display in the map it goes.
    assert!(condition["code"]["coding"][0].get("display").is_none());

    // source-is-broader-than-target: not used forward; read backward, the site's code is
    // narrower than SNOMED's, so SNOMED's is a broader approximation of it.
    let mut htn =
        json!({"resourceType": "Condition", "code": {"coding": [coding(SNOMED, "38341003")]}});
    let issues = a.apply(&mut htn, Direction::ToSite);
    assert_eq!(htn["code"]["coding"][0]["code"], "38341003");
    assert_eq!(issues.len(), 1, "{issues:?}");
    let mut local =
        json!({"resourceType": "Condition", "code": {"coding": [coding(LOCAL_DX, "HTN-ESS")]}});
    let issues = a.apply(&mut local, Direction::ToNetwork);
    assert_eq!(local["code"]["coding"][0]["code"], "38341003");
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert!(issues[0].diagnostics.contains("approximated"));
    // noMap (R5) is reported.
    let mut other =
        json!({"resourceType": "Condition", "code": {"coding": [coding(SNOMED, "73211009")]}});
    let issues = a.apply(&mut other, Direction::ToSite);
    assert!(
        issues[0].diagnostics.contains("no counterpart"),
        "{issues:?}"
    );
}

#[test]
fn keep_original_adds_the_translation_beside_the_site_coding() {
    let text = ADAPTER.replace(
        "file = \"maps/lab.json\"\nsource = \"site\"",
        "file = \"maps/lab.json\"\nsource = \"site\"\nkeep_original = true",
    );
    let a = load(&text).unwrap();
    let mut obs = observation(LOCAL_LAB, "HB-VEN");
    let issues = a.apply(&mut obs, Direction::ToNetwork);
    let codings = obs["code"]["coding"].as_array().unwrap();
    assert_eq!(codings.len(), 2);
    assert_eq!(codings[0]["code"], "HB-VEN");
    assert_eq!(codings[1]["code"], "718-7");
    // Nothing lost: information, not a warning.
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].severity, Severity::Information);
    // A CodeableConcept that already carries the translation does not get it twice.
    let mut both = json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [coding(LOCAL_LAB, "GLU"), coding(LOINC, "2345-7")]}});
    a.apply(&mut both, Direction::ToNetwork);
    assert_eq!(both["code"]["coding"].as_array().unwrap().len(), 2);
}

#[test]
fn codings_outside_codeable_concepts_are_replaced_in_place() {
    let a = adapter();
    let mut obs = json!({"resourceType": "Observation", "status": "final",
        "code": {"text": "x"},
        "meta": {"tag": [{"system": LOCAL_LAB, "code": "GLU", "version": "3"}]}});
    a.apply(&mut obs, Direction::ToNetwork);
    assert_eq!(obs["meta"]["tag"][0]["system"], LOINC);
    assert_eq!(obs["meta"]["tag"][0]["code"], "2345-7");
    assert!(obs["meta"]["tag"][0].get("version").is_none());
}

#[test]
fn defaults_fill_absent_elements_in_their_direction_only() {
    let a = adapter();
    let mut obs = json!({"resourceType": "Observation", "code": {"text": "x"}});
    let issues = a.apply(&mut obs, Direction::ToNetwork);
    assert_eq!(obs["status"], "final");
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].severity, Severity::Information);
    assert_eq!(issues[0].expression, vec!["Observation.status"]);
    let mut amended = json!({"resourceType": "Observation", "status": "amended"});
    assert!(a.apply(&mut amended, Direction::ToNetwork).is_empty());
    assert_eq!(amended["status"], "amended");
    let mut no_status = json!({"resourceType": "Observation"});
    a.apply(&mut no_status, Direction::ToSite);
    assert!(no_status.get("status").is_none());
    // Nested: every existing parent gets it, none is invented.
    let mut patient = json!({"resourceType": "Patient", "name": [{"family": "A"}, {"family": "B", "use": "maiden"}]});
    let issues = a.apply(&mut patient, Direction::ToSite);
    assert_eq!(patient["name"][0]["use"], "official");
    assert_eq!(patient["name"][1]["use"], "maiden");
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].expression, vec!["Patient.name[0].use"]);
    let mut nameless = json!({"resourceType": "Patient"});
    a.apply(&mut nameless, Direction::ToSite);
    assert!(nameless.get("name").is_none());
}

#[test]
fn drops_remove_the_element_and_its_primitive_extensions_and_say_so() {
    let a = adapter();
    let mut patient = json!({"resourceType": "Patient", "id": "p1",
        "photo": [{"contentType": "image/png", "data": "AAAA"}], "gender": "female"});
    let issues = a.apply(&mut patient, Direction::ToNetwork);
    assert!(patient.get("photo").is_none());
    assert_eq!(patient["gender"], "female");
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].expression, vec!["Patient.photo"]);
    assert!(issues[0].diagnostics.contains("dropped"));
    // Not in the other direction.
    let mut patient = json!({"resourceType": "Patient", "photo": [{"data": "AAAA"}]});
    a.apply(&mut patient, Direction::ToSite);
    assert!(patient.get("photo").is_some());

    let a = load("[[drops]]\npath = \"Observation.status\"\n").unwrap();
    let mut obs =
        json!({"resourceType": "Observation", "status": "final", "_status": {"extension": []}});
    a.apply(&mut obs, Direction::ToNetwork);
    assert!(obs.get("status").is_none() && obs.get("_status").is_none());
}

#[test]
fn profiles_are_stamped_and_the_other_dialects_removed() {
    let a = adapter();
    let mut patient = json!({"resourceType": "Patient",
        "meta": {"profile": ["http://st-mary.test/fhir/profile/patient", "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"]}});
    a.apply(&mut patient, Direction::ToNetwork);
    assert_eq!(
        patient["meta"]["profile"],
        json!([
            "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient",
            "https://assent.test/fhir/profile/patient"
        ])
    );
    a.apply(&mut patient, Direction::ToSite);
    assert_eq!(
        patient["meta"]["profile"],
        json!([
            "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient",
            "http://st-mary.test/fhir/profile/patient"
        ])
    );
    let mut bare = json!({"resourceType": "Patient"});
    a.apply(&mut bare, Direction::ToNetwork);
    assert_eq!(
        bare["meta"]["profile"],
        json!(["https://assent.test/fhir/profile/patient"])
    );
    let mut obs = json!({"resourceType": "Observation", "status": "final"});
    a.apply(&mut obs, Direction::ToNetwork);
    assert!(obs.get("meta").is_none());

    // `*`: every resource, but not the Bundle around them.
    let every = load("[[profiles]]\nresource = \"*\"\nnetwork = [\"urn:p\"]\n").unwrap();
    let mut bundle = json!({"resourceType": "Bundle", "type": "searchset",
        "entry": [{"resource": {"resourceType": "Observation", "status": "final"}}]});
    every.apply(&mut bundle, Direction::ToNetwork);
    assert!(bundle.get("meta").is_none());
    assert_eq!(
        bundle["entry"][0]["resource"]["meta"]["profile"],
        json!(["urn:p"])
    );
}

#[test]
fn extension_urls_and_reference_bases_are_rewritten() {
    let a = adapter();
    let mut patient = json!({"resourceType": "Patient",
        "extension": [{"url": "http://st-mary.test/fhir/ext/birth-place", "valueString": "Perth"},
                      {"url": "http://other.test/ext", "valueString": "kept"}],
        "managingOrganization": {"reference": "http://ehr.st-mary.local/fhir/Organization/o1"},
        "link": [{"other": {"reference": "Patient/p2"}}]});
    assert!(a.apply(&mut patient, Direction::ToNetwork).is_empty());
    assert_eq!(
        patient["extension"][0]["url"],
        "https://assent.test/fhir/ext/birth-place"
    );
    assert_eq!(patient["extension"][1]["url"], "http://other.test/ext");
    assert_eq!(
        patient["managingOrganization"]["reference"],
        "Organization/o1"
    );
    assert_eq!(patient["link"][0]["other"]["reference"], "Patient/p2");
    a.apply(&mut patient, Direction::ToSite);
    assert_eq!(
        patient["extension"][0]["url"],
        "http://st-mary.test/fhir/ext/birth-place"
    );
    // Relative references stay relative: the site resolves them against its own base.
    assert_eq!(
        patient["managingOrganization"]["reference"],
        "Organization/o1"
    );
}

#[test]
fn bundles_and_contained_resources_are_adapted_with_located_issues() {
    let a = adapter();
    let mut bundle = json!({"resourceType": "Bundle", "type": "searchset", "entry": [
        {"resource": {"resourceType": "Patient", "identifier": [{"system": SITE_MRN, "value": "1"}], "photo": [{}]}},
        {"resource": observation(LOCAL_LAB, "ZZZ")},
        {"resource": {"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "r"},
                      "contained": [observation(LOCAL_LAB, "GLU")]}}
    ]});
    let issues = a.apply(&mut bundle, Direction::ToNetwork);
    assert_eq!(
        bundle["entry"][0]["resource"]["identifier"][0]["system"],
        NETWORK_MRN
    );
    assert!(bundle["entry"][0]["resource"].get("photo").is_none());
    assert_eq!(
        bundle["entry"][2]["resource"]["contained"][0]["code"]["coding"][0]["code"],
        "2345-7"
    );
    let places: Vec<&str> = issues.iter().map(|i| i.expression[0].as_str()).collect();
    assert_eq!(
        places,
        [
            "Bundle.entry[0].resource.photo",
            "Bundle.entry[1].resource.code.coding[0]"
        ]
    );
}

#[test]
fn search_values_are_rewritten_through_exact_mappings_only() {
    let a = adapter();
    let (value, issues) = a.search_value("identifier", &format!("{NETWORK_MRN}|4711"));
    assert_eq!(value.as_deref(), Some(&*format!("{SITE_MRN}|4711")));
    assert!(issues.is_empty());
    let (value, issues) = a.search_value("code", &format!("{LOINC}|2345-7,{LOINC}|718-7"));
    assert_eq!(
        value.as_deref(),
        Some(&*format!("{LOCAL_LAB}|GLU,{LOINC}|718-7"))
    );
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].expression, vec!["code"]);
    let (value, _) = a.search_value("code", &format!("{SNOMED}|44054006"));
    assert_eq!(value.as_deref(), Some(&*format!("{LOCAL_DX}|DM2")));
    // An approximation would change the search: sent as it is, reported.
    let (value, issues) = a.search_value("code", &format!("{SNOMED}|38341003"));
    assert_eq!(value, None);
    assert_eq!(issues.len(), 1);
    for (name, v) in [
        ("name", "smith"),
        (
            "identifier:of-type",
            "http://terminology.hl7.org/CodeSystem/v2-0203|MR|4711",
        ),
        ("identifier", "urn:other|1"),
    ] {
        assert_eq!(a.search_value(name, v), (None, Vec::new()), "{name}={v}");
    }
}

#[test]
fn codes_mapped_backward_from_several_sources_are_ambiguous() {
    let map = json!({"resourceType": "ConceptMap", "url": "urn:m", "group": [{
        "source": LOCAL_LAB, "target": LOINC, "element": [
            {"code": "GLU", "target": [{"code": "2345-7", "equivalence": "equivalent"}]},
            {"code": "GLUC", "target": [{"code": "2345-7", "equivalence": "equal"}]}]}]})
    .to_string();
    let a = SiteAdapter::load(
        "a.toml",
        "[[concept_maps]]\nfile = \"m.json\"\n",
        FhirVersion::R4,
        &mut |_| Ok(map.clone()),
    )
    .unwrap();
    let mut obs = observation(LOINC, "2345-7");
    let issues = a.apply(&mut obs, Direction::ToSite);
    assert_eq!(obs["code"]["coding"][0]["code"], "2345-7");
    assert!(issues[0].diagnostics.contains("several"), "{issues:?}");
    let mut forward = observation(LOCAL_LAB, "GLUC");
    assert!(a.apply(&mut forward, Direction::ToNetwork).is_empty());
    assert_eq!(forward["code"]["coding"][0]["code"], "2345-7");
}

#[test]
fn the_summary_counts_what_was_loaded() {
    let s = adapter().summary();
    assert_eq!(s.identifier_systems, 1);
    assert_eq!(s.concept_maps, 2);
    // GLU, HB-VEN from the lab map; DM2 and HTN-ESS read backward from the diagnosis map.
    assert_eq!(s.mapped_codes, 4);
    assert_eq!((s.profiles, s.defaults, s.drops), (1, 2, 1));
}

/// Loads `text` and returns (line, key, message) of its error.
fn error_of(text: &str) -> (Option<usize>, Option<String>, String) {
    let e = load(text).expect_err("the adapter is broken");
    assert_eq!(e.file, "st-mary.adapter.toml");
    (e.line, e.key, e.message)
}

#[test]
fn broken_files_are_rejected_naming_the_line_and_the_key() {
    let cases: &[(&str, usize, &str, &str)] = &[
        // unknown key, with serde's span
        (
            "[[identifier_systems]]\nsite = \"urn:a\"\nnetwork = \"urn:b\"\nnetwrk = \"urn:c\"\n",
            4,
            "identifier_systems[0].netwrk",
            "unknown field",
        ),
        // a wrong type
        (
            "[[concept_maps]]\nfile = \"maps/lab.json\"\nreverse = \"yes\"\n",
            3,
            "concept_maps[0].reverse",
            "",
        ),
        // a syntax error
        (
            "description = \"x\"\n\n[[drops]]\npath = \"Patient.photo\n",
            4,
            "",
            "",
        ),
        // a missing key
        (
            "[[identifier_systems]]\nsite = \"urn:a\"\n",
            1,
            "identifier_systems[0]",
            "missing field `network`",
        ),
        (
            "[[identifier_systems]]\nsite = \"urn:a\"\nnetwork = \"not a uri\"\n",
            3,
            "identifier_systems[0].network",
            "absolute URI",
        ),
        (
            "[[identifier_systems]]\nsite = \"\"\nnetwork = \"urn:b\"\n",
            2,
            "identifier_systems[0].site",
            "empty",
        ),
        (
            "[[identifier_systems]]\nsite = \"urn:a\"\nnetwork = \"urn:b\"\n\n[[identifier_systems]]\nsite = \"urn:a\"\nnetwork = \"urn:c\"\n",
            6,
            "identifier_systems[1].site",
            "listed twice",
        ),
        (
            "[[concept_maps]]\nfile = \"maps/lab.json\"\n\n[[concept_maps]]\nfile = \"maps/missing.json\"\n",
            5,
            "concept_maps[1].file",
            "no such file: maps/missing.json",
        ),
        (
            "\n\n[[defaults]]\npath = \"Observation.stauts\"\nvalue = \"final\"\n",
            4,
            "defaults[0].path",
            "`stauts` is not an element of Observation in FHIR R4",
        ),
        (
            "[[drops]]\npath = \"Patient.name[0]\"\n",
            2,
            "drops[0].path",
            "not an element path",
        ),
        (
            "[[drops]]\npath = \"Patient.photo\"\n[[drops]]\npath = \"Patient.photo\"\n",
            4,
            "drops[1].path",
            "listed twice",
        ),
        (
            "[[profiles]]\nresource = \"patient\"\nnetwork = [\"urn:p\"]\n",
            2,
            "profiles[0].resource",
            "resource type",
        ),
        (
            "[[defaults]]\npath = \"Patient.birthDate\"\nvalue = 2024-01-31\n",
            3,
            "defaults[0].value",
            "as a string",
        ),
        (
            "[[concept_maps]]\nfile = \"maps/lab.json\"\n[[concept_maps]]\nfile = \"maps/lab.json\"\n",
            4,
            "concept_maps[1].file",
            "mapped twice",
        ),
    ];
    for (text, line, key, message) in cases {
        let (got_line, got_key, got_message) = error_of(text);
        assert_eq!(got_line, Some(*line), "{text}: {got_key:?} {got_message}");
        if !key.is_empty() {
            assert_eq!(got_key.as_deref(), Some(*key), "{text}: {got_message}");
        }
        assert!(got_message.contains(message), "{text}: {got_message}");
    }
}

#[test]
fn concept_map_errors_name_the_adapter_key_and_the_map_element() {
    let empty_source =
        json!({"resourceType": "ConceptMap", "group": [{"source": "", "target": LOINC}]})
            .to_string();
    let e = SiteAdapter::load(
        "a.toml",
        "\n[[concept_maps]]\nfile = \"m.json\"\n",
        FhirVersion::R4,
        &mut |_| Ok(empty_source.clone()),
    )
    .unwrap_err();
    assert_eq!(e.line, Some(3));
    assert_eq!(e.key.as_deref(), Some("concept_maps[0].file"));
    assert!(e.message.contains("m.json: group[0].source"), "{e}");
    assert_eq!(
        e.to_string(),
        format!("a.toml:3: key `concept_maps[0].file`: {}", e.message)
    );
}

#[test]
fn an_empty_adapter_changes_nothing() {
    let a = load("description = \"nothing yet\"\n").unwrap();
    let mut obs = observation(LOCAL_LAB, "GLU");
    let before = obs.clone();
    assert!(a.apply(&mut obs, Direction::ToNetwork).is_empty());
    assert_eq!(obs, before);
    assert_eq!(a.description(), Some("nothing yet"));
}

mod property {
    use super::*;
    use proptest::prelude::*;

    /// JSON biased towards what adapters look at: systems, codes, references, extensions,
    /// meta, the paths of defaults and drops, with the adapter's own systems as values.
    fn adapter_json() -> impl Strategy<Value = Value> {
        let strings = prop_oneof![
            Just(SITE_MRN.to_owned()),
            Just(NETWORK_MRN.to_owned()),
            Just(LOCAL_LAB.to_owned()),
            Just(LOINC.to_owned()),
            Just(SNOMED.to_owned()),
            Just("GLU".to_owned()),
            Just("2345-7".to_owned()),
            Just("HB-VEN".to_owned()),
            Just("http://ehr.st-mary.local/fhir/Patient/1".to_owned()),
            Just("Patient".to_owned()),
            Just("Observation".to_owned()),
            "\\PC{0,8}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            strings.prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 96, 6, |inner| {
            let keys = prop::sample::select(vec![
                "resourceType",
                "system",
                "code",
                "value",
                "display",
                "coding",
                "reference",
                "extension",
                "url",
                "meta",
                "profile",
                "photo",
                "_photo",
                "name",
                "use",
                "status",
                "entry",
                "resource",
                "contained",
                "identifier",
                "subject",
            ])
            .prop_map(str::to_owned);
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((keys, inner), 0..7)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn applying_never_panics(value in adapter_json(), back in any::<bool>()) {
            let a = adapter();
            let direction = if back { Direction::ToSite } else { Direction::ToNetwork };
            let mut value = value;
            let issues = a.apply(&mut value, direction);
            // Every issue says where.
            prop_assert!(issues.iter().all(|i| !i.expression.is_empty()));
        }

        #[test]
        fn search_values_never_panic(name in "[a-z_:.\\-]{0,14}", value in "\\PC{0,40}") {
            let _ = adapter().search_value(&name, &value);
        }

        #[test]
        fn loading_arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = load(&text);
        }
    }
}
