-- The indexes of Task 1.4, built CONCURRENTLY (writers go on; it cannot run inside a transaction).
-- After the backfill, so its updates stayed HOT and each index is built once, from the final values.
-- Each statement is idempotent and the rollback lists their undoing in reverse order, one for one:
-- if one fails, yoyo undoes those before it, and makima.db.migrate drops the INVALID index a failed
-- CONCURRENTLY build leaves behind before it retries.
-- transactional: false
-- depends: 0002c_contract_activity_not_null

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_contracts_status ON contracts (status);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_contracts_owner_status ON contracts (owner_id, status);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_contracts_last_activity ON contracts (last_activity_at);
-- Stale queries only ever look at contracts that can still do work.
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_contracts_stale ON contracts (last_activity_at)
    WHERE status NOT IN ('completed', 'failed', 'archived');
