DROP TABLE node_settings;
DROP TABLE consent_documents;
DROP TABLE ledger_blocks;
