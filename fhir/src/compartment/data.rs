//! The Patient compartment, reference targets and top-level element flags as data, per FHIR
//! version: what the rule of whose data and response shaping read.
//!
//! Where the data came from: `fhir/data/patient-compartment-{stu3,r4,r4b,r5}.tsv`, generated
//! by `fhir/data/generate.py` from the official definitions of each version, as published by
//! HL7 on the npm registry: `hl7.fhir.r3.examples@3.0.2` (STU3 3.0.2), `hl7.fhir.r4.examples@4.0.1`
//! (R4 4.0.1), `hl7.fhir.r4b.core@4.3.0` (R4B) and `hl7.fhir.r5.core@5.0.0` (R5); in each, the
//! files `CompartmentDefinition-patient.json`, `SearchParameter-*.json` and
//! `StructureDefinition-*.json`. `fhir/data/README.md` gives the checksums and the format.
//!
//! Owns reading those files, once per version on first use, into tables looked up by binary
//! search; leaves out what the facts are used for (`compartment.rs`, `search.rs`,
//! `shaping.rs`). Element paths are JSON names joined by `.` (`Procedure.performer.actor`),
//! without array indices, a choice element as spelled in JSON (`Extension.valueReference`).

use std::sync::LazyLock;

use crate::FhirVersion;

/// What the walker does with the value of a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    /// A Reference; whether its definition lets it point at a Patient.
    Reference { may_be_patient: bool },
    /// A CodeableReference (R4B, R5); whether its `reference` may point at a Patient.
    CodeableReference { may_be_patient: bool },
    /// An embedded resource.
    Resource,
    /// A string locating a resource of the server (`Bundle.entry.request.url`,
    /// `Subscription.filterBy.value`).
    Location,
    /// A structure to descend into, by index into [`Tables::structs`].
    Struct(u32),
    /// An element named `resourceType` of a structure that is not a resource
    /// (`ExampleScenario.instance`): the object holding it is not a resource.
    Plain,
}

/// A data type, backbone element or resource type: its fields that lead to references,
/// sorted by JSON name.
#[derive(Debug)]
pub(crate) struct Struct {
    pub name: &'static str,
    pub fields: Vec<(&'static str, Field)>,
    /// Whether a field is a [`Field::Location`] (a string value worth a lookup).
    pub has_location: bool,
}

impl Struct {
    pub fn field(&self, name: &str) -> Option<Field> {
        self.fields
            .binary_search_by(|(n, _)| (*n).cmp(name))
            .ok()
            .map(|i| self.fields[i].1)
    }
}

/// A top-level element of a resource type, by JSON name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopElement {
    /// The JSON name (`valueQuantity`).
    pub json: &'static str,
    /// The element's name (`value` for `value[x]`).
    pub base: &'static str,
    /// Marked `isSummary` in the resource's definition.
    pub summary: bool,
    /// Minimum cardinality 1 or more.
    pub mandatory: bool,
}

/// A reference search parameter whose value may be a Patient.
#[derive(Debug)]
pub(crate) struct PatientSearchParam {
    pub code: &'static str,
    /// It can only mean a Patient: a bare id names one.
    pub only_patient: bool,
}

/// One resource type of a version.
#[derive(Debug)]
pub(crate) struct TypeEntry {
    pub name: &'static str,
    pub root: Option<u32>,
    /// The compartment definition's parameters, in its order.
    pub compartment: Vec<&'static str>,
    /// The elements each compartment parameter reads.
    pub compartment_paths: Vec<(&'static str, Vec<&'static str>)>,
    /// Sorted by code.
    pub search: Vec<PatientSearchParam>,
    /// The codes of `search`, sorted.
    pub search_codes: Vec<&'static str>,
    /// Sorted by JSON name.
    pub top: Vec<TopElement>,
}

/// Every fact of one version.
#[derive(Debug)]
pub(crate) struct Tables {
    pub source: &'static str,
    /// Sorted by name.
    pub types: Vec<TypeEntry>,
    /// Sorted by name.
    pub structs: Vec<Struct>,
    pub extension: Option<u32>,
    pub reference: Option<u32>,
    pub codeable_reference: Option<u32>,
    /// Lines that could not be read (a test keeps this empty).
    pub problems: Vec<String>,
}

static STU3: LazyLock<Tables> =
    LazyLock::new(|| Tables::parse(include_str!("../../data/patient-compartment-stu3.tsv")));
static R4: LazyLock<Tables> =
    LazyLock::new(|| Tables::parse(include_str!("../../data/patient-compartment-r4.tsv")));
static R4B: LazyLock<Tables> =
    LazyLock::new(|| Tables::parse(include_str!("../../data/patient-compartment-r4b.tsv")));
static R5: LazyLock<Tables> =
    LazyLock::new(|| Tables::parse(include_str!("../../data/patient-compartment-r5.tsv")));

/// The facts of `version`.
pub(crate) fn tables(version: FhirVersion) -> &'static Tables {
    match version {
        FhirVersion::Stu3 => &STU3,
        FhirVersion::R4 => &R4,
        FhirVersion::R4B => &R4B,
        FhirVersion::R5 => &R5,
    }
}

impl Tables {
    pub fn type_entry(&self, name: &str) -> Option<&TypeEntry> {
        self.types
            .binary_search_by(|t| t.name.cmp(name))
            .ok()
            .map(|i| &self.types[i])
    }

    /// The structure at `index`: every index handed out (field targets, type roots,
    /// `extension`, `reference`) comes from [`Tables::struct_index`] of these same tables, so
    /// it is in bounds.
    pub fn struct_at(&self, index: u32) -> &Struct {
        &self.structs[index as usize]
    }

    fn struct_index(&self, name: &str) -> Option<u32> {
        self.structs
            .binary_search_by(|s| s.name.cmp(name))
            .ok()
            .and_then(|i| u32::try_from(i).ok())
    }

    /// The field `name` of structure `at`, for walking by path.
    pub fn field(&self, at: u32, name: &str) -> Option<Field> {
        self.struct_at(at).field(name)
    }

    fn parse(text: &'static str) -> Tables {
        let mut tables = Tables {
            source: "",
            types: Vec::new(),
            structs: Vec::new(),
            extension: None,
            reference: None,
            codeable_reference: None,
            problems: Vec::new(),
        };
        // Structure fields by name first, resolved to indices once every structure is known.
        let mut raw_structs: Vec<(&'static str, Vec<(&'static str, &'static str)>)> = Vec::new();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let cells: Vec<&'static str> = line.split('\t').collect();
            match cells.as_slice() {
                ["version", _] => {}
                ["source", source] => tables.source = source,
                ["type", name] => tables.types.push(TypeEntry {
                    name,
                    root: None,
                    compartment: Vec::new(),
                    compartment_paths: Vec::new(),
                    search: Vec::new(),
                    search_codes: Vec::new(),
                    top: Vec::new(),
                }),
                ["compartment", name, param, paths] => match tables.entry_mut(name) {
                    Some(t) => {
                        t.compartment.push(param);
                        t.compartment_paths
                            .push((param, paths.split(',').filter(|p| !p.is_empty()).collect()));
                    }
                    None => tables.problems.push(format!("unknown type: {line}")),
                },
                ["search", name, code, scope, _paths] => match tables.entry_mut(name) {
                    Some(t) => t.search.push(PatientSearchParam {
                        code,
                        only_patient: *scope == "patient",
                    }),
                    None => tables.problems.push(format!("unknown type: {line}")),
                },
                ["top", name, elements] => {
                    let mut top = Vec::new();
                    let mut bad = false;
                    for cell in elements.split(' ').filter(|c| !c.is_empty()) {
                        let mut parts = cell.split(':');
                        match (parts.next(), parts.next(), parts.next(), parts.next()) {
                            (Some(json), Some(base), Some(flags), None) => top.push(TopElement {
                                json,
                                base,
                                summary: flags.contains('S'),
                                mandatory: flags.contains('M'),
                            }),
                            _ => bad = true,
                        }
                    }
                    match tables.entry_mut(name) {
                        Some(t) if !bad => t.top = top,
                        _ => tables.problems.push(format!("bad top line: {line}")),
                    }
                }
                ["struct", name, fields] => {
                    let mut parsed = Vec::new();
                    for cell in fields.split(' ').filter(|c| !c.is_empty()) {
                        match cell.split_once('=') {
                            Some(pair) => parsed.push(pair),
                            None => tables.problems.push(format!("bad field {cell}: {line}")),
                        }
                    }
                    raw_structs.push((name, parsed));
                }
                _ => tables.problems.push(format!("unknown line: {line}")),
            }
        }
        // Every structure a field names exists, with no fields when the generator left it out.
        raw_structs.sort_by_key(|(name, _)| *name);
        let mut names: Vec<&'static str> = raw_structs.iter().map(|(n, _)| *n).collect();
        for (_, fields) in &raw_structs {
            for (_, kind) in fields {
                if let Some(target) = kind.strip_prefix("s:") {
                    names.push(target);
                }
            }
        }
        names.extend(["Extension", "Reference", "CodeableReference"]);
        names.sort_unstable();
        names.dedup();
        tables.structs = names
            .iter()
            .map(|name| Struct {
                name,
                fields: Vec::new(),
                has_location: false,
            })
            .collect();
        for (name, fields) in raw_structs {
            let mut resolved = Vec::with_capacity(fields.len());
            for (field, kind) in fields {
                let kind = match kind {
                    "r+" => Field::Reference {
                        may_be_patient: true,
                    },
                    "r-" => Field::Reference {
                        may_be_patient: false,
                    },
                    "c+" => Field::CodeableReference {
                        may_be_patient: true,
                    },
                    "c-" => Field::CodeableReference {
                        may_be_patient: false,
                    },
                    "R" => Field::Resource,
                    "L" => Field::Location,
                    "P" => Field::Plain,
                    other => match other
                        .strip_prefix("s:")
                        .and_then(|s| tables.struct_index(s))
                    {
                        Some(index) => Field::Struct(index),
                        None => {
                            tables.problems.push(format!("bad kind {other} in {name}"));
                            continue;
                        }
                    },
                };
                resolved.push((field, kind));
            }
            resolved.sort_by_key(|(field, _)| *field);
            if let Some(index) = tables.struct_index(name) {
                let s = &mut tables.structs[index as usize];
                s.has_location = resolved.iter().any(|(_, k)| *k == Field::Location);
                s.fields = resolved;
            }
        }
        tables.extension = tables.struct_index("Extension");
        tables.reference = tables.struct_index("Reference");
        tables.codeable_reference = tables.struct_index("CodeableReference");
        tables.types.sort_by_key(|t| t.name);
        let roots: Vec<Option<u32>> = tables
            .types
            .iter()
            .map(|t| tables.struct_index(t.name))
            .collect();
        for (t, root) in tables.types.iter_mut().zip(roots) {
            t.root = root;
            t.search.sort_by_key(|p| p.code);
            t.search_codes = t.search.iter().map(|p| p.code).collect();
            t.top.sort_by_key(|e| e.json);
        }
        tables
    }

    fn entry_mut(&mut self, name: &str) -> Option<&mut TypeEntry> {
        // Types come first in the file, in order; the sort at the end keeps them sorted.
        self.types.iter_mut().rev().find(|t| t.name == name)
    }
}

/// The search parameters listed for `resource_type` by the Patient CompartmentDefinition.
pub(super) fn patient_params(version: FhirVersion, resource_type: &str) -> &'static [&'static str] {
    tables(version)
        .type_entry(resource_type)
        .map(|t| t.compartment.as_slice())
        .unwrap_or(&[])
}

/// Every search parameter of `resource_type` whose value is a reference that may be a
/// Patient (the compartment's parameters, and others such as `Observation.focus`), sorted.
pub(super) fn patient_search_params(
    version: FhirVersion,
    resource_type: &str,
) -> &'static [&'static str] {
    tables(version)
        .type_entry(resource_type)
        .map(|t| t.search_codes.as_slice())
        .unwrap_or(&[])
}

/// The search parameter `code` of `resource_type` when its value may be a Patient.
pub(super) fn patient_search_param(
    version: FhirVersion,
    resource_type: &str,
    code: &str,
) -> Option<&'static PatientSearchParam> {
    let t = tables(version).type_entry(resource_type)?;
    t.search
        .binary_search_by(|p| p.code.cmp(code))
        .ok()
        .map(|i| &t.search[i])
}

/// What the element at `path` (`Observation.subject`, `Procedure.performer.actor`,
/// `Observation.extension.valueReference`) is, walking the tables as the rule walks a
/// resource: `None` when the tables do not know it.
pub(super) fn field_at(version: FhirVersion, path: &str) -> Option<Field> {
    let tables = tables(version);
    let mut steps = path.split('.');
    let root = tables.type_entry(steps.next()?)?.root?;
    let mut at = Some(root);
    let mut field = None;
    let mut in_codeable_reference: Option<bool> = None;
    for step in steps {
        if let Some(may_be_patient) = in_codeable_reference.take()
            && step == "reference"
        {
            field = Some(Field::Reference { may_be_patient });
            at = tables.reference;
            continue;
        }
        let current = at?;
        field = match step {
            "extension" | "modifierExtension" => tables.extension.map(Field::Struct),
            _ => tables.field(current, step),
        };
        at = match field? {
            Field::Struct(index) => Some(index),
            Field::Reference { .. } => tables.reference,
            Field::CodeableReference { may_be_patient } => {
                in_codeable_reference = Some(may_be_patient);
                tables.codeable_reference
            }
            Field::Resource | Field::Location | Field::Plain => None,
        };
    }
    field
}

/// Whether the element at `path` holds a Reference that may point at a Patient. An element
/// the tables do not know may (the walker reads it so).
pub(super) fn may_refer_to_patient(version: FhirVersion, path: &str) -> bool {
    match field_at(version, path) {
        Some(Field::Reference { may_be_patient }) => may_be_patient,
        Some(_) => false,
        None => true,
    }
}

/// Every element path of `resource_type` whose Reference may point at a Patient, each
/// structure entered at most once on a path (recursive structures, `Questionnaire.item.item`,
/// are listed at their first level) and extensions left out but for the resource's own
/// `extension.valueReference`.
pub(super) fn patient_reference_paths(version: FhirVersion, resource_type: &str) -> Vec<String> {
    let tables = tables(version);
    let mut out = Vec::new();
    let Some(root) = tables.type_entry(resource_type).and_then(|t| t.root) else {
        return out;
    };
    let mut on_path = vec![root];
    collect_paths(tables, root, resource_type, &mut on_path, &mut out);
    if tables
        .extension
        .and_then(|e| tables.field(e, "valueReference"))
        .is_some()
    {
        out.push(format!("{resource_type}.extension.valueReference"));
    }
    out
}

fn collect_paths(
    tables: &Tables,
    at: u32,
    path: &str,
    on_path: &mut Vec<u32>,
    out: &mut Vec<String>,
) {
    for (name, field) in &tables.struct_at(at).fields {
        let here = format!("{path}.{name}");
        match *field {
            Field::Reference {
                may_be_patient: true,
            } => out.push(here),
            Field::CodeableReference {
                may_be_patient: true,
            } => out.push(format!("{here}.reference")),
            Field::Struct(index) if !on_path.contains(&index) => {
                on_path.push(index);
                collect_paths(tables, index, &here, on_path, out);
                on_path.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_reads_without_problems() {
        for version in FhirVersion::ALL {
            let t = tables(version);
            assert!(t.problems.is_empty(), "{version:?}: {:?}", t.problems);
            assert!(
                t.source.contains(version.semver()),
                "{version:?}: {}",
                t.source
            );
            assert!(t.types.len() > 100, "{version:?}");
            assert!(t.extension.is_some() && t.reference.is_some());
            assert!(t.types.iter().all(|e| e.root.is_some()), "{version:?}");
            assert!(t.types.windows(2).all(|w| w[0].name < w[1].name));
            assert!(t.structs.windows(2).all(|w| w[0].name < w[1].name));
        }
    }

    #[test]
    fn compartment_facts_match_the_definitions() {
        use FhirVersion::*;
        assert_eq!(patient_params(R4, "Observation"), ["subject", "performer"]);
        assert_eq!(
            patient_params(Stu3, "Observation"),
            ["subject", "performer"]
        );
        assert_eq!(patient_params(R4, "Procedure"), ["patient", "performer"]);
        assert_eq!(patient_params(R4, "Account"), ["subject"]);
        assert_eq!(patient_params(R5, "Patient"), ["{def}", "link"]);
        assert!(patient_params(R4, "Practitioner").is_empty());
        assert!(patient_params(R4, "NoSuchType").is_empty());
        assert_eq!(
            patient_search_params(R4, "Observation"),
            ["focus", "patient", "performer", "subject"]
        );
        let p = patient_search_param(R4, "Observation", "patient").map(|p| p.only_patient);
        assert_eq!(p, Some(true));
        let s = patient_search_param(R4, "Observation", "subject").map(|p| p.only_patient);
        assert_eq!(s, Some(false));
        assert!(patient_search_param(R4, "Observation", "code").is_none());
        for (version, path, may) in [
            (R4, "Observation.subject", true),
            (R4, "Observation.focus", true),
            (R4, "Observation.derivedFrom", false),
            (R4, "Observation.note.authorReference", true),
            (R4, "Observation.identifier.assigner", false),
            (R4, "Observation.extension.valueReference", true),
            (R4, "Observation.code.extension.valueReference", true),
            (R4, "Procedure.performer.actor", true),
            (R4, "Group.member.entity", true),
            (R4, "Provenance.target", true),
            (R4, "Appointment.participant.actor", true),
            (R4, "ResearchSubject.individual", true),
            (R4, "Account.subject", true),
            (R4, "Task.for", true),
            (R4, "Parameters.parameter.part.part.valueReference", true),
            (
                R4,
                "Questionnaire.item.item.item.answerOption.valueReference",
                true,
            ),
            (
                R4,
                "QuestionnaireResponse.item.item.answer.item.answer.valueReference",
                true,
            ),
            (Stu3, "Observation.context", false),
            (Stu3, "AuditEvent.agent.reference", true),
            (R5, "Observation.subject", true),
            (R5, "Procedure.reason.reference", false),
            (R5, "Encounter.reason.value.reference", false),
        ] {
            assert_eq!(
                may_refer_to_patient(version, path),
                may,
                "{version:?} {path}"
            );
        }
        assert_eq!(
            field_at(R4, "Bundle.entry.request.url"),
            Some(Field::Location)
        );
        assert_eq!(field_at(R4, "Bundle.entry.resource"), Some(Field::Resource));
    }

    #[test]
    fn top_level_flags_keep_every_choice_spelling() {
        let t = tables(FhirVersion::R4).type_entry("Observation");
        let top = t.map(|t| t.top.as_slice()).unwrap_or(&[]);
        let value: Vec<&str> = top
            .iter()
            .filter(|e| e.base == "value")
            .map(|e| e.json)
            .collect();
        assert!(value.contains(&"valueQuantity") && value.contains(&"valueString"));
        let status = top.iter().find(|e| e.json == "status");
        assert!(status.is_some_and(|e| e.summary && e.mandatory));
        let text = top.iter().find(|e| e.json == "text");
        assert!(text.is_some_and(|e| !e.summary && !e.mandatory));
    }
}
