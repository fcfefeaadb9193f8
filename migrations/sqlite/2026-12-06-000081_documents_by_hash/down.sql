-- Back to documents as text with a consent key and a site (both unknown now: empty).
CREATE TABLE consent_documents_with_site (
    document_hash TEXT PRIMARY KEY NOT NULL,
    consent_key TEXT NOT NULL,
    site TEXT NOT NULL,
    document TEXT NOT NULL,
    stored_at_ms BIGINT NOT NULL
);
INSERT INTO consent_documents_with_site (document_hash, consent_key, site, document, stored_at_ms)
    SELECT document_hash, '', '', CAST(document AS TEXT), stored_at_ms FROM consent_documents;
DROP TABLE consent_documents;
ALTER TABLE consent_documents_with_site RENAME TO consent_documents;
CREATE INDEX consent_documents_consent ON consent_documents (consent_key);
