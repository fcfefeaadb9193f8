//! Cross-version extensions: carrying an element the target version lacks, and restoring it
//! when converting back.
//!
//! URL form: `http://hl7.org/fhir/{major.minor}/StructureDefinition/extension-{Path}`, where
//! the version and path are those of the element's own (source) version, and `Path` drops a
//! choice element's `[x]`. A carrier sits in the `extension` list of the object that held the
//! element. Values whose type an extension can hold go in `value[x]`; backbone elements become
//! nested extensions, one per child (the child's JSON key as `url`); other complex values
//! (datatypes the target version lacks) become nested extensions by JSON shape, a list marked
//! by `[]` after its key. Leaves out the official cross-version packages' per-element
//! definitions: the encoding here is generic.

use assent_fhir::{FhirVersion, IssueCode, Severity};
use serde_json::{Map, Value};

use super::Ctx;
use crate::definitions::{Child, Definitions, NodeId, type_suffix};

/// The URL prefix of carriers made from elements of `version`.
pub(crate) fn prefix(version: FhirVersion) -> &'static str {
    match version {
        FhirVersion::Stu3 => "http://hl7.org/fhir/3.0/StructureDefinition/extension-",
        FhirVersion::R4 => "http://hl7.org/fhir/4.0/StructureDefinition/extension-",
        FhirVersion::R4B => "http://hl7.org/fhir/4.3/StructureDefinition/extension-",
        FhirVersion::R5 => "http://hl7.org/fhir/5.0/StructureDefinition/extension-",
    }
}

/// The carrier URL of element `name` under source node `s`.
pub(crate) fn url(ctx: &Ctx, s: NodeId, name: &str) -> String {
    let name = name.strip_suffix("[x]").unwrap_or(name);
    format!("{}{}.{}", prefix(label(ctx)), ctx.source.node(s).path, name)
}

fn is_r4_family(v: FhirVersion) -> bool {
    matches!(v, FhirVersion::R4 | FhirVersion::R4B)
}

/// The version named in carriers made by this step: R4 and R4B are alike for every
/// supported type, so an element that came from R4 says `4.0` even when the step is R4B → R5.
fn label(ctx: &Ctx) -> FhirVersion {
    if is_r4_family(ctx.from) && is_r4_family(ctx.origin) {
        ctx.origin
    } else {
        ctx.from
    }
}

/// The element path of a carrier this step restores, if `url` is one.
fn carried_path<'u>(url: &'u str, ctx: &Ctx) -> Option<&'u str> {
    url.strip_prefix(prefix(ctx.to)).or_else(|| {
        let other = match ctx.to {
            FhirVersion::R4 => FhirVersion::R4B,
            FhirVersion::R4B => FhirVersion::R4,
            _ => return None,
        };
        url.strip_prefix(prefix(other))
    })
}

/// Carry `value` (element `sc` of source node `s`) in `obj.extension`.
pub(crate) fn carry(
    obj: &mut Map<String, Value>,
    sc: &Child,
    s: NodeId,
    value: Value,
    ctx: &mut Ctx,
) {
    carry_in(obj, sc, s, value, ctx, "extension");
}

/// Carry a modifier element the target lacks in `obj.modifierExtension` (where the target
/// object has one; else `extension`), as the cross-version extensions do for modifiers: a
/// reader that does not know it must not take the object for what it seems.
pub(crate) fn carry_modifier(
    obj: &mut Map<String, Value>,
    sc: &Child,
    s: NodeId,
    t: NodeId,
    value: Value,
    ctx: &mut Ctx,
) {
    let list = if ctx.target.child(t, "modifierExtension").is_some() {
        "modifierExtension"
    } else {
        "extension"
    };
    carry_in(obj, sc, s, value, ctx, list);
}

fn carry_in(
    obj: &mut Map<String, Value>,
    sc: &Child,
    s: NodeId,
    value: Value,
    ctx: &mut Ctx,
    list: &str,
) {
    let url = url(ctx, s, &sc.name);
    let mut carriers = Vec::new();
    let items = match value {
        Value::Array(items) if sc.many => items,
        other => vec![other],
    };
    for item in items {
        if &*sc.ty == "Resource" {
            let path = format!("{}.{}", ctx.source.node(s).path, sc.name);
            ctx.issue(
                Severity::Warning,
                IssueCode::NotSupported,
                &path,
                format!("{path} holds a resource that no extension can carry; dropped"),
            );
            continue;
        }
        carriers.push(encode(&url, item, &sc.ty, sc.node, ctx.source, ctx.to));
    }
    if list == "extension" {
        push_extensions(obj, carriers, ctx);
    } else if !carriers.is_empty() {
        match obj.entry(list).or_insert_with(|| Value::Array(Vec::new())) {
            Value::Array(items) => items.extend(carriers),
            _ => ctx.issue(
                Severity::Warning,
                IssueCode::Structure,
                list,
                format!("{list} is not a list; carried elements dropped"),
            ),
        }
    }
}

/// Carry a list of ready-made values under an explicit URL (used by resource rules).
pub(crate) fn carry_value(
    obj: &mut Map<String, Value>,
    url: String,
    value: Value,
    ty: &str,
    ctx: &mut Ctx,
) {
    let carrier = encode(&url, value, ty, None, ctx.source, ctx.to);
    push_extensions(obj, vec![carrier], ctx);
}

/// The `_element` of a primitive whose element could not stay: reported, not carried.
pub(crate) fn carry_primitive_extension(
    _obj: &mut Map<String, Value>,
    sc: &Child,
    s: NodeId,
    _value: Value,
    ctx: &mut Ctx,
) {
    let path = format!("{}.{}", ctx.source.node(s).path, sc.name);
    ctx.issue(
        Severity::Warning,
        IssueCode::NotSupported,
        &path,
        format!("id and extensions on the primitive {path} dropped"),
    );
}

/// Whether `obj` holds a carrier of the target version for element `name` of target node
/// `t`, which the restore at the end of the walk will put back.
pub(crate) fn restore_pending(obj: &Map<String, Value>, t: NodeId, name: &str, ctx: &Ctx) -> bool {
    let name = name.strip_suffix("[x]").unwrap_or(name);
    let path = &ctx.target.node(t).path;
    let modifiers = obj.get("modifierExtension").and_then(Value::as_array);
    carriers(obj).into_iter().chain(modifiers).any(|list| {
        list.iter().any(|e| {
            e.get("url")
                .and_then(Value::as_str)
                .and_then(|u| carried_path(u, ctx))
                .and_then(|rest| rest.strip_prefix(path.as_ref()))
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|rest| rest == name)
        })
    })
}

/// The list carriers live in: `extension`, or `meta.extension` for resources without
/// extensions (Bundle).
fn carriers(obj: &Map<String, Value>) -> Option<&Vec<Value>> {
    match obj.get("extension") {
        Some(Value::Array(list)) => Some(list),
        _ if is_bundle(obj) => obj.get("meta")?.get("extension")?.as_array(),
        _ => None,
    }
}

/// Resources without `extension` (Bundle, Binary, Parameters): carriers go in `meta`.
fn is_bundle(obj: &Map<String, Value>) -> bool {
    matches!(
        obj.get("resourceType").and_then(Value::as_str),
        Some("Bundle" | "Binary" | "Parameters")
    )
}

fn push_extensions(obj: &mut Map<String, Value>, carriers: Vec<Value>, ctx: &mut Ctx) {
    if carriers.is_empty() {
        return;
    }
    // A carried value of a datatype whose shape changed is written in the target's shape (and
    // converted back when restored); one may also hold extensions whose values the target
    // cannot hold.
    let mut list = Value::Array(carriers);
    if values_need_conversion(&list, ctx.from, ctx.to) {
        convert_values(&mut list, "extension", ctx);
    }
    let Value::Array(carriers) = list else {
        return;
    };
    let host = if is_bundle(obj) {
        match obj
            .entry("meta")
            .or_insert_with(|| Value::Object(Map::new()))
        {
            Value::Object(meta) => meta,
            _ => {
                ctx.issue(
                    Severity::Warning,
                    IssueCode::Structure,
                    "Bundle.meta",
                    "Bundle.meta is not an object; carried elements dropped".into(),
                );
                return;
            }
        }
    } else {
        obj
    };
    match host
        .entry("extension")
        .or_insert_with(|| Value::Array(Vec::new()))
    {
        Value::Array(list) => list.extend(carriers),
        _ => ctx.issue(
            Severity::Warning,
            IssueCode::Structure,
            "extension",
            "extension is not a list; carried elements dropped".into(),
        ),
    }
}

/// The `value[x]` key an extension of `version` uses for type `ty`, if it may hold it.
fn value_key(ty: &str, version: FhirVersion) -> Option<String> {
    if !value_type_allowed(ty, version)
        && version == FhirVersion::Stu3
        && matches!(ty, "canonical" | "url" | "uuid")
    {
        return Some("valueUri".into());
    }
    value_type_allowed(ty, version).then(|| format!("value{}", type_suffix(ty)))
}

/// Whether an extension of `version` may hold a value of datatype `ty`.
fn value_type_allowed(ty: &str, version: FhirVersion) -> bool {
    const EVERYWHERE: &[&str] = &[
        "base64Binary",
        "boolean",
        "code",
        "date",
        "dateTime",
        "decimal",
        "id",
        "instant",
        "integer",
        "markdown",
        "oid",
        "positiveInt",
        "string",
        "time",
        "unsignedInt",
        "uri",
        "Address",
        "Age",
        "Annotation",
        "Attachment",
        "CodeableConcept",
        "Coding",
        "ContactPoint",
        "Count",
        "Distance",
        "Duration",
        "HumanName",
        "Identifier",
        "Money",
        "Period",
        "Quantity",
        "Range",
        "Ratio",
        "Reference",
        "SampledData",
        "Signature",
        "Timing",
        "Meta",
        "Dosage",
        "ContactDetail",
        "Contributor",
        "DataRequirement",
        "ParameterDefinition",
        "RelatedArtifact",
        "TriggerDefinition",
        "UsageContext",
    ];
    const SINCE_R4: &[&str] = &["canonical", "url", "uuid", "Expression"];
    const R5_ONLY: &[&str] = &[
        "CodeableReference",
        "RatioRange",
        "Availability",
        "ExtendedContactDetail",
        "integer64",
        "VirtualServiceDetail",
        "MonetaryComponent",
    ];
    EVERYWHERE.contains(&ty)
        || (version != FhirVersion::Stu3 && SINCE_R4.contains(&ty))
        || (version == FhirVersion::R5 && R5_ONLY.contains(&ty))
}

/// [`value_type_allowed`] for a `value[x]` key suffix (`String`, `CodeableConcept`), without
/// allocating: only the first letter's case differs for primitives.
fn suffix_allowed(suffix: &str, version: FhirVersion) -> bool {
    let (Some(first), rest) = (suffix.chars().next(), suffix.get(1..).unwrap_or_default()) else {
        return false;
    };
    let lower = first.to_ascii_lowercase();
    let mut buf = [0u8; 4];
    let lower: &str = lower.encode_utf8(&mut buf);
    // Primitives are spelled with a lower-case first letter, complex types as the suffix.
    if value_type_allowed(suffix, version) {
        return true;
    }
    let mut candidate = [0u8; 32];
    let len = lower.len() + rest.len();
    if len > candidate.len() {
        return false;
    }
    candidate[..lower.len()].copy_from_slice(lower.as_bytes());
    candidate[lower.len()..len].copy_from_slice(rest.as_bytes());
    std::str::from_utf8(&candidate[..len]).is_ok_and(|ty| value_type_allowed(ty, version))
}

/// The datatype of an extension's `value[x]` key suffix (`Canonical` → `canonical`,
/// `CodeableReference` → `CodeableReference`).
fn suffix_type(suffix: &str) -> String {
    const PRIMITIVES: &[&str] = &[
        "base64Binary",
        "boolean",
        "canonical",
        "code",
        "date",
        "dateTime",
        "decimal",
        "id",
        "instant",
        "integer",
        "integer64",
        "markdown",
        "oid",
        "positiveInt",
        "string",
        "time",
        "unsignedInt",
        "uri",
        "url",
        "uuid",
    ];
    let mut chars = suffix.chars();
    let lower = match chars.next() {
        Some(first) => first.to_ascii_lowercase().to_string() + chars.as_str(),
        None => String::new(),
    };
    if PRIMITIVES.contains(&lower.as_str()) {
        lower
    } else {
        suffix.to_owned()
    }
}

/// The URL of the sub-extension naming a value's datatype when the extension holds it as
/// parts (the R5 `_datatype` extension): for datatypes an older version lacks.
const DATATYPE_URL: &str = "http://hl7.org/fhir/StructureDefinition/_datatype";

/// Convert the values of one `extension`/`modifierExtension` list (and of the extensions
/// nested in it) for the step in `ctx`: a `value[x]` whose datatype the target's extensions
/// cannot hold becomes parts (a `_datatype` sub-extension naming it, then one sub-extension
/// per element, by JSON shape) and is reported; parts naming a datatype the target can hold
/// become a `value[x]` again; datatypes whose shape changed (`Dosage`, `Attachment`, ...) are
/// converted. Nothing is done to a list without such values.
pub(crate) fn convert_values(list: &mut Value, path: &str, ctx: &mut Ctx) {
    let Value::Array(items) = list else {
        return;
    };
    for item in items {
        let Value::Object(ext) = item else {
            continue;
        };
        if let Some(inner) = ext.get_mut("extension") {
            convert_values(inner, path, ctx);
            if let Some(ty) = datatype_parts(ext)
                && value_type_allowed(&ty, ctx.to)
            {
                from_parts(ext, &ty);
            }
            continue;
        }
        let Some(key) = ext
            .keys()
            .find(|k| k.starts_with("value") && k.len() > 5)
            .cloned()
        else {
            continue;
        };
        let ty = suffix_type(&key["value".len()..]);
        if super::datatypes::changes(&ty, ctx.from, ctx.to) {
            if let Some(v) = ext.get_mut(&key) {
                super::datatypes::convert(v, &ty, path, ctx);
            }
            continue;
        }
        if value_type_allowed(&ty, ctx.to) {
            continue;
        }
        let Some(value) = ext.remove(&key) else {
            continue;
        };
        let url = ext
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let (from, to) = (ctx.from, ctx.to);
        if let Some(new_key) = value_key(&ty, to) {
            // canonical/url/uuid are uri in STU3: the same text.
            ext.insert(new_key, value);
            ctx.issue(
                Severity::Information,
                IssueCode::Value,
                path,
                format!(
                    "extension {url}: value{} ({from}) written as valueUri in {to}",
                    type_suffix(&ty)
                ),
            );
            continue;
        }
        let mut parts = Vec::new();
        let mut datatype = Map::new();
        datatype.insert("url".into(), Value::String(DATATYPE_URL.into()));
        datatype.insert("valueString".into(), Value::String(ty.clone()));
        parts.push(Value::Object(datatype));
        match value {
            Value::Object(fields) => {
                for (k, v) in fields {
                    parts.extend(encode_generic(&k, v));
                }
            }
            other => parts.extend(encode_generic("value", other)),
        }
        ext.insert("extension".into(), Value::Array(parts));
        ctx.issue(
            Severity::Warning,
            IssueCode::Value,
            path,
            format!("extension {url}: its value is a {ty}, a datatype {to} lacks; written as parts (a _datatype sub-extension and one per element), which readers of the extension's definition do not expect"),
        );
    }
}

/// Whether [`convert_values`] has anything to do in `list` for target version `to` (a scan
/// without allocating).
pub(crate) fn values_need_conversion(list: &Value, from: FhirVersion, to: FhirVersion) -> bool {
    let Value::Array(items) = list else {
        return false;
    };
    items.iter().any(|item| {
        let Value::Object(ext) = item else {
            return false;
        };
        if let Some(inner) = ext.get("extension") {
            return values_need_conversion(inner, from, to) || datatype_parts(ext).is_some();
        }
        ext.keys().any(|k| {
            k.len() > 5
                && k.starts_with("value")
                && (super::datatypes::changes(&k[5..], from, to) || !suffix_allowed(&k[5..], to))
        })
    })
}

/// Convert the extension lists anywhere inside `value`, the value of element `path` (a
/// datatype the walk does not enter, or what a rule wrote).
pub(crate) fn convert_nested(value: &mut Value, path: &str, ctx: &mut Ctx, depth: usize) {
    if depth > 32 {
        return;
    }
    match value {
        Value::Object(m) => {
            for (key, v) in m.iter_mut() {
                if key == "extension" || key == "modifierExtension" {
                    if values_need_conversion(v, ctx.from, ctx.to) {
                        convert_values(v, &format!("{path}.{key}"), ctx);
                    }
                } else if v.is_object() || v.is_array() {
                    // Issues name the element the walk knows (no path built per key).
                    convert_nested(v, path, ctx, depth + 1);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                convert_nested(item, path, ctx, depth + 1);
            }
        }
        _ => {}
    }
}

/// The datatype named by a `_datatype` sub-extension of `ext`, if it has one.
fn datatype_parts(ext: &Map<String, Value>) -> Option<String> {
    ext.get("extension")?.as_array()?.iter().find_map(|e| {
        (e.get("url").and_then(Value::as_str) == Some(DATATYPE_URL))
            .then(|| {
                e.get("valueString")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .flatten()
    })
}

/// Parts made by [`convert_values`] back into a `value[x]` of datatype `ty`.
fn from_parts(ext: &mut Map<String, Value>, ty: &str) {
    let Some(Value::Array(subs)) = ext.remove("extension") else {
        return;
    };
    let rest: Vec<Value> = subs
        .into_iter()
        .filter(|e| e.get("url").and_then(Value::as_str) != Some(DATATYPE_URL))
        .collect();
    let decoded = decode_generic(rest);
    let value = if crate::convert::is_primitive(ty) {
        decoded.get("value").cloned().unwrap_or(Value::Null)
    } else {
        decoded
    };
    ext.insert(format!("value{}", type_suffix(ty)), value);
}

/// One carrier for one value of type `ty` (a backbone element when `node` is given).
fn encode(
    url: &str,
    value: Value,
    ty: &str,
    node: Option<NodeId>,
    defs: &Definitions,
    to: FhirVersion,
) -> Value {
    let mut ext = Map::new();
    ext.insert("url".into(), Value::String(url.into()));
    let value = match (node, value) {
        (Some(node), Value::Object(fields)) => {
            let mut subs = Vec::new();
            for (key, v) in fields {
                if key == "extension" {
                    for item in into_items(v) {
                        let mut wrap = Map::new();
                        wrap.insert("url".into(), Value::String("extension".into()));
                        wrap.insert("extension".into(), Value::Array(vec![item]));
                        subs.push(Value::Object(wrap));
                    }
                    continue;
                }
                match defs.child(node, &key) {
                    Some(child) if &*child.ty != "Resource" => {
                        let items = if child.many { into_items(v) } else { vec![v] };
                        for item in items {
                            subs.push(encode(&key, item, &child.ty, child.node, defs, to));
                        }
                    }
                    _ => subs.extend(encode_generic(&key, v)),
                }
            }
            ext.insert("extension".into(), Value::Array(subs));
            return Value::Object(ext);
        }
        (_, value) => value,
    };
    let primitive = crate::convert::is_primitive(ty);
    let fits = if primitive {
        !(value.is_object() || value.is_array())
    } else {
        value.is_object()
    };
    if fits && let Some(key) = value_key(ty, to) {
        ext.insert(key, value);
        return Value::Object(ext);
    }
    let mut generic = encode_generic(url, value);
    match generic.len() {
        1 => generic.swap_remove(0),
        _ => {
            ext.insert("extension".into(), Value::Array(generic));
            Value::Object(ext)
        }
    }
}

/// A carrier for a value of a known datatype `ty` (or of any shape when `ty` is `None`).
pub(crate) fn encode_value(url: &str, value: Value, ty: Option<&str>, to: FhirVersion) -> Value {
    if let Some(key) = ty.and_then(|t| value_key(t, to)) {
        let mut ext = Map::new();
        ext.insert("url".into(), Value::String(url.into()));
        ext.insert(key, value);
        return Value::Object(ext);
    }
    let mut generic = encode_generic(url, value);
    match generic.len() {
        1 => generic.swap_remove(0),
        _ => {
            let mut ext = Map::new();
            ext.insert("url".into(), Value::String(url.into()));
            ext.insert("extension".into(), Value::Array(generic));
            Value::Object(ext)
        }
    }
}

/// The value of a carrier made by [`encode_value`].
pub(crate) fn decode_value(ext: Map<String, Value>, defs: &Definitions) -> Option<Value> {
    decode(ext, None, defs).map(|(_, v)| v)
}

fn into_items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        other => vec![other],
    }
}

/// Encode any JSON by shape: objects nest, lists repeat under `key[]`.
fn encode_generic(key: &str, value: Value) -> Vec<Value> {
    let mut ext = Map::new();
    match value {
        Value::Null => return Vec::new(),
        Value::Array(items) => {
            let list_key = format!("{key}[]");
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let mut one = encode_generic(&list_key, item);
                if one.is_empty() {
                    let mut null = Map::new();
                    null.insert("url".into(), Value::String(list_key.clone()));
                    one.push(Value::Object(null));
                }
                out.extend(one);
            }
            if out.is_empty() {
                // An empty list: marked so it comes back as one.
                let mut empty = Map::new();
                empty.insert("url".into(), Value::String(format!("{key}[0]")));
                out.push(Value::Object(empty));
            }
            return out;
        }
        Value::Object(fields) => {
            let mut subs = Vec::new();
            for (k, v) in fields {
                subs.extend(encode_generic(&k, v));
            }
            ext.insert("url".into(), Value::String(key.into()));
            ext.insert("extension".into(), Value::Array(subs));
        }
        Value::String(s) => {
            ext.insert("url".into(), Value::String(key.into()));
            ext.insert("valueString".into(), Value::String(s));
        }
        Value::Bool(b) => {
            ext.insert("url".into(), Value::String(key.into()));
            ext.insert("valueBoolean".into(), Value::Bool(b));
        }
        Value::Number(n) => {
            ext.insert("url".into(), Value::String(key.into()));
            let fits_integer = n.as_i64().is_some_and(|i| i32::try_from(i).is_ok());
            let field = if fits_integer {
                "valueInteger"
            } else {
                "valueDecimal"
            };
            ext.insert(field.into(), Value::Number(n));
        }
    }
    vec![Value::Object(ext)]
}

/// Restore elements of the target version carried in `obj.extension` or
/// `obj.modifierExtension`, and remove the carriers restored.
pub(crate) fn restore(obj: &mut Map<String, Value>, t: NodeId, ctx: &mut Ctx) {
    if obj.contains_key("modifierExtension") {
        restore_modifiers(obj, t, ctx);
    }
    restore_from_extension(obj, t, ctx);
}

fn restore_modifiers(obj: &mut Map<String, Value>, t: NodeId, ctx: &mut Ctx) {
    let Some(Value::Array(list)) = obj.get("modifierExtension") else {
        return;
    };
    if !list.iter().any(|e| is_carrier(e, ctx)) {
        return;
    }
    let Some(Value::Array(list)) = obj.remove("modifierExtension") else {
        return;
    };
    let kept = restore_list(obj, list, t, ctx);
    if !kept.is_empty() {
        obj.insert("modifierExtension".into(), Value::Array(kept));
    }
}

fn is_carrier(e: &Value, ctx: &Ctx) -> bool {
    e.get("url")
        .and_then(Value::as_str)
        .is_some_and(|u| carried_path(u, ctx).is_some())
}

fn restore_from_extension(obj: &mut Map<String, Value>, t: NodeId, ctx: &mut Ctx) {
    let Some(list) = carriers(obj) else {
        return;
    };
    if !list.iter().any(|e| is_carrier(e, ctx)) {
        return;
    }
    let in_meta = !obj.contains_key("extension");
    let removed = if in_meta {
        obj.get_mut("meta")
            .and_then(Value::as_object_mut)
            .and_then(|meta| meta.remove("extension"))
    } else {
        obj.remove("extension")
    };
    let Some(Value::Array(list)) = removed else {
        return;
    };
    let kept = restore_list(obj, list, t, ctx);
    if !kept.is_empty() {
        if in_meta {
            if let Some(meta) = obj.get_mut("meta").and_then(Value::as_object_mut) {
                meta.insert("extension".into(), Value::Array(kept));
            }
        } else {
            obj.insert("extension".into(), Value::Array(kept));
        }
    } else if in_meta {
        let empty_meta = obj
            .get("meta")
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty);
        if empty_meta {
            obj.remove("meta");
        }
    }
}

/// Restore the carriers of `list` that fit target node `t` into `obj`; returns the rest.
fn restore_list(
    obj: &mut Map<String, Value>,
    list: Vec<Value>,
    t: NodeId,
    ctx: &mut Ctx,
) -> Vec<Value> {
    let defs = ctx.target;
    let node = defs.node(t);
    let mut kept = Vec::with_capacity(list.len());
    // (JSON key, many, value) in order.
    let mut restored: Vec<(String, bool, Value)> = Vec::new();
    for ext in list {
        let path = ext
            .get("url")
            .and_then(Value::as_str)
            .and_then(|u| carried_path(u, ctx))
            .map(str::to_owned);
        let Some((parent, name)) = path.as_deref().and_then(|p| p.rsplit_once('.')) else {
            kept.push(ext);
            continue;
        };
        if parent != &*node.path {
            kept.push(ext);
            continue;
        }
        let choice = format!("{name}[x]");
        let key = node
            .by_name
            .get(name)
            .or_else(|| node.by_name.get(choice.as_str()));
        let Some(key) = key else {
            kept.push(ext);
            continue;
        };
        let Some(child) = defs.child(t, key) else {
            kept.push(ext);
            continue;
        };
        let is_choice = child.name.ends_with("[x]");
        let Value::Object(fields) = ext else {
            continue;
        };
        match decode(fields, Some(child), defs) {
            Some((value_type, mut value)) => {
                // Carried in the shape of the version it was carried into: convert it back.
                let ty = value_type
                    .as_deref()
                    .map_or_else(|| child.ty.to_string(), suffix_type);
                if super::datatypes::changes(&ty, ctx.from, ctx.to) {
                    let path = format!("{}.{}", node.path, name);
                    super::for_each_item(&mut value, |item| {
                        super::datatypes::convert(item, &ty, &path, ctx)
                    });
                }
                let json_key = match (is_choice, value_type) {
                    (true, Some(suffix)) => format!("{name}{suffix}"),
                    _ => key.to_string(),
                };
                let many = defs.child(t, &json_key).map_or(child.many, |c| c.many);
                restored.push((json_key, many, value));
            }
            None => {
                let path = format!("{}.{}", node.path, name);
                ctx.issue(
                    Severity::Warning,
                    IssueCode::Structure,
                    &path,
                    format!("cross-version extension for {path} could not be read; dropped"),
                );
            }
        }
    }
    let mut replaced: Vec<String> = Vec::new();
    for (key, many, value) in restored {
        if !replaced.contains(&key) {
            obj.remove(&key);
            replaced.push(key.clone());
        }
        if many {
            match obj.entry(key).or_insert_with(|| Value::Array(Vec::new())) {
                Value::Array(items) => items.push(value),
                other => *other = Value::Array(vec![value]),
            }
        } else {
            obj.insert(key, value);
        }
    }
    kept
}

/// Decode one carrier into (the `value[x]` type suffix if it had one, the value).
fn decode(
    mut ext: Map<String, Value>,
    child: Option<&Child>,
    defs: &Definitions,
) -> Option<(Option<String>, Value)> {
    let value_key = ext
        .keys()
        .find(|k| k.starts_with("value") && k.len() > 5)
        .cloned();
    if let Some(key) = value_key {
        let value = ext.remove(&key)?;
        return Some((Some(key["value".len()..].to_owned()), value));
    }
    let Some(Value::Array(subs)) = ext.remove("extension") else {
        return None;
    };
    match child.and_then(|c| c.node) {
        Some(node) => Some((None, decode_backbone(subs, node, defs))),
        None => Some((None, decode_generic(subs))),
    }
}

fn decode_backbone(subs: Vec<Value>, node: NodeId, defs: &Definitions) -> Value {
    let mut obj = Map::new();
    for sub in subs {
        let Value::Object(mut sub) = sub else {
            continue;
        };
        let Some(Value::String(key)) = sub.remove("url") else {
            continue;
        };
        if key == "extension" {
            if let Some(Value::Array(mut inner)) = sub.remove("extension")
                && let Some(item) = inner.pop()
            {
                push(&mut obj, "extension", item, true);
            }
            continue;
        }
        match defs.child(node, &key) {
            Some(child) => {
                if let Some((_, value)) = decode(sub, Some(child), defs) {
                    push(&mut obj, &key, value, child.many);
                }
            }
            None => {
                let mut one = Map::new();
                one.insert("url".into(), Value::String(key));
                one.extend(sub);
                decode_generic_into(&mut obj, Value::Object(one));
            }
        }
    }
    Value::Object(obj)
}

fn decode_generic(subs: Vec<Value>) -> Value {
    let mut obj = Map::new();
    for sub in subs {
        decode_generic_into(&mut obj, sub);
    }
    Value::Object(obj)
}

fn decode_generic_into(obj: &mut Map<String, Value>, sub: Value) {
    let Value::Object(mut sub) = sub else {
        return;
    };
    let Some(Value::String(url)) = sub.remove("url") else {
        return;
    };
    if let Some(key) = url.strip_suffix("[0]") {
        obj.insert(key.into(), Value::Array(Vec::new()));
        return;
    }
    let (key, list) = match url.strip_suffix("[]") {
        Some(k) => (k.to_owned(), true),
        None => (url, false),
    };
    let value_key = sub
        .keys()
        .find(|k| k.starts_with("value") && k.len() > 5)
        .cloned();
    let value = match value_key {
        Some(k) => sub.remove(&k).unwrap_or(Value::Null),
        None => match sub.remove("extension") {
            Some(Value::Array(inner)) => decode_generic(inner),
            _ => Value::Null,
        },
    };
    push(obj, &key, value, list);
}

fn push(obj: &mut Map<String, Value>, key: &str, value: Value, many: bool) {
    if many {
        match obj.entry(key).or_insert_with(|| Value::Array(Vec::new())) {
            Value::Array(items) => items.push(value),
            other => *other = Value::Array(vec![value]),
        }
    } else {
        obj.insert(key.into(), value);
    }
}
