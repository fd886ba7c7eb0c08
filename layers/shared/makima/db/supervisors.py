"""SQL for supervisors: their state rows, conversation history, and the timeout sweep."""

from __future__ import annotations

from dataclasses import dataclass
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


# The supervisor of the contract ``c``: the running one first, else the newest.
_SUPERVISOR_OF_C = f"""
                SELECT {_COLUMNS}, t.status AS task_status
                  FROM supervisor_states s JOIN tasks t ON t.id = s.task_id
                 WHERE s.contract_id = c.id
                 ORDER BY (t.status IN ('pending', 'running')) DESC, s.created_at DESC
                 LIMIT 1"""
_CONTRACT_WHERE = "c.id = %(id)s AND (%(owner)s::uuid IS NULL OR c.owner_id = %(owner)s)"


def _with_contract_sql(lock: str) -> str:
    return f"""
        SELECT {contracts_sql.columns_as("c", _CONTRACT)}, sup.*
          FROM contracts c
          LEFT JOIN LATERAL ({_SUPERVISOR_OF_C} {lock}) sup ON true
         WHERE {_CONTRACT_WHERE}
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


def _page_rows(task: str, after: str, end: str) -> str:
    """One page of a conversation: the messages of ``task`` after ``after`` and before ``end`` (SQL
    expressions), oldest first, as many as start within ``%(budget)s`` bytes (PostgreSQL's text of each)."""
    return f"""
    SELECT seq, message FROM (
        SELECT seq, message, sum(octet_length(message::text)) OVER (ORDER BY seq) - octet_length(message::text)
               AS before
          FROM supervisor_conversation
         WHERE task_id = {task} AND seq > {after} AND seq < {end}
    ) page
     WHERE before < %(budget)s
"""


_PAGE = _page_rows("%(task_id)s", "%(after)s", "%(end)s") + "ORDER BY seq"
_PAGE_PREFIX = "p__"
# The state read (``state_read``): the contract, its supervisor and the first page of the supervisor's
# kept conversation (after ``%(after)s`` when given, from its first kept message otherwise) as one row: the
# page as the JSON array of the messages' texts, and its last seq (NULL: no message).
_STATE_READ = f"""
        SELECT {contracts_sql.columns_as("c", _CONTRACT)}, sup.*,
               page.messages AS {_PAGE_PREFIX}messages, page.last AS {_PAGE_PREFIX}last
          FROM contracts c
          LEFT JOIN LATERAL ({_SUPERVISOR_OF_C}) sup ON true
          LEFT JOIN LATERAL (
                SELECT '[' || COALESCE(string_agg(message::text, ',' ORDER BY seq), '') || ']' AS messages,
                       max(seq) AS last
                  FROM ({
    _page_rows(
        "sup.task_id",
        "GREATEST(sup.conversation_start - 1, COALESCE(%(after)s::int, -1))",
        "sup.conversation_length",
    )
}) page
          ) page ON sup.task_id IS NOT NULL
         WHERE {_CONTRACT_WHERE}
        """


@dataclass(frozen=True)
class StateRead:
    """What a state read finds (``state_read``): the contract and its supervisor as ``with_contract``
    returns them, and, when there is a supervisor, the page: its JSON array text and its last seq."""

    contract: dict[str, Any] | None
    supervisor: dict[str, Any] | None
    page: JsonText | None
    last: int | None


def _state_read(row: dict[str, Any] | None) -> StateRead:
    if row is None:
        return StateRead(None, None, None, None)
    page, last = row.pop(f"{_PAGE_PREFIX}messages"), row.pop(f"{_PAGE_PREFIX}last")
    contract, sup = _contract_and_supervisor(row)
    return StateRead(contract, sup, None if page is None else JsonText(page), last)


def _state_read_params(contract_id: UUID, owner_id: UUID | None, after_seq: int | None, budget: int) -> dict[str, Any]:
    return {"id": contract_id, "owner": owner_id, "after": after_seq, "budget": budget}


def state_read(
    conn: Conn, contract_id: UUID, owner_id: UUID | None, *, after_seq: int | None, budget: int
) -> StateRead:
    """The contract (as ``with_contract``), its supervisor and one page of the supervisor's kept
    conversation (as ``conversation_page``, from after ``after_seq`` or the first kept message, up to its
    length, within ``budget``) in one statement, the page aggregated by PostgreSQL into the JSON text of
    its array: a read of a supervisor's state is one round trip (issue 15, "Change 27"), and its 200
    messages are one value, neither fetched as rows nor parsed ("Change 23")."""
    params = _state_read_params(contract_id, owner_id, after_seq, budget)
    return _state_read(conn.execute(_STATE_READ, params).fetchone())


async def state_read_on_loop(
    conn: AsyncConn, contract_id: UUID, owner_id: UUID | None, *, after_seq: int | None, budget: int
) -> StateRead:
    """``state_read`` on an asynchronous connection, from the event loop (db/async_pool.py)."""
    cursor = await conn.execute(_STATE_READ, _state_read_params(contract_id, owner_id, after_seq, budget))
    return _state_read(await cursor.fetchone())


def conversation_page(conn: Conn, task_id: UUID, *, after_seq: int, end: int, budget: int) -> list[dict[str, Any]]:
    """The stored messages after ``after_seq`` and before ``end``, oldest first, as many as start
    within ``budget`` bytes (PostgreSQL's text of each): at least one, so a page may pass the budget by
    one message, which the edge bounds (``api/json_bounds.py``)."""
    return conn.execute(_PAGE, {"task_id": task_id, "after": after_seq, "end": end, "budget": budget}).fetchall()


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


def _append_sql(task: str = "%(task_id)s", source: str = "") -> str:
    """The messages of a save stored at positions offset, offset+1, ... for the task ``task`` (an SQL
    expression; with ``source``, a relation to join it from: the task of each of its rows, so none when
    it has none); a position already stored is kept (a retried save appends nothing twice); ``size``:
    each stored one's size (PostgreSQL's text of it)."""
    return f"""
    INSERT INTO supervisor_conversation (task_id, seq, message)
    SELECT {task}, %(offset)s + m.ord - 1, m.message
      FROM {source}jsonb_array_elements(%(messages)s::jsonb) WITH ORDINALITY AS m(message, ord)
    ON CONFLICT DO NOTHING
    RETURNING octet_length(message::text) AS size"""


_APPEND = _append_sql()


def _messages(messages: list[Any]) -> Jsonb:
    """The messages as one JSON array: one ``json.dumps``, where a ``jsonb[]`` of them was dumped as an
    array literal, escaped by psycopg's Python, a regular expression substitution per quote of every
    message, and parsed twice by PostgreSQL (the literal, then each element's JSON)."""
    return Jsonb(messages)


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


_SAVE_FIELDS = frozenset({
    "state", "phase", "current_activity", "pending_questions", "spawned_task_ids", "waiting_on_task_ids",
    "conversation_length", "last_checkpoint", "error", "last_save_point", "save_seq", "generation",
    "daemon_id", "dead_at", "progress", "stopped_at", "restart_requested_at", "conversation_start",
    "conversation_bytes",
})  # fmt: skip
_JSONB_FIELDS = frozenset({"pending_questions", "last_checkpoint"})


# What a plain save returns (``SavedState``): the answer's columns, not the state it has just written.
_SAVED_COLUMNS = """s.task_id, s.generation, s.save_seq, s.state, s.phase, s.conversation_length, s.conversation_start,
    s.last_save_point, s.updated_at,
    CASE WHEN s.last_checkpoint->>'seq' ~ '^-?[0-9]{1,18}$' AND jsonb_typeof(s.last_checkpoint->'seq') = 'number'
         THEN (s.last_checkpoint->>'seq')::bigint END AS last_checkpoint_seq"""


def _save_sql(
    fields: dict[str, Any], *, touch_contract: UUID | None, append: tuple[int, list[Any]] | None, guarded: bool
) -> tuple[str, dict[str, Any]]:
    """The state's ``UPDATE`` of ``save`` and ``save_if_plain`` with its parameters: the fields (names
    of this module's own, never input), the contract's activity and the append as CTEs; ``guarded``:
    after the CTEs ``sup`` and ``ok`` of ``_SAVE_IF_PLAIN``, every write only for the row ``ok`` holds,
    returning ``_SAVED_COLUMNS`` (the whole row otherwise: ``_store`` reads its size)."""
    assert set(fields) <= _SAVE_FIELDS, set(fields) - _SAVE_FIELDS
    assert append is None or "conversation_bytes" not in fields
    sets = [f"{k} = %({k})s" for k in fields]
    values = {k: Jsonb(v) if k in _JSONB_FIELDS and v is not None else v for k, v in fields.items()}
    ctes = [_SAVE_IF_PLAIN] if guarded else []
    if touch_contract is not None:
        # As a heartbeat's: refreshed only where it is older than its resolution (contracts_sql.activity_stale).
        only_ok = " AND EXISTS (SELECT FROM ok)" if guarded else ""
        touched = (
            "UPDATE contracts SET last_activity_at = now() WHERE id = %(touch_contract)s"
            f" AND {contracts_sql.activity_stale('contracts')}{only_ok}"
        )
        ctes.append(f"touched AS ({touched})")
    if append is not None and append[1]:
        ctes.append(f"added AS ({_append_sql('ok.task_id', 'ok, ') if guarded else _APPEND})")
        sets.append("conversation_bytes = s.conversation_bytes + (SELECT COALESCE(sum(size), 0) FROM added)")
        values.update(offset=append[0], messages=_messages(append[1]))
    where = "FROM ok WHERE s.task_id = ok.task_id" if guarded else "WHERE task_id = %(task_id)s"
    sql = (
        f"{'WITH ' + ', '.join(ctes) + ' ' if ctes else ''}UPDATE supervisor_states AS s SET {', '.join(sets)},"
        f" updated_at = now() {where} RETURNING {_SAVED_COLUMNS if guarded else _COLUMNS}"
    )
    return sql, {**values, "touch_contract": touch_contract}


def save(
    conn: Conn,
    task_id: UUID,
    fields: dict[str, Any],
    *,
    touch_contract: UUID | None = None,
    append: tuple[int, list[Any]] | None = None,
) -> dict[str, Any]:
    """Write the persisted-state fields given (names are this module's own, never input); with
    ``touch_contract``, that contract's ``last_activity_at`` is set to now in the same statement where it
    is older than ``contracts_sql.ACTIVITY_RESOLUTION`` (Task 1.5; a save's own statement, not one more round trip).
    With ``append`` (offset, messages), the messages are stored in it too (``_APPEND``) and
    ``conversation_bytes`` grows by what was stored: a state save is then one statement after its locked
    read (issue 15, "Change 26")."""
    sql, params = _save_sql(fields, touch_contract=touch_contract, append=append, guarded=False)
    row = conn.execute(sql, {**params, "task_id": task_id}).fetchone()
    assert row is not None
    return row


# The guard of a plain save (``save_if_plain``): the contract's supervisor, row-locked (``sup``), and
# whether the save is one that its locked read, checks and update would make without a choice to take
# (``ok``: its row, or none): the generation is the supervisor's, the sequence one step above its own
# (within ``MAX_SEQ_STEP``), the messages go at the end of the kept conversation (not before its first
# kept one, not past its length, not short of it), the state is unchanged (no event to log), and the
# conversation's size is known and stays within the cap whatever the append stores.
_SAVE_IF_PLAIN = f"""sup AS MATERIALIZED (
        SELECT sup.task_id, sup.generation, sup.save_seq, sup.conversation_start, sup.conversation_length,
               sup.conversation_bytes, sup.state
          FROM contracts c
          JOIN LATERAL ({_SUPERVISOR_OF_C} FOR UPDATE OF s) sup ON true
         WHERE {_CONTRACT_WHERE}
    ), ok AS MATERIALIZED (
        SELECT task_id FROM sup
         WHERE generation = %(generation)s
           AND save_seq < %(save_seq)s AND %(save_seq)s <= save_seq + %(max_seq_step)s
           AND %(offset)s BETWEEN conversation_start AND conversation_length
           AND %(offset)s + %(count)s >= conversation_length
           AND state = %(state)s
           AND conversation_bytes + (SELECT COALESCE(sum(octet_length(m::text)), 0)
                                       FROM jsonb_array_elements(%(messages)s::jsonb) AS m(m)) <= %(max_bytes)s
    )"""


@dataclass(frozen=True)
class PlainSave:
    """What makes a save plain (``_SAVE_IF_PLAIN``): the contract (of ``owner``, None: anyone's), the
    save's generation, sequence, state and append, the largest step of a sequence, and the cap on the
    kept conversation's size."""

    contract_id: UUID
    owner: UUID | None
    generation: int
    seq: int
    state: str
    offset: int
    messages: list[Any]
    max_seq_step: int
    max_bytes: int


def _plain_params(p: PlainSave, fields: dict[str, Any], touch: UUID | None) -> tuple[str, dict[str, Any]]:
    # The guard compares the sequence and the state the UPDATE writes (``%(save_seq)s``, ``%(state)s``).
    assert fields["save_seq"] == p.seq
    assert fields["state"] == p.state
    sql, params = _save_sql(fields, touch_contract=touch, append=(p.offset, p.messages), guarded=True)
    return sql, {
        **params,
        "id": p.contract_id,
        "owner": p.owner,
        "generation": p.generation,
        "max_seq_step": p.max_seq_step,
        "count": len(p.messages),
        "max_bytes": p.max_bytes,
        # The guard reads the offset and the messages even when there is nothing to append (``_save_sql``
        # then has not set them).
        "offset": params.get("offset", p.offset),
        "messages": params.get("messages") or _messages(p.messages),
    }


def save_if_plain(conn: Conn, p: PlainSave, fields: dict[str, Any], *, touch: UUID | None) -> dict[str, Any] | None:
    """A plain save (``_SAVE_IF_PLAIN``) in one statement, on a connection in autocommit: the saved
    state's answer (``_SAVED_COLUMNS``), or None, having written nothing, when the save is not plain (or
    its contract or supervisor is not found): the caller then saves in a transaction
    (services/supervisors.py: ``save_state``). So a supervisor's ordinary save is one round trip, not
    the four of a transaction (issue 15, "Change 30")."""
    sql, params = _plain_params(p, fields, touch)
    return conn.execute(sql, params).fetchone()


async def save_if_plain_on_loop(
    conn: AsyncConn, p: PlainSave, fields: dict[str, Any], *, touch: UUID | None
) -> dict[str, Any] | None:
    """``save_if_plain`` on an asynchronous connection, from the event loop (db/async_pool.py)."""
    sql, params = _plain_params(p, fields, touch)
    cursor = await conn.execute(sql, params)
    return await cursor.fetchone()


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
