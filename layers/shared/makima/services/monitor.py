"""The event pipeline behind the monitor (seed 5.1), free of transport: the outbox publisher, the
broadcaster, and the connection protocol. AWS (EventBridge, API Gateway WebSocket) and the local
stack (in-process, uvicorn WebSocket) plug in a ``Publisher`` and a ``Sender``; nothing else differs.

Delivery is at least once: every event carries its id, a client drops the ids it has seen.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol
from uuid import UUID

from pydantic import ValidationError

from makima.config import MonitorConfig
from makima.db import monitor as monitor_sql
from makima.db import rate_limits as rate_sql
from makima.db.connection import Conn, Database, transaction
from makima.domain.monitor import MonitorFilter, Subscriber, from_log, public, route
from makima.domain.principals import Principal
from makima.domain.rate_limits import Limit, retry_after_header
from makima.errors import DatabaseTimeout, PayloadTooLarge, RateLimited, TooManyConnections, Unauthorized
from makima.services import auth
from makima.services.common import require_api_access

log = logging.getLogger("makima.monitor")

# The defaults of every bound below ([monitor] in the settings; callers pass the configured ones).
DEFAULT_LIMITS = MonitorConfig()
# The most missed events one replay sends (the default of ``[monitor] replay_max_events``).
MAX_REPLAY = DEFAULT_LIMITS.replay_max_events
_REPLAY_PAGE = 500
# Events per ``Sender.send`` during a replay: the deadline is checked between them, so a slow client
# cannot hold a replay (and its Lambda) far past it.
_REPLAY_CHUNK = 100
# How long a resuming connection is skipped by the broadcaster before its replay starts (on AWS the
# request crosses the bus first), and, once the replay runs, past its deadline: if the replay dies on
# the way (the broadcaster's Lambda timeout, a crash), the connection is live again after that.
_RESUME_START_GRACE = timedelta(seconds=60)
_RESUME_END_GRACE = timedelta(seconds=5)
# The monitor's message budget has its own bucket per token in rate_limit_buckets (subject: this
# namespace's UUID of the token id), apart from the token's request budget.
_MESSAGES_NAMESPACE = uuid.UUID("6d6f6e69-746f-7200-8000-6d6573736167")

ReloadReason = Literal["too_far_behind", "too_many_events", "deadline", "failed"]


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
    close those connections too).

    ``committed_blocks``: whether ``committed`` does the publishing itself (a database transaction:
    the API runs it in the threadpool) or only wakes a publisher of its own (called on the event loop:
    a threadpool hop per write just to set an Event cost more than the wake)."""

    committed_blocks: bool

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


def drain_in_process(database: Database, publisher: Publisher, *, batch: int = 500, max_batches: int = 20) -> int:
    """``drain_outbox`` for a publisher whose subscribers live in this process (the local stack's hub):
    the events are marked published and read back in one statement, then published; if the publish
    fails they are put back in the outbox for the next sweep. Returns how many were published.

    The claim-publish-mark transaction of ``drain_outbox`` guards against a crash between publishing and
    marking; here a crash takes the subscribers with it (they reconnect and replay from the log), so
    marking first loses nothing and saves three of the four round trips of every drain, the one that
    follows every write on the local stack (issue 15, docs/performance.md)."""
    published = 0
    for _ in range(max_batches):
        with database.connection() as conn:
            rows = monitor_sql.take_unpublished(conn, batch)
        if not rows:
            break
        rows.sort(key=lambda r: int(r["id"]))
        try:
            publisher.publish([from_log(r) for r in rows])
        except BaseException:
            with database.connection() as conn:
                monitor_sql.mark_unpublished(conn, [r["id"] for r in rows])
            raise
        published += len(rows)
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


def connect(
    database: Database, connection_id: str, principal: Principal, endpoint: str, limits: MonitorConfig = DEFAULT_LIMITS
) -> None:
    """Record the connection with the principal's token, which revocation closes it by.
    ``TooManyConnections`` (nothing recorded) when the token already holds
    ``limits.max_connections_per_token`` open monitors."""
    require_api_access(principal)
    with transaction(database) as conn:
        added = monitor_sql.add_connection(
            conn,
            connection_id,
            principal.user_id,
            is_admin=principal.is_admin,
            endpoint=endpoint,
            token_id=principal.token_id,
            max_per_token=limits.max_connections_per_token,
        )
    if not added:
        most = limits.max_connections_per_token
        raise TooManyConnections(
            f"this token already has {most} open monitor connection(s), the most allowed: close one first",
            {"max_connections_per_token": most},
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


def answer_message(
    database: Database,
    connection_id: str,
    raw: str | bytes | None,
    limits: MonitorConfig = DEFAULT_LIMITS,
    *,
    now: datetime | None = None,
) -> Answer:
    """Validate one message from a monitor — a ping, or a filter (which may ask to resume) — store the
    filter, and say what to answer. A filter that asks to resume marks the connection ``resuming``:
    the broadcaster skips it until ``replay`` has sent what it missed (or a deadline passes).

    A connection whose token is revoked (or was never recorded) gets ``UNAUTHORIZED`` whatever it sent,
    ping included, and is to be closed: the token is checked on every message, not only at the
    handshake. A message over ``limits.max_message_bytes`` gets ``PAYLOAD_TOO_LARGE`` unread, and one
    past the token's message budget ``RATE_LIMITED``; either way nothing changes (the filter stays).
    ``now`` is the rate limit's clock (the database's by default; tests move it)."""
    size = len(raw.encode() if isinstance(raw, str) else raw) if raw else 0
    if size > limits.max_message_bytes:
        too_large = PayloadTooLarge(
            f"the message is {size} bytes; at most {limits.max_message_bytes} are read",
            {"max_bytes": limits.max_message_bytes},
        )
        return Answer(error_message(too_large.code, too_large.message, too_large.details))
    with transaction(database) as conn:
        row = monitor_sql.get_connection(conn, connection_id)
        refused = _spend_message(conn, row, limits, now) if row is not None and row["authorized"] else None
    if row is not None and not row["authorized"]:
        exc = revoked_error()
        return Answer(error_message(exc.code, exc.message), close=True)
    if refused is not None:
        return Answer(error_message(refused.code, refused.message, refused.details))
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
            resuming_for=_RESUME_START_GRACE + timedelta(seconds=limits.replay_deadline_seconds),
        )
    if not stored:
        return Answer(error_message("NOT_FOUND", "this connection is not registered; reconnect"))
    return Answer({"type": "subscribed", "filter": wanted.applied(), "resuming": resume_from is not None}, resume_from)


def _spend_message(
    conn: Conn, row: Mapping[str, Any], limits: MonitorConfig, now: datetime | None
) -> RateLimited | None:
    """Take one message from the token's monitor budget (one upsert on its bucket row, shared by every
    process: on AWS each message is another Lambda invocation); the refusal when none is left."""
    limit = Limit(per_second=limits.messages_per_second, burst=limits.message_burst)
    if limit.off or row["token_id"] is None:
        return None
    subject = uuid.uuid5(_MESSAGES_NAMESPACE, str(row["token_id"]))
    lease = rate_sql.lease(conn, subject, want=1, burst=limit.burst, period_seconds=limit.period_seconds, now=now)
    if lease.granted > 0:
        return None
    wait = retry_after_header(limit.retry_after(lease.debt_seconds))
    return RateLimited(
        f"too many monitor messages on this token: at most {limit.per_second:g} a second (bursts of "
        f"{limit.burst}); retry in {wait} s",
        retry_after=wait,
        limit=limit.describe(),
    )


@dataclass(frozen=True, slots=True)
class _View:
    """What a resuming connection may see, as ``monitor_sql.events_after`` takes it."""

    connection_id: str
    owner: UUID | None
    contract_ids: list[UUID] | None
    statuses: list[str] | None
    include_stale: bool

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> _View:
        return cls(
            connection_id=row["connection_id"],
            owner=None if row["is_admin"] else row["owner_id"],
            contract_ids=row["contract_ids"],
            statuses=row["statuses"],
            include_stale=row["include_stale"],
        )


Outcome = Literal["done", "refused", "gone"] | ReloadReason


def replay(
    database: Database,
    connection_id: str,
    after: int,
    sender: Sender,
    closer: Closer | None = None,
    *,
    limits: MonitorConfig = DEFAULT_LIMITS,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Send a resuming connection the events it may see that were logged after ``after``, in order,
    then a ``replayed`` marker; returns how many were sent.

    The filter runs in SQL (``events_after``), so what it leaves out is never read. The replay is
    bounded: if more than ``limits.replay_max_scanned`` events were logged since ``after``, if more than
    ``replay_max_events`` match, or once ``replay_deadline_seconds`` (by ``clock``) have passed, it
    stops and sends ``{"type": "reload", ...}`` instead of the marker: the client reloads the
    dashboard snapshot, and the connection is live from then on. A replay that fails is answered the
    same way; one that dies unseen (a Lambda timeout) leaves a mark that expires shortly after its
    deadline (``resuming_until``), after which the broadcaster treats the connection as live.

    The connection stays marked ``resuming`` (skipped by the broadcaster) while the log is read; the
    mark is then cleared and the log read once more, so an event broadcast in between is not lost (it
    may arrive twice: ids de-duplicate). Its token is checked with every page: once revoked, nothing
    more is sent, and with ``closer`` the connection is closed.
    """
    deadline = clock() + limits.replay_deadline_seconds
    try:
        return _replay_bounded(database, connection_id, after, sender, closer, limits, clock, deadline)
    except Exception:
        log.exception("monitor %s: the replay failed; telling the client to reload", connection_id)
        try:
            _reload(database, connection_id, sender, "failed", 0)
        except Exception:  # its mark expires on its own (resuming_until)
            log.exception("monitor %s: could not clear the resuming mark", connection_id)
        return 0


def _replay_bounded(
    database: Database,
    connection_id: str,
    after: int,
    sender: Sender,
    closer: Closer | None,
    limits: MonitorConfig,
    clock: Callable[[], float],
    deadline: float,
) -> int:
    with transaction(database) as conn:
        row = monitor_sql.get_connection(conn, connection_id)
        if row is None:
            return 0  # closed meanwhile
        if row["authorized"]:
            monitor_sql.set_resuming(
                conn,
                connection_id,
                True,
                resuming_for=timedelta(seconds=limits.replay_deadline_seconds) + _RESUME_END_GRACE,
            )
        head = monitor_sql.log_head(conn)
    view = _View.of(row)
    scan_end = after + limits.replay_max_scanned
    sent, cursor = 0, after
    outcome: Outcome = "refused" if not row["authorized"] else "too_far_behind" if head > scan_end else "done"
    if outcome == "done":
        cursor, sent, outcome = _replay_pass(database, view, cursor, head, sender, limits, clock, deadline, 0)
    if outcome == "done":
        with transaction(database) as conn:
            monitor_sql.set_resuming(conn, connection_id, False)
            head = monitor_sql.log_head(conn)
        if head > scan_end:
            outcome = "too_far_behind"
        else:
            cursor, sent, outcome = _replay_pass(database, view, cursor, head, sender, limits, clock, deadline, sent)
    if outcome == "refused":
        if closer is not None:
            _close(database, closer, [connection_id])
        return sent
    if outcome == "gone":
        return sent
    if outcome != "done":
        _reload(database, connection_id, sender, outcome, sent)
        return sent
    sender.send({connection_id: [{"type": "replayed", "count": sent, "last_event_id": str(cursor), "complete": True}]})
    return sent


def _replay_pass(
    database: Database,
    view: _View,
    cursor: int,
    until: int,
    sender: Sender,
    limits: MonitorConfig,
    clock: Callable[[], float],
    deadline: float,
    sent: int,
) -> tuple[int, int, Outcome]:
    """Send the view's events in (``cursor``, ``until``], page by page, while its token is live, the
    deadline is ahead and the event budget lasts; (new cursor, total sent, outcome).

    The deadline is checked before each page is read and before each chunk is sent; a page's
    statements themselves are bounded by the role's ``statement_timeout`` only. A per-transaction
    ``statement_timeout`` would cancel a slow page at the deadline, but setting it (``set_config``,
    even transaction-local) pins the broadcaster's RDS Proxy session for the container's life, and RDS
    Proxy forwards no cancel request. A page is one index-driven statement of at most ``_REPLAY_PAGE``
    rows, so a replay overruns its deadline by one slow page at most."""
    cid = view.connection_id
    while True:
        left = limits.replay_max_events - sent
        if deadline - clock() <= 0:
            return cursor, sent, "deadline"
        try:
            with transaction(database) as conn:
                if not monitor_sql.is_authorized(conn, cid):
                    return cursor, sent, "refused"
                # One more than the budget: whether there is more than it (then reload) or exactly it.
                page = min(_REPLAY_PAGE, left + 1)
                rows = monitor_sql.events_after(
                    conn,
                    view.owner,
                    cursor,
                    page,
                    view.contract_ids,
                    statuses=view.statuses,
                    include_stale=view.include_stale,
                    until_id=until,
                )
        except DatabaseTimeout:
            return cursor, sent, "deadline"
        if not rows:
            return until, sent, "done"
        if len(rows) > left:
            rows = rows[:left]
            over = True
        else:
            over = False
        events = [from_log(r) for r in rows]
        for start in range(0, len(events), _REPLAY_CHUNK):
            if clock() >= deadline:
                return cursor, sent, "deadline"
            chunk = events[start : start + _REPLAY_CHUNK]
            if cid in sender.send({cid: [public(e) for e in chunk]}):
                return cursor, sent, "gone"
            sent += len(chunk)
            cursor = int(chunk[-1]["id"])
        if over:
            return cursor, sent, "too_many_events"
        if len(rows) < page:
            return until, sent, "done"


def _reload(database: Database, connection_id: str, sender: Sender, reason: ReloadReason, sent: int) -> None:
    """Give up replaying: the connection goes live now, and is told to reload the dashboard snapshot.
    ``last_event_id`` is the log's head once live: a later resume starts there."""
    with transaction(database) as conn:
        monitor_sql.set_resuming(conn, connection_id, False)
        head = monitor_sql.log_head(conn)
    sender.send({connection_id: [{"type": "reload", "reason": reason, "count": sent, "last_event_id": str(head)}]})


def handle_message(
    database: Database,
    connection_id: str,
    raw: str | bytes | None,
    sender: Sender,
    closer: Closer,
    limits: MonitorConfig = DEFAULT_LIMITS,
) -> None:
    """Answer a message and, when it asks to resume, replay: all through ``sender`` (the local stack;
    on AWS the answer is the route's response and the broadcaster replays). A connection whose token
    is revoked is closed by ``closer`` with the answer (the ``UNAUTHORIZED`` error) as its last word."""
    answer = answer_message(database, connection_id, raw, limits)
    if answer.close:
        _close(database, closer, [connection_id])
        return
    sender.send({connection_id: [answer.reply]})
    if answer.resume_from is not None:
        replay(database, connection_id, answer.resume_from, sender, closer, limits=limits)
