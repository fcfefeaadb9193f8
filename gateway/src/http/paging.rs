//! Paging tokens: a paging link the gateway hands out carries an HMAC over the site, the
//! caller, an expiry and the path and query, so that a page cannot be fetched by someone
//! else, replayed against another site, altered, or used after it expires.
//!
//! The MAC covers the query as the gateway reads it, not as bytes: the path as written (a
//! page's path is a resource type or empty, nothing a client re-encodes) and the query's
//! name/value pairs in order, each decoded as a form is
//! (`assent_fhir::query::pairs`). A client whose HTTP layer re-encodes the link (`%3A%2F`
//! decoded, `%7c` for `%7C`, `%20` for `+`) still has a valid link; a change to what the
//! gateway reads (a value, a name, the order, a pair added or dropped) does not.
//!
//! Token form: `{expiry unix seconds}.{base64url(HMAC-SHA256)}`. The gateway API's own paging
//! links (the audit API) carry it as their last parameter, `_sig`
//! ([`PageSigner::sign_query`]). Leaves out: where the token goes in a proxied FHIR URL (the
//! rewrite module) and checking consent (every page is decided again).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Signs and checks paging tokens.
#[derive(Clone)]
pub struct PageSigner {
    key: Vec<u8>,
    ttl: Duration,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PageTokenError {
    #[error("its token is not well formed")]
    Malformed,
    #[error("it has expired")]
    Expired,
    #[error("it was issued for another caller, site or query")]
    Mismatch,
}

impl PageSigner {
    /// A signer with `key` (at least 32 bytes) and links valid for `ttl`.
    pub fn new(key: Vec<u8>, ttl: Duration) -> Self {
        PageSigner { key, ttl }
    }

    /// A signer with a fresh random key.
    pub fn random(ttl: Duration) -> Self {
        let key: [u8; 32] = rand::random();
        PageSigner::new(key.to_vec(), ttl)
    }

    /// A token for `caller` fetching `path_and_query` (relative to the site base) at `site`.
    pub fn sign(&self, site: &str, caller: &str, path_and_query: &str) -> String {
        let expiry = now_secs().saturating_add(self.ttl.as_secs());
        self.sign_with_expiry(site, caller, path_and_query, expiry)
    }

    fn sign_with_expiry(
        &self,
        site: &str,
        caller: &str,
        path_and_query: &str,
        expiry: u64,
    ) -> String {
        let mac = self
            .mac(site, caller, path_and_query, expiry)
            .finalize()
            .into_bytes();
        format!("{expiry}.{}", URL_SAFE_NO_PAD.encode(mac))
    }

    /// Checks `token` against the request it came with.
    pub fn verify(
        &self,
        token: &str,
        site: &str,
        caller: &str,
        path_and_query: &str,
    ) -> Result<(), PageTokenError> {
        let (expiry, mac) = token.split_once('.').ok_or(PageTokenError::Malformed)?;
        let expiry: u64 = expiry.parse().map_err(|_| PageTokenError::Malformed)?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| PageTokenError::Malformed)?;
        self.mac(site, caller, path_and_query, expiry)
            .verify_slice(&mac)
            .map_err(|_| PageTokenError::Mismatch)?;
        if expiry < now_secs() {
            return Err(PageTokenError::Expired);
        }
        Ok(())
    }

    /// `query` (percent-encoded, for `path`) with its token appended as `_sig`, the last
    /// parameter: the form of the gateway API's own paging links (the audit API).
    pub fn sign_query(&self, site: &str, caller: &str, path: &str, query: &str) -> String {
        let token = self.sign(site, caller, &format!("{path}?{query}"));
        format!(
            "{query}&_sig={}",
            url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()
        )
    }

    /// Checks a query signed by [`sign_query`](Self::sign_query) against the request it came
    /// with; a query without `_sig` is refused as malformed.
    pub fn verify_query(
        &self,
        site: &str,
        caller: &str,
        path: &str,
        query: &str,
    ) -> Result<(), PageTokenError> {
        let (unsigned, token) = split_signature(query);
        let token = token.ok_or(PageTokenError::Malformed)?;
        self.verify(token, site, caller, &format!("{path}?{unsigned}"))
    }

    fn mac(&self, site: &str, caller: &str, path_and_query: &str, expiry: u64) -> Hmac<Sha256> {
        // A key of any length is accepted by HMAC; config validation asks for ≥ 32 bytes.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        let mut update = |part: &[u8]| {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        };
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let pairs = assent_fhir::query::pairs(query);
        for part in [
            b"assent-page-v2".as_slice(),
            site.as_bytes(),
            caller.as_bytes(),
            expiry.to_string().as_bytes(),
            path.as_bytes(),
            &(pairs.len() as u64).to_be_bytes(),
        ] {
            update(part);
        }
        for (name, value) in &pairs {
            update(name.as_bytes());
            update(value.as_bytes());
        }
        mac
    }
}

/// The query string without its `_sig` (which must come last), and the token.
fn split_signature(query: &str) -> (&str, Option<&str>) {
    match query.rfind("_sig=") {
        Some(at) if at == 0 || query.as_bytes()[at - 1] == b'&' => {
            let unsigned = query[..at].trim_end_matches('&');
            (unsigned, Some(&query[at + 5..]))
        }
        _ => (query, None),
    }
}

fn now_secs() -> u64 {
    let millis = assent_ledger::Clock::now_millis(&assent_ledger::SystemClock);
    u64::try_from(millis / 1000).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_bound_to_site_caller_and_page() {
        let signer = PageSigner::random(Duration::from_secs(60));
        let token = signer.sign("st-mary", "alice", "/Patient?page=2");
        assert_eq!(
            signer.verify(&token, "st-mary", "alice", "/Patient?page=2"),
            Ok(())
        );
        assert_eq!(
            signer.verify(&token, "st-mary", "bob", "/Patient?page=2"),
            Err(PageTokenError::Mismatch)
        );
        assert_eq!(
            signer.verify(&token, "north-general", "alice", "/Patient?page=2"),
            Err(PageTokenError::Mismatch)
        );
        assert_eq!(
            signer.verify(&token, "st-mary", "alice", "/Patient?page=3"),
            Err(PageTokenError::Mismatch)
        );
        let other = PageSigner::random(Duration::from_secs(60));
        assert_eq!(
            other.verify(&token, "st-mary", "alice", "/Patient?page=2"),
            Err(PageTokenError::Mismatch)
        );
        assert_eq!(
            signer.verify("nonsense", "st-mary", "alice", "/Patient?page=2"),
            Err(PageTokenError::Malformed)
        );
    }

    #[test]
    fn a_token_holds_for_every_encoding_of_the_same_query_and_no_other() {
        let signer = PageSigner::random(Duration::from_secs(60));
        let signed = "/Observation?subject=http%3A%2F%2Fx.example%2FPatient%2F1&code=http%3A%2F%2Floinc.org%7C1234-5&note=a+b&_getpages=abc";
        let token = signer.sign("st-mary", "alice", signed);
        // What re-encoding HTTP layers send for the same link.
        for same in [
            signed,
            "/Observation?subject=http://x.example/Patient/1&code=http://loinc.org|1234-5&note=a+b&_getpages=abc",
            "/Observation?subject=http%3a%2f%2fx.example%2fPatient%2f1&code=http%3a%2f%2floinc.org%7c1234-5&note=a%20b&_getpages=abc",
            "/Observation?subject=http:%2F%2Fx.example/Patient/1&code=http://loinc.org%7c1234-5&note=a%20b&_getpages=abc",
        ] {
            assert_eq!(
                signer.verify(&token, "st-mary", "alice", same),
                Ok(()),
                "{same}"
            );
        }
        // What the gateway would read differently is refused.
        for other in [
            // `+` is a space, `%2B` a plus.
            "/Observation?subject=http://x.example/Patient/1&code=http://loinc.org|1234-5&note=a%2Bb&_getpages=abc",
            // An `&` inside a value is not a separator.
            "/Observation?subject=http://x.example/Patient/1%26code=http://loinc.org|1234-5&note=a+b&_getpages=abc",
            // Reordered, dropped, added, altered.
            "/Observation?code=http://loinc.org|1234-5&subject=http://x.example/Patient/1&note=a+b&_getpages=abc",
            "/Observation?subject=http://x.example/Patient/1&code=http://loinc.org|1234-5&note=a+b",
            "/Observation?subject=http://x.example/Patient/1&code=http://loinc.org|1234-5&note=a+b&_getpages=abc&x=1",
            "/Observation?subject=http://x.example/Patient/2&code=http://loinc.org|1234-5&note=a+b&_getpages=abc",
            "/Condition?subject=http://x.example/Patient/1&code=http://loinc.org|1234-5&note=a+b&_getpages=abc",
        ] {
            assert_eq!(
                signer.verify(&token, "st-mary", "alice", other),
                Err(PageTokenError::Mismatch),
                "{other}"
            );
        }
    }

    #[test]
    fn signatures_are_split_off_the_end() {
        assert_eq!(
            split_signature("a=1&_cursor=5.x&_sig=9.abc"),
            ("a=1&_cursor=5.x", Some("9.abc"))
        );
        assert_eq!(split_signature("a=1"), ("a=1", None));
        assert_eq!(split_signature("x_sig=1"), ("x_sig=1", None));
        let signer = PageSigner::random(Duration::from_secs(60));
        let signed = signer.sign_query("audit", "alice", "/audit/AuditEvent", "a=1&_cursor=5.x");
        assert_eq!(
            signer.verify_query("audit", "alice", "/audit/AuditEvent", &signed),
            Ok(())
        );
        assert_eq!(
            signer.verify_query("audit", "bob", "/audit/AuditEvent", &signed),
            Err(PageTokenError::Mismatch)
        );
        assert_eq!(
            signer.verify_query("audit", "alice", "/audit/AuditEvent", "a=1&_cursor=5.x"),
            Err(PageTokenError::Malformed)
        );
    }

    #[test]
    fn an_expired_token_is_refused() {
        let signer = PageSigner::random(Duration::from_secs(60));
        let token = signer.sign_with_expiry("s", "c", "/P", now_secs() - 1);
        assert_eq!(
            signer.verify(&token, "s", "c", "/P"),
            Err(PageTokenError::Expired)
        );
        // Moving the expiry forward breaks the MAC.
        let forged = token.replacen(
            &(now_secs() - 1).to_string(),
            &(now_secs() + 999).to_string(),
            1,
        );
        assert_eq!(
            signer.verify(&forged, "s", "c", "/P"),
            Err(PageTokenError::Mismatch)
        );
    }
}
