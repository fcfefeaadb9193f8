//! The hostile-token battery: each case asserts the exact error code and HTTP status, against
//! the FAKE provider in `support.rs`. Also the good paths (RS256, ES256, EdDSA), the cache,
//! and JWKS refetching: on unknown `kid` (rate-limited under a flood), on key rotation, and
//! on the provider's `Cache-Control: max-age`.

use std::time::Duration;

use assent_auth::{AuthError, CallerKind, Verifier};
use assent_fhir::Interaction;
use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use crate::support::{AUDIENCE, FakeIdp, TestKey, now, part};

const LONG: Duration = Duration::from_secs(3600);

/// Verifies `token` and returns the error, asserting its code and status.
async fn rejected(verifier: &Verifier, token: &str, code: &str, status: u16) -> AuthError {
    let error = verifier
        .verify(token, None)
        .await
        .expect_err(&format!("token should be rejected with {code}"));
    assert_eq!(error.code(), code, "{error}");
    assert_eq!(error.status(), status, "{error}");
    if status == 401 && code != "token-missing" {
        assert!(
            error
                .www_authenticate()
                .unwrap()
                .starts_with("Bearer error=\"invalid_token\"")
        );
    }
    error
}

#[tokio::test]
async fn valid_tokens_of_each_algorithm_pass_and_carry_the_caller() {
    let (rsa, ec, ed) = (
        TestKey::rsa("rsa-1"),
        TestKey::ec("ec-1"),
        TestKey::ed("ed-1"),
    );
    let idp = FakeIdp::start(&[&rsa, &ec, &ed]).await;
    let verifier = idp.verifier(LONG).await;
    for key in [&rsa, &ec, &ed] {
        let caller = verifier
            .verify(&key.sign(&idp.claims()), None)
            .await
            .unwrap();
        assert_eq!(caller.subject.as_ref(), "client-1");
        assert_eq!(caller.actor.as_deref(), Some("Practitioner/p1"));
        assert_eq!(caller.organization.as_deref(), Some("Organization/o1"));
        assert_eq!(caller.purpose.unwrap().code(), "TREAT");
        assert_eq!(caller.kind, CallerKind::User);
        assert!(caller.token_id.starts_with("jti-"));
        assert!(caller.authorize(Interaction::Search, "Observation").is_ok());
        assert_eq!(
            caller
                .authorize(Interaction::Search, "Patient")
                .unwrap_err()
                .code(),
            "scope-insufficient"
        );
    }
}

#[tokio::test]
async fn cached_token_is_served_again_with_its_purpose_header_rules() {
    let key = TestKey::ec("ec-1");
    let idp = FakeIdp::start(&[&key]).await;
    let verifier = idp.verifier(LONG).await;
    let mut claims = idp.claims();
    claims.as_object_mut().unwrap().remove("purpose_of_use");
    claims.as_object_mut().unwrap().remove("jti");
    let token = key.sign(&claims);
    let first = verifier.verify(&token, None).await.unwrap();
    assert!(first.token_id.starts_with("sha256:"));
    assert!(!first.token_id.contains(&token[..20]));
    // A hit: same caller, and the purpose header applies per request.
    let second = verifier.verify(&token, Some("HPAYMT")).await.unwrap();
    assert_eq!(second.token_id, first.token_id);
    assert_eq!(second.purpose.unwrap().code(), "HPAYMT");
    let unknown = verifier
        .verify(&token, Some("CURIOSITY"))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), "purpose-header-unknown");
    assert_eq!(unknown.status(), 400);
}

#[tokio::test]
async fn alg_none_is_refused() {
    let key = TestKey::rsa("rsa-1");
    let idp = FakeIdp::start(&[&key]).await;
    let verifier = idp.verifier(LONG).await;
    let claims = idp.claims();
    for alg in ["none", "None", "NONE"] {
        let unsigned = format!(
            "{}.{}.",
            part(&json!({"alg": alg, "typ": "JWT"})),
            part(&claims)
        );
        rejected(&verifier, &unsigned, "token-alg-not-allowed", 401).await;
        // Same with a signature part present (some libraries only check for its absence).
        let signed = key.sign_with_header(&json!({"alg": alg, "kid": "rsa-1"}), &claims);
        rejected(&verifier, &signed, "token-alg-not-allowed", 401).await;
    }
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let key = TestKey::rsa("rsa-1");
    let idp = FakeIdp::start(&[&key]).await;
    let verifier = idp.verifier(LONG).await;
    let input = format!(
        "{}.{}",
        part(&json!({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"})),
        part(&idp.claims())
    );
    for secret in [
        key.public_pem.as_bytes(),
        key.jwk["n"].as_str().unwrap().as_bytes(),
    ] {
        let mac = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input.as_bytes());
        let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()));
        rejected(&verifier, &token, "token-alg-not-allowed", 401).await;
    }
}

#[tokio::test]
async fn algorithm_that_does_not_fit_the_named_key_is_refused() {
    let (rsa, ec) = (TestKey::rsa("rsa-1"), TestKey::ec("ec-1"));
    let idp = FakeIdp::start(&[&rsa, &ec]).await;
    let verifier = idp.verifier(LONG).await;
    // ES256 signature, header pointing at the RSA key.
    let token = ec.sign_with_header(&json!({"alg": "ES256", "kid": "rsa-1"}), &idp.claims());
    rejected(&verifier, &token, "token-bad-signature", 401).await;
}

#[tokio::test]
async fn unknown_kid_refetches_once_and_is_rate_limited_under_a_flood() {
    let key = TestKey::rsa("rsa-1");
    let stranger = TestKey::rsa("ghost");
    let idp = FakeIdp::start(&[&key]).await;
    let verifier = idp.verifier(LONG).await;
    assert_eq!(idp.jwks_hits(), 1, "discovery fetches the JWKS once");

    let token = stranger.sign(&idp.claims());
    rejected(&verifier, &token, "token-unknown-kid", 401).await;
    assert_eq!(idp.jwks_hits(), 2, "an unknown kid triggers one refetch");

    // A flood of tokens naming unknown keys, concurrently: no further fetch.
    let mut tasks = Vec::new();
    for i in 0..100 {
        let verifier = verifier.clone();
        let token = stranger.sign_with_header(
            &json!({"alg": "RS256", "kid": format!("ghost-{i}"), "typ": "JWT"}),
            &idp.claims(),
        );
        tasks.push(tokio::spawn(async move {
            verifier.verify(&token, None).await.unwrap_err().code()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), "token-unknown-kid");
    }
    assert_eq!(idp.jwks_hits(), 2, "refetches are rate-limited");
    assert_eq!(verifier.jwks_fetch_count(&idp.issuer), Some(2));
}

#[tokio::test]
async fn concurrent_unknown_kids_share_one_refetch_that_finds_the_new_key() {
    let old = TestKey::rsa("old");
    let new = TestKey::ec("new");
    let idp = FakeIdp::start(&[&old]).await;
    let verifier = idp.verifier(LONG).await;
    idp.set_keys(&[&old, &new]);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let verifier = verifier.clone();
        let token = new.sign(&idp.claims());
        tasks.push(tokio::spawn(
            async move { verifier.verify(&token, None).await },
        ));
    }
    for task in tasks {
        task.await
            .unwrap()
            .expect("new key found after one refetch");
    }
    assert_eq!(idp.jwks_hits(), 2);
}

#[tokio::test]
async fn expired_not_yet_valid_and_issued_in_future_are_refused() {
    let key = TestKey::ec("ec-1");
    let idp = FakeIdp::start(&[&key]).await;
    let verifier = idp.verifier(LONG).await;
    let now = now();

    let mut expired = idp.claims();
    expired["exp"] = json!(now - 120);
    expired["iat"] = json!(now - 400);
    expired["nbf"] = json!(now - 400);
    rejected(&verifier, &key.sign(&expired), "token-expired", 401).await;

    // Within the 30 s leeway still passes.
    let mut just_expired = idp.claims();
    just_expired["exp"] = json!(now - 5);
    verifier
        .verify(&key.sign(&just_expired), None)
        .await
        .unwrap();

    let mut early = idp.claims();
    early["nbf"] = json!(now + 300);
    rejected(&verifier, &key.sign(&early), "token-not-yet-valid", 401).await;

    let mut future = idp.claims();
    future["iat"] = json!(now + 300);
    future["nbf"] = json!(now);
    rejected(&verifier, &key.sign(&future), "token-issued-in-future", 401).await;

    let mut no_exp = idp.claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    rejected(&verifier, &key.sign(&no_exp), "token-missing-claim", 401).await;
}

/// A NumericDate may be fractional or written with an exponent (RFC 7519, section 2): such
/// `exp`, `nbf` and `iat` are read as the numbers they are and checked like whole seconds,
/// also with serde_json keeping numbers as their text (`arbitrary_precision`).
#[tokio::test]
async fn fractional_and_exponent_numeric_dates_are_read_and_checked() {
    let key = TestKey::ec("ec-1");
    let idp = FakeIdp::start(&[&key]).await;
    let verifier = idp.verifier(LONG).await;
    let now = now() as f64;
    let number = |text: String| -> serde_json::Value { serde_json::from_str(&text).unwrap() };

    let mut fractional = idp.claims();
    fractional["exp"] = json!(now + 300.5);
    fractional["nbf"] = json!(now - 0.25);
    fractional["iat"] = json!(now - 0.25);
    verifier.verify(&key.sign(&fractional), None).await.unwrap();

    let mut exponent = idp.claims();
    exponent["exp"] = number(format!("{}E0", now as u64 + 300));
    exponent["nbf"] = number(format!("{}.0e-0", now as u64));
    verifier.verify(&key.sign(&exponent), None).await.unwrap();

    let mut expired = idp.claims();
    expired["exp"] = json!(now - 120.5);
    rejected(&verifier, &key.sign(&expired), "token-expired", 401).await;

    let mut early = idp.claims();
    early["nbf"] = json!(now + 300.5);
    rejected(&verifier, &key.sign(&early), "token-not-yet-valid", 401).await;

    let mut future = idp.claims();
    future["iat"] = json!(now + 300.5);
    rejected(&verifier, &key.sign(&future), "token-issued-in-future", 401).await;

    for bad in [
        json!("4102444800"),
        json!(-1.5),
        json!(true),
        number("1e400".into()),
    ] {
        let mut claims = idp.claims();
        claims["exp"] = bad.clone();
        rejected(&verifier, &key.sign(&claims), "token-bad-claim", 401).await;
    }
}

#[tokio::test]
async fn wrong_issuer_and_wrong_audience_are_refused() {
    let key = TestKey::rsa("rsa-1");
    let idp = FakeIdp::start(&[&key]).await;
    let verifier = idp.verifier(LONG).await;

    let mut other_issuer = idp.claims();
    other_issuer["iss"] = json!("https://evil.example");
    rejected(
        &verifier,
        &key.sign(&other_issuer),
        "token-wrong-issuer",
        401,
    )
    .await;
    let mut trailing = idp.claims();
    trailing["iss"] = json!(format!("{}/", idp.issuer));
    rejected(&verifier, &key.sign(&trailing), "token-wrong-issuer", 401).await;

    let mut other_audience = idp.claims();
    other_audience["aud"] = json!("https://other.example/fhir");
    rejected(
        &verifier,
        &key.sign(&other_audience),
        "token-wrong-audience",
        401,
    )
    .await;
    let mut list = idp.claims();
    list["aud"] = json!(["https://other.example", AUDIENCE]);
    verifier.verify(&key.sign(&list), None).await.unwrap();
}

#[tokio::test]
async fn tampered_truncated_and_oversized_tokens_are_refused() {
    let key = TestKey::rsa("rsa-1");
    let idp = FakeIdp::start(&[&key]).await;
    let verifier = idp.verifier(LONG).await;
    let token = key.sign(&idp.claims());

    // Tampered payload: widen the scope, keep header and signature.
    let mut widened = idp.claims();
    widened["scope"] = json!("user/*.cruds");
    let parts: Vec<&str> = token.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], part(&widened), parts[2]);
    rejected(&verifier, &tampered, "token-bad-signature", 401).await;

    // Tampered signature.
    let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    signature[10] ^= 1;
    let flipped = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        URL_SAFE_NO_PAD.encode(signature)
    );
    rejected(&verifier, &flipped, "token-bad-signature", 401).await;

    // Truncated in the middle, and just the signature cut short.
    rejected(&verifier, &token[..token.len() / 2], "token-malformed", 401).await;
    // 342 base64url characters of RS256 signature less 6 is whole bytes: decodes, fails.
    rejected(
        &verifier,
        &token[..token.len() - 6],
        "token-bad-signature",
        401,
    )
    .await;
    // (Cutting 8 characters would leave 4 stray bits that a strict decoder refuses and a
    // lenient one drops: the outcome would depend on the signature's last character. A
    // character outside base64url is malformed whatever the signature.)
    let bad_character = format!(
        "{}*{}",
        &token[..token.len() - 8],
        &token[token.len() - 7..]
    );
    rejected(&verifier, &bad_character, "token-malformed", 401).await;
    rejected(&verifier, &token[..token.len() - 1], "token-malformed", 401).await;
    rejected(&verifier, "not-a-jwt", "token-malformed", 401).await;
    rejected(&verifier, "", "token-missing", 401).await;

    // Oversized: refused before parsing.
    let mut huge = idp.claims();
    huge["padding"] = json!("x".repeat(10_000));
    rejected(&verifier, &key.sign(&huge), "token-too-large", 401).await;
}

#[tokio::test]
async fn wrong_typ_is_refused() {
    let key = TestKey::ec("ec-1");
    let idp = FakeIdp::start(&[&key]).await;
    let verifier = idp.verifier(LONG).await;
    for typ in ["dpop+jwt", "logout+jwt", "JOSE+JSON", "secevent+jwt"] {
        let token = key.sign_with_header(
            &json!({"alg": "ES256", "kid": "ec-1", "typ": typ}),
            &idp.claims(),
        );
        rejected(&verifier, &token, "token-wrong-typ", 401).await;
    }
    for typ in ["JWT", "at+jwt", "application/at+jwt"] {
        let token = key.sign_with_header(
            &json!({"alg": "ES256", "kid": "ec-1", "typ": typ}),
            &idp.claims(),
        );
        verifier.verify(&token, None).await.unwrap();
    }
}

#[tokio::test]
async fn bad_claims_are_refused() {
    let key = TestKey::ec("ec-1");
    let idp = FakeIdp::start(&[&key]).await;
    let verifier = idp.verifier(LONG).await;
    let mut unknown_purpose = idp.claims();
    unknown_purpose["purpose_of_use"] = json!("CURIOSITY");
    rejected(
        &verifier,
        &key.sign(&unknown_purpose),
        "token-purpose-unknown",
        401,
    )
    .await;
    let mut no_sub = idp.claims();
    no_sub.as_object_mut().unwrap().remove("sub");
    rejected(&verifier, &key.sign(&no_sub), "token-missing-claim", 401).await;
    let mut numeric_actor = idp.claims();
    numeric_actor["fhirUser"] = json!(42);
    rejected(&verifier, &key.sign(&numeric_actor), "token-bad-claim", 401).await;
    let mut conflict = idp.claims();
    conflict["purpose_of_use"] = json!("TREAT");
    let error = verifier
        .verify(&key.sign(&conflict), Some("HMARKT"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), "purpose-conflict");
}

#[tokio::test]
async fn rotated_key_old_tokens_fail_new_tokens_pass_without_restart() {
    let k1 = TestKey::rsa("k1");
    let k2 = TestKey::rsa("k2");
    let idp = FakeIdp::start(&[&k1]).await;
    let verifier = idp.verifier(LONG).await;
    let old_token = k1.sign(&idp.claims());
    verifier.verify(&old_token, None).await.unwrap();
    verifier.verify(&old_token, None).await.unwrap(); // now from the cache

    // The provider rotates: k1 is gone, k2 signs.
    idp.set_keys(&[&k2]);
    let new_token = k2.sign(&idp.claims());
    verifier.verify(&new_token, None).await.unwrap();
    assert_eq!(idp.jwks_hits(), 2);

    // The old token fails, cached or not: its key is gone.
    rejected(&verifier, &old_token, "token-unknown-kid", 401).await;
    assert_eq!(idp.jwks_hits(), 2, "and the refetch stays rate-limited");
}

#[tokio::test]
async fn keys_are_refreshed_when_the_providers_max_age_passes() {
    let k1 = TestKey::ec("k1");
    let k2 = TestKey::ec("k2");
    let idp = FakeIdp::start(&[&k1]).await;
    idp.state.lock().unwrap().cache_control = Some("public, max-age=1".into());
    let verifier = idp.verifier(Duration::ZERO).await;
    let token = k1.sign(&idp.claims());
    verifier.verify(&token, None).await.unwrap();
    assert_eq!(idp.jwks_hits(), 1);

    idp.set_keys(&[&k2]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // A token with a known kid, not cached: the stale set is refreshed first, k1 is gone.
    let fresh = k1.sign(&idp.claims());
    rejected(&verifier, &fresh, "token-unknown-kid", 401).await;
    assert!(idp.jwks_hits() >= 2, "refreshed on max-age");
    // And the token verified before no longer passes from the cache.
    rejected(&verifier, &token, "token-unknown-kid", 401).await;
}

#[tokio::test]
async fn discovery_fails_clearly_for_bad_configuration() {
    let key = TestKey::rsa("rsa-1");
    let idp = FakeIdp::start(&[&key]).await;
    let mut no_audience = idp.config(LONG);
    no_audience.audience.clear();
    let error = Verifier::discover(vec![no_audience]).await.err().unwrap();
    assert!(error.to_string().contains("audience"), "{error}");

    let mut wrong_issuer = idp.config(LONG);
    wrong_issuer.issuer = format!("{}/other", idp.issuer);
    let error = Verifier::discover(vec![wrong_issuer]).await.err().unwrap();
    assert!(error.to_string().contains("discovery failed"), "{error}");

    let mut es_only = idp.config(LONG);
    es_only.algorithms = vec![assent_auth::SigningAlgorithm::Es256];
    let error = Verifier::discover(vec![es_only]).await.err().unwrap();
    assert!(
        error.to_string().contains("no usable signature key"),
        "{error}"
    );
}

#[tokio::test]
async fn keys_embedded_in_or_linked_from_the_header_are_never_used() {
    let key = TestKey::rsa("rsa-1");
    let attacker = TestKey::rsa("attacker");
    let idp = FakeIdp::start(&[&key]).await;
    let verifier = idp.verifier(LONG).await;
    let header = json!({
        "alg": "RS256",
        "kid": "attacker",
        "typ": "JWT",
        "jwk": attacker.jwk,
        "jku": format!("{}/jwks", idp.issuer),
    });
    rejected(
        &verifier,
        &attacker.sign_with_header(&header, &idp.claims()),
        "token-unknown-kid",
        401,
    )
    .await;
    // Naming the real kid with the attacker's signature fails the signature check.
    let header = json!({"alg": "RS256", "kid": "rsa-1", "jwk": attacker.jwk});
    rejected(
        &verifier,
        &attacker.sign_with_header(&header, &idp.claims()),
        "token-bad-signature",
        401,
    )
    .await;
}

#[tokio::test]
async fn several_issuers_each_verify_with_their_own_keys_only() {
    let (key_a, key_b) = (TestKey::rsa("a-1"), TestKey::ec("b-1"));
    let (idp_a, idp_b) = (
        FakeIdp::start(&[&key_a]).await,
        FakeIdp::start(&[&key_b]).await,
    );
    let verifier = Verifier::discover(vec![idp_a.config(LONG), idp_b.config(LONG)])
        .await
        .unwrap();
    let caller = verifier
        .verify(&key_a.sign(&idp_a.claims()), None)
        .await
        .unwrap();
    assert_eq!(caller.issuer.as_ref(), idp_a.issuer);
    let caller = verifier
        .verify(&key_b.sign(&idp_b.claims()), None)
        .await
        .unwrap();
    assert_eq!(caller.issuer.as_ref(), idp_b.issuer);
    // B's key cannot vouch for a token claiming to come from A.
    rejected(
        &verifier,
        &key_b.sign(&idp_a.claims()),
        "token-unknown-kid",
        401,
    )
    .await;
    let mut stranger = idp_a.claims();
    stranger["iss"] = json!("https://evil.example");
    rejected(&verifier, &key_a.sign(&stranger), "token-wrong-issuer", 401).await;
    let mut missing = idp_a.claims();
    missing.as_object_mut().unwrap().remove("iss");
    rejected(&verifier, &key_a.sign(&missing), "token-missing-claim", 401).await;
}
