DROP TABLE receipt_batches;
DROP TABLE receipt_patients;
DROP TABLE receipts;
