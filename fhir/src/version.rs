//! FHIR versions Assent speaks, with the spellings found in configuration, in the
//! `fhirVersion` media-type parameter and in `CapabilityStatement.fhirVersion`.

use std::fmt;
use std::str::FromStr;

/// A FHIR release. Ordered from oldest to newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FhirVersion {
    /// STU3, 3.0.2.
    Stu3,
    /// R4, 4.0.1.
    R4,
    /// R4B, 4.3.0.
    R4B,
    /// R5, 5.0.0.
    R5,
}

impl FhirVersion {
    /// Every supported version, oldest first.
    pub const ALL: [FhirVersion; 4] = [
        FhirVersion::Stu3,
        FhirVersion::R4,
        FhirVersion::R4B,
        FhirVersion::R5,
    ];

    /// The full semantic version (`4.0.1`).
    pub fn semver(self) -> &'static str {
        match self {
            FhirVersion::Stu3 => "3.0.2",
            FhirVersion::R4 => "4.0.1",
            FhirVersion::R4B => "4.3.0",
            FhirVersion::R5 => "5.0.0",
        }
    }

    /// The `major.minor` form used by the `fhirVersion` media-type parameter (`4.0`).
    pub fn mime_param(self) -> &'static str {
        match self {
            FhirVersion::Stu3 => "3.0",
            FhirVersion::R4 => "4.0",
            FhirVersion::R4B => "4.3",
            FhirVersion::R5 => "5.0",
        }
    }

    /// The release name (`R4`).
    pub fn name(self) -> &'static str {
        match self {
            FhirVersion::Stu3 => "STU3",
            FhirVersion::R4 => "R4",
            FhirVersion::R4B => "R4B",
            FhirVersion::R5 => "R5",
        }
    }

    /// `application/fhir+json; fhirVersion=4.0`
    pub fn content_type(self) -> String {
        format!("application/fhir+json; fhirVersion={}", self.mime_param())
    }
}

impl fmt::Display for FhirVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A version string that names no supported FHIR release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownVersion(pub String);

impl fmt::Display for UnknownVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown FHIR version `{}` (expected one of STU3, R4, R4B, R5, or 3.0, 4.0, 4.3, 5.0)",
            self.0
        )
    }
}

impl std::error::Error for UnknownVersion {}

impl FromStr for FhirVersion {
    type Err = UnknownVersion;

    /// Accepts release names (`R4`, case-insensitive), `major.minor` (`4.0`) and full
    /// versions (`4.0.1`, and any patch of the same minor).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let by_name = match t.to_ascii_uppercase().as_str() {
            "STU3" | "R3" => Some(FhirVersion::Stu3),
            "R4" => Some(FhirVersion::R4),
            "R4B" => Some(FhirVersion::R4B),
            "R5" => Some(FhirVersion::R5),
            _ => None,
        };
        if let Some(v) = by_name {
            return Ok(v);
        }
        let mut parts = t.split('.');
        let major = parts.next().unwrap_or_default();
        let minor = parts.next().unwrap_or_default();
        match (major, minor) {
            ("3", "0") => Ok(FhirVersion::Stu3),
            ("4", "0") => Ok(FhirVersion::R4),
            ("4", "3") => Ok(FhirVersion::R4B),
            ("5", "0") => Ok(FhirVersion::R5),
            _ => Err(UnknownVersion(t.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        for v in FhirVersion::ALL {
            assert_eq!(v.name().parse::<FhirVersion>(), Ok(v));
            assert_eq!(v.mime_param().parse::<FhirVersion>(), Ok(v));
            assert_eq!(v.semver().parse::<FhirVersion>(), Ok(v));
        }
        assert_eq!("r4b".parse::<FhirVersion>(), Ok(FhirVersion::R4B));
        assert!("4.1".parse::<FhirVersion>().is_err());
        assert!("".parse::<FhirVersion>().is_err());
    }
}
