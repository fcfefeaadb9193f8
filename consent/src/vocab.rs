//! Code systems the consent logic understands: purpose-of-use subsumption, consent actions,
//! confidentiality ordering, and the normalisation of old `http://hl7.org/fhir/v3/...`
//! system URLs to their terminology.hl7.org names.
//!
//! Owns small fixed tables. Leaves out terminology services: no ValueSet expansion.

/// `http://terminology.hl7.org/CodeSystem/v3-ActReason` (purpose of use).
pub const ACT_REASON: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";
/// `http://terminology.hl7.org/CodeSystem/v3-Confidentiality`.
pub const CONFIDENTIALITY: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";
/// `http://terminology.hl7.org/CodeSystem/v3-ActCode` (sensitivity labels such as HIV, PSY).
pub const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
/// `http://terminology.hl7.org/CodeSystem/v3-ParticipationType`.
pub const PARTICIPATION_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
/// `http://terminology.hl7.org/CodeSystem/consentaction`.
pub const CONSENT_ACTION: &str = "http://terminology.hl7.org/CodeSystem/consentaction";

/// The same code system under its current name: `http://hl7.org/fhir/v3/ActReason` (STU3)
/// becomes `http://terminology.hl7.org/CodeSystem/v3-ActReason`, and likewise for the
/// `consentaction`, `consentscope` and `consentcategorycodes` systems.
pub fn normalize_system(system: &str) -> String {
    if let Some(rest) = system.strip_prefix("http://hl7.org/fhir/v3/") {
        return format!("http://terminology.hl7.org/CodeSystem/v3-{rest}");
    }
    for name in [
        "consentaction",
        "consentscope",
        "consentcategorycodes",
        "consentpolicycodes",
    ] {
        if system == format!("http://hl7.org/fhir/{name}") {
            return format!("http://terminology.hl7.org/CodeSystem/{name}");
        }
    }
    system.to_owned()
}

/// Whether `raw` names the same code system as `normalized` (a [`normalize_system`] result),
/// without allocating.
pub fn same_system(normalized: &str, raw: &str) -> bool {
    if normalized == raw {
        return true;
    }
    if let Some(rest) = raw.strip_prefix("http://hl7.org/fhir/v3/") {
        return normalized.strip_prefix("http://terminology.hl7.org/CodeSystem/v3-") == Some(rest);
    }
    if let Some(name) = raw.strip_prefix("http://hl7.org/fhir/") {
        return matches!(
            name,
            "consentaction" | "consentscope" | "consentcategorycodes" | "consentpolicycodes"
        ) && normalized.strip_prefix("http://terminology.hl7.org/CodeSystem/")
            == Some(name);
    }
    false
}

/// Whether a request made for `requested` falls under a rule about `rule` in the
/// PurposeOfUse hierarchy of v3 ActReason (a subset: the branches Assent sees in tokens).
/// `TREAT` covers `ETREAT`, which covers `BTG`; `HRESCH` covers `CLINTRCH`; and so on.
pub fn purpose_subsumes(rule: &str, requested: &str) -> bool {
    let mut current = requested;
    loop {
        if current == rule {
            return true;
        }
        match purpose_parent(current) {
            Some(p) => current = p,
            None => return false,
        }
    }
}

fn purpose_parent(code: &str) -> Option<&'static str> {
    Some(match code {
        "ETREAT" | "COC" | "POPHLTH" => "TREAT",
        "BTG" | "ERTREAT" => "ETREAT",
        "BIORCH" | "CLINTRCH" | "DSRCH" | "POARCH" | "TRANSRCH" | "PRECLINTRCH" => "HRESCH",
        "CLINTRCHNPC" | "CLINTRCHPC" => "CLINTRCH",
        "CLMATTCH" | "COVAUTH" | "COVERAGE" | "ELIGDTRM" | "ELIGVER" | "ENROLLM" | "REMITADV" => {
            "HPAYMT"
        }
        "DISASTER" | "THREAT" => "PUBHLTH",
        "CAREMGT" | "DONAT" | "FRAUD" | "GOV" | "HACCRED" | "HCOMPL" | "HDECD" | "HDIRECT"
        | "HLEGAL" | "HOUTCOMS" | "HPRGRP" | "HQUALIMP" | "HSYSADMIN" | "MEMADMIN" | "PATADMIN"
        | "PATSFTY" | "PERFMSR" | "RECORDMGT" | "TRAIN" => "HOPERAT",
        "FAMRQT" | "PWATRNY" | "SUPNWK" => "PATRQT",
        _ => return None,
    })
}

/// Whether `code` is an emergency-treatment purpose that may break the glass.
pub fn is_emergency_purpose(code: &str) -> bool {
    purpose_subsumes("ETREAT", code)
}

/// Rank of a v3 Confidentiality code, least restrictive first (`U` < `L` < `M` < `N` <
/// `R` < `V`).
pub fn confidentiality_rank(code: &str) -> Option<u8> {
    Some(match code {
        "U" => 0,
        "L" => 1,
        "M" => 2,
        "N" => 3,
        "R" => 4,
        "V" => 5,
        _ => return None,
    })
}

/// The rank of a resource without a confidentiality label: normal (`N`).
pub const DEFAULT_CONFIDENTIALITY_RANK: u8 = 3;

/// What a request does with data, as consent actions (`consentaction` codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Actions(u8);

impl Actions {
    pub const COLLECT: Actions = Actions(1);
    pub const ACCESS: Actions = Actions(2);
    pub const USE: Actions = Actions(4);
    pub const DISCLOSE: Actions = Actions(8);
    pub const CORRECT: Actions = Actions(16);
    pub const NONE: Actions = Actions(0);

    /// The actions of a gateway read: the caller accesses data that the site discloses
    /// through the gateway. Every interaction Assent forwards today is a read.
    pub fn for_interaction(_interaction: assent_fhir::Interaction) -> Actions {
        Actions::ACCESS.union(Actions::DISCLOSE)
    }

    /// The action named by a `consentaction` code.
    pub fn from_code(code: &str) -> Option<Actions> {
        Some(match code {
            "collect" => Actions::COLLECT,
            "access" => Actions::ACCESS,
            "use" => Actions::USE,
            "disclose" => Actions::DISCLOSE,
            "correct" => Actions::CORRECT,
            _ => return None,
        })
    }

    pub const fn union(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    pub fn intersects(self, other: Actions) -> bool {
        self.0 & other.0 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_subsume_down_the_tree() {
        assert!(purpose_subsumes("TREAT", "TREAT"));
        assert!(purpose_subsumes("TREAT", "BTG"));
        assert!(!purpose_subsumes("ETREAT", "TREAT"));
        assert!(!purpose_subsumes("TREAT", "HRESCH"));
        assert!(is_emergency_purpose("BTG"));
    }

    #[test]
    fn old_system_urls_are_renamed() {
        assert_eq!(
            normalize_system("http://hl7.org/fhir/v3/ActReason"),
            ACT_REASON
        );
        assert_eq!(
            normalize_system("http://hl7.org/fhir/consentaction"),
            CONSENT_ACTION
        );
        assert_eq!(normalize_system("http://loinc.org"), "http://loinc.org");
        assert!(same_system(ACT_REASON, "http://hl7.org/fhir/v3/ActReason"));
        assert!(same_system(
            CONSENT_ACTION,
            "http://hl7.org/fhir/consentaction"
        ));
        assert!(!same_system(ACT_REASON, "http://hl7.org/fhir/v3/ActCode"));
        assert!(!same_system(
            ACT_REASON,
            "http://hl7.org/fhir/resource-types"
        ));
    }
}
