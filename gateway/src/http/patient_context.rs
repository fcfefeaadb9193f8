//! THE rule of which patient a token's SMART patient launch context is: [`bind`], once per
//! verified token, and [`PatientContext::patient_at`], what it is at one site. Every reader
//! of the launch context asks here: the scopes concern (`proxy/scopes.rs`, through the
//! pipeline), the consent API's rule (`consent_access.rs`, through `api/consent.rs`).
//!
//! A bare `patient` claim names a site-local id, and the same id may be someone else at
//! another site. The claim is bound by the token's `aud` (SMART: the FHIR base the app
//! launched against). The configured audiences of the token's issuer are the gateway's
//! network FHIR base(s) (`https://gw.example/fhir`); `{audience}/{site}` is site `{site}`'s
//! base, and accepted as an audience too (`Authenticator`).
//!
//! - `aud` names exactly one site base → bound to that site's patient ([`Bound::Site`]);
//! - `aud` names the network base and no site base, and the claim is a network patient id
//!   (`n-…`, [`NetworkIndex::is_network_id`]) → bound to that network patient
//!   ([`Bound::Network`]);
//! - otherwise (no base of ours, two site bases, the network base with a site-local id, a
//!   claim that is not a plain id) → unbound: refused wherever the context is read (403
//!   `patient-context-unbound`), for FHIR requests and consent calls alike.
//!
//! At site S: a context bound to another site's patient is refused (never honoured); a
//! network-bound context is the one local id at S linked to it; no linked id, or several
//! (duplicate records at one site), is refused: the gateway does not guess which one.
//!
//! Tokens without a patient claim have no context ([`PatientContext::None`]), as before.

use assent_auth::VerifiedCaller;
use assent_fhir::SitePatient;

use crate::http::error::GatewayError;
use crate::services::network::{NETWORK_SITE, NetworkIndex};

/// What a token's launch context is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// A patient of one site.
    Site(SitePatient),
    /// A network patient (`n-…`).
    Network(String),
}

/// A token's patient launch context, bound (or not) by its `aud`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PatientContext {
    /// The token has no patient claim.
    #[default]
    None,
    Bound(Bound),
    /// The token has a patient claim the rule cannot bind: refused wherever it is read.
    Unbound,
}

/// Why a launch context is refused (the diagnostics; the code is `patient-context-unbound`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ContextRefusal {
    #[error(
        "the token's patient context is bound to no patient: its aud must name one site's FHIR base, or the network base with a network patient id"
    )]
    Unbound,
    #[error("the token's patient context is another site's patient")]
    OtherSite,
    #[error("the token's network patient has no record linked at this site")]
    NotLinked,
    #[error("the token's network patient has several records linked at this site")]
    SeveralLinked,
}

/// THE rule: binds `caller`'s patient claim by its `aud` values, where `bases` are the
/// network FHIR bases of its issuer (its configured audiences) and `sites` the configured
/// site ids.
pub fn bind<'a>(
    caller: &VerifiedCaller,
    bases: &[String],
    sites: impl Fn(&str) -> bool + 'a,
) -> PatientContext {
    let Some(claim) = caller.patient.as_deref() else {
        return PatientContext::None;
    };
    let id = claim.strip_prefix("Patient/").unwrap_or(claim);
    if !plain_id(id) {
        return PatientContext::Unbound;
    }
    let mut network = false;
    let mut named_sites: Vec<&str> = Vec::new();
    for aud in caller.audiences.iter() {
        let aud = aud.trim_end_matches('/');
        for base in bases {
            let base = base.trim_end_matches('/');
            if aud == base {
                network = true;
            } else if let Some(site) = aud
                .strip_prefix(base)
                .and_then(|rest| rest.strip_prefix('/'))
                && site != NETWORK_SITE
                && sites(site)
                && !named_sites.contains(&site)
            {
                named_sites.push(site);
            }
        }
    }
    match named_sites.as_slice() {
        [site] => PatientContext::Bound(Bound::Site(SitePatient::new(*site, id))),
        [] if network && NetworkIndex::is_network_id(id) => {
            PatientContext::Bound(Bound::Network(id.to_owned()))
        }
        _ => PatientContext::Unbound,
    }
}

/// A FHIR id: 1 to 64 of `[A-Za-z0-9.-]`.
fn plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

impl PatientContext {
    /// The patient this context is at `site`: `None` without a context; refused when unbound,
    /// another site's patient, or a network patient with not exactly one record at `site`.
    pub fn patient_at(
        &self,
        site: &str,
        network: &NetworkIndex,
    ) -> Result<Option<String>, GatewayError> {
        match self {
            PatientContext::None => Ok(None),
            PatientContext::Unbound => Err(ContextRefusal::Unbound.into()),
            PatientContext::Bound(Bound::Site(p)) if p.site == site => Ok(Some(p.id.clone())),
            PatientContext::Bound(Bound::Site(_)) => Err(ContextRefusal::OtherSite.into()),
            PatientContext::Bound(Bound::Network(n)) => {
                let ids = network
                    .local_ids_at(n, site)
                    .map_err(|_| GatewayError::StoreUnavailable)?;
                match ids.as_slice() {
                    [id] => Ok(Some(id.clone())),
                    [] => Err(ContextRefusal::NotLinked.into()),
                    _ => Err(ContextRefusal::SeveralLinked.into()),
                }
            }
        }
    }

    /// The patient identities whose consents this context manages: its site patient; or its
    /// network patient (`network/Patient/{n}`) and every site patient linked to it. `None`
    /// without a context; refused when unbound.
    pub fn manages(
        &self,
        network: &NetworkIndex,
    ) -> Result<Option<Vec<SitePatient>>, GatewayError> {
        match self {
            PatientContext::None => Ok(None),
            PatientContext::Unbound => Err(ContextRefusal::Unbound.into()),
            PatientContext::Bound(Bound::Site(p)) => Ok(Some(vec![p.clone()])),
            PatientContext::Bound(Bound::Network(n)) => {
                let mut patients = vec![SitePatient::new(NETWORK_SITE, n.clone())];
                let members = network
                    .members(n)
                    .map_err(|_| GatewayError::StoreUnavailable)?;
                patients.extend(members.into_iter().map(|l| l.patient));
                Ok(Some(patients))
            }
        }
    }

    /// What the context is bound to (`None` without one); refused when unbound. For the
    /// network level, whose legs then bind it at each site.
    pub fn bound(&self) -> Result<Option<&Bound>, GatewayError> {
        match self {
            PatientContext::None => Ok(None),
            PatientContext::Bound(bound) => Ok(Some(bound)),
            PatientContext::Unbound => Err(ContextRefusal::Unbound.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use assent_auth::{CallerKind, Scopes};

    use super::*;

    const NID: &str = "n-0123456789abcdef0123456789abcdef01234567";

    fn caller(patient: Option<&str>, audiences: &[&str]) -> VerifiedCaller {
        VerifiedCaller {
            issuer: "https://idp".into(),
            subject: "s".into(),
            actor: None,
            organization: None,
            display: None,
            scopes: Arc::new(Scopes::default()),
            purpose: None,
            patient: patient.map(Into::into),
            audiences: audiences.iter().map(|a| Arc::from(*a)).collect(),
            token_id: "t".into(),
            client_id: None,
            kind: CallerKind::Patient,
            expires_at: 0,
            break_glass: false,
        }
    }

    /// ADV: every way of naming a base the rule must bind, and every one it must refuse.
    #[test]
    fn a_launch_context_is_bound_by_the_base_it_was_issued_for() {
        let bases = vec![
            "https://gw.example/fhir".to_owned(),
            "https://alt.example/fhir/".to_owned(),
        ];
        let sites = |s: &str| ["st-mary", "north-general"].contains(&s);
        let site = |s: &str, id: &str| PatientContext::Bound(Bound::Site(SitePatient::new(s, id)));
        let network = PatientContext::Bound(Bound::Network(NID.to_owned()));
        let cases: Vec<(Option<&str>, Vec<&str>, PatientContext)> = vec![
            (None, vec!["https://gw.example/fhir"], PatientContext::None),
            (
                Some("p1"),
                vec!["https://gw.example/fhir/st-mary"],
                site("st-mary", "p1"),
            ),
            (
                Some("Patient/p1"),
                vec!["https://gw.example/fhir/st-mary/"],
                site("st-mary", "p1"),
            ),
            (
                Some("p1"),
                vec!["https://alt.example/fhir/north-general"],
                site("north-general", "p1"),
            ),
            // One site base beside the network base: that site.
            (
                Some("p1"),
                vec!["https://gw.example/fhir", "https://gw.example/fhir/st-mary"],
                site("st-mary", "p1"),
            ),
            (Some(NID), vec!["https://gw.example/fhir"], network.clone()),
            (Some(NID), vec!["https://alt.example/fhir"], network),
            // Refused: the network base with a local id, two site bases, no base of ours,
            // an unknown site, the network pseudo-site, a prefix that is not a path segment,
            // a claim that is not a plain id.
            (
                Some("p1"),
                vec!["https://gw.example/fhir"],
                PatientContext::Unbound,
            ),
            (
                Some("p1"),
                vec![
                    "https://gw.example/fhir/st-mary",
                    "https://gw.example/fhir/north-general",
                ],
                PatientContext::Unbound,
            ),
            (
                Some("p1"),
                vec!["https://elsewhere.example/fhir/st-mary"],
                PatientContext::Unbound,
            ),
            (
                Some("p1"),
                vec!["https://gw.example/fhir/nowhere"],
                PatientContext::Unbound,
            ),
            (
                Some("p1"),
                vec!["https://gw.example/fhir/network"],
                PatientContext::Unbound,
            ),
            (
                Some("p1"),
                vec!["https://gw.example/fhirx/st-mary"],
                PatientContext::Unbound,
            ),
            (
                Some("p1"),
                vec!["https://gw.example/fhir/st-mary/extra"],
                PatientContext::Unbound,
            ),
            (
                Some("st-mary/Patient/p1"),
                vec!["https://gw.example/fhir/st-mary"],
                PatientContext::Unbound,
            ),
            (
                Some("../p1"),
                vec!["https://gw.example/fhir/st-mary"],
                PatientContext::Unbound,
            ),
            (
                Some("n-XYZ"),
                vec!["https://gw.example/fhir"],
                PatientContext::Unbound,
            ),
            (Some("p1"), vec![], PatientContext::Unbound),
        ];
        for (patient, auds, expected) in cases {
            assert_eq!(
                bind(&caller(patient, &auds), &bases, sites),
                expected,
                "{patient:?} {auds:?}"
            );
        }
    }
}
