-- depends: 0012b_monitor_connection_tokens_index
DROP TABLE IF EXISTS rate_limit_buckets;
