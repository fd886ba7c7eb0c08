-- depends: 0019_idempotency
DROP TRIGGER IF EXISTS api_tokens_deleted_notice ON api_tokens;
DROP TRIGGER IF EXISTS api_tokens_revoked_notice ON api_tokens;
DROP FUNCTION IF EXISTS makima_token_revoked_notice();
