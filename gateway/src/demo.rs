//! `assent demo`: the whole gateway in one process with no other services. Two DEMO sample
//! hospital sites (`st-mary`, R4, opt-out; `north-general`, STU3, opt-in) are served in process
//! over loopback HTTP from generated data, SQLite lives in a temporary directory, and the
//! gateway listens on 127.0.0.1:8080 (or `--listen`). It prints what to try.

pub mod sample_data;
pub mod sample_site;

use std::net::SocketAddr;

use assent_fhir::FhirVersion;
use serde_json::json;

use crate::app::{self, RunningGateway};
use crate::caller::api_key_sha256;
use crate::config::Config;
use sample_site::SampleSite;

/// The demo's clinician API key (printed in the instructions; demo only).
pub const DEMO_CLINICIAN_KEY: &str = "demo-clinician-key";
/// The demo's administrator API key (demo only).
pub const DEMO_ADMIN_KEY: &str = "demo-admin-key";
/// Sample patients per site.
pub const PATIENTS_PER_SITE: usize = 24;

/// A running demo: the sample sites, the gateway and the temporary directory they use.
pub struct Demo {
    pub gateway: RunningGateway,
    pub sites: Vec<(String, SampleSite)>,
    _dir: tempfile::TempDir,
}

/// Starts the demo with the gateway on `listen`.
pub fn start(listen: SocketAddr) -> Result<Demo, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let st_mary = SampleSite::start(
        FhirVersion::R4,
        sample_data::generate("stm", FhirVersion::R4, PATIENTS_PER_SITE, 1),
    )?;
    let north = SampleSite::start(
        FhirVersion::Stu3,
        sample_data::generate("ng", FhirVersion::Stu3, PATIENTS_PER_SITE, 2),
    )?;
    let config = Config::from_value(json!({
        "listen": listen.to_string(),
        "database_url": dir.path().join("assent-demo.db").display().to_string(),
        "gateway_id": "assent-demo",
        "log": {"format": "text", "level": "warn", "access_log": false},
        "auth": {"api_keys": [
            {"id": "demo-clinician", "sha256": api_key_sha256(DEMO_CLINICIAN_KEY),
             "actor": "Practitioner/stm-pr-0", "roles": ["clinician"]},
            {"id": "demo-admin", "sha256": api_key_sha256(DEMO_ADMIN_KEY), "roles": ["admin"]},
        ]},
        "sites": {
            "st-mary": {"upstream": st_mary.base_url(), "fhir_version": "R4", "default_policy": "opt-out", "timeout_ms": 5000},
            "north-general": {"upstream": north.base_url(), "fhir_version": "STU3", "default_policy": "opt-in", "timeout_ms": 5000},
        },
    }))?;
    crate::observability::init_tracing(&config.log);
    let gateway = app::spawn(config)?;
    Ok(Demo {
        gateway,
        sites: vec![("st-mary".into(), st_mary), ("north-general".into(), north)],
        _dir: dir,
    })
}

/// What the demo prints: how to try it.
pub fn instructions(base: &str) -> String {
    let auth = format!("-H 'Authorization: Bearer {DEMO_CLINICIAN_KEY}'");
    format!(
        r#"Assent demo is running at {base}

Two sample hospitals sit behind it (DEMO data, generated):
  st-mary        FHIR R4,   opt-out (permits unless a consent denies)
  north-general  FHIR STU3, opt-in  (denies unless a consent permits)

Try:
  # read a patient at St Mary
  curl -s {auth} {base}/fhir/st-mary/Patient/stm-p001

  # search with paging: follow the "next" link; it is signed for you and this site only
  curl -s {auth} '{base}/fhir/st-mary/Observation?patient=stm-p001&_count=2'

  # everything about one patient
  curl -s {auth} {base}/fhir/st-mary/Patient/stm-p002/\$everything

  # an unknown site: 404 with an OperationOutcome (code unknown-site)
  curl -s {auth} {base}/fhir/no-such-site/Patient/1

  # North General is opt-in and no consent is on file yet: 403 (code consent-denied)
  curl -s {auth} {base}/fhir/north-general/Patient/ng-p001

  # no credentials: 401
  curl -s {base}/fhir/st-mary/Patient/stm-p001

  # operations
  curl -s {base}/readyz
  curl -s {base}/metrics | grep assent_
  curl -s -H 'Authorization: Bearer {DEMO_ADMIN_KEY}' {base}/admin/sites

Press Ctrl-C to stop.
"#
    )
}

/// Runs the demo until Ctrl-C.
pub fn run(listen: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let demo = start(listen)?;
    println!("{}", instructions(&demo.gateway.base_url()));
    actix_web::rt::System::new().block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    println!("stopping");
    drop(demo);
    Ok(())
}
