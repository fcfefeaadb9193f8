-- The network patient index (issue 17): one opaque id per patient known at several sites, the
-- site-local patients linked to it with when and how each link was learned, and the keyed
-- hashes of the network identifiers seen at each site (never their clear values).
CREATE TABLE network_patients (
    id TEXT PRIMARY KEY NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- One row per site-local patient linked to a network patient. `how`: `identifier` (a certain
-- link: a shared value of a network identifier system; `evidence` names the system) or
-- `confirmed` (an administrator confirmed a candidate; `evidence` is the caller id).
CREATE TABLE network_links (
    site TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    network_id TEXT NOT NULL REFERENCES network_patients (id),
    how TEXT NOT NULL,
    evidence TEXT NOT NULL,
    learned_at_ms BIGINT NOT NULL,
    PRIMARY KEY (site, patient_id)
);
CREATE INDEX network_links_network ON network_links (network_id);

-- A network identifier seen on a site's Patient: the system in clear, the value as a keyed
-- hash (HMAC with the consortium key), so that a national id is never stored in clear.
CREATE TABLE network_identifiers (
    system TEXT NOT NULL,
    value_key TEXT NOT NULL,
    site TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    learned_at_ms BIGINT NOT NULL,
    PRIMARY KEY (system, value_key, site, patient_id)
);
CREATE INDEX network_identifiers_patient ON network_identifiers (site, patient_id);
