DROP TABLE network_refusals;
DROP TABLE network_candidates;
