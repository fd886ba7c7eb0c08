-- Counters behind /metrics are counts of event types: an index-only scan instead of the whole log.
-- Built CONCURRENTLY: the event log is written by every change, and must keep being written.
-- transactional: false
-- depends: 0010_supervisor_lifecycle

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_contract_events_type ON contract_events (type, id);
