"""SQL for supervisors: their state rows, conversation history, and the timeout sweep."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from psycopg.types.json import Jsonb

from makima.db import contracts as contracts_sql
from makima.db.connection import Conn
from makima.domain.supervisors import JsonText

if TYPE_CHECKING:
    from makima.db.async_pool import AsyncConn

_COLUMNS = """s.task_id, s.contract_id, s.daemon_id, s.state, s.phase, s.current_activity, s.progress,
    s.pending_task_ids, s.last_heartbeat_at, s.heartbeat_count, s.pending_questions, s.spawned_task_ids,
    s.waiting_on_task_ids, s.conversation_length, s.conversation_start, s.conversation_bytes, s.last_checkpoint,
    s.error, s.last_save_point,
    s.generation, s.save_seq, s.sync_requested_at, s.sync_delivered_at, s.restart_requested_at, s.dead_at,
    s.stopped_at, s.created_at, s.updated_at"""


def insert(conn: Conn, *, task_id: UUID, contract_id: UUID, daemon_id: UUID | None, phase: str) -> dict[str, Any]:
    row = conn.execute(
        f"""
        INSERT INTO supervisor_states AS s (task_id, contract_id, daemon_id, phase) VALUES (%s, %s, %s, %s)
        RETURNING {_COLUMNS}
        """,
        (task_id, contract_id, daemon_id, phase),
    ).fetchone()
    assert row is not None
    return row


def current(conn: Conn, contract_id: UUID, *, for_update: bool = False) -> dict[str, Any] | None:
    """The contract's supervisor: the one whose task is live, else the most recent one."""
    lock = "FOR UPDATE OF s" if for_update else ""
    return conn.execute(
        f"""
        SELECT {_COLUMNS}, t.status AS task_status
          FROM supervisor_states s JOIN tasks t ON t.id = s.task_id
         WHERE s.contract_id = %s
         ORDER BY (t.status IN ('pending', 'running')) DESC, s.created_at DESC
         LIMIT 1
        {lock}
        """,
        (contract_id,),
    ).fetchone()


_CONTRACT = "c__"


def _with_contract_sql(lock: str) -> str:
    return f"""
        SELECT {contracts_sql.columns_as("c", _CONTRACT)}, sup.*
          FROM contracts c
          LEFT JOIN LATERAL (
                SELECT {_COLUMNS}, t.status AS task_status
                  FROM supervisor_states s JOIN tasks t ON t.id = s.task_id
                 WHERE s.contract_id = c.id
                 ORDER BY (t.status IN ('pending', 'running')) DESC, s.created_at DESC
                 LIMIT 1
                {lock}
          ) sup ON true
         WHERE c.id = %(id)s AND (%(owner)s::uuid IS NULL OR c.owner_id = %(owner)s)
        """


_WITH_CONTRACT = _with_contract_sql("")
_WITH_CONTRACT_LOCKED = _with_contract_sql("FOR UPDATE OF s")


def _contract_and_supervisor(
    row: dict[str, Any] | None,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    if row is None:
        return None, None
    contract = {k[len(_CONTRACT) :]: v for k, v in row.items() if k.startswith(_CONTRACT)}
    if row["task_id"] is None:
        return contract, None
    return contract, {k: v for k, v in row.items() if not k.startswith(_CONTRACT)}


def with_contract(
    conn: Conn, contract_id: UUID, owner_id: UUID | None, *, for_update: bool = False
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The contract (None when it does not exist or belongs to someone else, as ``contracts.get``) and
    its supervisor (``current``: None when it has none; row-locked when ``for_update``) in one round
    trip: a state save and a state read need both, and reading them apart was one statement of the
    save's five (issue 15, "fewer, not faster")."""
    query = _WITH_CONTRACT_LOCKED if for_update else _WITH_CONTRACT
    return _contract_and_supervisor(conn.execute(query, {"id": contract_id, "owner": owner_id}).fetchone())


async def with_contract_on_loop(
    conn: AsyncConn, contract_id: UUID, owner_id: UUID | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``with_contract`` (not locked) on an asynchronous connection, from the event loop (db/async_pool.py)."""
    cursor = await conn.execute(_WITH_CONTRACT, {"id": contract_id, "owner": owner_id})
    return _contract_and_supervisor(await cursor.fetchone())


# One page of a conversation: the messages after ``after`` and before ``end``, oldest first, as many as
# start within ``budget`` bytes (PostgreSQL's text of each).
_PAGE_ROWS = """
    SELECT seq, message FROM (
        SELECT seq, message, sum(octet_length(message::text)) OVER (ORDER BY seq) - octet_length(message::text)
               AS before
          FROM supervisor_conversation
         WHERE task_id = %(task_id)s AND seq > %(after)s AND seq < %(end)s
    ) page
     WHERE before < %(budget)s
"""
_PAGE = _PAGE_ROWS + "ORDER BY seq"
# The same page as one row: the JSON array of the messages' texts, and the last seq (NULL: no message).
_PAGE_ARRAY = f"""
    SELECT '[' || COALESCE(string_agg(message::text, ',' ORDER BY seq), '') || ']' AS messages, max(seq) AS last
      FROM ({_PAGE_ROWS}) page
"""


def conversation_page(conn: Conn, task_id: UUID, *, after_seq: int, end: int, budget: int) -> list[dict[str, Any]]:
    """The stored messages after ``after_seq`` and before ``end``, oldest first, as many as start
    within ``budget`` bytes (PostgreSQL's text of each): at least one, so a page may pass the budget by
    one message, which the edge bounds (``api/json_bounds.py``)."""
    return conn.execute(_PAGE, {"task_id": task_id, "after": after_seq, "end": end, "budget": budget}).fetchall()


def conversation_page_array(
    conn: Conn, task_id: UUID, *, after_seq: int, end: int, budget: int
) -> tuple[JsonText, int | None]:
    """``conversation_page`` as the JSON text of the array of its messages (PostgreSQL's text of each,
    unparsed), with the last message's seq (None: the page is empty), aggregated by PostgreSQL: one row
    instead of one per message, for an answer that only passes the messages on (the state read: 200
    rows' fetch, row dicts and join were a tenth of its server CPU, docs/performance.md "Change 23")."""
    row = conn.execute(_PAGE_ARRAY, {"task_id": task_id, "after": after_seq, "end": end, "budget": budget}).fetchone()
    assert row is not None  # an aggregate without GROUP BY always returns its row
    return JsonText(row["messages"]), row["last"]


async def conversation_page_array_on_loop(
    conn: AsyncConn, task_id: UUID, *, after_seq: int, end: int, budget: int
) -> tuple[JsonText, int | None]:
    """``conversation_page_array`` on an asynchronous connection, from the event loop (db/async_pool.py)."""
    cursor = await conn.execute(_PAGE_ARRAY, {"task_id": task_id, "after": after_seq, "end": end, "budget": budget})
    row = await cursor.fetchone()
    assert row is not None
    return JsonText(row["messages"]), row["last"]


def conversation_seqs(conn: Conn, task_id: UUID) -> list[int]:
    rows = conn.execute("SELECT seq FROM supervisor_conversation WHERE task_id = %s ORDER BY seq", (task_id,))
    return [r["seq"] for r in rows.fetchall()]


def conversation_sizes(conn: Conn, task_id: UUID) -> list[tuple[int, int]]:
    """Each stored message's seq and size (PostgreSQL's text of it), oldest first."""
    rows = conn.execute(
        "SELECT seq, octet_length(message::text) AS size FROM supervisor_conversation WHERE task_id = %s ORDER BY seq",
        (task_id,),
    )
    return [(r["seq"], r["size"]) for r in rows.fetchall()]


# The messages of a save stored at positions offset, offset+1, ...; a position already stored is kept (a
# retried save appends nothing twice); ``size``: each stored one's size (PostgreSQL's text of it).
_APPEND = """
    INSERT INTO supervisor_conversation (task_id, seq, message)
    SELECT %(task_id)s, %(offset)s + m.ord - 1, m.message
      FROM unnest(%(messages)s::jsonb[]) WITH ORDINALITY AS m(message, ord)
    ON CONFLICT DO NOTHING
    RETURNING octet_length(message::text) AS size"""


def _messages(messages: list[Any]) -> list[Jsonb]:
    return [Jsonb(m) for m in messages]


def append_conversation(conn: Conn, task_id: UUID, offset: int, messages: list[Any]) -> int:
    """Store messages at positions offset, offset+1, ... (``_APPEND``). Returns the size of the messages
    stored."""
    if not messages:
        return 0
    row = conn.execute(
        f"WITH added AS ({_APPEND}) SELECT COALESCE(sum(size), 0)::bigint AS size FROM added",
        {"task_id": task_id, "offset": offset, "messages": _messages(messages)},
    ).fetchone()
    assert row is not None
    return int(row["size"])


def drop_conversation_before(conn: Conn, task_id: UUID, seq: int) -> None:
    """Compaction: the messages before ``seq`` go."""
    conn.execute("DELETE FROM supervisor_conversation WHERE task_id = %s AND seq < %s", (task_id, seq))


def truncate_conversation(conn: Conn, task_id: UUID, length: int) -> None:
    conn.execute("DELETE FROM supervisor_conversation WHERE task_id = %s AND seq >= %s", (task_id, length))


def save(
    conn: Conn,
    task_id: UUID,
    fields: dict[str, Any],
    *,
    touch_contract: UUID | None = None,
    append: tuple[int, list[Any]] | None = None,
) -> dict[str, Any]:
    """Write the persisted-state fields given (names are this module's own, never input); with
    ``touch_contract``, that contract's ``last_activity_at`` is set to now in the same statement (Task
    1.5; a save's own statement, not one more round trip). With ``append`` (offset, messages), the
    messages are stored in it too (``_APPEND``) and ``conversation_bytes`` grows by what was stored: a
    state save is then one statement after its locked read (issue 15, "Change 26")."""
    allowed = {
        "state", "phase", "current_activity", "pending_questions", "spawned_task_ids", "waiting_on_task_ids",
        "conversation_length", "last_checkpoint", "error", "last_save_point", "save_seq", "generation",
        "daemon_id", "dead_at", "progress", "stopped_at", "restart_requested_at", "conversation_start",
        "conversation_bytes",
    }  # fmt: skip
    assert set(fields) <= allowed, set(fields) - allowed
    assert append is None or "conversation_bytes" not in fields
    sets = [f"{k} = %({k})s" for k in fields]
    values = {
        k: Jsonb(v) if k in {"pending_questions", "last_checkpoint"} and v is not None else v for k, v in fields.items()
    }
    ctes = []
    if touch_contract is not None:
        ctes.append("touched AS (UPDATE contracts SET last_activity_at = now() WHERE id = %(touch_contract)s)")
    if append is not None and append[1]:
        ctes.append(f"added AS ({_APPEND})")
        sets.append("conversation_bytes = s.conversation_bytes + (SELECT COALESCE(sum(size), 0) FROM added)")
        values.update(offset=append[0], messages=_messages(append[1]))
    sql = (
        f"{'WITH ' + ', '.join(ctes) + ' ' if ctes else ''}UPDATE supervisor_states AS s SET {', '.join(sets)},"
        f" updated_at = now() WHERE task_id = %(task_id)s RETURNING {_COLUMNS}"
    )
    row = conn.execute(sql, {**values, "task_id": task_id, "touch_contract": touch_contract}).fetchone()
    assert row is not None
    return row


def request_sync(conn: Conn, task_id: UUID) -> dict[str, Any]:
    row = conn.execute(
        f"""
        UPDATE supervisor_states AS s SET sync_requested_at = COALESCE(sync_requested_at, now()), updated_at = now()
         WHERE task_id = %s RETURNING {_COLUMNS}
        """,
        (task_id,),
    ).fetchone()
    assert row is not None
    return row


def request_restart(conn: Conn, task_id: UUID) -> None:
    conn.execute(
        "UPDATE supervisor_states SET restart_requested_at = COALESCE(restart_requested_at, now()) WHERE task_id = %s",
        (task_id,),
    )


def sync_delivered_since(conn: Conn, task_id: UUID, requested_at: Any) -> dict[str, Any] | None:
    return conn.execute(
        f"SELECT {_COLUMNS} FROM supervisor_states s WHERE task_id = %s AND sync_delivered_at >= %s",
        (task_id, requested_at),
    ).fetchone()


def mark_dead(
    conn: Conn, timeout: timedelta, *, now: datetime | None = None, grace_from: datetime | None = None
) -> list[dict[str, Any]]:
    """Supervisors of live tasks on workable contracts silent for longer than ``timeout`` at ``now``:
    state ``interrupted``, ``dead_at`` set. Silent means no heartbeat (or start, if none came) since
    ``now - timeout``; ``grace_from`` counts as a heartbeat of everyone (the sweep saw the heartbeat
    flag off then, so no supervisor could beat). Supervisors stopped on purpose (a ``shutdown``
    save) are not dead; finished contracts and tasks are never touched. ``now`` None is the database's
    clock, the one that stamped the heartbeats."""
    return conn.execute(
        """
        WITH clock AS (SELECT COALESCE(%(now)s::timestamptz, now()) AS now),
        prev AS (
            SELECT s.task_id, s.contract_id, c.owner_id, s.state AS old_state
              FROM supervisor_states s
              JOIN tasks t ON t.id = s.task_id
              JOIN contracts c ON c.id = s.contract_id
             WHERE s.dead_at IS NULL
               AND s.stopped_at IS NULL
               AND GREATEST(COALESCE(s.last_heartbeat_at, s.created_at), %(grace)s::timestamptz)
                   < (SELECT now FROM clock) - %(timeout)s::interval
               AND s.state NOT IN ('completed', 'failed')
               AND t.status IN ('pending', 'running')
               AND c.status NOT IN ('completed', 'failed', 'archived')
             ORDER BY s.task_id
               FOR UPDATE OF s SKIP LOCKED
        )
        UPDATE supervisor_states s
           SET dead_at = (SELECT now FROM clock), state = 'interrupted', updated_at = now()
          FROM prev
         WHERE s.task_id = prev.task_id
        RETURNING prev.task_id, prev.contract_id, prev.owner_id, prev.old_state
        """,
        {"timeout": timeout, "now": now, "grace": grace_from},
    ).fetchall()


def job_paused_at(conn: Conn, job: str) -> datetime | None:
    """When ``job`` last found its feature flag off (None: never, or not since it was recorded)."""
    row = conn.execute("SELECT paused_at FROM scheduled_job_state WHERE job = %s", (job,)).fetchone()
    return row["paused_at"] if row else None


def record_job_paused(conn: Conn, job: str, at: datetime | None = None) -> None:
    """``job`` found its flag off ``at`` (None: now, by the database's clock)."""
    conn.execute(
        """
        INSERT INTO scheduled_job_state (job, paused_at) VALUES (%(job)s, COALESCE(%(at)s::timestamptz, now()))
        ON CONFLICT (job) DO UPDATE
           SET paused_at = GREATEST(scheduled_job_state.paused_at, EXCLUDED.paused_at), updated_at = now()
        """,
        {"job": job, "at": at},
    )


def finish_for_contract(conn: Conn, contract_id: UUID) -> None:
    """The contract completed: its supervisors are done too."""
    conn.execute(
        "UPDATE supervisor_states SET state = 'completed', progress = 100, updated_at = now() "
        "WHERE contract_id = %s AND state NOT IN ('completed', 'failed')",
        (contract_id,),
    )
