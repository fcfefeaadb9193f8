//! The site's CapabilityStatement as the gateway serves it: only what the gateway forwards.
//!
//! Owns the pruning: resource interactions other than the reads the gateway forwards (read,
//! vread, search-type, history-instance, history-type), system interactions, and operations
//! not on the site's allow-list are removed. Leaves out: the SMART security section and
//! translation (the filter phase adds and does them).

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

/// Prunes `statement` to what the gateway forwards to the site of `config`.
pub fn only_what_is_forwarded(statement: &mut Value, config: &SiteConfig) {
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
            if let Some(Value::Array(interactions)) = resource.get_mut("interaction") {
                interactions.retain(|i| {
                    i.get("code")
                        .and_then(Value::as_str)
                        .is_some_and(|c| FORWARDED.contains(&c))
                });
            }
            for field in [
                "conditionalCreate",
                "conditionalUpdate",
                "conditionalDelete",
                "updateCreate",
                "conditionalPatch",
            ] {
                resource.remove(field);
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
        let mut statement = json!({"resourceType": "CapabilityStatement", "rest": [{
        "mode": "server",
        "interaction": [{"code": "transaction"}],
        "operation": [{"name": "lastn"}, {"name": "meta"}],
        "resource": [
            {"type": "Patient", "interaction": [{"code": "read"}, {"code": "create"}, {"code": "search-type"}],
             "conditionalCreate": true,
             "operation": [{"name": "everything"}, {"name": "match"}]},
            {"type": "Observation", "interaction": [{"code": "delete"}],
             "operation": [{"name": "lastn"}, {"name": "stats"}]},
        ]}]});
        only_what_is_forwarded(&mut statement, &config);
        let rest = &statement["rest"][0];
        assert!(rest.get("interaction").is_none());
        assert_eq!(rest["operation"], json!([]));
        assert_eq!(
            rest["resource"][0]["interaction"],
            json!([{"code": "read"}, {"code": "search-type"}])
        );
        assert!(rest["resource"][0].get("conditionalCreate").is_none());
        assert_eq!(
            rest["resource"][0]["operation"],
            json!([{"name": "everything"}])
        );
        assert_eq!(rest["resource"][1]["interaction"], json!([]));
        assert_eq!(rest["resource"][1]["operation"], json!([{"name": "lastn"}]));
    }
}
