-- The live tasks of a daemon (task reassignment, daemon listing), built CONCURRENTLY.
-- transactional: false
-- depends: 0005_supervisors

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_tasks_daemon ON tasks (daemon_id) WHERE status IN ('pending', 'running');
