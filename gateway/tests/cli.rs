//! The `assent` binary's command line: `--version` (commit and build date), `check-config`
//! exiting 0 on a valid file and 64 with the bad key named otherwise (Fabric files, site
//! adapters and keys included) and saying what it could not check, `examples/local.toml`
//! running against the demo's identity provider, `ledger verify` on the embedded ledger and (not applicable) on Fabric,
//! `translate` (the adapter dry run), `serve` reloading site adapters on SIGHUP, refusing to
//! start without its keys or with keys left in its database, `keys generate` and `keys export
//! --from-database`, and `serve`'s text log keeping a hostile token claim on one line, without
//! colour codes when it is not a terminal.

use std::process::Command;

fn assent(args: &[&str]) -> (i32, String, String) {
    assent_with_env(args, &[])
}

/// Every key a gateway needs, as environment variables (the child's, not this process's).
const KEYS_ENV: [(&str, &str); 3] = [
    (
        "ASSENT_CONSORTIUM_KEY_HEX",
        "0404040404040404040404040404040404040404040404040404040404040404",
    ),
    (
        "ASSENT_NODE_KEY_HEX",
        "0303030303030303030303030303030303030303030303030303030303030303",
    ),
    (
        "ASSENT_PAGING_SECRET_HEX",
        "0505050505050505050505050505050505050505050505050505050505050505",
    ),
];

fn assent_with_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_assent"));
    for (name, _) in KEYS_ENV {
        command.env_remove(name);
    }
    let output = command
        .args(args)
        .envs(env.iter().copied())
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

#[allow(dead_code)]
#[path = "../build/stamp.rs"]
mod stamp;

/// `assent --version` names the release, the commit of this checkout and the build's date.
#[test]
fn version_prints_the_commit_and_the_build_date() {
    let (code, out, _) = assent(&["--version"]);
    assert_eq!(code, 0);
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let head = Command::new("git")
        .arg("-C")
        .arg(workspace)
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8(o.stdout).unwrap().trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let out = out.trim();
    let prefix = format!(
        "assent {} (commit {head}, built ",
        env!("CARGO_PKG_VERSION")
    );
    assert!(out.starts_with(&prefix), "{out} (expected {prefix}…)");
    let date = out.strip_prefix(&prefix).unwrap().trim_end_matches(')');
    assert_eq!(date.len(), 10, "{out}");
    assert!(date.starts_with("20") && date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-');
}

/// The stamp without a git checkout (a tarball) says `unknown`; a given commit wins; dates are
/// civil UTC dates, `SOURCE_DATE_EPOCH` first.
#[test]
fn the_version_stamp_says_unknown_without_git_and_formats_dates() {
    let tarball = tempfile::tempdir().unwrap();
    assert_eq!(stamp::commit(tarball.path(), None), "unknown");
    assert!(stamp::watched(tarball.path()).is_empty());
    // A tree unpacked inside another repository is not that repository's commit.
    let outer = tempfile::tempdir().unwrap();
    let init = Command::new("git")
        .args(["init", "-q"])
        .arg(outer.path())
        .status();
    if init.is_ok_and(|s| s.success()) {
        let inner = outer.path().join("assent-0.1.0");
        std::fs::create_dir(&inner).unwrap();
        assert_eq!(stamp::commit(&inner, None), "unknown");
    }
    assert_eq!(
        stamp::commit(tarball.path(), Some("7583A1A0abc")),
        "7583a1a0abc"
    );
    assert_eq!(
        stamp::commit(tarball.path(), Some("not a commit")),
        "unknown"
    );
    assert_eq!(stamp::date(0), "1970-01-01");
    assert_eq!(stamp::date(951_782_400), "2000-02-29");
    assert_eq!(stamp::date(1_798_761_599), "2026-12-31");
    assert_eq!(stamp::build_date(Some("86400"), 0), "1970-01-02");
    assert_eq!(stamp::build_date(Some("soon"), 0), "1970-01-01");
}

#[test]
fn check_config_accepts_a_valid_file_and_names_the_bad_key_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, GOOD).unwrap();
    let (code, out, err) = assent_with_env(&["check-config", good.to_str().unwrap()], &KEYS_ENV);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("valid (1 site)"), "{out}");
    assert!(
        out.contains("consortium_key_hex from $ASSENT_CONSORTIUM_KEY_HEX"),
        "{out}"
    );
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

/// `assent demo --log-level` takes a log filter; anything else is a usage error (64) naming it,
/// before anything starts.
#[test]
fn the_demo_refuses_a_log_level_that_is_not_a_filter() {
    let (code, _, err) = assent(&["demo", "--log-level", "loud[", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("--log-level \"loud[\" is not a log filter"),
        "{err}"
    );
    let (code, out, _) = assent(&["demo", "--help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("--idp-port") && out.contains("--log-level"),
        "{out}"
    );
}

#[test]
fn unknown_subcommands_are_usage_errors() {
    let (code, _, _) = assent(&["frobnicate"]);
    assert_eq!(code, 64);
}

#[test]
fn the_example_configuration_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/assent.toml");
    let (code, out, err) = assent_with_env(&["check-config", example], &KEYS_ENV);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("valid (2 sites)"), "{out}");
    assert!(
        out.contains("site st-mary: adapter") && out.contains("st-mary.adapter.toml"),
        "the example's site adapter is loaded and checked: {out}"
    );
    assert!(
        !err.contains("warning"),
        "the example trusts an issuer: {err}"
    );
    // What it could not check is said, not implied valid.
    assert!(
        out.contains("not checked (needs the network; `serve` checks it at start")
            && out.contains(
                "issuer https://login.st-mary.example/realms/clinical: OpenID discovery and its JWKS"
            )
            && out.contains("site st-mary: upstream https://fhir.st-mary.example/r4")
            && out.contains("token URL https://auth.st-mary.example/token"),
        "{out}"
    );
}

/// `examples/local.toml`, as the README runs it: keys generated beside it, the demo's
/// identity provider on the port the file names (here a free one), `check-config` valid,
/// `serve` starts and accepts the provider's tokens.
#[test]
fn the_local_example_runs_against_the_demo_identity_provider() {
    use assent_gateway::demo::identity_provider::DemoIdentityProvider;

    let idp = DemoIdentityProvider::start_on(0, "http://127.0.0.1:8080/fhir").unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let addr = free();
    let upstream = free();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/local.toml"
    ))
    .unwrap();
    for needle in ["127.0.0.1:8081", "127.0.0.1:8090", "127.0.0.1:8082"] {
        assert!(example.contains(needle), "{needle}");
    }
    let dir = tempfile::tempdir().unwrap();
    let text = example
        .replace("127.0.0.1:8081", &idp.addr.to_string())
        .replace("127.0.0.1:8090", &addr.to_string())
        .replace("127.0.0.1:8082", &upstream.to_string())
        .replace(
            "\"assent-local.db\"",
            &format!("\"{}\"", dir.path().join("local.db").display()),
        );
    let config = dir.path().join("local.toml");
    std::fs::write(&config, text).unwrap();
    let keys = dir.path().join("local-keys.toml");
    let (code, _, err) = assent(&["keys", "generate", "--out", keys.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = assent(&["check-config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("valid (1 site)") && out.contains("not checked"),
        "{out}"
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_assent"))
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--workers",
            "1",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("assent serve starts");
    let lines = lines_of(child.stderr.take().unwrap());
    wait_for(&lines, "assent gateway listening");
    let token = idp.provider().mint("dr-alice", None, None, None).unwrap();
    // The token is accepted; the site is not running, so the answer is the gateway's 502.
    assert_eq!(http_get(addr, "/fhir/local/Patient/p1", &token), 502);
    assert_eq!(http_get(addr, "/fhir/local/Patient/p1", "not-a-token"), 401);
    // dr-alice is this file's administrator.
    assert_eq!(http_get(addr, "/admin/sites", &token), 200);
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
}

#[test]
fn ledger_verify_passes_an_untouched_chain_and_names_a_tampered_block() {
    use assent_gateway::services::consent::ConsentService;
    use assent_gateway::store::Store;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assent.db");
    let seed = [3u8; 32];
    let config = dir.path().join("assent.toml");
    std::fs::write(&config, format!("database_url = \"{}\"\n", db.display())).unwrap();
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
    let verify = ["ledger", "verify", "--config", config.to_str().unwrap()];
    // Without the node key nothing can be checked: a usage error naming it.
    let (code, _, err) = assent(&verify);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("`node_key_hex`"), "{err}");
    let (code, out, err) = assent_with_env(&verify, &KEYS_ENV);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ledger verified: 3 blocks"), "{out}");

    assent_gateway::services::ledger::tamper_body_for_tests(&store, 1).unwrap();
    let (code, _, err) = assent_with_env(&verify, &KEYS_ENV);
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
        "{GOOD}\n[ledger]\nbackend = \"fabric\"\n[ledger.fabric]\n\
         peer_endpoint = \"https://peer0.org1.example.com:7051\"\ntls_ca_file = \"{d}/ca.pem\"\n\
         msp_id = \"Org1MSP\"\ncert_file = \"{d}/cert.pem\"\nkey_file = \"{d}/key.pem\"\n\
         channel = \"assent\"\nchaincode = \"assent-consent\"\n",
        d = dir.display()
    )
}

#[test]
fn check_config_reads_the_fabric_files_and_ledger_verify_does_not_apply_to_fabric() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fabric.toml");
    std::fs::write(&config, fabric_config(dir.path(), false)).unwrap();
    // Fabric needs no node key: its identity is [ledger.fabric].
    let fabric_keys = [KEYS_ENV[0], KEYS_ENV[2]];
    let (code, out, err) =
        assent_with_env(&["check-config", config.to_str().unwrap()], &fabric_keys);
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
    let (code, out, _) = assent_with_env(&["check-config", embedded.to_str().unwrap()], &KEYS_ENV);
    assert_eq!(code, 0);
    assert!(out.contains("ledger: embedded"), "{out}");
}

/// A configuration with one R4 site whose adapter is `adapter.toml` beside it, with a
/// ConceptMap, and its keys in `keys.toml` beside it; returns the directory and the
/// configuration's path.
fn site_with_adapter(adapter: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("assent.toml");
    let keys = dir.path().join("keys.toml");
    let (code, _, err) = assent(&["keys", "generate", "--out", keys.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndatabase_url = \"{}\"\n[keys]\nfile = \"keys.toml\"\n[log]\nformat = \"text\"\nlevel = \"info\"\n\n[sites.st-mary]\nupstream = \"http://127.0.0.1:9/fhir\"\nfhir_version = \"R4\"\ndefault_policy = \"opt-out\"\nadapter = \"adapter.toml\"\n",
            dir.path().join("gw.db").display()
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("maps")).unwrap();
    std::fs::write(
        dir.path().join("maps/lab.json"),
        serde_json::json!({"resourceType": "ConceptMap", "url": "urn:test:lab", "group": [{
            "source": "urn:test:local-lab", "target": "http://loinc.org",
            "element": [{"code": "GLU", "target": [{"code": "2345-7", "equivalence": "equivalent"}]}]}]})
        .to_string(),
    )
    .unwrap();
    std::fs::write(dir.path().join("adapter.toml"), adapter).unwrap();
    (dir, config)
}

const ADAPTER: &str = "[[identifier_systems]]\nsite = \"urn:oid:1.2.3\"\nnetwork = \"https://net.test/mrn\"\n\n[[concept_maps]]\nfile = \"maps/lab.json\"\n";

#[test]
fn check_config_names_the_adapter_file_line_and_key() {
    let (_dir, config) = site_with_adapter(ADAPTER);
    let (code, out, err) = assent(&["check-config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("1 identifier systems, 1 ConceptMaps with 1 mapped codes"),
        "{out}"
    );

    let (_dir, config) = site_with_adapter(&ADAPTER.replace("maps/lab.json", "maps/none.json"));
    let (code, _, err) = assent(&["check-config", config.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("sites.st-mary.adapter:")
            && err.contains("adapter.toml:6: key `concept_maps[0].file`"),
        "{err}"
    );
    let (_dir, config) = site_with_adapter(&ADAPTER.replace("network =", "netwrok ="));
    let (code, _, err) = assent(&["check-config", config.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("adapter.toml:3: key `identifier_systems[0].netwrok`"),
        "{err}"
    );
}

#[test]
fn translate_prints_the_output_and_the_issues() {
    let (dir, config) = site_with_adapter(ADAPTER);
    let input = dir.path().join("obs.json");
    std::fs::write(
        &input,
        serde_json::json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "urn:test:local-lab", "code": "GLU"}, {"system": "urn:test:local-lab", "code": "XYZ"}]},
            "subject": {"identifier": {"system": "urn:oid:1.2.3", "value": "42"}}})
        .to_string()
        // A number as the file spells it (serde_json's parser would write 1.50e+2).
        .replace(
            r#""status":"final""#,
            r#""status":"final","valueQuantity":{"value":1.50E2,"unit":"mg"}"#,
        ),
    )
    .unwrap();
    let args = |extra: &[&'static str]| {
        let mut a = vec![
            "translate",
            "-c",
            config.to_str().unwrap(),
            "--site",
            "st-mary",
        ];
        a.extend_from_slice(extra);
        a.push(input.to_str().unwrap());
        a.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| assent(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let (code, out, err) = run(args(&["--to", "R5"]));
    assert_eq!(code, 0, "{err}");
    let output: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(out.contains(r#""value": 1.50E2"#), "{out}");
    assert_eq!(output["code"]["coding"][0]["code"], "2345-7");
    assert_eq!(output["code"]["coding"][1]["code"], "XYZ");
    assert_eq!(
        output["subject"]["identifier"]["system"],
        "https://net.test/mrn"
    );
    assert!(
        err.contains("warning code-invalid Observation.code.coding[1]"),
        "{err}"
    );
    assert!(err.contains("R4 -> R5 (to-network"), "{err}");
    // --strict fails on the warning.
    let (code, _, _) = run(args(&["--strict"]));
    assert_eq!(code, 1);
    // An unknown site is a usage error.
    let (code, _, err) = assent(&[
        "translate",
        "-c",
        config.to_str().unwrap(),
        "--site",
        "nowhere",
        input.to_str().unwrap(),
    ]);
    assert_eq!(code, 64, "{err}");
    // A type the target version does not have (R4 Media is gone in R5) is an error.
    std::fs::write(
        &input,
        r#"{"resourceType": "Media", "status": "completed"}"#,
    )
    .unwrap();
    let (code, _, err) = run(args(&["--to", "R5"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Media"), "{err}");
}

/// Reads the child's stderr lines into a channel.
fn lines_of(stderr: std::process::ChildStderr) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (up to 30 s) for a line containing `needle`; returns it.
fn wait_for(lines: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => panic!("no line with `{needle}` from assent serve"),
        }
    }
}

/// Sends `signal` to the child this test started, by its id.
fn signal(child: &std::process::Child, signal: &str) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[test]
fn serve_reloads_adapters_on_sighup_and_keeps_the_old_one_when_broken() {
    let (dir, config) = site_with_adapter(ADAPTER);
    let mut child = Command::new(env!("CARGO_BIN_EXE_assent"))
        .args(["serve", "-c", config.to_str().unwrap(), "--workers", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("assent serve starts");
    let lines = lines_of(child.stderr.take().unwrap());
    wait_for(&lines, "assent gateway listening");

    std::fs::write(
        dir.path().join("adapter.toml"),
        format!("{ADAPTER}\n[[drops]]\npath = \"Patient.nickname\"\n"),
    )
    .unwrap();
    signal(&child, "HUP");
    let failed = wait_for(&lines, "reload failed");
    assert!(
        failed.contains("drops[0].path") && failed.contains("adapter.toml:9"),
        "{failed}"
    );

    std::fs::write(
        dir.path().join("adapter.toml"),
        format!("{ADAPTER}\n[[drops]]\npath = \"Patient.photo\"\n"),
    )
    .unwrap();
    signal(&child, "HUP");
    let reloaded = wait_for(&lines, "site adapter reloaded");
    assert!(reloaded.contains("st-mary"), "{reloaded}");

    signal(&child, "TERM");
    let status = child.wait().expect("assent serve stops");
    assert!(status.success(), "{status:?}");
}

#[test]
fn serve_refuses_to_start_with_a_broken_adapter() {
    let (_dir, config) = site_with_adapter(&ADAPTER.replace("urn:oid:1.2.3", "not a uri"));
    let (code, _, err) = assent(&["serve", "-c", config.to_str().unwrap()]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("identifier_systems[0].site"), "{err}");
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

/// A configuration with no site and no issuer on a fresh SQLite file in `dir`, plus `extra`.
fn bare_config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let config = dir.join("assent.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndatabase_url = \"{}\"\n[log]\nformat = \"text\"\nlevel = \"info\"\n{extra}",
            dir.join("gw.db").display()
        ),
    )
    .unwrap();
    config
}

#[test]
fn serve_and_check_config_refuse_to_start_without_keys_naming_each() {
    let dir = tempfile::tempdir().unwrap();
    let config = bare_config(dir.path(), "[audit.console]\nclient_id = \"c\"\n");
    let path = config.to_str().unwrap();
    for args in [vec!["serve", "-c", path], vec!["check-config", path]] {
        let (code, _, err) = assent(&args);
        assert_eq!(code, 64, "{args:?}: {err}");
        for needle in [
            "missing keys",
            "`consortium_key_hex`",
            "$ASSENT_CONSORTIUM_KEY_HEX",
            "`node_key_hex`",
            "`paging_secret_hex`",
            "`console_session_secret_hex`",
            "$ASSENT_CONSOLE_SESSION_SECRET_HEX",
            "assent keys generate",
        ] {
            assert!(err.contains(needle), "{args:?} should name {needle}: {err}");
        }
    }
    // One missing key is named alone.
    let (code, _, err) = assent_with_env(&["check-config", path], &KEYS_ENV);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("`console_session_secret_hex`") && !err.contains("`paging_secret_hex`"),
        "{err}"
    );
}

#[test]
fn keys_generate_writes_a_private_key_file_that_a_gateway_reads_and_others_may_not() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.toml");
    let keys_arg = keys.to_str().unwrap();
    let (code, out, err) = assent(&["keys", "generate", "--out", keys_arg]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("mode 0600"), "{out}");
    let mode = std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&keys).unwrap();
    for name in [
        "consortium_key_hex",
        "node_key_hex",
        "paging_secret_hex",
        "console_session_secret_hex",
    ] {
        assert!(text.contains(&format!("\n{name} = \"")), "{name}: {text}");
    }
    // Never replaces a file (a consortium key lost is every pseudonym lost).
    let (code, _, _) = assent(&["keys", "generate", "--out", keys_arg]);
    assert_ne!(code, 0);
    assert_eq!(std::fs::read_to_string(&keys).unwrap(), text);

    let config = bare_config(dir.path(), "[keys]\nfile = \"keys.toml\"\n");
    let (code, out, err) = assent(&["check-config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("consortium_key_hex from {}", keys.display())),
        "{out}"
    );
    // The environment wins over the file.
    let (code, out, _) = assent_with_env(&["check-config", config.to_str().unwrap()], &KEYS_ENV);
    assert_eq!(code, 0);
    assert!(
        out.contains("paging_secret_hex from $ASSENT_PAGING_SECRET_HEX"),
        "{out}"
    );
    // Readable by the group: refused, and serve does not start.
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o640)).unwrap();
    for command in ["check-config", "serve"] {
        let args = if command == "serve" {
            vec!["serve", "-c", config.to_str().unwrap()]
        } else {
            vec!["check-config", config.to_str().unwrap()]
        };
        let (code, _, err) = assent(&args);
        assert_eq!(code, 64, "{command}: {err}");
        assert!(
            err.contains("keys.file") && err.contains("mode 0640") && err.contains("chmod 600"),
            "{command}: {err}"
        );
        assert!(
            !err.contains(&text[text.len() - 40..]),
            "a key was printed: {err}"
        );
    }
}

#[test]
fn keys_an_older_version_kept_in_the_database_are_refused_then_exported() {
    use assent_gateway::services::consent::ConsentService;
    use assent_gateway::store::Store;

    let dir = tempfile::tempdir().unwrap();
    // What an older version left: consents under its keys, and the keys in node_settings.
    let store = Store::open(dir.path().join("gw.db").to_str().unwrap()).unwrap();
    let (consortium, seed) = ([4u8; 32], [3u8; 32]);
    {
        let service = ConsentService::open_embedded(store.clone(), &consortium, seed).unwrap();
        let consent = serde_json::json!({
            "resourceType": "Consent", "id": "c1", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": "Patient/p1"},
            "provision": {"type": "permit"}
        });
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(service.put("st-mary", consent, None, "p1", None))
            .unwrap();
    }
    store
        .put_setting("consortium_key", &"04".repeat(32))
        .unwrap();
    store.put_setting("node_key", &"03".repeat(32)).unwrap();

    // Not used silently, even with keys supplied: the operator is told how to move them.
    let config = bare_config(dir.path(), "");
    let path = config.to_str().unwrap();
    let (code, _, err) = assent_with_env(&["serve", "-c", path], &KEYS_ENV);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("consortium_key, node_key")
            && err.contains("assent keys export --from-database"),
        "{err}"
    );

    let keys = dir.path().join("keys.toml");
    let (code, out, err) = assent(&[
        "keys",
        "export",
        "--from-database",
        "-c",
        path,
        "--out",
        keys.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("consortium_key_hex from the database")
            && out.contains("node_key_hex from the database")
            && out.contains("deleted from the database's node_settings: consortium_key, node_key")
            && out.contains("[keys] file"),
        "{out}"
    );
    assert_eq!(store.setting("consortium_key").unwrap(), None);
    assert_eq!(store.setting("node_key").unwrap(), None);

    // With the key file named, the old ledger verifies under the moved node key, and the
    // gateway starts.
    let config = bare_config(dir.path(), "[keys]\nfile = \"keys.toml\"\n");
    let path = config.to_str().unwrap();
    let (code, out, err) = assent(&["ledger", "verify", "-c", path]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ledger verified: 1 blocks"), "{out}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_assent"))
        .args(["serve", "-c", path, "--workers", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("assent serve starts");
    let lines = lines_of(child.stderr.take().unwrap());
    let loaded = wait_for(&lines, "keys loaded");
    assert!(loaded.contains("consortium_key_hex from"), "{loaded}");
    wait_for(&lines, "assent gateway listening");
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "{status:?}: {:#?}",
        lines.iter().collect::<Vec<_>>()
    );

    // Another consortium key than the one the store was written with is refused.
    let other = [(
        "ASSENT_CONSORTIUM_KEY_HEX",
        "0909090909090909090909090909090909090909090909090909090909090909",
    )];
    let (code, _, err) = assent_with_env(&["serve", "-c", path], &other);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("not the one this database's pseudonyms were made with")
            && err.contains("$ASSENT_CONSORTIUM_KEY_HEX"),
        "{err}"
    );
}

#[test]
fn a_newline_in_a_token_claim_does_not_forge_a_line_in_the_text_log() {
    use assent_gateway::demo::identity_provider::DemoIdentityProvider;

    let idp = DemoIdentityProvider::start("https://assent.test/fhir").unwrap();
    let forged_line =
        "2030-01-01T00:00:00.000000Z  INFO assent_gateway::routes: admin granted caller=root";
    let claims = serde_json::json!({"sub": format!("mallory\n{forged_line}")});
    let token = idp
        .provider()
        .mint_with_claims("dr-alice", claims.as_object().unwrap())
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = assent(&[
        "keys",
        "generate",
        "--out",
        dir.path().join("keys.toml").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let config = dir.path().join("assent.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{addr}\"\ndatabase_url = \"{}\"\n[keys]\nfile = \"keys.toml\"\n[log]\nformat = \"text\"\nlevel = \"info\"\n[[auth.issuers]]\nissuer = \"{}\"\naudience = [\"https://assent.test/fhir\"]\nalgorithms = [\"ES256\"]\n",
            dir.path().join("gw.db").display(),
            idp.issuer()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_assent"))
        .args(["serve", "-c", config.to_str().unwrap(), "--workers", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("assent serve starts");
    let lines = lines_of(child.stderr.take().unwrap());
    wait_for(&lines, "assent gateway listening");

    // The caller is not an admin: the refusal logs its caller id, `sub` included.
    let status = http_get(addr, "/admin/sites", &token);
    assert_eq!(status, 403);
    let refused = wait_for(&lines, "admin endpoint refused");
    assert!(
        refused.contains("caller=mallory\\n2030-01-01T00:00:00.000000Z  INFO"),
        "the claim is in the line, escaped: {refused}"
    );
    signal(&child, "TERM");
    assert!(child.wait().unwrap().success());
    let rest: Vec<String> = lines.iter().collect();
    assert!(
        !rest.iter().any(|l| l.starts_with("2030-01-01")),
        "a forged line: {rest:#?}"
    );
    // Written to a pipe (as to a file), the text log carries no colour codes.
    assert!(
        !refused.contains('\u{1b}') && !rest.iter().any(|l| l.contains('\u{1b}')),
        "colour codes in a log that is not a terminal: {refused:?}"
    );
}

/// One GET on a fresh connection with a bearer token; the status.
fn http_get(addr: std::net::SocketAddr, path: &str, token: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
