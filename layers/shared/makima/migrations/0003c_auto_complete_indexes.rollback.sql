-- transactional: false
DROP INDEX CONCURRENTLY IF EXISTS idx_questions_pending;
DROP INDEX CONCURRENTLY IF EXISTS idx_tasks_contract_phase;
