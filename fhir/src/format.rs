//! Format negotiation vocabulary: which `_format` values and media types name FHIR JSON.
//!
//! Leaves out choosing the response's FHIR version (the gateway's dialect, from the media
//! type's `fhirVersion` parameter).

/// Whether a `_format` value or media type names JSON (`json`, `application/json`,
/// `application/fhir+json`, the pre-R4 `application/json+fhir`), parameters ignored.
pub fn is_json_format(value: &str) -> bool {
    // An unencoded `+` in a query reads as a space.
    let value = value.replace(' ', "+");
    let base = value.split(';').next().unwrap_or_default().trim();
    matches!(
        base.to_ascii_lowercase().as_str(),
        "json" | "application/json" | "application/fhir+json" | "application/json+fhir"
    )
}

/// A `_format` value as a query decodes it, with the `+` of `fhir+json` given back: a query
/// decodes an unencoded `+` as a space, and a media type's `type/subtype` holds no space.
/// Parameters after the first `;` are kept as decoded.
pub fn media_type_from_query(value: &str) -> String {
    match value.split_once(';') {
        Some((base, parameters)) => format!("{};{parameters}", base.trim().replace(' ', "+")),
        None => value.trim().replace(' ', "+"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_named_in_every_form_and_nothing_else_is() {
        for yes in [
            "json",
            "application/fhir+json",
            "application/fhir json",
            "application/json+fhir; fhirVersion=3.0",
            "APPLICATION/JSON",
        ] {
            assert!(is_json_format(yes), "{yes}");
        }
        for no in ["xml", "application/fhir+xml", "text/html", ""] {
            assert!(!is_json_format(no), "{no}");
        }
    }

    #[test]
    fn a_query_gives_back_the_plus_of_a_media_type() {
        assert_eq!(
            media_type_from_query("application/fhir json;fhirVersion=4.0"),
            "application/fhir+json;fhirVersion=4.0"
        );
        assert_eq!(
            media_type_from_query("application/fhir+json; fhirVersion=4.0"),
            "application/fhir+json; fhirVersion=4.0"
        );
        assert_eq!(media_type_from_query("json"), "json");
    }
}
