//! R4's two ways of saying "a concept or a reference" that R5 says with one
//! `CodeableReference`, found in the element definitions for every type (not written per
//! resource): a pair `xCode` (CodeableConcept, 0..*) + `xReference` (Reference, 0..*) ↔ `x`
//! (CodeableReference, 0..*), as in `reasonCode`/`reasonReference` → `reason`; and a choice
//! `x[x]` of exactly CodeableConcept and Reference ↔ `x` (CodeableReference, 0..1), as in
//! `medication[x]` → `medication`. Applied per object before the generic walk, in both
//! directions of the R4B↔R5 step; what R4 cannot hold (an item with both a concept and a
//! reference, or other keys) keeps the R5 original in a carrier and is reported.
//!
//! Leaves out the hand-written rules of the clinical core (`convert/rules.rs`), which run
//! first and take the keys they handle.

use assent_fhir::FhirVersion;
use rustc_hash::FxHashMap as HashMap;
use serde_json::{Map, Value};

use super::{Ctx, extension};
use crate::definitions::{Definitions, NodeId};

/// One merge of a node, in the direction of the step.
#[derive(Debug, Clone)]
pub(crate) enum Merge {
    /// R4 `code` + `reference` lists → R5 `to` list.
    Pair {
        code: Box<str>,
        reference: Box<str>,
        to: Box<str>,
    },
    /// R5 `from` list → R4 `code` + `reference` lists.
    Split {
        from: Box<str>,
        code: Box<str>,
        reference: Box<str>,
    },
    /// R4 choice `{base}CodeableConcept` / `{base}Reference` → R5 `base` (one value).
    FromChoice { base: Box<str> },
    /// R5 `base` (one value) → R4 choice `{base}CodeableConcept` / `{base}Reference`.
    ToChoice { base: Box<str> },
}

/// The merges of every node of `source` that has a counterpart node (same path, the
/// resource type renamed) in `target`, for the step `from` → `to` (R4B → R5 or back).
pub(crate) fn find(
    source: &Definitions,
    target: &Definitions,
    from: FhirVersion,
    to: FhirVersion,
) -> HashMap<NodeId, Vec<Merge>> {
    let mut all: HashMap<NodeId, Vec<Merge>> = HashMap::default();
    let upward = to > from;
    for (s, node) in source.nodes.iter().enumerate() {
        let (root, rest) = node.path.split_once('.').unwrap_or((&node.path, ""));
        let target_root = super::renamed_type(root, from, to);
        let target_path = if rest.is_empty() {
            target_root.to_owned()
        } else {
            format!("{target_root}.{rest}")
        };
        let Some(t) = target.node_at(&target_path) else {
            continue;
        };
        let target_node = target.node(t);
        let mut merges = Vec::new();
        // Names are element names (`reason`, `medication[x]`), whichever the version.
        let (older, older_defs, newer) = if upward {
            (node, source, target_node)
        } else {
            (target_node, target, node)
        };
        for name in newer.by_name.keys() {
            let Some(newer_child) = newer.children.get(name.as_ref()) else {
                continue;
            };
            if &*newer_child.ty != "CodeableReference" || older.by_name.contains_key(name) {
                continue;
            }
            let code = format!("{name}Code");
            let reference = format!("{name}Reference");
            let is = |key: &str, ty: &str| {
                older
                    .children
                    .get(key)
                    .is_some_and(|c| &*c.ty == ty && c.many && !c.name.ends_with("[x]"))
            };
            if newer_child.many && is(&code, "CodeableConcept") && is(&reference, "Reference") {
                merges.push(if upward {
                    Merge::Pair {
                        code: code.into(),
                        reference: reference.into(),
                        to: name.clone(),
                    }
                } else {
                    Merge::Split {
                        from: name.clone(),
                        code: code.into(),
                        reference: reference.into(),
                    }
                });
                continue;
            }
            let choice = format!("{name}[x]");
            let choice_types: Vec<&str> = older
                .children
                .values()
                .filter(|c| *c.name == *choice)
                .map(|c| c.ty.as_ref())
                .collect();
            let exactly = choice_types.len() == 2
                && choice_types.contains(&"CodeableConcept")
                && choice_types.contains(&"Reference");
            if !newer_child.many && exactly {
                let _ = older_defs;
                merges.push(if upward {
                    Merge::FromChoice { base: name.clone() }
                } else {
                    Merge::ToChoice { base: name.clone() }
                });
            }
        }
        if !merges.is_empty() {
            all.insert(s, merges);
        }
    }
    all
}

fn wrap(field: &str, value: Value) -> Value {
    let mut m = Map::new();
    m.insert(field.into(), value);
    Value::Object(m)
}

/// Apply the merges of source node `s` to `obj`.
pub(crate) fn apply(obj: &mut Map<String, Value>, merges: &[Merge], s: NodeId, ctx: &mut Ctx) {
    for merge in merges {
        match merge {
            Merge::Pair {
                code,
                reference,
                to,
            } => {
                let mut merged = Vec::new();
                if let Some(codes) = obj.remove(code.as_ref()) {
                    merged.extend(items(codes).into_iter().map(|c| wrap("concept", c)));
                }
                if let Some(refs) = obj.remove(reference.as_ref()) {
                    merged.extend(items(refs).into_iter().map(|r| wrap("reference", r)));
                }
                if !merged.is_empty() {
                    obj.insert(to.to_string(), Value::Array(merged));
                }
            }
            Merge::Split {
                from,
                code,
                reference,
            } => {
                let Some(value) = obj.remove(from.as_ref()) else {
                    continue;
                };
                let list = items(value);
                let (mut codes, mut refs) = (Vec::new(), Vec::new());
                let mut lossy = false;
                for item in &list {
                    match item.as_object() {
                        Some(m) if m.len() == 1 && m.contains_key("concept") => {
                            codes.extend(m.get("concept").cloned());
                        }
                        Some(m) if m.len() == 1 && m.contains_key("reference") => {
                            refs.extend(m.get("reference").cloned());
                        }
                        Some(m) => {
                            lossy = true;
                            codes.extend(m.get("concept").cloned());
                            refs.extend(m.get("reference").cloned());
                        }
                        None => lossy = true,
                    }
                }
                if !codes.is_empty() {
                    obj.insert(code.to_string(), Value::Array(codes));
                }
                if !refs.is_empty() {
                    obj.insert(reference.to_string(), Value::Array(refs));
                }
                if lossy {
                    // The R4 lists say part of it; the whole list travels too.
                    carry(obj, s, from, Value::Array(list), ctx);
                }
            }
            Merge::FromChoice { base } => {
                let concept = obj.remove(&format!("{base}CodeableConcept"));
                let reference = obj.remove(&format!("{base}Reference"));
                let value = match (concept, reference) {
                    (Some(c), _) => wrap("concept", c),
                    (None, Some(r)) => wrap("reference", r),
                    (None, None) => continue,
                };
                obj.insert(base.to_string(), value);
            }
            Merge::ToChoice { base } => {
                let Some(value) = obj.remove(base.as_ref()) else {
                    continue;
                };
                match value.as_object() {
                    Some(m) if m.len() == 1 && m.contains_key("concept") => {
                        if let Some(c) = m.get("concept") {
                            obj.insert(format!("{base}CodeableConcept"), c.clone());
                        }
                    }
                    Some(m) if m.len() == 1 && m.contains_key("reference") => {
                        if let Some(r) = m.get("reference") {
                            obj.insert(format!("{base}Reference"), r.clone());
                        }
                    }
                    _ => {
                        if let Some(c) = value.get("concept") {
                            obj.insert(format!("{base}CodeableConcept"), c.clone());
                        }
                        carry(obj, s, base, value, ctx);
                    }
                }
            }
        }
    }
}

fn items(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        other => vec![other],
    }
}

/// Keep an R5 CodeableReference that R4 cannot say in a carrier, and report it.
fn carry(obj: &mut Map<String, Value>, s: NodeId, name: &str, value: Value, ctx: &mut Ctx) {
    let url = extension::url(ctx, s, name);
    for item in items(value) {
        extension::carry_value(obj, url.clone(), item, "CodeableReference", ctx);
    }
    let path = format!("{}.{name}", ctx.source.node(s).path);
    ctx.carried(
        &path,
        "(a concept together with a reference, or more) has no counterpart",
    );
}
