//! Deciding one access against a patient's consents: the access request, the matching of
//! each provision condition, the combination rule and break-glass.
//!
//! Owns the pure function `decide`. Leaves out where consents come from (the ledger, the
//! cache) and how the caller was authenticated: the request carries verified facts.
//! The combination rule is written down in the crate documentation (`lib.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use assent_fhir::Interaction;
use serde_json::Value;

use crate::decision::{
    Basis, BreakGlassRefusal, ConsentBasis, Decision, Deny, NotEnforced, Permit, SitePolicy,
};
use crate::model::{
    ActorRule, Coding, Consent, ConsentStatus, DataMeaning, DataRule, Effect, Party, Provision,
};
use crate::time::{Period, Timestamp, parse_interval};
use crate::vocab::{self, Actions};

/// The verified caller: who they are (references and identifiers of the practitioner, their
/// PractitionerRole, organization, care teams, ...) and the roles they hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub parties: Vec<Party>,
    pub roles: Vec<Coding>,
}

impl Caller {
    pub fn new() -> Caller {
        Caller::default()
    }

    /// Adds a literal reference such as `Practitioner/123` (normalised to `Type/id`; a value
    /// that is not a reference is ignored).
    pub fn with_reference(mut self, reference: &str) -> Caller {
        if let Some(r) = crate::model::normalize_reference(reference) {
            self.parties.push(Party::Reference(r));
        }
        self
    }

    pub fn with_identifier(mut self, system: Option<&str>, value: &str) -> Caller {
        self.parties.push(Party::Identifier {
            system: system.map(str::to_owned),
            value: value.to_owned(),
        });
        self
    }

    pub fn with_role(mut self, system: Option<&str>, code: &str) -> Caller {
        self.roles.push(Coding::new(system, code));
        self
    }
}

/// A break-glass request: the caller asks to override a deny in an emergency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakGlass<'a> {
    /// The justification the caller gave (the gateway reads it from a header).
    pub justification: &'a str,
    /// Whether the caller's token carries the break-glass scope.
    pub scope_granted: bool,
}

/// One access to decide. Borrowed, so that deciding allocates nothing on the common path.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    pub caller: &'a Caller,
    /// The purpose of use, a v3 ActReason code (`TREAT`, `ETREAT`, `HRESCH`, ...).
    pub purpose: Option<&'a str>,
    pub interaction: Interaction,
    /// What the request does with the data; by default that of the interaction.
    pub actions: Actions,
    /// The resource type asked for, when known (`None` for system-wide searches).
    pub resource_type: Option<&'a str>,
    /// The resource id, when the request names one (read, vread).
    pub resource_id: Option<&'a str>,
    /// The resource content, when known (after the upstream answered).
    pub resource: Option<&'a Value>,
    /// References made by other resources of the same response, for `related` data rules.
    pub related: Option<&'a RelatedIndex<'a>>,
    pub now: Timestamp,
    pub break_glass: Option<BreakGlass<'a>>,
}

impl<'a> AccessRequest<'a> {
    pub fn new(
        caller: &'a Caller,
        interaction: Interaction,
        resource_type: Option<&'a str>,
        now: Timestamp,
    ) -> AccessRequest<'a> {
        AccessRequest {
            caller,
            purpose: None,
            interaction,
            actions: Actions::for_interaction(interaction),
            resource_type,
            resource_id: None,
            resource: None,
            related: None,
            now,
            break_glass: None,
        }
    }

    pub fn with_purpose(mut self, purpose: &'a str) -> Self {
        self.purpose = Some(purpose);
        self
    }

    pub fn with_resource_id(mut self, id: &'a str) -> Self {
        self.resource_id = Some(id);
        self
    }

    /// The resource content; its `resourceType` and `id` fill in the type and id.
    pub fn with_resource(mut self, resource: &'a Value) -> Self {
        self.resource = Some(resource);
        if let Some(t) = resource.get("resourceType").and_then(Value::as_str) {
            self.resource_type = Some(t);
        }
        if let Some(id) = resource.get("id").and_then(Value::as_str) {
            self.resource_id = Some(id);
        }
        self
    }

    pub fn with_break_glass(mut self, break_glass: BreakGlass<'a>) -> Self {
        self.break_glass = Some(break_glass);
        self
    }
}

/// For each resource of a response (`Type/id`), the resources of the same response that
/// refer to it. Made by [`RelatedIndex::from_resources`]; used for `related` data rules.
///
/// Built on its first use: only a consent with a `related` data rule reads it, and most
/// decisions meet none, so a large answer does not pay a second walk of every resource for
/// an index nobody asks.
#[derive(Debug, Clone, Default)]
pub struct RelatedIndex<'v> {
    resources: Vec<&'v Value>,
    /// A set per target: a searchset of thousands of resources referring to one patient
    /// builds in linear time (a list with a membership test per entry was quadratic: 16,697
    /// Observations of one patient took ≈1 s).
    referred_by: OnceLock<HashMap<String, HashSet<String>>>,
}

impl<'v> RelatedIndex<'v> {
    pub fn from_resources(resources: impl IntoIterator<Item = &'v Value>) -> RelatedIndex<'v> {
        RelatedIndex {
            resources: resources.into_iter().collect(),
            referred_by: OnceLock::new(),
        }
    }

    fn referred_by(&self) -> &HashMap<String, HashSet<String>> {
        self.referred_by.get_or_init(|| {
            let mut referred_by: HashMap<String, HashSet<String>> = HashMap::new();
            for r in &self.resources {
                let Some(me) = self_reference(r) else {
                    continue;
                };
                let mut refs = Vec::new();
                collect_references(r, &mut refs);
                for target in refs {
                    referred_by.entry(target).or_default().insert(me.clone());
                }
            }
            referred_by
        })
    }

    fn is_referred_by(&self, target: &str, source: &str) -> bool {
        self.referred_by()
            .get(target)
            .is_some_and(|sources| sources.contains(source))
    }
}

/// Decides `request` against the patient's `consents` under the site's `policy`.
///
/// Consents that are not `active`, out of their period, or of a scope other than patient
/// privacy do not decide; the last kind is listed in the decision as not enforced. See the
/// crate documentation for how provisions and consents combine.
pub fn decide(consents: &[Consent], request: &AccessRequest<'_>, policy: SitePolicy) -> Decision {
    let mut best: Option<Candidate<'_>> = None;
    let mut conditional = false;
    let mut not_enforced = Vec::new();
    for consent in consents {
        if consent.status != ConsentStatus::Active
            || !consent.period.is_none_or(|p| p.contains(request.now))
        {
            continue;
        }
        if !consent.scope.is_enforced() {
            not_enforced.push(NotEnforced {
                consent_id: consent.id.clone(),
                scope: consent.scope,
            });
            continue;
        }
        let Some(candidate) = evaluate(consent, &consent.root, request, &mut conditional) else {
            continue;
        };
        if best.as_ref().is_none_or(|b| candidate.beats(b)) {
            best = Some(candidate);
        }
    }
    not_enforced.sort_by(|a: &NotEnforced, b: &NotEnforced| a.consent_id.cmp(&b.consent_id));
    let (effect, basis) = match best {
        Some(c) => (
            c.provision.effect,
            Basis::Consent(ConsentBasis {
                consent_id: c.consent.id.clone(),
                consent_version: c.consent.version.clone(),
                provision: c.provision.path.clone(),
                effect: c.provision.effect,
                conditions: c.conditions,
            }),
        ),
        None => {
            let effect = match policy {
                SitePolicy::OptIn => Effect::Deny,
                SitePolicy::OptOut => Effect::Permit,
            };
            (effect, Basis::SiteDefault(policy))
        }
    };
    match effect {
        Effect::Permit => Decision::Permit(Permit::new(basis, conditional, not_enforced)),
        Effect::Deny => match request.break_glass {
            None => Decision::Deny(Deny::new(basis, None, not_enforced)),
            Some(bg) => match break_glass_refusal(request, bg) {
                Some(refusal) => Decision::Deny(Deny::new(basis, Some(refusal), not_enforced)),
                None => Decision::Permit(Permit::new(
                    Basis::BreakGlass(Box::new(basis)),
                    conditional,
                    not_enforced,
                )),
            },
        },
    }
}

fn break_glass_refusal(
    request: &AccessRequest<'_>,
    bg: BreakGlass<'_>,
) -> Option<BreakGlassRefusal> {
    if !bg.scope_granted {
        Some(BreakGlassRefusal::NoScope)
    } else if !request.purpose.is_some_and(vocab::is_emergency_purpose) {
        Some(BreakGlassRefusal::PurposeNotEmergency)
    } else if bg.justification.trim().is_empty() {
        Some(BreakGlassRefusal::NoJustification)
    } else {
        None
    }
}

struct Candidate<'c> {
    consent: &'c Consent,
    provision: &'c Provision,
    conditions: crate::model::Conditions,
}

impl Candidate<'_> {
    /// More specific wins; then deny; then the smaller consent id and the earlier provision,
    /// so that the outcome does not depend on the order consents come in.
    fn beats(&self, other: &Candidate<'_>) -> bool {
        let key = |c: &Candidate<'_>| {
            (
                c.provision.specificity,
                u8::from(c.provision.effect == Effect::Deny),
            )
        };
        let (a, b) = (key(self), key(other));
        if a != b {
            return a > b;
        }
        (&*self.consent.id, self.provision.ordinal) < (&*other.consent.id, other.provision.ordinal)
    }
}

/// The deciding provision of one consent, if the consent applies at all: among the applying
/// provisions none of whose nested provisions applies (a nested provision that applies
/// overrides its parent), the one that [`Candidate::beats`] the others.
fn evaluate<'c>(
    consent: &'c Consent,
    root: &'c Provision,
    request: &AccessRequest<'_>,
    conditional: &mut bool,
) -> Option<Candidate<'c>> {
    if !applies(root, request, conditional) {
        return None;
    }
    let mut best = None;
    frontier(
        consent,
        root,
        root.conditions,
        request,
        conditional,
        &mut best,
    );
    best
}

fn frontier<'c>(
    consent: &'c Consent,
    provision: &'c Provision,
    conditions: crate::model::Conditions,
    request: &AccessRequest<'_>,
    conditional: &mut bool,
    best: &mut Option<Candidate<'c>>,
) {
    let mut overridden = false;
    for child in &provision.provisions {
        if !applies(child, request, conditional) {
            continue;
        }
        overridden = true;
        let mut inherited = conditions;
        inherited.insert(child.conditions);
        frontier(consent, child, inherited, request, conditional, best);
    }
    if !overridden {
        let candidate = Candidate {
            consent,
            provision,
            conditions,
        };
        if best.as_ref().is_none_or(|b| candidate.beats(b)) {
            *best = Some(candidate);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tri {
    Yes,
    No,
    Unknown,
}

impl Tri {
    fn from_bool(b: bool) -> Tri {
        if b { Tri::Yes } else { Tri::No }
    }

    fn and(self, other: impl FnOnce() -> Tri) -> Tri {
        match self {
            Tri::No => Tri::No,
            Tri::Yes => other(),
            Tri::Unknown => match other() {
                Tri::No => Tri::No,
                _ => Tri::Unknown,
            },
        }
    }
}

/// Whether a provision applies. A condition that needs facts the request lacks (resource
/// content, resource type) is assumed to hold for a permit and not to hold for a deny, and
/// the decision is marked conditional: each resource is then decided on its own.
fn applies(p: &Provision, request: &AccessRequest<'_>, conditional: &mut bool) -> bool {
    match matches(p, request) {
        Tri::Yes => true,
        Tri::No => false,
        Tri::Unknown => {
            *conditional = true;
            p.effect == Effect::Permit
        }
    }
}

fn matches(p: &Provision, r: &AccessRequest<'_>) -> Tri {
    Tri::Yes
        .and(|| {
            Tri::from_bool(
                p.actors.is_empty() || p.actors.iter().any(|a| actor_matches(a, r.caller)),
            )
        })
        .and(|| Tri::from_bool(p.purposes.is_empty() || purpose_matches(&p.purposes, r.purpose)))
        .and(|| Tri::from_bool(p.period.is_none_or(|pd| pd.contains(r.now))))
        .and(|| Tri::from_bool(p.actions.is_empty() || p.actions.intersects(r.actions)))
        .and(|| {
            if p.resource_types.is_empty() {
                return Tri::Yes;
            }
            match r.resource_type {
                Some(t) => Tri::from_bool(p.resource_types.iter().any(|x| x == t)),
                None => Tri::Unknown,
            }
        })
        .and(|| {
            if p.data.is_empty() {
                return Tri::Yes;
            }
            data_matches(&p.data, r)
        })
        .and(|| match r.resource {
            _ if p.codes.is_empty() => Tri::Yes,
            Some(res) => Tri::from_bool(codes_match(&p.codes, res)),
            None => Tri::Unknown,
        })
        .and(|| match r.resource {
            _ if p.security_labels.is_empty() => Tri::Yes,
            Some(res) => Tri::from_bool(labels_match(&p.security_labels, p.effect, res)),
            None => Tri::Unknown,
        })
        .and(|| match (p.data_period, r.resource) {
            (None, _) => Tri::Yes,
            (Some(dp), Some(res)) => {
                Tri::from_bool(data_time(res).is_some_and(|t| t.overlaps(&dp)))
            }
            (Some(_), None) => Tri::Unknown,
        })
}

fn actor_matches(rule: &ActorRule, caller: &Caller) -> bool {
    let party_ok = rule
        .party
        .as_ref()
        .is_none_or(|party| caller.parties.iter().any(|c| party.matches(c)));
    let role_ok = rule.roles.is_empty()
        || rule.roles.iter().any(|role| {
            caller
                .roles
                .iter()
                .any(|c| role.matches(c.system.as_deref(), &c.code))
        });
    party_ok && role_ok
}

fn purpose_matches(purposes: &[Coding], requested: Option<&str>) -> bool {
    let Some(q) = requested else { return false };
    purposes.iter().any(|p| {
        p.system.as_deref().is_none_or(|s| s == vocab::ACT_REASON)
            && vocab::purpose_subsumes(&p.code, q)
    })
}

fn data_matches(rules: &[DataRule], r: &AccessRequest<'_>) -> Tri {
    let mut verdict = Tri::No;
    for rule in rules {
        let here = data_rule_matches(rule, r);
        match here {
            Tri::Yes => return Tri::Yes,
            Tri::Unknown => verdict = Tri::Unknown,
            Tri::No => {}
        }
    }
    verdict
}

fn data_rule_matches(rule: &DataRule, r: &AccessRequest<'_>) -> Tri {
    let is_self = match (r.resource_type, r.resource_id) {
        (Some(t), Some(id)) => Some(same_reference(&rule.reference, t, id)),
        _ => None,
    };
    if is_self == Some(true) && rule.meaning != DataMeaning::AuthoredBy {
        return Tri::Yes;
    }
    let Some(res) = r.resource else {
        return match (rule.meaning, is_self) {
            (DataMeaning::Instance, Some(false)) => Tri::No,
            _ => Tri::Unknown,
        };
    };
    match rule.meaning {
        DataMeaning::Instance => Tri::from_bool(is_self == Some(true)),
        DataMeaning::Dependents => {
            let mut refs = Vec::new();
            collect_references(res, &mut refs);
            Tri::from_bool(refs.contains(&rule.reference))
        }
        DataMeaning::Related => {
            let me = self_reference(res);
            Tri::from_bool(match (me, r.related) {
                (Some(me), Some(index)) => index.is_referred_by(&me, &rule.reference),
                _ => false,
            })
        }
        DataMeaning::AuthoredBy => Tri::from_bool(authored_by(res, &rule.reference)),
    }
}

fn same_reference(reference: &str, ty: &str, id: &str) -> bool {
    reference.len() == ty.len() + 1 + id.len()
        && reference.starts_with(ty)
        && reference.as_bytes()[ty.len()] == b'/'
        && reference.ends_with(id)
}

const AUTHOR_FIELDS: [&str; 8] = [
    "author",
    "recorder",
    "asserter",
    "requester",
    "performer",
    "sender",
    "informationSource",
    "enterer",
];

fn authored_by(res: &Value, party: &str) -> bool {
    AUTHOR_FIELDS.iter().any(|f| {
        res.get(*f).is_some_and(|v| {
            let mut refs = Vec::new();
            collect_references(v, &mut refs);
            refs.iter().any(|x| x == party)
        })
    })
}

/// Code-bearing elements looked at for `provision.code` (and media types for document
/// classes).
const CODE_FIELDS: [&str; 8] = [
    "code",
    "type",
    "category",
    "class",
    "vaccineCode",
    "medicationCodeableConcept",
    "medication",
    "contentType",
];

fn codes_match(codes: &[Coding], res: &Value) -> bool {
    let mut found = false;
    for f in CODE_FIELDS {
        if let Some(v) = res.get(f) {
            visit_codings(v, &mut |system, code| {
                if codes.iter().any(|c| c.matches(system, code)) {
                    found = true;
                }
            });
        }
    }
    if let Some(content) = res.get("content").and_then(Value::as_array) {
        for c in content {
            if let Some(ct) = c.pointer("/attachment/contentType").and_then(Value::as_str)
                && codes.iter().any(|x| x.code == ct)
            {
                found = true;
            }
        }
    }
    if let Some(ct) = res.get("contentType").and_then(Value::as_str)
        && codes.iter().any(|x| x.code == ct)
    {
        found = true;
    }
    found
}

/// Calls `f` for each coding inside a CodeableConcept, a Coding, an array of them, or an R5
/// CodeableReference (`concept`).
fn visit_codings(v: &Value, f: &mut impl FnMut(Option<&str>, &str)) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| visit_codings(i, f)),
        Value::Object(o) => {
            if let Some(code) = o.get("code").and_then(Value::as_str) {
                f(o.get("system").and_then(Value::as_str), code);
            }
            if let Some(list) = o.get("coding").and_then(Value::as_array) {
                for c in list {
                    if let Some(code) = c.get("code").and_then(Value::as_str) {
                        f(c.get("system").and_then(Value::as_str), code);
                    }
                }
            }
            if let Some(concept) = o.get("concept") {
                visit_codings(concept, f);
            }
        }
        _ => {}
    }
}

/// Whether the resource's `meta.security` carries one of `labels`. Confidentiality codes
/// are ordered: a deny of `R` covers `R` and `V`; a permit of `N` covers `U` to `N`. A
/// resource without a confidentiality label counts as `N`.
fn labels_match(labels: &[Coding], effect: Effect, res: &Value) -> bool {
    let security = res
        .pointer("/meta/security")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut resource_conf: Option<u8> = None;
    for s in security {
        let (Some(code), system) = (
            s.get("code").and_then(Value::as_str),
            s.get("system").and_then(Value::as_str),
        ) else {
            continue;
        };
        if system.is_none_or(|x| vocab::same_system(vocab::CONFIDENTIALITY, x))
            && let Some(rank) = vocab::confidentiality_rank(code)
        {
            resource_conf = Some(resource_conf.map_or(rank, |r| r.max(rank)));
            continue;
        }
        if labels
            .iter()
            .any(|l| vocab::confidentiality_rank(&l.code).is_none() && l.matches(system, code))
        {
            return true;
        }
    }
    let conf = resource_conf.unwrap_or(vocab::DEFAULT_CONFIDENTIALITY_RANK);
    labels.iter().any(|l| {
        let is_conf = l
            .system
            .as_deref()
            .is_none_or(|s| s == vocab::CONFIDENTIALITY);
        match (is_conf, vocab::confidentiality_rank(&l.code)) {
            (true, Some(rank)) => match effect {
                Effect::Deny => conf >= rank,
                Effect::Permit => conf <= rank,
            },
            _ => false,
        }
    })
}

/// Clinically relevant time of a resource, for `dataPeriod`.
const TIME_FIELDS: [&str; 14] = [
    "effectiveDateTime",
    "effectiveInstant",
    "effectivePeriod",
    "occurrenceDateTime",
    "occurrencePeriod",
    "performedDateTime",
    "performedPeriod",
    "onsetDateTime",
    "recordedDate",
    "authoredOn",
    "issued",
    "date",
    "period",
    "created",
];

fn data_time(res: &Value) -> Option<Period> {
    for f in TIME_FIELDS {
        match res.get(f) {
            Some(Value::String(s)) => {
                let (start, end) = parse_interval(s)?;
                return Some(Period { start, end });
            }
            Some(Value::Object(o)) => {
                let start = o.get("start").and_then(Value::as_str);
                let end = o.get("end").and_then(Value::as_str);
                return Period::from_fhir(start, end);
            }
            _ => {}
        }
    }
    None
}

fn self_reference(res: &Value) -> Option<String> {
    let ty = res.get("resourceType")?.as_str()?;
    let id = res.get("id")?.as_str()?;
    Some(format!("{ty}/{id}"))
}

/// Every literal reference (`Type/id`) inside `v`.
fn collect_references(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| collect_references(i, out)),
        Value::Object(o) => {
            for (k, child) in o {
                if k == "reference"
                    && let Some(s) = child.as_str()
                {
                    if let Some(r) = crate::model::normalize_reference(s) {
                        out.push(r);
                    }
                } else {
                    collect_references(child, out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deny_of_restricted_covers_very_restricted_only() {
        let r = [Coding::new(Some(vocab::CONFIDENTIALITY), "R")];
        let v = json!({"meta":{"security":[{"system":vocab::CONFIDENTIALITY,"code":"V"}]}});
        let n = json!({"meta":{}});
        assert!(labels_match(&r, Effect::Deny, &v));
        assert!(!labels_match(&r, Effect::Deny, &n));
        let permit_n = [Coding::new(Some(vocab::CONFIDENTIALITY), "N")];
        assert!(labels_match(&permit_n, Effect::Permit, &n));
        assert!(!labels_match(&permit_n, Effect::Permit, &v));
    }

    #[test]
    fn references_are_found_anywhere() {
        let mut refs = Vec::new();
        collect_references(
            &json!({"subject":{"reference":"Patient/1"},"basedOn":[{"reference":"http://x/fhir/ServiceRequest/9"}]}),
            &mut refs,
        );
        refs.sort();
        assert_eq!(refs, vec!["Patient/1", "ServiceRequest/9"]);
    }
}
