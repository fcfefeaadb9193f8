//! Legs of a network-level request: one site's share of a federated request, run as a full
//! request through the pipeline (`pipeline::handle`), so that each leg is decided, shaped,
//! translated and receipted exactly as the same request made to `/fhir/{site}/…` would be.
//!
//! A leg is the caller's own request to one site: the caller's `Authorization`, `Accept`,
//! `Prefer`, purpose of use and break-glass justification go with it, nothing else. Its
//! request id is the federated request's id and the site (`{id}.{site}`), which links the
//! leg's receipt and request log row to the federated request. Legs run concurrently on the
//! calling worker (the sites' awc clients are per worker), each within a deadline.
//!
//! Leaves out: which legs a network request needs, and merging their answers.

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderName};
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use serde_json::Value;

use crate::http::observability::RequestId;
use crate::http::state::AppState;
use crate::proxy::pipeline;
use crate::services::upstream::WorkerClients;

/// The caller's headers a leg carries, and nothing else.
const LEG_HEADERS: &[&str] = &[
    "authorization",
    "accept",
    "prefer",
    "x-purpose-of-use",
    "x-break-glass-justification",
];

/// One site's share of a network request: a GET of `path_and_query` (starting
/// `/fhir/{site}/`).
#[derive(Debug, Clone)]
pub struct Leg {
    pub site: String,
    pub path_and_query: String,
}

/// What a leg answered.
#[derive(Debug)]
pub enum LegAnswer {
    /// The pipeline answered (any status): its status, its stable error code (of an
    /// OperationOutcome answer that is not a success), and its body as JSON when it had one.
    Answered {
        status: StatusCode,
        error_code: Option<String>,
        body: Option<Value>,
    },
    /// No answer within the deadline.
    TimedOut,
    /// The leg's request could not be made (its empty payload was refused).
    NotRun,
}

/// A leg's answer and how long it took.
#[derive(Debug)]
pub struct LegOutcome {
    pub leg: Leg,
    pub answer: LegAnswer,
    pub elapsed: Duration,
}

/// Runs `legs` concurrently, each as a request through the pipeline, each within `deadline`.
pub async fn run_legs(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    clients: &web::Data<WorkerClients>,
    legs: Vec<Leg>,
    deadline: Duration,
) -> Vec<LegOutcome> {
    let parent = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let runs = legs.into_iter().map(|leg| {
        let leg_req = leg_request(req, &parent, &leg);
        async move {
            let started = Instant::now();
            // A leg is a GET: its payload is empty.
            let mut none = actix_web::dev::Payload::None;
            let answer = match web::Payload::from_request(&leg_req, &mut none).await {
                Ok(payload) => {
                    let run = pipeline::handle(leg_req, payload, state.clone(), clients.clone());
                    match tokio::time::timeout(deadline, run).await {
                        Ok(response) => answered(response).await,
                        Err(_) => LegAnswer::TimedOut,
                    }
                }
                Err(_) => LegAnswer::NotRun,
            };
            LegOutcome {
                leg,
                answer,
                elapsed: started.elapsed(),
            }
        }
    });
    futures_util::future::join_all(runs).await
}

/// The leg's request: a GET of the leg's path with the caller's headers and peer address.
fn leg_request(req: &HttpRequest, parent: &str, leg: &Leg) -> HttpRequest {
    let mut test = actix_web::test::TestRequest::get().uri(&leg.path_and_query);
    for name in LEG_HEADERS {
        let name = HeaderName::from_static(name);
        for value in req.headers().get_all(&name) {
            test = test.append_header((name.clone(), value.clone()));
        }
    }
    if let Some(peer) = req.peer_addr() {
        test = test.peer_addr(peer);
    }
    let leg_req = test.to_http_request();
    leg_req
        .extensions_mut()
        .insert(RequestId(leg_request_id(parent, &leg.site)));
    leg_req
}

/// `{parent}.{site}`, kept within the 64 characters a request id may have.
pub fn leg_request_id(parent: &str, site: &str) -> String {
    let mut id = format!("{parent}.{site}");
    id.truncate(64);
    id
}

async fn answered(response: actix_web::HttpResponse) -> LegAnswer {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("json"));
    let body = match actix_web::body::to_bytes(response.into_body()).await {
        Ok(bytes) if is_json && !bytes.is_empty() => serde_json::from_slice(&bytes).ok(),
        _ => None,
    };
    let error_code = body
        .as_ref()
        .filter(|_| !status.is_success())
        .and_then(|b: &Value| b.pointer("/issue/0/details/coding/0/code"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    LegAnswer::Answered {
        status,
        error_code,
        body,
    }
}
