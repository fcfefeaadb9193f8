CREATE INDEX receipts_time ON receipts (time_ms);
