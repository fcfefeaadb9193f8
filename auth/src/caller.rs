//! The verified caller: what the decide and record phases see of who is asking.
//!
//! Leaves out: how it was verified (`verifier.rs`) and the token itself, which is never kept.

use std::sync::Arc;

use assent_fhir::Interaction;

use crate::error::AuthError;
use crate::purpose::PurposeOfUse;
use crate::scopes::{Access, Grant, Scopes};

/// What kind of party holds the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallerKind {
    /// A practitioner (or other user) acting through an app: the actor is not a Patient.
    User,
    /// A patient acting for themselves: the actor is a `Patient` reference.
    Patient,
    /// A SMART backend service (client credentials): no actor.
    System,
}

impl CallerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CallerKind::User => "user",
            CallerKind::Patient => "patient",
            CallerKind::System => "system",
        }
    }
}

/// A caller whose token verified. Cheap to clone (shared strings), so that a token-cache hit
/// costs no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCaller {
    /// `iss`.
    pub issuer: Arc<str>,
    /// `sub`.
    pub subject: Arc<str>,
    /// The acting user as a FHIR reference (`fhirUser` or the configured claim).
    pub actor: Option<Arc<str>>,
    /// The actor's organization (configured claim).
    pub organization: Option<Arc<str>>,
    /// The user's name as the token states it (OpenID `name`, else `given_name` and
    /// `family_name`), for display beside the actor only: never decided on, never logged.
    /// Absent when the claims give none or not as printable text.
    pub display: Option<Arc<str>>,
    pub scopes: Arc<Scopes>,
    /// From the token's claim or, where the issuer allows it, the `X-Purpose-Of-Use` header.
    pub purpose: Option<PurposeOfUse>,
    /// The patient launch context (SMART `patient` claim), as stated. Which patient it is
    /// depends on the base it was issued for (`audiences`): the gateway binds it.
    pub patient: Option<Arc<str>>,
    /// The token's `aud` values (one or several), as stated: the FHIR base(s) the token was
    /// issued for; the issuer's configured audiences include one of them.
    pub audiences: Arc<[Arc<str>]>,
    /// `jti`, or `sha256:` and a hash prefix of the token when there is none. Never the token.
    pub token_id: Arc<str>,
    /// `client_id` (or `azp`).
    pub client_id: Option<Arc<str>>,
    pub kind: CallerKind,
    /// `exp`, seconds since the Unix epoch.
    pub expires_at: u64,
    /// The token carries the issuer's break-glass scope: the caller may override a
    /// patient's deny in an emergency (purpose `ETREAT`, with a justification).
    pub break_glass: bool,
}

impl VerifiedCaller {
    /// [`Scopes::authorize`], plus the launch context: `patient/` rules are only usable when
    /// the token names a patient.
    pub fn authorize(
        &self,
        interaction: Interaction,
        resource_type: &str,
    ) -> Result<Grant, AuthError> {
        self.with_patient_context(self.scopes.authorize(interaction, resource_type)?)
    }

    /// [`Scopes::authorize_access`], plus the launch context as in
    /// [`authorize`](VerifiedCaller::authorize).
    pub fn authorize_access(
        &self,
        access: Access,
        resource_type: &str,
    ) -> Result<Grant, AuthError> {
        self.with_patient_context(self.scopes.authorize_access(access, resource_type)?)
    }

    /// The purpose of this request: the caller's, else the site's `default`, else
    /// [`AuthError::PurposeRequired`] (403) for a site that requires one.
    pub fn purpose_or(&self, default: Option<PurposeOfUse>) -> Result<PurposeOfUse, AuthError> {
        self.purpose.or(default).ok_or(AuthError::PurposeRequired)
    }

    fn with_patient_context(&self, grant: Grant) -> Result<Grant, AuthError> {
        if self.patient.is_some() {
            return Ok(grant);
        }
        grant
            .without_patient_rules()
            .ok_or(AuthError::PatientContextMissing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(scope: &str, patient: Option<&str>) -> VerifiedCaller {
        VerifiedCaller {
            issuer: "https://idp".into(),
            subject: "s".into(),
            actor: None,
            organization: None,
            display: None,
            scopes: Arc::new(Scopes::parse(scope).0),
            purpose: None,
            patient: patient.map(Into::into),
            audiences: Arc::from([]),
            token_id: "t".into(),
            client_id: None,
            kind: CallerKind::System,
            expires_at: 0,
            break_glass: false,
        }
    }

    #[test]
    fn patient_scopes_without_patient_context_are_refused() {
        let c = caller("patient/Observation.rs", None);
        assert_eq!(
            c.authorize(Interaction::Search, "Observation").unwrap_err(),
            AuthError::PatientContextMissing
        );
        let c = caller("patient/Observation.rs", Some("123"));
        assert!(
            c.authorize(Interaction::Search, "Observation")
                .unwrap()
                .patient_confined()
        );
    }

    #[test]
    fn purpose_falls_back_to_the_site_default_or_is_required() {
        let mut c = caller("user/*.rs", None);
        let treat = PurposeOfUse::parse("TREAT");
        assert_eq!(c.purpose_or(treat).unwrap().code(), "TREAT");
        assert_eq!(c.purpose_or(None).unwrap_err(), AuthError::PurposeRequired);
        c.purpose = PurposeOfUse::parse("HPAYMT");
        assert_eq!(c.purpose_or(treat).unwrap().code(), "HPAYMT");
    }

    #[test]
    fn user_rules_survive_without_patient_context() {
        let c = caller("patient/Observation.rs user/Observation.rs", None);
        assert!(
            c.authorize_access(Access::Read, "Observation")
                .unwrap()
                .is_unrestricted()
        );
    }
}
