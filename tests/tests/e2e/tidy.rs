//! Housekeeping checks run as ordinary tests, one file for the whole workspace: every Rust file
//! says what it owns, the crate graph keeps the boundaries ARCHITECTURE.md states, the pure
//! crates (consent, receipts, ledger) keep their purity, a `Permit` comes only from the consent
//! decision functions, routes are registered in one file, and the gateway's wings depend one way.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !["target", "node_modules", ".git"].contains(&name.as_str())
                && !name.starts_with('.')
            {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn all_rust_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&workspace_root(), &mut files);
    files
}

#[test]
fn every_rust_file_opens_with_a_module_comment() {
    let missing: Vec<_> = all_rust_files()
        .into_iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            !text.trim_start().starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! opening comment: {missing:?}"
    );
}

/// **Invariant:** whose data a resource or request is has one answer, `assent_fhir::compartment`:
/// no gateway code reads a Reference (`reference` of a JSON object) to find a patient itself.
/// The consent API reads the patient a Consent document is about (what it manages), which is
/// not a question about released data.
#[test]
fn whose_data_has_one_rule() {
    let allowed = ["api/consent.rs"];
    let forbidden = [
        ["get(\"", "reference\")"].concat(),
        ["/", "reference\""].concat(),
        ["\"", "subject\")"].concat(),
        ["\"", "beneficiary\""].concat(),
    ];
    let mut found = Vec::new();
    let mut files = Vec::new();
    let src = workspace_root().join("gateway/src");
    rust_files(&src, &mut files);
    for file in files {
        let name = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if allowed.contains(&name.as_str()) || file.components().any(|c| c.as_os_str() == "demo") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let library = text.split("#[cfg(test)]").next().unwrap_or_default();
        for pattern in &forbidden {
            if library.contains(pattern.as_str()) {
                found.push(format!("{}: {pattern}", file.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "reads references itself instead of asking assent_fhir::compartment: {found:?}"
    );
}

/// The token's patient claim is read only by THE rule that binds it to its patient
/// (`http/patient_context.rs`): everything else asks the bound context (a bare claim is a
/// site-local id that may be someone else at another site).
#[test]
fn a_launch_context_has_one_rule() {
    let allowed = ["http/patient_context.rs"];
    let forbidden = [
        ["verified", ".patient"].concat(),
        ["caller", ".patient"].concat(),
    ];
    let mut found = Vec::new();
    let mut files = Vec::new();
    let src = workspace_root().join("gateway/src");
    rust_files(&src, &mut files);
    for file in files {
        let name = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if allowed.contains(&name.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let library = text.split("#[cfg(test)]").next().unwrap_or_default();
        let compact: String = library.chars().filter(|c| !c.is_whitespace()).collect();
        for pattern in &forbidden {
            let reads = compact.match_indices(pattern.as_str()).any(|(at, _)| {
                compact[at + pattern.len()..]
                    .chars()
                    .next()
                    .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
            });
            if reads {
                found.push(format!("{}: {pattern}", file.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "reads the bare patient claim instead of asking http::patient_context: {found:?}"
    );
}

#[test]
fn no_mod_rs_files() {
    let found: Vec<_> = all_rust_files()
        .into_iter()
        .filter(|f| f.ends_with("mod.rs"))
        .collect();
    assert!(found.is_empty(), "use `name.rs` beside `name/`: {found:?}");
}

#[test]
fn routes_are_registered_only_in_routes_rs() {
    let root = workspace_root();
    let allowed = [
        root.join("gateway/src/routes.rs"),
        // Demo and test upstreams are servers of their own, not the gateway's routes.
        root.join("gateway/src/demo/sample_site.rs"),
        root.join("gateway/src/demo/identity_provider.rs"),
    ];
    let offenders: Vec<_> = all_rust_files()
        .into_iter()
        .filter(|f| f.starts_with(root.join("gateway/src")) && !allowed.contains(f))
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            [".route(", "web::resource(", "web::scope("]
                .iter()
                .any(|p| text.contains(p))
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "route registration outside routes.rs: {offenders:?}"
    );
}

/// (crate, workspace crates it may depend on, external crates it must not depend on)
const BOUNDARIES: &[(&str, &[&str], &[&str])] = &[
    (
        "assent-fhir",
        &[],
        &[
            "actix-web",
            "awc",
            "diesel",
            "redis",
            "tonic",
            "reqwest",
            "tokio",
        ],
    ),
    (
        "assent-consent",
        &["assent-fhir"],
        &[
            "actix-web",
            "awc",
            "diesel",
            "redis",
            "tonic",
            "reqwest",
            "tokio",
        ],
    ),
    (
        "assent-adapters",
        &["assent-fhir"],
        &[
            "actix-web",
            "awc",
            "diesel",
            "redis",
            "tonic",
            "reqwest",
            "tokio",
        ],
    ),
    (
        "assent-auth",
        &["assent-fhir"],
        &["actix-web", "awc", "diesel", "redis", "tonic"],
    ),
    (
        "assent-ledger",
        &["assent-fhir", "assent-consent"],
        &["actix-web", "awc", "diesel", "redis", "tonic", "reqwest"],
    ),
    (
        "assent-receipts",
        &["assent-fhir", "assent-consent"],
        &[
            "actix-web",
            "awc",
            "diesel",
            "redis",
            "tonic",
            "reqwest",
            "tokio",
        ],
    ),
    (
        "assent-fabric",
        &["assent-fhir", "assent-consent", "assent-ledger"],
        &["actix-web", "awc", "diesel", "redis", "reqwest"],
    ),
];

#[test]
fn the_crate_graph_keeps_the_documented_boundaries() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(workspace_root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let workspace: Vec<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let deps_of = |name: &str| -> Vec<(String, String)> {
        let package = packages
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} is a workspace member"));
        package["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["name"].as_str().unwrap().to_owned(),
                    d["kind"].as_str().unwrap_or("normal").to_owned(),
                )
            })
            .collect()
    };
    for (name, allowed_internal, forbidden) in BOUNDARIES {
        for (dep, kind) in deps_of(name) {
            if dep == *name && kind == "dev" {
                continue; // a crate's own tests enabling its test-support feature
            }
            if workspace.contains(&dep.as_str()) {
                assert!(
                    allowed_internal.contains(&dep.as_str()),
                    "{name} must not depend on {dep}"
                );
            }
            if kind != "dev" {
                assert!(
                    !forbidden.contains(&dep.as_str()),
                    "{name} must not depend on {dep}"
                );
            }
        }
    }
    // Only the gateway knows HTTP serving, SQL and Redis; nothing but tests and benches
    // depends on the gateway.
    for package in &workspace {
        let deps = deps_of(package);
        let normal = |d: &str| deps.iter().any(|(n, k)| n == d && k != "dev");
        if !["assent-gateway", "assent-e2e", "assent-benches"].contains(package) {
            for only_gateway in ["actix-web", "diesel", "redis"] {
                assert!(
                    !normal(only_gateway),
                    "{package} must not depend on {only_gateway}"
                );
            }
        }
        // Only the fabric crate speaks gRPC and Fabric's protocols.
        if *package != "assent-fabric" {
            for grpc in ["tonic", "prost", "tonic-prost"] {
                assert!(!normal(grpc), "{package} must not depend on {grpc}");
            }
        }
        if !["assent-e2e", "assent-benches"].contains(package) {
            assert!(
                !normal("assent-gateway"),
                "{package} must not depend on the gateway"
            );
        }
    }
}

/// The gateway crate's wings (folders of `gateway/src`) and what each may import (`crate::…`),
/// as ARCHITECTURE.md draws them: dependencies run one way, `api` never imports `proxy`, and
/// nothing below the facade (`app`, `routes`) or beside it (`cli`, `demo`) imports it.
/// `services` knows no HTTP: it answers errors of its own, which the error table maps.
const WINGS: &[(&str, &[&str])] = &[
    ("config", &["config"]),
    ("store", &["store", "config"]),
    ("services", &["services", "store", "config"]),
    ("http", &["http", "services", "store", "config"]),
    ("proxy", &["proxy", "http", "services", "store", "config"]),
    ("api", &["api", "http", "services", "store", "config"]),
];

/// The wing a gateway source file belongs to: its folder, or the file beside a folder.
fn wing_of(relative: &Path) -> String {
    let first = relative.components().next().unwrap();
    let first = first.as_os_str().to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// Every `crate::a::b` path a source names outside comments.
fn crate_paths(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let before = &rest[..at];
            rest = &rest[at + "crate::".len()..];
            if before.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue; // `assent_crate::` and the like
            }
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            found.push(path.trim_end_matches(':').to_owned());
        }
    }
    found
}

#[test]
fn gateway_wings_depend_one_way() {
    let src = workspace_root().join("gateway/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap().to_path_buf();
        let wing = wing_of(&relative);
        let Some((_, allowed)) = WINGS.iter().find(|(w, _)| *w == wing) else {
            continue; // the facade (app, routes), cli, demo, lib, main may use every wing
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for path in crate_paths(&text) {
            let ok = allowed
                .iter()
                .any(|a| path == *a || path.starts_with(&format!("{a}::")));
            if !ok {
                wrong.push(format!("{}: crate::{path}", relative.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the wing rules (ARCHITECTURE.md):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_gateway_source_is_in_a_wing() {
    let src = workspace_root().join("gateway/src");
    let top: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let known = [
        "api",
        "api.rs",
        "app.rs",
        "cli",
        "cli.rs",
        "config",
        "config.rs",
        "demo",
        "demo.rs",
        "http",
        "http.rs",
        "lib.rs",
        "main.rs",
        "proxy",
        "proxy.rs",
        "routes.rs",
        "services",
        "services.rs",
        "store",
        "store.rs",
    ];
    let stray: Vec<_> = top
        .iter()
        .filter(|n| !known.contains(&n.as_str()))
        .collect();
    assert!(stray.is_empty(), "gateway/src holds wings only: {stray:?}");
}

/// The sources of workspace crate `dir` under its `src`, `tests` and `benches` folders, with
/// their text.
fn crate_sources(dir: &str) -> Vec<(PathBuf, String)> {
    let root = workspace_root().join(dir);
    let mut files = Vec::new();
    for sub in ["src", "tests", "benches"] {
        if root.join(sub).exists() {
            rust_files(&root.join(sub), &mut files);
        }
    }
    assert!(!files.is_empty(), "{dir} has sources");
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

/// The library part of crate `dir`'s `src` files: each file's text before its first
/// `#[cfg(test)]`.
fn library_sources(dir: &str) -> Vec<(PathBuf, String)> {
    let src = workspace_root().join(dir).join("src");
    crate_sources(dir)
        .into_iter()
        .filter(|(path, _)| path.starts_with(&src))
        .map(|(path, text)| {
            let library = text.split("#[cfg(test)]").next().unwrap_or_default();
            (path, library.to_owned())
        })
        .collect()
}

/// The names in the `[dependencies]` table of crate `dir`'s manifest.
fn normal_dependency_names(dir: &str) -> Vec<String> {
    let manifest = std::fs::read_to_string(workspace_root().join(dir).join("Cargo.toml")).unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    deps.lines()
        .filter(|l| l.contains('=') && !l.trim_start().starts_with('#'))
        .map(|l| l.split('=').next().unwrap().trim().to_owned())
        .collect()
}

/// Fails when any library source of crate `dir` names one of `forbidden`.
fn assert_library_avoids(dir: &str, forbidden: &[String]) {
    for (path, library) in library_sources(dir) {
        for word in forbidden {
            assert!(
                !library.contains(word.as_str()),
                "{} uses `{word}`",
                path.display()
            );
        }
    }
}

/// Words that mean I/O, threads or a clock (spelled in pieces so this file does not hold them).
fn io_and_clock_words() -> Vec<String> {
    vec![
        ["std::", "fs"].concat(),
        ["std::", "net"].concat(),
        ["std::", "thread"].concat(),
        ["System", "Time"].concat(),
        ["Instant", "::now"].concat(),
        ["tok", "io"].concat(),
        ["async ", "fn"].concat(),
    ]
}

/// **Invariant:** every file of the crates with a checked boundary (consent, fabric, receipts,
/// ledger) opens with `//!` as its very first bytes, and none is a `mod.rs`.
#[test]
fn every_file_of_the_checked_crates_says_what_it_owns_and_no_mod_rs() {
    for dir in ["consent", "fabric", "receipts", "ledger"] {
        for (path, text) in crate_sources(dir) {
            assert!(
                text.starts_with("//!"),
                "{} must open with `//!`",
                path.display()
            );
            assert_ne!(path.file_name().unwrap(), "mod.rs", "{}", path.display());
        }
    }
}

/// **Invariant:** a `Permit` is made only by the decision functions of `assent-consent`:
/// `Permit::new` is private to the crate and called only where decisions are reached, and the
/// only public functions that hand out a `Permit` or a `Decision` are the decision functions.
#[test]
fn permits_come_only_from_the_decision_functions() {
    const DECISION_FUNCTIONS: &[&str] = &[
        "decide",
        "decide_unnamed",
        "decide_unknown_patient",
        "decide_all",
        "decide_site_default",
    ];
    const MAKERS: &[&str] = &["decision.rs", "decide.rs"];
    for (path, library) in library_sources("consent") {
        let file = path.file_name().unwrap().to_str().unwrap();
        if !MAKERS.contains(&file) {
            for made in ["Permit::new(", "Permit {"] {
                assert!(
                    !library.contains(made),
                    "{} makes a Permit (`{made}`) outside the decision functions",
                    path.display()
                );
            }
        }
        assert!(
            !library.contains("pub fn new(basis"),
            "{}: a public Permit constructor",
            path.display()
        );
        // Every public function's signature, up to its body.
        for (at, _) in library.match_indices("pub fn ") {
            let signature = &library[at..];
            let signature = &signature[..signature.find('{').unwrap_or(signature.len())];
            let name = signature["pub fn ".len()..]
                .split(['(', '<'])
                .next()
                .unwrap()
                .trim();
            let returns = signature.split("->").nth(1).unwrap_or_default();
            let hands_out = ["Permit", "Decision"].iter().any(|t| {
                returns
                    .split(|c: char| !c.is_alphanumeric())
                    .any(|w| w == *t)
            });
            if hands_out {
                assert!(
                    DECISION_FUNCTIONS.contains(&name),
                    "{}: `{name}` hands out a Permit or Decision but is not a decision function",
                    path.display()
                );
            }
        }
    }
    let decision =
        std::fs::read_to_string(workspace_root().join("consent/src/decision.rs")).unwrap();
    assert!(decision.contains("pub(crate) fn new(basis: Basis"));
}

/// **Invariant:** the consent logic does no I/O, spawns nothing and reads no clock; its
/// dependencies are on a pure list.
#[test]
fn consent_does_no_io_and_reads_no_clock() {
    assert_library_avoids("consent", &io_and_clock_words());
    let allowed = [
        "assent-fhir",
        "hex",
        "hmac",
        "serde",
        "serde_json",
        "sha2",
        "thiserror",
    ];
    for name in normal_dependency_names("consent") {
        assert!(
            allowed.contains(&name.as_str()),
            "assent-consent: dependency `{name}` is not on the pure list"
        );
    }
}

/// **Invariant:** receipts is pure: no I/O, no threads, no clock, no SQL, no HTTP; its
/// dependencies are on a pure list.
#[test]
fn receipts_do_no_io_and_read_no_clock() {
    let mut forbidden = io_and_clock_words();
    forbidden.extend([["die", "sel"].concat(), ["act", "ix"].concat()]);
    assert_library_avoids("receipts", &forbidden);
    let allowed = [
        "assent-consent",
        "assent-fhir",
        "base64",
        "hex",
        "serde",
        "serde_json",
        "sha2",
        "thiserror",
    ];
    for name in normal_dependency_names("receipts") {
        assert!(
            allowed.contains(&name.as_str()),
            "assent-receipts: dependency `{name}` is not on the pure list"
        );
    }
}

/// **Invariant:** the ledger crate knows no SQL, no HTTP and no gRPC (nothing in its manifest,
/// whatever the table, names them).
#[test]
fn the_ledger_has_no_sql_http_or_grpc_dependencies() {
    let manifest = std::fs::read_to_string(workspace_root().join("ledger/Cargo.toml")).unwrap();
    let forbidden = [
        "diesel", "sqlx", "rusqlite", "postgres", "actix", "hyper", "reqwest", "awc", "tonic",
        "prost", "redis",
    ];
    for line in manifest.lines().filter(|l| l.contains('=')) {
        let name = line.split('=').next().unwrap().trim();
        for word in forbidden {
            assert!(
                !name.contains(word),
                "dependency `{name}` crosses the ledger's boundary"
            );
        }
    }
}
