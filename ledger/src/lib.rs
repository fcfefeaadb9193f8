//! The ledger: the interface the gateway talks to ([`Ledger`]), the embedded hash-chained
//! backend ([`EmbeddedLedger`]), chain verification ([`verify_chain`]) and the conformance
//! suite every backend passes (`conformance`, with the `testing` feature: never in a deployed
//! gateway).
//!
//! Owns blocks, hashing, Ed25519 signatures and the execution of the consent contract's
//! transactions. Leaves out SQL, HTTP and gRPC: blocks are stored through [`BlockStore`],
//! which the gateway implements over its database; the Fabric backend lives elsewhere and
//! implements [`Ledger`].
//!
//! **Invariant:** this crate knows no SQL, HTTP or gRPC (checked on its dependencies by the
//! workspace tidy test `tests/tests/e2e/tidy.rs`).
//!
//! **Invariant:** nothing written to a block holds an identifier in clear: the contract's
//! submissions, records and events carry keyed hashes only.
//!
//! # How the embedded ledger works
//!
//! Calls are queued to one writer task. It takes the calls waiting (up to
//! [`EmbeddedOptions::max_batch`]), runs them in order through the consent contract on the
//! in-memory state (each seeing the writes of the ones before it, never its own), and seals
//! the accepted ones into one block: number, previous hash, timestamp (never earlier than
//! the previous block's), transactions with their arguments, read-write sets and events,
//! hashed as the [`block`] module documents and signed with the node's Ed25519 key. The block is
//! appended through [`BlockStore::append`], which refuses it unless the store's head is the
//! block before; on such a conflict the writer applies the blocks it missed and builds the
//! block again. Once the append is durable the block is applied to the state and its events
//! are broadcast. Calls the contract refuses are answered with the reason and leave no
//! trace; a call that changes nothing (a replay) is committed without writes or event.
//!
//! At open every block is read back, hashes and links are checked, the last block's
//! signature is checked (each hash covers the one before, so this authenticates them all),
//! and the state is rebuilt by applying each block's writes.
//!
//! # Verifying
//!
//! [`verify_chain`] (rows in hand) and [`verify_store`] (paging through a store) recompute
//! every hash, link and signature and name the first bad block. [`verify_execution`] also
//! runs every transaction again through the contract and checks its recorded read-write set
//! and event, catching a block signed with the node key that does not follow from its
//! arguments.
//!
//! # Multiple processes
//!
//! Two processes may share one store: appends cannot both take block N, and the loser
//! catches up and retries. A process sees the other's blocks on its next write or on
//! [`EmbeddedLedger::sync`]; queries read only what it has applied.

mod api;
pub mod block;
mod call;
mod clock;
#[cfg(feature = "testing")]
pub mod conformance;
mod embedded;
mod store;
mod verify;

pub use api::{
    Checkpoint, Conflict, ConsentChange, EventStream, Ledger, LedgerError, LedgerEvent, Rejection,
    TxReceipt, document_hash_mismatch, document_matches,
};
pub use block::{BlockBody, BlockRow};
pub use call::{
    CallError, Executed, FN_PUT_CONSENT, FN_RECORD_ANCHOR, FN_REVOKE, REFUSAL_PREFIX, TxCall,
    TxOutcome, contract_error, execute, parse_refusal, refusal_message,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use embedded::{EMBEDDED_MEMBER, EmbeddedLedger, EmbeddedOptions, MAX_BATCH, verify_execution};
pub use store::{BlockStore, InMemoryBlockStore, StoreError};
pub use verify::{
    ChainError, ChainFault, ChainHead, ChainVerifier, VerifiedBlock, VerifiedChain,
    VerifyStoreError, verify_chain, verify_store,
};
