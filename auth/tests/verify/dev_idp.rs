//! The demo's development identity provider, mounted on a loopback server the way the gateway
//! will mount it, discovered and trusted by the same `Verifier` as a real provider.

use std::sync::{Arc, Mutex};

use assent_auth::dev_idp::{DevIdentityProvider, SAMPLE_CALLERS};
use assent_auth::{CallerKind, Verifier};
use assent_fhir::Interaction;
use serde_json::Value;

use crate::support::{Handler, Reply, serve};

#[tokio::test]
async fn tokens_minted_by_the_dev_provider_verify() {
    let slot: Arc<Mutex<Option<Arc<DevIdentityProvider>>>> = Arc::default();
    let handler: Handler = {
        let slot = slot.clone();
        Arc::new(move |method, path, body| {
            let provider = slot.lock().unwrap().clone().unwrap();
            let response = provider.handle(method, path, &body);
            Reply {
                status: response.status,
                content_type: response.content_type.into(),
                headers: vec![("cache-control".into(), "no-store".into())],
                body: response.body,
            }
        })
    };
    let server = serve(handler).await;
    let provider = Arc::new(
        DevIdentityProvider::new(server.base_url.clone(), "http://127.0.0.1:1/fhir").unwrap(),
    );
    *slot.lock().unwrap() = Some(provider.clone());
    let verifier = Verifier::discover(vec![provider.issuer_config()])
        .await
        .unwrap();

    let response = provider.handle(
        "POST",
        "/token",
        "grant_type=client_credentials&client_id=dr-alice&patient=pat-1",
    );
    let body: Value = serde_json::from_str(&response.body).unwrap();
    let token = body["access_token"].as_str().unwrap();
    let caller = verifier.verify(token, None).await.unwrap();
    assert_eq!(caller.actor.as_deref(), Some("Practitioner/dr-alice"));
    assert_eq!(caller.patient.as_deref(), Some("pat-1"));
    assert_eq!(caller.purpose.unwrap().code(), "TREAT");
    assert_eq!(caller.kind, CallerKind::User);

    for sample in SAMPLE_CALLERS {
        let token = provider.mint(sample.name, None, None, None).unwrap();
        let caller = verifier.verify(&token, None).await.unwrap();
        assert_eq!(caller.subject.as_ref(), sample.name);
        assert_eq!(caller.purpose.unwrap().code(), sample.default_purpose);
    }
    let backend = provider.mint("billing-service", None, None, None).unwrap();
    let caller = verifier.verify(&backend, None).await.unwrap();
    assert_eq!(caller.kind, CallerKind::System);
    assert!(caller.authorize(Interaction::Search, "Patient").is_ok());
    let researcher = provider.mint("researcher-dan", None, None, None).unwrap();
    let caller = verifier.verify(&researcher, None).await.unwrap();
    let grant = caller
        .authorize(Interaction::Search, "Observation")
        .unwrap();
    assert_eq!(grant.search_narrowing().unwrap()[0].parameter, "category");
}
