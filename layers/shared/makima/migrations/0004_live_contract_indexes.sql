-- Lists that filter on "still workable" (stale, waiting, the live statuses) walk only live contracts,
-- not every contract ever kept: without these, an admin's stale list that matches nothing read all
-- 100,000 rows of the benchmark (41 ms p50) and would grow with history (docs/performance.md).
-- CONCURRENTLY keeps writers running while the indexes build, and cannot run inside a transaction.
-- transactional: false
-- depends: 0003c_auto_complete_indexes

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_contracts_live_created ON contracts (created_at DESC, id DESC)
    WHERE status NOT IN ('completed', 'failed', 'archived');
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_contracts_owner_live_created ON contracts (owner_id, created_at DESC, id DESC)
    WHERE status NOT IN ('completed', 'failed', 'archived');
