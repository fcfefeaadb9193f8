//! The gateway's keys and its store: the refusal of keys an older version kept in the store
//! (`node_settings`), the consortium key's check value that stops a gateway from pseudonymising
//! with another key than the one its store was written with, and `assent keys export
//! --from-database`. The keys themselves come from the key file or the environment
//! (`config/keys.rs`), never from the store.

use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::config::keys::{
    CONSOLE_SESSION, CONSORTIUM, KeySpec, LEGACY_CONFIG_KEYS, NODE, PAGING, Secret, Source,
    write_key_file,
};
use crate::store::{Store, StoreError};

/// The `node_settings` entries in which versions before the key file kept their keys.
pub const DATABASE_KEY_SETTINGS: [(&str, KeySpec); 2] =
    [("consortium_key", CONSORTIUM), ("node_key", NODE)];

/// The database holds keys an older version kept there.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseKeysError {
    #[error(
        "the database holds keys that an older version kept next to the data they protect ({names}): \
         they are not used. Move them into a key file with \
         `assent keys export --from-database --config FILE --out KEYFILE` (it writes KEYFILE, mode \
         0600, then deletes them from the database), and name it in [keys] file"
    )]
    Present { names: String },
    #[error("the database cannot be read for keys: {0}")]
    Store(#[from] StoreError),
}

/// Refuses a store in which an older version kept its keys: they are not used silently, and
/// the operator is told how to move them.
pub fn check_database_holds_no_keys(store: &Store) -> Result<(), DatabaseKeysError> {
    let mut names = Vec::new();
    for (setting, _) in DATABASE_KEY_SETTINGS {
        if store.setting(setting)?.is_some() {
            names.push(setting);
        }
    }
    if names.is_empty() {
        Ok(())
    } else {
        Err(DatabaseKeysError::Present {
            names: names.join(", "),
        })
    }
}

/// The `node_settings` entry holding the consortium key's check value.
pub const CONSORTIUM_CHECK_SETTING: &str = "consortium_key_check";

/// A value that tells whether a key is the one a store was written with, and nothing else:
/// HMAC-SHA256 of a fixed label under the key.
pub fn check_value(key: &Secret) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(b"assent consortium key check v1");
    hex::encode(mac.finalize().into_bytes())
}

/// The consortium key is not the one the store's pseudonyms were made with.
#[derive(Debug, thiserror::Error)]
pub enum ConsortiumKeyCheckError {
    #[error(
        "the consortium key ({source_}) is not the one this database's pseudonyms were made with: \
         consents and receipts written under the other key would not be found (on an opt-out site \
         a patient's refusal would be missed). Supply the key this database was written with; to \
         change it, follow docs/keys.md (re-keying)"
    )]
    Mismatch { source_: String },
    #[error("the database cannot be read: {0}")]
    Store(#[from] StoreError),
}

/// Records the consortium key's check value at the first start, and refuses another key later.
pub fn check_consortium_key(
    store: &Store,
    key: &Secret,
    source: Option<&Source>,
) -> Result<(), ConsortiumKeyCheckError> {
    let expected = check_value(key);
    let stored = store.setting_or_insert(CONSORTIUM_CHECK_SETTING, || expected.clone())?;
    if stored == expected {
        Ok(())
    } else {
        Err(ConsortiumKeyCheckError::Mismatch {
            source_: source.map_or("given".to_owned(), Source::to_string),
        })
    }
}

/// `assent keys export --from-database`: what was moved.
#[derive(Debug)]
pub struct Export {
    /// Key names written, each with where it came from.
    pub written: Vec<(KeySpec, &'static str)>,
    /// `node_settings` entries deleted.
    pub deleted: Vec<&'static str>,
    /// Legacy configuration keys the operator must now remove.
    pub legacy_config_keys: Vec<&'static str>,
}

/// Why an export did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Bad usage or configuration (exit 64).
    #[error("{0}")]
    Usage(String),
    #[error("nothing to move: neither the database nor the configuration holds keys")]
    Nothing,
    #[error("{0}")]
    Failed(String),
}

/// Moves the keys an older version kept in the database (`node_settings`) and in its
/// configuration file into a new key file at `out` (mode 0600, never replacing a file), then
/// deletes them from the database. A key the configuration named wins over the database's, as
/// it did then. Paging and console secrets the old version made at each start are made fresh.
pub fn export_from_database(
    config_path: &Path,
    env: &[(String, String)],
    out: &Path,
) -> Result<Export, ExportError> {
    let text = std::fs::read_to_string(config_path)
        .map_err(|e| ExportError::Usage(format!("{}: {e}", config_path.display())))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        ExportError::Usage(format!("{}: {}", config_path.display(), e.message()))
    })?;
    let lookup = |dotted: &str| -> Option<String> {
        let mut value: Option<&toml::Value> = None;
        for (i, part) in dotted.split('.').enumerate() {
            value = if i == 0 {
                table.get(part)
            } else {
                value?.as_table()?.get(part)
            };
        }
        value?.as_str().map(str::to_owned)
    };
    let env_value = |name: &str| {
        env.iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let database_url = env_value("ASSENT_DATABASE_URL")
        .or_else(|| lookup("database_url"))
        .unwrap_or_else(|| "assent.db".to_owned());
    if out.exists() {
        return Err(ExportError::Usage(format!(
            "{} exists: the export never replaces a file",
            out.display()
        )));
    }
    let store = Store::open(&database_url)
        .map_err(|e| ExportError::Failed(format!("the database {database_url}: {e}")))?;
    let mut chosen: Vec<(KeySpec, Secret, &'static str)> = Vec::new();
    let mut legacy_config_keys = Vec::new();
    for (key, var, spec) in LEGACY_CONFIG_KEYS {
        let Some(value) = env_value(var).or_else(|| lookup(key)) else {
            continue;
        };
        legacy_config_keys.push(key);
        let secret = spec
            .parse(&value)
            .map_err(|p| ExportError::Usage(format!("{key} (or ${var}) {p}")))?;
        chosen.push((spec, secret, "the configuration"));
    }
    let mut deleted = Vec::new();
    for (setting, spec) in DATABASE_KEY_SETTINGS {
        let Some(value) = store
            .setting(setting)
            .map_err(|e| ExportError::Failed(e.to_string()))?
        else {
            continue;
        };
        deleted.push(setting);
        if chosen.iter().any(|(s, _, _)| *s == spec) {
            continue;
        }
        let secret = spec.parse(&value).map_err(|p| {
            ExportError::Failed(format!("node_settings `{setting}` in the database {p}"))
        })?;
        chosen.push((spec, secret, "the database"));
    }
    if chosen.is_empty() {
        return Err(ExportError::Nothing);
    }
    for spec in [PAGING, CONSOLE_SESSION] {
        if !chosen.iter().any(|(s, _, _)| *s == spec) {
            chosen.push((spec, Secret::random(), "made now"));
        }
    }
    let keys: Vec<(KeySpec, Secret)> = chosen
        .iter()
        .map(|(spec, secret, _)| (*spec, secret.clone()))
        .collect();
    write_key_file(out, &keys)
        .map_err(|e| ExportError::Failed(format!("cannot write {}: {e}", out.display())))?;
    for setting in &deleted {
        store.delete_setting(setting).map_err(|e| {
            ExportError::Failed(format!(
                "{} was written, but `{setting}` could not be deleted from the database: {e}",
                out.display()
            ))
        })?;
    }
    let written = chosen
        .into_iter()
        .map(|(spec, _, from)| (spec, from))
        .collect();
    Ok(Export {
        written,
        deleted,
        legacy_config_keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::keys::*;

    fn hex32(byte: u8) -> String {
        hex::encode([byte; 32])
    }

    #[test]
    fn the_consortium_check_refuses_another_key_on_every_backend() {
        for t in crate::store::testing::all() {
            let first = Secret::new(vec![7; 32]);
            check_consortium_key(&t.store, &first, None).unwrap();
            check_consortium_key(&t.store, &first, None).unwrap();
            let stored = t.store.setting(CONSORTIUM_CHECK_SETTING).unwrap().unwrap();
            assert_ne!(
                stored,
                hex::encode([7u8; 32]),
                "the check value is not the key"
            );
            let source = Source::Environment(CONSORTIUM.env);
            let e = check_consortium_key(&t.store, &Secret::new(vec![8; 32]), Some(&source))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("$ASSENT_CONSORTIUM_KEY_HEX") && e.contains("docs/keys.md"),
                "{e}"
            );
        }
    }

    #[test]
    fn keys_in_the_database_are_refused_then_exported_and_deleted() {
        for t in crate::store::testing::all() {
            check_database_holds_no_keys(&t.store).unwrap();
            t.store.put_setting("consortium_key", &hex32(4)).unwrap();
            t.store.put_setting("node_key", &hex32(5)).unwrap();
            let e = check_database_holds_no_keys(&t.store)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("consortium_key, node_key")
                    && e.contains("assent keys export --from-database"),
                "{e}"
            );
            let dir = tempfile::tempdir().unwrap();
            let config = dir.path().join("assent.toml");
            // The configuration's node key wins, as it did when the old version ran.
            std::fs::write(
                &config,
                format!("[ledger]\nnode_key_hex = \"{}\"\n", hex32(6)),
            )
            .unwrap();
            let out = dir.path().join("keys.toml");
            let env = vec![("ASSENT_DATABASE_URL".to_owned(), t.url.clone())];
            let export = export_from_database(&config, &env, &out).unwrap();
            assert_eq!(export.deleted, vec!["consortium_key", "node_key"]);
            assert_eq!(export.legacy_config_keys, vec!["ledger.node_key_hex"]);
            let keys = KeyMaterial::load(Some(&out), &[]).unwrap();
            assert_eq!(keys.get(CONSORTIUM).unwrap().bytes(), [4; 32]);
            assert_eq!(keys.get(NODE).unwrap().bytes(), [6; 32]);
            assert!(keys.get(PAGING).is_some() && keys.get(CONSOLE_SESSION).is_some());
            check_database_holds_no_keys(&t.store).unwrap();
            // A second run has nothing to move, and never replaces the file.
            assert!(matches!(
                export_from_database(&config, &env, &out),
                Err(ExportError::Usage(_))
            ));
            let other = dir.path().join("again.toml");
            std::fs::write(&config, "").unwrap();
            assert!(matches!(
                export_from_database(&config, &env, &other),
                Err(ExportError::Nothing)
            ));
            assert!(!other.exists());
        }
    }
}
