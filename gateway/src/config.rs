//! Configuration: one TOML file, then `ASSENT_…` environment overrides, loaded once into
//! plain structs and validated. Every error names the key at fault.
//!
//! Leaves out: reading secrets from vaults, reloading (a restart applies a new file).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use assent_auth::{ClaimNames, IssuerConfig, PurposeOfUse, SigningAlgorithm};
use assent_consent::SitePolicy;
use assent_fhir::FhirVersion;
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize};

/// Top-level keys that environment variables may override (`ASSENT_LISTEN`,
/// `ASSENT_DATABASE_URL`, `ASSENT_SITES__ST_MARY__UPSTREAM`, …). Other `ASSENT_` variables
/// (such as the test suite's `ASSENT_TEST_DATABASE_URL`) are not configuration.
pub const ENV_KEYS: &[&str] = &[
    "listen",
    "public_url",
    "database_url",
    "gateway_id",
    "max_body_bytes",
    "paging",
    "log",
    "auth",
    "ledger",
    "fhir",
    "sites",
];

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the gateway listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The gateway's public base URL as clients reach it (`https://fhir.example.org`).
    /// Defaults to `http://{listen}`. Links the gateway writes start with it; the `Host`
    /// header is never trusted for that.
    #[serde(default)]
    pub public_url: Option<url::Url>,
    /// `postgres://…` for PostgreSQL; anything else is a SQLite file path
    /// (`sqlite://path` or a plain path).
    #[serde(default = "default_database_url")]
    pub database_url: String,
    /// This gateway's name in logs and, later, receipts.
    #[serde(default = "default_gateway_id")]
    pub gateway_id: String,
    /// Largest request body accepted, for sites that do not set their own.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    #[serde(default)]
    pub paging: PagingConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub ledger: LedgerConfig,
    #[serde(default)]
    pub fhir: FhirConfig,
    /// Sites by id. The id is the `{site}` of `/fhir/{site}/…`.
    #[serde(default)]
    pub sites: BTreeMap<String, SiteConfig>,
}

/// FHIR version negotiation (`[fhir]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FhirConfig {
    /// The FHIR version answered to a client that names none (no `fhirVersion` parameter in
    /// `Accept` or `_format`): `STU3`, `R4`, `R4B`, `R5` (or `3.0`, `4.0`, `4.3`, `5.0`).
    /// When absent, each site answers in its own version, untranslated.
    #[serde(
        default,
        deserialize_with = "deserialize_optional_version",
        serialize_with = "serialize_optional_version"
    )]
    pub default_version: Option<FhirVersion>,
}

/// The consent ledger. Today the embedded ledger in the gateway's store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// The consortium key (hex, at least 32 bytes) that turns patient and practitioner
    /// identifiers into the keyed hashes the ledger holds. Every member of a consortium uses
    /// the same key. When absent, one is made at first start and kept in the store.
    #[serde(default)]
    pub consortium_key_hex: Option<String>,
    /// The 32-byte Ed25519 seed (hex) that signs the embedded ledger's blocks. When absent,
    /// one is made at first start and kept in the store.
    #[serde(default)]
    pub node_key_hex: Option<String>,
    /// Subjects (`subject@issuer` caller ids) that may manage consents through `/consent`,
    /// besides callers whose scopes grant writing `Consent`.
    #[serde(default)]
    pub consent_admins: Vec<String>,
}

/// Signed paging links.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagingConfig {
    /// Key that signs paging tokens, at least 32 bytes, hex-encoded. Replicas behind one
    /// load balancer must share it. When absent a random key is made at start, and links
    /// from before a restart stop working.
    #[serde(default)]
    pub secret_hex: Option<String>,
    /// How long a paging link stays valid.
    #[serde(default = "default_page_ttl")]
    pub ttl_secs: u64,
}

impl Default for PagingConfig {
    fn default() -> Self {
        PagingConfig {
            secret_hex: None,
            ttl_secs: default_page_ttl(),
        }
    }
}

/// Logging.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `json` (default) or `text`.
    #[serde(default = "default_log_format")]
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `assent_gateway=debug`.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// One line per FHIR request (no patient identifiers).
    #[serde(default = "default_true")]
    pub access_log: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: default_log_format(),
            level: default_log_level(),
            access_log: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

/// Who may call the gateway: bearer tokens (JWTs) from trusted OpenID Connect issuers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Trusted token issuers. Every FHIR request needs a token from one of them; with none,
    /// every FHIR request is refused (401).
    #[serde(default)]
    pub issuers: Vec<IssuerSettings>,
    /// Static API keys were removed: kept only to name the key when an old file has them.
    #[serde(default, skip_serializing)]
    pub api_keys: Option<figment::value::Value>,
}

/// One trusted OpenID Connect issuer (`[[auth.issuers]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSettings {
    /// The issuer identifier, exactly as in tokens' `iss` and its discovery document.
    /// `https`, or `http` on a loopback address (development only).
    pub issuer: url::Url,
    /// Accepted `aud` values (usually the gateway's FHIR base URL); a token must name one.
    pub audience: Vec<String>,
    /// Accepted signing algorithms: `RS256`, `ES256`, `EdDSA` (never `none` or HMAC).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds (at most 300).
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
    /// Token claims read for the caller's attributes.
    #[serde(default)]
    pub claims: ClaimSettings,
    /// Whether callers may state their purpose of use in an `X-Purpose-Of-Use` header.
    #[serde(default)]
    pub allow_purpose_header: bool,
    /// At most one JWKS refetch per this many seconds when tokens name unknown keys.
    #[serde(default = "default_refetch_secs")]
    pub jwks_refetch_min_interval_secs: u64,
    /// Token subjects (`sub`) of this issuer that may use `/admin`.
    #[serde(default)]
    pub admin_subjects: Vec<String>,
}

/// Claim names read from tokens; the defaults follow SMART App Launch.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimSettings {
    /// The acting user as a FHIR reference.
    #[serde(default = "default_actor_claim")]
    pub actor: String,
    /// The actor's organization.
    #[serde(default = "default_organization_claim")]
    pub organization: String,
    /// The HL7 v3 PurposeOfUse code.
    #[serde(default = "default_purpose_claim")]
    pub purpose: String,
    /// The patient launch context.
    #[serde(default = "default_patient_claim")]
    pub patient: String,
}

impl Default for ClaimSettings {
    fn default() -> Self {
        ClaimSettings {
            actor: default_actor_claim(),
            organization: default_organization_claim(),
            purpose: default_purpose_claim(),
            patient: default_patient_claim(),
        }
    }
}

impl IssuerSettings {
    /// The auth crate's configuration for this issuer. Call after [`Config::validate`].
    pub fn to_issuer_config(&self) -> IssuerConfig {
        let mut config = IssuerConfig::new(issuer_id(&self.issuer), String::new());
        config.audience = self.audience.clone();
        config.algorithms = self
            .algorithms
            .iter()
            .filter_map(|a| SigningAlgorithm::from_jose(a))
            .collect();
        config.leeway = Duration::from_secs(self.leeway_secs);
        config.claims = ClaimNames {
            actor: self.claims.actor.clone(),
            organization: self.claims.organization.clone(),
            purpose: self.claims.purpose.clone(),
            patient: self.claims.patient.clone(),
        };
        config.allow_purpose_header = self.allow_purpose_header;
        config.jwks_refetch_min_interval = Duration::from_secs(self.jwks_refetch_min_interval_secs);
        config
    }
}

/// The issuer identifier as tokens carry it: the configured URL without the trailing slash
/// that URL parsing adds to a bare host.
pub fn issuer_id(url: &url::Url) -> String {
    let text = url.as_str();
    if url.path() == "/" && url.query().is_none() {
        text.trim_end_matches('/').to_owned()
    } else {
        text.to_owned()
    }
}

/// One hospital FHIR server behind the gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Upstream FHIR base URL (`https://fhir.st-mary.example/r4`).
    pub upstream: url::Url,
    /// The FHIR version the site speaks.
    #[serde(
        deserialize_with = "deserialize_from_str",
        serialize_with = "serialize_version"
    )]
    pub fhir_version: FhirVersion,
    /// What applies when no consent speaks: `opt-in` (deny) or `opt-out` (permit).
    #[serde(
        deserialize_with = "deserialize_policy",
        serialize_with = "serialize_policy"
    )]
    pub default_policy: SitePolicy,
    /// Whole-request timeout towards the upstream.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Connect timeout towards the upstream.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Largest request body for this site; the gateway-wide limit when absent.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// Largest upstream response body the gateway will buffer to rewrite or filter.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    #[serde(default)]
    pub upstream_auth: UpstreamAuth,
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerConfig,
    /// HL7 v3 PurposeOfUse code assumed when a request states none (`TREAT`, …).
    #[serde(default)]
    pub default_purpose: Option<String>,
    /// Refuse (403 `purpose-required`) a request that states no purpose of use. Excludes
    /// `default_purpose`.
    #[serde(default)]
    pub require_purpose: bool,
}

impl SiteConfig {
    /// The site's default purpose of use. Call after [`Config::validate`].
    pub fn default_purpose(&self) -> Option<PurposeOfUse> {
        self.default_purpose
            .as_deref()
            .and_then(PurposeOfUse::parse)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

/// How the gateway authenticates to a site.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum UpstreamAuth {
    #[default]
    None,
    /// A static bearer token.
    Bearer { token: String },
    /// OAuth 2.0 client credentials (RFC 6749 §4.4); the token is cached until it expires.
    ClientCredentials {
        token_url: url::Url,
        client_id: String,
        client_secret: String,
        #[serde(default)]
        scope: Option<String>,
    },
    /// Mutual TLS: a client certificate and key (PEM), and the CA that signs the upstream.
    Mtls {
        cert_file: PathBuf,
        key_file: PathBuf,
        #[serde(default)]
        ca_file: Option<PathBuf>,
    },
}

/// A site that keeps failing is cut off for a while and answers at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures (connection errors, timeouts, 5xx) that open the circuit.
    #[serde(default = "default_cb_failures")]
    pub failures: u32,
    /// How long the circuit stays open before one trial request is let through.
    #[serde(default = "default_cb_open_ms")]
    pub open_ms: u64,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            failures: default_cb_failures(),
            open_ms: default_cb_open_ms(),
        }
    }
}

/// A configuration that could not be loaded; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(String),
    #[error("invalid value for key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl Config {
    /// Loads `path`, then the `ASSENT_…` overrides of the process environment, and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// Loads `path`, then the `ASSENT_…` overrides among `vars`, and validates. A variable
    /// `ASSENT_A__B` sets key `a.b`; its value is read as TOML would read it (`1234` is a
    /// number, `true` a boolean, anything else a string).
    pub fn load_with_env(
        path: &Path,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        if !path.exists() {
            return Err(ConfigError::Load(format!(
                "configuration file {} does not exist",
                path.display()
            )));
        }
        let mut figment = Figment::new().merge(Toml::file(path));
        for (name, value) in vars {
            let Some(rest) = name.strip_prefix("ASSENT_") else {
                continue;
            };
            let key = rest.to_ascii_lowercase().replace("__", ".");
            let top = key.split('.').next().unwrap_or_default();
            if !ENV_KEYS.contains(&top) {
                continue;
            }
            let value = value
                .parse::<figment::value::Value>()
                .unwrap_or_else(|never| match never {});
            figment = figment.merge(Serialized::default(&key, value));
        }
        Self::from_figment(figment)
    }

    /// Parses a TOML document (no environment), for tests and `check-config` of a string.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::new().merge(Toml::string(text)))
    }

    /// Builds from any serialisable value (tests build configuration from a map).
    pub fn from_value<T: Serialize>(value: T) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::new().merge(Serialized::defaults(value)))
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(|e| {
            // figment's message names the key path (`for key "sites.a.upstream"`).
            let mut messages: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
            messages.dedup();
            ConfigError::Load(messages.join("; "))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: value ranges and relations between keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(u) = &self.public_url
            && !matches!(u.scheme(), "http" | "https")
        {
            return Err(ConfigError::invalid("public_url", "must be http or https"));
        }
        if self.database_url.trim().is_empty() {
            return Err(ConfigError::invalid("database_url", "must not be empty"));
        }
        if self.max_body_bytes == 0 {
            return Err(ConfigError::invalid("max_body_bytes", "must be above 0"));
        }
        if let Some(secret) = &self.paging.secret_hex {
            match hex::decode(secret) {
                Ok(bytes) if bytes.len() >= 32 => {}
                Ok(_) => {
                    return Err(ConfigError::invalid(
                        "paging.secret_hex",
                        "must be at least 32 bytes (64 hex digits)",
                    ));
                }
                Err(_) => {
                    return Err(ConfigError::invalid("paging.secret_hex", "must be hex"));
                }
            }
        }
        for (key, value, exact) in [
            (
                "ledger.consortium_key_hex",
                &self.ledger.consortium_key_hex,
                false,
            ),
            ("ledger.node_key_hex", &self.ledger.node_key_hex, true),
        ] {
            if let Some(value) = value {
                match hex::decode(value) {
                    Ok(bytes) if bytes.len() == 32 || (!exact && bytes.len() > 32) => {}
                    Ok(_) if exact => {
                        return Err(ConfigError::invalid(
                            key,
                            "must be 32 bytes (64 hex digits)",
                        ));
                    }
                    Ok(_) => {
                        return Err(ConfigError::invalid(
                            key,
                            "must be at least 32 bytes (64 hex digits)",
                        ));
                    }
                    Err(_) => return Err(ConfigError::invalid(key, "must be hex")),
                }
            }
        }
        if self.paging.ttl_secs == 0 {
            return Err(ConfigError::invalid("paging.ttl_secs", "must be above 0"));
        }
        self.validate_auth()?;
        for (id, site) in &self.sites {
            let at = |field: &str| format!("sites.{id}.{field}");
            if !is_valid_site_id(id) {
                return Err(ConfigError::invalid(
                    format!("sites.{id}"),
                    "site ids are 1-64 characters of a-z, 0-9 and '-'",
                ));
            }
            if !matches!(site.upstream.scheme(), "http" | "https") {
                return Err(ConfigError::invalid(
                    at("upstream"),
                    "must be http or https",
                ));
            }
            if site.upstream.query().is_some() || site.upstream.fragment().is_some() {
                return Err(ConfigError::invalid(
                    at("upstream"),
                    "must not carry a query or fragment",
                ));
            }
            if site.timeout_ms == 0 || site.connect_timeout_ms == 0 {
                return Err(ConfigError::invalid(at("timeout_ms"), "must be above 0"));
            }
            if site.max_body_bytes == Some(0) {
                return Err(ConfigError::invalid(
                    at("max_body_bytes"),
                    "must be above 0",
                ));
            }
            if site.circuit_breaker.failures == 0 {
                return Err(ConfigError::invalid(
                    at("circuit_breaker.failures"),
                    "must be above 0",
                ));
            }
            if let Some(code) = &site.default_purpose {
                if PurposeOfUse::parse(code).is_none() {
                    return Err(ConfigError::invalid(
                        at("default_purpose"),
                        format!(
                            "`{code}` is not an HL7 v3 PurposeOfUse code (TREAT, ETREAT, HPAYMT, HOPERAT, HRESCH, PUBHLTH, …)"
                        ),
                    ));
                }
                if site.require_purpose {
                    return Err(ConfigError::invalid(
                        at("require_purpose"),
                        "cannot be set with default_purpose (the default always supplies a purpose)",
                    ));
                }
            }
            if let UpstreamAuth::Mtls {
                cert_file,
                key_file,
                ca_file,
            } = &site.upstream_auth
            {
                for (name, file) in [("cert_file", Some(cert_file)), ("key_file", Some(key_file))]
                    .into_iter()
                    .chain([("ca_file", ca_file.as_ref())])
                {
                    if let Some(file) = file
                        && !file.exists()
                    {
                        return Err(ConfigError::invalid(
                            at(&format!("upstream_auth.{name}")),
                            format!("file {} does not exist", file.display()),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        if self.auth.api_keys.is_some() {
            return Err(ConfigError::invalid(
                "auth.api_keys",
                "static API keys are no longer accepted; configure [[auth.issuers]] (OpenID Connect)",
            ));
        }
        for (i, issuer) in self.auth.issuers.iter().enumerate() {
            let at = |field: &str| format!("auth.issuers[{i}].{field}");
            let loopback = match issuer.issuer.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(a)) => a.is_loopback(),
                Some(url::Host::Ipv6(a)) => a.is_loopback(),
                None => false,
            };
            match issuer.issuer.scheme() {
                "https" => {}
                "http" if loopback => {}
                _ => {
                    return Err(ConfigError::invalid(
                        at("issuer"),
                        "must be https (http only on a loopback address)",
                    ));
                }
            }
            if issuer.issuer.query().is_some() || issuer.issuer.fragment().is_some() {
                return Err(ConfigError::invalid(
                    at("issuer"),
                    "must not carry a query or fragment",
                ));
            }
            if self.auth.issuers[..i]
                .iter()
                .any(|other| issuer_id(&other.issuer) == issuer_id(&issuer.issuer))
            {
                return Err(ConfigError::invalid(at("issuer"), "configured twice"));
            }
            if issuer.audience.is_empty() || issuer.audience.iter().any(|a| a.trim().is_empty()) {
                return Err(ConfigError::invalid(
                    at("audience"),
                    "must name at least one non-empty audience",
                ));
            }
            if issuer.algorithms.is_empty() {
                return Err(ConfigError::invalid(
                    at("algorithms"),
                    "must allow at least one algorithm",
                ));
            }
            if let Some(bad) = issuer
                .algorithms
                .iter()
                .find(|a| SigningAlgorithm::from_jose(a).is_none())
            {
                return Err(ConfigError::invalid(
                    at("algorithms"),
                    format!("`{bad}` is not accepted (RS256, ES256 or EdDSA)"),
                ));
            }
            if issuer.leeway_secs > 300 {
                return Err(ConfigError::invalid(
                    at("leeway_secs"),
                    "must be at most 300",
                ));
            }
            if issuer.jwks_refetch_min_interval_secs == 0 {
                return Err(ConfigError::invalid(
                    at("jwks_refetch_min_interval_secs"),
                    "must be above 0",
                ));
            }
            let claims = &issuer.claims;
            for (name, value) in [
                ("actor", &claims.actor),
                ("organization", &claims.organization),
                ("purpose", &claims.purpose),
                ("patient", &claims.patient),
            ] {
                if value.trim().is_empty() {
                    return Err(ConfigError::invalid(
                        at(&format!("claims.{name}")),
                        "must not be empty",
                    ));
                }
            }
            if issuer.admin_subjects.iter().any(|s| s.is_empty()) {
                return Err(ConfigError::invalid(
                    at("admin_subjects"),
                    "must not hold an empty subject",
                ));
            }
        }
        Ok(())
    }

    /// The public base URL, without a trailing slash, for a server listening on `bound`.
    pub fn public_base_for(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(u) => u.as_str().trim_end_matches('/').to_owned(),
            None => format!("http://{bound}"),
        }
    }
}

/// Site ids appear in URLs and metric labels: keep them to a safe alphabet.
pub fn is_valid_site_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn deserialize_from_str<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

fn serialize_version<S: serde::Serializer>(v: &FhirVersion, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.name())
}

fn deserialize_optional_version<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<FhirVersion>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    s.map(|s| s.parse().map_err(serde::de::Error::custom))
        .transpose()
}

fn serialize_optional_version<S: serde::Serializer>(
    v: &Option<FhirVersion>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_str(v.name()),
        None => s.serialize_none(),
    }
}

fn deserialize_policy<'de, D: Deserializer<'de>>(d: D) -> Result<SitePolicy, D::Error> {
    let s = String::deserialize(d)?;
    match s.as_str() {
        "opt-in" => Ok(SitePolicy::OptIn),
        "opt-out" => Ok(SitePolicy::OptOut),
        other => Err(serde::de::Error::custom(format!(
            "unknown policy `{other}` (expected `opt-in` or `opt-out`)"
        ))),
    }
}

fn serialize_policy<S: serde::Serializer>(p: &SitePolicy, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.as_str())
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_database_url() -> String {
    "assent.db".to_owned()
}
fn default_gateway_id() -> String {
    "assent".to_owned()
}
fn default_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_max_response_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_page_ttl() -> u64 {
    3600
}
fn default_log_format() -> LogFormat {
    LogFormat::Json
}
fn default_log_level() -> String {
    "info".to_owned()
}
fn default_algorithms() -> Vec<String> {
    ["RS256", "ES256", "EdDSA"].map(str::to_owned).to_vec()
}
fn default_leeway_secs() -> u64 {
    30
}
fn default_refetch_secs() -> u64 {
    30
}
fn default_actor_claim() -> String {
    "fhirUser".to_owned()
}
fn default_organization_claim() -> String {
    "organization".to_owned()
}
fn default_purpose_claim() -> String {
    "purpose_of_use".to_owned()
}
fn default_patient_claim() -> String {
    "patient".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_timeout_ms() -> u64 {
    30_000
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_cb_failures() -> u32 {
    5
}
fn default_cb_open_ms() -> u64 {
    30_000
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        listen = "127.0.0.1:9000"
        database_url = "/tmp/x.db"
        [sites.st-mary]
        upstream = "http://127.0.0.1:7000/fhir"
        fhir_version = "R4"
        default_policy = "opt-out"
    "#;

    #[test]
    fn loads_a_minimal_file() {
        let c = Config::from_toml(GOOD).unwrap();
        let site = &c.sites["st-mary"];
        assert_eq!(site.fhir_version, FhirVersion::R4);
        assert_eq!(site.default_policy, SitePolicy::OptOut);
        assert_eq!(site.timeout(), Duration::from_secs(30));
        assert_eq!(c.public_base_for(c.listen), "http://127.0.0.1:9000");
    }

    #[test]
    fn the_default_fhir_version_is_optional() {
        assert_eq!(Config::from_toml(GOOD).unwrap().fhir.default_version, None);
        let c = Config::from_toml(&format!("{GOOD}\n[fhir]\ndefault_version = \"5.0\"")).unwrap();
        assert_eq!(c.fhir.default_version, Some(FhirVersion::R5));
        let e = error_of(&format!("{GOOD}\n[fhir]\ndefault_version = \"R7\""));
        assert!(e.contains("fhir.default_version"), "{e}");
    }

    fn error_of(text: &str) -> String {
        Config::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_key() {
        let e = error_of(&GOOD.replace("\"R4\"", "\"R7\""));
        assert!(e.contains("sites.st-mary.fhir_version"), "{e}");
        let e = error_of(&GOOD.replace("opt-out", "maybe"));
        assert!(e.contains("sites.st-mary.default_policy"), "{e}");
        let e = error_of(&GOOD.replace("http://127.0.0.1:7000/fhir", "not a url"));
        assert!(e.contains("sites.st-mary.upstream"), "{e}");
        let e = error_of(&format!("{GOOD}\nbogus = 1"));
        assert!(e.contains("bogus"), "{e}");
        let e = error_of(&GOOD.replace("st-mary", "St_Mary"));
        assert!(e.contains("sites.St_Mary"), "{e}");
        let e = error_of(&format!("{GOOD}\n[paging]\nsecret_hex = \"abcd\""));
        assert!(e.contains("paging.secret_hex"), "{e}");
    }

    const ISSUER: &str = r#"
        [[auth.issuers]]
        issuer = "https://idp.example/realms/a"
        audience = ["https://gw.example/fhir"]
    "#;

    #[test]
    fn issuers_map_to_the_auth_crate() {
        let c = Config::from_toml(&format!("{GOOD}\n{ISSUER}")).unwrap();
        let issuer = c.auth.issuers[0].to_issuer_config();
        assert_eq!(issuer.issuer, "https://idp.example/realms/a");
        assert_eq!(issuer.algorithms.len(), 3);
        assert_eq!(issuer.claims.actor, "fhirUser");
        assert!(!issuer.allow_purpose_header);
        let bare = ISSUER.replace("https://idp.example/realms/a", "https://idp.example");
        let c = Config::from_toml(&format!("{GOOD}\n{bare}")).unwrap();
        assert_eq!(
            c.auth.issuers[0].to_issuer_config().issuer,
            "https://idp.example"
        );
    }

    #[test]
    fn auth_errors_name_the_key() {
        let with = |issuer: &str| error_of(&format!("{GOOD}\n{issuer}"));
        let e = with(&ISSUER.replace("https://idp", "http://idp"));
        assert!(e.contains("auth.issuers[0].issuer"), "{e}");
        assert!(
            Config::from_toml(&format!(
                "{GOOD}\n{}",
                ISSUER.replace("https://idp.example", "http://127.0.0.1:9")
            ))
            .is_ok()
        );
        let e = with(&format!("{ISSUER}algorithms = [\"HS256\"]"));
        assert!(e.contains("auth.issuers[0].algorithms"), "{e}");
        let e = with(&format!("{ISSUER}leeway_secs = 900"));
        assert!(e.contains("auth.issuers[0].leeway_secs"), "{e}");
        let e = with(&ISSUER.replace("[\"https://gw.example/fhir\"]", "[]"));
        assert!(e.contains("auth.issuers[0].audience"), "{e}");
        let e = with(&format!("{ISSUER}{ISSUER}"));
        assert!(e.contains("auth.issuers[1].issuer"), "{e}");
        let e = with("[[auth.api_keys]]\nid = \"x\"");
        assert!(e.contains("auth.api_keys"), "{e}");
        let e = error_of(&format!("{GOOD}default_purpose = \"NOSY\""));
        assert!(e.contains("sites.st-mary.default_purpose"), "{e}");
        let e = error_of(&format!(
            "{GOOD}default_purpose = \"TREAT\"\nrequire_purpose = true"
        ));
        assert!(e.contains("sites.st-mary.require_purpose"), "{e}");
        let c = Config::from_toml(&format!("{GOOD}default_purpose = \"HRESCH\"")).unwrap();
        assert_eq!(
            c.sites["st-mary"].default_purpose().map(|p| p.code()),
            Some("HRESCH")
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("assent.toml");
        std::fs::write(&path, GOOD).unwrap();
        let vars = [
            ("ASSENT_DATABASE_URL", "postgres://db/assent"),
            ("ASSENT_SITES__ST-MARY__TIMEOUT_MS", "1234"),
            ("ASSENT_TEST_DATABASE_URL", "ignored: not configuration"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let c = Config::load_with_env(&path, vars).unwrap();
        assert_eq!(c.database_url, "postgres://db/assent");
        assert_eq!(c.sites["st-mary"].timeout_ms, 1234);
        let bad = [(
            "ASSENT_SITES__ST-MARY__TIMEOUT_MS".to_owned(),
            "soon".to_owned(),
        )];
        let e = Config::load_with_env(&path, bad).unwrap_err().to_string();
        assert!(e.contains("sites.st-mary.timeout_ms"), "{e}");
    }
}
