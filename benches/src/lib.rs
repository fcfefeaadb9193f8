//! Benchmark tools: a trivial upstream (`trivial_upstream`) and a keep-alive client
//! (`keepalive_client`) that `benches/run.sh` drives. The figures go to BENCHMARKS.md.

/// The ~1 KB Patient every benchmark upstream answers with.
pub fn sample_patient() -> String {
    let patient = serde_json::json!({
        "resourceType": "Patient",
        "id": "bench-1",
        "meta": {"versionId": "1", "lastUpdated": "2026-11-22T00:00:00Z"},
        "identifier": [{"system": "urn:bench:mrn", "value": "MRN000001"}],
        "active": true,
        "name": [{"use": "official", "family": "Benchmark", "given": ["Patient", "Of", "One", "Kilobyte"]}],
        "telecom": [{"system": "phone", "value": "+00 000 000 000", "use": "home"}],
        "gender": "female",
        "birthDate": "1970-01-01",
        "address": [{"use": "home", "line": ["1 Loopback Road", "Apartment 127"], "city": "Localhost", "postalCode": "00000", "country": "ZZ"}],
        "maritalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M", "display": "Married"}]},
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en", "display": "English"}]}, "preferred": true}],
        "generalPractitioner": [{"reference": "Practitioner/bench-gp", "display": "Dr. Bench"}],
        "managingOrganization": {"reference": "Organization/bench-org", "display": "Bench Hospital"},
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Patient Of One Kilobyte Benchmark, born 1970-01-01, a generated record for throughput measurements only.</div>"},
    });
    patient.to_string()
}
