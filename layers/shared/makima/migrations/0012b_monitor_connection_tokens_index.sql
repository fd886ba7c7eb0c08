-- The connections of a token (revocation closes them), built CONCURRENTLY; then the foreign key of
-- 0012 is validated (SHARE UPDATE EXCLUSIVE: writers go on). The rollback undoes the index only:
-- yoyo pairs each rollback statement with an apply statement, and a validation has nothing to undo.
-- transactional: false
-- depends: 0012_monitor_connection_tokens

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_monitor_connections_token ON monitor_connections (token_id);
ALTER TABLE monitor_connections VALIDATE CONSTRAINT monitor_connections_token_id_fkey;
