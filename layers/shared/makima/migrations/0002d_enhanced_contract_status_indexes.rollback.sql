-- transactional: false
DROP INDEX CONCURRENTLY IF EXISTS idx_contracts_stale;
DROP INDEX CONCURRENTLY IF EXISTS idx_contracts_last_activity;
DROP INDEX CONCURRENTLY IF EXISTS idx_contracts_owner_status;
DROP INDEX CONCURRENTLY IF EXISTS idx_contracts_status;
