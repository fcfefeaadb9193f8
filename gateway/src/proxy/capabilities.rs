//! The site's CapabilityStatement as the gateway serves it: only what the gateway forwards.
//!
//! Owns the pruning: the statement is rebuilt from its structural elements only (no free
//! text of the site's: descriptions, documentation, software and implementation details may
//! name internal hosts); resource interactions other than the reads the gateway forwards
//! (read, vread, search-type, history-instance, history-type), system interactions, and
//! operations not on the site's allow-list are removed, as are the search parameters it
//! refuses (`_contained`); the formats are the JSON the gateway
//! serves, and the elements every version requires are present. Leaves out: the SMART
//! security section and translation (`metadata.rs` adds and does them).

use serde_json::Value;

use crate::config::{OperationLevel, SiteConfig};

/// Resource interactions the gateway forwards.
const FORWARDED: &[&str] = &[
    "read",
    "vread",
    "search-type",
    "history-instance",
    "history-type",
];

/// Search parameters the gateway refuses (`form-not-served`: contained resources cannot be
/// told whose they are), so never advertised.
const REFUSED_SEARCH_PARAMS: &[&str] = &["_contained", "_containedType"];

/// Top-level elements of the site's statement the gateway keeps.
const KEPT_TOP: &[&str] = &[
    "resourceType",
    "status",
    "date",
    "kind",
    "fhirVersion",
    "implementationGuide",
    "rest",
];
/// Elements of `rest` kept.
const KEPT_REST: &[&str] = &[
    "mode",
    "resource",
    "interaction",
    "searchParam",
    "operation",
];
/// Elements of `rest.resource` kept.
const KEPT_RESOURCE: &[&str] = &[
    "type",
    "profile",
    "supportedProfile",
    "interaction",
    "versioning",
    "readHistory",
    "searchInclude",
    "searchRevInclude",
    "searchParam",
    "operation",
];
/// Elements of an interaction, search parameter or operation kept.
const KEPT_ITEM: &[&str] = &["code", "name", "definition", "type"];

fn keep(value: &mut Value, names: &[&str]) {
    if let Some(object) = value.as_object_mut() {
        object.retain(|k, _| names.contains(&k.as_str()));
    }
}

fn keep_items(value: Option<&mut Value>) {
    for item in value.and_then(Value::as_array_mut).into_iter().flatten() {
        keep(item, KEPT_ITEM);
    }
}

/// Prunes `statement` to what the gateway forwards to the site of `config`, with none of the
/// site's free text; the implementation described is the gateway's, at `public_base`.
pub fn only_what_is_forwarded(
    statement: &mut Value,
    config: &SiteConfig,
    site_id: &str,
    public_base: &str,
) {
    keep(statement, KEPT_TOP);
    if let Some(object) = statement.as_object_mut() {
        object.insert(
            "implementation".into(),
            serde_json::json!({
                "description": format!("Assent gateway to site {site_id}"),
                "url": public_base,
            }),
        );
        object.insert(
            "software".into(),
            serde_json::json!({"name": "Assent", "version": env!("CARGO_PKG_VERSION")}),
        );
        // The gateway serves JSON only (XML is 406) and forwards no patch.
        object.insert(
            "format".into(),
            serde_json::json!(["json", "application/fhir+json"]),
        );
        // Required in every version; a site that left them out still gets a valid statement
        // (`date` is set by the caller, which knows the time).
        object
            .entry("status")
            .or_insert_with(|| serde_json::json!("active"));
        object
            .entry("kind")
            .or_insert_with(|| serde_json::json!("instance"));
    }
    for rest in statement
        .get_mut("rest")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        keep(rest, KEPT_REST);
        keep_items(rest.get_mut("searchParam"));
        keep_items(rest.get_mut("operation"));
        for resource in rest
            .get_mut("resource")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            keep(resource, KEPT_RESOURCE);
            keep_items(resource.get_mut("interaction"));
            keep_items(resource.get_mut("searchParam"));
            keep_items(resource.get_mut("operation"));
        }
    }
    prune(statement, config);
}

fn prune(statement: &mut Value, config: &SiteConfig) {
    let rules: Vec<_> = config.operation_rules().collect();
    // A CapabilityStatement lists an operation per type without saying at which level: one
    // allowed at the type or instance level of that type keeps it.
    let allowed = |name: &str, resource_type: Option<&str>| {
        let name = name.trim_start_matches('$');
        rules.iter().any(|r| {
            r.name == name
                && match resource_type {
                    None => r.level == OperationLevel::System,
                    Some(t) => {
                        r.level != OperationLevel::System
                            && r.resource_types.iter().any(|rt| rt == t)
                    }
                }
        })
    };
    for rest in statement
        .get_mut("rest")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let Some(rest) = rest.as_object_mut() else {
            continue;
        };
        rest.remove("interaction");
        drop_refused_params(rest.get_mut("searchParam"));
        if let Some(Value::Array(ops)) = rest.get_mut("operation") {
            ops.retain(|op| {
                op.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| allowed(n, None))
            });
        }
        for resource in rest
            .get_mut("resource")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let resource_type = resource
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let Some(resource) = resource.as_object_mut() else {
                continue;
            };
            drop_refused_params(resource.get_mut("searchParam"));
            if let Some(Value::Array(interactions)) = resource.get_mut("interaction") {
                interactions.retain(|i| {
                    i.get("code")
                        .and_then(Value::as_str)
                        .is_some_and(|c| FORWARDED.contains(&c))
                });
            }
            if let Some(Value::Array(ops)) = resource.get_mut("operation") {
                ops.retain(|op| {
                    op.get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| allowed(n, Some(&resource_type)))
                });
            }
        }
    }
}

/// Removes the search parameters the gateway refuses from a `searchParam` list.
fn drop_refused_params(params: Option<&mut Value>) {
    if let Some(Value::Array(params)) = params {
        params.retain(|p| {
            !p.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| REFUSED_SEARCH_PARAMS.contains(&n))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_forwarded_interactions_and_allowed_operations_remain() {
        let config: SiteConfig = serde_json::from_value(json!({
            "upstream": "http://127.0.0.1:1/fhir", "fhir_version": "R4", "default_policy": "opt-in",
            "operations": [{"name": "lastn", "level": "type", "resource_types": ["Observation"], "output": "bundle"}],
        }))
        .unwrap();
        let mut statement = json!({"resourceType": "CapabilityStatement",
            "format": ["xml", "json"], "patchFormat": ["application/json-patch+json"],
            "software": {"name": "HospitalFHIR", "version": "9 on db01.internal:5432"},
            "implementation": {"description": "prod", "url": "http://10.0.0.7:8080/fhir"},
            "rest": [{
            "documentation": "backed by db01.internal:5432",
        "mode": "server",
        "interaction": [{"code": "transaction"}],
        "operation": [{"name": "lastn"}, {"name": "meta"}],
        "resource": [
            {"type": "Patient", "interaction": [{"code": "read"}, {"code": "create"}, {"code": "search-type"}],
             "searchParam": [{"name": "_contained", "type": "token"}, {"name": "name", "type": "string"}],
             "conditionalCreate": true,
             "operation": [{"name": "everything"}, {"name": "match"}]},
            {"type": "Observation", "interaction": [{"code": "delete"}],
             "operation": [{"name": "lastn"}, {"name": "stats"}]},
        ]}]});
        only_what_is_forwarded(
            &mut statement,
            &config,
            "st-mary",
            "https://gw.example/fhir/st-mary",
        );
        assert_eq!(
            statement["implementation"]["url"],
            "https://gw.example/fhir/st-mary"
        );
        assert!(
            !statement.to_string().contains("db01") && !statement.to_string().contains("10.0.0.7")
        );
        assert_eq!(
            statement["format"],
            json!(["json", "application/fhir+json"])
        );
        assert!(statement.get("patchFormat").is_none());
        assert_eq!(
            (&statement["status"], &statement["kind"]),
            (&json!("active"), &json!("instance"))
        );
        let rest = &statement["rest"][0];
        assert!(rest.get("interaction").is_none());
        assert_eq!(rest["operation"], json!([]));
        assert_eq!(
            rest["resource"][0]["interaction"],
            json!([{"code": "read"}, {"code": "search-type"}])
        );
        assert!(rest["resource"][0].get("conditionalCreate").is_none());
        assert_eq!(
            rest["resource"][0]["searchParam"],
            json!([{"name": "name", "type": "string"}])
        );
        assert_eq!(
            rest["resource"][0]["operation"],
            json!([{"name": "everything"}])
        );
        assert_eq!(rest["resource"][1]["interaction"], json!([]));
        assert_eq!(rest["resource"][1]["operation"], json!([{"name": "lastn"}]));
    }
}
