"""The event pipeline behind the monitor (seed 5.1), free of transport: the outbox publisher, the
broadcaster, and the connection protocol. AWS (EventBridge, API Gateway WebSocket) and the local
stack (in-process, uvicorn WebSocket) plug in a ``Publisher`` and a ``Sender``; nothing else differs.

Delivery is at least once: every event carries its id, a client drops the ids it has seen.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

from pydantic import ValidationError

from makima.db import monitor as monitor_sql
from makima.db.connection import Database, transaction
from makima.domain.monitor import MonitorFilter, Subscriber, from_log, public, route
from makima.domain.principals import Principal
from makima.errors import Unauthorized
from makima.services import auth
from makima.services.common import require_api_access

log = logging.getLogger("makima.monitor")

# A reconnecting monitor gets at most this many missed events; past that it is told the replay was
# cut short and should reload (the dashboard API) rather than wait for a flood.
MAX_REPLAY = 5_000
_REPLAY_PAGE = 500


class Publisher(Protocol):
    """Takes committed events to the broadcaster: EventBridge on AWS, a direct call locally."""

    def publish(self, events: Sequence[Mapping[str, Any]]) -> None: ...


class Sender(Protocol):
    """Delivers messages to connections; returns the connections that are gone (to forget them).

    It must not let one slow or dead client hold up the others: it sends concurrently, with short
    timeouts, and a client that cannot keep up is treated as gone.
    """

    def send(self, deliveries: Mapping[str, Sequence[Mapping[str, Any]]]) -> set[str]: ...


class Closer(Protocol):
    """Closes connections of its one endpoint, telling them why where the transport can (locally: the
    error message, then close code 4401; API Gateway's DeleteConnection carries no reason). Returns the
    connections it closed or found gone: those are forgotten; the others keep their rows, so the
    next sweep, broadcast or message meets them again."""

    def close(self, connection_ids: Sequence[str], error: Unauthorized) -> set[str]: ...


# Which ``Closer`` reaches the connections stored under an endpoint (None: not this process's to close).
ClosersByEndpoint = Callable[[str], "Closer | None"]


class EventSink(Protocol):
    """What the API does with events once a request is done: ``committed`` after a request that may
    have written events (publish the outbox); ``heartbeats`` from the heartbeat endpoints instead,
    with the envelopes of accepted heartbeats (never logged: they go to the broadcaster directly) and
    whether the ingest logged events — most heartbeats change nothing, and then the outbox is not
    even looked at, which keeps the hottest path at one round trip. ``token_revoked`` after a token's
    revocation committed: close the monitor connections opened with it, now (never raises: the
    revocation stands either way, and the broadcaster, the messages and the local sweep refuse and
    close those connections too)."""

    def committed(self) -> None: ...

    def heartbeats(self, events: Sequence[Mapping[str, Any]], logged: bool) -> None: ...

    def token_revoked(self, token_id: UUID) -> None: ...


# --- outbox --------------------------------------------------------------------------------------


def drain_outbox(
    database: Database,
    publisher: Publisher,
    *,
    batch: int = 500,
    older_than: timedelta | None = None,
    max_batches: int = 20,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Publish committed, unpublished events, oldest first, and mark them published.

    Publishing happens while the rows are locked, and they are marked in the same transaction: if
    the publish fails, nothing is marked and the sweeper retries; if it succeeded but the commit
    fails, they are published again (at least once). Returns the events published. ``older_than``
    (the sweeper's) leaves what a writer's own publish may still be taking; its age is measured at
    ``now`` (the database's clock by default; tests pass a later one).
    """
    published: list[dict[str, Any]] = []
    for _ in range(max_batches):
        with transaction(database) as conn:
            rows = monitor_sql.claim_unpublished(conn, batch, older_than=older_than, now=now)
            if not rows:
                break
            events = [from_log(r) for r in rows]
            publisher.publish(events)
            monitor_sql.mark_published(conn, [r["id"] for r in rows])
        published.extend(events)
        if len(rows) < batch:
            break
    return published


# --- broadcaster ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BroadcastResult:
    connections: int
    messages: int
    gone: int
    closed: int = 0  # connections of revoked tokens met and closed


def broadcast(
    database: Database,
    events: Sequence[Mapping[str, Any]],
    sender: Sender,
    endpoint: str,
    closer: Closer | None = None,
) -> BroadcastResult:
    """Send each event to the connections of ``endpoint`` whose filter takes it, and forget the
    connections that are gone. The status a filter matches is the contract's status now, read once
    for the whole batch. (One endpoint per broadcaster: a WebSocket API on AWS, a process locally.)

    A connection whose token is revoked (or unknown) is never sent anything; with ``closer``, it is
    closed and forgotten as the broadcaster meets it (the backstop of the revocation path)."""
    if not events:
        return BroadcastResult(0, 0, 0)
    heartbeats_only = all(e["type"] == "heartbeat" for e in events)
    with transaction(database) as conn:
        rows = monitor_sql.live_subscribers(conn, endpoint, heartbeats_only=heartbeats_only)
        subscribers = [Subscriber.from_row(r) for r in rows if r["authorized"]]
        refused = [r["connection_id"] for r in rows if not r["authorized"]]
        ids = sorted({str(e["contract_id"]) for e in events if e.get("contract_id")}) if subscribers else []
        statuses = monitor_sql.contract_statuses(conn, ids)
    closed = _close(database, closer, refused) if refused and closer is not None else 0
    if not subscribers:
        return BroadcastResult(0, 0, 0, closed)
    routed = route(events, subscribers, statuses)
    # One client copy per event, shared by every delivery of it (``route`` hands back the very event
    # objects it was given): at 1,000 connections, making it per delivery was a tenth of the fan-out.
    shared = {id(e): public(e) for e in events}
    deliveries = {cid: [shared[id(e)] for e in evs] for cid, evs in routed.items()}
    gone = sender.send(deliveries) if deliveries else set()
    if gone:
        with transaction(database) as conn:
            monitor_sql.remove_connections(conn, sorted(gone))
        log.info("forgot %d gone monitor connection(s)", len(gone))
    return BroadcastResult(len(deliveries), sum(len(v) for v in deliveries.values()), len(gone), closed)


# --- connection protocol -------------------------------------------------------------------------


def admit(database: Database, token: str | None) -> Principal:
    """Who may open a monitor connection with ``token``: ``Unauthorized`` for a missing, unknown or revoked
    token, ``Forbidden`` for a metrics token (it reads GET /metrics and nothing else)."""
    principal = auth.resolve(database, token)
    require_api_access(principal)
    return principal


def connect(database: Database, connection_id: str, principal: Principal, endpoint: str) -> None:
    """Record the connection with the principal's token, which revocation closes it by."""
    require_api_access(principal)
    with transaction(database) as conn:
        monitor_sql.add_connection(
            conn,
            connection_id,
            principal.user_id,
            is_admin=principal.is_admin,
            endpoint=endpoint,
            token_id=principal.token_id,
        )


def revoked_error() -> Unauthorized:
    """Why a connection is closed once its token is revoked (the error message, and the close reason)."""
    return Unauthorized("the token of this connection was revoked")


def close_unauthorized(
    database: Database, closers: ClosersByEndpoint, *, token_id: UUID | None = None, endpoint: str | None = None
) -> int:
    """Close the connections whose token is revoked (or unknown): those of ``token_id`` (the
    revocation path), or of ``endpoint`` (a sweep), each through the closer of its endpoint; the ones
    closed are forgotten. Returns how many. Connections of endpoints no closer reaches are left to
    their own process (the local stack's sweep) or to the broadcaster (AWS)."""
    with transaction(database) as conn:
        rows = monitor_sql.unauthorized_connections(conn, token_id=token_id, endpoint=endpoint)
    by_endpoint: dict[str, list[str]] = {}
    for r in rows:
        by_endpoint.setdefault(r["endpoint"], []).append(r["connection_id"])
    closed = 0
    for where, ids in by_endpoint.items():
        closer = closers(where)
        if closer is not None:
            closed += _close(database, closer, ids)
    return closed


def close_if_unauthorized(database: Database, closer: Closer, connection_id: str) -> bool:
    """Close ``connection_id`` if its token is revoked or unknown (a close asked for by the route that
    refused its message); whether it was closed."""
    with transaction(database) as conn:
        authorized = monitor_sql.is_authorized(conn, connection_id)
    return not authorized and _close(database, closer, [connection_id]) == 1


def _close(database: Database, closer: Closer, connection_ids: Sequence[str]) -> int:
    """Close ``connection_ids`` as unauthorised and forget the ones closed (or gone)."""
    closed = closer.close(connection_ids, revoked_error())
    if closed:
        with transaction(database) as conn:
            monitor_sql.remove_connections(conn, sorted(closed))
        log.info("closed %d monitor connection(s) of revoked tokens", len(closed))
    return len(closed)


def disconnect(database: Database, connection_id: str) -> None:
    with transaction(database) as conn:
        monitor_sql.remove_connections(conn, [connection_id])


def error_message(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, "details": details or {}}


@dataclass(frozen=True, slots=True)
class Answer:
    """What a monitor's message gets: the reply to send now, where to resume from (if asked), and
    whether the connection is to be closed after the reply (its token is revoked)."""

    reply: dict[str, Any]
    resume_from: int | None = None
    close: bool = False


def answer_message(database: Database, connection_id: str, raw: str | bytes | None) -> Answer:
    """Validate one message from a monitor — a ping, or a filter (which may ask to resume) — store the
    filter, and say what to answer. A filter that asks to resume marks the connection ``resuming``:
    the broadcaster skips it until ``replay`` has sent what it missed.

    A connection whose token is revoked (or was never recorded) gets ``UNAUTHORIZED`` whatever it sent,
    ping included, and is to be closed: the token is checked on every message, not only at the
    handshake."""
    with transaction(database) as conn:
        row = monitor_sql.get_connection(conn, connection_id)
    if row is not None and not row["authorized"]:
        exc = revoked_error()
        return Answer(error_message(exc.code, exc.message), close=True)
    try:
        body = json.loads(raw or "{}")
    except (ValueError, UnicodeDecodeError):
        return Answer(error_message("VALIDATION_FAILED", "the message is not JSON"))
    if not isinstance(body, dict):
        return Answer(error_message("VALIDATION_FAILED", "the message must be a JSON object"))
    if body.get("action") == "ping":
        return Answer({"type": "pong"})
    try:
        wanted = MonitorFilter.model_validate(body)
    except ValidationError as exc:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        return Answer(error_message("VALIDATION_FAILED", "invalid filter", {"errors": errors}))
    resume_from = int(wanted.last_event_id) if wanted.last_event_id is not None else None
    with transaction(database) as conn:
        stored = monitor_sql.set_filter(
            conn,
            connection_id,
            contract_ids=wanted.contract_ids,
            statuses=[s.value for s in wanted.statuses] if wanted.statuses is not None else None,
            include_stale=wanted.include_stale,
            include_heartbeats=wanted.include_heartbeats,
            resuming=resume_from is not None,
        )
    if not stored:
        return Answer(error_message("NOT_FOUND", "this connection is not registered; reconnect"))
    return Answer({"type": "subscribed", "filter": wanted.applied(), "resuming": resume_from is not None}, resume_from)


def replay(database: Database, connection_id: str, after: int, sender: Sender, closer: Closer | None = None) -> int:
    """Send a resuming connection the events it may see that were logged after ``after``, in order,
    then a ``replayed`` marker; returns how many were sent.

    The connection stays marked ``resuming`` (skipped by the broadcaster) while the log is read; the
    mark is then cleared and the log read once more, so an event broadcast in between is not lost (it
    may arrive twice: ids de-duplicate). Its token is checked with every page: once revoked, nothing
    more is sent, and with ``closer`` the connection is closed.
    """
    with transaction(database) as conn:
        row = monitor_sql.get_connection(conn, connection_id)
    if row is None:
        return 0  # closed meanwhile
    subscriber = Subscriber.from_row(row)
    owner = None if row["is_admin"] else row["owner_id"]
    ids = row["contract_ids"]
    sent, complete, refused = 0, False, not row["authorized"]
    cursor = after
    if not refused:
        cursor, sent, complete, refused = _replay(database, subscriber, owner, ids, after, sender)
    if not refused:
        with transaction(database) as conn:
            monitor_sql.set_resuming(conn, connection_id, False)
        if complete:
            cursor, more, complete, refused = _replay(
                database, subscriber, owner, ids, cursor, sender, budget=MAX_REPLAY - sent
            )
            sent += more
    if refused:
        if closer is not None:
            _close(database, closer, [connection_id])
        return sent
    sender.send(
        {connection_id: [{"type": "replayed", "count": sent, "last_event_id": str(cursor), "complete": complete}]}
    )
    return sent


def handle_message(
    database: Database, connection_id: str, raw: str | bytes | None, sender: Sender, closer: Closer
) -> None:
    """Answer a message and, when it asks to resume, replay: all through ``sender`` (the local stack;
    on AWS the answer is the route's response and the broadcaster replays). A connection whose token
    is revoked is closed by ``closer`` with the answer (the ``UNAUTHORIZED`` error) as its last word."""
    answer = answer_message(database, connection_id, raw)
    if answer.close:
        _close(database, closer, [connection_id])
        return
    sender.send({connection_id: [answer.reply]})
    if answer.resume_from is not None:
        replay(database, connection_id, answer.resume_from, sender, closer)


def _replay(
    database: Database,
    subscriber: Subscriber,
    owner: UUID | None,
    contract_ids: list[UUID] | None,
    after: int,
    sender: Sender,
    *,
    budget: int = MAX_REPLAY,
) -> tuple[int, int, bool, bool]:
    """Send the subscriber's events after ``after``, page by page, while its token is live; (new
    cursor, sent, complete, refused: the token was found revoked)."""
    cursor, sent = after, 0
    while sent < budget:
        with transaction(database) as conn:
            if not monitor_sql.is_authorized(conn, subscriber.connection_id):
                return cursor, sent, False, True
            rows = monitor_sql.events_after(conn, owner, cursor, min(_REPLAY_PAGE, budget - sent), contract_ids)
            if not rows:
                return cursor, sent, True, False
            events = [from_log(r) for r in rows]
            statuses = monitor_sql.contract_statuses(
                conn, sorted({e["contract_id"] for e in events if e["contract_id"]})
            )
        cursor = int(rows[-1]["id"])
        mine = route(events, [subscriber], statuses).get(subscriber.connection_id, [])
        if mine:
            gone = sender.send({subscriber.connection_id: [public(e) for e in mine]})
            if subscriber.connection_id in gone:
                return cursor, sent, False, False
            sent += len(mine)
    return cursor, sent, False, False
