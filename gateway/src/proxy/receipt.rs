//! The last outbound steps of every exchange, whatever its outcome: the receipt (the response
//! is released only once it is durable), the record (metrics, the access log line, the
//! request log row) and the break-glass webhook event.
//!
//! Leaves out: the receipt chain and its store (`services::receipts`), the webhook's delivery
//! (`services::break_glass`), and what the exchange came to (the phases before, through
//! [`Exchange`]).

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use assent_consent::Decision;
use assent_fhir::SitePatient;
use assent_receipts::{AccessDecision, Receipt, ReceiptSubjects};

use crate::http::caller::Caller;
use crate::http::error::GatewayError;
use crate::http::state::AppState;
use crate::proxy::consent::PlacedPatient;
use crate::proxy::exchange::Exchange;
use crate::services::break_glass;
use crate::services::receipts::{PendingReceipt, stamp_receipt_header};
use crate::services::request_log::RequestRecord;

/// Off only in the benchmark build that measures what receipts cost (feature
/// `bench-no-receipts`).
pub const RECEIPTS_ON: bool = !cfg!(feature = "bench-no-receipts");

/// The receipt phase, for an authenticated caller: the exchange's receipt goes into the
/// gateway's chain and the store; the response is released only once it is durable, carrying
/// its id. When it cannot be, the answer is 503 with no data.
pub async fn receipt(ex: &mut Exchange, state: &AppState, response: HttpResponse) -> HttpResponse {
    let Some(caller) = ex.caller.clone() else {
        return response;
    };
    let mut response = response;
    let pending = build_receipt(ex, state, &caller, response.status());
    let receipt_id = pending.receipt.id.clone();
    match state.receipts.write(pending).await {
        Ok(_) => {
            stamp_receipt_header(&mut response, &receipt_id);
            response
        }
        Err(e) => {
            tracing::error!(request_id = %ex.id, error = %e, "no durable receipt: the response is withheld");
            let error = GatewayError::ReceiptUnavailable;
            ex.outcome.error_code = Some(error.code());
            error.error_response()
        }
    }
}

/// The receipt of the exchange as the phases left it.
fn build_receipt(
    ex: &mut Exchange,
    state: &AppState,
    caller: &Caller,
    status: StatusCode,
) -> PendingReceipt {
    let identity = |p: &PlacedPatient| SitePatient::new(&p.site, &p.id).to_string();
    let asked = ex.asked.as_ref();
    let outcome = &mut ex.outcome;
    let mut subjects = ReceiptSubjects {
        actor: caller.receipt_actor(),
        patients: Vec::new(),
        query: asked.map(|a| a.query.clone()).filter(|q| !q.is_empty()),
        client_id: caller.verified.client_id.as_deref().map(str::to_owned),
        client_address: ex.client_address.clone(),
    };
    // The receipt names every patient the request reached: every patient it named, then every
    // patient a released resource belongs to.
    for p in outcome
        .named_patients
        .iter()
        .chain(&outcome.released_patients)
    {
        subjects.add_patient(identity(p));
    }
    let key = state.consents.key();
    let mut receipt = Receipt::new(
        crate::services::receipts::new_receipt_id(),
        ex.time_ms,
        state.receipts.gateway_id(),
        subjects.keys(key),
        AccessDecision::Error,
        status.as_u16(),
    );
    if let Some(decision) = &outcome.decision {
        receipt.set_decision(decision);
    }
    let released = status.is_success() || status == StatusCode::NOT_MODIFIED;
    let denied_codes = [
        GatewayError::Denied(String::new()).code(),
        GatewayError::BreakGlassJustificationRequired(String::new()).code(),
    ];
    if outcome.content_denied
        || outcome
            .error_code
            .is_some_and(|c| denied_codes.contains(&c))
    {
        // Denied after the fetch: the resource's own consent decided.
        receipt.decision = AccessDecision::Deny;
    } else if receipt.decision == AccessDecision::Permit && !released {
        receipt.decision = AccessDecision::Error;
    }
    receipt.organization = caller.verified.organization.as_deref().map(str::to_owned);
    receipt.site = ex.site.as_ref().map(|s| s.id.clone());
    receipt.interaction = asked.map(|a| a.interaction);
    receipt.resource_type = asked.and_then(|a| a.resource_type.clone());
    receipt.resources = std::mem::take(&mut outcome.released);
    receipt.purpose = ex.purpose.map(|p| p.code().to_owned());
    receipt.upstream_status = outcome.upstream_status;
    if let Some(bg) = &ex.break_glass {
        // The justification is kept whether or not it was needed; the flag says whether any
        // data was released on it (the request's own decision, or a resource's in the filter).
        receipt.break_glass_justification = bg.justification.clone();
        receipt.break_glass |= bg.used() && released;
    }
    PendingReceipt { receipt, subjects }
}

/// The record phase: metrics, the access log line, and the request log row.
pub fn record(ex: &Exchange, state: &AppState, status: StatusCode) {
    let site = ex.site.as_ref().map(|s| s.id.as_str());
    let asked = ex.asked.as_ref();
    let interaction = asked.map(|a| a.interaction.as_str());
    let status_code = status.as_u16();
    state
        .metrics
        .requests
        .with_label_values(&[
            site.unwrap_or("unknown"),
            interaction.unwrap_or("none"),
            status.as_str(),
        ])
        .inc();
    let duration_us = ex.started.elapsed().as_micros() as i64;
    let decision = ex.outcome.decision.as_ref().map(|d| match d {
        Decision::Permit(p) => format!("permit {}", p.basis()),
        Decision::Deny(d) => format!("deny {}", d.basis()),
    });
    if state.config.log.access_log {
        tracing::info!(
            request_id = %ex.id,
            site = site.unwrap_or("-"),
            interaction = interaction.unwrap_or("-"),
            resource_type = asked.and_then(|a| a.resource_type.as_deref()).unwrap_or("-"),
            status = status_code,
            error_code = ex.outcome.error_code.unwrap_or("-"),
            caller_kind = ex.caller.as_ref().map(|c| c.verified.kind.as_str()).unwrap_or("-"),
            purpose = ex.purpose.map(|p| p.code()).unwrap_or("-"),
            duration_us,
            "fhir request"
        );
    }
    state.recorder.record(RequestRecord {
        request_id: ex.id.clone(),
        at_ms: state.clock.now_millis(),
        site: site.map(str::to_owned),
        caller: ex.caller.as_ref().map(|c| c.id.clone()),
        interaction: interaction.map(str::to_owned),
        resource_type: asked.and_then(|a| a.resource_type.clone()),
        status: i32::from(status_code),
        error_code: ex.outcome.error_code.map(str::to_owned),
        decision,
        duration_us,
    });
}

/// Tells the break-glass webhook of an exchange that rested on break-glass (off the request
/// path: the event is queued).
pub fn notify_break_glass(ex: &Exchange, state: &AppState, status: StatusCode) {
    let Some(bg) = ex.break_glass.as_ref().filter(|b| b.used()) else {
        return;
    };
    state.break_glass.notify(break_glass::Event {
        request_id: ex.id.clone(),
        at_ms: state.clock.now_millis(),
        gateway_id: state.config.gateway_id.clone(),
        site: ex.site.as_ref().map(|s| s.id.clone()).unwrap_or_default(),
        caller: ex.caller.as_ref().map(|c| c.id.clone()).unwrap_or_default(),
        purpose: ex.purpose.map(|p| p.code()),
        status: status.as_u16(),
        justification: bg.justification.clone(),
        overrides: bg.overrides.clone(),
    });
}
