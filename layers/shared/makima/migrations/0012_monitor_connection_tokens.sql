-- Each monitor connection records the token it was opened with (issue 12): revoking that token must
-- close the connection and stop everything sent on it, and the token was known only at the handshake.
-- Online: a nullable column without a default is a catalog change, and the foreign key is added
-- NOT VALID (no scan under the lock; it holds for every row written from now on). 0012b validates it
-- and builds the index without blocking writers. Rows from before have no token: the monitor treats
-- them as unauthorised and closes them (they reconnect and record their token).
-- depends: 0011_contract_events_type_index

ALTER TABLE monitor_connections ADD COLUMN IF NOT EXISTS token_id uuid;
ALTER TABLE monitor_connections
    ADD CONSTRAINT monitor_connections_token_id_fkey
    FOREIGN KEY (token_id) REFERENCES api_tokens (id) ON DELETE CASCADE NOT VALID;
