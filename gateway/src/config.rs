//! Configuration: one TOML file, then `ASSENT_…` environment overrides, loaded once into
//! plain structs and checked, with the keys of the key file it names and of the environment
//! (`keys.rs`: keys are never taken from this file) and a Fabric ledger's files read. Every
//! error names the key at fault. This file is the loader and the top of the tree; each table
//! has its own file (`sites.rs`, `auth.rs`, `ledger.rs`, `receipts.rs`, `audit.rs`,
//! `portal.rs`, `break_glass.rs`, `cache.rs`, `paging.rs`, `log.rs`, `fhir.rs`) with its checks, and the
//! tables of other crates are read as those crates' own types (`assent_fabric::FabricConfig`,
//! `assent_auth::ClaimNames`).
//!
//! Leaves out: reading secrets from vaults, reloading (a restart applies a new file; site
//! adapter files, which this file only names, reload on their own: `services/adapters.rs`).

pub mod audit;
pub mod auth;
pub mod break_glass;
pub mod cache;
pub mod fhir;
pub mod keys;
pub mod ledger;
pub mod log;
pub mod network;
pub mod paging;
pub mod portal;
pub mod receipts;
pub mod sites;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::keys::{KeyFileError, KeyMaterial};
use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use audit::{AuditConfig, ConsoleConfig};
pub use auth::{AuthConfig, DEFAULT_CONSENT_ADMIN_SCOPE, IssuerSettings, issuer_id};
pub use break_glass::BreakGlassConfig;
pub use cache::CacheConfig;
pub use fhir::FhirConfig;
pub use ledger::{LedgerBackend, LedgerConfig};
pub use log::{LogConfig, LogFormat};
pub use network::NetworkConfig;
pub use paging::PagingConfig;
pub use portal::PortalConfig;
pub use receipts::ReceiptsConfig;
pub use sites::{
    CircuitBreakerConfig, OperationLevel, OperationOutput, OperationRule, SiteConfig, UpstreamAuth,
    is_valid_site_id,
};

/// Top-level keys that environment variables may override (`ASSENT_LISTEN`,
/// `ASSENT_DATABASE_URL`, `ASSENT_SITES__ST_MARY__UPSTREAM`, …). Other `ASSENT_` variables
/// (such as the test suite's `ASSENT_TEST_DATABASE_URL`) are not configuration. How a
/// variable's name becomes a key: [`env_key`].
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
    "portal",
    "break_glass",
    "cache",
    "fhir",
    "network",
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
    /// The patient portal at `/portal/` (absent: it answers 404).
    #[serde(default)]
    pub portal: Option<PortalConfig>,
    #[serde(default)]
    pub break_glass: BreakGlassConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub fhir: FhirConfig,
    /// The network level: deadlines of federated requests.
    #[serde(default)]
    pub network: NetworkConfig,
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

/// A configuration that could not be loaded; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(String),
    /// The values do not fit the configuration's types; `paths` are the keys at fault.
    #[error("{message}")]
    Extract { message: String, paths: Vec<String> },
    #[error("invalid value for key `{key}`: {message}")]
    Invalid { key: String, message: String },
    /// A value an environment variable set is at fault.
    #[error("invalid value in environment variable {variable} (key `{key}`): {message}")]
    Variable {
        variable: String,
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// The error said in terms of the environment variable that set the key at fault, when a
    /// variable did (`overrides`: variable and the key it set), instead of figment's source.
    fn naming_variables(self, overrides: &[(String, String)]) -> ConfigError {
        let variable_of = |path: &str| {
            overrides
                .iter()
                .rev()
                .find(|(_, key)| path == key || path.starts_with(&format!("{key}.")))
                .map(|(var, key)| (var.clone(), key.clone()))
        };
        match self {
            ConfigError::Extract { message, paths } => {
                match paths.iter().find_map(|p| variable_of(p)) {
                    Some((variable, key)) => ConfigError::Variable {
                        variable,
                        key,
                        // Only the reason: figment's source is this file's code, not the user's.
                        message: message
                            .split(" for key ")
                            .next()
                            .unwrap_or(&message)
                            .to_owned(),
                    },
                    None => ConfigError::Extract { message, paths },
                }
            }
            ConfigError::Invalid { key, message } => match variable_of(&key) {
                Some((variable, _)) => ConfigError::Variable {
                    variable,
                    key,
                    message,
                },
                None => ConfigError::Invalid { key, message },
            },
            other => other,
        }
    }

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
        let file = Figment::new().merge(Toml::file(path));
        // The file's site ids, which a variable's site segment is matched against.
        let site_ids: Vec<String> = file
            .find_value("sites")
            .ok()
            .and_then(|v| v.into_dict())
            .map(|sites| sites.into_keys().collect())
            .unwrap_or_default();
        let mut figment = file;
        let mut overrides = Vec::new();
        for (name, value) in &vars {
            let Some(rest) = name.strip_prefix("ASSENT_") else {
                continue;
            };
            let Some(key) = env_key(rest, &site_ids).map_err(|message| {
                ConfigError::Load(format!("environment variable {name}: {message}"))
            })?
            else {
                continue;
            };
            let value = value
                .parse::<figment::value::Value>()
                .unwrap_or_else(|never| match never {});
            figment = figment.merge(Serialized::default(&key, value));
            overrides.push((name.clone(), key));
        }
        let config_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::from_figment(figment, Some(config_dir), &vars)
            .map_err(|e| e.naming_variables(&overrides))
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
    /// they name is read, the environment is not). The value is taken through serde_json's
    /// tree into figment's own values: with serde_json's `arbitrary_precision` (numbers kept
    /// as text, workspace-wide) a serde_json number serialises as a private one-field struct,
    /// which figment would read as a table where a number is expected.
    pub fn from_value<T: Serialize>(value: T) -> Result<Config, ConfigError> {
        let value = serde_json::to_value(value).map_err(|e| ConfigError::Load(e.to_string()))?;
        Self::from_figment(
            Figment::new().merge(Serialized::defaults(figment_value(value))),
            None,
            &[],
        )
    }

    fn from_figment(
        figment: Figment,
        config_dir: Option<PathBuf>,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut config: Config = figment.extract().map_err(|e| {
            // figment's message names the key path (`for key "sites.a.upstream"`).
            let mut messages: Vec<String> = Vec::new();
            let mut paths = Vec::new();
            for e in e {
                paths.push(e.path.join("."));
                messages.push(e.to_string());
            }
            messages.dedup();
            ConfigError::Extract {
                message: messages.join("; "),
                paths,
            }
        })?;
        config.config_dir = config_dir;
        config.validate_and_load()?;
        config.key_material =
            KeyMaterial::load(config.key_file_path().as_deref(), env).map_err(|e| match e {
                KeyFileError::Environment { var, .. } => ConfigError::invalid(var, e.to_string()),
                _ => ConfigError::invalid("keys.file", e.to_string()),
            })?;
        Ok(config)
    }

    /// Checks what serde cannot (value ranges and relations between keys), table by table,
    /// and loads what the checked values name (a Fabric ledger's files).
    fn validate_and_load(&mut self) -> Result<(), ConfigError> {
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
        self.receipts.validate()?;
        self.audit.validate()?;
        if let Some(portal) = &self.portal {
            portal.validate()?;
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
        self.paging.validate()?;
        self.network.validate()?;
        self.ledger.validate_and_load()?;
        self.auth.validate()?;
        self.break_glass.validate()?;
        self.cache.validate()?;
        for (id, site) in &self.sites {
            site.validate(id)?;
        }
        Ok(())
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

    /// The public base URL, without a trailing slash, for a server listening on `bound`.
    pub fn public_base_for(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(u) => u.as_str().trim_end_matches('/').to_owned(),
            None => format!("http://{bound}"),
        }
    }
}

/// Whether `url`'s host is a loopback address (`localhost`, `127.0.0.0/8`, `::1`): where the
/// configuration allows plain `http`.
/// The configuration key an `ASSENT_…` variable sets, from its name after the prefix: `__`
/// separates keys, lower-cased (`SITES__ST_MARY__TIMEOUT_MS`). `None` when it is not
/// configuration (the top key is not in [`ENV_KEYS`]).
///
/// Shells allow no `-` in a variable's name, so a site id's `-` may be spelled `_`: the site
/// segment is matched against the file's site ids (`site_ids`), an id written exactly first,
/// then one that reads the same with `_` for each `-` (`ST_MARY` sets `sites.st-mary`). Two
/// ids that read the same that way cannot be told apart: an error. A site the file does not
/// name is taken as written (a new site from the environment).
pub fn env_key(name: &str, site_ids: &[String]) -> Result<Option<String>, String> {
    let mut segments: Vec<String> = name.split("__").map(str::to_ascii_lowercase).collect();
    let top = segments.first().map(String::as_str).unwrap_or_default();
    if !ENV_KEYS.contains(&top) {
        return Ok(None);
    }
    if top == "sites"
        && let Some(given) = segments.get(1).cloned()
        && !site_ids.contains(&given)
    {
        let spelled = |id: &String| id.to_ascii_lowercase().replace('-', "_") == given;
        let matching: Vec<&String> = site_ids.iter().filter(|id| spelled(id)).collect();
        match matching.as_slice() {
            [] => {}
            [id] => segments[1] = (*id).clone(),
            several => {
                let ids: Vec<&str> = several.iter().map(|s| s.as_str()).collect();
                return Err(format!(
                    "`{given}` could be site {}: name the site as written in the file",
                    ids.join(" or ")
                ));
            }
        }
    }
    Ok(Some(segments.join(".")))
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
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

/// A serde_json tree as figment's values: numbers as the first of u64, i64 and f64 that
/// holds them (a number none holds stays its text, which figment then refuses where a number
/// is expected), null as unit. The demo writes its configuration out as TOML through this too:
/// a tree of `arbitrary_precision` numbers is not TOML numbers by itself.
pub(crate) fn figment_value(value: serde_json::Value) -> figment::value::Value {
    use figment::value::{Dict, Empty, Value as F};
    match value {
        serde_json::Value::Null => F::from(Empty::Unit),
        serde_json::Value::Bool(b) => F::from(b),
        serde_json::Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => F::from(u),
            (None, Some(i), _) => F::from(i),
            (None, None, Some(f)) => F::from(f),
            (None, None, None) => F::from(n.to_string()),
        },
        serde_json::Value::String(s) => F::from(s),
        serde_json::Value::Array(items) => {
            F::from(items.into_iter().map(figment_value).collect::<Vec<_>>())
        }
        serde_json::Value::Object(map) => F::from(
            map.into_iter()
                .map(|(k, v)| (k, figment_value(v)))
                .collect::<Dict>(),
        ),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use assent_consent::SitePolicy;
    use assent_fhir::FhirVersion;

    use super::*;

    pub(crate) const GOOD: &str = r#"
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

    /// A configuration built from a serde_json tree (the tests', the demo's) reads its
    /// numbers as numbers, with serde_json's `arbitrary_precision` on.
    #[test]
    fn a_configuration_from_a_json_tree_reads_its_numbers() {
        let c = Config::from_value(serde_json::json!({
            "listen": "127.0.0.1:9000", "database_url": "/tmp/x.db", "max_body_bytes": 4096,
            "sites": {"st-mary": {"upstream": "http://127.0.0.1:7000/fhir",
                "fhir_version": "R4", "default_policy": "opt-out", "timeout_ms": 1500}}
        }))
        .unwrap();
        assert_eq!(c.max_body_bytes, 4096);
        assert_eq!(c.sites["st-mary"].timeout(), Duration::from_millis(1500));
        let negative = Config::from_value(serde_json::json!({
            "listen": "127.0.0.1:9000", "database_url": "/tmp/x.db", "max_body_bytes": -1,
        }));
        assert!(negative.is_err());
    }

    pub(crate) fn error_of(text: &str) -> String {
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
    }

    /// A site id with hyphens can be set from a shell, `_` for `-`; a bad value's error names
    /// the variable, not figment's source; ambiguous spellings are refused.
    #[test]
    fn a_hyphenated_site_id_is_spelled_with_underscores_and_errors_name_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("assent.toml");
        let two = format!(
            "{GOOD}\n[sites.north-general-2]\nupstream = \"http://127.0.0.1:7001/fhir\"\n\
             fhir_version = \"STU3\"\ndefault_policy = \"opt-in\""
        );
        std::fs::write(&path, &two).unwrap();
        let load = |vars: &[(&str, &str)]| {
            Config::load_with_env(
                &path,
                vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            )
        };
        let c = load(&[
            ("ASSENT_SITES__ST_MARY__TIMEOUT_MS", "1234"),
            (
                "ASSENT_SITES__NORTH_GENERAL_2__UPSTREAM",
                "http://127.0.0.1:7002/fhir",
            ),
        ])
        .unwrap();
        assert_eq!(c.sites["st-mary"].timeout_ms, 1234);
        assert_eq!(
            c.sites["north-general-2"].upstream.as_str(),
            "http://127.0.0.1:7002/fhir"
        );
        assert_eq!(c.sites.len(), 2, "no new site `st_mary` was made");
        // A bad value: the variable is named, not a source path.
        let e = load(&[("ASSENT_SITES__ST_MARY__TIMEOUT_MS", "soon")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ASSENT_SITES__ST_MARY__TIMEOUT_MS")
                && e.contains("sites.st-mary.timeout_ms"),
            "{e}"
        );
        assert!(!e.contains(".rs"), "a source path in {e}");
        let e = load(&[("ASSENT_SITES__ST_MARY__UPSTREAM", "ftp://x")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("ASSENT_SITES__ST_MARY__UPSTREAM"), "{e}");
        // A value from the file is still named by its key.
        std::fs::write(&path, GOOD.replace("\"R4\"", "\"R9\"")).unwrap();
        let e = load(&[]).unwrap_err().to_string();
        assert!(e.contains("fhir_version") && !e.contains("ASSENT_"), "{e}");
        // Two ids that read the same with `_` for `-`: refused, naming both.
        let ids = ["a-b_c".to_owned(), "a_b-c".to_owned()];
        let e = env_key("SITES__A_B_C__TIMEOUT_MS", &ids).unwrap_err();
        assert!(e.contains("a-b_c") && e.contains("a_b-c"), "{e}");
        // Exact first; a site the file does not name is taken as written; others are not keys.
        let ids = ["st_mary".to_owned(), "st-mary".to_owned()];
        assert_eq!(
            env_key("SITES__ST_MARY__UPSTREAM", &ids)
                .unwrap()
                .as_deref(),
            Some("sites.st_mary.upstream")
        );
        assert_eq!(
            env_key("SITES__NEW__UPSTREAM", &ids).unwrap().as_deref(),
            Some("sites.new.upstream")
        );
        assert_eq!(env_key("TEST_DATABASE_URL", &ids).unwrap(), None);
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
