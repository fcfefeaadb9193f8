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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compartment::parse_search;

    fn shape(query: &str) -> Result<Shape, ShapeError> {
        Shape::from_params(&parse_search(query))
    }

    fn observation() -> Value {
        json!({"resourceType": "Observation", "id": "o", "meta": {"versionId": "2"},
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">x</div>"},
            "status": "final", "_status": {"extension": [{"url": "urn:x", "valueString": "y"}]},
            "category": [{"text": "vital-signs"}], "code": {"text": "weight"},
            "subject": {"reference": "Patient/a"}, "valueQuantity": {"value": 70},
            "effectiveDateTime": "2020-01-01", "note": [{"text": "n"}],
            "extension": [{"url": "urn:e", "valueString": "e"}]})
    }

    fn keys(v: &Value) -> Vec<&str> {
        v.as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default()
    }

    fn tags(v: &Value) -> Vec<(String, String)> {
        v.pointer("/meta/tag")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|t| {
                let s = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                (s("system"), s("code"))
            })
            .collect()
    }

    #[test]
    fn shapes_are_read_from_parameters() {
        assert_eq!(
            shape("_summary=true").map(|s| s.summary),
            Ok(Some(Summary::True))
        );
        assert_eq!(
            shape("_summary=text").map(|s| s.summary),
            Ok(Some(Summary::Text))
        );
        assert!(shape("_summary=count").is_ok_and(|s| s.is_count()));
        assert!(shape("_count=0&_summary=true").is_ok_and(|s| s.is_count()));
        assert!(shape("_summary=true&_count=00").is_ok_and(|s| s.is_count()));
        assert!(shape("_count=10").is_ok_and(|s| !s.is_count() && !s.cuts()));
        assert_eq!(
            shape("_elements=code,subject&_elements=value").map(|s| s.elements),
            Ok(Some(vec!["code".into(), "subject".into(), "value".into()]))
        );
        for bad in [
            "_summary=maybe",
            "_summary=true&_summary=data",
            "_summary:not=true",
            "_elements.x=code",
            "_elements=Observation.code",
            "_elements=value[x]",
        ] {
            assert!(shape(bad).is_err(), "{bad}");
        }
        assert!(is_shaping_param("_summary") && is_shaping_param("_elements:x"));
        assert!(!is_shaping_param("_count") && !is_shaping_param("_summaryx"));
    }

    #[test]
    fn summary_true_keeps_the_summary_elements_and_every_choice_spelling() {
        let mut r = observation();
        assert!(shape("_summary=true").is_ok_and(|s| s.apply(&mut r, FhirVersion::R4)));
        assert_eq!(
            keys(&r),
            [
                "code",
                "effectiveDateTime",
                "id",
                "meta",
                "resourceType",
                "status",
                "_status",
                "subject",
                "valueQuantity"
            ]
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
        );
        assert_eq!(
            tags(&r),
            [(SUBSETTED_SYSTEM.to_owned(), "SUBSETTED".to_owned())]
        );
        assert_eq!(r.pointer("/meta/versionId"), Some(&json!("2")));
        // Shaping again cuts nothing more and does not tag twice.
        assert!(shape("_summary=true").is_ok_and(|s| !s.apply(&mut r, FhirVersion::R4)));
        assert_eq!(tags(&r).len(), 1);
    }

    #[test]
    fn summary_text_data_and_elements_keep_what_the_spec_says() {
        let mut r = observation();
        assert!(shape("_summary=text").is_ok_and(|s| s.apply(&mut r, FhirVersion::R4)));
        let mut k = keys(&r);
        k.sort_unstable();
        assert_eq!(
            k,
            [
                "_status",
                "code",
                "id",
                "meta",
                "resourceType",
                "status",
                "text"
            ]
        );

        let mut r = observation();
        assert!(shape("_summary=data").is_ok_and(|s| s.apply(&mut r, FhirVersion::R4)));
        assert!(r.get("text").is_none() && r.get("note").is_some());

        let mut r = observation();
        assert!(shape("_elements=value,note").is_ok_and(|s| s.apply(&mut r, FhirVersion::R4)));
        let mut k = keys(&r);
        k.sort_unstable();
        assert_eq!(
            k,
            [
                "_status",
                "code",
                "id",
                "meta",
                "note",
                "resourceType",
                "status",
                "valueQuantity"
            ]
        );

        // Both: an element stays when both keep it.
        let mut r = observation();
        let both = shape("_summary=true&_elements=note,subject");
        assert!(both.is_ok_and(|s| s.apply(&mut r, FhirVersion::R4)));
        let mut k = keys(&r);
        k.sort_unstable();
        assert_eq!(
            k,
            [
                "_status",
                "code",
                "id",
                "meta",
                "resourceType",
                "status",
                "subject"
            ]
        );

        // Nothing to cut: no tag.
        let mut r =
            json!({"resourceType": "Observation", "id": "o", "status": "final", "code": {}});
        assert!(shape("_summary=data").is_ok_and(|s| !s.apply(&mut r, FhirVersion::R4)));
        assert!(r.get("meta").is_none());
        assert!(shape("_summary=false").is_ok_and(|s| !s.apply(&mut r, FhirVersion::R4)));
    }

    #[test]
    fn each_version_has_its_own_definitions_and_tag() {
        // STU3 Observation has `context` (not summary) and `comment`; R4 has `encounter`
        // (summary) and no `context`.
        let mut r = json!({"resourceType": "Observation", "id": "o", "status": "final",
            "code": {}, "subject": {"reference": "Patient/a"},
            "context": {"reference": "Encounter/e"}, "comment": "c"});
        assert!(shape("_summary=true").is_ok_and(|s| s.apply(&mut r, FhirVersion::Stu3)));
        assert!(r.get("subject").is_some());
        assert!(r.get("context").is_none() && r.get("comment").is_none());
        assert_eq!(
            tags(&r),
            [(SUBSETTED_SYSTEM_STU3.to_owned(), "SUBSETTED".to_owned())]
        );
        let mut r = json!({"resourceType": "Observation", "id": "o", "status": "final",
            "code": {}, "encounter": {"reference": "Encounter/e"}, "context": {}});
        assert!(shape("_summary=true").is_ok_and(|s| s.apply(&mut r, FhirVersion::R4)));
        assert!(r.get("encounter").is_some() && r.get("context").is_none());
        // A type the version does not define keeps only what every resource keeps.
        let mut r = json!({"resourceType": "NotAType", "id": "x", "a": 1, "text": {}});
        assert!(shape("_summary=true").is_ok_and(|s| s.apply(&mut r, FhirVersion::R5)));
        let mut k = keys(&r);
        k.sort_unstable();
        assert_eq!(k, ["id", "meta", "resourceType"]);
        // A meta that is not an object is left as it is.
        let mut r = json!({"resourceType": "Observation", "meta": 3, "note": []});
        assert!(shape("_summary=true").is_ok_and(|s| s.apply(&mut r, FhirVersion::R4)));
        assert_eq!(r.get("meta"), Some(&json!(3)));
    }
}
