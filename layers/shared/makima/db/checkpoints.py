"""SQL for LangGraph checkpoints and their pending writes (migration 0022). Every statement is scoped to
one owner: another owner's rows are never read, changed or counted."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from makima.db.connection import Conn
from makima.domain.checkpoints import CheckpointKey, CheckpointPut, ListQuery, PendingWrite

_COLUMNS = "thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata"


def upsert(conn: Conn, owner_id: UUID, put: CheckpointPut) -> None:
    """Store the checkpoint; putting one id again replaces it (a retried request, or LangGraph writing
    the same checkpoint twice) and keeps its pending writes."""
    k = put.key
    conn.execute(
        """
        INSERT INTO checkpoints AS c (owner_id, thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
                                      type, checkpoint, metadata, bytes)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (owner_id, thread_id, checkpoint_ns, checkpoint_id) DO UPDATE
           SET parent_checkpoint_id = EXCLUDED.parent_checkpoint_id, type = EXCLUDED.type,
               checkpoint = EXCLUDED.checkpoint, metadata = EXCLUDED.metadata, bytes = EXCLUDED.bytes
        """,
        (
            owner_id,
            k.thread_id,
            k.checkpoint_ns,
            k.checkpoint_id,
            put.parent_checkpoint_id,
            put.type,
            put.checkpoint,
            Jsonb(put.metadata),
            len(put.checkpoint) + put.metadata_bytes,
        ),
    )


def upsert_writes(conn: Conn, owner_id: UUID, key: CheckpointKey, writes: Sequence[PendingWrite]) -> None:
    """Store a task's writes; one (task_id, idx) is stored once. A regular write (idx >= 0) stored
    first stays (a retried request changes nothing); a special one (ERROR, INTERRUPT, ...: a negative
    idx) is replaced by a later put, as LangGraph's savers do."""
    conn.cursor().executemany(
        """
        INSERT INTO checkpoint_writes AS w (owner_id, thread_id, checkpoint_ns, checkpoint_id, task_id, task_path,
                                            idx, channel, type, value)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (owner_id, thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE
           SET task_path = EXCLUDED.task_path, channel = EXCLUDED.channel, type = EXCLUDED.type,
               value = EXCLUDED.value
         WHERE EXCLUDED.idx < 0
        """,
        [
            (
                owner_id,
                key.thread_id,
                key.checkpoint_ns,
                key.checkpoint_id,
                w.task_id,
                w.task_path,
                w.idx,
                w.channel,
                w.type,
                w.value,
            )
            for w in writes
        ],
    )


def stored_bytes(conn: Conn, owner_id: UUID, key: CheckpointKey) -> int:
    """The checkpoint's stored size with all its pending writes (0 for none of either)."""
    row = conn.execute(
        """
        SELECT COALESCE((SELECT bytes FROM checkpoints
                          WHERE owner_id = %(o)s AND thread_id = %(t)s AND checkpoint_ns = %(n)s
                            AND checkpoint_id = %(c)s), 0)
             + COALESCE((SELECT sum(octet_length(value) + octet_length(channel) + octet_length(task_id))
                           FROM checkpoint_writes
                          WHERE owner_id = %(o)s AND thread_id = %(t)s AND checkpoint_ns = %(n)s
                            AND checkpoint_id = %(c)s), 0) AS total
        """,
        {"o": owner_id, "t": key.thread_id, "n": key.checkpoint_ns, "c": key.checkpoint_id},
    ).fetchone()
    assert row is not None
    return int(row["total"])


def latest_id(conn: Conn, owner_id: UUID, thread_id: str, checkpoint_ns: str) -> str | None:
    row = conn.execute(
        """
        SELECT checkpoint_id FROM checkpoints
         WHERE owner_id = %s AND thread_id = %s AND checkpoint_ns = %s
         ORDER BY checkpoint_id DESC LIMIT 1
        """,
        (owner_id, thread_id, checkpoint_ns),
    ).fetchone()
    return None if row is None else str(row["checkpoint_id"])


def page_keys(
    conn: Conn, owner_id: UUID, query: ListQuery, *, after: tuple[str, str, str] | None, limit: int
) -> list[dict[str, Any]]:
    """Newest first, keyset-paged on (checkpoint_id, thread_id, checkpoint_ns) descending: the keys
    and stored sizes (with the pending writes') of at most ``limit`` checkpoints, without their blobs,
    so the service can fit a page to its byte budget before reading any."""
    return conn.execute(
        """
        SELECT c.thread_id, c.checkpoint_ns, c.checkpoint_id,
               c.bytes + COALESCE((SELECT sum(octet_length(w.value) + octet_length(w.channel)
                                              + octet_length(w.task_id))
                                     FROM checkpoint_writes w
                                    WHERE w.owner_id = c.owner_id AND w.thread_id = c.thread_id
                                      AND w.checkpoint_ns = c.checkpoint_ns
                                      AND w.checkpoint_id = c.checkpoint_id), 0) AS size
          FROM checkpoints c
         WHERE c.owner_id = %(o)s
           AND (%(t)s::text IS NULL OR c.thread_id = %(t)s)
           AND (%(n)s::text IS NULL OR c.checkpoint_ns = %(n)s)
           AND (%(c)s::text IS NULL OR c.checkpoint_id = %(c)s)
           AND (%(before)s::text IS NULL OR c.checkpoint_id < %(before)s)
           AND (%(filter)s::jsonb IS NULL OR c.metadata @> %(filter)s::jsonb)
           AND (%(a_id)s::text IS NULL
                OR (c.checkpoint_id, c.thread_id, c.checkpoint_ns) < (%(a_id)s, %(a_t)s, %(a_n)s))
         ORDER BY c.checkpoint_id DESC, c.thread_id DESC, c.checkpoint_ns DESC
         LIMIT %(limit)s
        """,
        {
            "o": owner_id,
            "t": query.thread_id,
            "n": query.checkpoint_ns,
            "c": query.checkpoint_id,
            "before": query.before,
            "filter": Jsonb(query.metadata) if query.metadata is not None else None,
            "a_id": after[0] if after else None,
            "a_t": after[1] if after else None,
            "a_n": after[2] if after else None,
            "limit": limit,
        },
    ).fetchall()


def load(conn: Conn, owner_id: UUID, keys: Sequence[CheckpointKey]) -> list[dict[str, Any]]:
    """The checkpoints named by ``keys``, in that order (one statement)."""
    if not keys:
        return []
    return conn.execute(
        f"""
        SELECT {_COLUMNS}
          FROM unnest(%(t)s::text[], %(n)s::text[], %(c)s::text[]) WITH ORDINALITY AS k(t, n, c, ord)
          JOIN checkpoints ON owner_id = %(o)s AND thread_id = k.t AND checkpoint_ns = k.n AND checkpoint_id = k.c
         ORDER BY k.ord
        """,
        {
            "o": owner_id,
            "t": [k.thread_id for k in keys],
            "n": [k.checkpoint_ns for k in keys],
            "c": [k.checkpoint_id for k in keys],
        },
    ).fetchall()


def writes_of(conn: Conn, owner_id: UUID, keys: Sequence[CheckpointKey]) -> list[dict[str, Any]]:
    """The pending writes of the checkpoints named by ``keys``, each checkpoint's in LangGraph's replay
    order (task_path, task_id, idx: ``writes_sort_key``)."""
    if not keys:
        return []
    return conn.execute(
        """
        SELECT w.thread_id, w.checkpoint_ns, w.checkpoint_id, w.task_id, w.task_path, w.idx, w.channel, w.type,
               w.value
          FROM unnest(%(t)s::text[], %(n)s::text[], %(c)s::text[]) AS k(t, n, c)
          JOIN checkpoint_writes w
            ON w.owner_id = %(o)s AND w.thread_id = k.t AND w.checkpoint_ns = k.n AND w.checkpoint_id = k.c
         ORDER BY w.thread_id, w.checkpoint_ns, w.checkpoint_id, w.task_path, w.task_id, w.idx
        """,
        {
            "o": owner_id,
            "t": [k.thread_id for k in keys],
            "n": [k.checkpoint_ns for k in keys],
            "c": [k.checkpoint_id for k in keys],
        },
    ).fetchall()


def delete_thread(conn: Conn, owner_id: UUID, thread_id: str) -> int:
    conn.execute("DELETE FROM checkpoint_writes WHERE owner_id = %s AND thread_id = %s", (owner_id, thread_id))
    cur = conn.execute("DELETE FROM checkpoints WHERE owner_id = %s AND thread_id = %s", (owner_id, thread_id))
    return cur.rowcount


def delete_for_runs(conn: Conn, owner_id: UUID, run_ids: Sequence[str]) -> int:
    """The checkpoints whose ``metadata.run_id`` is one of ``run_ids``, with their pending writes."""
    row = conn.execute(
        """
        WITH gone AS (
            DELETE FROM checkpoints
             WHERE owner_id = %(o)s AND metadata ? 'run_id' AND metadata ->> 'run_id' = ANY(%(runs)s::text[])
            RETURNING thread_id, checkpoint_ns, checkpoint_id
        ),
        writes AS (
            DELETE FROM checkpoint_writes w USING gone g
             WHERE w.owner_id = %(o)s AND w.thread_id = g.thread_id AND w.checkpoint_ns = g.checkpoint_ns
               AND w.checkpoint_id = g.checkpoint_id
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM gone) AS checkpoints, (SELECT count(*) FROM writes) AS writes
        """,
        {"o": owner_id, "runs": list(run_ids)},
    ).fetchone()
    assert row is not None
    return int(row["checkpoints"])


def copy_thread(conn: Conn, owner_id: UUID, source: str, target: str) -> int:
    """Every checkpoint and pending write of ``source`` under ``target`` too (ids kept, so the copy's
    order and parent links are the source's); what ``target`` already holds under an id is kept."""
    cur = conn.execute(
        """
        INSERT INTO checkpoints (owner_id, thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type,
                                 checkpoint, metadata, bytes)
        SELECT owner_id, %(target)s, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint,
               metadata, bytes
          FROM checkpoints WHERE owner_id = %(o)s AND thread_id = %(source)s
        ON CONFLICT DO NOTHING
        """,
        {"o": owner_id, "source": source, "target": target},
    )
    conn.execute(
        """
        INSERT INTO checkpoint_writes (owner_id, thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx,
                                       channel, type, value)
        SELECT owner_id, %(target)s, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type, value
          FROM checkpoint_writes WHERE owner_id = %(o)s AND thread_id = %(source)s
        ON CONFLICT DO NOTHING
        """,
        {"o": owner_id, "source": source, "target": target},
    )
    return cur.rowcount


def prune(conn: Conn, owner_id: UUID, thread_ids: Sequence[str], *, keep_latest: bool) -> int:
    """Delete the threads' checkpoints (and their writes); ``keep_latest``: all but the newest of each
    namespace."""
    row = conn.execute(
        """
        WITH keep AS (
            SELECT DISTINCT ON (thread_id, checkpoint_ns) thread_id, checkpoint_ns, checkpoint_id
              FROM checkpoints
             WHERE %(keep)s AND owner_id = %(o)s AND thread_id = ANY(%(threads)s::text[])
             ORDER BY thread_id, checkpoint_ns, checkpoint_id DESC
        ),
        gone AS (
            DELETE FROM checkpoints c
             WHERE c.owner_id = %(o)s AND c.thread_id = ANY(%(threads)s::text[])
               AND NOT EXISTS (SELECT 1 FROM keep k WHERE k.thread_id = c.thread_id
                                  AND k.checkpoint_ns = c.checkpoint_ns AND k.checkpoint_id = c.checkpoint_id)
            RETURNING 1
        ),
        writes AS (
            DELETE FROM checkpoint_writes w
             WHERE w.owner_id = %(o)s AND w.thread_id = ANY(%(threads)s::text[])
               AND NOT EXISTS (SELECT 1 FROM keep k WHERE k.thread_id = w.thread_id
                                  AND k.checkpoint_ns = w.checkpoint_ns AND k.checkpoint_id = w.checkpoint_id)
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM gone) AS checkpoints, (SELECT count(*) FROM writes) AS writes
        """,
        {"o": owner_id, "threads": list(thread_ids), "keep": keep_latest},
    ).fetchone()
    assert row is not None
    return int(row["checkpoints"])


# --- interrupts asked as questions (migration 0023) ---------------------------------------------------


def linked_interrupts(conn: Conn, owner_id: UUID, thread_id: str, checkpoint_ns: str, ids: Sequence[str]) -> set[str]:
    """Which of the interrupt ids were already asked in this thread's namespace."""
    rows = conn.execute(
        """
        SELECT interrupt_id FROM checkpoint_interrupts
         WHERE owner_id = %s AND thread_id = %s AND checkpoint_ns = %s AND interrupt_id = ANY(%s)
        """,
        (owner_id, thread_id, checkpoint_ns, list(ids)),
    ).fetchall()
    return {str(r["interrupt_id"]) for r in rows}


def link_interrupt(
    conn: Conn,
    owner_id: UUID,
    key: CheckpointKey,
    task_id: str,
    interrupt_id: str,
    contract_id: UUID,
    question_id: UUID,
) -> None:
    conn.execute(
        """
        INSERT INTO checkpoint_interrupts (owner_id, thread_id, checkpoint_ns, interrupt_id, checkpoint_id, task_id,
                                           contract_id, question_id)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
        """,
        (
            owner_id,
            key.thread_id,
            key.checkpoint_ns,
            interrupt_id,
            key.checkpoint_id,
            task_id,
            contract_id,
            question_id,
        ),
    )


def interrupt_questions(conn: Conn, owner_id: UUID, keys: Sequence[CheckpointKey]) -> list[dict[str, Any]]:
    """The questions the checkpoints' interrupts were asked as, with their status and answer."""
    if not keys:
        return []
    return conn.execute(
        """
        SELECT i.thread_id, i.checkpoint_ns, i.checkpoint_id, i.task_id, i.interrupt_id, i.question_id,
               q.status, q.answer
          FROM checkpoint_interrupts i JOIN questions q ON q.id = i.question_id
         WHERE i.owner_id = %s
           AND (i.thread_id, i.checkpoint_ns, i.checkpoint_id)
               IN (SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]))
         ORDER BY i.created_at, i.interrupt_id
        """,
        (
            owner_id,
            [k.thread_id for k in keys],
            [k.checkpoint_ns for k in keys],
            [k.checkpoint_id for k in keys],
        ),
    ).fetchall()


def deliver_task_answers(
    conn: Conn, owner_id: UUID, key: CheckpointKey, task_id: str, *, still_open: Sequence[str]
) -> int:
    """Mark delivered the answers to the task's interrupts at this checkpoint, except those it is
    still stopped at (``still_open``): the task wrote again, so it ran past them."""
    cur = conn.execute(
        """
        UPDATE questions q SET delivered_at = now()
          FROM checkpoint_interrupts i
         WHERE i.owner_id = %s AND i.thread_id = %s AND i.checkpoint_ns = %s AND i.checkpoint_id = %s
           AND i.task_id = %s AND NOT (i.interrupt_id = ANY(%s))
           AND q.id = i.question_id AND q.status = 'answered' AND q.delivered_at IS NULL
        """,
        (owner_id, key.thread_id, key.checkpoint_ns, key.checkpoint_id, task_id, list(still_open)),
    )
    return cur.rowcount


def has_open_interrupts(conn: Conn, owner_id: UUID, key: CheckpointKey) -> bool:
    """Whether an interrupt of the thread's namespace written at this checkpoint or a later one still
    waits for the owner's answer."""
    row = conn.execute(
        """
        SELECT EXISTS (SELECT 1 FROM checkpoint_interrupts i JOIN questions q ON q.id = i.question_id
                        WHERE i.owner_id = %s AND i.thread_id = %s AND i.checkpoint_ns = %s
                          AND i.checkpoint_id >= %s AND q.status = 'pending') AS open
        """,
        (owner_id, key.thread_id, key.checkpoint_ns, key.checkpoint_id),
    ).fetchone()
    return bool(row and row["open"])


def task_interrupts(conn: Conn, owner_id: UUID, key: CheckpointKey, task_id: str) -> list[dict[str, Any]]:
    """The task's interrupts at this checkpoint in the order they were asked (LangGraph raises a task's
    interrupts one after another: the i-th is the one its i-th resume value answers), with their
    questions' status."""
    return conn.execute(
        """
        SELECT i.interrupt_id, i.question_id, q.status
          FROM checkpoint_interrupts i JOIN questions q ON q.id = i.question_id
         WHERE i.owner_id = %s AND i.thread_id = %s AND i.checkpoint_ns = %s AND i.checkpoint_id = %s
           AND i.task_id = %s
         ORDER BY i.created_at, i.interrupt_id
        """,
        (owner_id, key.thread_id, key.checkpoint_ns, key.checkpoint_id, task_id),
    ).fetchall()
