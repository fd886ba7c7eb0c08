-- transactional: false
ALTER TABLE supervisor_states RESET (fillfactor);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_supervisor_states_alive ON supervisor_states (last_heartbeat_at)
    WHERE dead_at IS NULL;
