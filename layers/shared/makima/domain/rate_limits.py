"""Per-token request budgets, the pure part: which limit a caller has, how big a slice of it a process
leases at once, and how long a refused caller waits. The bucket itself lives in the database
(``makima.db.rate_limits``), the slices in each process (``makima.services.rate_limits``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from makima.domain.principals import Principal, Role


@dataclass(frozen=True, slots=True)
class Limit:
    """A token bucket: refilled at ``per_second`` requests a second, holding at most ``burst``."""

    per_second: float
    burst: int

    @property
    def off(self) -> bool:
        return self.per_second <= 0 or self.burst <= 0

    @property
    def period_seconds(self) -> float:
        """What one request costs of the bucket, in seconds of refill."""
        return 1.0 / self.per_second

    def slice_size(self, slice_seconds: float) -> int:
        """How many requests a process leases at once: ``slice_seconds`` of the rate, at most a tenth
        of the burst, at least one. A limit under 2 a second (at the default half second) leases one at
        a time: every request is decided by the shared row, exactly."""
        return max(1, min(math.floor(self.per_second * slice_seconds), self.burst // 10))

    def retry_after(self, debt_seconds: float) -> float:
        """Seconds until one request is free again, for a bucket ``debt_seconds`` from full: the debt
        must fall to what ``burst - 1`` requests cost."""
        return max(0.0, debt_seconds - (self.burst - 1) * self.period_seconds)

    def describe(self) -> dict[str, float | int]:
        return {"per_second": self.per_second, "burst": self.burst}


@dataclass(frozen=True, slots=True)
class Limits:
    """The limit of each kind of token: people (user and admin tokens) and daemons."""

    user: Limit
    daemon: Limit

    def of(self, principal: Principal) -> Limit:
        return self.daemon if principal.role is Role.DAEMON else self.user


def retry_after_header(seconds: float) -> int:
    """``Retry-After`` is whole seconds, at least one: rounded up, so a client that waits it is let in."""
    return max(1, math.ceil(seconds - 1e-9))
