-- Back to 0002b's state: nullable columns guarded by the NOT VALID checks (re-applying 0002c
-- validates them again before SET NOT NULL, so it never scans under the exclusive lock).
ALTER TABLE contracts
    ALTER COLUMN last_activity_at DROP NOT NULL,
    ALTER COLUMN status_changed_at DROP NOT NULL,
    ADD CONSTRAINT contracts_last_activity_at_not_null CHECK (last_activity_at IS NOT NULL) NOT VALID,
    ADD CONSTRAINT contracts_status_changed_at_not_null CHECK (status_changed_at IS NOT NULL) NOT VALID;
