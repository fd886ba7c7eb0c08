-- Idempotency records (issue 13, defect 7): what a creating POST sent with an Idempotency-Key answered,
-- so a retry of it (the SDK resends a POST on 503) replays the answer instead of creating twice. The
-- rows are Powertools Idempotency's records (makima.api.idempotency_store, a PostgreSQL persistence
-- layer): INPROGRESS while the first request runs, COMPLETED with its answer once it committed. The
-- COMPLETED update commits in the same transaction as the request's own writes.
--
-- Safe while the API serves writes: a new table, referenced by nothing and referencing nothing; its
-- index is built on the empty table in the same transaction. Rows expire (expires_at); every new claim
-- deletes a few expired ones, so the table holds about one expiry period of keys.
-- depends: 0017b_contract_events_status_moves_index

CREATE TABLE idempotency_records (
    -- Powertools' key: "makima#<sha256 of {user, route, Idempotency-Key}>": a key is scoped per user
    -- and per route (two users, or two routes, never share a record).
    idempotency_key         text PRIMARY KEY,
    -- Who and where, in the clear, for an operator (the key above is a digest of them and the header).
    user_id                 uuid NOT NULL,
    route                   text NOT NULL,
    status                  text NOT NULL CHECK (status IN ('INPROGRESS', 'COMPLETED')),
    -- sha256 of the canonical JSON of {method, path, query, body}: the same key with another request
    -- is refused (422 IDEMPOTENCY_KEY_REUSED).
    payload_hash            text NOT NULL,
    -- The request holding the record while INPROGRESS: only it may complete or release it.
    claim_id                uuid NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),
    expires_at              timestamptz NOT NULL,
    -- Past this an INPROGRESS record is abandoned (its request died before committing) and may be
    -- taken over by a retry.
    in_progress_expires_at  timestamptz,
    -- The stored answer (COMPLETED only): replayed as is.
    response_status         integer,
    response_headers        jsonb,
    response_body           jsonb,
    CHECK (status = 'INPROGRESS' OR response_status IS NOT NULL)
);

CREATE INDEX idempotency_records_expires_at ON idempotency_records (expires_at);
