//! Whether a resource satisfies a granular scope's token condition: the element named by the
//! search parameter (kebab-case to camelCase: `category`, `clinical-status` →
//! `clinicalStatus`) holding a CodeableConcept, Coding, Identifier or code that matches.
//!
//! Leaves out: search parameters whose path is not the element of the same name, and
//! non-token parameter types. Such a condition is never satisfied: narrowing, not widening.

use serde_json::Value;

use super::{SearchCondition, TokenValue};

pub(super) fn satisfies(resource: &Value, condition: &SearchCondition) -> bool {
    let element = camel_case(&condition.parameter);
    match resource.get(&element) {
        Some(value) => condition.values.iter().any(|v| element_matches(value, v)),
        None => false,
    }
}

fn camel_case(parameter: &str) -> String {
    let mut out = String::with_capacity(parameter.len());
    let mut upper = false;
    for c in parameter.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn element_matches(element: &Value, wanted: &TokenValue) -> bool {
    match element {
        Value::Array(items) => items.iter().any(|item| element_matches(item, wanted)),
        // A `code` primitive: its system is implied by the element, so only a bare code or a
        // `|code`-less form can be compared.
        Value::String(code) => matches!(wanted, TokenValue::Code(c) if c == code),
        Value::Object(object) => {
            if let Some(codings) = object.get("coding") {
                return element_matches(codings, wanted);
            }
            let system = object.get("system").and_then(Value::as_str);
            let code = object
                .get("code")
                .or_else(|| object.get("value"))
                .and_then(Value::as_str);
            coding_matches(system, code, wanted)
        }
        _ => false,
    }
}

fn coding_matches(system: Option<&str>, code: Option<&str>, wanted: &TokenValue) -> bool {
    match wanted {
        TokenValue::Code(c) => code == Some(c.as_str()),
        TokenValue::SystemCode { system: s, code: c } => {
            system == Some(s.as_str()) && code == Some(c.as_str())
        }
        TokenValue::System(s) => system == Some(s.as_str()),
        TokenValue::NoSystem(c) => system.is_none() && code == Some(c.as_str()),
    }
}
