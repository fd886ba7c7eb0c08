-- Seed Task 1.4: six more contract statuses and the columns that track them.
-- depends: 0001_initial

ALTER TABLE contracts ADD COLUMN IF NOT EXISTS status_changed_at timestamptz;
ALTER TABLE contracts ADD COLUMN IF NOT EXISTS last_activity_at timestamptz;
ALTER TABLE contracts ADD COLUMN IF NOT EXISTS waiting_for text;
ALTER TABLE contracts ADD COLUMN IF NOT EXISTS blocked_reason text;
ALTER TABLE contracts ADD COLUMN IF NOT EXISTS failure_reason text;

-- Backfill from the last time the row changed: the best evidence of activity that existing rows have.
-- The columns were added without a default on purpose, so the backfill sees NULL, not "now".
UPDATE contracts
   SET last_activity_at = COALESCE(last_activity_at, updated_at),
       status_changed_at = COALESCE(status_changed_at, updated_at)
 WHERE last_activity_at IS NULL OR status_changed_at IS NULL;

ALTER TABLE contracts ALTER COLUMN status_changed_at SET DEFAULT now();
ALTER TABLE contracts ALTER COLUMN last_activity_at SET DEFAULT now();
ALTER TABLE contracts ALTER COLUMN status_changed_at SET NOT NULL;
ALTER TABLE contracts ALTER COLUMN last_activity_at SET NOT NULL;

-- Widen the status check. NOT VALID + VALIDATE keeps writers unblocked while existing rows are checked.
ALTER TABLE contracts DROP CONSTRAINT contracts_status_check;
ALTER TABLE contracts ADD CONSTRAINT contracts_status_check CHECK (status IN (
    'active', 'completed', 'archived',
    'created', 'waiting_for_input', 'paused', 'blocked', 'completing', 'failed')) NOT VALID;
ALTER TABLE contracts VALIDATE CONSTRAINT contracts_status_check;
-- New contracts start as created and become active when their supervisor starts.
ALTER TABLE contracts ALTER COLUMN status SET DEFAULT 'created';

CREATE INDEX IF NOT EXISTS idx_contracts_status ON contracts (status);
CREATE INDEX IF NOT EXISTS idx_contracts_owner_status ON contracts (owner_id, status);
CREATE INDEX IF NOT EXISTS idx_contracts_last_activity ON contracts (last_activity_at);
-- Stale queries only ever look at contracts that can still do work.
CREATE INDEX IF NOT EXISTS idx_contracts_stale ON contracts (last_activity_at)
    WHERE status NOT IN ('completed', 'failed', 'archived');
