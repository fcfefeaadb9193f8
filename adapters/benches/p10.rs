//! P10: version translation throughput on the official examples (R4 → R5, STU3 → R4), in MB
//! of source JSON per second on one core, over the clinical core types (the set measured
//! before every type converted) and over every type the target version has. Prints figures;
//! asserts nothing. Leaves out the other directions (same engine) and criterion (a plain
//! timing loop keeps the build small).
//!
//! `cargo bench -p assent-adapters --bench p10` (examples from `$ASSENT_FHIR_EXAMPLES`).

use std::fs;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use assent_adapters::{CORE_TYPES, converts, translate, translate_type_name};
use assent_fhir::FhirVersion;
use serde_json::Value;

fn examples_root() -> PathBuf {
    match std::env::var_os("ASSENT_FHIR_EXAMPLES") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/fhir-examples"),
    }
}

/// (raw JSON text, parsed) of every example of a type that converts from `version` to `to`
/// (only the clinical core with `core_only`).
fn load(
    version: FhirVersion,
    to: FhirVersion,
    folder: &str,
    core_only: bool,
) -> Vec<(String, Value)> {
    let dir = examples_root().join(folder);
    let Ok(index) = fs::read_to_string(dir.join("index.tsv")) else {
        return Vec::new();
    };
    index
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split('\t');
            let (file, resource_type) = (cols.next()?, cols.next()?);
            if !converts(resource_type, version, to) {
                return None;
            }
            let r4_name = translate_type_name(resource_type, version, FhirVersion::R4);
            if core_only && !CORE_TYPES.contains(&r4_name) {
                return None;
            }
            let text = fs::read_to_string(dir.join(file)).ok()?;
            let value = serde_json::from_str(&text).ok()?;
            Some((text, value))
        })
        .collect()
}

/// Median of `runs` timings of `f` over the whole set.
fn median(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut times: Vec<Duration> = (0..runs).map(|_| f()).collect();
    times.sort();
    times[runs / 2]
}

fn measure(name: &str, from: FhirVersion, to: FhirVersion, folder: &str, core_only: bool) {
    let examples = load(from, to, folder, core_only);
    if examples.is_empty() {
        println!("{name}: no examples under {}", examples_root().display());
        return;
    }
    let bytes: usize = examples.iter().map(|(t, _)| t.len()).sum();
    let mb = bytes as f64 / 1e6;
    // Translation alone: Value in, Value out (clones made outside the timed region).
    let translate_only = median(15, || {
        let inputs: Vec<Value> = examples.iter().map(|(_, v)| v.clone()).collect();
        let start = Instant::now();
        for v in inputs {
            black_box(translate(v, from, to).ok());
        }
        start.elapsed()
    });
    // What the gateway does per response: parse, translate, serialize.
    let end_to_end = median(15, || {
        let start = Instant::now();
        for (text, _) in &examples {
            let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            if let Ok(t) = translate(v, from, to) {
                black_box(serde_json::to_vec(&t.resource).ok());
            }
        }
        start.elapsed()
    });
    // Reference: parse and serialize without translating.
    let parse_only = median(15, || {
        let start = Instant::now();
        for (text, _) in &examples {
            let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            black_box(serde_json::to_vec(&v).ok());
        }
        start.elapsed()
    });
    let rate = |d: Duration| mb / d.as_secs_f64();
    println!(
        "{name}: {} resources, {mb:.1} MB; translate only {:.0} MB/s; parse+translate+serialize {:.0} MB/s; parse+serialize alone {:.0} MB/s",
        examples.len(),
        rate(translate_only),
        rate(end_to_end),
        rate(parse_only),
    );
}

fn main() {
    measure(
        "P10 R4->R5 core",
        FhirVersion::R4,
        FhirVersion::R5,
        "r4",
        true,
    );
    measure(
        "P10 STU3->R4 core",
        FhirVersion::Stu3,
        FhirVersion::R4,
        "stu3",
        true,
    );
    // ASSENT_P10_CORE_ONLY=1: the clinical core alone, the work the figures before every type
    // converted measured (for instruction counts compared across versions of this crate).
    if std::env::var_os("ASSENT_P10_CORE_ONLY").is_none() {
        measure(
            "P10 R4->R5 all",
            FhirVersion::R4,
            FhirVersion::R5,
            "r4",
            false,
        );
        measure(
            "P10 STU3->R4 all",
            FhirVersion::Stu3,
            FhirVersion::R4,
            "stu3",
            false,
        );
    }
}
