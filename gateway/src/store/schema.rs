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
        document -> Binary,
        stored_at_ms -> BigInt,
    }
}

diesel::table! {
    caller_names (actor) {
        actor -> Text,
        display -> Text,
        seen_at_ms -> BigInt,
    }
}

diesel::table! {
    ended_sessions (session_id) {
        session_id -> Text,
        expires_at_ms -> BigInt,
    }
}

diesel::table! {
    node_settings (name) {
        name -> Text,
        value -> Text,
    }
}

diesel::table! {
    receipts (gateway_id, sequence) {
        gateway_id -> Text,
        sequence -> BigInt,
        receipt_id -> Text,
        time_ms -> BigInt,
        site -> Nullable<Text>,
        interaction -> Nullable<Text>,
        resource_type -> Nullable<Text>,
        decision -> Text,
        break_glass -> Bool,
        status -> Integer,
        purpose -> Nullable<Text>,
        actor -> Text,
        actor_key -> Text,
        hash -> Binary,
        body -> Binary,
        subjects -> Text,
        kind -> Text,
        patients -> Text,
    }
}

diesel::table! {
    receipt_patients (receipt_id, patient_key) {
        receipt_id -> Text,
        patient_key -> Text,
        patient -> Text,
        time_ms -> BigInt,
    }
}

diesel::table! {
    receipt_batches (gateway_id, batch_id) {
        gateway_id -> Text,
        batch_id -> BigInt,
        first_sequence -> BigInt,
        last_sequence -> BigInt,
        root -> Binary,
        closed_at_ms -> BigInt,
        tx_id -> Nullable<Text>,
        block_number -> Nullable<BigInt>,
        anchored_at_ms -> Nullable<BigInt>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(receipts, receipt_patients);

diesel::table! {
    network_patients (id) {
        id -> Text,
        created_at_ms -> BigInt,
    }
}

diesel::table! {
    network_links (site, patient_id) {
        site -> Text,
        patient_id -> Text,
        network_id -> Text,
        how -> Text,
        evidence -> Text,
        learned_at_ms -> BigInt,
    }
}

diesel::table! {
    network_identifiers (system, value_key, site, patient_id) {
        system -> Text,
        value_key -> Text,
        site -> Text,
        patient_id -> Text,
        learned_at_ms -> BigInt,
    }
}

diesel::table! {
    network_candidates (id) {
        id -> Text,
        site -> Text,
        patient_id -> Text,
        network_id -> Text,
        grade -> Text,
        score -> BigInt,
        status -> Text,
        created_at_ms -> BigInt,
        decided_by -> Nullable<Text>,
        decided_at_ms -> Nullable<BigInt>,
    }
}

diesel::table! {
    network_refusals (site, patient_id, network_id) {
        site -> Text,
        patient_id -> Text,
        network_id -> Text,
        how -> Text,
        decided_by -> Text,
        decided_at_ms -> BigInt,
    }
}
