//! The `Dosage` datatype, the one datatype among the supported resources' elements whose
//! shape changed: STU3 `dose[x]`/`rate[x]` became R4 `doseAndRate`; R4 `asNeeded[x]` became
//! R5 `asNeeded` + `asNeededFor`, and R5 `maxDosePerPeriod` repeats. Converted in place;
//! what does not fit is carried (`extension-Dosage.{element}`, one carrier per item) and
//! restored on the way back.
//! Leaves out `Timing` (unchanged in shape) and the other datatypes (unchanged).

use assent_fhir::FhirVersion;
use serde_json::{Map, Value};

use super::Ctx;
use super::extension::{decode_value, encode_value, prefix};

/// Dosage elements that repeat, in the version that has them repeat.
const LISTS: &[&str] = &["doseAndRate", "asNeededFor", "maxDosePerPeriod"];

/// The datatype of the carried parts (`None`: the R4 `doseAndRate` element, by shape).
fn part_type(key: &str) -> Option<&'static str> {
    match key {
        "asNeeded" => Some("boolean"),
        "asNeededFor" => Some("CodeableConcept"),
        "maxDosePerPeriod" => Some("Ratio"),
        _ => None,
    }
}

/// Convert one `Dosage` value (an item of `path`) for the step in `ctx`.
pub(crate) fn convert(value: &mut Value, path: &str, ctx: &mut Ctx) {
    let Value::Object(dosage) = value else {
        return;
    };
    match (ctx.from, ctx.to) {
        (FhirVersion::Stu3, FhirVersion::R4) => dose_and_rate_in(dosage),
        (FhirVersion::R4, FhirVersion::Stu3) => dose_and_rate_out(dosage, path, ctx),
        (FhirVersion::R4B, FhirVersion::R5) => {
            as_needed_r4_to_r5(dosage);
            wrap_list(dosage, "maxDosePerPeriod");
        }
        (FhirVersion::R5, FhirVersion::R4B) => {
            as_needed_r5_to_r4(dosage, path, ctx);
            first_of_list(dosage, "maxDosePerPeriod", path, ctx);
        }
        _ => {}
    }
    restore(dosage, ctx);
}

const DOSE_KEYS: &[&str] = &["doseRange", "doseQuantity"];
const RATE_KEYS: &[&str] = &["rateRatio", "rateRange", "rateQuantity"];

fn dose_and_rate_in(dosage: &mut Map<String, Value>) {
    let mut entry = Map::new();
    for &key in DOSE_KEYS.iter().chain(RATE_KEYS) {
        if let Some(v) = dosage.remove(key) {
            entry.insert(key.into(), v);
        }
    }
    // STU3 also spelled the simple quantity `doseSimpleQuantity`/`rateSimpleQuantity`.
    for (old, new) in [
        ("doseSimpleQuantity", "doseQuantity"),
        ("rateSimpleQuantity", "rateQuantity"),
    ] {
        if let Some(v) = dosage.remove(old) {
            entry.insert(new.into(), v);
        }
    }
    if !entry.is_empty() {
        dosage.insert(
            "doseAndRate".into(),
            Value::Array(vec![Value::Object(entry)]),
        );
    }
}

fn dose_and_rate_out(dosage: &mut Map<String, Value>, path: &str, ctx: &mut Ctx) {
    let Some(Value::Array(items)) = dosage.remove("doseAndRate") else {
        return;
    };
    let fits = items.len() == 1
        && items[0].as_object().is_some_and(|m| {
            m.keys()
                .all(|k| DOSE_KEYS.contains(&k.as_str()) || RATE_KEYS.contains(&k.as_str()))
        });
    if fits {
        if let Some(Value::Object(entry)) = items.into_iter().next() {
            dosage.extend(entry);
        }
    } else {
        carry(dosage, "doseAndRate", Value::Array(items), path, ctx);
    }
}

fn as_needed_r4_to_r5(dosage: &mut Map<String, Value>) {
    if let Some(v) = dosage.remove("asNeededBoolean") {
        dosage.insert("asNeeded".into(), v);
    }
    if let Some(v) = dosage.remove("asNeededCodeableConcept") {
        dosage.insert("asNeededFor".into(), Value::Array(vec![v]));
    }
}

fn as_needed_r5_to_r4(dosage: &mut Map<String, Value>, path: &str, ctx: &mut Ctx) {
    let flag = dosage.remove("asNeeded");
    let reasons = dosage.remove("asNeededFor");
    match (flag, reasons) {
        (flag, Some(Value::Array(mut reasons)))
            if reasons.len() == 1 && flag.as_ref().is_none_or(|f| f == &Value::Bool(true)) =>
        {
            if let Some(flag) = flag {
                carry(dosage, "asNeeded", flag, path, ctx);
            }
            dosage.insert("asNeededCodeableConcept".into(), reasons.swap_remove(0));
        }
        (flag, Some(reasons)) => {
            if let Some(flag) = flag {
                dosage.insert("asNeededBoolean".into(), flag);
            }
            carry(dosage, "asNeededFor", reasons, path, ctx);
        }
        (Some(flag), None) => {
            dosage.insert("asNeededBoolean".into(), flag);
        }
        (None, None) => {}
    }
}

fn wrap_list(dosage: &mut Map<String, Value>, key: &str) {
    if let Some(v) = dosage.remove(key) {
        dosage.insert(key.into(), Value::Array(vec![v]));
    }
}

fn first_of_list(dosage: &mut Map<String, Value>, key: &str, path: &str, ctx: &mut Ctx) {
    let Some(Value::Array(mut items)) = dosage.remove(key) else {
        return;
    };
    if items.len() > 1 {
        carry(dosage, key, Value::Array(items.clone()), path, ctx);
    }
    if !items.is_empty() {
        dosage.insert(key.into(), items.swap_remove(0));
    }
}

/// Keep `value` of `Dosage.{key}` in carriers (one per item) on the dosage itself.
fn carry(dosage: &mut Map<String, Value>, key: &str, value: Value, path: &str, ctx: &mut Ctx) {
    let url = format!("{}Dosage.{key}", prefix(ctx.from));
    let items = match value {
        Value::Array(items) => items,
        other => vec![other],
    };
    let carriers = items
        .into_iter()
        .map(|item| encode_value(&url, item, part_type(key), ctx.to));
    match dosage
        .entry("extension")
        .or_insert_with(|| Value::Array(Vec::new()))
    {
        Value::Array(list) => list.extend(carriers),
        _ => return,
    }
    ctx.carried(&format!("{path}.{key}"), "does not fit the Dosage datatype");
}

/// Put back `Dosage.{key}` carried by the opposite step.
fn restore(dosage: &mut Map<String, Value>, ctx: &mut Ctx) {
    let own = prefix(ctx.to);
    let carried_key = |e: &Value| -> Option<String> {
        e.get("url")
            .and_then(Value::as_str)
            .and_then(|u| u.strip_prefix(own))
            .and_then(|p| p.strip_prefix("Dosage."))
            .map(str::to_owned)
    };
    let Some(Value::Array(list)) = dosage.get("extension") else {
        return;
    };
    if !list.iter().any(|e| carried_key(e).is_some()) {
        return;
    }
    let Some(Value::Array(list)) = dosage.remove("extension") else {
        return;
    };
    let mut kept = Vec::new();
    let mut restored: Vec<(String, Value)> = Vec::new();
    for ext in list {
        let key = carried_key(&ext);
        match (key, ext) {
            (Some(key), Value::Object(fields)) => {
                if let Some(value) = decode_value(fields, ctx.target) {
                    restored.push((key, value));
                }
            }
            (_, ext) => kept.push(ext),
        }
    }
    let mut replaced: Vec<String> = Vec::new();
    for (key, value) in restored {
        if !replaced.contains(&key) {
            // The original replaces what the conversion made of it.
            if key == "doseAndRate" {
                for k in DOSE_KEYS.iter().chain(RATE_KEYS) {
                    dosage.remove(*k);
                }
            }
            if key == "asNeededFor" || key == "asNeeded" {
                dosage.remove("asNeededCodeableConcept");
                dosage.remove("asNeededBoolean");
            }
            dosage.remove(&key);
            replaced.push(key.clone());
        }
        if LISTS.contains(&key.as_str()) {
            match dosage
                .entry(key)
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                Value::Array(items) => items.push(value),
                other => *other = Value::Array(vec![value]),
            }
        } else {
            dosage.insert(key, value);
        }
    }
    if !kept.is_empty() {
        dosage.insert("extension".into(), Value::Array(kept));
    }
}
