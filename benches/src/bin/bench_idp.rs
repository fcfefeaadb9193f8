//! A DEMO identity provider for benchmarks: starts the gateway's demo provider on loopback,
//! prints `issuer=URL` and `token=JWT` (a clinician, `user/*.rs`, purpose TREAT, audience from
//! the first argument), then serves until it is killed.

fn main() {
    let audience = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "https://assent.bench/fhir".into());
    let provider = assent_gateway::demo::identity_provider::DemoIdentityProvider::start(&audience)
        .unwrap_or_else(|e| {
            eprintln!("bench_idp: {e}");
            std::process::exit(1)
        });
    let token = provider
        .provider()
        .mint(
            "dr-alice",
            Some("openid fhirUser user/*.rs"),
            Some("TREAT"),
            None,
        )
        .unwrap_or_else(|e| {
            eprintln!("bench_idp: {e:?}");
            std::process::exit(1)
        });
    println!("issuer={}", provider.issuer());
    println!("token={token}");
    loop {
        std::thread::park();
    }
}
