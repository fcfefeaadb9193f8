//! `[sites.{id}]`: the hospital FHIR servers behind the gateway: upstream, FHIR version, default
//! policy and purpose, limits and timeouts, upstream authentication, circuit breaker, adapter
//! file, patient identifier systems, and the operations forwarded beyond `$everything`.
//!
//! Leaves out: the site at run time (`services/upstream.rs`), its adapter (`services/adapters.rs`)
//! and how operations are decided (`proxy/`).

use std::path::PathBuf;
use std::sync::LazyLock;
use std::time::Duration;

use assent_auth::PurposeOfUse;
use assent_consent::SitePolicy;
use assent_fhir::FhirVersion;
use serde::{Deserialize, Deserializer, Serialize};

use crate::config::ConfigError;
use crate::config::fhir::{deserialize_version, serialize_version};

/// One hospital FHIR server behind the gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// Upstream FHIR base URL (`https://fhir.st-mary.example/r4`).
    pub upstream: url::Url,
    /// The FHIR version the site speaks.
    #[serde(
        deserialize_with = "deserialize_version",
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
    /// The site adapter file (TOML, see docs/adapters.md): the site's identifier systems,
    /// codes, extensions, references and profiles rewritten to the network's and back.
    /// Relative to the configuration file's directory.
    #[serde(default)]
    pub adapter: Option<PathBuf>,
    /// Identifier systems that identify a patient at this site (an MRN's system, a national
    /// id): a reference that names a patient only by such an identifier is placed by
    /// looking the identifier up at the site; an identifier of any other system cannot be
    /// placed and counts as an unknown patient (denied).
    #[serde(default)]
    pub patient_identifier_systems: Vec<String>,
    /// Identifier systems that identify a patient across the network (a national id, an
    /// insurance member number, an MRN with its assigning authority): site-local patients of
    /// different sites sharing a value of such a system are one network patient (a certain
    /// link, `services/network.rs`). Each must also be one of `patient_identifier_systems`.
    #[serde(default)]
    pub network_identifier_systems: Vec<String>,
    /// FHIR operations forwarded to this site besides the built-in `Patient/{id}/$everything`;
    /// any other operation is refused (403 `operation-not-allowed`).
    #[serde(default)]
    pub operations: Vec<OperationRule>,
}

/// One FHIR operation the gateway forwards to a site, and how its answer is decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationRule {
    /// The operation's name without `$` (`lastn`).
    pub name: String,
    /// Where it is invoked: `system` (`/$op`), `type` (`/Type/$op`) or `instance`
    /// (`/Type/{id}/$op`).
    pub level: OperationLevel,
    /// The resource types it is invoked on (`type` and `instance` levels).
    #[serde(default)]
    pub resource_types: Vec<String>,
    /// How the answer is decided: `bundle` (a Bundle whose entries are decided one by one,
    /// like a search) or `resource` (one resource, released only when every patient it
    /// belongs to permits).
    pub output: OperationOutput,
}

/// Where an operation is invoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationLevel {
    System,
    Type,
    Instance,
}

/// How an operation's answer is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationOutput {
    Bundle,
    Resource,
}

impl OperationRule {
    /// `Patient/{id}/$everything`, forwarded to every site.
    pub fn everything() -> OperationRule {
        OperationRule {
            name: "everything".into(),
            level: OperationLevel::Instance,
            resource_types: vec!["Patient".into()],
            output: OperationOutput::Bundle,
        }
    }

    /// Whether this rule is the operation `name` invoked at `level` on `resource_type`.
    pub fn matches(&self, name: &str, level: OperationLevel, resource_type: Option<&str>) -> bool {
        self.name == name
            && self.level == level
            && match resource_type {
                None => level == OperationLevel::System,
                Some(t) => self.resource_types.iter().any(|r| r == t),
            }
    }
}

impl SiteConfig {
    /// The operations forwarded to this site: the built-in ones, then the configured ones
    /// (borrowed: nothing is built per request).
    pub fn operation_rules(&self) -> impl Iterator<Item = &OperationRule> + '_ {
        static EVERYTHING: LazyLock<OperationRule> = LazyLock::new(OperationRule::everything);
        std::iter::once(&*EVERYTHING).chain(self.operations.iter())
    }

    /// The site's default purpose of use (a code checked when the configuration was loaded).
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

/// Ids no site may have: the network level's own paths under `/fhir` (`/fhir/metadata`), and
/// the pseudo-site of network patients (`network/Patient/{id}`).
pub const RESERVED_SITE_IDS: &[&str] = &["metadata", "network"];

/// Site ids appear in URLs and metric labels: keep them to a safe alphabet.
pub fn is_valid_site_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl SiteConfig {
    /// Checks site `id` (`sites.{id}`): what serde cannot.
    pub(super) fn validate(&self, id: &str) -> Result<(), ConfigError> {
        let at = |field: &str| format!("sites.{id}.{field}");
        if !is_valid_site_id(id) {
            return Err(ConfigError::invalid(
                format!("sites.{id}"),
                "site ids are 1-64 characters of a-z, 0-9 and '-'",
            ));
        }
        if RESERVED_SITE_IDS.contains(&id) {
            return Err(ConfigError::invalid(
                format!("sites.{id}"),
                "is reserved: `/fhir/metadata` and `/fhir/network` belong to the network level",
            ));
        }
        if !matches!(self.upstream.scheme(), "http" | "https") {
            return Err(ConfigError::invalid(
                at("upstream"),
                "must be http or https",
            ));
        }
        if self.upstream.query().is_some() || self.upstream.fragment().is_some() {
            return Err(ConfigError::invalid(
                at("upstream"),
                "must not carry a query or fragment",
            ));
        }
        if self.timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return Err(ConfigError::invalid(at("timeout_ms"), "must be above 0"));
        }
        if self.max_body_bytes == Some(0) {
            return Err(ConfigError::invalid(
                at("max_body_bytes"),
                "must be above 0",
            ));
        }
        if self.circuit_breaker.failures == 0 {
            return Err(ConfigError::invalid(
                at("circuit_breaker.failures"),
                "must be above 0",
            ));
        }
        if let Some(code) = &self.default_purpose {
            if PurposeOfUse::parse(code).is_none() {
                return Err(ConfigError::invalid(
                    at("default_purpose"),
                    format!(
                        "`{code}` is not an HL7 v3 PurposeOfUse code (TREAT, ETREAT, HPAYMT, HOPERAT, HRESCH, PUBHLTH, …)"
                    ),
                ));
            }
            if self.require_purpose {
                return Err(ConfigError::invalid(
                    at("require_purpose"),
                    "cannot be set with default_purpose (the default always supplies a purpose)",
                ));
            }
        }
        for (n, system) in self.patient_identifier_systems.iter().enumerate() {
            if system.is_empty() || system.contains('|') || system.contains(char::is_whitespace) {
                return Err(ConfigError::invalid(
                    at(&format!("patient_identifier_systems[{n}]")),
                    "must be an identifier system URI (no spaces, no `|`)",
                ));
            }
        }
        for (n, system) in self.network_identifier_systems.iter().enumerate() {
            if !self.patient_identifier_systems.contains(system) {
                return Err(ConfigError::invalid(
                    at(&format!("network_identifier_systems[{n}]")),
                    "must also be one of the site's patient_identifier_systems",
                ));
            }
        }
        for (n, op) in self.operations.iter().enumerate() {
            let at_op = |field: &str| at(&format!("operations[{n}].{field}"));
            let name_ok = (1..=64).contains(&op.name.len())
                && op.name.as_bytes()[0].is_ascii_alphabetic()
                && op
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !name_ok {
                return Err(ConfigError::invalid(
                    at_op("name"),
                    "must be an operation name without `$` (letters, digits, `-`)",
                ));
            }
            let types_needed = op.level != OperationLevel::System;
            if types_needed == op.resource_types.is_empty() {
                return Err(ConfigError::invalid(
                    at_op("resource_types"),
                    "must list the resource types for `type` and `instance` levels, and be empty for `system`",
                ));
            }
            if let Some(bad) = op.resource_types.iter().find(|t| {
                t.is_empty()
                    || !t.as_bytes()[0].is_ascii_uppercase()
                    || !t.bytes().all(|b| b.is_ascii_alphabetic())
            }) {
                return Err(ConfigError::invalid(
                    at_op("resource_types"),
                    format!("`{bad}` is not a FHIR resource type"),
                ));
            }
        }
        if self
            .adapter
            .as_ref()
            .is_some_and(|a| a.as_os_str().is_empty())
        {
            return Err(ConfigError::invalid(
                at("adapter"),
                "must name a site adapter file",
            ));
        }
        if let UpstreamAuth::Mtls {
            cert_file,
            key_file,
            ca_file,
        } = &self.upstream_auth
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
        Ok(())
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

fn default_timeout_ms() -> u64 {
    30_000
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_max_response_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_cb_failures() -> u32 {
    5
}
fn default_cb_open_ms() -> u64 {
    30_000
}
