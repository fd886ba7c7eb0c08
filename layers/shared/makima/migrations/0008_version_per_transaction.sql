-- One request moves a contract's version by exactly one, whatever it changes on the way (a confirmed
-- phase change that also leaves waiting_for_input, an auto-advance chain, the completion flow, a batch
-- in savepoints). Every UPDATE that bumps the version records the transaction that did it and adds
-- nothing when that transaction bumped it already (db/contracts.py: _BUMP_VERSION).
-- pg_current_xact_id() is the top-level transaction id, the same inside a savepoint.
-- Safe while the API serves writes: a nullable column without a default is a catalog change only (no
-- table rewrite, no scan). Its ACCESS EXCLUSIVE lock is held for an instant, but writers queue behind it
-- while it waits for the transactions in flight: lock_timeout bounds that wait (and so theirs) to
-- 500 ms; under a transaction that long the migration fails instead, and the deploy is run again.
-- depends: 0007_monitoring

SET LOCAL lock_timeout = '500ms';
ALTER TABLE contracts ADD COLUMN IF NOT EXISTS version_xact xid8;
