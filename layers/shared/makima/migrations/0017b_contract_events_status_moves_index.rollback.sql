-- transactional: false
DROP INDEX CONCURRENTLY IF EXISTS idx_contract_events_status_moves;
