//! Placing a patient named only by an identifier: `system|value` of one of the site's patient
//! identifier systems, looked up at the site (`Patient?identifier=system|value`) and cached.
//!
//! The lookup is a search of the gateway's own: fetched on the conditional permit of a
//! request that names no patient (`assent_consent::decide_unnamed`), and nothing of its answer
//! is released; only the id of the one Patient that carries exactly that identifier is kept.
//! No match, or more than one, leaves the patient unplaced (an unknown patient: denied).
//!
//! Leaves out: which references need placing (the whose-data rule) and consent.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use assent_consent::{AccessRequest, Caller, Decision, decide_unnamed};
use assent_fhir::Interaction;
use serde_json::Value;

use crate::services::upstream::{self, Site, UpstreamError, UpstreamRequest};

/// How long a placed (or unplaceable) identifier is remembered.
const TTL: Duration = Duration::from_secs(300);
/// Most identifiers remembered; beyond it the cache starts afresh.
const MAX_ENTRIES: usize = 100_000;

/// (site, system, value).
type IdentifierKey = (String, String, String);

/// Identifiers already looked up, per site: the id placed (or none) and when.
#[derive(Default)]
pub struct Identities {
    cache: Mutex<HashMap<IdentifierKey, (Option<String>, Instant)>>,
}

impl Identities {
    fn get(&self, key: &IdentifierKey) -> Option<Option<String>> {
        let cache = self.cache.lock().ok()?;
        cache
            .get(key)
            .filter(|(_, at)| at.elapsed() < TTL)
            .map(|(id, _)| id.clone())
    }

    fn put(&self, key: IdentifierKey, id: Option<String>) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_ENTRIES {
                cache.clear();
            }
            cache.insert(key, (id, Instant::now()));
        }
    }
}

/// The site-local id of the patient the site knows by `system|value`, if exactly one.
pub async fn resolve(
    identities: &Identities,
    site: &Site,
    client: &awc::Client,
    system: &str,
    value: &str,
) -> Result<Option<String>, UpstreamError> {
    if !site
        .config
        .patient_identifier_systems
        .iter()
        .any(|s| s == system)
    {
        return Ok(None);
    }
    let key = (site.id.clone(), system.to_owned(), value.to_owned());
    if let Some(hit) = identities.get(&key) {
        return Ok(hit);
    }
    let caller = Caller::new();
    let access = AccessRequest::new(
        &caller,
        Interaction::Search,
        Some("Patient"),
        crate::services::consent::now(),
    );
    let Decision::Permit(permit) = decide_unnamed(&access) else {
        return Ok(None);
    };
    let token = format!("{system}|{value}");
    let query = assent_fhir::query::encode_pairs([("identifier", token.as_str()), ("_count", "2")]);
    let request = UpstreamRequest::get(format!("Patient?{query}"), "");
    let mut response = upstream::forward(&permit, site, client, &request).await?;
    if !response.status().is_success() {
        return Err(UpstreamError::Failed);
    }
    let body = response
        .body()
        .limit(site.config.max_response_bytes)
        .await
        .map_err(|_| UpstreamError::BadResponse)?;
    let bundle: Value = serde_json::from_slice(&body).map_err(|_| UpstreamError::BadResponse)?;
    let id = only_match(&bundle, system, value);
    identities.put(key, id.clone());
    Ok(id)
}

/// The id of the one Patient in `bundle` carrying `system|value` (the site's answer is
/// checked, not trusted).
fn only_match(bundle: &Value, system: &str, value: &str) -> Option<String> {
    let mut ids = bundle
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("resource"))
        .filter(|r| r.get("resourceType").and_then(Value::as_str) == Some("Patient"))
        .filter(|r| {
            r.get("identifier")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|i| {
                    i.get("system").and_then(Value::as_str) == Some(system)
                        && i.get("value").and_then(Value::as_str) == Some(value)
                })
        })
        .filter_map(|r| r.get("id").and_then(Value::as_str));
    let first = ids.next()?;
    if ids.any(|other| other != first) {
        return None;
    }
    Some(first.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_one_patient_with_exactly_that_identifier_places_it() {
        let patient = |id: &str, system: &str, value: &str| {
            json!({"resource": {"resourceType": "Patient", "id": id,
                "identifier": [{"system": system, "value": value}]}})
        };
        let bundle = |entries: Vec<Value>| json!({"resourceType": "Bundle", "entry": entries});
        assert_eq!(
            only_match(&bundle(vec![patient("a", "urn:mrn", "1")]), "urn:mrn", "1"),
            Some("a".into())
        );
        assert_eq!(
            only_match(
                &bundle(vec![
                    patient("a", "urn:mrn", "1"),
                    patient("b", "urn:mrn", "1")
                ]),
                "urn:mrn",
                "1"
            ),
            None
        );
        assert_eq!(
            only_match(&bundle(vec![patient("a", "urn:mrn", "2")]), "urn:mrn", "1"),
            None,
            "a Patient without that identifier is not taken"
        );
        assert_eq!(only_match(&bundle(vec![]), "urn:mrn", "1"), None);
    }
}
