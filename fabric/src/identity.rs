//! X.509 identities as Fabric uses them: the signing identity of the gateway (MSP id, PEM
//! certificate, ECDSA P-256 key), the `SerializedIdentity` it presents as creator, and
//! signature checks (ECDSA P-256 over SHA-256, DER, low-S only).
//!
//! Owns key and certificate loading and the check that the key matches the certificate.
//! Leaves out which bytes are signed (`proposal`) and MSP validation of the certificate chain
//! (the peers do that; the fakes in the tests trust any certificate of a known MSP).

use std::path::Path;

use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::DecodePrivateKey;
use prost::Message;
use x509_cert::Certificate;
use x509_cert::der::{DecodePem, Encode};

use crate::protos::msp::SerializedIdentity;

/// Why an identity could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the certificate is not a PEM X.509 certificate: {0}")]
    Certificate(String),
    #[error("the certificate's key is not an ECDSA P-256 public key")]
    NotP256,
    #[error("the private key is not a PEM ECDSA P-256 key (PKCS#8 or SEC1)")]
    PrivateKey,
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    #[error("the MSP id is empty")]
    NoMspId,
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the creator is not a serialized identity with a P-256 certificate: {0}")]
    Creator(String),
    #[error("the signature is not DER-encoded ECDSA")]
    Encoding,
    #[error("the signature's S is not low (Fabric refuses high-S signatures)")]
    HighS,
    #[error("the signature does not verify")]
    Invalid,
}

/// The identity transactions are signed with.
#[derive(Clone)]
pub struct SigningIdentity {
    msp_id: String,
    certificate_pem: Vec<u8>,
    key: SigningKey,
    creator: Vec<u8>,
}

impl std::fmt::Debug for SigningIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningIdentity")
            .field("msp_id", &self.msp_id)
            .finish_non_exhaustive()
    }
}

impl SigningIdentity {
    /// An identity from PEM texts; fails unless the key is P-256 and matches the
    /// certificate.
    pub fn from_pem(
        msp_id: &str,
        certificate_pem: &[u8],
        key_pem: &str,
    ) -> Result<SigningIdentity, IdentityError> {
        if msp_id.is_empty() {
            return Err(IdentityError::NoMspId);
        }
        let public = certificate_key(certificate_pem)?;
        let key = SigningKey::from_pkcs8_pem(key_pem)
            .ok()
            .or_else(|| {
                p256::SecretKey::from_sec1_pem(key_pem)
                    .ok()
                    .map(SigningKey::from)
            })
            .ok_or(IdentityError::PrivateKey)?;
        if *key.verifying_key() != public {
            return Err(IdentityError::KeyMismatch);
        }
        let creator = SerializedIdentity {
            mspid: msp_id.to_owned(),
            id_bytes: certificate_pem.to_vec(),
        }
        .encode_to_vec();
        Ok(SigningIdentity {
            msp_id: msp_id.to_owned(),
            certificate_pem: certificate_pem.to_vec(),
            key,
            creator,
        })
    }

    /// An identity from a certificate file and a key file (what `assent check-config`
    /// validates).
    pub fn from_files(
        msp_id: &str,
        certificate: &Path,
        key: &Path,
    ) -> Result<SigningIdentity, IdentityError> {
        let certificate_pem = read(certificate)?;
        let key_pem = read(key)?;
        let key_text = String::from_utf8(key_pem).map_err(|_| IdentityError::PrivateKey)?;
        SigningIdentity::from_pem(msp_id, &certificate_pem, &key_text)
    }

    pub fn msp_id(&self) -> &str {
        &self.msp_id
    }

    pub fn certificate_pem(&self) -> &[u8] {
        &self.certificate_pem
    }

    /// The serialized `SerializedIdentity` (MSP id and PEM certificate): the creator of
    /// everything this identity signs.
    pub fn creator(&self) -> &[u8] {
        &self.creator
    }

    /// ECDSA P-256 over SHA-256 of `message`, low-S, DER-encoded.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let signature: Signature = self.key.sign(message);
        signature.normalize_s().to_der().as_bytes().to_vec()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, IdentityError> {
    std::fs::read(path).map_err(|source| IdentityError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The P-256 public key of a PEM certificate.
pub fn certificate_key(certificate_pem: &[u8]) -> Result<VerifyingKey, IdentityError> {
    let certificate = Certificate::from_pem(certificate_pem)
        .map_err(|e| IdentityError::Certificate(e.to_string()))?;
    let spki = certificate
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(|e| IdentityError::Certificate(e.to_string()))?;
    use p256::pkcs8::DecodePublicKey;
    VerifyingKey::from_public_key_der(&spki).map_err(|_| IdentityError::NotP256)
}

/// Checks `signature` over `message` by `key`: DER, low S, valid.
pub fn verify_with_key(
    key: &VerifyingKey,
    message: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    let signature = Signature::from_der(signature).map_err(|_| SignatureError::Encoding)?;
    if signature.normalize_s() != signature {
        return Err(SignatureError::HighS);
    }
    key.verify(message, &signature)
        .map_err(|_| SignatureError::Invalid)
}

/// Checks `signature` over `message` by the serialized identity `creator`; returns the
/// creator's MSP id.
pub fn verify_creator(
    creator: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<String, SignatureError> {
    let identity =
        SerializedIdentity::decode(creator).map_err(|e| SignatureError::Creator(e.to_string()))?;
    let key =
        certificate_key(&identity.id_bytes).map_err(|e| SignatureError::Creator(e.to_string()))?;
    verify_with_key(&key, message, signature)?;
    Ok(identity.mspid)
}
