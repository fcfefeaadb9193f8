//! Search request translation: parameter names that differ between FHIR versions (renamed or
//! removed) and resource type names inside parameter values and modifiers.
//!
//! Which parameters each version defines comes from `src/data/search_*.txt` (generated from
//! the HL7 SearchParameter resources); the renames are facts from the difference pages.
//! Token values name their code systems as the target does (`system|code`: the systems R4
//! moved to HL7 Terminology, between STU3 and R4+). Leaves out chained parameters' inner
//! names (only the first link is checked) and value syntax changes (none among the supported
//! types).

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use assent_fhir::{FhirVersion, Issue, IssueCode, Severity};

use crate::convert::renamed_type;

/// Translate the search parameters of a search on `resource_type` (named as in `from`) from
/// `from` to `to`. Parameters the target lacks and cannot be renamed are removed and
/// reported (severity warning: the search is wider than asked, so the caller may refuse it).
pub fn translate_search_params(
    resource_type: &str,
    params: Vec<(String, String)>,
    from: FhirVersion,
    to: FhirVersion,
) -> (Vec<(String, String)>, Vec<Issue>) {
    let mut issues = Vec::new();
    let mut params = params;
    let mut resource_type = resource_type.to_owned();
    let mut version = from;
    while version != to {
        let next = crate::next_version(version, to);
        params = step(&resource_type, params, version, next, &mut issues);
        resource_type = renamed_type(&resource_type, version, next).to_owned();
        version = next;
    }
    (params, issues)
}

/// Parameters about the result set rather than the resources; valid in every version.
const RESULT_PARAMETERS: &[&str] = &[
    "_count",
    "_sort",
    "_include",
    "_revinclude",
    "_summary",
    "_elements",
    "_format",
    "_total",
    "_contained",
    "_containedType",
    "_pretty",
    "_at",
    "_since",
    "_list",
    "_has",
    "_type",
    "_filter",
    "_text",
    "_content",
    "_query",
    "_id",
    "_lastUpdated",
    "_tag",
    "_profile",
    "_security",
    "_graph",
    "_maxresults",
    "_score",
];

/// Renames for the upward steps: (resource type, old name, new name). Reversed downward.
const RENAMES_STU3_R4: &[(&str, &str, &str)] = &[
    ("CarePlan", "context", "encounter"),
    ("CarePlan", "definition", "instantiates-canonical"),
    ("CareTeam", "context", "encounter"),
    ("Condition", "asserted-date", "recorded-date"),
    ("Condition", "context", "encounter"),
    ("Consent", "securitylabel", "security-label"),
    ("Consent", "source", "source-reference"),
    ("DiagnosticReport", "context", "encounter"),
    ("DiagnosticReport", "image", "media"),
    ("DocumentReference", "class", "category"),
    ("DocumentReference", "indexed", "date"),
    ("DocumentReference", "securitylabel", "security-label"),
    ("DocumentReference", "related-ref", "related"),
    ("Encounter", "episodeofcare", "episode-of-care"),
    ("Encounter", "incomingreferral", "based-on"),
    ("Encounter", "reason", "reason-code"),
    ("Goal", "status", "lifecycle-status"),
    ("Immunization", "practitioner", "performer"),
    ("Immunization", "reason", "reason-code"),
    ("Immunization", "reason-not-given", "status-reason"),
    ("MedicationRequest", "context", "encounter"),
    ("Observation", "context", "encounter"),
    ("Procedure", "context", "encounter"),
    ("Procedure", "definition", "instantiates-canonical"),
    ("ProcedureRequest", "context", "encounter"),
    ("ProcedureRequest", "definition", "instantiates-canonical"),
    ("Provenance", "entity-ref", "entity"),
];

const RENAMES_R4B_R5: &[(&str, &str, &str)] = &[
    ("DeviceUseStatement", "subject", "patient"),
    ("AllergyIntolerance", "asserter", "participant"),
    ("AllergyIntolerance", "manifestation", "manifestation-code"),
    ("AuditEvent", "type", "category"),
    ("AuditEvent", "subtype", "code"),
    ("Condition", "asserter", "participant-actor"),
    ("Consent", "organization", "manager"),
    ("DocumentReference", "authenticator", "attester"),
    ("DocumentReference", "encounter", "context"),
    ("DocumentReference", "event", "event-code"),
    ("DocumentReference", "format", "format-code"),
    ("Encounter", "diagnosis", "diagnosis-reference"),
    ("Medication", "manufacturer", "marketingauthorizationholder"),
    ("MedicationStatement", "context", "encounter"),
    ("ServiceRequest", "code", "code-concept"),
];

/// Parameter names per version: resource type → names.
type Names = HashMap<&'static str, HashSet<&'static str>>;

fn names(version: FhirVersion) -> &'static Names {
    fn parse(text: &'static str) -> Names {
        let mut names: Names = HashMap::new();
        for line in text.lines() {
            if let Some((resource_type, code)) = line.split_once('\t') {
                names.entry(resource_type).or_default().insert(code);
            }
        }
        names
    }
    static STU3: LazyLock<Names> = LazyLock::new(|| parse(include_str!("data/search_stu3.txt")));
    static R4: LazyLock<Names> = LazyLock::new(|| parse(include_str!("data/search_r4.txt")));
    static R4B: LazyLock<Names> = LazyLock::new(|| parse(include_str!("data/search_r4b.txt")));
    static R5: LazyLock<Names> = LazyLock::new(|| parse(include_str!("data/search_r5.txt")));
    match version {
        FhirVersion::Stu3 => &STU3,
        FhirVersion::R4 => &R4,
        FhirVersion::R4B => &R4B,
        FhirVersion::R5 => &R5,
    }
}

fn defined(version: FhirVersion, resource_type: &str, name: &str) -> bool {
    let names = names(version);
    let has = |t: &str| names.get(t).is_some_and(|n| n.contains(name));
    has(resource_type) || has("Resource") || has("DomainResource")
}

fn renamed(
    resource_type: &str,
    name: &str,
    from: FhirVersion,
    to: FhirVersion,
) -> Option<&'static str> {
    let (table, upward) = match (from, to) {
        (FhirVersion::Stu3, FhirVersion::R4) => (RENAMES_STU3_R4, true),
        (FhirVersion::R4, FhirVersion::Stu3) => (RENAMES_STU3_R4, false),
        (FhirVersion::R4B, FhirVersion::R5) => (RENAMES_R4B_R5, true),
        (FhirVersion::R5, FhirVersion::R4B) => (RENAMES_R4B_R5, false),
        _ => return None,
    };
    table.iter().find_map(|&(t, old, new)| {
        let t_here = if upward {
            t
        } else {
            renamed_type(t, FhirVersion::Stu3, to.max(from))
        };
        let matches_type = t == resource_type || t_here == resource_type;
        match (upward, matches_type) {
            (true, true) if old == name => Some(new),
            (false, true) if new == name => Some(old),
            _ => None,
        }
    })
}

fn step(
    resource_type: &str,
    params: Vec<(String, String)>,
    from: FhirVersion,
    to: FhirVersion,
    issues: &mut Vec<Issue>,
) -> Vec<(String, String)> {
    let target_type = renamed_type(resource_type, from, to);
    let mut out = Vec::with_capacity(params.len());
    for (key, value) in params {
        // `name:modifier` or `name.chain`: the name is what differs between versions.
        let split = key.find([':', '.']).unwrap_or(key.len());
        let (name, rest) = key.split_at(split);
        let rest = rename_types_in(rest, from, to);
        if name == "_include" || name == "_revinclude" {
            match include(&value, from, to) {
                Ok(value) => out.push((format!("{name}{rest}"), value)),
                Err(diagnostics) => issues.push(
                    Issue::new(Severity::Warning, IssueCode::NotSupported, diagnostics)
                        .at(format!("{name}={value}")),
                ),
            }
            continue;
        }
        let value = rename_types_in(&value, from, to);
        // An identifier's system is a naming system; with `:of-type`, the first part is the
        // identifier type's code system.
        let value = if name == "identifier" && rest != ":of-type" {
            value
        } else {
            rename_code_systems_in(value, from, to)
        };
        if RESULT_PARAMETERS.contains(&name) || defined(to, target_type, name) {
            out.push((format!("{name}{rest}"), value));
            continue;
        }
        if let Some(new) = renamed(resource_type, name, from, to) {
            out.push((format!("{new}{rest}"), value));
            continue;
        }
        let diagnostics = if defined(from, resource_type, name) {
            format!(
                "search parameter `{name}` of {resource_type} ({from}) has no counterpart in {to}; removed, so the search is wider than asked"
            )
        } else {
            format!(
                "search parameter `{name}` is not defined for {resource_type} in {from} or {to}; removed, so the search is wider than asked"
            )
        };
        issues.push(
            Issue::new(Severity::Warning, IssueCode::NotSupported, diagnostics)
                .at(format!("{resource_type}.{name}")),
        );
    }
    out
}

/// A token value's code systems (`system|code`, alternatives separated by commas) as `to`
/// names them: the systems R4 moved to HL7 Terminology, between STU3 and R4 (an exact
/// mapping, as in resources).
fn rename_code_systems_in(value: String, from: FhirVersion, to: FhirVersion) -> String {
    if !value.contains('|') {
        return value;
    }
    let mut changed = false;
    let items: Vec<String> = value
        .split(',')
        .map(|item| match item.split_once('|') {
            Some((system, rest)) => match crate::code_system_uri(system, from, to) {
                Some(renamed) => {
                    changed = true;
                    format!("{renamed}|{rest}")
                }
                None => item.to_owned(),
            },
            None => item.to_owned(),
        })
        .collect();
    if changed { items.join(",") } else { value }
}

/// An `_include`/`_revinclude` value (`Type:param[:Target]`, or `*`) in `to`'s names; `Err`
/// (the diagnostics) when the parameter has no counterpart, so fewer resources come back.
fn include(value: &str, from: FhirVersion, to: FhirVersion) -> Result<String, String> {
    let mut parts = value.splitn(3, ':');
    let (Some(source_type), Some(param)) = (parts.next(), parts.next()) else {
        return Ok(value.to_owned());
    };
    let target = parts.next();
    let target_type = renamed_type(source_type, from, to);
    if !crate::is_supported(target_type, to) {
        return Err(format!(
            "`{value}`: resource type {source_type} does not exist in {to}; the include was removed, so resources of that type are not included"
        ));
    }
    let param = if param == "*" || defined(to, target_type, param) {
        param
    } else if let Some(new) = renamed(source_type, param, from, to) {
        new
    } else {
        return Err(format!(
            "`{value}`: {source_type} has no search parameter `{param}` in {to}; the include was removed, so included resources are missing"
        ));
    };
    Ok(match target {
        Some(t) => format!("{target_type}:{param}:{}", renamed_type(t, from, to)),
        None => format!("{target_type}:{param}"),
    })
}

/// `ProcedureRequest/1` → `ServiceRequest/1` (and back) in values and modifiers.
fn rename_types_in(text: &str, from: FhirVersion, to: FhirVersion) -> String {
    let (old, new) = match (from, to) {
        (FhirVersion::Stu3, _) => ("ProcedureRequest", "ServiceRequest"),
        (_, FhirVersion::Stu3) => ("ServiceRequest", "ProcedureRequest"),
        _ => return text.to_owned(),
    };
    if text.contains(old) {
        text.replace(old, new)
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn token_code_systems_follow_the_version() {
        let (out, issues) = translate_search_params(
            "Observation",
            p(&[
                (
                    "category",
                    "http://hl7.org/fhir/observation-category|laboratory,http://loinc.org|x",
                ),
                ("code", "http://hl7.org/fhir/v2/0078|H"),
                ("identifier", "http://hl7.org/fhir/v2/0203|MR-1"),
                ("identifier:of-type", "http://hl7.org/fhir/v2/0203|MR|1"),
                ("status", "final"),
            ]),
            FhirVersion::Stu3,
            FhirVersion::R5,
        );
        assert_eq!(
            out,
            p(&[
                (
                    "category",
                    "http://terminology.hl7.org/CodeSystem/observation-category|laboratory,http://loinc.org|x"
                ),
                ("code", "http://terminology.hl7.org/CodeSystem/v2-0078|H"),
                ("identifier", "http://hl7.org/fhir/v2/0203|MR-1"),
                (
                    "identifier:of-type",
                    "http://terminology.hl7.org/CodeSystem/v2-0203|MR|1"
                ),
                ("status", "final"),
            ])
        );
        assert!(issues.is_empty(), "{issues:?}");
        let (back, _) =
            translate_search_params("Observation", out, FhirVersion::R5, FhirVersion::Stu3);
        assert_eq!(
            back[1],
            ("code".into(), "http://hl7.org/fhir/v2/0078|H".into())
        );
    }

    #[test]
    fn renamed_removed_and_kept() {
        let (out, issues) = translate_search_params(
            "Observation",
            p(&[
                ("context", "Encounter/1"),
                ("code", "1234-5"),
                ("related-type", "has-member"),
                ("_count", "10"),
            ]),
            FhirVersion::Stu3,
            FhirVersion::R4,
        );
        assert_eq!(
            out,
            p(&[
                ("encounter", "Encounter/1"),
                ("code", "1234-5"),
                ("_count", "10")
            ])
        );
        assert_eq!(issues.len(), 1);
        assert_eq!(
            issues[0].expression,
            vec!["Observation.related-type".to_owned()]
        );
    }

    #[test]
    fn composes_steps_and_reverses() {
        let (out, issues) = translate_search_params(
            "DocumentReference",
            p(&[("indexed", "ge2020"), ("encounter:Encounter", "1")]),
            FhirVersion::Stu3,
            FhirVersion::R5,
        );
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(out, p(&[("date", "ge2020"), ("context:Encounter", "1")]));
        let (back, issues) =
            translate_search_params("DocumentReference", out, FhirVersion::R5, FhirVersion::Stu3);
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(
            back,
            p(&[("indexed", "ge2020"), ("encounter:Encounter", "1")])
        );
    }

    #[test]
    fn includes_follow_renames() {
        let (out, issues) = translate_search_params(
            "MedicationRequest",
            p(&[
                ("_include", "MedicationRequest:context"),
                ("_revinclude", "Observation:related-target"),
            ]),
            FhirVersion::Stu3,
            FhirVersion::R4,
        );
        assert_eq!(out, p(&[("_include", "MedicationRequest:encounter")]));
        assert_eq!(issues.len(), 1);
    }

    #[test]
    fn includes_of_every_type_are_kept_and_absent_types_said_so() {
        // Claim, Coverage, Appointment… are not clinical core types: their parameters exist.
        let (out, issues) = translate_search_params(
            "Patient",
            p(&[
                ("_revinclude", "Claim:patient"),
                ("_revinclude", "Coverage:beneficiary"),
                ("_revinclude", "DeviceUseStatement:subject"),
                ("_revinclude", "Media:subject"),
            ]),
            FhirVersion::R4,
            FhirVersion::R5,
        );
        assert_eq!(
            out,
            p(&[
                ("_revinclude", "Claim:patient"),
                ("_revinclude", "Coverage:beneficiary"),
                ("_revinclude", "DeviceUsage:patient"),
            ])
        );
        // DeviceUseStatement's `subject` is `patient` in R5; Media does not exist in R5.
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert!(
            issues[0].diagnostics.contains("Media does not exist in R5"),
            "{issues:?}"
        );
    }

    #[test]
    fn procedure_request_becomes_service_request() {
        let (out, issues) = translate_search_params(
            "ProcedureRequest",
            p(&[
                ("context", "Encounter/1"),
                ("based-on", "ProcedureRequest/9"),
            ]),
            FhirVersion::Stu3,
            FhirVersion::R4,
        );
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(
            out,
            p(&[
                ("encounter", "Encounter/1"),
                ("based-on", "ServiceRequest/9")
            ])
        );
    }
}
