//! THE rule of "may this caller manage this patient's consents", as one pure function
//! ([`authorize`]) that every consent API endpoint asks: create, update, `$revoke`, search,
//! history and `$check`.
//!
//! The rule, in order:
//! 1. **A patient launch context confines.** A token whose SMART launch context names a
//!    patient manages that patient's consents only (the patient its `aud` binds it to,
//!    `patient_context.rs`: a site's patient; or a network patient, whose consents
//!    `network/Patient/{n}` and those of every site patient linked to it): it cannot
//!    create a Consent for another patient, change, revoke or read another patient's
//!    consents, list them or run `$check` for them (`consent-patient-mismatch`). Its SMART
//!    scopes must grant the access on `Consent` without granular conditions
//!    (`patient/Consent.c` to create, `.u` to change or revoke, `.s` to list or check, `.r`
//!    for a history), unless it also holds the consent-administrator role.
//! 2. **Without a launch context, only the consent-administrator role** manages consents
//!    (`consent-admin-required`): scopes alone (`user/Consent.*`, `system/Consent.*`,
//!    `patient/Consent.*` without context) no longer suffice. Who holds the role is the
//!    gateway's configuration (see [`Manager`]); this module only reads the answer.
//! 3. **Nobody grants themselves.** A caller with an actor (a practitioner; a patient's app
//!    too) can never write a Consent version with a permit provision whose actor is the
//!    caller or its organization, nor change or revoke a Consent with a deny provision whose
//!    actor is the caller or its organization (lifting a refusal of oneself is granting
//!    oneself access), whatever its scopes or role (`consent-self-grant`). An actor rule
//!    without a party (a role only) may name anyone, so it counts as naming the caller.
//!    Parties match as the decision matches them ([`assent_consent::Party::matches`] on the
//!    caller's actor and organization references).
//!
//! Patients are compared with their site (`{site}/Patient/{id}`): the same local id at another
//! site is another patient. The target's site is the one the call names (or, for a consent
//! looked up by id, the site whose patient the ledger's record is).
//!
//! Leaves out where the facts come from (the token, the configuration, the ledger: see
//! `consent_api.rs`) and how a refusal is answered (`error.rs`: 403 with the codes above).

use assent_consent::{Caller as ConsentCaller, Consent, Effect};
use assent_fhir::SitePatient;
use assent_receipts::ConsentAction;

/// Who is asking, as the rule needs to know them.
#[derive(Debug, Clone, Default)]
pub struct Manager {
    /// The patients whose consents the token's SMART launch context manages, as bound
    /// (`PatientContext::manages`), if the token has one.
    pub patient_context: Option<Vec<SitePatient>>,
    /// The caller holds the consent-administrator role (an issuer admin subject, a caller id
    /// in `ledger.consent_admins`, or the issuer's `consent_admin_scope`).
    pub consent_admin: bool,
    /// The caller's SMART scopes grant this call's access on `Consent`, without conditions.
    pub scopes_grant: bool,
    /// The caller's actor and organization as consent parties; `None` for a caller without
    /// an actor (a backend service).
    pub parties: Option<ConsentCaller>,
}

/// Whose consents a call manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// Not known yet (a consent named by id, before it is looked up): the rule answers whether
    /// the caller may manage any patient's consents at all, and is asked again once it is.
    Pending,
    /// A stored consent whose patient could not be established (its document is missing):
    /// nobody confined to a patient may manage it.
    Unknown,
    /// This patient of a site (or `network/Patient/{n}`, a network patient).
    Patient(&'a SitePatient),
}

/// What one call asks to do.
#[derive(Debug, Clone, Copy)]
pub struct ManageRequest<'a> {
    pub action: ConsentAction,
    pub target: Target<'a>,
    /// The Consent version the call writes (create, update).
    pub written: Option<&'a Consent>,
    /// The Consent as it stands (update, revoke), when known.
    pub current: Option<&'a Consent>,
}

/// Why the rule refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConsentRefusal {
    #[error("the token's patient launch context manages that patient's consents only")]
    OtherPatient,
    #[error(
        "managing other patients' consents needs the consent-administrator role; scopes alone do not suffice"
    )]
    AdminRequired,
    #[error(
        "a caller cannot grant itself or its organization access, nor lift a refusal of itself"
    )]
    SelfGrant,
    /// The launch context's scopes do not grant this access on `Consent`.
    #[error("no scope grants this access on Consent")]
    ScopeMissing,
}

/// THE rule: whether `who` may make `request`. See the module documentation.
pub fn authorize(who: &Manager, request: &ManageRequest<'_>) -> Result<(), ConsentRefusal> {
    match &who.patient_context {
        Some(context) => {
            match request.target {
                Target::Pending => {}
                Target::Patient(p) if context.contains(p) => {}
                Target::Patient(_) | Target::Unknown => return Err(ConsentRefusal::OtherPatient),
            }
            if !who.scopes_grant && !who.consent_admin {
                return Err(ConsentRefusal::ScopeMissing);
            }
        }
        None if !who.consent_admin => return Err(ConsentRefusal::AdminRequired),
        None => {}
    }
    if let Some(parties) = &who.parties {
        let grants_self = request
            .written
            .is_some_and(|c| names_caller(c, Effect::Permit, parties));
        let lifts_own_refusal = matches!(
            request.action,
            ConsentAction::Create | ConsentAction::Update | ConsentAction::Revoke
        ) && request
            .current
            .is_some_and(|c| names_caller(c, Effect::Deny, parties));
        if grants_self || lifts_own_refusal {
            return Err(ConsentRefusal::SelfGrant);
        }
    }
    Ok(())
}

/// Whether a provision of `consent` with `effect` has an actor that is the caller: a party
/// among the caller's, or no party at all (a role only, which anyone may hold).
fn names_caller(consent: &Consent, effect: Effect, caller: &ConsentCaller) -> bool {
    consent
        .provisions()
        .into_iter()
        .filter(|p| p.effect == effect)
        .flat_map(|p| &p.actors)
        .any(|actor| match &actor.party {
            None => true,
            Some(party) => caller.parties.iter().any(|c| party.matches(c)),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use assent_consent::parse_consent_any;
    use serde_json::{Value, json};

    /// A consent of `patient`: a root of `root` with one nested provision of the other effect
    /// for `actor` (a reference, or a role only when `None`).
    fn consent(patient: &str, root: &str, actor: Option<&str>) -> Consent {
        let nested = if root == "deny" { "permit" } else { "deny" };
        let actor: Value = match actor {
            Some(r) => json!({"reference": {"reference": r}}),
            None => {
                json!({"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "ONC"}]}})
            }
        };
        let document = json!({
            "resourceType": "Consent", "id": "c1", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": format!("Patient/{patient}")},
            "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
            "provision": {"type": root, "provision": [{"type": nested, "actor": [actor]}]}
        });
        parse_consent_any(&document).unwrap().0
    }

    fn practitioner(actor: &str, org: &str) -> Option<ConsentCaller> {
        Some(
            ConsentCaller::new()
                .with_reference(actor)
                .with_reference(org),
        )
    }

    /// Patient `id` of site `s`, or `id@site` of another site (leaked: a test's lifetime).
    fn at(id: &str) -> &'static SitePatient {
        let (id, site) = id.split_once('@').unwrap_or((id, "s"));
        Box::leak(Box::new(SitePatient::new(site, id)))
    }

    fn request<'a>(
        action: ConsentAction,
        patient: Option<&'a str>,
        written: Option<&'a Consent>,
        current: Option<&'a Consent>,
    ) -> ManageRequest<'a> {
        ManageRequest {
            action,
            target: patient.map_or(Target::Pending, |p| Target::Patient(at(p))),
            written,
            current,
        }
    }

    #[test]
    fn a_launch_context_confines_to_its_patient() {
        let patient_app = Manager {
            patient_context: Some(vec![SitePatient::new("s", "p1")]),
            scopes_grant: true,
            parties: Some(ConsentCaller::new().with_reference("Patient/p1")),
            ..Manager::default()
        };
        let own = consent("p1", "deny", Some("Practitioner/dr-alice"));
        for action in [
            ConsentAction::Create,
            ConsentAction::Update,
            ConsentAction::Revoke,
            ConsentAction::Search,
            ConsentAction::History,
            ConsentAction::Read,
            ConsentAction::Check,
        ] {
            // Another patient, and the same local id at another site.
            for other in ["p2", "p1@other-site"] {
                assert_eq!(
                    authorize(&patient_app, &request(action, Some(other), None, None)),
                    Err(ConsentRefusal::OtherPatient),
                    "{action:?} {other}"
                );
            }
            assert_eq!(
                authorize(&patient_app, &request(action, Some("p1"), Some(&own), None)),
                Ok(()),
                "{action:?}"
            );
        }
        // Not known yet: may go on to look the consent up; never established: refused.
        assert_eq!(
            authorize(
                &patient_app,
                &request(ConsentAction::Revoke, None, None, None)
            ),
            Ok(())
        );
        let mut unknown = request(ConsentAction::Revoke, None, None, None);
        unknown.target = Target::Unknown;
        assert_eq!(
            authorize(&patient_app, &unknown),
            Err(ConsentRefusal::OtherPatient)
        );
        // The role does not lift the confinement.
        let admin_in_context = Manager {
            consent_admin: true,
            scopes_grant: false,
            ..patient_app.clone()
        };
        assert_eq!(
            authorize(
                &admin_in_context,
                &request(ConsentAction::Search, Some("p2"), None, None)
            ),
            Err(ConsentRefusal::OtherPatient)
        );
        assert_eq!(
            authorize(
                &admin_in_context,
                &request(ConsentAction::Search, Some("p1"), None, None)
            ),
            Ok(())
        );
        let no_scope = Manager {
            scopes_grant: false,
            ..patient_app
        };
        assert_eq!(
            authorize(
                &no_scope,
                &request(ConsentAction::Create, Some("p1"), None, None)
            ),
            Err(ConsentRefusal::ScopeMissing)
        );
    }

    #[test]
    fn without_a_context_only_the_role_manages() {
        let scoped = Manager {
            scopes_grant: true,
            ..Manager::default()
        };
        for patient in [None, Some("p1")] {
            assert_eq!(
                authorize(
                    &scoped,
                    &request(ConsentAction::Search, patient, None, None)
                ),
                Err(ConsentRefusal::AdminRequired)
            );
        }
        let admin = Manager {
            consent_admin: true,
            ..Manager::default()
        };
        let c = consent("p9", "deny", Some("Practitioner/dr-alice"));
        assert_eq!(
            authorize(
                &admin,
                &request(ConsentAction::Create, Some("p9"), Some(&c), None)
            ),
            Ok(())
        );
    }

    #[test]
    fn nobody_grants_themselves_or_lifts_their_own_refusal() {
        let alice = Manager {
            consent_admin: true,
            parties: practitioner("Practitioner/dr-alice", "Organization/st-mary"),
            ..Manager::default()
        };
        let grants_alice = consent("p1", "deny", Some("Practitioner/dr-alice"));
        let grants_alice_absolute = consent(
            "p1",
            "deny",
            Some("https://fhir.example.org/Practitioner/dr-alice"),
        );
        let grants_her_org = consent("p1", "deny", Some("Organization/st-mary"));
        let grants_a_role = consent("p1", "deny", None);
        let grants_bob = consent("p1", "deny", Some("Practitioner/dr-bob"));
        let refuses_alice = consent("p1", "permit", Some("Practitioner/dr-alice"));
        let refuses_bob = consent("p1", "permit", Some("Practitioner/dr-bob"));
        for written in [
            &grants_alice,
            &grants_alice_absolute,
            &grants_her_org,
            &grants_a_role,
        ] {
            for action in [ConsentAction::Create, ConsentAction::Update] {
                assert_eq!(
                    authorize(&alice, &request(action, Some("p1"), Some(written), None)),
                    Err(ConsentRefusal::SelfGrant)
                );
            }
        }
        // Her own refusal can be neither edited nor revoked by her.
        for action in [ConsentAction::Update, ConsentAction::Revoke] {
            assert_eq!(
                authorize(
                    &alice,
                    &request(action, Some("p1"), Some(&refuses_bob), Some(&refuses_alice))
                        .with_written_for(action)
                ),
                Err(ConsentRefusal::SelfGrant),
                "{action:?}"
            );
        }
        // Others' grants and refusals are hers to manage; reading her own is fine.
        assert_eq!(
            authorize(
                &alice,
                &request(ConsentAction::Create, Some("p1"), Some(&grants_bob), None)
            ),
            Ok(())
        );
        assert_eq!(
            authorize(
                &alice,
                &request(ConsentAction::Revoke, Some("p1"), None, Some(&refuses_bob))
            ),
            Ok(())
        );
        assert_eq!(
            authorize(
                &alice,
                &request(
                    ConsentAction::History,
                    Some("p1"),
                    None,
                    Some(&refuses_alice)
                )
            ),
            Ok(())
        );
        // A refusal naming her may be written (it grants nothing).
        assert_eq!(
            authorize(
                &alice,
                &request(
                    ConsentAction::Create,
                    Some("p1"),
                    Some(&refuses_alice),
                    None
                )
            ),
            Ok(())
        );
        // A backend service without an actor may record any grant.
        let service = Manager {
            consent_admin: true,
            ..Manager::default()
        };
        assert_eq!(
            authorize(
                &service,
                &request(
                    ConsentAction::Create,
                    Some("p1"),
                    Some(&grants_her_org),
                    None
                )
            ),
            Ok(())
        );
    }

    impl<'a> ManageRequest<'a> {
        /// A revocation writes no new document.
        fn with_written_for(mut self, action: ConsentAction) -> Self {
            if action == ConsentAction::Revoke {
                self.written = None;
            }
            self
        }
    }
}
