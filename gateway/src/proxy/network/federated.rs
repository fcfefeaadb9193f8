//! Federated reads of a network patient: `Patient/{network-id}/$everything` and
//! `{type}?patient={network-id}` (or `subject=Patient/{network-id}`), fanned out to every site
//! holding the patient and merged into one searchset; paging across sites (`GET
//! /fhir?_page=…`); the network's CapabilityStatement (`/fhir/metadata`).
//!
//! Each site's share is a leg (`federation.rs`): the caller's request to that site with the
//! site's local id in place of the network id, other parameters as given, run through the
//! pipeline (that site's consent and default policy, the caller's scopes, the site adapter,
//! enforcement, its own receipt), asking the federated answer's version: the caller's
//! (`fhirVersion` of `Accept` or `_format`), else `[fhir] default_version`, else R4.
//!
//! The merge: every entry as its leg released it (its `fullUrl` under `/fhir/{site}/…`), with
//! the extension [`SOURCE_SITE_EXTENSION`] on the entry naming its site (the resource's own
//! `meta.source` is left as the site wrote it). How each leg is read:
//! - answered with a Bundle: its entries; its `next` link goes into the federated cursor;
//! - refused on consent (403 `consent-denied` or `break-glass-justification-required`, any
//!   404 or 410): nothing, and nothing says so for that site (**Invariant:** a consent refusal
//!   is never named per site); the generic withheld notice is kept only where `release.rs`'s
//!   rule allows it for the request as a whole: some leg withheld entries of its permitted
//!   patient and no leg was refused;
//! - failed (no answer by its deadline, 5xx: unreachable, timed out, circuit open, the site's
//!   error, a receipt not durable) or refused for another reason (a 4xx the caller could
//!   mend, such as a lossy translation under strict handling): an OperationOutcome entry
//!   (`search.mode = outcome`) naming the site and the stable code of why. With
//!   `Prefer: handling=strict` such a partial answer is 502 `federation-incomplete` instead,
//!   naming the failed sites. When every leg failed on the same client error (scopes, a
//!   version not served), that error is the answer.
//!
//! `total` is given only when it is exact: no leg failed, no leg has further pages, and
//! every answering leg gave its own (the count of what it released).
//!
//! Paging: the federated `next` link is one link, `{base}/fhir?_page={cursor}&_sig={token}`,
//! signed by the gateway's `PageSigner` for the caller (scope `network`, path `/fhir`); the
//! cursor holds the network patient, the version, and each site's own signed page link.
//! Following it runs a leg per site on its link (each link's own token checked by the
//! pipeline again), for sites that still hold the patient.
//!
//! Leaves out: running legs (`federation.rs`), discovery (`discovery.rs`), the network
//! request's own receipt (`network.rs`).

use std::collections::BTreeMap;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use assent_fhir::compartment::{
    PatientRef, ReferenceContext, RequestPatients, parse_search, request_patients,
};
use assent_fhir::spelling::Spellings;
use assent_fhir::{FhirVersion, Interaction};
use assent_receipts::{AccessDecision, ResourceEntry};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::http::error::{ERROR_CODE_SYSTEM, GatewayError};
use crate::http::state::AppState;
use crate::proxy::answer;
use crate::proxy::dialect::{self, Dialect, TRANSLATION_ISSUES_HEADER};
use crate::proxy::federation::{self, Leg, LegAnswer, LegOutcome, LegPlan};
use crate::proxy::network::NetworkRequest;
use crate::proxy::release;
use crate::proxy::request;
use crate::services::network::NetworkLink;

/// The extension on each entry of a federated answer naming the site it came from
/// (`valueString`: the site id). On the entry, not in `meta.source`, so that a site's own
/// `meta.source` is passed on as the site wrote it.
pub const SOURCE_SITE_EXTENSION: &str = "urn:assent:source-site";

/// The resource types searchable by network patient, in every version's names, with the
/// reference search parameters the network's CapabilityStatement lists for them (any
/// parameter the whose-data rule reads as naming the patient is accepted).
pub const FEDERATED_TYPES: &[(&str, &[&str])] = &[
    ("AllergyIntolerance", &["patient"]),
    ("CarePlan", &["patient", "subject"]),
    ("CareTeam", &["patient", "subject"]),
    ("Condition", &["patient", "subject"]),
    ("DiagnosticReport", &["patient", "subject"]),
    ("DocumentReference", &["patient", "subject"]),
    ("Encounter", &["patient", "subject"]),
    ("Goal", &["patient", "subject"]),
    ("Immunization", &["patient"]),
    ("MedicationAdministration", &["patient", "subject"]),
    ("MedicationDispense", &["patient", "subject"]),
    ("MedicationRequest", &["patient", "subject"]),
    ("MedicationStatement", &["patient", "subject"]),
    ("Observation", &["patient", "subject"]),
    ("Procedure", &["patient", "subject"]),
    ("ServiceRequest", &["patient", "subject"]),
];

/// The signer scope of federated page links (where a site's are signed for the site).
const PAGE_SCOPE: &str = "network";
/// The path federated page links are signed for.
const NETWORK_BASE: &str = "/fhir";
/// The parameter holding the federated cursor.
const PAGE_PARAM: &str = "_page";

/// `GET /fhir/metadata` (and `HEAD`), without authentication: the network's
/// CapabilityStatement in the asked version. It reads nothing of any site or patient.
pub async fn metadata(
    req: &HttpRequest,
    state: &web::Data<AppState>,
) -> Result<HttpResponse, GatewayError> {
    let query = req.query_string();
    request::check_query(query)?;
    let dialect = negotiate(req, state)?;
    let statement = network_statement(state);
    let mut translated = dialect.translate_capabilities(statement)?;
    if dialect.client == FhirVersion::Stu3 {
        // Required in STU3 (1..1); the gateway reads no resource from a FHIR client.
        translated.resource["acceptUnknown"] = json!("no");
    }
    let mut out = HttpResponse::Ok();
    out.insert_header((
        header::CONTENT_TYPE,
        HeaderValue::from_str(&dialect.client.content_type())
            .map_err(|_| GatewayError::Internal)?,
    ));
    out.insert_header((
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    ));
    let body = answer::body_of(
        &translated.resource,
        answer::pretty(query),
        &Spellings::default(),
    )?;
    Ok(out.body(body))
}

/// `GET /fhir/Patient/{network-id}/$everything`.
pub async fn everything(net: &NetworkRequest<'_>, id: &str) -> Result<HttpResponse, GatewayError> {
    let query = net.req.query_string().to_owned();
    asked(net, &format!("Patient/{id}/$everything"), &query)?;
    let dialect = negotiate(net.req, net.state)?;
    let members = members_of(net, id).await?;
    let mut legs = Vec::with_capacity(members.len());
    let mut per_site: BTreeMap<String, usize> = BTreeMap::new();
    for link in &members {
        let site = &link.patient.site;
        let n = per_site.entry(site.clone()).or_default();
        *n += 1;
        let tag = if *n == 1 {
            site.clone()
        } else {
            format!("{site}.{n}")
        };
        legs.push(Leg {
            site: site.clone(),
            tag,
            path_and_query: with_query(
                format!("/fhir/{site}/Patient/{}/$everything", link.patient.id),
                &query,
            ),
        });
    }
    let kind = Kind {
        network_id: id.to_owned(),
        operation: true,
        resource_type: "Patient".to_owned(),
    };
    federate(net, &dialect, kind, legs).await
}

/// `GET /fhir/{type}?patient={network-id}` (or `patient=Patient/{network-id}`,
/// `subject=Patient/{network-id}`, `subject:Patient={network-id}`).
pub async fn search(
    net: &NetworkRequest<'_>,
    resource_type: &str,
) -> Result<HttpResponse, GatewayError> {
    let query = net.req.query_string().to_owned();
    asked(net, resource_type, &query)?;
    if !FEDERATED_TYPES.iter().any(|(t, _)| *t == resource_type) {
        return Err(GatewayError::FederatedFormNotServed(format!(
            "a search by network patient is served for {}",
            FEDERATED_TYPES
                .iter()
                .map(|(t, _)| *t)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let dialect = negotiate(net.req, net.state)?;
    let network_base = format!("{}{NETWORK_BASE}", net.state.public_base);
    let named = named_patient(&query, dialect.client, resource_type, &network_base)?;
    let members = members_of(net, &named.network_id).await?;
    let mut by_site: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for link in members {
        by_site
            .entry(link.patient.site)
            .or_default()
            .push(link.patient.id);
    }
    let legs = by_site
        .into_iter()
        .map(|(site, ids)| {
            let mut segments = named.segments.clone();
            segments[named.at] = named.at_site(&ids);
            Leg {
                tag: site.clone(),
                path_and_query: with_query(
                    format!("/fhir/{site}/{resource_type}"),
                    &segments.join("&"),
                ),
                site,
            }
        })
        .collect();
    let kind = Kind {
        network_id: named.network_id,
        operation: false,
        resource_type: resource_type.to_owned(),
    };
    federate(net, &dialect, kind, legs).await
}

/// `GET /fhir?_page=…&_sig=…`: the next page of a federated answer, for the caller it was
/// signed for.
pub async fn page(net: &NetworkRequest<'_>) -> Result<HttpResponse, GatewayError> {
    let query = net.req.query_string();
    net.state
        .signer
        .verify_query(PAGE_SCOPE, &net.caller.id, NETWORK_BASE, query)
        .map_err(|e| {
            tracing::info!(reason = %e, "federated paging link refused");
            GatewayError::BadPageToken(e)
        })?;
    let cursor = assent_fhir::query::pairs(query)
        .into_iter()
        .find(|(n, _)| n == PAGE_PARAM)
        .and_then(|(_, v)| Cursor::decode(&v))
        // Signed by this gateway: only another version of it could write one it cannot read.
        .ok_or(GatewayError::BadPageToken(
            crate::http::paging::PageTokenError::Malformed,
        ))?;
    {
        let mut access = net.access.borrow_mut();
        access.interaction = Some(if cursor.operation {
            Interaction::Operation
        } else {
            Interaction::Search
        });
        access.resource_type = Some(cursor.resource_type.clone());
    }
    let version: FhirVersion = cursor.version.parse().map_err(|_| GatewayError::Internal)?;
    let mut dialect = negotiate(net.req, net.state)?;
    dialect.client = version;
    // Only sites that still hold the patient are asked again.
    let members = members_of(net, &cursor.network_id).await?;
    let legs = cursor
        .legs
        .iter()
        .filter(|l| members.iter().any(|m| m.patient.site == l.site))
        .filter(|l| net.state.sites.contains_key(&l.site) && is_under_site(&l.path, &l.site))
        .map(|l| Leg {
            site: l.site.clone(),
            tag: l.tag.clone(),
            path_and_query: l.path.clone(),
        })
        .collect();
    let kind = Kind {
        network_id: cursor.network_id,
        operation: cursor.operation,
        resource_type: cursor.resource_type,
    };
    federate(net, &dialect, kind, legs).await
}

/// What a federated request reads, as its cursor carries it on.
struct Kind {
    network_id: String,
    operation: bool,
    resource_type: String,
}

/// The federated cursor inside a signed page link.
#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    #[serde(rename = "n")]
    network_id: String,
    #[serde(rename = "v")]
    version: String,
    #[serde(rename = "o")]
    operation: bool,
    #[serde(rename = "t")]
    resource_type: String,
    #[serde(rename = "l")]
    legs: Vec<CursorLeg>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CursorLeg {
    #[serde(rename = "s")]
    site: String,
    #[serde(rename = "g")]
    tag: String,
    /// The site's own page link, `/fhir/{site}/…?…&_assent_page=…`.
    #[serde(rename = "p")]
    path: String,
}

impl Cursor {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(text: &str) -> Option<Cursor> {
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// The patient-naming parameter of a federated search, and the query around it.
struct NamedPatient {
    network_id: String,
    /// The query's `&`-separated segments, as given.
    segments: Vec<String>,
    /// Which segment names the patient.
    at: usize,
    /// Its name as given (`patient`, `subject:Patient`, `patient._id`).
    raw_name: String,
    /// Whether its value is a reference (`Patient/{id}`, or an absolute URL: each leg gets
    /// `Patient/{local id}`) rather than a bare id.
    reference: bool,
}

impl NamedPatient {
    /// The segment naming the patient at a site with these local ids.
    fn at_site(&self, ids: &[String]) -> String {
        let value = ids
            .iter()
            .map(|id| {
                if self.reference {
                    format!("Patient/{id}")
                } else {
                    id.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        format!(
            "{}={}",
            self.raw_name,
            url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>()
        )
    }
}

/// Finds the one parameter naming the network patient, as the whose-data rule
/// (`assent_fhir::compartment::request_patients`) reads the search in `version`; refuses a
/// search whose parameters name no patient, name one in two parameters, or name anything but
/// one network patient.
fn named_patient(
    query: &str,
    version: FhirVersion,
    resource_type: &str,
    network_base: &str,
) -> Result<NamedPatient, GatewayError> {
    let refuse = || {
        GatewayError::FederatedFormNotServed(
            "a federated search names one network patient in one parameter:              `patient={network-id}` or `subject=Patient/{network-id}`"
                .into(),
        )
    };
    let context = ReferenceContext {
        local_bases: vec![network_base.to_owned()],
        ..ReferenceContext::default()
    };
    let segments: Vec<String> = query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let mut found = None;
    for (at, segment) in segments.iter().enumerate() {
        let params = parse_search(segment);
        let RequestPatients::Named(named) =
            request_patients(version, Some(resource_type), None, &params, &context)
        else {
            continue;
        };
        let named: Vec<PatientRef> = named.into_iter().collect();
        let [PatientRef::Local(id)] = named.as_slice() else {
            return Err(refuse());
        };
        if found.is_some() || !crate::services::network::NetworkIndex::is_network_id(id) {
            return Err(refuse());
        }
        let Some(param) = params.first() else {
            continue;
        };
        found = Some(NamedPatient {
            network_id: id.clone(),
            segments: Vec::new(),
            at,
            raw_name: segment.split('=').next().unwrap_or_default().to_owned(),
            reference: param.value.contains('/'),
        });
    }
    let mut named = found.ok_or_else(refuse)?;
    named.segments = segments;
    Ok(named)
}

/// Notes the request as the caller asked it (interaction, resource type) for the receipt,
/// checking its path and query as any FHIR request's.
fn asked(net: &NetworkRequest<'_>, rest: &str, query: &str) -> Result<(), GatewayError> {
    let fhir = request::parse("GET", rest, query)?;
    let mut access = net.access.borrow_mut();
    access.interaction = Some(fhir.interaction);
    access.resource_type = fhir.resource_type;
    Ok(())
}

/// The federated answer's version: the caller's, else `[fhir] default_version`, else R4.
pub(super) fn negotiate(req: &HttpRequest, state: &AppState) -> Result<Dialect, GatewayError> {
    dialect::negotiate(
        req.headers(),
        req.query_string(),
        FhirVersion::R4,
        state.config.fhir.default_version,
    )
}

/// The site patients linked to network patient `id`; 404 when there is no such network
/// patient. Notes the network patient as named.
async fn members_of(net: &NetworkRequest<'_>, id: &str) -> Result<Vec<NetworkLink>, GatewayError> {
    if !crate::services::network::NetworkIndex::is_network_id(id) {
        return Err(GatewayError::NetworkPatientNotFound);
    }
    net.named_network_patient(id);
    let network = net.state.network.clone();
    let id = id.to_owned();
    let members = web::block(move || {
        if !network.exists(&id)? {
            return Ok(None);
        }
        network.members(&id).map(Some)
    })
    .await
    .map_err(|_| GatewayError::Internal)?
    .map_err(|e| {
        tracing::error!(error = %e, "network index unavailable");
        GatewayError::StoreUnavailable
    })?;
    members.ok_or(GatewayError::NetworkPatientNotFound)
}

fn with_query(path: String, query: &str) -> String {
    if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    }
}

/// Whether `path` is under `/fhir/{site}` (a site's own page link).
fn is_under_site(path: &str, site: &str) -> bool {
    path.strip_prefix("/fhir/")
        .and_then(|rest| rest.strip_prefix(site))
        .is_some_and(|rest| rest.starts_with('/') || rest.starts_with('?'))
}

/// How one leg's answer counts in the federated answer.
enum LegResult {
    /// A Bundle: released entries.
    Released(Value),
    /// Refused on consent: nothing, and nothing named.
    Refused,
    /// Failed or refused for a reason that is no consent's: named, with the stable code.
    Failed(String),
}

fn classify(outcome: &LegOutcome) -> LegResult {
    match &outcome.answer {
        LegAnswer::Answered {
            status,
            error_code,
            body,
            ..
        } => {
            let code = error_code.as_deref().unwrap_or_default();
            if status.is_success() {
                match body {
                    Some(b) if b.get("resourceType").and_then(Value::as_str) == Some("Bundle") => {
                        LegResult::Released(b.clone())
                    }
                    _ => LegResult::Failed("upstream-bad-response".into()),
                }
            } else if matches!(status.as_u16(), 404 | 410)
                || (*status == StatusCode::FORBIDDEN
                    && matches!(
                        code,
                        "consent-denied" | "break-glass-justification-required"
                    ))
            {
                LegResult::Refused
            } else if code.is_empty() {
                LegResult::Failed(format!("status-{}", status.as_u16()))
            } else {
                LegResult::Failed(code.to_owned())
            }
        }
        LegAnswer::TimedOut => LegResult::Failed("upstream-timeout".into()),
        LegAnswer::NotRun => LegResult::Failed("internal".into()),
    }
}

/// Runs the legs and merges their answers (see the module documentation).
async fn federate(
    net: &NetworkRequest<'_>,
    dialect: &Dialect,
    kind: Kind,
    legs: Vec<Leg>,
) -> Result<HttpResponse, GatewayError> {
    let state = net.state;
    let config = &state.config.network;
    let plan = LegPlan {
        accept: HeaderValue::from_str(&dialect.client.content_type())
            .map_err(|_| GatewayError::Internal)?,
        site_deadline: config.site_deadline(),
        deadline: Instant::now() + config.deadline(),
    };
    let outcomes = federation::run_legs(net.req, state, net.clients, legs, &plan).await;
    net.access.borrow_mut().legs = outcomes.iter().map(|o| o.request_id.clone()).collect();

    // A client error every leg answered alike (scopes, a version not served) is the answer.
    if let Some(response) = common_client_error(&outcomes) {
        return Ok(response);
    }
    let mut entries = Vec::new();
    let mut failures: Vec<(String, String)> = Vec::new();
    let mut cursor_legs = Vec::new();
    let mut spellings = Spellings::default();
    let (mut refused, mut released_legs, mut notice) = (0, 0, false);
    let mut total = Some(0u64);
    let mut issues: Option<u64> = None;
    let mut break_glass = false;
    for outcome in &outcomes {
        let site = &outcome.leg.site;
        match classify(outcome) {
            LegResult::Refused => refused += 1,
            LegResult::Failed(code) => failures.push((site.clone(), code)),
            LegResult::Released(bundle) => {
                released_legs += 1;
                if let LegAnswer::Answered { headers, raw, .. } = &outcome.answer {
                    spellings.add(raw);
                    if let Some(n) = header_number(headers, TRANSLATION_ISSUES_HEADER) {
                        *issues.get_or_insert(0) += n;
                    }
                    break_glass |= headers.contains_key("x-assent-break-glass");
                }
                total = match (total, bundle.get("total").and_then(Value::as_u64)) {
                    (Some(sum), Some(n)) => Some(sum + n),
                    _ => None,
                };
                if let Some(path) = next_path(&bundle, &state.public_base, site) {
                    cursor_legs.push(CursorLeg {
                        site: site.clone(),
                        tag: outcome.leg.tag.clone(),
                        path,
                    });
                }
                for mut entry in take_entries(bundle) {
                    let is_outcome = entry
                        .pointer("/resource/resourceType")
                        .and_then(Value::as_str)
                        == Some("OperationOutcome");
                    if is_outcome {
                        // The leg's withheld notice: one for the whole answer, below.
                        notice = true;
                        continue;
                    }
                    mark_site(&mut entry, site);
                    entries.push(entry);
                }
            }
        }
    }
    if !failures.is_empty() && dialect.strict {
        return Err(GatewayError::FederationIncomplete(failures));
    }
    {
        let mut access = net.access.borrow_mut();
        access.decision = Some(if released_legs > 0 || outcomes.is_empty() {
            AccessDecision::Permit
        } else if refused == outcomes.len() {
            AccessDecision::Deny
        } else {
            AccessDecision::Error
        });
        access.released = entries
            .iter()
            .filter_map(|e| e.get("resource"))
            .filter_map(ResourceEntry::from_resource)
            .collect();
    }
    // The withheld notice only as release.rs's rule allows it for the request as a whole:
    // the one patient it named was permitted at every site that holds it.
    if notice && refused == 0 {
        entries.push(release::withheld_entry());
    }
    for (site, code) in &failures {
        entries.push(failure_entry(site, code));
    }

    let mut bundle = json!({
        "resourceType": "Bundle",
        "id": uuid::Uuid::new_v4().to_string(),
        "type": "searchset",
    });
    if failures.is_empty()
        && cursor_legs.is_empty()
        && let Some(total) = total
    {
        bundle["total"] = json!(total);
    }
    let query = net.req.query_string();
    let mut links = vec![json!({
        "relation": "self",
        "url": with_query(format!("{}{}", state.public_base, net.req.path()), query),
    })];
    if !cursor_legs.is_empty() {
        let cursor = Cursor {
            network_id: kind.network_id,
            version: dialect.client.mime_param().to_owned(),
            operation: kind.operation,
            resource_type: kind.resource_type,
            legs: cursor_legs,
        };
        let signed = state.signer.sign_query(
            PAGE_SCOPE,
            &net.caller.id,
            NETWORK_BASE,
            &format!("{PAGE_PARAM}={}", cursor.encode()),
        );
        links.push(json!({
            "relation": "next",
            "url": format!("{}{NETWORK_BASE}?{signed}", state.public_base),
        }));
    }
    bundle["link"] = Value::Array(links);
    if !entries.is_empty() {
        bundle["entry"] = Value::Array(entries);
    }
    let mut out = HttpResponse::Ok();
    out.insert_header((
        header::CONTENT_TYPE,
        HeaderValue::from_str(&dialect.client.content_type())
            .map_err(|_| GatewayError::Internal)?,
    ));
    out.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
    if let Some(n) = issues {
        out.insert_header((TRANSLATION_ISSUES_HEADER, HeaderValue::from(n)));
    }
    if break_glass {
        out.insert_header(("x-assent-break-glass", HeaderValue::from_static("used")));
    }
    Ok(out.body(answer::body_of(&bundle, answer::pretty(query), &spellings)?))
}

/// When no leg released or failed on its site's side and the legs that were not refused all
/// answered the same client error (4xx): that answer, as the leg gave it.
fn common_client_error(outcomes: &[LegOutcome]) -> Option<HttpResponse> {
    let mut first: Option<&LegOutcome> = None;
    for outcome in outcomes {
        match (&outcome.answer, classify(outcome)) {
            (_, LegResult::Refused) => continue,
            (
                LegAnswer::Answered {
                    status, error_code, ..
                },
                LegResult::Failed(_),
            ) if status.is_client_error() => match first {
                None => first = Some(outcome),
                Some(LegOutcome {
                    answer: LegAnswer::Answered { error_code: c, .. },
                    ..
                }) if c == error_code => {}
                Some(_) => return None,
            },
            _ => return None,
        }
    }
    let LegAnswer::Answered {
        status,
        headers,
        raw,
        ..
    } = &first?.answer
    else {
        return None;
    };
    let mut out = HttpResponse::build(*status);
    for name in [
        header::CONTENT_TYPE,
        header::WWW_AUTHENTICATE,
        header::ALLOW,
    ] {
        if let Some(v) = headers.get(&name) {
            out.insert_header((name, v.clone()));
        }
    }
    Some(out.body(raw.clone()))
}

fn header_number(headers: &header::HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.parse().ok()
}

fn take_entries(mut bundle: Value) -> Vec<Value> {
    match bundle.get_mut("entry").map(Value::take) {
        Some(Value::Array(entries)) => entries,
        _ => Vec::new(),
    }
}

/// Adds the source-site extension to an entry.
fn mark_site(entry: &mut Value, site: &str) {
    let mark = json!({"url": SOURCE_SITE_EXTENSION, "valueString": site});
    match entry.get_mut("extension").and_then(Value::as_array_mut) {
        Some(extensions) => extensions.push(mark),
        None => entry["extension"] = json!([mark]),
    }
}

/// The `next` link of a leg's answer as a path under the gateway (`/fhir/{site}/…`), when it
/// is the site's own signed link.
fn next_path(bundle: &Value, public_base: &str, site: &str) -> Option<String> {
    let url = bundle
        .get("link")?
        .as_array()?
        .iter()
        .find(|l| l.get("relation").and_then(Value::as_str) == Some("next"))?
        .get("url")?
        .as_str()?;
    let path = url.strip_prefix(public_base)?;
    is_under_site(path, site).then(|| path.to_owned())
}

/// The OperationOutcome entry of a site whose share is missing, naming the site and why.
fn failure_entry(site: &str, code: &str) -> Value {
    let why = match code {
        "upstream-timeout" => "it did not answer within the deadline",
        "upstream-unreachable" => "it could not be reached",
        "upstream-circuit-open" => "it keeps failing and is cut off for a while",
        "receipt-unavailable" => "its access could not be recorded",
        "consent-unavailable" => "consent state could not be read",
        c if c.starts_with("upstream-") => "it answered with an error",
        _ => "its request was refused",
    };
    let text = format!("The results of site {site} are missing: {why} ({code}).");
    json!({
        "extension": [{"url": SOURCE_SITE_EXTENSION, "valueString": site}],
        "resource": {
            "resourceType": "OperationOutcome",
            "issue": [{
                "severity": "warning",
                "code": "incomplete",
                "details": {
                    "coding": [{"system": ERROR_CODE_SYSTEM, "code": code}],
                    "text": text,
                },
                "diagnostics": text,
            }],
        },
        "search": {"mode": "outcome"},
    })
}

/// The network's CapabilityStatement, in R4 (translated into the asked version).
fn network_statement(state: &AppState) -> Value {
    let reference = |name: &str| json!({"name": name, "type": "reference"});
    let mut resources = vec![json!({
        "type": "Patient",
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "searchParam": [{"name": "identifier", "type": "token"}],
        "operation": [
            {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"},
            {"name": "match", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-match"},
        ],
    })];
    for (resource_type, names) in FEDERATED_TYPES {
        let params: Vec<Value> = names.iter().map(|n| reference(n)).collect();
        resources.push(json!({
            "type": resource_type,
            "interaction": [{"code": "search-type"}],
            "searchParam": params,
        }));
    }
    let mut rest = json!({
        "mode": "server",
        "documentation": "The network level: discovery of a patient across sites, and federated reads of a network patient, each site's share decided by that site's consent.",
        "resource": resources,
    });
    if let Some(endpoints) = state.callers.endpoints() {
        rest["security"] = endpoints.capability_security();
    }
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": assent_receipts::format_instant(state.clock.now_millis()),
        "kind": "instance",
        "software": {"name": "Assent"},
        "implementation": {
            "description": "Assent network level",
            "url": format!("{}{NETWORK_BASE}", state.public_base),
        },
        "fhirVersion": FhirVersion::R4.semver(),
        "format": ["application/fhir+json", "json"],
        "rest": [rest],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NID: &str = "n-0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn a_federated_search_names_one_network_patient_as_the_whose_data_rule_reads_it() {
        let base = "https://gw.example/fhir";
        for (query, at, name, leg) in [
            (format!("patient={NID}"), 0, "patient", "patient=a%2Cb"),
            (
                format!("code=x&patient=Patient/{NID}"),
                1,
                "patient",
                "patient=Patient%2Fa%2CPatient%2Fb",
            ),
            (
                format!("subject=Patient%2F{NID}&_count=5"),
                0,
                "subject",
                "subject=Patient%2Fa%2CPatient%2Fb",
            ),
            (
                format!("subject:Patient={NID}"),
                0,
                "subject:Patient",
                "subject:Patient=a%2Cb",
            ),
            (
                format!("subject={base}/Patient/{NID}"),
                0,
                "subject",
                "subject=Patient%2Fa%2CPatient%2Fb",
            ),
            (
                format!("patient._id={NID}"),
                0,
                "patient._id",
                "patient._id=a%2Cb",
            ),
        ] {
            let named = named_patient(&query, FhirVersion::R4, "Observation", base)
                .unwrap_or_else(|_| panic!("{query}"));
            assert_eq!(
                (named.network_id.as_str(), named.at, named.raw_name.as_str()),
                (NID, at, name),
                "{query}"
            );
            assert_eq!(named.at_site(&["a".into(), "b".into()]), leg, "{query}");
        }
        for query in [
            String::new(),
            "code=x".into(),
            // `subject` may be a Group: a bare id names no patient.
            format!("subject={NID}"),
            format!("patient={NID}&subject=Patient/{NID}"),
            format!("patient=Patient/{NID}&focus=Patient/p1"),
            format!("patient:Group={NID}"),
            "patient=123".into(),
            format!("patient={NID},p1"),
            format!("subject=Group/{NID}"),
        ] {
            assert!(
                named_patient(&query, FhirVersion::R4, "Observation", base).is_err(),
                "{query}"
            );
        }
    }

    #[test]
    fn a_cursor_reads_back_and_a_page_link_stays_under_its_site() {
        let cursor = Cursor {
            network_id: NID.into(),
            version: "4.0".into(),
            operation: true,
            resource_type: "Patient".into(),
            legs: vec![CursorLeg {
                site: "a".into(),
                tag: "a".into(),
                path: "/fhir/a/Patient/1/$everything?_assent_page=x".into(),
            }],
        };
        let back = Cursor::decode(&cursor.encode()).unwrap();
        assert_eq!(back.legs[0].path, cursor.legs[0].path);
        assert!(Cursor::decode("not base64!").is_none());
        assert!(is_under_site("/fhir/a/Observation?x=1", "a"));
        assert!(is_under_site("/fhir/a?_getpages=1", "a"));
        assert!(!is_under_site("/fhir/ab/Observation", "a"));
        assert!(!is_under_site("/fhir/b/Observation", "a"));
        assert!(!is_under_site("/admin/a/x", "a"));
    }
}
