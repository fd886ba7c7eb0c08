"""SQL for batch operations over contracts (seed 5.3): finding the candidates, locking one under the
same predicate, and deleting archived contracts.

A batch selects contracts with one predicate (statuses, finished before, idle before, optionally a list
of ids) and walks them in id order (keyset pagination), a bounded chunk per transaction. The predicate is
evaluated twice: once to list a chunk's candidates without locking them, and again as each candidate
is locked (``lock_candidate``). Under READ COMMITTED a ``SELECT … FOR UPDATE`` that waited for another
transaction re-evaluates its WHERE clause on the row as committed, so a contract that stopped matching
in between (completed, resumed, deleted) comes back as no row: the batch never acts on a stale reading.

Batches are admin-only, so nothing here is scoped by owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from makima.db.connection import Conn


@dataclass(frozen=True, slots=True)
class Selection:
    """Which contracts a batch acts on. ``None`` leaves a criterion out; ``ids`` restricts the batch to
    those contracts (an empty list selects nothing)."""

    statuses: list[str]
    changed_before: datetime | None = None  # status_changed_at: when it finished, or was archived
    idle_before: datetime | None = None  # last_activity_at: stale
    ids: list[UUID] | None = None


# One predicate for listing and for locking, so the re-check under the lock is the very same test.
_MATCHES = """
    c.status = ANY(%(statuses)s::text[])
    AND (%(changed_before)s::timestamptz IS NULL OR c.status_changed_at < %(changed_before)s)
    AND (%(idle_before)s::timestamptz IS NULL OR c.last_activity_at < %(idle_before)s)
    AND (%(ids)s::uuid[] IS NULL OR c.id = ANY(%(ids)s::uuid[]))
"""


def _params(selection: Selection) -> dict[str, Any]:
    return {
        "statuses": selection.statuses,
        "changed_before": selection.changed_before,
        "idle_before": selection.idle_before,
        "ids": selection.ids,
    }


def set_lock_timeout(conn: Conn, timeout: str) -> None:
    """Bound how long this transaction waits for any row lock (``'2s'``): a contract held by a long
    change becomes one item's error instead of stalling the whole batch."""
    conn.execute("SELECT set_config('lock_timeout', %s, true)", (timeout,))


def candidates(conn: Conn, selection: Selection, *, after: UUID | None, limit: int) -> list[dict[str, Any]]:
    """The next ``limit`` matching contracts after id ``after``, in id order, unlocked: ``id``, ``status``
    and whether the contract has ever had a supervisor (``has_supervisor``, what a restart needs)."""
    return conn.execute(
        f"""
        SELECT c.id, c.status,
               EXISTS (SELECT 1 FROM supervisor_states s WHERE s.contract_id = c.id) AS has_supervisor
          FROM contracts c
         WHERE {_MATCHES}
           AND (%(after)s::uuid IS NULL OR c.id > %(after)s)
         ORDER BY c.id
         LIMIT %(limit)s
        """,
        {**_params(selection), "after": after, "limit": limit},
    ).fetchall()


def lock_candidate(conn: Conn, selection: Selection, contract_id: UUID) -> bool:
    """Lock the contract ``FOR UPDATE`` if it still matches ``selection``; False when it no longer does
    (or is gone). The row lock is held until the caller's transaction (or savepoint) ends."""
    row = conn.execute(
        f"SELECT c.id FROM contracts c WHERE c.id = %(id)s AND {_MATCHES} FOR UPDATE",
        {**_params(selection), "id": contract_id},
    ).fetchone()
    return row is not None


def delete_contract(conn: Conn, contract_id: UUID) -> None:
    """Delete a contract and, by ``ON DELETE CASCADE``, its deliverables, tasks, questions, chat and
    supervisor state. Its events stay: ``contract_events.contract_id`` has no foreign key, so the record
    of a deleted contract outlives it; heartbeat history has none either and ages out by partition."""
    conn.execute("DELETE FROM contracts WHERE id = %s", (contract_id,))
