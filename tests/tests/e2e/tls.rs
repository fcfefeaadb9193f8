//! Upstream mutual TLS: a FAKE hospital server that requires a client certificate signed by
//! its CA. The site configured with the gateway's certificate, key and the hospital's CA
//! gets through; the same upstream without them does not (502, nothing leaks).

use std::io::BufReader;
use std::sync::Arc;

use actix_web::{App, HttpResponse, HttpServer, web};
use assent_e2e::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use serde_json::json;

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    /// A certificate for `name` signed by this CA, and its key (PEM).
    fn leaf(&self, name: &str, purpose: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn server_config(ca: &Ca, cert_pem: &str, key_pem: &str) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut BufReader::new(ca.issuer.pem().as_bytes())) {
        roots.add(cert.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let certs = rustls_pemfile::certs(&mut BufReader::new(cert_pem.as_bytes()))
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut BufReader::new(key_pem.as_bytes()))
        .unwrap()
        .unwrap();
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap()
}

#[actix_web::test]
async fn mutual_tls_presents_the_sites_client_certificate() {
    let ca = Ca::new();
    let (server_cert, server_key) = ca.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = ca.leaf("assent-gateway", ExtendedKeyUsagePurpose::ClientAuth);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let ca_file = write("ca.pem", &ca.issuer.pem());
    let cert_file = write("client.pem", &client_cert);
    let key_file = write("client.key", &client_key);

    // The FAKE hospital: TLS with client certificates required, on 127.0.0.1 port 0.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = server_config(&ca, &server_cert, &server_key);
    let server = HttpServer::new(|| {
        App::new().default_service(web::to(|| async {
            HttpResponse::Ok()
                .content_type("application/fhir+json")
                .body(json!({"resourceType": "Patient", "id": "p1"}).to_string())
        }))
    })
    .workers(1)
    .disable_signals()
    .listen_rustls_0_23(listener, config)
    .unwrap()
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);

    let upstream = format!("https://{addr}/fhir");
    let gw = TestGateway::new()
        .site_with("mtls", json!({"upstream": upstream, "fhir_version": "R4", "default_policy": "opt-out",
            "upstream_auth": {"kind": "mtls", "cert_file": cert_file, "key_file": key_file, "ca_file": ca_file}}))
        .site_with("no-cert", json!({"upstream": upstream, "fhir_version": "R4", "default_policy": "opt-out",
            "circuit_breaker": {"failures": 100}}))
        .start();

    let got = get(&gw.url("/fhir/mtls/Patient/p1")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.json()["id"], "p1");

    // Without the CA the hospital's certificate is not trusted; without the client certificate
    // the hospital refuses the handshake: either way a 502 that names nothing.
    let refused = get(&gw.url("/fhir/no-cert/Patient/p1")).await;
    assert_eq!(refused.status, 502, "{}", refused.text());
    assert!(!refused.text().contains(&addr.to_string()));
    handle.stop(false).await;
}
