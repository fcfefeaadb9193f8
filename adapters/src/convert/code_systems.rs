//! Code-system URIs between STU3 and R4. R4 moved the code systems HL7 maintains outside the
//! core specification to HL7 Terminology (THO): every v2 table (`http://hl7.org/fhir/v2/0203`
//! → `http://terminology.hl7.org/CodeSystem/v2-0203`, versioned tables too:
//! `…/v2/0360/2.7` → `…/v2-0360/2.7`), every v3 code system (`http://hl7.org/fhir/v3/ActCode`
//! → `…/CodeSystem/v3-ActCode`), and the FHIR-named code systems listed in
//! `data/code_systems_moved.txt` (`http://hl7.org/fhir/observation-category` →
//! `…/CodeSystem/observation-category`; generated from the CodeSystem resources of both
//! versions by `tools/gen_code_systems.py`). Those the core binds as required kept their URI
//! (`http://hl7.org/fhir/administrative-gender`) and are not touched. STU3 code systems R4
//! renamed or retired are not mapped either: they pass as written.
//!
//! The same code system under its other name is an exact mapping: no issue, as for any other
//! exact mapping. R4B and R5 name these systems as R4 does, so only the STU3 ↔ R4 step maps.
//!
//! Applies to every `system` of the tree (`Coding.system`, `Quantity.system` and its
//! profiles, a ValueSet's `compose.include.system` and `expansion.contains.system`), except
//! an `Identifier.system` (a naming system, not a code system: the object with a string
//! `value`). An input that already holds the target's URI for a moved system (an STU3
//! resource with a THO URI, an R4 resource with an STU3 URI) keeps it, with an information
//! issue at its path: converting back gives the other version's URI, so the difference is
//! said, never silent.

use std::collections::HashSet;
use std::sync::LazyLock;

use assent_fhir::{FhirVersion, IssueCode, Severity};
use serde_json::Value;

use super::Ctx;

const FHIR: &str = "http://hl7.org/fhir/";
const THO: &str = "http://terminology.hl7.org/CodeSystem/";

/// The FHIR-named code systems of STU3 that R4 names under THO with the same name.
static MOVED: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../data/code_systems_moved.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
});

/// `system` (an STU3 URI) as R4 names it, when R4 names it otherwise.
pub(crate) fn stu3_to_r4(system: &str) -> Option<String> {
    let rest = system.strip_prefix(FHIR)?;
    if let Some(table) = rest.strip_prefix("v2/").filter(|t| !t.is_empty()) {
        return Some(format!("{THO}v2-{table}"));
    }
    if let Some(name) = rest.strip_prefix("v3/").filter(|n| !n.is_empty()) {
        return Some(format!("{THO}v3-{name}"));
    }
    MOVED.contains(rest).then(|| format!("{THO}{rest}"))
}

/// `system` (an R4 URI) as STU3 names it, when STU3 names it otherwise.
pub(crate) fn r4_to_stu3(system: &str) -> Option<String> {
    let rest = system.strip_prefix(THO)?;
    if let Some(table) = rest.strip_prefix("v2-").filter(|t| !t.is_empty()) {
        return Some(format!("{FHIR}v2/{table}"));
    }
    if let Some(name) = rest.strip_prefix("v3-").filter(|n| !n.is_empty()) {
        return Some(format!("{FHIR}v3/{name}"));
    }
    MOVED.contains(rest).then(|| format!("{FHIR}{rest}"))
}

/// `system` as `to` names it, for a step between STU3 and R4 (`None`: the same in both, or
/// not a step between them).
fn mapped(system: &str, from: FhirVersion, to: FhirVersion) -> Option<String> {
    match (from, to) {
        (FhirVersion::Stu3, FhirVersion::R4) => stu3_to_r4(system),
        (FhirVersion::R4, FhirVersion::Stu3) => r4_to_stu3(system),
        _ => None,
    }
}

/// Renames every code-system URI of `resource` (in `ctx.from`'s terms) as `ctx.to` names
/// it; only for the STU3 ↔ R4 steps.
pub(crate) fn rename(resource: &mut Value, ctx: &mut Ctx) {
    if !matches!(
        (ctx.from, ctx.to),
        (FhirVersion::Stu3, FhirVersion::R4) | (FhirVersion::R4, FhirVersion::Stu3)
    ) {
        return;
    }
    let mut path = Vec::new();
    walk(resource, &mut path, ctx, 0);
}

fn walk(value: &mut Value, path: &mut Vec<String>, ctx: &mut Ctx, depth: usize) {
    if depth > 256 {
        return;
    }
    match value {
        Value::Object(m) => {
            let restart = match m.get("resourceType").and_then(Value::as_str) {
                Some(t) => Some(std::mem::replace(path, vec![t.to_owned()])),
                None => None,
            };
            let identifier = m.get("value").is_some_and(Value::is_string);
            for (key, v) in m.iter_mut() {
                match v {
                    Value::String(system) if key == "system" && !identifier => {
                        let (from, to) = (ctx.from, ctx.to);
                        if let Some(renamed) = mapped(system, from, to) {
                            *system = renamed;
                        } else if let Some(own) = mapped(system, to, from) {
                            let at = format!("{}.system", path.join("."));
                            ctx.issue(
                                Severity::Information,
                                IssueCode::Informational,
                                &at,
                                format!(
                                    "{at}: the code system URI {system} is how {to} names it ({from} names it {own}); kept as it is"
                                ),
                            );
                        }
                    }
                    Value::Object(_) | Value::Array(_) => {
                        path.push(key.clone());
                        walk(v, path, ctx, depth + 1);
                        path.pop();
                    }
                    _ => {}
                }
            }
            if let Some(outer) = restart {
                *path = outer;
            }
        }
        Value::Array(items) => {
            for item in items {
                walk(item, path, ctx, depth + 1);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moved_systems_map_both_ways_and_others_pass() {
        for (stu3, r4) in [
            (
                "http://hl7.org/fhir/v2/0203",
                "http://terminology.hl7.org/CodeSystem/v2-0203",
            ),
            (
                "http://hl7.org/fhir/v2/0360/2.7",
                "http://terminology.hl7.org/CodeSystem/v2-0360/2.7",
            ),
            (
                "http://hl7.org/fhir/v3/ActCode",
                "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            ),
            (
                "http://hl7.org/fhir/v3/orderableDrugForm",
                "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm",
            ),
            (
                "http://hl7.org/fhir/observation-category",
                "http://terminology.hl7.org/CodeSystem/observation-category",
            ),
            (
                "http://hl7.org/fhir/restful-security-service",
                "http://terminology.hl7.org/CodeSystem/restful-security-service",
            ),
        ] {
            assert_eq!(stu3_to_r4(stu3).as_deref(), Some(r4), "{stu3}");
            assert_eq!(r4_to_stu3(r4).as_deref(), Some(stu3), "{r4}");
        }
        for same in [
            "http://hl7.org/fhir/administrative-gender",
            "http://hl7.org/fhir/observation-status",
            "http://hl7.org/fhir/sid/us-ssn",
            "http://loinc.org",
            "http://snomed.info/sct",
            "http://hl7.org/fhir/v2/",
            "http://terminology.hl7.org/CodeSystem/goal-achievement",
            "http://hl7.org/fhir/allergy-clinical-status",
        ] {
            assert_eq!(stu3_to_r4(same), None, "{same}");
            assert_eq!(r4_to_stu3(same), None, "{same}");
        }
        assert!(MOVED.len() > 100);
    }
}
