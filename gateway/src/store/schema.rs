//! diesel table definitions, one for both backends; they follow `migrations/` by hand.

diesel::table! {
    sites (id) {
        id -> Text,
        upstream_base_url -> Text,
        fhir_version -> Text,
        default_policy -> Text,
        config_json -> Text,
        updated_at_ms -> BigInt,
    }
}

diesel::table! {
    request_log (id) {
        id -> BigInt,
        request_id -> Text,
        at_ms -> BigInt,
        gateway_id -> Text,
        site -> Nullable<Text>,
        caller -> Nullable<Text>,
        interaction -> Nullable<Text>,
        resource_type -> Nullable<Text>,
        status -> Integer,
        error_code -> Nullable<Text>,
        decision -> Nullable<Text>,
        duration_us -> BigInt,
    }
}
