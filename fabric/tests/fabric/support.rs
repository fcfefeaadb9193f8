//! Test support: P-256 identities and TLS certificates made fresh for each run (rcgen; no
//! key material is committed), and starting the chaincode server, the FAKE Fabric and a
//! `FabricLedger` wired together over loopback.
//!
//! Owns test setup only; the fakes are in `fake.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use assent_fabric::{
    CallOptions, FabricConnection, FabricLedger, FabricOptions, SigningIdentity, TlsMaterial,
};
use p256::pkcs8::DecodePrivateKey;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};

use super::fake::{self, FakeFabric, FakeTls};

/// A P-256 key and a self-signed certificate naming `name`.
pub fn p256_identity(name: &str) -> (p256::ecdsa::SigningKey, String) {
    let (cert, key) = p256_pem(name);
    (p256::ecdsa::SigningKey::from_pkcs8_pem(&key).unwrap(), cert)
}

/// A self-signed certificate and its PKCS#8 key, both PEM.
pub fn p256_pem(name: &str) -> (String, String) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem())
}

/// The gateway's signing identity in `msp`.
pub fn client_identity(msp: &str) -> SigningIdentity {
    let (cert, key) = p256_pem("assent-gateway.org1.example.com");
    SigningIdentity::from_pem(msp, cert.as_bytes(), &key).unwrap()
}

/// A throwaway certificate authority for TLS.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

impl TestCa {
    pub fn new() -> TestCa {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `name` signed by this CA, for a server or a client, and its key.
    pub fn leaf(&self, name: &str, server: bool) -> (String, String) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A TLS CA, a server certificate for `localhost` signed by it, and the client's view.
pub fn tls_pair() -> (FakeTls, TlsMaterial) {
    let ca = TestCa::new();
    let (cert_pem, key_pem) = ca.leaf("localhost", true);
    (
        FakeTls { cert_pem, key_pem },
        TlsMaterial {
            ca_pem: ca.pem().into_bytes(),
            client_identity: None,
            server_name: Some("localhost".to_owned()),
        },
    )
}

/// Starts the consent chaincode server on 127.0.0.1 (port 0); it stops when the returned
/// sender is dropped.
pub async fn start_chaincode() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    start_chaincode_with(None).await
}

/// The same, with TLS.
pub async fn start_chaincode_with(
    tls: Option<assent_fabric::ChaincodeTls>,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(assent_fabric::serve_chaincode_on(
        listener,
        fake::PACKAGE_ID.to_owned(),
        tls,
        async {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

/// A chaincode server, a FAKE Fabric over TLS in front of it, and how to reach it.
pub struct Network {
    pub fake: FakeFabric,
    pub connection: FabricConnection,
    _chaincode: tokio::sync::oneshot::Sender<()>,
}

impl Network {
    /// The default channel: `Org1MSP` and `Org2MSP`, both members of the documents collection.
    pub async fn start() -> Arc<Network> {
        Network::start_orgs(&fake::CONSORTIUM).await
    }

    /// A channel of `orgs`; [`Network::connection`] is the first organization's.
    pub async fn start_orgs(orgs: &[fake::FakeOrg]) -> Arc<Network> {
        let (addr, chaincode) = start_chaincode().await;
        let (server_tls, client_tls) = tls_pair();
        let fake = FakeFabric::start_orgs(addr, None, Some(server_tls), orgs).await;
        let options = FabricOptions {
            calls: CallOptions {
                reconnect_backoff: Duration::from_millis(20),
                ..CallOptions::default()
            },
            mvcc_retries: 30,
            event_reconnect_attempts: 8,
        };
        let connection = FabricConnection {
            peer_endpoint: fake.endpoint.clone(),
            tls: Some(client_tls),
            identity: client_identity(orgs[0].msp),
            channel: fake::CHANNEL.to_owned(),
            chaincode: fake::CHAINCODE.to_owned(),
            options,
        };
        Arc::new(Network {
            fake,
            connection,
            _chaincode: chaincode,
        })
    }

    pub fn ledger(&self) -> FabricLedger {
        FabricLedger::new(self.connection.clone()).unwrap()
    }

    /// A ledger of organization `msp`: its own gateway peer, its own client identity.
    pub fn ledger_of(&self, msp: &str) -> FabricLedger {
        let mut connection = self.connection.clone();
        connection.peer_endpoint = self.fake.endpoint_of(msp).to_owned();
        connection.identity = client_identity(msp);
        FabricLedger::new(connection).unwrap()
    }
}
