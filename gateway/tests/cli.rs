//! The `assent` binary's command line: `--version`, and `check-config` exiting 0 on a valid
//! file and 64 with the bad key named otherwise.

use std::process::Command;

fn assent(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_assent"))
        .args(args)
        .output()
        .expect("assent runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const GOOD: &str = r#"
listen = "127.0.0.1:8080"
database_url = "assent.db"

[sites.st-mary]
upstream = "https://fhir.st-mary.example/r4"
fhir_version = "R4"
default_policy = "opt-out"
"#;

#[test]
fn version_is_printed() {
    let (code, out, _) = assent(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), format!("assent {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn check_config_accepts_a_valid_file_and_names_the_bad_key_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, GOOD).unwrap();
    let (code, out, err) = assent(&["check-config", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("valid (1 site)"), "{out}");
    assert!(
        err.contains("no [[auth.issuers]]"),
        "a file without a trusted issuer is valid, with a warning: {err}"
    );

    let cases = [
        (
            GOOD.replace("\"R4\"", "\"R9\""),
            "sites.st-mary.fhir_version",
        ),
        (
            GOOD.replace("opt-out", "sometimes"),
            "sites.st-mary.default_policy",
        ),
        (GOOD.replace("127.0.0.1:8080", "not-an-address"), "listen"),
        (
            format!("{GOOD}timeout_ms = 0\n"),
            "sites.st-mary.timeout_ms",
        ),
        (format!("{GOOD}colour = \"blue\"\n"), "colour"),
        (
            format!("{GOOD}[[auth.api_keys]]\nid = \"old\"\n"),
            "auth.api_keys",
        ),
        (
            format!(
                "{GOOD}[[auth.issuers]]\nissuer = \"http://idp.example\"\naudience = [\"a\"]\n"
            ),
            "auth.issuers[0].issuer",
        ),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let (code, _, err) = assent(&["check-config", path.to_str().unwrap()]);
        assert_eq!(code, 64, "case {i}: {err}");
        assert!(err.contains(key), "case {i} should name `{key}`: {err}");
    }
    let (code, _, err) = assent(&["check-config", "/nonexistent/assent.toml"]);
    assert_eq!(code, 64);
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn unknown_subcommands_are_usage_errors() {
    let (code, _, _) = assent(&["frobnicate"]);
    assert_eq!(code, 64);
}

#[test]
fn the_example_configuration_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/assent.toml");
    let (code, out, err) = assent(&["check-config", example]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("valid (2 sites)"), "{out}");
    assert!(
        !err.contains("warning"),
        "the example trusts an issuer: {err}"
    );
}

#[test]
fn ledger_verify_passes_an_untouched_chain_and_names_a_tampered_block() {
    use assent_gateway::consent_service::ConsentService;
    use assent_gateway::store::Store;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assent.db");
    let seed = [3u8; 32];
    let config = dir.path().join("assent.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"{}\"\n[ledger]\nnode_key_hex = \"{}\"\nconsortium_key_hex = \"{}\"\n",
            db.display(),
            hex::encode(seed),
            hex::encode([4u8; 32])
        ),
    )
    .unwrap();
    let store = Store::open(db.to_str().unwrap()).unwrap();
    {
        let service = ConsentService::open_embedded(store.clone(), &[4; 32], seed).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        for i in 0..3 {
            let consent = serde_json::json!({
                "resourceType": "Consent", "id": format!("c{i}"), "status": "active",
                "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
                "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
                "patient": {"reference": "Patient/p1"},
                "provision": {"type": "permit"}
            });
            runtime
                .block_on(service.put("st-mary", consent, None, "p1", None))
                .unwrap();
        }
    }
    let (code, out, err) = assent(&["ledger", "verify", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ledger verified: 3 blocks"), "{out}");

    assent_gateway::ledger_store::tamper_body_for_tests(&store, 1).unwrap();
    let (code, _, err) = assent(&["ledger", "verify", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("block 1:"), "{err}");
}

#[test]
fn verify_exits_0_when_all_holds_1_on_a_failure_and_64_on_bad_usage() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export.ndjson");
    let anchors = dir.path().join("anchors.ndjson");
    std::fs::write(&export, "").unwrap();
    std::fs::write(&anchors, "").unwrap();
    let (export_s, anchors_s) = (export.to_str().unwrap(), anchors.to_str().unwrap());
    let (code, out, _) = assent(&["verify", export_s, "--anchors", anchors_s]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("all checks held"), "{out}");

    std::fs::write(&export, "{\"receipt\": {\"id\": \"r-1\"}}\n").unwrap();
    let (code, out, _) = assent(&["verify", export_s, "--anchors", anchors_s]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL line 1: receipt r-1"), "{out}");

    let (code, _, err) = assent(&["verify", export_s]);
    assert_eq!(code, 64, "{err}");
    std::fs::write(&anchors, "{\"gateway_id\": \"g\"}\n").unwrap();
    let (code, _, err) = assent(&["verify", export_s, "--anchors", anchors_s]);
    assert_eq!(code, 64, "a bad anchors file is bad usage: {err}");
}
