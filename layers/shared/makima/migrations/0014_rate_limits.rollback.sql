-- depends: 0011_contract_events_type_index
DROP TABLE IF EXISTS rate_limit_buckets;
