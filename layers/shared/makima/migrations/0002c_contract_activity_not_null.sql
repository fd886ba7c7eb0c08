-- Validate the checks, then NOT NULL, in one transaction whose only long part takes no lock writers
-- wait for: VALIDATE CONSTRAINT scans contracts under SHARE UPDATE EXCLUSIVE (inserts and updates go on).
-- SET NOT NULL then needs ACCESS EXCLUSIVE, but finds the validated check that proves the column has
-- no NULL (PostgreSQL 12+) and skips its own scan: the exclusive lock lasts a few catalog updates. The
-- checks, redundant with NOT NULL, go. The widened status check of 0002 is validated here too.
-- depends: 0002b_contract_activity_checks

ALTER TABLE contracts VALIDATE CONSTRAINT contracts_status_check;
ALTER TABLE contracts VALIDATE CONSTRAINT contracts_last_activity_at_not_null;
ALTER TABLE contracts VALIDATE CONSTRAINT contracts_status_changed_at_not_null;
ALTER TABLE contracts
    ALTER COLUMN last_activity_at SET NOT NULL,
    ALTER COLUMN status_changed_at SET NOT NULL,
    DROP CONSTRAINT contracts_last_activity_at_not_null,
    DROP CONSTRAINT contracts_status_changed_at_not_null;
