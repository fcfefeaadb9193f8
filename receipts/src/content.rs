//! The content hashes of what an answer releases, taken from the bytes sent: a body written
//! once, compactly, with each released resource's bytes in it hashed as they are; and the
//! check a client (or an auditor holding a released body) makes of a body against the
//! resources a receipt lists.
//!
//! Owns which resources a body releases (a Bundle's `entry[].resource`, else the body itself)
//! and why a resource's bytes in a compact answer are its canonical JSON. Leaves out the
//! definition of the content hash ([`ResourceEntry`]: SHA-256 of the canonical JSON, unchanged
//! since receipt version 1, so old receipts verify as they did) and the respelling of
//! exponents and indentation (`_pretty`), which the gateway writes otherwise
//! (`assent_fhir::spelling`) and hashes the canonical way.
//!
//! # Why the bytes sent are the bytes hashed
//!
//! A resource's canonical JSON ([`assent_consent::canonical_json`]) is its object keys sorted
//! by their UTF-8 bytes, no whitespace, strings and numbers as serde_json writes them.
//! serde_json's compact writing of a tree is exactly that when its maps keep keys sorted
//! (`Map` is a `BTreeMap`, the workspace does not enable `preserve_order`; checked once at run
//! time by [`maps_sort_keys`], and the bytes are hashed the canonical way otherwise). So the
//! gateway writes the answer once with [`write_released`] and hashes each released resource's
//! span of it: no second serialisation, and the bytes hashed are the bytes released.
//!
//! A client checks an answer without `_pretty` by hashing each released resource's bytes as
//! received (the whole body of a read), unless the site spelt an exponent otherwise than
//! serde_json's `1e+3` (the gateway writes it back as the site wrote it): then, and for an
//! indented answer, the resource's canonical JSON is hashed, which is what [`verify_released`]
//! does for any body.

use std::sync::OnceLock;

use serde_json::Value;

use crate::digest::Digest;
use crate::receipt::ResourceEntry;

/// An answer's body as written, and the receipt entries of the resources it releases, in
/// order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenBody {
    pub bytes: Vec<u8>,
    pub entries: Vec<ResourceEntry>,
}

/// Writes `body` as compact JSON (serde_json's compact text, byte for byte) and lists the
/// resources it releases ([`released_resources`]; those without `resourceType` or `id` are not
/// listed, as [`ResourceEntry::from_resource`] lists none), each hashed from its bytes in the
/// text written.
pub fn write_released(body: &Value) -> serde_json::Result<WrittenBody> {
    write_released_sized(body, 1024)
}

/// [`write_released`] into a buffer of `capacity` bytes to start with: the size of the text
/// the body was read from, so that a large answer is written without growing (and copying) its
/// buffer step by step to twice its size.
pub fn write_released_sized(body: &Value, capacity: usize) -> serde_json::Result<WrittenBody> {
    if !maps_sort_keys() {
        // Keys in insertion order: the compact text is not canonical; hash the canonical way.
        let bytes = serde_json::to_vec(body)?;
        let entries = released_resources(body)
            .filter_map(ResourceEntry::from_resource)
            .collect();
        return Ok(WrittenBody { bytes, entries });
    }
    let mut bytes = Vec::with_capacity(capacity);
    let mut entries = Vec::new();
    match body {
        Value::Object(map) if is_bundle(body) => {
            bytes.push(b'{');
            for (i, (key, value)) in map.iter().enumerate() {
                member_start(&mut bytes, i, key)?;
                match value {
                    Value::Array(items) if key == "entry" => {
                        write_entries(&mut bytes, items, &mut entries)?;
                    }
                    _ => serde_json::to_writer(&mut bytes, value)?,
                }
            }
            bytes.push(b'}');
        }
        _ => {
            serde_json::to_writer(&mut bytes, body)?;
            entries.extend(ResourceEntry::from_written(body, &bytes));
        }
    }
    Ok(WrittenBody { bytes, entries })
}

/// A Bundle's `entry` array, each entry's `resource` hashed from its span.
fn write_entries(
    out: &mut Vec<u8>,
    items: &[Value],
    entries: &mut Vec<ResourceEntry>,
) -> serde_json::Result<()> {
    out.push(b'[');
    entries.reserve(items.len());
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let Value::Object(entry) = item else {
            serde_json::to_writer(&mut *out, item)?;
            continue;
        };
        out.push(b'{');
        for (j, (key, value)) in entry.iter().enumerate() {
            member_start(out, j, key)?;
            let start = out.len();
            serde_json::to_writer(&mut *out, value)?;
            if key == "resource" {
                entries.extend(ResourceEntry::from_written(value, &out[start..]));
            }
        }
        out.push(b'}');
    }
    out.push(b']');
    Ok(())
}

/// `,` before every member but the first, then the key and `:`, as serde_json writes them.
fn member_start(out: &mut Vec<u8>, i: usize, key: &str) -> serde_json::Result<()> {
    if i > 0 {
        out.push(b',');
    }
    serde_json::to_writer(&mut *out, key)?;
    out.push(b':');
    Ok(())
}

fn is_bundle(body: &Value) -> bool {
    body.get("resourceType").and_then(Value::as_str) == Some("Bundle")
}

/// The resources a body releases, in order: a Bundle's entries' `resource`, or the body itself.
pub fn released_resources(body: &Value) -> impl Iterator<Item = &Value> {
    let bundle = is_bundle(body);
    let entries = body
        .get("entry")
        .and_then(Value::as_array)
        .filter(|_| bundle)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("resource"));
    let single = (!bundle).then_some(body);
    single.into_iter().chain(entries)
}

/// Whether serde_json's maps keep their keys sorted (no `preserve_order`), so that compact
/// text is canonical. Asked once.
pub fn maps_sort_keys() -> bool {
    static SORTED: OnceLock<bool> = OnceLock::new();
    *SORTED.get_or_init(|| {
        let mut map = serde_json::Map::new();
        for key in ["b", "a", "B", "é", "aa"] {
            map.insert(key.to_owned(), Value::Null);
        }
        map.keys().is_sorted()
    })
}

/// A released body that does not match the resources a receipt lists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentMismatch {
    #[error("the body is not JSON")]
    NotJson,
    #[error("the body releases {released} resources, the receipt lists {listed}")]
    Count { released: usize, listed: usize },
    #[error("resource {index} of the body ({released}) is not the one listed ({listed})")]
    Entry {
        index: usize,
        released: String,
        listed: String,
    },
}

/// Checks a released body (as received, compact or indented, exponents spelt any way) against
/// the resources its receipt lists: the same resources, in order, each with the SHA-256 of its
/// canonical JSON. Any change to what a resource says fails; only spelling that canonical JSON
/// drops (whitespace between tokens, an exponent's marker and sign) does not.
pub fn verify_released(body: &[u8], listed: &[ResourceEntry]) -> Result<(), ContentMismatch> {
    let value: Value = serde_json::from_slice(body).map_err(|_| ContentMismatch::NotJson)?;
    let released: Vec<ResourceEntry> = released_resources(&value)
        .filter_map(ResourceEntry::from_resource)
        .collect();
    if released.len() != listed.len() {
        return Err(ContentMismatch::Count {
            released: released.len(),
            listed: listed.len(),
        });
    }
    for (index, (r, l)) in released.iter().zip(listed).enumerate() {
        if r != l {
            return Err(ContentMismatch::Entry {
                index,
                released: format!("{} {}", r.reference(), r.content_hash),
                listed: format!("{} {}", l.reference(), l.content_hash),
            });
        }
    }
    Ok(())
}

impl ResourceEntry {
    /// The entry for `resource` whose canonical JSON is `canonical` (its bytes as written by
    /// [`write_released`]). `None` without `resourceType` or `id`.
    fn from_written(resource: &Value, canonical: &[u8]) -> Option<ResourceEntry> {
        ResourceEntry::with_hash(resource, || Digest::of(canonical))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn examples() -> Vec<Value> {
        let mut values = vec![
            json!({"resourceType": "Patient", "id": "p", "z": [], "a": {}, "m": [{"y": 1, "x": [null, false]}]}),
            serde_json::from_str(r#"{"resourceType": "Observation", "id": "o", "valueQuantity": {"value": 1.50, "unit": "mg/dL"}, "n": -0.0, "e": 1E3, "big": 123456789012345678901234567890.123}"#).unwrap(),
            json!({"resourceType": "Patient", "id": "é", "name": [{"text": "Zoë \u{1F600} \"q\" \\ / \u{7}\n\t"}], "ключ": "значение", "": ""}),
        ];
        if let Ok(dir) = std::env::var("ASSENT_FHIR_EXAMPLES") {
            for version in ["r4", "r5", "stu3"] {
                let Ok(entries) = std::fs::read_dir(std::path::Path::new(&dir).join(version))
                else {
                    continue;
                };
                for entry in entries.flatten().take(400) {
                    if let Ok(text) = std::fs::read(entry.path())
                        && let Ok(value) = serde_json::from_slice::<Value>(&text)
                    {
                        values.push(value);
                    }
                }
            }
        }
        values
    }

    /// A searchset of `resources`, with the parts a gateway answer has around them.
    fn searchset(resources: &[Value]) -> Value {
        json!({
            "resourceType": "Bundle", "type": "searchset", "id": "b1",
            "link": [{"relation": "self", "url": "https://gw/fhir/s/Observation?x=1"}],
            "entry": resources.iter().enumerate().map(|(i, r)| json!({
                "fullUrl": format!("https://gw/fhir/s/X/{i}"),
                "resource": r,
                "search": {"mode": "match"}
            })).chain([json!({"search": {"mode": "outcome"}}), json!("not an object")]).collect::<Vec<_>>()
        })
    }

    /// The text written is serde_json's compact text byte for byte, and every entry is the
    /// one the canonical way gives: on awkward values and every official example at hand,
    /// alone and in a Bundle.
    #[test]
    fn written_once_is_compact_text_and_canonical_hashes() {
        assert!(
            maps_sort_keys(),
            "the workspace keeps serde_json's maps sorted"
        );
        let values = examples();
        for value in &values {
            let written = write_released(value).unwrap();
            assert_eq!(written.bytes, serde_json::to_vec(value).unwrap());
            let expected: Vec<ResourceEntry> = released_resources(value)
                .filter_map(ResourceEntry::from_resource)
                .collect();
            assert_eq!(written.entries, expected, "{value}");
            assert_eq!(verify_released(&written.bytes, &written.entries), Ok(()));
        }
        let bundle = searchset(&values);
        let written = write_released(&bundle).unwrap();
        assert_eq!(written.bytes, serde_json::to_vec(&bundle).unwrap());
        // Every value is an entry's resource (official Bundle examples too).
        let all: Vec<ResourceEntry> = values
            .iter()
            .filter_map(ResourceEntry::from_resource)
            .collect();
        assert_eq!(written.entries, all);
        assert_eq!(verify_released(&written.bytes, &written.entries), Ok(()));
    }

    /// The documented client check: each released resource's bytes as received (a read's
    /// whole body) hash to the receipt's content hash.
    #[test]
    fn a_client_hashes_the_bytes_received() {
        let read = json!({"resourceType": "Patient", "id": "p1", "meta": {"versionId": "4"},
            "name": [{"family": "Zoë", "given": ["A"]}], "birthDate": "1970-01-01"});
        let written = write_released(&read).unwrap();
        assert_eq!(written.entries.len(), 1);
        assert_eq!(written.entries[0].content_hash, Digest::of(&written.bytes));
        assert_eq!(written.entries[0].reference(), "Patient/p1/_history/4");
        let text = String::from_utf8(written.bytes).unwrap();
        assert_eq!(text, assent_consent::canonical_json(&read));
    }

    #[test]
    fn released_resources_are_a_bundles_entries_or_the_body() {
        let bundle = searchset(&[json!({"resourceType": "Patient", "id": "a"})]);
        let listed: Vec<&Value> = released_resources(&bundle).collect();
        assert_eq!(listed, [&json!({"resourceType": "Patient", "id": "a"})]);
        let patient = json!({"resourceType": "Patient", "id": "a", "entry": [{"resource": {}}]});
        assert_eq!(released_resources(&patient).collect::<Vec<_>>(), [&patient]);
        let empty = json!({"resourceType": "Bundle", "type": "searchset"});
        assert_eq!(released_resources(&empty).count(), 0);
        let written = write_released(&empty).unwrap();
        assert!(written.entries.is_empty());
        assert_eq!(verify_released(&written.bytes, &[]), Ok(()));
    }

    /// ADV: every byte of every released resource of a written answer, flipped two ways,
    /// fails the check (unparseable, or another content hash), but for the one spelling
    /// canonical JSON drops inside a resource: an exponent's marker (`1e+3`, `1E+3`); the
    /// Bundle's envelope outside the resources is not covered, and whitespace between tokens
    /// is not content.
    #[test]
    fn adv_every_flipped_byte_of_a_released_resource_fails() {
        let values = &examples()[..3];
        let bundle = searchset(values);
        let written = write_released(&bundle).unwrap();
        let body = &written.bytes;
        let mut flipped = 0;
        for value in values {
            let text = serde_json::to_vec(value).unwrap();
            let start = body
                .windows(text.len())
                .position(|w| w == text.as_slice())
                .expect("each resource's canonical JSON is in the body as written");
            for at in start..start + text.len() {
                for mask in [0x01u8, 0x20] {
                    let mut changed = body.clone();
                    changed[at] ^= mask;
                    flipped += 1;
                    let marker = body[at] == b'e'
                        && mask == 0x20
                        && body[at - 1].is_ascii_digit()
                        && matches!(body[at + 1], b'+' | b'-');
                    assert_eq!(
                        verify_released(&changed, &written.entries).is_ok(),
                        marker,
                        "byte {at} ^ {mask:#x}: {}",
                        String::from_utf8_lossy(&changed)
                    );
                }
            }
        }
        assert!(flipped > 500, "{flipped}");
        let text = String::from_utf8(body.clone()).unwrap();
        let spaced = text.replace(r#","entry":["#, ", \"entry\" :\n[ ");
        assert_eq!(verify_released(spaced.as_bytes(), &written.entries), Ok(()));
        let envelope = text.replace(r#""mode":"match""#, r#""mode":"include""#);
        assert_eq!(
            verify_released(envelope.as_bytes(), &written.entries),
            Ok(())
        );
        let fewer = &written.entries[..2];
        assert_eq!(
            verify_released(body, fewer),
            Err(ContentMismatch::Count {
                released: 3,
                listed: 2
            })
        );
        assert_eq!(verify_released(b"{", fewer), Err(ContentMismatch::NotJson));
    }

    /// Native cost of an answer's content hashes, written once against a second canonical
    /// pass, on a busy machine: many short alternating rounds, the fastest of each (a round
    /// that was not preempted). `cargo test -p assent-receipts --release --lib
    /// content::tests::cost -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn cost() {
        use std::hint::black_box;
        use std::time::Instant;
        let read = serde_json::from_str::<Value>(
            r#"{"resourceType":"Patient","id":"bench-1","meta":{"versionId":"1","lastUpdated":"2026-11-22T00:00:00Z"},"identifier":[{"system":"urn:bench:mrn","value":"MRN000001"}],"active":true,"name":[{"use":"official","family":"Benchmark","given":["Patient","Of","One","Kilobyte"]}],"telecom":[{"system":"phone","value":"+00 000 000 000","use":"home"}],"gender":"female","birthDate":"1970-01-01","address":[{"use":"home","line":["1 Loopback Road","Apartment 127"],"city":"Localhost","postalCode":"00000","country":"ZZ"}],"maritalStatus":{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/v3-MaritalStatus","code":"M","display":"Married"}]},"communication":[{"language":{"coding":[{"system":"urn:ietf:bcp:47","code":"en","display":"English"}]},"preferred":true}],"generalPractitioner":[{"reference":"Practitioner/bench-gp","display":"Dr. Bench"}],"managingOrganization":{"reference":"Organization/bench-org","display":"Bench Hospital"},"text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">Patient Of One Kilobyte Benchmark, born 1970-01-01, a generated record for throughput measurements only.</div>"}}"#,
        )
        .unwrap();
        let search = searchset(&vec![read.clone(); 50]);
        for (name, body) in [("read (1 KB Patient)", &read), ("searchset of 50", &search)] {
            let n = if name.starts_with("read") { 200 } else { 4 };
            let (mut once, mut twice) = (f64::INFINITY, f64::INFINITY);
            for _ in 0..300 {
                let t = Instant::now();
                for _ in 0..n {
                    black_box(write_released(black_box(body)).unwrap());
                }
                once = once.min(t.elapsed().as_secs_f64() / n as f64);
                let t = Instant::now();
                for _ in 0..n {
                    let body = black_box(body);
                    let bytes = serde_json::to_vec(body).unwrap();
                    let entries: Vec<ResourceEntry> = released_resources(body)
                        .filter_map(ResourceEntry::from_resource)
                        .collect();
                    black_box((bytes, entries));
                }
                twice = twice.min(t.elapsed().as_secs_f64() / n as f64);
            }
            eprintln!(
                "{name}: written once {:.2} µs, written and a second canonical pass {:.2} µs ({:.2}x)",
                once * 1e6,
                twice * 1e6,
                twice / once
            );
        }
    }
}
