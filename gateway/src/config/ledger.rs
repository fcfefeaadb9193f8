//! `[ledger]`: which ledger holds consent state and receipt anchors (the embedded ledger, or a
//! Fabric channel whose `[ledger.fabric]` table is `assent-fabric`'s own [`FabricConfig`]),
//! and the consent administrators. A Fabric configuration is checked and its files read once,
//! when the configuration is loaded: the loaded [`FabricConnection`] is what the gateway
//! connects with.
//!
//! Leaves out: the ledger's keys (the key file, `keys.rs`) and opening the ledger
//! (`app.rs`, `services/consent.rs`).

use std::path::Path;

use assent_fabric::{FabricConfig, FabricConnection};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, is_loopback};

/// The consent ledger: the embedded ledger in the gateway's store (the default), or a
/// Hyperledger Fabric channel (`backend = "fabric"` with a `[ledger.fabric]` table).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// `embedded` (default) or `fabric`.
    #[serde(default)]
    pub backend: LedgerBackend,
    /// `[ledger.fabric]`: the peer the gateway talks to (Fabric Gateway service, Fabric
    /// 2.4+), its TLS, the gateway's identity in its organization's MSP, the channel and
    /// chaincode, and call deadlines. Required with `backend = "fabric"`, refused without.
    /// Files are PEM; every one is read, and the key checked against the certificate, when
    /// the configuration is loaded.
    #[serde(default)]
    pub fabric: Option<FabricConfig>,
    /// Moved to the key file (`consortium_key_hex`): named only to say so.
    #[serde(default, skip_serializing)]
    pub consortium_key_hex: Option<figment::value::Value>,
    /// Moved to the key file (`node_key_hex`): named only to say so.
    #[serde(default, skip_serializing)]
    pub node_key_hex: Option<figment::value::Value>,
    /// Caller ids (`subject@issuer`) with the consent-administrator role: they manage any
    /// patient's consents through `/consent`, like issuers' `admin_subjects` and tokens with
    /// their issuer's `consent_admin_scope` (SMART `Consent` scopes alone never suffice; see
    /// `http/consent_access.rs`).
    #[serde(default)]
    pub consent_admins: Vec<String>,
    /// `[ledger.fabric]` loaded (files read, key checked against the certificate, deadlines
    /// applied), with `backend = "fabric"`; set when the configuration is loaded.
    #[serde(skip)]
    pub fabric_connection: Option<FabricConnection>,
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

impl LedgerConfig {
    /// Checks the backend against its table, and a Fabric table's values and files; then
    /// loads the Fabric connection.
    pub(super) fn validate_and_load(&mut self) -> Result<(), ConfigError> {
        match (self.backend, &self.fabric) {
            (LedgerBackend::Embedded, None) => Ok(()),
            (LedgerBackend::Embedded, Some(_)) => Err(ConfigError::invalid(
                "ledger.backend",
                "a [ledger.fabric] table is configured but the backend is `embedded`: set backend = \"fabric\" or remove the table",
            )),
            (LedgerBackend::Fabric, None) => Err(ConfigError::invalid(
                "ledger.fabric",
                "backend = \"fabric\" needs a [ledger.fabric] table (peer_endpoint, msp_id, cert_file, key_file, channel, chaincode)",
            )),
            (LedgerBackend::Fabric, Some(fabric)) => {
                validate_fabric(fabric)?;
                self.fabric_connection = Some(connect(fabric)?);
                Ok(())
            }
        }
    }
}

fn at(field: &str) -> String {
    format!("ledger.fabric.{field}")
}

/// The files of a Fabric table, by key.
fn files(fabric: &FabricConfig) -> [(&'static str, Option<&Path>); 5] {
    [
        ("cert_file", Some(fabric.cert_file.as_path())),
        ("key_file", Some(fabric.key_file.as_path())),
        ("tls_ca_file", fabric.tls_ca_file.as_deref()),
        (
            "tls_client_cert_file",
            fabric.tls_client_cert_file.as_deref(),
        ),
        ("tls_client_key_file", fabric.tls_client_key_file.as_deref()),
    ]
}

/// Checks what can be checked before loading: the endpoint and its TLS, the names, the
/// deadlines, and the files (existence, PEM contents).
fn validate_fabric(fabric: &FabricConfig) -> Result<(), ConfigError> {
    let endpoint = url::Url::parse(&fabric.peer_endpoint)
        .map_err(|e| ConfigError::invalid(at("peer_endpoint"), e.to_string()))?;
    match endpoint.scheme() {
        "https" if fabric.tls_ca_file.is_none() => {
            return Err(ConfigError::invalid(
                at("tls_ca_file"),
                "required with an https peer_endpoint (the CA of the peer's TLS certificate)",
            ));
        }
        "https" => {}
        "http" if is_loopback(&endpoint) => {}
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
        ("msp_id", &fabric.msp_id),
        ("channel", &fabric.channel),
        ("chaincode", &fabric.chaincode),
    ] {
        if value.trim().is_empty() {
            return Err(ConfigError::invalid(at(name), "must not be empty"));
        }
    }
    if fabric.tls_client_cert_file.is_some() != fabric.tls_client_key_file.is_some() {
        return Err(ConfigError::invalid(
            at("tls_client_cert_file"),
            "tls_client_cert_file and tls_client_key_file go together (mutual TLS)",
        ));
    }
    for (name, ms) in [
        ("connect_timeout_ms", fabric.connect_timeout_ms),
        ("evaluate_timeout_ms", fabric.evaluate_timeout_ms),
        ("endorse_timeout_ms", fabric.endorse_timeout_ms),
        ("submit_timeout_ms", fabric.submit_timeout_ms),
        ("commit_timeout_ms", fabric.commit_timeout_ms),
    ] {
        if ms == Some(0) {
            return Err(ConfigError::invalid(at(name), "must be above 0"));
        }
    }
    for (name, file) in files(fabric) {
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
        ("tls_ca_file", &fabric.tls_ca_file),
        ("tls_client_cert_file", &fabric.tls_client_cert_file),
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
    if let Some(file) = &fabric.tls_client_key_file {
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
    Ok(())
}

/// Reads every file and checks the key against the certificate: what the gateway connects
/// with. Errors name the key at fault.
fn connect(fabric: &FabricConfig) -> Result<FabricConnection, ConfigError> {
    use assent_fabric::{ConfigError as FabricError, IdentityError};
    fabric.load().map_err(|e| {
        let key = match &e {
            FabricError::Identity(IdentityError::Read { path, .. })
            | FabricError::Read { path, .. } => key_of_path(fabric, path),
            FabricError::Identity(IdentityError::NoMspId) => at("msp_id"),
            FabricError::Identity(IdentityError::Certificate(_) | IdentityError::NotP256) => {
                at("cert_file")
            }
            FabricError::Identity(IdentityError::PrivateKey | IdentityError::KeyMismatch) => {
                at("key_file")
            }
            FabricError::Invalid(_) if fabric.channel.is_empty() => at("channel"),
            FabricError::Invalid(_) if fabric.chaincode.is_empty() => at("chaincode"),
            FabricError::Invalid(_) => at("tls_client_cert_file"),
            FabricError::Connect(_) => at("peer_endpoint"),
        };
        let message = match &e {
            FabricError::Identity(IdentityError::KeyMismatch) => format!(
                "the private key does not match the certificate in {}",
                fabric.cert_file.display()
            ),
            _ => e.to_string(),
        };
        ConfigError::invalid(key, message)
    })
}

/// Which key names the file at `path` (the certificate's when none does).
fn key_of_path(fabric: &FabricConfig, path: &str) -> String {
    let name = files(fabric)
        .iter()
        .find(|(_, p)| p.is_some_and(|p| p.display().to_string() == path))
        .map_or("cert_file", |(name, _)| name);
    at(name)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;
    use crate::config::tests::{GOOD, error_of};

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
        // Loaded once, with the configuration.
        let connection = c.ledger.fabric_connection.as_ref().unwrap();
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
        assert_eq!(fabric.commit_timeout_ms, Some(2500));
        let connection = c.ledger.fabric_connection.unwrap();
        assert_eq!(connection.channel, "other-channel");
        assert_eq!(
            connection.options.calls.commit_status_timeout,
            Duration::from_millis(2500)
        );
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
}
