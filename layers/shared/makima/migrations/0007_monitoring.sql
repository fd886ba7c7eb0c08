-- Monitoring (seed phase 5): WebSocket monitor connections and their filters, and stale episodes.
-- Online: new tables only, in one short transaction (the foreign keys lock users and contracts in
-- SHARE ROW EXCLUSIVE mode until it commits). The index the metrics counters read the event log
-- through is built CONCURRENTLY in 0011.
-- depends: 0006_heartbeat_hot_updates

-- One row per open monitor connection, on AWS (API Gateway connection ids) and locally alike, so one
-- broadcaster serves both. owner_id NULL with is_admin: an admin sees every contract.
CREATE TABLE IF NOT EXISTS monitor_connections (
    connection_id       text PRIMARY KEY,
    owner_id            uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    is_admin            boolean NOT NULL DEFAULT false,
    -- where to post: the management API endpoint on AWS, 'local:<stack id>' for the local stack
    endpoint            text NOT NULL,
    -- the filter (seed 5.1); NULL lists mean "any"
    contract_ids        uuid[],
    statuses            text[],
    include_stale       boolean NOT NULL DEFAULT true,
    include_heartbeats  boolean NOT NULL DEFAULT false,
    -- no live events while true: from connect until the first filter message, and while a
    -- reconnecting monitor is replaying what it missed (db/monitor.py sets it on insert)
    resuming            boolean NOT NULL DEFAULT false,
    connected_at        timestamptz NOT NULL DEFAULT now(),
    filter_set_at       timestamptz
);
CREATE INDEX IF NOT EXISTS idx_monitor_connections_owner ON monitor_connections (owner_id);
CREATE INDEX IF NOT EXISTS idx_monitor_connections_endpoint ON monitor_connections (endpoint);

-- The stale episode each contract was last reported for: StaleDetected is emitted once per episode,
-- and a new episode starts when the contract's activity moves past the one reported.
CREATE TABLE IF NOT EXISTS stale_reports (
    contract_id       uuid PRIMARY KEY REFERENCES contracts (id) ON DELETE CASCADE,
    last_activity_at  timestamptz NOT NULL,
    event_id          bigint,
    reported_at       timestamptz NOT NULL DEFAULT now()
);
