//! Legs of a network-level request: one site's share of a federated request, run as a full
//! request through the pipeline (`pipeline::handle`), so that each leg is decided, shaped,
//! translated and receipted exactly as the same request made to `/fhir/{site}/…` would be.
//!
//! A leg is the caller's own request to one site: the caller's `Authorization`, `Prefer`,
//! purpose of use and break-glass justification go with it, and an `Accept` naming the FHIR
//! version the federated answer is in (so every site's answer arrives translated into it),
//! nothing else. Its request id is the federated request's id and the leg's tag (`{id}.{site}`),
//! which links the leg's receipt and request log row to the federated request. Legs run
//! concurrently on the calling worker (the sites' awc clients are per worker).
//!
//! Deadlines: a leg's own pipeline gives up first ([`LegDeadline`], at the site deadline or
//! just before the whole request's, whichever is sooner): it answers 504 `upstream-timeout`
//! and still writes its receipt and its request log row. Only a leg that has not finished its
//! receipt [`RECEIPT_GRACE`] after that (the receipt writer itself stalled) is dropped at the
//! whole request's deadline; its answer is then [`LegAnswer::TimedOut`] and, as any request
//! whose receipt is not durable, nothing of it is released.
//!
//! Leaves out: which legs a network request needs, and merging their answers
//! (`network/federated.rs`).

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::{FromRequest, HttpMessage, HttpRequest, web};
use serde_json::Value;

use crate::http::observability::RequestId;
use crate::http::state::AppState;
use crate::proxy::pipeline;
use crate::services::upstream::WorkerClients;

/// The caller's headers a leg carries, and nothing else (`Accept` is the federated
/// request's version, [`LegPlan::accept`]).
const LEG_HEADERS: &[&str] = &[
    "authorization",
    "prefer",
    "x-purpose-of-use",
    "x-break-glass-justification",
];

/// What a leg's pipeline keeps of its time for its receipt and record: its own deadline is
/// this much before the whole request's.
pub const RECEIPT_GRACE: Duration = Duration::from_millis(100);

/// The instant by which a leg's pipeline gives up (answering 504 `upstream-timeout`, its
/// receipt and record written as for any failure). Set by [`run_legs`] in the leg request's
/// extensions; read by `pipeline::handle`.
#[derive(Debug, Clone, Copy)]
pub struct LegDeadline(pub Instant);

/// One site's share of a network request: a GET of `path_and_query` (starting
/// `/fhir/{site}/` or `/fhir/{site}?`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    pub site: String,
    /// What the leg's request id adds to the federated request's: the site, and a number
    /// when one site has several legs.
    pub tag: String,
    pub path_and_query: String,
}

/// How the legs of one request run.
#[derive(Debug, Clone)]
pub struct LegPlan {
    /// The `Accept` every leg sends: the federated answer's version.
    pub accept: HeaderValue,
    /// How long one leg may take.
    pub site_deadline: Duration,
    /// When the whole request must be answered.
    pub deadline: Instant,
}

/// What a leg answered.
#[derive(Debug)]
pub enum LegAnswer {
    /// The pipeline answered (any status): its status, headers, its stable error code (of
    /// an OperationOutcome answer that is not a success), its body as JSON when it had one,
    /// and the body's bytes (how it spelt its numbers: `assent_fhir::spelling::Spellings`).
    Answered {
        status: StatusCode,
        headers: HeaderMap,
        error_code: Option<String>,
        body: Option<Value>,
        raw: bytes::Bytes,
    },
    /// No answer, not even the leg's own timeout, by the whole request's deadline.
    TimedOut,
    /// The leg's request could not be made (its empty payload was refused).
    NotRun,
}

/// A leg's answer and how long it took.
#[derive(Debug)]
pub struct LegOutcome {
    pub leg: Leg,
    pub request_id: String,
    pub answer: LegAnswer,
    pub elapsed: Duration,
}

/// Runs `legs` concurrently, each as a request through the pipeline, each within the plan's
/// deadlines.
pub async fn run_legs(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    clients: &web::Data<WorkerClients>,
    legs: Vec<Leg>,
    plan: &LegPlan,
) -> Vec<LegOutcome> {
    let parent = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let started = Instant::now();
    // The leg's pipeline gives up first, leaving time for its receipt.
    let whole = plan.deadline;
    let leg_deadline = (started + plan.site_deadline).min(
        whole
            .checked_sub(RECEIPT_GRACE)
            .unwrap_or(whole)
            .max(started),
    );
    let runs = legs.into_iter().map(|leg| {
        let request_id = leg_request_id(&parent, &leg.tag);
        let leg_req = leg_request(req, &request_id, &leg, &plan.accept, leg_deadline);
        async move {
            // A leg is a GET: its payload is empty.
            let mut none = actix_web::dev::Payload::None;
            let answer = match web::Payload::from_request(&leg_req, &mut none).await {
                Ok(payload) => {
                    let run = pipeline::handle(leg_req, payload, state.clone(), clients.clone());
                    let hard_stop = tokio::time::Instant::from_std(whole.max(leg_deadline));
                    match tokio::time::timeout_at(hard_stop, run).await {
                        Ok(response) => answered(response).await,
                        Err(_) => LegAnswer::TimedOut,
                    }
                }
                Err(_) => LegAnswer::NotRun,
            };
            LegOutcome {
                leg,
                request_id,
                answer,
                elapsed: started.elapsed(),
            }
        }
    });
    futures_util::future::join_all(runs).await
}

/// The leg's request: a GET of the leg's path with the caller's headers, the federated
/// answer's `Accept`, the caller's peer address, its request id and its deadline.
fn leg_request(
    req: &HttpRequest,
    request_id: &str,
    leg: &Leg,
    accept: &HeaderValue,
    deadline: Instant,
) -> HttpRequest {
    let mut test = actix_web::test::TestRequest::get().uri(&leg.path_and_query);
    for name in LEG_HEADERS {
        let name = HeaderName::from_static(name);
        for value in req.headers().get_all(&name) {
            test = test.append_header((name.clone(), value.clone()));
        }
    }
    test = test.insert_header((header::ACCEPT, accept.clone()));
    if let Some(peer) = req.peer_addr() {
        test = test.peer_addr(peer);
    }
    let leg_req = test.to_http_request();
    leg_req
        .extensions_mut()
        .insert(RequestId(request_id.to_owned()));
    leg_req.extensions_mut().insert(LegDeadline(deadline));
    leg_req
}

/// `{parent}.{tag}`, kept within the 64 characters a request id may have.
pub fn leg_request_id(parent: &str, tag: &str) -> String {
    let mut id = format!("{parent}.{tag}");
    id.truncate(64);
    id
}

async fn answered(response: actix_web::HttpResponse) -> LegAnswer {
    let status = response.status();
    let headers = response.headers().clone();
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("json"));
    let raw = actix_web::body::to_bytes(response.into_body())
        .await
        .unwrap_or_default();
    let body = if is_json && !raw.is_empty() {
        serde_json::from_slice(&raw).ok()
    } else {
        None
    };
    let error_code = body
        .as_ref()
        .filter(|_| !status.is_success())
        .and_then(|b: &Value| b.pointer("/issue/0/details/coding/0/code"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    LegAnswer::Answered {
        status,
        headers,
        error_code,
        body,
        raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leg_request_id_names_its_parent_and_stays_within_64_characters() {
        assert_eq!(leg_request_id("abc", "st-mary"), "abc.st-mary");
        let long = leg_request_id(&"x".repeat(60), "st-mary");
        assert_eq!(long.len(), 64);
        assert!(long.starts_with(&"x".repeat(60)));
    }
}
