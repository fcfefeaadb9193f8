//! Checking output against fhir-sdk's typed models (the `fhir-model` crate), behind the
//! `typed-check` feature: for tests and the translate CLI, never the request path.
//!
//! `fhir-model` has STU3, R4B and R5 but no R4. R4 output is checked with the R4B model: the
//! two define every supported resource type alike (checked against the StructureDefinitions
//! by `tools/gen_definitions.py`), so the known differences are only outside them:
//! [`R4_KNOWN_DIFFERENCES`] lists them, and [`check_typed`] excepts them. Leaves out profile
//! and invariant validation.

use assent_fhir::FhirVersion;
use serde_json::Value;

/// Resource types of R4 that R4B removed or renamed (medicinal product, evidence and
/// substance resources): R4 output nesting them (Bundle entries, contained) cannot be read by
/// the R4B model, so those nested resources are skipped when checking R4, and R4 output of
/// those types is not checked.
pub const R4_KNOWN_DIFFERENCES: &[&str] = &[
    "EffectEvidenceSynthesis",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "RiskEvidenceSynthesis",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
];

/// Output that the typed model of its version rejects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{version} typed model rejects the resource: {message}")]
pub struct TypedCheckError {
    pub version: FhirVersion,
    pub message: String,
}

/// Parse `resource` with the typed model of `version` (R4 through R4B, see the module docs).
pub fn check_typed(resource: &Value, version: FhirVersion) -> Result<(), TypedCheckError> {
    let fail = |e: serde_json::Error| TypedCheckError {
        version,
        message: e.to_string(),
    };
    match version {
        FhirVersion::Stu3 => {
            serde_json::from_value::<fhir_model::stu3::resources::Resource>(resource.clone())
                .map(drop)
                .map_err(fail)
        }
        FhirVersion::R4 => {
            let mut resource = resource.clone();
            drop_r4_only(&mut resource);
            serde_json::from_value::<fhir_model::r4b::resources::Resource>(resource)
                .map(drop)
                .map_err(fail)
        }
        FhirVersion::R4B => {
            serde_json::from_value::<fhir_model::r4b::resources::Resource>(resource.clone())
                .map(drop)
                .map_err(fail)
        }
        FhirVersion::R5 => {
            serde_json::from_value::<fhir_model::r5::resources::Resource>(resource.clone())
                .map(drop)
                .map_err(fail)
        }
    }
}

/// Remove nested resources of the types in [`R4_KNOWN_DIFFERENCES`].
fn drop_r4_only(value: &mut Value) {
    match value {
        Value::Object(m) => {
            for (_, v) in m.iter_mut() {
                drop_r4_only(v);
            }
            m.retain(|_, v| !is_r4_only(v));
        }
        Value::Array(items) => {
            items.iter_mut().for_each(drop_r4_only);
            items.retain(|v| !is_r4_only(v));
        }
        _ => {}
    }
}

fn is_r4_only(v: &Value) -> bool {
    v.get("resourceType")
        .and_then(Value::as_str)
        .is_some_and(|t| R4_KNOWN_DIFFERENCES.contains(&t))
}
