-- Links across tenants that the API allowed before issue 12 (defect 5 and its neighbour) are undone:
-- a worktree a daemon reported against another owner's task, and a supervisor task an admin put on
-- another owner's daemon. The API refuses both now; rows made before that would otherwise keep
-- telling a daemon about a contract its token cannot see, and keep its path in that contract's view.
-- Online: plain UPDATEs of the few rows concerned (row locks only); idempotent, so a retry is safe.
-- depends: 0014_rate_limits

UPDATE worktrees w
   SET task_id = NULL, contract_id = NULL
  FROM daemons d, contracts c
 WHERE d.id = w.daemon_id AND c.id = w.contract_id AND c.owner_id <> d.owner_id;

UPDATE tasks t
   SET daemon_id = NULL
  FROM daemons d, contracts c
 WHERE d.id = t.daemon_id AND c.id = t.contract_id AND c.owner_id <> d.owner_id;

UPDATE supervisor_states s
   SET daemon_id = NULL
  FROM daemons d, contracts c
 WHERE d.id = s.daemon_id AND c.id = s.contract_id AND c.owner_id <> d.owner_id;
