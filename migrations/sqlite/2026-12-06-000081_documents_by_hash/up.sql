-- Consent documents become the embedded ledger's documents by hash (issue 16): the bytes the
-- ledger's hash covers (canonical JSON), kept without the writing gateway's consent key and
-- site, which a member fetching a document by hash does not have (and no decision reads).
-- Rows stored before hold the document's canonical JSON as text: they move as they are, and
-- their bytes still hash to their key.
DROP INDEX consent_documents_consent;
CREATE TABLE consent_documents_by_hash (
    document_hash TEXT PRIMARY KEY NOT NULL,
    document BLOB NOT NULL,
    stored_at_ms BIGINT NOT NULL
);
INSERT INTO consent_documents_by_hash (document_hash, document, stored_at_ms)
    SELECT document_hash, CAST(document AS BLOB), stored_at_ms FROM consent_documents;
DROP TABLE consent_documents;
ALTER TABLE consent_documents_by_hash RENAME TO consent_documents;
