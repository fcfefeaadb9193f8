//! P6 figures (PERFORMANCE.md): verified-token cache hit, cold RS256 and ES256 verification,
//! each beside a reference measured in the same run (the bare SHA-256 of the token; the bare
//! signature check of the crypto library), since absolute times drift on shared machines.
//! A benchmark that prints, not a timed test: run with
//! `cargo test -p assent-auth --release --test verify -- --ignored --nocapture p6`.

use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::support::{FakeIdp, TestKey};

fn micros(elapsed: Duration, n: usize) -> f64 {
    elapsed.as_nanos() as f64 / n as f64 / 1000.0
}

/// The key's public part as aws-lc wants it, and the token's signing input and signature.
fn bare_check_inputs(key: &TestKey, token: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (input, signature) = token.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    let jwk = &key.jwk;
    let public = if key.alg == "RS256" {
        // DER RSAPublicKey is what UnparsedPublicKey takes for RSA: build it from n and e.
        let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
        let e = URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap();
        rsa_public_key_der(&n, &e)
    } else {
        let mut point = vec![4u8];
        point.extend(URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap());
        point.extend(URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap());
        point
    };
    (public, input.as_bytes().to_vec(), signature)
}

fn der_integer(bytes: &[u8]) -> Vec<u8> {
    let mut value = bytes.to_vec();
    if value[0] & 0x80 != 0 {
        value.insert(0, 0);
    }
    let mut out = vec![0x02];
    out.extend(der_length(value.len()));
    out.extend(value);
    out
}

fn der_length(len: usize) -> Vec<u8> {
    if len < 128 {
        vec![len as u8]
    } else if len < 256 {
        vec![0x81, len as u8]
    } else {
        vec![0x82, (len >> 8) as u8, len as u8]
    }
}

fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut body = der_integer(n);
    body.extend(der_integer(e));
    let mut out = vec![0x30];
    out.extend(der_length(body.len()));
    out.extend(body);
    out
}

#[tokio::test]
#[ignore = "benchmark: prints P6 figures"]
async fn p6_figures() {
    let (rsa, ec) = (TestKey::rsa("rsa"), TestKey::ec("ec"));
    let idp = FakeIdp::start(&[&rsa, &ec]).await;
    let verifier = idp.verifier(Duration::from_secs(3600)).await;

    let hit_token = rsa.sign(&idp.claims());
    verifier.verify(&hit_token, None).await.unwrap();
    let n = 200_000;
    for round in 0..3 {
        let start = Instant::now();
        for _ in 0..n {
            std::hint::black_box(digest::digest(&digest::SHA256, hit_token.as_bytes()));
        }
        let sha = micros(start.elapsed(), n);
        let start = Instant::now();
        for _ in 0..n {
            std::hint::black_box(verifier.verify(&hit_token, None).await.unwrap());
        }
        let hit = micros(start.elapsed(), n);
        println!(
            "P6 round {round}: cache hit {hit:.3} µs/verify ({} B token; of which SHA-256 alone {sha:.3} µs)",
            hit_token.len()
        );
    }

    for (name, key) in [("RS256", &rsa), ("ES256", &ec)] {
        let n = 2_000;
        let algorithm: &dyn aws_lc_rs::signature::VerificationAlgorithm = if name == "RS256" {
            &RSA_PKCS1_2048_8192_SHA256
        } else {
            &ECDSA_P256_SHA256_FIXED
        };
        for round in 0..2 {
            // Distinct tokens, fresh each round, so that none hits the cache.
            let tokens: Vec<String> = (0..n).map(|_| key.sign(&idp.claims())).collect();
            let (public, input, signature) = bare_check_inputs(key, &tokens[0]);
            let start = Instant::now();
            for _ in 0..n {
                UnparsedPublicKey::new(algorithm, &public)
                    .verify(&input, &signature)
                    .unwrap();
            }
            let bare = micros(start.elapsed(), n);
            let start = Instant::now();
            for token in &tokens {
                std::hint::black_box(verifier.verify(token, None).await.unwrap());
            }
            let cold = micros(start.elapsed(), n);
            let decoding_key = jsonwebtoken::DecodingKey::from_jwk(
                &serde_json::from_value(key.jwk.clone()).unwrap(),
            )
            .unwrap();
            let mut validation = jsonwebtoken::Validation::new(if name == "RS256" {
                jsonwebtoken::Algorithm::RS256
            } else {
                jsonwebtoken::Algorithm::ES256
            });
            validation.set_audience(&[crate::support::AUDIENCE]);
            let start = Instant::now();
            for token in &tokens {
                std::hint::black_box(
                    jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                        token,
                        &decoding_key,
                        &validation,
                    )
                    .unwrap(),
                );
            }
            let library = micros(start.elapsed(), n);
            println!("P6 round {round}: jsonwebtoken::decode alone {library:.2} µs");
            println!(
                "P6 round {round}: cold {name} {cold:.2} µs/verify (bare aws-lc signature check {bare:.2} µs; ratio {:.2})",
                cold / bare
            );
        }
    }
}
