-- depends: 0016_supervisor_conversation_window
DROP TABLE IF EXISTS idempotency_records;
