//! The version stamp `assent --version` prints: the commit of the source tree and the build's
//! date. Shared by `gateway/build.rs` and its test (`gateway/tests/cli.rs`). Runs `git` on the
//! local checkout only (no network); a tarball without `.git`, a machine without `git`, or a
//! tree that sits inside some other repository gives `unknown`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What is printed when the commit cannot be known.
pub const UNKNOWN: &str = "unknown";

fn git(workspace: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(workspace)
        .args(args)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().to_owned()).filter(|t| !t.is_empty())
}

/// Whether `workspace` is the top of its own git checkout (not a tarball unpacked inside some
/// other repository).
fn is_own_checkout(workspace: &Path) -> bool {
    let Some(top) = git(workspace, &["rev-parse", "--show-toplevel"]) else {
        return false;
    };
    match (Path::new(&top).canonicalize(), workspace.canonicalize()) {
        (Ok(top), Ok(workspace)) => top == workspace,
        _ => false,
    }
}

/// The abbreviated commit of the checkout at `workspace`, or [`UNKNOWN`]. `given` (the
/// `ASSENT_BUILD_COMMIT` variable, for builds from a tarball that know their commit) wins
/// when it is a hexadecimal commit id.
pub fn commit(workspace: &Path, given: Option<&str>) -> String {
    let is_commit =
        |c: &str| (7..=40).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(given) = given.map(str::trim).filter(|c| is_commit(c)) {
        return given.to_ascii_lowercase();
    }
    if !is_own_checkout(workspace) {
        return UNKNOWN.to_owned();
    }
    git(workspace, &["rev-parse", "--short=12", "HEAD"])
        .filter(|c| is_commit(c))
        .unwrap_or_else(|| UNKNOWN.to_owned())
}

/// The files whose change means another commit (HEAD, the branch it names, packed refs), for
/// `cargo:rerun-if-changed`; only files that exist (a missing one would rerun every build).
pub fn watched(workspace: &Path) -> Vec<PathBuf> {
    if !is_own_checkout(workspace) {
        return Vec::new();
    }
    let mut paths = Vec::new();
    let mut git_path = |name: &str| {
        if let Some(p) = git(workspace, &["rev-parse", "--git-path", name]) {
            let p = workspace.join(p);
            if p.is_file() {
                paths.push(p);
            }
        }
    };
    git_path("HEAD");
    git_path("packed-refs");
    if let Some(branch) = git(workspace, &["symbolic-ref", "-q", "HEAD"]) {
        git_path(&branch);
    }
    paths
}

/// `YYYY-MM-DD` (UTC) of `secs` seconds after the Unix epoch.
pub fn date(secs: u64) -> String {
    // Days to a civil date (proleptic Gregorian), after Howard Hinnant's published algorithm.
    let days = (secs / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The build's date: `SOURCE_DATE_EPOCH` when set to a number (reproducible builds), else
/// `now` (seconds since the epoch).
pub fn build_date(source_date_epoch: Option<&str>, now: u64) -> String {
    let secs = source_date_epoch
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(now);
    date(secs)
}
