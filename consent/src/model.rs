//! The internal consent model, with R5 semantics: a root decision and nested provisions,
//! each provision's effect the inverse of its parent's.
//!
//! Owns the types and reading FHIR Consent resources of every supported version into them
//! (in `model/parse.rs`). Leaves out deciding (`decide.rs`) and storage.
//!
//! How earlier versions map onto the model:
//! - **R5/R6**: `decision` is the root effect (absent: `deny`, with a warning); each
//!   `provision` inverts its parent. An explicit `type` on a provision (not R5) is checked
//!   against the inversion and reported when it disagrees.
//! - **R4/R4B**: the root `provision`'s `type` is the root effect; when absent, the
//!   `policyRule` decides (`OPTIN` permit, `OPTOUT` deny), else `deny` with a warning. The
//!   root provision's own conditions (actor, purpose, class, ...) bound where the consent
//!   applies: outside them the consent has no opinion. Nested provisions keep their `type`;
//!   one that does not invert its parent is reported as a warning and kept as written.
//! - **STU3**: `policyRule` gives the root effect (`.../ConsentPolicy/opt-in` permit,
//!   `opt-out` deny); the root-level `actor`, `action`, `purpose`, `securityLabel`,
//!   `dataPeriod`, `data` bound the consent like R4's root conditions; each `except` is a
//!   provision of its own `type`.
//! - In every version, `Consent.period` (STU3/R5) or the R4 root `provision.period` bounds
//!   when the consent is in force.

mod parse;

use std::sync::Arc;

use assent_fhir::FhirVersion;

use crate::time::Period;
use crate::vocab::Actions;

pub(crate) use parse::normalize_reference;
pub use parse::{ConsentError, detect_version, parse_consent, parse_consent_any};

/// Permit or deny: a consent's root decision, or a provision's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    Permit,
    Deny,
}

impl Effect {
    pub fn invert(self) -> Effect {
        match self {
            Effect::Permit => Effect::Deny,
            Effect::Deny => Effect::Permit,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Permit => "permit",
            Effect::Deny => "deny",
        }
    }
}

/// `Consent.status`. Only `Active` consents are enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsentStatus {
    Draft,
    Proposed,
    Active,
    Rejected,
    Inactive,
    EnteredInError,
    NotDone,
}

impl ConsentStatus {
    pub fn from_code(code: &str) -> Option<ConsentStatus> {
        Some(match code {
            "draft" => ConsentStatus::Draft,
            "proposed" => ConsentStatus::Proposed,
            "active" => ConsentStatus::Active,
            "rejected" => ConsentStatus::Rejected,
            "inactive" => ConsentStatus::Inactive,
            "entered-in-error" => ConsentStatus::EnteredInError,
            "not-done" => ConsentStatus::NotDone,
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            ConsentStatus::Draft => "draft",
            ConsentStatus::Proposed => "proposed",
            ConsentStatus::Active => "active",
            ConsentStatus::Rejected => "rejected",
            ConsentStatus::Inactive => "inactive",
            ConsentStatus::EnteredInError => "entered-in-error",
            ConsentStatus::NotDone => "not-done",
        }
    }
}

/// What kind of consent this is. Only `PatientPrivacy` consents are enforced by the gateway;
/// the others are kept and reported as not enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConsentScope {
    PatientPrivacy,
    Research,
    Treatment,
    AdvanceDirective,
}

impl ConsentScope {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentScope::PatientPrivacy => "patient-privacy",
            ConsentScope::Research => "research",
            ConsentScope::Treatment => "treatment",
            ConsentScope::AdvanceDirective => "adr",
        }
    }

    pub fn is_enforced(self) -> bool {
        self == ConsentScope::PatientPrivacy
    }
}

/// A code with its (normalised) system; a missing system matches any system.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Coding {
    pub system: Option<String>,
    pub code: String,
}

impl Coding {
    pub fn new(system: Option<&str>, code: &str) -> Coding {
        Coding {
            system: system.map(crate::vocab::normalize_system),
            code: code.to_owned(),
        }
    }

    /// Whether a coding found in a request or a resource (`system`, `code`) is this one.
    pub fn matches(&self, system: Option<&str>, code: &str) -> bool {
        if self.code != code {
            return false;
        }
        match (&self.system, system) {
            (Some(mine), Some(theirs)) => crate::vocab::same_system(mine, theirs),
            _ => true,
        }
    }
}

/// Who an actor rule, or a caller, is: a reference (`Practitioner/123`, normalised to
/// `Type/id`) or a business identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Party {
    Reference(String),
    Identifier {
        system: Option<String>,
        value: String,
    },
}

impl Party {
    /// Whether the caller's `other` is the party this rule names. A rule's identifier
    /// without a system matches on value alone; with a system, the systems must be equal.
    pub fn matches(&self, other: &Party) -> bool {
        match (self, other) {
            (Party::Reference(a), Party::Reference(b)) => a == b,
            (
                Party::Identifier {
                    system: s1,
                    value: v1,
                },
                Party::Identifier {
                    system: s2,
                    value: v2,
                },
            ) => v1 == v2 && (s1.is_none() || s1 == s2),
            _ => false,
        }
    }
}

/// `provision.actor`: a party and/or a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorRule {
    /// Roles the caller must hold (any of), after dropping v3 ParticipationType codes, which
    /// say what part the actor plays in the exchange (recipient, custodian) rather than a
    /// role the caller holds. Empty: any role.
    pub roles: Vec<Coding>,
    /// The v3 ParticipationType code given, kept for explanations.
    pub participation: Option<String>,
    pub party: Option<Party>,
}

/// How a data reference is read (`ConsentDataMeaning`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataMeaning {
    /// Only the referenced resource.
    Instance,
    /// The referenced resource and the resources it refers to.
    Related,
    /// The referenced resource and the resources that refer to it.
    Dependents,
    /// Resources authored by the referenced party.
    AuthoredBy,
}

impl DataMeaning {
    pub fn from_code(code: &str) -> Option<DataMeaning> {
        Some(match code {
            "instance" => DataMeaning::Instance,
            "related" => DataMeaning::Related,
            "dependents" => DataMeaning::Dependents,
            "authoredby" => DataMeaning::AuthoredBy,
            _ => return None,
        })
    }
}

/// `provision.data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRule {
    pub meaning: DataMeaning,
    /// `Type/id`.
    pub reference: String,
}

/// The kinds of condition a provision can set; used for specificity and explanations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Conditions(u16);

impl Conditions {
    pub const ACTOR: Conditions = Conditions(1);
    pub const PURPOSE: Conditions = Conditions(1 << 1);
    pub const PERIOD: Conditions = Conditions(1 << 2);
    pub const ACTION: Conditions = Conditions(1 << 3);
    pub const RESOURCE_TYPE: Conditions = Conditions(1 << 4);
    pub const CODE: Conditions = Conditions(1 << 5);
    pub const SECURITY_LABEL: Conditions = Conditions(1 << 6);
    pub const DATA: Conditions = Conditions(1 << 7);
    pub const DATA_PERIOD: Conditions = Conditions(1 << 8);

    const NAMES: [(Conditions, &'static str); 9] = [
        (Conditions::ACTOR, "actor"),
        (Conditions::PURPOSE, "purpose"),
        (Conditions::PERIOD, "period"),
        (Conditions::ACTION, "action"),
        (Conditions::RESOURCE_TYPE, "resourceType"),
        (Conditions::CODE, "code"),
        (Conditions::SECURITY_LABEL, "securityLabel"),
        (Conditions::DATA, "data"),
        (Conditions::DATA_PERIOD, "dataPeriod"),
    ];

    pub fn contains(self, other: Conditions) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: Conditions) {
        self.0 |= other.0;
    }

    pub fn count(self) -> u32 {
        self.0.count_ones()
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The element names of the conditions set, in a fixed order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Conditions::NAMES
            .into_iter()
            .filter(move |(c, _)| self.contains(*c))
            .map(|(_, n)| n)
    }
}

/// One rule: conditions that must all hold, the effect when they do, and nested exceptions.
/// The root provision carries the consent's root decision and the conditions bounding where
/// the consent applies (empty for R5 input).
#[derive(Debug, Clone, PartialEq)]
pub struct Provision {
    pub effect: Effect,
    /// Where this provision sits in the source, as a FHIRPath-like path
    /// (`Consent.provision[0].provision[1]`; `Consent` for the root decision).
    pub path: Arc<str>,
    /// Nesting depth: 0 for the root.
    pub depth: u8,
    /// Pre-order index in the consent's provision tree: a stable tie-breaker.
    pub ordinal: u32,
    /// Conditions set on this provision and on all its ancestors, counted: the specificity.
    pub specificity: u32,
    pub conditions: Conditions,
    pub actors: Vec<ActorRule>,
    pub purposes: Vec<Coding>,
    pub period: Option<Period>,
    pub actions: Actions,
    pub resource_types: Vec<String>,
    pub codes: Vec<Coding>,
    pub security_labels: Vec<Coding>,
    pub data: Vec<DataRule>,
    pub data_period: Option<Period>,
    pub provisions: Vec<Provision>,
}

/// A patient's consent, read from any FHIR version.
#[derive(Debug, Clone, PartialEq)]
pub struct Consent {
    pub id: Arc<str>,
    /// `meta.versionId` when given, else the empty string (the ledger assigns versions).
    pub version: Arc<str>,
    pub fhir_version: FhirVersion,
    pub status: ConsentStatus,
    pub scope: ConsentScope,
    /// The patient (`Patient/123`) from `patient` (STU3/R4) or `subject` (R5).
    pub patient: Option<String>,
    /// When the consent is in force (`Consent.period`; R4: the root `provision.period`).
    pub period: Option<Period>,
    /// The root: its effect is the consent's decision.
    pub root: Provision,
}

impl Consent {
    /// The consent's root decision.
    pub fn decision(&self) -> Effect {
        self.root.effect
    }

    /// The same consent at ledger version `version` (used once the ledger assigned one).
    pub fn with_version(mut self, version: &str) -> Consent {
        self.version = Arc::from(version);
        self
    }

    /// Every provision, root first, in pre-order.
    pub fn provisions(&self) -> Vec<&Provision> {
        let mut out = Vec::new();
        fn walk<'a>(p: &'a Provision, out: &mut Vec<&'a Provision>) {
            out.push(p);
            for c in &p.provisions {
                walk(c, out);
            }
        }
        walk(&self.root, &mut out);
        out
    }

    /// Every party named by an actor rule, in order of appearance: the consent's grantees.
    pub fn grantees(&self) -> Vec<&Party> {
        let mut out: Vec<&Party> = Vec::new();
        for p in self.provisions() {
            for a in &p.actors {
                if let Some(party) = &a.party
                    && !out.contains(&party)
                {
                    out.push(party);
                }
            }
        }
        out
    }
}
