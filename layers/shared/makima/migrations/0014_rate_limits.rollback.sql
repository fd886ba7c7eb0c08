-- depends: 0013b_metrics_token_kind_validate
DROP TABLE IF EXISTS rate_limit_buckets;
