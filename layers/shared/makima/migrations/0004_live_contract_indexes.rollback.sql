-- transactional: false
DROP INDEX CONCURRENTLY IF EXISTS idx_contracts_owner_live_created;
DROP INDEX CONCURRENTLY IF EXISTS idx_contracts_live_created;
