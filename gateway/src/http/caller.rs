//! The authenticate phase's credential check: who is calling, as a [`Caller`].
//!
//! A caller presents a bearer token (JWT) from one of the configured OpenID Connect issuers;
//! `assent-auth` verifies it (discovery, JWKS, signature, claims, verified-token cache) and
//! this module adds what the gateway needs around it: the stable, non-PHI caller id that the
//! request log and paging links use, and the admin check for `/admin`.
//! Tokens are never logged or stored; lookups go by the auth crate's hash of the token.
//!
//! Leaves out: what the caller's scopes allow for one request (`authorize.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use actix_web::http::header::{self, HeaderMap};
use assent_auth::{
    AuthError, CallerKind, ProviderEndpoints, VerifiedCaller, Verifier, bearer_token,
};
use sha2::{Digest, Sha256};

use crate::config::{AuthConfig, issuer_id};
use crate::http::error::GatewayError;
use crate::http::patient_context::{self, PatientContext};
use crate::store::Store;

/// The header where callers of issuers that allow it state their purpose of use.
pub const PURPOSE_HEADER: &str = "x-purpose-of-use";

/// A verified caller, as the decide and record phases see it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Stable, non-PHI name of the caller: `subject@issuer`, with the subject hashed when the
    /// caller acts as a patient. What paging links are bound to and the request log records.
    pub id: String,
    /// The verified token's claims: actor, organization, scopes, purpose, token id, kind.
    pub verified: VerifiedCaller,
    /// Whether the caller may use `/admin` (its subject is in its issuer's `admin_subjects`).
    pub is_admin: bool,
    /// The token's patient launch context, bound by its `aud` (THE rule,
    /// `patient_context.rs`); read through it, never from the bare claim.
    pub patient_context: PatientContext,
}

/// The trusted issuers, discovered at start.
pub struct Authenticator {
    verifier: Option<Verifier>,
    admins: HashMap<String, HashSet<String>>,
    names: Option<CallerNames>,
    /// Each issuer's network FHIR bases (its configured audiences).
    bases: HashMap<String, Vec<String>>,
    /// The configured site ids.
    sites: HashSet<String>,
}

/// The issuers could not be discovered: the gateway does not start.
#[derive(Debug, thiserror::Error)]
#[error("auth.issuers: {0}")]
pub struct AuthSetupError(#[from] pub assent_auth::ConfigError);

impl Authenticator {
    /// Discovers every configured issuer (OpenID discovery and JWKS over HTTP). With no issuer
    /// configured, every request is refused. An issuer's configured audiences are the
    /// gateway's network FHIR bases; each site's base under them, `{audience}/{site}` for every
    /// site of `sites`, is accepted as an audience too (a patient launch at one site).
    pub async fn discover(
        config: &AuthConfig,
        sites: &[&str],
    ) -> Result<Authenticator, AuthSetupError> {
        let bases: HashMap<String, Vec<String>> = config
            .issuers
            .iter()
            .map(|i| (issuer_id(&i.issuer), i.audience.clone()))
            .collect();
        let site_ids: HashSet<String> = sites.iter().map(|s| (*s).to_owned()).collect();
        let admins = config
            .issuers
            .iter()
            .map(|i| {
                (
                    issuer_id(&i.issuer),
                    i.admin_subjects.iter().cloned().collect(),
                )
            })
            .collect();
        if config.issuers.is_empty() {
            tracing::warn!(
                "no trusted issuer configured (auth.issuers): every FHIR request will be refused"
            );
            return Ok(Authenticator {
                verifier: None,
                admins,
                names: None,
                bases,
                sites: site_ids,
            });
        }
        let configs = config
            .issuers
            .iter()
            .map(|i| {
                let mut config = i.to_issuer_config();
                let site_bases: Vec<String> = i
                    .audience
                    .iter()
                    .flat_map(|base| {
                        let base = base.trim_end_matches('/');
                        sites.iter().map(move |site| format!("{base}/{site}"))
                    })
                    .collect();
                config.audience.extend(site_bases);
                config
            })
            .collect();
        let verifier = Verifier::discover(configs).await?;
        Ok(Authenticator {
            verifier: Some(verifier),
            admins,
            names: None,
            bases,
            sites: site_ids,
        })
    }

    /// From now on, the name each user caller's token gives is kept in `store` (for the
    /// console, beside the actor's id).
    pub fn keep_names(&mut self, store: Store) {
        self.names = Some(CallerNames {
            store,
            kept: Mutex::new(HashMap::new()),
        });
    }

    /// The caller presenting `headers`' bearer token (and `X-Purpose-Of-Use`, where allowed).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, GatewayError> {
        let authorization = match headers.get(header::AUTHORIZATION) {
            None => None,
            Some(value) => Some(value.to_str().map_err(|_| {
                GatewayError::Auth(AuthError::Malformed {
                    reason: "the Authorization header is not ASCII",
                })
            })?),
        };
        let token = bearer_token(authorization)?;
        let purpose = match headers.get(PURPOSE_HEADER) {
            None => None,
            Some(value) => Some(value.to_str().map_err(|_| {
                GatewayError::Auth(AuthError::PurposeUnknownInHeader {
                    code: "(not ASCII)".to_owned(),
                })
            })?),
        };
        let Some(verifier) = &self.verifier else {
            return Err(GatewayError::Auth(AuthError::WrongIssuer));
        };
        let verified = verifier.verify(token, purpose).await?;
        if let Some(names) = &self.names {
            names.note(&verified);
        }
        let is_admin = self
            .admins
            .get(verified.issuer.as_ref())
            .is_some_and(|subjects| subjects.contains(verified.subject.as_ref()));
        let bases = self
            .bases
            .get(verified.issuer.as_ref())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let patient_context =
            patient_context::bind(&verified, bases, |site| self.sites.contains(site));
        Ok(Caller {
            id: caller_id(&verified),
            verified,
            is_admin,
            patient_context,
        })
    }

    /// What discovery found for the first configured issuer (the one SMART clients are sent
    /// to), if any.
    pub fn endpoints(&self) -> Option<&ProviderEndpoints> {
        let verifier = self.verifier.as_ref()?;
        let first = verifier.issuers().next()?;
        verifier.endpoints(&first.issuer)
    }
}

/// The names user callers' tokens give, kept in the store when one is new or changed (a
/// lookup in memory per request otherwise; the write happens off the request's thread).
struct CallerNames {
    store: Store,
    /// The name last kept per actor.
    kept: Mutex<HashMap<Arc<str>, Arc<str>>>,
}

impl Caller {
    /// Who a receipt names as the actor: the token's actor (its `fhirUser`), else the caller's
    /// stable id.
    pub fn receipt_actor(&self) -> String {
        self.verified
            .actor
            .as_deref()
            .map(str::to_owned)
            .unwrap_or_else(|| self.id.clone())
    }
}

impl CallerNames {
    /// Actors remembered at most; past it the memory starts over (a name is then kept again).
    const REMEMBERED: usize = 10_000;

    fn note(&self, caller: &VerifiedCaller) {
        // A patient acting for themselves is named by their consents, not by their token.
        let (CallerKind::User, Some(actor), Some(display)) =
            (caller.kind, &caller.actor, &caller.display)
        else {
            return;
        };
        {
            let Ok(mut kept) = self.kept.lock() else {
                return;
            };
            if kept.get(actor) == Some(display) {
                return;
            }
            if kept.len() >= Self::REMEMBERED {
                kept.clear();
            }
            kept.insert(actor.clone(), display.clone());
        }
        let store = self.store.clone();
        let (actor, display) = (actor.clone(), display.clone());
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.put_caller_name(&actor, &display, now_ms) {
                tracing::warn!(error = %e, "a caller's display name could not be kept");
            }
        });
    }
}

/// The stable caller id: `subject@issuer`. A patient's subject may identify them, so it is
/// replaced by a hash prefix: no patient identifier in logs or the request log.
pub fn caller_id(caller: &VerifiedCaller) -> String {
    match caller.kind {
        CallerKind::Patient => {
            let digest = Sha256::digest(caller.subject.as_bytes());
            format!("sha256:{}@{}", hex::encode(&digest[..12]), caller.issuer)
        }
        CallerKind::User | CallerKind::System => {
            format!("{}@{}", caller.subject, caller.issuer)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(subject: &str, kind: CallerKind) -> VerifiedCaller {
        VerifiedCaller {
            issuer: "https://idp.example".into(),
            subject: subject.into(),
            actor: None,
            organization: None,
            display: None,
            scopes: Arc::new(assent_auth::Scopes::default()),
            purpose: None,
            patient: None,
            token_id: "t".into(),
            client_id: None,
            kind,
            expires_at: 0,
            break_glass: false,
            audiences: std::sync::Arc::from([]),
        }
    }

    #[test]
    fn caller_ids_are_issuer_scoped_and_hash_patient_subjects() {
        assert_eq!(
            caller_id(&verified("dr-alice", CallerKind::User)),
            "dr-alice@https://idp.example"
        );
        let patient = caller_id(&verified("patient-4711", CallerKind::Patient));
        assert!(!patient.contains("4711"), "{patient}");
        assert!(patient.starts_with("sha256:") && patient.ends_with("@https://idp.example"));
    }

    #[actix_web::test]
    async fn without_issuers_every_token_is_refused() {
        let auth = Authenticator::discover(&AuthConfig::default(), &[])
            .await
            .unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(
            auth.authenticate(&headers).await.unwrap_err().code(),
            "token-missing"
        );
        headers.insert(
            header::AUTHORIZATION,
            header::HeaderValue::from_static("Bearer a.b.c"),
        );
        assert_eq!(
            auth.authenticate(&headers).await.unwrap_err().code(),
            "token-wrong-issuer"
        );
    }
}
