//! DEMO ONLY: a development identity provider for `assent demo`. It serves OpenID discovery,
//! a JWKS, a token endpoint that mints tokens for a handful of sample callers, and a browser
//! sign-in (authorization code with PKCE, for the compliance console) where one picks a
//! sample caller, with an ES256 key generated at start and never stored.
//!
//! It authenticates nobody: anyone who can reach it gets a token for any sample caller, but
//! only with that caller's own scopes ([`SampleCaller::allowed_scope`]): a clinician asking for
//! the audit role, break-glass or consent management is refused at the token endpoint
//! (`invalid_scope`), and the browser sign-in grants only what the picked caller may hold.
//! The gateway mounts it on loopback only, inside `demo` only, and the verifier reaches it
//! over HTTP through the same discovery code as a real provider.
//!
//! Leaves out: HTTP serving. [`DevIdentityProvider::handle`] takes a method, a path and a
//! form body and returns status, content type and body; the gateway wraps that in actix-web.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::config::{IssuerConfig, SigningAlgorithm};
use crate::error::ConfigError;
use crate::purpose::PurposeOfUse;
use crate::scopes::Scopes;

/// Lifetime of minted tokens.
pub const DEV_TOKEN_TTL_SECONDS: u64 = 3600;

/// A sample caller the development provider mints tokens for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleCaller {
    /// The `client_id` to ask for at the token endpoint; also the token's `sub`.
    pub name: &'static str,
    /// The user's name (the token's `name` claim), if a user.
    pub display: Option<&'static str>,
    /// `fhirUser`, if a user.
    pub actor: Option<&'static str>,
    pub organization: Option<&'static str>,
    /// Scopes granted when the request names none.
    pub default_scope: &'static str,
    /// Scopes it may be granted besides the default ones (see [`SampleCaller::refused_scope`]).
    pub extra_scope: &'static str,
    /// Purpose of use granted when the request names none.
    pub default_purpose: &'static str,
    pub description: &'static str,
}

impl SampleCaller {
    /// The first scope of `scope` (space-separated) this caller may not be granted, if any.
    /// A scope may be granted when it is one of the caller's default or extra scopes, or
    /// narrows one of their resource scopes: the same context and resource type, no more
    /// permissions, and every granular condition of the allowed scope kept. A wildcard covers
    /// only a wildcard: `user/*.rs` never grants `user/AuditEvent.rs` (the audit role) nor
    /// `user/Consent.cruds`, and role scopes (`assent/break-glass`) are granted only by name.
    pub fn refused_scope<'s>(&self, scope: &'s str) -> Option<&'s str> {
        let allowed_text = format!("{} {}", self.default_scope, self.extra_scope);
        let allowed: Vec<&str> = allowed_text.split(' ').filter(|s| !s.is_empty()).collect();
        let (allowed_scopes, _) = Scopes::from_list(allowed.iter().copied());
        scope.split(' ').filter(|s| !s.is_empty()).find(|asked| {
            if allowed.contains(asked) {
                return false;
            }
            let (parsed, warnings) = Scopes::parse(asked);
            let [asked] = parsed.resource_scopes() else {
                return true;
            };
            !warnings.is_empty()
                || !allowed_scopes.resource_scopes().iter().any(|a| {
                    a.context == asked.context
                        && a.resource_type == asked.resource_type
                        && a.permissions.contains(asked.permissions)
                        && a.conditions.iter().all(|c| asked.conditions.contains(c))
                })
        })
    }

    /// The scopes of `scope` this caller may be granted (what a browser sign-in grants).
    pub fn narrow(&self, scope: &str) -> String {
        scope
            .split(' ')
            .filter(|s| !s.is_empty() && self.refused_scope(s).is_none())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The sample callers.
pub const SAMPLE_CALLERS: &[SampleCaller] = &[
    SampleCaller {
        name: "dr-alice",
        display: Some("Alice Adams"),
        actor: Some("Practitioner/dr-alice"),
        organization: Some("Organization/st-mary"),
        default_scope: "openid fhirUser user/*.rs",
        extra_scope: "launch/patient patient/*.rs",
        default_purpose: "TREAT",
        description: "physician at St Mary's, treatment",
    },
    SampleCaller {
        name: "dr-bob",
        display: Some("Bob Brown"),
        actor: Some("Practitioner/dr-bob"),
        organization: Some("Organization/city-clinic"),
        default_scope: "openid fhirUser user/*.rs assent/break-glass",
        extra_scope: "launch/patient patient/*.rs",
        default_purpose: "ETREAT",
        description: "emergency physician at City Clinic, emergency treatment (break-glass)",
    },
    SampleCaller {
        name: "nurse-carol",
        display: Some("Carol Clark"),
        actor: Some("PractitionerRole/nurse-carol"),
        organization: Some("Organization/st-mary"),
        default_scope: "openid fhirUser user/Patient.rs user/Observation.rs",
        extra_scope: "launch/patient patient/Patient.rs patient/Observation.rs",
        default_purpose: "TREAT",
        description: "nurse at St Mary's, patients and observations only",
    },
    SampleCaller {
        name: "researcher-dan",
        display: Some("Dan Davis"),
        actor: Some("Practitioner/researcher-dan"),
        organization: Some("Organization/uni-lab"),
        default_scope: "user/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
        extra_scope: "",
        default_purpose: "HRESCH",
        description: "researcher, laboratory observations only, research",
    },
    SampleCaller {
        name: "privacy-officer",
        display: Some("Pat Price"),
        actor: Some("Practitioner/privacy-officer"),
        organization: Some("Organization/st-mary"),
        default_scope: "openid fhirUser user/AuditEvent.rs",
        extra_scope: "",
        default_purpose: "HOPERAT",
        description: "privacy officer at St Mary's, reads the audit log",
    },
    SampleCaller {
        name: "billing-service",
        display: None,
        actor: None,
        organization: Some("Organization/st-mary"),
        default_scope: "system/*.rs",
        extra_scope: "",
        default_purpose: "HPAYMT",
        description: "backend service (no user), payment",
    },
    SampleCaller {
        name: "jane-doe",
        display: Some("Jane Doe"),
        actor: Some("Patient/p1"),
        organization: None,
        default_scope: "openid fhirUser launch/patient patient/*.rs patient/Consent.cruds",
        extra_scope: "",
        default_purpose: "PATRQT",
        description: "patient Jane Doe (St Mary's Patient/p1): the patient portal",
    },
    SampleCaller {
        name: "john-roe",
        display: Some("John Roe"),
        actor: Some("Patient/p2"),
        organization: None,
        default_scope: "openid fhirUser launch/patient patient/*.rs patient/Consent.cruds",
        extra_scope: "",
        default_purpose: "PATRQT",
        description: "patient John Roe (North General's Patient/p2; a network patient once linked): the patient portal",
    },
];

/// The patient launch context the browser sign-in gives a sample patient (SMART standalone
/// patient launch): `jane-doe` is St Mary's `Patient/p1` (the token's `aud` is St Mary's
/// FHIR base). Another binding (a network patient, whose id is only known once the network
/// index has linked it) is set at run time ([`DevIdentityProvider::bind_patient`]).
pub const SAMPLE_PATIENT_LAUNCHES: &[(&str, &str, &str)] = &[
    ("jane-doe", "st-mary", "p1"),
    ("john-roe", "north-general", "p2"),
];

/// A patient launch context to mint: the patient `id` at `site` (the token's `aud` is that
/// site's FHIR base), or a network patient (`site: None`: the network base).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatientLaunch<'a> {
    pub site: Option<&'a str>,
    pub id: &'a str,
}

impl<'a> PatientLaunch<'a> {
    /// Patient `id` of site `site`.
    pub fn at(site: &'a str, id: &'a str) -> PatientLaunch<'a> {
        PatientLaunch {
            site: Some(site),
            id,
        }
    }

    /// Network patient `id` (`n-…`).
    pub fn network(id: &'a str) -> PatientLaunch<'a> {
        PatientLaunch { site: None, id }
    }
}

/// A response of the development provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// A redirect's target (`Location`).
    pub location: Option<String>,
}

/// Lifetime of an authorization code.
const CODE_TTL_SECONDS: u64 = 120;

/// An authorization code handed to a browser, waiting to be exchanged at the token endpoint.
struct PendingCode {
    caller: &'static str,
    /// The sample patient's launch: `(site, id)`, site `None` for a network patient.
    launch: Option<(Option<String>, String)>,
    client_id: String,
    redirect_uri: String,
    /// `BASE64URL(SHA-256(code_verifier))` (PKCE S256).
    challenge: String,
    scope: String,
    nonce: Option<String>,
    expires_at: u64,
}

/// DEMO ONLY: see the module documentation.
pub struct DevIdentityProvider {
    issuer: String,
    audience: String,
    key: EncodingKey,
    kid: String,
    jwks: String,
    discovery: String,
    codes: Mutex<HashMap<String, PendingCode>>,
    /// Sample patients whose browser sign-in launches another patient than
    /// [`SAMPLE_PATIENT_LAUNCHES`]' (sample name → site, `None` for a network patient, and
    /// id), set at run time.
    bound_patients: Mutex<HashMap<String, (Option<String>, String)>>,
}

impl DevIdentityProvider {
    /// A provider whose issuer URL is `issuer` (where the gateway mounts it, e.g.
    /// `http://127.0.0.1:8081`; paths given to [`handle`](Self::handle) are relative to it)
    /// minting tokens for `audience` (the gateway's FHIR base URL). Generates a fresh key.
    pub fn new(
        issuer: impl Into<String>,
        audience: impl Into<String>,
    ) -> Result<DevIdentityProvider, ConfigError> {
        let issuer = issuer.into().trim_end_matches('/').to_owned();
        let audience = audience.into();
        let failed = |reason: &str| ConfigError::Invalid {
            issuer: issuer.clone(),
            reason: format!("development provider: {reason}"),
        };
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .and_then(|pair| pair.to_pkcs8v1())
            .map_err(|_| failed("key generation failed"))?;
        let key = EncodingKey::from_ec_der(pkcs8.as_ref());
        let mut kid_bytes = [0u8; 8];
        rng.fill(&mut kid_bytes)
            .map_err(|_| failed("no randomness"))?;
        let kid = format!("dev-{}", hex(&kid_bytes));
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256)
            .map_err(|e| failed(&format!("public key export failed: {e}")))?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(KeyAlgorithm::ES256);
        let jwks = serde_json::to_string(&JwkSet { keys: vec![jwk] })
            .map_err(|e| failed(&format!("JWKS serialisation failed: {e}")))?;
        let discovery = json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/authorize"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "grant_types_supported": ["client_credentials", "authorization_code"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": ["openid", "fhirUser", "launch/patient", "patient/*.rs", "user/*.rs", "system/*.rs", crate::config::DEFAULT_BREAK_GLASS_SCOPE],
        })
        .to_string();
        Ok(DevIdentityProvider {
            issuer,
            audience,
            key,
            kid,
            jwks,
            discovery,
            codes: Mutex::new(HashMap::new()),
            bound_patients: Mutex::new(HashMap::new()),
        })
    }

    /// From now on, the browser sign-in of sample patient `sample` launches network patient
    /// `network_id` (the token's `aud` is the network base), instead of its site patient.
    pub fn bind_network_patient(&self, sample: &str, network_id: &str) {
        self.bind_patient(sample, None, network_id);
    }

    /// From now on, the browser sign-in of sample patient `sample` launches patient `id` of
    /// `site` (`None`: network patient `id`), instead of [`SAMPLE_PATIENT_LAUNCHES`]' (the
    /// demo binds its samples to its own sites' records).
    pub fn bind_patient(&self, sample: &str, site: Option<&str>, id: &str) {
        if let Ok(mut bound) = self.bound_patients.lock() {
            bound.insert(sample.to_owned(), (site.map(str::to_owned), id.to_owned()));
        }
    }

    /// The launch context the browser sign-in gives sample `name`: a patient bound at run
    /// time, else its site patient ([`SAMPLE_PATIENT_LAUNCHES`]), else none.
    fn sign_in_launch(&self, name: &str) -> Option<(Option<String>, String)> {
        let bound = self
            .bound_patients
            .lock()
            .ok()
            .and_then(|bound| bound.get(name).cloned());
        if bound.is_some() {
            return bound;
        }
        SAMPLE_PATIENT_LAUNCHES
            .iter()
            .find(|(sample, _, _)| *sample == name)
            .map(|(_, site, id)| (Some((*site).to_owned()), (*id).to_owned()))
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The [`IssuerConfig`] that trusts this provider: ES256 only, purpose header allowed.
    pub fn issuer_config(&self) -> IssuerConfig {
        let mut config = IssuerConfig::new(self.issuer.clone(), self.audience.clone());
        config.algorithms = vec![SigningAlgorithm::Es256];
        config.allow_purpose_header = true;
        config
    }

    /// Answers one request. `path` is relative to the issuer URL; `form` is the
    /// `application/x-www-form-urlencoded` body (empty for GET). Token responses must be
    /// sent with `Cache-Control: no-store`.
    ///
    /// - `GET /.well-known/openid-configuration`, `GET /jwks`
    /// - `POST /token` with `grant_type=client_credentials&client_id=<sample>` and optional
    ///   `scope`, `purpose` (HL7 v3 PurposeOfUse code), `patient` (a Patient id: adds the
    ///   launch context) and `aud` (SMART: the FHIR base launched against, `{audience}/{site}`
    ///   for a site's patient; the network base `{audience}` by default)
    /// - `POST /token` with `grant_type=authorization_code`, `code`, `redirect_uri`,
    ///   `client_id` and `code_verifier` (PKCE): the access token and an ID token
    /// - `GET /authorize?response_type=code&client_id=…&redirect_uri=…&state=…&nonce=…&
    ///   code_challenge=…&code_challenge_method=S256&scope=…` (`form` is then the query): a
    ///   page to pick a sample caller; with `login_as={sample}`, a redirect to `redirect_uri`
    ///   with a one-time code
    /// - `GET /`: a plain-text list of the sample callers
    pub fn handle(&self, method: &str, path: &str, form: &str) -> DevResponse {
        match (method, path) {
            ("GET", "/authorize") => self.authorize(form),
            ("GET", "/.well-known/openid-configuration") => {
                json_response(200, self.discovery.clone())
            }
            ("GET", "/jwks") => DevResponse {
                status: 200,
                content_type: "application/jwk-set+json",
                body: self.jwks.clone(),
                location: None,
            },
            ("POST", "/token") => match self.token_response(form) {
                Ok(body) => json_response(200, body),
                Err((error, description)) => json_response(
                    400,
                    json!({"error": error, "error_description": description}).to_string(),
                ),
            },
            ("GET", "/") => DevResponse {
                status: 200,
                content_type: "text/plain; charset=utf-8",
                body: self.help(),
                location: None,
            },
            _ => json_response(404, json!({"error": "not_found"}).to_string()),
        }
    }

    /// Mints a token for sample caller `name` with `scope` as given (what `POST /token` does
    /// once it has checked the scope against the caller's own), with the patient launch
    /// context `patient`, if any: its `aud` is the FHIR base the launch names (a site's base
    /// `{audience}/{site}`, or the network base `{audience}`; the network base without a
    /// patient). Not reachable over HTTP as such: tests and benchmarks, which hold the
    /// provider, make the tokens they need with it.
    pub fn mint(
        &self,
        name: &str,
        scope: Option<&str>,
        purpose: Option<&str>,
        patient: Option<PatientLaunch<'_>>,
    ) -> Result<String, (&'static str, String)> {
        let aud = match patient.and_then(|p| p.site) {
            Some(site) => self.site_base(site)?,
            None => self.audience.clone(),
        };
        let claims = self.sample_claims(
            name,
            scope,
            purpose,
            patient.map(|p| p.id),
            Value::from(aud),
        )?;
        self.sign(&claims)
    }

    /// Mints a token for sample caller `name` whose `aud` is `audiences` exactly as given
    /// (several bases, or none of this provider's), with the bare `patient` claim, if any:
    /// for tests of how the gateway binds a launch context. Not reachable over HTTP.
    pub fn mint_with_audiences(
        &self,
        name: &str,
        scope: Option<&str>,
        patient: Option<&str>,
        audiences: &[&str],
    ) -> Result<String, (&'static str, String)> {
        let claims = self.sample_claims(name, scope, None, patient, Value::from(audiences))?;
        self.sign(&claims)
    }

    /// The FHIR base of `site`: `{audience}/{site}`, for a plain site id.
    fn site_base(&self, site: &str) -> Result<String, (&'static str, String)> {
        let plain = !site.is_empty()
            && site.len() <= 64
            && site
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !plain {
            return Err(("invalid_request", "aud names no site of ours".to_owned()));
        }
        Ok(format!("{}/{site}", self.audience))
    }

    /// The `aud` a token request asks for (SMART: the FHIR base the app launches against):
    /// the network base `{audience}` or a site's base `{audience}/{site}`; the network base
    /// when it names none.
    fn asked_audience(&self, aud: Option<&str>) -> Result<String, (&'static str, String)> {
        match aud {
            None => Ok(self.audience.clone()),
            Some(aud) if aud.trim_end_matches('/') == self.audience => Ok(self.audience.clone()),
            Some(aud) => match aud
                .trim_end_matches('/')
                .strip_prefix(self.audience.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
            {
                Some(site) => self.site_base(site),
                None => Err((
                    "invalid_request",
                    format!("aud must be {} or a site's base under it", self.audience),
                )),
            },
        }
    }

    /// TESTS ONLY: a token of sample caller `name` with `claims` set over the sample's (a
    /// hostile `sub`, say), signed like any other; not reachable over HTTP.
    #[cfg(feature = "testing")]
    pub fn mint_with_claims(
        &self,
        name: &str,
        claims: &serde_json::Map<String, Value>,
    ) -> Result<String, (&'static str, String)> {
        let mut sample =
            self.sample_claims(name, None, None, None, Value::from(self.audience.as_str()))?;
        if let Some(object) = sample.as_object_mut() {
            for (claim, value) in claims {
                object.insert(claim.clone(), value.clone());
            }
        }
        self.sign(&sample)
    }

    /// The claims of a token for sample caller `name`.
    fn sample_claims(
        &self,
        name: &str,
        scope: Option<&str>,
        purpose: Option<&str>,
        patient: Option<&str>,
        aud: Value,
    ) -> Result<Value, (&'static str, String)> {
        let sample = SAMPLE_CALLERS
            .iter()
            .find(|s| s.name == name)
            .ok_or(("invalid_client", format!("no sample caller {name:?}")))?;
        let purpose = purpose.unwrap_or(sample.default_purpose);
        let purpose = PurposeOfUse::parse(purpose).ok_or((
            "invalid_request",
            "purpose is not an HL7 v3 PurposeOfUse code".to_owned(),
        ))?;
        if let Some(patient) = patient {
            let id_ok = !patient.is_empty()
                && patient.len() <= 64
                && patient
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !id_ok {
                return Err(("invalid_request", "patient is not a FHIR id".to_owned()));
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut jti = [0u8; 16];
        SystemRandom::new()
            .fill(&mut jti)
            .map_err(|_| ("server_error", "no randomness".to_owned()))?;
        let mut claims = json!({
            "iss": self.issuer,
            "sub": sample.name,
            "aud": aud,
            "client_id": sample.name,
            "iat": now,
            "exp": now + DEV_TOKEN_TTL_SECONDS,
            "jti": hex(&jti),
            "scope": scope.unwrap_or(sample.default_scope),
            "purpose_of_use": purpose.code(),
        });
        let object = claims
            .as_object_mut()
            .ok_or(("server_error", "claims are not an object".to_owned()))?;
        if let Some(actor) = sample.actor {
            object.insert("fhirUser".into(), Value::from(actor));
        }
        if let Some(display) = sample.display {
            object.insert("name".into(), Value::from(display));
        }
        if let Some(organization) = sample.organization {
            object.insert("organization".into(), Value::from(organization));
        }
        if let Some(patient) = patient {
            object.insert("patient".into(), Value::from(patient));
        }
        Ok(claims)
    }

    fn sign(&self, claims: &Value) -> Result<String, (&'static str, String)> {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("at+jwt".to_owned());
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &self.key).map_err(|e| ("server_error", e.to_string()))
    }

    /// `GET /authorize`: the sign-in page, or (with `login_as`) the redirect with a code.
    fn authorize(&self, query: &str) -> DevResponse {
        let params: HashMap<String, String> =
            assent_fhir::query::pairs(query).into_iter().collect();
        let get = |n: &str| params.get(n).map(String::as_str).unwrap_or_default();
        let page = |status: u16, body: String| DevResponse {
            status,
            content_type: "text/html; charset=utf-8",
            body,
            location: None,
        };
        let redirect = match url::Url::parse(get("redirect_uri")) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            _ => return page(400, "<p>redirect_uri is not an http(s) URL</p>".into()),
        };
        let challenge = get("code_challenge");
        if get("response_type") != "code"
            || get("client_id").is_empty()
            || get("state").is_empty()
            || get("code_challenge_method") != "S256"
            || !(43..=128).contains(&challenge.len())
        {
            return page(
                400,
                "<p>an authorization-code request with state and PKCE (S256) is required</p>"
                    .into(),
            );
        }
        let Some(name) = params.get("login_as") else {
            let mut body = String::from(
                "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
                 <title>Sign in (development identity provider)</title></head><body>\
                 <h1>Sign in</h1><p>DEMO ONLY: this provider authenticates nobody. \
                 Pick a sample caller.</p><ul>",
            );
            for s in SAMPLE_CALLERS.iter().filter(|s| s.actor.is_some()) {
                let mut link = url::form_urlencoded::Serializer::new(String::new());
                for (n, v) in &params {
                    link.append_pair(n, v);
                }
                link.append_pair("login_as", s.name);
                body.push_str(&format!(
                    "<li><a id=\"as-{name}\" href=\"/authorize?{href}\">{name}</a>: {desc}</li>",
                    name = s.name,
                    href = html_escape(&link.finish()),
                    desc = html_escape(s.description),
                ));
            }
            body.push_str("</ul></body></html>");
            return page(200, body);
        };
        let Some(caller) = SAMPLE_CALLERS.iter().find(|s| s.name == name.as_str()) else {
            return page(400, "<p>no such sample caller</p>".into());
        };
        let mut code_bytes = [0u8; 24];
        if SystemRandom::new().fill(&mut code_bytes).is_err() {
            return page(500, "<p>no randomness</p>".into());
        }
        let code = hex(&code_bytes);
        // Only what the picked caller may hold: asking for more is not granted it.
        let scope = params
            .get("scope")
            .map(|asked| caller.narrow(asked))
            .unwrap_or_else(|| caller.default_scope.to_owned());
        if let Ok(mut codes) = self.codes.lock() {
            let now = now_seconds();
            codes.retain(|_, c| c.expires_at > now);
            codes.insert(
                code.clone(),
                PendingCode {
                    caller: caller.name,
                    launch: self.sign_in_launch(caller.name),
                    client_id: get("client_id").to_owned(),
                    redirect_uri: get("redirect_uri").to_owned(),
                    challenge: challenge.to_owned(),
                    scope,
                    nonce: params.get("nonce").cloned(),
                    expires_at: now + CODE_TTL_SECONDS,
                },
            );
        }
        let mut target = redirect;
        target
            .query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", get("state"));
        DevResponse {
            status: 302,
            content_type: "text/plain; charset=utf-8",
            body: String::new(),
            location: Some(target.to_string()),
        }
    }

    /// The authorization-code grant: one use per code, same client and redirect, PKCE S256.
    fn code_response(
        &self,
        form: &HashMap<String, String>,
    ) -> Result<String, (&'static str, String)> {
        let get = |n: &str| form.get(n).map(String::as_str).unwrap_or_default();
        let invalid = |why: &str| ("invalid_grant", why.to_owned());
        let pending = self
            .codes
            .lock()
            .ok()
            .and_then(|mut codes| codes.remove(get("code")))
            .ok_or_else(|| invalid("unknown or used code"))?;
        if pending.expires_at <= now_seconds() {
            return Err(invalid("the code has expired"));
        }
        if pending.client_id != get("client_id") || pending.redirect_uri != get("redirect_uri") {
            return Err(invalid(
                "client_id or redirect_uri differ from the authorization request",
            ));
        }
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, get("code_verifier").as_bytes());
        use base64::Engine as _;
        let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref());
        if computed != pending.challenge {
            return Err(invalid("the PKCE code_verifier does not match"));
        }
        let launch = pending.launch.as_ref().map(|(site, id)| PatientLaunch {
            site: site.as_deref(),
            id,
        });
        let access = self.mint(pending.caller, Some(&pending.scope), None, launch)?;
        let now = now_seconds();
        let mut claims = json!({
            "iss": self.issuer,
            "sub": pending.caller,
            "aud": pending.client_id,
            "iat": now,
            "exp": now + DEV_TOKEN_TTL_SECONDS,
            "auth_time": now,
        });
        if let Some(nonce) = pending.nonce {
            claims["nonce"] = Value::from(nonce);
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let id_token =
            encode(&header, &claims, &self.key).map_err(|e| ("server_error", e.to_string()))?;
        Ok(json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": DEV_TOKEN_TTL_SECONDS,
            "scope": pending.scope,
            "id_token": id_token,
        })
        .to_string())
    }

    fn token_response(&self, form: &str) -> Result<String, (&'static str, String)> {
        let fields: HashMap<String, String> = assent_fhir::query::pairs(form).into_iter().collect();
        if fields.get("grant_type").map(String::as_str) == Some("authorization_code") {
            return self.code_response(&fields);
        }
        let mut grant_type = None;
        let mut client_id = None;
        let mut scope = None;
        let mut purpose = None;
        let mut patient = None;
        let mut aud = None;
        for (name, value) in assent_fhir::query::pairs(form) {
            let slot = match name.as_str() {
                "grant_type" => &mut grant_type,
                "client_id" => &mut client_id,
                "scope" => &mut scope,
                "purpose" => &mut purpose,
                "patient" => &mut patient,
                "aud" => &mut aud,
                _ => continue,
            };
            *slot = Some(value);
        }
        if grant_type.as_deref() != Some("client_credentials") {
            return Err((
                "unsupported_grant_type",
                "only client_credentials is supported".to_owned(),
            ));
        }
        let client_id = client_id.ok_or(("invalid_client", "client_id is required".to_owned()))?;
        if let (Some(asked), Some(sample)) = (
            scope.as_deref(),
            SAMPLE_CALLERS.iter().find(|s| s.name == client_id),
        ) && let Some(refused) = sample.refused_scope(asked)
        {
            return Err((
                "invalid_scope",
                format!(
                    "{} may not be granted {refused:?}; its scopes are {:?} and {:?}",
                    sample.name, sample.default_scope, sample.extra_scope
                ),
            ));
        }
        let aud = self.asked_audience(aud.as_deref())?;
        let claims = self.sample_claims(
            &client_id,
            scope.as_deref(),
            purpose.as_deref(),
            patient.as_deref(),
            Value::from(aud),
        )?;
        let token = self.sign(&claims)?;
        let granted = scope.unwrap_or_else(|| {
            SAMPLE_CALLERS
                .iter()
                .find(|s| s.name == client_id)
                .map(|s| s.default_scope.to_owned())
                .unwrap_or_default()
        });
        Ok(json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": DEV_TOKEN_TTL_SECONDS,
            "scope": granted,
        })
        .to_string())
    }

    fn help(&self) -> String {
        let mut text = format!(
            "Assent development identity provider (DEMO ONLY: it authenticates nobody).\n\
             Get a token:\n  curl -s -d grant_type=client_credentials -d client_id=dr-alice {}/token\n\
             Optional form fields: scope (within the caller's own), purpose (HL7 v3 PurposeOfUse),\n\
             patient (a Patient id: the launch context) and aud (the FHIR base launched against:\n\
             a site's base {}/{{site}} for a site's patient, else the network base {}).\n\
             Sample callers:\n",
            self.issuer, self.audience, self.audience
        );
        for s in SAMPLE_CALLERS {
            text.push_str(&format!(
                "  {:<16} {} (scope {:?}, may also ask for {:?}, purpose {})\n",
                s.name, s.description, s.default_scope, s.extra_scope, s.default_purpose
            ));
        }
        text
    }
}

fn json_response(status: u16, body: String) -> DevResponse {
    DevResponse {
        status,
        content_type: "application/json",
        body,
        location: None,
    }
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> DevIdentityProvider {
        DevIdentityProvider::new("http://127.0.0.1:9", "http://127.0.0.1:8/fhir").unwrap()
    }

    #[test]
    fn serves_discovery_and_jwks() {
        let p = provider();
        let d = p.handle("GET", "/.well-known/openid-configuration", "");
        assert_eq!(d.status, 200);
        let d: Value = serde_json::from_str(&d.body).unwrap();
        assert_eq!(d["issuer"], "http://127.0.0.1:9");
        assert_eq!(d["jwks_uri"], "http://127.0.0.1:9/jwks");
        let j: Value = serde_json::from_str(&p.handle("GET", "/jwks", "").body).unwrap();
        assert_eq!(j["keys"][0]["kty"], "EC");
        assert_eq!(j["keys"][0]["alg"], "ES256");
        assert!(j["keys"][0].get("d").is_none(), "private part leaked");
        assert_eq!(p.handle("GET", "/nope", "").status, 404);
    }

    #[test]
    fn token_endpoint_mints_for_samples_only() {
        let p = provider();
        let ok = p.handle(
            "POST",
            "/token",
            "grant_type=client_credentials&client_id=dr-alice&purpose=TREAT&patient=pat-1",
        );
        assert_eq!(ok.status, 200, "{}", ok.body);
        let body: Value = serde_json::from_str(&ok.body).unwrap();
        assert_eq!(body["token_type"], "Bearer");
        let bad = |form: &str| p.handle("POST", "/token", form);
        assert_eq!(bad("grant_type=password&client_id=dr-alice").status, 400);
        assert_eq!(
            bad("grant_type=client_credentials&client_id=mallory").status,
            400
        );
        assert_eq!(
            bad("grant_type=client_credentials&client_id=dr-alice&purpose=NOSY").status,
            400
        );
        assert_eq!(
            bad("grant_type=client_credentials&client_id=dr-alice&patient=a/b").status,
            400
        );
        // SMART `aud`: the base launched against, the network base or a site's under it.
        let aud_of = |form: &str| {
            let r = p.handle("POST", "/token", form);
            assert_eq!(r.status, 200, "{}", r.body);
            let body: Value = serde_json::from_str(&r.body).unwrap();
            let token = body["access_token"].as_str().unwrap().to_owned();
            let payload = token.split('.').nth(1).unwrap().to_owned();
            use base64::Engine as _;
            let claims: Value = serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(payload)
                    .unwrap(),
            )
            .unwrap();
            claims["aud"].clone()
        };
        let base = p.audience.clone();
        assert_eq!(
            aud_of("grant_type=client_credentials&client_id=dr-alice&patient=p1"),
            Value::from(base.clone())
        );
        let form = format!(
            "grant_type=client_credentials&client_id=dr-alice&patient=p1&aud={base}/st-mary"
        );
        assert_eq!(aud_of(&form), Value::from(format!("{base}/st-mary")));
        for aud in [
            "https://elsewhere.example/fhir",
            &format!("{base}x/st-mary"),
        ] {
            let form = format!("grant_type=client_credentials&client_id=dr-alice&aud={aud}");
            assert_eq!(bad(&form).status, 400, "{aud}");
        }
        let minted = p
            .mint(
                "dr-alice",
                None,
                None,
                Some(PatientLaunch::at("north", "p1")),
            )
            .unwrap();
        assert!(!minted.is_empty());
        assert!(
            p.mint("dr-alice", None, None, Some(PatientLaunch::at("a/b", "p1")))
                .is_err()
        );
    }

    /// Adversarial: a clinician asks the token endpoint for the audit role, break-glass or
    /// consent management; each is refused, while its own scopes (and narrower ones) are not.
    #[test]
    fn a_clinician_asking_for_the_audit_role_or_break_glass_is_refused() {
        let p = provider();
        let ask = |client: &str, scope: &str| {
            let form = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("grant_type", "client_credentials")
                .append_pair("client_id", client)
                .append_pair("scope", scope)
                .finish();
            p.handle("POST", "/token", &form)
        };
        for scope in [
            "openid user/AuditEvent.rs",
            "user/AuditEvent.r",
            "system/AuditEvent.rs",
            "openid fhirUser user/*.rs assent/break-glass",
            "assent/consent-admin",
            "user/Consent.cruds",
            "user/*.cruds",
            "system/*.rs",
            "user/*.*",
            "nonsense/scope",
        ] {
            let refused = ask("dr-alice", scope);
            assert_eq!(refused.status, 400, "{scope}: {}", refused.body);
            let body: Value = serde_json::from_str(&refused.body).unwrap();
            assert_eq!(body["error"], "invalid_scope", "{scope}");
            assert!(!body.to_string().contains("access_token"));
        }
        // The nurse may not widen to every type, nor the researcher drop the lab condition.
        assert_eq!(ask("nurse-carol", "user/*.rs").status, 400);
        assert_eq!(ask("researcher-dan", "user/Observation.rs").status, 400);
        // Own scopes, and narrower ones, are granted.
        for (client, scope) in [
            ("dr-alice", "openid fhirUser user/*.rs"),
            ("dr-alice", "user/*.r"),
            ("dr-alice", "patient/*.rs"),
            ("dr-bob", "user/*.rs assent/break-glass"),
            ("nurse-carol", "user/Observation.rs"),
            ("privacy-officer", "openid user/AuditEvent.rs"),
            (
                "researcher-dan",
                "user/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
            ),
        ] {
            let granted = ask(client, scope);
            assert_eq!(granted.status, 200, "{client} {scope}: {}", granted.body);
            let body: Value = serde_json::from_str(&granted.body).unwrap();
            assert_eq!(body["scope"], scope);
        }
    }

    /// A PKCE code verifier and its S256 challenge.
    fn pkce() -> (&'static str, String) {
        use base64::Engine as _;
        let verifier = "a-verifier-of-at-least-forty-three-characters-long-xyz";
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
        let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref());
        (verifier, challenge)
    }

    /// Adversarial: signed in in the browser as a clinician while the console asks for the audit
    /// role, the token carries only what the clinician may hold.
    #[test]
    fn browser_sign_in_grants_only_the_picked_callers_own_scopes() {
        use base64::Engine as _;
        let p = provider();
        let (verifier, challenge) = pkce();
        let query = format!(
            "response_type=code&client_id=console&redirect_uri=http%3A%2F%2F127.0.0.1%3A1%2Fcb\
             &state=s1&scope=openid+fhirUser+user%2FAuditEvent.rs+assent%2Fbreak-glass\
             &code_challenge={challenge}&code_challenge_method=S256&login_as=dr-alice"
        );
        let signed = p.handle("GET", "/authorize", &query);
        assert_eq!(signed.status, 302);
        let location = url::Url::parse(signed.location.as_deref().unwrap()).unwrap();
        let params: HashMap<String, String> = location.query_pairs().into_owned().collect();
        let ok = p.handle(
            "POST",
            "/token",
            &format!(
                "grant_type=authorization_code&code={}&client_id=console\
                 &redirect_uri=http%3A%2F%2F127.0.0.1%3A1%2Fcb&code_verifier={verifier}",
                params["code"]
            ),
        );
        assert_eq!(ok.status, 200, "{}", ok.body);
        let body: Value = serde_json::from_str(&ok.body).unwrap();
        assert_eq!(body["scope"], "openid fhirUser");
        let access = body["access_token"].as_str().unwrap();
        let payload = access.split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["scope"], "openid fhirUser");
    }

    #[test]
    fn browser_sign_in_needs_state_and_pkce_and_codes_are_single_use() {
        let p = provider();
        let (verifier, challenge) = pkce();
        let query = format!(
            "response_type=code&client_id=console&redirect_uri=http%3A%2F%2F127.0.0.1%3A1%2Fcb\
             &state=s1&nonce=n1&scope=openid+user%2FAuditEvent.rs&code_challenge={challenge}\
             &code_challenge_method=S256"
        );
        let page = p.handle("GET", "/authorize", &query);
        assert_eq!(page.status, 200);
        assert!(page.body.contains("as-privacy-officer"), "{}", page.body);
        let no_pkce = query.replace("S256", "plain");
        assert_eq!(p.handle("GET", "/authorize", &no_pkce).status, 400);
        let signed = p.handle(
            "GET",
            "/authorize",
            &format!("{query}&login_as=privacy-officer"),
        );
        assert_eq!(signed.status, 302);
        let location = url::Url::parse(signed.location.as_deref().unwrap()).unwrap();
        let params: HashMap<String, String> = location.query_pairs().into_owned().collect();
        assert_eq!(params["state"], "s1");
        let exchange = |code: &str, verifier: &str| {
            p.handle(
                "POST",
                "/token",
                &format!(
                    "grant_type=authorization_code&code={code}&client_id=console\
                     &redirect_uri=http%3A%2F%2F127.0.0.1%3A1%2Fcb&code_verifier={verifier}"
                ),
            )
        };
        let wrong = exchange(
            &params["code"],
            "another-verifier-of-at-least-forty-three-chars",
        );
        assert_eq!(wrong.status, 400, "a wrong verifier spends the code");
        let signed = p.handle(
            "GET",
            "/authorize",
            &format!("{query}&login_as=privacy-officer"),
        );
        let location = url::Url::parse(signed.location.as_deref().unwrap()).unwrap();
        let params: HashMap<String, String> = location.query_pairs().into_owned().collect();
        let ok = exchange(&params["code"], verifier);
        assert_eq!(ok.status, 200, "{}", ok.body);
        let body: Value = serde_json::from_str(&ok.body).unwrap();
        assert!(body["id_token"].is_string() && body["access_token"].is_string());
        assert_eq!(body["scope"], "openid user/AuditEvent.rs");
        assert_eq!(
            exchange(&params["code"], verifier).status,
            400,
            "single use"
        );
    }
}
