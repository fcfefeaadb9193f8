//! Tests of the public translation API: golden fixtures (one helper, scenario-named files
//! under `tests/golden/`), the corpus of official examples (round trips, losses), and a
//! property test that translation never panics. One binary, to keep link time down.
//! Leaves out unit tests of internals (beside the code) and benchmarks.

use std::collections::BTreeSet;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use assent_adapters::{code_system_uri, converts, is_supported, translate};
use assent_fhir::{FhirVersion, Issue};
use proptest::prelude::*;
use serde_json::Value;

// ---- golden ------------------------------------------------------------------------------

/// One fixture: `{"from", "to", "input", "output", "issues": [issue codes, in order]}`,
/// optionally `"severities": [...]` (in order). With `"round_trip": true` the output
/// translated back must equal the input again.
fn check(path: &Path) -> Result<(), String> {
    let text = fs::read_to_string(path).map_err(|e| format!("read: {e}"))?;
    let fixture: Value = serde_json::from_str(&text).map_err(|e| format!("parse: {e}"))?;
    let version = |key: &str| -> Result<FhirVersion, String> {
        fixture[key]
            .as_str()
            .ok_or(format!("`{key}` missing"))?
            .parse()
            .map_err(|e| format!("{e}"))
    };
    let (from, to) = (version("from")?, version("to")?);
    let out =
        translate(fixture["input"].clone(), from, to).map_err(|e| format!("translate: {e}"))?;
    let mut problems = Vec::new();
    if out.resource != fixture["output"] {
        problems.push(format!(
            "output differs\n  expected: {}\n  actual:   {}",
            fixture["output"], out.resource
        ));
    }
    let codes: Vec<&str> = out.issues.iter().map(|i| i.code.as_str()).collect();
    let expected: Vec<&str> = fixture["issues"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if codes != expected {
        problems.push(format!(
            "issues differ: expected {expected:?}, got {codes:?}: {:#?}",
            out.issues
                .iter()
                .map(|i| &i.diagnostics)
                .collect::<Vec<_>>()
        ));
    }
    // Optional: the severities, in order (what strict handling refuses is a warning).
    if let Some(expected) = fixture["severities"].as_array() {
        let expected: Vec<&str> = expected.iter().filter_map(Value::as_str).collect();
        let severities: Vec<&str> = out.issues.iter().map(|i| i.severity.as_str()).collect();
        if severities != expected {
            problems.push(format!(
                "severities differ: expected {expected:?}, got {severities:?}"
            ));
        }
    }
    if fixture["round_trip"] == Value::Bool(true) {
        let back = translate(out.resource, to, from).map_err(|e| format!("back: {e}"))?;
        if back.resource != fixture["input"] {
            problems.push(format!("round trip differs: {}", back.resource));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

#[test]
fn golden() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut files = Vec::new();
    collect_json(&root, &mut files);
    files.sort();
    assert!(!files.is_empty(), "no fixtures under {}", root.display());
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| check(f).err().map(|e| format!("{}: {e}", f.display())))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n\n")
    );
}

/// Every type of the clinical core has at least one fixture (as input or output).
#[test]
fn golden_covers_every_supported_type() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut files = Vec::new();
    collect_json(&root, &mut files);
    let mut seen = BTreeSet::new();
    for file in files {
        let text = fs::read_to_string(&file).expect("fixture is readable");
        let fixture: Value = serde_json::from_str(&text).expect("fixture is JSON");
        for key in ["input", "output"] {
            if let Some(t) = fixture[key]["resourceType"].as_str() {
                seen.insert(t.to_owned());
            }
        }
    }
    let missing: Vec<&&str> = assent_adapters::CORE_TYPES
        .iter()
        .filter(|t| !seen.contains(**t))
        .collect();
    assert!(missing.is_empty(), "no golden fixture for {missing:?}");
}

/// Housekeeping: every source file opens with a `//!` comment saying what it owns, and
/// there are no `mod.rs` files.
#[test]
fn tidy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches"] {
        collect_rs(&root.join(dir), &mut files);
    }
    let bad: Vec<String> = files
        .iter()
        .filter(|f| {
            f.file_name().is_some_and(|n| n == "mod.rs")
                || !fs::read_to_string(f).is_ok_and(|t| t.starts_with("//!"))
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        bad.is_empty(),
        "files without a leading `//!` or named mod.rs: {bad:?}"
    );
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn collect_json(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_json(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
}

// ---- corpus ------------------------------------------------------------------------------

fn examples_root() -> PathBuf {
    match std::env::var_os("ASSENT_FHIR_EXAMPLES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/fhir-examples"),
    }
}

fn folder(version: FhirVersion) -> &'static str {
    match version {
        FhirVersion::Stu3 => "stu3",
        FhirVersion::R4 => "r4",
        FhirVersion::R4B => "r4b",
        FhirVersion::R5 => "r5",
    }
}

#[derive(Default)]
struct Row {
    /// Examples of a type the target version lacks (refused, as designed).
    absent: usize,
    examples: usize,
    exact: usize,
    with_issues: usize,
    issues: usize,
    failures: usize,
    panics: usize,
    unreported: usize,
    /// Outputs the typed model of the target version rejects (feature `typed-check`), of
    /// those whose input the source version's model accepts.
    typed_rejected: usize,
    /// Rejections without an error issue explaining them.
    typed_unexplained: usize,
    typed_checked: usize,
}

/// With `ASSENT_CORPUS_OUT=DIR`, the corpus test writes every conversion's output to
/// `DIR/{TO}/{FROM}__{file}` and a `DIR/manifest.tsv` row per output (from, to, source file,
/// output file, whether an issue explains a rejection), for the independent validator
/// (`scripts/validate_fhir.py`, run by `scripts/test.sh`).
struct CorpusOutputs {
    dir: PathBuf,
    manifest: String,
}

impl CorpusOutputs {
    fn from_env() -> Option<CorpusOutputs> {
        let dir = PathBuf::from(std::env::var_os("ASSENT_CORPUS_OUT")?);
        if dir.exists() {
            fs::remove_dir_all(&dir).expect("clear ASSENT_CORPUS_OUT");
        }
        for v in FhirVersion::ALL {
            fs::create_dir_all(dir.join(v.name())).expect("create ASSENT_CORPUS_OUT");
        }
        Some(CorpusOutputs {
            dir,
            manifest: "from\tto\tsource\toutput\texplained\n".to_owned(),
        })
    }

    fn write(
        &mut self,
        from: FhirVersion,
        to: FhirVersion,
        source: &Path,
        there: &assent_adapters::Translation,
    ) {
        let name = source
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("x.json");
        let relative = format!("{}/{}__{name}", to.name(), from.name());
        let text = serde_json::to_string(&there.resource).expect("JSON");
        fs::write(self.dir.join(&relative), text).expect("write a corpus output");
        // As for the typed check: an untranslated nested resource, a required element the
        // source cannot fill or a code the target's required binding lacks is reported, so a
        // validator may reject the output.
        let explained = explains_rejection(&there.issues);
        let source = source.canonicalize().unwrap_or_else(|_| source.to_owned());
        self.manifest.push_str(&format!(
            "{}\t{}\t{}\t{relative}\t{explained}\n",
            from.name(),
            to.name(),
            source.display()
        ));
    }

    fn finish(self) {
        fs::write(self.dir.join("manifest.tsv"), self.manifest).expect("write the manifest");
        println!("corpus outputs written to {}", self.dir.display());
    }
}

/// Issues that say why a model of the target may reject an output: a nested resource left in
/// its own version (error), a required element the source cannot fill (`required`), a code
/// the target's required binding lacks (`code-invalid`).
fn explains_rejection(issues: &[Issue]) -> bool {
    issues.iter().any(|i| {
        i.severity == assent_fhir::Severity::Error
            || i.code == assent_fhir::IssueCode::Required
            || (i.code == assent_fhir::IssueCode::CodeInvalid
                && i.severity >= assent_fhir::Severity::Warning)
    })
}

/// Leaf paths of a resource, array indices dropped, restarting at each nested resource.
fn leaf_paths(value: &Value, path: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(m) => {
            let here = match m.get("resourceType").and_then(Value::as_str) {
                Some(t) => t.to_owned(),
                None => path.to_owned(),
            };
            for (k, v) in m {
                if k == "resourceType" {
                    continue;
                }
                leaf_paths(v, &format!("{here}.{k}"), out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| leaf_paths(i, path, out)),
        _ => {
            out.insert(path.to_owned());
        }
    }
}

/// Leaves of a resource as (path, value), array indices dropped, restarting at each nested
/// resource.
fn leaves(value: &Value, path: &str, out: &mut BTreeSet<(String, String)>) {
    match value {
        Value::Object(m) => {
            let here = match m.get("resourceType").and_then(Value::as_str) {
                Some(t) => t.to_owned(),
                None => path.to_owned(),
            };
            for (k, v) in m {
                if k == "resourceType" {
                    continue;
                }
                leaves(v, &format!("{here}.{k}"), out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| leaves(i, path, out)),
        other => {
            out.insert((path.to_owned(), other.to_string()));
        }
    }
}

/// Whether an issue points at `path` (an issue at a path covers everything under it; the
/// resource type may differ, as for renamed types).
fn covered(path: &str, issues: &[Issue]) -> bool {
    // `_x` (a primitive's id and extensions) belongs to element `x`.
    let path = &path.replace("._", ".");
    issues.iter().any(|i| {
        i.expression.iter().any(|e| {
            let e = e.trim_end_matches("[x]");
            path.starts_with(e)
                || path
                    .split('.')
                    .skip(1)
                    .collect::<Vec<_>>()
                    .join(".")
                    .starts_with(e.split_once('.').map_or(e, |(_, r)| r))
        })
    })
}

/// Every difference between `input` and `output` (a leaf gone, added or changed in value)
/// that no issue points at: a silent difference.
fn silent_differences(input: &Value, output: &Value, issues: &[Issue]) -> Vec<String> {
    let (mut before, mut after) = (BTreeSet::new(), BTreeSet::new());
    leaves(input, "", &mut before);
    leaves(output, "", &mut after);
    let differing: BTreeSet<&String> = before
        .symmetric_difference(&after)
        .map(|(path, _)| path)
        .collect();
    differing
        .into_iter()
        .filter(|path| !covered(path, issues))
        .cloned()
        .collect()
}

/// Leaf paths of `input` missing from `output` that no issue points at.
fn unreported_losses(input: &Value, output: &Value, issues: &[Issue]) -> Vec<String> {
    let (mut before, mut after) = (BTreeSet::new(), BTreeSet::new());
    leaf_paths(input, "", &mut before);
    leaf_paths(output, "", &mut after);
    before
        .difference(&after)
        .filter(|missing| !covered(missing, issues))
        .cloned()
        .collect()
}

/// Values valid in their version that fhir-model's enums lack: STU3 `EventTiming` includes
/// the v3 TimingEvent codes (`ValueSet-event-timing` of 3.0.2: ACM, HS, C, ...), fhir-model's
/// STU3 enum does not.
#[cfg(feature = "typed-check")]
const TYPED_MODEL_GAPS: &[&str] = &[
    "Unknown value: ACM",
    "Unknown value: HS",
    "Unknown value: C",
];

/// With `typed-check`, every output must parse with the target version's typed model, except
/// where an issue says why not (an untranslated nested resource, a required element the
/// source cannot fill) or the model itself is narrower than the specification
/// (`TYPED_MODEL_GAPS`).
#[test]
fn corpus_round_trips() {
    let root = examples_root();
    if !root.join("r4/index.tsv").exists() {
        eprintln!(
            "corpus: no examples at {} (set ASSENT_FHIR_EXAMPLES); skipped",
            root.display()
        );
        return;
    }
    let mut table: Vec<((FhirVersion, FhirVersion), Row)> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut outputs = CorpusOutputs::from_env();
    #[cfg_attr(not(feature = "typed-check"), allow(unused_mut))]
    let mut typed_problems: Vec<String> = Vec::new();
    for from in FhirVersion::ALL {
        let dir = root.join(folder(from));
        let Ok(index) = fs::read_to_string(dir.join("index.tsv")) else {
            continue;
        };
        let examples: Vec<(String, String, Value)> = index
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut cols = line.split('\t');
                let (file, resource_type) = (cols.next()?, cols.next()?);
                if !is_supported(resource_type, from) {
                    return None;
                }
                let text = fs::read_to_string(dir.join(file)).ok()?;
                Some((
                    file.to_owned(),
                    resource_type.to_owned(),
                    serde_json::from_str(&text).ok()?,
                ))
            })
            .collect();
        for to in FhirVersion::ALL {
            if to == from {
                continue;
            }
            let mut row = Row::default();
            for (file, resource_type, input) in &examples {
                if !converts(resource_type, from, to) {
                    // Refused as designed: the type does not exist in `to`.
                    let refused = translate(input.clone(), from, to);
                    if !matches!(
                        refused,
                        Err(assent_adapters::TranslateError::UnsupportedType { .. })
                    ) {
                        problems.push(format!("{from}->{to} {file}: {resource_type} does not exist in {to} and was not refused"));
                    }
                    row.absent += 1;
                    continue;
                }
                row.examples += 1;
                let outcome = catch_unwind(AssertUnwindSafe(|| {
                    let there = translate(input.clone(), from, to)?;
                    if let Some(out) = outputs.as_mut() {
                        out.write(from, to, &dir.join(file), &there);
                    }
                    #[cfg(feature = "typed-check")]
                    let r4_only = to == FhirVersion::R4
                        && assent_adapters::R4_KNOWN_DIFFERENCES
                            .contains(&there.resource["resourceType"].as_str().unwrap_or_default());
                    #[cfg(feature = "typed-check")]
                    if !r4_only && assent_adapters::check_typed(input, from).is_ok() {
                        row.typed_checked += 1;
                        if let Err(e) = assent_adapters::check_typed(&there.resource, to) {
                            row.typed_rejected += 1;
                            // A nested resource of an unsupported type is left unchanged, with
                            // an error issue: the model of the target cannot read it.
                            // So is a required element the source cannot fill (a `required`
                            // issue).
                            let explained = explains_rejection(&there.issues);
                            let model_gap = TYPED_MODEL_GAPS.iter().any(|g| e.message.contains(g));
                            if !explained && !model_gap {
                                row.typed_unexplained += 1;
                                problems.push(format!("{from}->{to} {file}: typed: {e}"));
                            }
                            typed_problems.push(format!(
                                "{from}->{to} {file}: {e}{}",
                                if explained {
                                    " (reported)"
                                } else if model_gap {
                                    " (model gap)"
                                } else {
                                    ""
                                }
                            ));
                        }
                    }
                    let back = translate(there.resource, to, from)?;
                    let mut issues = there.issues;
                    issues.extend(back.issues);
                    Ok::<_, assent_adapters::TranslateError>((back.resource, issues))
                }));
                match outcome {
                    Err(_) => {
                        row.panics += 1;
                        problems.push(format!("{from}->{to} {file}: panic"));
                    }
                    Ok(Err(e)) => {
                        row.failures += 1;
                        problems.push(format!("{from}->{to} {file}: {e}"));
                    }
                    Ok(Ok((back, issues))) => {
                        if &back == input {
                            row.exact += 1;
                        } else if std::env::var_os("ASSENT_CORPUS_VERBOSE").is_some() {
                            let (mut a, mut b) = (BTreeSet::new(), BTreeSet::new());
                            leaf_paths(input, "", &mut a);
                            leaf_paths(&back, "", &mut b);
                            let gone: Vec<_> = a.difference(&b).collect();
                            let new: Vec<_> = b.difference(&a).collect();
                            println!("inexact {from}->{to} {file}: gone {gone:?} new {new:?}");
                        }
                        if !issues.is_empty() {
                            row.with_issues += 1;
                            row.issues += issues.len();
                        }
                        let lost = unreported_losses(input, &back, &issues);
                        let silent = silent_differences(input, &back, &issues);
                        if !lost.is_empty() || !silent.is_empty() {
                            row.unreported += 1;
                            problems.push(format!(
                                "{from}->{to}->{from} {file}: differs without an issue: lost {lost:?}, changed {silent:?}"
                            ));
                        }
                    }
                }
            }
            table.push(((from, to), row));
        }
    }
    println!(
        "\n{:<16} {:>7} {:>8} {:>12} {:>12} {:>7} {:>9} {:>7} {:>11} {:>14}",
        "direction",
        "absent",
        "examples",
        "exact trips",
        "with issues",
        "issues",
        "failures",
        "panics",
        "silent",
        "typed rejects (unexplained)/checked"
    );
    for ((from, to), r) in &table {
        let typed = if cfg!(feature = "typed-check") {
            format!(
                "{} ({})/{}",
                r.typed_rejected, r.typed_unexplained, r.typed_checked
            )
        } else {
            "-".to_owned()
        };
        println!(
            "{:<16} {:>7} {:>8} {:>12} {:>12} {:>7} {:>9} {:>7} {:>11} {:>14}",
            format!("{from}->{to}->{from}"),
            r.absent,
            r.examples,
            r.exact,
            r.with_issues,
            r.issues,
            r.failures,
            r.panics,
            r.unreported,
            typed
        );
    }
    for p in &typed_problems {
        println!("typed: {p}");
    }
    if let Some(out) = outputs {
        out.finish();
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

// ---- code-system URIs --------------------------------------------------------------------

/// Every code-system URI of a resource with its path (as `leaf_paths` writes it): `system`
/// values, an Identifier's excepted (the object with a string `value`).
fn systems(value: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(m) => {
            let here = match m.get("resourceType").and_then(Value::as_str) {
                Some(t) => t.to_owned(),
                None => path.to_owned(),
            };
            let identifier = m.get("value").is_some_and(Value::is_string);
            for (k, v) in m {
                match v {
                    Value::String(s) if k == "system" && !identifier => {
                        out.push((format!("{here}.system"), s.clone()))
                    }
                    _ => systems(v, &format!("{here}.{k}"), out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| systems(i, path, out)),
        _ => {}
    }
}

/// Where a coding's system is implied by the other version's datatype, an exact mapping
/// without a `system`: STU3 `code` elements that are R4 CodeableConcepts (the code system
/// fixed by the binding), and STU3 Money's ISO 4217 system (R4 `Money.currency`).
fn system_implied(path: &str, system: &str) -> bool {
    system == "urn:iso:std:iso:4217"
        || [
            "Condition.clinicalStatus.",
            "Condition.verificationStatus.",
            "AllergyIntolerance.clinicalStatus.",
            "AllergyIntolerance.verificationStatus.",
            "AllergyIntolerance.type.",
            "DocumentReference.relatesTo.code.",
            "AuditEvent.agent.network.type.",
        ]
        .iter()
        .any(|p| path.starts_with(p))
}

/// Over the official STU3 and R4 examples, both ways: every code-system URI of the input is
/// in the output as the table maps it, or unchanged where the table does not map it (unless
/// its element was carried with an issue, or its datatype implies it); no
/// output URI is the source version's name of a moved system unless the input held it so
/// (and an issue says so); and the round trip gives back every URI as it was.
#[test]
fn code_system_uris_map_by_the_table_and_round_trip() {
    let root = examples_root();
    if !root.join("stu3/index.tsv").exists() || !root.join("r4/index.tsv").exists() {
        eprintln!("code systems: no examples at {}; skipped", root.display());
        return;
    }
    let mut problems = Vec::new();
    for (from, to) in [
        (FhirVersion::Stu3, FhirVersion::R4),
        (FhirVersion::R4, FhirVersion::Stu3),
    ] {
        let dir = root.join(folder(from));
        let index = fs::read_to_string(dir.join("index.tsv")).unwrap();
        let (mut examples, mut mapped, mut unchanged) = (0, 0, 0);
        for line in index.lines().skip(1) {
            let mut cols = line.split('\t');
            let (Some(file), Some(resource_type)) = (cols.next(), cols.next()) else {
                continue;
            };
            if !converts(resource_type, from, to) {
                continue;
            }
            let Ok(text) = fs::read_to_string(dir.join(file)) else {
                continue;
            };
            let Ok(input) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            examples += 1;
            let Ok(out) = translate(input.clone(), from, to) else {
                problems.push(format!("{file}: {from} → {to} failed"));
                continue;
            };
            let Ok(back) = translate(out.resource.clone(), to, from) else {
                problems.push(format!("{file}: back to {from} failed"));
                continue;
            };
            let (mut paths, mut after, mut again) = (Vec::new(), Vec::new(), Vec::new());
            systems(&input, "", &mut paths);
            let before: Vec<String> = paths.iter().map(|(_, s)| s.clone()).collect();
            systems(&out.resource, "", &mut after);
            let after: Vec<String> = after.into_iter().map(|(_, s)| s).collect();
            systems(&back.resource, "", &mut again);
            let again: Vec<String> = again.into_iter().map(|(_, s)| s).collect();
            for (path, system) in &paths {
                let expected = match code_system_uri(system, from, to) {
                    Some(renamed) => {
                        mapped += 1;
                        renamed
                    }
                    None => {
                        unchanged += 1;
                        system.clone()
                    }
                };
                // Absent from the output: only where the element was carried or dropped
                // with an issue (a restructured Dosage's parts), or its datatype implies it.
                if !after.contains(&expected)
                    && !covered(path, &out.issues)
                    && !system_implied(path, system)
                {
                    problems.push(format!(
                        "{file}: {system} is not in the {to} output as {expected}"
                    ));
                }
            }
            for system in &after {
                if code_system_uri(system, to, from).is_none() {
                    continue;
                }
                // The target's name of a moved system: made by the conversion from the
                // source's name, or held so by the input (kept, with an issue).
                let held = before.contains(system);
                let said = out
                    .issues
                    .iter()
                    .any(|i| i.diagnostics.contains(system.as_str()));
                if held && !said {
                    problems.push(format!("{file}: {system} kept without an issue"));
                }
            }
            for system in &after {
                if code_system_uri(system, from, to).is_some() {
                    problems.push(format!("{file}: {system} left in {from}'s name in {to}"));
                }
            }
            let (mut a, mut b) = (before.clone(), again.clone());
            a.sort();
            b.sort();
            if a != b {
                problems.push(format!(
                    "{file}: {from} → {to} → {from} gives {b:?} for {a:?}"
                ));
            }
        }
        eprintln!(
            "code systems {from} → {to}: {examples} examples, {mapped} URIs mapped by the table, {unchanged} unchanged"
        );
        assert!(
            examples > 500 && mapped > 500,
            "{examples} examples, {mapped} mapped"
        );
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

// ---- exact numbers -----------------------------------------------------------------------

/// Numbers pass through conversion as the site wrote them: trailing zeros, exponents, 30+
/// digits, negative zero, also inside carriers, restructured datatypes (`Dosage`) and the
/// SampledData interval computed in milliseconds. Rests on serde_json's `arbitrary_precision`,
/// which the workspace turns on for every crate (a number is its text in the tree).
/// (`arbitrary_precision` itself writes an exponent `E` as `e`: `1.0E+3` comes out `1.0e+3`
/// even untranslated.)
#[test]
fn numbers_keep_their_text() {
    let observation = r#"{"resourceType":"Observation","id":"n","status":"final","code":{"text":"x"},
        "valueQuantity":{"value":1.50,"unit":"mg"},
        "referenceRange":[{"low":{"value":0.010},"high":{"value":123456789012345678901234567890.123}}],
        "component":[{"code":{"text":"e"},"valueQuantity":{"value":1.0e+3}},
                     {"code":{"text":"z"},"valueQuantity":{"value":-0.0}}]}"#;
    let request = r#"{"resourceType":"MedicationRequest","id":"m","status":"active","intent":"order",
        "medicationCodeableConcept":{"text":"x"},"subject":{"reference":"Patient/p"},
        "dosageInstruction":[{"doseAndRate":[{"doseQuantity":{"value":2.50,"unit":"mg"}},
                                              {"rateQuantity":{"value":0.1000,"unit":"mL/h"}}]}]}"#;
    for (text, from, to) in [
        (observation, FhirVersion::R4, FhirVersion::R5),
        (observation, FhirVersion::R4, FhirVersion::Stu3),
        (request, FhirVersion::R4, FhirVersion::Stu3),
        (request, FhirVersion::R4, FhirVersion::R5),
    ] {
        let input: Value = serde_json::from_str(text).expect("JSON");
        let there = translate(input.clone(), from, to).expect("converts");
        let out = serde_json::to_string(&there.resource).expect("JSON");
        for number in [
            "1.50",
            "0.010",
            "123456789012345678901234567890.123",
            "1.0e+3",
            "-0.0",
            "2.50",
            "0.1000",
        ] {
            if text.contains(number) {
                assert!(
                    out.contains(number),
                    "{from}->{to}: {number} changed: {out}"
                );
            }
        }
        let back = translate(there.resource, to, from).expect("back");
        assert_eq!(
            serde_json::to_string(&back.resource).expect("JSON"),
            serde_json::to_string(&input).expect("JSON"),
            "{from}->{to}->{from}"
        );
    }
    // R5 SampledData in seconds is R4 milliseconds, computed on the decimal text.
    let r5: Value = serde_json::from_str(
        r#"{"resourceType":"Observation","id":"s","status":"final","code":{"text":"ecg"},
            "valueSampledData":{"origin":{"value":0},"interval":0.250,"intervalUnit":"s",
            "dimensions":1,"data":"1 2"}}"#,
    )
    .expect("JSON");
    let r4 = translate(r5.clone(), FhirVersion::R5, FhirVersion::R4).expect("converts");
    let text = serde_json::to_string(&r4.resource).expect("JSON");
    assert!(text.contains(r#""period":250"#), "{text}");
    assert!(text.contains(r#""valueDecimal":0.250"#), "{text}");
    let back = translate(r4.resource, FhirVersion::R4, FhirVersion::R5).expect("back");
    assert_eq!(
        serde_json::to_string(&back.resource).expect("JSON"),
        serde_json::to_string(&r5).expect("JSON")
    );
}

// ---- property ----------------------------------------------------------------------------

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[a-zA-Z_]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        let keys = prop_oneof![
            Just("resourceType".to_owned()),
            Just("extension".to_owned()),
            Just("contained".to_owned()),
            Just("entry".to_owned()),
            Just("resource".to_owned()),
            Just("url".to_owned()),
            Just("status".to_owned()),
            Just("class".to_owned()),
            Just("valueString".to_owned()),
            "[a-zA-Z_]{1,10}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((keys, inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn resource_like() -> impl Strategy<Value = Value> {
    let types = prop::sample::select(vec![
        "Patient",
        "Encounter",
        "Observation",
        "Bundle",
        "Consent",
        "MedicationRequest",
        "ProcedureRequest",
        "AuditEvent",
        "Claim",
        "Immunization",
        "Medication",
        "CarePlan",
    ]);
    (types, arbitrary_json()).prop_map(|(t, body)| {
        let mut obj = match body {
            Value::Object(m) => m,
            other => {
                let mut m = serde_json::Map::new();
                m.insert("status".into(), other);
                m
            }
        };
        obj.insert("resourceType".into(), Value::String(t.into()));
        Value::Object(obj)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_arbitrary_json(value in arbitrary_json(), a in 0usize..4, b in 0usize..4) {
        let _ = translate(value, FhirVersion::ALL[a], FhirVersion::ALL[b]);
    }

    #[test]
    fn search_translation_never_panics(
        params in prop::collection::vec(("[a-zA-Z_:.\\-]{0,12}", "\\PC{0,12}"), 0..6),
        resource_type in "[A-Za-z]{0,12}",
        a in 0usize..4,
        b in 0usize..4,
    ) {
        let _ = assent_adapters::translate_search_params(&resource_type, params, FhirVersion::ALL[a], FhirVersion::ALL[b]);
    }

    #[test]
    fn never_panics_on_resource_shaped_json(value in resource_like(), a in 0usize..4, b in 0usize..4) {
        if let Ok(out) = translate(value, FhirVersion::ALL[a], FhirVersion::ALL[b]) {
            let _ = translate(out.resource, FhirVersion::ALL[b], FhirVersion::ALL[a]);
        }
    }
}

/// Prints one example's translation there and back: `ASSENT_DEBUG=r5/Consent-x.json:STU3`.
#[test]
#[ignore = "a debugging aid, run by hand"]
fn debug_one() {
    let Ok(spec) = std::env::var("ASSENT_DEBUG") else {
        return;
    };
    let (file, to) = spec.split_once(':').expect("FILE:VERSION");
    let from: FhirVersion = file
        .split('/')
        .next()
        .expect("version folder")
        .parse()
        .expect("version");
    let to: FhirVersion = to.parse().expect("version");
    let input: Value =
        serde_json::from_str(&fs::read_to_string(examples_root().join(file)).expect("read"))
            .expect("json");
    let there = translate(input.clone(), from, to).expect("there");
    println!(
        "THERE {}\n{:#?}",
        serde_json::to_string_pretty(&there.resource).expect("json"),
        there.issues
    );
    let back = translate(there.resource, to, from).expect("back");
    println!(
        "BACK {}\n{:#?}",
        serde_json::to_string_pretty(&back.resource).expect("json"),
        back.issues
    );
    println!(
        "INPUT {}",
        serde_json::to_string_pretty(&input).expect("json")
    );
}
