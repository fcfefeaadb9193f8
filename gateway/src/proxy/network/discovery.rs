//! Discovery at the network level: `Patient?identifier=` and `Patient/$match` across sites,
//! and the network Patient (`Patient/{network-id}`) with a `link` to each site's record.
//!
//! Every site is asked only by a leg (`federation.rs`: a full pipeline request, so that
//! site's consent, the caller's scopes and the site adapter decide what comes back, and the
//! leg has its receipt). Only what the legs released is used: a Patient the pipeline withheld
//! is neither answered, nor learnt, nor scored.
//!
//! - **Search by identifier**: legs `Patient?identifier=system|value` to every site whose
//!   `patient_identifier_systems` has the system; each released Patient is learnt at once
//!   (`NetworkIndex::learn`, certain links by the site's network identifier systems, receipted
//!   with the gateway as actor) so that the answer names its network patient; the answer is a
//!   searchset of network Patients.
//! - **The network Patient** carries its id and one `link` (`type: seealso`, `other` the
//!   site record's gateway URL `{public_base}/fhir/{site}/Patient/{id}`) per linked site
//!   record that the caller's own read of it released (each site's read is a leg), and
//!   nothing else: no name, birth date or identifier (those are each site's record,
//!   decided by its site; a merge of them would be a record no site holds and no consent
//!   decided). A network patient of which the caller may read no record is answered as not
//!   found.
//! - **`$match`**: demographic searches per site (each two of family, given name and birth
//!   date: `Patient?family=&birthdate=` …), and a search by each network identifier of the
//!   given Patient at the sites having its system; each
//!   released Patient is graded: certain (a shared value of a network identifier system,
//!   linked at once, or a link, confirmed, to the network patient so matched), probable
//!   (family, given name and birth date; gender not differing), possible (two of them);
//!   entries carry `search.score` and the match-grade extension.
//!   Probable and possible matches are kept as candidates for an administrator, paired with
//!   the network patient of the certain matches (else of a graded Patient already linked).
//!   A site's own `$match` is not asked: the pipeline forwards no POST operation (405), so
//!   every site is asked by search.
//!
//! A site whose leg failed (unreachable, timed out, an error) is named in an OperationOutcome
//! entry; a leg refused on consent or not finding the record (403, 404) is not named: that
//! would tell which site holds a patient the caller may not see.
//!
//! Leaves out: federated reads of the patient's data (`federated.rs`).

use std::collections::BTreeMap;
use std::time::Instant;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, web};
use assent_fhir::Interaction;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::http::error::GatewayError;
use crate::http::state::AppState;
use crate::proxy::federation::{self, Leg, LegAnswer, LegOutcome, LegPlan};
use crate::proxy::network::{NetworkRequest, federated};
use crate::services::network::{Demographics, Grade, Learned, NetworkIndex, identifiers_of};
use crate::services::network_learner;

/// The match-grade extension of IHE PDQm.
pub const MATCH_GRADE: &str = "http://hl7.org/fhir/StructureDefinition/match-grade";
/// The largest `$match` body read.
const MATCH_BODY_LIMIT: usize = 64 * 1024;

/// `GET /fhir/Patient?identifier=system|value`.
pub async fn search(net: &NetworkRequest<'_>) -> Result<HttpResponse, GatewayError> {
    net.caller
        .verified
        .authorize(Interaction::Search, "Patient")?;
    let query = net.req.query_string();
    let pairs = assent_fhir::query::pairs(query);
    let identifier = match pairs.as_slice() {
        [(name, value)] if name == "identifier" => value.clone(),
        _ => {
            return Err(GatewayError::Malformed(
                "a network Patient search takes one parameter: identifier=system|value".into(),
            ));
        }
    };
    let Some((system, value)) = identifier.split_once('|') else {
        return Err(GatewayError::Malformed(
            "identifier must be system|value".into(),
        ));
    };
    if system.is_empty() || value.is_empty() {
        return Err(GatewayError::Malformed(
            "identifier must be system|value".into(),
        ));
    }
    let state = net.state;
    let legs: Vec<Leg> = sites_with_system(state, system)
        .into_iter()
        .map(|site| Leg {
            path_and_query: format!("/fhir/{site}/Patient?{query}"),
            tag: String::new(),
            site,
        })
        .collect();
    let outcomes = run(net, legs).await?;
    let mut found: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut failures = Vec::new();
    for outcome in &outcomes {
        match released(outcome) {
            Ok(patients) => {
                for patient in patients {
                    let site = &outcome.leg.site;
                    let Some(id) = patient.get("id").and_then(Value::as_str) else {
                        continue;
                    };
                    if let Some(network_id) = learn_now(state, site, patient).await? {
                        found
                            .entry(network_id)
                            .or_default()
                            .push((site.clone(), id.to_owned()));
                    }
                }
            }
            Err(Some(issue)) => failures.push(issue),
            Err(None) => {}
        }
    }
    let base = public_base(state);
    let mut entries: Vec<Value> = found
        .into_iter()
        .map(|(network_id, members)| {
            net.named_network_patient(&network_id);
            json!({
                "fullUrl": format!("{base}/fhir/Patient/{network_id}"),
                "resource": network_patient(state, &network_id, &members),
                "search": {"mode": "match"},
            })
        })
        .collect();
    entries.extend(outcome_entry(failures));
    Ok(searchset(entries))
}

/// `POST /fhir/Patient/$match`.
pub async fn match_patients(
    net: &NetworkRequest<'_>,
    payload: web::Payload,
) -> Result<HttpResponse, GatewayError> {
    net.caller
        .verified
        .authorize(Interaction::Search, "Patient")?;
    let body = read_body(payload).await?;
    let asked = MatchRequest::of(&body)?;
    let state = net.state;
    let wanted = Demographics::of(&asked.patient);
    let asked_ids: Vec<(&str, &str)> = identifiers_of(&asked.patient).collect();
    // One demographic search per site, and one by each network identifier given at the sites
    // having its system.
    let mut legs = Vec::new();
    let demographic = demographic_queries(&wanted);
    for site in sorted_sites(state) {
        for q in &demographic {
            legs.push(Leg {
                site: site.clone(),
                tag: String::new(),
                path_and_query: format!("/fhir/{site}/Patient?{q}"),
            });
        }
        let systems = state.network.systems_of(&site);
        for (system, value) in &asked_ids {
            if systems.iter().any(|s| s == system) {
                let identifier = format!("{system}|{value}");
                let q = assent_fhir::query::encode_pairs([("identifier", identifier.as_str())]);
                legs.push(Leg {
                    site: site.clone(),
                    tag: String::new(),
                    path_and_query: format!("/fhir/{site}/Patient?{q}"),
                });
            }
        }
    }
    if legs.is_empty() {
        return Err(GatewayError::Malformed(
            "the Patient to match needs a family or given name, a birth date, or a network identifier".into(),
        ));
    }
    let outcomes = run(net, legs).await?;
    // Each released Patient once (by site and id), with its entry's fullUrl.
    let mut seen: BTreeMap<(String, String), (String, Value)> = BTreeMap::new();
    let mut failures = Vec::new();
    for outcome in &outcomes {
        match released_entries(outcome) {
            Ok(list) => {
                for (full_url, patient) in list {
                    if let Some(id) = patient.get("id").and_then(Value::as_str) {
                        seen.entry((outcome.leg.site.clone(), id.to_owned()))
                            .or_insert((full_url, patient.clone()));
                    }
                }
            }
            Err(Some(issue)) => failures.push(issue),
            Err(None) => {}
        }
    }
    // Certain first: a shared value of a network identifier system (linked at once).
    let mut certain_network: Option<String> = None;
    let mut certain = Vec::new();
    let mut rest = Vec::new();
    for ((site, id), (full_url, patient)) in seen {
        let systems = state.network.systems_of(&site);
        let shares = identifiers_of(&patient).any(|(s, v)| {
            systems.iter().any(|x| x == s) && asked_ids.iter().any(|(qs, qv)| *qs == s && *qv == v)
        });
        if shares {
            let network_id = learn_now(state, &site, &patient).await?;
            if let Some(n) = &network_id {
                net.named_network_patient(n);
            }
            if certain_network.is_none() {
                certain_network = network_id;
            }
            certain.push((Grade::Certain, site, id, full_url, patient));
        } else {
            rest.push((site, id, full_url, patient));
        }
    }
    // The others: certain too when linked to the network patient matched with certainty (a
    // confirmed link), else graded on demographics.
    let mut graded = certain;
    for (site, id, full_url, patient) in rest {
        let linked = state.network.network_of(&site, &id).map_err(store_error)?;
        let grade = if linked.is_some() && linked == certain_network {
            Some(Grade::Certain)
        } else {
            wanted.grade(&Demographics::of(&patient))
        };
        if let Some(grade) = grade {
            graded.push((grade, site, id, full_url, patient));
        }
    }
    // The network patient candidates are paired with.
    let mut target = certain_network;
    if target.is_none() {
        for (_, site, id, _, _) in &graded {
            if let Some(n) = state.network.network_of(site, id).map_err(store_error)? {
                target = Some(n);
                break;
            }
        }
    }
    let now = state.clock.now_millis();
    if let Some(network_id) = &target {
        for (grade, site, id, _, _) in &graded {
            if *grade != Grade::Certain {
                state
                    .network
                    .propose(site, id, network_id, *grade, now)
                    .map_err(store_error)?;
            }
        }
    }
    graded.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| (&a.1, &a.2).cmp(&(&b.1, &b.2))));
    let mut entries: Vec<Value> = graded
        .into_iter()
        .filter(|(grade, ..)| !asked.only_certain || *grade == Grade::Certain)
        .take(asked.count.unwrap_or(usize::MAX))
        .map(|(grade, _, _, full_url, patient)| {
            json!({
                "fullUrl": full_url,
                "resource": patient,
                "search": {
                    "mode": "match",
                    "score": grade.score(),
                    "extension": [{"url": MATCH_GRADE, "valueCode": grade.as_str()}],
                },
            })
        })
        .collect();
    entries.extend(outcome_entry(failures));
    Ok(searchset(entries))
}

/// `GET /fhir/Patient/{network-id}`.
pub async fn read(net: &NetworkRequest<'_>, id: &str) -> Result<HttpResponse, GatewayError> {
    net.caller
        .verified
        .authorize(Interaction::Read, "Patient")?;
    let state = net.state;
    if !NetworkIndex::is_network_id(id) {
        return Err(GatewayError::NotFound);
    }
    net.named_network_patient(id);
    let members = state.network.members(id).map_err(store_error)?;
    let legs: Vec<Leg> = members
        .iter()
        .filter(|m| state.sites.contains_key(&m.patient.site))
        .map(|m| Leg {
            site: m.patient.site.clone(),
            tag: String::new(),
            path_and_query: format!("/fhir/{}/Patient/{}", m.patient.site, m.patient.id),
        })
        .collect();
    let outcomes = run(net, legs).await?;
    let mut visible = Vec::new();
    let mut failures = Vec::new();
    for outcome in &outcomes {
        match &outcome.answer {
            LegAnswer::Answered {
                status,
                body: Some(body),
                ..
            } if status.is_success()
                && body.get("resourceType").and_then(Value::as_str) == Some("Patient") =>
            {
                if let Some(local) = body.get("id").and_then(Value::as_str) {
                    visible.push((outcome.leg.site.clone(), local.to_owned()));
                }
            }
            _ => {
                if let Some(issue) = failure(outcome) {
                    failures.push(issue);
                }
            }
        }
    }
    if visible.is_empty() && failures.is_empty() {
        // Unknown, or nothing of it the caller may read: the same answer.
        return Err(GatewayError::NotFound);
    }
    let mut patient = network_patient(state, id, &visible);
    if !failures.is_empty() {
        // Sites that could not be asked: the links may be incomplete.
        patient["contained"] = json!([{
            "resourceType": "OperationOutcome",
            "id": "incomplete",
            "issue": failures,
        }]);
    }
    let mut out = HttpResponse::Ok();
    out.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
    Ok(out
        .content_type("application/fhir+json")
        .body(patient.to_string()))
}

/// The network Patient: its id and a `link` to each site record in `members`.
fn network_patient(state: &AppState, network_id: &str, members: &[(String, String)]) -> Value {
    let base = public_base(state);
    let links: Vec<Value> = members
        .iter()
        .map(|(site, id)| {
            json!({
                "other": {"reference": format!("{base}/fhir/{site}/Patient/{id}")},
                "type": "seealso",
            })
        })
        .collect();
    json!({"resourceType": "Patient", "id": network_id, "link": links})
}

/// Learns `patient` of `site` now (certain links by the site's network identifier systems);
/// the network patient it belongs to. Links made are receipted (the gateway as actor) and the
/// decision cache of the patients linked dropped, before the answer goes out.
async fn learn_now(
    state: &AppState,
    site: &str,
    patient: &Value,
) -> Result<Option<String>, GatewayError> {
    let Some(id) = patient.get("id").and_then(Value::as_str) else {
        return Ok(None);
    };
    let now = state.clock.now_millis();
    // The store is asked off the worker's event loop.
    let (network, at, local) = (state.network.clone(), site.to_owned(), id.to_owned());
    let identifiers: Vec<(String, String)> = identifiers_of(patient)
        .map(|(s, v)| (s.to_owned(), v.to_owned()))
        .collect();
    let learned: Learned = web::block(move || {
        let pairs = identifiers.iter().map(|(s, v)| (s.as_str(), v.as_str()));
        network.learn(&at, &local, pairs, now)
    })
    .await
    .map_err(|_| GatewayError::Internal)?
    .map_err(store_error)?;
    network_learner::invalidate_links(&state.consents, &learned);
    if let Some(pending) = network_learner::link_receipt(
        &learned,
        site,
        state.consents.key(),
        state.receipts.gateway_id(),
        now,
    ) && let Err(e) = state.receipts.write(pending).await
    {
        tracing::error!(site = %site, error = %e, "a learnt network link has no receipt");
        return Err(GatewayError::ReceiptUnavailable);
    }
    Ok(learned.network_id)
}

/// Runs `legs` in the caller's FHIR version (as federated reads negotiate it), each tagged
/// with its site (and a number when a site has several), within the network's deadlines.
async fn run(
    net: &NetworkRequest<'_>,
    mut legs: Vec<Leg>,
) -> Result<Vec<LegOutcome>, GatewayError> {
    let dialect = federated::negotiate(net.req, net.state)?;
    let config = &net.state.config.network;
    let plan = LegPlan {
        accept: HeaderValue::from_str(&dialect.client.content_type())
            .map_err(|_| GatewayError::Internal)?,
        site_deadline: config.site_deadline(),
        deadline: Instant::now() + config.deadline(),
    };
    let mut per_site: BTreeMap<String, usize> = BTreeMap::new();
    for leg in &mut legs {
        let n = per_site.entry(leg.site.clone()).or_default();
        *n += 1;
        leg.tag = if *n == 1 {
            leg.site.clone()
        } else {
            format!("{}.{n}", leg.site)
        };
    }
    let outcomes = federation::run_legs(net.req, net.state, net.clients, legs, &plan).await;
    net.access.borrow_mut().legs = outcomes.iter().map(|o| o.request_id.clone()).collect();
    Ok(outcomes)
}

/// The Patients a leg released (entries of its searchset), or why not: `Some` issue naming
/// the site when it failed, `None` when it was refused or found nothing.
fn released(outcome: &LegOutcome) -> Result<Vec<&Value>, Option<Value>> {
    Ok(released_entries(outcome)?
        .into_iter()
        .map(|(_, p)| p)
        .collect())
}

/// As [`released`], with each entry's `fullUrl`.
fn released_entries(outcome: &LegOutcome) -> Result<Vec<(String, &Value)>, Option<Value>> {
    match &outcome.answer {
        LegAnswer::Answered {
            status,
            body: Some(body),
            ..
        } if status.is_success() => Ok(body
            .get("entry")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|e| e.pointer("/search/mode").and_then(Value::as_str) != Some("outcome"))
            .filter_map(|e| {
                let resource = e.get("resource")?;
                (resource.get("resourceType")?.as_str()? == "Patient").then(|| {
                    let full_url = e
                        .get("fullUrl")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned();
                    (full_url, resource)
                })
            })
            .collect()),
        _ => Err(failure(outcome)),
    }
}

/// The issue naming the site of a failed leg; `None` for a leg that answered, was refused
/// (403) or found nothing (404): those are not named.
fn failure(outcome: &LegOutcome) -> Option<Value> {
    let site = &outcome.leg.site;
    let (code, why) = match &outcome.answer {
        LegAnswer::Answered { status, .. }
            if status.is_success() || status.as_u16() == 403 || status.as_u16() == 404 =>
        {
            return None;
        }
        LegAnswer::Answered {
            status, error_code, ..
        } => (
            "incomplete",
            format!(
                "site {site} failed ({}{})",
                status.as_u16(),
                error_code
                    .as_deref()
                    .map(|c| format!(" {c}"))
                    .unwrap_or_default()
            ),
        ),
        LegAnswer::TimedOut => ("timeout", format!("site {site} did not answer in time")),
        LegAnswer::NotRun => ("incomplete", format!("site {site} could not be asked")),
    };
    Some(json!({
        "severity": "warning",
        "code": code,
        "diagnostics": why,
        "expression": [format!("site:{site}")],
    }))
}

/// The OperationOutcome entry of the sites that failed, if any (one issue per site and
/// reason, however many of its legs failed).
fn outcome_entry(mut failures: Vec<Value>) -> Option<Value> {
    let mut seen = std::collections::HashSet::new();
    failures.retain(|issue| seen.insert(issue.to_string()));
    (!failures.is_empty()).then(|| {
        json!({
            "resource": {"resourceType": "OperationOutcome", "issue": failures},
            "search": {"mode": "outcome"},
        })
    })
}

fn searchset(entries: Vec<Value>) -> HttpResponse {
    let bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": entries,
    });
    let mut out = HttpResponse::Ok();
    out.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
    out.content_type("application/fhir+json")
        .body(bundle.to_string())
}

fn public_base(state: &AppState) -> &str {
    state.public_base.trim_end_matches('/')
}

/// Configured sites, by id.
fn sorted_sites(state: &AppState) -> Vec<String> {
    let mut sites: Vec<String> = state.sites.keys().cloned().collect();
    sites.sort();
    sites
}

/// The sites whose `patient_identifier_systems` has `system`, by id.
fn sites_with_system(state: &AppState, system: &str) -> Vec<String> {
    sorted_sites(state)
        .into_iter()
        .filter(|id| {
            state.sites[id]
                .config
                .patient_identifier_systems
                .iter()
                .any(|s| s == system)
        })
        .collect()
}

/// The demographic searches of a `$match`: each two of family, given name and birth date
/// that are given (`family=&given=`, `family=&birthdate=`, `given=&birthdate=`), so that a
/// site finds the records agreeing on two of them (possible) as well as on all three.
fn demographic_queries(d: &Demographics) -> Vec<String> {
    let given = d.given.first();
    let elements = [
        ("family", d.family.as_ref()),
        ("given", given),
        ("birthdate", d.birth_date.as_ref()),
    ];
    let mut queries = Vec::new();
    for (i, (a, va)) in elements.iter().enumerate() {
        for (b, vb) in &elements[i + 1..] {
            if let (Some(va), Some(vb)) = (va, vb) {
                queries.push(assent_fhir::query::encode_pairs([
                    (*a, va.as_str()),
                    (*b, vb.as_str()),
                ]));
            }
        }
    }
    queries
}

/// A `$match` request's parameters.
struct MatchRequest {
    patient: Value,
    only_certain: bool,
    count: Option<usize>,
}

impl MatchRequest {
    fn of(body: &Value) -> Result<MatchRequest, GatewayError> {
        let invalid = |message: &str, expression: &str| GatewayError::InvalidResource {
            message: message.to_owned(),
            expression: Some(expression.to_owned()),
        };
        if body.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
            return Err(invalid("$match takes a Parameters resource", "Parameters"));
        }
        let params = body
            .get("parameter")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let named = |name: &str| {
            params
                .iter()
                .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
        };
        let patient = named("resource")
            .and_then(|p| p.get("resource"))
            .filter(|r| r.get("resourceType").and_then(Value::as_str) == Some("Patient"))
            .cloned()
            .ok_or_else(|| {
                invalid(
                    "$match needs a Patient in the resource parameter",
                    "Parameters.parameter.resource",
                )
            })?;
        let only_certain = named("onlyCertainMatches")
            .and_then(|p| p.get("valueBoolean"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let count = match named("count") {
            None => None,
            Some(p) => Some(
                p.get("valueInteger")
                    .and_then(Value::as_u64)
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        invalid(
                            "count must be a positive integer",
                            "Parameters.parameter.count",
                        )
                    })? as usize,
            ),
        };
        Ok(MatchRequest {
            patient,
            only_certain,
            count,
        })
    }
}

async fn read_body(mut payload: web::Payload) -> Result<Value, GatewayError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|_| GatewayError::Malformed("the body could not be read".into()))?;
        if body.len() + chunk.len() > MATCH_BODY_LIMIT {
            return Err(GatewayError::BodyTooLarge {
                limit: MATCH_BODY_LIMIT,
            });
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body)
        .map_err(|e| GatewayError::Malformed(format!("the body is not JSON: {e}")))
}

fn store_error(e: crate::store::StoreError) -> GatewayError {
    tracing::error!(error = %e, "the network index could not be read");
    GatewayError::StoreUnavailable
}
