//! Response shaping done by the gateway, never by the hospital: `_summary` and `_elements`
//! applied to a resource that has been decided and is about to be released.
//!
//! Owns what each form keeps (the spec's rules: `_summary=true` keeps the elements marked
//! "summary" in the resource's definition, `text` keeps `text`, `id`, `meta` and the
//! mandatory top-level elements, `data` drops `text`, `_elements` keeps the listed top-level
//! elements plus `id`, `meta` and the mandatory ones) and the `SUBSETTED` tag on what was
//! cut. Leaves out: deciding (shaping only ever removes from what was already decided).
//!
//! PLACEHOLDER: `_summary=true` and `_summary=text` need the per-version summary and
//! mandatory element tables; until they are generated they are refused as unsupported.

use serde_json::{Value, json};

use crate::FhirVersion;
use crate::compartment::SearchParam;

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

/// The `SUBSETTED` security tag (v3 ObservationValue).
pub const SUBSETTED_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

impl Shape {
    /// The shape asked for by `_summary`, `_elements` and `_count=0` (which asks for a count).
    pub fn from_params(params: &[SearchParam]) -> Result<Shape, ShapeError> {
        let mut shape = Shape::default();
        for p in params {
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
                "_count" if p.value.trim() == "0" && shape.summary.is_none() => {
                    shape.summary = Some(Summary::Count);
                }
                _ => {}
            }
        }
        if shape
            .summary
            .is_some_and(|s| matches!(s, Summary::True | Summary::Text))
        {
            return Err(ShapeError(
                "_summary=true and _summary=text are not served yet".into(),
            ));
        }
        Ok(shape)
    }

    /// Whether the answer is a count only.
    pub fn is_count(&self) -> bool {
        self.summary == Some(Summary::Count)
    }

    /// Whether anything is to be cut.
    pub fn cuts(&self) -> bool {
        self.elements.is_some() || matches!(self.summary, Some(Summary::Data))
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
    /// removed. Returns whether it did.
    pub fn apply(&self, resource: &mut Value, _version: FhirVersion) -> bool {
        let Some(object) = resource.as_object_mut() else {
            return false;
        };
        let before = object.len();
        if let Some(elements) = &self.elements {
            object.retain(|k, _| {
                matches!(k.as_str(), "resourceType" | "id" | "meta")
                    || elements.iter().any(|e| e == k)
            });
        }
        if self.summary == Some(Summary::Data) {
            object.remove("text");
        }
        let cut = object.len() != before;
        if cut {
            let meta = object.entry("meta").or_insert_with(|| json!({}));
            if let Some(meta) = meta.as_object_mut() {
                let tags = meta.entry("tag").or_insert_with(|| json!([]));
                if let Some(tags) = tags.as_array_mut() {
                    tags.push(json!({"system": SUBSETTED_SYSTEM, "code": "SUBSETTED"}));
                }
            }
        }
        cut
    }
}

/// The parameter names the gateway owns and never forwards as such.
pub fn is_shaping_param(name: &str) -> bool {
    matches!(name, "_summary" | "_elements")
}
