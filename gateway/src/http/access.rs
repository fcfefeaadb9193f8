//! Who may do what, in one place: the admin role (`/admin`), the audit role (`/audit`, the
//! console) and, in `consent_access.rs`, the consent API's rule (a patient manages their own
//! consents; the consent-administrator role manages anyone's). Every check starts from the
//! authenticated [`Caller`]; the FHIR path's scopes are the proxy's (`proxy/scopes.rs`).

use actix_web::HttpRequest;
use assent_auth::{Permissions, ScopeContext};

use crate::http::caller::Caller;
use crate::http::error::GatewayError;
use crate::http::state::AppState;

/// `/admin` takes a verified token whose subject is one of its issuer's `admin_subjects`.
pub async fn require_admin(req: &HttpRequest, state: &AppState) -> Result<(), GatewayError> {
    let caller = state.callers.authenticate(req.headers()).await?;
    check_admin(&caller)
}

/// Whether an authenticated `caller` has the admin role (403 `forbidden` otherwise), for
/// handlers that keep the caller (the receipted network admin API).
pub fn check_admin(caller: &Caller) -> Result<(), GatewayError> {
    if caller.is_admin {
        Ok(())
    } else {
        tracing::info!(caller = %caller.id, "admin endpoint refused: not an admin subject");
        Err(GatewayError::Forbidden)
    }
}

/// Whether `caller` may read the audit log.
pub fn may_audit(caller: &Caller, state: &AppState) -> bool {
    if state.config.audit.subjects.contains(&caller.id) {
        return true;
    }
    let needed = Permissions::READ.union(Permissions::SEARCH);
    caller.verified.scopes.resource_scopes().iter().any(|s| {
        matches!(s.context, ScopeContext::User | ScopeContext::System)
            && s.resource_type.as_deref() == Some("AuditEvent")
            && s.permissions.contains(needed)
            && s.conditions.is_empty()
    })
}

/// Checks the audit role: refused with `audit-forbidden`.
pub fn require_audit(caller: &Caller, state: &AppState) -> Result<(), GatewayError> {
    if may_audit(caller, state) {
        Ok(())
    } else {
        tracing::info!(route = "audit", "audit endpoint refused: no audit role");
        Err(GatewayError::AuditForbidden)
    }
}
