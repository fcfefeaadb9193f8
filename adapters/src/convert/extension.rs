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
    push_extensions(obj, carriers, ctx);
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
    carriers(obj).is_some_and(|list| {
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

fn is_bundle(obj: &Map<String, Value>) -> bool {
    obj.get("resourceType").and_then(Value::as_str) == Some("Bundle")
}

fn push_extensions(obj: &mut Map<String, Value>, carriers: Vec<Value>, ctx: &mut Ctx) {
    if carriers.is_empty() {
        return;
    }
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
    let ok = EVERYWHERE.contains(&ty)
        || (version != FhirVersion::Stu3 && SINCE_R4.contains(&ty))
        || (version == FhirVersion::R5 && R5_ONLY.contains(&ty));
    if ok {
        return Some(format!("value{}", type_suffix(ty)));
    }
    if version == FhirVersion::Stu3 && matches!(ty, "canonical" | "url" | "uuid") {
        return Some("valueUri".into());
    }
    None
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

/// Restore elements of the target version carried in `obj.extension`.
pub(crate) fn restore(obj: &mut Map<String, Value>, t: NodeId, ctx: &mut Ctx) {
    let Some(list) = carriers(obj) else {
        return;
    };
    let is_carrier = |e: &Value| {
        e.get("url")
            .and_then(Value::as_str)
            .is_some_and(|u| carried_path(u, ctx).is_some())
    };
    if !list.iter().any(is_carrier) {
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
            Some((value_type, value)) => {
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
