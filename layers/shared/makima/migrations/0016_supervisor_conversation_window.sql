-- Issue 13 (robustness), defect 2: the stored conversation of a supervisor is capped. Once its
-- messages outgrow [contracts] supervisor_conversation_max_bytes the oldest are compacted away
-- (services/supervisors.py: save_state); seqs stay absolute, so the supervisor appends where it did.
--   conversation_start: the seq of the first message kept (how many were compacted away); stored
--     messages are seq conversation_start .. conversation_length - 1.
--   conversation_bytes: the size of the messages kept (PostgreSQL's text of each), kept up to date by
--     every save; NULL (rows from before, or after a restore truncated the conversation) is computed
--     again by the next save.
--
-- Safe while the API serves writes: ADD COLUMN with a constant default, or none, changes only the
-- catalog (no table rewrite, no row written); the ACCESS EXCLUSIVE lock is held for a moment.
-- depends: 0014_rate_limits

ALTER TABLE supervisor_states
    ADD COLUMN conversation_start integer NOT NULL DEFAULT 0,
    ADD COLUMN conversation_bytes bigint;
