-- depends: 0014_rate_limits
DROP TABLE IF EXISTS idempotency_records;
