//! P6 figures (PERFORMANCE.md): verified-token cache hit, cold RS256 and ES256 verification.
//! A benchmark that prints, not a timed test: run with
//! `cargo test -p assent-auth --release --test verify -- --ignored --nocapture p6`.

use std::time::{Duration, Instant};

use crate::support::{FakeIdp, TestKey};

fn per_op(elapsed: Duration, n: u32) -> f64 {
    elapsed.as_nanos() as f64 / f64::from(n) / 1000.0
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
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(verifier.verify(&hit_token, None).await.unwrap());
    }
    println!(
        "P6 cache hit: {:.3} µs/verify ({} B token)",
        per_op(start.elapsed(), n),
        hit_token.len()
    );

    for (name, key) in [("RS256", &rsa), ("ES256", &ec)] {
        let n = 2_000;
        // Distinct tokens so that none hits the cache.
        let tokens: Vec<String> = (0..n).map(|_| key.sign(&idp.claims())).collect();
        let start = Instant::now();
        for token in &tokens {
            std::hint::black_box(verifier.verify(token, None).await.unwrap());
        }
        println!(
            "P6 cold {name}: {:.2} µs/verify (wall, includes claims and cache insert)",
            per_op(start.elapsed(), n)
        );
    }
}
