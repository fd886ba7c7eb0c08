-- The indexes of Task 2.3, built CONCURRENTLY: the current phase's tasks of a contract (phase gates),
-- and a contract's pending questions. Each statement is idempotent; the rollback undoes them one for
-- one, in reverse order (yoyo's undo of a failed non-transactional migration pairs them so).
-- transactional: false
-- depends: 0003b_task_phase

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_tasks_contract_phase ON tasks (contract_id, phase) WHERE NOT is_supervisor;
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_questions_pending ON questions (contract_id) WHERE status = 'pending';
