-- Back to one patient column pair (the first patient of each receipt).
DROP INDEX receipts_kind_time;
ALTER TABLE receipts ADD COLUMN patient TEXT;
ALTER TABLE receipts ADD COLUMN patient_key TEXT;
UPDATE receipts SET patient = (patients::json ->> 0);
UPDATE receipts SET patient_key = (
    SELECT rp.patient_key FROM receipt_patients rp
    WHERE rp.receipt_id = receipts.receipt_id AND rp.patient = receipts.patient
) WHERE patient IS NOT NULL;
ALTER TABLE receipts DROP COLUMN patients;
ALTER TABLE receipts DROP COLUMN kind;
