//! Upstream URLs never reach the client: this module maps them to the gateway's.
//!
//! Owns three rewrites: Bundles (paging links signed and re-rooted, `fullUrl` and every other
//! string under the upstream base), single header values (`Location`, `Content-Location`), and
//! a streaming byte rewriter for bodies the gateway does not parse. Leaves out: signing (the
//! paging module, passed in as a function) and consent filtering.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use memchr::memmem::Finder;
use serde_json::Value;

use crate::fhir_request::PAGE_TOKEN_PARAM;

/// The upstream base of one site and the gateway's base for it, both without trailing slash
/// (`http://fhir.st-mary.example/r4` ↔ `https://gateway.example/fhir/st-mary`).
#[derive(Debug, Clone)]
pub struct UrlMap {
    pub upstream_base: String,
    pub public_base: String,
    /// The byte patterns of [`StreamRewriter`], built once per site.
    patterns: Arc<StreamPatterns>,
}

impl UrlMap {
    pub fn new(upstream_base: &str, public_base: &str) -> Self {
        let upstream_base = upstream_base.trim_end_matches('/').to_owned();
        let public_base = public_base.trim_end_matches('/').to_owned();
        let patterns = Arc::new(StreamPatterns::new(&upstream_base, &public_base));
        UrlMap {
            upstream_base,
            public_base,
            patterns,
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

/// What the stream rewriter looks for and what it writes instead: the upstream base as
/// `base/`, plain and with JSON-escaped slashes.
#[derive(Debug)]
struct StreamPatterns {
    patterns: Vec<(Finder<'static>, Bytes)>,
    longest: usize,
}

impl StreamPatterns {
    fn new(upstream_base: &str, public_base: &str) -> Self {
        let from = format!("{upstream_base}/");
        let to = format!("{public_base}/");
        let escaped_from = from.replace('/', "\\/");
        let escaped_to = to.replace('/', "\\/");
        let patterns: Vec<(Finder<'static>, Bytes)> = [(from, to), (escaped_from, escaped_to)]
            .into_iter()
            .map(|(f, t)| (Finder::new(f.as_bytes()).into_owned(), Bytes::from(t)))
            .collect();
        let longest = patterns
            .iter()
            .map(|(f, _)| f.needle().len())
            .max()
            .unwrap_or(1);
        StreamPatterns { patterns, longest }
    }
}

/// Replaces the upstream base (as `base/`, plain and with JSON-escaped slashes) in a byte
/// stream, chunk by chunk, without buffering more than one pattern's length.
pub struct StreamRewriter {
    patterns: Arc<StreamPatterns>,
    carry: BytesMut,
}

impl StreamRewriter {
    pub fn new(map: &UrlMap) -> Self {
        StreamRewriter {
            patterns: map.patterns.clone(),
            carry: BytesMut::new(),
        }
    }

    /// Feeds a chunk; returns what can be released now.
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        self.carry.extend_from_slice(chunk);
        // A match that is not complete yet starts within the last `longest - 1` bytes.
        let safe = self.carry.len().saturating_sub(self.patterns.longest - 1);
        let (out, consumed) = self.replace(safe);
        let _ = self.carry.split_to(consumed);
        out
    }

    /// Ends the stream; returns the rest.
    pub fn finish(&mut self) -> Bytes {
        let (out, consumed) = self.replace(self.carry.len());
        let _ = self.carry.split_to(consumed);
        out
    }

    /// Replaces matches starting before `limit`; returns the output and how many input bytes
    /// it covers.
    fn replace(&self, limit: usize) -> (Bytes, usize) {
        let buf = &self.carry[..];
        let mut out = BytesMut::with_capacity(limit + 64);
        let mut at = 0;
        loop {
            let next = self
                .patterns
                .patterns
                .iter()
                .filter_map(|(finder, to)| {
                    finder
                        .find(&buf[at..])
                        .map(|i| (at + i, finder.needle().len(), to))
                })
                .min_by_key(|(start, _, _)| *start);
            match next {
                Some((start, len, to)) if start < limit => {
                    out.extend_from_slice(&buf[at..start]);
                    out.extend_from_slice(to);
                    at = start + len;
                }
                _ => break,
            }
        }
        let end = limit.max(at);
        out.extend_from_slice(&buf[at..end]);
        (out.freeze(), end)
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

    #[test]
    fn the_stream_rewriter_finds_patterns_across_chunks() {
        let body = br#"{"a":"http://up.internal:7000/fhir/Patient/1","b":"http:\/\/up.internal:7000\/fhir\/X","c":"http://up.internal:7000/fhir/"}"#;
        let expected = br#"{"a":"https://gw.example/fhir/st-mary/Patient/1","b":"https:\/\/gw.example\/fhir\/st-mary\/X","c":"https://gw.example/fhir/st-mary/"}"#;
        for chunk_size in [1, 2, 3, 7, 16, 33, body.len()] {
            let mut rewriter = StreamRewriter::new(&map());
            let mut out = Vec::new();
            for chunk in body.chunks(chunk_size) {
                out.extend_from_slice(&rewriter.push(chunk));
            }
            out.extend_from_slice(&rewriter.finish());
            assert_eq!(
                String::from_utf8(out).unwrap(),
                String::from_utf8(expected.to_vec()).unwrap(),
                "chunk size {chunk_size}"
            );
        }
    }
}
