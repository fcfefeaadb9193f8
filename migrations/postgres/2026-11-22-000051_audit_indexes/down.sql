DROP INDEX receipts_site_time;
DROP INDEX receipts_time_id;
