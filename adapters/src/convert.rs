//! The conversion engine: one adjacent step (STU3↔R4, R4↔R4B, R4B↔R5) applied to one
//! resource in place, walking the JSON beside the element definitions of both versions.
//!
//! Per object it applies the step's element rules (renames, code remaps, from
//! `convert/rules.rs`), then converts every key generically by comparing the source and target
//! definitions (cardinality, type changes, elements the target lacks), then restores elements
//! carried in cross-version extensions of the target version. Leaves out the per-resource
//! moves (in `convert/rules.rs`) and extension encoding (in `convert/extension.rs`).

pub(crate) mod code_systems;
pub(crate) mod datatypes;
pub(crate) mod extension;
pub(crate) mod merges;
pub(crate) mod rules;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::sync::LazyLock;

use assent_fhir::{FhirVersion, Issue, IssueCode, Severity};
use serde_json::{Map, Value};

use crate::definitions::{Child, Definitions, NodeId, definitions};

/// Deepest nesting of resources (contained, Bundle entries) converted; deeper ones are left
/// as they are and reported, so hostile input cannot exhaust the stack.
const MAX_RESOURCE_DEPTH: usize = 16;
/// Deepest nesting of backbone elements walked.
const MAX_ELEMENT_DEPTH: usize = 64;

/// The state of one translation: where issues go, the step being applied.
pub(crate) struct Ctx<'a> {
    pub issues: &'a mut Vec<Issue>,
    pub from: FhirVersion,
    pub to: FhirVersion,
    pub source: &'static Definitions,
    pub target: &'static Definitions,
    pub table: &'static StepTable,
    /// The step's own definitions and table (`source`, `target`, `table` differ from them
    /// only inside a resource that one of R4/R4B lacks, walked with the other's definitions).
    step_source: &'static Definitions,
    step_target: &'static Definitions,
    step_table: &'static StepTable,
    /// The version the whole translation started from (names carriers of R4/R4B).
    pub origin: FhirVersion,
    /// The version the whole translation ends in.
    pub goal: FhirVersion,
    resource_depth: usize,
}

impl Ctx<'_> {
    pub fn issue(&mut self, severity: Severity, code: IssueCode, path: &str, diagnostics: String) {
        self.issues
            .push(Issue::new(severity, code, diagnostics).at(path));
    }

    /// Whether this step checks required elements: where the output is final, the last
    /// step, or the last one before the R4↔R4B step (mostly identical definitions).
    fn checks_required(&self) -> bool {
        let r4_family = |v: FhirVersion| matches!(v, FhirVersion::R4 | FhirVersion::R4B);
        self.to == self.goal
            || (r4_family(self.to) && r4_family(self.goal) && !r4_family(self.from))
    }

    /// Report `path` carried in a cross-version extension.
    pub fn carried(&mut self, path: &str, why: &str) {
        let (from, to) = (self.from, self.to);
        self.issue(
            Severity::Information,
            IssueCode::Informational,
            path,
            format!("{path} ({from}) {why} in {to}; kept in a cross-version extension"),
        );
    }
}

/// A step's rules resolved against the definitions, built once per step.
#[derive(Default)]
pub(crate) struct StepTable {
    /// Resource types whose definitions are identical in both versions and have no rules.
    pub identity: HashSet<&'static str>,
    /// Per source node: renames (old key → new key).
    pub renames: HashMap<NodeId, Vec<(&'static str, &'static str)>>,
    /// Per source node: code remaps of one key.
    pub codes: HashMap<NodeId, Vec<(&'static str, &'static rules::CodeMap)>>,
    /// Per source resource type: whole-resource rules run before the walk.
    pub resource_rules: HashMap<&'static str, Vec<rules::ResourceRule>>,
    /// Per source node: concept-or-reference merges and splits (R4B↔R5).
    pub merges: HashMap<NodeId, Vec<merges::Merge>>,
}

/// Resource types renamed between adjacent versions: (older version, its name, newer version,
/// its name). From the R3↔R4 and R4↔R5 conversion maps: STU3 `ProcedureRequest`, `BodySite`,
/// `EligibilityRequest`/`EligibilityResponse` and `Sequence` became R4 `ServiceRequest`,
/// `BodyStructure`, `CoverageEligibilityRequest`/`CoverageEligibilityResponse` and
/// `MolecularSequence`; R4 `DeviceUseStatement` and `RequestGroup` became R5 `DeviceUsage`
/// and `RequestOrchestration`.
pub(crate) const RENAMED_TYPES: &[(FhirVersion, &str, FhirVersion, &str)] = &[
    (
        FhirVersion::Stu3,
        "ProcedureRequest",
        FhirVersion::R4,
        "ServiceRequest",
    ),
    (
        FhirVersion::Stu3,
        "BodySite",
        FhirVersion::R4,
        "BodyStructure",
    ),
    (
        FhirVersion::Stu3,
        "EligibilityRequest",
        FhirVersion::R4,
        "CoverageEligibilityRequest",
    ),
    (
        FhirVersion::Stu3,
        "EligibilityResponse",
        FhirVersion::R4,
        "CoverageEligibilityResponse",
    ),
    (
        FhirVersion::Stu3,
        "Sequence",
        FhirVersion::R4,
        "MolecularSequence",
    ),
    (
        FhirVersion::R4B,
        "DeviceUseStatement",
        FhirVersion::R5,
        "DeviceUsage",
    ),
    (
        FhirVersion::R4B,
        "RequestGroup",
        FhirVersion::R5,
        "RequestOrchestration",
    ),
];

/// The resource type's name in `to` (`ProcedureRequest` in STU3 is `ServiceRequest` later),
/// following the renames of every step between the two versions.
pub(crate) fn renamed_type(resource_type: &str, from: FhirVersion, to: FhirVersion) -> &str {
    if from == to
        || !RENAMED_TYPES
            .iter()
            .any(|&(_, old, _, new)| old == resource_type || new == resource_type)
    {
        return resource_type;
    }
    let mut name = resource_type;
    let mut version = from;
    while version != to {
        let next = crate::next_version(version, to);
        name = renamed_one_step(name, version, next);
        version = next;
    }
    name
}

fn renamed_one_step(name: &str, from: FhirVersion, to: FhirVersion) -> &str {
    for &(old_version, old, new_version, new) in RENAMED_TYPES {
        if from == old_version && to == new_version && name == old {
            return new;
        }
        if from == new_version && to == old_version && name == new {
            return old;
        }
    }
    name
}

/// Apply the adjacent step `from` → `to` to `resource` (any JSON), in place.
pub(crate) fn step(
    resource: &mut Value,
    from: FhirVersion,
    to: FhirVersion,
    (origin, goal): (FhirVersion, FhirVersion),
    issues: &mut Vec<Issue>,
) {
    let mut ctx = Ctx {
        issues,
        from,
        to,
        origin,
        goal,
        source: definitions(from),
        target: definitions(to),
        table: rules::step_table(from, to),
        step_source: definitions(from),
        step_target: definitions(to),
        step_table: rules::step_table(from, to),
        resource_depth: 0,
    };
    // Code-system URIs in the STU3 terms: renamed before STU3 → R4 (its rules read R4's
    // URIs, as the STU3 ← R4 rules do) and after R4 → STU3.
    if from == FhirVersion::Stu3 {
        code_systems::rename(resource, &mut ctx);
    }
    step_resource(resource, &mut ctx);
    if to == FhirVersion::Stu3 {
        code_systems::rename(resource, &mut ctx);
    }
}

fn step_resource(resource: &mut Value, ctx: &mut Ctx) {
    let Value::Object(obj) = resource else {
        ctx.issue(
            Severity::Error,
            IssueCode::Structure,
            "Resource",
            "a resource must be a JSON object; left unchanged".into(),
        );
        return;
    };
    let Some(resource_type) = obj.get("resourceType").and_then(Value::as_str) else {
        ctx.issue(
            Severity::Error,
            IssueCode::Structure,
            "Resource",
            "a resource without resourceType; left unchanged".into(),
        );
        return;
    };
    if ctx.resource_depth >= MAX_RESOURCE_DEPTH {
        let path = resource_type.to_owned();
        ctx.issue(
            Severity::Error,
            IssueCode::TooLong,
            &path,
            "resources nested too deeply; left unchanged".into(),
        );
        return;
    }
    let source_type = if ctx.from == FhirVersion::R5 && resource_type == "MedicationUsage" {
        // R5 ballots named MedicationStatement `MedicationUsage`; 5.0.0 went back.
        "MedicationStatement"
    } else {
        resource_type
    };
    // R4 and R4B each lack a few types the other has (R4's Substance* types are back in R5):
    // such a resource crosses the R4B step with R4's definitions, and no rules.
    let stand_in = |defs: &'static Definitions, v: FhirVersion, name: &str| {
        if defs.root(name).is_some() {
            Some(defs)
        } else {
            let other = match v {
                FhirVersion::R4 => FhirVersion::R4B,
                FhirVersion::R4B => FhirVersion::R4,
                _ => return None,
            };
            Some(definitions(other)).filter(|d| d.root(name).is_some())
        }
    };
    // The type must exist in the version the translation ends in; otherwise the resource
    // stays as it is (reported once, by the first step).
    let goal_type = renamed_type(source_type, ctx.from, ctx.goal);
    let in_source = stand_in(ctx.step_source, ctx.from, source_type).is_some();
    if !in_source || definitions(ctx.goal).root(goal_type).is_none() {
        if ctx.from == ctx.origin {
            let path = resource_type.to_owned();
            let (from, to) = (ctx.origin, ctx.goal);
            let why = if in_source {
                format!("{path} does not exist in {to}")
            } else {
                format!("{path} is not a resource type of {from}")
            };
            ctx.issue(
                Severity::Error,
                IssueCode::NotSupported,
                &path,
                format!("{why}; left in {from} as it is"),
            );
        }
        return;
    }
    let target_type = renamed_type(source_type, ctx.from, ctx.to);
    let (Some(source), Some(target)) = (
        stand_in(ctx.step_source, ctx.from, source_type),
        stand_in(ctx.step_target, ctx.to, target_type),
    ) else {
        return;
    };
    let (Some(source_root), Some(target_root)) =
        (source.root(source_type), target.root(target_type))
    else {
        return;
    };
    let borrowed = !std::ptr::eq(source, ctx.step_source) || !std::ptr::eq(target, ctx.step_target);
    ctx.source = source;
    ctx.target = target;
    ctx.table = if borrowed {
        rules::empty_table()
    } else {
        ctx.step_table
    };
    let source_type = ctx.source.node(source_root).path.as_ref();
    if target_type != resource_type {
        let target_type = ctx.target.node(target_root).path.as_ref();
        obj.insert("resourceType".into(), Value::String(target_type.into()));
    }
    ctx.resource_depth += 1;
    // A type the step leaves alike is not walked, unless an earlier step changed it and this
    // one checks the required elements of the result.
    let checked_here = ctx.from != ctx.origin && ctx.checks_required();
    if ctx.table.identity.contains(source_type) && !checked_here {
        nested_resources_only(obj, source_root, ctx);
    } else {
        let mut done: Vec<&'static str> = Vec::new();
        if let Some(resource_rules) = ctx.table.resource_rules.get(source_type) {
            for rule in resource_rules {
                rule(obj, ctx, &mut done);
            }
        }
        walk_object(obj, source_root, target_root, ctx, &done, 0);
    }
    ctx.resource_depth -= 1;
    ctx.source = ctx.step_source;
    ctx.target = ctx.step_target;
    ctx.table = ctx.step_table;
}

/// For a type unchanged by this step: convert only the resources inside it.
fn nested_resources_only(obj: &mut Map<String, Value>, node: NodeId, ctx: &mut Ctx) {
    for (key, value) in obj.iter_mut() {
        let Some(child) = ctx.source.child(node, key) else {
            continue;
        };
        if &*child.ty == "Resource" {
            for_each_item(value, |item| step_resource(item, ctx));
        } else if let Some(child_node) = child.node
            && (key == "entry"
                || key == "issues"
                || key == "contained"
                || has_resources(ctx.source, child_node))
        {
            for_each_item(value, |item| {
                if let Value::Object(inner) = item {
                    nested_resources_only(inner, child_node, ctx);
                }
            });
        }
    }
}

fn has_resources(defs: &Definitions, node: NodeId) -> bool {
    defs.node(node)
        .children
        .values()
        .any(|c| &*c.ty == "Resource")
}

pub(crate) fn for_each_item(value: &mut Value, mut f: impl FnMut(&mut Value)) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(f),
        other => f(other),
    }
}

/// Convert the object `obj`, an instance of source node `s`, into target node `t`.
/// `done` lists keys already in target shape (written by resource rules).
fn walk_object(
    obj: &mut Map<String, Value>,
    s: NodeId,
    t: NodeId,
    ctx: &mut Ctx,
    done: &[&'static str],
    depth: usize,
) {
    if depth > MAX_ELEMENT_DEPTH {
        let path = ctx.source.node(s).path.to_string();
        ctx.issue(
            Severity::Error,
            IssueCode::TooLong,
            &path,
            "elements nested too deeply; left unchanged".into(),
        );
        return;
    }
    if let Some(found) = ctx.table.merges.get(&s) {
        merges::apply(obj, found, s, ctx);
    }
    // Code remaps first: their rules name elements as the source version does.
    if let Some(codes) = ctx.table.codes.get(&s) {
        for &(key, map) in codes {
            if obj.contains_key(key) {
                rules::remap_codes(obj, key, map, s, t, ctx);
            }
        }
    }
    // Renamed keys: new key → source child it came from.
    let mut renamed: Vec<(&'static str, &'static str)> = Vec::new();
    if let Some(renames) = ctx.table.renames.get(&s) {
        for &(old, new) in renames {
            if let Some(v) = obj.remove(old) {
                obj.insert(new.into(), v);
                renamed.push((new, old));
            }
            if let Some(v) = obj.remove(&format!("_{old}")) {
                obj.insert(format!("_{new}"), v);
            }
        }
    }
    let mut pending: Vec<String> = Vec::new();
    for (key, value) in obj.iter_mut() {
        if key == "extension" || key == "modifierExtension" {
            if extension::values_need_conversion(value, ctx.from, ctx.to) {
                let path = format!("{}.{key}", ctx.source.node(s).path);
                extension::convert_values(value, &path, ctx);
            }
            continue;
        }
        if key == "resourceType" {
            continue;
        }
        if done.contains(&key.as_str()) {
            // Written by a rule in target shape; going down, extensions inside may still hold
            // values the target cannot.
            if value.is_object() || value.is_array() {
                let path = format!("{}.{key}", ctx.source.node(s).path);
                extension::convert_nested(value, &path, ctx, 0);
            }
            continue;
        }
        let (base, primitive_extension) = match key.strip_prefix('_') {
            Some(base) => (base, true),
            None => (key.as_str(), false),
        };
        let source_key = renamed
            .iter()
            .find(|(new, _)| *new == base)
            .map_or(base, |(_, old)| old);
        let sc = ctx.source.child(s, source_key);
        let tc = ctx.target.child(t, base);
        match (sc, tc) {
            (Some(sc), Some(tc)) if same_shape(sc, tc) => {
                if primitive_extension {
                    continue;
                }
                if let Some(codes) = &tc.codes {
                    check_codes(value, codes, s, source_key, ctx);
                    continue;
                }
                if &*sc.ty == "Resource" {
                    for_each_item(value, |item| step_resource(item, ctx));
                } else if datatypes::changes(&sc.ty, ctx.from, ctx.to) {
                    if !datatypes::worth_converting(&sc.ty, value) {
                        continue;
                    }
                    let path = format!("{}.{}", ctx.source.node(s).path, source_key);
                    let ty = &sc.ty;
                    for_each_item(value, |item| datatypes::convert(item, ty, &path, ctx));
                } else if let (Some(sn), Some(tn)) = (sc.node, tc.node) {
                    for_each_item(value, |item| {
                        if let Value::Object(inner) = item {
                            walk_object(inner, sn, tn, ctx, &[], depth + 1);
                        }
                    });
                } else if ctx.to < ctx.from && !is_primitive(&sc.ty) {
                    // Going down, extensions inside datatypes may hold values of datatypes
                    // the target lacks.
                    let path = format!("{}.{source_key}", ctx.source.node(s).path);
                    extension::convert_nested(value, &path, ctx, 0);
                }
            }
            _ => pending.push(key.clone()),
        }
    }
    for key in pending {
        let Some(value) = obj.remove(&key) else {
            continue;
        };
        convert_key(obj, key, value, s, t, ctx, &renamed, depth);
    }
    extension::restore(obj, t, ctx);
    if ctx.checks_required() {
        report_missing_required(obj, t, ctx);
    }
}

/// The "required code" guard: a code the target's required binding does not have (a value
/// set that changed between versions, and no rule maps it) is kept as it is and reported as
/// a warning: a reader of the target cannot read it.
fn check_codes(value: &Value, codes: &[&str], s: NodeId, key: &str, ctx: &mut Ctx) {
    let unknown = |v: &Value| v.as_str().is_some_and(|c| codes.binary_search(&c).is_err());
    let bad: Vec<&str> = match value {
        Value::Array(items) => items
            .iter()
            .filter(|v| unknown(v))
            .filter_map(Value::as_str)
            .collect(),
        other if unknown(other) => other.as_str().into_iter().collect(),
        _ => return,
    };
    if bad.is_empty() {
        return;
    }
    let path = format!("{}.{key}", ctx.source.node(s).path);
    let (from, to) = (ctx.from, ctx.to);
    for code in bad {
        ctx.issue(
            Severity::Warning,
            IssueCode::CodeInvalid,
            &path,
            format!("{path} code `{code}` ({from}) is not a code of its required value set in {to}; kept as it is"),
        );
    }
}

/// The "required element" guard: an element the target version requires (min ≥ 1) that the
/// output lacks, because the source has no counterpart, is reported, never invented.
fn report_missing_required(obj: &Map<String, Value>, t: NodeId, ctx: &mut Ctx) {
    let node = ctx.target.node(t);
    for (name, keys) in &node.required {
        let present = keys.iter().any(|k| obj.contains_key(k.as_ref()));
        if !present {
            let path = format!("{}.{}", node.path, name);
            let to = ctx.to;
            ctx.issue(
                Severity::Warning,
                IssueCode::Required,
                &path,
                format!("{path} is required in {to} and the source has nothing to fill it with"),
            );
        }
    }
}

/// Same JSON shape in both versions: nothing to do but recurse.
fn same_shape(sc: &Child, tc: &Child) -> bool {
    sc.many == tc.many
        && sc.node.is_some() == tc.node.is_some()
        && (sc.ty == tc.ty
            || (is_primitive(&sc.ty)
                && is_primitive(&tc.ty)
                && primitive_compatible(&sc.ty, &tc.ty)))
}

pub(crate) fn is_primitive(ty: &str) -> bool {
    ty.starts_with(|c: char| c.is_ascii_lowercase())
}

fn primitive_compatible(a: &str, b: &str) -> bool {
    fn family(t: &str) -> u8 {
        match t {
            "boolean" => 1,
            "integer" | "positiveInt" | "unsignedInt" | "integer64" => 2,
            "decimal" => 3,
            "date" | "dateTime" | "instant" => 4,
            "time" => 5,
            "base64Binary" => 6,
            _ => 0, // string-like: string, code, id, markdown, uri, url, canonical, oid, uuid
        }
    }
    match (a, b) {
        // A dateTime or instant may not fit a date.
        ("dateTime" | "instant", "date") => false,
        ("date" | "dateTime", "instant") => false,
        // unsignedInt 0 does not fit a positiveInt.
        ("unsignedInt" | "integer", "positiveInt") => false,
        _ => family(a) == family(b),
    }
}

#[allow(clippy::too_many_arguments)]
fn convert_key(
    obj: &mut Map<String, Value>,
    key: String,
    value: Value,
    s: NodeId,
    t: NodeId,
    ctx: &mut Ctx,
    renamed: &[(&'static str, &'static str)],
    depth: usize,
) {
    let (base, primitive_extension) = match key.strip_prefix('_') {
        Some(base) => (base, true),
        None => (key.as_str(), false),
    };
    let source_key = renamed
        .iter()
        .find(|(new, _)| *new == base)
        .map_or(base, |(_, old)| old);
    let sc = ctx.source.child(s, source_key);
    let tc = ctx.target.child(t, base);
    let source_path = format!("{}.{}", ctx.source.node(s).path, source_key);
    match (sc, tc) {
        (None, Some(_)) => {
            // Already in target shape (written by a rule), or a target element sent early.
            obj.insert(key, value);
        }
        (None, None) => {
            let (from, to) = (ctx.from, ctx.to);
            ctx.issue(
                Severity::Warning,
                IssueCode::Structure,
                &source_path,
                format!("{source_path} is not an element of {from} or {to}; dropped"),
            );
        }
        (Some(sc), None) => {
            if primitive_extension {
                // The extension of a primitive travels with it, inside the carrier.
                extension::carry_primitive_extension(obj, sc, s, value, ctx);
            } else if sc.modifier {
                extension::carry_modifier(obj, sc, s, t, value, ctx);
                let (from, to) = (ctx.from, ctx.to);
                ctx.issue(
                    Severity::Warning,
                    IssueCode::Value,
                    &source_path,
                    format!("{source_path} ({from}) is a modifier element without a counterpart in {to}; kept in a cross-version modifier extension, so a reader that does not know it must not rely on the resource"),
                );
            } else {
                extension::carry(obj, sc, s, value, ctx);
                ctx.carried(&source_path, "has no counterpart");
            }
        }
        (Some(sc), Some(tc)) => {
            if primitive_extension {
                if is_primitive(&tc.ty) && sc.many == tc.many {
                    obj.insert(key, value);
                } else {
                    extension::carry_primitive_extension(obj, sc, s, value, ctx);
                }
                return;
            }
            convert_element(obj, key, value, sc, tc, s, t, ctx, &source_path, depth);
        }
    }
}

/// Convert an element present in both versions with a different shape.
#[allow(clippy::too_many_arguments)]
fn convert_element(
    obj: &mut Map<String, Value>,
    key: String,
    value: Value,
    sc: &Child,
    tc: &Child,
    s: NodeId,
    t: NodeId,
    ctx: &mut Ctx,
    source_path: &str,
    depth: usize,
) {
    let original = value;
    let items: Vec<Value> = match &original {
        Value::Array(items) if sc.many => items.clone(),
        Value::Array(_) => {
            // An array where the source allows one value: not readable as this element.
            ctx.issue(
                Severity::Warning,
                IssueCode::Structure,
                source_path,
                format!("{source_path} holds a list where one value is expected; dropped"),
            );
            return;
        }
        other => vec![other.clone()],
    };
    let mut converted: Vec<Value> = Vec::with_capacity(items.len());
    let mut lossy = false;
    for mut item in items {
        match (sc.node, tc.node) {
            (Some(sn), Some(tn)) => {
                if let Value::Object(inner) = &mut item {
                    walk_object(inner, sn, tn, ctx, &[], depth + 1);
                }
                converted.push(item);
            }
            (None, None) => match convert_type(item, &sc.ty, &tc.ty, ctx, source_path) {
                Converted::Exact(v) => converted.push(v),
                Converted::Approximate(v) => {
                    lossy = true;
                    converted.push(v);
                }
                Converted::Impossible => lossy = true,
            },
            _ => {
                lossy = true;
            }
        }
    }
    if !tc.many && converted.len() > 1 {
        lossy = true;
        converted.truncate(1);
    }
    if let Some(codes) = &tc.codes {
        check_codes(&Value::Array(converted.clone()), codes, s, &sc.name, ctx);
    }
    if lossy && extension::restore_pending(obj, t, &tc.name, ctx) {
        // A carrier of the target version will put the original back: nothing to keep.
    } else if lossy {
        // The whole original travels in a carrier, so a round trip restores it exactly.
        extension::carry(obj, sc, s, original, ctx);
        let (sty, tty) = (&sc.ty, &tc.ty);
        let (sm, tm) = (card(sc.many), card(tc.many));
        if sc.modifier || tc.modifier {
            // A modifier said only approximately changes what the whole object means.
            let (from, to) = (ctx.from, ctx.to);
            ctx.issue(
                Severity::Warning,
                IssueCode::Value,
                source_path,
                format!("{source_path} ({from}, {sty} {sm}) is a modifier element that does not fit {tty} {tm} in {to} exactly; the original is kept in a cross-version extension"),
            );
        } else {
            ctx.carried(
                source_path,
                &format!("({sty} {sm}) does not fit {tty} {tm} exactly"),
            );
        }
    }
    if converted.is_empty() {
        return;
    }
    let new_value = if tc.many {
        Value::Array(converted)
    } else {
        converted.swap_remove(0)
    };
    obj.insert(key, new_value);
}

fn card(many: bool) -> &'static str {
    if many { "0..*" } else { "0..1" }
}

pub(crate) enum Converted {
    Exact(Value),
    Approximate(Value),
    Impossible,
}

/// Convert one value between datatypes.
pub(crate) fn convert_type(
    value: Value,
    from: &str,
    to: &str,
    ctx: &mut Ctx,
    path: &str,
) -> Converted {
    use Converted::*;
    if from == to || (is_primitive(from) && is_primitive(to) && primitive_compatible(from, to)) {
        return Exact(value);
    }
    match (from, to) {
        ("CodeableConcept" | "Reference", "CodeableReference") => {
            let field = if from == "Reference" {
                "reference"
            } else {
                "concept"
            };
            let mut m = Map::new();
            m.insert(field.into(), value);
            Exact(Value::Object(m))
        }
        ("CodeableReference", "CodeableConcept" | "Reference") => {
            let field = if to == "Reference" {
                "reference"
            } else {
                "concept"
            };
            match value {
                Value::Object(mut m) => {
                    let inner = m.remove(field);
                    let only = m.is_empty();
                    match inner {
                        Some(v) if only => Exact(v),
                        Some(v) => Approximate(v),
                        None => Impossible,
                    }
                }
                _ => Impossible,
            }
        }
        ("Coding", "CodeableConcept") => {
            let mut m = Map::new();
            m.insert("coding".into(), Value::Array(vec![value]));
            Exact(Value::Object(m))
        }
        ("CodeableConcept", "Coding") => match value {
            Value::Object(mut m) => {
                let codings = m.remove("coding");
                let only = m.is_empty();
                match codings {
                    Some(Value::Array(mut c)) if !c.is_empty() => {
                        let exact = only && c.len() == 1;
                        let first = c.swap_remove(0);
                        if exact {
                            Exact(first)
                        } else {
                            Approximate(first)
                        }
                    }
                    _ => Impossible,
                }
            }
            _ => Impossible,
        },
        ("code", "CodeableConcept") => {
            let system = rules::code_system(path);
            let mut coding = Map::new();
            if let Some(system) = system {
                coding.insert("system".into(), Value::String(system.into()));
            }
            coding.insert("code".into(), value);
            let mut m = Map::new();
            m.insert("coding".into(), Value::Array(vec![Value::Object(coding)]));
            Exact(Value::Object(m))
        }
        ("CodeableConcept", "code") => {
            let system = rules::code_system(path);
            let Value::Object(m) = &value else {
                return Impossible;
            };
            let codings = m.get("coding").and_then(Value::as_array);
            let Some(codings) = codings else {
                return Impossible;
            };
            let pick = codings
                .iter()
                .find(|c| system.is_none() || c.get("system").and_then(Value::as_str) == system);
            let Some(code) = pick.and_then(|c| c.get("code")).cloned() else {
                return Impossible;
            };
            let exact = m.len() == 1
                && codings.len() == 1
                && codings[0].as_object().is_some_and(|c| {
                    c.keys().all(|k| k == "code" || k == "system")
                        && c.get("system").and_then(Value::as_str) == system
                });
            if exact {
                Exact(code)
            } else {
                Approximate(code)
            }
        }
        ("string" | "markdown", "Annotation") => {
            let mut m = Map::new();
            m.insert("text".into(), value);
            Exact(Value::Object(m))
        }
        ("Annotation", "string" | "markdown") => text_of(value, "text"),
        ("string", "CodeableConcept") => {
            let mut m = Map::new();
            m.insert("text".into(), value);
            Exact(Value::Object(m))
        }
        ("CodeableConcept", "string") => text_of(value, "text"),
        ("string", "Reference") => {
            let mut m = Map::new();
            m.insert("display".into(), value);
            Exact(Value::Object(m))
        }
        ("Reference", "string") => text_of(value, "display"),
        ("Reference", "canonical" | "uri" | "url") => text_of(value, "reference"),
        ("canonical" | "uri" | "url", "Reference") => {
            let mut m = Map::new();
            m.insert("reference".into(), value);
            Exact(Value::Object(m))
        }
        ("dateTime" | "instant", "date") => match value {
            Value::String(s) if s.len() > 10 => match s.get(..10) {
                Some(date) => Approximate(Value::String(date.to_owned())),
                None => Impossible,
            },
            other => Exact(other),
        },
        ("date" | "dateTime", "instant") => match value {
            Value::String(s) if s.len() > 19 => Exact(Value::String(s)),
            _ => Impossible,
        },
        ("positiveInt" | "unsignedInt" | "integer", "string") => match value.as_i64() {
            Some(n) => Exact(Value::String(n.to_string())),
            None => Impossible,
        },
        ("string", "positiveInt" | "unsignedInt" | "integer") => {
            let parsed = value.as_str().and_then(|s| s.parse::<u32>().ok());
            match parsed {
                Some(n) if n > 0 || to != "positiveInt" => {
                    if value.as_str() == Some(n.to_string().as_str()) {
                        Exact(Value::from(n))
                    } else {
                        Approximate(Value::from(n))
                    }
                }
                _ => Impossible,
            }
        }
        ("string", "Identifier") => {
            let mut m = Map::new();
            m.insert("value".into(), value);
            Exact(Value::Object(m))
        }
        ("Identifier", "string") => text_of(value, "value"),
        ("Identifier", "Reference") => {
            let mut m = Map::new();
            m.insert("identifier".into(), value);
            Exact(Value::Object(m))
        }
        ("Reference", "Identifier") => text_of(value, "identifier"),
        ("unsignedInt" | "integer", "positiveInt") => match value.as_u64() {
            Some(n) if n > 0 => Exact(value),
            _ => Impossible,
        },
        _ => {
            let _ = ctx;
            Impossible
        }
    }
}

fn text_of(value: Value, field: &str) -> Converted {
    match value {
        Value::Object(mut m) => {
            let text = m.remove(field);
            let only = m.is_empty();
            match text {
                Some(t) if only => Converted::Exact(t),
                Some(t) => Converted::Approximate(t),
                None => Converted::Impossible,
            }
        }
        _ => Converted::Impossible,
    }
}

/// Step tables, built on first use.
pub(crate) fn step_tables() -> &'static HashMap<(FhirVersion, FhirVersion), StepTable> {
    static TABLES: LazyLock<HashMap<(FhirVersion, FhirVersion), StepTable>> =
        LazyLock::new(rules::build_all);
    &TABLES
}
