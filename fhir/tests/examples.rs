//! The rule of whose data and response shaping over every official example of each FHIR
//! version (`ASSENT_FHIR_EXAMPLES`, default `../shared/data/fhir-examples`; skipped with a
//! note when absent). Owns the checks made independently of the rule: every literal
//! `Patient/…` reference found by a plain text search is placed, and each shaped example keeps
//! exactly what the spec's rules keep. Leaves out the tables' own tests (in the crate).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use assent_fhir::FhirVersion;
use assent_fhir::compartment::{PatientRef, ReferenceContext, parse_search, patients_of};
use assent_fhir::shaping::{Shape, subsetted_system, top_elements};
use serde_json::Value;

fn examples_root() -> PathBuf {
    match std::env::var_os("ASSENT_FHIR_EXAMPLES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/fhir-examples"),
    }
}

fn folder(version: FhirVersion) -> &'static str {
    match version {
        FhirVersion::Stu3 => "stu3",
        FhirVersion::R4 => "r4",
        FhirVersion::R4B => "r4b",
        FhirVersion::R5 => "r5",
    }
}

/// Every example of `version`, parsed, with its file name; `None` when the folder is absent.
fn examples(version: FhirVersion) -> Option<Vec<(String, Value)>> {
    let dir = examples_root().join(folder(version));
    let entries = std::fs::read_dir(&dir).ok()?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let text = std::fs::read_to_string(&path).expect("example readable");
        let value: Value = serde_json::from_str(&text).expect("example is JSON");
        out.push((name.unwrap_or_default(), value));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Some(out)
}

fn skipped(version: FhirVersion) -> bool {
    let dir = examples_root().join(folder(version));
    if dir.is_dir() {
        return false;
    }
    println!(
        "note: {} absent; the official examples of {} are not checked",
        dir.display(),
        version.name()
    );
    true
}

/// A literal patient reference found by text search: `[base/]Patient/id[/_history/v]`.
struct Literal {
    base: Option<String>,
    id: String,
}

/// Every string of `value` (narrative `div`s aside) that is, as a whole, a literal reference
/// to a Patient: a plain text search, independent of the rule.
fn literal_patient_references(value: &Value, out: &mut Vec<Literal>) {
    match value {
        Value::String(s) => {
            if let Some(literal) = as_patient_literal(s) {
                out.push(literal);
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|v| literal_patient_references(v, out)),
        Value::Object(object) => {
            for (k, v) in object {
                if k != "div" {
                    literal_patient_references(v, out);
                }
            }
        }
        _ => {}
    }
}

fn as_patient_literal(s: &str) -> Option<Literal> {
    let at = s.find("Patient/")?;
    if at > 0 && !s[..at].ends_with('/') {
        return None;
    }
    let base = (at > 0).then(|| s[..at - 1].to_owned());
    if base.as_deref().is_some_and(|b| !b.starts_with("http")) {
        return None;
    }
    let rest = &s[at + "Patient/".len()..];
    let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let id_ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    let tail_ok = tail.is_empty()
        || tail
            .strip_prefix("_history/")
            .is_some_and(|v| !v.is_empty() && !v.contains('/'));
    (id_ok && tail_ok).then(|| Literal {
        base,
        id: id.to_owned(),
    })
}

#[test]
fn every_literal_patient_reference_in_the_official_examples_is_placed() {
    let mut examples_seen = 0;
    let mut literals_seen = 0;
    let mut walk_time = Duration::ZERO;
    let mut with_unknown = 0;
    let mut failures = Vec::new();
    for version in FhirVersion::ALL {
        if skipped(version) {
            continue;
        }
        for (name, example) in examples(version).unwrap_or_default() {
            examples_seen += 1;
            let mut literals = Vec::new();
            literal_patient_references(&example, &mut literals);
            literals_seen += literals.len();
            // With no known base, an absolute reference to a Patient cannot be placed.
            let started = Instant::now();
            let alone = patients_of(&example, version, &ReferenceContext::default());
            walk_time += started.elapsed();
            with_unknown += usize::from(alone.unknown > 0);
            for literal in &literals {
                match &literal.base {
                    None if !alone.known.contains(&PatientRef::Local(literal.id.clone())) => {
                        failures.push(format!("{name}: Patient/{} not placed", literal.id))
                    }
                    Some(base) if alone.unknown == 0 => {
                        failures.push(format!("{name}: {base}/Patient/{} not counted", literal.id))
                    }
                    _ => {}
                }
            }
            // With their bases known, every one of them is a local patient.
            let context = ReferenceContext {
                local_bases: literals.iter().filter_map(|l| l.base.clone()).collect(),
                ..ReferenceContext::default()
            };
            let known = patients_of(&example, version, &context);
            for literal in &literals {
                if !known.known.contains(&PatientRef::Local(literal.id.clone())) {
                    failures.push(format!(
                        "{name}: {:?}/Patient/{} not placed under a known base",
                        literal.base, literal.id
                    ));
                }
            }
            // Any version's tables read any example without panicking.
            for other in FhirVersion::ALL {
                let _ = patients_of(&example, other, &context);
            }
        }
    }
    println!(
        "{examples_seen} examples ({with_unknown} with a patient the rule cannot place when no \
         base or identifier system is known), {literals_seen} literal patient references, \
         walked in {walk_time:?}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    if examples_seen > 0 {
        assert!(examples_seen > 2000, "only {examples_seen} examples");
        assert!(literals_seen > 500, "only {literals_seen} literals");
    }
}

/// Whether a shape keeps a top-level element, by JSON name.
type Keeps<'a> = dyn Fn(&str) -> bool + 'a;

/// The top-level JSON name `key` (or the element `_key` extends).
fn element_name(key: &str) -> &str {
    key.strip_prefix('_').unwrap_or(key)
}

#[test]
fn shaping_the_official_examples_keeps_what_the_spec_says() {
    let shapes = |q: &str| Shape::from_params(&parse_search(q)).expect("a valid shape");
    let mut shaped = 0;
    let mut failures = Vec::new();
    for version in FhirVersion::ALL {
        if skipped(version) {
            continue;
        }
        for (name, example) in examples(version).unwrap_or_default() {
            let Some(original) = example.as_object() else {
                continue;
            };
            let resource_type = original
                .get("resourceType")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let top = top_elements(version, resource_type);
            assert!(
                !top.is_empty(),
                "{name}: {resource_type} unknown in {version:?}"
            );
            let flags = |key: &str| top.iter().find(|e| e.json == element_name(key));
            let always = |key: &str| matches!(element_name(key), "resourceType" | "id" | "meta");
            let mandatory = |key: &str| flags(key).is_some_and(|e| e.mandatory);
            let summary = |key: &str| flags(key).is_some_and(|e| e.summary);
            // The first two elements that are neither always kept nor mandatory, by name.
            let listed: Vec<&str> = original
                .keys()
                .map(|k| element_name(k))
                .filter(|k| !always(k) && !mandatory(k))
                .filter_map(|k| flags(k).map(|e| e.base))
                .take(2)
                .collect();
            let elements = format!("_elements={}", listed.join(","));
            let rules: [(&str, &Keeps); 4] = [
                ("_summary=true", &|k| {
                    always(k) || summary(k) || mandatory(k)
                }),
                ("_summary=text", &|k| {
                    always(k) || mandatory(k) || element_name(k) == "text"
                }),
                ("_summary=data", &|k| element_name(k) != "text"),
                (&elements, &|k| {
                    always(k) || mandatory(k) || flags(k).is_some_and(|e| listed.contains(&e.base))
                }),
            ];
            for (query, keeps) in rules {
                let mut resource = example.clone();
                let cut = shapes(query).apply(&mut resource, version);
                let Some(after) = resource.as_object() else {
                    continue;
                };
                for key in original.keys() {
                    if keeps(key) != after.contains_key(key) {
                        failures.push(format!("{name} {query}: {key} kept={}", !keeps(key)));
                    }
                }
                let removed = original.keys().any(|k| !keeps(k));
                if cut != removed {
                    failures.push(format!("{name} {query}: cut={cut}"));
                }
                let tagged = after
                    .get("meta")
                    .and_then(|m| m.get("tag"))
                    .and_then(Value::as_array)
                    .is_some_and(|tags| {
                        tags.iter().any(|t| {
                            t.get("code").and_then(Value::as_str) == Some("SUBSETTED")
                                && t.get("system").and_then(Value::as_str)
                                    == Some(subsetted_system(version))
                        })
                    });
                if tagged != removed {
                    failures.push(format!("{name} {query}: SUBSETTED={tagged}"));
                }
                shaped += 1;
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    println!("{shaped} shaped examples checked");
}
