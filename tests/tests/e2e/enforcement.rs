//! The adversarial suite of issue 11: no data without a covering decision, whatever form the
//! request takes. Table-driven by class; every attempt runs against sites on the realistic
//! upstream (a real FHIR server that honours what it is asked) and on the HOSTILE upstream
//! (which lies), each as an opt-out and an opt-in site. `denied`'s consent refuses the
//! caller (`dr-alice`) on opt-out sites and `denied` has no consent on opt-in sites;
//! `allowed` permits her everywhere; `other` has no consent.
//!
//! For every attempt it asserts the SECURE behaviour:
//! (a) nothing of `denied` is released (the answer's body and headers hold none of its
//!     markers: its reference, record number, name, the id of any resource that is its data);
//! (b) no count or existence signal about `denied`: no `Bundle.total` that counts more than
//!     is released, no "withheld" notice, and the same status and body shape as the same
//!     question whose matches do not exist (a request that names `denied` may be refused with
//!     `consent-denied`: that is the documented policy);
//! (c) no upstream host, port or base URL in the body or headers;
//! (d) the receipt names every patient whose data was released.
//! Each test collects every finding of its class and fails listing them all, so one run
//! shows every leak. Many fail on the gateway as it was when they were written: each failure
//! is the evidence of a leak, and the test states what the gateway must do instead.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use assent_e2e::dataset::*;
use assent_e2e::hostile::{INTERNAL_ENDPOINT, INTERNAL_HOST};
use assent_e2e::*;
use serde_json::{Value, json};

use crate::consent::{consent, put_consent};

/// The realistic upstream and the data set, one for the module.
fn realistic() -> &'static (RealisticUpstream, DataSet) {
    static UPSTREAM: OnceLock<(RealisticUpstream, DataSet)> = OnceLock::new();
    UPSTREAM.get_or_init(|| {
        let data = data_set();
        (RealisticUpstream::start(&data.resources), data)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    OptOut,
    OptIn,
}

/// A site of the test gateway.
#[derive(Debug, Clone)]
struct Site {
    id: String,
    policy: Policy,
    /// `127.0.0.1:PORT` and base URL of its upstream (never to be seen by the client).
    upstream_base: String,
    hostile: bool,
}

impl Site {
    /// Whether every one of `owners` permits the caller here.
    fn permits_all(&self, owners: &BTreeSet<String>) -> bool {
        owners.iter().all(|o| match self.policy {
            Policy::OptOut => o != DENIED,
            Policy::OptIn => o == ALLOWED,
        })
    }
}

/// The read swaps and smuggled resources of the hostile upstream.
const SWAPS: [(&str, &str); 3] = [
    ("Patient/allowed", "Patient/denied"),
    ("Observation/al-obs-hba1c-1", "Observation/dn-obs-hba1c-1"),
    ("Observation/al-obs-hba1c-2", "Condition/dn-cond-secret"),
];

fn smuggled() -> Vec<String> {
    [
        "Condition/dn-cond-secret",
        "Observation/dn-obs-secret",
        "Patient/denied",
    ]
    .map(String::from)
    .to_vec()
}

/// A gateway with opt-out and opt-in sites on the realistic upstream and on hostile upstreams
/// (one lying in every way, and one per lie when `per_lie`), consents stored.
struct Suite {
    gw: StartedGateway,
    sites: Vec<Site>,
    /// The hostile site pairs of one lie each (with `per_lie`).
    lie_sites: Vec<(Lie, Site, Site)>,
    _hostile: Vec<HostileUpstream>,
}

impl Suite {
    async fn start(per_lie: bool) -> Suite {
        let (real, data) = realistic();
        let mut hostile = vec![HostileUpstream::start(
            &data.resources,
            Lies::all(&SWAPS, &smuggled()),
        )];
        let mut builder = TestGateway::new();
        let mut sites = Vec::new();
        let add = |builder: TestGateway, id: String, base: String, policy: Policy, lying: bool| {
            let name = match policy {
                Policy::OptOut => "opt-out",
                Policy::OptIn => "opt-in",
            };
            let site = Site {
                id: id.clone(),
                policy,
                upstream_base: base.clone(),
                hostile: lying,
            };
            (
                builder.site_with(
                    &id,
                    json!({"upstream": base, "fhir_version": "R4", "default_policy": name,
                        // Identifier-only references and contained Patients of this system
                        // are placed by a lookup at the site.
                        "patient_identifier_systems": [MRN_SYSTEM]}),
                ),
                site,
            )
        };
        for (id, base, policy, lying) in [
            ("real-out", real.base_url(), Policy::OptOut, false),
            ("real-in", real.base_url(), Policy::OptIn, false),
            ("lie-out", hostile[0].base_url(), Policy::OptOut, true),
            ("lie-in", hostile[0].base_url(), Policy::OptIn, true),
        ] {
            let (b, site) = add(builder, id.to_owned(), base, policy, lying);
            builder = b;
            sites.push(site);
        }
        let mut lie_sites = Vec::new();
        if per_lie {
            for (n, lie) in Lie::ALL.iter().enumerate() {
                let upstream = HostileUpstream::start(
                    &data.resources,
                    Lies {
                        enabled: vec![*lie],
                        swaps: SWAPS
                            .iter()
                            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                            .collect(),
                        smuggled: smuggled(),
                    },
                );
                let (b, out) = add(
                    builder,
                    format!("lie{n}-out"),
                    upstream.base_url(),
                    Policy::OptOut,
                    true,
                );
                let (b, inn) = add(
                    b,
                    format!("lie{n}-in"),
                    upstream.base_url(),
                    Policy::OptIn,
                    true,
                );
                builder = b;
                lie_sites.push((*lie, out, inn));
                hostile.push(upstream);
            }
        }
        let gw = builder.start();
        let every: Vec<&Site> = sites
            .iter()
            .chain(lie_sites.iter().flat_map(|(_, a, b)| [a, b]))
            .collect();
        for site in every {
            let body = match site.policy {
                Policy::OptOut => consent(&format!("c-den-{}", site.id), DENIED, "dr-alice", false),
                Policy::OptIn => consent(&format!("c-all-{}", site.id), ALLOWED, "dr-alice", true),
            };
            let stored = put_consent(&gw, &site.id, &body).await;
            assert_eq!(stored.status, 201, "{}", stored.text());
        }
        Suite {
            gw,
            sites,
            lie_sites,
            _hostile: hostile,
        }
    }

    fn data(&self) -> &'static DataSet {
        &realistic().1
    }
}

/// One request of an attempt (the path is under `/fhir/{site}/`).
#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

fn get(path: impl Into<String>) -> Req {
    Req {
        method: "GET",
        path: path.into(),
        headers: Vec::new(),
        body: None,
    }
}

fn post_search(resource_type: &str, form: &str) -> Req {
    Req {
        method: "POST",
        path: format!("{resource_type}/_search"),
        headers: vec![(
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        )],
        body: Some(form.replace('|', "%7C").into_bytes()),
    }
}

impl Req {
    fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// What an attempt may answer about `denied`.
#[derive(Debug, Clone)]
enum Expect {
    /// Exactly like `twin` (the same question whose matches do not exist).
    LikeTwin(Req),
    /// It names `denied`: refused with `consent-denied`, or exactly like `twin`.
    NamedOrLikeTwin(Req),
    /// Only (a), (c), (d) and the static count checks.
    NoLeak,
    /// Released, with this `Type/id` in it (where every owner permits).
    Released(String),
    /// Refused with this status (and nothing released).
    Status(u16),
    /// A count-only answer: `Bundle.total` is what the caller may see (opt-out, opt-in), or
    /// the form is refused (4xx).
    Count(u64, u64),
}

#[derive(Debug, Clone)]
struct Attempt {
    label: String,
    req: Req,
    expect: Expect,
}

fn attempt(label: impl Into<String>, req: Req, expect: Expect) -> Attempt {
    Attempt {
        label: label.into(),
        req,
        expect,
    }
}

/// Every finding of one test.
#[derive(Default)]
struct Findings {
    list: Vec<String>,
    attempts: usize,
}

impl Findings {
    fn add(&mut self, site: &Site, label: &str, what: String) {
        self.list.push(format!("[{}] {label}: {what}", site.id));
    }

    /// Fails listing the findings (the first 80; with `ASSENT_FINDINGS_OUT=DIR`, all of them
    /// are also written to `DIR/{class}.txt`).
    fn assert_none(self, class: &str) {
        if let Some(dir) = std::env::var_os("ASSENT_FINDINGS_OUT") {
            let name: String = class
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(
                std::path::Path::new(&dir).join(format!("{name}.txt")),
                self.list.join("\n"),
            );
        }
        const SHOWN: usize = 80;
        let more = self.list.len().saturating_sub(SHOWN);
        assert!(
            self.list.is_empty(),
            "{class}: {} finding(s) over {} attempts:\n{}{}",
            self.list.len(),
            self.attempts,
            self.list
                .iter()
                .take(SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n"),
            if more > 0 {
                format!("\n… and {more} more")
            } else {
                String::new()
            }
        );
        assert!(self.attempts > 0);
    }
}

async fn send_to(gw: &StartedGateway, site: &Site, req: &Req) -> Got {
    let headers: Vec<(&str, &str)> = req
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    send(
        req.method,
        // `|` is sent percent-encoded (as clients do; the server decodes it alike).
        &gw.url(&format!("/fhir/{}/{}", site.id, req.path))
            .replace('|', "%7C"),
        Some(clinician_token()),
        &headers,
        req.body.clone(),
    )
    .await
}

/// Every resource in an answer: the answer, Bundle entries, nested Bundles, `Parameters`
/// resources and contained resources.
fn resources_in(value: &Value, out: &mut Vec<Value>) {
    match value {
        Value::Object(map) => {
            if map.contains_key("resourceType") {
                out.push(value.clone());
            }
            for v in map.values() {
                resources_in(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| resources_in(v, out)),
        _ => {}
    }
}

/// The body's shape, without ids, times and links: what a caller could compare.
fn shape(got: &Got) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(&got.body) else {
        return format!("{} (not JSON, {} bytes)", got.status, got.body.len());
    };
    let entries: Vec<String> = v["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{}:{}",
                e["search"]["mode"].as_str().unwrap_or("-"),
                e["resource"]["resourceType"].as_str().unwrap_or("-")
            )
        })
        .collect();
    let issues: Vec<String> = v["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            format!(
                "{}/{}",
                i["code"].as_str().unwrap_or("-"),
                i["details"]["coding"][0]["code"].as_str().unwrap_or("-")
            )
        })
        .collect();
    format!(
        "{} {} type={} total={} entries={entries:?} issues={issues:?}",
        got.status,
        v["resourceType"].as_str().unwrap_or("-"),
        v["type"].as_str().unwrap_or("-"),
        v["total"],
    )
}

fn is_consent_denied(req: &Req, got: &Got) -> bool {
    got.status == 403
        && (req.method == "HEAD" && got.body.is_empty()
            || serde_json::from_slice::<Value>(&got.body)
                .map(|v| v["issue"][0]["details"]["coding"][0]["code"] == "consent-denied")
                .unwrap_or(false))
}

/// Runs one attempt on one site and records what it finds.
async fn run(suite: &Suite, site: &Site, a: &Attempt, f: &mut Findings) -> Got {
    let data = suite.data();
    f.attempts += 1;
    let got = send_to(&suite.gw, site, &a.req).await;
    let text = got.text();
    let headers: String = got
        .headers
        .iter()
        .map(|(n, v)| format!("{n}: {v}\n"))
        .collect();

    // (a) nothing of `denied`: no released resource that is its data, and none of its
    // markers in the body or headers. Left out of the marker search: a Bundle's own links
    // (they echo the caller's query, which may name what the caller already knows; not left
    // out of (c)), and references to its resources by id from resources that are not its
    // data (a Composition of `allowed` listing an Observation of `denied` is `allowed`'s).
    let mut released_text = match serde_json::from_slice::<Value>(&got.body) {
        Ok(mut body) if body["resourceType"] == "Bundle" => {
            if let Some(map) = body.as_object_mut() {
                map.remove("link");
            }
            body.to_string()
        }
        _ => text.clone(),
    };
    let denied_data = data.of(DENIED);
    for reference in &denied_data {
        if !reference.starts_with("Patient/") {
            released_text = released_text.replace(
                &format!("\"reference\":\"{reference}\""),
                "\"reference\":\"-\"",
            );
        }
    }
    let mut leaked = false;
    if got.status < 300
        && let Ok(body) = serde_json::from_slice::<Value>(&got.body)
    {
        let mut all = Vec::new();
        resources_in(&body, &mut all);
        for r in all {
            let key = format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap_or_default(),
                r["id"].as_str().unwrap_or_default()
            );
            if denied_data.contains(&key) {
                f.add(
                    site,
                    &a.label,
                    format!("(a) released {key}, which is denied's"),
                );
                leaked = true;
                break;
            }
        }
    }
    let location: String = got
        .headers
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("content-location"))
        .map(|(n, v)| format!("{n}: {v}\n"))
        .collect();
    for marker in data.denied_markers() {
        if leaked {
            break;
        }
        if released_text.contains(&marker) || location.contains(&marker) {
            f.add(
                site,
                &a.label,
                format!("(a) released {marker:?} (status {})", got.status),
            );
            break;
        }
    }
    // (c) no upstream address.
    let hostport = site
        .upstream_base
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    for leak in [
        hostport.as_str(),
        INTERNAL_HOST,
        INTERNAL_ENDPOINT,
        "db01.internal",
    ] {
        if text.contains(leak) || headers.contains(leak) {
            f.add(
                site,
                &a.label,
                format!("(c) upstream address {leak:?} in the answer"),
            );
            break;
        }
    }
    // (b) static: a released total counts exactly what is released (a single page), and no
    // notice says something was withheld.
    if let Ok(body) = serde_json::from_slice::<Value>(&got.body) {
        if body["resourceType"] == "Bundle" && body["type"] == "searchset" {
            let matches = body["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["search"]["mode"].as_str().unwrap_or("match") == "match")
                .count();
            let paged = body["link"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|l| l["relation"] == "next" || l["relation"] == "previous");
            let count_only =
                a.req.path.contains("_summary=count") || a.req.path.contains("_count=0");
            if let Some(total) = body["total"].as_u64()
                && !paged
                && !count_only
                && total as usize != matches
            {
                f.add(
                    site,
                    &a.label,
                    format!("(b) Bundle.total {total} but {matches} entries released"),
                );
            }
            for e in body["entry"].as_array().into_iter().flatten() {
                let r = &e["resource"];
                if r["resourceType"] == "OperationOutcome" {
                    let t = r.to_string().to_lowercase();
                    if [
                        "withheld", "withhold", "consent", "removed", "filtered", "denied",
                    ]
                    .iter()
                    .any(|w| t.contains(w))
                    {
                        f.add(
                            site,
                            &a.label,
                            format!("(b) a notice about withheld data: {r}"),
                        );
                    }
                }
            }
        }
        // (d) the receipt names every owner of what was released.
        let mut released = Vec::new();
        if got.status < 300 {
            resources_in(&body, &mut released);
        }
        let owners: BTreeSet<String> = released
            .iter()
            .filter_map(|r| {
                let key = format!("{}/{}", r["resourceType"].as_str()?, r["id"].as_str()?);
                data.owners.get(&key).cloned()
            })
            .flatten()
            .collect();
        if !owners.is_empty() {
            match got.header("x-assent-receipt") {
                None => f.add(site, &a.label, "(d) data released without a receipt".into()),
                Some(id) => {
                    let named: BTreeSet<String> = suite
                        .gw
                        .gateway
                        .state
                        .store
                        .receipt_patients(id)
                        .unwrap()
                        .into_iter()
                        .map(|row| row.patient)
                        .collect();
                    let missing: Vec<String> = owners
                        .iter()
                        .map(|o| format!("{}/Patient/{o}", site.id))
                        .filter(|p| !named.contains(p))
                        .collect();
                    if !missing.is_empty() {
                        f.add(
                            site,
                            &a.label,
                            format!("(d) the receipt does not name {missing:?}"),
                        );
                    }
                }
            }
        }
    }
    // What the attempt may answer.
    match &a.expect {
        Expect::LikeTwin(twin) | Expect::NamedOrLikeTwin(twin) => {
            let named = matches!(a.expect, Expect::NamedOrLikeTwin(_));
            if !(named && is_consent_denied(&a.req, &got)) {
                let other = send_to(&suite.gw, site, twin).await;
                if shape(&got) != shape(&other) {
                    f.add(site, &a.label, format!("(b) answers unlike the same question without matches:\n    this: {}\n    twin: {}", shape(&got), shape(&other)));
                }
            }
        }
        Expect::Released(reference) => {
            let owners = data.owners.get(reference).cloned().unwrap_or_default();
            if site.permits_all(&owners) {
                let id = reference.split('/').nth(1).unwrap_or_default();
                if got.status != 200 || !text.contains(&format!("\"{id}\"")) {
                    f.add(
                        site,
                        &a.label,
                        format!("a permitted {reference} was not released ({})", shape(&got)),
                    );
                }
            }
        }
        Expect::Status(status) => {
            if got.status != *status {
                f.add(
                    site,
                    &a.label,
                    format!(
                        "status {} where {status} was expected ({})",
                        got.status,
                        shape(&got)
                    ),
                );
            }
        }
        Expect::Count(opt_out, opt_in) => {
            let visible = match site.policy {
                Policy::OptOut => *opt_out,
                Policy::OptIn => *opt_in,
            };
            let total = serde_json::from_slice::<Value>(&got.body)
                .ok()
                .and_then(|b| b["total"].as_u64());
            // The hostile upstream ignores the code: only the realistic one's count is known.
            if !site.hostile && got.status < 400 && total != Some(visible) {
                f.add(
                    site,
                    &a.label,
                    format!("a count of {total:?} where the caller may see {visible}"),
                );
            }
        }
        Expect::NoLeak => {}
    }
    got
}

async fn run_all(suite: &Suite, sites: &[&Site], attempts: &[Attempt], f: &mut Findings) {
    for site in sites {
        for a in attempts {
            run(suite, site, a, f).await;
        }
    }
}

fn all_sites(suite: &Suite) -> Vec<&Site> {
    suite.sites.iter().collect()
}

// ---------------------------------------------------------------------------------------------
// Class 2: whose data is this resource.

#[actix_web::test]
async fn class2_every_compartment_element_and_reference_form_is_denied_s_data() {
    let suite = Suite::start(false).await;
    let data = suite.data();
    let mut attempts = Vec::new();
    for reach in data.elements.iter().chain(&data.forms) {
        let (t, id) = reach.reference.split_once('/').unwrap();
        if reach.patient == DENIED {
            attempts.push(attempt(
                format!("read {} (through {})", reach.reference, reach.through),
                get(reach.reference.clone()),
                Expect::NamedOrLikeTwin(get(format!("{t}/no-such-{id}"))),
            ));
            attempts.push(attempt(
                format!("search {t}?_id={id} (through {})", reach.through),
                get(format!("{t}?_id={id}")),
                Expect::LikeTwin(get(format!("{t}?_id=no-such-{id}"))),
            ));
        } else {
            // The same element reaching `allowed` is released where it permits (so that a
            // gateway that denies everything does not pass); identifier-only references and
            // contained Patients are placed by the MRN lookup.
            attempts.push(attempt(
                format!("read {} (through {})", reach.reference, reach.through),
                get(reach.reference.clone()),
                Expect::Released(reach.reference.clone()),
            ));
        }
    }
    let mut f = Findings::default();
    run_all(&suite, &all_sites(&suite), &attempts, &mut f).await;
    f.assert_none("class 2 (whose data)");
}

// ---------------------------------------------------------------------------------------------
// Class 3: response shaping and count signals.

#[actix_web::test]
async fn class3_shaping_totals_and_searches_by_code_chain_and_lists_signal_nothing() {
    let suite = Suite::start(false).await;
    let no_lab = "http://loinc.org|0000-0";
    let mut attempts = Vec::new();
    for shaping in [
        "_elements=code",
        "_summary=true",
        "_summary=text",
        "_summary=data",
        "_summary=count",
        "_count=0",
    ] {
        attempts.push(attempt(
            format!("Observation by a code only denied has, {shaping}"),
            get(format!("Observation?code={SECRET_LAB}&{shaping}")),
            Expect::LikeTwin(get(format!("Observation?code={no_lab}&{shaping}"))),
        ));
        attempts.push(attempt(
            format!("read of denied's Observation, {shaping}"),
            get(format!("Observation/dn-obs-secret?{shaping}")),
            Expect::NamedOrLikeTwin(get(format!("Observation/no-such-obs?{shaping}"))),
        ));
    }
    let absent2 = "http://snomed.info/sct|12345678";
    attempts.extend([
        attempt("Condition by a diagnosis only denied has", get(format!("Condition?code={SECRET_CONDITION}")), Expect::LikeTwin(get(format!("Condition?code={ABSENT_CONDITION}")))),
        attempt("the same as a comma list", get(format!("Condition?code={SECRET_CONDITION},{ABSENT_CONDITION}")), Expect::LikeTwin(get(format!("Condition?code={ABSENT_CONDITION},{absent2}")))),
        attempt("an _id list with one of denied's", get("Observation?_id=dn-obs-secret,al-obs-hba1c-1"), Expect::LikeTwin(get("Observation?_id=no-such,al-obs-hba1c-1"))),
        attempt("reverse chain: patients with the diagnosis", get(format!("Patient?_has:Condition:subject:code={SECRET_CONDITION}")), Expect::LikeTwin(get(format!("Patient?_has:Condition:subject:code={ABSENT_CONDITION}")))),
        attempt("chain on the patient's name", get(format!("Condition?code={SECRET_CONDITION}&patient.family={DENIED_FAMILY}")), Expect::NamedOrLikeTwin(get(format!("Condition?code={SECRET_CONDITION}&patient.family=Nobodyhere")))),
        attempt("chain subject:Patient.name", get(format!("Condition?subject:Patient.name={DENIED_FAMILY}")), Expect::NamedOrLikeTwin(get("Condition?subject:Patient.name=Nobodyhere"))),
        attempt("chain patient.identifier", get(format!("Condition?patient.identifier={MRN_SYSTEM}|{DENIED_MRN}")), Expect::NamedOrLikeTwin(get(format!("Condition?patient.identifier={MRN_SYSTEM}|MRN-0000-NO")))),
        attempt("chain patient._id", get(format!("Condition?code={SECRET_CONDITION}&patient._id={DENIED}")), Expect::NamedOrLikeTwin(get(format!("Condition?code={SECRET_CONDITION}&patient._id=nobody")))),
        attempt("patients by record number", get(format!("Patient?identifier={MRN_SYSTEM}|{DENIED_MRN}")), Expect::NamedOrLikeTwin(get(format!("Patient?identifier={MRN_SYSTEM}|MRN-0000-NO")))),
        attempt("patients by name", get(format!("Patient?family={DENIED_FAMILY}")), Expect::LikeTwin(get("Patient?family=Nobodyhere"))),
        attempt("a diagnosis everyone has", get(format!("Condition?code={SHARED_CONDITION}")), Expect::NoLeak),
        attempt("_include of the subject", get(format!("Condition?code={SHARED_CONDITION}&_include=Condition:subject")), Expect::NoLeak),
        attempt("_revinclude on allowed", get(format!("Patient?_id={ALLOWED}&_revinclude=Condition:asserter&_revinclude=Observation:subject")), Expect::NoLeak),
        attempt("_include:iterate", get(format!("Condition?code={SHARED_CONDITION}&_include=Condition:subject&_include:iterate=Patient:link")), Expect::NoLeak),
        attempt("_summary=count of a shared diagnosis", get(format!("Condition?code={SHARED_CONDITION}&_summary=count")), Expect::Count(2, 1)),
        attempt("_count=0 of a shared diagnosis", get(format!("Condition?code={SHARED_CONDITION}&_count=0")), Expect::Count(2, 1)),
    ]);
    let mut f = Findings::default();
    run_all(&suite, &all_sites(&suite), &attempts, &mut f).await;
    f.assert_none("class 3 (shaping and counts)");
}

#[actix_web::test]
async fn paging_never_releases_a_total_counting_withheld_entries() {
    let suite = Suite::start(false).await;
    let mut f = Findings::default();
    for site in suite.sites.iter().filter(|s| !s.hostile) {
        // dn-cond-shared is first in the upstream's order: page 1 is denied's only.
        let visible = match site.policy {
            Policy::OptOut => 2,
            Policy::OptIn => 1,
        };
        let mut path = format!("Condition?code={SHARED_CONDITION}&_count=1");
        let mut seen = BTreeSet::new();
        for page in 1..=6 {
            let a = attempt(format!("page {page}"), get(path.clone()), Expect::NoLeak);
            let got = run(&suite, site, &a, &mut f).await;
            if got.status != 200 {
                f.add(site, &a.label, format!("status {}", got.status));
                break;
            }
            let body = got.json();
            if let Some(total) = body["total"].as_u64()
                && total != visible
            {
                f.add(
                    site,
                    &a.label,
                    format!("(b) Bundle.total {total}: the caller may see {visible}"),
                );
            }
            for e in body["entry"].as_array().into_iter().flatten() {
                if e["search"]["mode"].as_str().unwrap_or("match") == "match" {
                    seen.insert(e["resource"]["id"].as_str().unwrap_or_default().to_owned());
                }
            }
            let next = body["link"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|l| l["relation"] == "next")
                .and_then(|l| l["url"].as_str())
                .map(str::to_owned);
            match next {
                Some(url) => {
                    let prefix = suite.gw.url(&format!("/fhir/{}/", site.id));
                    match url.strip_prefix(&prefix) {
                        Some(rest) => path = rest.to_owned(),
                        None => {
                            f.add(
                                site,
                                &a.label,
                                format!("(c) a next link outside the gateway: {url}"),
                            );
                            break;
                        }
                    }
                }
                None => break,
            }
        }
        if seen.len() != visible as usize {
            f.add(
                site,
                "paging",
                format!("walked {seen:?}, expected {visible} visible Conditions"),
            );
        }
    }
    f.assert_none("paging");
}

// ---------------------------------------------------------------------------------------------
// Class 4: operations.

#[actix_web::test]
async fn class4_operations_release_only_decided_resources() {
    let suite = Suite::start(false).await;
    let attempts = vec![
        attempt(
            "$everything of denied",
            get(format!("Patient/{DENIED}/$everything")),
            Expect::NamedOrLikeTwin(get("Patient/nobody/$everything")),
        ),
        attempt(
            "$everything of allowed",
            get(format!("Patient/{ALLOWED}/$everything?_count=1000")),
            Expect::NoLeak,
        ),
        attempt(
            "$everything of allowed, POST",
            Req {
                method: "POST",
                path: format!("Patient/{ALLOWED}/$everything"),
                headers: vec![("content-type".into(), "application/fhir+json".into())],
                body: Some(br#"{"resourceType":"Parameters"}"#.to_vec()),
            },
            Expect::NoLeak,
        ),
        attempt(
            "$lastn of denied",
            get(format!("Observation/$lastn?patient={DENIED}&code={HBA1C}")),
            Expect::NamedOrLikeTwin(get(format!(
                "Observation/$lastn?patient=nobody&code={HBA1C}"
            ))),
        ),
        attempt(
            "$lastn of allowed and denied",
            get(format!(
                "Observation/$lastn?patient={ALLOWED},{DENIED}&code={HBA1C}"
            )),
            Expect::NoLeak,
        ),
        attempt(
            "$lastn of allowed",
            get(format!("Observation/$lastn?patient={ALLOWED}&code={HBA1C}")),
            Expect::NoLeak,
        ),
        attempt(
            "$summary of denied",
            get(format!("Patient/{DENIED}/$summary")),
            Expect::NamedOrLikeTwin(get("Patient/nobody/$summary")),
        ),
        attempt(
            "$summary of allowed",
            get(format!("Patient/{ALLOWED}/$summary")),
            Expect::NoLeak,
        ),
        attempt(
            "$document of allowed's Composition listing denied's result",
            get("Composition/al-composition-mixed/$document"),
            Expect::NoLeak,
        ),
        attempt(
            "an undeclared operation ($stats)",
            get(format!("Observation/$stats?subject={ALLOWED}&code={HBA1C}")),
            Expect::NoLeak,
        ),
        attempt(
            "an undeclared instance operation",
            get(format!("Patient/{ALLOWED}/$export-raw")),
            Expect::NoLeak,
        ),
    ];
    let mut f = Findings::default();
    run_all(&suite, &all_sites(&suite), &attempts, &mut f).await;
    // Undeclared operations are refused with a stable code, alike everywhere.
    for site in &suite.sites {
        let got = send_to(
            &suite.gw,
            site,
            &get(format!("Patient/{ALLOWED}/$export-raw")),
        )
        .await;
        if got.status < 400 {
            f.add(
                site,
                "undeclared operation",
                format!("forwarded and answered {}", shape(&got)),
            );
        }
    }
    f.assert_none("class 4 (operations)");
}

// ---------------------------------------------------------------------------------------------
// Class 5: the same question in other forms.

#[actix_web::test]
async fn class5_every_form_of_the_same_question_gets_the_same_answer() {
    let suite = Suite::start(false).await;
    let (real, _) = realistic();
    let named =
        |label: &str, req: Req, twin: Req| attempt(label, req, Expect::NamedOrLikeTwin(twin));
    let subject_forms = [
        format!("subject=Patient/{DENIED}"),
        "subject=Patient%2Fdenied".to_owned(),
        format!("subject={DENIED}"),
        format!("subject:Patient={DENIED}"),
        format!("patient={DENIED}"),
        format!("subject={}/Patient/{DENIED}", real.base_url()),
        format!("subject=Patient/{DENIED}/_history/1"),
        format!("subject=Patient/{ALLOWED},Patient/{DENIED}"),
        format!("subject=Patient/{ALLOWED}&subject=Patient/{DENIED}"),
        format!("subject:missing=false&patient={DENIED}"),
    ];
    let mut attempts = Vec::new();
    for form in &subject_forms {
        let twin_form = form.replace(DENIED, "nobody");
        attempts.push(named(
            &format!("GET Observation?{form}"),
            get(format!("Observation?{form}")),
            get(format!("Observation?{twin_form}")),
        ));
        attempts.push(named(
            &format!("POST Observation/_search {form}"),
            post_search("Observation", form),
            post_search("Observation", &twin_form),
        ));
    }
    attempts.extend([
        // An unknown (upper-case) parameter is ignored upstream: everything comes back.
        attempt(
            "SUBJECT=Patient/denied",
            get(format!(
                "Observation?SUBJECT=Patient/{DENIED}&code={SECRET_LAB}"
            )),
            Expect::LikeTwin(get(
                "Observation?SUBJECT=Patient/nobody&code=http://loinc.org|0000-0",
            )),
        ),
        attempt(
            "a token with its | percent-encoded",
            get("Observation?code=http%3A%2F%2Floinc.org%7C5195-3"),
            Expect::LikeTwin(get("Observation?code=http://loinc.org%7C0000-0")),
        ),
        named(
            "read, percent-encoded id",
            get("Patient/%64enied"),
            get("Patient/%6Eobody"),
        ),
        named(
            "read, trailing slash",
            get(format!("Patient/{DENIED}/")),
            get("Patient/nobody/"),
        ),
        named(
            "vread",
            get(format!("Patient/{DENIED}/_history/1")),
            get("Patient/nobody/_history/1"),
        ),
        named(
            "history",
            get(format!("Patient/{DENIED}/_history")),
            get("Patient/nobody/_history"),
        ),
        named(
            "HEAD",
            Req {
                method: "HEAD",
                ..get(format!("Patient/{DENIED}"))
            },
            Req {
                method: "HEAD",
                ..get("Patient/nobody")
            },
        ),
        named(
            "If-None-Match with the current version",
            get(format!("Patient/{DENIED}")).header("if-none-match", "W/\"2\""),
            get("Patient/nobody").header("if-none-match", "W/\"2\""),
        ),
        named(
            "If-None-Match *",
            get(format!("Patient/{DENIED}")).header("if-none-match", "*"),
            get("Patient/nobody").header("if-none-match", "*"),
        ),
        // Resources that do not name their patient in the path: the upstream's honest 304
        // must not go out before the gateway has decided on the content.
        named(
            "If-None-Match with the version, denied's Observation",
            get("Observation/dn-obs-secret").header("if-none-match", "W/\"1\""),
            get("Observation/no-such").header("if-none-match", "W/\"1\""),
        ),
        named(
            "If-Modified-Since after the last change, denied's Group",
            get(group_of_denied()).header("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT"),
            get("Group/no-such").header("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT"),
        ),
        named(
            "If-Modified-Since in the future",
            get(format!("Patient/{DENIED}"))
                .header("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT"),
            get("Patient/nobody").header("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT"),
        ),
        named(
            "R5 asked (Accept fhirVersion)",
            get(format!("Patient/{DENIED}"))
                .header("accept", "application/fhir+json; fhirVersion=5.0"),
            get("Patient/nobody").header("accept", "application/fhir+json; fhirVersion=5.0"),
        ),
        attempt(
            "R5 search by code",
            get(format!("Observation?code={SECRET_LAB}"))
                .header("accept", "application/fhir+json; fhirVersion=5.0"),
            Expect::LikeTwin(
                get("Observation?code=http://loinc.org|0000-0")
                    .header("accept", "application/fhir+json; fhirVersion=5.0"),
            ),
        ),
        attempt(
            "R4B by _format",
            get(format!(
                "Condition?code={SECRET_CONDITION}&_format=application/fhir%2Bjson;fhirVersion=4.3"
            )),
            Expect::LikeTwin(get(format!(
                "Condition?code={ABSENT_CONDITION}&_format=application/fhir%2Bjson;fhirVersion=4.3"
            ))),
        ),
        // A raw `+` is a space in a query: `fhir+json` reads `fhir json`.
        attempt(
            "_format with a raw +",
            get(format!(
                "Condition?code={SECRET_CONDITION}&_format=application/fhir+json;fhirVersion=4.0"
            )),
            Expect::LikeTwin(get(format!(
                "Condition?code={ABSENT_CONDITION}&_format=application/fhir+json;fhirVersion=4.0"
            ))),
        ),
        attempt(
            "a parameter name in another case",
            get(format!(
                "Condition?Code={SECRET_CONDITION}&subject=Patient/{DENIED}"
            )),
            Expect::NamedOrLikeTwin(get(format!(
                "Condition?Code={SECRET_CONDITION}&subject=Patient/nobody"
            ))),
        ),
    ]);
    let mut f = Findings::default();
    run_all(&suite, &all_sites(&suite), &attempts, &mut f).await;
    // GET and POST of the same search answer alike; a conditional read is decided like the
    // read; HEAD like GET.
    for site in &suite.sites {
        for form in &subject_forms {
            let g = send_to(&suite.gw, site, &get(format!("Observation?{form}"))).await;
            let p = send_to(&suite.gw, site, &post_search("Observation", form)).await;
            if shape(&g) != shape(&p) {
                f.add(
                    site,
                    &format!("GET vs POST {form}"),
                    format!("\n    GET:  {}\n    POST: {}", shape(&g), shape(&p)),
                );
            }
        }
        let plain = send_to(&suite.gw, site, &get(format!("Patient/{DENIED}"))).await;
        for (n, v) in [
            ("if-none-match", "W/\"2\""),
            ("if-modified-since", "Fri, 01 Jan 2100 00:00:00 GMT"),
        ] {
            let cond = send_to(
                &suite.gw,
                site,
                &get(format!("Patient/{DENIED}")).header(n, v),
            )
            .await;
            if cond.status != plain.status {
                f.add(
                    site,
                    &format!("conditional read {n}"),
                    format!("{} where the read is {}", cond.status, plain.status),
                );
            }
        }
        let head = send_to(
            &suite.gw,
            site,
            &Req {
                method: "HEAD",
                ..get(format!("Patient/{DENIED}"))
            },
        )
        .await;
        if head.status != plain.status {
            f.add(
                site,
                "HEAD",
                format!("{} where GET is {}", head.status, plain.status),
            );
        }
    }
    f.assert_none("class 5 (forms of the same question)");
}

/// `Group/{id}` of the Group whose member is `denied`.
fn group_of_denied() -> String {
    realistic()
        .1
        .elements
        .iter()
        .find(|r| r.patient == DENIED && r.through == "Group.member.entity")
        .map(|r| r.reference.clone())
        .expect("the data set has a Group of denied")
}

// ---------------------------------------------------------------------------------------------
// Class 6: the hospital's answer is not trusted.

#[actix_web::test]
async fn class6_every_lie_of_the_hostile_upstream_is_caught() {
    let suite = Suite::start(true).await;
    let probes: BTreeMap<Lie, Vec<Attempt>> = BTreeMap::from([
        (
            Lie::MismatchedReads,
            vec![
                attempt(
                    "read Patient/allowed answered with Patient/denied",
                    get(format!("Patient/{ALLOWED}")),
                    Expect::Status(502),
                ),
                attempt(
                    "read of allowed's Observation answered with denied's",
                    get("Observation/al-obs-hba1c-1"),
                    Expect::Status(502),
                ),
                attempt(
                    "read of an Observation answered with a Condition",
                    get("Observation/al-obs-hba1c-2"),
                    Expect::Status(502),
                ),
            ],
        ),
        (
            Lie::OutcomeEntries,
            vec![attempt(
                "denied's entries marked outcome",
                get("Condition?_id=al-cond-shared"),
                Expect::NoLeak,
            )],
        ),
        (
            Lie::IncludeEntries,
            vec![attempt(
                "denied's entries marked include",
                get("Condition?_id=al-cond-shared"),
                Expect::NoLeak,
            )],
        ),
        (
            Lie::InternalHosts,
            vec![
                attempt(
                    "internal hosts in an outcome entry",
                    get("Condition?_id=al-cond-shared"),
                    Expect::NoLeak,
                ),
                attempt(
                    "internal hosts in an error",
                    get("Condition/no-such"),
                    Expect::NoLeak,
                ),
                attempt(
                    "internal hosts in the CapabilityStatement",
                    get("metadata"),
                    Expect::NoLeak,
                ),
            ],
        ),
        (
            Lie::BaseUrlInStrings,
            vec![
                attempt(
                    "base URL in narrative, identifiers, extensions (read)",
                    get(format!("Patient/{ALLOWED}")),
                    Expect::NoLeak,
                ),
                attempt(
                    "base URL in strings (search)",
                    get("Condition?_id=al-cond-shared"),
                    Expect::NoLeak,
                ),
            ],
        ),
        (
            Lie::InflatedTotal,
            vec![attempt(
                "a total counting entries not returned",
                get("Condition?_id=al-cond-shared"),
                Expect::NoLeak,
            )],
        ),
        (
            Lie::Blind304,
            // It answers 304 to any question, the twin's too: the secure answer is the
            // refusal decided on the content (the gateway asks for it unconditionally).
            vec![
                attempt(
                    "304 without looking, denied's read",
                    get(format!("Patient/{DENIED}")).header("if-none-match", "W/\"1\""),
                    Expect::Status(403),
                ),
                // Not named in the path: decided on the content, and answered exactly as a
                // read of a resource that does not exist (with the same header).
                attempt(
                    "304 without looking, denied's Group (not named in the path)",
                    get(group_of_denied()).header("if-none-match", "W/\"7\""),
                    Expect::NamedOrLikeTwin(
                        get("Group/no-such").header("if-none-match", "W/\"7\""),
                    ),
                ),
                attempt(
                    "304 without looking, If-Modified-Since",
                    get("Observation/dn-obs-secret")
                        .header("if-modified-since", "Mon, 01 Jan 2001 00:00:00 GMT"),
                    Expect::NamedOrLikeTwin(
                        get("Observation/no-such")
                            .header("if-modified-since", "Mon, 01 Jan 2001 00:00:00 GMT"),
                    ),
                ),
            ],
        ),
        (
            Lie::StripOnShaping,
            vec![
                attempt(
                    "_elements strips the subject (read)",
                    get("Observation/dn-obs-secret?_elements=code"),
                    Expect::NamedOrLikeTwin(get("Observation/no-such?_elements=code")),
                ),
                attempt(
                    "_summary strips the subject (search)",
                    get("Observation?_id=dn-obs-secret&_summary=true"),
                    Expect::LikeTwin(get("Observation?_id=no-such&_summary=true")),
                ),
            ],
        ),
        (
            Lie::OperationsLeak,
            vec![
                attempt(
                    "$everything of allowed answers everyone",
                    get(format!("Patient/{ALLOWED}/$everything")),
                    Expect::NoLeak,
                ),
                attempt(
                    "$lastn answers everyone",
                    get(format!("Observation/$lastn?patient={ALLOWED}")),
                    Expect::NoLeak,
                ),
            ],
        ),
        (
            Lie::NestedBundle,
            vec![attempt(
                "a Bundle of denied's inside a Parameters entry",
                get("Condition?_id=al-cond-shared"),
                Expect::NoLeak,
            )],
        ),
    ]);
    let mut f = Findings::default();
    for (lie, out, inn) in &suite.lie_sites {
        for site in [out, inn] {
            for a in &probes[lie] {
                let labelled = Attempt {
                    label: format!("{lie:?}: {}", a.label),
                    ..a.clone()
                };
                run(&suite, site, &labelled, &mut f).await;
            }
        }
    }
    // Conditional headers are the gateway's to evaluate: none reaches an upstream.
    for upstream in &suite._hostile {
        for seen in upstream.requests() {
            if seen.header("if-none-match").is_some() || seen.header("if-modified-since").is_some()
            {
                f.list.push(format!(
                    "a conditional header reached the upstream: {} {}?{}",
                    seen.method, seen.path, seen.query
                ));
                break;
            }
        }
    }
    // And all at once, with the probes of every lie.
    let every: Vec<Attempt> = probes.values().flatten().cloned().collect();
    let liars: Vec<&Site> = suite.sites.iter().filter(|s| s.hostile).collect();
    run_all(&suite, &liars, &every, &mut f).await;
    f.assert_none("class 6 (hostile answers)");
}

// ---------------------------------------------------------------------------------------------
// Class 1: the consent API authorizes by who is asking.

#[actix_web::test]
async fn class1_the_consent_api_authorizes_by_who_is_asking() {
    let suite = Suite::start(false).await;
    let gw = &suite.gw;
    let site = "real-out";
    // A patient app in `allowed`'s launch context, and a practitioner.
    let patient_app = token(
        "nurse-carol",
        Some("openid fhirUser patient/Consent.cruds patient/*.rs"),
        None,
        Some(PatientLaunch::at(site, ALLOWED)),
    );
    let bob = token(
        "dr-bob",
        Some("openid fhirUser user/Consent.cruds user/*.rs"),
        None,
        None,
    );
    let fhir_json = [("content-type", "application/fhir+json; fhirVersion=4.0")];
    let mut findings = Vec::new();
    let mut expect_refused = |label: &str, got: &Got| {
        if got.status < 400 {
            findings.push(format!("{label}: {} {}", got.status, got.text()));
        }
    };
    let grant = consent("c-forged", DENIED, "dr-bob", true);
    let got = send(
        "POST",
        &gw.url(&format!("/consent/Consent?site={site}")),
        Some(&patient_app),
        &fhir_json,
        Some(grant.to_string().into_bytes()),
    )
    .await;
    expect_refused("a patient app creates a Consent for another patient", &got);
    let revoke = send(
        "POST",
        &gw.url(&format!("/consent/Consent/c-den-{site}/$revoke")),
        Some(&patient_app),
        &[],
        None,
    )
    .await;
    expect_refused("a patient app revokes another patient's consent", &revoke);
    let list = send(
        "GET",
        &gw.url(&format!("/consent/Consent?site={site}&patient={DENIED}")),
        Some(&patient_app),
        &[],
        None,
    )
    .await;
    expect_refused("a patient app lists another patient's consents", &list);
    let check = send(
        "POST",
        &gw.url("/consent/$check"),
        Some(&patient_app),
        &[("content-type", "application/json")],
        Some(
            json!({"site": site, "patient": DENIED, "actor": "Practitioner/dr-alice"})
                .to_string()
                .into_bytes(),
        ),
    )
    .await;
    expect_refused("a patient app runs $check for another patient", &check);
    let own = consent("c-self-grant", ALLOWED, "dr-bob", true);
    let got = send(
        "POST",
        &gw.url("/consent/Consent?site=real-in"),
        Some(&bob),
        &fhir_json,
        Some(own.to_string().into_bytes()),
    )
    .await;
    expect_refused("a practitioner grants itself access", &got);
    // The patient manages its own consents.
    let mine = consent("c-mine", ALLOWED, "dr-bob", false);
    let got = send(
        "POST",
        &gw.url(&format!("/consent/Consent?site={site}")),
        Some(&patient_app),
        &fhir_json,
        Some(mine.to_string().into_bytes()),
    )
    .await;
    if got.status != 201 {
        findings.push(format!(
            "the patient app cannot store its own patient's consent: {} {}",
            got.status,
            got.text()
        ));
    }
    assert!(
        findings.is_empty(),
        "class 1 (consent API): {} finding(s):\n{}",
        findings.len(),
        findings.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Classes 7 and 8: permits only from decisions; keys apart from data; audit reads accounted.

#[test]
fn class7_no_permit_is_built_outside_the_decision() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../consent/src");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for name in [
                "pub fn permit_without_patient_data",
                "pub fn permit_per_resource",
            ] {
                if text.contains(name) {
                    found.push(format!("{}: {name}", path.display()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "public Permit constructors outside the decision: {found:?}"
    );
}

#[actix_web::test]
async fn class8_keys_are_not_stored_with_the_data_and_audit_reads_leave_receipts() {
    let upstream = FakeUpstream::always(json!({"resourceType": "Patient", "id": "p"}));
    let gw = TestGateway::new()
        .site("st-mary", &upstream.base_url())
        .set("audit", json!({"subjects": [caller_id("researcher-dan")]}))
        .start();
    let mut findings = Vec::new();
    if let Some(stored) = gw.gateway.state.store.setting("consortium_key").unwrap()
        && !stored.is_empty()
    {
        findings.push(
            "the consortium key is stored in the database of the receipts it protects".to_owned(),
        );
    }
    let auditor = token("researcher-dan", Some("openid"), None, None);
    let read = send(
        "GET",
        &gw.url("/audit/AuditEvent"),
        Some(&auditor),
        &[],
        None,
    )
    .await;
    assert_eq!(read.status, 200, "{}", read.text());
    match read.header("x-assent-receipt") {
        None => findings.push("an audit-log read has no receipt".to_owned()),
        Some(id) => {
            if gw.gateway.state.store.receipt(id).unwrap().is_none() {
                findings.push(format!("receipt {id} of the audit read is not stored"));
            }
        }
    }
    assert!(findings.is_empty(), "class 8: {findings:?}");
}
