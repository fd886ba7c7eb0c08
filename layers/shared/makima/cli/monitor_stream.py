"""The ``contracts monitor`` connection: an endless async iterator of monitor events, with reconnects,
resume and de-duplication, and nothing of how they are shown.

The protocol is docs/api.md's "Monitor": the token as ``?token=``, one filter message, the
``subscribed``/``replayed``/``reload``/``error``/``pong`` answers, and one envelope for every event. What
this module adds on top of a single connection:

- **Reconnect** when the connection drops or cannot be made: exponential backoff with jitter, capped at
  30 s (``backoff``), each attempt announced by a ``Notice``.
- **Resume**: the filter sent on every reconnect carries ``last_event_id``, the newest *logged* event id seen
  (digits; heartbeat ids ``hb:…`` are not positions in the log), so the server replays what was missed.
- **De-duplicate** by ``id``: delivery is at least once, and a replay may repeat what arrived live.
- **Reload**: when the server cuts a replay short (``reload``) the stream yields a ``Notice("reload")``
  (the dashboard reloads its table from the API; the line output says so) and the cursor moves to the
  head the server named, then events go on live.
- **Refusals are final**: a token refused during the handshake (HTTP 401/403) raises ``MonitorError``
  instead of retrying, as does a URL with no monitor behind it (HTTP 404) or a filter the server rejects.

The decisions are taken by pure, synchronous pieces (``Cursor``, ``Session``, ``backoff``, ``Selection``) that
tests drive message by message; ``events`` is the thin asynchronous loop around them.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException
from websockets.frames import CLOSE_CODE_EXPLANATIONS

from makima.domain.monitor import STALE_DETECTED, log_id

MONITOR_PATH = "/api/v1/contracts/monitor"

# The server closes a monitor whose token was revoked with this code (makima.local.monitor).
CLOSE_UNAUTHORIZED = 4401

# Reconnect delays: exponential from BACKOFF_BASE seconds, capped, with jitter (see ``backoff``).
BACKOFF_BASE = 1.0
BACKOFF_CAP = 30.0
# An application ping after this many seconds without a message: API Gateway closes connections idle for
# 10 minutes (the WebSocket-level keepalive pings every 20 s detect a dead peer in the meantime).
PING_AFTER_IDLE = 240.0
OPEN_TIMEOUT = 10.0
# A refusal after the token has worked is retried this often before it is believed: the local stack
# refuses every handshake (HTTP 403) while its database is unavailable.
REFUSALS_TOLERATED_AFTER_CONNECTING = 3
# How many event ids the de-duplication remembers (far more than can be in flight at once).
DEDUPE_WINDOW = 10_000

Event = dict[str, Any]
CONTROL_TYPES = frozenset({"subscribed", "replayed", "reload", "error", "pong"})

# --- What --quiet and --stale show ------------------------------------------------------------------------

# The important events, the only ones --quiet shows. Listed once here; ``is_important`` adds the conditions
# on task_completed and supervisor_state_changed.
IMPORTANT_TYPES = frozenset(
    {
        "status_changed",
        "phase_changed",
        "stale_detected",
        "question_asked",
        "completion_detected",
        "task_completed",  # only a failed task: success false
        "supervisor_state_changed",  # only into ALARMING_SUPERVISOR_STATES
    }
)
ALARMING_SUPERVISOR_STATES = frozenset({"failed", "interrupted", "blocked"})


def is_important(event: Mapping[str, Any]) -> bool:
    """Whether --quiet shows ``event``: a status or phase change, a contract going stale, a question asked,
    completion detected, a task that failed, a supervisor that failed, was interrupted or is blocked."""
    kind = event.get("type")
    if kind not in IMPORTANT_TYPES:
        return False
    data = event.get("data") or {}
    if kind == "task_completed":
        return data.get("success") is False
    if kind == "supervisor_state_changed":
        return data.get("new_state") in ALARMING_SUPERVISOR_STATES
    return True


@dataclass(frozen=True, slots=True)
class Selection:
    """Which received events are shown: all of them, the important ones (--quiet), or only contracts going
    stale (--stale: ``stale_detected`` events, whatever --quiet says)."""

    quiet: bool = False
    stale: bool = False

    def shows(self, event: Mapping[str, Any]) -> bool:
        if self.stale:
            return event.get("type") == STALE_DETECTED
        if self.quiet:
            return is_important(event)
        return True


# --- Where to connect and what to ask for ----------------------------------------------------------------


def monitor_url(api_url: str, override: str | None = None) -> str:
    """The monitor's address: ``override`` as given (``ws``/``wss``, or ``http``/``https`` turned into them),
    else the API's base URL with http→ws, https→wss and the path ``/api/v1/contracts/monitor``.
    On AWS the monitor is another host (the stack's ``MonitorUrl`` output): pass it as the override."""
    if override:
        parts = urlsplit(override.strip())
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
        if scheme not in ("ws", "wss") or not parts.netloc:
            raise ValueError(f"not a WebSocket URL: {override!r} (expected ws://… or wss://…)")
        return urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))
    parts = urlsplit(api_url.strip())
    api_scheme = {"http": "ws", "https": "wss"}.get(parts.scheme)
    if api_scheme is None or not parts.netloc:
        raise ValueError(f"not an http(s) API URL: {api_url!r}")
    base = parts.path.rstrip("/")
    base = base.removesuffix("/api/v1")
    return urlunsplit((api_scheme, parts.netloc, base + MONITOR_PATH, "", ""))


def with_token(url: str, token: str) -> str:
    """``url`` with ``?token=`` (the protocol's way: browsers cannot set headers on a WebSocket)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
    query.append(("token", token))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


def shown_url(url: str) -> str:
    """``url`` without its query, so a token never reaches a terminal or a log."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


@dataclass(frozen=True, slots=True)
class Filter:
    """What the monitor asks the server for (the protocol's filter message)."""

    contract_ids: tuple[str, ...] | None = None
    statuses: tuple[str, ...] | None = None
    include_heartbeats: bool = False
    include_stale: bool = True

    def message(self, last_event_id: str | None = None) -> dict[str, Any]:
        msg: dict[str, Any] = {
            "contract_ids": list(self.contract_ids) if self.contract_ids is not None else None,
            "statuses": list(self.statuses) if self.statuses is not None else None,
            "include_stale": self.include_stale,
            "include_heartbeats": self.include_heartbeats,
        }
        if last_event_id is not None:
            msg["last_event_id"] = last_event_id
        return msg


# --- Resume and de-duplication ---------------------------------------------------------------------------


class Cursor:
    """Where to resume from (``last_event_id``: the newest logged event seen) and which ids were seen."""

    def __init__(self, window: int = DEDUPE_WINDOW) -> None:
        self.newest: int | None = None
        self._seen: set[str] = set()
        self._order: deque[str] = deque()
        self._window = window

    @property
    def last_event_id(self) -> str | None:
        return str(self.newest) if self.newest is not None else None

    def accept(self, event: Mapping[str, Any]) -> bool:
        """Record ``event``; False when its id was seen already (a duplicate, to drop)."""
        raw = event.get("id")
        if not isinstance(raw, str) or not raw:
            return True  # nothing to de-duplicate on; pass it through
        if raw in self._seen:
            return False
        self._seen.add(raw)
        self._order.append(raw)
        if len(self._order) > self._window:
            self._seen.discard(self._order.popleft())
        position = log_id(event)
        if position is not None:
            self.skip_to(position)
        return True

    def skip_to(self, position: int) -> None:
        """Resume from ``position`` at the latest: the server said what lies before it is not worth
        replaying (a ``reload`` answer: the client reloads its snapshot instead)."""
        if self.newest is None or position > self.newest:
            self.newest = position


# --- One connection, message by message ------------------------------------------------------------------

NoticeKind = Literal["connected", "resumed", "reconnecting", "warning", "reload"]


@dataclass(frozen=True, slots=True)
class Notice:
    """Something about the connection itself, for stderr or a status bar; never an event."""

    kind: NoticeKind
    message: str
    delay: float | None = None  # reconnecting: seconds until the next attempt
    count: int | None = None  # resumed, reload: events replayed


class MonitorError(Exception):
    """The monitor cannot go on: a refused token, no monitor at the URL, a filter the server rejects."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


Item = Event | Notice


@dataclass
class Session:
    """One connection's side of the protocol, without I/O: the opening filter message, then what each
    received message means. Events that arrive before the ``subscribed`` answer were routed under the
    server's default filter, not ours, and are dropped (a resume replays the ones that match)."""

    filter: Filter
    cursor: Cursor
    url: str  # for the notices (no token in it)
    subscribed: bool = False
    resuming_from: str | None = field(default=None, init=False)

    def opening(self) -> dict[str, Any]:
        self.resuming_from = self.cursor.last_event_id
        return self.filter.message(self.resuming_from)

    def receive(self, msg: Mapping[str, Any]) -> list[Item]:
        kind = msg.get("type")
        if kind == "subscribed":
            self.subscribed = True
            return [Notice("connected", f"connected to {self.url}")]
        if kind == "replayed":
            # The server read the log up to last_event_id with our filter: a later resume starts there,
            # even when nothing it read was ours (the next resume does not read it again).
            replayed_to = str(msg.get("last_event_id") or "")
            if replayed_to.isdigit():
                self.cursor.skip_to(int(replayed_to))
            count = int(msg.get("count") or 0)
            text = f"resumed after event {self.resuming_from}: {count} missed event(s) replayed"
            notices = [Notice("resumed", text, count=count)]
            if msg.get("complete") is False:
                notices.append(Notice("warning", "more events were missed than the server replays; some are not shown"))
            return list(notices)
        if kind == "reload":
            # The server gave up replaying (too far behind, too many events, its deadline): the connection
            # is live, and what was missed is to be read from a fresh snapshot. A later reconnect resumes
            # from the log's head as the server saw it, not from the gap again.
            count = int(msg.get("count") or 0)
            head = str(msg.get("last_event_id") or "")
            if head.isdigit():
                self.cursor.skip_to(int(head))
            reason = str(msg.get("reason") or "the server's replay limit")
            text = (
                f"not every event missed after {self.resuming_from} was replayed ({reason}; {count} sent);"
                f" live from {head}"
            )
            return [Notice("reload", text, count=count)]
        if kind == "error":
            code = str(msg.get("code") or "ERROR")
            text = str(msg.get("message") or "the server refused the message")
            # A revoked token (the server says so, then closes with 4401) ends the monitor like a refused
            # handshake: reconnecting would only be refused again.
            if not self.subscribed or code == "UNAUTHORIZED":
                raise MonitorError(code, text)
            return [Notice("warning", f"{code}: {text}")]
        if kind == "pong" or kind is None or "id" not in msg:
            return []
        if not self.subscribed or not self.cursor.accept(msg):
            return []
        return [dict(msg)]


def backoff(attempt: int, rng: Callable[[], float] = random.random) -> float:
    """Seconds before reconnect attempt ``attempt`` (1, 2, …): 1, 2, 4, … capped at 30, of which the upper
    half is random (jitter), so many monitors cut off at once do not come back in step."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** max(0, attempt - 1))
    return float(ceiling / 2 + rng() * ceiling / 2)


def _why(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed):
        frame = exc.rcvd
        if frame is None:
            return "connection dropped"
        said = frame.reason or CLOSE_CODE_EXPLANATIONS.get(frame.code, "")
        return f"closed by the server: {frame.code}" + (f" {said}" if said else "")
    if isinstance(exc, InvalidStatus):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


# --- The loop --------------------------------------------------------------------------------------------


async def events(
    url: str,
    token: str,
    flt: Filter,
    *,
    cursor: Cursor | None = None,
    rng: Callable[[], float] = random.random,
    ping_after: float = PING_AFTER_IDLE,
) -> AsyncGenerator[Item, None]:
    """Events (envelopes, as the server sent them) and ``Notice``s, forever: connects to ``url`` (no token
    in it), subscribes with ``flt``, and reconnects and resumes whenever the connection is lost. Raises
    ``MonitorError`` when going on is pointless (a refused token, no monitor at the URL, a rejected filter)."""
    cursor = cursor or Cursor()
    target = with_token(url, token)
    attempt = 0
    ever_connected = False
    refusals = 0
    while True:
        session = Session(flt, cursor, shown_url(url))
        try:
            async with connect(target, open_timeout=OPEN_TIMEOUT, user_agent_header="makima-cli") as ws:
                await ws.send(json.dumps(session.opening()))
                while True:
                    try:
                        raw = await asyncio.wait_for(ws.recv(), timeout=ping_after)
                    except TimeoutError:
                        await ws.send(json.dumps({"action": "ping"}))
                        continue
                    try:
                        msg = json.loads(raw)
                    except ValueError:
                        continue
                    if not isinstance(msg, dict):
                        continue
                    for item in session.receive(msg):
                        if isinstance(item, Notice) and item.kind == "connected":
                            attempt, refusals, ever_connected = 0, 0, True
                        yield item
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403):
                refusals += 1
                if not ever_connected or refusals > REFUSALS_TOLERATED_AFTER_CONNECTING:
                    raise MonitorError(
                        "UNAUTHORIZED", f"the monitor refused the token (HTTP {status}): missing, unknown or revoked"
                    ) from None
            elif status == 404:
                raise MonitorError(
                    "NOT_FOUND", f"no monitor at {shown_url(url)} (HTTP 404); set --monitor-url or MAKIMA_MONITOR_URL"
                ) from None
            reason = _why(exc)
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == CLOSE_UNAUTHORIZED:
                raise MonitorError("UNAUTHORIZED", exc.rcvd.reason or "the token was revoked") from None
            reason = _why(exc)
        except InvalidURI as exc:
            raise MonitorError("BAD_REQUEST", f"not a WebSocket URL: {shown_url(url)}") from exc
        except (OSError, TimeoutError, WebSocketException) as exc:
            reason = _why(exc)
        attempt += 1
        delay = backoff(attempt, rng)
        if session.subscribed:
            text = f"disconnected ({reason}); reconnecting in {delay:.1f}s"
        elif ever_connected:
            text = f"still disconnected ({reason}); reconnecting in {delay:.1f}s"
        else:
            text = f"cannot connect to {shown_url(url)} ({reason}); retrying in {delay:.1f}s"
        yield Notice("reconnecting", text, delay=delay)
        await asyncio.sleep(delay)
