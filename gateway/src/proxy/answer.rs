//! The outbound half of an exchange: the site's answer through the outbound halves of the
//! concerns, in order: status → site adapter → release (scopes and consent; paging settles a
//! search that named no patient) → links and URLs → dialect (the client's version) → shaping
//! (`_summary`, `_elements`) → the released resources noted for the receipt.
//!
//! Two kinds of answer take that way: a Bundle, and a single resource (its identity checked;
//! conditional read headers answered after its decision). Leaves out: each concern's
//! mechanics (their own modules), the receipt (`receipt.rs`) and the CapabilityStatement,
//! served without authentication by `metadata.rs`.

use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::{HttpResponse, HttpResponseBuilder};
use assent_fhir::shaping::Shape;
use assent_fhir::spelling::Spellings;
use assent_receipts::ResourceEntry;
use serde_json::{Value, json};

use crate::http::error::GatewayError;
use crate::http::state::AppState;
use crate::proxy::adapter::Adapter;
use crate::proxy::dialect::{Dialect, Translated};
use crate::proxy::exchange::Outcome;
use crate::proxy::forward::{self, BodyNotes, Validators};
use crate::proxy::paging::Paging;
use crate::proxy::release::Release;
use crate::proxy::rewrite;
use crate::services::upstream::Site;

/// The response header saying that data was released on break-glass.
const BREAK_GLASS_USED: (&str, &str) = ("x-assent-break-glass", "used");

/// The outbound concerns of one exchange, each holding what its inbound half learnt.
pub struct Outbound<'a, 'e> {
    pub state: &'a AppState,
    pub site: &'a Site,
    pub request_id: &'a str,
    pub release: Release<'a, 'e>,
    pub paging: Paging<'a>,
    pub adapter: Adapter,
    pub dialect: Dialect,
    pub shape: Shape,
    pub outcome: &'a mut Outcome,
    /// What the bytes of the bodies read say: how the site spelt their exponents (to write
    /// them so again), whether a string may name the upstream.
    pub notes: BodyNotes,
}

impl Outbound<'_, '_> {
    /// The site's answer to the forwarded request, as the caller may have it. `headers`: the
    /// caller's (conditional read headers).
    pub async fn answer(
        mut self,
        headers: &HeaderMap,
        mut response: awc::ClientResponse,
    ) -> Result<HttpResponse, GatewayError> {
        let status = response.status();
        self.outcome.upstream_status = Some(status.as_u16());
        if let Err(e) = forward::check_status(status) {
            tracing::info!(request_id = %self.request_id, site = %self.site.id, upstream_status = status.as_u16(), "upstream answered with an error");
            return Err(e);
        }
        let mut out = HttpResponse::Ok();
        self.dialect.response_headers(&mut out, None);
        out.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        if let Some(basis) = self
            .outcome
            .decision
            .as_ref()
            .map(|d| d.basis().to_string())
            && let Ok(v) = HeaderValue::from_str(&basis)
        {
            out.insert_header(("x-assent-consent", v));
        }
        if self.release.enforcer.has_overrides() {
            out.insert_header(BREAK_GLASS_USED);
        }
        let fhir = self.release.facts.fhir;
        if fhir.returns_bundle() {
            let bundle = forward::read_bundle(&mut response, self.site, &mut self.notes).await?;
            self.bundle(out, bundle).await
        } else {
            self.resource(out, headers, response).await
        }
    }

    async fn bundle(
        &mut self,
        mut out: HttpResponseBuilder,
        mut bundle: Value,
    ) -> Result<HttpResponse, GatewayError> {
        let facts = self.release.facts;
        self.adapter.response(&mut bundle);
        let mut report = self.release.bundle(&mut bundle).await?;
        if facts.named.is_none() && facts.fhir.interaction == assent_fhir::Interaction::Search {
            let (release, adapter) = (&mut self.release, &mut self.adapter);
            self.paging
                .settle(release, adapter, &mut bundle, &mut report, &mut self.notes)
                .await?;
        }
        if report.withheld > 0 {
            tracing::info!(request_id = %self.request_id, site = %self.site.id, withheld = report.withheld, "entries withheld");
            // The history of one resource that named no patient: its versions are one
            // record, and withholding any of them is answered as for a record the site does
            // not have (an empty history would tell that it exists).
            if facts.named.is_none()
                && facts.fhir.interaction == assent_fhir::Interaction::History
                && facts.fhir.id.is_some()
            {
                return Err(GatewayError::ContentDenied);
            }
        }
        if report.break_glass {
            out.insert_header(BREAK_GLASS_USED);
        }
        self.outcome.released_patients.extend(report.patients);
        let scrub = self.scrub_needed();
        self.paging
            .links(&mut bundle, &self.shape, &self.dialect, scrub);
        let translated = self.dialect.translate_response(bundle)?;
        self.finish(out, translated, true)
    }

    /// A single resource: it must be the one asked for; it is decided (scopes, and consent
    /// on every patient it belongs to), then conditional headers are answered.
    async fn resource(
        &mut self,
        mut out: HttpResponseBuilder,
        headers: &HeaderMap,
        mut response: awc::ClientResponse,
    ) -> Result<HttpResponse, GatewayError> {
        let validators = Validators::of(&response);
        let mut resource = forward::read_json(&mut response, self.site, &mut self.notes).await?;
        self.adapter.response(&mut resource);
        forward::check_identity(self.release.facts.fhir, &resource)?;
        if resource.get("resourceType").and_then(|v| v.as_str()) == Some("OperationOutcome") {
            // An operation answered with the site's own messages: replaced by the gateway's.
            let outcome = assent_fhir::operation_outcome(&[assent_fhir::Issue::new(
                assent_fhir::Severity::Information,
                assent_fhir::IssueCode::Informational,
                "The site answered the operation with messages that are not passed on.",
            )]);
            let translated = self.dialect.translate_response(outcome)?;
            return self.finish(out, translated, false);
        }
        let (patients, break_glass) = self.release.resource(&resource).await?;
        if break_glass {
            out.insert_header(BREAK_GLASS_USED);
        }
        self.outcome.released_patients.extend(patients);
        let validators = validators.or_from(&resource);
        if validators.not_modified(headers) {
            let mut not_modified = HttpResponse::NotModified();
            validators.copy_to(&mut not_modified);
            self.outcome
                .released
                .extend(ResourceEntry::from_resource(&resource));
            return Ok(not_modified.finish());
        }
        validators.copy_to(&mut out);
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            if let Some(mapped) = response
                .headers()
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| self.site.urls.to_public(v))
                .and_then(|v| HeaderValue::from_str(&v).ok())
            {
                out.insert_header((name, mapped));
            }
        }
        if self.scrub_needed() {
            rewrite::scrub_strings(&mut resource, &self.site.urls);
        }
        let translated = self.dialect.translate_response(resource)?;
        self.finish(out, translated, true)
    }

    /// Whether the answer's strings are scrubbed of the upstream's URLs: when the site's bytes
    /// may name it, and always for a site with an adapter (its configured values are written
    /// into the tree after it was read).
    fn scrub_needed(&self) -> bool {
        self.notes.upstream_named || self.adapter.is_some()
    }

    /// The answer in the client's version and shape, with the count of issues the site
    /// adapter and the version translation reported. `patient_data`: the body is what the
    /// receipt lists as released (resources, or a Bundle's entries), shaped as asked, each
    /// hashed from its bytes as written when the answer is compact.
    fn finish(
        &mut self,
        mut out: HttpResponseBuilder,
        mut translated: Translated,
        patient_data: bool,
    ) -> Result<HttpResponse, GatewayError> {
        let dialect = &self.dialect;
        if let Some(issues) = translated.issues {
            tracing::debug!(request_id = %self.request_id, site = %self.site.id, from = %dialect.site, to = %dialect.client, issues, "translated");
        }
        let issues = match (translated.issues, self.adapter.issues()) {
            (None, None) => None,
            (t, a) => Some(t.unwrap_or(0) + a.unwrap_or(0)),
        };
        dialect.response_headers(&mut out, issues);
        let resource = &mut translated.resource;
        // Released Patients teach the network index (before shaping cuts them), where the site
        // has network identifier systems; shaping applies to every released resource.
        let learns = !self.state.network.systems_of(&self.site.id).is_empty();
        let cuts = self.shape.cuts();
        if patient_data && (cuts || learns) {
            let is_bundle = resource.get("resourceType").and_then(|v| v.as_str()) == Some("Bundle");
            let released: Vec<&mut Value> = if is_bundle {
                resource
                    .get_mut("entry")
                    .and_then(|e| e.as_array_mut())
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.get_mut("resource"))
                    .collect()
            } else {
                vec![resource]
            };
            for r in released {
                if learns {
                    self.state.network.offer(&self.site.id, r);
                }
                let outcome =
                    r.get("resourceType").and_then(|t| t.as_str()) == Some("OperationOutcome");
                if cuts && !(is_bundle && outcome) {
                    self.shape.apply(r, dialect.client);
                }
            }
        }
        let pretty = pretty(&self.release.facts.fhir.query);
        let body = &translated.resource;
        if !patient_data {
            return Ok(out.body(body_of(body, pretty, &self.notes.spellings)?));
        }
        // The receipt lists every released resource (the body, or a Bundle's entries) with the
        // SHA-256 of its canonical JSON. A compact answer is written once and each resource's
        // bytes in it, which are its canonical JSON, are hashed as sent; an indented one, or
        // one with exponents written back as the site spelt them, is hashed the canonical way.
        if !pretty && self.notes.spellings.is_empty() {
            // The gateway's URLs may be longer than the site's: a little room beyond its size.
            let capacity = self.notes.bytes + self.notes.bytes / 16 + 1024;
            let written = assent_receipts::write_released_sized(body, capacity)
                .map_err(|_| GatewayError::Internal)?;
            self.outcome.released.extend(written.entries);
            return Ok(out.body(written.bytes));
        }
        self.outcome.released.extend(
            assent_receipts::released_resources(body).filter_map(ResourceEntry::from_resource),
        );
        Ok(out.body(body_of(body, pretty, &self.notes.spellings)?))
    }
}

/// The answer to `_summary=count` (or `_count=0`): a Bundle with the count alone. `query`:
/// the request's (`_pretty`).
pub fn count(dialect: &Dialect, total: usize, query: &str) -> Result<HttpResponse, GatewayError> {
    let mut out = HttpResponse::Ok();
    dialect.response_headers(&mut out, None);
    out.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
    let bundle = json!({"resourceType": "Bundle", "type": "searchset", "total": total});
    Ok(out.body(body_of(&bundle, pretty(query), &Spellings::default())?))
}

/// Whether the request asked for an indented answer (`_pretty=true`, as FHIR defines it).
pub fn pretty(query: &str) -> bool {
    query.contains("_pretty")
        && assent_fhir::query::pairs(query)
            .iter()
            .any(|(name, value)| name == "_pretty" && value == "true")
}

/// The JSON body, indented when `pretty`, its numbers spelt as the bodies read spelt them
/// (`spellings`: serde_json's parser respells exponents, `1E3` → `1e+3`).
pub fn body_of(
    value: &Value,
    pretty: bool,
    spellings: &Spellings,
) -> Result<Vec<u8>, GatewayError> {
    spellings
        .to_vec(value, pretty)
        .map_err(|_| GatewayError::Internal)
}
