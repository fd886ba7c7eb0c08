"""SQL for heartbeat ingest (the hottest path) and the hourly partitions of its history.

One heartbeat is one statement: data-modifying CTEs lock the supervisor row, update its latest state,
touch the contract's activity (at most every few seconds, to spare the contracts table), append the
history row, mark the sending daemon live, write the event of a supervisor whose state changed (or
that came back from the dead), and hand back what the answer needs. A late heartbeat (its supervisor
or contract finished, or it was sent before the supervisor's shutdown save) only goes to the history:
it changes no state, touches no activity and writes no event. A batch is the same statement over
``unnest``ed arrays (a single heartbeat's row comes from plain parameters instead). Being one
statement, it is its own transaction: the service runs it in autocommit, one round trip for a
heartbeat or a whole batch (BEGIN and COMMIT would be two more), and the event still commits with the
change it records (transactional outbox). A heartbeat that collects a sync request notifies
``SYNC_CHANNEL`` in that transaction (db/sync_notices.py).

Nearly every heartbeat is plain: a live supervisor, in the state it was in, nothing waiting for it. Those
go first to a smaller statement that does only what such a heartbeat needs (``_PLAIN_ONE``, and
``_PLAIN_MANY`` for a batch whose every heartbeat is plain) and writes nothing otherwise; the full
statement then takes the heartbeat or the whole batch.

The arrays travel in binary: psycopg's text array format quotes every element through a regular
expression, which cost about 1.6 ms of CPU per 100 heartbeats (tests/bench/bench_heartbeats.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, overload
from uuid import UUID

from makima.db import events as events_sql
from makima.db.connection import Conn
from makima.db.contracts import activity_stale
from makima.db.sync_notices import SYNC_CHANNEL

if TYPE_CHECKING:
    from makima.db.async_pool import AsyncConn

T = TypeVar("T")


def _compact(statement: str) -> str:
    """``statement`` without its indentation, blank lines and whole-line comments. psycopg converts a
    query's ``%(name)s`` placeholders once per text and caches the result only for texts of at most
    4,096 characters (``psycopg._queries.MAX_CACHED_STATEMENT_LENGTH``); above that it parses the text
    again with a regular expression on every execution. The commented ingest statement is 4,794: each
    heartbeat request paid that parse (about a tenth of its server CPU, issue 15). Nothing in it is a
    multi-line string literal, so the lines' leading spaces carry no meaning."""
    lines = (line.strip() for line in statement.splitlines())
    return "\n".join(line for line in lines if line and not line.startswith("--"))


# The heartbeats, as the rows of ``input``: a batch's as arrays, one per column, ``unnest``ed; a single
# heartbeat's as plain parameters (``_ONE``). Nine one-element arrays cost the server their binary dumps
# and PostgreSQL the unnest: about 0.09 ms of CPU of a single heartbeat's 1.3 ms (issue 15, "Change 25").
_MANY = _compact("""
WITH input AS (
    SELECT * FROM unnest(
        %(task_ids)b::uuid[], %(contract_ids)b::uuid[], %(states)b::text[], %(phases)b::text[],
        %(activities)b::text[], %(progresses)b::int[], %(pending)b::text[], %(sent)b::timestamptz[],
        %(generations)s::int[]
    ) WITH ORDINALITY AS i(task_id, contract_id, state, phase, activity, progress, pending, sent_at, generation, ord)
),""")
_ONE = _compact("""
WITH input AS (
    SELECT %(task_id)s::uuid AS task_id, %(contract_id)s::uuid AS contract_id, %(state)s::text AS state,
           %(phase)s::text AS phase, %(activity)s::text AS activity, %(progress)s::int AS progress,
           %(pending)s::text AS pending, %(sent)s::timestamptz AS sent_at, %(generation)s::int AS generation,
           1::bigint AS ord
),""")
# What the heartbeats do, the same for both.
_APPLY = _compact(f"""
prev AS (
    SELECT i.ord, s.task_id, s.contract_id, s.state AS old_state, s.dead_at, s.generation,
           s.sync_requested_at, s.restart_requested_at, c.owner_id,
           i.state, i.phase, i.activity, i.progress, i.pending::uuid[] AS pending, i.sent_at,
           (i.generation IS NOT NULL AND i.generation < s.generation) AS superseded,
           -- History only: a finished supervisor or contract is final, and a heartbeat sent before
           -- the supervisor's shutdown save is older news than that save.
           (s.state IN ('completed', 'failed') OR c.status IN ('completed', 'failed', 'archived')
            OR s.stopped_at IS NOT NULL AND i.sent_at <= s.stopped_at) AS late
      FROM input i
      JOIN supervisor_states s ON s.task_id = i.task_id AND s.contract_id = i.contract_id
      JOIN contracts c ON c.id = s.contract_id
     WHERE (%(owner)s::uuid IS NULL OR c.owner_id = %(owner)s)
     ORDER BY s.task_id, i.ord
       FOR UPDATE OF s
),
live AS (SELECT * FROM prev WHERE NOT superseded),
-- A batch may carry several heartbeats of one supervisor: all go to the history, the newest that is
-- not late is its state.
latest AS (
    SELECT DISTINCT ON (task_id) *, count(*) OVER (PARTITION BY task_id) AS n
      FROM live
     WHERE NOT late
     ORDER BY task_id, sent_at DESC, ord DESC
),
upd AS (
    UPDATE supervisor_states s
       SET state = l.state, phase = l.phase, current_activity = l.activity, progress = l.progress,
           pending_task_ids = l.pending, last_heartbeat_at = now(), heartbeat_count = s.heartbeat_count + l.n,
           dead_at = NULL, stopped_at = NULL,
           -- Not now() alone: a heartbeat that waited for the requester's row lock started before the
           -- request, and its delivery must not look older than what it delivered (a sync waiting
           -- for it would never see it).
           sync_delivered_at = CASE WHEN s.sync_requested_at IS NOT NULL
                                    THEN GREATEST(now(), s.sync_requested_at) ELSE s.sync_delivered_at END,
           sync_requested_at = NULL, restart_requested_at = NULL, updated_at = now()
      FROM latest l
     WHERE s.task_id = l.task_id
    RETURNING s.task_id
),
act AS (
    UPDATE contracts c SET last_activity_at = now()
     WHERE c.id IN (SELECT contract_id FROM latest)
       AND {activity_stale("c")}
    RETURNING c.id
),
hist AS (
    INSERT INTO supervisor_heartbeats
        (task_id, contract_id, state, phase, current_activity, progress, pending_task_ids, sent_at)
    SELECT task_id, contract_id, state, phase, activity, progress, pending, sent_at FROM live
    RETURNING task_id
),
-- The sending daemon is alive (only the caller's own daemon).
dmn AS (
    UPDATE daemons d SET last_heartbeat_at = now(), status = 'live'
     WHERE d.id = %(daemon)s::uuid AND (%(owner)s::uuid IS NULL OR d.owner_id = %(owner)s)
    RETURNING d.id
),
-- A new state, or a supervisor presumed dead that is back: its event, in the same transaction.
ev AS (
    INSERT INTO contract_events (contract_id, owner_id, type, payload, actor)
    SELECT l.contract_id, l.owner_id, 'supervisor_state_changed',
           jsonb_build_object(
               'contract_id', l.contract_id::text, 'supervisor_task_id', l.task_id::text,
               'old_state', l.old_state, 'new_state', l.state, 'recovered', l.dead_at IS NOT NULL
           ),
           %(actor)s
      FROM latest l
     WHERE l.dead_at IS NOT NULL OR l.old_state <> l.state
     ORDER BY l.task_id
    RETURNING id
),
-- A sync this heartbeat collected: wake whoever waits for it (services/sync_waits.py). NOTIFY is
-- delivered when the statement commits, so a woken waiter reads the delivery it was told of.
ntf AS (
    SELECT pg_notify('{SYNC_CHANNEL}', l.contract_id::text) FROM latest l WHERE l.sync_requested_at IS NOT NULL
)
SELECT p.ord, p.sent_at, p.task_id, p.contract_id, p.owner_id, p.old_state, p.state AS new_state,
       p.dead_at IS NOT NULL AS was_dead,
       p.superseded, p.late, p.generation,
       p.sync_requested_at IS NOT NULL AND NOT p.late AS sync_requested,
       p.restart_requested_at IS NOT NULL AND NOT p.late AS restart_requested,
       (SELECT count(*) FROM upd) AS updated, (SELECT count(*) FROM hist) AS appended,
       (SELECT count(*) FROM ntf) AS notified  -- referenced, or the CTE would not run
  FROM prev p
""")
_INGEST = _MANY + "\n" + _APPLY
_INGEST_ONE = _ONE + "\n" + _APPLY


def _plain_case(state: str, generation: str) -> str:
    """The SQL conditions, on ``s`` (the supervisor) and ``c`` (its contract), under which a heartbeat
    carrying ``state`` and ``generation`` (SQL expressions) is plain: of the owner's contract (``owner``
    parameter), the contract still worked on, the supervisor live and in that state, nothing waiting
    for its beat, and the heartbeat not from an older generation. One text for both plain statements."""
    return f"""(%(owner)s::uuid IS NULL OR c.owner_id = %(owner)s)
       AND c.status NOT IN ('completed', 'failed', 'archived')
       AND s.state = {state} AND s.state NOT IN ('completed', 'failed')
       AND s.dead_at IS NULL AND s.stopped_at IS NULL
       AND s.sync_requested_at IS NULL AND s.restart_requested_at IS NULL
       AND ({generation} IS NULL OR {generation} >= s.generation)"""


# A plain heartbeat: one, from no daemon, of a live supervisor (not dead, not stopped, not finished) of a
# contract still worked on (not finished), of its generation, in the state it is in, with nothing waiting
# for its beat (no sync, no restart). ``_APPLY`` then updates the supervisor, appends the history row and
# refreshes the contract's activity, and logs, notifies and marks nothing: this statement does only
# that, a plan of a few nodes where ``_APPLY``'s has some forty, and returns ``_APPLY``'s row; or nothing,
# having written nothing, when the heartbeat is not plain (``ingest`` then sends ``_INGEST_ONE``).
# The lock is the UPDATE's: a sync or restart asked for meanwhile is seen after it, and declines.
_PLAIN_ONE = _compact(f"""
WITH s AS (
    UPDATE supervisor_states s
       SET phase = %(phase)s, current_activity = %(activity)s, progress = %(progress)s,
           pending_task_ids = %(pending)s::uuid[], last_heartbeat_at = now(),
           heartbeat_count = s.heartbeat_count + 1, updated_at = now()
      FROM contracts c
     WHERE s.task_id = %(task_id)s::uuid AND s.contract_id = %(contract_id)s::uuid AND c.id = s.contract_id
       AND {_plain_case("%(state)s::text", "%(generation)s::int")}
    RETURNING s.task_id, s.contract_id, c.owner_id, s.generation
),
act AS (
    UPDATE contracts c SET last_activity_at = now()
     WHERE c.id IN (SELECT contract_id FROM s)
       AND {activity_stale("c")}
),
hist AS (
    INSERT INTO supervisor_heartbeats
        (task_id, contract_id, state, phase, current_activity, progress, pending_task_ids, sent_at)
    SELECT task_id, contract_id, %(state)s::text, %(phase)s, %(activity)s, %(progress)s::int, %(pending)s::uuid[],
           %(sent)s::timestamptz
      FROM s
)
SELECT 1::bigint AS ord, owner_id, generation, %(state)s::text AS old_state, %(state)s::text AS new_state,
       false AS was_dead, false AS superseded, false AS late, false AS sync_requested, false AS restart_requested
  FROM s
""")


# A plain batch: two or more heartbeats of distinct supervisors, every one plain as above but for the
# daemon (a batch's daemon is marked live here too). This statement applies the batch only when every
# heartbeat in it is plain; otherwise it writes nothing, and ``ingest`` sends the whole batch to
# ``_INGEST``: each batch is still applied by one statement, all of it or none. Where ``_APPLY`` finds
# each supervisor's newest heartbeat of the batch (a window, three sorts), logs and notifies, this only
# locks, updates and appends: 1.81-1.93 -> 1.31-1.48 ms of execution for 100 heartbeats (issue 15,
# "Change 35"). The supervisors are locked in task_id order, as ``_APPLY`` locks them, so two batches over
# the same supervisors never wait on each other in a cycle; a sync or restart asked for while it waited is
# seen after the lock, and the batch is not plain. It answers in one row (``PlainBatch``), not a row per
# heartbeat: those rows would differ only in the supervisor's generation and, in an admin's batch, the
# contract's owner, and reading 100 of them into dicts cost the server more CPU than building the batch's
# arrays ("Change 36").
_PLAIN_MANY = _compact(f"""
{_MANY}
lk AS (
    SELECT i.ord, s.task_id, s.contract_id, c.owner_id, s.generation, i.state, i.phase, i.activity,
           i.progress, i.pending::uuid[] AS pending, i.sent_at, {activity_stale("c")} AS stale
      FROM input i
      JOIN supervisor_states s ON s.task_id = i.task_id AND s.contract_id = i.contract_id
      JOIN contracts c ON c.id = s.contract_id
     WHERE {_plain_case("i.state", "i.generation")}
     ORDER BY s.task_id
       FOR UPDATE OF s
),
-- Every heartbeat plain (the task ids are distinct: one row each), or nothing is written.
plain AS (SELECT count(*) = %(n)s AS every FROM lk),
s AS (
    UPDATE supervisor_states s
       SET phase = l.phase, current_activity = l.activity, progress = l.progress,
           pending_task_ids = l.pending, last_heartbeat_at = now(),
           heartbeat_count = s.heartbeat_count + 1, updated_at = now()
      FROM lk l
     WHERE s.task_id = l.task_id AND (SELECT every FROM plain)
    RETURNING l.*
),
-- Only the contracts whose activity the lock's read found stale are visited (most batches: none).
act AS (
    UPDATE contracts c SET last_activity_at = now()
     WHERE c.id IN (SELECT contract_id FROM s WHERE stale)
       AND {activity_stale("c")}
),
hist AS (
    INSERT INTO supervisor_heartbeats
        (task_id, contract_id, state, phase, current_activity, progress, pending_task_ids, sent_at)
    SELECT task_id, contract_id, state, phase, activity, progress, pending, sent_at FROM s
),
dmn AS (
    UPDATE daemons d SET last_heartbeat_at = now(), status = 'live'
     WHERE d.id = %(daemon)s::uuid AND (%(owner)s::uuid IS NULL OR d.owner_id = %(owner)s)
       AND (SELECT every FROM plain)
)
SELECT count(*) AS applied, array_agg(generation ORDER BY ord) AS generations,
       CASE WHEN %(owner)s::uuid IS NULL THEN array_agg(owner_id ORDER BY ord) END AS owner_ids
  FROM s
""")


class PlainBatch(Sequence[dict[str, Any]]):
    """The rows of a batch that ``_PLAIN_MANY`` applied, from its one row: each heartbeat's is the row
    ``_INGEST`` would have returned for it (``ANSWER_COLUMNS``: accepted, in the state it was in, nothing
    waiting), built only when read. The service answers such a batch from ``owner_ids`` without reading
    them (services/supervisors.py)."""

    def __init__(self, states: list[str], generations: list[int], owner_ids: list[UUID]) -> None:
        self.states = states
        self.generations = generations
        self.owner_ids = owner_ids  # each heartbeat's contract's owner, in the batch's order

    def __len__(self) -> int:
        return len(self.generations)

    @overload
    def __getitem__(self, k: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, k: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, k: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(k, slice):
            return [self[j] for j in range(*k.indices(len(self)))]
        j = range(len(self))[k]
        return {
            "ord": j + 1,
            "owner_id": self.owner_ids[j],
            "generation": self.generations[j],
            "old_state": self.states[j],
            "new_state": self.states[j],
            "was_dead": False,
            "superseded": False,
            "late": False,
            "sync_requested": False,
            "restart_requested": False,
        }


def _plain_batch(row: dict[str, Any] | None, params: dict[str, Any]) -> PlainBatch | None:
    """``_PLAIN_MANY``'s answer as the batch's rows, or None when it applied nothing."""
    if row is None or not row["applied"]:
        return None
    owners = row["owner_ids"] if row["owner_ids"] is not None else [params["owner"]] * row["applied"]
    return PlainBatch(params["states"], row["generations"], owners)


# What the service reads of each row an ingest statement returns (every statement returns at least these).
ANSWER_COLUMNS = (
    "ord",
    "owner_id",
    "generation",
    "old_state",
    "new_state",
    "was_dead",
    "superseded",
    "late",
    "sync_requested",
    "restart_requested",
)


def _pending(r: dict[str, Any]) -> str:
    """A heartbeat's pending task ids as the text of their array (``uuid[][]`` cannot be ragged, so a
    batch's lists travel as text too)."""
    return "{" + ",".join(str(t) for t in r["pending_task_ids"]) + "}"


def _statement(
    rows: list[dict[str, Any]],
    owner_id: UUID | None,
    daemon_id: UUID | None,
    actor: str,
    plain_params: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]] | None:
    """The ingest statement for ``rows`` and its parameters: ``_INGEST_ONE`` for one heartbeat, else
    ``_INGEST`` (a batch, or none: a daemon's bare liveness); None when there is nothing to send. The
    statement may log state changes (the heartbeat endpoints hand theirs over themselves).
    ``plain_params``: the plain statement's parameters for the same rows, which the full statement's are
    but for the daemon and the actor (not built twice for a heartbeat or a batch that was not plain)."""
    if not rows and daemon_id is None:
        return None
    events_sql.logged()
    statement = _INGEST if len(rows) != 1 else _INGEST_ONE
    if plain_params is not None:
        return statement, {**plain_params, "daemon": daemon_id, "actor": actor}
    if len(rows) != 1:
        return statement, _ingest_params(rows, owner_id, daemon_id, actor)
    return statement, _one_params(rows[0], owner_id, daemon_id, actor)


def _plain(
    rows: list[dict[str, Any]], owner_id: UUID | None, daemon_id: UUID | None
) -> tuple[str, dict[str, Any]] | None:
    """The statement sent first for ``rows`` and its parameters, when they may be plain: ``_PLAIN_ONE``
    for a heartbeat alone from no daemon, ``_PLAIN_MANY`` for two or more of distinct supervisors (a
    batch naming a supervisor twice takes the full statement, which keeps only its newest heartbeat); else
    None."""
    if len(rows) == 1 and daemon_id is None:
        return _PLAIN_ONE, _one_params(rows[0], owner_id, None, "")
    if len(rows) > 1 and len({r["task_id"] for r in rows}) == len(rows):
        return _PLAIN_MANY, {**_ingest_params(rows, owner_id, daemon_id, ""), "n": len(rows)}
    return None


def _one_params(r: dict[str, Any], owner_id: UUID | None, daemon_id: UUID | None, actor: str) -> dict[str, Any]:
    return {
        "task_id": r["task_id"],
        "contract_id": r["contract_id"],
        "state": str(r["state"]),
        "phase": r["phase"],
        "activity": r["current_activity"],
        "progress": r["progress"],
        "pending": _pending(r),
        "sent": r["timestamp"],
        "generation": r.get("generation"),
        "owner": owner_id,
        "daemon": daemon_id,
        "actor": actor,
    }


def _ingest_params(
    rows: list[dict[str, Any]], owner_id: UUID | None, daemon_id: UUID | None, actor: str
) -> dict[str, Any]:
    return {
        "task_ids": [r["task_id"] for r in rows],
        "contract_ids": [r["contract_id"] for r in rows],
        "states": [str(r["state"]) for r in rows],
        "phases": [r["phase"] for r in rows],
        "activities": [r["current_activity"] for r in rows],
        "progresses": [r["progress"] for r in rows],
        "pending": [_pending(r) for r in rows],
        "sent": [r["timestamp"] for r in rows],
        "generations": [r.get("generation") for r in rows],
        "owner": owner_id,
        "daemon": daemon_id,
        "actor": actor,
    }


def ingest(
    conn: Conn,
    rows: list[dict[str, Any]],
    owner_id: UUID | None,
    *,
    daemon_id: UUID | None = None,
    actor: str = "system",
) -> Sequence[dict[str, Any]]:
    """Apply heartbeats (dicts with the Heartbeat fields plus contract_id), each statement run outside
    any explicit transaction. Returns one row per heartbeat that matched a supervisor of ``owner_id``'s
    (None: any owner), with ``ord``, its 1-based position in ``rows``, and at least ``ANSWER_COLUMNS``;
    unmatched ones are absent. ``daemon_id`` (one of ``owner_id``'s daemons) is marked live; events name
    ``actor``.

    Plain heartbeats (``_plain``) go to the plain statement first, which applies them all or writes
    nothing; then, if it wrote nothing, to the full one. Either way one statement applies them. A batch
    the plain statement applied comes back as a ``PlainBatch``, its rows built only when read."""
    if (plain := _plain(rows, owner_id, daemon_id)) is not None:
        if plain[0] is _PLAIN_MANY:
            if (batch := _plain_batch(conn.execute(*plain).fetchone(), plain[1])) is not None:
                return batch
        elif applied := conn.execute(*plain).fetchall():
            return applied
    statement = _statement(rows, owner_id, daemon_id, actor, plain and plain[1])
    return [] if statement is None else conn.execute(*statement).fetchall()


async def ingest_on_loop(
    conn: AsyncConn,
    rows: list[dict[str, Any]],
    owner_id: UUID | None,
    *,
    daemon_id: UUID | None = None,
    actor: str = "system",
    meanwhile: Callable[[], object] | None = None,
) -> Sequence[dict[str, Any]]:
    """``ingest``, the same statements and parameters, sent on an asynchronous connection from the
    event loop (the local stack's heartbeat endpoints: db/async_pool.py). ``meanwhile`` is called once
    a batch's plain statement has been sent, while PostgreSQL runs it (the server's CPU is idle then:
    the caller prepares the answer that the batch gets if it was plain); not called otherwise."""
    if (plain := _plain(rows, owner_id, daemon_id)) is not None:
        if plain[0] is _PLAIN_MANY:
            cursor = await (conn.execute(*plain) if meanwhile is None else _meanwhile(conn.execute(*plain), meanwhile))
            if (batch := _plain_batch(await cursor.fetchone(), plain[1])) is not None:
                return batch
        elif applied := await (await conn.execute(*plain)).fetchall():
            return applied
    statement = _statement(rows, owner_id, daemon_id, actor, plain and plain[1])
    if statement is None:
        return []
    return await (await conn.execute(*statement)).fetchall()


async def _meanwhile(sending: Awaitable[T], meanwhile: Callable[[], object]) -> T:
    """``sending``'s result, with ``meanwhile`` called once it is on its way: as a task, it sends its
    statement and waits for the socket in one turn of the loop. The statement is awaited even when
    ``meanwhile`` raises, so the connection goes back to the pool idle."""
    sent = asyncio.ensure_future(sending)
    try:
        await asyncio.sleep(0)
        meanwhile()
    finally:
        result = await sent
    return result


def history(
    conn: Conn,
    task_id: UUID,
    limit: int,
    *,
    since: datetime,
    before: tuple[datetime, datetime] | None = None,
    skip: int = 0,
) -> list[dict[str, Any]]:
    """The newest heartbeats of ``task_id`` received at or after ``since`` (partitions keep rows a
    little longer than the retention, so the age is filtered here, not left to the dropping).

    Paged by (received_at, sent_at), newest first: ``before`` is the key of the last row already seen
    and ``skip`` how many rows of exactly that key were seen (the history has no unique id, and one
    batch may hold two heartbeats of a supervisor sent at the same instant); the rest of the order
    makes the rows of one key come in the same order each time."""
    return conn.execute(
        """
        SELECT sent_at, received_at, state, phase, current_activity, progress, pending_task_ids
          FROM supervisor_heartbeats
         WHERE task_id = %(task)s AND received_at >= %(since)s
           AND (%(rcv)s::timestamptz IS NULL OR (received_at, sent_at) <= (%(rcv)s, %(sent)s::timestamptz))
         ORDER BY received_at DESC, sent_at DESC, state, phase, progress, current_activity
         LIMIT %(limit)s OFFSET %(skip)s
        """,
        {
            "task": task_id,
            "since": since,
            "rcv": before[0] if before else None,
            "sent": before[1] if before else None,
            "limit": limit,
            "skip": skip,
        },
    ).fetchall()


# --- partitions ---------------------------------------------------------------------------------------

PARTITION_PREFIX = "supervisor_heartbeats_p"


def _hour(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def partition_name(start: datetime) -> str:
    return f"{PARTITION_PREFIX}{_hour(start):%Y%m%d%H}"


def ensure_partitions(conn: Conn, *, now: datetime, hours_ahead: int = 6, hours_behind: int = 1) -> list[str]:
    """Create the hourly partitions from ``hours_behind`` before ``now`` to ``hours_ahead`` after it.
    Idempotent; returns the ones it created."""
    created = []
    start = _hour(now) - timedelta(hours=hours_behind)
    for i in range(hours_behind + hours_ahead + 1):
        lo = start + timedelta(hours=i)
        name = partition_name(lo)
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL AS present", (name,)).fetchone()
        if exists and exists["present"]:
            continue
        # Names and bounds are generated here from datetimes, never from input.
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF supervisor_heartbeats "
            f"FOR VALUES FROM ('{lo.isoformat()}') TO ('{(lo + timedelta(hours=1)).isoformat()}')"
        )
        created.append(name)
    return created


def drop_expired(conn: Conn, *, now: datetime, retention: timedelta) -> list[str]:
    """Drop every hourly partition that may hold a row older than ``retention`` at ``now`` (its start
    is that old): the cost is a catalog change per partition, whatever it holds. Run hourly, this
    keeps no row past ``retention`` + 1 h (the run that drops a partition comes at most an hour after
    its first row expired) and every row for at least ``retention`` - 1 h (the partition's last rows
    go with its first); readers filter by age, so they never see a row past ``retention``. Rows that
    fell into the default partition are deleted by age (it is empty unless partition maintenance fell
    behind)."""
    cutoff = now - retention
    rows = conn.execute(
        """
        SELECT c.relname FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
          JOIN pg_class p ON p.oid = i.inhparent
         WHERE p.relname = 'supervisor_heartbeats' AND c.relname LIKE %s
         ORDER BY c.relname
        """,
        (f"{PARTITION_PREFIX}%",),
    ).fetchall()
    dropped = []
    for row in rows:
        name = row["relname"]
        start = datetime.strptime(name.removeprefix(PARTITION_PREFIX), "%Y%m%d%H").replace(tzinfo=UTC)
        if start <= cutoff:
            conn.execute(f"DROP TABLE IF EXISTS {name}")
            dropped.append(name)
    conn.execute("DELETE FROM supervisor_heartbeats_default WHERE received_at < %s", (cutoff,))
    return dropped


def partitions(conn: Conn) -> list[str]:
    rows = conn.execute(
        """
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          JOIN pg_class p ON p.oid = i.inhparent
         WHERE p.relname = 'supervisor_heartbeats' ORDER BY c.relname
        """
    ).fetchall()
    return [r["relname"] for r in rows]
