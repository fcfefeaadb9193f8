//! The dialect concern, [`Dialect`]: which FHIR version a client reads, its request put into
//! the site's version on the way in, and the site's answer put into the client's version on
//! the way out.
//!
//! Owns version negotiation (the `fhirVersion` media-type parameter of `Accept` or `_format`,
//! else `[fhir] default_version`, else the site's own version), `Prefer: handling=strict|lenient`,
//! request translation (renamed resource types in the path, search parameters and references
//! in their values, `POST _search` forms), response translation (resources, Bundles with
//! their entries and contained resources, the CapabilityStatement), the
//! `X-Assent-Translation-Issues` count, and carrying a versioned `_format` into the paging
//! links the gateway signs. Leaves out: the conversion rules (`assent-adapters`), per-site
//! identifier and code rewriting (site adapters), consent and scopes (they decide on the
//! site's version before anything is translated).

use actix_web::HttpResponseBuilder;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use assent_adapters::{TranslateError, converts, translate, translate_type_name};
use assent_fhir::format::media_type_from_query;
use assent_fhir::{FhirVersion, Interaction, Issue, Severity, operation_outcome};
use bytes::Bytes;
use serde_json::{Value, json};

use crate::http::error::GatewayError;
use crate::proxy::exchange::SiteRequest;
use crate::proxy::request::FhirRequest;
use crate::services::upstream::UrlMap;

/// The response header counting the issues of a translation between versions.
pub const TRANSLATION_ISSUES_HEADER: &str = "x-assent-translation-issues";

/// The versions of one request: the site's, the one the client reads, and how lossy results
/// are handled.
#[derive(Debug, Clone)]
pub struct Dialect {
    /// The version the site speaks (`sites.{id}.fhir_version`).
    pub site: FhirVersion,
    /// The version the client reads and writes its search in.
    pub client: FhirVersion,
    /// `Prefer: handling=strict`: a lossy translation is refused (422) instead of returned.
    pub strict: bool,
    /// The client's `_format` when it named a version there: carried into paging links so
    /// that following them keeps the version.
    format: Option<String>,
    /// What translating the request could not keep (parameters without a counterpart).
    request_issues: Vec<Issue>,
}

/// A response translated for the client.
#[derive(Debug)]
pub struct Translated {
    pub resource: Value,
    /// Issues reported (the request's and the response's); `None` when nothing was translated.
    pub issues: Option<usize>,
}

/// The negotiation of the parse phase: the client's version from `_format` (which overrides
/// `Accept`, as the FHIR spec says), else from `Accept`, else `default`, else the site's
/// version. Refuses an `Accept` that admits no JSON (406 `not-acceptable`, unless a JSON
/// `_format` overrides it) and a version the gateway does not serve (406
/// `fhir-version-not-supported`).
pub fn negotiate(
    headers: &HeaderMap,
    raw_query: &str,
    site: FhirVersion,
    default: Option<FhirVersion>,
) -> Result<Dialect, GatewayError> {
    let mut format = None;
    let mut asked = None;
    let format_given = format_param(raw_query);
    if let Some(value) = &format_given
        && let Some(version) = version_param(value)
    {
        asked = Some(parse_version(version)?);
        format = Some(value.clone());
    }
    // A JSON `_format` (the parse phase refused any other) overrides an `Accept` without JSON.
    let from_accept = match accept_version(headers) {
        Err(GatewayError::NotAcceptable(_)) if format_given.is_some() => None,
        other => other?,
    };
    let client = asked.or(from_accept).or(default).unwrap_or(site);
    Ok(Dialect {
        site,
        client,
        strict: handling_strict(headers),
        format,
        request_issues: Vec::new(),
    })
}

impl Dialect {
    /// Whether the client reads another version than the site's.
    pub fn translates(&self) -> bool {
        self.site != self.client
    }

    /// Inbound: the exchange's request in the site's terms ([`translate_request`](Self::translate_request)).
    pub fn request(&mut self, request: &mut SiteRequest) -> Result<(), GatewayError> {
        let form = request.form.take().map(Bytes::from);
        let form = self.translate_request(&mut request.fhir, form)?;
        // Translated text of a UTF-8 form: UTF-8.
        request.form = form.map(|f| String::from_utf8_lossy(&f).into_owned());
        Ok(())
    }

    /// The request in the site's terms: a versioned `_format` taken out of the forwarded query;
    /// then, when the versions differ and the request did not come from a gateway paging link
    /// (those are already in the site's terms, and signed so), the resource type of the path
    /// and the search parameters (query and `POST _search` form) translated. Returns the form.
    pub fn translate_request(
        &mut self,
        fhir: &mut FhirRequest,
        form: Option<Bytes>,
    ) -> Result<Option<Bytes>, GatewayError> {
        fhir.query = without_versioned_format(&fhir.query);
        if !self.translates() || fhir.page_token.is_some() {
            return Ok(form);
        }
        let Some(resource_type) = fhir.resource_type.clone() else {
            return Ok(form);
        };
        if !converts(&resource_type, self.client, self.site) {
            return Err(self.unsupported(&resource_type, self.client, self.site));
        }
        let site_type = translate_type_name(&resource_type, self.client, self.site).to_owned();
        if site_type != resource_type {
            let rest = fhir
                .upstream_path
                .strip_prefix(resource_type.as_str())
                .unwrap_or_default();
            fhir.upstream_path = format!("{site_type}{rest}");
            fhir.resource_type = Some(site_type);
        }
        if fhir.interaction != Interaction::Search {
            return Ok(form);
        }
        // The type as the client's version names it in 5.0.0 (`MedicationUsage` is `MedicationStatement`).
        let searched = translate_type_name(&resource_type, self.client, self.client).to_owned();
        fhir.query = self.translate_params(&searched, &fhir.query);
        let form = match form {
            Some(form) => {
                let text = std::str::from_utf8(&form).unwrap_or_default();
                Some(Bytes::from(self.translate_params(&searched, text)))
            }
            None => None,
        };
        if self.strict && self.request_issues.iter().any(is_loss) {
            return Err(GatewayError::TranslationLossy {
                to: self.site,
                issues: self.request_issues.clone(),
            });
        }
        Ok(form)
    }

    /// Search parameters of `text` (a query or form) translated from the client's version to
    /// the site's; unchanged text when nothing changed.
    fn translate_params(&mut self, resource_type: &str, text: &str) -> String {
        let pairs = assent_fhir::query::pairs(text);
        let (out, issues) = assent_adapters::translate_search_params(
            resource_type,
            pairs.clone(),
            self.client,
            self.site,
        );
        self.request_issues.extend(issues);
        if out == pairs {
            return text.to_owned();
        }
        assent_fhir::query::encode_pairs(out.iter().map(|(n, v)| (n.as_str(), v.as_str())))
    }

    /// A resource (or Bundle) from the site, in the client's version. The same version is
    /// returned as it is. A type outside the converted ones is 422
    /// `translation-unsupported-type`; with `Prefer: handling=strict`, a lossy result is 422
    /// `translation-lossy` with the issues. A search Bundle gets an OperationOutcome entry
    /// (`search.mode = outcome`) for parameters the request lost on the way in.
    pub fn translate_response(&self, resource: Value) -> Result<Translated, GatewayError> {
        if !self.translates() {
            return Ok(Translated {
                resource,
                issues: None,
            });
        }
        let translation = match translate(resource, self.site, self.client) {
            Ok(t) => t,
            Err(TranslateError::UnsupportedType { resource_type, .. }) => {
                return Err(self.unsupported(&resource_type, self.site, self.client));
            }
            Err(_) => return Err(GatewayError::UpstreamBadResponse),
        };
        if self.strict && (translation.loses_data() || self.request_issues.iter().any(is_loss)) {
            let mut issues = self.request_issues.clone();
            issues.extend(translation.issues);
            return Err(GatewayError::TranslationLossy {
                to: self.client,
                issues,
            });
        }
        let count = self.request_issues.len() + translation.issues.len();
        let mut resource = translation.resource;
        if !self.request_issues.is_empty()
            && resource["resourceType"] == "Bundle"
            && resource["type"] == "searchset"
            && let Some(entries) = entry_list(&mut resource)
        {
            entries.push(json!({
                "resource": operation_outcome(&self.request_issues),
                "search": {"mode": "outcome"},
            }));
        }
        Ok(Translated {
            resource,
            issues: Some(count),
        })
    }

    /// The site's CapabilityStatement as a server of the client's version would state it:
    /// translated, `fhirVersion` the client's, resource types named as the client names them,
    /// and types the gateway cannot translate left out (reading them would be refused).
    pub fn translate_capabilities(&self, mut statement: Value) -> Result<Translated, GatewayError> {
        if !self.translates() {
            return self.translate_response(statement);
        }
        if let Some(rests) = statement.get_mut("rest").and_then(Value::as_array_mut) {
            for rest in rests {
                if let Some(resources) = rest.get_mut("resource").and_then(Value::as_array_mut) {
                    resources.retain(|r| {
                        r.get("type")
                            .and_then(Value::as_str)
                            .is_some_and(|t| converts(t, self.site, self.client))
                    });
                }
            }
        }
        let mut out = self.translate_response(statement)?;
        // The adapters report the rewrite of the site's own version; any other value the site
        // stated is replaced here, and counted too (no silent change).
        if out.resource.get("fhirVersion").and_then(Value::as_str) != Some(self.client.semver()) {
            out.resource["fhirVersion"] = json!(self.client.semver());
            out.issues = out.issues.map(|n| n + 1);
        }
        if let Some(rests) = out.resource.get_mut("rest").and_then(Value::as_array_mut) {
            for rest in rests {
                for r in rest
                    .get_mut("resource")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if let Some(t) = r.get("type").and_then(Value::as_str) {
                        let named = translate_type_name(t, self.site, self.client).to_owned();
                        r["type"] = json!(named);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Before the paging links of `bundle` are signed: a versioned `_format` the client used
    /// goes into each link under the upstream base, so that the next page is read in the same
    /// version (the signature then covers it).
    pub fn carry_format(&self, bundle: &mut Value, urls: &UrlMap) {
        if let Some(format) = &self.format {
            crate::proxy::rewrite::carry_params(
                bundle,
                urls,
                &[("_format".into(), format.clone())],
            );
        }
    }

    /// The response headers that name the version: `Content-Type` with `fhirVersion`, and the
    /// issue count when the response was translated.
    pub fn response_headers(&self, out: &mut HttpResponseBuilder, issues: Option<usize>) {
        if let Ok(v) = HeaderValue::from_str(&self.client.content_type()) {
            out.insert_header((header::CONTENT_TYPE, v));
        }
        if let Some(n) = issues {
            out.insert_header((TRANSLATION_ISSUES_HEADER, HeaderValue::from(n)));
        }
    }

    fn unsupported(&self, resource_type: &str, from: FhirVersion, to: FhirVersion) -> GatewayError {
        GatewayError::TranslationUnsupported {
            issue: TranslateError::UnsupportedType {
                resource_type: resource_type.to_owned(),
                from,
                to,
            }
            .issue(),
        }
    }
}

/// Data lost or left unconverted: what strict handling refuses.
fn is_loss(issue: &Issue) -> bool {
    issue.severity >= Severity::Warning
}

fn entry_list(bundle: &mut Value) -> Option<&mut Vec<Value>> {
    if bundle.get("entry").is_none() {
        bundle["entry"] = json!([]);
    }
    bundle.get_mut("entry").and_then(Value::as_array_mut)
}

/// The client's version from `Accept`: the first media range that admits JSON, by quality,
/// whose `fhirVersion` the gateway serves (or that names none: `None`, the default applies).
fn accept_version(headers: &HeaderMap) -> Result<Option<FhirVersion>, GatewayError> {
    let mut ranges: Vec<(f32, Option<String>)> = Vec::new();
    let mut any = false;
    for value in headers.get_all(header::ACCEPT) {
        any = true;
        let text = value
            .to_str()
            .map_err(|_| GatewayError::Malformed("the Accept header is not ASCII".into()))?;
        for item in text.split(',') {
            let mut parts = item.split(';');
            let media = parts.next().unwrap_or_default().trim();
            let admits_json = media.is_empty()
                || media == "*/*"
                || media == "application/*"
                || assent_fhir::format::is_json_format(media);
            if !admits_json {
                continue;
            }
            let mut q = 1.0f32;
            let mut version = None;
            for parameter in parts {
                let Some((name, value)) = parameter.split_once('=') else {
                    continue;
                };
                let value = value.trim().trim_matches('"');
                match name.trim() {
                    n if n.eq_ignore_ascii_case("q") => q = value.parse().unwrap_or(0.0),
                    n if n.eq_ignore_ascii_case("fhirVersion") => {
                        version = Some(value.to_owned());
                    }
                    _ => {}
                }
            }
            if q > 0.0 {
                ranges.push((q, version));
            }
        }
    }
    if !any {
        return Ok(None);
    }
    if ranges.is_empty() {
        return Err(GatewayError::NotAcceptable(
            "only application/fhir+json is served".into(),
        ));
    }
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut refused = None;
    for (_, version) in &ranges {
        match version {
            None => return Ok(None),
            Some(v) => match parse_version(v) {
                Ok(v) => return Ok(Some(v)),
                Err(e) => {
                    refused.get_or_insert(e);
                }
            },
        }
    }
    Err(refused.unwrap_or(GatewayError::Internal))
}

/// A `fhirVersion` parameter value: `major.minor` (`4.0`), or a full version (`4.0.1`).
fn parse_version(value: &str) -> Result<FhirVersion, GatewayError> {
    let numeric = value.starts_with(|c: char| c.is_ascii_digit());
    let refused = || GatewayError::FhirVersionNotSupported(value.chars().take(32).collect());
    if !numeric {
        return Err(refused());
    }
    value.parse().map_err(|_| refused())
}

/// The `fhirVersion` parameter of a media type (`application/fhir+json; fhirVersion=5.0`).
fn version_param(media_type: &str) -> Option<&str> {
    media_type.split(';').skip(1).find_map(|parameter| {
        let (name, value) = parameter.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("fhirVersion")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// The first `_format` of a raw query, decoded (`+` read as the `+` of `fhir+json`).
fn format_param(raw_query: &str) -> Option<String> {
    assent_fhir::query::pairs(raw_query)
        .into_iter()
        .find_map(|(name, value)| (name == "_format").then(|| media_type_from_query(&value)))
}

/// The query without `_format` parameters that name a FHIR version: the site is asked in
/// its own version (the gateway's `Accept`), never in the client's.
fn without_versioned_format(query: &str) -> String {
    if !query.contains("_format") {
        return query.to_owned();
    }
    query
        .split('&')
        .filter(|pair| {
            !assent_fhir::query::pairs(pair)
                .first()
                .is_some_and(|(name, value)| {
                    name == "_format" && version_param(&media_type_from_query(value)).is_some()
                })
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// `Prefer: handling=strict` (`lenient` is the default), in any of the `Prefer` headers.
fn handling_strict(headers: &HeaderMap) -> bool {
    let mut strict = false;
    for value in headers.get_all("prefer") {
        let Ok(text) = value.to_str() else { continue };
        for preference in text.split([',', ';']) {
            if let Some((name, value)) = preference.split_once('=')
                && name.trim().eq_ignore_ascii_case("handling")
            {
                strict = value
                    .trim()
                    .trim_matches('"')
                    .eq_ignore_ascii_case("strict");
            }
        }
    }
    strict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::request;
    use actix_web::http::header::HeaderName;
    use assent_fhir::IssueCode;

    fn codes(issues: &[Issue]) -> Vec<IssueCode> {
        issues.iter().map(|i| i.code).collect()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn client_of(accept: &[(&str, &str)], query: &str) -> Result<FhirVersion, String> {
        negotiate(&headers(accept), query, FhirVersion::R4, None)
            .map(|d| d.client)
            .map_err(|e| e.code().to_owned())
    }

    #[test]
    fn the_client_names_its_version() {
        use FhirVersion::*;
        let accept = |v: &str| client_of(&[("accept", v)], "");
        assert_eq!(accept("application/fhir+json; fhirVersion=5.0"), Ok(R5));
        assert_eq!(accept("application/fhir+json;fhirVersion=3.0"), Ok(Stu3));
        assert_eq!(
            accept("application/fhir+json; fhirVersion=\"4.3\""),
            Ok(R4B)
        );
        assert_eq!(accept("application/fhir+json; fhirVersion=4.0.1"), Ok(R4));
        assert_eq!(accept("application/fhir+json"), Ok(R4));
        assert_eq!(accept("*/*"), Ok(R4));
        assert_eq!(client_of(&[], ""), Ok(R4));
        // By quality; an unsupported alternative gives way to a supported one.
        assert_eq!(
            accept(
                "application/fhir+json;fhirVersion=3.0;q=0.5, application/fhir+json;fhirVersion=5.0"
            ),
            Ok(R5)
        );
        assert_eq!(
            accept(
                "application/fhir+json;fhirVersion=6.0, application/fhir+json;fhirVersion=4.3;q=0.8"
            ),
            Ok(R4B)
        );
        assert_eq!(
            accept("application/fhir+json; fhirVersion=1.0"),
            Err("fhir-version-not-supported".into())
        );
        assert_eq!(
            accept("application/fhir+json; fhirVersion=R5"),
            Err("fhir-version-not-supported".into())
        );
        assert_eq!(accept("application/fhir+xml"), Err("not-acceptable".into()));
        assert_eq!(
            accept("application/fhir+json;q=0"),
            Err("not-acceptable".into())
        );
        // A JSON `_format` overrides an `Accept` without JSON, as FHIR says `_format` does.
        let xml = [("accept", "application/fhir+xml")];
        assert_eq!(client_of(&xml, "_format=json"), Ok(R4));
        assert_eq!(
            client_of(&xml, "_format=application/fhir%2Bjson%3BfhirVersion%3D5.0"),
            Ok(R5)
        );
    }

    #[test]
    fn format_overrides_accept_and_the_default_applies_last() {
        use FhirVersion::*;
        let json5 = [("accept", "application/fhir+json; fhirVersion=5.0")];
        assert_eq!(
            client_of(
                &json5,
                "_format=application/fhir%2Bjson%3BfhirVersion%3D3.0"
            ),
            Ok(Stu3)
        );
        // An unencoded `+` and `;` in the query.
        assert_eq!(
            client_of(&[], "a=1&_format=application/fhir+json;fhirVersion=4.3"),
            Ok(R4B)
        );
        assert_eq!(client_of(&json5, "_format=json"), Ok(R5));
        assert_eq!(
            client_of(&[], "_format=json%3BfhirVersion%3D2.0"),
            Err("fhir-version-not-supported".into())
        );
        let d = negotiate(&headers(&[]), "", R4, Some(Stu3)).unwrap();
        assert_eq!(d.client, Stu3);
        assert!(d.translates());
    }

    #[test]
    fn prefer_handling() {
        let strict = |v: &str| handling_strict(&headers(&[("prefer", v)]));
        assert!(strict("handling=strict"));
        assert!(strict("return=minimal, handling=strict"));
        assert!(!strict("handling=lenient"));
        assert!(!strict("return=representation"));
        assert!(!handling_strict(&headers(&[])));
    }

    fn r5_on_r4() -> Dialect {
        negotiate(
            &headers(&[("accept", "application/fhir+json; fhirVersion=5.0")]),
            "",
            FhirVersion::R4,
            None,
        )
        .unwrap()
    }

    #[test]
    fn requests_are_put_in_the_site_version() {
        let mut d = r5_on_r4();
        let mut fhir = request::parse(
            "GET",
            "MedicationUsage",
            "encounter=Encounter%2F1&status=active&_format=json%3BfhirVersion%3D5.0",
        )
        .unwrap();
        d.translate_request(&mut fhir, None).unwrap();
        assert_eq!(fhir.resource_type.as_deref(), Some("MedicationStatement"));
        assert_eq!(fhir.upstream_path, "MedicationStatement");
        assert_eq!(fhir.query, "context=Encounter/1&status=active");
        assert!(d.request_issues.is_empty());

        let mut d = r5_on_r4();
        let mut read = request::parse("GET", "MedicationUsage/7/_history/2", "").unwrap();
        d.translate_request(&mut read, None).unwrap();
        assert_eq!(read.upstream_path, "MedicationStatement/7/_history/2");

        let mut d = r5_on_r4();
        let mut media = request::parse("GET", "Media/1", "").unwrap();
        let err = d.translate_request(&mut media, None).unwrap_err();
        assert_eq!(err.code(), "translation-unsupported-type");
        assert!(err.to_string().contains("Media"), "{err}");
        // Every type both versions have converts, not only the clinical core.
        let mut d = r5_on_r4();
        let mut claim = request::parse("GET", "Claim/1", "").unwrap();
        d.translate_request(&mut claim, None).unwrap();
        assert_eq!(claim.upstream_path, "Claim/1");
    }

    #[test]
    fn lost_parameters_are_reported_or_refused() {
        let mut fhir = request::parse("POST", "Condition/_search", "").unwrap();
        let form = Bytes::from_static(b"participant-actor=Practitioner%2F1&code=x");
        let mut d = r5_on_r4();
        let out = d
            .translate_request(&mut fhir.clone(), Some(form.clone()))
            .unwrap();
        assert_eq!(out.as_deref(), Some(&b"asserter=Practitioner/1&code=x"[..]));

        let unknown = Bytes::from_static(b"code=x&no-such-param=1");
        let mut d = r5_on_r4();
        let out = d
            .translate_request(&mut fhir.clone(), Some(unknown.clone()))
            .unwrap();
        assert_eq!(out.as_deref(), Some(&b"code=x"[..]));
        assert_eq!(codes(&d.request_issues), [IssueCode::NotSupported]);
        let bundle = json!({"resourceType": "Bundle", "type": "searchset"});
        let out = d.translate_response(bundle).unwrap();
        assert_eq!(out.issues, Some(1));
        assert_eq!(out.resource["entry"][0]["search"]["mode"], "outcome");

        let mut d = r5_on_r4();
        d.strict = true;
        let err = d.translate_request(&mut fhir, Some(unknown)).unwrap_err();
        assert_eq!(err.code(), "translation-lossy");
        let oo = err.to_operation_outcome();
        assert_eq!(oo["issue"].as_array().unwrap().len(), 2, "{oo}");
    }

    #[test]
    fn responses_are_put_in_the_client_version() {
        let d = r5_on_r4();
        let encounter = json!({"resourceType": "Encounter", "id": "1", "status": "finished", "class": {"code": "AMB"}});
        let out = d.translate_response(encounter.clone()).unwrap();
        assert_eq!(
            out.resource["class"],
            json!([{"coding": [{"code": "AMB"}]}])
        );
        assert_eq!(out.issues, Some(0));
        let mut lossy = encounter;
        lossy["notAnElement"] = json!(1);
        let out = d.translate_response(lossy.clone()).unwrap();
        assert!(out.issues.is_some_and(|n| n > 0), "{out:?}");
        let mut strict = r5_on_r4();
        strict.strict = true;
        assert_eq!(
            strict.translate_response(lossy).unwrap_err().code(),
            "translation-lossy"
        );
        let err = d
            .translate_response(json!({"resourceType": "Media", "id": "1"}))
            .unwrap_err();
        assert_eq!(err.code(), "translation-unsupported-type");
        assert_eq!(
            err.to_operation_outcome()["issue"][0]["expression"][0],
            "Media"
        );

        let same = negotiate(&headers(&[]), "", FhirVersion::R4, None).unwrap();
        let claim = json!({"resourceType": "Claim", "id": "1"});
        let out = same.translate_response(claim.clone()).unwrap();
        assert_eq!((out.resource, out.issues), (claim, None));
    }

    #[test]
    fn capabilities_name_the_client_version() {
        let d = r5_on_r4();
        let statement = json!({
            "resourceType": "CapabilityStatement", "status": "active", "date": "2024-01-01",
            "kind": "instance", "fhirVersion": "4.0.1", "format": ["json"],
            "rest": [{"mode": "server", "resource": [{"type": "Patient"}, {"type": "Media"}]}]
        });
        let out = d.translate_capabilities(statement.clone()).unwrap();
        assert_eq!(out.resource["fhirVersion"], "5.0.0");
        // The rewrite is counted: by the adapters for the site's version, here for another.
        assert_eq!(out.issues, Some(1));
        let mut other = statement;
        other["fhirVersion"] = json!("4.0.0");
        let out = d.translate_capabilities(other).unwrap();
        assert_eq!(out.resource["fhirVersion"], "5.0.0");
        assert_eq!(out.issues, Some(1));
        assert_eq!(
            out.resource["rest"][0]["resource"],
            json!([{"type": "Patient"}])
        );
    }

    #[test]
    fn a_versioned_format_is_carried_into_paging_links() {
        let d = negotiate(
            &headers(&[]),
            "_format=application/fhir%2Bjson%3BfhirVersion%3D5.0",
            FhirVersion::R4,
            None,
        )
        .unwrap();
        let urls = UrlMap::new("http://up/fhir", "https://gw/fhir/a");
        let mut bundle = json!({"link": [
            {"relation": "next", "url": "http://up/fhir/Patient?page=2&_format=json"},
            {"relation": "other", "url": "https://elsewhere/Patient"}
        ]});
        d.carry_format(&mut bundle, &urls);
        assert_eq!(
            bundle["link"][0]["url"],
            "http://up/fhir/Patient?page=2&_format=application/fhir%2Bjson%3BfhirVersion%3D5.0"
        );
        assert_eq!(bundle["link"][1]["url"], "https://elsewhere/Patient");
        assert_eq!(
            without_versioned_format("a=1&_format=json&_format=json%3BfhirVersion%3D5.0"),
            "a=1&_format=json"
        );
    }
}
