-- Seed Task 1.4: six more contract statuses and the columns that track them.
--
-- Online: one short transaction of catalog changes under the ACCESS EXCLUSIVE lock that ALTER TABLE
-- takes on contracts (no table scan, no rewrite, no row written), so writers wait for it only briefly;
-- makima.db.migrate's lock_timeout makes it give up and retry rather than queue writers behind it.
-- The existing rows' activity columns stay NULL here: the contract_activity backfill
-- (makima.services.backfill) fills them from updated_at in batches of its own transactions, and 0002b
-- and 0002c make them NOT NULL once it has finished. The widened status check is NOT VALID here and
-- validated in 0002c (a scan that does not block writers).
-- depends: 0001_initial

-- Without a default, so the backfill can tell an old row (NULL) from a new one; new rows get now().
ALTER TABLE contracts
    ADD COLUMN IF NOT EXISTS status_changed_at timestamptz,
    ADD COLUMN IF NOT EXISTS last_activity_at timestamptz,
    ADD COLUMN IF NOT EXISTS waiting_for text,
    ADD COLUMN IF NOT EXISTS blocked_reason text,
    ADD COLUMN IF NOT EXISTS failure_reason text;
ALTER TABLE contracts
    ALTER COLUMN status_changed_at SET DEFAULT now(),
    ALTER COLUMN last_activity_at SET DEFAULT now();

-- Widen the status check: enforced on every write from now on, checked against existing rows in 0002c.
ALTER TABLE contracts DROP CONSTRAINT contracts_status_check;
ALTER TABLE contracts ADD CONSTRAINT contracts_status_check CHECK (status IN (
    'active', 'completed', 'archived',
    'created', 'waiting_for_input', 'paused', 'blocked', 'completing', 'failed')) NOT VALID;
-- New contracts start as created and become active when their supervisor starts.
ALTER TABLE contracts ALTER COLUMN status SET DEFAULT 'created';

-- Where each batched data backfill has got to (makima.db.backfill): a run that stops (its time budget,
-- a crash, a deployment) resumes after last_id; finished_at says the migrations that wait for it may go.
CREATE TABLE IF NOT EXISTS backfills (
    name          text PRIMARY KEY,
    last_id       uuid,
    rows_updated  bigint NOT NULL DEFAULT 0,
    batches       bigint NOT NULL DEFAULT 0,
    started_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);
