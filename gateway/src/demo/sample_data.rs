//! DEMO PART: generated sample patients and their records, deterministic from a seed, in the
//! shape of the FHIR version a sample site speaks (R4 or STU3). Invented data, no real people.

use assent_fhir::FhirVersion;
use serde_json::{Value, json};

const GIVEN: &[&str] = &[
    "Ada", "Bram", "Cleo", "Dara", "Emil", "Fenna", "Gus", "Hana", "Ivo", "Jule", "Kai", "Lena",
    "Milo", "Nora", "Otto", "Pia", "Quin", "Rosa", "Sami", "Tess", "Ugo", "Vera", "Wim", "Yara",
];
const FAMILY: &[&str] = &[
    "Alder", "Birch", "Cedar", "Dogwood", "Elm", "Fir", "Ginkgo", "Hazel", "Ivy", "Juniper",
    "Kapok", "Larch", "Maple", "Nutmeg", "Oak", "Pine",
];

/// (system, code, display, unit, low, high, category)
const OBSERVATIONS: &[(&str, &str, &str, &str, f64, f64, &str)] = &[
    (
        "http://loinc.org",
        "8867-4",
        "Heart rate",
        "/min",
        52.0,
        110.0,
        "vital-signs",
    ),
    (
        "http://loinc.org",
        "29463-7",
        "Body weight",
        "kg",
        48.0,
        120.0,
        "vital-signs",
    ),
    (
        "http://loinc.org",
        "8310-5",
        "Body temperature",
        "Cel",
        36.0,
        39.5,
        "vital-signs",
    ),
    (
        "http://loinc.org",
        "4548-4",
        "Hemoglobin A1c",
        "%",
        4.5,
        9.5,
        "laboratory",
    ),
    (
        "http://loinc.org",
        "2339-0",
        "Glucose",
        "mg/dL",
        70.0,
        180.0,
        "laboratory",
    ),
];

/// (SNOMED code, display)
const CONDITIONS: &[(&str, &str)] = &[
    ("38341003", "Hypertensive disorder"),
    ("44054006", "Diabetes mellitus type 2"),
    ("195967001", "Asthma"),
    ("35489007", "Depressive disorder"),
    ("40055000", "Chronic sinusitis"),
];

/// (RxNorm code, display)
const MEDICATIONS: &[(&str, &str)] = &[
    ("314076", "lisinopril 10 MG Oral Tablet"),
    ("860975", "metformin 500 MG Oral Tablet"),
    ("745679", "albuterol 0.09 MG/ACTUAT Inhaler"),
    ("312938", "sertraline 50 MG Oral Tablet"),
];

/// Every resource of one sample site.
pub fn generate(site_tag: &str, version: FhirVersion, n_patients: usize, seed: u64) -> Vec<Value> {
    let mut rng = SplitMix(seed);
    let mut out = Vec::new();
    out.push(json!({
        "resourceType": "Organization",
        "id": format!("{site_tag}-org"),
        "meta": {"versionId": "1"},
        "name": format!("{} (sample hospital)", site_tag),
    }));
    for n in 0..3 {
        out.push(json!({
            "resourceType": "Practitioner",
            "id": format!("{site_tag}-pr-{n}"),
            "meta": {"versionId": "1"},
            "name": [{"family": FAMILY[rng.below(FAMILY.len())], "given": [GIVEN[rng.below(GIVEN.len())]], "prefix": ["Dr."]}],
        }));
    }
    for p in 0..n_patients {
        let pid = format!("{site_tag}-p{p:03}");
        let birth_year = 1940 + rng.below(70);
        out.push(json!({
            "resourceType": "Patient",
            "id": pid,
            "meta": {"versionId": "1"},
            "identifier": [{"system": format!("urn:sample:{site_tag}:mrn"), "value": format!("MRN{:06}", 100_000 + p * 7)}],
            "name": [{"family": FAMILY[rng.below(FAMILY.len())], "given": [GIVEN[rng.below(GIVEN.len())]]}],
            "gender": if rng.below(2) == 0 { "female" } else { "male" },
            "birthDate": format!("{birth_year}-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28)),
            "managingOrganization": {"reference": format!("Organization/{site_tag}-org")},
        }));
        let subject = json!({"reference": format!("Patient/{pid}")});
        for e in 0..2 {
            let eid = format!("{pid}-enc{e}");
            let day = 1 + rng.below(28);
            out.push(json!({
                "resourceType": "Encounter",
                "id": eid,
                "meta": {"versionId": "1"},
                "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"},
                "subject": subject,
                "period": {"start": format!("2026-0{}-{day:02}T09:00:00Z", 1 + e), "end": format!("2026-0{}-{day:02}T09:30:00Z", 1 + e)},
            }));
        }
        for o in 0..(3 + rng.below(4)) {
            let (system, code, display, unit, low, high, category) =
                OBSERVATIONS[rng.below(OBSERVATIONS.len())];
            let value = ((low + (high - low) * rng.unit()) * 10.0).round() / 10.0;
            let mut obs = json!({
                "resourceType": "Observation",
                "id": format!("{pid}-obs{o}"),
                "meta": {"versionId": "1"},
                "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
                "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
                "subject": subject,
                "effectiveDateTime": format!("2026-0{}-{:02}T09:10:00Z", 1 + rng.below(9), 1 + rng.below(28)),
                "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
            });
            let encounter = json!({"reference": format!("Encounter/{pid}-enc0")});
            match version {
                FhirVersion::Stu3 => obs["context"] = encounter,
                _ => obs["encounter"] = encounter,
            }
            out.push(obs);
        }
        for c in 0..(1 + rng.below(3)) {
            let (code, display) = CONDITIONS[rng.below(CONDITIONS.len())];
            let mut condition = json!({
                "resourceType": "Condition",
                "id": format!("{pid}-cond{c}"),
                "meta": {"versionId": "1"},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": code, "display": display}], "text": display},
                "subject": subject,
                "onsetDateTime": format!("20{:02}-0{}-01", 10 + rng.below(15), 1 + rng.below(9)),
            });
            match version {
                FhirVersion::Stu3 => {
                    condition["clinicalStatus"] = json!("active");
                    condition["verificationStatus"] = json!("confirmed");
                }
                _ => {
                    condition["clinicalStatus"] = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]});
                    condition["verificationStatus"] = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]});
                }
            }
            out.push(condition);
        }
        for m in 0..(1 + rng.below(2)) {
            let (code, display) = MEDICATIONS[rng.below(MEDICATIONS.len())];
            let mut request = json!({
                "resourceType": "MedicationRequest",
                "id": format!("{pid}-med{m}"),
                "meta": {"versionId": "1"},
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": code, "display": display}], "text": display},
                "subject": subject,
                "authoredOn": format!("2026-0{}-{:02}", 1 + rng.below(9), 1 + rng.below(28)),
            });
            match version {
                FhirVersion::Stu3 => {
                    request["requester"] =
                        json!({"agent": {"reference": format!("Practitioner/{site_tag}-pr-0")}});
                }
                _ => {
                    request["requester"] =
                        json!({"reference": format!("Practitioner/{site_tag}-pr-0")})
                }
            }
            out.push(request);
        }
    }
    out
}

/// SplitMix64: a small deterministic generator, so the demo data is the same on every run.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_patient_has_records_of_each_kind() {
        for version in [FhirVersion::R4, FhirVersion::Stu3] {
            let all = generate("s", version, 20, 7);
            let patients: Vec<_> = all
                .iter()
                .filter(|r| r["resourceType"] == "Patient")
                .collect();
            assert_eq!(patients.len(), 20);
            for kind in ["Observation", "Condition", "Encounter", "MedicationRequest"] {
                for p in &patients {
                    let reference = format!("Patient/{}", p["id"].as_str().unwrap());
                    assert!(
                        all.iter()
                            .any(|r| r["resourceType"] == kind
                                && r["subject"]["reference"] == reference),
                        "{kind} for {reference}"
                    );
                }
            }
            assert_eq!(generate("s", version, 20, 7), all, "deterministic");
        }
    }
}
