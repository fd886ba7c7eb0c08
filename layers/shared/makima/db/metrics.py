"""SQL for the Prometheus metrics (``GET /metrics``): one statement per scrape, whole-fleet counts.

Every value is read from the database, never from a process: behind API Gateway each scrape may land
on a different Lambda container, and in-process counters would each hold a fragment (and reset on
every cold start). One statement is one snapshot, so the values of a scrape agree with each other
without an explicit transaction.

What each subquery reads, and why it stays cheap as the tables grow:

- statuses: ``GROUP BY status`` over ``contracts`` (``idx_contracts_status``);
- stale: the partial index ``idx_contracts_stale`` (its predicate is repeated here word for word, or
  the planner could not use it);
- event counters: ``count(*)`` of one event type is an index-only scan of ``idx_contract_events_type``
  (``(type, id)``, migration 0007): the append-only log's visibility map stays all-visible, so the heap
  is not read. The batch counter reads ``payload->>'operation'`` and so visits the heap, but only for
  the (rare) ``batch_operation`` rows the same index finds;
- heartbeats: ``sum(heartbeat_count)`` over ``supervisor_states`` (one row per supervisor); heartbeats
  are not in the event log (they would flood it), the ingest statement counts them per supervisor;
- offsets: every counter adds its row(s) of ``metric_counter_offsets`` (a primary-key lookup): what
  deleted rows had counted, added there by triggers in the deleting transaction (migration 0009). So a
  counter never goes down when archived contracts are deleted (with their events and supervisors),
  which Prometheus would read as a reset; and since the scrape is one statement, it sees a delete and
  its offset together or not at all.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from makima.db.connection import Conn

SNAPSHOT_SQL = """
WITH offsets AS (SELECT counter, label, value FROM metric_counter_offsets)
SELECT
  (SELECT coalesce(jsonb_object_agg(s.status, s.n), '{}'::jsonb)
     FROM (SELECT status, count(*) AS n FROM contracts GROUP BY status) s) AS contracts_by_status,
  (SELECT count(*) FROM contracts
    WHERE status NOT IN ('completed', 'failed', 'archived')
      AND last_activity_at < now() - %(stale_threshold)s) AS contracts_stale,
  (SELECT count(*) FROM contract_events WHERE type = 'phase_changed')
    + (SELECT coalesce(sum(value), 0) FROM offsets WHERE counter = 'phase_transitions') AS phase_transitions,
  (SELECT count(*) FROM contract_events WHERE type = 'completion_detected')
    + (SELECT coalesce(sum(value), 0) FROM offsets WHERE counter = 'completion_detections') AS completion_detections,
  (SELECT count(*) FROM contract_events WHERE type = 'supervisor_restored')
    + (SELECT coalesce(sum(value), 0) FROM offsets WHERE counter = 'supervisor_restarts') AS supervisor_restarts,
  (SELECT coalesce(sum(heartbeat_count), 0)::bigint FROM supervisor_states)
    + (SELECT coalesce(sum(value), 0) FROM offsets WHERE counter = 'supervisor_heartbeats') AS supervisor_heartbeats,
  (SELECT coalesce(jsonb_object_agg(b.operation, b.n), '{}'::jsonb)
     FROM (SELECT operation, sum(n) AS n
             FROM (SELECT coalesce(payload->>'operation', 'unknown') AS operation, count(*) AS n
                     FROM contract_events WHERE type = 'batch_operation'
                    GROUP BY 1
                   UNION ALL
                   SELECT label, value FROM offsets WHERE counter = 'batch_operations') live_and_gone
            GROUP BY operation) b) AS batch_operations
"""


def snapshot(conn: Conn, stale_threshold: timedelta) -> dict[str, Any]:
    """Every metric's raw value in one round trip: counts as ints, labelled ones as ``{label: count}``."""
    row = conn.execute(SNAPSHOT_SQL, {"stale_threshold": stale_threshold}).fetchone()
    assert row is not None
    return {
        "contracts_by_status": {str(k): int(v) for k, v in row["contracts_by_status"].items()},
        "contracts_stale": int(row["contracts_stale"]),
        "phase_transitions": int(row["phase_transitions"]),
        "completion_detections": int(row["completion_detections"]),
        "supervisor_restarts": int(row["supervisor_restarts"]),
        "supervisor_heartbeats": int(row["supervisor_heartbeats"]),
        "batch_operations": {str(k): int(v) for k, v in row["batch_operations"].items()},
    }
