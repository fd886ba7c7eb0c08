-- Per-token request budgets (issue 12, defect 7): one row per token that has made a request, shared by
-- every process serving it (makima.db.rate_limits). Each process leases a slice of the token's budget
-- from its row with one upsert and spends it locally, so the row sees one write per slice, not per
-- request.
--
-- Safe while the API serves writes: a new table, referenced by nothing and referencing nothing (no
-- lock on api_tokens). A row of a revoked token stays until someone deletes it: a few dozen bytes.
-- depends: 0013b_metrics_token_kind_validate

CREATE TABLE rate_limit_buckets (
    -- The token's id (api_tokens.id); the user's id for a principal that came without one.
    subject     uuid PRIMARY KEY,
    -- The bucket as a "theoretical arrival time" (GCRA): the moment it would be full again if nothing
    -- more were spent. The budget left at time t is burst - (tat - t) * per_second.
    tat         timestamptz NOT NULL,
    -- What the last lease took, and when: read back by the lease's RETURNING (PostgreSQL 15 cannot
    -- return the old row), and what an operator looks at.
    last_grant  integer NOT NULL CHECK (last_grant >= 0),
    leased_at   timestamptz NOT NULL
) WITH (fillfactor = 70);  -- room on the page for HOT updates: every lease rewrites the row
