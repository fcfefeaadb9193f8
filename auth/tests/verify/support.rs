//! Test support: a loopback HTTP server on port 0 (hyper, not actix-web), a FAKE OpenID
//! provider whose keys the test controls and whose JWKS requests it counts, and test keys
//! that sign arbitrary (also hostile) tokens.
//!
//! Leaves out: any real provider behaviour beyond discovery and JWKS.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use assent_auth::{IssuerConfig, Verifier, VerifierOptions};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const AUDIENCE: &str = "https://assent.test/fhir";

/// A response from a test handler: status, extra headers, content type and body.
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

pub type Handler = Arc<dyn Fn(&str, &str, String) -> Reply + Send + Sync>;

/// A loopback server on port 0; it stops when dropped (and with the test's runtime).
pub struct Server {
    pub base_url: String,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `handler` on 127.0.0.1, port 0.
pub async fn serve(handler: Handler) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let handler = handler.clone();
                    async move {
                        let method = request.method().to_string();
                        let path = request.uri().path().to_owned();
                        let body = request.into_body().collect().await.map(|b| b.to_bytes());
                        let body = String::from_utf8_lossy(&body.unwrap_or_default()).into_owned();
                        let reply = handler(&method, &path, body);
                        let mut response = Response::builder()
                            .status(reply.status)
                            .header("content-type", reply.content_type);
                        for (name, value) in reply.headers {
                            response = response.header(name, value);
                        }
                        Ok::<_, Infallible>(
                            response.body(Full::new(Bytes::from(reply.body))).unwrap(),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Server { base_url, task }
}

/// What the fake provider serves; the test changes it at will.
#[derive(Default)]
pub struct FakeState {
    pub keys: Vec<Value>,
    pub cache_control: Option<String>,
}

/// A FAKE OpenID provider: discovery and a JWKS from [`FakeState`], counting JWKS requests.
pub struct FakeIdp {
    pub issuer: String,
    pub state: Arc<Mutex<FakeState>>,
    jwks_hits: Arc<AtomicU64>,
    _server: Server,
}

impl FakeIdp {
    pub async fn start(keys: &[&TestKey]) -> FakeIdp {
        let state = Arc::new(Mutex::new(FakeState {
            keys: keys.iter().map(|k| k.jwk.clone()).collect(),
            cache_control: None,
        }));
        let jwks_hits = Arc::new(AtomicU64::new(0));
        let issuer_slot: Arc<Mutex<String>> = Arc::default();
        let handler: Handler = {
            let state = state.clone();
            let jwks_hits = jwks_hits.clone();
            let issuer_slot = issuer_slot.clone();
            Arc::new(move |method, path, _body| {
                let issuer = issuer_slot.lock().unwrap().clone();
                match (method, path) {
                    ("GET", "/.well-known/openid-configuration") => json_reply(json!({
                        "issuer": issuer,
                        "authorization_endpoint": format!("{issuer}/authorize"),
                        "token_endpoint": format!("{issuer}/token"),
                        "jwks_uri": format!("{issuer}/jwks"),
                        "response_types_supported": ["code"],
                        "subject_types_supported": ["public"],
                        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
                    })),
                    ("GET", "/jwks") => {
                        jwks_hits.fetch_add(1, Ordering::SeqCst);
                        let state = state.lock().unwrap();
                        let mut reply = json_reply(json!({"keys": state.keys}));
                        if let Some(cc) = &state.cache_control {
                            reply.headers.push(("cache-control".into(), cc.clone()));
                        }
                        reply
                    }
                    _ => Reply {
                        status: 404,
                        content_type: "text/plain".into(),
                        headers: vec![],
                        body: "not found".into(),
                    },
                }
            })
        };
        let server = serve(handler).await;
        *issuer_slot.lock().unwrap() = server.base_url.clone();
        FakeIdp {
            issuer: server.base_url.clone(),
            state,
            jwks_hits,
            _server: server,
        }
    }

    pub fn jwks_hits(&self) -> u64 {
        self.jwks_hits.load(Ordering::SeqCst)
    }

    pub fn set_keys(&self, keys: &[&TestKey]) {
        self.state.lock().unwrap().keys = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    /// The issuer configuration trusting this fake, with a refetch interval of `interval`.
    pub fn config(&self, interval: Duration) -> IssuerConfig {
        let mut config = IssuerConfig::new(self.issuer.clone(), AUDIENCE);
        config.jwks_refetch_min_interval = interval;
        config.allow_purpose_header = true;
        config
    }

    pub async fn verifier(&self, interval: Duration) -> Verifier {
        Verifier::discover_with(vec![self.config(interval)], VerifierOptions::default())
            .await
            .expect("discovery against the fake provider")
    }

    /// Claims of a valid token for this issuer.
    pub fn claims(&self) -> Value {
        let now = now();
        json!({
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "client-1",
            "client_id": "client-1",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": format!("jti-{}", rand_u64()),
            "scope": "user/Observation.rs openid",
            "fhirUser": "Practitioner/p1",
            "organization": "Organization/o1",
            "purpose_of_use": "TREAT",
        })
    }
}

pub fn json_reply(body: Value) -> Reply {
    Reply {
        status: 200,
        content_type: "application/json".into(),
        headers: vec![],
        body: body.to_string(),
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    u64::from_le_bytes(b)
}

enum Signer {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// A signing key whose public JWK the fake provider serves.
pub struct TestKey {
    pub kid: String,
    pub alg: &'static str,
    pub jwk: Value,
    signer: Signer,
    /// The public key as PEM (what an HS256-confusion attacker uses as the HMAC secret).
    pub public_pem: String,
}

impl TestKey {
    pub fn rsa(kid: &str) -> TestKey {
        use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let public = pair.public_key();
        let n = URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero());
        let e = URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero());
        let der: PublicKeyX509Der = public.as_der().unwrap();
        let public_pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(der.as_ref())
        );
        TestKey {
            kid: kid.into(),
            alg: "RS256",
            jwk: json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": n, "e": e}),
            signer: Signer::Rsa(pair),
            public_pem,
        }
    }

    pub fn ec(kid: &str) -> TestKey {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let point = pair.public_key().as_ref().to_vec();
        assert_eq!(point[0], 4);
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        TestKey {
            kid: kid.into(),
            alg: "ES256",
            jwk,
            signer: Signer::Ec(pair),
            public_pem: String::new(),
        }
    }

    pub fn ed(kid: &str) -> TestKey {
        let pair = Ed25519KeyPair::generate().unwrap();
        let jwk = json!({
            "kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        });
        TestKey {
            kid: kid.into(),
            alg: "EdDSA",
            jwk,
            signer: Signer::Ed(pair),
            public_pem: String::new(),
        }
    }

    /// The standard header for this key: its `alg`, its `kid`, `typ: at+jwt`.
    pub fn header(&self) -> Value {
        json!({"alg": self.alg, "kid": self.kid, "typ": "at+jwt"})
    }

    /// Signs `claims` under `header` (which may lie about `alg`: the signature is always this
    /// key's own).
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", part(header), part(claims));
        let signature = match &self.signer {
            Signer::Rsa(pair) => {
                let mut sig = vec![0u8; pair.public_modulus_len()];
                pair.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    input.as_bytes(),
                    &mut sig,
                )
                .unwrap();
                sig
            }
            Signer::Ec(pair) => pair
                .sign(&SystemRandom::new(), input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
            Signer::Ed(pair) => pair.sign(input.as_bytes()).as_ref().to_vec(),
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(&self.header(), claims)
    }
}

/// base64url(JSON) of a JOSE part.
pub fn part(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}
