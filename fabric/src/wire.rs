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
//! | `active_consents`  | `{"patient_key", "now"}` (Unix s)   | `[ConsentRecord]`           |
//! | `consent_history`  | `{"consent_key"}`                   | `[{"tx_id", "record"}]`     |
//! | `anchor`           | `{"gateway_key", "batch_id"}`       | `AnchorRecord` or `null`    |
//!
//! A refusal is a response of status 500 whose message is [`assent_ledger::refusal_message`].
//!
//! Owns these shapes. Leaves out transport and execution.

use assent_consent::{AnchorRecord, ConsentRecord, ConsentVersion, Timestamp};
use assent_ledger::{TxCall, TxOutcome};
use serde::{Deserialize, Serialize};

pub const Q_CONSENT: &str = "consent";
pub const Q_PATIENT_CONSENTS: &str = "patient_consents";
pub const Q_ACTIVE_CONSENTS: &str = "active_consents";
pub const Q_CONSENT_HISTORY: &str = "consent_history";
pub const Q_ANCHOR: &str = "anchor";

/// A query the chaincode answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    Consent { consent_key: String },
    PatientConsents { patient_key: String },
    ActiveConsents { patient_key: String, now: Timestamp },
    ConsentHistory { consent_key: String },
    Anchor { gateway_key: String, batch_id: u64 },
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
}

impl Query {
    pub fn function(&self) -> &'static str {
        match self {
            Query::Consent { .. } => Q_CONSENT,
            Query::PatientConsents { .. } => Q_PATIENT_CONSENTS,
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
    }
}
