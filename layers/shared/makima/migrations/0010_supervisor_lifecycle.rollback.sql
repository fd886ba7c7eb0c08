-- depends: 0007_monitoring
DROP TABLE IF EXISTS scheduled_job_state;
ALTER TABLE supervisor_states DROP COLUMN IF EXISTS stopped_at;
