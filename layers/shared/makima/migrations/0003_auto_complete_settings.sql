-- Seed Task 2.3: per-contract auto-completion and when completion was detected. The phase a task
-- belongs to is 0003b, the indexes 0003c.
-- Online: catalog changes to one table, in one short transaction. One table per transaction: locking
-- contracts and tasks in one would deadlock with a writer that locks them in the other order (a task
-- insert's foreign key check locks its contract), and a lock timeout would then retry it again and again.
-- depends: 0002d_enhanced_contract_status_indexes

-- A constant default is stored in the catalog (PostgreSQL 11+): no table rewrite, and NOT NULL needs
-- no scan (every existing row reads the default).
ALTER TABLE contracts
    ADD COLUMN IF NOT EXISTS auto_complete_enabled boolean NOT NULL DEFAULT true,
    ADD COLUMN IF NOT EXISTS completion_detected_at timestamptz;
