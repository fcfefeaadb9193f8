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

diesel::table! {
    ledger_blocks (number) {
        number -> BigInt,
        hash -> Binary,
        prev_hash -> Binary,
        timestamp_ms -> BigInt,
        body -> Binary,
        signature -> Binary,
    }
}

diesel::table! {
    consent_documents (document_hash) {
        document_hash -> Text,
        consent_key -> Text,
        site -> Text,
        document -> Text,
        stored_at_ms -> BigInt,
    }
}

diesel::table! {
    node_settings (name) {
        name -> Text,
        value -> Text,
    }
}
