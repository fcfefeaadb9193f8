-- The name each user caller's token last gave (OpenID `name`, or given and family name),
-- by actor (`Practitioner/dr-alice`): what the compliance console shows beside the id. Only
-- in the store: never on the ledger, never in a receipt or its hash, never in the logs.
CREATE TABLE caller_names (
    actor TEXT PRIMARY KEY NOT NULL,
    display TEXT NOT NULL,
    seen_at_ms BIGINT NOT NULL
);
