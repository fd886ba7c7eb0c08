DROP TRIGGER IF EXISTS supervisor_states_metric_offsets ON supervisor_states;
DROP TRIGGER IF EXISTS contract_events_metric_offsets ON contract_events;
DROP FUNCTION IF EXISTS metric_offsets_heartbeats_deleted();
DROP FUNCTION IF EXISTS metric_offsets_events_deleted();
DROP TABLE IF EXISTS metric_counter_offsets;
