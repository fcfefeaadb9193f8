//! The data categories a patient shares in plain words ("Test results", "Your medicines"),
//! each a fixed list of FHIR resource types written as the permit provision's `class`
//! (system `http://hl7.org/fhir/resource-types`), which the consent crate decides on
//! (`Provision::resource_types`). THE one mapping: the grant form, the narrowing form, the
//! sentences of a consent and the reading of a posted form all ask this module.
//!
//! The set is deliberately small and chosen for what a patient recognises; a type in no
//! category (for example `Procedure`) is shared only by a share of all data (no category
//! chosen: no `class`, every resource type). Leaves out deciding (the consent crate).

use serde_json::{Value, json};

/// The system of `provision.class` codings that name resource types.
pub const RESOURCE_TYPES_SYSTEM: &str = "http://hl7.org/fhir/resource-types";

/// One category: its form value, its label, its words in a sentence, its resource types.
#[derive(Debug, PartialEq, Eq)]
pub struct DataCategory {
    /// The form value (`test-results`).
    pub code: &'static str,
    /// The form's label (`Test results`).
    pub label: &'static str,
    /// In a sentence: "may see your {phrase}".
    pub phrase: &'static str,
    pub resource_types: &'static [&'static str],
}

/// Every category, in the form's order. Each resource type is in at most one category.
pub const DATA_CATEGORIES: &[DataCategory] = &[
    DataCategory {
        code: "medicines",
        label: "Your medicines",
        phrase: "medicines",
        resource_types: &[
            "MedicationRequest",
            "MedicationStatement",
            "MedicationDispense",
            "MedicationAdministration",
        ],
    },
    DataCategory {
        code: "test-results",
        label: "Test results",
        phrase: "test results",
        resource_types: &["Observation", "DiagnosticReport"],
    },
    DataCategory {
        code: "conditions",
        label: "Conditions and problems",
        phrase: "conditions and problems",
        resource_types: &["Condition"],
    },
    DataCategory {
        code: "allergies",
        label: "Allergies",
        phrase: "allergies",
        resource_types: &["AllergyIntolerance"],
    },
    DataCategory {
        code: "immunisations",
        label: "Immunisations",
        phrase: "immunisations",
        resource_types: &["Immunization"],
    },
    DataCategory {
        code: "visits",
        label: "Visits and encounters",
        phrase: "visits and encounters",
        resource_types: &["Encounter", "EpisodeOfCare"],
    },
    DataCategory {
        code: "documents",
        label: "Documents",
        phrase: "documents",
        resource_types: &["DocumentReference", "Composition"],
    },
    DataCategory {
        code: "details",
        label: "Your details (name, address)",
        phrase: "details (name, address)",
        resource_types: &["Patient", "RelatedPerson"],
    },
];

/// The category with form value `code`.
pub fn category(code: &str) -> Option<&'static DataCategory> {
    DATA_CATEGORIES.iter().find(|c| c.code == code)
}

/// The categories a form chose (`category` fields), in the list's order, without repeats;
/// an unknown value is refused with it (a resource type is not a category).
pub fn chosen(fields: &[(String, String)]) -> Result<Vec<&'static DataCategory>, String> {
    let mut out: Vec<&'static DataCategory> = Vec::new();
    for (_, value) in fields.iter().filter(|(n, _)| n == "category") {
        let c = category(value).ok_or_else(|| value.clone())?;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out.sort_by_key(|c| DATA_CATEGORIES.iter().position(|d| d == *c));
    Ok(out)
}

/// The `provision.class` codings of `categories` (empty: every resource type, no `class`).
pub fn class_of(categories: &[&DataCategory]) -> Value {
    categories
        .iter()
        .flat_map(|c| c.resource_types)
        .map(|t| json!({"system": RESOURCE_TYPES_SYSTEM, "code": t}))
        .collect()
}

/// The categories whose resource types are all in `resource_types` (a provision's), and the
/// types left in none of them. An empty `resource_types` is all data: no category, nothing
/// left.
pub fn categories_of(resource_types: &[String]) -> (Vec<&'static DataCategory>, Vec<String>) {
    let held = |t: &&str| resource_types.iter().any(|r| r == t);
    let whole: Vec<&'static DataCategory> = DATA_CATEGORIES
        .iter()
        .filter(|c| c.resource_types.iter().all(held))
        .collect();
    let left = resource_types
        .iter()
        .filter(|r| !whole.iter().any(|c| c.resource_types.contains(&r.as_str())))
        .cloned()
        .collect();
    (whole, left)
}

/// A provision's resource types in words: "your records" for all of them, else the
/// categories' phrases ("your test results and medicines"), any other type by its name.
pub fn words(resource_types: &[String]) -> String {
    if resource_types.is_empty() {
        return "your records".to_owned();
    }
    let (whole, left) = categories_of(resource_types);
    let mut parts: Vec<String> = whole.iter().map(|c| c.phrase.to_owned()).collect();
    parts.extend(left);
    let list = match parts.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    };
    format!("your {list}")
}

/// The resource types in `document`'s root `provision.class` (a share's), as written.
pub fn share_resource_types(document: &Value) -> Vec<String> {
    document["provision"]["class"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            c["system"]
                .as_str()
                .is_none_or(|s| s == RESOURCE_TYPES_SYSTEM)
        })
        .filter_map(|c| c["code"].as_str().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(values: &[&str]) -> Vec<(String, String)> {
        values
            .iter()
            .map(|v| ("category".to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn each_type_is_in_one_category_and_named_as_fhir_names_it() {
        let mut seen = std::collections::HashSet::new();
        for c in DATA_CATEGORIES {
            for t in c.resource_types {
                assert!(seen.insert(*t), "{t} in two categories");
                assert!(
                    t.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                        && t.chars().all(|c| c.is_ascii_alphanumeric()),
                    "{t}"
                );
            }
        }
    }

    #[test]
    fn forms_read_known_categories_only_and_sentences_name_them() {
        let chosen = chosen(&form(&["medicines", "test-results", "medicines"])).unwrap();
        assert_eq!(
            chosen.iter().map(|c| c.code).collect::<Vec<_>>(),
            ["medicines", "test-results"]
        );
        assert_eq!(
            super::chosen(&form(&["secrets"])),
            Err("secrets".to_owned())
        );
        assert_eq!(
            super::chosen(&form(&["Procedure"])),
            Err("Procedure".to_owned())
        );
        let class = class_of(&chosen);
        let types: Vec<String> = class
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["code"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(types.len(), 6);
        assert_eq!(words(&types), "your medicines and test results");
        assert_eq!(words(&[]), "your records");
        assert_eq!(
            words(&["Observation".into()]),
            "your Observation",
            "half a category is named by its type"
        );
        let (whole, left) = categories_of(&["Condition".into(), "Procedure".into()]);
        assert_eq!(whole.len(), 1);
        assert_eq!(left, ["Procedure"]);
    }
}
