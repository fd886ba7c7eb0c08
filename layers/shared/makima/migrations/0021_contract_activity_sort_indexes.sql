-- Issue 16 (the owner's console): GET /contracts?sort=activity lists the most recently active contracts
-- first, keyset-paged on (last_activity_at, id). These indexes give that order to an owner's list and to
-- an admin's, so a page is an index range scan from the cursor, whatever the table's size, as the
-- created order is (idx_contracts_owner_created, idx_contracts_created). idx_contracts_last_activity
-- (last_activity_at alone) has no id to break ties on, so it cannot serve the keyset.
-- CONCURRENTLY keeps writers running while the indexes build, and cannot run inside a transaction.
-- transactional: false
-- depends: 0020_token_revocation_notice

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_contracts_owner_activity
    ON contracts (owner_id, last_activity_at DESC, id DESC);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_contracts_activity ON contracts (last_activity_at DESC, id DESC);
