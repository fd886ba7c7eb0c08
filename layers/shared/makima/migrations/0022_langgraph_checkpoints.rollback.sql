-- depends: 0021_contract_activity_sort_indexes
DROP TABLE IF EXISTS checkpoint_writes;
DROP TABLE IF EXISTS checkpoints;
