ALTER TABLE contracts
    DROP COLUMN IF EXISTS completion_detected_at,
    DROP COLUMN IF EXISTS auto_complete_enabled;
