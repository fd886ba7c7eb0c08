-- The first step of making the activity columns NOT NULL without scanning contracts under an
-- exclusive lock: CHECK constraints added NOT VALID (a catalog change; new writes are checked, the
-- existing rows are not). Only once the backfill has finished: before it, an update of a row not yet
-- backfilled would fail the check. makima.db.migrate runs the backfill named below to its end first.
-- backfill: contract_activity
-- depends: 0002_enhanced_contract_status

ALTER TABLE contracts
    ADD CONSTRAINT contracts_last_activity_at_not_null CHECK (last_activity_at IS NOT NULL) NOT VALID,
    ADD CONSTRAINT contracts_status_changed_at_not_null CHECK (status_changed_at IS NOT NULL) NOT VALID;
