-- Consent documents become the embedded ledger's documents by hash (issue 16): the bytes the
-- ledger's hash covers (canonical JSON), kept without the writing gateway's consent key and
-- site, which a member fetching a document by hash does not have (and no decision reads).
-- Rows stored before hold the document's canonical JSON as text: their UTF-8 bytes still
-- hash to their key.
DROP INDEX consent_documents_consent;
ALTER TABLE consent_documents DROP COLUMN consent_key;
ALTER TABLE consent_documents DROP COLUMN site;
ALTER TABLE consent_documents ALTER COLUMN document TYPE BYTEA USING convert_to(document, 'UTF8');
