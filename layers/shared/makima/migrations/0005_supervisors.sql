-- Seed Phase 3: daemons, supervisor state (latest heartbeat + persisted state), conversation history,
-- heartbeat history partitioned by time, and the worktrees daemons hold.
-- Online: new tables (their indexes are built on empty tables) and a new nullable column on tasks, in
-- one short transaction of catalog changes; the index on tasks is built CONCURRENTLY in 0005b. The
-- foreign keys to existing tables lock them (SHARE ROW EXCLUSIVE) only until this commits, and the
-- new column's foreign key checks nothing: every row holds NULL.
-- depends: 0004_live_contract_indexes

-- A daemon is a supervisor host, registered by a daemon token, live while it heartbeats.
CREATE TABLE daemons (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id           uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name               text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    hostname           text NOT NULL DEFAULT '',
    capacity           integer NOT NULL DEFAULT 1 CHECK (capacity BETWEEN 0 AND 10000),
    status             text NOT NULL DEFAULT 'live' CHECK (status IN ('live', 'dead')),
    registered_at      timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner_id, name)
);
CREATE INDEX idx_daemons_live ON daemons (last_heartbeat_at) WHERE status = 'live';

ALTER TABLE tasks ADD COLUMN IF NOT EXISTS daemon_id uuid REFERENCES daemons (id) ON DELETE SET NULL;

-- One row per supervisor task: its latest heartbeat (the hot, small part) and its persisted state.
CREATE TABLE supervisor_states (
    task_id               uuid PRIMARY KEY REFERENCES tasks (id) ON DELETE CASCADE,
    contract_id           uuid NOT NULL REFERENCES contracts (id) ON DELETE CASCADE,
    daemon_id             uuid REFERENCES daemons (id) ON DELETE SET NULL,
    state                 text NOT NULL DEFAULT 'initializing' CHECK (state IN (
                              'initializing', 'idle', 'working', 'waiting_for_user', 'waiting_for_tasks',
                              'blocked', 'completed', 'failed', 'interrupted')),
    phase                 text NOT NULL,
    current_activity      text NOT NULL DEFAULT '',
    progress              integer NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    pending_task_ids      uuid[] NOT NULL DEFAULT '{}',
    last_heartbeat_at     timestamptz,
    heartbeat_count       bigint NOT NULL DEFAULT 0,
    -- persisted state (seed 3.3)
    pending_questions     jsonb NOT NULL DEFAULT '[]'::jsonb,
    spawned_task_ids      uuid[] NOT NULL DEFAULT '{}',
    waiting_on_task_ids   uuid[] NOT NULL DEFAULT '{}',
    conversation_length   integer NOT NULL DEFAULT 0,
    last_checkpoint       jsonb,
    error                 text,
    last_save_point       text,
    -- zombie protection: a restore starts a new generation; saves of an older one are refused
    generation            integer NOT NULL DEFAULT 1,
    save_seq              bigint NOT NULL DEFAULT 0,
    -- requests the next heartbeat answer carries (the daemon needs no inbound connection)
    sync_requested_at     timestamptz,
    sync_delivered_at     timestamptz,
    restart_requested_at  timestamptz,
    dead_at               timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_supervisor_states_contract ON supervisor_states (contract_id);
-- The timeout detector looks only at supervisors still believed alive.
CREATE INDEX idx_supervisor_states_alive ON supervisor_states (last_heartbeat_at) WHERE dead_at IS NULL;

-- Conversation history grows by appending numbered messages, never by rewriting a document.
CREATE TABLE supervisor_conversation (
    task_id     uuid NOT NULL REFERENCES supervisor_states (task_id) ON DELETE CASCADE,
    seq         integer NOT NULL CHECK (seq >= 0),
    message     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, seq)
);

-- Heartbeat history: partitioned by hour on receipt time, so the 24-hour retention drops whole
-- partitions (a catalog change, independent of volume). No foreign keys: history outlives nothing it
-- must protect, and ingest stays one insert. Partitions are created ahead by makima.db.heartbeats.
CREATE TABLE supervisor_heartbeats (
    task_id           uuid NOT NULL,
    contract_id       uuid NOT NULL,
    state             text NOT NULL,
    phase             text NOT NULL,
    current_activity  text NOT NULL DEFAULT '',
    progress          smallint NOT NULL DEFAULT 0,
    pending_task_ids  uuid[] NOT NULL DEFAULT '{}',
    sent_at           timestamptz NOT NULL,
    received_at       timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (received_at);
CREATE INDEX idx_supervisor_heartbeats_task ON supervisor_heartbeats (task_id, received_at DESC);
-- Catches rows when maintenance has fallen behind, so ingest never fails for want of a partition.
CREATE TABLE supervisor_heartbeats_default PARTITION OF supervisor_heartbeats DEFAULT;

-- The git worktrees daemons hold for tasks.
CREATE TABLE worktrees (
    daemon_id     uuid NOT NULL REFERENCES daemons (id) ON DELETE CASCADE,
    path          text NOT NULL CHECK (char_length(path) BETWEEN 1 AND 4096),
    branch        text NOT NULL DEFAULT '',
    task_id       uuid REFERENCES tasks (id) ON DELETE SET NULL,
    contract_id   uuid REFERENCES contracts (id) ON DELETE SET NULL,
    state         text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'removal_requested', 'removed')),
    reported_at   timestamptz NOT NULL DEFAULT now(),
    requested_at  timestamptz,
    removed_at    timestamptz,
    PRIMARY KEY (daemon_id, path)
);
CREATE INDEX idx_worktrees_contract ON worktrees (contract_id) WHERE state <> 'removed';
