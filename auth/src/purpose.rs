//! Purpose of use: the HL7 v3 PurposeOfUse value set (codes from the v3 ActReason code
//! system), as stated in a token claim or an `X-Purpose-Of-Use` header.
//!
//! Leaves out: the site's default purpose and whether a site requires one (the gateway's
//! configuration), and what a purpose permits (the consent decision).

use std::fmt;

/// The code system of every [`PurposeOfUse`] code.
pub const PURPOSE_OF_USE_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";

/// A known HL7 v3 PurposeOfUse code. Only codes in the table below can be made, so holding one
/// proves the code was checked.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PurposeOfUse {
    entry: &'static (&'static str, &'static str),
}

impl PurposeOfUse {
    /// Parses `CODE` or `system|CODE` (the system must be [`PURPOSE_OF_USE_SYSTEM`]).
    /// Codes are case-sensitive, as in the code system.
    pub fn parse(text: &str) -> Option<PurposeOfUse> {
        let text = text.trim();
        let code = match text.split_once('|') {
            Some((system, code)) if system == PURPOSE_OF_USE_SYSTEM => code,
            Some(_) => return None,
            None => text,
        };
        CODES
            .iter()
            .find(|(c, _)| *c == code)
            .map(|entry| PurposeOfUse { entry })
    }

    pub fn code(self) -> &'static str {
        self.entry.0
    }

    pub fn display(self) -> &'static str {
        self.entry.1
    }

    /// Emergency treatment (`ETREAT`) or break-the-glass (`BTG`): the consent phase's
    /// break-glass path looks at this.
    pub fn is_emergency(self) -> bool {
        matches!(self.code(), "ETREAT" | "BTG")
    }

    /// Every known code, for `/.well-known/smart-configuration`-style listings and docs.
    pub fn all() -> impl Iterator<Item = PurposeOfUse> {
        CODES.iter().map(|entry| PurposeOfUse { entry })
    }
}

impl fmt::Debug for PurposeOfUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PurposeOfUse({})", self.code())
    }
}

impl fmt::Display for PurposeOfUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The PurposeOfUse value set: its top-level codes and their common specialisations.
static CODES: &[(&str, &str)] = &[
    ("TREAT", "treatment"),
    ("ETREAT", "emergency treatment"),
    ("BTG", "break the glass"),
    ("CLINTRL", "clinical trial"),
    ("COC", "continuity of care"),
    ("POPHLTH", "population health"),
    ("HPAYMT", "healthcare payment"),
    ("CLMATTCH", "claim attachment"),
    ("COVAUTH", "coverage authorization"),
    ("COVERAGE", "coverage under policy or program"),
    ("ELIGDTRM", "eligibility determination"),
    ("ELIGVER", "eligibility verification"),
    ("ENROLLM", "enrollment"),
    ("REMITADV", "remittance advice"),
    ("HOPERAT", "healthcare operations"),
    ("CAREMGT", "care management"),
    ("DONAT", "donation"),
    ("FRAUD", "fraud"),
    ("GOV", "government"),
    ("HACCRED", "health accreditation"),
    ("HCOMPL", "health compliance"),
    ("HDECD", "decedent"),
    ("HDIRECT", "directory"),
    ("HDM", "healthcare delivery management"),
    ("HLEGAL", "legal"),
    ("HOUTCOMS", "health outcome measure"),
    ("HPRGRP", "health program reporting"),
    ("HQUALIMP", "health quality improvement"),
    ("HSYSADMIN", "health system administration"),
    ("LABELING", "labeling"),
    ("METAMGT", "metadata management"),
    ("MEMADMIN", "member administration"),
    ("PATADMIN", "patient administration"),
    ("PATSFTY", "patient safety"),
    ("PERFMSR", "performance measure"),
    ("RECORDMGT", "records management"),
    ("SYSDEV", "system development"),
    ("HTEST", "test health data"),
    ("TRAIN", "training"),
    ("HMARKT", "healthcare marketing"),
    ("HRESCH", "healthcare research"),
    ("BIORCH", "biomedical research"),
    ("CLINTRCH", "clinical trial research"),
    ("DSRCH", "disease specific healthcare research"),
    ("POARCH", "public health research"),
    ("TRANSRCH", "translational healthcare research"),
    ("PATRQT", "patient requested"),
    ("FAMRQT", "family requested"),
    ("PWATRNY", "power of attorney"),
    ("SUPNWK", "support network"),
    ("PUBHLTH", "public health"),
    ("DISASTER", "disaster"),
    ("THREAT", "threat"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_codes_and_system_qualified_codes() {
        assert_eq!(PurposeOfUse::parse("TREAT").unwrap().code(), "TREAT");
        assert_eq!(
            PurposeOfUse::parse(" http://terminology.hl7.org/CodeSystem/v3-ActReason|HRESCH ")
                .unwrap()
                .code(),
            "HRESCH"
        );
        assert!(PurposeOfUse::parse("ETREAT").unwrap().is_emergency());
        assert!(!PurposeOfUse::parse("PUBHLTH").unwrap().is_emergency());
    }

    #[test]
    fn rejects_unknown_codes_other_systems_and_case_changes() {
        assert_eq!(PurposeOfUse::parse("treat"), None);
        assert_eq!(PurposeOfUse::parse("CURIOSITY"), None);
        assert_eq!(PurposeOfUse::parse("http://example.org|TREAT"), None);
        assert_eq!(PurposeOfUse::parse(""), None);
    }
}
