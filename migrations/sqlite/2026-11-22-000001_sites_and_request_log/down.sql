DROP TABLE request_log;
DROP TABLE sites;
