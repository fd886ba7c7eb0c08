-- Supervisor lifecycle over time (issue 17): a clean stop is remembered, and the timeout sweep
-- remembers when it last saw the supervisor_heartbeat flag off (it runs in Lambda containers that
-- keep nothing between runs).
--
-- Safe while the API serves writes: a nullable column without a default is a catalog change (no
-- rewrite), and the new table is new. ADD COLUMN still takes a brief ACCESS EXCLUSIVE lock on
-- supervisor_states; lock_timeout makes it give up (the deploy retries) rather than queue writers
-- behind it while a long transaction holds the table.
-- depends: 0009_monotonic_metric_counters

SET LOCAL lock_timeout = '1s';

-- Set by a save at the ``shutdown`` save point: the supervisor stopped on purpose. The timeout sweep
-- skips it (it is not dead), and another daemon may adopt its task. Cleared by any later save, by a
-- heartbeat sent after it, and by restoration.
ALTER TABLE supervisor_states ADD COLUMN IF NOT EXISTS stopped_at timestamptz;

-- What a scheduled job must remember between runs. ``paused_at``: the last run that found the job's
-- feature flag off (the timeout sweep then gives every supervisor a full timeout of grace from it).
CREATE TABLE IF NOT EXISTS scheduled_job_state (
    job         text PRIMARY KEY CHECK (char_length(job) BETWEEN 1 AND 100),
    paused_at   timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
