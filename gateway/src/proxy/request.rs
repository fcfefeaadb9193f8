//! The parse phase: what a request under `/fhir/{site}/` asks for, checked strictly.
//!
//! Owns the grammar of FHIR REST paths the gateway forwards, and the limits on search
//! parameters (count, length, alphabet) that keep hostile queries away from hospitals.
//! Leaves out: what the parameters mean (the upstream decides), consent (the decide phase).

use assent_fhir::Interaction;
use assent_fhir::compartment::SearchParam;

use crate::config::{OperationLevel, OperationOutput, OperationRule};
use crate::http::error::GatewayError;

/// The query parameter that carries a signed paging token.
pub const PAGE_TOKEN_PARAM: &str = "_assent_page";

/// Most query parameters one request may carry.
pub const MAX_PARAMS: usize = 64;
/// Longest query string accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 8 * 1024;
/// Longest single parameter value, in bytes (after decoding).
pub const MAX_VALUE_BYTES: usize = 2 * 1024;

/// A parsed FHIR request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FhirRequest {
    pub interaction: Interaction,
    /// `None` for system-level requests (`metadata`, `$op`, paging at the base).
    pub resource_type: Option<String>,
    pub id: Option<String>,
    pub version_id: Option<String>,
    /// `$everything`, `$validate`, … without the `$`.
    pub operation: Option<String>,
    /// The path to forward, relative to the site base, without a leading slash
    /// (`Patient/1/_history/2`). Empty for the base itself.
    pub upstream_path: String,
    /// The raw query string to forward (the paging token removed), possibly empty.
    pub query: String,
    /// The paging token, when the request came from a gateway paging link.
    pub page_token: Option<String>,
    /// Whether this is `POST [type]/_search` (form parameters in the body).
    pub post_search: bool,
    /// For an operation, how its answer is decided, once the site's allow-list allowed it
    /// ([`FhirRequest::allow_operation`]); `None` until then.
    pub operation_output: Option<OperationOutput>,
}

impl FhirRequest {
    /// Whether the upstream answers this with a Bundle whose entries the gateway decides one
    /// by one (searches, history, operations declared with a `bundle` output).
    pub fn returns_bundle(&self) -> bool {
        match self.interaction {
            Interaction::Search | Interaction::History => true,
            Interaction::Operation => self.operation_output == Some(OperationOutput::Bundle),
            Interaction::Read | Interaction::Vread | Interaction::Capabilities => false,
        }
    }

    /// Checks an operation against the site's allow-list (the built-in `$everything` and the
    /// site's `operations`), and notes how its answer is decided. Not an operation: `Ok`.
    /// An operation not on the list: 403 `operation-not-allowed`.
    pub fn allow_operation<'r>(
        &mut self,
        rules: impl IntoIterator<Item = &'r OperationRule>,
    ) -> Result<(), GatewayError> {
        let Some(name) = self.operation.as_deref() else {
            return Ok(());
        };
        let level = match (&self.resource_type, &self.id) {
            (None, _) => OperationLevel::System,
            (Some(_), None) => OperationLevel::Type,
            (Some(_), Some(_)) => OperationLevel::Instance,
        };
        let rule = rules
            .into_iter()
            .find(|r| r.matches(name, level, self.resource_type.as_deref()))
            .ok_or_else(|| GatewayError::OperationNotAllowed(name.to_owned()))?;
        self.operation_output = Some(rule.output);
        Ok(())
    }
}

use assent_fhir::query::encode_pairs;

/// [`encode_pairs`] of parsed search parameters.
pub fn encode_params(params: &[SearchParam]) -> String {
    encode_pairs(
        params
            .iter()
            .map(|p| (p.raw_name.as_str(), p.value.as_str())),
    )
}

/// Parses `method` and the path below `/fhir/{site}/` (`rest`, without leading slash) and the
/// raw query string.
pub fn parse(method: &str, rest: &str, raw_query: &str) -> Result<FhirRequest, GatewayError> {
    let segments: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('/').collect()
    };
    if segments.iter().any(|s| s.is_empty()) {
        return Err(malformed("empty path segment"));
    }
    let is_get = method == "GET" || method == "HEAD";
    let is_post = method == "POST";
    // What this path takes: `POST` only for `[type]/_search`; `GET` (and `HEAD`) for the rest.
    let allow = if segments.len() == 2 && segments[1] == "_search" {
        "POST"
    } else {
        "GET, HEAD"
    };
    if !is_get && !is_post {
        return Err(GatewayError::MethodNotAllowed {
            interaction: match method {
                "PUT" => "update",
                "PATCH" => "patch",
                "DELETE" => "delete",
                _ => "requested",
            },
            allow,
        });
    }

    let (interaction, resource_type, id, version_id, operation, post_search) =
        match segments.as_slice() {
            [] => (Interaction::Search, None, None, None, None, false),
            ["metadata"] => (Interaction::Capabilities, None, None, None, None, false),
            [op] if op.starts_with('$') => (
                Interaction::Operation,
                None,
                None,
                None,
                Some(operation_name(op)?),
                false,
            ),
            [ty] => (
                Interaction::Search,
                Some(resource_type(ty)?),
                None,
                None,
                None,
                false,
            ),
            [ty, "_search"] => (
                Interaction::Search,
                Some(resource_type(ty)?),
                None,
                None,
                None,
                true,
            ),
            [ty, "_history"] => (
                Interaction::History,
                Some(resource_type(ty)?),
                None,
                None,
                None,
                false,
            ),
            [ty, op] if op.starts_with('$') => (
                Interaction::Operation,
                Some(resource_type(ty)?),
                None,
                None,
                Some(operation_name(op)?),
                false,
            ),
            [ty, id] => (
                Interaction::Read,
                Some(resource_type(ty)?),
                Some(resource_id(id)?),
                None,
                None,
                false,
            ),
            [ty, id, "_history"] => (
                Interaction::History,
                Some(resource_type(ty)?),
                Some(resource_id(id)?),
                None,
                None,
                false,
            ),
            [ty, id, op] if op.starts_with('$') => (
                Interaction::Operation,
                Some(resource_type(ty)?),
                Some(resource_id(id)?),
                None,
                Some(operation_name(op)?),
                false,
            ),
            [ty, id, "_history", vid] => (
                Interaction::Vread,
                Some(resource_type(ty)?),
                Some(resource_id(id)?),
                Some(resource_id(vid)?),
                None,
                false,
            ),
            _ => return Err(malformed("the path is not a FHIR REST interaction")),
        };

    if is_post && !post_search {
        return Err(GatewayError::MethodNotAllowed {
            interaction: match interaction {
                Interaction::Operation => "POST operation",
                _ => "create",
            },
            allow,
        });
    }
    if post_search && !is_post {
        return Err(malformed("_search takes POST"));
    }

    let (query, page_token) = check_query(raw_query)?;
    Ok(FhirRequest {
        interaction,
        resource_type,
        id,
        version_id,
        operation,
        upstream_path: rest.to_owned(),
        query,
        page_token,
        post_search,
        operation_output: None,
    })
}

/// Checks a raw query string (or an `x-www-form-urlencoded` body) and takes the paging token
/// out. Returns the query to forward, unchanged but for the token.
pub fn check_query(raw: &str) -> Result<(String, Option<String>), GatewayError> {
    if raw.len() > MAX_QUERY_BYTES {
        return Err(malformed("the query string is too long"));
    }
    if raw.is_empty() {
        return Ok((String::new(), None));
    }
    let mut kept: Vec<&str> = Vec::new();
    let mut token = None;
    for (n, pair) in raw.split('&').enumerate() {
        if n >= MAX_PARAMS {
            return Err(malformed("too many query parameters"));
        }
        if pair.is_empty() {
            kept.push(pair);
            continue;
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(name)?;
        let value = decode(value)?;
        if !is_valid_param_name(&name) {
            return Err(malformed(
                "a query parameter name has characters FHIR does not use",
            ));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(malformed("a query parameter value is too long"));
        }
        if value.chars().any(|c| c.is_control()) {
            return Err(malformed("a query parameter value has control characters"));
        }
        if name == PAGE_TOKEN_PARAM {
            if token.is_some() {
                return Err(malformed("more than one paging token"));
            }
            token = Some(value);
            continue;
        }
        if name.starts_with("_assent") {
            return Err(malformed("parameters starting with _assent are reserved"));
        }
        if name == "_format" && !is_json_format(&value) {
            return Err(GatewayError::NotAcceptable(
                "only JSON formats are served (_format=json or application/fhir+json)".into(),
            ));
        }
        kept.push(pair);
    }
    Ok((kept.join("&"), token))
}

use assent_fhir::format::is_json_format;

fn decode(s: &str) -> Result<String, GatewayError> {
    assent_fhir::query::decode(s).map_err(|_| malformed("a query parameter is not valid UTF-8"))
}

/// Parameter names: search parameter codes with modifiers and chains
/// (`subject:Patient.name`, `_has:Observation:patient:code`, `code:not`).
fn is_valid_param_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

fn resource_type(s: &str) -> Result<String, GatewayError> {
    let ok = (2..=64).contains(&s.len())
        && s.as_bytes()[0].is_ascii_uppercase()
        && s.bytes().all(|b| b.is_ascii_alphabetic());
    if ok {
        Ok(s.to_owned())
    } else {
        Err(malformed("not a FHIR resource type"))
    }
}

/// FHIR ids: `[A-Za-z0-9\-\.]{1,64}`.
fn resource_id(s: &str) -> Result<String, GatewayError> {
    // An id of dots only (`..`) would walk up the upstream's path.
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !s.bytes().all(|b| b == b'.');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(malformed("not a FHIR id"))
    }
}

fn operation_name(s: &str) -> Result<String, GatewayError> {
    let name = &s[1..];
    let ok = (1..=64).contains(&name.len())
        && name.as_bytes()[0].is_ascii_alphabetic()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(name.to_owned())
    } else {
        Err(malformed("not a FHIR operation name"))
    }
}

fn malformed(why: &str) -> GatewayError {
    GatewayError::Malformed(why.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: &str, rest: &str, query: &str) -> Result<FhirRequest, String> {
        parse(method, rest, query).map_err(|e| e.code().to_owned())
    }

    #[test]
    fn classifies_every_interaction() {
        use Interaction::*;
        let cases = [
            ("GET", "Patient/1", Read),
            ("GET", "Patient/1/_history/2", Vread),
            ("GET", "Patient", Search),
            ("POST", "Patient/_search", Search),
            ("GET", "Patient/1/_history", History),
            ("GET", "Patient/_history", History),
            ("GET", "metadata", Capabilities),
            ("GET", "Patient/1/$everything", Operation),
            ("GET", "Observation/$lastn", Operation),
            ("GET", "$meta", Operation),
            ("GET", "", Search),
        ];
        for (method, rest, expected) in cases {
            let r = check(method, rest, "").unwrap();
            assert_eq!(r.interaction, expected, "{method} {rest}");
            assert_eq!(r.upstream_path, rest);
        }
        let mut everything = check("GET", "Patient/p-1/$everything", "").unwrap();
        assert_eq!(everything.operation.as_deref(), Some("everything"));
        assert!(!everything.returns_bundle(), "not yet allowed");
        everything
            .allow_operation(&[OperationRule::everything()])
            .unwrap();
        assert!(everything.returns_bundle());
        assert!(!check("GET", "Patient/1", "").unwrap().returns_bundle());
    }

    #[test]
    fn rejects_bad_paths_and_methods() {
        assert_eq!(
            check("GET", "patient/1", ""),
            Err("malformed-request".into())
        );
        assert_eq!(
            check("GET", "Patient/1/2/3/4", ""),
            Err("malformed-request".into())
        );
        assert_eq!(
            check("GET", "Patient//1", ""),
            Err("malformed-request".into())
        );
        assert_eq!(
            check("GET", "Patient/a_b", ""),
            Err("malformed-request".into())
        );
        assert_eq!(
            check("GET", "Patient/1/$", ""),
            Err("malformed-request".into())
        );
        assert_eq!(
            check("GET", "Patient/..", ""),
            Err("malformed-request".into())
        );
        assert_eq!(
            check("GET", "Patient/1.2", "").unwrap().id.as_deref(),
            Some("1.2")
        );
        assert_eq!(
            check("PUT", "Patient/1", ""),
            Err("method-not-allowed".into())
        );
        assert_eq!(
            check("DELETE", "Patient/1", ""),
            Err("method-not-allowed".into())
        );
        assert_eq!(
            check("POST", "Patient", ""),
            Err("method-not-allowed".into())
        );
        assert_eq!(
            check("GET", "Patient/_search", ""),
            Err("malformed-request".into())
        );
    }

    #[test]
    fn rejects_hostile_queries_and_keeps_good_ones() {
        let ok = check(
            "GET",
            "Observation",
            "subject:Patient.name=x&code=http%3A%2F%2Floinc.org%7C1234-5&_count=10",
        )
        .unwrap();
        assert_eq!(
            ok.query,
            "subject:Patient.name=x&code=http%3A%2F%2Floinc.org%7C1234-5&_count=10"
        );
        let long = "a=".to_owned() + &"x".repeat(MAX_QUERY_BYTES);
        let too_many = (0..=MAX_PARAMS)
            .map(|i| format!("p{i}=1"))
            .collect::<Vec<_>>()
            .join("&");
        for bad in [
            "na%20me=1",
            "name=%FF%FE",
            "name=%0Aevil",
            "<script>=1",
            "_assent_other=1",
            "_assent_page=a&_assent_page=b",
            long.as_str(),
            too_many.as_str(),
        ] {
            assert_eq!(
                check("GET", "Patient", bad),
                Err("malformed-request".into()),
                "{bad}"
            );
        }
        assert_eq!(
            check("GET", "Patient", "_format=xml"),
            Err("not-acceptable".into())
        );
        assert!(check("GET", "Patient", "_format=application/fhir%2Bjson").is_ok());
        assert!(check("GET", "Patient", "_format=application/fhir+json").is_ok());
    }

    #[test]
    fn operations_pass_only_from_the_allow_list() {
        let rules = || {
            [
                OperationRule::everything(),
                OperationRule {
                    name: "lastn".into(),
                    level: OperationLevel::Type,
                    resource_types: vec!["Observation".into()],
                    output: OperationOutput::Bundle,
                },
            ]
        };
        let allow = |rest: &str| {
            let mut r = parse("GET", rest, "").unwrap();
            r.allow_operation(&rules())
                .map(|_| r.returns_bundle())
                .map_err(|e| e.code())
        };
        assert_eq!(allow("Patient/p/$everything"), Ok(true));
        assert_eq!(allow("Observation/$lastn"), Ok(true));
        assert_eq!(allow("Patient/$everything"), Err("operation-not-allowed"));
        assert_eq!(
            allow("Encounter/e/$everything"),
            Err("operation-not-allowed")
        );
        assert_eq!(allow("Observation/o/$lastn"), Err("operation-not-allowed"));
        assert_eq!(allow("Observation/$stats"), Err("operation-not-allowed"));
        assert_eq!(allow("$lastn"), Err("operation-not-allowed"));
        assert_eq!(allow("Observation"), Ok(true));
    }

    #[test]
    fn the_forwarded_encoding_is_one_and_unambiguous() {
        assert_eq!(
            encode_pairs([
                ("subject:Patient.name", "a b+c&d=e;f%"),
                ("code", "http://x|1,2")
            ]),
            "subject:Patient.name=a%20b%2Bc%26d%3De%3Bf%25&code=http://x|1,2"
        );
        let params = assent_fhir::compartment::parse_search("patient=a+b&code=%7C1");
        assert_eq!(encode_params(&params), "patient=a%20b&code=|1");
    }

    #[test]
    fn takes_the_page_token_out() {
        let r = check("GET", "Patient", "_count=2&page=3&_assent_page=123.abc").unwrap();
        assert_eq!(r.query, "_count=2&page=3");
        assert_eq!(r.page_token.as_deref(), Some("123.abc"));
    }
}
