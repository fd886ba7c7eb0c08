-- Seed Task 2.3: the phase a task belongs to (phase gates count the tasks of the current phase).
-- Online: a catalog change to tasks, in its own short transaction.
-- depends: 0003_auto_complete_settings

-- NULL for tasks spawned before this migration: gates ignore them rather than guess their phase.
ALTER TABLE tasks ADD COLUMN IF NOT EXISTS phase text;
