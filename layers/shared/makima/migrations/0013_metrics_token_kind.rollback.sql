-- Code from before metrics tokens would read one as its owner's full role (an admin's), so they go
-- with the kind: deleted (revoking would keep them resolvable by that code), then the old check back.
DELETE FROM api_tokens WHERE kind = 'metrics';
ALTER TABLE api_tokens
    DROP CONSTRAINT api_tokens_kind_check,
    ADD CONSTRAINT api_tokens_kind_check CHECK (kind IN ('user', 'daemon')) NOT VALID;
ALTER TABLE api_tokens VALIDATE CONSTRAINT api_tokens_kind_check;
