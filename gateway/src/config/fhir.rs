//! `[fhir]`: the FHIR version answered to a client that names none, and the serde helpers that
//! read and write a FHIR version by its name (`R4`, `4.0`, …) for this table and the sites'.
//!
//! Leaves out: version negotiation itself (`proxy/dialect.rs`) and each site's own version
//! (`sites.rs`).

use assent_fhir::FhirVersion;
use serde::{Deserialize, Deserializer, Serialize};

/// FHIR version negotiation (`[fhir]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FhirConfig {
    /// The FHIR version answered to a client that names none (no `fhirVersion` parameter in
    /// `Accept` or `_format`): `STU3`, `R4`, `R4B`, `R5` (or `3.0`, `4.0`, `4.3`, `5.0`).
    /// When absent, each site answers in its own version, untranslated.
    #[serde(
        default,
        deserialize_with = "deserialize_optional_version",
        serialize_with = "serialize_optional_version"
    )]
    pub default_version: Option<FhirVersion>,
}

/// A FHIR version from its name.
pub(super) fn deserialize_version<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<FhirVersion, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

pub(super) fn serialize_version<S: serde::Serializer>(
    v: &FhirVersion,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.name())
}

fn deserialize_optional_version<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<FhirVersion>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| s.parse().map_err(serde::de::Error::custom))
        .transpose()
}

fn serialize_optional_version<S: serde::Serializer>(
    v: &Option<FhirVersion>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_str(v.name()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::config::tests::{GOOD, error_of};

    #[test]
    fn the_default_fhir_version_is_optional() {
        assert_eq!(Config::from_toml(GOOD).unwrap().fhir.default_version, None);
        let c = Config::from_toml(&format!("{GOOD}\n[fhir]\ndefault_version = \"5.0\"")).unwrap();
        assert_eq!(c.fhir.default_version, Some(FhirVersion::R5));
        let e = error_of(&format!("{GOOD}\n[fhir]\ndefault_version = \"R7\""));
        assert!(e.contains("fhir.default_version"), "{e}");
    }
}
