//! Datatypes whose shape changed between versions, where the supported resources use them:
//! `Dosage` (STU3 `dose[x]`/`rate[x]` became R4 `doseAndRate`; R4 `asNeeded[x]` became R5
//! `asNeeded` + `asNeededFor`; R5 `maxDosePerPeriod` repeats), `Attachment` (R5 `size` is an
//! integer64, a JSON string; R5 adds `height`, `width`, `frames`, `duration`, `pages`) and
//! `Signature` (STU3 `who[x]`/`onBehalfOf[x]`/`contentType`/`blob` became R4 `who`,
//! `onBehalfOf`, `sigFormat`, `data`) and `SampledData` (R4B `period` in milliseconds became
//! R5 `interval` + `intervalUnit`; R5 adds `codeMap` and `offsets`). Converted in place; what does not fit is carried
//! (`extension-{Datatype}.{element}`, one carrier per item) and restored on the way back.
//! Leaves out datatypes nested inside other datatypes and those unchanged in shape.

use assent_fhir::FhirVersion;
use serde_json::{Map, Value};

use super::Ctx;
use super::extension::{decode_value, encode_value, prefix};

/// Elements that repeat, in the version that has them repeat.
const LISTS: &[&str] = &["doseAndRate", "asNeededFor", "maxDosePerPeriod"];

/// The datatype of the carried parts (`None`: by JSON shape).
fn part_type(key: &str) -> Option<&'static str> {
    match key {
        "asNeeded" => Some("boolean"),
        "asNeededFor" => Some("CodeableConcept"),
        "maxDosePerPeriod" => Some("Ratio"),
        "height" | "width" | "frames" | "pages" => Some("positiveInt"),
        "duration" => Some("decimal"),
        "size" => Some("string"),
        "interval" => Some("decimal"),
        "intervalUnit" => Some("code"),
        "codeMap" => Some("canonical"),
        "comparator" | "code" | "publicationStatus" => Some("code"),
        "unit" | "system" => Some("string"),
        "type" => Some("uri"),
        "classifier" => Some("CodeableConcept"),
        "resourceReference" => Some("Reference"),
        "publicationDate" => Some("date"),
        "offsets" => Some("string"),
        "whoUri" | "onBehalfOfUri" => Some("uri"),
        "targetFormat" => Some("code"),
        _ => None,
    }
}

/// Whether values of datatype `ty` may need [`convert`] in the step `from` → `to`.
pub(crate) fn changes(ty: &str, from: FhirVersion, to: FhirVersion) -> bool {
    use FhirVersion::*;
    let stu3_r4 = matches!((from, to), (Stu3, R4) | (R4, Stu3));
    let r4b_r5 = matches!((from, to), (R4B, R5) | (R5, R4B));
    match ty {
        "Dosage" => stu3_r4 || r4b_r5,
        "Signature" | "Money" | "Reference" => stu3_r4,
        "Attachment" | "SampledData" | "RelatedArtifact" => r4b_r5,
        _ => false,
    }
}

/// Whether `value` (a datatype value or a list of them) holds what [`convert`] would change:
/// a cheap test for the common datatype `Reference`, which changed only by R4's `type`.
pub(crate) fn worth_converting(ty: &str, value: &Value) -> bool {
    if ty != "Reference" {
        return true;
    }
    let has = |v: &Value| v.get("type").is_some() || v.get("extension").is_some();
    match value {
        Value::Array(items) => items.iter().any(has),
        other => has(other),
    }
}

/// STU3 `Money` is a Quantity (`value`, `comparator`, `unit`, `system`, `code`); R4 on, a
/// `value` and a `currency`. An ISO 4217 `code` is the `currency`; the rest is carried.
fn money(object: &mut Map<String, Value>, path: &str, ctx: &mut Ctx) {
    const ISO_4217: &str = "urn:iso:std:iso:4217";
    match (ctx.from, ctx.to) {
        (FhirVersion::Stu3, FhirVersion::R4) => {
            let iso = object
                .get("system")
                .is_none_or(|s| s.as_str() == Some(ISO_4217));
            if iso && let Some(code) = object.remove("code") {
                object.insert("currency".into(), code);
                object.remove("system");
            }
            for key in ["comparator", "unit", "system", "code"] {
                if let Some(v) = object.remove(key) {
                    carry(object, "Money", key, v, path, ctx);
                }
            }
        }
        (FhirVersion::R4, FhirVersion::Stu3) => {
            if let Some(currency) = object.remove("currency") {
                object.insert("system".into(), Value::String(ISO_4217.into()));
                object.insert("code".into(), currency);
            }
        }
        _ => {}
    }
    restore(object, "Money", ctx);
}

/// R4 added `Reference.type`; STU3 carries it.
fn reference(object: &mut Map<String, Value>, path: &str, ctx: &mut Ctx) {
    match (ctx.from, ctx.to) {
        (FhirVersion::R4, FhirVersion::Stu3) => {
            if let Some(v) = object.remove("type") {
                carry(object, "Reference", "type", v, path, ctx);
            }
        }
        (FhirVersion::Stu3, FhirVersion::R4) if object.contains_key("extension") => {
            restore(object, "Reference", ctx);
        }
        _ => {}
    }
}

/// R5 added `RelatedArtifact.classifier`, `resourceReference`, `publicationStatus`,
/// `publicationDate`: carried before R5.
const RELATED_ARTIFACT_R5_ONLY: &[&str] = &[
    "classifier",
    "resourceReference",
    "publicationStatus",
    "publicationDate",
];

/// `RelatedArtifact.type` codes before R5 (R5 added `part-of`, `amends`, `transforms`, ...).
const RELATED_ARTIFACT_TYPES_R4: &[&str] = &[
    "citation",
    "composed-of",
    "depends-on",
    "derived-from",
    "documentation",
    "justification",
    "predecessor",
    "successor",
];

/// R5 `RelatedArtifact.type` codes R4 lacks are kept and reported (a required binding).
fn related_artifact(object: &mut Map<String, Value>, path: &str, ctx: &mut Ctx) {
    if (ctx.from, ctx.to) == (FhirVersion::R4B, FhirVersion::R5) {
        restore(object, "RelatedArtifact", ctx);
    }
    if (ctx.from, ctx.to) != (FhirVersion::R5, FhirVersion::R4B) {
        return;
    }
    for key in RELATED_ARTIFACT_R5_ONLY {
        if let Some(v) = object.remove(*key) {
            carry(object, "RelatedArtifact", key, v, path, ctx);
        }
    }
    if let Some(code) = object.get("type").and_then(Value::as_str)
        && !RELATED_ARTIFACT_TYPES_R4.contains(&code)
    {
        let to = ctx.to;
        ctx.issue(
            assent_fhir::Severity::Warning,
            assent_fhir::IssueCode::CodeInvalid,
            &format!("{path}.type"),
            format!("{path}.type code `{code}` (R5) is not a RelatedArtifact type of {to}; kept as it is"),
        );
    }
}

/// Convert one value of datatype `ty` (an item of `path`) for the step in `ctx`.
pub(crate) fn convert(value: &mut Value, ty: &str, path: &str, ctx: &mut Ctx) {
    let Value::Object(object) = value else {
        return;
    };
    match ty {
        "Dosage" => dosage(object, path, ctx),
        "Attachment" => attachment(object, path, ctx),
        "Signature" => signature(object, path, ctx),
        "SampledData" => sampled_data(object, path, ctx),
        "RelatedArtifact" => related_artifact(object, path, ctx),
        "Money" => money(object, path, ctx),
        "Reference" => reference(object, path, ctx),
        _ => {}
    }
}

fn dosage(dosage: &mut Map<String, Value>, path: &str, ctx: &mut Ctx) {
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
    restore(dosage, "Dosage", ctx);
}

const ATTACHMENT_R5_ONLY: &[&str] = &["height", "width", "frames", "duration", "pages"];

fn attachment(attachment: &mut Map<String, Value>, path: &str, ctx: &mut Ctx) {
    match (ctx.from, ctx.to) {
        (FhirVersion::R4B, FhirVersion::R5) => {
            if let Some(n) = attachment.get("size").and_then(Value::as_u64) {
                attachment.insert("size".into(), Value::String(n.to_string()));
            }
        }
        (FhirVersion::R5, FhirVersion::R4B) => {
            if let Some(size) = attachment.remove("size") {
                match size.as_str().and_then(|s| s.parse::<u32>().ok()) {
                    Some(n) if size.as_str() == Some(n.to_string().as_str()) => {
                        attachment.insert("size".into(), Value::from(n));
                    }
                    _ => carry(attachment, "Attachment", "size", size, path, ctx),
                }
            }
            for key in ATTACHMENT_R5_ONLY {
                if let Some(v) = attachment.remove(*key) {
                    carry(attachment, "Attachment", key, v, path, ctx);
                }
            }
        }
        _ => {}
    }
    restore(attachment, "Attachment", ctx);
}

fn signature(signature: &mut Map<String, Value>, path: &str, ctx: &mut Ctx) {
    const RENAMES: &[(&str, &str)] = &[
        ("whoReference", "who"),
        ("onBehalfOfReference", "onBehalfOf"),
        ("contentType", "sigFormat"),
        ("blob", "data"),
    ];
    match (ctx.from, ctx.to) {
        (FhirVersion::Stu3, FhirVersion::R4) => {
            for &(old, new) in RENAMES {
                if let Some(v) = signature.remove(old) {
                    signature.insert(new.into(), v);
                }
            }
            for key in ["whoUri", "onBehalfOfUri"] {
                if let Some(v) = signature.remove(key) {
                    carry(signature, "Signature", key, v, path, ctx);
                }
            }
        }
        (FhirVersion::R4, FhirVersion::Stu3) => {
            for &(old, new) in RENAMES {
                if let Some(v) = signature.remove(new) {
                    signature.insert(old.into(), v);
                }
            }
            if let Some(v) = signature.remove("targetFormat") {
                carry(signature, "Signature", "targetFormat", v, path, ctx);
            }
        }
        _ => {}
    }
    restore(signature, "Signature", ctx);
}

/// Milliseconds per unit of `SampledData.intervalUnit` (UCUM time units), as a factor and a
/// power of ten: `s` is 1 × 10³ ms, `us` 1 × 10⁻³.
fn millis_per(unit: &str) -> Option<(u32, i32)> {
    Some(match unit {
        "us" => (1, -3),
        "ms" => (1, 0),
        "s" => (1, 3),
        "min" => (6, 4),
        "h" => (36, 5),
        _ => return None,
    })
}

/// `number × factor × 10^shift`, computed on the number's decimal text (never through a
/// binary float, so the digits the site wrote are the digits that come out, with the
/// precision they imply). `None` for a value that is not a decimal number.
pub(crate) fn scale_decimal(number: &Value, factor: u32, shift: i32) -> Option<Value> {
    let Value::Number(n) = number else {
        return None;
    };
    let text = n.to_string();
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.as_str()),
    };
    // Split off an exponent, then the fraction: digits × 10^-(scale).
    let (mantissa, exponent) = match body.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (body, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int_part.is_empty()
        || !int_part
            .bytes()
            .chain(frac_part.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut digits: Vec<u8> = int_part
        .bytes()
        .chain(frac_part.bytes())
        .map(|b| b - b'0')
        .collect();
    let mut scale = frac_part.len() as i32 - exponent - shift;
    // Multiply the digits by `factor` (small), right to left.
    let mut carry = 0u32;
    for d in digits.iter_mut().rev() {
        let v = u32::from(*d) * factor + carry;
        *d = (v % 10) as u8;
        carry = v / 10;
    }
    while carry > 0 {
        digits.insert(0, (carry % 10) as u8);
        carry /= 10;
    }
    while scale < 0 {
        digits.push(0);
        scale += 1;
    }
    let scale = scale as usize;
    while digits.len() <= scale {
        digits.insert(0, 0);
    }
    let split = digits.len() - scale;
    let mut out = String::with_capacity(digits.len() + 2);
    if negative {
        out.push('-');
    }
    let int_digits = &digits[..split];
    let first = int_digits
        .iter()
        .position(|&d| d != 0)
        .unwrap_or(int_digits.len() - 1);
    out.extend(int_digits[first..].iter().map(|d| char::from(b'0' + d)));
    if scale > 0 {
        out.push('.');
        out.extend(digits[split..].iter().map(|d| char::from(b'0' + d)));
    }
    serde_json::from_str(&out).ok()
}

fn sampled_data(data: &mut Map<String, Value>, path: &str, ctx: &mut Ctx) {
    match (ctx.from, ctx.to) {
        (FhirVersion::R4B, FhirVersion::R5) => {
            if let Some(period) = data.remove("period") {
                data.insert("interval".into(), period);
                data.insert("intervalUnit".into(), Value::String("ms".into()));
            }
            if let Some(ext) = data.remove("_period") {
                data.insert("_interval".into(), ext);
            }
        }
        (FhirVersion::R5, FhirVersion::R4B) => {
            let unit = data.get("intervalUnit").and_then(Value::as_str);
            let interval = data.get("interval").filter(|v| v.is_number());
            let scaled = match (interval, unit.and_then(millis_per)) {
                (Some(v), Some((factor, shift))) => scale_decimal(v, factor, shift),
                _ => None,
            };
            match (scaled, unit) {
                (Some(_), Some("ms")) => {
                    if let Some(v) = data.remove("interval") {
                        data.insert("period".into(), v);
                    }
                    data.remove("intervalUnit");
                }
                (Some(ms), Some(_)) => {
                    // In milliseconds for R4B (computed on the decimal text); the original
                    // value and unit are carried.
                    data.insert("period".into(), ms);
                    for key in ["interval", "intervalUnit"] {
                        if let Some(v) = data.remove(key) {
                            carry(data, "SampledData", key, v, path, ctx);
                        }
                    }
                }
                _ => {
                    for key in ["interval", "intervalUnit"] {
                        if let Some(v) = data.remove(key) {
                            carry(data, "SampledData", key, v, path, ctx);
                        }
                    }
                }
            }
            if let Some(ext) = data.remove("_interval") {
                data.insert("_period".into(), ext);
            }
            for key in ["codeMap", "offsets"] {
                if let Some(v) = data.remove(key) {
                    carry(data, "SampledData", key, v, path, ctx);
                }
            }
        }
        _ => {}
    }
    restore(data, "SampledData", ctx);
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
        carry(
            dosage,
            "Dosage",
            "doseAndRate",
            Value::Array(items),
            path,
            ctx,
        );
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
                carry(dosage, "Dosage", "asNeeded", flag, path, ctx);
            }
            dosage.insert("asNeededCodeableConcept".into(), reasons.swap_remove(0));
        }
        (flag, Some(reasons)) => {
            if let Some(flag) = flag {
                dosage.insert("asNeededBoolean".into(), flag);
            }
            carry(dosage, "Dosage", "asNeededFor", reasons, path, ctx);
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
        carry(
            dosage,
            "Dosage",
            key,
            Value::Array(items.clone()),
            path,
            ctx,
        );
    }
    if !items.is_empty() {
        dosage.insert(key.into(), items.swap_remove(0));
    }
}

/// Keep `value` of `Dosage.{key}` in carriers (one per item) on the dosage itself.
fn carry(
    object: &mut Map<String, Value>,
    datatype: &str,
    key: &str,
    value: Value,
    path: &str,
    ctx: &mut Ctx,
) {
    let url = format!("{}{datatype}.{key}", prefix(ctx.from));
    let items = match value {
        Value::Array(items) => items,
        other => vec![other],
    };
    let carriers = items
        .into_iter()
        .map(|item| encode_value(&url, item, part_type(key), ctx.to));
    match object
        .entry("extension")
        .or_insert_with(|| Value::Array(Vec::new()))
    {
        Value::Array(list) => list.extend(carriers),
        _ => return,
    }
    ctx.carried(
        &format!("{path}.{key}"),
        &format!("does not fit the {datatype} datatype"),
    );
}

/// Put back `{datatype}.{key}` carried by the opposite step.
fn restore(dosage: &mut Map<String, Value>, datatype: &str, ctx: &mut Ctx) {
    let own = prefix(ctx.to);
    let carried_key = |e: &Value| -> Option<String> {
        e.get("url")
            .and_then(Value::as_str)
            .and_then(|u| u.strip_prefix(own))
            .and_then(|p| p.strip_prefix(datatype))
            .and_then(|p| p.strip_prefix('.'))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scaled(text: &str, factor: u32, shift: i32) -> String {
        let v: Value = serde_json::from_str(text).expect("a number");
        scale_decimal(&v, factor, shift)
            .expect("scaled")
            .to_string()
    }

    #[test]
    fn decimal_scaling_works_on_the_text() {
        assert_eq!(scaled("2.5", 1, 3), "2500");
        assert_eq!(scaled("0.25", 6, 4), "15000");
        assert_eq!(scaled("1", 1, -3), "0.001");
        assert_eq!(scaled("-12.75", 36, 5), "-45900000");
        assert_eq!(scaled("3", 1, 0), "3");
        // 0.1 s is exactly 100 ms (a binary float would make it 100.00000000000001 ms
        // for some factors).
        assert_eq!(scaled("0.1", 6, 4), "6000");
        assert_eq!(scaled("1e2", 1, 3), "100000");
    }
}
