-- Seed Task 2.3: per-contract auto-completion, when completion was detected, and the phase a task
-- belongs to (phase gates count the tasks of the current phase).
-- depends: 0002_enhanced_contract_status

-- A constant default is stored in the catalog (PostgreSQL 11+): no table rewrite.
ALTER TABLE contracts ADD COLUMN IF NOT EXISTS auto_complete_enabled boolean NOT NULL DEFAULT true;
ALTER TABLE contracts ADD COLUMN IF NOT EXISTS completion_detected_at timestamptz;

-- NULL for tasks spawned before this migration: gates ignore them rather than guess their phase.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS phase text;
CREATE INDEX IF NOT EXISTS idx_tasks_contract_phase ON tasks (contract_id, phase) WHERE NOT is_supervisor;
CREATE INDEX IF NOT EXISTS idx_questions_pending ON questions (contract_id) WHERE status = 'pending';
