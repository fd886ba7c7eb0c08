DROP TABLE IF EXISTS worktrees;
DROP TABLE IF EXISTS supervisor_heartbeats;
DROP TABLE IF EXISTS supervisor_conversation;
DROP TABLE IF EXISTS supervisor_states;
ALTER TABLE tasks DROP COLUMN IF EXISTS daemon_id;
DROP TABLE IF EXISTS daemons;
