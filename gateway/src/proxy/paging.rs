//! The links and paging concern: inbound, a gateway paging link's token checked against the
//! request it came with ([`check_token`]); outbound ([`Paging`]), the pages of a search that
//! named no patient settled so that its links say nothing of what was withheld, `_summary=count`
//! counted over every page, and the links of an answer rewritten to the gateway and signed.
//!
//! Leaves out: what is released of each page (`release.rs`), the link rewriting mechanics
//! (`rewrite.rs`) and the token's cryptography (`http::paging`).

use assent_consent::Permit;
use assent_fhir::compartment::parse_search;
use assent_fhir::shaping::Shape;
use serde_json::json;

use crate::http::error::GatewayError;
use crate::http::paging::PageSigner;
use crate::proxy::adapter::Adapter;
use crate::proxy::dialect::Dialect;
use crate::proxy::exchange::Outcome;
use crate::proxy::forward::{self, BodyNotes};
use crate::proxy::release::{self, Release, RequestFacts};
use crate::proxy::request::FhirRequest;
use crate::proxy::rewrite;
use crate::services::upstream::{self, Site, UpstreamRequest};

/// Inbound: a request from a gateway paging link carries the token the gateway signed for
/// this site, caller and link; the base URL with a query is only ever such a link.
pub fn check_token(
    signer: &PageSigner,
    path: &str,
    site: &str,
    caller: &str,
    fhir: &FhirRequest,
    request_id: &str,
) -> Result<(), GatewayError> {
    if let Some(token) = &fhir.page_token {
        let signed = signed_part(path, site, &fhir.query);
        signer.verify(token, site, caller, &signed).map_err(|e| {
            tracing::info!(request_id = %request_id, reason = %e, "paging token refused");
            GatewayError::BadPageToken(e)
        })
    } else if fhir.resource_type.is_none() && fhir.interaction == assent_fhir::Interaction::Search {
        Err(GatewayError::Malformed(
            "a search names a resource type".into(),
        ))
    } else {
        Ok(())
    }
}

/// What a paging token signs for this request: the path below the site and the query without
/// the token, exactly as the rewrite module wrote it into the link.
fn signed_part(path: &str, site_id: &str, query: &str) -> String {
    let prefix_len = "/fhir/".len() + site_id.len();
    let below = path.get(prefix_len..).unwrap_or_default();
    if query.is_empty() {
        below.to_owned()
    } else {
        format!("{below}?{query}")
    }
}

/// Most further pages of the site's answer one client page may read (to skip empty pages and
/// to look ahead before giving a `next` link).
const MAX_PAGES_SCANNED: usize = 10;
/// Most upstream pages a count may read.
const COUNT_MAX_PAGES: usize = 20;
/// The page size a count asks the site for.
const COUNT_PAGE_SIZE: &str = "500";

/// Outbound: the way back to the site for further pages of the same answer, and the links
/// the caller is given.
pub struct Paging<'a> {
    pub site: &'a Site,
    pub permit: &'a Permit,
    pub client: &'a awc::Client,
    pub request_id: &'a str,
    pub signer: &'a PageSigner,
    /// The stable caller id the links are signed for.
    pub caller_id: &'a str,
}

impl Paging<'_> {
    /// Paging of a search that named no patient, so that its links say nothing of what was
    /// withheld: a page whose every entry was withheld is replaced by the next page with a
    /// released entry; a `next` link is given only when a released entry follows (the
    /// gateway looks ahead); `previous` and `last` links, which would count withheld pages,
    /// are removed. At most [`MAX_PAGES_SCANNED`] further pages are read; beyond that the
    /// `next` link is given as the site gave it.
    pub async fn settle(
        &self,
        release: &mut Release<'_, '_>,
        adapter: &mut Adapter,
        bundle: &mut serde_json::Value,
        report: &mut release::BundleRelease,
        notes: &mut BodyNotes,
    ) -> Result<(), GatewayError> {
        // Whether the answer so far starts at the search's first page and released nothing
        // before the current page: then, with no `next` link left, it is complete.
        let from_first_page = release.facts.fhir.page_token.is_none()
            && !has_relation(bundle, "previous")
            && !has_relation(bundle, "prev");
        let site_total = report.site_total;
        let mut scanned = 0;
        while released_entries(bundle) == 0 && scanned < MAX_PAGES_SCANNED {
            let Some(next) = next_link(bundle, self.site) else {
                break;
            };
            scanned += 1;
            let mut page_notes = BodyNotes::default();
            let (page, page_report) = self
                .fetch_page(release, adapter, &next, &mut page_notes)
                .await?;
            // The answer is this page now: what its bytes say is what the answer's say.
            *bundle = page;
            *notes = page_notes;
            report.patients.extend(page_report.patients);
            report.break_glass |= page_report.break_glass;
            report.withheld += page_report.withheld;
        }
        if let Some(mut next) = next_link(bundle, self.site) {
            loop {
                if scanned >= MAX_PAGES_SCANNED {
                    set_next_link(bundle, self.site, &next);
                    break;
                }
                scanned += 1;
                // Only looked at, never written.
                let (peek, _) = self
                    .fetch_page(release, adapter, &next, &mut BodyNotes::default())
                    .await?;
                if released_entries(&peek) > 0 {
                    set_next_link(bundle, self.site, &next);
                    break;
                }
                match next_link(&peek, self.site) {
                    Some(after) => next = after,
                    None => {
                        set_next_link(bundle, self.site, "");
                        break;
                    }
                }
            }
        }
        if let Some(links) = bundle.get_mut("link").and_then(|l| l.as_array_mut()) {
            links.retain(|l| {
                !matches!(
                    l.get("relation").and_then(|r| r.as_str()),
                    Some("previous" | "prev" | "last")
                )
            });
        }
        // Complete from the first page: the total counts the matches released, as for an
        // answer complete in one page.
        if let Some(object) = bundle.as_object_mut() {
            if from_first_page
                && site_total
                && !has_relation(&serde_json::Value::Object(object.clone()), "next")
            {
                let matches = released_matches(object.get("entry"));
                object.insert("total".into(), json!(matches));
            } else {
                object.remove("total");
            }
        }
        Ok(())
    }

    /// One further page of the site's answer, decided.
    async fn fetch_page(
        &self,
        release: &mut Release<'_, '_>,
        adapter: &mut Adapter,
        path_and_query: &str,
        notes: &mut BodyNotes,
    ) -> Result<(serde_json::Value, release::BundleRelease), GatewayError> {
        let mut response = self.get(path_and_query.to_owned()).await?;
        if !response.status().is_success() {
            return Err(forward::upstream_error(response.status()));
        }
        let mut page = forward::read_bundle(&mut response, self.site, notes).await?;
        adapter.response(&mut page);
        let report = release.bundle(&mut page).await?;
        Ok((page, report))
    }

    async fn get(&self, path_and_query: String) -> Result<awc::ClientResponse, GatewayError> {
        let request = UpstreamRequest::get(path_and_query, self.request_id);
        Ok(upstream::forward(self.permit, self.site, self.client, &request).await?)
    }

    /// `_summary=count` (or `_count=0`): the number of matches the caller may see, taken
    /// over every page of the site's answer with each match decided as it would be released.
    /// Only for a search that named its patients (all permitted); for any other the count
    /// could say what was withheld, so it is refused, as is a search whose matches exceed
    /// the counting limit. `form`: the form of `POST _search`, as forwarded.
    pub async fn count(
        &self,
        release: &mut Release<'_, '_>,
        adapter: &mut Adapter,
        form: Option<&str>,
        outcome: &mut Outcome,
    ) -> Result<usize, GatewayError> {
        let fhir = release.facts.fhir;
        if release.facts.named.is_none() || fhir.interaction != assent_fhir::Interaction::Search {
            return Err(GatewayError::CountNotReleased);
        }
        let mut params = parse_search(&fhir.query);
        if let Some(form) = form {
            params.extend(parse_search(form));
        }
        params.retain(|p| p.raw_name != "_count");
        let path = fhir
            .upstream_path
            .strip_suffix("/_search")
            .unwrap_or(&fhir.upstream_path)
            .to_owned();
        let mut next = Some(format!(
            "{path}?{}",
            assent_fhir::query::encode_pairs(
                params
                    .iter()
                    .map(|p| (p.raw_name.as_str(), p.value.as_str()))
                    .chain([("_count", COUNT_PAGE_SIZE)])
            )
        ));
        let counting = RequestFacts {
            named: None,
            ..release.facts
        };
        let mut total = 0;
        let mut pages = 0;
        while let Some(path_and_query) = next.take() {
            pages += 1;
            if pages > COUNT_MAX_PAGES {
                return Err(GatewayError::CountNotReleased);
            }
            let mut response = self.get(path_and_query).await?;
            outcome.upstream_status = Some(response.status().as_u16());
            if !response.status().is_success() {
                return Err(forward::upstream_error(response.status()));
            }
            // Counted, never written: the spellings are not needed.
            let mut bundle =
                forward::read_bundle(&mut response, self.site, &mut BodyNotes::default()).await?;
            adapter.response(&mut bundle);
            let mut matches_only = bundle.clone();
            if let Some(entries) = matches_only.get_mut("entry").and_then(|e| e.as_array_mut()) {
                entries.retain(|e| {
                    e.pointer("/search/mode")
                        .and_then(|m| m.as_str())
                        .is_none_or(|m| m == "match")
                });
            }
            release::release_bundle(release.enforcer, &counting, &mut matches_only).await?;
            total += matches_only
                .get("entry")
                .and_then(|e| e.as_array())
                .map_or(0, |e| e.len());
            next = next_link(&bundle, self.site);
        }
        Ok(total)
    }

    /// The links of a Bundle answer for the caller: the gateway's shaping parameters and the
    /// client's versioned `_format` carried, then every link rewritten to the gateway and
    /// signed for this caller.
    /// `scrub`: whether strings naming the upstream may be in it (see `rewrite`).
    pub fn links(
        &self,
        bundle: &mut serde_json::Value,
        shape: &Shape,
        dialect: &Dialect,
        scrub: bool,
    ) {
        rewrite::carry_params(bundle, &self.site.urls, &shape.link_params());
        dialect.carry_format(bundle, &self.site.urls);
        let sign = |rest: &str| self.signer.sign(&self.site.id, self.caller_id, rest);
        rewrite::rewrite_bundle(bundle, &self.site.urls, &sign, scrub);
    }
}

fn has_relation(bundle: &serde_json::Value, relation: &str) -> bool {
    bundle
        .get("link")
        .and_then(|l| l.as_array())
        .into_iter()
        .flatten()
        .any(|l| l.get("relation").and_then(|r| r.as_str()) == Some(relation))
}

/// Released entries that are search matches.
fn released_matches(entries: Option<&serde_json::Value>) -> usize {
    entries
        .and_then(|e| e.as_array())
        .into_iter()
        .flatten()
        .filter(|e| {
            e.pointer("/search/mode")
                .and_then(|m| m.as_str())
                .is_none_or(|m| m == "match")
                && e.pointer("/resource/resourceType").and_then(|t| t.as_str())
                    != Some("OperationOutcome")
        })
        .count()
}

/// Entries of a decided page that are released resources (not the gateway's outcomes).
fn released_entries(bundle: &serde_json::Value) -> usize {
    bundle
        .get("entry")
        .and_then(|e| e.as_array())
        .into_iter()
        .flatten()
        .filter(|e| {
            e.pointer("/resource/resourceType").and_then(|t| t.as_str()) != Some("OperationOutcome")
        })
        .count()
}

/// The `next` link of a site's page, relative to the site's base (only under it).
fn next_link(bundle: &serde_json::Value, site: &Site) -> Option<String> {
    bundle
        .get("link")
        .and_then(|l| l.as_array())
        .into_iter()
        .flatten()
        .find(|l| l.get("relation").and_then(|r| r.as_str()) == Some("next"))
        .and_then(|l| l.get("url"))
        .and_then(|u| u.as_str())
        .and_then(|u| site.urls.relative(u))
        .map(|rest| {
            rewrite::normalise_relative(rest)
                .trim_start_matches('/')
                .to_owned()
        })
}

/// Points the `next` link of `bundle` at `relative` (under the site's base), or removes it
/// when `relative` is empty.
fn set_next_link(bundle: &mut serde_json::Value, site: &Site, relative: &str) {
    let Some(links) = bundle.get_mut("link").and_then(|l| l.as_array_mut()) else {
        return;
    };
    links.retain(|l| l.get("relation").and_then(|r| r.as_str()) != Some("next"));
    if !relative.is_empty() {
        let separator = if relative.starts_with('?') { "" } else { "/" };
        links.push(json!({
            "relation": "next",
            "url": format!("{}{separator}{relative}", site.urls.upstream_base),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signed_part_is_what_the_link_carried() {
        assert_eq!(
            signed_part("/fhir/st-mary/Patient", "st-mary", "page=2"),
            "/Patient?page=2"
        );
        assert_eq!(
            signed_part("/fhir/st-mary", "st-mary", "_getpages=x"),
            "?_getpages=x"
        );
        assert_eq!(
            signed_part("/fhir/st-mary/Patient", "st-mary", ""),
            "/Patient"
        );
    }
}
