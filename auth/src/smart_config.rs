//! SMART discovery documents the gateway serves, built from what OpenID discovery found:
//! the `/.well-known/smart-configuration` body and the CapabilityStatement `rest.security`
//! element (SMART `oauth-uris` extension).
//!
//! Leaves out: serving them (the gateway) and which FHIR version's CapabilityStatement they go
//! into (the element is the same in STU3 to R5).

use serde_json::{Value, json};

/// What OpenID discovery found for one issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEndpoints {
    pub issuer: String,
    pub jwks_uri: String,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub grant_types_supported: Vec<String>,
    pub token_endpoint_auth_methods_supported: Vec<String>,
    pub code_challenge_methods_supported: Vec<String>,
}

/// The scope forms the gateway enforces, for `scopes_supported`.
pub const SCOPES_SUPPORTED: &[&str] = &[
    "openid",
    "fhirUser",
    "launch/patient",
    "patient/*.rs",
    "user/*.rs",
    "system/*.rs",
    "patient/*.read",
    "user/*.read",
    "system/*.read",
];

impl ProviderEndpoints {
    pub(crate) fn from_discovery(document: &Value, jwks_uri: String) -> ProviderEndpoints {
        let text = |name: &str| {
            document
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let list = |name: &str| -> Vec<String> {
            document
                .get(name)
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        ProviderEndpoints {
            issuer: text("issuer").unwrap_or_default(),
            jwks_uri,
            authorization_endpoint: text("authorization_endpoint"),
            token_endpoint: text("token_endpoint"),
            grant_types_supported: list("grant_types_supported"),
            token_endpoint_auth_methods_supported: list("token_endpoint_auth_methods_supported"),
            code_challenge_methods_supported: list("code_challenge_methods_supported"),
        }
    }

    /// The `/.well-known/smart-configuration` document (SMART App Launch 2.x).
    pub fn smart_configuration(&self) -> Value {
        let mut capabilities = vec![
            "permission-v1",
            "permission-v2",
            "permission-patient",
            "permission-user",
            "sso-openid-connect",
        ];
        if self.authorization_endpoint.is_some() {
            capabilities.push("launch-standalone");
        }
        let methods = &self.token_endpoint_auth_methods_supported;
        if methods.iter().any(|m| m == "client_secret_basic") {
            capabilities.push("client-confidential-symmetric");
        }
        if methods.iter().any(|m| m == "private_key_jwt") {
            capabilities.push("client-confidential-asymmetric");
        }
        let grant_types = if self.grant_types_supported.is_empty() {
            vec!["authorization_code".to_owned()]
        } else {
            self.grant_types_supported.clone()
        };
        let mut document = json!({
            "issuer": self.issuer,
            "jwks_uri": self.jwks_uri,
            "grant_types_supported": grant_types,
            "token_endpoint_auth_methods_supported": methods,
            "scopes_supported": SCOPES_SUPPORTED,
            "response_types_supported": ["code"],
            "capabilities": capabilities,
            "code_challenge_methods_supported": ["S256"],
        });
        if let Some(object) = document.as_object_mut() {
            if let Some(token) = &self.token_endpoint {
                object.insert("token_endpoint".into(), Value::from(token.as_str()));
            }
            if let Some(authorize) = &self.authorization_endpoint {
                object.insert(
                    "authorization_endpoint".into(),
                    Value::from(authorize.as_str()),
                );
            }
        }
        document
    }

    /// The CapabilityStatement `rest.security` element: SMART-on-FHIR service and the
    /// `oauth-uris` extension with the token and authorize endpoints.
    pub fn capability_security(&self) -> Value {
        let mut uris = Vec::new();
        if let Some(token) = &self.token_endpoint {
            uris.push(json!({"url": "token", "valueUri": token}));
        }
        if let Some(authorize) = &self.authorization_endpoint {
            uris.push(json!({"url": "authorize", "valueUri": authorize}));
        }
        json!({
            "extension": [{
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": uris,
            }],
            "service": [{
                "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                    "code": "SMART-on-FHIR",
                }],
                "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)",
            }],
            "description": "Bearer tokens from a trusted OpenID Connect issuer; SMART App Launch v1 and v2 scopes.",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_name_the_discovered_endpoints() {
        let endpoints = ProviderEndpoints::from_discovery(
            &json!({
                "issuer": "https://idp",
                "token_endpoint": "https://idp/token",
                "authorization_endpoint": "https://idp/auth",
                "grant_types_supported": ["authorization_code", "client_credentials"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
            }),
            "https://idp/jwks".into(),
        );
        let smart = endpoints.smart_configuration();
        assert_eq!(smart["token_endpoint"], "https://idp/token");
        assert_eq!(smart["jwks_uri"], "https://idp/jwks");
        let caps: Vec<&str> = smart["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert!(caps.contains(&"permission-v2"));
        assert!(caps.contains(&"client-confidential-asymmetric"));
        let security = endpoints.capability_security();
        assert_eq!(
            security["extension"][0]["extension"][0],
            json!({"url": "token", "valueUri": "https://idp/token"})
        );
        assert_eq!(security["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
    }
}
