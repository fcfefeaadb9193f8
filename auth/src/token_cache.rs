//! The verified-token cache: bounded, keyed by SHA-256 of the token, entries expiring with
//! their token. A hit costs one hash and one lookup instead of a signature check.
//!
//! Leaves out: purpose headers (resolved per request after a hit) and deciding when to clear
//! (the verifier clears it when an issuer's key disappears).

use std::sync::Arc;

use aws_lc_rs::digest;
use quick_cache::sync::Cache;

use crate::caller::VerifiedCaller;

pub(crate) type TokenDigest = [u8; 32];

pub(crate) struct CachedToken {
    pub caller: VerifiedCaller,
    /// Index of the issuer in the verifier's list, for its purpose-header policy.
    pub issuer_index: usize,
}

pub(crate) struct TokenCache {
    entries: Cache<TokenDigest, Arc<CachedToken>>,
}

impl TokenCache {
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            entries: Cache::new(capacity.max(1)),
        }
    }

    /// The entry for `digest` if present and its token has not expired at `now` (Unix
    /// seconds); an expired entry is removed.
    pub fn get(&self, digest: &TokenDigest, now: u64) -> Option<Arc<CachedToken>> {
        let entry = self.entries.get(digest)?;
        if entry.caller.expires_at <= now {
            self.entries.remove(digest);
            return None;
        }
        Some(entry)
    }

    pub fn insert(&self, digest: TokenDigest, entry: CachedToken) {
        self.entries.insert(digest, Arc::new(entry));
    }

    pub fn clear(&self) {
        self.entries.clear();
    }
}

/// SHA-256 of the token (hardware-accelerated where the CPU has SHA extensions).
pub(crate) fn token_digest(token: &str) -> TokenDigest {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}
