//! Keyed hashes of identifiers (HMAC-SHA256 with the consortium key), the canonical form of
//! a consent document and its hash.
//!
//! Owns what the ledger may hold in place of identifiers and documents. Leaves out where the
//! key comes from (gateway configuration).

use std::fmt;

use hmac::{KeyInit, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::model::Party;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The consortium's secret key for hashing identifiers. Its `Debug` output hides the key.
///
/// Kept as the HMAC keyed once (the key's inner and outer pads already hashed), so that each
/// keyed hash starts from a copy of that state instead of hashing the pads again.
#[derive(Clone)]
pub struct ConsortiumKey(HmacSha256);

/// The shortest key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 16;

impl ConsortiumKey {
    /// A key of at least [`MIN_KEY_LEN`] bytes; `None` if shorter.
    pub fn new(bytes: &[u8]) -> Option<ConsortiumKey> {
        if bytes.len() < MIN_KEY_LEN {
            return None;
        }
        // HMAC accepts keys of any length, so this cannot fail.
        HmacSha256::new_from_slice(bytes).ok().map(ConsortiumKey)
    }

    /// HMAC-SHA256 over `domain`, a zero byte and `value`, in lower-case hex. The domain keeps
    /// a patient id and a practitioner id with the same text apart.
    pub fn keyed_hash(&self, domain: &str, value: &str) -> String {
        let mut mac = self.0.clone();
        mac.update(domain.as_bytes());
        mac.update(&[0]);
        mac.update(value.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The ledger key of a patient, from the cross-site patient identity.
    pub fn patient(&self, identity: &str) -> String {
        self.keyed_hash("patient", identity)
    }

    /// The ledger key of a grantee (an actor of a provision).
    pub fn party(&self, party: &Party) -> String {
        match party {
            Party::Reference(r) => self.keyed_hash("party-ref", r),
            Party::Identifier { system, value } => self.keyed_hash(
                "party-id",
                &format!("{}|{}", system.as_deref().unwrap_or_default(), value),
            ),
        }
    }

    /// The ledger key of a consent, from its logical id.
    pub fn consent(&self, consent_id: &str) -> String {
        self.keyed_hash("consent", consent_id)
    }

    /// The ledger key of a gateway (the anchor's author).
    pub fn gateway(&self, gateway_id: &str) -> String {
        self.keyed_hash("gateway", gateway_id)
    }
}

impl fmt::Debug for ConsortiumKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConsortiumKey(..)")
    }
}

/// The canonical text of a JSON document: object keys sorted by their UTF-8 bytes, no
/// whitespace, strings and numbers as serde_json writes them. Independent of whether
/// serde_json preserves key order.
pub fn canonical_json(value: &Value) -> String {
    let mut out = Vec::new();
    // Writing into a Vec does not fail; serde_json writes UTF-8.
    let _ = write_canonical(value, &mut out);
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// SHA-256 of [`canonical_json`], in lower-case hex: what the ledger holds of a consent.
pub fn document_hash(value: &Value) -> String {
    hex::encode(canonical_sha256(value))
}

/// SHA-256 of [`canonical_json`] of `value`, hashed as it is written (no intermediate text).
pub fn canonical_sha256(value: &Value) -> [u8; 32] {
    struct Sink(Sha256);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut sink = Sink(Sha256::new());
    // The sink does not fail.
    let _ = write_canonical(value, &mut sink);
    sink.0.finalize().into()
}

/// Writes [`canonical_json`] of `value` to `out` piece by piece, without building it (a
/// hasher can take it in one pass).
pub fn write_canonical<W: std::io::Write>(value: &Value, out: &mut W) -> std::io::Result<()> {
    match value {
        Value::Object(map) => {
            out.write_all(b"{")?;
            if map.keys().is_sorted() {
                for (i, (k, v)) in map.iter().enumerate() {
                    write_member(i, k, v, out)?;
                }
            } else {
                let mut members: Vec<(&String, &Value)> = map.iter().collect();
                members.sort_by(|a, b| a.0.cmp(b.0));
                for (i, (k, v)) in members.into_iter().enumerate() {
                    write_member(i, k, v, out)?;
                }
            }
            out.write_all(b"}")
        }
        Value::Array(items) => {
            out.write_all(b"[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                write_canonical(item, out)?;
            }
            out.write_all(b"]")
        }
        scalar => serde_json::to_writer(&mut *out, scalar).map_err(std::io::Error::other),
    }
}

fn write_member<W: std::io::Write>(
    i: usize,
    k: &str,
    v: &Value,
    out: &mut W,
) -> std::io::Result<()> {
    if i > 0 {
        out.write_all(b",")?;
    }
    serde_json::to_writer(&mut *out, k).map_err(std::io::Error::other)?;
    out.write_all(b":")?;
    write_canonical(v, out)
}

/// Whether `s` looks like a hash this module makes: 64 lower-case hex digits.
pub(crate) fn is_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_form_ignores_key_order_and_spacing() {
        let a = json!({"b": 1, "a": {"y": [1, "x"], "x": null}});
        let b: Value = serde_json::from_str(r#"{ "a" : {"x":null, "y":[1,"x"]}, "b":1 }"#).unwrap();
        assert_eq!(canonical_json(&a), r#"{"a":{"x":null,"y":[1,"x"]},"b":1}"#);
        assert_eq!(document_hash(&a), document_hash(&b));
    }

    #[test]
    fn keyed_hashes_depend_on_key_and_domain() {
        let k1 = ConsortiumKey::new(&[1; 32]).unwrap();
        let k2 = ConsortiumKey::new(&[2; 32]).unwrap();
        assert!(is_hash(&k1.patient("p1")));
        assert_ne!(k1.patient("p1"), k2.patient("p1"));
        assert_ne!(k1.patient("p1"), k1.consent("p1"));
        assert_eq!(k1.patient("p1"), k1.patient("p1"));
        assert!(ConsortiumKey::new(b"short").is_none());
        assert_eq!(format!("{k1:?}"), "ConsortiumKey(..)");
    }

    /// The keyed state is reused, never advanced: every hash is HMAC-SHA256 over
    /// `domain || 0 || value` as keyed from scratch (stored keys stay valid), however many
    /// hashes the key made before.
    #[test]
    fn a_keyed_hash_is_the_hmac_of_domain_and_value() {
        let bytes = [9u8; 32];
        let key = ConsortiumKey::new(&bytes).unwrap();
        for (domain, value) in [
            ("patient", "st-mary/Patient/p1"),
            ("consent", ""),
            ("patient", "st-mary/Patient/p1"),
        ] {
            let mut fresh = HmacSha256::new_from_slice(&bytes).unwrap();
            fresh.update(domain.as_bytes());
            fresh.update(&[0]);
            fresh.update(value.as_bytes());
            assert_eq!(
                key.keyed_hash(domain, value),
                hex::encode(fresh.finalize().into_bytes())
            );
        }
        // A known value (HMAC-SHA256 with key 32 × 0x09 over "patient", a zero byte, "p1",
        // computed apart from this crate), as stored chains hold it.
        assert_eq!(
            key.patient("p1"),
            "cb498c7d38454223609a960ef2dd011920e688ca4798e210c41f9c87120a4ff6"
        );
    }
}
