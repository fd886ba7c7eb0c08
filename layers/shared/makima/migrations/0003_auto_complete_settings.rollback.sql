-- transactional: false
DROP INDEX CONCURRENTLY IF EXISTS idx_questions_pending;
DROP INDEX CONCURRENTLY IF EXISTS idx_tasks_contract_phase;
ALTER TABLE tasks DROP COLUMN IF EXISTS phase;
ALTER TABLE contracts
    DROP COLUMN IF EXISTS completion_detected_at,
    DROP COLUMN IF EXISTS auto_complete_enabled;
