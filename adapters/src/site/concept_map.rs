//! FHIR ConceptMap resources (JSON) as the site adapter reads them: groups of source system →
//! target system, each source code with its targets and their relationship, R4's
//! `equivalence` (read from target to source) and R5's `relationship` (read from source to
//! target) brought to one [`Relationship`].
//!
//! Leaves out: `dependsOn`/`product` (conditional mappings are refused at load, never
//! ignored), `unmapped.mode = other-map` (refused), and ConceptMaps' own versions.

use serde_json::Value;

/// How a target concept relates to its source concept, read from source to target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Relationship {
    /// R4 `equivalent`, `equal`; R5 `equivalent`.
    Equivalent,
    /// The target means more than the source: R4 `wider`, `subsumes`; R5
    /// `source-is-narrower-than-target`.
    TargetBroader,
    /// The target means less than the source: R4 `narrower`, `specializes`; R5
    /// `source-is-broader-than-target`.
    TargetNarrower,
    /// Related in an unstated way: R4 `relatedto`, `inexact`; R5 `related-to`.
    Related,
    /// Explicitly no counterpart: R4 `unmatched`, `disjoint`; R5 `not-related-to`,
    /// `noMap`.
    NotRelated,
}

impl Relationship {
    fn from_r4(code: &str) -> Option<Relationship> {
        Some(match code {
            "equivalent" | "equal" => Relationship::Equivalent,
            "wider" | "subsumes" => Relationship::TargetBroader,
            "narrower" | "specializes" => Relationship::TargetNarrower,
            "relatedto" | "inexact" => Relationship::Related,
            "unmatched" | "disjoint" => Relationship::NotRelated,
            _ => return None,
        })
    }

    fn from_r5(code: &str) -> Option<Relationship> {
        Some(match code {
            "equivalent" => Relationship::Equivalent,
            "source-is-narrower-than-target" => Relationship::TargetBroader,
            "source-is-broader-than-target" => Relationship::TargetNarrower,
            "related-to" => Relationship::Related,
            "not-related-to" => Relationship::NotRelated,
            _ => return None,
        })
    }

    /// The same relationship read from target to source.
    pub fn inverse(self) -> Relationship {
        match self {
            Relationship::TargetBroader => Relationship::TargetNarrower,
            Relationship::TargetNarrower => Relationship::TargetBroader,
            other => other,
        }
    }

    /// The spelling in issues.
    pub fn as_str(self) -> &'static str {
        match self {
            Relationship::Equivalent => "equivalent",
            Relationship::TargetBroader => "source-is-narrower-than-target",
            Relationship::TargetNarrower => "source-is-broader-than-target",
            Relationship::Related => "related-to",
            Relationship::NotRelated => "not-related-to",
        }
    }
}

/// One source code and one of its targets (or none).
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub code: String,
    /// `None` for an explicit "no counterpart".
    pub target: Option<TargetCode>,
    pub relationship: Relationship,
    /// Where in the ConceptMap (`group[0].element[2].target[0]`).
    pub location: String,
}

#[derive(Debug, Clone)]
pub(crate) struct TargetCode {
    pub code: String,
    pub display: Option<String>,
}

/// What a group says about source codes it does not list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unmapped {
    /// Nothing said: the code is kept and reported.
    Unsaid,
    /// R4 `provided`, R5 `use-source-code`: the code is kept as it is, by design.
    UseSource,
    /// R4/R5 `fixed`: every unlisted code becomes this code of the target system.
    Fixed {
        code: String,
        display: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub source: String,
    pub target: String,
    pub entries: Vec<Entry>,
    pub unmapped: Unmapped,
}

/// A parsed ConceptMap.
#[derive(Debug, Clone)]
pub(crate) struct ConceptMap {
    /// Its `url`, else `id`, for issue messages.
    pub name: String,
    pub groups: Vec<Group>,
}

/// A system as a ConceptMap names it (a canonical, perhaps `|version`), without the version.
fn system(value: &str) -> &str {
    value.split('|').next().unwrap_or_default()
}

/// Parses a ConceptMap from JSON text. Errors name the line for syntax errors and the
/// element path otherwise.
pub(crate) fn parse(text: &str) -> Result<ConceptMap, String> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| format!("line {}, column {}: not JSON: {e}", e.line(), e.column()))?;
    if value.get("resourceType").and_then(Value::as_str) != Some("ConceptMap") {
        return Err("resourceType: not a ConceptMap".into());
    }
    let name = value
        .get("url")
        .or_else(|| value.get("id"))
        .and_then(Value::as_str)
        .unwrap_or("ConceptMap")
        .to_owned();
    let groups_json = match value.get("group") {
        None => return Err("group: a ConceptMap for a site adapter needs a group".into()),
        Some(Value::Array(groups)) if !groups.is_empty() => groups,
        Some(_) => return Err("group: must be a non-empty array".into()),
    };
    let mut groups = Vec::new();
    for (g, group) in groups_json.iter().enumerate() {
        let at = |rest: &str| format!("group[{g}]{rest}");
        let text_of = |key: &str| {
            group
                .get(key)
                .and_then(Value::as_str)
                .map(system)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let source = text_of("source").ok_or_else(|| {
            at(".source: the source system must be given (an empty system maps nothing)")
        })?;
        let target = text_of("target").ok_or_else(|| {
            at(".target: the target system must be given (an empty system maps nothing)")
        })?;
        let unmapped = match group.get("unmapped") {
            None => Unmapped::Unsaid,
            Some(u) => match u.get("mode").and_then(Value::as_str) {
                Some("provided" | "use-source-code") => Unmapped::UseSource,
                Some("fixed") => {
                    let code = u
                        .get("code")
                        .and_then(Value::as_str)
                        .filter(|c| !c.is_empty())
                        .ok_or_else(|| at(".unmapped.code: mode `fixed` needs a code"))?;
                    Unmapped::Fixed {
                        code: code.to_owned(),
                        display: u.get("display").and_then(Value::as_str).map(str::to_owned),
                    }
                }
                Some("other-map") => {
                    return Err(at(
                        ".unmapped.mode: `other-map` is not supported by site adapters; list the other ConceptMap in the adapter file instead",
                    ));
                }
                other => {
                    return Err(at(&format!(
                        ".unmapped.mode: `{}` is not a ConceptMap unmapped mode",
                        other.unwrap_or("(missing)")
                    )));
                }
            },
        };
        let mut entries = Vec::new();
        let elements = match group.get("element") {
            None => &Vec::new(),
            Some(Value::Array(elements)) => elements,
            Some(_) => return Err(at(".element: must be an array")),
        };
        for (e, element) in elements.iter().enumerate() {
            let at = |rest: &str| format!("group[{g}].element[{e}]{rest}");
            let code = element
                .get("code")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .ok_or_else(|| at(".code: every element needs a source code"))?;
            if element.get("noMap").and_then(Value::as_bool) == Some(true) {
                entries.push(Entry {
                    code: code.to_owned(),
                    target: None,
                    relationship: Relationship::NotRelated,
                    location: at(".noMap"),
                });
                continue;
            }
            let targets = match element.get("target") {
                Some(Value::Array(targets)) if !targets.is_empty() => targets,
                _ => {
                    return Err(at(
                        ".target: an element needs a target (or noMap = true in R5)",
                    ));
                }
            };
            for (t, target) in targets.iter().enumerate() {
                let at = |rest: &str| format!("group[{g}].element[{e}].target[{t}]{rest}");
                if target.get("dependsOn").is_some() || target.get("product").is_some() {
                    return Err(at(
                        ": dependsOn/product (conditional mappings) are not supported by site adapters",
                    ));
                }
                let relationship = match (
                    target.get("equivalence").and_then(Value::as_str),
                    target.get("relationship").and_then(Value::as_str),
                ) {
                    (Some(_), Some(_)) => {
                        return Err(at(
                            ": has both equivalence (R4) and relationship (R5); give one",
                        ));
                    }
                    (Some(code), None) => Relationship::from_r4(code).ok_or_else(|| {
                        at(&format!(
                            ".equivalence: `{code}` is not an R4 ConceptMapEquivalence"
                        ))
                    })?,
                    (None, Some(code)) => Relationship::from_r5(code).ok_or_else(|| {
                        at(&format!(
                            ".relationship: `{code}` is not an R5 ConceptMapRelationship"
                        ))
                    })?,
                    (None, None) => {
                        return Err(at(
                            ": needs equivalence (R4) or relationship (R5); a mapping's meaning is never assumed",
                        ));
                    }
                };
                let target_code = target
                    .get("code")
                    .and_then(Value::as_str)
                    .filter(|c| !c.is_empty());
                let target = match (target_code, relationship) {
                    (_, Relationship::NotRelated) => None,
                    (Some(code), _) => Some(TargetCode {
                        code: code.to_owned(),
                        display: target
                            .get("display")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                    }),
                    (None, _) => return Err(at(".code: a target that relates needs a code")),
                };
                entries.push(Entry {
                    code: code.to_owned(),
                    target,
                    relationship,
                    location: at(""),
                });
            }
        }
        groups.push(Group {
            source,
            target,
            entries,
            unmapped,
        });
    }
    Ok(ConceptMap { name, groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r4_and_r5_relationships_read_alike() {
        let r4 = r#"{"resourceType":"ConceptMap","url":"urn:m","group":[{"source":"urn:a|2","target":"urn:b",
            "element":[{"code":"1","target":[{"code":"x","equivalence":"wider"}]}]}]}"#;
        let r5 = r#"{"resourceType":"ConceptMap","url":"urn:m","group":[{"source":"urn:a","target":"urn:b",
            "element":[{"code":"1","target":[{"code":"x","relationship":"source-is-narrower-than-target"}]},
                       {"code":"2","noMap":true}]}]}"#;
        let a = parse(r4).unwrap();
        let b = parse(r5).unwrap();
        assert_eq!(a.groups[0].source, "urn:a");
        assert_eq!(
            a.groups[0].entries[0].relationship,
            b.groups[0].entries[0].relationship
        );
        assert_eq!(
            a.groups[0].entries[0].relationship,
            Relationship::TargetBroader
        );
        assert!(b.groups[0].entries[1].target.is_none());
    }

    #[test]
    fn bad_maps_name_the_element() {
        let e = parse(r#"{"resourceType":"ConceptMap","group":[{"source":"","target":"urn:b"}]}"#)
            .unwrap_err();
        assert!(e.starts_with("group[0].source"), "{e}");
        let e = parse(
            r#"{"resourceType":"ConceptMap","group":[{"source":"urn:a","target":"urn:b",
            "element":[{"code":"1","target":[{"code":"x","equivalence":"same"}]}]}]}"#,
        )
        .unwrap_err();
        assert!(
            e.starts_with("group[0].element[0].target[0].equivalence"),
            "{e}"
        );
        let e = parse("{\n\"resourceType\": \"ConceptMap\",\n oops}").unwrap_err();
        assert!(e.starts_with("line 3"), "{e}");
        let e = parse(r#"{"resourceType":"Patient"}"#).unwrap_err();
        assert!(e.contains("not a ConceptMap"), "{e}");
    }
}
