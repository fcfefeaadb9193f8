//! The site adapter concern, [`Adapter`]: inbound, the search values of the request put into
//! the site's own identifiers and codes (last, after every decision, which speak the
//! network's); outbound, the site's answer put back into the network's dialect (first, before
//! the scope and consent checks). Counts what it reported for the translation issues header.
//!
//! Leaves out: the adapter's rules and where they come from (`services::adapters`).

use std::sync::Arc;

use assent_adapters::site::SiteAdapter;
use assent_fhir::Issue;
use serde_json::Value;

use crate::http::state::AppState;
use crate::proxy::exchange::SiteRequest;
use crate::services::adapters;

/// The site's adapter applied to one request (none when the site has none), and what it
/// reported.
pub struct Adapter {
    adapter: Option<Arc<SiteAdapter>>,
    issues: Vec<Issue>,
}

impl Adapter {
    pub fn of(state: &AppState, site: &str) -> Adapter {
        Adapter {
            adapter: state.adapters.get(site),
            issues: Vec::new(),
        }
    }

    /// Inbound: the query and form values in the site's dialect. A paging link's query is the
    /// site's own already.
    pub fn request(&mut self, request: &mut SiteRequest) {
        let Some(adapter) = &self.adapter else {
            return;
        };
        if request.fhir.page_token.is_some() {
            return;
        }
        request.fhir.query = adapters::adapt_query(adapter, &request.fhir.query, &mut self.issues);
        if let Some(form) = &request.form {
            request.form = Some(adapters::adapt_query(adapter, form, &mut self.issues));
        }
    }

    /// Outbound: a parsed answer of the site, in the network's dialect.
    pub fn response(&mut self, resource: &mut Value) {
        if let Some(adapter) = &self.adapter {
            adapters::adapt_response(adapter, resource, &mut self.issues);
        }
    }

    /// Whether the site has an adapter (it writes configured values into answers).
    pub fn is_some(&self) -> bool {
        self.adapter.is_some()
    }

    /// The issues reported; `None` when the site has no adapter.
    pub fn issues(&self) -> Option<usize> {
        self.adapter.as_ref().map(|_| self.issues.len())
    }
}
