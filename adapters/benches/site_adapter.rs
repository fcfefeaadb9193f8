//! Site adapter throughput: a searchset Bundle of synthetic Patients and Observations (site
//! identifiers, local lab codes, absolute references, a dropped element) rewritten to the
//! network's dialect, in MB of JSON per second on one core. Prints figures; asserts nothing.
//!
//! `cargo bench -p assent-adapters --bench site_adapter`

use std::hint::black_box;
use std::time::{Duration, Instant};

use assent_adapters::site::{Direction, SiteAdapter};
use assent_fhir::FhirVersion;
use serde_json::{Value, json};

const ADAPTER: &str = r#"
[[identifier_systems]]
site = "urn:oid:1.2.36.146.595.217.0.1"
network = "https://network.example/sid/mrn"
[[concept_maps]]
file = "lab.json"
[[extensions]]
site = "http://site.example/ext/a"
network = "https://network.example/ext/a"
[[reference_bases]]
site = "http://ehr.site.example/fhir/"
network = ""
[[profiles]]
resource = "Observation"
network = ["https://network.example/StructureDefinition/lab"]
[[drops]]
path = "Patient.photo"
"#;

fn concept_map() -> String {
    let elements: Vec<Value> = (0..500)
        .map(|i| json!({"code": format!("L{i}"), "target": [{"code": format!("{i}-{}", i % 10), "equivalence": if i % 5 == 0 { "wider" } else { "equivalent" }}]}))
        .collect();
    json!({"resourceType": "ConceptMap", "url": "urn:bench", "group": [{"source": "http://site.example/lab", "target": "http://loinc.org", "element": elements}]}).to_string()
}

fn bundle(n: usize) -> Value {
    let mut entries = Vec::new();
    for i in 0..n {
        entries.push(json!({"fullUrl": format!("http://ehr.site.example/fhir/Patient/p{i}"), "resource": {
            "resourceType": "Patient", "id": format!("p{i}"),
            "identifier": [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": format!("{i:08}")}],
            "name": [{"family": "Example", "given": ["Pat"]}], "gender": "unknown", "birthDate": "1970-01-01",
            "extension": [{"url": "http://site.example/ext/a", "valueString": "x"}],
            "photo": [{"contentType": "image/png", "data": "AAAA"}]}}));
        for j in 0..4 {
            entries.push(json!({"resource": {
                "resourceType": "Observation", "id": format!("o{i}-{j}"), "status": "final",
                "code": {"coding": [{"system": "http://site.example/lab", "code": format!("L{}", (i * 4 + j) % 600), "display": "local"}], "text": "lab"},
                "subject": {"reference": format!("http://ehr.site.example/fhir/Patient/p{i}")},
                "effectiveDateTime": "2024-03-05T08:30:00Z",
                "valueQuantity": {"value": 5.4, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"}}}));
        }
    }
    json!({"resourceType": "Bundle", "type": "searchset", "entry": entries})
}

fn main() {
    let map = concept_map();
    let adapter = SiteAdapter::load("bench.toml", ADAPTER, FhirVersion::R4, &mut |_| {
        Ok(map.clone())
    })
    .expect("the bench adapter loads");
    let input = bundle(200);
    let bytes = serde_json::to_vec(&input).expect("json").len();
    let runs = 31;
    let mut times: Vec<Duration> = Vec::new();
    let mut issues = 0;
    for _ in 0..runs {
        let mut copy = input.clone();
        let start = Instant::now();
        issues = black_box(adapter.apply(&mut copy, Direction::ToNetwork)).len();
        times.push(start.elapsed());
        black_box(copy);
    }
    times.sort();
    let median = times[runs / 2];
    println!(
        "site adapter to-network: Bundle of {} resources, {:.2} MB, {issues} issues: median {:.2} ms, {:.0} MB/s per core",
        200 * 5,
        bytes as f64 / 1e6,
        median.as_secs_f64() * 1e3,
        bytes as f64 / 1e6 / median.as_secs_f64()
    );
}
