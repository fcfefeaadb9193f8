-- Audit queries (gateway/src/audit_api.rs, the console): newest first with a keyset on
-- (time_ms, receipt_id), and by site within a time range.
CREATE INDEX receipts_time_id ON receipts (time_ms, receipt_id);
CREATE INDEX receipts_site_time ON receipts (site, time_ms);
