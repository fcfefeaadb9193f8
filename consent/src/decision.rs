//! Decisions: `Permit` and `Deny` values with the basis they rest on, and the site default.
//!
//! Owns the decision values and their explanation. Leaves out how consents are evaluated
//! (`decide.rs`).

use std::fmt;
use std::sync::Arc;

use assent_fhir::Interaction;

use crate::decide::AccessRequest;
use crate::model::{Conditions, ConsentScope, Effect};

/// A site's policy when no consent speaks to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SitePolicy {
    /// Deny unless a consent permits (opt-in jurisdictions).
    OptIn,
    /// Permit unless a consent denies (opt-out jurisdictions).
    OptOut,
}

impl SitePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            SitePolicy::OptIn => "opt-in",
            SitePolicy::OptOut => "opt-out",
        }
    }
}

/// The provision of a consent that decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentBasis {
    pub consent_id: Arc<str>,
    /// The consent version relied on (empty when the consent carried none).
    pub consent_version: Arc<str>,
    /// Where the deciding provision sits (`Consent.provision[0].provision[1]`).
    pub provision: Arc<str>,
    pub effect: Effect,
    /// The kinds of condition the deciding provision and its ancestors set.
    pub conditions: Conditions,
}

/// What a decision rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Basis {
    /// No consent applied; the site's default policy decided.
    SiteDefault(SitePolicy),
    /// A provision of a consent decided.
    Consent(ConsentBasis),
    /// Break-glass permitted over the deny in the box.
    BreakGlass(Box<Basis>),
    /// The request reads no patient's data (the server's CapabilityStatement).
    NoPatientData,
    /// Whose data the request touches is known only from the answer: each resource returned
    /// is decided on its own before anything is released.
    PerResource,
    /// The data belongs to a patient the whose-data rule could not place: denied.
    UnknownPatient,
}

impl fmt::Display for Basis {
    /// `site-default:opt-in`, `consent:c1@3:Consent.provision[0]:deny`,
    /// `break-glass:consent:c1@3:Consent:deny`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Basis::SiteDefault(p) => write!(f, "site-default:{}", p.as_str()),
            Basis::Consent(c) => {
                write!(f, "consent:{}", c.consent_id)?;
                if !c.consent_version.is_empty() {
                    write!(f, "@{}", c.consent_version)?;
                }
                write!(f, ":{}:{}", c.provision, c.effect.as_str())
            }
            Basis::BreakGlass(inner) => write!(f, "break-glass:{inner}"),
            Basis::NoPatientData => f.write_str("no-patient-data"),
            Basis::PerResource => f.write_str("per-resource"),
            Basis::UnknownPatient => f.write_str("unknown-patient"),
        }
    }
}

/// A consent of the patient that is active and in force but was not enforced, because its
/// scope is not patient privacy (research, treatment, advance directive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotEnforced {
    pub consent_id: Arc<str>,
    pub scope: ConsentScope,
}

/// Why a break-glass request did not override a deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakGlassRefusal {
    /// The caller's token lacks the break-glass scope.
    NoScope,
    /// The purpose of use is not emergency treatment (ETREAT or below).
    PurposeNotEmergency,
    /// No justification was given.
    NoJustification,
}

impl BreakGlassRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakGlassRefusal::NoScope => "break-glass scope missing",
            BreakGlassRefusal::PurposeNotEmergency => "purpose of use is not ETREAT",
            BreakGlassRefusal::NoJustification => "justification missing",
        }
    }
}

/// Proof that access was decided and permitted. Its fields are private and it has no public
/// constructor: only the decision functions of this crate make one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit {
    basis: Basis,
    conditional: bool,
    not_enforced: Vec<NotEnforced>,
}

impl Permit {
    pub(crate) fn new(basis: Basis, conditional: bool, not_enforced: Vec<NotEnforced>) -> Permit {
        Permit {
            basis,
            conditional,
            not_enforced,
        }
    }

    pub fn basis(&self) -> &Basis {
        &self.basis
    }

    /// Whether break-glass overrode a deny: the record phase flags the receipt and calls the
    /// notification hook.
    pub fn break_glass(&self) -> bool {
        matches!(self.basis, Basis::BreakGlass(_))
    }

    /// Whether the permit rests on conditions about resource content (code, security label,
    /// data reference, data period, or an unknown resource type) that could not be checked
    /// without the resource: every resource returned must then be decided on its own
    /// ([`crate::filter_bundle`], or [`crate::decide`] with the resource).
    pub fn is_conditional(&self) -> bool {
        self.conditional
    }

    pub fn not_enforced(&self) -> &[NotEnforced] {
        &self.not_enforced
    }
}

/// A refusal with the basis it rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    basis: Basis,
    break_glass_refused: Option<BreakGlassRefusal>,
    not_enforced: Vec<NotEnforced>,
}

impl Deny {
    pub(crate) fn new(
        basis: Basis,
        break_glass_refused: Option<BreakGlassRefusal>,
        not_enforced: Vec<NotEnforced>,
    ) -> Deny {
        Deny {
            basis,
            break_glass_refused,
            not_enforced,
        }
    }

    pub fn basis(&self) -> &Basis {
        &self.basis
    }

    /// Set when break-glass was asked for and refused.
    pub fn break_glass_refused(&self) -> Option<BreakGlassRefusal> {
        self.break_glass_refused
    }

    pub fn not_enforced(&self) -> &[NotEnforced] {
        &self.not_enforced
    }
}

/// The outcome of deciding one access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Permit(Permit),
    Deny(Deny),
}

impl Decision {
    pub fn basis(&self) -> &Basis {
        match self {
            Decision::Permit(p) => p.basis(),
            Decision::Deny(d) => d.basis(),
        }
    }

    pub fn is_permit(&self) -> bool {
        matches!(self, Decision::Permit(_))
    }

    pub fn not_enforced(&self) -> &[NotEnforced] {
        match self {
            Decision::Permit(p) => p.not_enforced(),
            Decision::Deny(d) => d.not_enforced(),
        }
    }

    /// A sentence for `$check` and OperationOutcome diagnostics.
    pub fn explain(&self) -> String {
        let mut out = String::new();
        let verdict = if self.is_permit() { "permit" } else { "deny" };
        out.push_str(verdict);
        out.push_str(": ");
        describe(self.basis(), &mut out);
        if let Decision::Permit(p) = self
            && p.is_conditional()
        {
            out.push_str("; each returned resource is checked against its content");
        }
        if let Decision::Deny(d) = self
            && let Some(r) = d.break_glass_refused()
        {
            out.push_str("; break-glass refused: ");
            out.push_str(r.as_str());
        }
        for n in self.not_enforced() {
            out.push_str(&format!(
                "; consent {} not enforced (scope {})",
                n.consent_id,
                n.scope.as_str()
            ));
        }
        out
    }
}

/// What a decision was asked about, in words, for [`Decision::explain_plainly`].
#[derive(Debug, Clone, Copy)]
pub struct AskedInWords<'a> {
    /// Who would access: `Practitioner/dr-alice`, or `a caller with no actor`.
    pub who: &'a str,
    /// What they would do, as a verb phrase: `read Observation records`.
    pub doing: &'a str,
    /// Why, in words: `treatment`; `None` when no purpose was given.
    pub purpose: Option<&'a str>,
}

impl Decision {
    /// The decision in sentences a privacy officer understands, naming the consent and its
    /// version, who, what and why: `Consent c1 v1 permits Practitioner/dr-alice to read
    /// Observation records for treatment.` The machine-readable basis is
    /// [`Decision::basis`]; this is its reading, not a second rule.
    pub fn explain_plainly(&self, asked: &AskedInWords<'_>) -> String {
        let permit = self.is_permit();
        let why = asked
            .purpose
            .map(|p| format!(" for {p}"))
            .unwrap_or_default();
        let (who, doing) = (asked.who, asked.doing);
        let mut out = plain_basis(self.basis(), permit, who, doing, &why);
        if let Decision::Permit(p) = self
            && p.is_conditional()
        {
            out.push_str(
                " The permit depends on what the records hold (codes, labels, dates): each record \
                 returned is checked against it before it is released.",
            );
        }
        if let Decision::Deny(d) = self
            && let Some(r) = d.break_glass_refused()
        {
            out.push_str(&format!(
                " Emergency access (break-glass) was asked for and refused: {}.",
                r.as_str()
            ));
        }
        for n in self.not_enforced() {
            out.push_str(&format!(
                " Consent {} is in force but was not applied: its scope is {}, and only \
                 patient-privacy consents decide access.",
                n.consent_id,
                n.scope.as_str()
            ));
        }
        out
    }
}

fn plain_basis(basis: &Basis, permit: bool, who: &str, doing: &str, why: &str) -> String {
    match basis {
        Basis::Consent(c) => {
            let mut consent = format!("Consent {}", c.consent_id);
            if !c.consent_version.is_empty() {
                consent.push_str(&format!(" v{}", c.consent_version));
            }
            if permit {
                format!("{consent} permits {who} to {doing}{why}.")
            } else {
                format!("{consent} does not allow {who} to {doing}{why}.")
            }
        }
        Basis::SiteDefault(SitePolicy::OptIn) => format!(
            "No consent of the patient permits {who} to {doing}{why}, and the site's default \
             rule (opt-in) allows access only with the patient's consent."
        ),
        Basis::SiteDefault(SitePolicy::OptOut) if permit => format!(
            "No consent of the patient refuses {who} to {doing}{why}, and the site's default \
             rule (opt-out) allows access unless the patient objects."
        ),
        Basis::SiteDefault(SitePolicy::OptOut) => format!(
            "The site's default rule (opt-out) would allow {who} to {doing}{why}, but access \
             was refused."
        ),
        Basis::BreakGlass(inner) => format!(
            "Emergency access (break-glass) lets {who} {doing}{why} over this refusal: {}",
            plain_basis(inner, false, who, doing, why)
        ),
        Basis::NoPatientData => format!("{who} may {doing}: it reads no patient's data."),
        Basis::PerResource => format!(
            "The request does not say whose records it reads, so each record returned is \
             decided on its own patient's consents before {who} sees it."
        ),
        Basis::UnknownPatient => format!(
            "The records belong to a patient who cannot be identified at this site, so no \
             consent can permit {who} to {doing}{why}."
        ),
    }
}

fn describe(basis: &Basis, out: &mut String) {
    match basis {
        Basis::SiteDefault(p) => out.push_str(&format!(
            "no consent applies; site default policy {}",
            p.as_str()
        )),
        Basis::Consent(c) => {
            out.push_str(&format!("consent {}", c.consent_id));
            if !c.consent_version.is_empty() {
                out.push_str(&format!(" version {}", c.consent_version));
            }
            out.push_str(&format!(", {} ({})", c.provision, c.effect.as_str()));
            if !c.conditions.is_empty() {
                let names: Vec<&str> = c.conditions.names().collect();
                out.push_str(&format!(" on {}", names.join(", ")));
            }
        }
        Basis::BreakGlass(inner) => {
            out.push_str("break-glass override of [");
            describe(inner, out);
            out.push(']');
        }
        Basis::NoPatientData => out.push_str("the request reads no patient data"),
        Basis::PerResource => {
            out.push_str("whose data is touched is known from the answer; each resource is decided")
        }
        Basis::UnknownPatient => {
            out.push_str("the data belongs to a patient who cannot be identified at this site")
        }
    }
}

/// The decision for a request that does not name whose data it reads, made on the request
/// itself: the server's CapabilityStatement (`metadata`) reads no patient's data; any other
/// read is permitted to fetch only conditionally, so nothing may be released before each
/// resource returned is decided with [`crate::decide`] on the consents of every patient it
/// belongs to. The caller must have found that the request names no patient (the whose-data
/// rule of `assent-fhir`); a request that names patients is decided with [`crate::decide`].
pub fn decide_unnamed(request: &AccessRequest<'_>) -> Decision {
    if request.interaction == Interaction::Capabilities {
        Decision::Permit(Permit::new(Basis::NoPatientData, false, Vec::new()))
    } else {
        Decision::Permit(Permit::new(Basis::PerResource, true, Vec::new()))
    }
}

/// The decision for data of a patient the whose-data rule could not place (a reference under
/// an unknown base, an identifier of an unknown system, a contained Patient): no consent can
/// be read for it, so it is denied, on every site and whatever break-glass asks.
pub fn decide_unknown_patient() -> Decision {
    Decision::Deny(Deny::new(Basis::UnknownPatient, None, Vec::new()))
}

/// One decision for a request or resource that belongs to several patients, from each
/// patient's decision: the first deny if any (in the order given); else the first
/// conditional permit (every resource must then be decided on its content); else the first
/// permit. `None` for no decisions at all.
pub fn decide_all(decisions: impl IntoIterator<Item = Decision>) -> Option<Decision> {
    let mut chosen: Option<Decision> = None;
    for decision in decisions {
        let better = match (&chosen, &decision) {
            (None, _) => true,
            (Some(Decision::Deny(_)), _) => false,
            (Some(Decision::Permit(_)), Decision::Deny(_)) => true,
            (Some(Decision::Permit(c)), Decision::Permit(p)) => !c.conditional && p.conditional,
        };
        if better {
            chosen = Some(decision);
        }
    }
    chosen
}

/// The decision when no consent applies: opt-in sites deny, opt-out sites permit.
pub fn decide_site_default(policy: SitePolicy) -> Decision {
    let basis = Basis::SiteDefault(policy);
    match policy {
        SitePolicy::OptIn => Decision::Deny(Deny::new(basis, None, Vec::new())),
        SitePolicy::OptOut => Decision::Permit(Permit::new(basis, false, Vec::new())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fetch_permits_say_what_they_rest_on() {
        let caller = crate::Caller::new();
        let now = crate::Timestamp::from_unix_seconds(0);
        let read = AccessRequest::new(&caller, Interaction::Search, Some("Observation"), now);
        let Decision::Permit(p) = decide_unnamed(&read) else {
            panic!("an unnamed read is fetched conditionally")
        };
        assert!(p.is_conditional());
        assert_eq!(p.basis().to_string(), "per-resource");
        let metadata = AccessRequest::new(&caller, Interaction::Capabilities, None, now);
        let Decision::Permit(m) = decide_unnamed(&metadata) else {
            panic!("metadata reads no patient data")
        };
        assert!(!m.is_conditional());
        assert_eq!(m.basis().to_string(), "no-patient-data");
        assert!(!decide_unknown_patient().is_permit());
        assert_eq!(
            decide_unknown_patient().basis().to_string(),
            "unknown-patient"
        );
    }

    #[test]
    fn several_patients_combine_deny_first_then_conditional() {
        let caller = crate::Caller::new();
        let now = crate::Timestamp::from_unix_seconds(0);
        let read = AccessRequest::new(&caller, Interaction::Search, Some("Observation"), now);
        let open = decide_site_default(SitePolicy::OptOut);
        let conditional = decide_unnamed(&read);
        let all = decide_all([open.clone(), conditional.clone()]).unwrap();
        assert!(matches!(all, Decision::Permit(ref p) if p.is_conditional()));
        let all = decide_all([open.clone(), decide_unknown_patient(), conditional]).unwrap();
        assert_eq!(all.basis(), &Basis::UnknownPatient);
        assert_eq!(decide_all([open.clone()]), Some(open));
        assert_eq!(decide_all(Vec::new()), None);
    }

    #[test]
    fn site_default_follows_policy() {
        assert!(matches!(
            decide_site_default(SitePolicy::OptIn),
            Decision::Deny(_)
        ));
        match decide_site_default(SitePolicy::OptOut) {
            Decision::Permit(p) => assert_eq!(p.basis().to_string(), "site-default:opt-out"),
            Decision::Deny(_) => panic!("opt-out must permit without a consent"),
        }
    }

    #[test]
    fn plain_explanations_name_consent_version_who_what_and_why() {
        let basis = |effect| {
            Basis::Consent(ConsentBasis {
                consent_id: Arc::from("ng-p001-alice"),
                consent_version: Arc::from("1"),
                provision: Arc::from("Consent.provision[0].provision[0]"),
                effect,
                conditions: Conditions::ACTOR,
            })
        };
        let asked = AskedInWords {
            who: "Practitioner/dr-alice",
            doing: "read Observation records",
            purpose: Some("treatment"),
        };
        let permit = Decision::Permit(Permit::new(basis(Effect::Permit), false, Vec::new()));
        assert_eq!(
            permit.explain_plainly(&asked),
            "Consent ng-p001-alice v1 permits Practitioner/dr-alice to read Observation records \
             for treatment."
        );
        let deny = Decision::Deny(Deny::new(basis(Effect::Deny), None, Vec::new()));
        assert_eq!(
            deny.explain_plainly(&asked),
            "Consent ng-p001-alice v1 does not allow Practitioner/dr-alice to read Observation \
             records for treatment."
        );
        let opt_in = decide_site_default(SitePolicy::OptIn).explain_plainly(&asked);
        assert!(
            opt_in.starts_with("No consent of the patient permits Practitioner/dr-alice")
                && opt_in.contains("(opt-in)"),
            "{opt_in}"
        );
        let opt_out = decide_site_default(SitePolicy::OptOut).explain_plainly(&AskedInWords {
            purpose: None,
            ..asked
        });
        assert!(
            opt_out.contains("to read Observation records, and") && opt_out.contains("(opt-out)"),
            "{opt_out}"
        );
        let conditional = Decision::Permit(Permit::new(basis(Effect::Permit), true, Vec::new()));
        assert!(
            conditional
                .explain_plainly(&asked)
                .contains("each record returned is checked")
        );
    }

    #[test]
    fn consent_basis_displays_id_version_and_path() {
        let b = Basis::Consent(ConsentBasis {
            consent_id: Arc::from("c1"),
            consent_version: Arc::from("3"),
            provision: Arc::from("Consent.provision[0]"),
            effect: Effect::Deny,
            conditions: Conditions::ACTOR,
        });
        assert_eq!(b.to_string(), "consent:c1@3:Consent.provision[0]:deny");
        assert_eq!(
            Basis::BreakGlass(Box::new(b)).to_string(),
            "break-glass:consent:c1@3:Consent.provision[0]:deny"
        );
    }
}
