//! Consent: the model, the decision and the filtering of results, and the consent contract,
//! as pure logic.
//!
//! Owns what a decision is (`Decision`, `Permit`, `Deny`) and how it is reached; reading FHIR
//! Consent resources of STU3, R4, R4B and R5 into one model with R5 semantics; filtering
//! search Bundles; and the consent contract over a key-value state interface. Leaves out
//! every kind of I/O (HTTP, SQL, the ledger's storage, the clock): callers hand in the state
//! and the time.
//!
//! **Invariant:** a [`Permit`] can only be constructed inside this crate, by the decision
//! functions. The gateway's forward call takes `&Permit`, so no request reaches a hospital
//! without a decision.
//!
//! **Invariant:** this crate does no I/O, spawns nothing and reads no clock.
//!
//! # How a decision is reached
//!
//! For one request, each consent of the patient is considered if it is `active` and `now` is
//! within its period. Consents of another scope than patient privacy (research, treatment,
//! advance directives) are then set aside and listed in the decision as not enforced.
//!
//! Within one consent, the root (the consent's decision, bounded by the root conditions of
//! STU3/R4 input) applies when its conditions hold; below it, a nested provision is
//! considered only when its parent applies, each provision's effect is the inverse of its
//! parent's (R5 semantics), and a nested provision that applies overrides its parent (it is
//! an exception to it). The applying provisions that no applying nested provision overrides
//! are the consent's candidates.
//!
//! **Combination rule.** Candidates, within a consent and across consents, are ranked by:
//! 1. *specificity*: the number of conditions (actor, purpose, period, action, resource
//!    type, code, security label, data, data period) set on the provision and on all its
//!    ancestors: the more specific provision wins;
//! 2. then *deny wins* over permit at equal specificity;
//! 3. then, between equal candidates, the consent with the smaller id, then the provision
//!    earlier in the document (this only picks which one is named in the reason; the effect
//!    is the same). The order in which consents are handed in never matters.
//!
//! The highest-ranked candidate decides; its consent id, version and provision path are the
//! reason. When no consent applies, the site's default policy decides (opt-in: deny;
//! opt-out: permit).
//!
//! **Unknown facts.** Before the upstream answers, the resource content is unknown. A
//! condition that needs it (code, security label, data reference, data period, or the
//! resource type of a system-wide search) is assumed to hold for a permit and not to hold for
//! a deny, and the resulting permit is marked conditional: every returned resource must be
//! decided again with its content ([`filter_bundle`], or [`decide`] with the resource). The
//! assumption leans to permit so that a request is not refused up front for content it may
//! not return; the check on the content is what enforces such conditions.
//!
//! **Break-glass.** When the outcome is a deny and the request asks for break-glass, it
//! becomes a permit marked as break-glass if the caller holds the break-glass scope, the
//! purpose of use is `ETREAT` (or a code below it, such as `BTG`) and a justification is
//! given; otherwise the deny stands and says why break-glass was refused.
//!
//! **Matching.** Actors match by reference or identifier against any of the caller's parties
//! (practitioner, role, organization, care team...), and by role when one other than a v3
//! ParticipationType code is given. Purposes match down the PurposeOfUse hierarchy (a rule
//! for `TREAT` covers `ETREAT`). Actions: a gateway read is `access` and `disclose`.
//! Confidentiality labels are ordered (a deny of `R` covers `V`; a permit of `N` does not
//! cover `R`); sensitivity labels (`HIV`, `PSY`, `ETH`...) match exactly. Data references:
//! `instance` is the resource itself; `related` adds the resources it refers to (within the
//! same response); `dependents` adds resources that refer to it; `authoredby` the resources
//! whose author, recorder, performer... is the reference.

mod contract;
mod decide;
mod decision;
mod filter;
mod model;
mod time;
mod vocab;

pub use contract::{
    AnchorRecord, AnchorSubmission, ConsentContract, ConsentRecord, ConsentSubmission,
    ConsentVersion, ConsortiumKey, ContractError, ContractEvent, ContractState,
    EVENT_ANCHOR_RECORDED, EVENT_CONSENT_PUT, EVENT_CONSENT_REVOKED, HistoryEntry,
    InMemoryContractState, LOCAL_MEMBER, MAX_MEMBER_LEN, MIN_KEY_LEN, RecordStatus,
    RevocationReason, Written, canonical_json, canonical_sha256, document_hash, write_canonical,
};
pub use decide::{AccessRequest, BreakGlass, Caller, RelatedIndex, decide};
pub use decision::{
    AskedInWords, Basis, BreakGlassRefusal, ConsentBasis, Decision, Deny, NotEnforced, Permit,
    SitePolicy, decide_all, decide_site_default, decide_unknown_patient, decide_unnamed,
};
pub use filter::{FilterReport, WITHHELD_DIAGNOSTICS, filter_bundle};
pub use model::{
    ActorRule, Coding, Conditions, Consent, ConsentError, ConsentScope, ConsentStatus, DataMeaning,
    DataRule, Effect, Party, Provision, detect_version, parse_consent, parse_consent_any,
};
pub use time::{Period, Timestamp};
pub use vocab::{
    ACT_CODE, ACT_REASON, Actions, CONFIDENTIALITY, CONSENT_ACTION, PARTICIPATION_TYPE,
};
