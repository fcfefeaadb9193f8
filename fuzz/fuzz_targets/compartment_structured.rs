//! The whose-data rule on resources built from the generated tables: a random type of a
//! random version, references to patients in every form (relative, versioned, absolute under
//! a local base or another site's, under an unknown base, identifier-only, contained, a
//! conditional reference, malformed) put on the elements the tables say may refer to a
//! Patient and on elements they do not know, and the whole wrapped in a Bundle entry,
//! `Parameters`, a container or nothing. Every patient put in must come out: placed as
//! written, or (where the rule cannot place it) counted unknown.
#![no_main]

use arbitrary::{Result, Unstructured};
use assent_fhir::FhirVersion;
use assent_fhir::compartment::{PatientRef, patient_reference_paths, patients_of};
use assent_fuzz::{
    LOCAL_BASE, MRN, OTHER_BASE, OTHER_SITE, check_every_reference_placed, context, resource_types,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

/// What one reference put in requires.
enum Want {
    Placed(PatientRef),
    PlacedOrUnknown,
}

struct Build {
    wants: Vec<Want>,
    contained: Vec<Value>,
}

fn id(u: &mut Unstructured) -> Result<String> {
    Ok(["a", "b", "x0", "p-1", "q.2", "Zz9"][u.choose_index(6)?].to_owned())
}

/// A Reference to a patient in one form, and what the rule must answer for it.
fn reference(u: &mut Unstructured, b: &mut Build, patient_path: bool) -> Result<Value> {
    let who = id(u)?;
    let lying_type = || json!(["Practitioner", "Group", "Observation"][who.len() % 3]);
    let (mut value, want) = match u.choose_index(11)? {
        0 => (
            json!({"reference": format!("Patient/{who}")}),
            Want::Placed(PatientRef::Local(who.clone())),
        ),
        1 => (
            json!({"reference": format!("Patient/{who}/_history/2")}),
            Want::Placed(PatientRef::Local(who.clone())),
        ),
        2 => (
            json!({"reference": format!("{LOCAL_BASE}/Patient/{who}")}),
            Want::Placed(PatientRef::Local(who.clone())),
        ),
        3 => (
            json!({"reference": format!("{OTHER_BASE}/Patient/{who}/_history/1")}),
            Want::Placed(PatientRef::Site {
                site: OTHER_SITE.into(),
                id: who.clone(),
            }),
        ),
        4 => (
            json!({"reference": format!("https://elsewhere.test/fhir/Patient/{who}")}),
            Want::PlacedOrUnknown,
        ),
        5 => (
            json!({"type": "Patient", "identifier": {"system": MRN, "value": who}}),
            Want::Placed(PatientRef::Identifier {
                system: MRN.into(),
                value: who.clone(),
            }),
        ),
        6 => {
            let n = b.contained.len();
            b.contained
                .push(json!({"resourceType": "Patient", "id": format!("c{n}"),
                "identifier": [{"system": MRN, "value": who}]}));
            (
                json!({"reference": format!("#c{n}")}),
                Want::Placed(PatientRef::Identifier {
                    system: MRN.into(),
                    value: who.clone(),
                }),
            )
        }
        7 => (
            json!({"reference": format!("Patient?identifier={MRN}|{who}&active=true")}),
            Want::Placed(PatientRef::Identifier {
                system: MRN.into(),
                value: who.clone(),
            }),
        ),
        8 => (
            json!({"reference": format!("Patient/{who}/$everything")}),
            Want::PlacedOrUnknown,
        ),
        9 if patient_path => (json!({"reference": 42}), Want::PlacedOrUnknown),
        _ => (
            json!({"type": "Patient", "identifier": {"system": "urn:unknown", "value": who}}),
            if patient_path {
                Want::PlacedOrUnknown
            } else {
                return Ok(json!({"display": who}));
            },
        ),
    };
    if u.ratio(1, 4)? && value.get("reference").is_some_and(Value::is_string) {
        // A literal reference says where it points, whatever `type` claims.
        value["type"] = lying_type();
    }
    b.wants.push(want);
    Ok(value)
}

/// Puts `leaf` at `path` (JSON names below the resource), each level an object or a list.
/// `false` when a bare reference string found its place taken (the leaf is then left out).
fn put(
    u: &mut Unstructured,
    target: &mut Map<String, Value>,
    path: &[&str],
    leaf: Value,
) -> Result<bool> {
    let Some((first, rest)) = path.split_first() else {
        return Ok(false);
    };
    let as_list = u.ratio(1, 2)?;
    if rest.is_empty() && leaf.is_string() {
        if target.contains_key(*first) {
            return Ok(false);
        }
        target.insert((*first).to_owned(), leaf);
        return Ok(true);
    }
    if rest.is_empty() {
        let value = if as_list && !leaf.is_string() {
            json!([leaf])
        } else {
            leaf
        };
        match target.remove(*first) {
            Some(Value::Array(mut items)) => {
                items.push(value);
                target.insert((*first).to_owned(), Value::Array(items));
            }
            Some(Value::String(text)) => {
                target.insert((*first).to_owned(), Value::String(text));
                return Ok(false);
            }
            // Two leaves on one element: a list of both.
            Some(other) => {
                target.insert((*first).to_owned(), json!([other, value]));
            }
            None => {
                target.insert((*first).to_owned(), value);
            }
        }
        return Ok(true);
    }
    // A new object at every level, so that no two leaves share one (a leaf merged into
    // another's object would no longer be a Reference).
    let slot = match target.remove(*first) {
        None if !as_list => json!({}),
        None => json!([{}]),
        Some(Value::Array(mut items)) => {
            items.push(json!({}));
            Value::Array(items)
        }
        // A bare reference string stays as it is (the new leaf is left out).
        Some(Value::String(text)) => {
            target.insert((*first).to_owned(), Value::String(text));
            return Ok(false);
        }
        Some(other) => json!([other, {}]),
    };
    target.insert((*first).to_owned(), slot);
    let inner = match target.get_mut(*first) {
        Some(Value::Array(items)) => items.last_mut().and_then(Value::as_object_mut),
        Some(Value::Object(map)) => Some(map),
        _ => None,
    };
    match inner {
        Some(inner) => put(u, inner, rest, leaf),
        None => Ok(false),
    }
}

fn build(u: &mut Unstructured) -> Result<(FhirVersion, Value, Vec<Want>)> {
    let version = FhirVersion::ALL[u.choose_index(4)?];
    let types = resource_types(version);
    let resource_type = types[u.choose_index(types.len())?];
    let paths = patient_reference_paths(version, resource_type);
    let mut b = Build {
        wants: Vec::new(),
        contained: Vec::new(),
    };
    let mut resource = Map::new();
    resource.insert("resourceType".into(), json!(resource_type));
    resource.insert("id".into(), json!("r1"));
    for _ in 0..u.int_in_range(0..=5)? {
        let (path, patient_path): (Vec<String>, bool) = if !paths.is_empty() && u.ratio(3, 4)? {
            let p = &paths[u.choose_index(paths.len())?];
            (p.split('.').skip(1).map(str::to_owned).collect(), true)
        } else {
            // Elements the tables do not know, and references where they expect none.
            let junk = [
                "x_unknown",
                "extension",
                "modifierExtension",
                "_status",
                "text",
                "meta",
                "identifier",
                "contained",
                "reference",
                "resourceType",
            ];
            let depth = u.int_in_range(1..=3)?;
            let mut p = Vec::new();
            for level in 0..depth {
                // Not the resource's own `resourceType` (it would no longer be a resource).
                let names = if level == 0 {
                    &junk[..junk.len() - 1]
                } else {
                    &junk[..]
                };
                p.push(names[u.choose_index(names.len())?].to_owned());
            }
            (p, false)
        };
        let mut leaf = reference(u, &mut b, patient_path)?;
        // The bare string where the element is `reference` (a Reference's own, or one where
        // the tables expect a Reference object): `{"reference": "Patient/a"}` all the same.
        if path.last().is_some_and(|l| l == "reference")
            && leaf.get("reference").is_some_and(Value::is_string)
            && u.ratio(1, 3)?
        {
            leaf = leaf["reference"].clone();
        }
        let segments: Vec<&str> = path.iter().map(String::as_str).collect();
        if !put(u, &mut resource, &segments, leaf)? {
            b.wants.pop();
        }
    }
    if !b.contained.is_empty() {
        let mut contained = match resource.remove("contained") {
            Some(Value::Array(items)) => items,
            Some(other) => vec![other],
            None => Vec::new(),
        };
        contained.extend(b.contained.drain(..));
        resource.insert("contained".into(), Value::Array(contained));
    }
    let resource = Value::Object(resource);
    let whole = match u.choose_index(5)? {
        0 => resource,
        1 => {
            let full_url = [
                json!("urn:uuid:9b0e3f6e-1"),
                json!("Patient/x0"),
                json!(format!("{LOCAL_BASE}/{resource_type}/r1")),
                Value::Null,
            ][u.choose_index(4)?]
            .clone();
            let mode = ["match", "include", "outcome"][u.choose_index(3)?];
            let mut entry = json!({"resource": resource, "search": {"mode": mode}});
            if !full_url.is_null() {
                entry["fullUrl"] = full_url;
            }
            json!({"resourceType": "Bundle", "type": "searchset", "entry": [{"fullUrl": "Patient/zz", "resource": {"resourceType": "Observation"}}, entry]})
        }
        2 => {
            json!({"resourceType": "Parameters", "parameter": [{"name": "return", "resource": resource}]})
        }
        3 => {
            json!({"resourceType": "Parameters", "parameter": [{"name": "return", "part": [{"name": "nested",
            "resource": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": resource}]}}]}]})
        }
        _ => {
            json!({"resourceType": "List", "id": "l1", "contained": [resource], "entry": [{"item": {"reference": "#r1"}}]})
        }
    };
    Ok((version, whole, b.wants))
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok((version, resource, wants)) = build(&mut u) else {
        return;
    };
    let context = context();
    let found = patients_of(&resource, version, &context);
    for want in &wants {
        let ok = match want {
            Want::Placed(p) => found.known.contains(p),
            Want::PlacedOrUnknown => found.is_patient_data(),
        };
        if !ok {
            let what = match want {
                Want::Placed(p) => format!("{p:?}"),
                Want::PlacedOrUnknown => "an unknown patient".into(),
            };
            panic!("{version:?}: {what} lost: {found:?}\n{resource}");
        }
    }
    check_every_reference_placed(&resource, version, &found);
});
