//! The HOSTILE upstream, a FAKE: serves a data set like a careless or compromised hospital
//! server would, lying in the ways the gateway must not believe. It honours little (type,
//! `_id`, and patient-reference parameters such as `subject=Patient/x`; the rest is ignored)
//! and, per [`Lie`] switched on, answers a read with another resource, smuggles resources into
//! Bundles as `outcome` or `include` entries or nested inside a resource, puts internal host
//! names and its own base URL into texts, inflates `Bundle.total`, answers 304 to any
//! conditional header, honours `_elements`/`_summary` by stripping the patient references,
//! and answers every operation with everyone's data.
//!
//! Leaves out: telling the truth (that is the realistic upstream, `realistic.rs`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::dataset::UPSTREAM_BASE;
use crate::{FakeResponse, FakeUpstream, SeenRequest};

/// The internal host and port the hostile upstream leaks in its texts.
pub const INTERNAL_HOST: &str = "db01.internal:5432";
/// A second internal endpoint it names.
pub const INTERNAL_ENDPOINT: &str = "fhir-backend.internal:8443";

/// One way of lying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lie {
    /// A read (or vread) of a resource listed in [`Lies::swaps`] answers another resource.
    MismatchedReads,
    /// Every search Bundle carries the smuggled resources as `search.mode = outcome` entries.
    OutcomeEntries,
    /// Every search Bundle carries the smuggled resources as `search.mode = include` entries.
    IncludeEntries,
    /// OperationOutcomes (errors, and an outcome entry in every search Bundle) name internal
    /// hosts and ports.
    InternalHosts,
    /// Its own base URL inside narrative, identifier values and extension strings of every
    /// resource it returns.
    BaseUrlInStrings,
    /// `Bundle.total` counts entries it does not return (matches plus the smuggled ones).
    InflatedTotal,
    /// 304 Not Modified to any `If-None-Match` / `If-Modified-Since`, without looking.
    Blind304,
    /// `_elements` / `_summary` honoured by removing every element that refers to a patient.
    StripOnShaping,
    /// Every operation (`$anything`) answers a searchset of every resource it has.
    OperationsLeak,
    /// Every search Bundle carries a `Parameters` entry (mode match) with a Bundle of the
    /// smuggled resources nested inside.
    NestedBundle,
}

impl Lie {
    pub const ALL: [Lie; 10] = [
        Lie::MismatchedReads,
        Lie::OutcomeEntries,
        Lie::IncludeEntries,
        Lie::InternalHosts,
        Lie::BaseUrlInStrings,
        Lie::InflatedTotal,
        Lie::Blind304,
        Lie::StripOnShaping,
        Lie::OperationsLeak,
        Lie::NestedBundle,
    ];
}

/// What the hostile upstream lies with.
#[derive(Debug, Clone, Default)]
pub struct Lies {
    pub enabled: Vec<Lie>,
    /// `Type/id` asked → `Type/id` answered, for [`Lie::MismatchedReads`].
    pub swaps: Vec<(String, String)>,
    /// `Type/id` of the resources smuggled into Bundles.
    pub smuggled: Vec<String>,
}

impl Lies {
    /// Every lie at once.
    pub fn all(swaps: &[(&str, &str)], smuggled: &[String]) -> Lies {
        Lies {
            enabled: Lie::ALL.to_vec(),
            swaps: swaps
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
            smuggled: smuggled.to_vec(),
        }
    }

    fn on(&self, lie: Lie) -> bool {
        self.enabled.contains(&lie)
    }
}

/// The HOSTILE FAKE upstream (on 127.0.0.1 port 0, stopped when dropped).
pub struct HostileUpstream {
    pub fake: FakeUpstream,
}

impl HostileUpstream {
    /// Serves `resources` (the latest version of each `Type/id`, `{{upstream-base}}` replaced
    /// by its base URL) with `lies`.
    pub fn start(resources: &[Value], lies: Lies) -> HostileUpstream {
        let mut latest: BTreeMap<String, Value> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        for r in resources {
            let key = key_of(r);
            if !latest.contains_key(&key) {
                order.push(key.clone());
            }
            latest.insert(key, r.clone());
        }
        let data: Vec<(String, String)> = order
            .into_iter()
            .map(|k| {
                let text = latest[&k].to_string();
                (k, text)
            })
            .collect();
        let fake = FakeUpstream::start(move |req, base| answer(req, base, &data, &lies));
        HostileUpstream { fake }
    }

    pub fn base_url(&self) -> String {
        self.fake.base_url()
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        self.fake.requests()
    }
}

fn key_of(r: &Value) -> String {
    format!(
        "{}/{}",
        r["resourceType"].as_str().unwrap_or_default(),
        r["id"].as_str().unwrap_or_default()
    )
}

fn fhir(status: u16, body: Value) -> FakeResponse {
    FakeResponse::json(status, body)
}

fn resource(data: &[(String, String)], base: &str, key: &str) -> Option<Value> {
    data.iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, text)| serde_json::from_str(&text.replace(UPSTREAM_BASE, base)).ok())
}

fn error(status: u16, lies: &Lies, text: &str) -> FakeResponse {
    let diagnostics = if lies.on(Lie::InternalHosts) {
        format!("{text} (backend {INTERNAL_HOST} via {INTERNAL_ENDPOINT})")
    } else {
        text.to_owned()
    };
    fhir(
        status,
        json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing", "diagnostics": diagnostics}]}),
    )
}

/// Its own base URL inside the resource's strings.
fn plant_base(resource: &mut Value, base: &str) {
    let Some(object) = resource.as_object_mut() else {
        return;
    };
    object.insert(
        "text".into(),
        json!({"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">Served by {base}/metadata</div>")}),
    );
    let id = object
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let identifier =
        json!({"system": format!("{base}/identifiers"), "value": format!("{base}/Basic/{id}")});
    match object.get_mut("identifier") {
        Some(Value::Array(list)) => list.push(identifier),
        Some(_) => {}
        None => {
            object.insert("identifier".into(), json!([identifier]));
        }
    }
    object.insert(
        "extension".into(),
        json!([{"url": "http://example.org/fhir/StructureDefinition/source", "valueString": format!("copied from {base}")}]),
    );
}

/// Removes every top-level element that refers to a patient.
fn strip_patients(resource: &mut Value) {
    if let Some(object) = resource.as_object_mut() {
        object
            .retain(|k, v| k == "resourceType" || k == "id" || !v.to_string().contains("Patient/"));
    }
}

fn params_of(req: &SeenRequest) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = url::form_urlencoded::parse(req.query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if req.method == "POST" {
        out.extend(
            url::form_urlencoded::parse(&req.body).map(|(k, v)| (k.into_owned(), v.into_owned())),
        );
    }
    out
}

/// Whether a resource matches the few parameters the hostile upstream honours.
fn matches(resource: &Value, params: &[(String, String)]) -> bool {
    let text = resource.to_string();
    params.iter().all(|(name, value)| {
        let code = name.split([':', '.']).next().unwrap_or_default();
        if code == "_id" {
            let id = resource["id"].as_str().unwrap_or_default();
            return value.split(',').any(|v| v == id);
        }
        if ["subject", "patient", "beneficiary", "individual", "for"].contains(&code)
            && !name.contains('.')
        {
            return value.split(',').any(|v| {
                let v = v.rsplit_once("/Patient/").map(|(_, id)| id).unwrap_or(v);
                let v = v.trim_start_matches("Patient/");
                text.contains(&format!("\"Patient/{v}\""))
            });
        }
        true
    })
}

fn answer(req: &SeenRequest, base: &str, data: &[(String, String)], lies: &Lies) -> FakeResponse {
    let conditional =
        req.header("if-none-match").is_some() || req.header("if-modified-since").is_some();
    if lies.on(Lie::Blind304) && conditional {
        return FakeResponse {
            status: 304,
            headers: vec![("etag".into(), "W/\"1\"".into())],
            body: Vec::new(),
            delay: None,
        };
    }
    let path = req.path.trim_start_matches("/fhir").trim_matches('/');
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let params = params_of(req);
    let shaping = params
        .iter()
        .any(|(k, _)| k == "_elements" || k == "_summary");
    let finish = |mut r: Value| {
        if lies.on(Lie::BaseUrlInStrings) {
            plant_base(&mut r, base);
        }
        if lies.on(Lie::StripOnShaping) && shaping {
            strip_patients(&mut r);
        }
        r
    };
    if segments.iter().any(|s| s.starts_with('$')) {
        if !lies.on(Lie::OperationsLeak) {
            return error(400, lies, "operation not supported");
        }
        let entries: Vec<Value> = data
            .iter()
            .filter_map(|(k, _)| resource(data, base, k))
            .map(|r| json!({"fullUrl": format!("{base}/{}", key_of(&r)), "resource": finish(r), "search": {"mode": "match"}}))
            .collect();
        return fhir(
            200,
            json!({"resourceType": "Bundle", "type": "searchset", "total": entries.len(), "entry": entries}),
        );
    }
    match segments.as_slice() {
        ["metadata"] => fhir(
            200,
            json!({"resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
                "date": "2024-01-01", "fhirVersion": "4.0.1", "format": ["json"],
                "implementation": {"description": format!("backend {INTERNAL_HOST}"), "url": base},
                "rest": [{"mode": "server"}]}),
        ),
        [t] | [t, "_search"] => {
            let matched: Vec<Value> = data
                .iter()
                .filter(|(k, _)| k.split('/').next() == Some(*t))
                .filter_map(|(k, _)| resource(data, base, k))
                .filter(|r| matches(r, &params))
                .collect();
            let count_only = params
                .iter()
                .any(|(k, v)| (k == "_summary" && v == "count") || (k == "_count" && v == "0"));
            let mut entries: Vec<Value> = if count_only {
                Vec::new()
            } else {
                matched
                    .iter()
                    .map(|r| json!({"fullUrl": format!("{base}/{}", key_of(r)), "resource": finish(r.clone()), "search": {"mode": "match"}}))
                    .collect()
            };
            let smuggled: Vec<Value> = lies
                .smuggled
                .iter()
                .filter_map(|k| resource(data, base, k))
                .collect();
            for (lie, mode) in [
                (Lie::OutcomeEntries, "outcome"),
                (Lie::IncludeEntries, "include"),
            ] {
                if lies.on(lie) && !count_only {
                    entries.extend(smuggled.iter().map(|r| json!({"fullUrl": format!("{base}/{}", key_of(r)), "resource": finish(r.clone()), "search": {"mode": mode}})));
                }
            }
            if lies.on(Lie::NestedBundle) && !count_only {
                let nested: Vec<Value> = smuggled.iter().map(|r| json!({"resource": r})).collect();
                entries.push(json!({"fullUrl": format!("{base}/Parameters/nested"), "search": {"mode": "match"},
                    "resource": {"resourceType": "Parameters", "id": "nested", "parameter": [
                        {"name": "result", "resource": {"resourceType": "Bundle", "type": "collection", "entry": nested}}]}}));
            }
            if lies.on(Lie::InternalHosts) && !count_only {
                entries.push(json!({"search": {"mode": "outcome"}, "resource": {"resourceType": "OperationOutcome",
                    "issue": [{"severity": "warning", "code": "informational",
                        "diagnostics": format!("served from replica {INTERNAL_ENDPOINT}; index {INTERNAL_HOST} lagging")}]}}));
            }
            let mut total = matched.len();
            if lies.on(Lie::InflatedTotal) {
                total += smuggled.len().max(1);
            }
            fhir(
                200,
                json!({"resourceType": "Bundle", "type": "searchset", "total": total,
                    "link": [{"relation": "self", "url": format!("{base}/{t}?{}", req.query)}],
                    "entry": entries}),
            )
        }
        [t, id] | [t, id, "_history", _] => {
            let asked = format!("{t}/{id}");
            let answered = if lies.on(Lie::MismatchedReads) {
                lies.swaps
                    .iter()
                    .find(|(a, _)| *a == asked)
                    .map(|(_, b)| b.clone())
                    .unwrap_or(asked)
            } else {
                asked
            };
            match resource(data, base, &answered) {
                Some(r) => {
                    let version = r["meta"]["versionId"].as_str().unwrap_or("1").to_owned();
                    fhir(200, finish(r)).header("etag", &format!("W/\"{version}\""))
                }
                None => error(404, lies, &format!("{answered} not found")),
            }
        }
        _ => error(400, lies, "not supported"),
    }
}
