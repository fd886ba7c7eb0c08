-- Heartbeat ingest updates every supervisor's row once per heartbeat. idx_supervisor_states_alive
-- indexed last_heartbeat_at, so every one of those updates wrote a new entry in all three indexes and
-- left a dead tuple for VACUUM (0% HOT updates in tests/bench/bench_heartbeats.py). The timeout sweep
-- never used it (it filters on COALESCE(last_heartbeat_at, created_at): a seq scan of one row per
-- supervisor, once a minute). Without it, and with room left on each page, the updates are HOT.
-- transactional: false
-- depends: 0005b_tasks_daemon_index

DROP INDEX CONCURRENTLY IF EXISTS idx_supervisor_states_alive;
ALTER TABLE supervisor_states SET (fillfactor = 50);
