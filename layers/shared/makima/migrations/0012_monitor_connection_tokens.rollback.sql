ALTER TABLE monitor_connections DROP CONSTRAINT IF EXISTS monitor_connections_token_id_fkey;
ALTER TABLE monitor_connections DROP COLUMN IF EXISTS token_id;
