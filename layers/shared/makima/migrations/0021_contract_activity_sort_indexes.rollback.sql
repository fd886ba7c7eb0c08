-- transactional: false
DROP INDEX CONCURRENTLY IF EXISTS idx_contracts_activity;
DROP INDEX CONCURRENTLY IF EXISTS idx_contracts_owner_activity;
