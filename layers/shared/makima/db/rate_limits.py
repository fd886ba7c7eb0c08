"""The shared side of the per-token request budgets: one row per token (``rate_limit_buckets``), leased
from in slices by every process serving the token (``makima.services.rate_limits``).

The bucket is kept as a GCRA "theoretical arrival time" (``tat``): each request costs ``period`` =
1 / per_second seconds of it, and the budget left at ``now`` is ``burst - max(0, tat - now) / period``.
A lease of ``n`` requests moves ``tat`` by ``n * period``. One upsert per lease, under the row's lock,
so two processes leasing at once get disjoint slices and together never more than the budget. A lease
refused (nothing left) rewrites the row unchanged; the caller then refuses locally until the debt has
paid down, so a flood of refused requests does not become a flood of writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from makima.db.connection import Conn

# The budget left, in whole requests (a little slack so that float noise never loses one), and the
# grant: what was asked, but at most half of what is left (rounded up), so that near the limit a slice
# shrinks to one request and a process does not sit on the last of a budget another process needs.
_AVAILABLE = (
    "FLOOR(%(burst)s::float8 - GREATEST(0, extract(epoch FROM b.tat - EXCLUDED.leased_at)::float8)"
    " / %(period)s::float8 + 1e-6)"
)
_GRANT = f"LEAST(EXCLUDED.last_grant, CEIL(GREATEST({_AVAILABLE}, 0) / 2.0))::integer"

# ``now`` is the caller's clock when given (tests move it), else the database's: the one clock every
# process (every Lambda container) shares. EXCLUDED carries it (leased_at) and the size asked for
# (last_grant) into the UPDATE, whose expressions read the row as it was before.
_LEASE = f"""
INSERT INTO rate_limit_buckets AS b (subject, tat, last_grant, leased_at)
VALUES (%(subject)s,
        COALESCE(%(now)s::timestamptz, statement_timestamp())
          + make_interval(secs => LEAST(%(want)s::integer, %(burst)s::integer) * %(period)s::float8),
        LEAST(%(want)s::integer, %(burst)s::integer),
        COALESCE(%(now)s::timestamptz, statement_timestamp()))
ON CONFLICT (subject) DO UPDATE
   SET last_grant = {_GRANT},
       tat = GREATEST(b.tat, EXCLUDED.leased_at) + make_interval(secs => {_GRANT} * %(period)s::float8),
       leased_at = EXCLUDED.leased_at
RETURNING last_grant AS granted, extract(epoch FROM tat - leased_at)::float8 AS debt_seconds
"""


@dataclass(frozen=True, slots=True)
class Lease:
    """What a lease got: ``granted`` requests (0: none left), and the bucket's debt after it in seconds
    (``tat - now``: how long until it would be full again)."""

    granted: int
    debt_seconds: float


def lease(
    conn: Conn, subject: UUID, *, want: int, burst: int, period_seconds: float, now: datetime | None = None
) -> Lease:
    """Take up to ``want`` requests from ``subject``'s bucket (created full on first use). Autocommit:
    one statement, one round trip."""
    row = conn.execute(
        _LEASE,
        {"subject": subject, "want": want, "burst": burst, "period": period_seconds, "now": now},
    ).fetchone()
    assert row is not None  # an upsert always returns its row
    return Lease(granted=int(row["granted"]), debt_seconds=float(row["debt_seconds"]))
