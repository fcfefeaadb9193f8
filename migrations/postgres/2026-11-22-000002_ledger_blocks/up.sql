-- The embedded ledger's blocks (see ledger/src/block.rs for the encoding), and the clear
-- consent documents the ledger holds only as hashes. Documents contain patient data: they
-- stay in the gateway's store and never go on the ledger.
CREATE TABLE ledger_blocks (
    number BIGINT PRIMARY KEY NOT NULL,
    hash BYTEA NOT NULL,
    prev_hash BYTEA NOT NULL,
    timestamp_ms BIGINT NOT NULL,
    body BYTEA NOT NULL,
    signature BYTEA NOT NULL
);

-- Content-addressed: a document is stored before the ledger commits the version that names
-- its hash, so a committed version always finds its document.
CREATE TABLE consent_documents (
    document_hash TEXT PRIMARY KEY NOT NULL,
    consent_key TEXT NOT NULL,
    site TEXT NOT NULL,
    document TEXT NOT NULL,
    stored_at_ms BIGINT NOT NULL
);

CREATE INDEX consent_documents_consent ON consent_documents (consent_key);

-- Keys this node made for itself at first start, when the configuration gives none.
CREATE TABLE node_settings (
    name TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
