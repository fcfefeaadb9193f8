-- Receipts version 2 (`assent-receipt/2`, receipts/src/receipt.rs): a receipt says what it
-- records (`kind`: a FHIR request, a consent API call, an audit-log read) and names every
-- patient the access reached. The clear patients sit beside the receipt as a JSON array in
-- the order of its keys; `receipt_patients` stays the index a patient's disclosures are read
-- from. Version 1 rows keep their bytes (and verify as they did); their one patient moves
-- into the array and, if missing there, into `receipt_patients`.
ALTER TABLE receipts ADD COLUMN kind TEXT NOT NULL DEFAULT 'fhir';
ALTER TABLE receipts ADD COLUMN patients TEXT NOT NULL DEFAULT '[]';
UPDATE receipts SET patients = json_build_array(patient)::text WHERE patient IS NOT NULL;
INSERT INTO receipt_patients (receipt_id, patient_key, patient, time_ms)
    SELECT receipt_id, patient_key, patient, time_ms FROM receipts
    WHERE patient IS NOT NULL AND patient_key IS NOT NULL
    ON CONFLICT DO NOTHING;
ALTER TABLE receipts DROP COLUMN patient;
ALTER TABLE receipts DROP COLUMN patient_key;
CREATE INDEX receipts_kind_time ON receipts (kind, time_ms);
