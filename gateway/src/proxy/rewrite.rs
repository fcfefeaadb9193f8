//! Upstream URLs never reach the client: this module maps them to the gateway's.
//!
//! Owns two rewrites: Bundles and resources (paging links signed and re-rooted, `fullUrl` and
//! every other string under the upstream base) and single header values (`Location`,
//! `Content-Location`). Every body is parsed (the receipt hashes what is released), so there
//! is no byte-level rewriter. Leaves out: signing (the
//! paging module, passed in as a function) and consent filtering.

use serde_json::Value;

use crate::proxy::request::PAGE_TOKEN_PARAM;
use crate::services::upstream::UrlMap;

/// Rewrites a Bundle from the upstream in place. Each `link[].url` under the upstream base
/// becomes a gateway URL carrying a paging token made by `sign` over the relative path and
/// query; links elsewhere are removed. Every other string starting with the upstream base is
/// re-rooted (when `scrub`: see [`may_name_upstream`]). Returns how many links were removed.
pub fn rewrite_bundle(
    bundle: &mut Value,
    map: &UrlMap,
    sign: &dyn Fn(&str) -> String,
    scrub: bool,
) -> usize {
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
    // A Bundle with no link has no `link` element: FHIR JSON never carries an empty array.
    if bundle
        .get("link")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
        && let Some(object) = bundle.as_object_mut()
    {
        object.remove("link");
    }
    if scrub {
        scrub_strings(bundle, map);
    }
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

/// Appends the gateway's own parameters (`_summary`, `_elements`: never forwarded, applied
/// by the gateway) to every link of `bundle` under the upstream base, before the links are
/// signed, so that following them keeps the shape. A pair of the same name already in a
/// link is replaced.
pub fn carry_params(bundle: &mut Value, map: &UrlMap, pairs: &[(String, String)]) {
    if pairs.is_empty() {
        return;
    }
    for link in bundle
        .get_mut("link")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let Some(url) = link.get("url").and_then(Value::as_str) else {
            continue;
        };
        if map.relative(url).is_none() {
            continue;
        }
        let (before_fragment, _) = url.split_once('#').unwrap_or((url, ""));
        let (path, query) = before_fragment
            .split_once('?')
            .unwrap_or((before_fragment, ""));
        let mut kept: Vec<String> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .filter(|p| {
                let read = assent_fhir::query::pairs(p);
                let name = read.first().map_or("", |(n, _)| n.as_str());
                !pairs.iter().any(|(n, _)| n == name)
            })
            .map(str::to_owned)
            .collect();
        kept.push(assent_fhir::query::encode_pairs(
            pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        ));
        link["url"] = Value::String(format!("{path}?{}", kept.join("&")));
    }
}

/// Upstream URLs never reach the client, wherever they sit in a body: every string that
/// starts with the upstream base is re-rooted at the gateway's; then every occurrence of the
/// upstream base inside a string (narrative, identifiers, extension values) is replaced by
/// the gateway's base, and every remaining occurrence of the upstream's origin
/// (`scheme://host:port`) or authority (`host:port`) by the gateway's.
pub fn scrub_strings(value: &mut Value, map: &UrlMap) {
    Scrubber { map }.scrub(value);
}

/// Whether a string of the JSON text `body` may name the upstream, so that [`scrub_strings`]
/// has something to do in the tree parsed from it: the upstream base or authority occurs in
/// the bytes, or an escape that could spell part of one does (`\u…`, `\/`). A JSON string's
/// other characters stand in the text as themselves, so when none of these occurs no string
/// parsed from it starts with the base or contains the authority, and the walk over every
/// string may be left out. Only for a tree nothing else has written into since it was
/// parsed (the site adapter writes configured values: a site with one is always scrubbed).
pub fn may_name_upstream(body: &[u8], map: &UrlMap) -> bool {
    let has = |needle: &[u8]| memchr::memmem::find(body, needle).is_some();
    has(b"\\u")
        || has(b"\\/")
        || has(map.upstream_base.as_bytes())
        || map
            .hosts
            .upstream_authority
            .as_deref()
            .is_some_and(|a| has(a.as_bytes()))
}

struct Scrubber<'m> {
    map: &'m UrlMap,
}

impl Scrubber<'_> {
    fn scrub(&self, value: &mut Value) {
        match value {
            Value::String(s) => {
                if let Some(rest) = s.strip_prefix(self.map.upstream_base.as_str())
                    && (rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
                {
                    *s = format!("{}{rest}", self.map.public_base);
                }
                let hosts = &self.map.hosts;
                if let Some(authority) = &hosts.upstream_authority
                    && !hosts.public_authority.contains(authority.as_str())
                    && s.contains(authority.as_str())
                {
                    let mut text = s.replace(&self.map.upstream_base, &self.map.public_base);
                    if let Some(origin) = &hosts.upstream_origin {
                        text = text.replace(origin, &hosts.public_origin);
                    }
                    *s = text.replace(authority, &hosts.public_authority);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.scrub(v)),
            Value::Object(fields) => fields.values_mut().for_each(|v| self.scrub(v)),
            _ => {}
        }
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
        let removed = rewrite_bundle(&mut bundle, &map(), &|rest| format!("T[{rest}]"), true);
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
        // Inside any string, the upstream's base, origin and host never stay.
        assert_eq!(
            entry["resource"]["note"],
            "https://gw.example/fhir/st-maryevil stays"
        );
        assert!(!bundle.to_string().contains("up.internal"));
    }

    #[test]
    fn a_bundle_left_without_links_has_no_link_element() {
        for links in [
            json!([{"relation": "next", "url": "https://elsewhere.example/fhir/Patient?page=2"}]),
            json!([]),
        ] {
            let mut bundle = json!({"resourceType": "Bundle", "type": "searchset", "link": links});
            rewrite_bundle(&mut bundle, &map(), &|rest| rest.to_owned(), true);
            assert_eq!(
                bundle,
                json!({"resourceType": "Bundle", "type": "searchset"})
            );
        }
    }

    #[test]
    fn upstream_hosts_are_scrubbed_from_every_string() {
        let mut resource = json!({"resourceType": "Observation",
            "text": {"div": "<div>see <a href=\"http://up.internal:7000/fhir/Patient/1\">the patient</a> and http://up.internal:7000/admin</div>"},
            "identifier": [{"system": "urn:x", "value": "up.internal:7000/42"}],
            "extension": [{"url": "urn:e", "valueString": "host up.internal:7000"}]});
        scrub_strings(&mut resource, &map());
        let text = resource.to_string();
        assert!(!text.contains("up.internal"), "{text}");
        assert!(
            text.contains("https://gw.example/fhir/st-mary/Patient/1"),
            "{text}"
        );
    }

    /// The scrub is left out only when the body's bytes cannot name the upstream: a hostile
    /// site hiding its host behind every spelling JSON allows is still scrubbed, and no
    /// answer keeps a string that names it.
    #[test]
    fn adv_no_spelling_of_the_upstream_escapes_the_scrub() {
        let m = map();
        let bodies = [
            // plain, in a reference, free text, an identifier
            r#"{"resourceType":"Patient","id":"1","link":[{"other":{"reference":"http://up.internal:7000/fhir/Patient/2"}}]}"#,
            r#"{"resourceType":"Patient","id":"1","text":{"div":"<div>up.internal:7000</div>"}}"#,
            // escaped solidus in the base, unicode escapes in the host and the port
            r#"{"resourceType":"Patient","id":"1","managingOrganization":{"reference":"http:\/\/up.internal:7000\/fhir\/Organization\/2"}}"#,
            r#"{"resourceType":"Patient","id":"1","identifier":[{"value":"\u0075p.internal:7000/x"}]}"#,
            r#"{"resourceType":"Patient","id":"1","identifier":[{"value":"up.internal\u003a7000"}]}"#,
            r#"{"resourceType":"Patient","id":"1","identifier":[{"value":"up.internal:\u0037000"}]}"#,
            // a key that names it (keys are not rewritten; the body is still walked)
            r#"{"resourceType":"Patient","id":"1","extension":[{"url":"urn:x","valueString":"a"}],"up.internal:7000":1}"#,
            // the base with its trailing slash only
            r#"{"resourceType":"Patient","id":"1","identifier":[{"system":"http://up.internal:7000/fhir"}]}"#,
        ];
        for body in bodies {
            assert!(may_name_upstream(body.as_bytes(), &m), "{body}");
            let mut value: Value = serde_json::from_str(body).unwrap();
            scrub_strings(&mut value, &m);
            let mut strings = Vec::new();
            collect_strings(&value, &mut strings);
            assert!(
                strings.iter().all(|s| !s.contains("up.internal:7000")),
                "{body} → {value}"
            );
        }
        // Bodies that cannot name it: other hosts, the same host on another port, the
        // public base, an escape that spells nothing of a URL.
        for body in [
            r#"{"resourceType":"Patient","id":"1","link":[{"other":{"reference":"Patient/2"}}]}"#,
            r#"{"resourceType":"Patient","id":"1","identifier":[{"value":"up.internal:7001"}]}"#,
            r#"{"resourceType":"Patient","id":"1","text":{"div":"<div>https://gw.example/fhir/st-mary/Patient/1 \"quoted\"\n</div>"}}"#,
        ] {
            assert!(!may_name_upstream(body.as_bytes(), &m), "{body}");
            let value: Value = serde_json::from_str(body).unwrap();
            let mut scrubbed = value.clone();
            scrub_strings(&mut scrubbed, &m);
            assert_eq!(
                scrubbed, value,
                "the scrub left out would have changed {body}"
            );
        }
    }

    fn collect_strings(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::String(s) => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
            Value::Object(fields) => fields.values().for_each(|v| collect_strings(v, out)),
            _ => {}
        }
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
