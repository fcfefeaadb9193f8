//! Every failure the gateway answers with, and the one table that turns each into an HTTP
//! status, an `OperationOutcome` issue code and a stable error code.
//!
//! The stable codes are a documented contract (README, openapi/): clients may match on them.
//! Messages never carry upstream detail (hostnames, upstream bodies) or patient identifiers.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use assent_auth::AuthError;
use assent_fhir::{Issue, IssueCode, Severity, operation_outcome};

use crate::http::consent_access::ConsentRefusal;

/// Which side caused a failure: decides the status class and whether a retry can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The caller sent something wrong (4xx).
    Client,
    /// The hospital's server failed or could not be reached (502/504).
    Upstream,
    /// The gateway itself or its store failed (500/503).
    Internal,
}

/// A failure answered to the client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// The bearer token, its scopes or the purpose of use were not accepted; the auth crate
    /// gives the stable code, the status and the `WWW-Authenticate` challenge.
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("the token's patient context does not cover this resource")]
    OutsidePatientContext,
    /// The token's patient launch context is not bound to a patient here
    /// (`http/patient_context.rs`): unbound by its `aud`, another site's patient, or a network
    /// patient without exactly one record at this site.
    #[error("{0}")]
    PatientContext(#[from] crate::http::patient_context::ContextRefusal),
    #[error("the caller lacks the role this endpoint needs")]
    Forbidden,
    #[error("reading the audit log needs the audit role")]
    AuditForbidden,
    /// The patient portal is for a patient signed in with a bound launch context.
    #[error("the patient portal is for patients signed in with their own patient launch context")]
    PortalPatientRequired,
    /// A portal form without the session's CSRF token: nothing is changed.
    #[error("this form did not come from your portal session; nothing was changed")]
    CsrfTokenInvalid,
    /// The consent API's rule (`consent_authz`) refused: another patient than the launch
    /// context's, no consent-administrator role, or a grant of the caller to itself.
    #[error("{0}")]
    ConsentRefused(crate::http::consent_access::ConsentRefusal),
    /// The ledger's contract refused: another consortium member created the consent, and
    /// only it may put new versions (any member may revoke).
    #[error(
        "this consent was created through another consortium member's gateway; change it there (any member may revoke it)"
    )]
    ConsentOtherMember,
    #[error("unknown site")]
    UnknownSite,
    /// The endpoint exists but holds nothing under the id asked for (an unknown consent,
    /// receipt or console receipt page).
    #[error("nothing with this id was found")]
    NotFound,
    /// No endpoint at this path (for any method).
    #[error("no such endpoint")]
    NoSuchEndpoint,
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The HTTP layer could not read the request line or a header (answered by the
    /// connection layer, `http/connection.rs`, in place of actix-http's bare 400).
    #[error("the request could not be read as HTTP")]
    RequestUnreadable,
    /// The request head is over the HTTP layer's size or header-count limit (431).
    #[error("the request head is too large or has too many header fields")]
    RequestHeadTooLarge,
    /// The request head did not arrive in full within the client request timeout (408).
    #[error("the request head did not arrive in time")]
    RequestHeadTimeout,
    /// A FHIR interaction the gateway does not forward; `allow` is what the path takes (the
    /// `Allow` header).
    #[error("the {interaction} interaction is not supported through the gateway")]
    MethodNotAllowed {
        interaction: &'static str,
        allow: &'static str,
    },
    /// A method the gateway's own API does not declare for this path; the value is the
    /// `Allow` header (the declared methods).
    #[error("this endpoint does not take this method; it takes {0}")]
    ApiMethodNotAllowed(String),
    #[error("the request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// A request body in a media type the endpoint does not read.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// A response format (`Accept`, `_format`) the gateway does not serve.
    #[error("not acceptable: {0}")]
    NotAcceptable(String),
    #[error("access denied: {0}")]
    Denied(String),
    /// Break-glass would override this deny, but the request gave no justification.
    #[error(
        "access denied: {0}; break-glass needs a justification in the X-Assent-Break-Glass-Reason header"
    )]
    BreakGlassJustificationRequired(String),
    /// The break-glass justification header is too long or not printable text.
    #[error("the break-glass justification is not acceptable: {0}")]
    BreakGlassReasonInvalid(&'static str),
    /// A paging link that is not this caller's, not this site's, altered or expired; the
    /// value says which, in words that name nothing of the page.
    #[error("the paging link is not valid: {0}; run the search again")]
    BadPageToken(crate::http::paging::PageTokenError),
    /// An operation that is not on the site's allow-list; the value is its name.
    #[error("the operation ${0} is not forwarded by the gateway to this site")]
    OperationNotAllowed(String),
    /// A request form whose answer the gateway cannot decide or shape (`_contained`, a
    /// `_summary` or `_elements` it cannot honour); the value says why.
    #[error("this request form is not served: {0}")]
    FormNotServed(String),
    /// `_summary=count` (or `_count=0`) where the count could not be taken over what the
    /// caller may see alone.
    #[error(
        "a count is given only for a search that names its patients, all of them permitted, and whose matches fit the counting limit"
    )]
    CountNotReleased,
    /// The site answered a read with another resource than the one asked for.
    #[error("the site answered with another resource than the one asked for")]
    UpstreamMismatch,
    #[error("the site could not be reached")]
    UpstreamUnreachable,
    #[error("the site did not answer in time")]
    UpstreamTimeout,
    #[error("the site answered with an error")]
    UpstreamFailed,
    #[error("the site's answer could not be read")]
    UpstreamBadResponse,
    #[error("the site is failing and temporarily cut off; retry later")]
    CircuitOpen,
    #[error("the site rejected the gateway's own credentials")]
    UpstreamAuthFailed,
    #[error("the requested resource was not found at the site")]
    UpstreamNotFound,
    /// A resource of a request that named no patient, denied on its content: answered
    /// exactly as [`GatewayError::UpstreamNotFound`] (status, code, text), so that the answer
    /// does not tell whether a record exists; the receipt records the deny.
    #[error("the requested resource was not found at the site")]
    ContentDenied,
    #[error("the resource is gone at the site")]
    UpstreamGone,
    #[error("the site rejected the request as invalid")]
    UpstreamRejected,
    #[error("the gateway's store is unavailable")]
    StoreUnavailable,
    /// An administrator's change of the network patient index that cannot be made as asked:
    /// the candidate was decided already, or the site patient is linked already (unlink
    /// first).
    #[error("the network link cannot be changed so: {0}")]
    NetworkLinkConflict(&'static str),
    #[error("consent state is unavailable; no data is released without a decision")]
    ConsentUnavailable,
    #[error("the access could not be recorded; no data is released without a durable receipt")]
    ReceiptUnavailable,
    /// A resource the gateway was given is not acceptable; `expression` names the element.
    #[error("{message}")]
    InvalidResource {
        message: String,
        expression: Option<String>,
    },
    #[error("{0}")]
    VersionConflict(String),
    /// A site adapter file that cannot be loaded: the message names the file, the line and
    /// the key; `key` is also the issue's expression.
    #[error("{message}")]
    AdapterInvalid {
        message: String,
        key: Option<String>,
    },
    #[error("the site has no adapter configured")]
    NoAdapter,
    /// The client asked (`fhirVersion` in `Accept` or `_format`) for a FHIR version the
    /// gateway does not serve; the value is what it asked for.
    #[error("FHIR version `{0}` is not served; ask for fhirVersion 3.0, 4.0, 4.3 or 5.0")]
    FhirVersionNotSupported(String),
    /// A resource type outside the converted types, when the client's FHIR version differs
    /// from the site's; `issue` names the type.
    #[error("{}", issue.diagnostics)]
    TranslationUnsupported { issue: Issue },
    /// `Prefer: handling=strict` and the translation between versions would lose data; the
    /// issues say what.
    #[error("the translation to FHIR {to} would lose data ({} issues); without `Prefer: handling=strict` the lossy result is returned with X-Assent-Translation-Issues", issues.len())]
    TranslationLossy {
        to: assent_fhir::FhirVersion,
        issues: Vec<Issue>,
    },
    /// A network patient id (`Patient/{network-id}`, `patient={network-id}`) that names no
    /// network patient.
    #[error("no network patient has this id")]
    NetworkPatientNotFound,
    /// A request at the network level that is not a federated read the gateway serves; the
    /// value says what is served.
    #[error("this federated request is not served: {0}")]
    FederatedFormNotServed(String),
    /// `Prefer: handling=strict` and some sites of a federated request did not answer; the
    /// value names each such site and why (its stable error code), never a consent refusal.
    #[error("the federated answer would be incomplete: {}", describe_failures(.0))]
    FederationIncomplete(Vec<(String, String)>),
    #[error("internal error")]
    Internal,
}

/// `site-a (upstream-timeout), site-b (upstream-unreachable)`.
fn describe_failures(failures: &[(String, String)]) -> String {
    failures
        .iter()
        .map(|(site, code)| format!("{site} ({code})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One row of the error table.
pub struct ErrorRow {
    pub status: StatusCode,
    pub issue_code: IssueCode,
    /// Stable, documented code; also the `details.coding.code` of the OperationOutcome.
    pub code: &'static str,
    pub side: Side,
}

impl GatewayError {
    /// THE table: every error's status, issue code, stable code and side.
    pub fn row(&self) -> ErrorRow {
        use GatewayError as E;
        use IssueCode as I;
        use Side::*;
        let (status, issue_code, code, side) = match self {
            E::Auth(auth) => {
                let side = if auth.status() >= 500 {
                    Upstream
                } else {
                    Client
                };
                (auth.status(), auth.to_issue().code, auth.code(), side)
            }
            E::OutsidePatientContext => (403, I::Forbidden, "scope-patient-mismatch", Client),
            E::PatientContext(_) => (403, I::Forbidden, "patient-context-unbound", Client),
            E::Forbidden => (403, I::Forbidden, "forbidden", Client),
            E::AuditForbidden => (403, I::Forbidden, "audit-role-required", Client),
            E::PortalPatientRequired => (403, I::Forbidden, "portal-patient-required", Client),
            E::CsrfTokenInvalid => (403, I::Forbidden, "csrf-token-invalid", Client),
            E::ConsentRefused(ConsentRefusal::OtherPatient) => {
                (403, I::Forbidden, "consent-patient-mismatch", Client)
            }
            E::ConsentRefused(ConsentRefusal::AdminRequired) => {
                (403, I::Forbidden, "consent-admin-required", Client)
            }
            E::ConsentRefused(ConsentRefusal::SelfGrant) => {
                (403, I::Forbidden, "consent-self-grant", Client)
            }
            E::ConsentRefused(ConsentRefusal::ScopeMissing) => {
                (403, I::Forbidden, "scope-insufficient", Client)
            }
            E::ConsentOtherMember => (403, I::Forbidden, "consent-other-member", Client),
            E::UnknownSite => (404, I::NotFound, "unknown-site", Client),
            E::NotFound | E::NoSuchEndpoint => (404, I::NotFound, "not-found", Client),
            E::Malformed(_) => (400, I::Invalid, "malformed-request", Client),
            E::RequestUnreadable => (400, I::Structure, "request-unreadable", Client),
            E::RequestHeadTooLarge => (431, I::TooLong, "request-head-too-large", Client),
            E::RequestHeadTimeout => (408, I::Timeout, "request-head-timeout", Client),
            E::MethodNotAllowed { .. } | E::ApiMethodNotAllowed(_) => {
                (405, I::NotSupported, "method-not-allowed", Client)
            }
            E::BodyTooLarge { .. } => (413, I::TooLong, "body-too-large", Client),
            E::UnsupportedMediaType(_) => (415, I::NotSupported, "unsupported-media-type", Client),
            E::NotAcceptable(_) => (406, I::NotSupported, "not-acceptable", Client),
            E::Denied(_) => (403, I::Forbidden, "consent-denied", Client),
            E::BreakGlassJustificationRequired(_) => (
                403,
                I::Forbidden,
                "break-glass-justification-required",
                Client,
            ),
            E::BreakGlassReasonInvalid(_) => {
                (400, I::Invalid, "break-glass-reason-invalid", Client)
            }
            E::BadPageToken(_) => (403, I::Security, "bad-page-token", Client),
            E::OperationNotAllowed(_) => (403, I::NotSupported, "operation-not-allowed", Client),
            E::FormNotServed(_) => (400, I::NotSupported, "form-not-served", Client),
            E::CountNotReleased => (403, I::Forbidden, "count-not-released", Client),
            E::UpstreamMismatch => (502, I::Processing, "upstream-mismatch", Upstream),
            E::UpstreamUnreachable => (502, I::Transient, "upstream-unreachable", Upstream),
            E::UpstreamTimeout => (504, I::Timeout, "upstream-timeout", Upstream),
            E::UpstreamFailed => (502, I::Exception, "upstream-error", Upstream),
            E::UpstreamBadResponse => (502, I::Structure, "upstream-bad-response", Upstream),
            E::CircuitOpen => (503, I::Transient, "upstream-circuit-open", Upstream),
            E::UpstreamAuthFailed => (502, I::Security, "upstream-auth-failed", Upstream),
            E::UpstreamNotFound => (404, I::NotFound, "resource-not-found", Upstream),
            E::ContentDenied => (404, I::NotFound, "resource-not-found", Upstream),
            E::UpstreamGone => (410, I::Deleted, "resource-gone", Upstream),
            E::UpstreamRejected => (400, I::Invalid, "upstream-rejected", Upstream),
            E::StoreUnavailable => (503, I::Transient, "store-unavailable", Internal),
            E::NetworkLinkConflict(_) => (409, I::Processing, "network-link-conflict", Client),
            E::ConsentUnavailable => (503, I::Transient, "consent-unavailable", Internal),
            E::ReceiptUnavailable => (503, I::Transient, "receipt-unavailable", Internal),
            E::InvalidResource { .. } => (422, I::Invalid, "invalid-resource", Client),
            E::VersionConflict(_) => (412, I::Processing, "version-conflict", Client),
            E::AdapterInvalid { .. } => (422, I::Invalid, "adapter-invalid", Client),
            E::NoAdapter => (404, I::NotFound, "adapter-not-configured", Client),
            E::FhirVersionNotSupported(_) => {
                (406, I::NotSupported, "fhir-version-not-supported", Client)
            }
            E::TranslationUnsupported { .. } => {
                (422, I::NotSupported, "translation-unsupported-type", Client)
            }
            E::TranslationLossy { .. } => (422, I::Processing, "translation-lossy", Client),
            E::NetworkPatientNotFound => (404, I::NotFound, "network-patient-not-found", Client),
            E::FederatedFormNotServed(_) => {
                (400, I::NotSupported, "federated-form-not-served", Client)
            }
            E::FederationIncomplete(_) => (502, I::Incomplete, "federation-incomplete", Upstream),
            E::Internal => (500, I::Exception, "internal", Internal),
        };
        ErrorRow {
            // Every literal above is a valid status code.
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            issue_code,
            code,
            side,
        }
    }

    /// The stable error code.
    pub fn code(&self) -> &'static str {
        self.row().code
    }

    /// The OperationOutcome body for this error.
    pub fn to_operation_outcome(&self) -> serde_json::Value {
        let row = self.row();
        let severity = match row.side {
            Side::Client => Severity::Error,
            Side::Upstream | Side::Internal => Severity::Fatal,
        };
        let mut outcome =
            operation_outcome(&[Issue::new(severity, row.issue_code, self.to_string())]);
        outcome["issue"][0]["details"] = serde_json::json!({
            "coding": [{"system": ERROR_CODE_SYSTEM, "code": row.code}],
            "text": self.to_string(),
        });
        if let GatewayError::InvalidResource {
            expression: Some(expression),
            ..
        }
        | GatewayError::AdapterInvalid {
            key: Some(expression),
            ..
        } = self
        {
            outcome["issue"][0]["expression"] = serde_json::json!([expression]);
        }
        match self {
            GatewayError::TranslationUnsupported { issue } if !issue.expression.is_empty() => {
                outcome["issue"][0]["expression"] = serde_json::json!(issue.expression);
            }
            GatewayError::FederationIncomplete(failures) => {
                // The summary first (with the stable code), then one issue per site.
                if let Some(all) = outcome["issue"].as_array_mut() {
                    all.extend(failures.iter().map(|(site, code)| {
                        serde_json::json!({
                            "severity": "error",
                            "code": "incomplete",
                            "diagnostics": format!("site {site}: {code}"),
                            "details": {"coding": [{"system": ERROR_CODE_SYSTEM, "code": code}]},
                        })
                    }));
                }
            }
            GatewayError::TranslationLossy { issues, .. } => {
                // The summary first (with the stable code), then every issue of the translation.
                if let Some(all) = outcome["issue"].as_array_mut() {
                    all.extend(issues.iter().map(Issue::to_json));
                }
            }
            _ => {}
        }
        outcome
    }
}

/// The code system of the gateway's stable error codes.
pub const ERROR_CODE_SYSTEM: &str = "urn:assent:error-code";

impl ResponseError for GatewayError {
    fn status_code(&self) -> StatusCode {
        self.row().status
    }

    fn error_response(&self) -> HttpResponse {
        let row = self.row();
        let mut response = HttpResponse::build(row.status);
        response.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/fhir+json"),
        ));
        match self {
            GatewayError::Auth(auth) => {
                if let Some(challenge) = auth.www_authenticate()
                    && let Ok(value) = HeaderValue::from_str(&with_realm(&challenge))
                {
                    response.insert_header((header::WWW_AUTHENTICATE, value));
                }
            }
            GatewayError::OutsidePatientContext => {
                response.insert_header((
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "Bearer realm=\"assent\", error=\"insufficient_scope\", error_description=\"scope-patient-mismatch\"",
                    ),
                ));
            }
            GatewayError::MethodNotAllowed { allow, .. } => {
                response.insert_header((header::ALLOW, HeaderValue::from_static(allow)));
            }
            GatewayError::ApiMethodNotAllowed(allow) => {
                if let Ok(value) = HeaderValue::from_str(allow) {
                    response.insert_header((header::ALLOW, value));
                }
            }
            GatewayError::CircuitOpen => {
                response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("30")));
            }
            _ => {}
        }
        response.body(self.to_operation_outcome().to_string())
    }
}

/// An RFC 6750 challenge from the auth crate with the gateway's realm first.
fn with_realm(challenge: &str) -> String {
    match challenge.strip_prefix("Bearer") {
        Some("") => "Bearer realm=\"assent\"".to_owned(),
        Some(rest) => format!("Bearer realm=\"assent\",{rest}"),
        None => challenge.to_owned(),
    }
}

impl From<crate::services::upstream::UpstreamError> for GatewayError {
    fn from(e: crate::services::upstream::UpstreamError) -> Self {
        use crate::services::upstream::UpstreamError as U;
        match e {
            U::CircuitOpen => GatewayError::CircuitOpen,
            U::Timeout => GatewayError::UpstreamTimeout,
            U::Unreachable => GatewayError::UpstreamUnreachable,
            U::AuthFailed => GatewayError::UpstreamAuthFailed,
            U::Failed => GatewayError::UpstreamFailed,
            U::BadResponse => GatewayError::UpstreamBadResponse,
            U::Internal => GatewayError::Internal,
        }
    }
}

impl From<crate::services::break_glass::ReasonInvalid> for GatewayError {
    fn from(e: crate::services::break_glass::ReasonInvalid) -> Self {
        GatewayError::BreakGlassReasonInvalid(e.0)
    }
}

impl From<crate::services::audit::AuditError> for GatewayError {
    fn from(e: crate::services::audit::AuditError) -> Self {
        use crate::services::audit::AuditError as A;
        match e {
            A::Malformed(message) => GatewayError::Malformed(message),
            A::StoreUnavailable => GatewayError::StoreUnavailable,
            A::Internal => GatewayError::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_services_errors_keep_their_codes() {
        use crate::services::break_glass::ReasonInvalid;
        use crate::services::upstream::UpstreamError as U;
        let cases = [
            (GatewayError::from(U::CircuitOpen), "upstream-circuit-open"),
            (GatewayError::from(U::Timeout), "upstream-timeout"),
            (GatewayError::from(U::Unreachable), "upstream-unreachable"),
            (
                GatewayError::from(ReasonInvalid("x")),
                "break-glass-reason-invalid",
            ),
        ];
        for (error, code) in cases {
            assert_eq!(error.code(), code, "{error:?}");
        }
    }

    #[test]
    fn the_table_gives_the_documented_statuses() {
        let cases: [(GatewayError, u16, &str); 17] = [
            (GatewayError::UnknownSite, 404, "unknown-site"),
            (
                GatewayError::Malformed("x".into()),
                400,
                "malformed-request",
            ),
            (
                GatewayError::BodyTooLarge { limit: 1 },
                413,
                "body-too-large",
            ),
            (
                GatewayError::UnsupportedMediaType("x".into()),
                415,
                "unsupported-media-type",
            ),
            (
                GatewayError::UpstreamUnreachable,
                502,
                "upstream-unreachable",
            ),
            (GatewayError::UpstreamTimeout, 504, "upstream-timeout"),
            (GatewayError::Denied("x".into()), 403, "consent-denied"),
            (GatewayError::StoreUnavailable, 503, "store-unavailable"),
            (GatewayError::ReceiptUnavailable, 503, "receipt-unavailable"),
            (GatewayError::AuditForbidden, 403, "audit-role-required"),
            (
                GatewayError::PortalPatientRequired,
                403,
                "portal-patient-required",
            ),
            (GatewayError::CsrfTokenInvalid, 403, "csrf-token-invalid"),
            (
                GatewayError::PatientContext(
                    crate::http::patient_context::ContextRefusal::OtherSite,
                ),
                403,
                "patient-context-unbound",
            ),
            (
                GatewayError::ConsentRefused(ConsentRefusal::OtherPatient),
                403,
                "consent-patient-mismatch",
            ),
            (
                GatewayError::ConsentRefused(ConsentRefusal::AdminRequired),
                403,
                "consent-admin-required",
            ),
            (
                GatewayError::ConsentRefused(ConsentRefusal::SelfGrant),
                403,
                "consent-self-grant",
            ),
            (
                GatewayError::ConsentOtherMember,
                403,
                "consent-other-member",
            ),
        ];
        for (error, status, code) in cases.into_iter().chain([
            (GatewayError::Auth(AuthError::Expired), 401, "token-expired"),
            (
                GatewayError::Auth(AuthError::PatientContextMissing),
                403,
                "scope-patient-context-missing",
            ),
            (
                GatewayError::OutsidePatientContext,
                403,
                "scope-patient-mismatch",
            ),
            (GatewayError::RequestUnreadable, 400, "request-unreadable"),
            (
                GatewayError::NetworkLinkConflict("x"),
                409,
                "network-link-conflict",
            ),
            (
                GatewayError::RequestHeadTooLarge,
                431,
                "request-head-too-large",
            ),
            (
                GatewayError::RequestHeadTimeout,
                408,
                "request-head-timeout",
            ),
        ]) {
            let row = error.row();
            assert_eq!(row.status.as_u16(), status, "{error}");
            assert_eq!(row.code, code);
            let oo = error.to_operation_outcome();
            assert_eq!(oo["resourceType"], "OperationOutcome");
            assert_eq!(oo["issue"][0]["details"]["coding"][0]["code"], code);
        }
    }

    #[test]
    fn auth_errors_carry_their_challenge_with_the_realm() {
        let challenge = |e: GatewayError| {
            e.error_response()
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(
            challenge(GatewayError::Auth(AuthError::Missing)).as_deref(),
            Some("Bearer realm=\"assent\"")
        );
        assert_eq!(
            challenge(GatewayError::Auth(AuthError::Expired)).as_deref(),
            Some(
                "Bearer realm=\"assent\", error=\"invalid_token\", error_description=\"token-expired\""
            )
        );
        assert_eq!(
            challenge(GatewayError::Auth(AuthError::PurposeRequired)),
            None
        );
    }
}
