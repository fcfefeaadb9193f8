//! End to end against a real, certified OpenID Connect provider: the `oidc-provider` npm
//! package run by `tests/oidc-provider/provider.mjs` on loopback. Tokens come from its token
//! endpoint by client credentials (RS256 and ES256 JWT access tokens with SMART claims) and
//! are verified by the `Verifier` after OpenID discovery.
//!
//! Needs `npm ci --prefix tests/oidc-provider` first. Without it the test fails when `CI` is
//! set and prints a skip notice otherwise.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use assent_auth::{CallerKind, IssuerConfig, Verifier};
use assent_fhir::Interaction;
use serde_json::Value;

const RESOURCE: &str = "http://assent.test/fhir";

/// The provider process; killed on drop, and it exits by itself when its stdin closes.
struct Provider {
    child: Child,
    issuer: String,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/oidc-provider")
}

/// Starts the provider, or `None` (after a notice) when it is not installed outside CI.
fn start_provider() -> Option<Provider> {
    let dir = fixture_dir();
    if !dir.join("node_modules/oidc-provider").is_dir() {
        let message = format!(
            "oidc-provider is not installed in {}: run `npm ci --prefix tests/oidc-provider`",
            dir.display()
        );
        if std::env::var_os("CI").is_some() {
            panic!("{message}");
        }
        eprintln!("SKIPPED end-to-end test against oidc-provider: {message}");
        return None;
    }
    let mut child = Command::new("node")
        .arg(dir.join("provider.mjs"))
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs (is Node.js installed?)");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let mut provider = Provider {
        child,
        issuer: String::new(),
    };
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("oidc-provider printed its URL within 30 s");
    provider.issuer = line.trim().to_owned();
    assert!(provider.issuer.starts_with("http://127.0.0.1:"), "{line:?}");
    Some(provider)
}

/// A token from the provider's token endpoint by client credentials.
async fn client_credentials(
    token_endpoint: &str,
    client: &str,
    secret: &str,
    scope: &str,
    resource: &str,
) -> String {
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("scope", scope)
        .append_pair("resource", resource)
        .finish();
    let response = reqwest::Client::new()
        .post(token_endpoint)
        .basic_auth(client, Some(secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn tokens_from_oidc_provider_verify_after_discovery() {
    let Some(provider) = start_provider() else {
        return;
    };
    let mut config = IssuerConfig::new(provider.issuer.clone(), RESOURCE);
    config.allow_purpose_header = true;
    let verifier = Verifier::discover(vec![config]).await.expect("discovery");
    let endpoints = verifier.endpoints(&provider.issuer).expect("discovered");
    let token_endpoint = endpoints
        .token_endpoint
        .clone()
        .expect("token endpoint discovered");
    let smart = endpoints.smart_configuration();
    assert_eq!(smart["token_endpoint"], token_endpoint.as_str());
    assert!(
        smart["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&"client_credentials".into())
    );

    // RS256, a practitioner with user scopes.
    let token = client_credentials(
        &token_endpoint,
        "assent-rs256",
        "secret-rs256",
        "user/*.rs",
        RESOURCE,
    )
    .await;
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token.split('.').next().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "at+jwt");
    let caller = verifier.verify(&token, None).await.unwrap();
    assert_eq!(caller.actor.as_deref(), Some("Practitioner/dr-alice"));
    assert_eq!(caller.organization.as_deref(), Some("Organization/st-mary"));
    assert_eq!(caller.purpose.unwrap().code(), "TREAT");
    assert_eq!(caller.kind, CallerKind::User);
    assert_eq!(caller.client_id.as_deref(), Some("assent-rs256"));
    assert!(
        caller
            .authorize(Interaction::Search, "Observation")
            .unwrap()
            .is_unrestricted()
    );

    // ES256, a practitioner in a patient context with granular and patient scopes.
    let scope = "patient/Observation.rs patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory";
    let token = client_credentials(
        &token_endpoint,
        "assent-es256",
        "secret-es256",
        scope,
        RESOURCE,
    )
    .await;
    let caller = verifier.verify(&token, Some("ETREAT")).await.unwrap();
    assert_eq!(caller.patient.as_deref(), Some("pat-123"));
    assert_eq!(caller.purpose.unwrap().code(), "ETREAT");
    assert!(caller.purpose.unwrap().is_emergency());
    let grant = caller
        .authorize(Interaction::Search, "Observation")
        .unwrap();
    assert!(grant.patient_confined());
    assert_eq!(
        caller
            .authorize(Interaction::Read, "Condition")
            .unwrap_err()
            .code(),
        "scope-insufficient"
    );
    // The header may not contradict the token's purpose.
    assert_eq!(
        verifier
            .verify(&token, Some("HPAYMT"))
            .await
            .unwrap_err()
            .code(),
        "purpose-conflict"
    );

    // A SMART backend service: system scopes, no user.
    let token = client_credentials(
        &token_endpoint,
        "assent-backend",
        "secret-backend",
        "system/*.rs",
        RESOURCE,
    )
    .await;
    let caller = verifier.verify(&token, None).await.unwrap();
    assert_eq!(caller.kind, CallerKind::System);
    assert_eq!(caller.actor, None);
    assert_eq!(caller.purpose.unwrap().code(), "HOPERAT");
    assert!(
        caller
            .authorize(Interaction::Read, "Patient")
            .unwrap()
            .is_unrestricted()
    );

    // A token for another resource server is refused.
    let token = client_credentials(
        &token_endpoint,
        "assent-rs256",
        "secret-rs256",
        "user/*.rs",
        "http://assent.test/elsewhere",
    )
    .await;
    let error = verifier.verify(&token, None).await.unwrap_err();
    assert_eq!(error.code(), "token-wrong-audience");
    assert_eq!(verifier.jwks_fetch_count(&provider.issuer), Some(1));
}
