-- Issue 13 (robustness): a monitor's replay filters in SQL (db/monitor.py: events_after). A status
-- filter matches events of contracts now in those statuses (idx_contracts_status, then
-- idx_contract_events_contract) and status changes from or to them: this index finds those without
-- reading every status change of the log, so a resume whose filter matches nothing costs two index
-- probes, not a pass over the log. Built CONCURRENTLY: the event log must keep being written.
-- transactional: false
-- depends: 0017_monitor_replay_deadline

CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_contract_events_status_moves ON contract_events
    USING gin ((ARRAY[payload ->> 'old_status', payload ->> 'new_status']))
    WHERE type = 'status_changed';
