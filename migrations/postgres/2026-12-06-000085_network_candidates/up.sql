-- Match candidates and refused pairs of the network patient index (issue 17).
--
-- A candidate: a site patient that `Patient/$match` found probably or possibly the same as a
-- network patient (never linked automatically; an administrator confirms or rejects it).
-- `grade`: `probable` or `possible`; `score` in thousandths; `status`: `open`,
-- `confirmed`, `rejected`; `decided_by`: the administrator's caller id.
CREATE TABLE network_candidates (
    id TEXT PRIMARY KEY NOT NULL,
    site TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    network_id TEXT NOT NULL REFERENCES network_patients (id),
    grade TEXT NOT NULL,
    score BIGINT NOT NULL,
    status TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    decided_by TEXT,
    decided_at_ms BIGINT,
    UNIQUE (site, patient_id, network_id)
);
CREATE INDEX network_candidates_status ON network_candidates (status);

-- A pair an administrator rejected or unlinked: never linked again automatically (learning
-- skips it; only an administrator's confirmation links it, and removes this row).
-- `how`: `rejected` or `unlinked`; `decided_by`: the administrator's caller id.
CREATE TABLE network_refusals (
    site TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    network_id TEXT NOT NULL,
    how TEXT NOT NULL,
    decided_by TEXT NOT NULL,
    decided_at_ms BIGINT NOT NULL,
    PRIMARY KEY (site, patient_id, network_id)
);
