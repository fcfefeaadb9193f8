//! Export forms of receipts, one row at a time: NDJSON lines (the wire form `assent verify`
//! reads back, with the proof and anchor of each receipt) and CSV rows under a fixed header.
//!
//! Owns the wire types (the only serde types of the crate besides what the ledger defines)
//! and their conversion to and from the domain types. Leaves out selecting and streaming rows
//! (the gateway writes each row as it reads it, never the whole export) and AuditEvents
//! (`audit.rs`).

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::merkle::InclusionProof;
use crate::receipt::{
    AccessDecision, AccessKind, ConsentRelied, Encoding, Receipt, ReceiptSubjects, ResourceEntry,
    parse_interaction,
};
use crate::time::{format_instant, parse_instant};

/// A receipt's place in an anchored batch: its proof, the batch root, and the ledger
/// transaction and block that recorded the root (once known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchoring {
    pub batch_id: u64,
    pub proof: InclusionProof,
    pub root: Digest,
    pub tx_id: Option<String>,
    pub block_number: Option<u64>,
}

/// One receipt as read back from an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedReceipt {
    pub receipt: Receipt,
    /// The hash the gateway stored with the receipt.
    pub hash: Option<Digest>,
    pub anchoring: Option<Anchoring>,
    pub subjects: Option<ReceiptSubjects>,
}

/// Why an export line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("not a receipt record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid `{field}`: `{value}`")]
    Field { field: &'static str, value: String },
}

/// One NDJSON line of an export: a receipt, its hash, and where known its proof, anchor and
/// clear subjects. Field names are a compatibility promise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptRecord {
    pub receipt: ReceiptWire,
    pub hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<ProofWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor: Option<AnchorWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subjects: Option<SubjectsWire>,
}

/// A receipt on the wire. Version 2 receipts carry `encoding: 2`, their `kind` and the list
/// `patient_keys`; version 1 receipts (and export lines written before version 2, which have
/// no `encoding`) carry at most one `patient_key` and no kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptWire {
    /// The canonical encoding's version: 1 or 2 (absent: 1).
    #[serde(default = "encoding_v1")]
    pub encoding: u8,
    pub id: String,
    pub sequence: u64,
    /// FHIR `instant` with milliseconds, UTC.
    pub time: String,
    pub gateway_id: String,
    /// [`AccessKind::as_str`]; version 2 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub actor_key: String,
    /// Version 1 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_key: Option<String>,
    /// Version 2 only: every patient the access reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patient_keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interaction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_key: Option<String>,
    #[serde(default)]
    pub resources: Vec<ResourceWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    pub decision: String,
    pub consent: ConsentWire,
    pub break_glass: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub break_glass_justification: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    pub status: u16,
    pub prev_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceWire {
    pub resource_type: String,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    pub content_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ConsentWire {
    None,
    SiteDefault { policy: String },
    Consent { id: String, version: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofWire {
    pub batch_id: u64,
    pub index: u64,
    pub size: u64,
    pub siblings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorWire {
    pub batch_id: u64,
    pub root: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_number: Option<u64>,
}

/// The clear subjects on the wire. `patients` lists every patient (in the order of the
/// receipt's keys); lines written before version 2 have a single `patient` instead, which is
/// still read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectsWire {
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patients: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_address: Option<String>,
}

impl ReceiptRecord {
    pub fn new(
        receipt: &Receipt,
        hash: &Digest,
        anchoring: Option<&Anchoring>,
        subjects: Option<&ReceiptSubjects>,
    ) -> ReceiptRecord {
        ReceiptRecord {
            receipt: ReceiptWire::from_receipt(receipt),
            hash: hash.to_hex(),
            proof: anchoring.map(|a| ProofWire {
                batch_id: a.batch_id,
                index: a.proof.index,
                size: a.proof.size,
                siblings: a.proof.siblings.iter().map(Digest::to_hex).collect(),
            }),
            anchor: anchoring.map(|a| AnchorWire {
                batch_id: a.batch_id,
                root: a.root.to_hex(),
                tx_id: a.tx_id.clone(),
                block_number: a.block_number,
            }),
            subjects: subjects.map(|s| SubjectsWire {
                actor: s.actor.clone(),
                patient: None,
                patients: s.patients.clone(),
                query: s.query.clone(),
                client_id: s.client_id.clone(),
                client_address: s.client_address.clone(),
            }),
        }
    }

    /// The domain values; fails on a field that does not read (a hash that is not hex, an
    /// unknown decision...).
    pub fn to_domain(&self) -> Result<ExportedReceipt, ExportError> {
        let receipt = self.receipt.to_receipt()?;
        let hash = Some(digest("hash", &self.hash)?);
        let anchoring = match (&self.proof, &self.anchor) {
            (Some(p), Some(a)) => {
                if p.batch_id != a.batch_id {
                    return Err(field("anchor.batch_id", a.batch_id.to_string()));
                }
                Some(Anchoring {
                    batch_id: a.batch_id,
                    proof: InclusionProof {
                        index: p.index,
                        size: p.size,
                        siblings: p
                            .siblings
                            .iter()
                            .map(|s| digest("proof.siblings", s))
                            .collect::<Result<_, _>>()?,
                    },
                    root: digest("anchor.root", &a.root)?,
                    tx_id: a.tx_id.clone(),
                    block_number: a.block_number,
                })
            }
            (None, None) => None,
            (Some(_), None) => return Err(field("anchor", "missing beside proof".into())),
            (None, Some(_)) => return Err(field("proof", "missing beside anchor".into())),
        };
        let subjects = match &self.subjects {
            None => None,
            Some(s) => Some(ReceiptSubjects {
                actor: s.actor.clone(),
                patients: match (&s.patient, s.patients.is_empty()) {
                    (None, _) => s.patients.clone(),
                    (Some(p), true) => vec![p.clone()],
                    (Some(p), false) => {
                        return Err(field("subjects.patient", format!("{p} beside `patients`")));
                    }
                },
                query: s.query.clone(),
                client_id: s.client_id.clone(),
                client_address: s.client_address.clone(),
            }),
        };
        Ok(ExportedReceipt {
            receipt,
            hash,
            anchoring,
            subjects,
        })
    }
}

impl ReceiptWire {
    pub fn from_receipt(r: &Receipt) -> ReceiptWire {
        let v1 = r.encoding == Encoding::V1;
        ReceiptWire {
            encoding: r.encoding.number(),
            id: r.id.clone(),
            sequence: r.sequence,
            time: format_instant(r.time_ms),
            gateway_id: r.gateway_id.clone(),
            kind: (!v1).then(|| r.kind.as_str().to_owned()),
            actor_key: r.actor_key.clone(),
            patient_key: if v1 {
                r.patient_keys.first().cloned()
            } else {
                None
            },
            patient_keys: if v1 {
                Vec::new()
            } else {
                r.patient_keys.clone()
            },
            organization: r.organization.clone(),
            site: r.site.clone(),
            interaction: r.interaction.map(|i| i.as_str().to_owned()),
            resource_type: r.resource_type.clone(),
            query_key: r.query_key.clone(),
            resources: r
                .resources
                .iter()
                .map(|e| ResourceWire {
                    resource_type: e.resource_type.clone(),
                    id: e.id.clone(),
                    version_id: e.version_id.clone(),
                    content_hash: e.content_hash.to_hex(),
                })
                .collect(),
            purpose: r.purpose.clone(),
            decision: r.decision.as_str().to_owned(),
            consent: match &r.consent {
                ConsentRelied::None => ConsentWire::None,
                ConsentRelied::SiteDefault(policy) => ConsentWire::SiteDefault {
                    policy: policy.clone(),
                },
                ConsentRelied::Consent { id, version } => ConsentWire::Consent {
                    id: id.clone(),
                    version: version.clone(),
                },
            },
            break_glass: r.break_glass,
            break_glass_justification: r.break_glass_justification.clone(),
            upstream_status: r.upstream_status,
            status: r.status,
            prev_hash: r.prev_hash.to_hex(),
        }
    }

    pub fn to_receipt(&self) -> Result<Receipt, ExportError> {
        let encoding = Encoding::from_number(self.encoding)
            .ok_or_else(|| field("encoding", self.encoding.to_string()))?;
        let (kind, patient_keys) = match encoding {
            // Version 1 knew FHIR requests only, and one patient at most.
            Encoding::V1 => {
                if let Some(kind) = &self.kind {
                    return Err(field("kind", kind.clone()));
                }
                if !self.patient_keys.is_empty() {
                    return Err(field("patient_keys", self.patient_keys.join(" ")));
                }
                (AccessKind::Fhir, self.patient_key.iter().cloned().collect())
            }
            Encoding::V2 => {
                if let Some(key) = &self.patient_key {
                    return Err(field("patient_key", key.clone()));
                }
                let kind = self.kind.as_deref().unwrap_or_default();
                let kind = AccessKind::parse(kind).ok_or_else(|| field("kind", kind.to_owned()))?;
                (kind, self.patient_keys.clone())
            }
        };
        Ok(Receipt {
            encoding,
            id: self.id.clone(),
            sequence: self.sequence,
            time_ms: parse_instant(&self.time).ok_or_else(|| field("time", self.time.clone()))?,
            gateway_id: self.gateway_id.clone(),
            kind,
            actor_key: self.actor_key.clone(),
            patient_keys,
            organization: self.organization.clone(),
            site: self.site.clone(),
            interaction: match &self.interaction {
                None => None,
                Some(i) => {
                    Some(parse_interaction(i).ok_or_else(|| field("interaction", i.clone()))?)
                }
            },
            resource_type: self.resource_type.clone(),
            query_key: self.query_key.clone(),
            resources: self
                .resources
                .iter()
                .map(|e| {
                    Ok(ResourceEntry {
                        resource_type: e.resource_type.clone(),
                        id: e.id.clone(),
                        version_id: e.version_id.clone(),
                        content_hash: digest("resources.content_hash", &e.content_hash)?,
                    })
                })
                .collect::<Result<_, ExportError>>()?,
            purpose: self.purpose.clone(),
            decision: AccessDecision::parse(&self.decision)
                .ok_or_else(|| field("decision", self.decision.clone()))?,
            consent: match &self.consent {
                ConsentWire::None => ConsentRelied::None,
                ConsentWire::SiteDefault { policy } => ConsentRelied::SiteDefault(policy.clone()),
                ConsentWire::Consent { id, version } => ConsentRelied::Consent {
                    id: id.clone(),
                    version: version.clone(),
                },
            },
            break_glass: self.break_glass,
            break_glass_justification: self.break_glass_justification.clone(),
            upstream_status: self.upstream_status,
            status: self.status,
            prev_hash: digest("prev_hash", &self.prev_hash)?,
        })
    }
}

fn encoding_v1() -> u8 {
    1
}

fn field(field: &'static str, value: String) -> ExportError {
    ExportError::Field { field, value }
}

fn digest(name: &'static str, text: &str) -> Result<Digest, ExportError> {
    Digest::from_hex(text).ok_or_else(|| field(name, text.to_owned()))
}

/// One NDJSON line (with its `\n`) for a receipt.
pub fn ndjson_line(
    receipt: &Receipt,
    hash: &Digest,
    anchoring: Option<&Anchoring>,
    subjects: Option<&ReceiptSubjects>,
) -> String {
    let record = ReceiptRecord::new(receipt, hash, anchoring, subjects);
    // Serialising plain structs of strings, numbers and booleans cannot fail.
    let mut line = serde_json::to_string(&record).unwrap_or_default();
    line.push('\n');
    line
}

/// Reads one NDJSON line back.
pub fn parse_ndjson_line(line: &str) -> Result<ExportedReceipt, ExportError> {
    let record: ReceiptRecord = serde_json::from_str(line)?;
    record.to_domain()
}

/// The CSV columns, in order.
pub const CSV_COLUMNS: [&str; 29] = [
    "receipt_id",
    "encoding",
    "sequence",
    "time",
    "gateway_id",
    "site",
    "organization",
    "kind",
    "interaction",
    "resource_type",
    "resources",
    "resource_hashes",
    "purpose",
    "decision",
    "consent",
    "break_glass",
    "break_glass_justification",
    "upstream_status",
    "status",
    "actor_key",
    "patient_keys",
    "actor",
    "patients",
    "hash",
    "prev_hash",
    "batch_id",
    "anchor_root",
    "anchor_tx",
    "anchor_block",
];

/// The CSV header line, with its `\r\n`.
pub fn csv_header() -> String {
    let mut line = CSV_COLUMNS.join(",");
    line.push_str("\r\n");
    line
}

/// One CSV row (RFC 4180, `\r\n`-terminated) in [`CSV_COLUMNS`] order. Several resources or
/// patients in a cell are separated by spaces (patient keys are hex; clear patients are
/// `{site}/Patient/{id}` or `system|value`, in the order of the keys). Clear `actor` and
/// `patients` are filled only when `subjects` is given. A cell that would start with `=`, `+`, `-` or `@` is prefixed with `'`, so that a
/// spreadsheet shows it as text instead of running it as a formula.
pub fn csv_row(
    receipt: &Receipt,
    hash: &Digest,
    anchoring: Option<&Anchoring>,
    subjects: Option<&ReceiptSubjects>,
) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let cells: [String; 29] = [
        receipt.id.clone(),
        receipt.encoding.number().to_string(),
        receipt.sequence.to_string(),
        format_instant(receipt.time_ms),
        receipt.gateway_id.clone(),
        opt(&receipt.site),
        opt(&receipt.organization),
        receipt.kind.as_str().to_owned(),
        receipt
            .interaction
            .map(|i| i.as_str().to_owned())
            .unwrap_or_default(),
        opt(&receipt.resource_type),
        receipt
            .resources
            .iter()
            .map(ResourceEntry::reference)
            .collect::<Vec<_>>()
            .join(" "),
        receipt
            .resources
            .iter()
            .map(|r| r.content_hash.to_hex())
            .collect::<Vec<_>>()
            .join(" "),
        opt(&receipt.purpose),
        receipt.decision.as_str().to_owned(),
        receipt.consent.header_value(),
        receipt.break_glass.to_string(),
        opt(&receipt.break_glass_justification),
        receipt
            .upstream_status
            .map(|s| s.to_string())
            .unwrap_or_default(),
        receipt.status.to_string(),
        receipt.actor_key.clone(),
        receipt.patient_keys.join(" "),
        subjects.map(|s| s.actor.clone()).unwrap_or_default(),
        subjects.map(|s| s.patients.join(" ")).unwrap_or_default(),
        hash.to_hex(),
        receipt.prev_hash.to_hex(),
        anchoring
            .map(|a| a.batch_id.to_string())
            .unwrap_or_default(),
        anchoring.map(|a| a.root.to_hex()).unwrap_or_default(),
        anchoring.and_then(|a| a.tx_id.clone()).unwrap_or_default(),
        anchoring
            .and_then(|a| a.block_number)
            .map(|b| b.to_string())
            .unwrap_or_default(),
    ];
    let mut line = String::with_capacity(512);
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        push_csv_cell(&mut line, cell);
    }
    line.push_str("\r\n");
    line
}

fn push_csv_cell(out: &mut String, cell: &str) {
    let formula = cell.starts_with(['=', '+', '-', '@']);
    let quote = formula || cell.contains([',', '"', '\r', '\n']);
    if quote {
        out.push('"');
    }
    if formula {
        out.push('\'');
    }
    for c in cell.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    if quote {
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Chain;
    use crate::merkle::MerkleTree;
    use crate::receipt::tests::{sample, subjects};

    fn anchored() -> (Receipt, Digest, Anchoring) {
        let chained = Chain::genesis("gw-1").append(sample("r1")).unwrap();
        let tree = MerkleTree::build(&[chained.hash, Digest::of(b"other")]).unwrap();
        let anchoring = Anchoring {
            batch_id: 7,
            proof: tree.proof(0).unwrap(),
            root: tree.root(),
            tx_id: Some("tx-1".into()),
            block_number: Some(12),
        };
        (chained.receipt, chained.hash, anchoring)
    }

    #[test]
    fn ndjson_round_trips() {
        let (mut r, h, a) = anchored();
        r.break_glass_justification = Some("unconscious, \"ER\"\nbed 3".into());
        for (anchoring, subj) in [(None, None), (Some(&a), Some(&subjects()))] {
            let line = ndjson_line(&r, &h, anchoring, subj);
            assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
            let back = parse_ndjson_line(&line).unwrap();
            assert_eq!(back.receipt, r);
            assert_eq!(back.hash, Some(h));
            assert_eq!(back.anchoring.as_ref(), anchoring);
            assert_eq!(back.subjects.as_ref(), subj);
        }
    }

    /// An export line written before version 2 (by that code, kept as it was).
    const V1_LINE: &str = r#"{"receipt":{"id":"r-v1","sequence":1,"time":"2026-11-25T01:07:24.123Z","gateway_id":"gw-1","actor_key":"8741546b020f929ff81a02f9e2609db7769183d2d732d1f58367e7b47c19fa09","patient_key":"e4969875666e0d51329f41ebb1182583d9ca19fee200411afc4641f66da026d6","site":"north","interaction":"read","resource_type":"Observation","query_key":"69c9227566b53326fc6f8ad6807e5ec9a5c1cbc493f92dab75254ba22e01436c","resources":[{"resource_type":"Observation","id":"o1","version_id":"3","content_hash":"cb27d7a9e9afbe4e8524d48218cdb103c96b8621c06ed5b87bb858c08a24f744"}],"purpose":"TREAT","decision":"permit","consent":{"kind":"consent","id":"c1","version":"2"},"break_glass":false,"upstream_status":200,"status":200,"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000"},"hash":"2d2afc87dcd9b5ab4ff9cfee6c58994d7cf53af4c7f0edd068da0bab08d5ef4e","subjects":{"actor":"Practitioner/dr-who","patient":"urn:oid:1.2.3|p-42","query":"code=x"}}"#;

    #[test]
    fn version_1_lines_still_read_and_verify() {
        let back = parse_ndjson_line(V1_LINE).unwrap();
        assert_eq!(back.receipt.encoding, Encoding::V1);
        assert_eq!(back.receipt.kind, AccessKind::Fhir);
        assert_eq!(back.receipt.patient_keys.len(), 1);
        assert_eq!(
            Some(back.receipt.hash()),
            back.hash,
            "the stored hash holds"
        );
        assert_eq!(
            back.subjects.as_ref().map(|s| s.patients.clone()),
            Some(vec!["urn:oid:1.2.3|p-42".to_owned()])
        );
        // Written again, a version 1 receipt stays version 1 and reads back the same.
        let again = ndjson_line(&back.receipt, &back.hash.unwrap(), None, None);
        let v: serde_json::Value = serde_json::from_str(&again).unwrap();
        assert_eq!(v["receipt"]["encoding"], 1);
        assert!(v["receipt"].get("patient_keys").is_none() && v["receipt"].get("kind").is_none());
        assert_eq!(parse_ndjson_line(&again).unwrap().receipt, back.receipt);
    }

    #[test]
    fn version_2_lines_carry_every_patient_and_the_kind() {
        let mut r = sample("r2");
        let mut s = subjects();
        s.add_patient("north/Patient/p2");
        r.patient_keys = s.keys(&crate::receipt::tests::key()).patient_keys;
        r.kind = AccessKind::Consent(crate::receipt::ConsentAction::Revoke);
        let h = r.hash();
        let line = ndjson_line(&r, &h, None, Some(&s));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["receipt"]["encoding"], 2);
        assert_eq!(v["receipt"]["kind"], "consent-revoke");
        assert_eq!(v["receipt"]["patient_keys"].as_array().unwrap().len(), 2);
        assert_eq!(
            v["subjects"]["patients"],
            serde_json::json!(["urn:oid:1.2.3|p-42", "north/Patient/p2"])
        );
        let back = parse_ndjson_line(&line).unwrap();
        assert_eq!(back.receipt, r);
        assert_eq!(back.subjects, Some(s));
        // Mixing the versions' fields is refused.
        for (path, value, name) in [
            (
                "/receipt/patient_key",
                serde_json::json!("k"),
                "patient_key",
            ),
            ("/receipt/kind", serde_json::json!("consent-delete"), "kind"),
            ("/receipt/encoding", serde_json::json!(3), "encoding"),
        ] {
            let mut bad = v.clone();
            match bad.pointer_mut(path) {
                Some(slot) => *slot = value,
                None => {
                    let (parent, key) = path.rsplit_once('/').unwrap();
                    bad.pointer_mut(parent).unwrap()[key] = value;
                }
            }
            match parse_ndjson_line(&bad.to_string()) {
                Err(ExportError::Field { field, .. }) => assert_eq!(field, name),
                other => panic!("{path}: {other:?}"),
            }
        }
        let mut v1_with_list = v.clone();
        v1_with_list["receipt"]["encoding"] = 1.into();
        v1_with_list["receipt"]
            .as_object_mut()
            .unwrap()
            .remove("kind");
        assert!(matches!(
            parse_ndjson_line(&v1_with_list.to_string()),
            Err(ExportError::Field {
                field: "patient_keys",
                ..
            })
        ));
    }

    #[test]
    fn bad_lines_are_refused() {
        let (r, h, a) = anchored();
        let good: serde_json::Value =
            serde_json::from_str(&ndjson_line(&r, &h, Some(&a), None)).unwrap();
        let cases: &[(&str, &str, serde_json::Value)] = &[
            ("/hash", "hash", "zz".into()),
            ("/receipt/decision", "decision", "maybe".into()),
            ("/receipt/time", "time", "yesterday".into()),
            ("/receipt/interaction", "interaction", "delete".into()),
            ("/anchor/batch_id", "anchor.batch_id", 8.into()),
        ];
        for (path, name, value) in cases {
            let mut v = good.clone();
            *v.pointer_mut(path).unwrap() = value.clone();
            match parse_ndjson_line(&v.to_string()) {
                Err(ExportError::Field { field, .. }) => assert_eq!(field, *name),
                other => panic!("{path}: {other:?}"),
            }
        }
        assert!(matches!(parse_ndjson_line("{"), Err(ExportError::Json(_))));
    }

    #[test]
    fn csv_rows_follow_the_header() {
        let (mut r, h, a) = anchored();
        r.break_glass_justification = Some("=HYPERLINK(\"x\"), now".into());
        let header = csv_header();
        assert!(
            header.starts_with("receipt_id,encoding,sequence,time,") && header.ends_with("\r\n")
        );
        let row = csv_row(&r, &h, Some(&a), Some(&subjects()));
        assert!(row.ends_with("\r\n"));
        assert!(row.contains(",\"'=HYPERLINK(\"\"x\"\"), now\","), "{row}");
        assert!(row.contains(",Observation/o1/_history/3,"));
        assert!(row.contains(",c1@2,"));
        assert!(row.contains(",Practitioner/dr-who,urn:oid:1.2.3|p-42,"));
        assert!(
            row.starts_with("r1,2,1,") && row.contains(",fhir,read,"),
            "{row}"
        );
        assert!(row.contains(&format!(",7,{},tx-1,12\r\n", a.root)));
        // Without quoting inside it, a row has exactly one cell per column.
        let plain = csv_row(&sample("r2"), &h, None, None);
        assert_eq!(plain.trim_end().split(',').count(), CSV_COLUMNS.len());
    }
}
