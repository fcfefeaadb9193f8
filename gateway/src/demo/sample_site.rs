//! DEMO PART: a small in-memory FHIR server standing in for a hospital in `assent demo`.
//! It serves on loopback over HTTP, so the gateway reaches it through the same upstream code
//! path as a real site. It answers read, vread, history, search (GET and POST `_search`,
//! by `_id`, `patient`/`subject`, `identifier` (`system|value`), `family`, `given`, `name`,
//! `birthdate` and `gender`, with `_count` and offset paging links that carry its own base
//! URL), `Patient/{id}/$everything` and `metadata`. A search parameter it does not know
//! (other than a result parameter such as `_sort`) matches nothing (an empty answer rather than every resource, so that a lookup by a
//! parameter it cannot honour never widens). Nothing else; it is no FHIR server.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use assent_fhir::FhirVersion;
use serde_json::{Value, json};

use crate::http::loopback::ThreadServer;

/// The base path the sample server serves FHIR under.
pub const BASE_PATH: &str = "/fhir";

struct Data {
    version: FhirVersion,
    /// (type, id) → resource
    resources: BTreeMap<(String, String), Value>,
    base: String,
}

/// A running sample site.
pub struct SampleSite {
    pub addr: SocketAddr,
    _server: ThreadServer,
}

impl SampleSite {
    /// Starts a sample site on 127.0.0.1 (port 0) serving `resources`.
    pub fn start(version: FhirVersion, resources: Vec<Value>) -> std::io::Result<SampleSite> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let mut map = BTreeMap::new();
        for r in resources {
            let ty = r["resourceType"].as_str().unwrap_or_default().to_owned();
            let id = r["id"].as_str().unwrap_or_default().to_owned();
            map.insert((ty, id), r);
        }
        let data = Arc::new(Data {
            version,
            resources: map,
            base: format!("http://{addr}{BASE_PATH}"),
        });
        let data = web::Data::from(data);
        let server = ThreadServer::start("assent-demo-site", listener, move |cfg| {
            cfg.app_data(data.clone())
                .route("/fhir/{rest:.*}", web::route().to(serve));
        })?;
        Ok(SampleSite {
            addr,
            _server: server,
        })
    }

    /// The FHIR base URL of this site.
    pub fn base_url(&self) -> String {
        format!("http://{}{BASE_PATH}", self.addr)
    }
}

async fn serve(req: HttpRequest, body: web::Bytes, data: web::Data<Data>) -> HttpResponse {
    let rest = req.match_info().get("rest").unwrap_or_default().to_owned();
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let mut params = assent_fhir::query::pairs(req.query_string());
    if req.method() == actix_web::http::Method::POST {
        params.extend(assent_fhir::query::pairs(&String::from_utf8_lossy(&body)));
    }
    match segments.as_slice() {
        ["metadata"] => fhir(200, capability_statement(&data)),
        [ty, "_search"] if req.method() == actix_web::http::Method::POST => {
            search(&data, ty, &params)
        }
        [ty] => search(&data, ty, &params),
        [ty, id] => match data.resources.get(&(ty.to_string(), id.to_string())) {
            Some(r) => fhir(200, r.clone()),
            None => not_found(),
        },
        [ty, id, "_history"] => match data.resources.get(&(ty.to_string(), id.to_string())) {
            Some(r) => fhir(200, bundle(&data, "history", vec![r.clone()], None, None)),
            None => not_found(),
        },
        [ty, id, "_history", vid] => match data.resources.get(&(ty.to_string(), id.to_string())) {
            Some(r) if r["meta"]["versionId"] == *vid => fhir(200, r.clone()),
            _ => not_found(),
        },
        ["Patient", id, "$everything"] => everything(&data, id),
        _ => fhir(
            404,
            json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-supported"}]}),
        ),
    }
}

fn search(data: &Data, ty: &str, params: &[(String, String)]) -> HttpResponse {
    let mut count = 10usize;
    let mut offset = 0usize;
    let mut filters: Vec<(&str, &str)> = Vec::new();
    for (k, v) in params {
        match k.as_str() {
            "_count" => count = v.parse().unwrap_or(10).clamp(1, 50),
            "_offset" => offset = v.parse().unwrap_or(0),
            // `_elements` is not applied: the whole resource comes back (as some servers
            // do); the gateway keeps what it needs (the portal's directory: id and name).
            "_format" | "_elements" => {}
            other => filters.push((other, v.as_str())),
        }
    }
    let matches: Vec<Value> = data
        .resources
        .iter()
        .filter(|((t, _), _)| t == ty)
        .map(|(_, r)| r)
        .filter(|r| filters.iter().all(|(k, v)| matches(r, k, v)))
        .cloned()
        .collect();
    let total = matches.len();
    let page: Vec<Value> = matches.into_iter().skip(offset).take(count).collect();
    let query_without_offset: Vec<String> = params
        .iter()
        .filter(|(k, _)| k != "_offset" && k != "_count")
        .map(|(k, v)| {
            format!(
                "{k}={}",
                url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
            )
        })
        .collect();
    let link = |off: usize| {
        let mut q = query_without_offset.clone();
        q.push(format!("_count={count}"));
        q.push(format!("_offset={off}"));
        format!("{}/{ty}?{}", data.base, q.join("&"))
    };
    let next = (offset + count < total).then(|| link(offset + count));
    let previous = (offset > 0).then(|| link(offset.saturating_sub(count)));
    let mut b = bundle(data, "searchset", page, next, previous);
    b["total"] = json!(total);
    if let Some(links) = b["link"].as_array_mut() {
        links.insert(0, json!({"relation": "self", "url": link(offset)}));
    }
    fhir(200, b)
}

fn matches(resource: &Value, key: &str, value: &str) -> bool {
    match key {
        "_id" => resource["id"] == value,
        "patient" | "subject" => {
            let wanted = if value.contains('/') {
                value.to_owned()
            } else {
                format!("Patient/{value}")
            };
            resource["subject"]["reference"] == wanted.as_str()
                || (resource["resourceType"] == "Patient"
                    && format!("Patient/{}", resource["id"].as_str().unwrap_or_default()) == wanted)
        }
        "gender" => resource["gender"] == value,
        "identifier" => {
            let (system, wanted) = match value.split_once('|') {
                Some((system, v)) => (Some(system), v),
                None => (None, value),
            };
            resource["identifier"].as_array().is_some_and(|ids| {
                ids.iter().any(|i| {
                    i["value"] == wanted && system.is_none_or(|s| s.is_empty() || i["system"] == s)
                })
            })
        }
        "birthdate" => resource["birthDate"] == value,
        "family" | "given" | "name" => {
            let value = value.to_lowercase();
            let starts = |s: Option<&str>| s.is_some_and(|s| s.to_lowercase().starts_with(&value));
            resource["name"].as_array().is_some_and(|names| {
                names.iter().any(|n| {
                    let family = starts(n["family"].as_str());
                    let given = n["given"]
                        .as_array()
                        .is_some_and(|g| g.iter().any(|g| starts(g.as_str())));
                    match key {
                        "family" => family,
                        "given" => given,
                        _ => family || given,
                    }
                })
            })
        }
        // A result parameter (`_sort`, `_include`, …) does not filter; a search parameter
        // this sample does not know matches nothing, so that a lookup by it never widens.
        other => other.starts_with('_'),
    }
}

fn everything(data: &Data, id: &str) -> HttpResponse {
    let reference = format!("Patient/{id}");
    let Some(patient) = data.resources.get(&("Patient".to_owned(), id.to_owned())) else {
        return not_found();
    };
    let mut entries = vec![patient.clone()];
    entries.extend(
        data.resources
            .values()
            .filter(|r| r["subject"]["reference"] == reference.as_str())
            .cloned(),
    );
    fhir(200, bundle(data, "searchset", entries, None, None))
}

fn bundle(
    data: &Data,
    kind: &str,
    resources: Vec<Value>,
    next: Option<String>,
    previous: Option<String>,
) -> Value {
    let entries: Vec<Value> = resources
        .into_iter()
        .map(|r| {
            let full_url = format!(
                "{}/{}/{}",
                data.base,
                r["resourceType"].as_str().unwrap_or_default(),
                r["id"].as_str().unwrap_or_default()
            );
            let mut e = json!({"fullUrl": full_url, "resource": r});
            if kind == "searchset" {
                e["search"] = json!({"mode": "match"});
            }
            e
        })
        .collect();
    let mut links = Vec::new();
    if let Some(n) = next {
        links.push(json!({"relation": "next", "url": n}));
    }
    if let Some(p) = previous {
        links.push(json!({"relation": "previous", "url": p}));
    }
    json!({"resourceType": "Bundle", "type": kind, "link": links, "entry": entries})
}

fn capability_statement(data: &Data) -> Value {
    let types = [
        "Patient",
        "Observation",
        "Condition",
        "Encounter",
        "MedicationRequest",
        "Practitioner",
        "Organization",
    ];
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-22",
        "kind": "instance",
        "fhirVersion": data.version.semver(),
        "format": ["json"],
        "implementation": {"description": "Assent demo sample site", "url": data.base},
        "rest": [{"mode": "server", "resource": types.iter().map(|t| json!({
            "type": t,
            "interaction": [{"code": "read"}, {"code": "vread"}, {"code": "search-type"}, {"code": "history-instance"}],
        })).collect::<Vec<_>>()}],
    })
}

fn fhir(status: u16, body: Value) -> HttpResponse {
    HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status)
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR),
    )
    .content_type("application/fhir+json")
    .body(body.to_string())
}

fn not_found() -> HttpResponse {
    fhir(
        404,
        json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found"}]}),
    )
}
