-- Fold the new statuses back onto the original three (the same mapping as legacy_status), so the
-- narrower check holds again, then drop what 0002 added.
DROP INDEX IF EXISTS idx_contracts_stale;
DROP INDEX IF EXISTS idx_contracts_last_activity;
DROP INDEX IF EXISTS idx_contracts_owner_status;
DROP INDEX IF EXISTS idx_contracts_status;

ALTER TABLE contracts DROP CONSTRAINT contracts_status_check;
UPDATE contracts SET status = CASE
    WHEN status IN ('created', 'waiting_for_input', 'paused', 'blocked', 'completing') THEN 'active'
    WHEN status = 'failed' THEN 'completed'
    ELSE status END
 WHERE status NOT IN ('active', 'completed', 'archived');
ALTER TABLE contracts ALTER COLUMN status SET DEFAULT 'active';
ALTER TABLE contracts ADD CONSTRAINT contracts_status_check
    CHECK (status IN ('active', 'completed', 'archived'));

ALTER TABLE contracts DROP COLUMN IF EXISTS failure_reason;
ALTER TABLE contracts DROP COLUMN IF EXISTS blocked_reason;
ALTER TABLE contracts DROP COLUMN IF EXISTS waiting_for;
ALTER TABLE contracts DROP COLUMN IF EXISTS last_activity_at;
ALTER TABLE contracts DROP COLUMN IF EXISTS status_changed_at;
