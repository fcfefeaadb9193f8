//! One issuer's JSON Web Key Set: parsing the keys this crate can use, fetching over HTTP,
//! and reading the provider's `Cache-Control: max-age`.
//!
//! Leaves out: when to refetch (the verifier's rate limit) and OpenID discovery.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{AlgorithmFamily, DecodingKey};
use reqwest::header::{ACCEPT, CACHE_CONTROL, HeaderMap};
use serde_json::Value;

use crate::config::SigningAlgorithm;

/// Largest JWKS or discovery document accepted.
pub(crate) const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// A verification key and the algorithms it may verify.
pub(crate) struct KeyEntry {
    pub algorithms: Vec<SigningAlgorithm>,
    pub key: DecodingKey,
}

impl KeyEntry {
    pub fn allows(&self, alg: SigningAlgorithm) -> bool {
        self.algorithms.contains(&alg)
    }
}

/// The usable keys of one issuer at one time.
pub(crate) struct KeySet {
    pub by_kid: HashMap<String, Arc<KeyEntry>>,
    /// Keys without a `kid`: usable only by tokens without one, when exactly one fits.
    pub unnamed: Vec<Arc<KeyEntry>>,
    pub fresh_until: Instant,
}

impl KeySet {
    /// Parses a JWKS document, keeping the signature keys usable with `allowed` algorithms.
    /// Unusable keys are skipped (and named in the second value); an unreadable document is
    /// an error.
    pub fn parse(
        body: &[u8],
        allowed: &[SigningAlgorithm],
        fresh_for: Duration,
    ) -> Result<(KeySet, Vec<String>), String> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<Value>,
        }
        let document: Document =
            serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut set = KeySet {
            by_kid: HashMap::new(),
            unnamed: Vec::new(),
            fresh_until: Instant::now() + fresh_for,
        };
        let mut skipped = Vec::new();
        for raw in document.keys {
            let kid = raw.get("kid").and_then(Value::as_str).map(str::to_owned);
            match usable_key(raw, allowed) {
                Ok(entry) => match kid {
                    Some(kid) => {
                        set.by_kid.insert(kid, Arc::new(entry));
                    }
                    None => set.unnamed.push(Arc::new(entry)),
                },
                Err(reason) => skipped.push(format!(
                    "key {}: {reason}",
                    kid.as_deref().unwrap_or("(no kid)")
                )),
            }
        }
        Ok((set, skipped))
    }

    /// Key ids in this set.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.by_kid.keys().map(String::as_str)
    }
}

/// The freshness lifetime the provider's headers give, if any: `max-age`, or zero for
/// `no-cache`/`no-store`.
pub(crate) fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(CACHE_CONTROL)?.to_str().ok()?;
    let mut result = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(seconds) = lower.strip_prefix("max-age=") {
            result = seconds
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    result
}

/// Fetches `url`: status 200 and at most [`MAX_DOCUMENT_BYTES`], else an error.
pub(crate) async fn fetch(
    http: &reqwest::Client,
    url: &str,
) -> Result<(HeaderMap, Vec<u8>), String> {
    let response = http
        .get(url)
        .header(ACCEPT, "application/json, application/jwk-set+json")
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(format!("HTTP status {}", response.status()));
    }
    let headers = response.headers().clone();
    let body = read_limited(response).await?;
    Ok((headers, body))
}

/// The body of `response`, refused beyond [`MAX_DOCUMENT_BYTES`].
pub(crate) async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
    {
        return Err("document too large".to_owned());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("reading body failed: {e}"))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err("document too large".to_owned());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn usable_key(raw: Value, allowed: &[SigningAlgorithm]) -> Result<KeyEntry, String> {
    if let Some(use_) = raw.get("use").and_then(Value::as_str)
        && use_ != "sig"
    {
        return Err(format!("use is {use_:?}, not sig"));
    }
    let jwk: Jwk = serde_json::from_value(raw).map_err(|e| format!("unsupported key: {e}"))?;
    let fits_family: Vec<SigningAlgorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![SigningAlgorithm::Rs256],
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            vec![SigningAlgorithm::Es256]
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            vec![SigningAlgorithm::EdDsa]
        }
        AlgorithmParameters::OctetKey(_) => return Err("symmetric keys are never used".into()),
        _ => return Err("key type or curve not supported".into()),
    };
    let algorithms: Vec<SigningAlgorithm> = match jwk.common.key_algorithm {
        None => fits_family,
        Some(alg) => {
            let named = match alg {
                KeyAlgorithm::RS256 => SigningAlgorithm::Rs256,
                KeyAlgorithm::ES256 => SigningAlgorithm::Es256,
                KeyAlgorithm::EdDSA => SigningAlgorithm::EdDsa,
                other => return Err(format!("algorithm {other:?} not supported")),
            };
            if !fits_family.contains(&named) {
                return Err("alg does not fit the key type".into());
            }
            vec![named]
        }
    };
    let algorithms: Vec<SigningAlgorithm> = algorithms
        .into_iter()
        .filter(|a| allowed.contains(a))
        .collect();
    if algorithms.is_empty() {
        return Err("its algorithm is not allowed for this issuer".into());
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key: {e}"))?;
    let family_ok = matches!(
        (key.family(), algorithms[0]),
        (AlgorithmFamily::Rsa, SigningAlgorithm::Rs256)
            | (AlgorithmFamily::Ec, SigningAlgorithm::Es256)
            | (AlgorithmFamily::Ed, SigningAlgorithm::EdDsa)
    );
    if !family_ok {
        return Err("key family does not fit its algorithm".into());
    }
    Ok(KeyEntry { algorithms, key })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(cache_control: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CACHE_CONTROL, HeaderValue::from_str(cache_control).unwrap());
        h
    }

    #[test]
    fn reads_max_age() {
        assert_eq!(
            max_age(&headers("public, max-age=600")),
            Some(Duration::from_secs(600))
        );
        assert_eq!(max_age(&headers("no-store")), Some(Duration::ZERO));
        assert_eq!(max_age(&headers("public")), None);
        assert_eq!(max_age(&HeaderMap::new()), None);
    }

    #[test]
    fn skips_symmetric_encryption_and_disallowed_keys() {
        let body = serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "ec", "alg": "ES256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "weird", "kid": "weird"}
        ]});
        let (set, skipped) = KeySet::parse(
            body.to_string().as_bytes(),
            &[SigningAlgorithm::Es256],
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(set.kids().collect::<Vec<_>>(), vec!["ec"]);
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        let (set, _) = KeySet::parse(
            body.to_string().as_bytes(),
            &[SigningAlgorithm::Rs256],
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(set.kids().count(), 0);
    }
}
