SET LOCAL lock_timeout = '2s';
ALTER TABLE contracts DROP COLUMN IF EXISTS version_xact;
