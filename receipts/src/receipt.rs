//! The receipt of one access, its canonical encoding and its hash; the clear values kept
//! beside it (`ReceiptSubjects`) and their keyed hashes.
//!
//! Owns what a receipt says and how its bytes are fixed. Leaves out linking receipts into a
//! chain (`chain.rs`), batching (`batch.rs`), wire and export forms (`export.rs`) and storage
//! (the gateway).
//!
//! # Canonical encoding, version 1
//!
//! The receipt hash is SHA-256 over the canonical encoding. The encoding is binary and
//! length-prefixed, so no two receipts share an encoding and no text escaping is involved.
//! Primitives:
//! - `str`: the UTF-8 length as a 4-byte big-endian unsigned integer, then the bytes;
//! - `opt<T>`: one byte `0` when absent, or `1` followed by `T`;
//! - `u8`, `u16`, `u32`, `u64`, `i64`: fixed width, big-endian (two's complement for `i64`);
//! - `digest`: the 32 raw bytes.
//!
//! Fields, in this order:
//!
//! | # | field | encoding |
//! |---|---|---|
//! | 0 | the domain tag `assent-receipt/1` | `str` |
//! | 1 | `id` | `str` |
//! | 2 | `sequence` | `u64` |
//! | 3 | `time_ms` | `i64` |
//! | 4 | `gateway_id` | `str` |
//! | 5 | `actor_key` | `str` |
//! | 6 | `patient_key` | `opt<str>` |
//! | 7 | `organization` | `opt<str>` |
//! | 8 | `site` | `opt<str>` |
//! | 9 | `interaction` ([`Interaction::as_str`]) | `opt<str>` |
//! | 10 | `resource_type` | `opt<str>` |
//! | 11 | `query_key` | `opt<str>` |
//! | 12 | `resources`: count, then per entry `resource_type`, `id`, `version_id`, `content_hash` | `u32`, then `str`, `str`, `opt<str>`, `digest` |
//! | 13 | `purpose` | `opt<str>` |
//! | 14 | `decision`: permit 1, deny 2, error 3 | `u8` |
//! | 15 | `consent`: none 0; site default 1 + policy; consent 2 + id + version | `u8` [+ `str` [+ `str`]] |
//! | 16 | `break_glass` | `u8` (0 or 1) |
//! | 17 | `break_glass_justification` | `opt<str>` |
//! | 18 | `upstream_status` | `opt<u16>` |
//! | 19 | `status` | `u16` |
//! | 20 | `prev_hash` | `digest` |
//!
//! A later version changes the domain tag; version 1 receipts keep hashing as above.
//! [`Receipt::from_canonical_bytes`] reads the encoding back, so a store can keep the exact
//! bytes that were hashed.
//!
//! **Invariant:** no clear identifier of a person is hashed into a receipt: the actor, the
//! patient and the query text appear only as keyed hashes (HMAC with the consortium key);
//! their clear values live in [`ReceiptSubjects`], beside the receipt, for authorised audit
//! queries.

use assent_consent::{Basis, ConsortiumKey, SitePolicy, canonical_json};
use assent_fhir::Interaction;
use serde_json::Value;

use crate::digest::Digest;

/// The domain tag that opens the canonical encoding.
pub const RECEIPT_DOMAIN: &str = "assent-receipt/1";

/// Keyed-hash domains of the clear values (see [`ConsortiumKey::keyed_hash`]). The patient
/// uses [`ConsortiumKey::patient`], the same key as the consent records on the ledger, so a
/// patient's receipts and consents join.
pub const ACTOR_DOMAIN: &str = "actor";
pub const QUERY_DOMAIN: &str = "query";

/// What the gateway decided for the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessDecision {
    Permit,
    Deny,
    /// No decision applied: a bad request after authentication, a failure before or after
    /// the decision (ledger unreachable, upstream error).
    Error,
}

impl AccessDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessDecision::Permit => "permit",
            AccessDecision::Deny => "deny",
            AccessDecision::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Option<AccessDecision> {
        match text {
            "permit" => Some(AccessDecision::Permit),
            "deny" => Some(AccessDecision::Deny),
            "error" => Some(AccessDecision::Error),
            _ => None,
        }
    }

    fn tag(self) -> u8 {
        match self {
            AccessDecision::Permit => 1,
            AccessDecision::Deny => 2,
            AccessDecision::Error => 3,
        }
    }
}

impl From<&assent_consent::Decision> for AccessDecision {
    fn from(decision: &assent_consent::Decision) -> Self {
        if decision.is_permit() {
            AccessDecision::Permit
        } else {
            AccessDecision::Deny
        }
    }
}

/// The consent a decision relied on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConsentRelied {
    /// No decision was reached, or it rested on no consent.
    None,
    /// No consent applied; the site's default policy (`opt-in`, `opt-out`) decided.
    SiteDefault(String),
    /// A consent decided; `version` is empty when the consent carried none.
    Consent { id: String, version: String },
}

impl ConsentRelied {
    /// What a decision rests on; break-glass rests on the deny it overrode. A decision that
    /// rests on no consent nor site policy (no patient data, decided per resource) relied on
    /// none.
    pub fn from_basis(basis: &Basis) -> ConsentRelied {
        let mut basis = basis;
        while let Basis::BreakGlass(inner) = basis {
            basis = inner;
        }
        if let Basis::SiteDefault(policy) = basis {
            ConsentRelied::site_default(*policy)
        } else if let Basis::Consent(c) = basis {
            ConsentRelied::Consent {
                id: c.consent_id.to_string(),
                version: c.consent_version.to_string(),
            }
        } else {
            ConsentRelied::None
        }
    }

    pub fn site_default(policy: SitePolicy) -> ConsentRelied {
        ConsentRelied::SiteDefault(policy.as_str().to_owned())
    }

    /// The value of the `X-Assent-Consent` response header: `c1@3` (`c1` without a version),
    /// `site-default:opt-in`, or `none`.
    pub fn header_value(&self) -> String {
        match self {
            ConsentRelied::None => "none".to_owned(),
            ConsentRelied::SiteDefault(policy) => format!("site-default:{policy}"),
            ConsentRelied::Consent { id, version } if version.is_empty() => id.clone(),
            ConsentRelied::Consent { id, version } => format!("{id}@{version}"),
        }
    }

    /// Reads what [`ConsentRelied::header_value`] writes.
    pub fn parse_header_value(text: &str) -> ConsentRelied {
        if text == "none" || text.is_empty() {
            ConsentRelied::None
        } else if let Some(policy) = text.strip_prefix("site-default:") {
            ConsentRelied::SiteDefault(policy.to_owned())
        } else {
            match text.rsplit_once('@') {
                Some((id, version)) => ConsentRelied::Consent {
                    id: id.to_owned(),
                    version: version.to_owned(),
                },
                None => ConsentRelied::Consent {
                    id: text.to_owned(),
                    version: String::new(),
                },
            }
        }
    }
}

/// One resource returned: its type, id and version, and the SHA-256 of its content.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceEntry {
    pub resource_type: String,
    pub id: String,
    pub version_id: Option<String>,
    pub content_hash: Digest,
}

impl ResourceEntry {
    /// The entry for a resource as returned to the client: type, id and `meta.versionId`
    /// read from it, the content hash over its canonical JSON
    /// ([`assent_consent::canonical_json`]: keys sorted, no whitespace), so that the hash does
    /// not depend on how the response was serialised. `None` without `resourceType` or `id`.
    pub fn from_resource(resource: &Value) -> Option<ResourceEntry> {
        let resource_type = resource.get("resourceType")?.as_str()?;
        let id = resource.get("id")?.as_str()?;
        let version_id = resource
            .get("meta")
            .and_then(|m| m.get("versionId"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        Some(ResourceEntry {
            resource_type: resource_type.to_owned(),
            id: id.to_owned(),
            version_id,
            content_hash: Digest::of(canonical_json(resource).as_bytes()),
        })
    }

    /// `Observation/7` or `Observation/7/_history/2`.
    pub fn reference(&self) -> String {
        match &self.version_id {
            Some(v) => format!("{}/{}/_history/{v}", self.resource_type, self.id),
            None => format!("{}/{}", self.resource_type, self.id),
        }
    }
}

/// The clear values kept beside a receipt in the gateway store, for authorised audit
/// queries. Never hashed into the receipt: it holds their keyed hashes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReceiptSubjects {
    /// Who asked: the caller's identity (`Practitioner/123`, a token subject).
    pub actor: String,
    /// Whose records: the cross-site patient identity (`system|value`, or `Patient/id`).
    pub patient: Option<String>,
    /// The request's query string as received (it may hold identifiers).
    pub query: Option<String>,
    /// The client application (OAuth `client_id`), if known.
    pub client_id: Option<String>,
    /// The client's network address as the gateway saw it, if known.
    pub client_address: Option<String>,
}

/// The keyed hashes of a receipt's subjects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectKeys {
    pub actor_key: String,
    pub patient_key: Option<String>,
    pub query_key: Option<String>,
}

impl ReceiptSubjects {
    pub fn keys(&self, key: &ConsortiumKey) -> SubjectKeys {
        SubjectKeys {
            actor_key: key.keyed_hash(ACTOR_DOMAIN, &self.actor),
            patient_key: self.patient.as_deref().map(|p| key.patient(p)),
            query_key: self
                .query
                .as_deref()
                .map(|q| key.keyed_hash(QUERY_DOMAIN, q)),
        }
    }

    /// Whether these clear values are the ones `receipt` was made with.
    pub fn match_receipt(&self, receipt: &Receipt, key: &ConsortiumKey) -> bool {
        let keys = self.keys(key);
        keys.actor_key == receipt.actor_key
            && keys.patient_key == receipt.patient_key
            && keys.query_key == receipt.query_key
    }
}

/// The receipt of one request through the gateway, permitted, denied or failed.
///
/// `sequence` and `prev_hash` are set by [`crate::Chain::append`]; everything else by the
/// gateway's record phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Unique receipt id (the gateway uses a UUID), sent back in `X-Assent-Receipt`.
    pub id: String,
    /// Position in the gateway's chain, from 1.
    pub sequence: u64,
    /// When the request was received, UTC milliseconds since the epoch.
    pub time_ms: i64,
    pub gateway_id: String,
    pub actor_key: String,
    pub patient_key: Option<String>,
    /// The caller's organization (not a person: kept in clear).
    pub organization: Option<String>,
    pub site: Option<String>,
    /// `None` for a request that could not be classified (bad request).
    pub interaction: Option<Interaction>,
    /// The resource type the request named, if any.
    pub resource_type: Option<String>,
    pub query_key: Option<String>,
    /// What was returned, in response order.
    pub resources: Vec<ResourceEntry>,
    /// The purpose of use (HL7 v3 PurposeOfUse code: `TREAT`, `ETREAT`...).
    pub purpose: Option<String>,
    pub decision: AccessDecision,
    pub consent: ConsentRelied,
    /// The permit rests on break-glass.
    pub break_glass: bool,
    /// The justification given with a break-glass request (granted or not).
    pub break_glass_justification: Option<String>,
    /// The upstream's HTTP status, when the request was forwarded.
    pub upstream_status: Option<u16>,
    /// The HTTP status the gateway answered with.
    pub status: u16,
    /// The hash of the gateway's previous receipt; [`Digest::ZERO`] for the first.
    pub prev_hash: Digest,
}

impl Receipt {
    /// A receipt with the required facts; the rest empty, to be filled in by the caller.
    pub fn new(
        id: impl Into<String>,
        time_ms: i64,
        gateway_id: impl Into<String>,
        keys: SubjectKeys,
        decision: AccessDecision,
        status: u16,
    ) -> Receipt {
        Receipt {
            id: id.into(),
            sequence: 0,
            time_ms,
            gateway_id: gateway_id.into(),
            actor_key: keys.actor_key,
            patient_key: keys.patient_key,
            organization: None,
            site: None,
            interaction: None,
            resource_type: None,
            query_key: keys.query_key,
            resources: Vec::new(),
            purpose: None,
            decision,
            consent: ConsentRelied::None,
            break_glass: false,
            break_glass_justification: None,
            upstream_status: None,
            status,
            prev_hash: Digest::ZERO,
        }
    }

    /// Records a consent decision: permit or deny, the consent it relied on, and whether the
    /// permit rests on break-glass. The justification, given with the request, is set apart.
    pub fn set_decision(&mut self, decision: &assent_consent::Decision) {
        self.decision = AccessDecision::from(decision);
        self.consent = ConsentRelied::from_basis(decision.basis());
        self.break_glass = match decision {
            assent_consent::Decision::Permit(p) => p.break_glass(),
            assent_consent::Decision::Deny(_) => false,
        };
    }

    /// The canonical encoding (see the module documentation).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.resources.len() * 80);
        self.encode(&mut out);
        out
    }

    /// Appends the canonical encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_str(out, RECEIPT_DOMAIN);
        put_str(out, &self.id);
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.time_ms.to_be_bytes());
        put_str(out, &self.gateway_id);
        put_str(out, &self.actor_key);
        put_opt_str(out, self.patient_key.as_deref());
        put_opt_str(out, self.organization.as_deref());
        put_opt_str(out, self.site.as_deref());
        put_opt_str(out, self.interaction.map(Interaction::as_str));
        put_opt_str(out, self.resource_type.as_deref());
        put_opt_str(out, self.query_key.as_deref());
        put_len(out, self.resources.len());
        for r in &self.resources {
            put_str(out, &r.resource_type);
            put_str(out, &r.id);
            put_opt_str(out, r.version_id.as_deref());
            out.extend_from_slice(r.content_hash.as_bytes());
        }
        put_opt_str(out, self.purpose.as_deref());
        out.push(self.decision.tag());
        match &self.consent {
            ConsentRelied::None => out.push(0),
            ConsentRelied::SiteDefault(policy) => {
                out.push(1);
                put_str(out, policy);
            }
            ConsentRelied::Consent { id, version } => {
                out.push(2);
                put_str(out, id);
                put_str(out, version);
            }
        }
        out.push(u8::from(self.break_glass));
        put_opt_str(out, self.break_glass_justification.as_deref());
        match self.upstream_status {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                out.extend_from_slice(&s.to_be_bytes());
            }
        }
        out.extend_from_slice(&self.status.to_be_bytes());
        out.extend_from_slice(self.prev_hash.as_bytes());
    }

    /// SHA-256 over the canonical encoding.
    pub fn hash(&self) -> Digest {
        let mut buf = Vec::with_capacity(256 + self.resources.len() * 80);
        self.encode(&mut buf);
        Digest::of(&buf)
    }

    /// The value of the `X-Assent-Consent` response header.
    pub fn consent_header(&self) -> String {
        self.consent.header_value()
    }

    /// Reads a receipt back from its canonical encoding, so that a store can keep exactly the
    /// bytes that were hashed. Refuses trailing bytes and unknown tags.
    pub fn from_canonical_bytes(bytes: &[u8]) -> Result<Receipt, DecodeError> {
        let mut r = Reader { bytes, at: 0 };
        if r.str("domain")? != RECEIPT_DOMAIN {
            return Err(DecodeError { field: "domain" });
        }
        let id = r.string("id")?;
        let sequence = u64::from_be_bytes(r.array("sequence")?);
        let time_ms = i64::from_be_bytes(r.array("time_ms")?);
        let gateway_id = r.string("gateway_id")?;
        let actor_key = r.string("actor_key")?;
        let patient_key = r.opt_string("patient_key")?;
        let organization = r.opt_string("organization")?;
        let site = r.opt_string("site")?;
        let interaction = match r.opt_string("interaction")? {
            None => None,
            Some(i) => Some(parse_interaction(&i).ok_or(DecodeError {
                field: "interaction",
            })?),
        };
        let resource_type = r.opt_string("resource_type")?;
        let query_key = r.opt_string("query_key")?;
        let n = u32::from_be_bytes(r.array("resources")?);
        let mut resources = Vec::new();
        for _ in 0..n {
            resources.push(ResourceEntry {
                resource_type: r.string("resources.resource_type")?,
                id: r.string("resources.id")?,
                version_id: r.opt_string("resources.version_id")?,
                content_hash: Digest(r.array("resources.content_hash")?),
            });
        }
        let purpose = r.opt_string("purpose")?;
        let decision = match r.byte("decision")? {
            1 => AccessDecision::Permit,
            2 => AccessDecision::Deny,
            3 => AccessDecision::Error,
            _ => return Err(DecodeError { field: "decision" }),
        };
        let consent = match r.byte("consent")? {
            0 => ConsentRelied::None,
            1 => ConsentRelied::SiteDefault(r.string("consent.policy")?),
            2 => ConsentRelied::Consent {
                id: r.string("consent.id")?,
                version: r.string("consent.version")?,
            },
            _ => return Err(DecodeError { field: "consent" }),
        };
        let break_glass = match r.byte("break_glass")? {
            0 => false,
            1 => true,
            _ => {
                return Err(DecodeError {
                    field: "break_glass",
                });
            }
        };
        let break_glass_justification = r.opt_string("break_glass_justification")?;
        let upstream_status = match r.byte("upstream_status")? {
            0 => None,
            1 => Some(u16::from_be_bytes(r.array("upstream_status")?)),
            _ => {
                return Err(DecodeError {
                    field: "upstream_status",
                });
            }
        };
        let status = u16::from_be_bytes(r.array("status")?);
        let prev_hash = Digest(r.array("prev_hash")?);
        if r.at != bytes.len() {
            return Err(DecodeError { field: "end" });
        }
        Ok(Receipt {
            id,
            sequence,
            time_ms,
            gateway_id,
            actor_key,
            patient_key,
            organization,
            site,
            interaction,
            resource_type,
            query_key,
            resources,
            purpose,
            decision,
            consent,
            break_glass,
            break_glass_justification,
            upstream_status,
            status,
            prev_hash,
        })
    }
}

/// Bytes that are not a canonical receipt encoding, with the field where reading failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a canonical receipt encoding (at `{field}`)")]
pub struct DecodeError {
    pub field: &'static str,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).ok_or(DecodeError { field })?;
        let out = self.bytes.get(self.at..end).ok_or(DecodeError { field })?;
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        self.take(N, field)?
            .try_into()
            .map_err(|_| DecodeError { field })
    }

    fn byte(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn str(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let len = u32::from_be_bytes(self.array(field)?) as usize;
        std::str::from_utf8(self.take(len, field)?).map_err(|_| DecodeError { field })
    }

    fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        self.str(field).map(str::to_owned)
    }

    fn opt_string(&mut self, field: &'static str) -> Result<Option<String>, DecodeError> {
        match self.byte(field)? {
            0 => Ok(None),
            1 => self.string(field).map(Some),
            _ => Err(DecodeError { field }),
        }
    }
}

/// Reads an interaction's stable name ([`Interaction::as_str`]).
pub fn parse_interaction(text: &str) -> Option<Interaction> {
    [
        Interaction::Read,
        Interaction::Vread,
        Interaction::Search,
        Interaction::History,
        Interaction::Capabilities,
        Interaction::Operation,
    ]
    .into_iter()
    .find(|i| i.as_str() == text)
}

fn put_len(out: &mut Vec<u8>, len: usize) {
    // Lengths above 4 GiB cannot occur in a receipt (requests are bounded far below); clamp
    // rather than panic, and the hash still differs from any shorter value's.
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn key() -> ConsortiumKey {
        ConsortiumKey::new(b"receipts-test-consortium-key-32b").unwrap()
    }

    pub(crate) fn subjects() -> ReceiptSubjects {
        ReceiptSubjects {
            actor: "Practitioner/dr-who".into(),
            patient: Some("urn:oid:1.2.3|p-42".into()),
            query: Some("code=http://loinc.org|1234-5".into()),
            client_id: Some("ehr-app".into()),
            client_address: Some("10.0.0.7".into()),
        }
    }

    /// A permitted read of one Observation.
    pub(crate) fn sample(id: &str) -> Receipt {
        let mut r = Receipt::new(
            id,
            1_795_568_844_123,
            "gw-1",
            subjects().keys(&key()),
            AccessDecision::Permit,
            200,
        );
        r.organization = Some("Organization/st-elsewhere".into());
        r.site = Some("north".into());
        r.interaction = Some(Interaction::Read);
        r.resource_type = Some("Observation".into());
        r.resources = vec![
            ResourceEntry::from_resource(&json!({
                "resourceType": "Observation", "id": "o1", "meta": {"versionId": "3"}
            }))
            .unwrap(),
        ];
        r.purpose = Some("TREAT".into());
        r.consent = ConsentRelied::Consent {
            id: "c1".into(),
            version: "2".into(),
        };
        r.upstream_status = Some(200);
        r
    }

    #[test]
    fn every_field_changes_the_hash() {
        let base = sample("r1");
        let h = base.hash();
        type Edit = fn(&mut Receipt);
        let edits: &[(&str, Edit)] = &[
            ("id", |r| r.id.push('x')),
            ("sequence", |r| r.sequence += 1),
            ("time", |r| r.time_ms += 1),
            ("gateway", |r| r.gateway_id.push('x')),
            ("actor", |r| r.actor_key.push('x')),
            ("patient", |r| r.patient_key = None),
            ("organization", |r| r.organization = None),
            ("site", |r| r.site = Some("south".into())),
            ("interaction", |r| r.interaction = Some(Interaction::Vread)),
            ("resource type", |r| r.resource_type = None),
            ("query", |r| r.query_key = None),
            ("resource version", |r| r.resources[0].version_id = None),
            ("content hash", |r| {
                r.resources[0].content_hash = Digest::ZERO
            }),
            ("no resources", |r| r.resources.clear()),
            ("purpose", |r| r.purpose = Some("ETREAT".into())),
            ("decision", |r| r.decision = AccessDecision::Deny),
            ("consent", |r| {
                r.consent = ConsentRelied::SiteDefault("opt-out".into())
            }),
            ("break glass", |r| r.break_glass = true),
            ("justification", |r| {
                r.break_glass_justification = Some("x".into())
            }),
            ("upstream status", |r| r.upstream_status = Some(500)),
            ("status", |r| r.status = 502),
            ("prev hash", |r| r.prev_hash = Digest::of(b"x")),
        ];
        for (name, edit) in edits {
            let mut r = base.clone();
            edit(&mut r);
            assert_ne!(r.hash(), h, "{name} is not covered by the hash");
        }
        assert_eq!(base.clone().hash(), h);
    }

    #[test]
    fn canonical_bytes_read_back() {
        let mut full = sample("r1");
        full.break_glass = true;
        full.break_glass_justification = Some("unconscious".into());
        full.consent = ConsentRelied::SiteDefault("opt-in".into());
        let mut empty = Receipt::new(
            "r2",
            -5,
            "gw",
            subjects().keys(&key()),
            AccessDecision::Error,
            400,
        );
        empty.patient_key = None;
        empty.query_key = None;
        for r in [sample("r1"), full, empty] {
            let bytes = r.canonical_bytes();
            assert_eq!(Receipt::from_canonical_bytes(&bytes), Ok(r.clone()));
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(
                Receipt::from_canonical_bytes(&longer),
                Err(DecodeError { field: "end" })
            );
            for cut in [0, 3, 20, bytes.len() / 2, bytes.len() - 1] {
                assert!(Receipt::from_canonical_bytes(&bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn field_boundaries_cannot_be_shifted() {
        let mut a = sample("r1");
        let mut b = sample("r1");
        a.organization = Some("ab".into());
        a.site = Some("c".into());
        b.organization = Some("a".into());
        b.site = Some("bc".into());
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn encoding_starts_with_the_domain_tag() {
        let bytes = sample("r1").canonical_bytes();
        assert_eq!(&bytes[..4], &16u32.to_be_bytes());
        assert_eq!(&bytes[4..20], RECEIPT_DOMAIN.as_bytes());
    }

    #[test]
    fn subjects_are_keyed_and_checked() {
        let r = sample("r1");
        let s = subjects();
        assert!(s.match_receipt(&r, &key()));
        assert_eq!(
            r.patient_key.as_deref(),
            Some(key().patient("urn:oid:1.2.3|p-42").as_str())
        );
        let mut other = s.clone();
        other.actor = "Practitioner/other".into();
        assert!(!other.match_receipt(&r, &key()));
        assert!(!r.canonical_bytes().windows(6).any(|w| w == b"dr-who"));
    }

    #[test]
    fn content_hash_ignores_key_order() {
        let a = ResourceEntry::from_resource(
            &json!({"resourceType": "Patient", "id": "p", "active": true}),
        )
        .unwrap();
        let b = ResourceEntry::from_resource(
            &json!({"active": true, "id": "p", "resourceType": "Patient"}),
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.reference(), "Patient/p");
        assert!(ResourceEntry::from_resource(&json!({"resourceType": "Patient"})).is_none());
    }

    #[test]
    fn consent_header_round_trips() {
        for c in [
            ConsentRelied::None,
            ConsentRelied::SiteDefault("opt-in".into()),
            ConsentRelied::Consent {
                id: "c1".into(),
                version: "3".into(),
            },
            ConsentRelied::Consent {
                id: "c1".into(),
                version: String::new(),
            },
        ] {
            assert_eq!(ConsentRelied::parse_header_value(&c.header_value()), c);
        }
        assert_eq!(
            ConsentRelied::site_default(SitePolicy::OptOut).header_value(),
            "site-default:opt-out"
        );
    }

    #[test]
    fn decisions_are_recorded() {
        let mut r = sample("r1");
        r.set_decision(&assent_consent::decide_site_default(SitePolicy::OptIn));
        assert_eq!(r.decision, AccessDecision::Deny);
        assert_eq!(r.consent, ConsentRelied::SiteDefault("opt-in".into()));
        assert!(!r.break_glass);
        r.set_decision(&assent_consent::decide_site_default(SitePolicy::OptOut));
        assert_eq!(r.decision, AccessDecision::Permit);
        assert_eq!(r.consent_header(), "site-default:opt-out");
        let overridden = Basis::BreakGlass(Box::new(Basis::SiteDefault(SitePolicy::OptIn)));
        assert_eq!(
            ConsentRelied::from_basis(&overridden),
            ConsentRelied::SiteDefault("opt-in".into())
        );
    }

    #[test]
    fn interactions_parse_back() {
        for i in [
            Interaction::Read,
            Interaction::Search,
            Interaction::Operation,
        ] {
            assert_eq!(parse_interaction(i.as_str()), Some(i));
        }
        assert_eq!(parse_interaction("delete"), None);
    }
}
