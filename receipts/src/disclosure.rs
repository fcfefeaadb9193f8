//! A receipt in plain terms, for the accounting of disclosures a patient or a privacy officer
//! asks for: who, when, which site, what, why, and what was decided.
//!
//! Owns the wording. A sentence is one line: control characters in what it quotes (a token's
//! claims, a justification) are escaped. Leaves out selecting a patient's receipts across sites and serving them
//! (the gateway's `GET /audit/patient/{id}/disclosures`).

use serde::Serialize;

use crate::receipt::{
    AccessDecision, AccessKind, AuditAction, ConsentAction, ConsentRelied, NetworkAction, Receipt,
    ReceiptSubjects,
};
use crate::time::format_instant;
use assent_fhir::Interaction;

/// One access to a patient's records, in plain terms. An API type: field names are a
/// compatibility promise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disclosure {
    pub receipt_id: String,
    /// FHIR `instant`, UTC.
    pub when: String,
    /// The caller in clear when known, else the start of its keyed hash.
    pub who: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// `read Observation/o1 (a test result or measurement)` (a plain read names the record,
    /// not the version the site held), `read version 2 of Observation/o1 (…)`,
    /// `searched Observation (test results and measurements; 3 records returned)`.
    pub what: String,
    /// `treatment (TREAT)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// `permitted`, `denied`, `failed`.
    pub decision: &'static str,
    /// `consent c1, version 2`, `the site's default rule (opt-in: …)`, `no consent`; for
    /// break-glass, `emergency access (break-glass), overriding a refusal by …` (the default
    /// rule or consent it overrode never reads as what permitted the access).
    pub basis: String,
    /// `emergency access (break-glass): {justification}` when the access rested on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub emergency: Option<String>,
}

impl Disclosure {
    pub fn from_receipt(r: &Receipt, subjects: Option<&ReceiptSubjects>) -> Disclosure {
        let who = match subjects {
            Some(s) => s.actor.clone(),
            None => format!(
                "caller {}…",
                r.actor_key.get(..12).unwrap_or(r.actor_key.as_str())
            ),
        };
        let kind = r.resource_type.as_deref().unwrap_or("records");
        let n = r.resources.len();
        let returned = match n {
            0 => "nothing returned".to_owned(),
            1 => "1 record returned".to_owned(),
            n => format!("{n} records returned"),
        };
        let consent = || match r.resources.first() {
            Some(first) => match &first.version_id {
                Some(v) => format!("consent {}, version {v}", first.id),
                None => format!("consent {}", first.id),
            },
            None => "a consent".to_owned(),
        };
        let what = match (r.kind, r.interaction) {
            // A plain read names the record as the patient knows it (`Observation/o1`, not the
            // version the site happened to hold); a read of one version says which.
            (AccessKind::Fhir, Some(Interaction::Read)) => match r.resources.first() {
                Some(first) => format!("read {}", record_words(&first.resource_type, &first.id)),
                None => format!("read {}", records_words(kind, &returned)),
            },
            (AccessKind::Fhir, Some(Interaction::Vread)) => match r.resources.first() {
                Some(first) => match &first.version_id {
                    Some(v) => format!(
                        "read version {v} of {}",
                        record_words(&first.resource_type, &first.id)
                    ),
                    None => format!("read {}", record_words(&first.resource_type, &first.id)),
                },
                None => format!(
                    "read an earlier version of {}",
                    records_words(kind, &returned)
                ),
            },
            (AccessKind::Fhir, Some(Interaction::Search)) => {
                format!("searched {}", records_words(kind, &returned))
            }
            (AccessKind::Fhir, Some(Interaction::History)) => {
                format!(
                    "read the past versions of {}",
                    records_words(kind, &returned)
                )
            }
            (AccessKind::Fhir, Some(Interaction::Operation)) => {
                format!("ran an operation on {}", records_words(kind, &returned))
            }
            (AccessKind::Fhir, Some(Interaction::Capabilities)) => {
                "read the server's capabilities".to_owned()
            }
            (AccessKind::Fhir, None) => {
                format!("made a request that could not be read ({returned})")
            }
            (AccessKind::Consent(ConsentAction::Create), _) => format!("recorded {}", consent()),
            (AccessKind::Consent(ConsentAction::Update), _) => format!("changed {}", consent()),
            (AccessKind::Consent(ConsentAction::Revoke), _) => format!("revoked {}", consent()),
            (AccessKind::Consent(ConsentAction::Search), _) => {
                format!("listed the consents ({returned})")
            }
            (AccessKind::Consent(ConsentAction::History), _) => {
                format!("read the history of a consent ({returned})")
            }
            (AccessKind::Consent(ConsentAction::Read), _) => format!("read {}", consent()),
            (AccessKind::Consent(ConsentAction::Check), _) => {
                "asked what the consents decide ($check)".to_owned()
            }
            (AccessKind::Audit(AuditAction::Search), _) => {
                format!("searched the access log ({returned})")
            }
            (AccessKind::Audit(AuditAction::Read), _) => "read an access receipt".to_owned(),
            (AccessKind::Audit(AuditAction::Export), _) => "exported the access log".to_owned(),
            (AccessKind::Audit(AuditAction::Disclosures), _) => {
                "read the accounting of disclosures".to_owned()
            }
            (AccessKind::Network(NetworkAction::Link), _) => {
                "linked the patient's records at several hospitals".to_owned()
            }
            (AccessKind::Network(NetworkAction::Confirm), _) => {
                "confirmed that records at several hospitals are the patient's".to_owned()
            }
            (AccessKind::Network(NetworkAction::Reject), _) => {
                "rejected a suggested link of the patient's records".to_owned()
            }
            (AccessKind::Network(NetworkAction::Unlink), _) => {
                "removed a link of the patient's records".to_owned()
            }
            (AccessKind::Network(NetworkAction::Read), _) => {
                "read which records are linked to the patient".to_owned()
            }
        };
        let why = r.purpose.as_deref().map(|p| match purpose_words(p) {
            Some(words) => format!("{words} ({p})"),
            None => p.to_owned(),
        });
        let decision = match r.decision {
            AccessDecision::Permit if r.status < 400 => "permitted",
            AccessDecision::Permit | AccessDecision::Error => "failed",
            AccessDecision::Deny => "denied",
        };
        let relied = match (&r.consent, r.kind) {
            // The gateway's own APIs are decided by who is asking, not by a consent.
            (ConsentRelied::None, AccessKind::Consent(_)) => {
                "the rules of who may manage the patient's consents".to_owned()
            }
            // A patient reading their own accounting (the patient portal) holds no role.
            (ConsentRelied::None, AccessKind::Audit(_)) if who.starts_with("Patient/") => {
                "the patient's own accounting of disclosures".to_owned()
            }
            (ConsentRelied::None, AccessKind::Audit(_)) => {
                "the audit role of a privacy or compliance officer".to_owned()
            }
            (ConsentRelied::None, AccessKind::Fhir) => "no consent".to_owned(),
            (ConsentRelied::None, AccessKind::Network(NetworkAction::Link)) => {
                "a national identifier shared by the records".to_owned()
            }
            (ConsentRelied::None, AccessKind::Network(_)) => {
                "the role of a network administrator".to_owned()
            }
            (ConsentRelied::SiteDefault(policy), _) => policy_words(policy),
            (ConsentRelied::Consent { id, version }, _) if version.is_empty() => {
                format!("consent {id}")
            }
            (ConsentRelied::Consent { id, version }, _) => {
                format!("consent {id}, version {version}")
            }
        };
        // Break-glass permits over a refusal: what the receipt relied on is the refusal it
        // overrode, never what permitted the access.
        let basis = if r.break_glass && decision == "permitted" {
            format!("emergency access (break-glass), overriding a refusal by {relied}")
        } else {
            relied
        };
        let emergency = r.break_glass.then(|| match &r.break_glass_justification {
            Some(j) => format!("emergency access (break-glass): {j}"),
            None => "emergency access (break-glass)".to_owned(),
        });
        Disclosure {
            receipt_id: r.id.clone(),
            when: format_instant(r.time_ms),
            who,
            organization: r.organization.clone(),
            site: r.site.clone(),
            what,
            why,
            decision,
            basis,
            emergency,
        }
    }

    /// One sentence: `2026-11-25T01:07:24.123Z: Practitioner/7 (Organization/1) read
    /// Observation/o1 at site north for treatment (TREAT): permitted under consent c1, version 2.`
    pub fn sentence(&self) -> String {
        let mut s = format!("{}: {}", self.when, self.who);
        if let Some(org) = &self.organization {
            s.push_str(&format!(" ({org})"));
        }
        s.push(' ');
        s.push_str(&self.what);
        if let Some(site) = &self.site {
            s.push_str(&format!(" at site {site}"));
        }
        if let Some(why) = &self.why {
            s.push_str(&format!(" for {why}"));
        }
        let under = match self.decision {
            "permitted" if self.emergency.is_some() => "by",
            "permitted" => "under",
            "denied" => "by",
            _ => "with",
        };
        s.push_str(&format!(": {} {under} {}", self.decision, self.basis));
        if let Some(e) = &self.emergency {
            s.push_str(&format!("; {e}"));
        }
        s.push('.');
        escape_controls(&s)
    }
}

/// A site's default policy in words a patient understands.
fn policy_words(policy: &str) -> String {
    match policy {
        "opt-in" => {
            "the site's default rule (opt-in: records are shared only with the patient's consent)"
                .to_owned()
        }
        "opt-out" => {
            "the site's default rule (opt-out: records are shared unless the patient objects)"
                .to_owned()
        }
        other => format!("the site's default rule ({other})"),
    }
}

/// One record named for a patient: its reference, then what kind of record it is
/// (`Observation/o1 (a test result or measurement)`).
fn record_words(resource_type: &str, id: &str) -> String {
    match plain_type(resource_type) {
        Some((one, _)) => format!("{resource_type}/{id} ({one})"),
        None => format!("{resource_type}/{id}"),
    }
}

/// A kind of record and how many were returned, named for a patient:
/// `Observation (test results and measurements; 3 records returned)`.
fn records_words(resource_type: &str, returned: &str) -> String {
    match plain_type(resource_type) {
        Some((_, many)) => format!("{resource_type} ({many}; {returned})"),
        None => format!("{resource_type} ({returned})"),
    }
}

/// Plain words for the resource types clinicians read most: one record, several.
fn plain_type(resource_type: &str) -> Option<(&'static str, &'static str)> {
    Some(match resource_type {
        "Patient" => (
            "the patient's personal details",
            "the patient's personal details",
        ),
        "Observation" => (
            "a test result or measurement",
            "test results and measurements",
        ),
        "Condition" => (
            "a diagnosis or health problem",
            "diagnoses and health problems",
        ),
        "Procedure" => ("a procedure", "procedures"),
        "MedicationRequest" => ("a prescription", "prescriptions"),
        "MedicationStatement" => ("a record of a medicine taken", "medicines taken"),
        "AllergyIntolerance" => ("an allergy", "allergies"),
        "Immunization" => ("a vaccination", "vaccinations"),
        "Encounter" => ("a visit or admission", "visits and admissions"),
        "DiagnosticReport" => ("a test report", "test reports"),
        "DocumentReference" => ("a document", "documents"),
        "CarePlan" => ("a care plan", "care plans"),
        "Consent" => ("a consent", "consents"),
        _ => return None,
    })
}

/// `text` with control characters (and the Unicode line and paragraph separators) escaped as
/// `\n`, `\r`, `\t` or `\u{…}`: the caller's claims and a justification cannot start a line
/// of their own in a list of sentences.
fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out
}

/// Plain words for the HL7 v3 PurposeOfUse codes callers send.
fn purpose_words(code: &str) -> Option<&'static str> {
    Some(match code {
        "TREAT" => "treatment",
        "ETREAT" => "emergency treatment",
        "BTG" => "break the glass",
        "CAREMGT" => "care management",
        "PATRQT" => "the patient's request",
        "FAMRQT" => "the family's request",
        "PWATRNY" => "a power of attorney",
        "SUPNWK" => "a support network",
        "HPAYMT" => "healthcare payment",
        "CLMATTCH" => "a claim attachment",
        "COVERAGE" => "coverage",
        "HOPERAT" => "healthcare operations",
        "HRESCH" => "healthcare research",
        "CLINTRCH" => "clinical trial research",
        "PUBHLTH" => "public health",
        "HLEGAL" => "legal reasons",
        "HMARKT" => "marketing",
        "HSYSADMIN" => "system administration",
        "TRANSRCH" => "translational research",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipt::tests::{sample, subjects};

    #[test]
    fn disclosures_read_as_sentences() {
        let r = sample("r1");
        let d = Disclosure::from_receipt(&r, Some(&subjects()));
        assert_eq!(
            d.sentence(),
            "2026-11-25T01:07:24.123Z: Practitioner/dr-who (Organization/st-elsewhere) read \
             Observation/o1 (a test result or measurement) at site north for treatment \
             (TREAT): permitted under consent c1, version 2."
        );
        let mut denied = sample("r2");
        denied.decision = AccessDecision::Deny;
        denied.status = 403;
        denied.interaction = Some(Interaction::Search);
        denied.resources.clear();
        denied.consent = ConsentRelied::SiteDefault("opt-in".into());
        denied.purpose = Some("HMARKT".into());
        let d = Disclosure::from_receipt(&denied, None);
        assert!(d.who.starts_with("caller ") && !d.who.contains("dr-who"));
        assert!(
            d.sentence().ends_with(
                "searched Observation (test results and measurements; nothing returned) at site \
                 north for marketing (HMARKT): denied by the site's default rule (opt-in: records \
                 are shared only with the patient's consent)."
            ),
            "{}",
            d.sentence()
        );
        let mut glass = sample("r3");
        glass.break_glass = true;
        glass.purpose = Some("ETREAT".into());
        glass.break_glass_justification = Some("unconscious in ER".into());
        let d = Disclosure::from_receipt(&glass, Some(&subjects()));
        assert!(
            d.sentence()
                .ends_with("; emergency access (break-glass): unconscious in ER.")
        );
        // Break-glass over the site's default refusal: the default rule refused, it never
        // permitted.
        glass.consent = ConsentRelied::SiteDefault("opt-in".into());
        let d = Disclosure::from_receipt(&glass, Some(&subjects()));
        let sentence = d.sentence();
        assert!(
            sentence.contains(
                ": permitted by emergency access (break-glass), overriding a refusal by the \
                 site's default rule (opt-in"
            ),
            "{sentence}"
        );
        assert!(!sentence.contains("permitted under"), "{sentence}");
        // A read of one version says which; a plain read never names `_history`.
        let mut vread = sample("r6");
        vread.interaction = Some(Interaction::Vread);
        let d = Disclosure::from_receipt(&vread, Some(&subjects()));
        assert_eq!(
            d.what,
            "read version 3 of Observation/o1 (a test result or measurement)"
        );
        assert!(
            !Disclosure::from_receipt(&sample("r7"), None)
                .what
                .contains("_history")
        );
        let mut revoked = sample("r4");
        revoked.kind = AccessKind::Consent(ConsentAction::Revoke);
        revoked.interaction = None;
        revoked.consent = ConsentRelied::None;
        let d = Disclosure::from_receipt(&revoked, Some(&subjects()));
        assert!(
            d.what == "revoked consent o1, version 3",
            "{}",
            d.sentence()
        );
        let mut audit = sample("r5");
        audit.kind = AccessKind::Audit(AuditAction::Disclosures);
        audit.consent = ConsentRelied::None;
        let d = Disclosure::from_receipt(&audit, Some(&subjects()));
        assert_eq!(d.what, "read the accounting of disclosures");
        assert!(
            d.sentence()
                .ends_with("permitted under the audit role of a privacy or compliance officer."),
            "{}",
            d.sentence()
        );
        let d = Disclosure::from_receipt(&revoked, Some(&subjects()));
        assert!(
            d.sentence()
                .ends_with("permitted under the rules of who may manage the patient's consents."),
            "{}",
            d.sentence()
        );
        let d = Disclosure::from_receipt(&glass, Some(&subjects()));
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["decision"], "permitted");
        assert_eq!(json["why"], "emergency treatment (ETREAT)");
    }

    #[test]
    fn a_sentence_is_one_line_whatever_the_claims_hold() {
        let r = sample("r4");
        let mut forged = subjects();
        forged.actor = "Practitioner/x\n2030-01-01T00:00:00Z: Practitioner/y read nothing.".into();
        let d = Disclosure::from_receipt(&r, Some(&forged));
        let sentence = d.sentence();
        assert_eq!(sentence.lines().count(), 1, "{sentence}");
        assert!(
            sentence.contains("Practitioner/x\\n2030-01-01"),
            "{sentence}"
        );
    }
}
