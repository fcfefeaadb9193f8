DROP TABLE network_identifiers;
DROP TABLE network_links;
DROP TABLE network_patients;
