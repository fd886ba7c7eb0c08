-- transactional: false
DROP INDEX CONCURRENTLY IF EXISTS idx_monitor_connections_token;
