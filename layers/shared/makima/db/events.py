"""SQL for the event log / outbox (``contract_events``), and whether the work in progress logged any.

``watching`` / ``logged``: the after-write middleware (api/after_write.py) hands the outbox to the event
pipeline only after a request that logged an event; most state saves and many writes log none, and each
handed-off outbox was a drain (a statement locally, a transaction on Lambda) that found nothing (issue 15).
Every statement that inserts into ``contract_events`` calls ``logged`` (here, ``db/heartbeats.py``,
``db/monitor.py``; tests/integration/test_after_write.py checks the sites). A site missed would only
delay its events to the next sweep (a second locally, the outbox sweeper on AWS), never lose them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from makima.db.connection import Conn

_COLUMNS = "id, contract_id, type, payload, actor, created_at"

# The watch of the request in progress: a mutable holder, so that a statement run in a worker thread
# (its context a copy of the request's) marks the request's own.
_WATCH: ContextVar[list[bool] | None] = ContextVar("makima_events_logged", default=None)


@contextmanager
def watching() -> Iterator[Callable[[], bool]]:
    """Within the block, note whether any event was logged; yields the question."""
    holder: list[bool] = []
    token = _WATCH.set(holder)
    try:
        yield lambda: bool(holder)
    finally:
        _WATCH.reset(token)


def logged() -> None:
    """An event is being written: the watch in progress, if any, says so."""
    holder = _WATCH.get()
    if holder is not None and not holder:
        holder.append(True)


@dataclass(frozen=True)
class NewEvent:
    """An event to write: what ``append`` takes, or a statement that writes it along with its change
    (``with_event``)."""

    contract_id: UUID | None
    owner_id: UUID | None
    type: str
    payload: dict[str, Any]
    actor: str


_INSERT = """INSERT INTO contract_events (contract_id, owner_id, type, payload, actor)
        VALUES (%(ev_contract)s, %(ev_owner)s, %(ev_type)s, %(ev_payload)s, %(ev_actor)s)"""


def _params(event: NewEvent) -> dict[str, Any]:
    return {
        "ev_contract": event.contract_id,
        "ev_owner": event.owner_id,
        "ev_type": event.type,
        "ev_payload": Jsonb(event.payload),
        "ev_actor": event.actor,
    }


def with_event(event: NewEvent) -> tuple[str, dict[str, Any]]:
    """A ``WITH`` clause that writes ``event`` (``ev_``-prefixed parameters), to put before the statement
    of the change it records: one round trip for both (a status change's, issue 15, "Change 28"). A
    data-modifying ``WITH`` runs whether or not the statement reads it, in the statement's transaction."""
    logged()
    return f"WITH logged_event AS ({_INSERT}) ", _params(event)


def append(
    conn: Conn,
    *,
    contract_id: UUID | None,
    owner_id: UUID | None,
    type: str,
    payload: dict[str, Any],
    actor: str,
) -> dict[str, Any]:
    """Write one event in the caller's transaction, so it commits (or not) with the change it records."""
    return insert(conn, NewEvent(contract_id, owner_id, type, payload, actor))


def insert(conn: Conn, event: NewEvent) -> dict[str, Any]:
    """``append`` of an event already built (``services/common.py: event_of``)."""
    logged()
    row = conn.execute(f"{_INSERT} RETURNING {_COLUMNS}", _params(event)).fetchone()
    assert row is not None
    return row


def list_for_contract(conn: Conn, contract_id: UUID, *, after_id: int, limit: int) -> list[dict[str, Any]]:
    return conn.execute(
        f"""
        SELECT {_COLUMNS} FROM contract_events
         WHERE contract_id = %s AND id > %s
         ORDER BY id
         LIMIT %s
        """,
        (contract_id, after_id, limit),
    ).fetchall()
