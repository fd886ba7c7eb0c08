ALTER TABLE monitor_connections DROP COLUMN IF EXISTS resuming_until;
