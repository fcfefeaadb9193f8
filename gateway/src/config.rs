//! Configuration: one TOML file, then `ASSENT_…` environment overrides, loaded once into
//! plain structs and validated, with the keys of the key file it names and of the environment
//! (`keys.rs`: keys are never taken from this file). Every error names the key at fault.
//!
//! Leaves out: reading secrets from vaults, reloading (a restart applies a new file; site
//! adapter files, which this file only names, reload on their own: `site_adapter.rs`).

pub mod keys;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::keys::{KeyFileError, KeyMaterial};
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
    "receipts",
    "audit",
    "break_glass",
    "cache",
    "fhir",
    "keys",
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
    pub receipts: ReceiptsConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub break_glass: BreakGlassConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub fhir: FhirConfig,
    /// Where the keys are (`[keys]`): never in this file, never in the database.
    #[serde(default)]
    pub keys: KeysConfig,
    /// Sites by id. The id is the `{site}` of `/fhir/{site}/…`.
    #[serde(default)]
    pub sites: BTreeMap<String, SiteConfig>,
    /// The directory of the configuration file, when loaded from one: relative paths in it
    /// (site adapters, the key file) are read from there.
    #[serde(skip)]
    pub config_dir: Option<PathBuf>,
    /// The keys found in the key file and the environment when the configuration was loaded
    /// (which of them a gateway needs: [`KeyMaterial::require`]).
    #[serde(skip)]
    pub key_material: KeyMaterial,
}

/// `[keys]`: where the gateway's keys are (docs/keys.md). Each key may also come from its
/// environment variable (`ASSENT_CONSORTIUM_KEY_HEX`, `ASSENT_NODE_KEY_HEX`,
/// `ASSENT_PAGING_SECRET_HEX`, `ASSENT_CONSOLE_SESSION_SECRET_HEX`, `ASSENT_WEBHOOK_SECRET_HEX`),
/// which wins over the file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// A TOML file of `name = "hex"` entries (`consortium_key_hex`, `node_key_hex`,
    /// `paging_secret_hex`, `console_session_secret_hex`, `webhook_secret_hex`), relative to
    /// this file's directory. Refused when group or others may read or write it.
    #[serde(default)]
    pub file: Option<PathBuf>,
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

/// The consent ledger: the embedded ledger in the gateway's store (the default), or a
/// Hyperledger Fabric channel (`backend = "fabric"` with a `[ledger.fabric]` table).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// `embedded` (default) or `fabric`.
    #[serde(default)]
    pub backend: LedgerBackend,
    /// The Fabric channel and identity; required with `backend = "fabric"`, refused without.
    #[serde(default)]
    pub fabric: Option<FabricSettings>,
    /// Moved to the key file (`consortium_key_hex`): named only to say so.
    #[serde(default, skip_serializing)]
    pub consortium_key_hex: Option<figment::value::Value>,
    /// Moved to the key file (`node_key_hex`): named only to say so.
    #[serde(default, skip_serializing)]
    pub node_key_hex: Option<figment::value::Value>,
    /// Caller ids (`subject@issuer`) with the consent-administrator role: they manage any
    /// patient's consents through `/consent`, like issuers' `admin_subjects` and tokens with
    /// their issuer's `consent_admin_scope` (SMART `Consent` scopes alone never suffice; see
    /// `consent_authz.rs`).
    #[serde(default)]
    pub consent_admins: Vec<String>,
}

/// Receipts of every FHIR request and their anchoring on the ledger.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptsConfig {
    /// An anchoring batch closes when it holds this many receipts.
    #[serde(default = "default_batch_max_receipts")]
    pub batch_max_receipts: usize,
    /// An anchoring batch closes this long after its first receipt, in milliseconds: a
    /// receipt is anchored within this window plus one ledger commit.
    #[serde(default = "default_batch_max_wait_ms")]
    pub batch_max_wait_ms: u64,
    /// Anchor every receipt on its own (one ledger transaction per request).
    #[serde(default)]
    pub strict: bool,
}

impl Default for ReceiptsConfig {
    fn default() -> Self {
        ReceiptsConfig {
            batch_max_receipts: default_batch_max_receipts(),
            batch_max_wait_ms: default_batch_max_wait_ms(),
            strict: false,
        }
    }
}

/// Break-glass: who is told when an emergency override is used (`[break_glass]`). Who may
/// use it is the issuers' `break_glass_scope`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakGlassConfig {
    /// Called with a JSON event (POST) for every access that rested on break-glass, off the
    /// request path. `https`, or `http` on a loopback address.
    #[serde(default)]
    pub webhook_url: Option<url::Url>,
    /// Sent as `Authorization: Bearer …` to the webhook.
    #[serde(default)]
    pub webhook_bearer: Option<String>,
    /// Moved to the key file (`webhook_secret_hex`, an HMAC-SHA256 key over the body sent as
    /// `X-Assent-Signature: sha256=<hex>`): named only to say so.
    #[serde(default, skip_serializing)]
    pub webhook_secret_hex: Option<figment::value::Value>,
    /// Timeout of one webhook call.
    #[serde(default = "default_webhook_timeout_ms")]
    pub webhook_timeout_ms: u64,
    /// Attempts per event (with exponential backoff from 200 ms) before it is given up.
    #[serde(default = "default_webhook_attempts")]
    pub webhook_attempts: u32,
    /// Events waiting for the webhook; beyond it new events are dropped (and counted).
    #[serde(default = "default_webhook_queue")]
    pub webhook_queue: usize,
}

impl Default for BreakGlassConfig {
    fn default() -> Self {
        BreakGlassConfig {
            webhook_url: None,
            webhook_bearer: None,
            webhook_secret_hex: None,
            webhook_timeout_ms: default_webhook_timeout_ms(),
            webhook_attempts: default_webhook_attempts(),
            webhook_queue: default_webhook_queue(),
        }
    }
}

impl ReceiptsConfig {
    pub fn batch_config(&self) -> assent_receipts::BatchConfig {
        assent_receipts::BatchConfig {
            max_receipts: self.batch_max_receipts,
            max_wait_ms: i64::try_from(self.batch_max_wait_ms).unwrap_or(i64::MAX),
            strict: self.strict,
        }
    }
}

/// Which ledger holds consent state and receipt anchors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LedgerBackend {
    /// The hash-chained ledger in the gateway's own store.
    #[default]
    Embedded,
    /// A Hyperledger Fabric channel running the consent chaincode (docs/fabric.md).
    Fabric,
}

/// `[ledger.fabric]`: the peer the gateway talks to (Fabric Gateway service, Fabric 2.4+),
/// its TLS, the gateway's identity in its organization's MSP, the channel and chaincode, and
/// call deadlines. Files are PEM; every one is read, and the key checked against the
/// certificate, when the configuration is loaded.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FabricSettings {
    /// `https://peer0.org1.example.com:7051` (`http://` only on a loopback address).
    pub peer_endpoint: String,
    /// The CA of the peer's TLS certificate; required for `https`.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// The name the peer's TLS certificate carries, when the endpoint's host differs.
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// Mutual TLS: client certificate and key, both or neither.
    #[serde(default)]
    pub tls_client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub tls_client_key_file: Option<PathBuf>,
    /// The gateway's organization, e.g. `Org1MSP`.
    pub msp_id: String,
    /// The gateway's enrolment certificate and its ECDSA P-256 key (PKCS#8 or SEC1).
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub channel: String,
    pub chaincode: String,
    /// Fresh proposals after an MVCC read conflict.
    #[serde(default = "default_mvcc_retries")]
    pub mvcc_retries: u32,
    #[serde(default = "default_fabric_connect_ms")]
    pub connect_timeout_ms: u64,
    /// Deadline of one Evaluate (a consent read on a cache miss).
    #[serde(default = "default_fabric_evaluate_ms")]
    pub evaluate_timeout_ms: u64,
    /// Deadline of one Endorse (collecting the endorsing peers' signatures).
    #[serde(default = "default_fabric_endorse_ms")]
    pub endorse_timeout_ms: u64,
    /// Deadline of one Submit (handing the transaction to the orderers).
    #[serde(default = "default_fabric_submit_ms")]
    pub submit_timeout_ms: u64,
    /// How long to wait for a submitted transaction's commit.
    #[serde(default = "default_fabric_commit_ms")]
    pub commit_timeout_ms: u64,
}

impl FabricSettings {
    /// The fabric crate's view of these settings (files not read yet).
    pub fn fabric_config(&self) -> assent_fabric::FabricConfig {
        assent_fabric::FabricConfig {
            peer_endpoint: self.peer_endpoint.clone(),
            tls_ca_file: self.tls_ca_file.clone(),
            tls_server_name: self.tls_server_name.clone(),
            tls_client_cert_file: self.tls_client_cert_file.clone(),
            tls_client_key_file: self.tls_client_key_file.clone(),
            msp_id: self.msp_id.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            channel: self.channel.clone(),
            chaincode: self.chaincode.clone(),
            mvcc_retries: Some(self.mvcc_retries),
        }
    }

    /// Reads every file and checks the key against the certificate: what the gateway
    /// connects with. Errors name the key at fault.
    pub fn connection(&self) -> Result<assent_fabric::FabricConnection, ConfigError> {
        use assent_fabric::{ConfigError as FabricError, IdentityError};
        let at = |field: &str| format!("ledger.fabric.{field}");
        let mut connection = self.fabric_config().load().map_err(|e| {
            let key = match &e {
                FabricError::Identity(IdentityError::Read { path, .. })
                | FabricError::Read { path, .. } => self.key_of_path(path),
                FabricError::Identity(IdentityError::NoMspId) => at("msp_id"),
                FabricError::Identity(IdentityError::Certificate(_) | IdentityError::NotP256) => {
                    at("cert_file")
                }
                FabricError::Identity(IdentityError::PrivateKey | IdentityError::KeyMismatch) => {
                    at("key_file")
                }
                FabricError::Invalid(_) if self.channel.is_empty() => at("channel"),
                FabricError::Invalid(_) if self.chaincode.is_empty() => at("chaincode"),
                FabricError::Invalid(_) => at("tls_client_cert_file"),
                FabricError::Connect(_) => at("peer_endpoint"),
            };
            let message = match &e {
                FabricError::Identity(IdentityError::KeyMismatch) => format!(
                    "the private key does not match the certificate in {}",
                    self.cert_file.display()
                ),
                _ => e.to_string(),
            };
            ConfigError::invalid(key, message)
        })?;
        let calls = &mut connection.options.calls;
        calls.connect_timeout = Duration::from_millis(self.connect_timeout_ms);
        calls.evaluate_timeout = Duration::from_millis(self.evaluate_timeout_ms);
        calls.endorse_timeout = Duration::from_millis(self.endorse_timeout_ms);
        calls.submit_timeout = Duration::from_millis(self.submit_timeout_ms);
        calls.commit_status_timeout = Duration::from_millis(self.commit_timeout_ms);
        Ok(connection)
    }

    /// Which key names the file at `path`.
    fn key_of_path(&self, path: &str) -> String {
        let files = [
            ("cert_file", Some(&self.cert_file)),
            ("key_file", Some(&self.key_file)),
            ("tls_ca_file", self.tls_ca_file.as_ref()),
            ("tls_client_cert_file", self.tls_client_cert_file.as_ref()),
            ("tls_client_key_file", self.tls_client_key_file.as_ref()),
        ];
        let name = files
            .iter()
            .find(|(_, p)| p.is_some_and(|p| p.display().to_string() == path))
            .map_or("cert_file", |(name, _)| name);
        format!("ledger.fabric.{name}")
    }

    /// Checks what can be checked without the files, then the files: existence, PEM
    /// contents, the key against the certificate.
    fn validate(&self) -> Result<(), ConfigError> {
        let at = |field: &str| format!("ledger.fabric.{field}");
        let endpoint = url::Url::parse(&self.peer_endpoint)
            .map_err(|e| ConfigError::invalid(at("peer_endpoint"), e.to_string()))?;
        let loopback = match endpoint.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(a)) => a.is_loopback(),
            Some(url::Host::Ipv6(a)) => a.is_loopback(),
            None => false,
        };
        match endpoint.scheme() {
            "https" if self.tls_ca_file.is_none() => {
                return Err(ConfigError::invalid(
                    at("tls_ca_file"),
                    "required with an https peer_endpoint (the CA of the peer's TLS certificate)",
                ));
            }
            "https" => {}
            "http" if loopback => {}
            _ => {
                return Err(ConfigError::invalid(
                    at("peer_endpoint"),
                    "must be https://host:port (http only on a loopback address)",
                ));
            }
        }
        if endpoint.port_or_known_default().is_none() || endpoint.path() != "/" {
            return Err(ConfigError::invalid(
                at("peer_endpoint"),
                "must be scheme://host:port without a path",
            ));
        }
        for (name, value) in [
            ("msp_id", &self.msp_id),
            ("channel", &self.channel),
            ("chaincode", &self.chaincode),
        ] {
            if value.trim().is_empty() {
                return Err(ConfigError::invalid(at(name), "must not be empty"));
            }
        }
        if self.tls_client_cert_file.is_some() != self.tls_client_key_file.is_some() {
            return Err(ConfigError::invalid(
                at("tls_client_cert_file"),
                "tls_client_cert_file and tls_client_key_file go together (mutual TLS)",
            ));
        }
        for (name, ms) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("evaluate_timeout_ms", self.evaluate_timeout_ms),
            ("endorse_timeout_ms", self.endorse_timeout_ms),
            ("submit_timeout_ms", self.submit_timeout_ms),
            ("commit_timeout_ms", self.commit_timeout_ms),
        ] {
            if ms == 0 {
                return Err(ConfigError::invalid(at(name), "must be above 0"));
            }
        }
        let files = [
            ("cert_file", Some(&self.cert_file)),
            ("key_file", Some(&self.key_file)),
            ("tls_ca_file", self.tls_ca_file.as_ref()),
            ("tls_client_cert_file", self.tls_client_cert_file.as_ref()),
            ("tls_client_key_file", self.tls_client_key_file.as_ref()),
        ];
        for (name, file) in files {
            if let Some(file) = file
                && !file.is_file()
            {
                return Err(ConfigError::invalid(
                    at(name),
                    format!("file {} does not exist", file.display()),
                ));
            }
        }
        for (name, file) in [
            ("tls_ca_file", &self.tls_ca_file),
            ("tls_client_cert_file", &self.tls_client_cert_file),
        ] {
            if let Some(file) = file {
                let pem = std::fs::read(file).map_err(|e| {
                    ConfigError::invalid(at(name), format!("cannot read {}: {e}", file.display()))
                })?;
                let n = rustls_pemfile::certs(&mut pem.as_slice())
                    .filter(|c| c.is_ok())
                    .count();
                if n == 0 {
                    return Err(ConfigError::invalid(
                        at(name),
                        format!("{} holds no PEM certificate", file.display()),
                    ));
                }
            }
        }
        if let Some(file) = &self.tls_client_key_file {
            let pem = std::fs::read(file).map_err(|e| {
                ConfigError::invalid(
                    at("tls_client_key_file"),
                    format!("cannot read {}: {e}", file.display()),
                )
            })?;
            if !matches!(
                rustls_pemfile::private_key(&mut pem.as_slice()),
                Ok(Some(_))
            ) {
                return Err(ConfigError::invalid(
                    at("tls_client_key_file"),
                    format!("{} holds no PEM private key", file.display()),
                ));
            }
        }
        self.connection().map(|_| ())
    }
}

/// Who may read the audit log (`/audit`, `/console/`), and the console's sign-in.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Caller ids (`subject@issuer`) with the audit role, besides callers whose token carries
    /// an explicit `user/AuditEvent.rs` or `system/AuditEvent.rs` scope.
    #[serde(default)]
    pub subjects: Vec<String>,
    /// The compliance console at `/console/` (absent: the console answers 404).
    #[serde(default)]
    pub console: Option<ConsoleConfig>,
}

/// The compliance console's sign-in: OpenID Connect authorization code with PKCE at the
/// first trusted issuer (`auth.issuers[0]`), as a public client.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// The console's `client_id` at the identity provider; its redirect URI is
    /// `{public_url}/console/callback`.
    pub client_id: String,
    /// The scopes asked for at sign-in.
    #[serde(default = "default_console_scope")]
    pub scope: String,
    /// Moved to the key file (`console_session_secret_hex`): named only to say so.
    #[serde(default, skip_serializing)]
    pub session_secret_hex: Option<figment::value::Value>,
    /// How long a console session lasts.
    #[serde(default = "default_session_ttl")]
    pub session_ttl_secs: u64,
}

fn default_console_scope() -> String {
    "openid fhirUser user/AuditEvent.rs".to_owned()
}

fn default_session_ttl() -> u64 {
    3600
}

fn default_webhook_timeout_ms() -> u64 {
    5_000
}

fn default_webhook_attempts() -> u32 {
    5
}

fn default_webhook_queue() -> usize {
    1_024
}

/// The consent decision cache (`[cache]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Redis (`redis://…`; TLS is not built in) through which replicas sharing one consent store
    /// tell each other about consent changes. Without it the cache is invalidated by this
    /// replica's own ledger only: run one replica per embedded ledger.
    #[serde(default)]
    pub redis_url: Option<String>,
    /// Prefix of the pub/sub channel (`{prefix}:consent-changed`); replicas of one
    /// deployment must share it.
    #[serde(default = "default_redis_channel_prefix")]
    pub redis_channel_prefix: String,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            redis_url: None,
            redis_channel_prefix: default_redis_channel_prefix(),
        }
    }
}

fn default_redis_channel_prefix() -> String {
    "assent".to_owned()
}

/// Signed paging links.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagingConfig {
    /// Moved to the key file (`paging_secret_hex`): named only to say so.
    #[serde(default, skip_serializing)]
    pub secret_hex: Option<figment::value::Value>,
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
    /// The scope by which this issuer grants break-glass (overriding a patient's deny with
    /// purpose `ETREAT` and a justification); empty: this issuer cannot grant it.
    #[serde(default = "default_break_glass_scope")]
    pub break_glass_scope: String,
    /// The scope by which this issuer grants the consent-administrator role (managing any
    /// patient's consents through `/consent`); empty: this issuer grants it to nobody by
    /// scope. Not a SMART scope (no `patient/`, `user/` or `system/`), never a wildcard.
    #[serde(default = "default_consent_admin_scope")]
    pub consent_admin_scope: String,
}

fn default_break_glass_scope() -> String {
    assent_auth::DEFAULT_BREAK_GLASS_SCOPE.to_owned()
}

/// The scope that grants the consent-administrator role unless an issuer says otherwise.
pub const DEFAULT_CONSENT_ADMIN_SCOPE: &str = "assent/consent-admin";

fn default_consent_admin_scope() -> String {
    DEFAULT_CONSENT_ADMIN_SCOPE.to_owned()
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
        config.break_glass_scope =
            (!self.break_glass_scope.is_empty()).then(|| self.break_glass_scope.clone());
        config.role_scopes = if self.consent_admin_scope.is_empty() {
            Vec::new()
        } else {
            vec![self.consent_admin_scope.clone()]
        };
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
    /// The operations forwarded to this site: the built-in ones, then the configured ones.
    pub fn operation_rules(&self) -> impl Iterator<Item = OperationRule> + '_ {
        std::iter::once(OperationRule::everything()).chain(self.operations.iter().cloned())
    }

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
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        let mut figment = Figment::new().merge(Toml::file(path));
        for (name, value) in &vars {
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
        let config_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::from_figment(figment, Some(config_dir), &vars)
    }

    /// The key file's path: as configured, relative to the configuration file's directory.
    pub fn key_file_path(&self) -> Option<PathBuf> {
        let path = self.keys.file.as_ref()?;
        Some(match &self.config_dir {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.clone(),
        })
    }

    /// Where site `site`'s adapter file is: its configured path, relative to the
    /// configuration file's directory (or the working directory when there is no file).
    pub fn adapter_path(&self, site: &SiteConfig) -> Option<PathBuf> {
        let path = site.adapter.as_ref()?;
        Some(match &self.config_dir {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.clone(),
        })
    }

    /// Parses a TOML document (no environment), for tests and `check-config` of a string.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::new().merge(Toml::string(text)), None, &[])
    }

    /// Builds from any serialisable value (tests build configuration from a map; a key file
    /// they name is read, the environment is not).
    pub fn from_value<T: Serialize>(value: T) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::new().merge(Serialized::defaults(value)), None, &[])
    }

    fn from_figment(
        figment: Figment,
        config_dir: Option<PathBuf>,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut config: Config = figment.extract().map_err(|e| {
            // figment's message names the key path (`for key "sites.a.upstream"`).
            let mut messages: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
            messages.dedup();
            ConfigError::Load(messages.join("; "))
        })?;
        config.config_dir = config_dir;
        config.validate()?;
        config.key_material =
            KeyMaterial::load(config.key_file_path().as_deref(), env).map_err(|e| match e {
                KeyFileError::Environment { var, .. } => ConfigError::invalid(var, e.to_string()),
                _ => ConfigError::invalid("keys.file", e.to_string()),
            })?;
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
        if self.receipts.batch_max_receipts == 0 {
            return Err(ConfigError::invalid(
                "receipts.batch_max_receipts",
                "must be above 0",
            ));
        }
        if let Some(console) = &self.audit.console
            && console.client_id.trim().is_empty()
        {
            return Err(ConfigError::invalid(
                "audit.console.client_id",
                "must not be empty",
            ));
        }
        self.refuse_keys_in_this_file()?;
        if self
            .keys
            .file
            .as_ref()
            .is_some_and(|f| f.as_os_str().is_empty())
        {
            return Err(ConfigError::invalid("keys.file", "must name a key file"));
        }
        if self.paging.ttl_secs == 0 {
            return Err(ConfigError::invalid("paging.ttl_secs", "must be above 0"));
        }
        self.validate_ledger()?;
        self.validate_auth()?;
        self.validate_break_glass_and_cache()?;
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
            for (n, system) in site.patient_identifier_systems.iter().enumerate() {
                if system.is_empty() || system.contains('|') || system.contains(char::is_whitespace)
                {
                    return Err(ConfigError::invalid(
                        at(&format!("patient_identifier_systems[{n}]")),
                        "must be an identifier system URI (no spaces, no `|`)",
                    ));
                }
            }
            for (n, op) in site.operations.iter().enumerate() {
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
            if site
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

    fn validate_ledger(&self) -> Result<(), ConfigError> {
        match (self.ledger.backend, &self.ledger.fabric) {
            (LedgerBackend::Embedded, None) => Ok(()),
            (LedgerBackend::Embedded, Some(_)) => Err(ConfigError::invalid(
                "ledger.backend",
                "a [ledger.fabric] table is configured but the backend is `embedded`: set backend = \"fabric\" or remove the table",
            )),
            (LedgerBackend::Fabric, None) => Err(ConfigError::invalid(
                "ledger.fabric",
                "backend = \"fabric\" needs a [ledger.fabric] table (peer_endpoint, msp_id, cert_file, key_file, channel, chaincode)",
            )),
            (LedgerBackend::Fabric, Some(fabric)) => fabric.validate(),
        }
    }

    /// Keys are never read from the configuration file (it is often readable by many and kept
    /// in version control): a key named here is refused, with where it belongs now.
    fn refuse_keys_in_this_file(&self) -> Result<(), ConfigError> {
        let present = [
            self.ledger.consortium_key_hex.is_some(),
            self.ledger.node_key_hex.is_some(),
            self.paging.secret_hex.is_some(),
            self.audit
                .console
                .as_ref()
                .is_some_and(|c| c.session_secret_hex.is_some()),
            self.break_glass.webhook_secret_hex.is_some(),
        ];
        for ((key, _, spec), present) in crate::config::keys::LEGACY_CONFIG_KEYS
            .into_iter()
            .zip(present)
        {
            if present {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "keys are no longer read from the configuration: put `{}` in the key file named by [keys] file (mode 0600), or set ${}; `assent keys export --from-database --config FILE --out KEYFILE` moves the keys of an older version (docs/keys.md)",
                        spec.name, spec.env
                    ),
                ));
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
            let role = &issuer.consent_admin_scope;
            let smart = ["patient/", "user/", "system/"]
                .iter()
                .any(|p| role.starts_with(p));
            if smart
                || role.contains(['*', ' '])
                || (!role.is_empty() && *role == issuer.break_glass_scope)
            {
                return Err(ConfigError::invalid(
                    at("consent_admin_scope"),
                    "must be a scope of its own: not a SMART resource scope, no wildcard or space, not the break-glass scope",
                ));
            }
        }
        Ok(())
    }

    fn validate_break_glass_and_cache(&self) -> Result<(), ConfigError> {
        let bg = &self.break_glass;
        if let Some(url) = &bg.webhook_url {
            let loopback = match url.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(a)) => a.is_loopback(),
                Some(url::Host::Ipv6(a)) => a.is_loopback(),
                None => false,
            };
            match url.scheme() {
                "https" => {}
                "http" if loopback => {}
                _ => {
                    return Err(ConfigError::invalid(
                        "break_glass.webhook_url",
                        "must be https (http only on a loopback address)",
                    ));
                }
            }
        }
        if bg
            .webhook_bearer
            .as_deref()
            .is_some_and(|b| b.is_empty() || !b.bytes().all(|c| c.is_ascii_graphic()))
        {
            return Err(ConfigError::invalid(
                "break_glass.webhook_bearer",
                "must be non-empty visible ASCII",
            ));
        }
        if bg.webhook_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "break_glass.webhook_timeout_ms",
                "must be above 0",
            ));
        }
        if bg.webhook_attempts == 0 || bg.webhook_attempts > 20 {
            return Err(ConfigError::invalid(
                "break_glass.webhook_attempts",
                "must be 1 to 20",
            ));
        }
        if bg.webhook_queue == 0 {
            return Err(ConfigError::invalid(
                "break_glass.webhook_queue",
                "must be above 0",
            ));
        }
        if let Some(url) = &self.cache.redis_url
            && !url.starts_with("redis://")
        {
            return Err(ConfigError::invalid(
                "cache.redis_url",
                "must be a redis:// URL (rediss:// is not supported)",
            ));
        }
        let prefix = &self.cache.redis_channel_prefix;
        if prefix.is_empty()
            || prefix.len() > 64
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(ConfigError::invalid(
                "cache.redis_channel_prefix",
                "1-64 characters of letters, digits and - _ . :",
            ));
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
fn default_batch_max_receipts() -> usize {
    10_000
}
fn default_batch_max_wait_ms() -> u64 {
    1_000
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
fn default_mvcc_retries() -> u32 {
    10
}
fn default_fabric_connect_ms() -> u64 {
    5_000
}
fn default_fabric_evaluate_ms() -> u64 {
    5_000
}
fn default_fabric_endorse_ms() -> u64 {
    15_000
}
fn default_fabric_submit_ms() -> u64 {
    5_000
}
fn default_fabric_commit_ms() -> u64 {
    60_000
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
    fn break_glass_and_cache_keys_are_checked() {
        let c = Config::from_toml(GOOD).unwrap();
        assert!(c.break_glass.webhook_url.is_none());
        assert_eq!(c.break_glass.webhook_attempts, 5);
        assert!(c.cache.redis_url.is_none());
        assert_eq!(c.cache.redis_channel_prefix, "assent");
        let ok = format!(
            "{GOOD}\n[break_glass]\nwebhook_url = \"https://sec.example/hook\"\n[cache]\nredis_url = \"redis://127.0.0.1:6379\""
        );
        let c = Config::from_toml(&ok).unwrap();
        assert_eq!(c.cache.redis_url.as_deref(), Some("redis://127.0.0.1:6379"));
        for (bad, key) in [
            (
                "[break_glass]\nwebhook_url = \"http://sec.example/hook\"",
                "break_glass.webhook_url",
            ),
            (
                "[break_glass]\nwebhook_secret_hex = \"abcd\"",
                "break_glass.webhook_secret_hex",
            ),
            (
                "[break_glass]\nwebhook_attempts = 0",
                "break_glass.webhook_attempts",
            ),
            (
                "[break_glass]\nwebhook_queue = 0",
                "break_glass.webhook_queue",
            ),
            (
                "[cache]\nredis_url = \"http://127.0.0.1:6379\"",
                "cache.redis_url",
            ),
            (
                "[cache]\nredis_channel_prefix = \"a b\"",
                "cache.redis_channel_prefix",
            ),
        ] {
            let e = error_of(&format!("{GOOD}\n{bad}"));
            assert!(e.contains(key), "{bad}: {e}");
        }
        // The issuer's break-glass scope: the default, another, or none.
        let issuer = |extra: &str| {
            let text = format!(
                "{GOOD}\n[[auth.issuers]]\nissuer = \"https://idp.example\"\naudience = [\"a\"]\n{extra}"
            );
            Config::from_toml(&text).unwrap().auth.issuers[0].to_issuer_config()
        };
        assert_eq!(
            issuer("").break_glass_scope.as_deref(),
            Some("assent/break-glass")
        );
        assert_eq!(
            issuer("break_glass_scope = \"urn:x:btg\"")
                .break_glass_scope
                .as_deref(),
            Some("urn:x:btg")
        );
        assert_eq!(issuer("break_glass_scope = \"\"").break_glass_scope, None);
        // The consent-administrator scope: kept as a role scope, or none.
        assert_eq!(issuer("").role_scopes, ["assent/consent-admin"]);
        assert_eq!(
            issuer("consent_admin_scope = \"urn:x:consents\"").role_scopes,
            ["urn:x:consents"]
        );
        assert!(issuer("consent_admin_scope = \"\"").role_scopes.is_empty());
        for bad in [
            "user/Consent.*",
            "patient/Consent.cruds",
            "system/*.*",
            "assent/*",
            "assent/break-glass",
        ] {
            let text = format!(
                "{GOOD}\n[[auth.issuers]]\nissuer = \"https://idp.example\"\naudience = [\"a\"]\nconsent_admin_scope = \"{bad}\""
            );
            let e = error_of(&text);
            assert!(e.contains("consent_admin_scope"), "{bad}: {e}");
        }
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

    /// A `[ledger]` table for Fabric whose files are in `dir`: a fresh P-256 enrolment
    /// certificate and key, a TLS CA; `key_of` picks whose key goes in `key_file`.
    fn fabric_files(dir: &Path, mismatched_key: bool) -> String {
        use assent_fabric::testing::support::p256_pem;
        let (cert, key) = p256_pem("gw.org1.example.com");
        let (_, other_key) = p256_pem("someone-else");
        let (ca, _) = p256_pem("tls-ca");
        std::fs::write(dir.join("cert.pem"), cert).unwrap();
        std::fs::write(
            dir.join("key.pem"),
            if mismatched_key { other_key } else { key },
        )
        .unwrap();
        std::fs::write(dir.join("ca.pem"), ca).unwrap();
        format!(
            r#"
            [ledger]
            backend = "fabric"
            [ledger.fabric]
            peer_endpoint = "https://peer0.org1.example.com:7051"
            tls_ca_file = "{d}/ca.pem"
            msp_id = "Org1MSP"
            cert_file = "{d}/cert.pem"
            key_file = "{d}/key.pem"
            channel = "assent"
            chaincode = "assent-consent"
            "#,
            d = dir.display()
        )
    }

    #[test]
    fn a_fabric_ledger_loads_and_its_deadlines_apply() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "{GOOD}\n{}evaluate_timeout_ms = 1500\n",
            fabric_files(dir.path(), false)
        );
        let c = Config::from_toml(&text).unwrap();
        assert_eq!(c.ledger.backend, LedgerBackend::Fabric);
        let fabric = c.ledger.fabric.as_ref().unwrap();
        let connection = fabric.connection().unwrap();
        assert_eq!(connection.channel, "assent");
        assert_eq!(connection.identity.msp_id(), "Org1MSP");
        assert_eq!(
            connection.options.calls.evaluate_timeout,
            Duration::from_millis(1500)
        );
        assert_eq!(connection.options.mvcc_retries, 10);
        // The embedded default needs nothing.
        assert_eq!(
            Config::from_toml(GOOD).unwrap().ledger.backend,
            LedgerBackend::Embedded
        );

        // Environment overrides reach the table.
        let path = dir.path().join("assent.toml");
        std::fs::write(&path, &text).unwrap();
        let vars = [
            ("ASSENT_LEDGER__FABRIC__CHANNEL", "other-channel"),
            ("ASSENT_LEDGER__FABRIC__COMMIT_TIMEOUT_MS", "2500"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let c = Config::load_with_env(&path, vars).unwrap();
        let fabric = c.ledger.fabric.unwrap();
        assert_eq!(fabric.channel, "other-channel");
        assert_eq!(fabric.commit_timeout_ms, 2500);
    }

    #[test]
    fn fabric_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let good = format!("{GOOD}\n{}", fabric_files(dir.path(), false));
        assert!(Config::from_toml(&good).is_ok());
        let cases = [
            (
                good.replace("backend = \"fabric\"", "backend = \"embedded\""),
                "ledger.backend",
            ),
            (
                good.replace("backend = \"fabric\"", "backend = \"quorum\""),
                "ledger.backend",
            ),
            (
                format!("{GOOD}\n[ledger]\nbackend = \"fabric\"\n"),
                "ledger.fabric",
            ),
            (
                good.replace(
                    "backend = \"fabric\"",
                    &format!(
                        "backend = \"fabric\"\nconsortium_key_hex = \"{}\"",
                        "ab".repeat(32)
                    ),
                ),
                "ledger.consortium_key_hex",
            ),
            (
                good.replace("cert.pem", "missing.pem"),
                "ledger.fabric.cert_file",
            ),
            (good.replace("\"Org1MSP\"", "\"\""), "ledger.fabric.msp_id"),
            (
                good.replace("tls_ca_file", "# tls_ca_file"),
                "ledger.fabric.tls_ca_file",
            ),
            (
                good.replace("https://peer0", "http://peer0"),
                "ledger.fabric.peer_endpoint",
            ),
            (
                good.replace("https://peer0.org1.example.com:7051", "not a url"),
                "ledger.fabric.peer_endpoint",
            ),
            (
                format!(
                    "{good}tls_client_cert_file = \"{}/cert.pem\"\n",
                    dir.path().display()
                ),
                "ledger.fabric.tls_client_cert_file",
            ),
            (
                format!("{good}endorse_timeout_ms = 0\n"),
                "ledger.fabric.endorse_timeout_ms",
            ),
            (format!("{good}orderer = \"x\"\n"), "orderer"),
        ];
        for (i, (text, key)) in cases.iter().enumerate() {
            let e = error_of(text);
            assert!(e.contains(key), "case {i} should name `{key}`: {e}");
        }
        // A key that is not the certificate's.
        let other = tempfile::tempdir().unwrap();
        let mismatched = format!("{GOOD}\n{}", fabric_files(other.path(), true));
        let e = error_of(&mismatched);
        assert!(
            e.contains("ledger.fabric.key_file") && e.contains("does not match"),
            "{e}"
        );
        // The CA file must hold a certificate.
        std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
        let e = error_of(&good);
        assert!(e.contains("ledger.fabric.tls_ca_file"), "{e}");
    }

    #[test]
    fn keys_are_refused_here_and_read_from_the_key_file_and_the_environment() {
        // Every key a version before the key file took from this file is refused, naming where
        // it goes now.
        for (table, key) in [
            ("[ledger]\nconsortium_key_hex", "ledger.consortium_key_hex"),
            ("[ledger]\nnode_key_hex", "ledger.node_key_hex"),
            ("[paging]\nsecret_hex", "paging.secret_hex"),
            (
                "[audit.console]\nclient_id = \"c\"\nsession_secret_hex",
                "audit.console.session_secret_hex",
            ),
            (
                "[break_glass]\nwebhook_secret_hex",
                "break_glass.webhook_secret_hex",
            ),
        ] {
            let e = error_of(&format!("{GOOD}\n{table} = \"{}\"", "ab".repeat(32)));
            assert!(
                e.contains(key) && e.contains("[keys] file") && e.contains("ASSENT_"),
                "{key}: {e}"
            );
            assert!(
                !e.contains(&"ab".repeat(32)),
                "the message shows the key: {e}"
            );
        }
        // The key file, relative to this file's directory, then the environment.
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys.toml");
        crate::config::keys::write_key_file(
            &keys,
            &[(
                crate::config::keys::CONSORTIUM,
                crate::config::keys::Secret::new(vec![1; 32]),
            )],
        )
        .unwrap();
        let path = dir.path().join("assent.toml");
        std::fs::write(&path, format!("{GOOD}\n[keys]\nfile = \"keys.toml\"\n")).unwrap();
        let vars = [
            ("ASSENT_PAGING_SECRET_HEX", "02".repeat(32)),
            ("ASSENT_NODE_KEY_HEX", "03".repeat(32)),
        ]
        .map(|(k, v)| (k.to_owned(), v));
        let c = Config::load_with_env(&path, vars).unwrap();
        assert_eq!(c.key_file_path(), Some(dir.path().join("keys.toml")));
        let material = &c.key_material;
        assert_eq!(
            material
                .get(crate::config::keys::CONSORTIUM)
                .unwrap()
                .bytes(),
            [1; 32]
        );
        assert_eq!(
            material.get(crate::config::keys::PAGING).unwrap().bytes(),
            [2; 32]
        );
        assert!(material.require(&c).is_ok());
        // The file can be named from the environment too; a bad variable names itself.
        let vars = [
            ("ASSENT_KEYS__FILE", "none.toml"),
            ("ASSENT_LISTEN", "127.0.0.1:1"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let e = Config::load_with_env(&path, vars).unwrap_err().to_string();
        assert!(e.contains("keys.file") && e.contains("none.toml"), "{e}");
        let bad = [("ASSENT_CONSORTIUM_KEY_HEX".to_owned(), "ab".to_owned())];
        let e = Config::load_with_env(&path, bad).unwrap_err().to_string();
        assert!(e.contains("ASSENT_CONSORTIUM_KEY_HEX"), "{e}");
        // A file others may read is refused.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = Config::load_with_env(&path, []).unwrap_err().to_string();
            assert!(e.contains("keys.file") && e.contains("mode 0644"), "{e}");
        }
    }
}
