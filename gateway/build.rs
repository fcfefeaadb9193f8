//! Stamps the binary with the commit it was built from and the build's date, for
//! `assent --version` (`ASSENT_BUILD_COMMIT`, `ASSENT_BUILD_DATE`). No network: `git` on the
//! local checkout, `unknown` without one (see `build/stamp.rs`).

#[path = "build/stamp.rs"]
mod stamp;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let workspace = manifest.parent().unwrap_or(&manifest).to_path_buf();
    let given = std::env::var("ASSENT_BUILD_COMMIT").ok();
    let commit = stamp::commit(&workspace, given.as_deref());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let epoch = std::env::var("SOURCE_DATE_EPOCH").ok();
    let date = stamp::build_date(epoch.as_deref(), now);
    println!("cargo:rustc-env=ASSENT_BUILD_COMMIT={commit}");
    println!("cargo:rustc-env=ASSENT_BUILD_DATE={date}");
    println!("cargo:rerun-if-env-changed=ASSENT_BUILD_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build/stamp.rs");
    for path in stamp::watched(&workspace) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
