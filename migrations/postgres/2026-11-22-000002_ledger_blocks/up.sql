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

CREATE TABLE consent_documents (
    consent_key TEXT NOT NULL,
    version BIGINT NOT NULL,
    document_hash TEXT NOT NULL,
    document TEXT NOT NULL,
    stored_at_ms BIGINT NOT NULL,
    PRIMARY KEY (consent_key, version)
);
