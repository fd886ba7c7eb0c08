"""The local stack's event pipeline and WebSocket monitor: what EventBridge, the broadcaster function and
the API Gateway WebSocket API do on AWS, in-process, running the same services.

- ``OutboxPump``: a thread that publishes the outbox after each write (``committed`` pokes it) and
  sweeps it every second, and broadcasts heartbeats; it calls ``services.monitor.broadcast`` like
  the broadcaster function does.
- ``LocalHub``: the ``Sender`` of the local stack: one bounded queue per open WebSocket. Sending only
  enqueues, so a slow client never delays the others; a client whose queue overflows is closed.
- ``mount_monitor``: ``WS /api/v1/contracts/monitor`` (token as ``?token=`` or a bearer header),
  speaking the protocol of ``services.monitor.handle_message``.

A monitor's token is checked at the handshake and on every message, and routing sends nothing to a
connection whose token is revoked. Revoking a token closes its open monitors (the ``UNAUTHORIZED``
error, then close code 4401): at once when the revocation goes through this process's API
(``OutboxPump.token_revoked``), and within a sweep (a second) when another process revoked it in the
same database.

The monitor is part of the ``monitoring_dashboard`` feature: while that flag is off a new connection
gets a ``FEATURE_DISABLED`` error message and is closed with 4404, and the pump closes the open ones
the same way within a sweep (they reconnect, and are refused, until the flag is on again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketState

from makima.config import MonitorConfig
from makima.db import monitor as monitor_sql
from makima.db.connection import Database, transaction
from makima.errors import DatabaseUnavailable, FeatureDisabled, Forbidden, TooManyConnections, Unauthorized
from makima.flags import Flag, Flags
from makima.services import auth
from makima.services import monitor as svc

log = logging.getLogger("makima.monitor")

MONITOR_PATH = "/api/v1/contracts/monitor"
# Messages waiting for one client before it is deemed too slow and closed (it reconnects and resumes).
QUEUE_LIMIT = 5_000
CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_SLOW = 4408
CLOSE_TRY_AGAIN_LATER = 1013
# The monitoring_dashboard flag is off (4000-4999: application codes; 4404 echoes the HTTP answer).
CLOSE_FEATURE_DISABLED = 4404
# The token holds as many open monitors as [monitor] max_connections_per_token allows (HTTP's 429).
CLOSE_TOO_MANY_CONNECTIONS = 4429
# What the server (uvicorn) reads of one message at most, as a multiple of [monitor] max_message_bytes:
# between the two a message gets the PAYLOAD_TOO_LARGE error and the connection stays; past this one
# the transport closes it (1009, "message too big") without reading it.
TRANSPORT_MAX_FACTOR = 2


def transport_max_size(limits: MonitorConfig) -> int:
    """The WebSocket server's ``ws_max_size`` for these limits (see TRANSPORT_MAX_FACTOR)."""
    return limits.max_message_bytes * TRANSPORT_MAX_FACTOR


class _Close:
    """Queued for a client in place of a frame: send ``message`` (if any), then close with ``code``."""

    __slots__ = ("code", "message", "reason")

    def __init__(self, code: int, reason: str, message: str | None = None) -> None:
        self.code, self.reason, self.message = code, reason, message


_TOO_SLOW = _Close(CLOSE_TOO_SLOW, "too slow: reconnect and resume")


class _Client:
    __slots__ = ("overflowed", "queue")

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str | _Close] = asyncio.Queue()
        self.overflowed = False


def feature_disabled() -> tuple[FeatureDisabled, str]:
    """The error of the disabled monitor, and its frame (the protocol's error message)."""
    exc = FeatureDisabled(
        f"the {Flag.MONITORING_DASHBOARD.value} feature is disabled", {"feature": Flag.MONITORING_DASHBOARD.value}
    )
    return exc, json.dumps(svc.error_message(exc.code, exc.message, exc.details))


class LocalHub:
    """Open monitor connections of this process, by connection id."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._clients: dict[str, _Client] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self, connection_id: str) -> _Client:
        self._loop = asyncio.get_running_loop()
        client = _Client()
        with self._lock:
            self._clients[connection_id] = client
        return client

    def forget(self, connection_id: str) -> None:
        """The socket is gone: stop queueing for it."""
        with self._lock:
            self._clients.pop(connection_id, None)

    def close(self, connection_ids: Sequence[str], error: Unauthorized) -> set[str]:
        """The ``Closer``: each connection open here gets the error message, then close code 4401 with
        the error as reason (from any thread). Returns the ones told to close, and those not open here
        (gone: nothing of theirs is left to close)."""
        frame = json.dumps(svc.error_message(error.code, error.message, error.details))
        close = _Close(CLOSE_UNAUTHORIZED, error.message[:120], frame)
        loop = self._loop
        with self._lock:
            clients = [c for c in (self._clients.get(cid) for cid in connection_ids) if c is not None]
        if clients and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._close_each, clients, close)
        return set(connection_ids)

    def closer_for(self, endpoint: str) -> LocalHub | None:
        """``ClosersByEndpoint``: this hub closes the connections of its own endpoint only."""
        return self if endpoint == self.endpoint else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._clients)

    def close_all(self, code: int, reason: str, message: str | None = None) -> int:
        """Close every open connection (from any thread): each gets ``message``, then the close frame.
        Returns how many were told to close."""
        loop = self._loop
        with self._lock:
            clients = list(self._clients.values())
        if not clients or loop is None or loop.is_closed():
            return 0
        close = _Close(code, reason, message)
        loop.call_soon_threadsafe(self._close_each, clients, close)
        return len(clients)

    @staticmethod
    def _close_each(clients: list[_Client], close: _Close) -> None:
        for client in clients:
            if not client.overflowed:
                client.overflowed = True  # nothing more is queued for it
                client.queue.put_nowait(close)

    def send(self, deliveries: Mapping[str, Sequence[Mapping[str, Any]]]) -> set[str]:
        """Enqueue (from any thread); the connections not open here are reported gone.

        Each distinct message is serialised once however many connections get it, and the whole batch
        crosses to the event loop in one hand-off (tests/bench/bench_monitor.py: both were per
        connection, a seventh of the CPU of a fan-out to 1,000)."""
        gone: set[str] = set()
        loop = self._loop
        frames: dict[int, str] = {}
        batch: list[tuple[_Client, list[str]]] = []
        with self._lock:
            clients = {cid: self._clients.get(cid) for cid in deliveries}
        for connection_id, messages in deliveries.items():
            client = clients[connection_id]
            if client is None or loop is None or loop.is_closed():
                gone.add(connection_id)
                continue
            out = []
            for message in messages:
                frame = frames.get(id(message))
                if frame is None:
                    frame = frames[id(message)] = json.dumps(message, default=str)
                out.append(frame)
            batch.append((client, out))
        if batch and loop is not None:
            loop.call_soon_threadsafe(self._enqueue_all, batch)
        return gone

    @classmethod
    def _enqueue_all(cls, batch: list[tuple[_Client, list[str]]]) -> None:
        for client, frames in batch:
            cls._enqueue(client, frames)

    @staticmethod
    def _enqueue(client: _Client, frames: list[str]) -> None:
        if client.overflowed:
            return
        if client.queue.qsize() + len(frames) > QUEUE_LIMIT:
            client.overflowed = True
            client.queue.put_nowait(_TOO_SLOW)  # the writer closes the socket
            return
        for frame in frames:
            client.queue.put_nowait(frame)


class DirectPublisher:
    """Locally, publishing is broadcasting: no bus between the outbox and the connections."""

    def __init__(self, database: Database, hub: LocalHub) -> None:
        self.database = database
        self.hub = hub

    def publish(self, events: Sequence[Mapping[str, Any]]) -> None:
        if len(self.hub):  # no monitor open in this process: nobody to route to, no query needed
            svc.broadcast(self.database, events, self.hub, self.hub.endpoint, self.hub)


class OutboxPump:
    """The local ``EventSink``: publishes the outbox after writes and every ``sweep`` seconds; with
    ``flags``, also closes the open monitors while ``monitoring_dashboard`` is off."""

    def __init__(self, database: Database, hub: LocalHub, *, sweep: float = 1.0, flags: Flags | None = None) -> None:
        self.database = database
        self.publisher = DirectPublisher(database, hub)
        self.sweep = sweep
        self.flags = flags
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._heartbeats: queue.SimpleQueue[list[Mapping[str, Any]]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="makima-outbox", daemon=True)

    def start(self) -> OutboxPump:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    committed_blocks = False  # the pump's thread drains the outbox; a request only wakes it

    def committed(self) -> None:
        self._wake.set()

    def heartbeats(self, events: Sequence[Mapping[str, Any]], logged: bool) -> None:
        """Wake the pump only when there is something to do: a monitor open (for the heartbeats) or
        logged events (state changes). Most heartbeats need neither, and cost nothing more here."""
        if events and len(self.publisher.hub):
            self._heartbeats.put(list(events))
            self._wake.set()
        elif logged:
            self._wake.set()

    def token_revoked(self, token_id: uuid.UUID) -> None:
        """Close this process's monitors opened with the token, now (never raises: the sweep retries)."""
        hub = self.publisher.hub
        if not len(hub):
            return
        try:
            svc.close_unauthorized(self.database, hub.closer_for, token_id=token_id)
        except Exception:
            log.exception("closing the monitors of a revoked token failed; the sweep will retry")

    def close_revoked_monitors(self) -> int:
        """Close the open monitors of this process whose token was revoked (by any process sharing the
        database); how many. Only while monitors are open: then it is one indexed query per sweep."""
        hub = self.publisher.hub
        if not len(hub):
            return 0
        return svc.close_unauthorized(self.database, hub.closer_for, endpoint=hub.endpoint)

    def close_disabled_monitors(self) -> int:
        """While the monitoring_dashboard flag is off, close the open monitors; how many were closed."""
        hub = self.publisher.hub
        if self.flags is None or not len(hub) or self.flags.enabled(Flag.MONITORING_DASHBOARD):
            return 0
        exc, frame = feature_disabled()
        return hub.close_all(CLOSE_FEATURE_DISABLED, exc.message, frame)

    def run_once(self) -> int:
        """Publish what is pending now; the number of logged events published."""
        self.close_disabled_monitors()
        self.close_revoked_monitors()
        beats: list[Mapping[str, Any]] = []
        while not self._heartbeats.empty():
            beats.extend(self._heartbeats.get_nowait())
        published = svc.drain_in_process(self.database, self.publisher)
        if beats:
            self.publisher.publish(beats)
        return published

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.sweep)
            self._wake.clear()
            try:
                self.run_once()
            except DatabaseUnavailable:
                log.warning("outbox: database unavailable; retrying")
            except Exception:  # the pump must outlive any one failure; the next sweep retries
                log.exception("outbox: publishing failed")


def _token(websocket: WebSocket) -> str | None:
    return websocket.query_params.get("token") or auth.bearer(websocket.headers.get("authorization"))


def mount_monitor(
    app: FastAPI,
    database: Database,
    hub: LocalHub,
    flags: Flags | None = None,
    limits: MonitorConfig | None = None,
) -> None:
    """Serve the monitor protocol on ``app`` (the local stack's; Lambda apps never get it). With
    ``flags``, a connection opened while ``monitoring_dashboard`` is off is refused (see above).
    ``limits`` (``[monitor]``): connections per token (one more is accepted, told
    ``TOO_MANY_CONNECTIONS`` and closed with 4429), messages, replays."""
    bounds = limits or MonitorConfig()

    @app.websocket(MONITOR_PATH)
    async def monitor(websocket: WebSocket) -> None:
        if flags is not None and not flags.enabled(Flag.MONITORING_DASHBOARD):
            # Accepted to say why (a refused handshake is a bare HTTP 403), then closed.
            exc, frame = feature_disabled()
            await websocket.accept()
            await websocket.send_text(frame)
            await websocket.close(code=CLOSE_FEATURE_DISABLED, reason=exc.message)
            return
        try:
            principal = await run_in_threadpool(svc.admit, database, _token(websocket))
        except (Unauthorized, Forbidden) as exc:
            # Refused during the handshake: the client sees HTTP 403 (the WebSocket spec has no 401).
            log.info("monitor connection refused: %s", exc)
            await websocket.close(code=CLOSE_UNAUTHORIZED, reason=str(exc)[:120])
            return
        except DatabaseUnavailable:
            # Not the client's fault: accept, then close with "try again later", so a client can tell
            # this from a refused token and retry.
            await websocket.accept()
            await websocket.close(code=CLOSE_TRY_AGAIN_LATER, reason="database unavailable; retry")
            return
        await websocket.accept()
        connection_id = f"local-{uuid.uuid4()}"
        try:
            await run_in_threadpool(svc.connect, database, connection_id, principal, hub.endpoint, bounds)
        except TooManyConnections as refused:
            # Accepted to say why (a refused handshake is a bare HTTP 403), then closed.
            await websocket.send_text(json.dumps(svc.error_message(refused.code, refused.message, refused.details)))
            await websocket.close(code=CLOSE_TOO_MANY_CONNECTIONS, reason="too many monitor connections for this token")
            return
        client = hub.open(connection_id)
        writer = asyncio.create_task(_write(websocket, client))
        try:
            # Until the client leaves, or the writer closed the socket (too slow, feature disabled):
            # reading a socket closed on our side raises, which must not end the app's task noisily.
            while websocket.application_state == WebSocketState.CONNECTED:
                raw = await websocket.receive_text()
                await run_in_threadpool(svc.handle_message, database, connection_id, raw, hub, hub, bounds)
        except WebSocketDisconnect:
            pass
        finally:
            hub.forget(connection_id)
            writer.cancel()
            with contextlib.suppress(Exception):
                await run_in_threadpool(svc.disconnect, database, connection_id)


async def _write(websocket: WebSocket, client: _Client) -> None:
    with contextlib.suppress(Exception):
        while True:
            frame = await client.queue.get()
            if isinstance(frame, _Close):
                if frame.message is not None:
                    await websocket.send_text(frame.message)
                await websocket.close(code=frame.code, reason=frame.reason)
                return
            await websocket.send_text(frame)


def forget_previous_connections(database: Database, endpoint: str) -> int:
    """Rows of this stack's connections that a crash left behind (none of them can be open now)."""
    with transaction(database) as conn:
        return monitor_sql.remove_endpoint(conn, endpoint)
