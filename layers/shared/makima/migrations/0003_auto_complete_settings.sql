-- Seed Task 2.3: per-contract auto-completion, when completion was detected, and the phase a task
-- belongs to (phase gates count the tasks of the current phase), with their indexes.
-- Online: not one transaction but one per statement, so no lock outlives its statement: each ALTER is
-- a catalog change under a brief lock on one table (two tables locked in one transaction would
-- deadlock with a writer that locks them in the other order, e.g. a task insert whose foreign key
-- check locks its contract), and the indexes are built CONCURRENTLY. Each statement is idempotent;
-- the rollback lists their undoing one for one in reverse order, so if one fails yoyo undoes those
-- before it (makima.db.migrate then retries the whole migration).
-- transactional: false
-- depends: 0002d_enhanced_contract_status_indexes

-- A constant default is stored in the catalog (PostgreSQL 11+): no table rewrite, and NOT NULL needs
-- no scan (every existing row reads the default).
ALTER TABLE contracts
    ADD COLUMN IF NOT EXISTS auto_complete_enabled boolean NOT NULL DEFAULT true,
    ADD COLUMN IF NOT EXISTS completion_detected_at timestamptz;
-- NULL for tasks spawned before this migration: gates ignore them rather than guess their phase.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS phase text;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_tasks_contract_phase ON tasks (contract_id, phase) WHERE NOT is_supervisor;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_questions_pending ON questions (contract_id) WHERE status = 'pending';
