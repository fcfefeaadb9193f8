//! The authenticate phase's credential check: who is calling, as a [`Caller`].
//!
//! Today a caller presents a static API key (`Authorization: Bearer …`), of which only the
//! SHA-256 is configured. OpenID Connect tokens join here as a second kind of credential.
//! Keys are never logged; lookups go by hash.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::header::{self, HeaderMap};
use sha2::{Digest, Sha256};

use crate::config::{AuthConfig, Role};
use crate::error::GatewayError;

/// Longest credential accepted, in bytes.
pub const MAX_CREDENTIAL_BYTES: usize = 8 * 1024;

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Stable name of the credential (the API key id): what paging links are bound to.
    pub id: String,
    /// The FHIR actor the caller acts as (`Practitioner/123`), if known.
    pub actor: Option<String>,
    pub roles: Vec<Role>,
}

impl Caller {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// The configured credentials, indexed by hash.
#[derive(Debug, Default)]
pub struct Callers {
    by_hash: HashMap<[u8; 32], Arc<Caller>>,
}

impl Callers {
    pub fn new(config: &AuthConfig) -> Callers {
        let by_hash = config
            .api_keys
            .iter()
            .filter_map(|key| {
                let digest: [u8; 32] = hex::decode(&key.sha256).ok()?.try_into().ok()?;
                let caller = Caller {
                    id: key.id.clone(),
                    actor: key.actor.clone(),
                    roles: key.roles.clone(),
                };
                Some((digest, Arc::new(caller)))
            })
            .collect();
        Callers { by_hash }
    }

    /// The caller presenting `headers`' bearer credential.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Caller>, GatewayError> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or(GatewayError::MissingCredentials)?;
        if value.len() > MAX_CREDENTIAL_BYTES {
            return Err(GatewayError::InvalidCredentials);
        }
        let value = value
            .to_str()
            .map_err(|_| GatewayError::InvalidCredentials)?;
        let (scheme, credential) = value
            .split_once(' ')
            .ok_or(GatewayError::InvalidCredentials)?;
        if !scheme.eq_ignore_ascii_case("bearer") || credential.trim().is_empty() {
            return Err(GatewayError::InvalidCredentials);
        }
        let digest: [u8; 32] = Sha256::digest(credential.trim().as_bytes()).into();
        self.by_hash
            .get(&digest)
            .cloned()
            .ok_or(GatewayError::InvalidCredentials)
    }
}

/// The hex SHA-256 of an API key, as configuration wants it.
pub fn api_key_sha256(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiKeyConfig;
    use actix_web::http::header::HeaderValue;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    #[test]
    fn api_keys_are_checked_by_hash() {
        let callers = Callers::new(&AuthConfig {
            api_keys: vec![ApiKeyConfig {
                id: "alice".into(),
                sha256: api_key_sha256("s3cret"),
                actor: Some("Practitioner/1".into()),
                roles: vec![Role::Clinician],
            }],
        });
        let alice = callers
            .authenticate(&headers(Some("Bearer s3cret")))
            .unwrap();
        assert_eq!(alice.id, "alice");
        assert!(alice.has_role(Role::Clinician));
        assert!(!alice.has_role(Role::Admin));
        assert_eq!(
            callers
                .authenticate(&headers(Some("bearer s3cret")))
                .unwrap()
                .id,
            "alice"
        );
        for bad in [
            "Bearer wrong",
            "Basic s3cret",
            "Bearer",
            "Bearer  ",
            "s3cret",
        ] {
            assert_eq!(
                callers
                    .authenticate(&headers(Some(bad)))
                    .unwrap_err()
                    .code(),
                "auth-invalid",
                "{bad}"
            );
        }
        assert_eq!(
            callers.authenticate(&headers(None)).unwrap_err().code(),
            "auth-missing"
        );
        let huge = format!("Bearer {}", "x".repeat(MAX_CREDENTIAL_BYTES));
        assert_eq!(
            callers
                .authenticate(&headers(Some(&huge)))
                .unwrap_err()
                .code(),
            "auth-invalid"
        );
    }
}
