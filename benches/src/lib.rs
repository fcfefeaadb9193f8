//! Benchmark tools: a trivial upstream (`trivial_upstream`) and a keep-alive client
//! (`keepalive_client`) that `benches/run.sh` drives. The figures go to BENCHMARKS.md.

/// The ~1 KB Patient every benchmark upstream answers with.
pub fn sample_patient() -> String {
    let patient: serde_json::Value =
        serde_json::from_str(SAMPLE_PATIENT_JSON).expect("the sample Patient is JSON");
    patient.to_string()
}

/// The sample Patient as a file, shared with the receipts crate's benchmarks.
pub const SAMPLE_PATIENT_JSON: &str = include_str!("sample_patient.json");
