SET LOCAL lock_timeout = '500ms';
ALTER TABLE contracts DROP COLUMN IF EXISTS version_xact;
