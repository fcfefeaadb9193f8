//! Benchmark tools: a trivial upstream (`trivial_upstream`) and a keep-alive client
//! (`keepalive_client`) that `benches/run.sh` drives, and the bodies the upstream answers
//! with. The figures go to BENCHMARKS.md.

use serde_json::{Value, json};

/// The ~1 KB Patient every benchmark upstream answers with.
pub fn sample_patient() -> String {
    sample_patient_value().to_string()
}

fn sample_patient_value() -> Value {
    serde_json::from_str(SAMPLE_PATIENT_JSON).expect("the sample Patient is JSON")
}

/// The sample Patient as a file, shared with the receipts crate's benchmarks.
pub const SAMPLE_PATIENT_JSON: &str = include_str!("sample_patient.json");

/// The vital signs the generated Observations record: LOINC code, display, UCUM unit, and
/// a usual value with its normal range (tenths).
const VITALS: [(&str, &str, &str, i64, i64, i64); 6] = [
    ("8867-4", "Heart rate", "/min", 720, 600, 1000),
    ("29463-7", "Body weight", "kg", 684, 400, 1200),
    ("8310-5", "Body temperature", "Cel", 368, 361, 375),
    ("9279-1", "Respiratory rate", "/min", 160, 120, 200),
    (
        "2708-6",
        "Oxygen saturation in Arterial blood",
        "%",
        975,
        950,
        1000,
    ),
    ("8302-2", "Body height", "cm", 1652, 1400, 2000),
];

/// The `n`th generated Observation of `Patient/bench-1` (~1 KB): a vital sign with a
/// decimal value, its unit, interpretation and reference range, in the style of the sample
/// Patient.
pub fn observation(n: usize) -> Value {
    let (code, display, unit, usual, low, high) = VITALS[n % VITALS.len()];
    let step = i64::try_from(n % 23).unwrap_or(0) - 11;
    let quantity = |tenths: i64| {
        json!({"value": tenths as f64 / 10.0, "unit": unit,
               "system": "http://unitsofmeasure.org", "code": unit})
    };
    let when = format!(
        "2026-{:02}-{:02}T{:02}:{:02}:00Z",
        1 + (n / (28 * 24)) % 12,
        1 + (n / 24) % 28,
        n % 24,
        (n * 7) % 60
    );
    json!({
        "resourceType": "Observation",
        "id": format!("bench-obs-{n}"),
        "meta": {"versionId": "1", "lastUpdated": "2026-11-22T00:00:00Z"},
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs", "display": "Vital Signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}],
                 "text": display},
        "subject": {"reference": "Patient/bench-1", "display": "Patient Of One Kilobyte Benchmark"},
        "effectiveDateTime": when,
        "issued": when,
        "performer": [{"reference": "Practitioner/bench-practitioner-1",
                       "display": "Practitioner Of The Benchmark"}],
        "valueQuantity": quantity(usual + step),
        "interpretation": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
            "code": "N", "display": "Normal"}]}],
        "referenceRange": [{"low": quantity(low), "high": quantity(high)}],
    })
}

fn entry(base: &str, resource: Value) -> Value {
    let full_url = format!(
        "{base}/{}/{}",
        resource["resourceType"].as_str().unwrap_or_default(),
        resource["id"].as_str().unwrap_or_default()
    );
    json!({"fullUrl": full_url, "resource": resource, "search": {"mode": "match"}})
}

fn searchset(id: &str, self_url: String, entries: Vec<Value>) -> String {
    json!({
        "resourceType": "Bundle",
        "id": id,
        "meta": {"lastUpdated": "2026-11-22T00:00:00Z"},
        "type": "searchset",
        "total": entries.len(),
        "link": [{"relation": "self", "url": self_url}],
        "entry": entries,
    })
    .to_string()
}

/// A searchset of `entries` generated Observations of `Patient/bench-1` (one page, no
/// `next` link), its full URLs under `base` (`http://HOST/fhir`).
pub fn observation_searchset(base: &str, entries: usize) -> String {
    let entries = (0..entries).map(|n| entry(base, observation(n))).collect();
    searchset(
        "bench-search",
        format!("{base}/Observation?patient=bench-1"),
        entries,
    )
}

/// `Patient/bench-1/$everything` as a searchset of at least `bytes` bytes: the sample
/// Patient, then generated Observations of it until the size is reached.
pub fn everything(base: &str, bytes: usize) -> String {
    let mut entries = vec![entry(base, sample_patient_value())];
    let mut size = entries[0].to_string().len();
    let mut n = 0;
    while size < bytes {
        let e = entry(base, observation(n));
        size += e.to_string().len() + 1;
        entries.push(e);
        n += 1;
    }
    searchset(
        "bench-everything",
        format!("{base}/Patient/bench-1/$everything"),
        entries,
    )
}

/// The realistic upstream's data set for the benchmarks: the sample Patient, the
/// Practitioner its Observations name, and `observations` generated Observations, as a JSON
/// array (every resource valid R4).
pub fn realistic_data(observations: usize) -> String {
    let mut resources = vec![
        sample_patient_value(),
        json!({"resourceType": "Practitioner", "id": "bench-practitioner-1",
               "name": [{"family": "Benchmark", "given": ["Practitioner"]}]}),
    ];
    resources.extend((0..observations).map(observation));
    Value::Array(resources).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).expect("JSON")
    }

    #[test]
    fn the_searchset_holds_the_observations_asked_for() {
        let bundle = parse(&observation_searchset("http://h/fhir", 1000));
        let entries = bundle["entry"].as_array().expect("entries");
        assert_eq!(entries.len(), 1000);
        assert_eq!(bundle["total"], 1000);
        assert_eq!(bundle["type"], "searchset");
        for entry in entries {
            let id = entry["resource"]["id"].as_str().expect("id");
            assert_eq!(entry["fullUrl"], format!("http://h/fhir/Observation/{id}"));
            assert_eq!(entry["resource"]["subject"]["reference"], "Patient/bench-1");
        }
        let ids: std::collections::HashSet<_> = entries
            .iter()
            .map(|e| e["resource"]["id"].to_string())
            .collect();
        assert_eq!(ids.len(), 1000, "ids are distinct");
    }

    #[test]
    fn everything_reaches_its_size_with_the_patient_first() {
        let text = everything("http://h/fhir", 2_000_000);
        assert!(text.len() >= 2_000_000, "{} bytes", text.len());
        assert!(text.len() < 2_010_000, "{} bytes", text.len());
        let bundle = parse(&text);
        assert_eq!(bundle["entry"][0]["resource"]["resourceType"], "Patient");
        assert_eq!(bundle["entry"][0]["resource"]["id"], "bench-1");
    }

    #[test]
    fn observations_are_about_a_kilobyte_with_decimal_values() {
        for n in 0..50 {
            let o = observation(n);
            let size = o.to_string().len();
            assert!((800..1400).contains(&size), "observation {n}: {size} bytes");
            assert!(o["valueQuantity"]["value"].is_f64());
            assert_eq!(o["status"], "final");
        }
    }

    #[test]
    fn the_realistic_data_set_is_the_patient_a_practitioner_and_observations() {
        let data = parse(&realistic_data(3));
        let types: Vec<_> = data
            .as_array()
            .expect("array")
            .iter()
            .map(|r| r["resourceType"].as_str().expect("type").to_owned())
            .collect();
        assert_eq!(
            types,
            [
                "Patient",
                "Practitioner",
                "Observation",
                "Observation",
                "Observation"
            ]
        );
    }
}
