//! Housekeeping checks run as ordinary tests: every Rust file says what it owns, the crate
//! graph keeps the boundaries ARCHITECTURE.md states, and routes are registered in one file.

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
    // The consent API reads the patient a Consent document is about (`Consent.patient`).
    let allowed = [Path::new("api/consent.rs")];
    let forbidden = [
        ["get(\"", "reference\")"].concat(),
        ["/", "reference\""].concat(),
        ["\"", "subject\")"].concat(),
        ["\"", "beneficiary\""].concat(),
    ];
    let mut found = Vec::new();
    let mut files = Vec::new();
    rust_files(&workspace_root().join("gateway/src"), &mut files);
    for file in files {
        if allowed.iter().any(|a| file.ends_with(a))
            || file.components().any(|c| c.as_os_str() == "demo")
        {
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
/// `services` may use the error table (`http::error`) and nothing else of `http`.
const WINGS: &[(&str, &[&str])] = &[
    ("config", &["config"]),
    ("store", &["store", "config"]),
    ("services", &["services", "store", "config", "http::error"]),
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
