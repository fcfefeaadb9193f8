//! The data set of the adversarial suite: patients `allowed`, `denied` and `other`, and, for
//! every reference element of the R4 Patient CompartmentDefinition (and a few reference
//! elements outside it that may point to a Patient), one resource that reaches `denied` only
//! through that element and one that reaches `allowed` through it; then the same patient in
//! other reference forms (versioned, absolute under the upstream's base, identifier-only,
//! contained, inside a document Bundle), and a little clinical data to search by code.
//!
//! Every resource is valid R4 as Medplum validates it (required elements and invariants
//! filled), so the realistic upstream loads it; the hostile upstream serves the same set.
//! Required reference elements that may point to a Patient are filled with `Patient/allowed`,
//! so a resource is `denied`'s only through the element under test.
//!
//! The element list is the R4 Patient CompartmentDefinition (4.0.1: resource types, their
//! compartment search parameters, and the element paths of those parameters' expressions),
//! merged with what `assent_fhir::compartment::patient_params` says for R4: a parameter the
//! crate lists that this table has no path for is reported by [`missing_elements`], so the
//! suite notices when the crate's compartment data grows. Owners (whose data each resource is)
//! are recorded here as built, independently of the gateway's rule.
//!
//! Leaves out: serving the data (the upstreams) and deciding on it (the gateway).

use std::collections::{BTreeMap, BTreeSet};

use assent_fhir::FhirVersion;
use serde_json::{Value, json};

/// The patient whose consent permits the test caller.
pub const ALLOWED: &str = "allowed";
/// The patient whose consent refuses the test caller (on opt-in: who has no consent).
pub const DENIED: &str = "denied";
/// A third patient without any consent.
pub const OTHER: &str = "other";
/// The identifier system of the site's medical record numbers.
pub const MRN_SYSTEM: &str = "urn:oid:2.16.840.1.113883.19.5.99999.1";
/// Each upstream replaces this string, wherever it occurs in the data set, by its base URL.
pub const UPSTREAM_BASE: &str = "{{upstream-base}}";
/// The denied patient's medical record number and family name (searched for in answers).
pub const DENIED_MRN: &str = "MRN-7731-QX";
pub const DENIED_FAMILY: &str = "Quixotewell";
pub const ALLOWED_MRN: &str = "MRN-1204-AL";
pub const OTHER_MRN: &str = "MRN-5550-OT";

/// A code only `denied` has (SNOMED CT 86406008, HIV disease) and one nobody has.
pub const SECRET_CONDITION: &str = "http://snomed.info/sct|86406008";
pub const ABSENT_CONDITION: &str = "http://snomed.info/sct|49436004";
/// A code `allowed` and `denied` both have (SNOMED CT 38341003, hypertension).
pub const SHARED_CONDITION: &str = "http://snomed.info/sct|38341003";
/// HbA1c (LOINC 4548-4): Observations of every patient.
pub const HBA1C: &str = "http://loinc.org|4548-4";
/// A LOINC code only `denied` has Observations of (LOINC 5195-3, HBsAg).
pub const SECRET_LAB: &str = "http://loinc.org|5195-3";

/// One reference element that can put a resource in a patient's compartment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompartmentElement {
    pub resource_type: &'static str,
    /// The compartment search parameter (for the extras: the element's usual parameter).
    pub param: &'static str,
    /// The element path (`Appointment.participant.actor`).
    pub path: &'static str,
    /// Listed by the R4 Patient CompartmentDefinition (else: a reference element outside it
    /// that may still point to a Patient).
    pub in_r4_definition: bool,
    /// The element with what it needs around it; `"REF"` is the reference, `"FILLER"` a
    /// required reference to a patient filled with `Patient/allowed`.
    snippet: &'static str,
}

/// A resource of the data set that reaches a patient through one element or form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    /// `Type/id`.
    pub reference: String,
    /// The patient reached through the element under test.
    pub patient: &'static str,
    /// The element path or the form's name (`versioned`, `contained`, …).
    pub through: String,
}

/// The data set and what is known about it.
#[derive(Debug, Clone)]
pub struct DataSet {
    /// Every resource in load order; a `Type/id` listed twice is a second version.
    pub resources: Vec<Value>,
    /// Whose data each resource is (`Type/id` → patient ids), as built.
    pub owners: BTreeMap<String, BTreeSet<String>>,
    /// The resources reaching a patient through one compartment element each.
    pub elements: Vec<Reach>,
    /// The resources reaching a patient through one reference form each.
    pub forms: Vec<Reach>,
}

impl DataSet {
    /// The latest version of `Type/id`.
    pub fn resource(&self, reference: &str) -> Option<&Value> {
        self.resources.iter().rev().find(|r| {
            format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap_or_default(),
                r["id"].as_str().unwrap_or_default()
            ) == reference
        })
    }

    /// Every `Type/id` that is `patient`'s data (the Patient itself included).
    pub fn of(&self, patient: &str) -> Vec<String> {
        self.owners
            .iter()
            .filter(|(_, owners)| owners.contains(patient))
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// Strings whose presence in an answer shows that `denied`'s data was released: its
    /// Patient reference, record number and name, and every id of a resource that is its
    /// data (ids are built so that none is part of another).
    pub fn denied_markers(&self) -> Vec<String> {
        let mut markers = vec![
            format!("Patient/{DENIED}"),
            format!("\"{DENIED}\""),
            DENIED_MRN.to_owned(),
            DENIED_FAMILY.to_owned(),
        ];
        for reference in self.of(DENIED) {
            let id = reference
                .split_once('/')
                .map(|(_, id)| id)
                .unwrap_or_default();
            if id != DENIED {
                markers.push(id.to_owned());
            }
        }
        markers
    }
}

/// The compartment elements the data set covers: the R4 definition, the extras, and (by
/// type and parameter) every one `assent-fhir`'s R4 compartment data lists that is known here.
pub fn compartment_elements() -> Vec<CompartmentElement> {
    let mut out: Vec<CompartmentElement> = Vec::new();
    for (table, in_r4_definition) in [(R4_ELEMENTS, true), (EXTRA_ELEMENTS, false)] {
        for (resource_type, param, path, snippet) in table {
            out.push(CompartmentElement {
                resource_type,
                param,
                path,
                in_r4_definition,
                snippet,
            });
        }
    }
    out
}

/// The (type, parameter) pairs `assent_fhir::compartment::patient_params` lists for R4 that
/// the R4 table here has no element for: the crate's data and the R4 definition disagree.
pub fn missing_elements() -> Vec<(String, String)> {
    let elements = compartment_elements();
    let mut types: BTreeSet<&str> = elements.iter().map(|e| e.resource_type).collect();
    types.extend(R4_EXTRA_TYPES_TO_ASK);
    let mut missing = Vec::new();
    for t in types {
        for param in assent_fhir::compartment::patient_params(FhirVersion::R4, t) {
            if !elements
                .iter()
                .any(|e| e.in_r4_definition && e.resource_type == t && e.param == *param)
            {
                missing.push((t.to_owned(), (*param).to_owned()));
            }
        }
    }
    missing
}

/// The (type, parameter) pairs of the R4 definition that `assent-fhir`'s R4 data does not
/// list.
pub fn unlisted_elements() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = R4_ELEMENTS
        .iter()
        .filter(|(t, p, _, _)| {
            !assent_fhir::compartment::patient_params(FhirVersion::R4, t).contains(p)
        })
        .map(|(t, p, _, _)| ((*t).to_owned(), (*p).to_owned()))
        .collect();
    out.dedup();
    out
}

/// Types outside the R4 definition that another version's compartment lists.
const R4_EXTRA_TYPES_TO_ASK: &[&str] = &["Task", "Contract", "GuidanceResponse"];

fn skeleton(resource_type: &str) -> Value {
    let text = SKELETONS
        .iter()
        .find(|(t, _)| *t == resource_type)
        .map(|(_, s)| *s)
        .unwrap_or("{}");
    serde_json::from_str(text).expect("the skeleton table is JSON")
}

/// Replaces the `"REF"` and `"FILLER"` placeholders.
fn fill(value: &mut Value, reference: &Value) {
    match value {
        Value::String(s) if s == "REF" => *value = reference.clone(),
        Value::String(s) if s == "FILLER" => {
            *value = json!({"reference": format!("Patient/{ALLOWED}")})
        }
        Value::Array(items) => items.iter_mut().for_each(|v| fill(v, reference)),
        Value::Object(map) => map.values_mut().for_each(|v| fill(v, reference)),
        _ => {}
    }
}

fn uses_filler(value: &Value) -> bool {
    match value {
        Value::String(s) => s == "FILLER",
        Value::Array(items) => items.iter().any(uses_filler),
        Value::Object(map) => map.values().any(uses_filler),
        _ => false,
    }
}

/// A resource of `element`'s type reaching `patient` through it.
fn element_resource(element: &CompartmentElement, id: &str, patient: &str) -> (Value, bool) {
    let mut resource = skeleton(element.resource_type);
    let snippet: Value = serde_json::from_str(element.snippet).expect("the element table is JSON");
    if let (Some(target), Some(fields)) = (resource.as_object_mut(), snippet.as_object()) {
        for (k, v) in fields {
            target.insert(k.clone(), v.clone());
        }
    }
    let filler = uses_filler(&resource);
    fill(
        &mut resource,
        &json!({"reference": format!("Patient/{patient}")}),
    );
    resource["resourceType"] = json!(element.resource_type);
    resource["id"] = json!(id);
    (resource, filler)
}

fn patient(id: &str, family: &str, mrn: &str, version_note: Option<&str>) -> Value {
    let mut p = json!({
        "resourceType": "Patient", "id": id,
        "identifier": [{"system": MRN_SYSTEM, "value": mrn}],
        "active": true,
        "name": [{"family": family, "given": ["Test"]}],
        "gender": "unknown",
        "birthDate": "1970-01-01",
    });
    if let Some(note) = version_note {
        p["name"][0]["given"] = json!([note]);
    }
    p
}

fn coded(text: &str) -> Value {
    let (system, code) = text.split_once('|').expect("system|code");
    json!({"coding": [{"system": system, "code": code}]})
}

fn condition(id: &str, patient: &str, code: &str) -> Value {
    json!({"resourceType": "Condition", "id": id,
        "clinicalStatus": coded("http://terminology.hl7.org/CodeSystem/condition-clinical|active"),
        "code": coded(code), "subject": {"reference": format!("Patient/{patient}")}})
}

fn observation(id: &str, subject: Value, code: &str, when: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
        "category": [coded("http://terminology.hl7.org/CodeSystem/observation-category|laboratory")],
        "code": coded(code), "subject": subject, "effectiveDateTime": when,
        "valueQuantity": {"value": 6.1, "unit": "%"}})
}

fn slug(element: &CompartmentElement) -> String {
    let last = element.path.rsplit('.').next().unwrap_or_default();
    format!(
        "{}-{}",
        element.resource_type.to_ascii_lowercase(),
        last.to_ascii_lowercase()
    )
}

/// The data set (see the module comment).
pub fn data_set() -> DataSet {
    let mut set = DataSet {
        resources: Vec::new(),
        owners: BTreeMap::new(),
        elements: Vec::new(),
        forms: Vec::new(),
    };
    let add = |set: &mut DataSet, resource: Value, owners: &[&str]| {
        let key = format!(
            "{}/{}",
            resource["resourceType"].as_str().unwrap_or_default(),
            resource["id"].as_str().unwrap_or_default()
        );
        set.owners
            .entry(key)
            .or_default()
            .extend(owners.iter().map(|o| (*o).to_owned()));
        set.resources.push(resource);
    };

    add(
        &mut set,
        patient(ALLOWED, "Allowedsen", ALLOWED_MRN, None),
        &[ALLOWED],
    );
    // Two versions: `Patient/denied/_history/1` is not the current one.
    add(
        &mut set,
        patient(DENIED, DENIED_FAMILY, DENIED_MRN, Some("First")),
        &[DENIED],
    );
    add(
        &mut set,
        patient(DENIED, DENIED_FAMILY, DENIED_MRN, None),
        &[DENIED],
    );
    add(
        &mut set,
        patient(OTHER, "Othersen", OTHER_MRN, None),
        &[OTHER],
    );
    add(
        &mut set,
        json!({"resourceType": "Practitioner", "id": "dr-alice", "name": [{"family": "Alice"}]}),
        &[],
    );

    for (n, element) in compartment_elements().iter().enumerate() {
        for (prefix, who) in [("dn", DENIED), ("al", ALLOWED)] {
            let id = format!("{prefix}{n:03}-{}", slug(element));
            let (resource, filler) = element_resource(element, &id, who);
            let reference = format!("{}/{id}", element.resource_type);
            let mut owners = vec![who];
            if filler && who != ALLOWED {
                owners.push(ALLOWED);
            }
            if element.resource_type == "Patient" {
                // A Patient linked to another is that patient's record too.
                owners.push(&id);
            }
            add(&mut set, resource, &owners);
            set.elements.push(Reach {
                reference,
                patient: who,
                through: element.path.to_owned(),
            });
        }
    }

    // Clinical data to search by code.
    add(
        &mut set,
        condition("dn-cond-secret", DENIED, SECRET_CONDITION),
        &[DENIED],
    );
    add(
        &mut set,
        condition("dn-cond-shared", DENIED, SHARED_CONDITION),
        &[DENIED],
    );
    add(
        &mut set,
        condition("al-cond-shared", ALLOWED, SHARED_CONDITION),
        &[ALLOWED],
    );
    add(
        &mut set,
        condition("ot-cond-shared", OTHER, SHARED_CONDITION),
        &[OTHER],
    );
    for (id, who, code, when) in [
        ("al-obs-hba1c-1", ALLOWED, HBA1C, "2024-01-10"),
        ("al-obs-hba1c-2", ALLOWED, HBA1C, "2024-03-10"),
        ("dn-obs-hba1c-1", DENIED, HBA1C, "2024-01-11"),
        ("dn-obs-hba1c-2", DENIED, HBA1C, "2024-03-11"),
        ("dn-obs-secret", DENIED, SECRET_LAB, "2024-02-11"),
        ("ot-obs-hba1c-1", OTHER, HBA1C, "2024-02-12"),
    ] {
        add(
            &mut set,
            observation(
                id,
                json!({"reference": format!("Patient/{who}")}),
                code,
                when,
            ),
            &[who],
        );
    }
    // A Composition of `allowed` whose section lists an Observation of `denied` too.
    add(
        &mut set,
        json!({"resourceType": "Composition", "id": "al-composition-mixed", "status": "final",
            "type": coded("http://loinc.org|11488-4"), "date": "2024-04-01T00:00:00Z",
            "subject": {"reference": format!("Patient/{ALLOWED}")},
            "author": [{"reference": "Practitioner/dr-alice"}], "title": "Consult note",
            "section": [{"title": "Results", "entry": [
                {"reference": "Observation/al-obs-hba1c-2"},
                {"reference": "Observation/dn-obs-hba1c-2"}]}]}),
        &[ALLOWED],
    );

    // The same patients in other reference forms (Observation.subject each).
    let mrn = |who: &str| {
        if who == DENIED {
            DENIED_MRN
        } else {
            ALLOWED_MRN
        }
    };
    for who in [DENIED, ALLOWED] {
        let prefix = if who == DENIED { "dn" } else { "al" };
        let forms: Vec<(&str, Value)> = vec![
            (
                "versioned",
                json!({"reference": format!("Patient/{who}/_history/1")}),
            ),
            (
                "absolute",
                json!({"reference": format!("{UPSTREAM_BASE}/Patient/{who}")}),
            ),
            (
                "absolute-versioned",
                json!({"reference": format!("{UPSTREAM_BASE}/Patient/{who}/_history/1")}),
            ),
            (
                "identifier",
                json!({"type": "Patient", "identifier": {"system": MRN_SYSTEM, "value": mrn(who)}}),
            ),
            ("contained", json!({"reference": "#p"})),
        ];
        for (form, subject) in forms {
            let id = format!("{prefix}-form-{form}");
            let mut resource = observation(&id, subject, HBA1C, "2024-05-01");
            if form == "contained" {
                resource["contained"] = json!([{
                    "resourceType": "Patient", "id": "p",
                    "identifier": [{"system": MRN_SYSTEM, "value": mrn(who)}],
                    "name": [{"family": if who == DENIED { DENIED_FAMILY } else { "Allowedsen" }}]}]);
            }
            add(&mut set, resource, &[who]);
            set.forms.push(Reach {
                reference: format!("Observation/{id}"),
                patient: who,
                through: form.to_owned(),
            });
        }
        // A document: Composition, Patient and an Observation, referring by urn:uuid.
        let id = format!("{prefix}-form-document");
        let uuid = |n: u8| format!("urn:uuid:7a1c0de0-0000-4000-8000-{n:012}");
        let (pu, cu, ou) = if who == DENIED {
            (uuid(1), uuid(2), uuid(3))
        } else {
            (uuid(11), uuid(12), uuid(13))
        };
        let mut person = patient(
            who,
            if who == DENIED {
                DENIED_FAMILY
            } else {
                "Allowedsen"
            },
            mrn(who),
            None,
        );
        person["id"] = json!(who);
        add(
            &mut set,
            json!({"resourceType": "Bundle", "id": id, "type": "document",
            "identifier": {"system": "urn:ietf:rfc:3986", "value": format!("urn:uuid:7a1c0de0-1111-4000-8000-{}", if who == DENIED { "000000000001" } else { "000000000002" })},
            "timestamp": "2024-04-02T00:00:00Z",
            "entry": [
                {"fullUrl": cu, "resource": {"resourceType": "Composition", "status": "final",
                    "type": coded("http://loinc.org|11488-4"), "date": "2024-04-02T00:00:00Z",
                    "subject": {"reference": pu}, "author": [{"display": "Dr Alice"}], "title": "Discharge note",
                    "section": [{"title": "Results", "entry": [{"reference": ou}]}]}},
                {"fullUrl": pu, "resource": person},
                {"fullUrl": ou, "resource": observation(&format!("{prefix}-doc-obs"), json!({"reference": pu}), HBA1C, "2024-04-01")},
            ]}),
            &[who],
        );
        set.forms.push(Reach {
            reference: format!("Bundle/{id}"),
            patient: who,
            through: "document".to_owned(),
        });
    }
    set
}

const SKELETONS: &[(&str, &str)] = &[
    ("Account", r#"{"status":"active"}"#),
    (
        "AdverseEvent",
        r#"{"actuality":"actual","subject":"FILLER"}"#,
    ),
    (
        "AllergyIntolerance",
        r#"{"patient":"FILLER","clinicalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical","code":"active"}]}}"#,
    ),
    (
        "Appointment",
        r#"{"status":"proposed","participant":[{"status":"accepted"}]}"#,
    ),
    (
        "AppointmentResponse",
        r#"{"appointment":{"display":"test"},"participantStatus":"accepted"}"#,
    ),
    (
        "AuditEvent",
        r#"{"type":{"system":"urn:assent-test","code":"110100"},"recorded":"2024-01-01T00:00:00Z","agent":[{"requestor":true}],"source":{"observer":"FILLER"}}"#,
    ),
    ("Basic", r#"{"code":{"text":"test"}}"#),
    ("BodyStructure", r#"{"patient":"FILLER"}"#),
    (
        "CarePlan",
        r#"{"status":"draft","intent":"proposal","subject":"FILLER"}"#,
    ),
    ("CareTeam", r#"{}"#),
    (
        "ChargeItem",
        r#"{"status":"planned","code":{"text":"test"},"subject":"FILLER"}"#,
    ),
    (
        "Claim",
        r#"{"status":"active","type":{"text":"test"},"use":"claim","patient":"FILLER","created":"2024-01-01T00:00:00Z","provider":{"display":"test"},"priority":{"text":"test"},"insurance":[{"sequence":1,"focal":true,"coverage":{"display":"test"}}]}"#,
    ),
    (
        "ClaimResponse",
        r#"{"status":"active","type":{"text":"test"},"use":"claim","patient":"FILLER","created":"2024-01-01T00:00:00Z","insurer":{"display":"test"},"outcome":"queued"}"#,
    ),
    (
        "ClinicalImpression",
        r#"{"status":"in-progress","subject":"FILLER"}"#,
    ),
    ("Communication", r#"{"status":"preparation"}"#),
    ("CommunicationRequest", r#"{"status":"draft"}"#),
    (
        "Composition",
        r#"{"status":"preliminary","type":{"text":"test"},"date":"2024-01-01T00:00:00Z","author":["FILLER"],"title":"test"}"#,
    ),
    ("Condition", r#"{"subject":"FILLER"}"#),
    (
        "Consent",
        r#"{"status":"draft","scope":{"text":"test"},"category":[{"text":"test"}],"policyRule":{"text":"test"}}"#,
    ),
    ("Contract", r#"{}"#),
    (
        "Coverage",
        r#"{"status":"active","beneficiary":"FILLER","payor":["FILLER"]}"#,
    ),
    (
        "CoverageEligibilityRequest",
        r#"{"status":"active","purpose":["auth-requirements"],"patient":"FILLER","created":"2024-01-01T00:00:00Z","insurer":{"display":"test"}}"#,
    ),
    (
        "CoverageEligibilityResponse",
        r#"{"status":"active","purpose":["auth-requirements"],"patient":"FILLER","created":"2024-01-01T00:00:00Z","request":{"display":"test"},"outcome":"queued","insurer":{"display":"test"}}"#,
    ),
    ("DetectedIssue", r#"{"status":"preliminary"}"#),
    (
        "DeviceRequest",
        r#"{"intent":"proposal","codeReference":{"display":"test"},"subject":"FILLER"}"#,
    ),
    (
        "DeviceUseStatement",
        r#"{"status":"active","subject":"FILLER","device":{"display":"test"}}"#,
    ),
    (
        "DiagnosticReport",
        r#"{"status":"registered","code":{"text":"test"}}"#,
    ),
    (
        "DocumentManifest",
        r#"{"status":"current","content":[{"display":"test"}]}"#,
    ),
    (
        "DocumentReference",
        r#"{"status":"current","content":[{"attachment":{"contentType":"text/plain","data":"dGVzdA=="}}]}"#,
    ),
    (
        "Encounter",
        r#"{"status":"planned","class":{"system":"urn:assent-test","code":"unknown"}}"#,
    ),
    ("EnrollmentRequest", r#"{}"#),
    (
        "EpisodeOfCare",
        r#"{"status":"planned","patient":"FILLER"}"#,
    ),
    (
        "ExplanationOfBenefit",
        r#"{"status":"active","type":{"text":"test"},"use":"claim","patient":"FILLER","created":"2024-01-01T00:00:00Z","insurer":{"display":"test"},"provider":{"display":"test"},"outcome":"queued","insurance":[{"focal":true,"coverage":{"display":"test"}}]}"#,
    ),
    (
        "FamilyMemberHistory",
        r#"{"status":"partial","patient":"FILLER","relationship":{"text":"test"}}"#,
    ),
    (
        "Flag",
        r#"{"status":"active","code":{"text":"test"},"subject":"FILLER"}"#,
    ),
    (
        "Goal",
        r#"{"lifecycleStatus":"proposed","description":{"text":"test"},"subject":"FILLER"}"#,
    ),
    ("Group", r#"{"type":"person","actual":true}"#),
    (
        "GuidanceResponse",
        r#"{"moduleUri":"urn:assent-test:x","status":"success"}"#,
    ),
    (
        "ImagingStudy",
        r#"{"status":"registered","subject":"FILLER"}"#,
    ),
    (
        "Immunization",
        r#"{"status":"completed","vaccineCode":{"text":"test"},"patient":"FILLER","occurrenceDateTime":"2024-01-01T00:00:00Z"}"#,
    ),
    (
        "ImmunizationEvaluation",
        r#"{"status":"completed","patient":"FILLER","targetDisease":{"text":"test"},"immunizationEvent":{"display":"test"},"doseStatus":{"text":"test"}}"#,
    ),
    (
        "ImmunizationRecommendation",
        r#"{"patient":"FILLER","date":"2024-01-01T00:00:00Z","recommendation":[{"forecastStatus":{"text":"test"},"vaccineCode":[{"text":"test"}]}]}"#,
    ),
    ("Invoice", r#"{"status":"draft"}"#),
    ("List", r#"{"status":"current","mode":"working"}"#),
    (
        "MeasureReport",
        r#"{"status":"complete","type":"individual","measure":"urn:assent-test:x","period":{"start":"2024-01-01"}}"#,
    ),
    (
        "Media",
        r#"{"status":"preparation","content":{"contentType":"text/plain","data":"dGVzdA=="}}"#,
    ),
    (
        "MedicationAdministration",
        r#"{"status":"in-progress","medicationCodeableConcept":{"text":"test"},"subject":"FILLER","effectiveDateTime":"2024-01-01T00:00:00Z"}"#,
    ),
    (
        "MedicationDispense",
        r#"{"status":"preparation","medicationCodeableConcept":{"text":"test"}}"#,
    ),
    (
        "MedicationRequest",
        r#"{"status":"active","intent":"proposal","medicationCodeableConcept":{"text":"test"},"subject":"FILLER"}"#,
    ),
    (
        "MedicationStatement",
        r#"{"status":"active","medicationCodeableConcept":{"text":"test"},"subject":"FILLER"}"#,
    ),
    ("MolecularSequence", r#"{"coordinateSystem":1}"#),
    (
        "NutritionOrder",
        r#"{"status":"draft","intent":"proposal","patient":"FILLER","dateTime":"2024-01-01T00:00:00Z"}"#,
    ),
    (
        "Observation",
        r#"{"status":"registered","code":{"text":"test"}}"#,
    ),
    ("Patient", r#"{}"#),
    ("Person", r#"{}"#),
    (
        "Procedure",
        r#"{"status":"preparation","subject":"FILLER"}"#,
    ),
    (
        "Provenance",
        r#"{"target":[{"display":"test"}],"recorded":"2024-01-01T00:00:00Z","agent":[{"who":"FILLER"}]}"#,
    ),
    ("QuestionnaireResponse", r#"{"status":"in-progress"}"#),
    ("RelatedPerson", r#"{"patient":"FILLER"}"#),
    ("RequestGroup", r#"{"status":"draft","intent":"proposal"}"#),
    (
        "ResearchSubject",
        r#"{"status":"candidate","study":{"display":"test"},"individual":"FILLER"}"#,
    ),
    (
        "RiskAssessment",
        r#"{"status":"registered","subject":"FILLER"}"#,
    ),
    ("Schedule", r#"{"actor":["FILLER"]}"#),
    (
        "ServiceRequest",
        r#"{"status":"draft","intent":"proposal","subject":"FILLER"}"#,
    ),
    ("Specimen", r#"{}"#),
    ("SupplyDelivery", r#"{}"#),
    (
        "SupplyRequest",
        r#"{"itemCodeableConcept":{"text":"test"},"quantity":{"value":1}}"#,
    ),
    ("Task", r#"{"status":"draft","intent":"unknown"}"#),
    (
        "VisionPrescription",
        r#"{"status":"active","created":"2024-01-01T00:00:00Z","patient":"FILLER","dateWritten":"2024-01-01T00:00:00Z","prescriber":{"display":"test"},"lensSpecification":[{"product":{"text":"test"},"eye":"right"}]}"#,
    ),
];

const R4_ELEMENTS: &[(&str, &str, &str, &str)] = &[
    (
        "Account",
        "subject",
        "Account.subject",
        r#"{"subject":["REF"]}"#,
    ),
    (
        "AdverseEvent",
        "subject",
        "AdverseEvent.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "AllergyIntolerance",
        "patient",
        "AllergyIntolerance.patient",
        r#"{"patient":"REF"}"#,
    ),
    (
        "AllergyIntolerance",
        "recorder",
        "AllergyIntolerance.recorder",
        r#"{"recorder":"REF"}"#,
    ),
    (
        "AllergyIntolerance",
        "asserter",
        "AllergyIntolerance.asserter",
        r#"{"asserter":"REF"}"#,
    ),
    (
        "Appointment",
        "actor",
        "Appointment.participant.actor",
        r#"{"participant":[{"status":"accepted","actor":"REF"}]}"#,
    ),
    (
        "AppointmentResponse",
        "actor",
        "AppointmentResponse.actor",
        r#"{"actor":"REF"}"#,
    ),
    (
        "AuditEvent",
        "patient",
        "AuditEvent.agent.who",
        r#"{"agent":[{"requestor":true,"who":"REF"}]}"#,
    ),
    (
        "AuditEvent",
        "patient",
        "AuditEvent.entity.what",
        r#"{"entity":[{"what":"REF"}]}"#,
    ),
    ("Basic", "patient", "Basic.subject", r#"{"subject":"REF"}"#),
    ("Basic", "author", "Basic.author", r#"{"author":"REF"}"#),
    (
        "BodyStructure",
        "patient",
        "BodyStructure.patient",
        r#"{"patient":"REF"}"#,
    ),
    (
        "CarePlan",
        "patient",
        "CarePlan.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "CarePlan",
        "performer",
        "CarePlan.activity.detail.performer",
        r#"{"activity":[{"detail":{"status":"not-started","performer":["REF"]}}]}"#,
    ),
    (
        "CareTeam",
        "patient",
        "CareTeam.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "CareTeam",
        "participant",
        "CareTeam.participant.member",
        r#"{"participant":[{"member":"REF"}]}"#,
    ),
    (
        "ChargeItem",
        "subject",
        "ChargeItem.subject",
        r#"{"subject":"REF"}"#,
    ),
    ("Claim", "patient", "Claim.patient", r#"{"patient":"REF"}"#),
    (
        "Claim",
        "payee",
        "Claim.payee.party",
        r#"{"payee":{"type":{"text":"test"},"party":"REF"}}"#,
    ),
    (
        "ClaimResponse",
        "patient",
        "ClaimResponse.patient",
        r#"{"patient":"REF"}"#,
    ),
    (
        "ClinicalImpression",
        "subject",
        "ClinicalImpression.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "Communication",
        "subject",
        "Communication.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "Communication",
        "sender",
        "Communication.sender",
        r#"{"sender":"REF"}"#,
    ),
    (
        "Communication",
        "recipient",
        "Communication.recipient",
        r#"{"recipient":["REF"]}"#,
    ),
    (
        "CommunicationRequest",
        "subject",
        "CommunicationRequest.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "CommunicationRequest",
        "sender",
        "CommunicationRequest.sender",
        r#"{"sender":"REF"}"#,
    ),
    (
        "CommunicationRequest",
        "recipient",
        "CommunicationRequest.recipient",
        r#"{"recipient":["REF"]}"#,
    ),
    (
        "CommunicationRequest",
        "requester",
        "CommunicationRequest.requester",
        r#"{"requester":"REF"}"#,
    ),
    (
        "Composition",
        "subject",
        "Composition.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "Composition",
        "author",
        "Composition.author",
        r#"{"author":["REF"]}"#,
    ),
    (
        "Composition",
        "attester",
        "Composition.attester.party",
        r#"{"attester":[{"mode":"personal","party":"REF"}]}"#,
    ),
    (
        "Condition",
        "patient",
        "Condition.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "Condition",
        "asserter",
        "Condition.asserter",
        r#"{"asserter":"REF"}"#,
    ),
    (
        "Consent",
        "patient",
        "Consent.patient",
        r#"{"patient":"REF"}"#,
    ),
    (
        "Coverage",
        "policy-holder",
        "Coverage.policyHolder",
        r#"{"policyHolder":"REF"}"#,
    ),
    (
        "Coverage",
        "subscriber",
        "Coverage.subscriber",
        r#"{"subscriber":"REF"}"#,
    ),
    (
        "Coverage",
        "beneficiary",
        "Coverage.beneficiary",
        r#"{"beneficiary":"REF"}"#,
    ),
    (
        "Coverage",
        "payor",
        "Coverage.payor",
        r#"{"payor":["REF"]}"#,
    ),
    (
        "CoverageEligibilityRequest",
        "patient",
        "CoverageEligibilityRequest.patient",
        r#"{"patient":"REF"}"#,
    ),
    (
        "CoverageEligibilityResponse",
        "patient",
        "CoverageEligibilityResponse.patient",
        r#"{"patient":"REF"}"#,
    ),
    (
        "DetectedIssue",
        "patient",
        "DetectedIssue.patient",
        r#"{"patient":"REF"}"#,
    ),
    (
        "DeviceRequest",
        "subject",
        "DeviceRequest.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "DeviceRequest",
        "performer",
        "DeviceRequest.performer",
        r#"{"performer":"REF"}"#,
    ),
    (
        "DeviceUseStatement",
        "subject",
        "DeviceUseStatement.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "DiagnosticReport",
        "subject",
        "DiagnosticReport.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "DocumentManifest",
        "subject",
        "DocumentManifest.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "DocumentManifest",
        "author",
        "DocumentManifest.author",
        r#"{"author":["REF"]}"#,
    ),
    (
        "DocumentManifest",
        "recipient",
        "DocumentManifest.recipient",
        r#"{"recipient":["REF"]}"#,
    ),
    (
        "DocumentReference",
        "subject",
        "DocumentReference.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "DocumentReference",
        "author",
        "DocumentReference.author",
        r#"{"author":["REF"]}"#,
    ),
    (
        "Encounter",
        "patient",
        "Encounter.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "EnrollmentRequest",
        "subject",
        "EnrollmentRequest.candidate",
        r#"{"candidate":"REF"}"#,
    ),
    (
        "EpisodeOfCare",
        "patient",
        "EpisodeOfCare.patient",
        r#"{"patient":"REF"}"#,
    ),
    (
        "ExplanationOfBenefit",
        "patient",
        "ExplanationOfBenefit.patient",
        r#"{"patient":"REF"}"#,
    ),
    (
        "ExplanationOfBenefit",
        "payee",
        "ExplanationOfBenefit.payee.party",
        r#"{"payee":{"party":"REF"}}"#,
    ),
    (
        "FamilyMemberHistory",
        "patient",
        "FamilyMemberHistory.patient",
        r#"{"patient":"REF"}"#,
    ),
    ("Flag", "patient", "Flag.subject", r#"{"subject":"REF"}"#),
    ("Goal", "patient", "Goal.subject", r#"{"subject":"REF"}"#),
    (
        "Group",
        "member",
        "Group.member.entity",
        r#"{"member":[{"entity":"REF"}]}"#,
    ),
    (
        "ImagingStudy",
        "patient",
        "ImagingStudy.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "Immunization",
        "patient",
        "Immunization.patient",
        r#"{"patient":"REF"}"#,
    ),
    (
        "ImmunizationEvaluation",
        "patient",
        "ImmunizationEvaluation.patient",
        r#"{"patient":"REF"}"#,
    ),
    (
        "ImmunizationRecommendation",
        "patient",
        "ImmunizationRecommendation.patient",
        r#"{"patient":"REF"}"#,
    ),
    (
        "Invoice",
        "subject",
        "Invoice.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "Invoice",
        "patient",
        "Invoice.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "Invoice",
        "recipient",
        "Invoice.recipient",
        r#"{"recipient":"REF"}"#,
    ),
    ("List", "subject", "List.subject", r#"{"subject":"REF"}"#),
    ("List", "source", "List.source", r#"{"source":"REF"}"#),
    (
        "MeasureReport",
        "patient",
        "MeasureReport.subject",
        r#"{"subject":"REF"}"#,
    ),
    ("Media", "subject", "Media.subject", r#"{"subject":"REF"}"#),
    (
        "MedicationAdministration",
        "patient",
        "MedicationAdministration.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "MedicationAdministration",
        "performer",
        "MedicationAdministration.performer.actor",
        r#"{"performer":[{"actor":"REF"}]}"#,
    ),
    (
        "MedicationAdministration",
        "subject",
        "MedicationAdministration.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "MedicationDispense",
        "subject",
        "MedicationDispense.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "MedicationDispense",
        "patient",
        "MedicationDispense.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "MedicationDispense",
        "receiver",
        "MedicationDispense.receiver",
        r#"{"receiver":["REF"]}"#,
    ),
    (
        "MedicationRequest",
        "subject",
        "MedicationRequest.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "MedicationStatement",
        "subject",
        "MedicationStatement.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "MolecularSequence",
        "patient",
        "MolecularSequence.patient",
        r#"{"patient":"REF"}"#,
    ),
    (
        "NutritionOrder",
        "patient",
        "NutritionOrder.patient",
        r#"{"patient":"REF"}"#,
    ),
    (
        "Observation",
        "subject",
        "Observation.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "Observation",
        "performer",
        "Observation.performer",
        r#"{"performer":["REF"]}"#,
    ),
    (
        "Patient",
        "link",
        "Patient.link.other",
        r#"{"link":[{"other":"REF","type":"replaced-by"}]}"#,
    ),
    (
        "Person",
        "patient",
        "Person.link.target",
        r#"{"link":[{"target":"REF"}]}"#,
    ),
    (
        "Procedure",
        "patient",
        "Procedure.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "Procedure",
        "performer",
        "Procedure.performer.actor",
        r#"{"performer":[{"actor":"REF"}]}"#,
    ),
    (
        "Provenance",
        "patient",
        "Provenance.target",
        r#"{"target":["REF"]}"#,
    ),
    (
        "QuestionnaireResponse",
        "subject",
        "QuestionnaireResponse.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "QuestionnaireResponse",
        "author",
        "QuestionnaireResponse.author",
        r#"{"author":"REF"}"#,
    ),
    (
        "RelatedPerson",
        "patient",
        "RelatedPerson.patient",
        r#"{"patient":"REF"}"#,
    ),
    (
        "RequestGroup",
        "subject",
        "RequestGroup.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "RequestGroup",
        "participant",
        "RequestGroup.action.participant",
        r#"{"action":[{"participant":["REF"],"resource":{"display":"test"}}]}"#,
    ),
    (
        "ResearchSubject",
        "individual",
        "ResearchSubject.individual",
        r#"{"individual":"REF"}"#,
    ),
    (
        "RiskAssessment",
        "subject",
        "RiskAssessment.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "Schedule",
        "actor",
        "Schedule.actor",
        r#"{"actor":["REF"]}"#,
    ),
    (
        "ServiceRequest",
        "subject",
        "ServiceRequest.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "ServiceRequest",
        "performer",
        "ServiceRequest.performer",
        r#"{"performer":["REF"]}"#,
    ),
    (
        "Specimen",
        "subject",
        "Specimen.subject",
        r#"{"subject":"REF"}"#,
    ),
    (
        "SupplyDelivery",
        "patient",
        "SupplyDelivery.patient",
        r#"{"patient":"REF"}"#,
    ),
    (
        "SupplyRequest",
        "subject",
        "SupplyRequest.deliverTo",
        r#"{"deliverTo":"REF"}"#,
    ),
    (
        "VisionPrescription",
        "patient",
        "VisionPrescription.patient",
        r#"{"patient":"REF"}"#,
    ),
];
const EXTRA_ELEMENTS: &[(&str, &str, &str, &str)] = &[
    ("Task", "for", "Task.for", r#"{"for":"REF"}"#),
    ("Task", "focus", "Task.focus", r#"{"focus":"REF"}"#),
    (
        "Observation",
        "focus",
        "Observation.focus",
        r#"{"focus":["REF"]}"#,
    ),
    (
        "Encounter",
        "participant",
        "Encounter.participant.individual",
        r#"{"participant":[{"individual":"REF"}]}"#,
    ),
    (
        "Contract",
        "subject",
        "Contract.subject",
        r#"{"subject":["REF"]}"#,
    ),
    (
        "GuidanceResponse",
        "subject",
        "GuidanceResponse.subject",
        r#"{"subject":"REF"}"#,
    ),
];
