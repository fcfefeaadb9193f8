//! The ledger: the interface the gateway talks to ([`Ledger`]), the embedded hash-chained
//! backend ([`EmbeddedLedger`]), chain verification ([`verify_chain`]) and the conformance
//! suite every backend passes ([`conformance`]).
//!
//! Owns blocks, hashing, Ed25519 signatures and the execution of the consent contract's
//! transactions. Leaves out SQL, HTTP and gRPC: blocks are stored through [`BlockStore`],
//! which the gateway implements over its database; the Fabric backend lives elsewhere and
//! implements [`Ledger`].
//!
//! **Invariant:** this crate knows no SQL, HTTP or gRPC (checked by the tidy test on its
//! dependencies).
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
pub mod conformance;
mod embedded;
mod store;
mod verify;

pub use api::{
    Checkpoint, Conflict, ConsentChange, EventStream, Ledger, LedgerError, LedgerEvent, Rejection,
    TxReceipt,
};
pub use block::{BlockBody, BlockRow};
pub use call::{
    CallError, Executed, FN_PUT_CONSENT, FN_RECORD_ANCHOR, FN_REVOKE, REFUSAL_PREFIX, TxCall,
    TxOutcome, contract_error, execute, parse_refusal, refusal_message,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use embedded::{EmbeddedLedger, EmbeddedOptions, MAX_BATCH, verify_execution};
pub use store::{BlockStore, InMemoryBlockStore, StoreError};
pub use verify::{
    ChainError, ChainFault, ChainHead, ChainVerifier, VerifiedBlock, VerifiedChain,
    VerifyStoreError, verify_chain, verify_store,
};

#[cfg(test)]
mod tidy {
    //! Housekeeping checks on this crate's own sources and manifest.

    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn every_file_says_what_it_owns_and_no_mod_rs() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in ["src", "tests", "benches"] {
            if root.join(dir).exists() {
                rust_files(&root.join(dir), &mut files);
            }
        }
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(
                text.starts_with("//!"),
                "{} must open with `//!`",
                path.display()
            );
            assert_ne!(path.file_name().unwrap(), "mod.rs", "{}", path.display());
        }
    }

    /// **Invariant:** the ledger crate knows no SQL, no HTTP and no gRPC.
    #[test]
    fn no_sql_http_or_grpc_dependencies() {
        let manifest =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
                .unwrap();
        let forbidden = [
            "diesel", "sqlx", "rusqlite", "postgres", "actix", "hyper", "reqwest", "awc", "tonic",
            "prost", "redis",
        ];
        for line in manifest.lines().filter(|l| l.contains('=')) {
            let name = line.split('=').next().unwrap().trim();
            for word in forbidden {
                assert!(
                    !name.contains(word),
                    "dependency `{name}` crosses the ledger's boundary"
                );
            }
        }
    }
}
