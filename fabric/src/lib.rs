//! Hyperledger Fabric for Assent: [`FabricLedger`], the ledger interface over the Fabric
//! Gateway service (Fabric 2.4+), and the consent contract as chaincode-as-a-service
//! ([`serve_chaincode`]).
//!
//! Owns everything that knows gRPC and Fabric's protocols: the wire messages ([`protos`],
//! prost derives written by hand, no `protoc`), signing ([`identity`], [`proposal`]), the
//! gateway client ([`client`]), the chaincode shim ([`chaincode`]) and the calling convention
//! between them ([`wire`]). Leaves out the contract's logic (`assent-consent`) and the ledger
//! interface and its conformance suite (`assent-ledger`).
//!
//! **Invariant:** only this crate knows gRPC and Fabric's protocols.
//!
//! **Invariant:** every message this crate signs is signed with ECDSA P-256 over SHA-256,
//! low-S, DER-encoded; transaction ids are hex(SHA-256(nonce ‖ creator)).

pub mod chaincode;
pub mod client;
pub mod grpc;
pub mod identity;
mod ledger;
pub mod proposal;
pub mod protos;
#[cfg(feature = "fake")]
pub mod testing;
pub mod wire;

// The FAKE's sources name this crate as its tests do.
#[cfg(feature = "fake")]
extern crate self as assent_fabric;

pub use chaincode::{ChaincodeError, ChaincodeTls, serve_chaincode, serve_chaincode_on};
pub use client::{CallOptions, GatewayClient, GatewayError, TlsMaterial};
pub use identity::{IdentityError, SigningIdentity};
pub use ledger::{
    ConfigError, FabricConfig, FabricConnection, FabricLedger, FabricOptions, gateway_error,
};

/// tonic's TLS takes rustls's process-wide crypto provider. A binary that links both of
/// rustls's providers (the gateway does, through other crates) has no default until one is
/// installed: install ring's, unless the process already chose one.
pub fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may have installed one in between; either way one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
