-- Issue 13 (robustness): a resuming monitor's mark carries a deadline. The broadcaster skips a
-- connection while it is `resuming`; a replay killed on the way (the Lambda's 29 s timeout, a crash)
-- used to leave the mark set for good, and the connection got nothing ever after. Past
-- `resuming_until` the broadcaster treats the connection as live. NULL: no deadline (a new connection
-- that has not sent its first filter yet, which must get nothing until then).
--
-- Online: a nullable column without a default is a catalogue change (a brief ACCESS EXCLUSIVE lock,
-- under migrate's lock_timeout), no rewrite.
-- depends: 0016_supervisor_conversation_window

ALTER TABLE monitor_connections ADD COLUMN IF NOT EXISTS resuming_until timestamptz;
