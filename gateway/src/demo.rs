//! `assent demo`: the whole gateway in one process with no other services. Three DEMO sample
//! hospital sites (`st-mary`, R4, opt-out; `north-general`, STU3, opt-in; `lakeside`, R5,
//! opt-out) are served in process over loopback HTTP from generated data; seven sample people
//! are held at two or three of them under different local ids, six linked by a shared national
//! identifier into network patients at start (one has a demographic near-match left for an
//! administrator); SQLite lives in a temporary directory, and the
//! gateway listens on 127.0.0.1:8080 (or `--listen`). A DEMO identity provider on loopback
//! mints tokens for sample callers; the gateway trusts it through ordinary OpenID discovery.
//! Its keys are generated into a key file in the temporary directory (mode 0600), never kept
//! in its database; its configuration is written there too (`assent-demo.toml`, what the
//! gateway runs), so that `assent verify --config` reads the demo's ledger. It prints what to
//! try, where its database and keys are, and a working `assent verify` command; it logs its
//! requests as text on stderr (the gateway's access log, without patient identifiers, and the
//! identity provider's requests).

pub mod identity_provider;
pub mod sample_data;
pub mod sample_site;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use assent_fhir::FhirVersion;
use serde_json::json;

use crate::app::{self, RunningGateway};
use crate::config::Config;
use identity_provider::DemoIdentityProvider;
use sample_site::SampleSite;

/// The demo caller the printed instructions use (a physician with `user/*.rs`, purpose TREAT).
pub const DEMO_CLINICIAN: &str = "dr-alice";
/// The demo's administrator: the subject `auth.issuers[0].admin_subjects` names (demo only).
pub const DEMO_ADMIN: &str = "dr-alice";
/// Sample patients per site.
pub const PATIENTS_PER_SITE: usize = 24;

/// How to run the demo (`assent demo` flags).
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the gateway listens.
    pub listen: SocketAddr,
    /// The identity provider's port on 127.0.0.1 (0: any free port).
    pub idp_port: u16,
    /// The log filter (`info`, `warn`, `assent_gateway=debug`, …).
    pub log_level: String,
    /// The `assent` program the printed `assent verify` command runs.
    pub program: String,
}

impl DemoOptions {
    /// The defaults of `assent demo`, listening on `listen`.
    pub fn new(listen: SocketAddr) -> DemoOptions {
        DemoOptions {
            listen,
            idp_port: 0,
            log_level: "info".to_owned(),
            program: "assent".to_owned(),
        }
    }
}

/// A running demo: the identity provider, the sample sites, the gateway and the temporary
/// directory they use.
pub struct Demo {
    pub gateway: RunningGateway,
    pub identity_provider: DemoIdentityProvider,
    pub sites: Vec<(String, SampleSite)>,
    /// The demo's key file, in its temporary directory.
    pub key_file: PathBuf,
    /// The demo's SQLite database (store and embedded ledger), in its temporary directory.
    pub database: PathBuf,
    /// The configuration the demo's gateway runs, written to its temporary directory.
    pub config_file: PathBuf,
    /// The network patients linked at start: (network id, `{site}/Patient/{id}` of each
    /// record), in the order of [`sample_data::NETWORK_PEOPLE`].
    pub network: Vec<NetworkPatient>,
    program: String,
    _dir: tempfile::TempDir,
}

impl Demo {
    /// What the demo prints: how to try it, where its database and keys are, and how to
    /// verify an export.
    pub fn instructions(&self) -> String {
        instructions(&Printed {
            base: &self.gateway.base_url(),
            token_url: &self.identity_provider.token_url(),
            key_file: &self.key_file,
            database: &self.database,
            config_file: &self.config_file,
            program: &self.program,
            network: &self.network,
        })
    }
}

/// Starts the demo.
pub fn start(options: &DemoOptions) -> Result<Demo, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let key_file = dir.path().join("keys.toml");
    crate::config::keys::write_key_file(&key_file, &crate::config::keys::generate())?;
    // Bound first: the identity provider mints tokens for the gateway's own address.
    let listener = std::net::TcpListener::bind(options.listen)?;
    let bound = listener.local_addr()?;
    let identity_provider =
        DemoIdentityProvider::start_on(options.idp_port, &format!("http://{bound}/fhir"))?;
    let trusted = identity_provider.issuer_config();
    let st_mary = SampleSite::start(
        FhirVersion::R4,
        sample_data::generate("stm", FhirVersion::R4, PATIENTS_PER_SITE, 1),
    )?;
    let north = SampleSite::start(
        FhirVersion::Stu3,
        sample_data::generate("ng", FhirVersion::Stu3, PATIENTS_PER_SITE, 2),
    )?;
    let lakeside = SampleSite::start(
        FhirVersion::R5,
        sample_data::generate("lk", FhirVersion::R5, PATIENTS_PER_SITE, 3),
    )?;
    // Each site knows its patients by its MRN and the shared national id; the national id
    // identifies a patient across the network.
    let identifier_systems = |tag: &str| {
        json!({
            "patient_identifier_systems": [sample_data::mrn_system(tag), sample_data::NATIONAL_ID_SYSTEM],
            "network_identifier_systems": [sample_data::NATIONAL_ID_SYSTEM],
        })
    };
    let site = |upstream: String, version: &str, policy: &str, tag: &str| {
        let mut site = json!({"upstream": upstream, "fhir_version": version, "default_policy": policy, "timeout_ms": 5000});
        if let (Some(site), Some(systems)) =
            (site.as_object_mut(), identifier_systems(tag).as_object())
        {
            site.extend(systems.clone());
        }
        site
    };
    let database = dir.path().join("assent-demo.db");
    let value = json!({
        "listen": bound.to_string(),
        "database_url": database.display().to_string(),
        "gateway_id": "assent-demo",
        "keys": {"file": key_file.display().to_string()},
        // Its requests, as text on stderr: the access log names no patient.
        "log": {"format": "text", "level": options.log_level, "access_log": true},
        "auth": {"issuers": [{
            "issuer": trusted.issuer,
            "audience": trusted.audience,
            "algorithms": trusted.algorithms.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
            "allow_purpose_header": trusted.allow_purpose_header,
            "admin_subjects": [DEMO_ADMIN],
        }]},
        // The compliance console, signed in at the demo identity provider (pick privacy-officer).
        "audit": {"console": {"client_id": "assent-demo-console"}},
        // The patient portal, signed in at the demo identity provider (pick jane-doe or john-roe).
        "portal": {"client_id": "assent-demo-portal"},
        "sites": {
            "st-mary": site(st_mary.base_url(), "R4", "opt-out", "stm"),
            "north-general": site(north.base_url(), "STU3", "opt-in", "ng"),
            "lakeside": site(lakeside.base_url(), "R5", "opt-out", "lk"),
        },
    });
    // The configuration is written out and loaded from the file (no environment): what the
    // demo runs is what `assent verify --config` reads.
    let config_file = dir.path().join("assent-demo.toml");
    // (Through figment's values: serde_json's exact numbers are not TOML numbers by themselves.)
    std::fs::write(
        &config_file,
        toml::to_string(&crate::config::figment_value(value))?,
    )?;
    let config = Config::load_with_env(&config_file, std::iter::empty())?;
    crate::http::observability::init_tracing(&config.log);
    let gateway = app::spawn_on(config, listener, 1)?;
    seed_consents(&gateway)?;
    let network = seed_links(&gateway)?;
    // The portal's sample patients: jane-doe is St Mary's first patient; john-roe the first
    // network patient (every record linked to it, at every site).
    let provider = identity_provider.provider();
    provider.bind_patient(
        "jane-doe",
        Some("st-mary"),
        &sample_data::patient_id("stm", 1),
    );
    if let Some((network_id, _)) = network.first() {
        provider.bind_network_patient("john-roe", network_id);
    }
    Ok(Demo {
        gateway,
        identity_provider,
        sites: vec![
            ("st-mary".into(), st_mary),
            ("north-general".into(), north),
            ("lakeside".into(), lakeside),
        ],
        network,
        key_file,
        database,
        config_file,
        program: options.program.clone(),
        _dir: dir,
    })
}

/// A network patient of the demo: its network id and `{site}/Patient/{id}` of each record.
pub type NetworkPatient = (String, Vec<String>);

/// The site id of each sample site tag.
fn site_of_tag(tag: &str) -> &'static str {
    match tag {
        "stm" => "st-mary",
        "ng" => "north-general",
        _ => "lakeside",
    }
}

/// Links the sample people's records that carry the national id into network patients, as
/// the gateway would learn them from the sites' Patients (`NetworkIndex::learn`), so the
/// instructions can name them. The near-match without the id stays unlinked.
fn seed_links(gateway: &RunningGateway) -> Result<Vec<NetworkPatient>, Box<dyn std::error::Error>> {
    let now = gateway.state.clock.now_millis();
    let mut linked = Vec::new();
    for person in sample_data::NETWORK_PEOPLE {
        let mut network_id = None;
        let mut records = Vec::new();
        for (tag, n, with_id) in person.records {
            let site = site_of_tag(tag);
            let id = sample_data::patient_id(tag, *n);
            if *with_id {
                let learned = gateway.state.network.learn(
                    site,
                    &id,
                    [(sample_data::NATIONAL_ID_SYSTEM, person.national_id)],
                    now,
                )?;
                network_id = learned.network_id;
                records.push(format!("{site}/Patient/{id}"));
            }
        }
        if let Some(network_id) = network_id {
            linked.push((network_id, records));
        }
    }
    Ok(linked)
}

/// The consent the demo revokes in its instructions.
pub const DEMO_REVOCABLE_CONSENT: &str = "ng-p001-alice";

/// DEMO consents, stored through the same consent service as the API's:
/// - north-general (opt-in): ng-p001 permits dr-alice only; ng-p002 permits any clinician for
///   treatment; ng-p003 has none (denied);
/// - st-mary (opt-out): stm-p003 refuses every disclosure; stm-p004 refuses its Conditions
///   (a sensitive category) and allows the rest.
fn seed_consents(gateway: &RunningGateway) -> Result<(), Box<dyn std::error::Error>> {
    let consents = gateway.state.consents.clone();
    let seeds = [
        (
            "north-general",
            "ng-p001",
            demo_consent(
                DEMO_REVOCABLE_CONSENT,
                "ng-p001",
                "deny",
                json!([{
                    "type": "permit",
                    "actor": [{"role": participation("PRCP"), "reference": {"reference": "Practitioner/dr-alice"}}],
                }]),
            ),
        ),
        (
            "north-general",
            "ng-p002",
            demo_consent(
                "ng-p002-treatment",
                "ng-p002",
                "deny",
                json!([{
                    "type": "permit",
                    "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}],
                }]),
            ),
        ),
        (
            "st-mary",
            "stm-p003",
            demo_consent("stm-p003-optout", "stm-p003", "deny", json!([])),
        ),
        (
            "st-mary",
            "stm-p004",
            demo_consent(
                "stm-p004-no-conditions",
                "stm-p004",
                "permit",
                json!([{
                    "type": "deny",
                    "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Condition"}],
                }]),
            ),
        ),
    ];
    // On a thread of its own: the caller may be inside an async runtime.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            for (site, patient, document) in seeds {
                consents
                    .put(site, document, Some(FhirVersion::R4), patient, None)
                    .await
                    .map_err(|e| format!("seeding {patient}: {e}"))?;
            }
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        })
    })
    .join()
    .map_err(|_| "the consent seeding thread failed")?
    .map_err(|e| e.to_string())?;
    Ok(())
}

fn participation(code: &str) -> serde_json::Value {
    json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": code}]})
}

/// An R4 privacy consent of `patient`: `root` by default, with `provisions` nested below.
fn demo_consent(
    id: &str,
    patient: &str,
    root: &str,
    provisions: serde_json::Value,
) -> serde_json::Value {
    let mut provision = json!({"type": root});
    if provisions.as_array().is_some_and(|p| !p.is_empty()) {
        provision["provision"] = provisions;
    }
    json!({
        "resourceType": "Consent", "id": id, "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{patient}")},
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
        "provision": provision,
    })
}

/// What the instructions name: the gateway's base URL, the identity provider's token URL, the
/// demo's files and the `assent` program to verify with.
pub struct Printed<'a> {
    pub base: &'a str,
    pub token_url: &'a str,
    pub key_file: &'a Path,
    pub database: &'a Path,
    pub config_file: &'a Path,
    pub program: &'a str,
    /// The network patients: (network id, their records).
    pub network: &'a [NetworkPatient],
}

/// What the demo prints: how to try it, where its database and keys are, and how to verify an
/// export offline.
pub fn instructions(printed: &Printed<'_>) -> String {
    let Printed {
        base, token_url, ..
    } = printed;
    let network_patients: String = printed
        .network
        .iter()
        .map(|(id, records)| format!("  {id}  {}\n", records.join(", ")))
        .collect();
    let first_network = printed
        .network
        .first()
        .map(|(id, _)| id.as_str())
        .unwrap_or_default();
    let national_id = sample_data::NATIONAL_ID_SYSTEM;
    let first_national = sample_data::NETWORK_PEOPLE[0].national_id;
    let near = sample_data::NETWORK_PEOPLE
        .iter()
        .find(|p| p.records.iter().any(|(_, _, with_id)| !with_id))
        .unwrap_or(&sample_data::NETWORK_PEOPLE[0]);
    let (near_family, near_given, near_gender, near_birth, near_national) = (
        near.family,
        near.given,
        near.gender,
        near.birth_date,
        near.national_id,
    );
    let key_file = printed.key_file.display();
    let database = printed.database.display();
    let config_file = shell_quote(&printed.config_file.display().to_string());
    let program = shell_quote(printed.program);
    let auth = "-H \"Authorization: Bearer $TOKEN\"";
    let take_token = "sed -E 's/.*\"access_token\":\"([^\"]+)\".*/\\1/'";
    format!(
        r#"Assent demo is running at {base}

Three sample hospitals sit behind it (DEMO data, generated):
  st-mary        FHIR R4,   opt-out (permits unless a consent denies)
  north-general  FHIR STU3, opt-in  (denies unless a consent permits)
  lakeside       FHIR R5,   opt-out

Network patients: the same person at two or three hospitals under different local ids,
linked by a shared national id ({national_id}):
{network_patients}
Every FHIR request needs a bearer token. A DEMO identity provider (it authenticates nobody)
mints them for sample callers: dr-alice, dr-bob, nurse-carol, researcher-dan, privacy-officer,
billing-service.

Get a token (dr-alice: user/*.rs, purpose TREAT):
  TOKEN=$(curl -s -d grant_type=client_credentials -d client_id={DEMO_CLINICIAN} {token_url} | {take_token})

Try:
  # read a patient at St Mary
  curl -s {auth} {base}/fhir/st-mary/Patient/stm-p001

  # search with paging: follow the "next" link; it is signed for you and this site only
  curl -s {auth} '{base}/fhir/st-mary/Observation?patient=stm-p001&_count=2'

  # everything about one patient
  curl -s {auth} {base}/fhir/st-mary/Patient/stm-p002/\$everything

  # an unknown site: 404 with an OperationOutcome (code unknown-site)
  curl -s {auth} {base}/fhir/no-such-site/Patient/1

  # consent, held on the embedded ledger. North General is opt-in: ng-p001 consented to
  # dr-alice (permitted; X-Assent-Consent names the consent and version), ng-p003 to no one
  curl -si {auth} {base}/fhir/north-general/Patient/ng-p001 | grep -i '^x-assent-consent'
  curl -s {auth} {base}/fhir/north-general/Patient/ng-p003

  # St Mary is opt-out: stm-p003 refused every disclosure; stm-p004 refused its Conditions:
  # a Condition search is denied, and $everything leaves them out (an OperationOutcome entry
  # says results were withheld, not which)
  curl -s {auth} {base}/fhir/st-mary/Patient/stm-p003
  curl -s {auth} '{base}/fhir/st-mary/Condition?patient=stm-p004'
  curl -s {auth} {base}/fhir/st-mary/Patient/stm-p004/\$everything

  # why: the decision explained, without reading anything
  curl -s {auth} -H 'Content-Type: application/json' -d '{{"site":"north-general","patient":"ng-p001","actor":"Practitioner/dr-alice"}}' {base}/consent/\$check

  # revoke ng-p001's consent (dr-alice is the demo's administrator): the next read is denied
  curl -s -X POST {auth} {base}/consent/Consent/{DEMO_REVOCABLE_CONSENT}/\$revoke
  curl -s {auth} {base}/fhir/north-general/Patient/ng-p001

  # break-glass: dr-bob, an emergency physician (purpose ETREAT and the assent/break-glass
  # grant), reads ng-p003, who consented to no one: refused without a justification
  # (break-glass-justification-required), permitted with one and marked as break-glass
  BTOKEN=$(curl -s -d grant_type=client_credentials -d client_id=dr-bob {token_url} | {take_token})
  curl -s -H "Authorization: Bearer $BTOKEN" {base}/fhir/north-general/Patient/ng-p003
  curl -si -H "Authorization: Bearer $BTOKEN" -H 'X-Assent-Break-Glass-Reason: unconscious in ER' {base}/fhir/north-general/Patient/ng-p003 | grep -i '^x-assent'

  # no token: 401 with WWW-Authenticate
  curl -si {base}/fhir/st-mary/Patient/stm-p001

  # a patient-confined token, launched at St Mary's (aud: its FHIR base): another patient's
  # record is 403 (scope-patient-mismatch); at another site it is 403 (patient-context-unbound)
  PTOKEN=$(curl -s -d grant_type=client_credentials -d client_id=dr-alice -d 'scope=patient/*.rs' -d patient=stm-p001 -d aud={base}/fhir/st-mary {token_url} | {take_token})
  curl -s -H "Authorization: Bearer $PTOKEN" {base}/fhir/st-mary/Patient/stm-p002
  curl -s -H "Authorization: Bearer $PTOKEN" {base}/fhir/north-general/Patient/stm-p001

  # one network: find a patient at every hospital by national id, then everything on them
  # from every hospital that holds them (each site decides on its own consent and default;
  # answers translated into one version, each entry marked with its site)
  curl -s {auth} '{base}/fhir/Patient?identifier={national_id}|{first_national}'
  curl -s {auth} {base}/fhir/Patient/{first_network}

  # a demographic match across hospitals (FHIR $match, IHE PDQm grades): Greta Yarrow's
  # record at lakeside has no national id; it comes back probable, and the administrator
  # (dr-alice in the demo) confirms the candidate it leaves
  curl -s {auth} -H 'Content-Type: application/fhir+json' -d '{{"resourceType":"Parameters","parameter":[{{"name":"resource","resource":{{"resourceType":"Patient","name":[{{"family":"{near_family}","given":["{near_given}"]}}],"gender":"{near_gender}","birthDate":"{near_birth}","identifier":[{{"system":"{national_id}","value":"{near_national}"}}]}}}}]}}' {base}/fhir/Patient/\$match
  curl -s {auth} {base}/admin/network/candidates
  curl -s -X POST {auth} {base}/admin/network/candidates/CANDIDATE-ID/\$confirm
  curl -s {auth} -H 'Accept: application/fhir+json; fhirVersion=4.0' {base}/fhir/Patient/{first_network}/\$everything

  # a consent naming the network patient applies at every site that holds them
  curl -s {auth} -H 'Content-Type: application/fhir+json' -d '{{"resourceType":"Consent","status":"active","scope":{{"coding":[{{"system":"http://terminology.hl7.org/CodeSystem/consentscope","code":"patient-privacy"}}]}},"category":[{{"coding":[{{"system":"http://loinc.org","code":"59284-0"}}]}}],"patient":{{"reference":"Patient/{first_network}"}},"provision":{{"type":"deny"}}}}' '{base}/consent/Consent?site=network'
  curl -s {auth} {base}/fhir/Patient/{first_network}/\$everything

  # SMART discovery and the CapabilityStatement's security section
  curl -s {base}/.well-known/smart-configuration
  curl -s {auth} {base}/fhir/st-mary/metadata

  # the audit log (privacy-officer holds user/AuditEvent.rs): AuditEvents, a patient's
  # accounting of disclosures, an export that `assent verify` checks offline
  ATOKEN=$(curl -s -d grant_type=client_credentials -d client_id=privacy-officer {token_url} | {take_token})
  curl -s -H "Authorization: Bearer $ATOKEN" '{base}/audit/AuditEvent?_count=5'
  curl -s -H "Authorization: Bearer $ATOKEN" '{base}/audit/patient/stm-p001/disclosures?site=st-mary&_format=text'
  curl -s -H "Authorization: Bearer $ATOKEN" '{base}/audit/export?format=ndjson' > receipts.ndjson
  # verify it offline: every receipt's hash, chain link, inclusion proof and ledger anchor
  {program} verify --config {config_file} receipts.ndjson

  # the compliance console in a browser: sign in as privacy-officer
  {base}/console/

  # the patient portal in a browser: sign in as jane-doe (St Mary's stm-p001) or john-roe
  # (the first network patient above); grant, revoke, see who saw your records
  {base}/portal/

  # operations (dr-alice is also the demo's administrator)
  curl -s {base}/readyz
  curl -s {base}/metrics | grep assent_
  curl -s {auth} {base}/admin/sites

Database: {database} (SQLite: the store and the embedded ledger)
Configuration: {config_file} (what this gateway runs; `verify --config` reads its ledger)
Keys: generated for this demo in {key_file} (mode 0600), apart from its database.
All three go with the temporary directory when the demo stops (docs/keys.md).
Requests are logged as text on stderr (no patient identifiers); `--log-level warn` quietens it.

Press Ctrl-C to stop.
"#
    )
}

/// A path or program name as one shell word (single-quoted when it needs it).
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:=@".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Runs the demo until Ctrl-C.
pub fn run(options: &DemoOptions) -> Result<(), Box<dyn std::error::Error>> {
    let demo = start(options)?;
    println!("{}", demo.instructions());
    actix_web::rt::System::new().block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    println!("stopping");
    drop(demo);
    Ok(())
}
