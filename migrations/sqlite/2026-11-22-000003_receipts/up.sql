-- Receipts of every FHIR request through the gateway (see receipts/src/receipt.rs for the
-- canonical encoding held in `body`). Each gateway keeps its own hash chain, numbered from 1.
-- The clear actor and patient sit beside the keyed hashes for authorised audit queries; the
-- ledger only ever sees batch roots.
CREATE TABLE receipts (
    gateway_id TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    receipt_id TEXT NOT NULL UNIQUE,
    time_ms BIGINT NOT NULL,
    site TEXT,
    interaction TEXT,
    resource_type TEXT,
    decision TEXT NOT NULL,
    break_glass BOOLEAN NOT NULL,
    status INTEGER NOT NULL,
    purpose TEXT,
    actor TEXT NOT NULL,
    patient TEXT,
    actor_key TEXT NOT NULL,
    patient_key TEXT,
    hash BLOB NOT NULL,
    body BLOB NOT NULL,
    subjects TEXT NOT NULL,
    PRIMARY KEY (gateway_id, sequence)
);

CREATE INDEX receipts_time ON receipts (time_ms);
CREATE INDEX receipts_actor ON receipts (actor, time_ms);

-- Every patient whose data a request reached (the one it named, and the patients of the
-- resources it returned), for a patient's accounting of disclosures.
CREATE TABLE receipt_patients (
    receipt_id TEXT NOT NULL,
    patient_key TEXT NOT NULL,
    patient TEXT NOT NULL,
    time_ms BIGINT NOT NULL,
    PRIMARY KEY (receipt_id, patient_key)
);

CREATE INDEX receipt_patients_patient ON receipt_patients (patient_key, time_ms);

-- Anchoring batches: stored when closed, before the root goes to the ledger; the ledger
-- transaction and block are filled in once it committed. Batches cover a gateway's chain
-- from receipt 1 without gaps or overlap.
CREATE TABLE receipt_batches (
    gateway_id TEXT NOT NULL,
    batch_id BIGINT NOT NULL,
    first_sequence BIGINT NOT NULL,
    last_sequence BIGINT NOT NULL,
    root BLOB NOT NULL,
    closed_at_ms BIGINT NOT NULL,
    tx_id TEXT,
    block_number BIGINT,
    anchored_at_ms BIGINT,
    PRIMARY KEY (gateway_id, batch_id)
);
