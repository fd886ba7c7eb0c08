DROP TABLE IF EXISTS stale_reports;
DROP TABLE IF EXISTS monitor_connections;
