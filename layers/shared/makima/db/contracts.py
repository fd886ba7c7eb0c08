"""SQL for contracts and their completed deliverables.

``owner_id=None`` means "any owner" and is only passed for admins; every other read and write is
scoped by owner in the WHERE clause, so another owner's contract is simply not found.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from makima.db import events as events_sql
from makima.db.connection import Conn

# last_activity_at is minute-grained for staleness; refreshing it on every 30 s heartbeat or every save of
# every supervisor would rewrite the contract's row (and each of its eleven indexes: the column is in four)
# many times a minute for nothing. Heartbeats and saves refresh it only where it is older than this.
ACTIVITY_RESOLUTION = "10 seconds"


def activity_stale(alias: str) -> str:
    """The SQL condition under which a heartbeat or a save refreshes the activity of ``alias``'s row
    (a name of ``contracts`` in the statement): it is older than ``ACTIVITY_RESOLUTION``."""
    return f"{alias}.last_activity_at < now() - interval '{ACTIVITY_RESOLUTION}'"


_COLUMNS = """id, owner_id, name, description, contract_type, phase, status, version, phase_guard,
    status_changed_at, last_activity_at, waiting_for, blocked_reason, failure_reason,
    auto_complete_enabled, completion_detected_at, created_at, updated_at"""


def columns_as(alias: str, prefix: str) -> str:
    """The contract's columns of table ``alias``, each renamed ``prefix`` + its name: for a query that
    reads a contract beside another row whose column names overlap (db/supervisors.py: with_contract)."""
    return ", ".join(f"{alias}.{c} AS {prefix}{c}" for c in (c.strip() for c in _COLUMNS.split(",")))


# Every UPDATE that bumps the version goes through this: one transaction moves the version by exactly one,
# however many of its steps change the contract (phase then status, an auto-advance chain, completing then
# completed, a batch's savepoints). The row remembers which transaction bumped it last; a second bump by the
# same transaction adds nothing. pg_current_xact_id() is the top-level id, the same inside savepoints.
_BUMP_VERSION = """version = version + CASE WHEN version_xact = pg_current_xact_id() THEN 0 ELSE 1 END,
               version_xact = pg_current_xact_id()"""


def insert(
    conn: Conn,
    *,
    owner_id: UUID,
    name: str,
    description: str,
    contract_type: str,
    phase: str,
    phase_guard: bool,
    auto_complete_enabled: bool = True,
    status: str = "created",
) -> dict[str, Any]:
    row = conn.execute(
        f"""
        INSERT INTO contracts
            (owner_id, name, description, contract_type, phase, phase_guard, auto_complete_enabled, status)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
        RETURNING {_COLUMNS}
        """,
        (owner_id, name, description, contract_type, phase, phase_guard, auto_complete_enabled, status),
    ).fetchone()
    assert row is not None
    return row


def get(
    conn: Conn, contract_id: UUID, owner_id: UUID | None, *, for_update: bool = False, with_type: bool = False
) -> dict[str, Any] | None:
    """The contract, or None when it does not exist or belongs to someone else.

    ``for_update`` takes the row lock that serialises every change to one contract (Task 1.2).
    ``with_type`` adds the definition of the contract's type (``type_definition``, NULL when the type is
    missing; only the contract is locked): a contract that becomes active evaluates its gate, which needs
    it, and reading it apart was one more round trip (issue 15, "Change 29").
    """
    lock = "FOR UPDATE" if for_update else ""
    ctype = (
        ", (SELECT t.definition FROM contract_types t WHERE t.name = contracts.contract_type) AS type_definition"
        if with_type
        else ""
    )
    return conn.execute(
        f"""
        SELECT {_COLUMNS}{ctype} FROM contracts
         WHERE id = %(id)s AND (%(owner)s::uuid IS NULL OR owner_id = %(owner)s)
        {lock}
        """,
        {"id": contract_id, "owner": owner_id},
    ).fetchone()


# The two orders of the contract list (domain/contract_lists.py), each a keyset on an index that has it:
# (owner_id,) created_at DESC, id DESC (idx_contracts_owner_created, idx_contracts_created) and
# (owner_id,) last_activity_at DESC, id DESC (migration 0021). The column is spelled out here, never
# taken from the caller.
_ORDERS = {
    "created": (
        "(created_at, id) < (%(after_at)s, %(after_id)s::uuid)",
        "ORDER BY created_at DESC, id DESC",
    ),
    "activity": (
        "(last_activity_at, id) < (%(after_at)s, %(after_id)s::uuid)",
        "ORDER BY last_activity_at DESC, id DESC",
    ),
}


def list_page(
    conn: Conn,
    *,
    owner_id: UUID | None,
    statuses: list[str] | None,
    phase: str | None,
    stale_before: datetime | None,
    after: tuple[datetime, UUID] | None,
    limit: int,
    contract_type: str | None = None,
    name_like: str | None = None,
    sort: str = "created",
) -> list[dict[str, Any]]:
    """A page in ``sort``'s order (``created``: newest first; ``activity``: most recently active first),
    keyset-paginated after ``after``. Stale means: not terminal and no activity since ``stale_before``.
    ``name_like`` is an ILIKE pattern (escaped by the caller: domain/contract_lists.like_pattern); it
    filters the rows the order's index walk reads, so it costs at most one pass over the owner's contracts
    (docs/performance.md, "Contracts at scale")."""
    after_clause, order_by = _ORDERS[sort]
    return conn.execute(
        f"""
        SELECT {_COLUMNS} FROM contracts
         WHERE (%(owner)s::uuid IS NULL OR owner_id = %(owner)s)
           AND (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s))
           AND (%(phase)s::text IS NULL OR phase = %(phase)s)
           AND (%(ctype)s::text IS NULL OR contract_type = %(ctype)s)
           AND (%(name_like)s::text IS NULL OR name ILIKE %(name_like)s)
           AND (%(stale)s::timestamptz IS NULL
                OR (last_activity_at < %(stale)s AND status NOT IN ('completed', 'failed', 'archived')))
           AND (%(after_at)s::timestamptz IS NULL OR {after_clause})
         {order_by}
         LIMIT %(limit)s
        """,
        {
            "owner": owner_id,
            "statuses": statuses,
            "phase": phase,
            "ctype": contract_type,
            "name_like": name_like,
            "stale": stale_before,
            "after_at": after[0] if after else None,
            "after_id": after[1] if after else None,
            "limit": limit,
        },
    ).fetchall()


def update_details(conn: Conn, contract_id: UUID, *, name: str, description: str, phase_guard: bool) -> dict[str, Any]:
    row = conn.execute(
        f"""
        UPDATE contracts
           SET name = %s, description = %s, phase_guard = %s, {_BUMP_VERSION}, updated_at = now()
         WHERE id = %s
        RETURNING {_COLUMNS}
        """,
        (name, description, phase_guard, contract_id),
    ).fetchone()
    assert row is not None
    return row


def set_phase(conn: Conn, contract_id: UUID, phase: str) -> dict[str, Any]:
    row = conn.execute(
        f"""
        UPDATE contracts
           SET phase = %s, {_BUMP_VERSION}, updated_at = now(), last_activity_at = now()
         WHERE id = %s
        RETURNING {_COLUMNS}
        """,
        (phase, contract_id),
    ).fetchone()
    assert row is not None
    return row


def set_status(
    conn: Conn,
    contract_id: UUID,
    *,
    status: str,
    waiting_for: str | None,
    blocked_reason: str | None,
    failure_reason: str | None,
    event: events_sql.NewEvent | None = None,
) -> dict[str, Any]:
    """Set the status (the version bumped once per transaction); with ``event``, the event that records
    the change is written by the same statement."""
    prefix, event_params = events_sql.with_event(event) if event is not None else ("", {})
    row = conn.execute(
        f"""
        {prefix}UPDATE contracts
           SET status = %(status)s, waiting_for = %(waiting_for)s, blocked_reason = %(blocked_reason)s,
               failure_reason = %(failure_reason)s, status_changed_at = now(), {_BUMP_VERSION}, updated_at = now()
         WHERE id = %(id)s
        RETURNING {_COLUMNS}
        """,
        {
            "status": status,
            "waiting_for": waiting_for,
            "blocked_reason": blocked_reason,
            "failure_reason": failure_reason,
            "id": contract_id,
            **event_params,
        },
    ).fetchone()
    assert row is not None
    return row


def set_waiting_for(conn: Conn, contract_id: UUID, waiting_for: str | None) -> None:
    conn.execute("UPDATE contracts SET waiting_for = %s, updated_at = now() WHERE id = %s", (waiting_for, contract_id))


def touch_activity(conn: Conn, contract_id: UUID) -> None:
    """Task 1.5: record that something happened on the contract (no version bump: not a state change)."""
    conn.execute("UPDATE contracts SET last_activity_at = now() WHERE id = %s", (contract_id,))


def completed_deliverables(conn: Conn, contract_id: UUID) -> list[dict[str, Any]]:
    return conn.execute(
        """
        SELECT phase, deliverable_id, completed_by, completed_at
          FROM completed_deliverables WHERE contract_id = %s ORDER BY completed_at, deliverable_id
        """,
        (contract_id,),
    ).fetchall()


def mark_deliverable(conn: Conn, contract_id: UUID, phase: str, deliverable_id: str, by: str) -> dict[str, Any] | None:
    """Insert the completion; None when it was already recorded (marking is idempotent)."""
    return conn.execute(
        """
        INSERT INTO completed_deliverables (contract_id, phase, deliverable_id, completed_by)
        VALUES (%s, %s, %s, %s)
        ON CONFLICT DO NOTHING
        RETURNING phase, deliverable_id, completed_by, completed_at
        """,
        (contract_id, phase, deliverable_id, by),
    ).fetchone()


def set_auto_complete(conn: Conn, contract_id: UUID, enabled: bool) -> dict[str, Any]:
    row = conn.execute(
        f"""
        UPDATE contracts SET auto_complete_enabled = %s, {_BUMP_VERSION}, updated_at = now()
         WHERE id = %s
        RETURNING {_COLUMNS}
        """,
        (enabled, contract_id),
    ).fetchone()
    assert row is not None
    return row


def mark_completion_detected(conn: Conn, contract_id: UUID) -> None:
    conn.execute(
        "UPDATE contracts SET completion_detected_at = COALESCE(completion_detected_at, now()) WHERE id = %s",
        (contract_id,),
    )
