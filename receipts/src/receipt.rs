//! The receipt of one access, its canonical encoding and its hash; the clear values kept
//! beside it (`ReceiptSubjects`) and their keyed hashes.
//!
//! Owns what a receipt says and how its bytes are fixed. Leaves out linking receipts into a
//! chain (`chain.rs`), batching (`batch.rs`), wire and export forms (`export.rs`) and storage
//! (the gateway).
//!
//! # Canonical encoding
//!
//! The receipt hash is SHA-256 over the canonical encoding. The encoding is binary and
//! length-prefixed, so no two receipts share an encoding and no text escaping is involved.
//! Primitives:
//! - `str`: the UTF-8 length as a 4-byte big-endian unsigned integer, then the bytes;
//! - `opt<T>`: one byte `0` when absent, or `1` followed by `T`;
//! - `list<T>`: the count as `u32`, then each `T`;
//! - `u8`, `u16`, `u32`, `u64`, `i64`: fixed width, big-endian (two's complement for `i64`);
//! - `digest`: the 32 raw bytes.
//!
//! ## Version 2 (domain tag `assent-receipt/2`), what the gateway writes
//!
//! | # | field | encoding |
//! |---|---|---|
//! | 0 | the domain tag `assent-receipt/2` | `str` |
//! | 1 | `id` | `str` |
//! | 2 | `sequence` | `u64` |
//! | 3 | `time_ms` | `i64` |
//! | 4 | `gateway_id` | `str` |
//! | 5 | `kind` ([`AccessKind::as_str`]: `fhir`, `consent-create`, …, `audit-read`, …, `network-link`, …) | `str` |
//! | 6 | `actor_key` | `str` |
//! | 7 | `patient_keys`: every patient the access reached, in the receipt's order | `list<str>` |
//! | 8 | `organization` | `opt<str>` |
//! | 9 | `site` | `opt<str>` |
//! | 10 | `interaction` ([`Interaction::as_str`]) | `opt<str>` |
//! | 11 | `resource_type` | `opt<str>` |
//! | 12 | `query_key` | `opt<str>` |
//! | 13 | `resources`: count, then per entry `resource_type`, `id`, `version_id`, `content_hash` | `u32`, then `str`, `str`, `opt<str>`, `digest` |
//! | 14 | `purpose` | `opt<str>` |
//! | 15 | `decision`: permit 1, deny 2, error 3 | `u8` |
//! | 16 | `consent`: none 0; site default 1 + policy; consent 2 + id + version | `u8` [+ `str` [+ `str`]] |
//! | 17 | `break_glass` | `u8` (0 or 1) |
//! | 18 | `break_glass_justification` | `opt<str>` |
//! | 19 | `upstream_status` | `opt<u16>` |
//! | 20 | `status` | `u16` |
//! | 21 | `prev_hash` | `digest` |
//!
//! A resource's `content_hash` is the SHA-256 of its canonical JSON in every version
//! ([`ResourceEntry::from_resource`]); the gateway takes it from the bytes it sends, which
//! are that canonical JSON in a compact answer (`content.rs`).
//!
//! ## Version 1 (domain tag `assent-receipt/1`), still read and verified
//!
//! Version 1 had no `kind` (every receipt was a FHIR request: [`AccessKind::Fhir`]) and one
//! patient at most: after the tag, `id`, `sequence`, `time_ms`, `gateway_id`, `actor_key`,
//! then `patient_key` as `opt<str>`, then fields 8 to 21 of version 2 in the same order. A
//! receipt read from version 1 bytes (or a version 1 export line) keeps
//! [`Encoding::V1`] and hashes as it did; [`Receipt::new`] makes version 2 receipts.
//! [`Receipt::from_canonical_bytes`] reads either back, so a store can keep the exact bytes
//! that were hashed.
//!
//! **Invariant:** no clear identifier of a person is hashed into a receipt: the actor, the
//! patient and the query text appear only as keyed hashes (HMAC with the consortium key);
//! their clear values live in [`ReceiptSubjects`], beside the receipt, for authorised audit
//! queries.

use assent_consent::{Basis, ConsortiumKey, SitePolicy};
use assent_fhir::Interaction;
use serde_json::Value;

use crate::digest::Digest;

/// The domain tag that opens the canonical encoding of the version the gateway writes.
pub const RECEIPT_DOMAIN: &str = "assent-receipt/2";
/// The domain tag of version 1 receipts (one patient at most, FHIR requests only).
pub const RECEIPT_DOMAIN_V1: &str = "assent-receipt/1";

/// Which canonical encoding a receipt hashes with (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Encoding {
    /// `assent-receipt/1`: read back from stores and exports made before version 2.
    V1,
    /// `assent-receipt/2`: every receipt made now.
    #[default]
    V2,
}

impl Encoding {
    /// The version number (1 or 2), as export lines carry it.
    pub fn number(self) -> u8 {
        match self {
            Encoding::V1 => 1,
            Encoding::V2 => 2,
        }
    }

    pub fn from_number(n: u8) -> Option<Encoding> {
        match n {
            1 => Some(Encoding::V1),
            2 => Some(Encoding::V2),
            _ => None,
        }
    }
}

/// What a receipt records: a FHIR request through `/fhir`, a call of the consent API, or a
/// read of the audit log. A field of its own rather than more [`Interaction`] variants:
/// `Interaction` is the FHIR REST vocabulary that scopes and consent decide on, and managing
/// consents or reading the audit log are not FHIR interactions on a site's data (nor are
/// `$revoke`, `$check`, exports or disclosures FHIR interactions at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AccessKind {
    /// A FHIR request under `/fhir/{site}` (its interaction is [`Receipt::interaction`]).
    #[default]
    Fhir,
    /// A call of the consent API (`/consent`).
    Consent(ConsentAction),
    /// A read of the audit log (`/audit`, the console).
    Audit(AuditAction),
    /// A change or read of the network patient index (which site patients are one network
    /// patient): a link learned by the gateway, or an administrator's call (`/admin/network`).
    Network(NetworkAction),
}

/// What a consent API call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConsentAction {
    /// `POST /consent/Consent` (a server-assigned id), or `PUT /consent/Consent/{id}` of a
    /// consent id not stored before.
    Create,
    /// `PUT /consent/Consent/{id}` of a consent id already stored (a new version).
    Update,
    /// `POST /consent/Consent/{id}/$revoke`.
    Revoke,
    /// `GET /consent/Consent?site=…&patient=…`.
    Search,
    /// `GET /consent/Consent/{id}/_history`.
    History,
    /// `GET /consent/Consent/{id}` or `GET /consent/Consent/{id}/_history/{version}`.
    Read,
    /// `POST /consent/$check`.
    Check,
}

/// What a read of the audit log did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    /// An AuditEvent search (`/audit/AuditEvent`, the console's list).
    Search,
    /// One receipt with its verification (`/audit/receipts/{id}`, the console's detail).
    Read,
    /// A streamed export (`/audit/export`, the console's CSV).
    Export,
    /// A patient's accounting of disclosures.
    Disclosures,
}

/// What a change or read of the network patient index did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetworkAction {
    /// Site patients linked to a network patient by a shared network identifier (the gateway
    /// learnt it: its actor is the gateway).
    Link,
    /// An administrator confirmed a match candidate (a link).
    Confirm,
    /// An administrator rejected a match candidate (the pair is never linked automatically).
    Reject,
    /// An administrator removed a link (the pair is never linked automatically again).
    Unlink,
    /// An administrator read the index (candidates, a network patient's links).
    Read,
}

impl AccessKind {
    /// Every kind, for parsing back.
    pub const ALL: [AccessKind; 17] = [
        AccessKind::Fhir,
        AccessKind::Consent(ConsentAction::Create),
        AccessKind::Consent(ConsentAction::Update),
        AccessKind::Consent(ConsentAction::Revoke),
        AccessKind::Consent(ConsentAction::Search),
        AccessKind::Consent(ConsentAction::History),
        AccessKind::Consent(ConsentAction::Read),
        AccessKind::Consent(ConsentAction::Check),
        AccessKind::Audit(AuditAction::Search),
        AccessKind::Audit(AuditAction::Read),
        AccessKind::Audit(AuditAction::Export),
        AccessKind::Audit(AuditAction::Disclosures),
        AccessKind::Network(NetworkAction::Link),
        AccessKind::Network(NetworkAction::Confirm),
        AccessKind::Network(NetworkAction::Reject),
        AccessKind::Network(NetworkAction::Unlink),
        AccessKind::Network(NetworkAction::Read),
    ];

    /// The stable name hashed into version 2 receipts and shown in exports.
    pub fn as_str(self) -> &'static str {
        use AuditAction as A;
        use ConsentAction as C;
        match self {
            AccessKind::Fhir => "fhir",
            AccessKind::Consent(C::Create) => "consent-create",
            AccessKind::Consent(C::Update) => "consent-update",
            AccessKind::Consent(C::Revoke) => "consent-revoke",
            AccessKind::Consent(C::Search) => "consent-search",
            AccessKind::Consent(C::History) => "consent-history",
            AccessKind::Consent(C::Read) => "consent-read",
            AccessKind::Consent(C::Check) => "consent-check",
            AccessKind::Audit(A::Search) => "audit-search",
            AccessKind::Audit(A::Read) => "audit-read",
            AccessKind::Audit(A::Export) => "audit-export",
            AccessKind::Audit(A::Disclosures) => "audit-disclosures",
            AccessKind::Network(NetworkAction::Link) => "network-link",
            AccessKind::Network(NetworkAction::Confirm) => "network-confirm",
            AccessKind::Network(NetworkAction::Reject) => "network-reject",
            AccessKind::Network(NetworkAction::Unlink) => "network-unlink",
            AccessKind::Network(NetworkAction::Read) => "network-read",
        }
    }

    pub fn parse(text: &str) -> Option<AccessKind> {
        AccessKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl std::fmt::Display for AccessKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    /// ([`assent_consent::canonical_json`]: keys sorted, no whitespace, every number as the
    /// text the site wrote, which serde_json's `arbitrary_precision` keeps: `1.50` is not
    /// `1.5`), so that the hash does not depend on how the response was serialised. `None`
    /// without `resourceType` or `id`.
    ///
    /// The gateway takes the hash from the bytes it sends instead
    /// ([`crate::write_released`]): in a compact answer they are this canonical JSON.
    pub fn from_resource(resource: &Value) -> Option<ResourceEntry> {
        ResourceEntry::with_hash(resource, || Digest::of_canonical_json(resource))
    }

    /// The entry for `resource`, its content hash from `hash` (asked only when the resource
    /// has a type and an id).
    pub(crate) fn with_hash(
        resource: &Value,
        hash: impl FnOnce() -> Digest,
    ) -> Option<ResourceEntry> {
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
            content_hash: hash(),
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
    /// Whose records: every patient the access reached (the one it named first, then the
    /// patients of what it released), as identities (`{site}/Patient/{id}`, `system|value`),
    /// without repeats. Their keyed hashes are the receipt's `patient_keys`, in this order.
    pub patients: Vec<String>,
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
    pub patient_keys: Vec<String>,
    pub query_key: Option<String>,
}

impl ReceiptSubjects {
    /// Adds a patient the access reached, unless it is listed already.
    pub fn add_patient(&mut self, identity: impl Into<String>) {
        let identity = identity.into();
        if !self.patients.contains(&identity) {
            self.patients.push(identity);
        }
    }

    pub fn keys(&self, key: &ConsortiumKey) -> SubjectKeys {
        SubjectKeys {
            actor_key: key.keyed_hash(ACTOR_DOMAIN, &self.actor),
            patient_keys: self.patients.iter().map(|p| key.patient(p)).collect(),
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
            && keys.patient_keys == receipt.patient_keys
            && keys.query_key == receipt.query_key
    }
}

/// The receipt of one request through the gateway, permitted, denied or failed.
///
/// `sequence` and `prev_hash` are set by [`crate::Chain::append`]; everything else by the
/// gateway's record phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The canonical encoding this receipt hashes with.
    pub encoding: Encoding,
    /// Unique receipt id (the gateway uses a time-ordered UUID, version 7), sent back in `X-Assent-Receipt`.
    pub id: String,
    /// Position in the gateway's chain, from 1.
    pub sequence: u64,
    /// When the request was received, UTC milliseconds since the epoch.
    pub time_ms: i64,
    pub gateway_id: String,
    /// What the receipt records (a FHIR request, a consent API call, an audit-log read).
    pub kind: AccessKind,
    pub actor_key: String,
    /// The keyed hashes of every patient the access reached (see
    /// [`ReceiptSubjects::patients`]); a version 1 receipt has one at most.
    pub patient_keys: Vec<String>,
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
            encoding: Encoding::V2,
            id: id.into(),
            sequence: 0,
            time_ms,
            gateway_id: gateway_id.into(),
            kind: AccessKind::Fhir,
            actor_key: keys.actor_key,
            patient_keys: keys.patient_keys,
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
    ///
    /// A version 1 receipt encodes its first patient key only and no kind: one read back from
    /// version 1 bytes or a version 1 export line never has more (both refuse it).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self.encoding {
            Encoding::V1 => {
                put_str(out, RECEIPT_DOMAIN_V1);
                put_str(out, &self.id);
                out.extend_from_slice(&self.sequence.to_be_bytes());
                out.extend_from_slice(&self.time_ms.to_be_bytes());
                put_str(out, &self.gateway_id);
                put_str(out, &self.actor_key);
                put_opt_str(out, self.patient_keys.first().map(String::as_str));
            }
            Encoding::V2 => {
                put_str(out, RECEIPT_DOMAIN);
                put_str(out, &self.id);
                out.extend_from_slice(&self.sequence.to_be_bytes());
                out.extend_from_slice(&self.time_ms.to_be_bytes());
                put_str(out, &self.gateway_id);
                put_str(out, self.kind.as_str());
                put_str(out, &self.actor_key);
                put_len(out, self.patient_keys.len());
                for key in &self.patient_keys {
                    put_str(out, key);
                }
            }
        }
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
        let encoding = match r.str("domain")? {
            RECEIPT_DOMAIN => Encoding::V2,
            RECEIPT_DOMAIN_V1 => Encoding::V1,
            _ => return Err(DecodeError { field: "domain" }),
        };
        let id = r.string("id")?;
        let sequence = u64::from_be_bytes(r.array("sequence")?);
        let time_ms = i64::from_be_bytes(r.array("time_ms")?);
        let gateway_id = r.string("gateway_id")?;
        let (kind, actor_key, patient_keys) = match encoding {
            Encoding::V1 => {
                let actor_key = r.string("actor_key")?;
                let patient_key = r.opt_string("patient_key")?;
                (
                    AccessKind::Fhir,
                    actor_key,
                    patient_key.into_iter().collect(),
                )
            }
            Encoding::V2 => {
                let kind =
                    AccessKind::parse(r.str("kind")?).ok_or(DecodeError { field: "kind" })?;
                let actor_key = r.string("actor_key")?;
                let n = u32::from_be_bytes(r.array("patient_keys")?);
                let mut keys = Vec::new();
                for _ in 0..n {
                    keys.push(r.string("patient_keys")?);
                }
                (kind, actor_key, keys)
            }
        };
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
            encoding,
            id,
            sequence,
            time_ms,
            gateway_id,
            kind,
            actor_key,
            patient_keys,
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
            patients: vec!["urn:oid:1.2.3|p-42".into()],
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
            ("kind", |r| {
                r.kind = AccessKind::Consent(ConsentAction::Search)
            }),
            ("patient", |r| r.patient_keys.clear()),
            ("another patient", |r| r.patient_keys.push("k2".into())),
            ("patient order", |r| r.patient_keys.insert(0, "k0".into())),
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
        empty.patient_keys.clear();
        let mut several = sample("r3");
        several.patient_keys.push(key().patient("north/Patient/p2"));
        several.kind = AccessKind::Audit(AuditAction::Disclosures);
        empty.query_key = None;
        for r in [sample("r1"), full, empty, several] {
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
        assert_eq!(RECEIPT_DOMAIN, "assent-receipt/2");
    }

    /// A version 1 receipt, as the gateway wrote it before version 2 (bytes and hash made by
    /// that code, kept here as they were).
    pub(crate) const V1_BYTES_HEX: &str = "00000010617373656e742d726563656970742f3100000004722d76310000000000000001000001a2103e3d5b0000000467772d3100000040383734313534366230323066393239666638316130326639653236303964623737363931383364326437333264316635383336376537623437633139666130390100000040653439363938373536363665306435313332396634316562623131383235383364396361313966656532303034313161666334363431663636646130323664360001000000056e6f727468010000000472656164010000000b4f62736572766174696f6e010000004036396339323237353636623533333236666336663861643638303765356563396135633163626334393366393264616237353235346261323265303134333663000000010000000b4f62736572766174696f6e000000026f31010000000133cb27d7a9e9afbe4e8524d48218cdb103c96b8621c06ed5b87bb858c08a24f744010000000554524541540102000000026331000000013200000100c800c80000000000000000000000000000000000000000000000000000000000000000";
    pub(crate) const V1_HASH_HEX: &str =
        "2d2afc87dcd9b5ab4ff9cfee6c58994d7cf53af4c7f0edd068da0bab08d5ef4e";

    #[test]
    fn version_1_receipts_still_read_and_hash_as_they_did() {
        let bytes = hex::decode(V1_BYTES_HEX).unwrap();
        let r = Receipt::from_canonical_bytes(&bytes).unwrap();
        assert_eq!(r.encoding, Encoding::V1);
        assert_eq!(r.kind, AccessKind::Fhir);
        assert_eq!(r.id, "r-v1");
        assert_eq!(
            r.patient_keys,
            vec![key().patient("urn:oid:1.2.3|p-42")],
            "the one patient of version 1"
        );
        assert_eq!(r.canonical_bytes(), bytes, "encoded again byte for byte");
        assert_eq!(r.hash().to_hex(), V1_HASH_HEX);
        // The same facts in version 2 hash otherwise: the domain tag differs.
        let mut v2 = r.clone();
        v2.encoding = Encoding::V2;
        assert_ne!(v2.hash(), r.hash());
        assert_eq!(
            Receipt::from_canonical_bytes(&v2.canonical_bytes()),
            Ok(v2.clone())
        );
        // A version 1 receipt without a patient reads back with none.
        let mut none = r.clone();
        none.patient_keys.clear();
        assert_eq!(
            Receipt::from_canonical_bytes(&none.canonical_bytes()).map(|r| r.patient_keys),
            Ok(Vec::new())
        );
        // Another domain tag is refused.
        let mut other = bytes.clone();
        other[4 + 15] = b'3';
        assert_eq!(
            Receipt::from_canonical_bytes(&other),
            Err(DecodeError { field: "domain" })
        );
    }

    #[test]
    fn every_patient_reached_is_keyed_in_order_without_repeats() {
        let mut s = subjects();
        s.add_patient("north/Patient/p2");
        s.add_patient("urn:oid:1.2.3|p-42");
        assert_eq!(s.patients, ["urn:oid:1.2.3|p-42", "north/Patient/p2"]);
        let keys = s.keys(&key());
        assert_eq!(
            keys.patient_keys,
            vec![
                key().patient("urn:oid:1.2.3|p-42"),
                key().patient("north/Patient/p2")
            ]
        );
        let mut r = sample("r1");
        r.patient_keys = keys.patient_keys;
        assert!(s.match_receipt(&r, &key()));
        assert!(
            !subjects().match_receipt(&r, &key()),
            "one patient left out"
        );
    }

    #[test]
    fn kinds_parse_back() {
        for kind in AccessKind::ALL {
            assert_eq!(AccessKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(AccessKind::parse("consent-delete"), None);
        let mut bytes = sample("r1").canonical_bytes();
        // The kind follows the gateway id: `fhir` becomes an unknown name.
        let at = bytes.windows(4).position(|w| w == b"fhir").unwrap();
        bytes[at] = b'x';
        assert_eq!(
            Receipt::from_canonical_bytes(&bytes),
            Err(DecodeError { field: "kind" })
        );
    }

    #[test]
    fn subjects_are_keyed_and_checked() {
        let r = sample("r1");
        let s = subjects();
        assert!(s.match_receipt(&r, &key()));
        assert_eq!(r.patient_keys, vec![key().patient("urn:oid:1.2.3|p-42")]);
        let mut other = s.clone();
        other.actor = "Practitioner/other".into();
        assert!(!other.match_receipt(&r, &key()));
        assert!(!r.canonical_bytes().windows(6).any(|w| w == b"dr-who"));
    }

    /// The content hash is SHA-256 of the canonical JSON text, written into the hasher
    /// without building the text: the same digest a client or `assent verify` gets from
    /// `canonical_json`, on awkward values and on every official example at hand.
    #[test]
    fn content_hash_is_sha256_of_the_canonical_text() {
        let mut values = vec![
            json!({"resourceType": "Patient", "id": "p", "z": [], "a": {}, "m": [{"y": 1, "x": [null, false]}]}),
            json!({"resourceType": "Observation", "id": "o", "valueQuantity": {"value": 1.50, "unit": "mg/dL"}, "n": -0.0, "big": 12345678901234567890u64, "neg": -9007199254740993i64}),
            json!({"resourceType": "Patient", "id": "é", "name": [{"text": "Zoë \u{1F600} \"q\" \\ / \u{7}\n\t"}], "ключ": "значение", "": ""}),
        ];
        if let Ok(dir) = std::env::var("ASSENT_FHIR_EXAMPLES")
            && let Ok(entries) = std::fs::read_dir(std::path::Path::new(&dir).join("r4"))
        {
            for entry in entries.flatten().take(300) {
                if let Ok(text) = std::fs::read_to_string(entry.path())
                    && let Ok(value) = serde_json::from_str::<Value>(&text)
                {
                    values.push(value);
                }
            }
        }
        for value in &values {
            assert_eq!(
                Digest::of_canonical_json(value),
                Digest::of(assent_consent::canonical_json(value).as_bytes()),
                "{value}"
            );
        }
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

    /// A number hashes as the text the site wrote: `1.50` and `1.5` are different content
    /// (a lab value's precision), and 30 digits are not cut to a float's 17.
    #[test]
    fn content_hash_takes_numbers_as_their_text() {
        let entry = |text: &str| {
            let resource: Value = serde_json::from_str(text).unwrap();
            ResourceEntry::from_resource(&resource)
                .unwrap()
                .content_hash
        };
        let hash_of = |canonical: &str| Digest::of(canonical.as_bytes());
        for number in [
            "1.50",
            "0.010",
            "-0",
            "-0.0",
            "123456789012345678901234567890.123",
            "1e-7",
        ] {
            let text =
                format!(r#"{{"value": {number}, "resourceType": "Observation", "id": "o"}}"#);
            assert_eq!(
                entry(&text),
                hash_of(&format!(
                    r#"{{"id":"o","resourceType":"Observation","value":{number}}}"#
                )),
                "{number}"
            );
        }
        assert_ne!(
            entry(r#"{"resourceType": "Observation", "id": "o", "value": 1.50}"#),
            entry(r#"{"resourceType": "Observation", "id": "o", "value": 1.5}"#)
        );
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
