-- LangGraph checkpoints (issue 18): what makima.integrations.langgraph's savers store through
-- /api/v1/checkpoints. Every row belongs to an owner (the token's user): one owner's thread ids never
-- meet another's, and every statement on these tables names the owner first, which is also the first
-- column of every index.
--
-- A checkpoint is stored whole, serialised by the client's serde (LangGraph's JsonPlusSerializer by
-- default) as (type, bytes): the server never reads it, and a checkpoint read back is the one that was
-- put, channel values included. Its metadata is JSON (the list's filter matches it with @>).
--
-- Safe while the API serves writes: two new tables, referenced by nothing; their indexes are built on
-- the empty tables in the same transaction.
-- depends: 0021_contract_activity_sort_indexes

CREATE TABLE checkpoints (
    owner_id              uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    thread_id             text NOT NULL,
    checkpoint_ns         text NOT NULL DEFAULT '',
    -- LangGraph's ids are uuid6 strings: ordering them as text orders the checkpoints in time.
    checkpoint_id         text NOT NULL,
    parent_checkpoint_id  text,
    type                  text NOT NULL,
    checkpoint            bytea NOT NULL,
    metadata              jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- octet_length(checkpoint) + the metadata's, kept so the size cap on a checkpoint with its pending
    -- writes, and the byte budget of a list page, need not read the blobs.
    bytes                 integer NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, thread_id, checkpoint_ns, checkpoint_id)
);
-- A list of all the owner's checkpoints (no thread given), newest first.
CREATE INDEX idx_checkpoints_owner_id ON checkpoints (owner_id, checkpoint_id DESC, thread_id DESC, checkpoint_ns DESC);
-- delete_for_runs: the checkpoints of given runs.
CREATE INDEX idx_checkpoints_run ON checkpoints (owner_id, (metadata ->> 'run_id')) WHERE metadata ? 'run_id';

CREATE TABLE checkpoint_writes (
    owner_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    thread_id      text NOT NULL,
    checkpoint_ns  text NOT NULL DEFAULT '',
    checkpoint_id  text NOT NULL,
    task_id        text NOT NULL,
    task_path      text NOT NULL DEFAULT '',
    -- A write's position in its task's list; LangGraph's special writes (ERROR, INTERRUPT, ...) take
    -- fixed negative indexes (WRITES_IDX_MAP), so a retried task replaces its special write.
    idx            integer NOT NULL,
    channel        text NOT NULL,
    type           text NOT NULL,
    value          bytea NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
);
