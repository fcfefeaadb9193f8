//! The consent concern, [`Enforcer`]: inbound (the decide phase), the patients a request
//! names decided before it is forwarded; outbound (the consent half of the release), every
//! resource of an answer decided on the consents of every patient it belongs to before it is
//! released. The denies break-glass overrode are plain data the enforcer hands back.
//!
//! Whose data a request or a resource is comes from THE rule (`assent_fhir::compartment`);
//! this module only places what the rule found (a site-local id, another site's patient, an
//! identifier resolved at the site) and asks the consent crate. What cannot be placed is an
//! unknown patient, denied (`assent_consent::decide_unknown_patient`).
//!
//! Leaves out: the decision rules (the consent crate), where consents come from (the consent
//! service), scopes (`authorize.rs`) and what an answer may say about what was withheld
//! (`release.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::header::HeaderMap;
use assent_auth::PurposeOfUse;
use assent_consent::{
    AccessRequest, Basis, BreakGlass as BreakGlassAsk, BreakGlassRefusal, Caller as ConsentCaller,
    Consent, Decision, Deny, Permit, RelatedIndex, SitePolicy, decide, decide_all,
    decide_unknown_patient, decide_unnamed,
};
use assent_fhir::FhirVersion;
use assent_fhir::compartment::{
    PatientRef, Patients, RequestPatients, patients_of, request_patients,
};
use serde_json::Value;

use crate::http::caller::Caller;
use crate::http::error::GatewayError;
use crate::http::state::AppState;
use crate::proxy::exchange::{Outcome, SiteRequest};
use crate::proxy::request::FhirRequest;
use crate::services::break_glass::{self, BreakGlass, Override};
use crate::services::consent::{ConsentServiceError, now};
use crate::services::identity;
use crate::services::upstream::Site;

/// A patient placed at a site: the site id and the site-local Patient id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlacedPatient {
    pub site: String,
    pub id: String,
}

/// What the consent engine needs to know about the caller and the request.
pub struct ConsentRequest {
    caller: ConsentCaller,
    purpose: Option<&'static str>,
    interaction: assent_fhir::Interaction,
    resource_type: Option<String>,
    resource_id: Option<String>,
    /// Break-glass asked for: the justification (empty when none was given) and whether the
    /// caller holds the grant.
    break_glass: Option<(String, bool)>,
}

impl ConsentRequest {
    /// The consent request of `fhir` by `caller`; `break_glass` when the caller asked for it
    /// ([`ask_break_glass`]).
    pub fn new(
        caller: &Caller,
        purpose: Option<&'static str>,
        fhir: &FhirRequest,
        break_glass: Option<&BreakGlass>,
    ) -> Self {
        let mut consent_caller = ConsentCaller::new();
        for reference in [&caller.verified.actor, &caller.verified.organization]
            .into_iter()
            .flatten()
        {
            consent_caller = consent_caller.with_reference(&relative_reference(reference));
        }
        ConsentRequest {
            caller: consent_caller,
            purpose,
            interaction: fhir.interaction,
            resource_type: fhir.resource_type.clone(),
            resource_id: fhir.id.clone(),
            // A deny is overridden when the caller holds the grant, the purpose is emergency
            // treatment and the justification is not empty.
            break_glass: break_glass.map(|bg| {
                (
                    bg.justification.clone().unwrap_or_default(),
                    caller.verified.break_glass,
                )
            }),
        }
    }

    fn access(&self) -> AccessRequest<'_> {
        let mut request = AccessRequest::new(
            &self.caller,
            self.interaction,
            self.resource_type.as_deref(),
            now(),
        );
        if let Some(p) = self.purpose {
            request = request.with_purpose(p);
        }
        if let Some(id) = &self.resource_id {
            request = request.with_resource_id(id);
        }
        if let Some((justification, granted)) = &self.break_glass {
            request = request.with_break_glass(BreakGlassAsk {
                justification,
                scope_granted: *granted,
            });
        }
        request
    }
}

/// The decision on one resource of an answer, and every patient it belongs to.
#[derive(Debug)]
pub struct Verdict {
    pub decision: Decision,
    /// The patients the resource belongs to, placed (for the receipt).
    pub patients: Vec<PlacedPatient>,
    /// What the rule found, as it found it.
    pub found: Patients,
}

impl Verdict {
    pub fn released(&self) -> bool {
        self.decision.is_permit()
    }
}

/// Break-glass as the caller asked for it: by a justification, or by the grant with an
/// emergency purpose (so that a missing justification is answered as such); `None` when not
/// asked for.
pub fn ask_break_glass(
    headers: &HeaderMap,
    caller: &Caller,
    purpose: Option<PurposeOfUse>,
) -> Result<Option<BreakGlass>, GatewayError> {
    let justification = break_glass::justification(headers)?;
    let emergency = purpose.is_some_and(|p| p.is_emergency());
    Ok(
        (justification.is_some() || (caller.verified.break_glass && emergency)).then(|| {
            BreakGlass {
                justification,
                overrides: Vec::new(),
            }
        }),
    )
}

/// The consent decisions of one request: the patients it names before forwarding, then each
/// resource of the answer. Consents read once per patient and request.
pub struct Enforcer<'a> {
    state: &'a AppState,
    site: &'a Site,
    client: &'a awc::Client,
    request: &'a ConsentRequest,
    /// Denies that break-glass overrode, not yet taken (one per decision).
    overrides: Vec<Override>,
    /// The FHIR version the answers are decided in (the site's).
    version: FhirVersion,
    consents: HashMap<PlacedPatient, Arc<[Consent]>>,
}

impl<'a> Enforcer<'a> {
    pub fn new(
        state: &'a AppState,
        site: &'a Site,
        client: &'a awc::Client,
        request: &'a ConsentRequest,
    ) -> Self {
        Enforcer {
            state,
            site,
            client,
            request,
            overrides: Vec::new(),
            version: site.config.fhir_version,
            consents: HashMap::new(),
        }
    }

    /// The inbound half, the decide phase: every patient `request` names is decided before
    /// it is forwarded (each must permit); a request that names none is fetched on a
    /// conditional permit and every resource of the answer is decided. Returns the permit to
    /// forward on and the patients named (`None` when the request named none).
    pub async fn admit(
        &mut self,
        request: &SiteRequest,
        outcome: &mut Outcome,
    ) -> Result<(Permit, Option<Vec<PlacedPatient>>), GatewayError> {
        let fhir = &request.fhir;
        let named = request_patients(
            self.version,
            fhir.resource_type.as_deref(),
            fhir.id.as_deref(),
            &request.params(),
            &self.site.references,
        );
        let (decision, placed) = self.decide_request(&named).await?;
        outcome.decision = Some(decision.clone());
        outcome.named_patients = placed.clone();
        match decision {
            Decision::Permit(permit) => Ok((
                permit,
                matches!(named, RequestPatients::Named(_)).then_some(placed),
            )),
            Decision::Deny(deny) => Err(denied(&deny)),
        }
    }

    /// The decide phase: the patients the request names, each decided on its consents (all
    /// must permit); a request that names none is fetched on a conditional permit and
    /// decided resource by resource. Returns the decision and the patients placed.
    pub async fn decide_request(
        &mut self,
        named: &RequestPatients,
    ) -> Result<(Decision, Vec<PlacedPatient>), GatewayError> {
        let access = self.request.access();
        let RequestPatients::Named(patients) = named else {
            return Ok((decide_unnamed(&access), Vec::new()));
        };
        let mut decisions = Vec::with_capacity(patients.len());
        let mut placed_all = Vec::with_capacity(patients.len());
        for patient in patients {
            match self.place(patient).await? {
                Some(placed) => {
                    let decision = self.decide_for(&placed, &access).await?;
                    decisions.push(decision);
                    placed_all.push(placed);
                }
                None => decisions.push(decide_unknown_patient()),
            }
        }
        let decision = decide_all(decisions).unwrap_or_else(|| decide_unnamed(&access));
        Ok((decision, placed_all))
    }

    /// Decides one resource of an answer on the consents of every patient it belongs to. A
    /// resource of no patient is no patient's data and is permitted to be released here
    /// (scopes decide it); a patient the rule could not place denies it.
    pub async fn decide_resource(
        &mut self,
        resource: &Value,
        related: Option<&RelatedIndex<'_>>,
    ) -> Result<Verdict, GatewayError> {
        let found = patients_of(resource, self.version, &self.site.references);
        let mut access = self.request.access();
        access.resource_type = None;
        access.resource_id = None;
        access.related = related;
        let access = access.with_resource(resource);
        let mut decisions = Vec::with_capacity(found.known.len() + 1);
        let mut placed_all = Vec::with_capacity(found.known.len());
        if found.unknown > 0 {
            decisions.push(decide_unknown_patient());
        }
        // The resources it carries (a document's entries, contained resources, a Parameters'
        // resources) are released with it: each is decided too, on its own type and content,
        // for every patient the whole belongs to.
        let nested = embedded_resources(resource);
        if nested.len() > MAX_NESTED {
            decisions.push(decide_unknown_patient());
        }
        for patient in &found.known {
            match self.place(patient).await? {
                Some(placed) => {
                    decisions.push(self.decide_for(&placed, &access).await?);
                    for inner in &nested {
                        let mut inner_access = self.request.access();
                        inner_access.resource_type = None;
                        inner_access.resource_id = None;
                        inner_access.related = related;
                        let inner_access = inner_access.with_resource(inner);
                        decisions.push(self.decide_for(&placed, &inner_access).await?);
                    }
                    placed_all.push(placed);
                }
                None => decisions.push(decide_unknown_patient()),
            }
        }
        let decision = decide_all(decisions).unwrap_or_else(|| {
            // No patient's data: nothing of a patient to decide.
            decide_unnamed(&access)
        });
        Ok(Verdict {
            decision,
            patients: placed_all,
            found,
        })
    }

    /// A patient the rule found, placed at a site; `None` when it cannot be.
    async fn place(&mut self, patient: &PatientRef) -> Result<Option<PlacedPatient>, GatewayError> {
        Ok(match patient {
            PatientRef::Local(id) => Some(PlacedPatient {
                site: self.site.id.clone(),
                id: id.clone(),
            }),
            PatientRef::Site { site, id } => {
                self.state.sites.contains_key(site).then(|| PlacedPatient {
                    site: site.clone(),
                    id: id.clone(),
                })
            }
            PatientRef::Identifier { system, value } => identity::resolve(
                &self.state.identities,
                self.site,
                self.client,
                system,
                value,
            )
            .await?
            .map(|id| PlacedPatient {
                site: self.site.id.clone(),
                id,
            }),
        })
    }

    async fn decide_for(
        &mut self,
        patient: &PlacedPatient,
        access: &AccessRequest<'_>,
    ) -> Result<Decision, GatewayError> {
        let consents = match self.consents.get(patient) {
            Some(c) => c.clone(),
            None => {
                let c = self
                    .state
                    .consents
                    .consents_for(&patient.site, &patient.id, &self.state.network)
                    .await
                    .map_err(unavailable)?;
                self.consents.insert(patient.clone(), c.clone());
                c
            }
        };
        let policy = self.policy_of(&patient.site);
        let decision = decide(&consents, access, policy);
        if let Decision::Permit(p) = &decision
            && let Basis::BreakGlass(overridden) = p.basis()
        {
            self.overrides.push(Override {
                patient_key: self.state.consents.patient_key(&patient.site, &patient.id),
                overridden: overridden.to_string(),
            });
        }
        Ok(decision)
    }

    /// Whether break-glass overrode a deny since the last [`take_overrides`](Self::take_overrides).
    pub fn has_overrides(&self) -> bool {
        !self.overrides.is_empty()
    }

    /// The denies break-glass overrode since the last call.
    pub fn take_overrides(&mut self) -> Vec<Override> {
        std::mem::take(&mut self.overrides)
    }

    fn policy_of(&self, site: &str) -> SitePolicy {
        self.state
            .sites
            .get(site)
            .map(|s| s.config.default_policy)
            // An unknown site was not placed; the strictest policy if it ever is.
            .unwrap_or(SitePolicy::OptIn)
    }
}

/// Most resources nested in one resource that are decided one by one; a resource carrying
/// more is withheld whole.
const MAX_NESTED: usize = 10_000;

/// The resources carried inside `resource` at any depth (contained resources, Bundle entries,
/// `Parameters` resources, any object with a `resourceType` below the top), in document
/// order; more than [`MAX_NESTED`] when it carries more (the walk stops there).
fn embedded_resources(resource: &Value) -> Vec<&Value> {
    fn walk<'v>(value: &'v Value, top: bool, depth: usize, out: &mut Vec<&'v Value>) {
        if depth > assent_fhir::compartment::MAX_DEPTH || out.len() > MAX_NESTED {
            return;
        }
        match value {
            Value::Object(object) => {
                if !top && object.get("resourceType").is_some_and(Value::is_string) {
                    out.push(value);
                }
                for v in object.values() {
                    walk(v, false, depth + 1, out);
                }
            }
            Value::Array(items) => {
                for v in items {
                    walk(v, false, depth + 1, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(resource, true, 0, &mut out);
    out
}

/// The error answering a deny: a fixed sentence per reason, which tells the caller it is
/// denied and why without revealing any consent's content (no consent id, version or
/// provision, nothing that tells a consent names the caller: a consent's refusal and the
/// opt-in default read alike). The full basis goes to the receipt and the audit API. A deny
/// that break-glass would have overridden but for the missing justification says so with
/// its own code.
pub fn denied(deny: &Deny) -> GatewayError {
    let reason = match (deny.basis(), deny.break_glass_refused()) {
        (Basis::UnknownPatient, _) => {
            "the records belong to a patient who cannot be identified at this site"
        }
        (_, Some(BreakGlassRefusal::NoScope)) => {
            "the patient's consent does not permit this access, and the token holds no break-glass grant"
        }
        (_, Some(BreakGlassRefusal::PurposeNotEmergency)) => {
            "the patient's consent does not permit this access, and break-glass needs the purpose of use ETREAT"
        }
        _ => "the patient's consent does not permit this access for this caller and purpose",
    };
    match deny.break_glass_refused() {
        Some(BreakGlassRefusal::NoJustification) => {
            GatewayError::BreakGlassJustificationRequired(reason.to_owned())
        }
        _ => GatewayError::Denied(reason.to_owned()),
    }
}

/// `Type/id` from a relative or absolute reference.
fn relative_reference(reference: &str) -> String {
    let parts: Vec<&str> = reference.trim_end_matches('/').rsplitn(3, '/').collect();
    match parts.as_slice() {
        [id, ty, ..] => format!("{ty}/{id}"),
        _ => reference.to_owned(),
    }
}

fn unavailable(e: ConsentServiceError) -> GatewayError {
    tracing::warn!(error = %e, "consent state unavailable: failing closed");
    GatewayError::ConsentUnavailable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_resources_are_found_at_any_depth() {
        let document = serde_json::json!({"resourceType": "Bundle", "type": "document", "entry": [
            {"resource": {"resourceType": "Composition", "id": "c"}},
            {"resource": {"resourceType": "Condition", "id": "k",
                "contained": [{"resourceType": "Medication", "id": "m"}]}},
        ]});
        let ids: Vec<&str> = embedded_resources(&document)
            .iter()
            .filter_map(|r| r["id"].as_str())
            .collect();
        assert_eq!(ids, ["c", "k", "m"]);
        assert!(embedded_resources(&serde_json::json!({"resourceType": "Observation"})).is_empty());
    }

    #[test]
    fn caller_references_are_relative() {
        assert_eq!(
            relative_reference("https://idp.example/fhir/Practitioner/p1"),
            "Practitioner/p1"
        );
        assert_eq!(relative_reference("Practitioner/p1"), "Practitioner/p1");
    }
}
