//! Response shaping done by the gateway, never by the hospital: `_summary` and `_elements`
//! applied to a resource that has been decided and is about to be released.
//!
//! Owns what each form keeps (the spec's rules, from the resource's definition in the
//! version at hand, see `compartment/data.rs`: `_summary=true` keeps the top-level elements
//! marked "summary" (and the mandatory ones), `text` keeps `text`, `id`, `meta` and the
//! mandatory top-level elements, `data` drops `text`, `_elements` keeps the listed top-level
//! elements plus `id`, `meta` and the mandatory ones; `resourceType` always stays, a choice
//! element keeps every JSON spelling (`value` keeps `valueQuantity`), and a primitive's
//! `_name` sibling follows `name`) and the `SUBSETTED` tag on what was cut. Leaves out:
//! deciding (shaping only ever removes from what was already decided), and the searchset
//! Bundle itself (the caller shapes each entry's resource).

use serde_json::{Map, Value, json};

use crate::FhirVersion;
use crate::compartment::SearchParam;
use crate::compartment::data;
pub use crate::compartment::data::TopElement;

/// `_summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    True,
    Text,
    Data,
    Count,
    False,
}

/// How the caller asked the answer to be shaped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shape {
    pub summary: Option<Summary>,
    /// `_elements`: top-level element names.
    pub elements: Option<Vec<String>>,
}

/// A shaping form the gateway cannot honour, with the reason (said to the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError(pub String);

/// The `SUBSETTED` security tag's system (v3 ObservationValue) from R4 on.
pub const SUBSETTED_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

/// The `SUBSETTED` tag's system in STU3.
pub const SUBSETTED_SYSTEM_STU3: &str = "http://hl7.org/fhir/v3/ObservationValue";

/// The `SUBSETTED` tag's system in `version`.
pub fn subsetted_system(version: FhirVersion) -> &'static str {
    match version {
        FhirVersion::Stu3 => SUBSETTED_SYSTEM_STU3,
        _ => SUBSETTED_SYSTEM,
    }
}

/// The top-level elements of `resource_type` in `version`, sorted by JSON name (every
/// spelling of a choice element), with their summary and mandatory flags: empty for a type
/// the version does not define.
pub fn top_elements(version: FhirVersion, resource_type: &str) -> &'static [TopElement] {
    data::tables(version)
        .type_entry(resource_type)
        .map(|t| t.top.as_slice())
        .unwrap_or(&[])
}

impl Shape {
    /// The shape asked for by `_summary`, `_elements` and `_count=0` (which asks for a count
    /// only, whatever `_summary` says: no entry is released).
    pub fn from_params(params: &[SearchParam]) -> Result<Shape, ShapeError> {
        let mut shape = Shape::default();
        let mut count_only = false;
        for p in params {
            if is_shaping_param(&p.code) && p.raw_name != p.code {
                return Err(ShapeError(format!("{} takes no modifier or chain", p.code)));
            }
            match p.raw_name.as_str() {
                "_summary" => {
                    if shape.summary.is_some() {
                        return Err(ShapeError("_summary is given more than once".into()));
                    }
                    shape.summary = Some(match p.value.as_str() {
                        "true" => Summary::True,
                        "text" => Summary::Text,
                        "data" => Summary::Data,
                        "count" => Summary::Count,
                        "false" => Summary::False,
                        _ => {
                            return Err(ShapeError(
                                "_summary takes true, text, data, count or false".into(),
                            ));
                        }
                    });
                }
                "_elements" => {
                    let list = shape.elements.get_or_insert_with(Vec::new);
                    for name in p.value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                        if !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
                            return Err(ShapeError(format!(
                                "_elements names top-level elements; `{name}` is not one"
                            )));
                        }
                        list.push(name.to_owned());
                    }
                }
                "_count" if p.value.trim().parse::<u64>() == Ok(0) => count_only = true,
                _ => {}
            }
        }
        if count_only {
            shape.summary = Some(Summary::Count);
        }
        Ok(shape)
    }

    /// Whether the answer is a count only.
    pub fn is_count(&self) -> bool {
        self.summary == Some(Summary::Count)
    }

    /// Whether anything is to be cut.
    pub fn cuts(&self) -> bool {
        self.elements.is_some()
            || matches!(
                self.summary,
                Some(Summary::True | Summary::Text | Summary::Data)
            )
    }

    /// The parameters that carry this shape into the gateway's paging links.
    pub fn link_params(&self) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        match self.summary {
            Some(Summary::True) => pairs.push(("_summary".into(), "true".into())),
            Some(Summary::Text) => pairs.push(("_summary".into(), "text".into())),
            Some(Summary::Data) => pairs.push(("_summary".into(), "data".into())),
            Some(Summary::Count) | Some(Summary::False) | None => {}
        }
        if let Some(elements) = &self.elements {
            pairs.push(("_elements".into(), elements.join(",")));
        }
        pairs
    }

    /// Cuts `resource` (of `version`) to the shape; marks it `SUBSETTED` when anything was
    /// removed. Returns whether it did. With both `_summary` and `_elements`, an element
    /// stays when both keep it. A type the version does not define keeps only
    /// `resourceType`, `id`, `meta` (and `text` for `_summary=text`, all but `text` for
    /// `_summary=data`, what is listed for `_elements`).
    pub fn apply(&self, resource: &mut Value, version: FhirVersion) -> bool {
        if !self.cuts() {
            return false;
        }
        let Some(object) = resource.as_object_mut() else {
            return false;
        };
        let resource_type = object
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let top = top_elements(version, resource_type);
        let before = object.len();
        object.retain(|key, _| self.keeps(key, top));
        let cut = object.len() != before;
        if cut {
            mark_subsetted(object, version);
        }
        cut
    }

    /// Whether a top-level element of JSON name `key` stays.
    fn keeps(&self, key: &str, top: &[TopElement]) -> bool {
        // `_birthDate` (a primitive's id and extensions) follows `birthDate`.
        let name = key.strip_prefix('_').unwrap_or(key);
        if matches!(name, "resourceType" | "id" | "meta") {
            return true;
        }
        let element = top
            .binary_search_by(|e| e.json.cmp(name))
            .ok()
            .map(|i| &top[i]);
        let mandatory = element.is_some_and(|e| e.mandatory);
        let by_summary = match self.summary {
            Some(Summary::True) => mandatory || element.is_some_and(|e| e.summary),
            Some(Summary::Text) => mandatory || name == "text",
            Some(Summary::Data) => name != "text",
            Some(Summary::Count | Summary::False) | None => true,
        };
        let by_elements = match &self.elements {
            Some(listed) => {
                mandatory
                    || listed
                        .iter()
                        .any(|l| l == name || element.is_some_and(|e| e.base == l))
            }
            None => true,
        };
        by_summary && by_elements
    }
}

/// Adds the `SUBSETTED` tag of `version` to `meta.tag` (once).
fn mark_subsetted(object: &mut Map<String, Value>, version: FhirVersion) {
    let system = subsetted_system(version);
    let meta = object.entry("meta").or_insert_with(|| json!({}));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    let tags = meta.entry("tag").or_insert_with(|| json!([]));
    let Some(tags) = tags.as_array_mut() else {
        return;
    };
    let present = tags.iter().any(|t| {
        t.get("code").and_then(Value::as_str) == Some("SUBSETTED")
            && t.get("system").and_then(Value::as_str) == Some(system)
    });
    if !present {
        tags.push(json!({"system": system, "code": "SUBSETTED"}));
    }
}

/// The parameter names the gateway owns and never forwards as such (`_summary`,
/// `_elements`, with or without a modifier or chain).
pub fn is_shaping_param(name: &str) -> bool {
    let code = name.split([':', '.']).next().unwrap_or_default();
    matches!(code, "_summary" | "_elements")
}
