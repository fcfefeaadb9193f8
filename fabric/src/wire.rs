//! The chaincode's calling convention, shared by the client (`ledger`) and the chaincode
//! (`chaincode`): chaincode arguments are `[function, json]`, the response payload is JSON.
//!
//! Writes use the ledger's own function names and argument JSON ([`TxCall::function`],
//! [`TxCall::args`]) and answer [`WriteResult`]. Queries:
//!
//! | function           | argument JSON                       | response JSON               |
//! |--------------------|-------------------------------------|-----------------------------|
//! | `consent`          | `{"consent_key"}`                   | `ConsentRecord` or `null`   |
//! | `patient_consents` | `{"patient_key"}`                   | `[ConsentRecord]`           |
//! | `grantee_consents` | `{"grantee_key"}`                   | `[ConsentRecord]`           |
//! | `active_consents`  | `{"patient_key", "now"}` (Unix s)   | `[ConsentRecord]`           |
//! | `consent_history`  | `{"consent_key"}`                   | `[{"tx_id", "record"}]`     |
//! | `anchor`           | `{"gateway_key", "batch_id"}`       | `AnchorRecord` or `null`    |
//!
//! Documents (consent documents, kept off the channel in the private data collection
//! [`DOCUMENTS_COLLECTION`], key = their hash):
//!
//! | function       | argument JSON | transient map                 | response                  |
//! |----------------|---------------|-------------------------------|---------------------------|
//! | `put_document` | `{"hash"}`    | `document`: the exact bytes   | `{"replayed": bool}`      |
//! | `document`     | `{"hash"}`    | —                             | the bytes; empty: unknown |
//!
//! `hash` is the lowercase hex SHA-256 of the document's bytes. The bytes travel only in the
//! proposal's transient map, which Fabric keeps out of the transaction and the block; the
//! chaincode writes them with PutPrivateData, so only their hash reaches the block.
//!
//! A refusal is a response of status 500 whose message is [`assent_ledger::refusal_message`].
//!
//! Owns these shapes. Leaves out transport and execution.

use assent_consent::{AnchorRecord, ConsentRecord, ConsentVersion, Timestamp};
use assent_ledger::{TxCall, TxOutcome};
use serde::{Deserialize, Serialize};

pub const Q_CONSENT: &str = "consent";
pub const Q_PATIENT_CONSENTS: &str = "patient_consents";
pub const Q_GRANTEE_CONSENTS: &str = "grantee_consents";
pub const Q_ACTIVE_CONSENTS: &str = "active_consents";
pub const Q_CONSENT_HISTORY: &str = "consent_history";
pub const Q_ANCHOR: &str = "anchor";
pub const F_PUT_DOCUMENT: &str = "put_document";
pub const Q_DOCUMENT: &str = "document";

/// The private data collection that holds consent documents (`collections_config.json`).
pub const DOCUMENTS_COLLECTION: &str = "assentConsentDocuments";
/// The transient map's key for a document's bytes.
pub const TRANSIENT_DOCUMENT: &str = "document";

/// Starts the chaincode's message when a stored document does not hash to its key: the
/// client reads it back as `Corrupt` (a peer relays it inside its own words).
pub const DOCUMENT_CORRUPT: &str = "assent-document-failed-verification";

/// Whether `hash` has the form of a document's hash: 64 lowercase hex digits.
pub fn is_document_hash(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The arguments of `put_document` (the bytes go in the transient map, never here).
pub fn put_document_args(hash: &str) -> Vec<Vec<u8>> {
    document_call(F_PUT_DOCUMENT, hash)
}

/// The arguments of the `document` query.
pub fn document_args(hash: &str) -> Vec<Vec<u8>> {
    document_call(Q_DOCUMENT, hash)
}

fn document_call(function: &str, hash: &str) -> Vec<Vec<u8>> {
    let json = serde_json::to_vec(&HashArg {
        hash: hash.to_owned(),
    })
    .expect("a string serialises");
    vec![function.as_bytes().to_vec(), json]
}

/// What `put_document` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentStored {
    /// The collection held the document already: nothing was written.
    pub replayed: bool,
}

/// A query the chaincode answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Consent {
        consent_key: String,
    },
    PatientConsents {
        patient_key: String,
    },
    /// Every consent naming a grantee, of any patient: a range over all consent records
    /// (which a peer answers in pages, read to the end by the shim).
    GranteeConsents {
        grantee_key: String,
    },
    ActiveConsents {
        patient_key: String,
        now: Timestamp,
    },
    ConsentHistory {
        consent_key: String,
    },
    Anchor {
        gateway_key: String,
        batch_id: u64,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentKeyArg {
    consent_key: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatientArg {
    patient_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    now: Option<i64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GranteeArg {
    grantee_key: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HashArg {
    hash: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnchorArg {
    gateway_key: String,
    batch_id: u64,
}

/// Why chaincode arguments could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("expected [function, json] arguments, got {0}")]
    Count(usize),
    #[error("the function name is not UTF-8")]
    Function,
    #[error("unknown function `{0}`")]
    Unknown(String),
    #[error("arguments of `{function}`: {reason}")]
    Json { function: String, reason: String },
}

/// A call the chaincode runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    Write(TxCall),
    Query(Query),
    /// Store the document of the transient map under `hash`.
    PutDocument {
        hash: String,
    },
    /// Read the document stored under `hash`.
    Document {
        hash: String,
    },
}

impl Query {
    pub fn function(&self) -> &'static str {
        match self {
            Query::Consent { .. } => Q_CONSENT,
            Query::PatientConsents { .. } => Q_PATIENT_CONSENTS,
            Query::GranteeConsents { .. } => Q_GRANTEE_CONSENTS,
            Query::ActiveConsents { .. } => Q_ACTIVE_CONSENTS,
            Query::ConsentHistory { .. } => Q_CONSENT_HISTORY,
            Query::Anchor { .. } => Q_ANCHOR,
        }
    }

    /// The chaincode arguments of this query.
    pub fn args(&self) -> Vec<Vec<u8>> {
        // Structs of strings and numbers: serialising cannot fail.
        let json = match self {
            Query::Consent { consent_key } | Query::ConsentHistory { consent_key } => {
                serde_json::to_vec(&ConsentKeyArg {
                    consent_key: consent_key.clone(),
                })
            }
            Query::PatientConsents { patient_key } => serde_json::to_vec(&PatientArg {
                patient_key: patient_key.clone(),
                now: None,
            }),
            Query::GranteeConsents { grantee_key } => serde_json::to_vec(&GranteeArg {
                grantee_key: grantee_key.clone(),
            }),
            Query::ActiveConsents { patient_key, now } => serde_json::to_vec(&PatientArg {
                patient_key: patient_key.clone(),
                now: Some(now.unix_seconds()),
            }),
            Query::Anchor {
                gateway_key,
                batch_id,
            } => serde_json::to_vec(&AnchorArg {
                gateway_key: gateway_key.clone(),
                batch_id: *batch_id,
            }),
        }
        .expect("query arguments serialise");
        vec![self.function().as_bytes().to_vec(), json]
    }
}

/// The chaincode arguments of a write.
pub fn write_args(call: &TxCall) -> Vec<Vec<u8>> {
    vec![
        call.function().as_bytes().to_vec(),
        call.args().to_string().into_bytes(),
    ]
}

/// Reads chaincode arguments back.
pub fn parse_args(args: &[Vec<u8>]) -> Result<Invocation, ArgsError> {
    let [function, json] = args else {
        return Err(ArgsError::Count(args.len()));
    };
    let function = std::str::from_utf8(function).map_err(|_| ArgsError::Function)?;
    let json_error = |reason: String| ArgsError::Json {
        function: function.to_owned(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| json_error(e.to_string()))?;
    match function {
        Q_CONSENT | Q_CONSENT_HISTORY => {
            let a: ConsentKeyArg =
                serde_json::from_value(value).map_err(|e| json_error(e.to_string()))?;
            Ok(Invocation::Query(if function == Q_CONSENT {
                Query::Consent {
                    consent_key: a.consent_key,
                }
            } else {
                Query::ConsentHistory {
                    consent_key: a.consent_key,
                }
            }))
        }
        Q_PATIENT_CONSENTS | Q_ACTIVE_CONSENTS => {
            let a: PatientArg =
                serde_json::from_value(value).map_err(|e| json_error(e.to_string()))?;
            Ok(Invocation::Query(match (function, a.now) {
                (Q_ACTIVE_CONSENTS, Some(now)) => Query::ActiveConsents {
                    patient_key: a.patient_key,
                    now: Timestamp::from_unix_seconds(now),
                },
                (Q_ACTIVE_CONSENTS, None) => return Err(json_error("`now` is required".into())),
                _ => Query::PatientConsents {
                    patient_key: a.patient_key,
                },
            }))
        }
        Q_GRANTEE_CONSENTS => {
            let a: GranteeArg =
                serde_json::from_value(value).map_err(|e| json_error(e.to_string()))?;
            Ok(Invocation::Query(Query::GranteeConsents {
                grantee_key: a.grantee_key,
            }))
        }
        F_PUT_DOCUMENT | Q_DOCUMENT => {
            let a: HashArg =
                serde_json::from_value(value).map_err(|e| json_error(e.to_string()))?;
            Ok(if function == F_PUT_DOCUMENT {
                Invocation::PutDocument { hash: a.hash }
            } else {
                Invocation::Document { hash: a.hash }
            })
        }
        Q_ANCHOR => {
            let a: AnchorArg =
                serde_json::from_value(value).map_err(|e| json_error(e.to_string()))?;
            Ok(Invocation::Query(Query::Anchor {
                gateway_key: a.gateway_key,
                batch_id: a.batch_id,
            }))
        }
        _ => match TxCall::from_parts(function, &value) {
            Ok(call) => Ok(Invocation::Write(call)),
            Err(assent_ledger::CallError::UnknownFunction(f)) => Err(ArgsError::Unknown(f)),
            Err(e) => Err(json_error(e.to_string())),
        },
    }
}

/// What a write answers: the record now current, and whether nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    #[serde(flatten)]
    pub outcome: OutcomeWire,
    pub replayed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeWire {
    Consent(ConsentRecord),
    Anchor(AnchorRecord),
}

impl From<TxOutcome> for OutcomeWire {
    fn from(outcome: TxOutcome) -> OutcomeWire {
        match outcome {
            TxOutcome::Consent(r) => OutcomeWire::Consent(r),
            TxOutcome::Anchor(r) => OutcomeWire::Anchor(r),
        }
    }
}

impl From<OutcomeWire> for TxOutcome {
    fn from(outcome: OutcomeWire) -> TxOutcome {
        match outcome {
            OutcomeWire::Consent(r) => TxOutcome::Consent(r),
            OutcomeWire::Anchor(r) => TxOutcome::Anchor(r),
        }
    }
}

/// One version in a history answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionWire {
    pub tx_id: String,
    pub record: ConsentRecord,
}

impl From<ConsentVersion> for VersionWire {
    fn from(v: ConsentVersion) -> VersionWire {
        VersionWire {
            tx_id: v.tx_id,
            record: v.record,
        }
    }
}

impl From<VersionWire> for ConsentVersion {
    fn from(v: VersionWire) -> ConsentVersion {
        ConsentVersion {
            tx_id: v.tx_id,
            record: v.record,
        }
    }
}

#[cfg(test)]
mod tests {
    use assent_consent::RevocationReason;

    use super::*;

    #[test]
    fn invocations_round_trip() {
        let queries = [
            Query::Consent {
                consent_key: "a".repeat(64),
            },
            Query::PatientConsents {
                patient_key: "b".repeat(64),
            },
            Query::GranteeConsents {
                grantee_key: "d".repeat(64),
            },
            Query::ActiveConsents {
                patient_key: "b".repeat(64),
                now: Timestamp::from_unix_seconds(1_500),
            },
            Query::ConsentHistory {
                consent_key: "a".repeat(64),
            },
            Query::Anchor {
                gateway_key: "c".repeat(64),
                batch_id: 4,
            },
        ];
        for q in queries {
            assert_eq!(parse_args(&q.args()).unwrap(), Invocation::Query(q));
        }
        let call = TxCall::Revoke {
            consent_key: "a".repeat(64),
            reason: RevocationReason::Expired,
        };
        assert_eq!(
            parse_args(&write_args(&call)).unwrap(),
            Invocation::Write(call)
        );
        assert!(matches!(
            parse_args(&[b"drop".to_vec(), b"{}".to_vec()]),
            Err(ArgsError::Unknown(_))
        ));
        assert!(matches!(parse_args(&[]), Err(ArgsError::Count(0))));
        // A grantee query takes its key and nothing else (no patient to widen or narrow it).
        assert!(matches!(
            parse_args(&[
                b"grantee_consents".to_vec(),
                br#"{"grantee_key":"dd","patient_key":"bb"}"#.to_vec()
            ]),
            Err(ArgsError::Json { .. })
        ));
        let hash = "ab".repeat(32);
        assert_eq!(
            parse_args(&put_document_args(&hash)).unwrap(),
            Invocation::PutDocument { hash: hash.clone() }
        );
        assert_eq!(
            parse_args(&document_args(&hash)).unwrap(),
            Invocation::Document { hash: hash.clone() }
        );
        // The document itself is never an argument.
        assert!(matches!(
            parse_args(&[
                b"put_document".to_vec(),
                br#"{"hash":"ab","document":"x"}"#.to_vec()
            ]),
            Err(ArgsError::Json { .. })
        ));
    }

    #[test]
    fn document_hashes_are_64_lowercase_hex_digits() {
        assert!(is_document_hash(&"0a".repeat(32)));
        for bad in [
            "",
            "0a",
            &"0A".repeat(32),
            &"0g".repeat(32),
            &"0a".repeat(33),
        ] {
            assert!(!is_document_hash(bad), "{bad}");
        }
    }
}
