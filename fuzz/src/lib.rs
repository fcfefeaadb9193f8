//! What the fuzz targets share: the reference context they run under, and an oracle of the
//! literal Patient references in a JSON value written here from the reference grammar
//! (`[base/]Patient/{id}[/_history/{v}]`), not from the rule it checks.
//!
//! Leaves out: the targets themselves (`fuzz_targets/`).

use assent_fhir::FhirVersion;
use assent_fhir::compartment::{MAX_DEPTH, PatientRef, Patients, ReferenceContext};
use serde_json::Value;

/// The local base of the site answering, a second local base (the gateway's own for the
/// site), another site's base, and the site's patient identifier system.
pub const LOCAL_BASE: &str = "http://upstream.test/fhir";
pub const GATEWAY_BASE: &str = "https://gw.test/fhir/st-mary";
pub const OTHER_BASE: &str = "https://gw.test/fhir/north";
pub const OTHER_SITE: &str = "north";
pub const MRN: &str = "urn:mrn";

pub fn context() -> ReferenceContext {
    ReferenceContext {
        local_bases: vec![LOCAL_BASE.into(), GATEWAY_BASE.into()],
        other_sites: vec![(OTHER_BASE.into(), OTHER_SITE.into())],
        patient_identifier_systems: vec![MRN.into()],
    }
}

/// Resource type names of `version`, from the generated tables (`type` lines).
pub fn resource_types(version: FhirVersion) -> Vec<&'static str> {
    let text = match version {
        FhirVersion::Stu3 => include_str!("../../fhir/data/patient-compartment-stu3.tsv"),
        FhirVersion::R4 => include_str!("../../fhir/data/patient-compartment-r4.tsv"),
        FhirVersion::R4B => include_str!("../../fhir/data/patient-compartment-r4b.tsv"),
        FhirVersion::R5 => include_str!("../../fhir/data/patient-compartment-r5.tsv"),
    };
    text.lines()
        .filter_map(|l| l.strip_prefix("type\t"))
        .collect()
}

/// What a literal reference found in the JSON requires of the rule's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// `[local base/]Patient/{id}[/_history/{v}]` or under another site's base: this patient.
    Exact(PatientRef),
    /// Any other string with a `Patient` path segment: some patient (placed or unknown).
    Some,
}

/// Where the reference was found (JSON nesting level, the root object being 1) and what it
/// requires.
#[derive(Debug, Clone)]
pub struct Found {
    pub level: usize,
    pub text: String,
    pub expect: Expect,
}

/// A FHIR id: `[A-Za-z0-9\-\.]{1,64}` (written here, not taken from the rule).
fn fhir_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// How a reference string points at a patient, if it does.
pub fn classify(text: &str) -> Option<Expect> {
    let mut site = None;
    let mut rest = text;
    for base in [LOCAL_BASE, GATEWAY_BASE] {
        if let Some(r) = text.strip_prefix(base).and_then(|r| r.strip_prefix('/')) {
            rest = r;
        }
    }
    if let Some(r) = text
        .strip_prefix(OTHER_BASE)
        .and_then(|r| r.strip_prefix('/'))
    {
        rest = r;
        site = Some(OTHER_SITE);
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let exact = match segments.as_slice() {
        ["Patient", id] => fhir_id(id).then_some(*id),
        ["Patient", id, "_history", v] => {
            (fhir_id(id) && !v.is_empty() && !v.contains('?')).then_some(*id)
        }
        _ => None,
    };
    if let Some(id) = exact
        && (rest == text || site.is_some() || !rest.contains("://"))
    {
        return Some(Expect::Exact(match site {
            Some(site) => PatientRef::Site {
                site: site.into(),
                id: id.into(),
            },
            None => PatientRef::Local(id.into()),
        }));
    }
    let path = text.split_once('?').map_or(text, |(p, _)| p);
    path.split('/')
        .any(|s| s == "Patient")
        .then_some(Expect::Some)
}

/// Every object holding a string `reference` that points at a patient, anywhere in `value`.
pub fn literal_patient_references(value: &Value) -> Vec<Found> {
    let mut out = Vec::new();
    walk(value, 1, &mut out);
    out
}

fn walk(value: &Value, level: usize, out: &mut Vec<Found>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(text)) = map.get("reference")
                && let Some(expect) = classify(text)
            {
                out.push(Found {
                    level,
                    text: text.clone(),
                    expect,
                });
            }
            map.values().for_each(|v| walk(v, level + 1, out));
        }
        Value::Array(items) => items.iter().for_each(|v| walk(v, level + 1, out)),
        _ => {}
    }
}

/// Panics when a literal patient reference of `value` is neither placed nor counted unknown.
/// A reference nested too deep for the rule (past [`MAX_DEPTH`]) may be counted unknown
/// instead of placed.
pub fn check_every_reference_placed(value: &Value, version: FhirVersion, found: &Patients) {
    for f in literal_patient_references(value) {
        let ok = match &f.expect {
            _ if f.level + 2 >= MAX_DEPTH => found.is_patient_data(),
            Expect::Exact(p) => found.known.contains(p),
            Expect::Some => found.is_patient_data(),
        };
        assert!(
            ok,
            "{version:?}: the reference {:?} (level {}) is neither placed nor counted unknown: {found:?}\n{value}",
            f.text, f.level
        );
    }
}
