//! The gateway's keys, kept apart from the data they protect: the consortium key (turns patient
//! and actor identifiers into the ledger's pseudonyms), the embedded ledger's node signing key,
//! and the HMAC secrets (paging links of FHIR searches and of the audit API, console session
//! cookies, the break-glass webhook's signature). They come from a key file (`[keys] file`,
//! refused when group or others may use it) and then the environment (`ASSENT_…_HEX`, which
//! wins), never from the database: anyone holding the database must not hold the keys too.
//!
//! Also here: which keys a configuration needs ([`KeyMaterial::require`]), the refusal of keys
//! an older version kept in `node_settings` ([`check_database_holds_no_keys`]), the consortium
//! key's check value that stops a gateway from pseudonymising with another key than the one its
//! store was written with ([`check_consortium_key`]), and the `assent keys` commands
//! (`generate`, `export --from-database`). Leaves out using the keys (the consent service,
//! paging, console, break-glass) and rotating them (docs/keys.md).

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::{Config, LedgerBackend};

/// Secret bytes; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    /// The bytes of `hex_text`, if it is hex.
    pub fn from_hex(hex_text: &str) -> Option<Secret> {
        hex::decode(hex_text).ok().map(Secret)
    }

    /// A fresh random 32-byte secret.
    pub fn random() -> Secret {
        Secret(rand::random::<[u8; 32]>().to_vec())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    fn hex(&self) -> String {
        hex::encode(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How long a key must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Length {
    AtLeast32,
    Exactly32,
}

/// One key the gateway knows: its entry in the key file, its environment variable, what it is
/// for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    /// The entry in the key file.
    pub name: &'static str,
    /// The environment variable, which wins over the file.
    pub env: &'static str,
    /// What the key does, for messages.
    pub purpose: &'static str,
    length: Length,
}

impl KeySpec {
    pub fn parse(&self, hex_text: &str) -> Result<Secret, &'static str> {
        let bytes = hex::decode(hex_text.trim()).map_err(|_| "is not hex")?;
        match self.length {
            Length::Exactly32 if bytes.len() != 32 => Err("must be 32 bytes (64 hex digits)"),
            Length::AtLeast32 if bytes.len() < 32 => {
                Err("must be at least 32 bytes (64 hex digits)")
            }
            _ => Ok(Secret(bytes)),
        }
    }
}

/// The consortium's HMAC key: identifiers → the ledger's pseudonyms. Every member of a
/// consortium uses the same; it cannot change without re-keying the ledger (docs/keys.md).
pub const CONSORTIUM: KeySpec = KeySpec {
    name: "consortium_key_hex",
    env: "ASSENT_CONSORTIUM_KEY_HEX",
    purpose: "the consortium key, which turns identifiers into the ledger's pseudonyms",
    length: Length::AtLeast32,
};
/// The Ed25519 seed that signs the embedded ledger's blocks.
pub const NODE: KeySpec = KeySpec {
    name: "node_key_hex",
    env: "ASSENT_NODE_KEY_HEX",
    purpose: "the embedded ledger's block-signing key (an Ed25519 seed)",
    length: Length::Exactly32,
};
/// Signs paging links (FHIR searches and the audit API).
pub const PAGING: KeySpec = KeySpec {
    name: "paging_secret_hex",
    env: "ASSENT_PAGING_SECRET_HEX",
    purpose: "the HMAC key of paging links (FHIR searches, the audit API)",
    length: Length::AtLeast32,
};
/// Signs the compliance console's cookies.
pub const CONSOLE_SESSION: KeySpec = KeySpec {
    name: "console_session_secret_hex",
    env: "ASSENT_CONSOLE_SESSION_SECRET_HEX",
    purpose: "the HMAC key of the console's session cookies",
    length: Length::AtLeast32,
};
/// Signs break-glass webhook bodies (`X-Assent-Signature`); optional.
pub const WEBHOOK: KeySpec = KeySpec {
    name: "webhook_secret_hex",
    env: "ASSENT_WEBHOOK_SECRET_HEX",
    purpose: "the HMAC key of break-glass webhook bodies",
    length: Length::AtLeast32,
};

/// Every key, in the order of the key file.
pub const ALL: [KeySpec; 5] = [CONSORTIUM, NODE, PAGING, CONSOLE_SESSION, WEBHOOK];

/// Where a key was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Environment(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Environment(var) => write!(f, "${var}"),
        }
    }
}

/// The keys found in the key file and the environment; any may be absent.
#[derive(Debug, Clone, Default)]
pub struct KeyMaterial {
    found: BTreeMap<&'static str, (Secret, Source)>,
    /// The key file, when configured.
    file: Option<PathBuf>,
}

/// The key file or a key variable cannot be used. Messages never hold a key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyFileError {
    #[error("cannot read the key file {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error(
        "the key file {path} may be read or written by group or others (mode {mode:04o}): keys in it are refused; `chmod 600 {path}` (or 400)"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("the key file {path} is not valid TOML at line {line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("the key file {path}: `{name}` {problem}")]
    Entry {
        path: PathBuf,
        name: String,
        problem: String,
    },
    #[error("the environment variable {var} {problem}")]
    Environment {
        var: &'static str,
        problem: &'static str,
    },
}

impl KeyMaterial {
    /// Reads `file` (when given), then the key variables among `env`, which win.
    pub fn load(
        file: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<KeyMaterial, KeyFileError> {
        let mut material = KeyMaterial {
            found: BTreeMap::new(),
            file: file.map(Path::to_path_buf),
        };
        if let Some(path) = file {
            for (spec, secret) in read_key_file(path)? {
                material
                    .found
                    .insert(spec.name, (secret, Source::File(path.to_path_buf())));
            }
        }
        for spec in ALL {
            let Some((_, value)) = env.iter().rev().find(|(name, _)| name == spec.env) else {
                continue;
            };
            if value.trim().is_empty() {
                continue;
            }
            let secret = spec
                .parse(value)
                .map_err(|problem| KeyFileError::Environment {
                    var: spec.env,
                    problem,
                })?;
            material
                .found
                .insert(spec.name, (secret, Source::Environment(spec.env)));
        }
        Ok(material)
    }

    /// Keys given directly (tests).
    pub fn from_secrets(secrets: impl IntoIterator<Item = (KeySpec, Secret)>) -> KeyMaterial {
        KeyMaterial {
            found: secrets
                .into_iter()
                .map(|(spec, s)| (spec.name, (s, Source::Environment(spec.env))))
                .collect(),
            file: None,
        }
    }

    pub fn get(&self, spec: KeySpec) -> Option<&Secret> {
        self.found.get(spec.name).map(|(s, _)| s)
    }

    /// Where `spec` was found.
    pub fn source(&self, spec: KeySpec) -> Option<&Source> {
        self.found.get(spec.name).map(|(_, s)| s)
    }

    /// The keys the ledger needs under `config`: the consortium key, and the node key for the
    /// embedded ledger.
    pub fn require_ledger(&self, config: &Config) -> Result<LedgerKeys, MissingKeys> {
        let mut missing = Vec::new();
        let ledger = self.ledger_keys(config, &mut missing);
        match ledger {
            Some(keys) if missing.is_empty() => Ok(keys),
            _ => Err(self.missing(missing)),
        }
    }

    /// Every key a gateway serving `config` needs; the error names all that are missing.
    pub fn require(&self, config: &Config) -> Result<Keys, MissingKeys> {
        let mut missing = Vec::new();
        let ledger = self.ledger_keys(config, &mut missing);
        let paging = self.get(PAGING).cloned();
        if paging.is_none() {
            missing.push(PAGING);
        }
        let console_session = match (&config.audit.console, &config.portal) {
            (None, None) => None,
            _ => {
                let key = self.get(CONSOLE_SESSION).cloned();
                if key.is_none() {
                    missing.push(CONSOLE_SESSION);
                }
                key
            }
        };
        match (ledger, paging) {
            (Some(ledger), Some(paging)) if missing.is_empty() => Ok(Keys {
                ledger,
                paging,
                console_session,
                webhook: self.get(WEBHOOK).cloned(),
            }),
            _ => Err(self.missing(missing)),
        }
    }

    fn ledger_keys(&self, config: &Config, missing: &mut Vec<KeySpec>) -> Option<LedgerKeys> {
        let consortium = self.get(CONSORTIUM).cloned();
        if consortium.is_none() {
            missing.push(CONSORTIUM);
        }
        let node_seed = match config.ledger.backend {
            LedgerBackend::Fabric => None,
            LedgerBackend::Embedded => {
                let seed = self
                    .get(NODE)
                    .and_then(|s| <[u8; 32]>::try_from(s.bytes()).ok());
                if seed.is_none() {
                    missing.push(NODE);
                }
                seed
            }
        };
        Some(LedgerKeys {
            consortium: consortium?,
            node_seed,
        })
    }

    fn missing(&self, keys: Vec<KeySpec>) -> MissingKeys {
        MissingKeys {
            keys,
            file: self.file.clone(),
        }
    }
}

/// The keys of the ledger.
#[derive(Debug, Clone)]
pub struct LedgerKeys {
    pub consortium: Secret,
    /// The embedded ledger's node seed; `None` on Fabric (its identity is `[ledger.fabric]`).
    pub node_seed: Option<[u8; 32]>,
}

/// Every key a serving gateway uses.
#[derive(Debug, Clone)]
pub struct Keys {
    pub ledger: LedgerKeys,
    pub paging: Secret,
    /// With `[audit.console]` or `[portal]` (the portal signs its cookies with it too, under
    /// its own purpose labels).
    pub console_session: Option<Secret>,
    /// Optional: without it, webhook bodies are not signed.
    pub webhook: Option<Secret>,
}

/// Keys the configuration needs that neither the key file nor the environment holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingKeys {
    pub keys: Vec<KeySpec>,
    file: Option<PathBuf>,
}

impl std::error::Error for MissingKeys {}

impl fmt::Display for MissingKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "missing keys: ")?;
        for (i, spec) in self.keys.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "`{}` ({}, or ${})", spec.name, spec.purpose, spec.env)?;
        }
        match &self.file {
            Some(path) => write!(f, ". The key file {} does not hold them", path.display())?,
            None => write!(f, ". No key file is configured ([keys] file)")?,
        }
        write!(
            f,
            ": put them in a key file (mode 0600) or the environment, never in the database. \
             `assent keys generate --out FILE` writes a new key file; a gateway that already \
             has consents needs the consortium key they were written with (docs/keys.md)"
        )
    }
}

/// Reads a key file: checks who may use it, then parses its entries.
fn read_key_file(path: &Path) -> Result<Vec<(KeySpec, Secret)>, KeyFileError> {
    let read = |e: std::io::Error| KeyFileError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let metadata = std::fs::metadata(path).map_err(read)?;
    check_permissions(path, &metadata)?;
    let text = std::fs::read_to_string(path).map_err(read)?;
    parse_key_file(path, &text)
}

#[cfg(unix)]
fn check_permissions(path: &Path, metadata: &std::fs::Metadata) -> Result<(), KeyFileError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_: &Path, _: &std::fs::Metadata) -> Result<(), KeyFileError> {
    Ok(())
}

/// Parses a key file's text: `name = "hex"` entries of [`ALL`], nothing else. Errors name the
/// entry and line, never the value (a TOML error's own message would quote the line).
fn parse_key_file(path: &Path, text: &str) -> Result<Vec<(KeySpec, Secret)>, KeyFileError> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e.span().map_or(0, |span| {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            before.iter().filter(|b| **b == b'\n').count() + 1
        });
        KeyFileError::Syntax {
            path: path.to_path_buf(),
            line,
            message: e.message().to_owned(),
        }
    })?;
    let entry = |name: &str, problem: &str| KeyFileError::Entry {
        path: path.to_path_buf(),
        name: name.to_owned(),
        problem: problem.to_owned(),
    };
    let mut keys = Vec::new();
    for (name, value) in &table {
        let spec = ALL.into_iter().find(|s| s.name == name).ok_or_else(|| {
            entry(
                name,
                &format!("is not a key (expected {})", ALL.map(|s| s.name).join(", ")),
            )
        })?;
        let text = value
            .as_str()
            .ok_or_else(|| entry(name, "must be a string of hex digits"))?;
        keys.push((spec, spec.parse(text).map_err(|p| entry(name, p))?));
    }
    Ok(keys)
}

/// The text of a key file holding `keys`, with a header saying what it is.
pub fn key_file_text(keys: &[(KeySpec, Secret)]) -> String {
    let mut text = String::from(
        "# Assent keys (docs/keys.md). Keep this file mode 0600, readable by the gateway's user\n\
         # only, and never next to the database: with the database, these keys reverse every\n\
         # pseudonym on the ledger and forge paging links and console sessions.\n",
    );
    for spec in ALL {
        if let Some((_, secret)) = keys.iter().find(|(s, _)| *s == spec) {
            text.push_str(&format!(
                "\n# {}\n{} = \"{}\"\n",
                spec.purpose,
                spec.name,
                secret.hex()
            ));
        }
    }
    text
}

/// Writes a new key file at `path`, mode 0600, refusing to replace an existing file.
pub fn write_key_file(path: &Path, keys: &[(KeySpec, Secret)]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(key_file_text(keys).as_bytes())?;
    file.sync_all()
}

/// Fresh keys for a new gateway: consortium, node, paging and console keys.
pub fn generate() -> Vec<(KeySpec, Secret)> {
    [CONSORTIUM, NODE, PAGING, CONSOLE_SESSION]
        .into_iter()
        .map(|spec| (spec, Secret::random()))
        .collect()
}

/// Configuration keys in which versions before the key file took keys, with their
/// environment variables (as the configuration's overrides spelled them).
pub const LEGACY_CONFIG_KEYS: [(&str, &str, KeySpec); 5] = [
    (
        "ledger.consortium_key_hex",
        "ASSENT_LEDGER__CONSORTIUM_KEY_HEX",
        CONSORTIUM,
    ),
    ("ledger.node_key_hex", "ASSENT_LEDGER__NODE_KEY_HEX", NODE),
    ("paging.secret_hex", "ASSENT_PAGING__SECRET_HEX", PAGING),
    (
        "audit.console.session_secret_hex",
        "ASSENT_AUDIT__CONSOLE__SESSION_SECRET_HEX",
        CONSOLE_SESSION,
    ),
    (
        "break_glass.webhook_secret_hex",
        "ASSENT_BREAK_GLASS__WEBHOOK_SECRET_HEX",
        WEBHOOK,
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn hex32(byte: u8) -> String {
        hex::encode([byte; 32])
    }

    fn private_file(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("keys.toml");
        std::fs::write(&path, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        path
    }

    #[test]
    fn the_file_is_read_and_the_environment_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = private_file(
            dir.path(),
            &format!(
                "consortium_key_hex = \"{}\"\npaging_secret_hex = \"{}\"\n",
                hex32(1),
                hex32(2)
            ),
        );
        let env = vec![
            ("ASSENT_PAGING_SECRET_HEX".to_owned(), hex32(3)),
            ("ASSENT_WEBHOOK_SECRET_HEX".to_owned(), String::new()),
            ("HOME".to_owned(), "/root".to_owned()),
        ];
        let keys = KeyMaterial::load(Some(&path), &env).unwrap();
        assert_eq!(keys.get(CONSORTIUM).unwrap().bytes(), [1; 32]);
        assert_eq!(keys.get(PAGING).unwrap().bytes(), [3; 32]);
        assert_eq!(
            keys.source(PAGING),
            Some(&Source::Environment("ASSENT_PAGING_SECRET_HEX"))
        );
        assert_eq!(keys.source(CONSORTIUM), Some(&Source::File(path)));
        assert!(keys.get(WEBHOOK).is_none(), "an empty variable is unset");
        assert!(
            !format!("{keys:?}").contains(&hex32(1)),
            "Debug never shows a key"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_file_others_may_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = private_file(
            dir.path(),
            &format!("paging_secret_hex = \"{}\"\n", hex32(2)),
        );
        for mode in [0o640, 0o604, 0o620, 0o644] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = KeyMaterial::load(Some(&path), &[]).unwrap_err();
            assert_eq!(
                e,
                KeyFileError::Permissions {
                    path: path.clone(),
                    mode
                }
            );
            assert!(e.to_string().contains("chmod 600"), "{e}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(KeyMaterial::load(Some(&path), &[]).is_ok());
    }

    #[test]
    fn bad_entries_are_named_without_their_value() {
        let dir = tempfile::tempdir().unwrap();
        let secret = "ab".repeat(31);
        for (text, needle) in [
            (
                format!("consortium_key_hex = \"{secret}\""),
                "`consortium_key_hex` must be at least 32 bytes",
            ),
            (
                format!("node_key_hex = \"{}\"", "ab".repeat(33)),
                "`node_key_hex` must be 32 bytes",
            ),
            (
                format!("paging_secret = \"{secret}\""),
                "`paging_secret` is not a key",
            ),
            (
                "paging_secret_hex = \"xyz\"".to_owned(),
                "`paging_secret_hex` is not hex",
            ),
            ("paging_secret_hex = 12".to_owned(), "must be a string"),
            (format!("\n\nconsortium_key_hex = \"{secret}"), "at line 3"),
        ] {
            let path = private_file(dir.path(), &text);
            let e = KeyMaterial::load(Some(&path), &[]).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
            assert!(!e.contains(&secret), "the error shows the key: {e}");
        }
        let e = KeyMaterial::load(None, &[("ASSENT_NODE_KEY_HEX".into(), "zz".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("ASSENT_NODE_KEY_HEX is not hex"), "{e}");
        let e = KeyMaterial::load(Some(&dir.path().join("none.toml")), &[]).unwrap_err();
        assert!(matches!(e, KeyFileError::Read { .. }), "{e}");
    }

    const SITE: &str = "[sites.a]\nupstream = \"http://127.0.0.1:9/fhir\"\nfhir_version = \"R4\"\ndefault_policy = \"opt-in\"\n";

    #[test]
    fn what_is_required_follows_the_configuration_and_all_missing_keys_are_named() {
        let config = Config::from_toml(SITE).unwrap();
        let none = KeyMaterial::default();
        let e = none.require(&config).unwrap_err();
        assert_eq!(e.keys, vec![CONSORTIUM, NODE, PAGING]);
        let text = e.to_string();
        for needle in [
            "`consortium_key_hex`",
            "$ASSENT_CONSORTIUM_KEY_HEX",
            "`node_key_hex`",
            "`paging_secret_hex`",
            "No key file is configured",
            "assent keys generate",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        let with_console =
            Config::from_toml(&format!("{SITE}[audit.console]\nclient_id = \"c\"\n")).unwrap();
        let ledger_only = KeyMaterial::from_secrets([
            (CONSORTIUM, Secret::new(vec![1; 32])),
            (NODE, Secret::new(vec![2; 32])),
        ]);
        assert!(ledger_only.require_ledger(&config).is_ok());
        assert_eq!(
            ledger_only.require(&with_console).unwrap_err().keys,
            vec![PAGING, CONSOLE_SESSION]
        );
        let all = KeyMaterial::from_secrets(generate());
        let keys = all.require(&with_console).unwrap();
        assert!(keys.console_session.is_some() && keys.webhook.is_none());
        assert_eq!(keys.ledger.node_seed.map(|s| s.len()), Some(32));
    }

    #[test]
    fn a_generated_file_reads_back_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let keys = generate();
        write_key_file(&path, &keys).unwrap();
        assert!(
            write_key_file(&path, &keys).is_err(),
            "never replaces a file"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let read = KeyMaterial::load(Some(&path), &[]).unwrap();
        for (spec, secret) in &keys {
            assert_eq!(read.get(*spec), Some(secret), "{}", spec.name);
        }
        assert!(read.get(WEBHOOK).is_none());
    }
}
