-- Sites as configured (mirrored from the configuration file at every start), and one row
-- per FHIR request. No patient identifiers: the request log names no resource ids.
CREATE TABLE sites (
    id TEXT PRIMARY KEY NOT NULL,
    upstream_base_url TEXT NOT NULL,
    fhir_version TEXT NOT NULL,
    default_policy TEXT NOT NULL,
    config_json TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE TABLE request_log (
    id BIGSERIAL PRIMARY KEY,
    request_id TEXT NOT NULL,
    at_ms BIGINT NOT NULL,
    gateway_id TEXT NOT NULL,
    site TEXT,
    caller TEXT,
    interaction TEXT,
    resource_type TEXT,
    status INTEGER NOT NULL,
    error_code TEXT,
    decision TEXT,
    duration_us BIGINT NOT NULL
);

CREATE INDEX request_log_at ON request_log (at_ms);
CREATE INDEX request_log_site_at ON request_log (site, at_ms);
