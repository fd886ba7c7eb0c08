-- makima contracts: the base schema, as it stood before the enhanced status tracking of seed Task 1.4
-- (0002 adds that). Later migrations only add (zero-downtime).

CREATE TABLE users (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL UNIQUE CHECK (char_length(name) BETWEEN 1 AND 100),
    role        text NOT NULL CHECK (role IN ('user', 'admin')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Tokens are stored as SHA-256 digests: they are 256-bit random secrets, so a slow KDF adds nothing,
-- and a digest lets the authorizer look a token up by an index in one round trip.
CREATE TABLE api_tokens (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name          text NOT NULL DEFAULT '' CHECK (char_length(name) <= 100),
    kind          text NOT NULL CHECK (kind IN ('user', 'daemon')),
    token_hash    bytea NOT NULL UNIQUE,
    prefix        text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX idx_api_tokens_user ON api_tokens (user_id);

CREATE TABLE contract_types (
    name         text PRIMARY KEY,
    description  text NOT NULL DEFAULT '',
    version      integer NOT NULL DEFAULT 1,
    definition   jsonb NOT NULL,
    builtin      boolean NOT NULL DEFAULT false,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE contracts (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id           uuid NOT NULL REFERENCES users (id),
    name               text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    description        text NOT NULL DEFAULT '',
    contract_type      text NOT NULL REFERENCES contract_types (name),
    phase              text NOT NULL,
    -- The original three statuses; 0002 adds the rest.
    status             text NOT NULL DEFAULT 'active'
                           CONSTRAINT contracts_status_check
                           CHECK (status IN ('active', 'completed', 'archived')),
    version            integer NOT NULL DEFAULT 1,
    phase_guard        boolean NOT NULL DEFAULT false,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
-- Listing is keyset-paginated by (created_at, id) within an owner.
CREATE INDEX idx_contracts_owner_created ON contracts (owner_id, created_at DESC, id DESC);
CREATE INDEX idx_contracts_created ON contracts (created_at DESC, id DESC);

CREATE TABLE completed_deliverables (
    contract_id     uuid NOT NULL REFERENCES contracts (id) ON DELETE CASCADE,
    phase           text NOT NULL,
    deliverable_id  text NOT NULL,
    completed_by    text NOT NULL,
    completed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (contract_id, phase, deliverable_id)
);

CREATE TABLE tasks (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    contract_id    uuid NOT NULL REFERENCES contracts (id) ON DELETE CASCADE,
    name           text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    status         text NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    is_supervisor  boolean NOT NULL DEFAULT false,
    daemon         text,
    error          text,
    created_by     text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    started_at     timestamptz,
    finished_at    timestamptz
);
CREATE INDEX idx_tasks_contract ON tasks (contract_id, created_at);
CREATE INDEX idx_tasks_status ON tasks (status);
-- At most one live supervisor per contract, enforced by the database rather than by callers.
CREATE UNIQUE INDEX uq_tasks_live_supervisor ON tasks (contract_id)
    WHERE is_supervisor AND status IN ('pending', 'running');

CREATE TABLE questions (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    contract_id    uuid NOT NULL REFERENCES contracts (id) ON DELETE CASCADE,
    task_id        uuid REFERENCES tasks (id) ON DELETE SET NULL,
    question       text NOT NULL CHECK (char_length(question) BETWEEN 1 AND 10000),
    question_type  text NOT NULL DEFAULT 'text',
    options        jsonb NOT NULL DEFAULT '[]'::jsonb,
    status         text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'answered')),
    answer         text,
    asked_by       text NOT NULL,
    answered_by    text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    answered_at    timestamptz,
    delivered_at   timestamptz
);
CREATE INDEX idx_questions_contract ON questions (contract_id, created_at);

CREATE TABLE chat_messages (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    contract_id  uuid NOT NULL REFERENCES contracts (id) ON DELETE CASCADE,
    role         text NOT NULL CHECK (role IN ('user', 'supervisor', 'system')),
    author       text NOT NULL,
    content      text NOT NULL CHECK (char_length(content) BETWEEN 1 AND 100000),
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_chat_messages_contract ON chat_messages (contract_id, id);

-- The event log and the transactional outbox in one table: a change and its event commit together;
-- published_at is set once the event has been handed to the bus. No foreign key on contract_id, so
-- the record of a deleted contract outlives it.
CREATE TABLE contract_events (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    contract_id   uuid,
    owner_id      uuid,
    type          text NOT NULL,
    payload       jsonb NOT NULL DEFAULT '{}'::jsonb,
    actor         text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX idx_contract_events_contract ON contract_events (contract_id, id);
CREATE INDEX idx_contract_events_owner ON contract_events (owner_id, id);
CREATE INDEX idx_contract_events_unpublished ON contract_events (id) WHERE published_at IS NULL;
