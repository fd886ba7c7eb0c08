DROP INDEX IF EXISTS idx_contract_events_type;
DROP TABLE IF EXISTS stale_reports;
DROP TABLE IF EXISTS monitor_connections;
