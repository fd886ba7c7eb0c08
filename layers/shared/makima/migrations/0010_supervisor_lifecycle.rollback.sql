-- depends: 0009_monotonic_metric_counters
DROP TABLE IF EXISTS scheduled_job_state;
ALTER TABLE supervisor_states DROP COLUMN IF EXISTS stopped_at;
