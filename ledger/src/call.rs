//! Contract transactions as values: the calls a backend runs, their names and arguments as
//! stored in blocks (and sent to chaincode), and their execution against any
//! [`ContractState`].
//!
//! Owns the dispatch from a call to the consent contract, the mapping of the contract's
//! errors to [`LedgerError`], and the text form of a refusal that crosses a chaincode
//! boundary ([`refusal_message`], [`parse_refusal`]). Leaves out ordering, storage and
//! signatures (backends).

use assent_consent::{
    AnchorRecord, AnchorSubmission, ConsentContract, ConsentRecord, ConsentSubmission,
    ContractError, ContractState, RevocationReason, Timestamp,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::{Conflict, LedgerError, Rejection};

/// The prefix of a refusal's text form.
pub const REFUSAL_PREFIX: &str = "assent-refusal ";

/// A contract transaction. Its arguments hold keyed hashes only (the contract's
/// submissions), never identifiers in clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxCall {
    PutConsent(ConsentSubmission),
    Revoke {
        consent_key: String,
        reason: RevocationReason,
    },
    RecordAnchor(AnchorSubmission),
}

/// Function names, stable: they are written into blocks and sent to chaincode.
pub const FN_PUT_CONSENT: &str = "put_consent";
pub const FN_REVOKE: &str = "revoke";
pub const FN_RECORD_ANCHOR: &str = "record_anchor";

/// The record a committed transaction left current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxOutcome {
    Consent(ConsentRecord),
    Anchor(AnchorRecord),
}

impl TxOutcome {
    /// The consent record, when the transaction was about a consent.
    pub fn consent(&self) -> Option<&ConsentRecord> {
        match self {
            TxOutcome::Consent(r) => Some(r),
            TxOutcome::Anchor(_) => None,
        }
    }
}

/// The result of running a call: the record now current, and whether nothing was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    pub outcome: TxOutcome,
    pub replayed: bool,
}

/// Why a call's stored form could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("unknown function `{0}`")]
    UnknownFunction(String),
    #[error("arguments of `{function}`: {source}")]
    Arguments {
        function: String,
        #[source]
        source: serde_json::Error,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeArgs {
    consent_key: String,
    reason: RevocationReason,
}

impl TxCall {
    /// The contract function this call runs.
    pub fn function(&self) -> &'static str {
        match self {
            TxCall::PutConsent(_) => FN_PUT_CONSENT,
            TxCall::Revoke { .. } => FN_REVOKE,
            TxCall::RecordAnchor(_) => FN_RECORD_ANCHOR,
        }
    }

    /// The call's arguments as one JSON value (the form stored in blocks).
    pub fn args(&self) -> Value {
        // These are plain structs of strings, numbers and enums with string names: turning
        // them into a JSON value cannot fail.
        match self {
            TxCall::PutConsent(s) => serde_json::to_value(s),
            TxCall::Revoke {
                consent_key,
                reason,
            } => serde_json::to_value(RevokeArgs {
                consent_key: consent_key.clone(),
                reason: *reason,
            }),
            TxCall::RecordAnchor(s) => serde_json::to_value(s),
        }
        .expect("call arguments serialise")
    }

    /// Reads a call back from its function name and arguments.
    pub fn from_parts(function: &str, args: &Value) -> Result<TxCall, CallError> {
        let wrap = |source| CallError::Arguments {
            function: function.to_owned(),
            source,
        };
        match function {
            FN_PUT_CONSENT => Ok(TxCall::PutConsent(
                serde_json::from_value(args.clone()).map_err(wrap)?,
            )),
            FN_REVOKE => {
                let a: RevokeArgs = serde_json::from_value(args.clone()).map_err(wrap)?;
                Ok(TxCall::Revoke {
                    consent_key: a.consent_key,
                    reason: a.reason,
                })
            }
            FN_RECORD_ANCHOR => Ok(TxCall::RecordAnchor(
                serde_json::from_value(args.clone()).map_err(wrap)?,
            )),
            other => Err(CallError::UnknownFunction(other.to_owned())),
        }
    }
}

/// Runs `call` through the consent contract against `state` at transaction time `now`, as
/// submitted by consortium member `member` (Fabric: the MSP id of the proposal's creator;
/// the embedded ledger: its own member id). The contract's rules on members hold: only the
/// member that created a consent may put new versions, any member may revoke, and an empty
/// member is refused (see `assent_consent`'s contract).
pub fn execute<S: ContractState>(
    state: &mut S,
    call: &TxCall,
    now: Timestamp,
    member: &str,
) -> Result<Executed, ContractError<S::Error>> {
    let contract = ConsentContract;
    Ok(match call {
        TxCall::PutConsent(s) => {
            let w = contract.put_consent(state, s, member, now)?;
            Executed {
                outcome: TxOutcome::Consent(w.record),
                replayed: w.replayed,
            }
        }
        TxCall::Revoke {
            consent_key,
            reason,
        } => {
            let w = contract.revoke(state, consent_key, *reason, member, now)?;
            Executed {
                outcome: TxOutcome::Consent(w.record),
                replayed: w.replayed,
            }
        }
        TxCall::RecordAnchor(s) => {
            let w = contract.record_anchor(state, s, now)?;
            Executed {
                outcome: TxOutcome::Anchor(w.record),
                replayed: w.replayed,
            }
        }
    })
}

/// The ledger error for a contract error: refusals become [`LedgerError::Rejected`] or
/// [`LedgerError::Conflict`]; state failures and corrupt records [`LedgerError::Corrupt`].
pub fn contract_error<E: std::error::Error + 'static>(error: ContractError<E>) -> LedgerError {
    match error {
        ContractError::Invalid { field, reason } => LedgerError::Rejected {
            rejection: Rejection::Invalid {
                field: field.to_owned(),
                reason,
            },
        },
        ContractError::NotFound => LedgerError::Rejected {
            rejection: Rejection::NotFound,
        },
        ContractError::PatientMismatch => LedgerError::Rejected {
            rejection: Rejection::PatientMismatch,
        },
        ContractError::Revoked => LedgerError::Rejected {
            rejection: Rejection::Revoked,
        },
        ContractError::OtherMember => LedgerError::Rejected {
            rejection: Rejection::OtherMember,
        },
        ContractError::VersionConflict { expected, current } => LedgerError::Conflict {
            conflict: Conflict::Version { expected, current },
        },
        ContractError::AnchorConflict { batch_id } => LedgerError::Conflict {
            conflict: Conflict::Anchor { batch_id },
        },
        ContractError::Corrupt { key, reason } => {
            LedgerError::corrupt(format!("state at `{key}`: {reason}"))
        }
        ContractError::State(e) => LedgerError::corrupt(format!("state: {e}")),
    }
}

/// A refusal ([`LedgerError::Rejected`] or [`LedgerError::Conflict`]) as text that a
/// chaincode can return as its error message: [`REFUSAL_PREFIX`] then one line of JSON.
/// `None` for errors that are not the contract's refusals.
pub fn refusal_message(error: &LedgerError) -> Option<String> {
    let wire = match error {
        LedgerError::Rejected { rejection } => match rejection {
            Rejection::Invalid { field, reason } => RefusalWire {
                code: "invalid".into(),
                field: Some(field.clone()),
                reason: Some(reason.clone()),
                ..RefusalWire::default()
            },
            Rejection::NotFound => RefusalWire::code("not-found"),
            Rejection::PatientMismatch => RefusalWire::code("patient-mismatch"),
            Rejection::Revoked => RefusalWire::code("revoked"),
            Rejection::OtherMember => RefusalWire::code("other-member"),
        },
        LedgerError::Conflict { conflict } => match conflict {
            Conflict::Version { expected, current } => RefusalWire {
                code: "version-conflict".into(),
                expected: Some(*expected),
                current: Some(*current),
                ..RefusalWire::default()
            },
            Conflict::Anchor { batch_id } => RefusalWire {
                code: "anchor-conflict".into(),
                batch_id: Some(*batch_id),
                ..RefusalWire::default()
            },
            Conflict::Writers => return None,
        },
        LedgerError::Unavailable { .. } | LedgerError::Corrupt { .. } => return None,
    };
    // A struct of strings and numbers: cannot fail.
    let json = serde_json::to_string(&wire).expect("refusals serialise");
    Some(format!("{REFUSAL_PREFIX}{json}"))
}

/// Reads a refusal back from a message that contains [`refusal_message`]'s text (a peer may
/// wrap it); `None` when there is none.
pub fn parse_refusal(message: &str) -> Option<LedgerError> {
    let start = message.find(REFUSAL_PREFIX)? + REFUSAL_PREFIX.len();
    let mut stream =
        serde_json::Deserializer::from_str(&message[start..]).into_iter::<RefusalWire>();
    let wire = stream.next()?.ok()?;
    let rejected = |rejection| Some(LedgerError::Rejected { rejection });
    match wire.code.as_str() {
        "invalid" => rejected(Rejection::Invalid {
            field: wire.field?,
            reason: wire.reason.unwrap_or_default(),
        }),
        "not-found" => rejected(Rejection::NotFound),
        "patient-mismatch" => rejected(Rejection::PatientMismatch),
        "revoked" => rejected(Rejection::Revoked),
        "other-member" => rejected(Rejection::OtherMember),
        "version-conflict" => Some(LedgerError::Conflict {
            conflict: Conflict::Version {
                expected: wire.expected?,
                current: wire.current?,
            },
        }),
        "anchor-conflict" => Some(LedgerError::Conflict {
            conflict: Conflict::Anchor {
                batch_id: wire.batch_id?,
            },
        }),
        _ => None,
    }
}

/// The JSON of a refusal's text form.
#[derive(Default, Serialize, Deserialize)]
struct RefusalWire {
    code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expected: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    current: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    batch_id: Option<u64>,
}

impl RefusalWire {
    fn code(code: &str) -> RefusalWire {
        RefusalWire {
            code: code.into(),
            ..RefusalWire::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_round_trip_through_their_stored_form() {
        let calls = [
            TxCall::Revoke {
                consent_key: "ab".repeat(32),
                reason: RevocationReason::PatientRequest,
            },
            TxCall::RecordAnchor(AnchorSubmission {
                gateway_key: "cd".repeat(32),
                batch_id: 3,
                root: "ef".repeat(32),
                n_receipts: 10,
            }),
        ];
        for call in calls {
            let back = TxCall::from_parts(call.function(), &call.args()).unwrap();
            assert_eq!(back, call);
        }
        assert!(matches!(
            TxCall::from_parts("drop_table", &Value::Null),
            Err(CallError::UnknownFunction(_))
        ));
        assert!(matches!(
            TxCall::from_parts(FN_REVOKE, &serde_json::json!({"consent_key": 1})),
            Err(CallError::Arguments { .. })
        ));
    }

    #[test]
    fn refusals_survive_a_chaincode_error_message() {
        let refusals = [
            LedgerError::Rejected {
                rejection: Rejection::Invalid {
                    field: "patient_key".into(),
                    reason: "not a keyed hash".into(),
                },
            },
            LedgerError::Rejected {
                rejection: Rejection::NotFound,
            },
            LedgerError::Rejected {
                rejection: Rejection::PatientMismatch,
            },
            LedgerError::Rejected {
                rejection: Rejection::Revoked,
            },
            LedgerError::Rejected {
                rejection: Rejection::OtherMember,
            },
            LedgerError::Conflict {
                conflict: Conflict::Version {
                    expected: 1,
                    current: 2,
                },
            },
            LedgerError::Conflict {
                conflict: Conflict::Anchor { batch_id: 9 },
            },
        ];
        for refusal in refusals {
            let text = refusal_message(&refusal).unwrap();
            let wrapped = format!("chaincode response 500, {text} (peer0.org1)");
            assert_eq!(parse_refusal(&wrapped), Some(refusal));
        }
        assert_eq!(refusal_message(&LedgerError::unavailable("down")), None);
        assert_eq!(parse_refusal("endorsement failure"), None);
    }
}
