"""Waiting for a sync request to be collected (``POST …/supervisor/sync`` with ``wait_seconds``),
without holding a thread or a database connection while nothing happens.

The old wait slept in a threadpool thread for up to 25 s and read the database every 200 ms: 45 waits
of one user took the whole threadpool, and another user's ``GET /contracts`` queued behind them for
seconds. Now a wait is a coroutine parked on a wake-up (``SyncWaits``); it reads the database only
when woken, and once more at the end of its wait, each read a short checkout on the threadpool.

Who wakes it:

- the local stack: ``local/sync_listener.py``, one thread holding one LISTEN connection, woken by the
  NOTIFY of the heartbeat that collected the request (db/sync_notices.py), so a wait ends within
  milliseconds of that heartbeat's commit;
- everywhere else (a Lambda, apps built without a listener): ``PollingWaits``, a schedule that backs
  off from 0.25 s to 2 s. On Lambda the wait holds its own container anyway (one request per
  container), so what matters there is the database: about 15 reads in 25 s instead of 125, and no
  LISTEN, which would pin the RDS Proxy session to one database connection for the container's life.

``WaitLimiter`` bounds the waits of one process: per token (past it, 429 ``RATE_LIMITED`` with
``Retry-After`` = when that token's first wait ends) and in all (the same answer), before anything
is asked of the supervisor.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import ParamSpec, Protocol, TypeVar
from uuid import UUID

from makima.db.connection import Database
from makima.domain.principals import Principal
from makima.errors import RateLimited
from makima.services import supervisors
from makima.services.supervisors import SyncResult

P = ParamSpec("P")
T = TypeVar("T")


class Blocking(Protocol):
    """Runs a blocking call off the event loop (``api/concurrency.py: blocking``)."""

    async def __call__(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T: ...


class Wakeup(Protocol):
    async def wait(self, timeout: float) -> None:
        """Return when woken (the delivery may have come), or after ``timeout`` seconds."""


class SyncWaits(ABC):
    """Where sync waits park (the port; adapters: ``PollingWaits``, ``local.sync_listener.SyncListener``)."""

    @abstractmethod
    def subscribe(self, contract_id: UUID) -> AbstractContextManager[Wakeup]:
        """A wake-up for deliveries to ``contract_id``'s supervisor, from now until the block ends.
        Wake-ups may be spurious (the waiter reads to know); none may be lost while subscribed."""


# Between reads when nothing notifies: quick at first (a heartbeat may be due), then every 2 s.
POLL_FIRST = 0.25
POLL_CAP = 2.0


def poll_intervals(first: float = POLL_FIRST, cap: float = POLL_CAP) -> Iterator[float]:
    """``first``, doubling up to ``cap``, then ``cap`` forever."""
    interval = first
    while True:
        yield interval
        interval = min(cap, interval * 2)


class _Schedule:
    def __init__(self, first: float, cap: float) -> None:
        self._intervals = poll_intervals(first, cap)

    async def wait(self, timeout: float) -> None:
        await asyncio.sleep(max(0.0, min(next(self._intervals), timeout)))


class PollingWaits(SyncWaits):
    """Wakes on a backing-off schedule: no notifications needed (Lambda, tests)."""

    def __init__(self, first: float = POLL_FIRST, cap: float = POLL_CAP) -> None:
        self.first, self.cap = first, cap

    @contextmanager
    def subscribe(self, contract_id: UUID) -> Iterator[Wakeup]:
        yield _Schedule(self.first, self.cap)


class WaitLimiter:
    """How many sync waits this process holds: at most ``per_token`` for one token, ``total`` in all
    (0: no limit). Waits that do not wait (``wait_seconds`` 0) are not counted."""

    def __init__(self, *, per_token: int, total: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_token, self.total, self.clock = per_token, total, clock
        self._ends: dict[UUID, list[float]] = {}  # token -> when each of its waits ends at the latest
        self._held = 0
        self._lock = threading.Lock()

    def held(self, principal: Principal | None = None) -> int:
        with self._lock:
            return self._held if principal is None else len(self._ends.get(_key(principal), []))

    @contextmanager
    def admit(self, principal: Principal, wait_seconds: float) -> Iterator[None]:
        """Hold one wait of ``principal``'s token for the block; ``RateLimited`` past a limit."""
        if wait_seconds <= 0:
            yield
            return
        key, end = _key(principal), self.clock() + wait_seconds
        with self._lock:
            if self.per_token and len(self._ends.get(key, ())) >= self.per_token:
                raise self._refused(self._ends[key], "token", self.per_token)
            if self.total and self._held >= self.total:
                raise self._refused([e for ends in self._ends.values() for e in ends], "process", self.total)
            mine = self._ends.setdefault(key, [])
            mine.append(end)
            self._held += 1
        try:
            yield
        finally:
            with self._lock:
                mine.remove(end)
                self._held -= 1
                if not mine:
                    self._ends.pop(key, None)

    def _refused(self, ends: list[float], scope: str, limit: int) -> RateLimited:
        """Retry when the first of the waits in the way ends (at the latest)."""
        retry = max(1, math.ceil(min(ends, default=self.clock()) - self.clock()))
        return RateLimited(
            f"too many sync waits at once ({limit} per {scope}); retry after {retry} s, or ask with wait_seconds 0",
            retry_after=retry,
            limit={"kind": "sync_waits", "scope": scope, "concurrent": limit},
        )


def _key(principal: Principal) -> UUID:
    return principal.token_id or principal.user_id


async def wait_for_sync(
    db: Database,
    principal: Principal,
    contract_id: UUID,
    *,
    wait_seconds: float,
    waits: SyncWaits,
    blocking: Blocking,
    clock: Callable[[], float] = time.monotonic,
) -> SyncResult:
    """Ask for a sync (``supervisors.ask_sync``: ``SupervisorDead`` at once for one that cannot answer)
    and wait up to ``wait_seconds`` for the heartbeat that collects it: ``synced`` then, with the
    state it reported; else not synced, with the state last known (the request stands)."""
    if wait_seconds <= 0:
        asked = await blocking(supervisors.ask_sync, db, principal, contract_id)
        return SyncResult(False, asked.supervisor, 0.0)
    # Subscribed before asking: a heartbeat collecting the request right after it commits still wakes us.
    with waits.subscribe(contract_id) as wakeup:
        asked = await blocking(supervisors.ask_sync, db, principal, contract_id)
        started = clock()
        deadline = started + wait_seconds
        while (remaining := deadline - clock()) > 0:
            await wakeup.wait(remaining)
            done = await blocking(supervisors.sync_delivered, db, asked)
            if done is not None:
                return SyncResult(True, done, round(clock() - started, 3))
    return SyncResult(False, asked.supervisor, round(clock() - started, 3))
