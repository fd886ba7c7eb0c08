"""SQL of the batched data backfills: filling a column that existing rows lack, without a long lock.

A backfill walks its table in primary-key order, ``size`` rows per call of ``step``, which the caller
runs in a transaction of its own: the batch's rows are locked (in key order, as every other multi-row
locker here locks contracts, so no deadlock) and written, and the walk's cursor is saved in the same
transaction, in ``backfills`` (migration 0002). So the walk is resumable (a run that stops - its time
budget, a crash, a deployment - is continued from the last committed batch by the next run, from
``makima db migrate`` or from the scheduled job alike), idempotent (only rows still lacking the value
are written, with the value they would have got), and concurrent runs take turns batch by batch on the
progress row's lock instead of doing the work twice.

Rows inserted after the backfill's migration get the column's default, so one pass over the key
range fills every row that needs it; ``finished_at`` then lets the migration that waits for it go
(``-- backfill: <name>`` in a migration's header, honoured by ``makima.db.migrate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from makima.db.connection import Conn

CONTRACT_ACTIVITY = "contract_activity"
# Rows per transaction: long enough to amortise the round trips, short enough that a writer waiting
# for one of the batch's row locks waits tens of milliseconds (about 50 ms per 1,000 contracts).
BATCH = 1_000

# Below every id the walk can meet: contract ids are random (v4) UUIDs, never the nil UUID.
_START = UUID(int=0)

# 0002's columns of the existing contracts, from the best evidence of activity they have: the last
# time the row changed. COALESCE keeps a value a writer has set meanwhile.
_CONTRACT_ACTIVITY_BATCH = """
WITH batch AS (
    SELECT id FROM contracts
     WHERE id > %(after)s
     ORDER BY id
     LIMIT %(size)s
       FOR NO KEY UPDATE
), filled AS (
    UPDATE contracts AS c
       SET last_activity_at = COALESCE(c.last_activity_at, c.updated_at),
           status_changed_at = COALESCE(c.status_changed_at, c.updated_at)
      FROM batch
     WHERE c.id = batch.id AND (c.last_activity_at IS NULL OR c.status_changed_at IS NULL)
    RETURNING c.id
)
SELECT (SELECT count(*) FROM batch) AS seen,
       (SELECT count(*) FROM filled) AS updated,
       (SELECT id FROM batch ORDER BY id DESC LIMIT 1) AS last_id
"""

CROSS_TENANT_LINKS = "cross_tenant_links"

# Links across tenants the API allowed before issue 12 (defect 5 and its neighbour), undone: a worktree
# a daemon reported against another owner's task, a supervisor task put on another owner's daemon. The
# API refuses both now, so one walk over the daemons (in key order) finds every such row there will
# ever be; a link within one owner is left alone, and a second pass writes nothing.
_CROSS_TENANT_LINKS_BATCH = """
WITH batch AS (
    SELECT id, owner_id FROM daemons
     WHERE id > %(after)s
     ORDER BY id
     LIMIT %(size)s
), worktrees_unlinked AS (
    UPDATE worktrees AS w
       SET task_id = NULL, contract_id = NULL
      FROM batch b, contracts c
     WHERE w.daemon_id = b.id AND c.id = w.contract_id AND c.owner_id <> b.owner_id
    RETURNING 1
), tasks_unlinked AS (
    UPDATE tasks AS t
       SET daemon_id = NULL
      FROM batch b, contracts c
     WHERE t.daemon_id = b.id AND c.id = t.contract_id AND c.owner_id <> b.owner_id
    RETURNING 1
), states_unlinked AS (
    UPDATE supervisor_states AS s
       SET daemon_id = NULL
      FROM batch b, contracts c
     WHERE s.daemon_id = b.id AND c.id = s.contract_id AND c.owner_id <> b.owner_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM batch) AS seen,
       (SELECT count(*) FROM worktrees_unlinked) + (SELECT count(*) FROM tasks_unlinked)
           + (SELECT count(*) FROM states_unlinked) AS updated,
       (SELECT id FROM batch ORDER BY id DESC LIMIT 1) AS last_id
"""

# The batch statement of each backfill, by name, and the table it needs (a schema rolled back before
# that table has nothing for it to do).
BATCHES = {CONTRACT_ACTIVITY: _CONTRACT_ACTIVITY_BATCH, CROSS_TENANT_LINKS: _CROSS_TENANT_LINKS_BATCH}
_NEEDS = {CONTRACT_ACTIVITY: "contracts", CROSS_TENANT_LINKS: "daemons"}


@dataclass(frozen=True, slots=True)
class Step:
    """One batch: rows walked, rows written, and whether the walk has reached the end of the table."""

    seen: int
    updated: int
    finished: bool


def available(conn: Conn, name: str = CONTRACT_ACTIVITY) -> bool:
    """False when the schema has no backfill bookkeeping (rolled back past 0002), or not the table
    backfill ``name`` walks: nothing to do."""
    row = conn.execute(
        "SELECT to_regclass('backfills') IS NOT NULL AND to_regclass(%s) IS NOT NULL AS present", (_NEEDS[name],)
    ).fetchone()
    return bool(row and row["present"])


def step(conn: Conn, name: str, *, size: int, now: datetime) -> Step:
    """Run the next batch of backfill ``name`` inside the caller's transaction and record it.

    A backfill already finished costs one primary-key lookup and writes nothing. Raises ``KeyError``
    for a name no backfill has."""
    batch_sql = BATCHES[name]
    conn.execute(
        """INSERT INTO backfills (name, started_at, updated_at) VALUES (%(name)s, %(now)s, %(now)s)
           ON CONFLICT (name) DO NOTHING""",
        {"name": name, "now": now},
    )
    progress = conn.execute(
        "SELECT last_id, finished_at FROM backfills WHERE name = %(name)s FOR UPDATE", {"name": name}
    ).fetchone()
    assert progress is not None  # inserted just above, and never deleted
    if progress["finished_at"] is not None:
        return Step(seen=0, updated=0, finished=True)
    row = conn.execute(batch_sql, {"after": progress["last_id"] or _START, "size": size}).fetchone()
    assert row is not None  # an aggregate row, always
    finished = row["seen"] < size
    conn.execute(
        """UPDATE backfills
              SET last_id = COALESCE(%(last_id)s, last_id), rows_updated = rows_updated + %(updated)s,
                  batches = batches + 1, updated_at = %(now)s,
                  finished_at = CASE WHEN %(finished)s THEN %(now)s::timestamptz END
            WHERE name = %(name)s""",
        {"name": name, "last_id": row["last_id"], "updated": row["updated"], "now": now, "finished": finished},
    )
    return Step(seen=int(row["seen"]), updated=int(row["updated"]), finished=finished)


def progress(conn: Conn, name: str) -> dict[str, Any] | None:
    """The bookkeeping row of backfill ``name`` (cursor, counts, times), or None before its first batch."""
    row = conn.execute(
        """SELECT name, last_id, rows_updated, batches, started_at, updated_at, finished_at
             FROM backfills WHERE name = %(name)s""",
        {"name": name},
    ).fetchone()
    return dict(row) if row else None
