-- Validate the widened kind check of 0013: a scan of api_tokens under SHARE UPDATE EXCLUSIVE (token
-- inserts, revocations and last_used_at writes go on meanwhile). Every existing row is user or daemon.
-- depends: 0013_metrics_token_kind

ALTER TABLE api_tokens VALIDATE CONSTRAINT api_tokens_kind_check;
