-- A third token kind, metrics (a Prometheus scrape credential: GET /metrics and nothing else), so the
-- kind check widens. Online: the old check is dropped and the new one added NOT VALID in one ALTER (a
-- catalog change under a brief ACCESS EXCLUSIVE lock, bounded by lock_timeout; no scan); the next
-- migration validates it under SHARE UPDATE EXCLUSIVE, which token writes do not wait for.
-- depends: 0012b_monitor_connection_tokens_index

ALTER TABLE api_tokens
    DROP CONSTRAINT api_tokens_kind_check,
    ADD CONSTRAINT api_tokens_kind_check CHECK (kind IN ('user', 'daemon', 'metrics')) NOT VALID;
