ALTER TABLE contracts
    DROP CONSTRAINT IF EXISTS contracts_status_changed_at_not_null,
    DROP CONSTRAINT IF EXISTS contracts_last_activity_at_not_null;
