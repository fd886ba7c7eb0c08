"""The local stack's notices: one thread holding one LISTEN connection fans the NOTIFY of each collected
sync request (db/sync_notices.py) out to the requests waiting for it, and forgets each revoked token in
the process's principal cache (services/principal_cache.py).

A waiting request is a coroutine parked on an ``asyncio.Event`` of its own event loop; this thread
sets it with ``call_soon_threadsafe``. So however many requests wait, they hold no threadpool thread
and no pooled connection: the only connection is this one.

Losing the connection (PostgreSQL restarted, the backend terminated, the network cut) loses the notices
sent meanwhile, so: while it is down, waiters fall back to reading every ``DOWN_POLL`` seconds; once
it is back (re-opened with backoff up to ``RETRY_CAP``), every waiter is woken to read once, which
finds whatever was delivered in the gap. The principal cache answers only while the LISTEN is held:
it is suspended (emptied, unused) as the connection is lost and resumed empty once it is back, so a
revocation whose notice fell in the gap is still looked up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from uuid import UUID

import psycopg

from makima.db import sync_notices
from makima.services.principal_cache import PrincipalCache
from makima.services.sync_waits import SyncWaits, Wakeup

log = logging.getLogger("makima.sync")

# Seconds between the listener's liveness round trips (a silently dead connection is found within
# this), and the longest it blocks waiting for notices (how soon ``stop`` takes effect).
KEEPALIVE = 5.0
STOP_WITHIN = 0.5
# While the listener is down, waiters read this often (a degraded wait, never a stuck one).
DOWN_POLL = 1.0
RETRY_FIRST = 0.1
RETRY_CAP = 5.0


class _Waiter:
    """One waiting request: an event on its own loop, set from the listener's thread."""

    __slots__ = ("event", "listener", "loop")

    def __init__(self, listener: SyncListener) -> None:
        self.loop = asyncio.get_running_loop()
        self.event = asyncio.Event()
        self.listener = listener

    def wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # its loop closed: nobody waits any more
            self.loop.call_soon_threadsafe(self.event.set)

    async def wait(self, timeout: float) -> None:
        if not self.listener.listening.is_set():
            timeout = min(timeout, DOWN_POLL)
        try:
            await asyncio.wait_for(self.event.wait(), max(0.0, timeout))
        except TimeoutError:
            pass
        finally:
            self.event.clear()


class SyncListener(SyncWaits):
    """Start it once per process (``start``), before serving; ``stop`` at shutdown."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 5.0,
        keepalive: float = KEEPALIVE,
        principals: PrincipalCache | None = None,
    ) -> None:
        self.url = url
        self.principals = principals
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.listening = threading.Event()  # the LISTEN is in place
        self.reconnects = 0
        self._waiters: dict[UUID, set[_Waiter]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def subscribe(self, contract_id: UUID) -> Iterator[Wakeup]:
        waiter = _Waiter(self)
        with self._lock:
            self._waiters.setdefault(contract_id, set()).add(waiter)
        try:
            yield waiter
        finally:
            with self._lock:
                waiting = self._waiters.get(contract_id)
                if waiting is not None:
                    waiting.discard(waiter)
                    if not waiting:
                        del self._waiters[contract_id]

    def waiting(self) -> int:
        with self._lock:
            return sum(len(w) for w in self._waiters.values())

    def start(self) -> SyncListener:
        self._thread = threading.Thread(target=self._run, name="makima-sync-listener", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.connect_timeout + 5)
        self._close()

    def _wake(self, contract_id: UUID) -> None:
        with self._lock:
            waiters = list(self._waiters.get(contract_id, ()))
        for w in waiters:
            w.wake()

    def _wake_all(self) -> None:
        with self._lock:
            waiters = [w for ws in self._waiters.values() for w in ws]
        for w in waiters:
            w.wake()

    def _close(self) -> None:
        if self.principals is not None:
            self.principals.suspend()
        self.listening.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _run(self) -> None:
        delay = RETRY_FIRST
        while not self._stop.is_set():
            try:
                self._conn = sync_notices.connect_listener(self.url, connect_timeout=self.connect_timeout)
                self.listening.set()
                if self.principals is not None:
                    self.principals.resume()
                delay = RETRY_FIRST
                self._wake_all()  # whatever was delivered before the LISTEN took effect is read now
                pinged = time.monotonic()
                while not self._stop.is_set():
                    for channel, id_ in sync_notices.notices(self._conn, timeout=STOP_WITHIN):
                        if channel == sync_notices.TOKEN_CHANNEL:
                            if self.principals is not None:
                                self.principals.forget(id_)
                        else:
                            self._wake(id_)
                    if time.monotonic() - pinged >= self.keepalive:
                        sync_notices.ping(self._conn)
                        pinged = time.monotonic()
            except psycopg.Error as exc:
                if self._stop.is_set():
                    break
                log.warning("sync listener: connection lost (%s); reconnecting in %.1f s", type(exc).__name__, delay)
                self._close()
                self.reconnects += 1
                self._stop.wait(delay)
                delay = min(RETRY_CAP, delay * 2)
            except Exception:  # never let the thread die: waits would degrade to DOWN_POLL for good
                log.exception("sync listener failed; restarting it")
                self._close()
                self._stop.wait(delay)
                delay = min(RETRY_CAP, delay * 2)
        self._close()
