//! The sites' directories for the patient portal's grant form: each site's Practitioners and
//! Organizations, read from the site's own FHIR server (`{Type}?_elements=id,name&_count=N`)
//! through the one upstream path (`upstream::forward`, the site's upstream authentication),
//! kept as id and name only, at most [`DIRECTORY_MAX`] of each, cached per site for the
//! configured time (`[portal] directory_ttl_secs`).
//!
//! These are not patient data, and the whose-data rule says so: the search names no patient
//! (`assent_consent::decide_unnamed` gives the conditional permit the request needs), and every
//! resource of the answer is asked again (`compartment::patients_of`); one that belongs to a
//! patient, or is of another type, is dropped, never shown. Only `id` and a display name are
//! kept, whatever else the site sent (the site may ignore `_elements`): data minimisation. A
//! site that cannot be read is "unavailable" (remembered for a shorter time); the form still
//! works without it.
//!
//! Leaves out the form (`api/portal`) and checking a grant's actor against the entries
//! (`api/portal.rs`, with [`SiteDirectory::holds`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use assent_consent::{AccessRequest, Caller, Decision, decide_unnamed};
use assent_fhir::Interaction;
use assent_fhir::compartment::patients_of;
use serde_json::Value;

use crate::services::upstream::{self, Site, UpstreamRequest};

/// Most entries kept of each type per site (the first page of the site's answer).
pub const DIRECTORY_MAX: usize = 100;
/// How long a site that could not be read is remembered as unavailable (at most the TTL).
const UNAVAILABLE_TTL: Duration = Duration::from_secs(30);
/// The resource types read.
pub const DIRECTORY_TYPES: [&str; 2] = ["Practitioner", "Organization"];

/// One entry: `Practitioner/{id}` and its name as the site gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryEntry {
    pub reference: String,
    pub name: String,
}

/// One site's directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteDirectory {
    pub practitioners: Vec<DirectoryEntry>,
    pub organizations: Vec<DirectoryEntry>,
}

impl SiteDirectory {
    /// Whether `reference` is one of the entries.
    pub fn holds(&self, reference: &str) -> bool {
        self.practitioners
            .iter()
            .chain(&self.organizations)
            .any(|e| e.reference == reference)
    }
}

/// A site's directory as read (`None`: unavailable) and when.
type CachedDirectory = (Option<Arc<SiteDirectory>>, Instant);

/// The cached directories, by site.
pub struct Directories {
    ttl: Duration,
    cache: Mutex<HashMap<String, CachedDirectory>>,
}

impl Directories {
    pub fn new(ttl: Duration) -> Directories {
        Directories {
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, site: &str) -> Option<Option<Arc<SiteDirectory>>> {
        let cache = self.cache.lock().ok()?;
        let (directory, at) = cache.get(site)?;
        let ttl = match directory {
            Some(_) => self.ttl,
            None => self.ttl.min(UNAVAILABLE_TTL),
        };
        (at.elapsed() < ttl).then(|| directory.clone())
    }

    /// `site`'s directory, from the cache or read now; `None` when the site cannot be read.
    pub async fn of(&self, site: &Site, client: &awc::Client) -> Option<Arc<SiteDirectory>> {
        if let Some(hit) = self.cached(&site.id) {
            return hit;
        }
        let read = read_directory(site, client).await.map(Arc::new);
        if read.is_none() {
            tracing::info!(site = %site.id, "site directory unavailable");
        }
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(site.id.clone(), (read.clone(), Instant::now()));
        }
        read
    }
}

async fn read_directory(site: &Site, client: &awc::Client) -> Option<SiteDirectory> {
    Some(SiteDirectory {
        practitioners: read_type(site, client, "Practitioner").await?,
        organizations: read_type(site, client, "Organization").await?,
    })
}

/// The entries of `resource_type` at `site`, or `None` when the site cannot be read.
async fn read_type(
    site: &Site,
    client: &awc::Client,
    resource_type: &str,
) -> Option<Vec<DirectoryEntry>> {
    let caller = Caller::new();
    let access = AccessRequest::new(
        &caller,
        Interaction::Search,
        Some(resource_type),
        crate::services::consent::now(),
    );
    let Decision::Permit(permit) = decide_unnamed(&access) else {
        return None;
    };
    let count = DIRECTORY_MAX.to_string();
    let query =
        assent_fhir::query::encode_pairs([("_elements", "id,name"), ("_count", count.as_str())]);
    let request = UpstreamRequest::get(format!("{resource_type}?{query}"), "");
    let mut response = upstream::forward(&permit, site, client, &request)
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body = response
        .body()
        .limit(site.config.max_response_bytes)
        .await
        .ok()?;
    let bundle: Value = serde_json::from_slice(&body).ok()?;
    (bundle["resourceType"] == "Bundle")
        .then(|| entries(&bundle, resource_type, |r| !is_patient_data(site, r)))
}

fn is_patient_data(site: &Site, resource: &Value) -> bool {
    patients_of(resource, site.config.fhir_version, &site.references).is_patient_data()
}

/// The entries of `resource_type` in `bundle` that `keep` lets through (not a patient's
/// data), as id and name only, sorted by name, at most [`DIRECTORY_MAX`].
fn entries(
    bundle: &Value,
    resource_type: &str,
    keep: impl Fn(&Value) -> bool,
) -> Vec<DirectoryEntry> {
    let mut out: Vec<DirectoryEntry> = bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("resource"))
        .filter(|r| r["resourceType"].as_str() == Some(resource_type))
        .filter(|&r| keep(r))
        .filter_map(|r| {
            let id = r["id"].as_str().filter(|id| plain_id(id))?;
            Some(DirectoryEntry {
                reference: format!("{resource_type}/{id}"),
                name: display_name(&r["name"]).unwrap_or_else(|| id.to_owned()),
            })
        })
        .take(DIRECTORY_MAX)
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name).then(a.reference.cmp(&b.reference)));
    out.dedup_by(|a, b| a.reference == b.reference);
    out
}

/// A FHIR id the portal writes into a reference (`[A-Za-z0-9.-]{1,64}`).
pub fn plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// An Organization's `name` (a string) or a Practitioner's first `HumanName` (its `text`,
/// else prefix, given and family), cut to 120 characters.
fn display_name(name: &Value) -> Option<String> {
    let text = match name {
        Value::String(s) => s.clone(),
        Value::Array(names) => {
            let n = names.first()?;
            match n["text"].as_str() {
                Some(t) => t.to_owned(),
                None => {
                    let words = |v: &Value| -> Vec<String> {
                        match v {
                            Value::Array(a) => a
                                .iter()
                                .filter_map(|x| x.as_str().map(str::to_owned))
                                .collect(),
                            Value::String(s) => vec![s.clone()],
                            _ => Vec::new(),
                        }
                    };
                    let mut parts = words(&n["prefix"]);
                    parts.extend(words(&n["given"]));
                    parts.extend(words(&n["family"]));
                    parts.join(" ")
                }
            }
        }
        _ => return None,
    };
    let text: String = text.chars().filter(|c| !c.is_control()).take(120).collect();
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_id_and_name_of_the_asked_type_are_kept() {
        let bundle = json!({"resourceType": "Bundle", "entry": [
            {"resource": {"resourceType": "Practitioner", "id": "dr-b",
                "name": [{"prefix": ["Dr"], "given": ["Bea"], "family": "Brown"}],
                "telecom": [{"value": "555-0100"}], "birthDate": "1970-01-01"}},
            {"resource": {"resourceType": "Practitioner", "id": "dr-a", "name": [{"text": "Ann Avery"}]}},
            {"resource": {"resourceType": "Patient", "id": "p1", "name": [{"text": "Jane Doe"}]}},
            {"resource": {"resourceType": "Practitioner", "id": "bad/id", "name": [{"text": "X"}]}},
            {"resource": {"resourceType": "Practitioner", "id": "no-name"}},
            {"resource": {"resourceType": "Practitioner", "id": "refused", "name": [{"text": "R"}]}},
        ]});
        let got = entries(&bundle, "Practitioner", |r| r["id"] != "refused");
        assert_eq!(
            got,
            vec![
                DirectoryEntry {
                    reference: "Practitioner/dr-a".into(),
                    name: "Ann Avery".into()
                },
                DirectoryEntry {
                    reference: "Practitioner/dr-b".into(),
                    name: "Dr Bea Brown".into()
                },
                DirectoryEntry {
                    reference: "Practitioner/no-name".into(),
                    name: "no-name".into()
                },
            ]
        );
        let orgs = json!({"resourceType": "Bundle", "entry": [
            {"resource": {"resourceType": "Organization", "id": "stm", "name": "St Mary\u{7}'s"}}]});
        assert_eq!(
            entries(&orgs, "Organization", |_| true)[0].name,
            "St Mary's"
        );
    }
}
