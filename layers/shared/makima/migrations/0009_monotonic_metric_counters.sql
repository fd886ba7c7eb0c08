-- The counters of GET /metrics never go down (Prometheus reads a decrease as a counter reset): they are
-- counts over rows that deletes remove (contract_events by type; supervisor_states.heartbeat_count), so
-- what a delete takes away is added to metric_counter_offsets by the triggers below, in the deleting
-- transaction. The scrape (db/metrics.py) adds the offsets to the live counts in the same statement, so
-- one snapshot sees a delete and its offset together or neither.
--
-- Safe while the API serves writes: a new small table, and CREATE TRIGGER, which holds its lock on
-- contract_events / supervisor_states only for the catalog update (no scan, no rewrite).
-- depends: 0008_version_per_transaction

CREATE TABLE IF NOT EXISTS metric_counter_offsets (
    counter  text NOT NULL,
    -- the label of labelled counters (batch_operations: the operation), '' otherwise
    label    text NOT NULL DEFAULT '',
    value    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (counter, label)
);

-- The event type -> counter mapping of makima.domain.metrics.COUNTER_EVENTS and db/metrics.py.
CREATE OR REPLACE FUNCTION metric_offsets_events_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO metric_counter_offsets AS o (counter, label, value)
    SELECT CASE g.type
               WHEN 'phase_changed' THEN 'phase_transitions'
               WHEN 'completion_detected' THEN 'completion_detections'
               WHEN 'supervisor_restored' THEN 'supervisor_restarts'
               WHEN 'batch_operation' THEN 'batch_operations'
           END,
           CASE WHEN g.type = 'batch_operation' THEN coalesce(g.payload->>'operation', 'unknown') ELSE '' END,
           count(*)
      FROM gone g
     WHERE g.type IN ('phase_changed', 'completion_detected', 'supervisor_restored', 'batch_operation')
     GROUP BY 1, 2
    ON CONFLICT (counter, label) DO UPDATE SET value = o.value + EXCLUDED.value;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION metric_offsets_heartbeats_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO metric_counter_offsets AS o (counter, label, value)
    SELECT 'supervisor_heartbeats', '', sum(g.heartbeat_count)
      FROM gone g
    HAVING sum(g.heartbeat_count) > 0
    ON CONFLICT (counter, label) DO UPDATE SET value = o.value + EXCLUDED.value;
    RETURN NULL;
END
$$;

-- Statement-level with a transition table: one insert per DELETE statement (a cascade from contracts
-- runs one per deleted contract), not one per row.
DROP TRIGGER IF EXISTS contract_events_metric_offsets ON contract_events;
CREATE TRIGGER contract_events_metric_offsets
    AFTER DELETE ON contract_events
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION metric_offsets_events_deleted();

DROP TRIGGER IF EXISTS supervisor_states_metric_offsets ON supervisor_states;
CREATE TRIGGER supervisor_states_metric_offsets
    AFTER DELETE ON supervisor_states
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION metric_offsets_heartbeats_deleted();
