//! The `assent` binary's command line: `--version`, `check-config` exiting 0 on a valid
//! file and 64 with the bad key named otherwise (Fabric files included), and `ledger verify`
//! on the embedded ledger and (not applicable) on Fabric.

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

/// A `[ledger]` table for Fabric with its files in `dir` (a fresh P-256 enrolment certificate
/// and key, and a TLS CA); with `mismatched`, the key is another certificate's.
fn fabric_config(dir: &std::path::Path, mismatched: bool) -> String {
    use assent_fabric::testing::support::p256_pem;
    let (cert, key) = p256_pem("gw.org1.example.com");
    let (ca, other_key) = p256_pem("tls-ca");
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(
        dir.join("key.pem"),
        if mismatched { other_key } else { key },
    )
    .unwrap();
    std::fs::write(dir.join("ca.pem"), ca).unwrap();
    format!(
        "{GOOD}\n[ledger]\nbackend = \"fabric\"\nconsortium_key_hex = \"{}\"\n[ledger.fabric]\n\
         peer_endpoint = \"https://peer0.org1.example.com:7051\"\ntls_ca_file = \"{d}/ca.pem\"\n\
         msp_id = \"Org1MSP\"\ncert_file = \"{d}/cert.pem\"\nkey_file = \"{d}/key.pem\"\n\
         channel = \"assent\"\nchaincode = \"assent-consent\"\n",
        "cd".repeat(32),
        d = dir.display()
    )
}

#[test]
fn check_config_reads_the_fabric_files_and_ledger_verify_does_not_apply_to_fabric() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fabric.toml");
    std::fs::write(&config, fabric_config(dir.path(), false)).unwrap();
    let (code, out, err) = assent(&["check-config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("ledger: fabric, channel `assent`, chaincode `assent-consent`")
            && out.contains("the key matches the certificate"),
        "{out}"
    );

    // Not applicable: says so, checks nothing, and does not exit 0.
    let (code, out, err) = assent(&["ledger", "verify", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 64, "{out}");
    assert!(
        err.contains("not applicable to the Fabric backend") && err.contains("Nothing was checked"),
        "{err}"
    );

    let other = tempfile::tempdir().unwrap();
    let mismatched = other.path().join("fabric.toml");
    std::fs::write(&mismatched, fabric_config(other.path(), true)).unwrap();
    let (code, _, err) = assent(&["check-config", mismatched.to_str().unwrap()]);
    assert_eq!(code, 64);
    assert!(
        err.contains("ledger.fabric.key_file") && err.contains("does not match the certificate"),
        "{err}"
    );
    std::fs::remove_file(other.path().join("ca.pem")).unwrap();
    let (code, _, err) = assent(&["check-config", mismatched.to_str().unwrap()]);
    assert_eq!(code, 64);
    assert!(
        err.contains("ledger.fabric.tls_ca_file") && err.contains("does not exist"),
        "{err}"
    );

    // The embedded default says where its ledger is.
    let embedded = dir.path().join("embedded.toml");
    std::fs::write(&embedded, GOOD).unwrap();
    let (code, out, _) = assent(&["check-config", embedded.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("ledger: embedded"), "{out}");
}
