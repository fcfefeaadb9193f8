//! Site adapters at run time: each configured site's adapter, loaded from its file at start
//! (a broken adapter stops the start), held so that a reload swaps it atomically, and applied
//! by the pipeline: to search values going to the site and to resources coming back.
//!
//! **Invariant:** a reload that fails keeps the adapter in use; requests never see a
//! half-loaded adapter (one `ArcSwap` store per successful load).
//! Owns: reading adapter and ConceptMap files, reload (SIGHUP, the admin API), the query
//! rewriting around `SiteAdapter::search_value`. Leaves out: what adapters do
//! (`assent_adapters::site`), the admin handlers (`adapter_api.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use assent_adapters::site::{AdapterError, Direction, SiteAdapter};
use assent_fhir::{FhirVersion, Issue};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use crate::config::Config;

/// A site's adapter could not be loaded: the site, and the file, line and key at fault.
#[derive(Debug, Clone, thiserror::Error)]
#[error("sites.{site}.adapter: {error}")]
pub struct AdapterLoadError {
    pub site: String,
    pub error: AdapterError,
}

/// One site's adapter and where it comes from.
pub struct AdapterSlot {
    pub path: PathBuf,
    version: FhirVersion,
    current: ArcSwap<SiteAdapter>,
}

impl AdapterSlot {
    /// The adapter in use.
    pub fn current(&self) -> Arc<SiteAdapter> {
        self.current.load_full()
    }
}

/// The adapters of every site that has one.
#[derive(Default)]
pub struct Adapters {
    by_site: HashMap<String, AdapterSlot>,
}

/// Reads and loads the adapter file at `path` for a site speaking `version`. ConceptMap files
/// are read relative to the adapter file's directory.
pub fn load_file(path: &Path, version: FhirVersion) -> Result<SiteAdapter, AdapterError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| AdapterError {
        file: name.clone(),
        line: None,
        key: None,
        message: format!("cannot be read: {e}"),
    })?;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    SiteAdapter::load(&name, &text, version, &mut |file| {
        let map = dir.join(file);
        std::fs::read_to_string(&map).map_err(|e| format!("{}: {e}", map.display()))
    })
}

impl Adapters {
    /// Loads every configured site adapter; the first broken one is the error.
    pub fn load(config: &Config) -> Result<Adapters, AdapterLoadError> {
        let mut by_site = HashMap::new();
        for (id, site) in &config.sites {
            let Some(path) = config.adapter_path(site) else {
                continue;
            };
            let adapter =
                load_file(&path, site.fhir_version).map_err(|error| AdapterLoadError {
                    site: id.clone(),
                    error,
                })?;
            by_site.insert(
                id.clone(),
                AdapterSlot {
                    path,
                    version: site.fhir_version,
                    current: ArcSwap::from_pointee(adapter),
                },
            );
        }
        Ok(Adapters { by_site })
    }

    /// The adapter site `site` uses now, if it has one.
    pub fn get(&self, site: &str) -> Option<Arc<SiteAdapter>> {
        self.by_site.get(site).map(AdapterSlot::current)
    }

    pub fn slot(&self, site: &str) -> Option<&AdapterSlot> {
        self.by_site.get(site)
    }

    /// Sites with an adapter, sorted.
    pub fn sites(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.by_site.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }

    /// Reads site `site`'s adapter file again and swaps it in; on error the adapter in use
    /// stays. `None` when the site has no adapter. Blocking (file reads).
    pub fn reload(&self, site: &str) -> Option<Result<Arc<SiteAdapter>, AdapterLoadError>> {
        let slot = self.by_site.get(site)?;
        Some(match load_file(&slot.path, slot.version) {
            Ok(adapter) => {
                let adapter = Arc::new(adapter);
                slot.current.store(adapter.clone());
                Ok(adapter)
            }
            Err(error) => Err(AdapterLoadError {
                site: site.to_owned(),
                error,
            }),
        })
    }

    /// Reloads every adapter (SIGHUP) and logs each outcome; returns how many failed.
    pub fn reload_all(&self) -> usize {
        let mut failed = 0;
        for site in self.sites() {
            match self.reload(site) {
                Some(Ok(adapter)) => {
                    tracing::info!(site, file = adapter.file(), "site adapter reloaded");
                }
                Some(Err(e)) => {
                    failed += 1;
                    tracing::error!(site, error = %e, "site adapter reload failed; the previous adapter stays in use");
                }
                None => {}
            }
        }
        failed
    }
}

/// Characters escaped in a rewritten query value: everything but unreserved characters and
/// the few FHIR search values use plainly (`:` `/` `,` `$`). `|` is escaped.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b':')
    .remove(b'/')
    .remove(b',')
    .remove(b'$');

/// A form-encoded query (or `_search` body) with its search values in the site's dialect.
/// Pairs the adapter does not change are kept byte for byte.
pub fn adapt_query(adapter: &SiteAdapter, query: &str, issues: &mut Vec<Issue>) -> String {
    if query.is_empty() || !query.contains(['|', '%']) {
        return query.to_owned();
    }
    let mut out = Vec::new();
    for pair in query.split('&') {
        let Some((name, raw)) = pair.split_once('=') else {
            out.push(pair.to_owned());
            continue;
        };
        let Ok(value) = assent_fhir::query::decode(raw) else {
            out.push(pair.to_owned());
            continue;
        };
        let (rewritten, found) = adapter.search_value(name, &value);
        issues.extend(found);
        match rewritten {
            Some(v) => out.push(format!("{name}={}", utf8_percent_encode(&v, QUERY_VALUE))),
            None => out.push(pair.to_owned()),
        }
    }
    out.join("&")
}

/// A resource from the site, in the network's dialect.
pub fn adapt_response(adapter: &SiteAdapter, resource: &mut Value, issues: &mut Vec<Issue>) {
    issues.extend(adapter.apply(resource, Direction::ToNetwork));
}

/// What a dry run (`$translate`, `assent translate`) produced.
#[derive(Debug)]
pub struct DryRun {
    pub direction: Direction,
    pub from: FhirVersion,
    pub to: FhirVersion,
    pub output: Value,
    pub issues: Vec<Issue>,
}

/// Runs what the gateway would do to `resource`: towards the network, the site's adapter (in
/// the site's version) then conversion to `client_version`; towards the site, conversion from
/// `client_version` to the site's version then the adapter. Without an adapter only the
/// conversion runs.
pub fn dry_run(
    adapter: Option<&SiteAdapter>,
    site_version: FhirVersion,
    direction: Direction,
    client_version: FhirVersion,
    mut resource: Value,
) -> Result<DryRun, assent_adapters::TranslateError> {
    let mut issues = Vec::new();
    let (from, to) = match direction {
        Direction::ToNetwork => (site_version, client_version),
        Direction::ToSite => (client_version, site_version),
    };
    if direction == Direction::ToNetwork
        && let Some(adapter) = adapter
    {
        issues.extend(adapter.apply(&mut resource, direction));
    }
    let translated = assent_adapters::translate(resource, from, to)?;
    issues.extend(translated.issues);
    let mut output = translated.resource;
    if direction == Direction::ToSite
        && let Some(adapter) = adapter
    {
        issues.extend(adapter.apply(&mut output, direction));
    }
    Ok(DryRun {
        direction,
        from,
        to,
        output,
        issues,
    })
}

impl DryRun {
    /// The answer of `$translate`: a Parameters resource with the output (`return`), the
    /// issues (`outcome`, an OperationOutcome) and what was done.
    pub fn to_parameters(&self, adapter: Option<&str>) -> Value {
        let outcome = if self.issues.is_empty() {
            assent_fhir::operation_outcome(&[Issue::new(
                assent_fhir::Severity::Information,
                assent_fhir::IssueCode::Informational,
                "translated without issues",
            )])
        } else {
            assent_fhir::operation_outcome(&self.issues)
        };
        let mut parameters = vec![
            serde_json::json!({"name": "return", "resource": self.output}),
            serde_json::json!({"name": "outcome", "resource": outcome}),
            serde_json::json!({"name": "direction", "valueCode": self.direction.as_str()}),
            serde_json::json!({"name": "from", "valueCode": self.from.name()}),
            serde_json::json!({"name": "to", "valueCode": self.to.name()}),
            serde_json::json!({"name": "issues", "valueInteger": self.issues.len()}),
        ];
        if let Some(file) = adapter {
            parameters.push(serde_json::json!({"name": "adapter", "valueString": file}));
        }
        serde_json::json!({"resourceType": "Parameters", "parameter": parameters})
    }
}

/// An adapter's file and counts, for `/admin/sites/{site}` and reload answers.
pub fn summary_json(adapter: &SiteAdapter) -> Value {
    let s = adapter.summary();
    serde_json::json!({
        "file": adapter.file(),
        "description": adapter.description(),
        "identifierSystems": s.identifier_systems,
        "conceptMaps": s.concept_maps,
        "mappedCodes": s.mapped_codes,
        "extensions": s.extensions,
        "referenceBases": s.reference_bases,
        "profiles": s.profiles,
        "defaults": s.defaults,
        "drops": s.drops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapter() -> SiteAdapter {
        SiteAdapter::load(
            "a.toml",
            "[[identifier_systems]]\nsite = \"urn:oid:1.2.3\"\nnetwork = \"https://net.test/mrn\"\n",
            FhirVersion::R4,
            &mut |_| Err("none".into()),
        )
        .unwrap()
    }

    #[test]
    fn queries_are_rewritten_pair_by_pair() {
        let a = adapter();
        let mut issues = Vec::new();
        let q = "name=a%20b&identifier=https%3A%2F%2Fnet.test%2Fmrn%7C4711&_count=5";
        assert_eq!(
            adapt_query(&a, q, &mut issues),
            "name=a%20b&identifier=urn:oid:1.2.3%7C4711&_count=5"
        );
        let q = "identifier=https://net.test/mrn|4711";
        assert_eq!(
            adapt_query(&a, q, &mut issues),
            "identifier=urn:oid:1.2.3%7C4711"
        );
        assert_eq!(adapt_query(&a, "name=x", &mut issues), "name=x");
        assert!(issues.is_empty());
    }

    #[test]
    fn a_failed_reload_keeps_the_adapter_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.adapter.toml");
        std::fs::write(&path, "description = \"one\"\n").unwrap();
        let config = Config::from_toml(&format!(
            "[sites.a]\nupstream = \"http://127.0.0.1:1/fhir\"\nfhir_version = \"R4\"\ndefault_policy = \"opt-in\"\nadapter = \"{}\"\n",
            path.display()
        ))
        .unwrap();
        let adapters = Adapters::load(&config).unwrap();
        assert_eq!(adapters.get("a").unwrap().description(), Some("one"));
        std::fs::write(
            &path,
            "description = \"two\"\n\n[[drops]]\npath = \"Patient\"\n",
        )
        .unwrap();
        let e = adapters.reload("a").unwrap().unwrap_err();
        assert_eq!(e.error.line, Some(4));
        assert_eq!(e.error.key.as_deref(), Some("drops[0].path"));
        assert_eq!(adapters.get("a").unwrap().description(), Some("one"));
        std::fs::write(&path, "description = \"two\"\n").unwrap();
        adapters.reload("a").unwrap().unwrap();
        assert_eq!(adapters.get("a").unwrap().description(), Some("two"));
        assert_eq!(adapters.reload_all(), 0);
        assert!(adapters.reload("b").is_none());
    }
}
