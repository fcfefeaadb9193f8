//! DEMO PART: generated sample patients and their records, deterministic from a seed, in the
//! shape of the FHIR version a sample site speaks (STU3, R4 or R5). Invented data, no real
//! people. Some patients are the same person at two or three sites ([`NETWORK_PEOPLE`]):
//! their local records carry the person's demographics and a shared national identifier
//! ([`NATIONAL_ID_SYSTEM`]), so the gateway links them into one network patient; one more
//! person is held at a second site without the identifier, a demographic near-match.

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

/// The (invented) national identifier system the sample sites share: a value of it names one
/// person wherever they are treated.
pub const NATIONAL_ID_SYSTEM: &str = "urn:sample:national-id";

/// The medical record number system of the sample site tagged `site_tag`.
pub fn mrn_system(site_tag: &str) -> String {
    format!("urn:sample:{site_tag}:mrn")
}

/// A person treated at several sample sites.
pub struct NetworkPerson {
    pub given: &'static str,
    pub family: &'static str,
    pub gender: &'static str,
    pub birth_date: &'static str,
    /// The national id; `None` for a record that lacks it.
    pub national_id: &'static str,
    /// (site tag, local patient number, carries the national id).
    pub records: &'static [(&'static str, usize, bool)],
}

/// The people held at two or three of the sample sites (tags `stm`, `ng`, `lk`) under
/// different local ids. The last one's `lk` record lacks the national id: the same name,
/// gender and birth date make it a probable match for an administrator to confirm.
pub const NETWORK_PEOPLE: &[NetworkPerson] = &[
    NetworkPerson {
        given: "Amara",
        family: "Quill",
        gender: "female",
        birth_date: "1961-04-12",
        national_id: "NID-400-0001",
        records: &[("stm", 10, true), ("ng", 11, true), ("lk", 12, true)],
    },
    NetworkPerson {
        given: "Bastian",
        family: "Reed",
        gender: "male",
        birth_date: "1978-09-30",
        national_id: "NID-400-0002",
        records: &[("stm", 11, true), ("ng", 14, true)],
    },
    NetworkPerson {
        given: "Celia",
        family: "Stone",
        gender: "female",
        birth_date: "1985-01-07",
        national_id: "NID-400-0003",
        records: &[("stm", 12, true), ("lk", 3, true)],
    },
    NetworkPerson {
        given: "Dorian",
        family: "Thorne",
        gender: "male",
        birth_date: "1949-11-23",
        national_id: "NID-400-0004",
        records: &[("ng", 12, true), ("lk", 4, true)],
    },
    NetworkPerson {
        given: "Elif",
        family: "Vance",
        gender: "female",
        birth_date: "1992-06-15",
        national_id: "NID-400-0005",
        records: &[("stm", 13, true), ("ng", 13, true), ("lk", 5, true)],
    },
    NetworkPerson {
        given: "Farid",
        family: "Wilde",
        gender: "male",
        birth_date: "1970-03-02",
        national_id: "NID-400-0006",
        records: &[("ng", 15, true), ("lk", 6, true)],
    },
    NetworkPerson {
        given: "Greta",
        family: "Yarrow",
        gender: "female",
        birth_date: "1966-12-19",
        national_id: "NID-400-0007",
        records: &[("stm", 14, true), ("lk", 7, false)],
    },
];

/// The local patient id of record number `n` at the site tagged `site_tag`.
pub fn patient_id(site_tag: &str, n: usize) -> String {
    format!("{site_tag}-p{n:03}")
}

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
        let pid = patient_id(site_tag, p);
        let birth_year = 1940 + rng.below(70);
        let mut patient = json!({
            "resourceType": "Patient",
            "id": pid,
            "meta": {"versionId": "1"},
            "identifier": [{"system": mrn_system(site_tag), "value": format!("MRN{:06}", 100_000 + p * 7)}],
            "name": [{"family": FAMILY[rng.below(FAMILY.len())], "given": [GIVEN[rng.below(GIVEN.len())]]}],
            "gender": if rng.below(2) == 0 { "female" } else { "male" },
            "birthDate": format!("{birth_year}-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28)),
            "managingOrganization": {"reference": format!("Organization/{site_tag}-org")},
        });
        if let Some((person, with_id)) = network_person(site_tag, p) {
            patient["name"] = json!([{"family": person.family, "given": [person.given]}]);
            patient["gender"] = json!(person.gender);
            patient["birthDate"] = json!(person.birth_date);
            if with_id && let Some(ids) = patient["identifier"].as_array_mut() {
                ids.push(json!({"system": NATIONAL_ID_SYSTEM, "value": person.national_id}));
            }
        }
        out.push(patient);
        let subject = json!({"reference": format!("Patient/{pid}")});
        for e in 0..2 {
            let eid = format!("{pid}-enc{e}");
            let day = 1 + rng.below(28);
            let class = json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"});
            let period = json!({"start": format!("2026-0{}-{day:02}T09:00:00Z", 1 + e), "end": format!("2026-0{}-{day:02}T09:30:00Z", 1 + e)});
            let mut encounter = json!({
                "resourceType": "Encounter",
                "id": eid,
                "meta": {"versionId": "1"},
                "subject": subject,
            });
            if version == FhirVersion::R5 {
                encounter["status"] = json!("completed");
                encounter["class"] = json!([{"coding": [class]}]);
                encounter["actualPeriod"] = period;
            } else {
                encounter["status"] = json!("finished");
                encounter["class"] = class;
                encounter["period"] = period;
            }
            out.push(encounter);
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
            let medication = json!({"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": code, "display": display}], "text": display});
            let mut request = json!({
                "resourceType": "MedicationRequest",
                "id": format!("{pid}-med{m}"),
                "meta": {"versionId": "1"},
                "status": "active",
                "intent": "order",
                "subject": subject,
                "authoredOn": format!("2026-0{}-{:02}", 1 + rng.below(9), 1 + rng.below(28)),
            });
            if version == FhirVersion::R5 {
                request["medication"] = json!({"concept": medication});
            } else {
                request["medicationCodeableConcept"] = medication;
            }
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

/// The network person whose record number `n` at `site_tag` is, and whether that record
/// carries the national id.
fn network_person(site_tag: &str, n: usize) -> Option<(&'static NetworkPerson, bool)> {
    NETWORK_PEOPLE.iter().find_map(|person| {
        person
            .records
            .iter()
            .find(|(tag, number, _)| *tag == site_tag && *number == n)
            .map(|(_, _, with_id)| (person, *with_id))
    })
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
        for version in [FhirVersion::R4, FhirVersion::Stu3, FhirVersion::R5] {
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

    #[test]
    fn network_people_carry_their_demographics_and_national_id_at_each_site() {
        for (tag, version) in [
            ("stm", FhirVersion::R4),
            ("ng", FhirVersion::Stu3),
            ("lk", FhirVersion::R5),
        ] {
            let all = generate(tag, version, 24, 3);
            for person in NETWORK_PEOPLE {
                for (_, n, with_id) in person.records.iter().filter(|(t, ..)| *t == tag) {
                    let id = patient_id(tag, *n);
                    let patient = all
                        .iter()
                        .find(|r| r["resourceType"] == "Patient" && r["id"] == id.as_str())
                        .unwrap();
                    assert_eq!(patient["birthDate"], person.birth_date);
                    assert_eq!(patient["name"][0]["family"], person.family);
                    let national = patient["identifier"].as_array().unwrap().iter().any(|i| {
                        i["system"] == NATIONAL_ID_SYSTEM && i["value"] == person.national_id
                    });
                    assert_eq!(national, *with_id, "{id}");
                }
            }
        }
        // At least six people at two sites or more, and one near-match without the id.
        assert!(
            NETWORK_PEOPLE
                .iter()
                .filter(|p| p.records.len() >= 2)
                .count()
                >= 6
        );
        assert!(
            NETWORK_PEOPLE
                .iter()
                .any(|p| p.records.iter().any(|r| !r.2))
        );
    }
}
