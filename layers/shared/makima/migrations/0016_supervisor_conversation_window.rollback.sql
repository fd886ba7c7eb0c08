-- depends: 0014_rate_limits
ALTER TABLE supervisor_states
    DROP COLUMN IF EXISTS conversation_bytes,
    DROP COLUMN IF EXISTS conversation_start;
