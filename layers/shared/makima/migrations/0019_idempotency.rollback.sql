-- depends: 0017b_contract_events_status_moves_index
DROP TABLE IF EXISTS idempotency_records;
