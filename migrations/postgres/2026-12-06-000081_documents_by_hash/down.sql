-- Back to documents as text with a consent key and a site (both unknown now: empty).
ALTER TABLE consent_documents ALTER COLUMN document TYPE TEXT USING convert_from(document, 'UTF8');
ALTER TABLE consent_documents ADD COLUMN consent_key TEXT NOT NULL DEFAULT '';
ALTER TABLE consent_documents ADD COLUMN site TEXT NOT NULL DEFAULT '';
ALTER TABLE consent_documents ALTER COLUMN consent_key DROP DEFAULT;
ALTER TABLE consent_documents ALTER COLUMN site DROP DEFAULT;
CREATE INDEX consent_documents_consent ON consent_documents (consent_key);
