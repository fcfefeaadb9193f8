//! Receipts of the gateway's own APIs: every consent API call and every read of the audit log
//! (the audit API and the console) after authentication leaves a receipt in the gateway's
//! chain, durable before its answer is released, like a FHIR request's
//! (`pipeline::receipt`): who asked, which patients it reached (when known), what it did
//! ([`AccessKind`]), what it returned (content hashes) and what was decided.
//!
//! A handler authenticates, opens an [`ApiAccess`], fills in what it learns (site, patients,
//! what it returned) while it works, and ends with [`ApiAccess::finish`] on its outcome:
//! permitted (an answer below 400), denied (403: a role or the consent rule refused) or
//! failed (any other error). The answer goes out with `X-Assent-Receipt` once the receipt
//! is durable; if it cannot be made durable, 503 `receipt-unavailable` goes out instead and
//! nothing of the answer.
//!
//! Leaves out who may call (`consent_authz.rs`, `audit_api::may_audit`) and the receipt's
//! encoding (assent-receipts).

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use assent_fhir::SitePatient;
use assent_ledger::{Clock, SystemClock};
use assent_receipts::{AccessDecision, AccessKind, Receipt, ReceiptSubjects, ResourceEntry};

use crate::http::caller::Caller;
use crate::http::error::GatewayError;
use crate::http::state::AppState;
use crate::services::receipts::PendingReceipt;
use crate::services::receipts::stamp_receipt_header;

/// One call of the gateway's own API, as its receipt will record it.
#[derive(Debug, Clone)]
pub struct ApiAccess {
    kind: AccessKind,
    time_ms: i64,
    subjects: ReceiptSubjects,
    organization: Option<String>,
    purpose: Option<String>,
    site: Option<String>,
    resource_type: &'static str,
    resources: Vec<ResourceEntry>,
}

impl ApiAccess {
    /// A call by an authenticated caller. The receipt's actor is the caller's FHIR actor,
    /// else its caller id, as for FHIR requests; the query string is kept in the clear
    /// subjects (and keyed in the receipt).
    pub fn new(kind: AccessKind, caller: &Caller, req: &HttpRequest) -> ApiAccess {
        let actor = caller.receipt_actor();
        let mut access = ApiAccess::with_actor(kind, actor, req);
        access.subjects.client_id = caller.verified.client_id.as_deref().map(str::to_owned);
        access.organization = caller.verified.organization.as_deref().map(str::to_owned);
        access.purpose = caller.verified.purpose.map(|p| p.code().to_owned());
        access
    }

    /// A call by a signed-in console user, known by its caller id.
    pub fn for_console(kind: AccessKind, caller_id: &str, req: &HttpRequest) -> ApiAccess {
        ApiAccess::with_actor(kind, caller_id.to_owned(), req)
    }

    fn with_actor(kind: AccessKind, actor: String, req: &HttpRequest) -> ApiAccess {
        let query = req.query_string();
        ApiAccess {
            kind,
            time_ms: now_ms(req),
            subjects: ReceiptSubjects {
                actor,
                patients: Vec::new(),
                query: (!query.is_empty()).then(|| query.to_owned()),
                client_id: None,
                client_address: req.peer_addr().map(|a| a.ip().to_string()),
            },
            organization: None,
            purpose: None,
            site: None,
            resource_type: match kind {
                AccessKind::Audit(_) => "AuditEvent",
                AccessKind::Network(_) => "Patient",
                AccessKind::Consent(_) | AccessKind::Fhir => "Consent",
            },
            resources: Vec::new(),
        }
    }

    /// What the call does, once it is known (a consent written is a create or an update).
    pub fn set_kind(&mut self, kind: AccessKind) {
        self.kind = kind;
    }

    pub fn kind(&self) -> AccessKind {
        self.kind
    }

    /// The site the call concerns.
    pub fn set_site(&mut self, site: &str) {
        self.site = Some(site.to_owned());
    }

    /// A patient the call reached: `{site}/Patient/{id}`.
    pub fn add_patient(&mut self, site: &str, patient_id: &str) {
        self.subjects
            .add_patient(SitePatient::new(site, patient_id).to_string());
    }

    /// A patient the call reached, by its identity as receipts name it.
    pub fn add_patient_identity(&mut self, identity: &str) {
        self.subjects.add_patient(identity);
    }

    /// A resource the call wrote or returned (a Consent version, an AuditEvent).
    pub fn add_resource(&mut self, resource: &serde_json::Value) {
        if let Some(entry) = ResourceEntry::from_resource(resource) {
            self.resources.push(entry);
        }
    }

    /// Records the call's outcome and returns the answer to release: `outcome` (an error as
    /// its OperationOutcome) with `X-Assent-Receipt`, once the receipt is durable; else 503
    /// `receipt-unavailable`.
    pub async fn finish(
        self,
        state: &AppState,
        outcome: Result<HttpResponse, GatewayError>,
    ) -> Result<HttpResponse, GatewayError> {
        let (mut response, status) = match outcome {
            Ok(response) => {
                let status = response.status();
                (response, status)
            }
            Err(error) => {
                let status = error.status_code();
                (error.error_response(), status)
            }
        };
        let decision = if status == StatusCode::FORBIDDEN {
            AccessDecision::Deny
        } else if status.as_u16() < 400 {
            AccessDecision::Permit
        } else {
            AccessDecision::Error
        };
        let key = state.consents.key();
        let mut receipt = Receipt::new(
            crate::services::receipts::new_receipt_id(),
            self.time_ms,
            state.receipts.gateway_id(),
            self.subjects.keys(key),
            decision,
            status.as_u16(),
        );
        receipt.kind = self.kind;
        receipt.organization = self.organization;
        receipt.site = self.site;
        receipt.resource_type = Some(self.resource_type.to_owned());
        if decision == AccessDecision::Permit {
            receipt.resources = self.resources;
        }
        receipt.purpose = self.purpose;
        let receipt_id = receipt.id.clone();
        let pending = PendingReceipt {
            receipt,
            subjects: self.subjects,
        };
        match state.receipts.write(pending).await {
            Ok(_) => {
                stamp_receipt_header(&mut response, &receipt_id);
                Ok(response)
            }
            Err(e) => {
                tracing::error!(kind = self.kind.as_str(), error = %e, "no durable receipt: the answer is withheld");
                Err(GatewayError::ReceiptUnavailable)
            }
        }
    }
}

/// The time of the call, by the gateway's clock (the system's where the request carries no
/// gateway state).
fn now_ms(req: &HttpRequest) -> i64 {
    match req.app_data::<web::Data<AppState>>() {
        Some(state) => state.clock.now_millis(),
        None => SystemClock.now_millis(),
    }
}
