//! FHIR version conversion (STU3 ↔ R4 ↔ R4B ↔ R5) on `serde_json::Value`, for the gateway's
//! translate phases, and per-site dialect adapters. Owns resource translation
//! ([`translate`]), search parameter translation ([`translate_search_params`]) and site
//! adapters ([`site::SiteAdapter`]: identifier systems, codes through ConceptMaps,
//! extensions, references, profiles, defaults and drops, loaded from a TOML file); leaves out
//! HTTP and file reading (the gateway reads adapter files and hands over their text), and
//! typed models except behind the `typed-check` feature (checking output with fhir-sdk's
//! `fhir-model`, for tests and the translate CLI).
//!
//! # Design
//!
//! - **JSON in place.** A resource is converted by walking its JSON tree beside the element
//!   definitions of the source and target versions (`src/data/elements_*.txt`, every
//!   resource type of each version, generated from the HL7 StructureDefinitions by
//!   `tools/gen_definitions.py`, with each element's cardinality, types and modifier flag;
//!   `src/data/codes_*.txt`: the codes of required bindings). The tree is taken by value and
//!   mutated in place; nothing is parsed into typed models, and numbers are never read as
//!   floats (they pass through as they are; the one computed value, SampledData's interval in
//!   milliseconds, is computed on the decimal text). Definitions and rule tables are built
//!   once (`LazyLock`).
//! - **Every type of both versions.** A resource type that exists in the source and the target
//!   version converts ([`converts`]); renamed types (`ProcedureRequest` → `ServiceRequest`,
//!   `BodySite` → `BodyStructure`, `DeviceUseStatement` → `DeviceUsage`, ...) follow the
//!   conversion maps, with references to them. A type the target lacks is refused at the top
//!   (`Err`) and left in its own version with an error issue when nested.
//! - **Adjacent steps, composed.** Rules exist for STU3↔R4 and R4B↔R5; R4↔R4B is derived
//!   from the definitions (identical for most types, so the step only visits resources
//!   nested in Bundles and `contained`; R4's Substance* types, gone in R4B and back in R5,
//!   cross it with R4's definitions). STU3 → R5 runs STU3→R4→R4B→R5. Composing keeps the rule
//!   tables to two hand-written pairs instead of twelve, and every rule is checked by round
//!   trips through its own pair; the cost is one walk per step.
//! - **Meaning first, generic for the rest.** Where the target says what the source says
//!   with another element or code, the rules use it: STU3 `taken = n` is R4 status
//!   `not-taken`, which is R5 `adherence` `not-taking`; `notGiven`/`notDone` are status
//!   `not-done`; R4 `xCode` + `xReference` and `x[x]` (concept or reference) are R5's `x`
//!   CodeableReference for every type (`convert/merges.rs`, found in the definitions); renames
//!   and code remaps are data in `convert/rules.rs`. Per key the walk then compares the two
//!   definitions: same shape → recurse; cardinality 0..1 ↔ 0..* → wrap or keep the first;
//!   known datatype changes (Coding ↔ CodeableConcept, CodeableConcept/Reference ↔
//!   CodeableReference, code ↔ CodeableConcept, string ↔ Annotation, Reference ↔ canonical,
//!   ...) → convert. Datatypes are leaves of the walk, except those whose shape changed
//!   (`Dosage`, `Attachment`, `Signature`, `SampledData`: `convert/datatypes.rs`).
//! - **Nothing lost or changed silently.** An element the target lacks, a value that does not
//!   fit, a code approximated: the original goes into a standard cross-version extension
//!   (`http://hl7.org/fhir/{3.0|4.0|4.3|5.0}/StructureDefinition/extension-{Path}`; a
//!   modifier element into `modifierExtension`) and an [`Issue`] says so. Severity follows
//!   what a reader would understand: `warning` for a modifier without a counterpart, a status
//!   approximated, a code outside the target's required value set, a value the target cannot
//!   hold (so `Prefer: handling=strict` refuses them); `information` for what a reader loses
//!   nothing of. Carriers made on the way from R4 say `4.0` and those from R4B say `4.3`,
//!   and either is restored into R4 or R4B. Converting restores carriers of the target
//!   version found in the input, whoever made them, so X → Y → X round trips keep the data.
//!   Extension values of datatypes the target lacks (R5's `CodeableReference`,
//!   `Availability`, ...) become parts (a `_datatype` sub-extension and one per element) and
//!   come back as values where the target has the datatype. An element neither version
//!   defines is dropped and reported, and an element the target requires that the source
//!   cannot fill is reported too (never invented).
//! - **Errors.** `Err` only for input that is not a resource at all, or a resource type the
//!   target version lacks. Nested resources of such types (Bundle entries, `contained`) are
//!   left in their own version with an error-severity issue.

#![forbid(unsafe_code)]

mod convert;
mod definitions;
mod search;
pub mod site;
#[cfg(feature = "typed-check")]
mod typed_check;

use assent_fhir::{FhirVersion, Issue, IssueCode, Severity};
use serde_json::Value;

pub use search::translate_search_params;
#[cfg(feature = "typed-check")]
pub use typed_check::{R4_KNOWN_DIFFERENCES, TypedCheckError, check_typed};

/// The clinical core: the resource types with hand-written rules for every version pair
/// and golden fixtures (by their R4 names). Every other resource type that exists in both
/// versions converts too, by the generic walk over the element definitions (see
/// [`converts`]).
pub const CORE_TYPES: &[&str] = &[
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Location",
    "Encounter",
    "Observation",
    "Condition",
    "Procedure",
    "MedicationRequest",
    "MedicationStatement",
    "Medication",
    "AllergyIntolerance",
    "Immunization",
    "DiagnosticReport",
    "DocumentReference",
    "CarePlan",
    "CareTeam",
    "Goal",
    "ServiceRequest",
    "Consent",
    "AuditEvent",
    "Provenance",
    "Bundle",
    "OperationOutcome",
    "CapabilityStatement",
];

/// A translated resource and what the translation could not keep exactly.
///
/// Issue severities: `information`: nothing a reader relies on is lost (the element or the
/// original code is kept in a cross-version extension, a value is said in the target's own
/// terms); `warning`: a reader of the output could understand something else than the input
/// says (something dropped, a code without a counterpart, a modifier element kept only in a
/// modifier extension, a status approximated, a required element left empty); `error`: a
/// nested resource whose type does not exist in the target version was left in its own
/// version.
#[derive(Debug, Clone, PartialEq)]
pub struct Translation {
    pub resource: Value,
    pub issues: Vec<Issue>,
}

impl Translation {
    /// Whether data was lost or left unconverted (an issue of severity warning or above):
    /// what `Prefer: handling=strict` refuses.
    pub fn loses_data(&self) -> bool {
        self.issues.iter().any(|i| i.severity >= Severity::Warning)
    }
}

/// Why a resource could not be translated at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    #[error("a FHIR resource must be a JSON object")]
    NotAnObject,
    #[error("the resource has no resourceType")]
    MissingResourceType,
    #[error(
        "resource type {resource_type} of {from} does not exist in {to}, so it cannot be converted"
    )]
    UnsupportedType {
        resource_type: String,
        from: FhirVersion,
        to: FhirVersion,
    },
}

impl TranslateError {
    /// This error as an `OperationOutcome.issue` (the gateway answers 422 with it).
    pub fn issue(&self) -> Issue {
        let code = match self {
            TranslateError::NotAnObject | TranslateError::MissingResourceType => {
                IssueCode::Structure
            }
            TranslateError::UnsupportedType { .. } => IssueCode::NotSupported,
        };
        let issue = Issue::new(Severity::Error, code, self.to_string());
        match self {
            TranslateError::UnsupportedType { resource_type, .. } => {
                issue.at(resource_type.as_str())
            }
            _ => issue,
        }
    }
}

/// Translate `resource` from FHIR version `from` to `to`.
///
/// Same version: returned unchanged, whatever its type. Otherwise the type (as named in
/// `from`) must exist in both versions ([`converts`]).
pub fn translate(
    resource: Value,
    from: FhirVersion,
    to: FhirVersion,
) -> Result<Translation, TranslateError> {
    let Value::Object(obj) = &resource else {
        return Err(TranslateError::NotAnObject);
    };
    let Some(resource_type) = obj.get("resourceType").and_then(Value::as_str) else {
        return Err(TranslateError::MissingResourceType);
    };
    if from == to {
        return Ok(Translation {
            resource,
            issues: Vec::new(),
        });
    }
    if !converts(resource_type, from, to) {
        return Err(TranslateError::UnsupportedType {
            resource_type: resource_type.to_owned(),
            from,
            to,
        });
    }
    let mut resource = resource;
    let mut issues = Vec::new();
    let mut version = from;
    while version != to {
        let next = next_version(version, to);
        convert::step(&mut resource, version, next, (from, to), &mut issues);
        version = next;
    }
    let patterns = reference_patterns(from, to);
    if !patterns.is_empty() {
        rename_referenced_types(&mut resource, patterns, 0);
    }
    Ok(Translation { resource, issues })
}

/// `system`, a code-system URI as version `from` names it, as version `to` names it, when the
/// two differ: the code systems R4 moved to HL7 Terminology (`http://hl7.org/fhir/v2/0203` in
/// STU3 is `http://terminology.hl7.org/CodeSystem/v2-0203` in R4, R4B and R5). `None`: the
/// same URI in both. [`translate`] renames them in every `system` it converts.
pub fn code_system_uri(system: &str, from: FhirVersion, to: FhirVersion) -> Option<String> {
    use convert::code_systems::{r4_to_stu3, stu3_to_r4};
    match (from == FhirVersion::Stu3, to == FhirVersion::Stu3) {
        (true, false) => stu3_to_r4(system),
        (false, true) => r4_to_stu3(system),
        _ => None,
    }
}

/// [`renamed_types_between`] as reference patterns, built once per pair of versions.
fn reference_patterns(from: FhirVersion, to: FhirVersion) -> &'static [TypePattern] {
    type ByPair = Vec<((FhirVersion, FhirVersion), Vec<TypePattern>)>;
    static ALL: std::sync::LazyLock<ByPair> = std::sync::LazyLock::new(|| {
        let mut all = Vec::new();
        for from in FhirVersion::ALL {
            for to in FhirVersion::ALL {
                let patterns = renamed_types_between(from, to)
                    .into_iter()
                    .map(|(old, new)| TypePattern::new(old, new))
                    .collect();
                all.push(((from, to), patterns));
            }
        }
        all
    });
    ALL.iter()
        .find(|(pair, _)| *pair == (from, to))
        .map_or(&[], |(_, patterns)| patterns.as_slice())
}

/// The resource types named differently in `from` and `to`: (name in `from`, name in `to`).
fn renamed_types_between(from: FhirVersion, to: FhirVersion) -> Vec<(&'static str, &'static str)> {
    let source = definitions::definitions(from);
    let mut pairs = Vec::new();
    for &(_, old, _, new) in convert::RENAMED_TYPES {
        for name in [old, new] {
            let renamed = convert::renamed_type(name, from, to);
            if renamed != name && source.root(name).is_some() && !pairs.contains(&(name, renamed)) {
                pairs.push((name, renamed));
            }
        }
    }
    pairs
}

/// A renamed type as it appears in references: the path segment before the id.
struct TypePattern {
    old: &'static str,
    new: &'static str,
}

impl TypePattern {
    fn new(old: &'static str, new: &'static str) -> TypePattern {
        TypePattern { old, new }
    }
}

/// `reference` with the first path segment naming `old` (`Old/1`, `http://x/fhir/Old/1`,
/// `Old/1/_history/2`) renamed to `new`; `None` when no segment names it. Segments are
/// compared as bytes: no searcher is built, nothing allocated unless a reference changes.
fn renamed_reference(reference: &str, patterns: &[TypePattern]) -> Option<String> {
    let mut start = 0;
    for segment in reference.split('/') {
        let end = start + segment.len();
        // A type segment is followed by an id.
        if end < reference.len()
            && let Some(p) = patterns.iter().find(|p| p.old == segment)
        {
            return Some(format!(
                "{}{}{}",
                &reference[..start],
                p.new,
                &reference[end..]
            ));
        }
        start = end + 1;
    }
    None
}

/// `Reference.reference` values naming a renamed type follow the rename. One pass over the
/// tree, only when a translation crosses a rename.
fn rename_referenced_types(value: &mut Value, patterns: &[TypePattern], depth: usize) {
    if depth > 256 {
        return;
    }
    match value {
        Value::Object(m) => {
            for (key, v) in m.iter_mut() {
                match v {
                    Value::String(s) if key == "reference" => {
                        if let Some(renamed) = renamed_reference(s, patterns) {
                            *s = renamed;
                        }
                    }
                    Value::Object(_) | Value::Array(_) => {
                        rename_referenced_types(v, patterns, depth + 1)
                    }
                    _ => {}
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                if item.is_object() || item.is_array() {
                    rename_referenced_types(item, patterns, depth + 1);
                }
            }
        }
        _ => {}
    }
}

/// Whether `resource_type` is a resource type of `version` (R5 also accepts the ballot name
/// `MedicationUsage`). Such a type converts to every version that has it ([`converts`]).
pub fn is_supported(resource_type: &str, version: FhirVersion) -> bool {
    match (resource_type, version) {
        ("MedicationUsage", FhirVersion::R5) => true,
        _ => definitions::definitions(version)
            .root(resource_type)
            .is_some(),
    }
}

/// Whether `resource_type` (named as in `from`) converts to `to`: it exists in `from`, and
/// in `to` under its name there ([`translate_type_name`]).
pub fn converts(resource_type: &str, from: FhirVersion, to: FhirVersion) -> bool {
    is_supported(resource_type, from)
        && is_supported(translate_type_name(resource_type, from, to), to)
}

/// Every resource type of `version`, sorted.
pub fn resource_types(version: FhirVersion) -> Vec<&'static str> {
    definitions::definitions(version).resource_types()
}

/// The name in `to` of resource type `resource_type` named as in `from` (STU3
/// `ProcedureRequest` is `ServiceRequest` later; R5 ballots' `MedicationUsage` is
/// `MedicationStatement`). For request paths (`/ProcedureRequest/1`) and `_type` values.
pub fn translate_type_name(resource_type: &str, from: FhirVersion, to: FhirVersion) -> &str {
    let resource_type = match (resource_type, from) {
        ("MedicationUsage", FhirVersion::R5) => "MedicationStatement",
        _ => resource_type,
    };
    convert::renamed_type(resource_type, from, to)
}

/// The version one step from `from` towards `to`.
pub(crate) fn next_version(from: FhirVersion, to: FhirVersion) -> FhirVersion {
    let all = FhirVersion::ALL;
    let i = all.iter().position(|v| *v == from).unwrap_or(0);
    if to > from {
        all[(i + 1).min(all.len() - 1)]
    } else {
        all[i.saturating_sub(1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn same_version_passes_anything_through() {
        let claim = json!({"resourceType": "NotAType", "id": "1"});
        let out = translate(claim.clone(), FhirVersion::R4, FhirVersion::R4).expect("same version");
        assert_eq!(out.resource, claim);
    }

    #[test]
    fn unsupported_type_names_the_type() {
        let err = translate(
            json!({"resourceType": "Media"}),
            FhirVersion::R4,
            FhirVersion::R5,
        )
        .expect_err("Media does not exist in R5");
        assert!(err.to_string().contains("Media"));
        assert!(err.to_string().contains("does not exist in R5"));
    }

    #[test]
    fn every_type_of_both_versions_converts() {
        assert!(converts("Claim", FhirVersion::R4, FhirVersion::R5));
        assert!(converts(
            "ProcedureRequest",
            FhirVersion::Stu3,
            FhirVersion::R5
        ));
        assert!(!converts(
            "ServiceRequest",
            FhirVersion::Stu3,
            FhirVersion::R4
        ));
        assert!(converts(
            "DeviceUseStatement",
            FhirVersion::R4,
            FhirVersion::R5
        ));
        assert!(converts("DeviceUsage", FhirVersion::R5, FhirVersion::Stu3));
        assert!(!converts("Citation", FhirVersion::R5, FhirVersion::R4));
        assert!(converts("Citation", FhirVersion::R5, FhirVersion::R4B));
        assert!(converts(
            "SubstancePolymer",
            FhirVersion::R4,
            FhirVersion::R5
        ));
        assert!(!converts(
            "SubstancePolymer",
            FhirVersion::R4,
            FhirVersion::R4B
        ));
        assert_eq!(resource_types(FhirVersion::R4).len(), 146);
        let claim = translate(
            json!({"resourceType": "Claim", "id": "c1", "status": "active"}),
            FhirVersion::R4,
            FhirVersion::R5,
        )
        .expect("Claim converts");
        assert_eq!(claim.resource["status"], "active");
    }

    #[test]
    fn type_names_across_versions() {
        assert_eq!(
            translate_type_name("ProcedureRequest", FhirVersion::Stu3, FhirVersion::R5),
            "ServiceRequest"
        );
        assert_eq!(
            translate_type_name("ServiceRequest", FhirVersion::R4, FhirVersion::Stu3),
            "ProcedureRequest"
        );
        assert_eq!(
            translate_type_name("Patient", FhirVersion::R4, FhirVersion::Stu3),
            "Patient"
        );
        assert_eq!(
            translate_type_name("BodySite", FhirVersion::Stu3, FhirVersion::R5),
            "BodyStructure"
        );
        assert_eq!(
            translate_type_name("DeviceUsage", FhirVersion::R5, FhirVersion::Stu3),
            "DeviceUseStatement"
        );
    }

    #[test]
    fn references_to_renamed_types_follow() {
        let out = translate(
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "basedOn": [{"reference": "ProcedureRequest/1"},
                            {"reference": "http://x/fhir/ProcedureRequest/2/_history/3"},
                            {"reference": "Patient/ProcedureRequest"},
                            {"reference": "CarePlan/1"}]}),
            FhirVersion::Stu3,
            FhirVersion::R4,
        )
        .expect("Observation converts");
        let refs: Vec<&str> = out.resource["basedOn"]
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|r| r["reference"].as_str())
            .collect();
        assert_eq!(
            refs,
            [
                "ServiceRequest/1",
                "http://x/fhir/ServiceRequest/2/_history/3",
                "Patient/ProcedureRequest",
                "CarePlan/1"
            ]
        );
    }

    #[test]
    fn not_a_resource() {
        assert_eq!(
            translate(json!([1]), FhirVersion::R4, FhirVersion::R5),
            Err(TranslateError::NotAnObject)
        );
        assert_eq!(
            translate(json!({}), FhirVersion::R4, FhirVersion::R5),
            Err(TranslateError::MissingResourceType)
        );
    }

    #[test]
    fn unsupported_type_as_an_issue() {
        let err = translate(
            json!({"resourceType": "Media"}),
            FhirVersion::R4,
            FhirVersion::R5,
        )
        .expect_err("Media does not exist in R5");
        let issue = err.issue();
        assert_eq!(issue.code, IssueCode::NotSupported);
        assert_eq!(issue.expression, vec!["Media".to_owned()]);
    }

    #[test]
    fn loses_data_only_for_warnings_and_worse() {
        let carried = translate(
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "focus": [{"reference": "Group/1"}]}),
            FhirVersion::R4,
            FhirVersion::Stu3,
        )
        .expect("Observation converts");
        assert!(!carried.issues.is_empty());
        assert!(!carried.loses_data());
        // A modifier element without a counterpart: a reader ignoring extensions would take
        // an animal for a person.
        let animal = translate(
            json!({"resourceType": "Patient", "animal": {"species": {"text": "dog"}}}),
            FhirVersion::Stu3,
            FhirVersion::R4,
        )
        .expect("Patient converts");
        assert!(animal.loses_data());
        assert_eq!(
            animal.resource["modifierExtension"][0]["url"],
            "http://hl7.org/fhir/3.0/StructureDefinition/extension-Patient.animal"
        );
        let back = translate(animal.resource, FhirVersion::R4, FhirVersion::Stu3).expect("back");
        assert_eq!(back.resource["animal"]["species"]["text"], "dog");
        assert!(back.resource.get("modifierExtension").is_none());
        let dropped = translate(
            json!({"resourceType": "Patient", "notAnElement": 1}),
            FhirVersion::Stu3,
            FhirVersion::R4,
        )
        .expect("Patient converts");
        assert!(dropped.loses_data());
    }
}
