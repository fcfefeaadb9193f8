//! The property test of issue 11: random requests over a random data set and random
//! consents; whatever the gateway releases is within what an INDEPENDENT ORACLE permits.
//!
//! Each case is a world: 2 to 4 patients, resources drawn from the adversarial data set's
//! (`dataset.rs`: one per reference element of the R4 Patient compartment, the other
//! reference forms, a document, clinical data by code) with every patient they mention
//! replaced, one mention at a time, by a random patient of the world (some by a patient under
//! a base no site knows); a consent per patient and site (none, or a permit or refusal for
//! the caller or for another practitioner); sites on the realistic upstream (Medplum) and on
//! the hostile one (every lie, swapping and smuggling random resources of the world), opt-out
//! and opt-in; and 16 to 32 random requests: reads, vreads, instance and type history,
//! conditional reads, HEAD, searches by `patient`/`subject`/another compartment parameter
//! (bare id, `Patient/id`, comma lists, `:Patient`, `._id`, `.identifier`), by `_id` lists,
//! by code, with `_include`/`_revinclude`, `$everything`, each search by GET or `POST
//! _search`, each with `_elements`, `_summary` (`true`, `data`, `count`), `_count` (0 or small,
//! next pages followed).
//!
//! The oracle says whose data a resource is from the R4 Patient CompartmentDefinition as
//! data (`fhir/data/patient-compartment-r4.tsv`: the `compartment` lines, and the `search`
//! lines of reference parameters that may be a Patient), read here by this module: it
//! follows each listed element path and places the references it finds (relative,
//! versioned, absolute under a base of the test, `#id` to a contained Patient, `urn:uuid:`
//! to a Patient entry, identifier-only by record number; a Patient is its own); under a base
//! no site knows, an unknown patient, whom nothing permits. It never calls
//! `assent_fhir::compartment`. A released resource (anywhere in the body: the answer, Bundle
//! entries of any mode, nested Bundles, `Parameters`, contained resources) belongs to the
//! patients the oracle finds in it plus, when it is a resource of the world by type and id,
//! those of the world's own copy (so shaping or a lying upstream cannot hide them). The
//! property: every such patient permits the caller at that site (consents read by the
//! oracle: no consent follows the site's policy), and a `Bundle.total` never exceeds the
//! matches released (a count-only answer: the matches the same search releases, over its
//! pages). The run fails, too, when too little was released for the property to mean
//! anything.
//!
//! Seeds: the runner starts from a fixed seed ([`SEED`]) so every run (and CI) tries the same
//! worlds, and a failure reproduces by running the test again; `ASSENT_PROPERTY_SEED=<64 hex
//! digits>` tries other worlds (`random` takes one from the OS and prints it), and
//! `ASSENT_PROPERTY_CASES=N` sets the number of worlds (default [`CASES`]). No failure
//! persistence file: the seed is the reproduction. A failing world is shrunk (bounded) and
//! printed with every finding.
//!
//! Leaves out: receipts and the exact answers of the adversarial suite (`enforcement.rs`);
//! the realistic upstream's search semantics (the oracle judges what was released, not
//! whether everything permitted was).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use assent_e2e::dataset::{DataSet, HBA1C, MRN_SYSTEM, SHARED_CONDITION, UPSTREAM_BASE, data_set};
use assent_e2e::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::{Value, json};

use crate::consent::{consent, put_consent};

/// Requests sent, answered 2xx, and resources released (over every world of the run): the
/// test fails when the gateway released too little for the property to mean anything.
static REQUESTS: AtomicUsize = AtomicUsize::new(0);
static ANSWERED: AtomicUsize = AtomicUsize::new(0);
static RELEASED: AtomicUsize = AtomicUsize::new(0);

/// The default number of worlds (each starts a realistic upstream and a gateway).
pub const CASES: u32 = 12;
/// The fixed seed of the runner (ChaCha).
pub const SEED: [u8; 32] = *b"assent-issue-11-property-seed-01";

const PATIENTS: [&str; 4] = ["pt-0", "pt-1", "pt-2", "pt-3"];
/// A base no site knows: a patient under it is an unknown patient.
const ELSEWHERE: &str = "https://elsewhere.test/fhir";

fn mrn(patient: &str) -> String {
    format!("MRN-{}", patient.to_ascii_uppercase())
}

// ---------------------------------------------------------------------------------------------
// The oracle.

/// Whose data: a patient of the world, or one no site can place.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Owner {
    Patient(String),
    Unknown(String),
}

/// The element paths that put a resource of each type in a patient's compartment (R4), from
/// the generated CompartmentDefinition data: `compartment` lines, and `search` lines of
/// reference parameters that may be a Patient.
fn compartment_paths() -> &'static BTreeMap<String, BTreeSet<Vec<String>>> {
    static PATHS: OnceLock<BTreeMap<String, BTreeSet<Vec<String>>>> = OnceLock::new();
    PATHS.get_or_init(|| {
        let text = include_str!("../../../fhir/data/patient-compartment-r4.tsv");
        let mut out: BTreeMap<String, BTreeSet<Vec<String>>> = BTreeMap::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split('\t').collect();
            let (resource_type, paths) = match fields.as_slice() {
                ["compartment", t, _param, paths] => (*t, *paths),
                ["search", t, _code, _kind, paths] => (*t, *paths),
                _ => continue,
            };
            for path in paths.split(',').filter(|p| !p.is_empty()) {
                let segments: Vec<String> = path.split('.').skip(1).map(String::from).collect();
                if !segments.is_empty() {
                    out.entry(resource_type.to_owned())
                        .or_default()
                        .insert(segments);
                }
            }
        }
        assert!(out.len() > 50, "the compartment data was not read");
        out
    })
}

/// What the oracle knows of the places a reference may be resolved in.
#[derive(Clone, Copy)]
struct Scope<'v> {
    /// `fullUrl` → resource of the enclosing Bundle.
    full_urls: &'v BTreeMap<String, &'v Value>,
    /// The resource whose `contained` a `#id` points into.
    container: Option<&'v Value>,
    /// The bases of the test (upstreams, gateway) under which `Patient/{id}` is the world's.
    bases: &'v [String],
}

fn patient_of_mrn(value: &str) -> Option<String> {
    PATIENTS
        .iter()
        .find(|p| mrn(p) == value)
        .map(|p| (*p).to_owned())
}

/// Owners named by identifiers (of the record-number system) of a Patient or a Reference.
fn by_identifier(identifier: &Value, out: &mut BTreeSet<Owner>) {
    let list: Vec<&Value> = match identifier {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    for i in list {
        match (i["system"].as_str(), i["value"].as_str()) {
            (Some(MRN_SYSTEM), Some(v)) => out
                .insert(patient_of_mrn(v).map_or_else(|| Owner::Unknown(v.into()), Owner::Patient)),
            (Some(s), Some(v)) => out.insert(Owner::Unknown(format!("{s}|{v}"))),
            _ => false,
        };
    }
}

/// `Patient/{id}[/_history/v]` → id.
fn relative_patient(text: &str) -> Option<String> {
    let segments: Vec<&str> = text.split('/').collect();
    match segments.as_slice() {
        ["Patient", id] | ["Patient", id, "_history", _] if !id.is_empty() => {
            Some((*id).to_owned())
        }
        _ => None,
    }
}

/// The patient a Reference points at, if it points at one.
fn reference_owner(reference: &Value, scope: Scope<'_>, out: &mut BTreeSet<Owner>) {
    let Some(text) = reference["reference"].as_str() else {
        if reference["type"] == "Patient" || reference.get("identifier").is_some() {
            by_identifier(&reference["identifier"], out);
        }
        return;
    };
    if let Some(id) = text.strip_prefix('#') {
        let contained = scope
            .container
            .and_then(|c| c["contained"].as_array())
            .and_then(|all| all.iter().find(|r| r["id"] == id));
        if let Some(p) = contained.filter(|r| r["resourceType"] == "Patient") {
            by_identifier(&p["identifier"], out);
        }
        return;
    }
    if let Some(id) = relative_patient(text) {
        out.insert(Owner::Patient(id));
        return;
    }
    if let Some(entry) = scope.full_urls.get(text) {
        if entry["resourceType"] == "Patient" {
            out.extend(own_identity(entry, false));
        }
        return;
    }
    if text.contains("://") {
        let under_known = scope.bases.iter().find_map(|b| {
            text.strip_prefix(b.as_str())
                .and_then(|r| r.strip_prefix('/'))
        });
        match under_known.and_then(relative_patient) {
            Some(id) => {
                out.insert(Owner::Patient(id));
            }
            None if text.split('/').any(|s| s == "Patient") => {
                out.insert(Owner::Unknown(text.to_owned()));
            }
            None => {}
        }
    }
}

/// A Patient's own identity: its id, or (contained, where the id is local, or without one)
/// its record numbers.
fn own_identity(patient: &Value, contained: bool) -> BTreeSet<Owner> {
    let mut out = BTreeSet::new();
    match patient["id"].as_str() {
        Some(id) if !contained => {
            out.insert(Owner::Patient(id.to_owned()));
        }
        _ => by_identifier(&patient["identifier"], &mut out),
    }
    out
}

/// The values at `path` below `value` (lists flattened).
fn at_path<'v>(value: &'v Value, path: &[String], out: &mut Vec<&'v Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| at_path(v, path, out)),
        _ => match path.split_first() {
            None => out.push(value),
            Some((first, rest)) => {
                if let Some(v) = value.get(first.as_str()) {
                    at_path(v, rest, out)
                }
            }
        },
    }
}

/// Whose data one resource is, from its own content: a Patient is its own; every compartment
/// element's references.
fn owners_of(resource: &Value, scope: Scope<'_>, contained: bool) -> BTreeSet<Owner> {
    let resource_type = resource["resourceType"].as_str().unwrap_or_default();
    let mut out = BTreeSet::new();
    if resource_type == "Patient" {
        out.extend(own_identity(resource, contained));
    }
    let scope = Scope {
        container: if contained {
            scope.container
        } else {
            Some(resource)
        },
        ..scope
    };
    for path in compartment_paths().get(resource_type).into_iter().flatten() {
        let mut found = Vec::new();
        at_path(resource, path, &mut found);
        for reference in found {
            reference_owner(reference, scope, &mut out);
        }
    }
    out
}

/// One resource found in an answer, with its owners.
struct Released {
    key: String,
    owners: BTreeSet<Owner>,
}

/// Every resource anywhere in `value`, with the oracle's owners.
fn released_resources(value: &Value, world: &World, bases: &[String]) -> Vec<Released> {
    let empty = BTreeMap::new();
    let mut out = Vec::new();
    let scope = Scope {
        full_urls: &empty,
        container: None,
        bases,
    };
    walk(value, scope, false, world, &mut out);
    out
}

fn walk(value: &Value, scope: Scope<'_>, contained: bool, world: &World, out: &mut Vec<Released>) {
    match value {
        Value::Array(items) => items
            .iter()
            .for_each(|v| walk(v, scope, contained, world, out)),
        Value::Object(map) => {
            let is_resource = map.get("resourceType").is_some_and(Value::is_string);
            let mut full_urls = BTreeMap::new();
            if is_resource {
                let resource_type = map["resourceType"].as_str().unwrap_or_default();
                let id = map.get("id").and_then(Value::as_str).unwrap_or_default();
                let key = format!("{resource_type}/{id}");
                let mut owners = owners_of(value, scope, contained);
                if !contained && let Some(own) = world.owners.get(&key) {
                    owners.extend(own.iter().cloned());
                }
                out.push(Released { key, owners });
                if resource_type == "Bundle" {
                    for e in map
                        .get("entry")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        if let (Some(u), Some(r)) = (e["fullUrl"].as_str(), e.get("resource")) {
                            full_urls.insert(u.to_owned(), r);
                        }
                    }
                }
            }
            let inner = Scope {
                full_urls: if full_urls.is_empty() {
                    scope.full_urls
                } else {
                    &full_urls
                },
                container: if is_resource && !contained {
                    Some(value)
                } else {
                    scope.container
                },
                bases: scope.bases,
            };
            for (k, v) in map {
                walk(v, inner, contained || k == "contained", world, out);
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Worlds.

/// A patient's consent at one site, for the caller (`dr-alice`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Consent {
    None,
    PermitCaller,
    RefuseCaller,
    /// Deny by default, permit another practitioner.
    PermitOther,
    /// Permit by default, refuse another practitioner.
    RefuseOther,
}

impl Consent {
    fn permits(self, opt_in: bool) -> bool {
        match self {
            Consent::None => !opt_in,
            Consent::PermitCaller | Consent::RefuseOther => true,
            Consent::RefuseCaller | Consent::PermitOther => false,
        }
    }
}

#[derive(Debug, Clone)]
struct Site {
    id: &'static str,
    opt_in: bool,
    hostile: bool,
}

const SITES: [Site; 4] = [
    Site {
        id: "real-out",
        opt_in: false,
        hostile: false,
    },
    Site {
        id: "real-in",
        opt_in: true,
        hostile: false,
    },
    Site {
        id: "lie-out",
        opt_in: false,
        hostile: true,
    },
    Site {
        id: "lie-in",
        opt_in: true,
        hostile: true,
    },
];

/// One random request, as choices resolved against the world when it runs.
#[derive(Debug, Clone)]
struct Ask {
    site: usize,
    form: usize,
    a: usize,
    b: usize,
    c: usize,
    shaping: usize,
    post: bool,
}

/// What the strategy draws: resolved into a [`World`] by [`World::build`].
#[derive(Debug, Clone)]
struct Draw {
    patients: usize,
    templates: Vec<usize>,
    /// Per mention of a patient: which patient (an index past the world's: `ELSEWHERE`).
    mentions: Vec<usize>,
    consents: Vec<usize>,
    swaps: Vec<(usize, usize)>,
    smuggled: Vec<usize>,
    asks: Vec<Ask>,
}

fn draw() -> impl Strategy<Value = Draw> {
    let ask = (
        0..4usize,
        0..14usize,
        any::<usize>(),
        any::<usize>(),
        0..8usize,
        0..8usize,
        any::<bool>(),
    )
        .prop_map(|(site, form, a, b, c, shaping, post)| Ask {
            site,
            form,
            a,
            b,
            c,
            shaping,
            post,
        });
    (
        2..=4usize,
        prop::collection::vec(any::<usize>(), 12..28),
        prop::collection::vec(0..20usize, 64),
        prop::collection::vec(0..5usize, 16),
        prop::collection::vec((any::<usize>(), any::<usize>()), 0..3),
        prop::collection::vec(any::<usize>(), 0..3),
        prop::collection::vec(ask, 16..32),
    )
        .prop_map(
            |(patients, templates, mentions, consents, swaps, smuggled, asks)| Draw {
                patients,
                templates,
                mentions,
                consents,
                swaps,
                smuggled,
                asks,
            },
        )
}

/// A world: its resources, their owners by the oracle, consents.
struct World {
    patients: Vec<&'static str>,
    resources: Vec<Value>,
    owners: BTreeMap<String, BTreeSet<Owner>>,
    /// `[site][patient]`.
    consents: Vec<Vec<Consent>>,
    swaps: Vec<(String, String)>,
    smuggled: Vec<String>,
}

fn key_of(r: &Value) -> String {
    format!(
        "{}/{}",
        r["resourceType"].as_str().unwrap_or_default(),
        r["id"].as_str().unwrap_or_default()
    )
}

/// The templates: every resource of the adversarial data set but its patients.
fn templates() -> &'static [Value] {
    static T: OnceLock<Vec<Value>> = OnceLock::new();
    T.get_or_init(|| {
        let set: DataSet = data_set();
        let mut seen = BTreeSet::new();
        set.resources
            .iter()
            .rev()
            .filter(|r| {
                !(r["resourceType"] == "Patient"
                    && matches!(r["id"].as_str(), Some("allowed" | "denied" | "other")))
                    && r["resourceType"] != "Practitioner"
            })
            .filter(|r| seen.insert(key_of(r)))
            .cloned()
            .collect()
    })
}

/// Replaces every mention of the data set's patients, one at a time, by one of the world's.
struct Mentions<'d> {
    draw: &'d Draw,
    next: usize,
    patients: usize,
}

impl Mentions<'_> {
    fn pick(&mut self) -> Option<&'static str> {
        let n = self.draw.mentions[self.next % self.draw.mentions.len()];
        self.next += 1;
        (n % 10 != 9).then(|| PATIENTS[n % self.patients])
    }

    fn rewrite(&mut self, value: &mut Value) {
        match value {
            Value::Object(map) => {
                if map.get("resourceType").and_then(Value::as_str) == Some("Patient")
                    && matches!(
                        map.get("id").and_then(Value::as_str),
                        Some("allowed" | "denied" | "other")
                    )
                {
                    // A Patient of the data set (a document's): one of the world's, whole.
                    let who = self.pick().unwrap_or(PATIENTS[0]);
                    map.insert("id".into(), json!(who));
                    map.insert(
                        "identifier".into(),
                        json!([{"system": MRN_SYSTEM, "value": mrn(who)}]),
                    );
                    return;
                }
                if let Some(Value::Array(ids)) = map.get_mut("identifier") {
                    for i in ids {
                        self.rewrite_identifier(i);
                    }
                } else if let Some(i) = map.get_mut("identifier") {
                    self.rewrite_identifier(i);
                }
                for (k, v) in map.iter_mut() {
                    if k == "identifier" {
                        continue;
                    }
                    match v {
                        Value::String(s) if k == "reference" => {
                            if let Some(new) = self.rewrite_reference(s) {
                                *s = new;
                            }
                        }
                        _ => self.rewrite(v),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.rewrite(v)),
            _ => {}
        }
    }

    fn rewrite_identifier(&mut self, identifier: &mut Value) {
        if identifier["system"] == MRN_SYSTEM {
            let who = self.pick().unwrap_or(PATIENTS[0]);
            identifier["value"] = json!(mrn(who));
        }
    }

    fn rewrite_reference(&mut self, text: &str) -> Option<String> {
        for old in ["allowed", "denied", "other"] {
            let pattern = format!("Patient/{old}");
            if let Some(at) = text.find(&pattern)
                && text[at + pattern.len()..]
                    .chars()
                    .next()
                    .is_none_or(|c| c == '/')
            {
                let rest = &text[at + pattern.len()..];
                return Some(match self.pick() {
                    Some(who) => format!("{}Patient/{who}{rest}", &text[..at]),
                    None => format!("{ELSEWHERE}/Patient/{}{rest}", PATIENTS[0]),
                });
            }
        }
        None
    }
}

impl World {
    fn build(draw: &Draw) -> World {
        let patients: Vec<&'static str> = PATIENTS[..draw.patients].to_vec();
        let mut resources: Vec<Value> = patients
            .iter()
            .map(|p| {
                json!({"resourceType": "Patient", "id": p,
                    "identifier": [{"system": MRN_SYSTEM, "value": mrn(p)}],
                    "active": true, "name": [{"family": format!("Fam{p}"), "given": ["Test"]}],
                    "gender": "unknown", "birthDate": "1970-01-01"})
            })
            .collect();
        resources.push(
            json!({"resourceType": "Practitioner", "id": "dr-alice", "name": [{"family": "Alice"}]}),
        );
        let all = templates();
        let mut mentions = Mentions {
            draw,
            next: 0,
            patients: draw.patients,
        };
        let mut chosen = BTreeSet::new();
        for t in &draw.templates {
            let index = t % all.len();
            if !chosen.insert(index) {
                continue;
            }
            let mut r = all[index].clone();
            mentions.rewrite(&mut r);
            resources.push(r);
        }
        let bases = vec![UPSTREAM_BASE.to_owned()];
        let empty = BTreeMap::new();
        let scope = Scope {
            full_urls: &empty,
            container: None,
            bases: &bases,
        };
        let mut owners: BTreeMap<String, BTreeSet<Owner>> = BTreeMap::new();
        for r in &resources {
            // The resource's own owners and those of everything inside it (a document's).
            let mut found = Vec::new();
            let world_so_far = World {
                patients: Vec::new(),
                resources: Vec::new(),
                owners: BTreeMap::new(),
                consents: Vec::new(),
                swaps: Vec::new(),
                smuggled: Vec::new(),
            };
            walk(r, scope, false, &world_so_far, &mut found);
            let mut all_owners = owners_of(r, scope, false);
            for f in found {
                all_owners.extend(f.owners);
            }
            owners.insert(key_of(r), all_owners);
        }
        let consents = (0..SITES.len())
            .map(|s| {
                (0..draw.patients)
                    .map(|p| match draw.consents[(s * 4 + p) % draw.consents.len()] {
                        0 => Consent::None,
                        1 => Consent::PermitCaller,
                        2 => Consent::RefuseCaller,
                        3 => Consent::PermitOther,
                        _ => Consent::RefuseOther,
                    })
                    .collect()
            })
            .collect();
        let keys: Vec<String> = resources.iter().map(key_of).collect();
        let swaps = draw
            .swaps
            .iter()
            .map(|(a, b)| (keys[a % keys.len()].clone(), keys[b % keys.len()].clone()))
            .filter(|(a, b)| a != b)
            .collect();
        let smuggled = draw
            .smuggled
            .iter()
            .map(|s| keys[s % keys.len()].clone())
            .collect();
        World {
            patients,
            resources,
            owners,
            consents,
            swaps,
            smuggled,
        }
    }

    fn permits(&self, site: usize, owner: &Owner) -> bool {
        match owner {
            Owner::Unknown(_) => false,
            Owner::Patient(p) => match self.patients.iter().position(|q| q == p) {
                Some(i) => self.consents[site][i].permits(SITES[site].opt_in),
                // A Patient of the data set outside the world's (a linked Patient): no consent.
                None => !SITES[site].opt_in,
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests.

#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<String>,
    /// For a count-only search (`_summary=count`, `_count=0`): the same search returning
    /// its matches, whose released matches bound the count.
    twin: Option<Box<Req>>,
}

/// A search of `resource_type` with `params` (raw `name=value` pairs), by GET or POST.
fn search(resource_type: &str, mut params: Vec<String>, ask: &Ask) -> Req {
    let shaping = [
        "",
        "_elements=id,status",
        "_summary=true",
        "_summary=count",
        "_count=0",
        "_summary=data",
        "_count=2",
        "",
    ][ask.shaping % 8];
    if !shaping.is_empty() {
        params.push(shaping.to_owned());
    }
    let count_only = shaping == "_summary=count" || shaping == "_count=0";
    let twin = count_only.then(|| {
        let mut whole = params.clone();
        whole.pop();
        whole.push("_count=100".into());
        Box::new(search(
            resource_type,
            whole,
            &Ask {
                shaping: 0,
                ..ask.clone()
            },
        ))
    });
    let query = params.join("&").replace('|', "%7C");
    if ask.post {
        Req {
            method: "POST",
            path: format!("{resource_type}/_search"),
            headers: vec![(
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            )],
            body: Some(query),
            twin,
        }
    } else {
        Req {
            method: "GET",
            path: if query.is_empty() {
                resource_type.to_owned()
            } else {
                format!("{resource_type}?{query}")
            },
            headers: Vec::new(),
            body: None,
            twin,
        }
    }
}

fn get(path: String) -> Req {
    Req {
        method: "GET",
        path,
        headers: Vec::new(),
        body: None,
        twin: None,
    }
}

/// A way of naming patient `p` in a reference search parameter `param`.
fn naming(param: &str, p: &str, q: &str, form: usize) -> String {
    match form % 7 {
        0 => format!("{param}={p}"),
        1 => format!("{param}=Patient/{p}"),
        2 => format!("{param}=Patient/{p},Patient/{q}"),
        3 => format!("{param}:Patient={p}"),
        4 => format!("{param}._id={p}"),
        5 => format!("{param}.identifier={MRN_SYSTEM}|{}", mrn(p)),
        _ => format!("{param}=Patient/{p}/_history/1"),
    }
}

impl World {
    fn request(&self, ask: &Ask) -> Req {
        let r = &self.resources[ask.a % self.resources.len()];
        let key = key_of(r);
        let (t, id) = key.split_once('/').unwrap_or_default();
        let p = self.patients[ask.b % self.patients.len()];
        let q = self.patients[(ask.b / 7) % self.patients.len()];
        let params_of_t: Vec<String> = {
            let text = include_str!("../../../fhir/data/patient-compartment-r4.tsv");
            text.lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split('\t').collect();
                    (f.len() == 5 && f[0] == "search" && f[1] == t).then(|| f[2].to_owned())
                })
                .collect()
        };
        match ask.form {
            0 => get(key),
            1 => get(format!("{key}/_history/1")),
            2 => get(format!("{key}/_history")),
            3 | 4 if !params_of_t.is_empty() => {
                let param = &params_of_t[ask.c % params_of_t.len()];
                search(t, vec![naming(param, p, q, ask.b / 3)], ask)
            }
            3 | 4 => search("Observation", vec![naming("subject", p, q, ask.b / 3)], ask),
            5 => {
                let other = key_of(&self.resources[ask.b % self.resources.len()]);
                let other_id = other.split_once('/').map(|(_, i)| i).unwrap_or_default();
                search(t, vec![format!("_id={id},{other_id}")], ask)
            }
            6 => search(
                "Patient",
                vec![match ask.c % 3 {
                    0 => format!("_id={p}"),
                    1 => format!("identifier={MRN_SYSTEM}|{}", mrn(p)),
                    _ => format!("_id={p},{q}"),
                }],
                ask,
            ),
            7 => match ask.c % 2 {
                0 => search("Observation", vec![format!("code={HBA1C}")], ask),
                _ => search("Condition", vec![format!("code={SHARED_CONDITION}")], ask),
            },
            8 => get(format!(
                "Patient/{p}/$everything{}",
                ["", "?_count=3", "?_type=Observation,Condition"][ask.c % 3]
            )),
            9 => search(
                ["Observation", "Condition", "Encounter"][ask.c % 3],
                Vec::new(),
                ask,
            ),
            10 => match ask.c % 4 {
                0 => search(
                    "Observation",
                    vec![
                        naming("subject", p, q, ask.b / 3),
                        "_include=Observation:subject".into(),
                    ],
                    ask,
                ),
                1 => search(
                    "Patient",
                    vec![format!("_id={p}"), "_revinclude=Observation:subject".into()],
                    ask,
                ),
                2 => search(
                    "Observation",
                    vec![format!("code={HBA1C}"), "_include=*".into()],
                    ask,
                ),
                _ => search(
                    "Patient",
                    vec!["_revinclude=*".into(), format!("_id={q}")],
                    ask,
                ),
            },
            11 => get(format!("{t}/_history")),
            12 => {
                let mut req = get(key);
                req.headers.push(match ask.c % 3 {
                    0 => ("if-none-match", "W/\"1\"".to_owned()),
                    1 => (
                        "if-modified-since",
                        "Mon, 01 Jan 2024 00:00:00 GMT".to_owned(),
                    ),
                    _ => ("if-none-match", "*".to_owned()),
                });
                req
            }
            _ => Req {
                method: "HEAD",
                ..get(key)
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running a world.

async fn send_req(gw: &StartedGateway, site: &str, path: &str, req: &Req) -> Got {
    let headers: Vec<(&str, &str)> = req.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    send(
        req.method,
        &gw.url(&format!("/fhir/{site}/{path}")).replace('|', "%7C"),
        Some(clinician_token()),
        &headers,
        req.body.clone().map(String::into_bytes),
    )
    .await
}

/// Checks one answer; follows its `next` link (up to `pages` more).
async fn check(
    world: &World,
    gw: &StartedGateway,
    site: usize,
    req: &Req,
    bases: &[String],
    findings: &mut Vec<String>,
) {
    let site_id = SITES[site].id;
    let mut got = send_req(gw, site_id, &req.path, req).await;
    for page in 0..3 {
        let label = format!(
            "[{site_id}] {} {}{}{} (page {page})",
            req.method,
            req.path,
            req.body
                .as_deref()
                .map(|b| format!(" form {b}"))
                .unwrap_or_default(),
            req.headers
                .iter()
                .map(|(n, v)| format!(" {n}: {v}"))
                .collect::<String>()
        );
        REQUESTS.fetch_add(1, Ordering::Relaxed);
        if std::env::var_os("ASSENT_PROPERTY_VERBOSE").is_some() {
            eprintln!(
                "property: {label} → {} {} bytes",
                got.status,
                got.body.len()
            );
        }
        let Ok(body) = serde_json::from_slice::<Value>(&got.body) else {
            return;
        };
        if got.status >= 300 {
            return;
        }
        ANSWERED.fetch_add(1, Ordering::Relaxed);
        let released = released_resources(&body, world, bases);
        RELEASED.fetch_add(
            released.iter().filter(|r| !r.owners.is_empty()).count(),
            Ordering::Relaxed,
        );
        for r in released {
            let refused: Vec<&Owner> = r
                .owners
                .iter()
                .filter(|o| !world.permits(site, o))
                .collect();
            if !refused.is_empty() {
                findings.push(format!(
                    "{label}: released {} of {refused:?}, which the oracle does not permit (status {})",
                    r.key, got.status
                ));
            }
        }
        if body["resourceType"] == "Bundle"
            && let Some(total) = body["total"].as_u64()
        {
            let matches = body["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["search"]["mode"].as_str().unwrap_or("match") == "match")
                .count() as u64;
            let bound = match &req.twin {
                Some(twin) => released_matches(gw, site_id, twin).await,
                None => matches,
            };
            if total > bound {
                findings.push(format!(
                    "{label}: Bundle.total {total} but the caller may see {bound}"
                ));
            }
        }
        let next = body["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
            .and_then(|l| l["url"].as_str())
            .map(str::to_owned);
        let Some(next) = next else {
            return;
        };
        got = send("GET", &next, Some(clinician_token()), &[], None).await;
    }
}

/// The matches a search releases over all its pages (at most 10).
async fn released_matches(gw: &StartedGateway, site_id: &str, req: &Req) -> u64 {
    let mut got = send_req(gw, site_id, &req.path, req).await;
    let mut count = 0;
    for _ in 0..10 {
        let Ok(body) = serde_json::from_slice::<Value>(&got.body) else {
            break;
        };
        if got.status >= 300 {
            break;
        }
        count += body["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["search"]["mode"].as_str().unwrap_or("match") == "match")
            .count() as u64;
        let Some(next) = body["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
            .and_then(|l| l["url"].as_str())
        else {
            break;
        };
        got = send("GET", next, Some(clinician_token()), &[], None).await;
    }
    count
}

async fn run_world(world: &World, asks: &[Ask]) -> Vec<String> {
    let upstream = RealisticUpstream::start(&world.resources);
    let lies = Lies::all(&[], &world.smuggled);
    let hostile = HostileUpstream::start(
        &world.resources,
        Lies {
            swaps: world.swaps.clone(),
            ..lies
        },
    );
    let mut builder = TestGateway::new();
    for site in &SITES {
        let base = if site.hostile {
            hostile.base_url()
        } else {
            upstream.base_url()
        };
        builder = builder.site_with(
            site.id,
            json!({"upstream": base, "fhir_version": "R4",
                "default_policy": if site.opt_in { "opt-in" } else { "opt-out" },
                "patient_identifier_systems": [MRN_SYSTEM]}),
        );
    }
    let gw = builder.start();
    for (s, site) in SITES.iter().enumerate() {
        for (i, p) in world.patients.iter().enumerate() {
            let body = match world.consents[s][i] {
                Consent::None => continue,
                Consent::PermitCaller => consent(&format!("c-{p}-{s}"), p, "dr-alice", true),
                Consent::RefuseCaller => consent(&format!("c-{p}-{s}"), p, "dr-alice", false),
                Consent::PermitOther => consent(&format!("c-{p}-{s}"), p, "dr-bob", true),
                Consent::RefuseOther => consent(&format!("c-{p}-{s}"), p, "dr-bob", false),
            };
            let stored = put_consent(&gw, site.id, &body).await;
            assert_eq!(stored.status, 201, "{}", stored.text());
        }
    }
    let gateway_base = gw.url("/fhir");
    let mut bases = vec![
        UPSTREAM_BASE.to_owned(),
        upstream.base_url(),
        hostile.base_url(),
    ];
    bases.extend(SITES.iter().map(|s| format!("{gateway_base}/{}", s.id)));
    let mut findings = Vec::new();
    for ask in asks {
        let req = world.request(ask);
        check(
            world,
            &gw,
            ask.site % SITES.len(),
            &req,
            &bases,
            &mut findings,
        )
        .await;
    }
    findings
}

fn describe(world: &World) -> String {
    let consents: Vec<String> = SITES
        .iter()
        .enumerate()
        .map(|(s, site)| {
            format!(
                "{}: {:?}",
                site.id,
                world
                    .patients
                    .iter()
                    .zip(&world.consents[s])
                    .collect::<Vec<_>>()
            )
        })
        .collect();
    let owners: Vec<String> = world
        .owners
        .iter()
        .map(|(k, o)| format!("{k} → {o:?}"))
        .collect();
    format!(
        "consents:\n  {}\nowners (oracle):\n  {}\nswaps {:?}, smuggled {:?}",
        consents.join("\n  "),
        owners.join("\n  "),
        world.swaps,
        world.smuggled
    )
}

fn seed() -> [u8; 32] {
    match std::env::var("ASSENT_PROPERTY_SEED").ok().as_deref() {
        None | Some("") => SEED,
        Some("random") => {
            let seed: [u8; 32] = std::array::from_fn(|_| rand_byte());
            eprintln!(
                "property: ASSENT_PROPERTY_SEED={}",
                seed.iter().map(|b| format!("{b:02x}")).collect::<String>()
            );
            seed
        }
        Some(hex) => {
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .filter_map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect();
            bytes
                .try_into()
                .expect("ASSENT_PROPERTY_SEED is 64 hex digits")
        }
    }
}

fn rand_byte() -> u8 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now()) as u8
}

#[test]
fn the_gateway_releases_only_what_the_oracle_permits() {
    let cases = std::env::var("ASSENT_PROPERTY_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(CASES);
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 16,
        max_shrink_time: 180_000,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed()));
    let started = std::time::Instant::now();
    let result = runner.run(&draw(), |draw| {
        let world = World::build(&draw);
        let findings = actix_web::rt::System::new().block_on(run_world(&world, &draw.asks));
        if findings.is_empty() {
            Ok(())
        } else {
            Err(TestCaseError::fail(format!(
                "{} finding(s):\n{}\n{}",
                findings.len(),
                findings.join("\n"),
                describe(&world)
            )))
        }
    });
    let (requests, answered, released) = (
        REQUESTS.load(Ordering::Relaxed),
        ANSWERED.load(Ordering::Relaxed),
        RELEASED.load(Ordering::Relaxed),
    );
    eprintln!(
        "property: {cases} worlds in {:.1} s: {requests} answers, {answered} 2xx, {released} resources of patients released",
        started.elapsed().as_secs_f64()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(
        answered * 3 >= requests && released >= 5 * cases as usize,
        "too little was released for the property to mean anything: {answered} of {requests} answers 2xx, {released} resources"
    );
}
