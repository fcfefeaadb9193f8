//! Upstream URLs never reach the client: this module maps them to the gateway's.
//!
//! Owns two rewrites: Bundles and resources (paging links signed and re-rooted, `fullUrl` and
//! every other string under the upstream base) and single header values (`Location`,
//! `Content-Location`). Every body is parsed (the receipt hashes what is released), so there
//! is no byte-level rewriter. Leaves out: signing (the
//! paging module, passed in as a function) and consent filtering.

use serde_json::Value;

use crate::fhir_request::PAGE_TOKEN_PARAM;

/// The upstream base of one site and the gateway's base for it, both without trailing slash
/// (`http://fhir.st-mary.example/r4` ↔ `https://gateway.example/fhir/st-mary`).
#[derive(Debug, Clone)]
pub struct UrlMap {
    pub upstream_base: String,
    pub public_base: String,
}

impl UrlMap {
    pub fn new(upstream_base: &str, public_base: &str) -> Self {
        let upstream_base = upstream_base.trim_end_matches('/').to_owned();
        let public_base = public_base.trim_end_matches('/').to_owned();
        UrlMap {
            upstream_base,
            public_base,
        }
    }

    /// The part of `url` below the upstream base (`/Patient?x=1`, `?x=1` or empty), when `url`
    /// is under it. A relative URL (no scheme) is taken as relative to the upstream base.
    pub fn relative<'u>(&self, url: &'u str) -> Option<&'u str> {
        if let Some(rest) = url.strip_prefix(self.upstream_base.as_str()) {
            return (rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
                .then_some(rest);
        }
        if url.contains("://") || url.starts_with("//") {
            return None;
        }
        Some(url)
    }

    /// `url` re-rooted at the gateway, or `None` when it points outside the upstream base.
    pub fn to_public(&self, url: &str) -> Option<String> {
        let rest = self.relative(url)?;
        if rest.is_empty() || rest.starts_with('/') || rest.starts_with('?') {
            Some(format!("{}{}", self.public_base, rest))
        } else {
            Some(format!("{}/{}", self.public_base, rest))
        }
    }
}

/// Rewrites a Bundle from the upstream in place. Each `link[].url` under the upstream base
/// becomes a gateway URL carrying a paging token made by `sign` over the relative path and
/// query; links elsewhere are removed. Every other string starting with the upstream base is
/// re-rooted. Returns how many links were removed.
pub fn rewrite_bundle(bundle: &mut Value, map: &UrlMap, sign: &dyn Fn(&str) -> String) -> usize {
    let mut removed = 0;
    if let Some(links) = bundle.get_mut("link").and_then(Value::as_array_mut) {
        links.retain_mut(|link| {
            let Some(url) = link.get("url").and_then(Value::as_str) else {
                removed += 1;
                return false;
            };
            match map.relative(url) {
                Some(rest) => {
                    let rest = normalise_relative(rest);
                    let token = sign(&rest);
                    let separator = if rest.contains('?') { '&' } else { '?' };
                    link["url"] = Value::String(format!(
                        "{}{rest}{separator}{PAGE_TOKEN_PARAM}={token}",
                        map.public_base
                    ));
                    true
                }
                None => {
                    removed += 1;
                    false
                }
            }
        });
    }
    rewrite_strings(bundle, map);
    removed
}

/// The relative part as the gateway signs it: leading slash when there is a path, no
/// fragment, no dangling `?`.
pub fn normalise_relative(rest: &str) -> String {
    let rest = rest.split('#').next().unwrap_or_default();
    let rest = rest.strip_suffix('?').unwrap_or(rest);
    if rest.is_empty() || rest.starts_with('/') || rest.starts_with('?') {
        rest.to_owned()
    } else {
        format!("/{rest}")
    }
}

/// Re-roots every string in `value` that starts with the upstream base.
pub fn rewrite_strings(value: &mut Value, map: &UrlMap) {
    match value {
        Value::String(s) => {
            if let Some(rest) = s.strip_prefix(map.upstream_base.as_str())
                && (rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
            {
                *s = format!("{}{rest}", map.public_base);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_strings(v, map)),
        Value::Object(fields) => fields.values_mut().for_each(|v| rewrite_strings(v, map)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map() -> UrlMap {
        UrlMap::new(
            "http://up.internal:7000/fhir/",
            "https://gw.example/fhir/st-mary",
        )
    }

    #[test]
    fn bundle_links_are_signed_and_rerooted() {
        let mut bundle = json!({
            "resourceType": "Bundle",
            "link": [
                {"relation": "self", "url": "http://up.internal:7000/fhir/Patient?name=x"},
                {"relation": "next", "url": "http://up.internal:7000/fhir?_getpages=abc&_offset=2"},
                {"relation": "previous", "url": "https://elsewhere.example/fhir/Patient?page=1"},
                {"relation": "last", "url": "Patient?page=9#frag"}
            ],
            "entry": [{
                "fullUrl": "http://up.internal:7000/fhir/Patient/1",
                "resource": {"resourceType": "Patient", "id": "1",
                    "managingOrganization": {"reference": "http://up.internal:7000/fhir/Organization/2"},
                    "note": "http://up.internal:7000/fhirevil stays"}
            }]
        });
        let removed = rewrite_bundle(&mut bundle, &map(), &|rest| format!("T[{rest}]"));
        assert_eq!(removed, 1);
        let urls: Vec<&str> = bundle["link"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["url"].as_str().unwrap())
            .collect();
        assert_eq!(
            urls,
            [
                "https://gw.example/fhir/st-mary/Patient?name=x&_assent_page=T[/Patient?name=x]",
                "https://gw.example/fhir/st-mary?_getpages=abc&_offset=2&_assent_page=T[?_getpages=abc&_offset=2]",
                "https://gw.example/fhir/st-mary/Patient?page=9&_assent_page=T[/Patient?page=9]",
            ]
        );
        let entry = &bundle["entry"][0];
        assert_eq!(
            entry["fullUrl"],
            "https://gw.example/fhir/st-mary/Patient/1"
        );
        assert_eq!(
            entry["resource"]["managingOrganization"]["reference"],
            "https://gw.example/fhir/st-mary/Organization/2"
        );
        assert_eq!(
            entry["resource"]["note"],
            "http://up.internal:7000/fhirevil stays"
        );
        assert!(!bundle.to_string().contains("up.internal:7000/fhir/"));
    }

    #[test]
    fn header_values_map_or_vanish() {
        let m = map();
        assert_eq!(
            m.to_public("http://up.internal:7000/fhir/Patient/1/_history/2")
                .as_deref(),
            Some("https://gw.example/fhir/st-mary/Patient/1/_history/2")
        );
        assert_eq!(
            m.to_public("Patient/1").as_deref(),
            Some("https://gw.example/fhir/st-mary/Patient/1")
        );
        assert_eq!(m.to_public("https://other.example/Patient/1"), None);
    }
}
