-- transactional: false
DROP INDEX CONCURRENTLY IF EXISTS idx_tasks_daemon;
