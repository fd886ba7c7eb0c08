-- Fold the new statuses back onto the original three (the same mapping as legacy_status) while the
-- wide check still stands, then restore the original check (validated: this scans contracts under
-- the ALTER's lock, so roll back at a quiet moment), the default, and drop what 0002 added.
UPDATE contracts SET status = CASE
    WHEN status IN ('created', 'waiting_for_input', 'paused', 'blocked', 'completing') THEN 'active'
    WHEN status = 'failed' THEN 'completed'
    ELSE status END
 WHERE status NOT IN ('active', 'completed', 'archived');
ALTER TABLE contracts DROP CONSTRAINT contracts_status_check;
ALTER TABLE contracts ADD CONSTRAINT contracts_status_check
    CHECK (status IN ('active', 'completed', 'archived'));
ALTER TABLE contracts ALTER COLUMN status SET DEFAULT 'active';

DROP TABLE IF EXISTS backfills;
ALTER TABLE contracts
    DROP COLUMN IF EXISTS failure_reason,
    DROP COLUMN IF EXISTS blocked_reason,
    DROP COLUMN IF EXISTS waiting_for,
    DROP COLUMN IF EXISTS last_activity_at,
    DROP COLUMN IF EXISTS status_changed_at;
