"""Per-token request budgets, enforced in every process that serves the API (the local stack, each
Lambda container) by the same code: a FastAPI dependency (``api/deps.py: get_principal``) asks
``RateLimiter.admit`` for each authenticated request.

One budget per token whatever the number of processes: it lives in one database row per token
(``makima.db.rate_limits``). Going to that row on every request would put a write on the hot path, so a
process leases a slice of the budget (``Limit.slice_size``: a fraction of a second of the rate) with one
upsert and spends it locally; a low limit leases one request at a time and is exact. A refusal is
remembered locally until the bucket has refilled by one request (tokens only ever take from it, so no
one else can make it come sooner), so a throttled client's flood costs no database round trip.

What it guarantees, for one token over any window of ``T`` seconds, with ``P`` processes serving it:
at most ``burst + per_second * T + P * (slice - 1)`` requests admitted (``slice`` = 1, hence exact, for
limits under 2 a second at the default ``slice_seconds``). Units a process leased and did not spend
(it went idle, or was recycled) are lost to the others, which can only make the limit stricter, and
only by less than a slice per process.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from makima.db import rate_limits as rate_limits_sql
from makima.db.connection import Database
from makima.domain.principals import Principal
from makima.domain.rate_limits import Limit, Limits, retry_after_header
from makima.errors import RateLimited


class Clock(Protocol):
    """The limiter's time: ``now`` for the shared bucket (None: the database's clock, shared by every
    process), ``monotonic`` for this process's own bookkeeping. Tests pass one they move."""

    def now(self) -> datetime | None: ...

    def monotonic(self) -> float: ...


class SystemClock:
    def now(self) -> datetime | None:
        return None

    def monotonic(self) -> float:
        return time.monotonic()


@dataclass
class LimiterStats:
    """Counts for tests and the benchmark: round trips taken (``leases``) and refusals."""

    leases: int = 0
    refused: int = 0


@dataclass
class _Slice:
    """This process's part of one token's budget."""

    left: int = 0
    denied_until: float = 0.0


class RateLimiter:
    """The per-token limits of one process. Thread-safe (the local stack admits from many threads)."""

    def __init__(self, db: Database, limits: Limits, *, slice_seconds: float = 0.5, clock: Clock | None = None) -> None:
        self.db = db
        self.limits = limits
        self.slice_seconds = slice_seconds
        self.clock: Clock = clock or SystemClock()
        self.stats = LimiterStats()
        self._slices: dict[UUID, _Slice] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _subject(principal: Principal) -> UUID:
        return principal.token_id or principal.user_id

    def _refuse(self, limit: Limit, seconds: float) -> RateLimited:
        self.stats.refused += 1
        wait = retry_after_header(seconds)
        return RateLimited(
            f"too many requests for this token: retry in {wait} s", retry_after=wait, limit=limit.describe()
        )

    def admit_locally(self, principal: Principal) -> bool:
        """Decide without the database when this process can: True when admitted (a request spent from
        the local slice, or no limit), ``RateLimited`` when refused; False when a lease is needed
        (``admit``). Never blocks: called on the event loop."""
        limit = self.limits.of(principal)
        if limit.off:
            return True
        with self._lock:
            mine = self._slices.get(self._subject(principal))
            if mine is None:
                return False
            if mine.left > 0:
                mine.left -= 1
                return True
            now = self.clock.monotonic()
            if now < mine.denied_until:
                raise self._refuse(limit, mine.denied_until - now)
        return False

    def admit(self, principal: Principal) -> None:
        """Admit one request of ``principal`` or raise ``RateLimited`` (with the seconds to wait).
        Leases a new slice from the shared bucket when the local one is spent (one round trip)."""
        if self.admit_locally(principal):
            return
        limit = self.limits.of(principal)
        subject = self._subject(principal)
        with self.db.connection() as conn:
            lease = rate_limits_sql.lease(
                conn,
                subject,
                want=limit.slice_size(self.slice_seconds),
                burst=limit.burst,
                period_seconds=limit.period_seconds,
                now=self.clock.now(),
            )
        with self._lock:
            self.stats.leases += 1
            mine = self._slices.setdefault(subject, _Slice())
            if lease.granted > 0:
                mine.left += lease.granted - 1
                mine.denied_until = 0.0
                return
            wait = limit.retry_after(lease.debt_seconds)
            mine.denied_until = self.clock.monotonic() + wait
        raise self._refuse(limit, wait)
