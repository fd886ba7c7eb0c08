-- A NOTIFY on the revocation of a token (issue 15): the local stack keeps the principals of the tokens it
-- has seen (services/principal_cache.py) instead of looking the token up on every request, and forgets a
-- token as this notice reaches its listener (local/sync_listener.py). A trigger, not the revoking
-- statement, so that every way a token is revoked is heard: the API, another process, an operator's
-- UPDATE or DELETE. The notice goes out when the revoking transaction commits, never before; the payload is the
-- token's id. Nobody listens on AWS (the authorizer carries the principal there): the notice is dropped.
--
-- Safe while the API serves: a new function and a trigger on an UPDATE that is rare (revocations).
-- depends: 0019_idempotency

CREATE FUNCTION makima_token_revoked_notice() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('makima_token_revoked', OLD.id::text);
    ELSE
        PERFORM pg_notify('makima_token_revoked', NEW.id::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER api_tokens_revoked_notice
    AFTER UPDATE OF revoked_at ON api_tokens
    FOR EACH ROW
    WHEN (NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS DISTINCT FROM NEW.revoked_at)
    EXECUTE FUNCTION makima_token_revoked_notice();

-- A token deleted (an operator's DELETE; the API never deletes one) is gone for the cache too.
CREATE TRIGGER api_tokens_deleted_notice
    AFTER DELETE ON api_tokens
    FOR EACH ROW
    EXECUTE FUNCTION makima_token_revoked_notice();
